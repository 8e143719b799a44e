"""Layer responses (He et al. 2016, Sec. 4.2 and Fig. 7): the standard deviation of the output of every 3×3
convolution after the batch norm that follows it, before the addition and the ReLU, over images.

In a pre-activation block the convolution whose output meets the skip has no batch norm after it: its own
output is taken."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .networks import inference_copy


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
def layer_responses(model: nn.Module, images: torch.Tensor, batch_size: int = 250,
                    progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One row per 3×3 conv, in network order: its name, where its response is read, and the standard deviation
    of that response over every image, channel and position (eval mode: the trained BN statistics).

    The forward runs on a copy with each BN folded into its conv: the BN's place (an identity there) then gives
    the folded conv's output, which is the BN's output."""
    names = {id(m): n for n, m in model.named_modules()}
    layers = [(name, names[id(module)]) for name, module in three_by_three(model)]
    fast = inference_copy(model)
    parts: dict[str, list[tuple[int, float, float]]] = {name: [] for name, _ in layers}  # per batch: n, var, mean

    def keep(name: str):
        def hook(module, inputs, output):  # read at once: a ReLU may change the output in place afterwards
            var, mean = torch.var_mean(output.detach().float(), correction=0)
            parts[name].append((output.numel(), float(var), float(mean)))
        return hook

    for name, read_at in layers:
        fast.get_submodule(read_at).register_forward_hook(keep(name))  # the copy goes with its hooks
    batches = max(1, -(-len(images) // batch_size))
    for b in range(batches):
        fast(images[b * batch_size:(b + 1) * batch_size].contiguous(memory_format=torch.channels_last))
        if progress:
            progress(b + 1, batches)
    return [{"index": index, "layer": name, "read_at": read_at, "std": _pooled_std(parts[name])}
            for index, (name, read_at) in enumerate(layers, 1)]


def _pooled_std(parts: list[tuple[int, float, float]]) -> float:
    """The standard deviation over all batches together, from each batch's count, variance and mean."""
    n = sum(count for count, _, _ in parts)
    mean = sum(count * m for count, _, m in parts) / n
    return (sum(count * (var + (m - mean) ** 2) for count, var, m in parts) / n) ** 0.5
