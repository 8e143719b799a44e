"""Seeing inside while it learns: per residual block, how loud the residual branch is next to
the skip, how large its gradients are, and how many of its output units never fire."""

from __future__ import annotations

import torch
from torch import nn

from ..model import BasicBlock, Bottleneck


def residual_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The model's residual blocks by module name ('layer1.0', ...)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))}


def _last_norm(block: nn.Module) -> nn.Module:
    """The BN at the end of the residual branch: the branch's output just before the skip is added."""
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


@torch.no_grad()
def block_activity(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """One forward pass of ``x`` in eval mode. Per block:

    - ``residual_ratio``: ‖F(x)‖ / ‖skip(x)‖, the residual branch's output against the skip it is added to
      (Frobenius norms over the batch): near 0, the block barely changes its input;
    - ``dead_relu``: the fraction of the block's output channels that are zero for every image and position.
    """
    blocks = residual_blocks(model)
    stats: dict[str, dict[str, float]] = {name: {} for name in blocks}
    handles = []

    def branch_hook(name):
        def hook(module, inputs, output):  # read now: the block adds the skip to this tensor in place
            stats[name]["branch"] = float(output.float().norm())
        return hook

    def skip_hook(name):
        def hook(module, inputs, output):
            stats[name]["skip"] = float(output.float().norm())
        return hook

    def input_hook(name):
        def hook(module, inputs):
            if module.downsample is None:
                stats[name]["skip"] = float(inputs[0].float().norm())
        return hook

    def output_hook(name):
        def hook(module, inputs, output):
            fired = (output > 0).flatten(2).any(dim=2).any(dim=0)  # per channel: ever positive?
            stats[name]["dead_relu"] = 1.0 - float(fired.float().mean())
        return hook

    was_training = model.training
    try:
        for name, block in blocks.items():
            handles.append(_last_norm(block).register_forward_hook(branch_hook(name)))
            handles.append(block.register_forward_pre_hook(input_hook(name)))
            handles.append(block.register_forward_hook(output_hook(name)))
            if block.downsample is not None:
                handles.append(block.downsample.register_forward_hook(skip_hook(name)))
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {
        name: {"residual_ratio": s["branch"] / max(s["skip"], 1e-12), "dead_relu": s["dead_relu"]}
        for name, s in stats.items()
    }


def gradient_norms(model: nn.Module) -> dict[str, float]:
    """‖∇‖ of each block's parameters, from the gradients of the last backward pass."""
    norms = {}
    for name, block in residual_blocks(model).items():
        grads = [p.grad.detach().float().pow(2).sum() for p in block.parameters() if p.grad is not None]
        norms[name] = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
    return norms
