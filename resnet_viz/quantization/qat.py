"""Quantization-aware fine-tuning: a trained network trains a little more with its weights and layer inputs
rounded to b-bit grids in the forward pass, and straight-through gradients in the backward pass."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..training import Trainer, TrainSettings, accuracy
from .fake import QUANTIZED_TYPES, Scheme, calibration_batches, fake_quantize, fake_quantized, grid, quantize_weight


class _RoundWithStraightThrough(nn.Module):
    """A weight parametrization: the forward pass sees the weight on its grid, the gradient passes
    through the rounding as if it were the identity (the straight-through estimator)."""

    def __init__(self, scheme: Scheme):
        super().__init__()
        self.scheme = scheme

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (quantize_weight(w, self.scheme) - w).detach()


class _TrainingActivationQuantizer:
    """Rounds a layer's input with a range that follows the batches (exponential moving average)."""

    def __init__(self, scheme: Scheme, momentum: float = 0.1):
        self.scheme, self.momentum, self.lo, self.hi = scheme, momentum, None, None

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]):
        x = inputs[0]
        if module.training or self.lo is None:
            lo, hi = x.detach().min().float(), x.detach().max().float()
            if self.lo is None:
                self.lo, self.hi = lo, hi
            else:
                self.lo = (1 - self.momentum) * self.lo + self.momentum * lo
                self.hi = (1 - self.momentum) * self.hi + self.momentum * hi
        scale, zero = grid(self.lo, self.hi, self.scheme.bits, self.scheme.symmetric)
        q = fake_quantize(x.float(), scale, zero, self.scheme.bits, self.scheme.symmetric).to(x.dtype)
        return (x + (q - x).detach(),)


def prepare_qat(model: nn.Module, weights: Scheme, activations: Scheme | None) -> nn.Module:
    """A copy of ``model`` whose conv and fc layers train through b-bit rounding of weights and inputs."""
    from torch.nn.utils import parametrize

    prepared = copy.deepcopy(model)
    for module in prepared.modules():
        if isinstance(module, QUANTIZED_TYPES):
            parametrize.register_parametrization(module, "weight", _RoundWithStraightThrough(weights))
            if activations is not None:
                module.register_forward_pre_hook(_TrainingActivationQuantizer(activations))
    return prepared


def finish_qat(model: nn.Module) -> nn.Module:
    """A plain copy of a QAT model: weights left on their grids, the parametrizations and hooks removed."""
    from torch.nn.utils import parametrize

    finished = copy.deepcopy(model)
    for module in finished.modules():
        if isinstance(module, QUANTIZED_TYPES) and parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            module._forward_pre_hooks.clear()
    return finished


def quantization_aware_finetune(model: nn.Module, config, data, device: torch.device, bits: int = 4,
                                epochs: int = 3, lr: float = 0.01, batch_size: int = 128, on_progress=None) -> dict:
    """Fine-tune a trained network with fake quantization in the loop (weights per channel, inputs per tensor,
    ``bits`` each): the b-bit accuracy before and after, next to float32."""
    weights, activations = Scheme(bits=bits), Scheme(bits=bits, granularity="per-tensor")
    calib = calibration_batches(data, device)
    base = accuracy(model, data, device)
    before = accuracy(fake_quantized(model, weights, activations, calib), data, device)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, device=str(device), precision="fp32",
                             warmup=0.0, schedule="cosine", low_res=0.0)  # fine-tuned at the size it runs at
    trainer = Trainer(config, data, settings, model=prepare_qat(model, weights, activations))
    result = trainer.run(on_progress=on_progress)
    tuned = finish_qat(trainer.model).float()
    after = accuracy(fake_quantized(tuned, weights, activations, calib), data, device)
    return {"bits": bits, "float32": base, "before": before, "after": after, "history": result.history,
            "model": tuned}


@torch.no_grad()
def calibrate_learned(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Initialise the input steps of a ``prepare_learned`` network from training images (in eval mode), before
    it sees any other data."""
    was_training = model.training
    model.eval()
    try:
        for x in batches[:1]:
            model(x)
    finally:
        model.train(was_training)


def learned_finetune(model: nn.Module, config, data, device: torch.device, bits: int = 4, epochs: int = 3,
                     lr: float = 0.01, batch_size: int = 128, method: str = "lsq", edge_bits: int | None = 8,
                     plan: dict[str, int] | None = None, on_progress=None) -> dict:
    """Fine-tune a trained network with learned-step quantization (``method`` "lsq", or "pact" for the inputs)
    at ``bits`` (first conv and fc at ``edge_bits``; ``plan`` sets layers by name). Returns the accuracy as
    quantized before the fine-tune (the steps as initialised) and after it, with and without flip TTA, next to
    float32; the bits of every layer; the history; and the fine-tuned network, quantizers included."""
    from .lsq import layer_bits, prepare_learned

    per_layer = layer_bits(model, bits, edge_bits, plan)
    prepared = prepare_learned(model, per_layer, method).to(device)
    calibrate_learned(prepared, calibration_batches(data, device, images=256))
    base = accuracy(model, data, device)
    before = accuracy(prepared, data, device)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, device=str(device), precision="fp32",
                             warmup=0.0, schedule="cosine", low_res=0.0)
    trainer = Trainer(config, data, settings, model=prepared)
    result = trainer.run(on_progress=on_progress)
    return {"bits": bits, "method": method, "layer_bits": per_layer, "float32": base, "before": before,
            "after": result.val_acc, "after_flip": result.val_acc_flip, "history": result.history,
            "train_seconds": result.train_seconds, "model": trainer.model}
