"""Quantization-aware fine-tuning: a trained network trains a little more with its weights and layer inputs
rounded to b-bit grids in the forward pass, and straight-through gradients in the backward pass."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..errors import ConfigError
from ..training import Trainer, TrainSettings, accuracy
from .fake import (
    QUANTIZED_TYPES,
    Scheme,
    calibration_batches,
    fake_quantize,
    fake_quantized_plan,
    grid,
    quantize_weight,
)

LEARNED_LR = 0.005  # a learned-step fine-tune's peak learning rate (cosine down): its steps start close already


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


def prepare_qat(model: nn.Module, weights: Scheme, activations: Scheme | None,
                bits: dict[str, int] | None = None) -> nn.Module:
    """A copy of ``model`` whose conv and fc layers train through b-bit rounding of weights and inputs (``bits``
    by layer name, where given, overrides the schemes' width)."""
    from torch.nn.utils import parametrize

    prepared = copy.deepcopy(model)
    for name, module in prepared.named_modules():
        if isinstance(module, QUANTIZED_TYPES):
            b = (bits or {}).get(name, weights.bits)
            parametrize.register_parametrization(module, "weight", _RoundWithStraightThrough(
                dataclasses.replace(weights, bits=b)))
            if activations is not None:
                module.register_forward_pre_hook(_TrainingActivationQuantizer(dataclasses.replace(activations,
                                                                                                  bits=b)))
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
                                epochs: int = 3, lr: float = 0.01, batch_size: int = 128,
                                layer_bits: dict[str, int] | None = None, on_progress=None) -> dict:
    """Fine-tune a trained network with fake quantization in the loop (weights per channel, inputs per tensor,
    ``bits`` each, or ``layer_bits`` by layer): the accuracy as quantized before and after, next to float32."""
    from .lsq import layer_bits as all_at

    plan = layer_bits or all_at(model, bits, edge_bits=None)
    weights, activations = Scheme(bits=bits), Scheme(bits=bits, granularity="per-tensor")
    calib = calibration_batches(data, device)
    base = accuracy(model, data, device)
    before = accuracy(fake_quantized_plan(model, plan, calib), data, device)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, device=str(device), precision="fp32",
                             warmup=0.0, schedule="cosine", low_res=0.0)  # fine-tuned at the size it runs at
    trainer = Trainer(config, data, settings, model=prepare_qat(model, weights, activations, plan))
    result = trainer.run(on_progress=on_progress)
    tuned = finish_qat(trainer.model).float()
    quantized = fake_quantized_plan(tuned, plan, calib)
    after, after_flip = accuracy(quantized, data, device), accuracy(quantized, data, device, flip_tta=True)
    return {"bits": bits, "float32": base, "before": before, "after": after, "after_flip": after_flip,
            "history": result.history,
            "layer_bits": plan, "train_seconds": result.train_seconds, "model": tuned}


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
                     lr: float = LEARNED_LR, batch_size: int = 128, method: str = "lsq", edge_bits: int | None = 8,
                     plan: dict[str, int] | None = None, teacher: nn.Module | None = None,
                     float32: float | None = None, init: str = "mse", on_progress=None) -> dict:
    """Fine-tune a trained network with learned-step quantization (``method`` "lsq", or "pact" for the inputs;
    steps initialised as ``init`` says)
    at ``bits`` (first conv and fc at ``edge_bits``; ``plan`` sets layers by name), distilling from ``teacher``
    if given. Returns the accuracy as quantized before the fine-tune (the steps as initialised) and after it, with
    and without flip TTA, next to float32 (``float32``, or measured on ``model``); the bits of every layer; the
    history; and the fine-tuned network, quantizers included."""
    from .lsq import layer_bits, prepare_learned

    per_layer = layer_bits(model, bits, edge_bits, plan)
    prepared = prepare_learned(model, per_layer, method, init).to(device)
    calibrate_learned(prepared, calibration_batches(data, device, images=256))
    base = accuracy(model, data, device) if float32 is None else float32
    before = accuracy(prepared, data, device)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, device=str(device), precision="fp32",
                             warmup=0.0, schedule="cosine", low_res=0.0)
    trainer = Trainer(config, data, settings, model=prepared, teacher=teacher)
    result = trainer.run(on_progress=on_progress)
    return {"bits": bits, "method": method, "layer_bits": per_layer, "float32": base, "before": before,
            "after": result.val_acc, "after_flip": result.val_acc_flip, "history": result.history,
            "train_seconds": result.train_seconds, "epochs": epochs, "distilled": teacher is not None,
            "model": trainer.model}


def progressive_finetune(model: nn.Module, config, data, device: torch.device, schedule: list[tuple[int, int]],
                         distill: bool = True, float32: float | None = None, on_stage=None, on_progress=None,
                         start: nn.Module | None = None, **options) -> list[dict]:
    """A progressive schedule, e.g. [(8, 1), (4, 3), (3, 3), (2, 4)]: (bits, epochs) stages, each one a
    ``learned_finetune`` of the weights the last one left on their grids, its steps initialised afresh for its width.
    With ``distill``, every stage learns from the float32 network too. ``on_stage(i, result)`` hears of each
    stage as it ends; ``on_progress`` of every step, its progress running over the whole schedule; ``options`` go
    to ``learned_finetune``. ``start`` (an earlier stage's network, baked) is where the first stage starts instead
    of ``model``, which stays the teacher and the float32 reference. Returns every stage's result."""
    from .lsq import bake_learned

    if not schedule:
        raise ConfigError("a progressive schedule needs at least one stage")
    teacher = copy.deepcopy(model).eval() if distill else None
    base = accuracy(model, data, device) if float32 is None else float32
    current, stages = model if start is None else start, []
    for i, (bits, epochs) in enumerate(schedule):
        tuned = learned_finetune(current, config, data, device, bits=bits, epochs=epochs, teacher=teacher,
                                 float32=base, on_progress=overall_progress(on_progress, i, len(schedule)), **options)
        stages.append(tuned)
        if on_stage:
            on_stage(i, tuned)
        # the weights on their grids, which the batch norms' statistics were measured with: a float weight the
        # stage rounded away (a whole channel rounded to zero) would come back through a batch norm that never saw
        # it, and explode there
        current = bake_learned(tuned["model"])[0]
    return stages


def overall_progress(on_progress, stage: int, stages: int):
    """``on_progress`` with each step's progress as a share of the whole schedule."""
    if on_progress is None:
        return None
    return lambda p: on_progress(dataclasses.replace(p, progress=(stage + p.progress) / stages))


def parse_schedule(text: str) -> list[tuple[int, int]]:
    """"8:1,4:3,3:3,2:4" (bits:epochs, in order) as [(8, 1), (4, 3), (3, 3), (2, 4)]; one clear sentence if not."""
    stages = []
    for part in text.replace(" ", "").split(","):
        bits, sep, epochs = part.partition(":")
        if not (sep and bits.isdigit() and epochs.isdigit()):
            raise ConfigError(f"schedule stage {part!r} is not BITS:EPOCHS (e.g. 8:1,4:3,3:3,2:4)")
        if not 2 <= int(bits) <= 8 or not 1 <= int(epochs) <= 1000:
            raise ConfigError(f"schedule stage {part!r}: bits run from 2 to 8 and epochs from 1 to 1000")
        stages.append((int(bits), int(epochs)))
    return stages
