"""Seeing inside while it learns: per residual block, how loud the residual branch is next to
the skip, how large its gradients are, and how many of its last ReLU's units never fire.

A plain network's blocks (no skip) have no ``residual_ratio``."""

from __future__ import annotations

import torch
from torch import nn

from ..model import BLOCK_CLASSES, PreActBlock, branch_end, hooked_forward


def residual_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The model's residual blocks (and a plain network's blocks) by module name ('layer1.0', ...)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BLOCK_CLASSES)}


class _BlockHooks:
    """Forward hooks on one residual block that read the norms of its branch and its skip, and which channels of
    its last ReLU fired (the block's output after a post-activation block, the last conv's input in a
    pre-activation one)."""

    def __init__(self, block: nn.Module):
        self.block, self.stats = block, {}

    def attach(self) -> list:
        block = self.block
        end = branch_end(block)
        handles = [end.register_forward_hook(self.branch), block.register_forward_pre_hook(self.input)]
        if isinstance(block, PreActBlock):
            handles.append(end.register_forward_pre_hook(lambda module, inputs: self.fired(inputs[0])))
        else:
            handles.append(block.register_forward_hook(lambda module, inputs, output: self.fired(output)))
        if block.skip and block.downsample is not None:
            handles.append(block.downsample.register_forward_hook(self.skip))
        return handles

    def branch(self, module, inputs, output) -> None:  # read now: the block adds the skip to this tensor in place
        self.stats["branch"] = float(output.float().norm())

    def skip(self, module, inputs, output) -> None:
        self.stats["skip"] = float(output.float().norm())

    def input(self, module, inputs) -> None:
        if module.skip and module.downsample is None:
            self.stats["skip"] = float(inputs[0].float().norm())

    def fired(self, relu_output: torch.Tensor) -> None:
        fired = (relu_output > 0).flatten(2).any(dim=2).any(dim=0)  # per channel: ever positive?
        self.stats["dead_relu"] = 1.0 - float(fired.float().mean())

    def result(self) -> dict[str, float]:
        s = self.stats
        if "skip" not in s:  # a plain block: no skip to compare the branch with
            return {"dead_relu": s["dead_relu"]}
        return {"residual_ratio": s["branch"] / max(s["skip"], 1e-12), "dead_relu": s["dead_relu"]}


@torch.no_grad()
def block_activity(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """One forward pass of ``x`` in eval mode. Per block:

    - ``residual_ratio``: ‖F(x)‖ / ‖skip(x)‖, the residual branch's output against the skip it is added to
      (Frobenius norms over the batch): near 0, the block barely changes its input (absent from a plain block,
      which has no skip);
    - ``dead_relu``: the fraction of the channels of the block's last ReLU that are zero for every image and
      position.
    """
    hooks = {name: _BlockHooks(block) for name, block in residual_blocks(model).items()}
    hooked_forward(model, x, lambda handles: [handles.extend(h.attach()) for h in hooks.values()])
    return {name: h.result() for name, h in hooks.items()}


def gradient_norms(model: nn.Module) -> dict[str, float]:
    """‖∇‖ of each block's parameters, from the gradients of the last backward pass."""
    norms = {}
    for name, block in residual_blocks(model).items():
        grads = [p.grad.detach().float().pow(2).sum() for p in block.parameters() if p.grad is not None]
        norms[name] = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
    return norms
