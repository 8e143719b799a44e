"""Layer responses (He et al. 2016, Sec. 4.2 and Fig. 7): the standard deviation of the output of every 3×3
convolution after the batch norm that follows it, before the addition and the ReLU, over images.

In a pre-activation block the convolution whose output meets the skip has no batch norm after it: its own
output is taken."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def three_by_three(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name of the 3×3 conv, the module whose output is its response), in network order."""
    parents = {name: m for name, m in model.named_modules()}
    found = []
    for name, conv in model.named_modules():
        if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)):
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = parents[parent_name]
        if hasattr(parent, "conv_norm_pairs"):  # pre-activation: conv_i is normalised by bn_(i+1), the last by none
            norm = dict(parent.conv_norm_pairs).get(leaf)
        else:  # post-activation block, or the stem: conv_i → bn_i
            norm = f"bn{leaf.removeprefix('conv')}" if leaf.startswith("conv") else None
        follower = getattr(parent, norm, None) if norm else None
        found.append((name, follower if isinstance(follower, nn.BatchNorm2d) else conv))
    return found


@torch.no_grad()
def layer_responses(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                    progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One row per 3×3 conv, in network order: its name, where its response is read, and the standard deviation
    of that response over every image, channel and position (eval mode: the trained BN statistics)."""
    layers = three_by_three(model)
    sums = {name: torch.zeros(3, dtype=torch.float64) for name, _ in layers}  # count, sum, sum of squares
    handles = []

    def keep(name: str):
        def hook(module, inputs, output):  # read at once: a ReLU may change the output in place afterwards
            o = output.detach().double()
            sums[name] += torch.stack([torch.tensor(float(o.numel()), dtype=torch.float64), o.sum(), o.square().sum()])
        return hook

    was_training = model.training
    try:
        for name, module in layers:
            handles.append(module.register_forward_hook(keep(name)))
        model.eval()
        batches = max(1, -(-len(images) // batch_size))
        for b in range(batches):
            model(images[b * batch_size:(b + 1) * batch_size])
            if progress:
                progress(b + 1, batches)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    names = {id(m): n for n, m in model.named_modules()}
    rows = []
    for index, (name, module) in enumerate(layers, 1):
        n, total, squares = (float(v) for v in sums[name])
        mean = total / n
        rows.append({"index": index, "layer": name, "read_at": names[id(module)],
                     "std": max(squares / n - mean * mean, 0.0) ** 0.5})
    return rows
