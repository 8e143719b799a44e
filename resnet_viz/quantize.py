"""Simulated (fake) quantization of a trained network: weights and activations rounded to b-bit grids,
computed in float, so that any bit width can be studied on any device.

A scheme says how the grid is chosen: per tensor or per output channel (weights), symmetric around
zero or affine (with a zero point), and how the range is calibrated: min-max, a percentile of the
absolute values, or the clipping that minimises the mean squared error.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .config import ConfigError

GRANULARITIES = ("per-tensor", "per-channel")
CALIBRATIONS = ("minmax", "percentile", "mse")
QUANTIZED_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Scheme:
    """How to round: ``bits`` per value, the grid's granularity, symmetry and range calibration."""

    bits: int = 8
    granularity: str = "per-channel"  # of weights; activations always use one range per tensor
    symmetric: bool = True
    calibration: str = "minmax"
    percentile: float = 99.99  # for calibration="percentile"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 16:
            raise ConfigError(f"{self.bits!r} bits — quantization takes 2 to 16 bits")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"granularity {self.granularity!r} is not one of {', '.join(GRANULARITIES)}")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration {self.calibration!r} is not one of {', '.join(CALIBRATIONS)}")
        if not 50 < self.percentile <= 100:
            raise ConfigError(f"percentile {self.percentile} — it must be above 50 and at most 100")

    @property
    def label(self) -> str:
        kind = "symmetric" if self.symmetric else "affine"
        return f"{self.bits}-bit {self.granularity} {kind} {self.calibration}"


def grid(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of a b-bit grid covering [lo, hi] (lo ≤ 0 ≤ hi is enforced)."""
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    if symmetric:
        bound = torch.maximum(-lo, hi)
        scale = bound / (2 ** (bits - 1) - 1)
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (2**bits - 1)
        zero = torch.round(-lo / scale.clamp_min(1e-12))
    return scale.clamp_min(1e-12), zero


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Round ``x`` to the grid and back to float; scale and zero broadcast against ``x``."""
    if symmetric:
        q = torch.clamp(torch.round(x / scale), -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1)
        return q * scale
    q = torch.clamp(torch.round(x / scale) + zero, 0, 2**bits - 1)
    return (q - zero) * scale


def _range(x: torch.Tensor, scheme: Scheme, dims: tuple[int, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated [lo, hi] over ``dims`` (None: the whole tensor)."""
    flat = x.detach().float()
    if dims is None:
        flat = flat.reshape(1, -1)
    else:
        flat = flat.movedim(0, 0).reshape(flat.shape[0], -1)
    if scheme.calibration == "minmax":
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    elif scheme.calibration == "percentile":
        q = scheme.percentile / 100
        lo, hi = torch.quantile(flat, 1 - q, dim=1), torch.quantile(flat, q, dim=1)
    else:
        lo, hi = _mse_range(flat, scheme)
    return lo, hi


def _mse_range(flat: torch.Tensor, scheme: Scheme, steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the clipping of the min-max range (from 100% down to 20%) with the least squared error."""
    lo0, hi0 = flat.min(dim=1).values, flat.max(dim=1).values
    best_err = torch.full_like(lo0, float("inf"))
    best_lo, best_hi = lo0.clone(), hi0.clone()
    for i in range(steps):
        shrink = 1.0 - 0.8 * i / steps
        lo, hi = lo0 * shrink, hi0 * shrink
        scale, zero = grid(lo, hi, scheme.bits, scheme.symmetric)
        err = (fake_quantize(flat, scale[:, None], zero[:, None], scheme.bits, scheme.symmetric) - flat).pow(2).mean(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
    return best_lo, best_hi


def quantize_weight(w: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """A weight rounded to its grid: one range per output channel or one for the tensor."""
    per_channel = scheme.granularity == "per-channel"
    lo, hi = _range(w, scheme, dims=(0,) if per_channel else None)
    scale, zero = grid(lo, hi, scheme.bits, scheme.symmetric)
    shape = (-1,) + (1,) * (w.ndim - 1) if per_channel else ()
    return fake_quantize(w, scale.reshape(shape), zero.reshape(shape), scheme.bits, scheme.symmetric)


class _ActivationQuantizer:
    """Rounds a layer's input to a grid calibrated on the batches seen while calibrating."""

    def __init__(self, scheme: Scheme):
        self.scheme, self.samples, self.grid = scheme, [], None

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]):
        x = inputs[0]
        if self.grid is None:  # calibrating: remember a sample of the values
            values = x.detach().float().flatten()
            keep = values[torch.randperm(values.numel(), device=values.device)[:20_000]]
            self.samples.append(keep)
            return None
        scale, zero = self.grid
        return (fake_quantize(x, scale, zero, self.scheme.bits, self.scheme.symmetric),)

    def freeze(self) -> None:
        values = torch.cat(self.samples)
        lo, hi = _range(values, self.scheme, None)
        self.grid = grid(lo[0], hi[0], self.scheme.bits, self.scheme.symmetric)
        self.samples = []


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the layers a scheme rounds: every convolution and the fc layer."""
    return [name for name, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)]


@torch.no_grad()
def fake_quantized(model: nn.Module, weights: Scheme | None, activations: Scheme | None,
                   calibration: Iterable[torch.Tensor] = (), layers: Iterable[str] | None = None) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose chosen layers (default: all conv and fc layers) compute with
    weights and inputs rounded to b-bit grids. Activation ranges are calibrated on ``calibration`` batches.
    The original model is not changed."""
    copy_ = copy.deepcopy(model).eval()
    chosen = set(quantizable_layers(copy_) if layers is None else layers)
    unknown = chosen - set(quantizable_layers(copy_))
    if unknown:
        raise ConfigError(f"no conv or fc layer named {sorted(unknown)[0]!r} to quantize")
    quantizers = []
    for name, module in copy_.named_modules():
        if name not in chosen:
            continue
        if weights is not None:
            module.weight.copy_(quantize_weight(module.weight, weights))
        if activations is not None:
            q = _ActivationQuantizer(activations)
            module.register_forward_pre_hook(q)
            quantizers.append(q)
    if quantizers:
        batches = list(calibration)
        if not batches:
            raise ConfigError("quantizing activations needs calibration images")
        for x in batches:
            copy_(x)
        for q in quantizers:
            q.freeze()
    return copy_


# -- studies ------------------------------------------------------------------------------------------------


def calibration_batches(data, device: torch.device, images: int = 256, batch_size: int = 128) -> list[torch.Tensor]:
    """The first ``images`` training images, normalised as in training: the data ranges are calibrated on."""
    from .data import DeviceBatches

    batches = DeviceBatches(data.train, device, data.mean, data.std)
    out, seen = [], 0
    for x, _ in batches.epoch(batch_size, augment=False, generator=None, drop_last=False):
        out.append(x[: images - seen])
        seen += len(out[-1])
        if seen >= images:
            break
    return out


@torch.no_grad()
def accuracy(model: nn.Module, data, device: torch.device, batch_size: int = 512) -> float:
    """Validation accuracy, in float32."""
    from .data import DeviceBatches

    model.eval()
    correct = total = 0
    for x, y in DeviceBatches(data.val, device, data.mean, data.std).epoch(batch_size, augment=False,
                                                                          generator=None, drop_last=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def weight_bytes(model: nn.Module, bits: dict[str, int] | int) -> int:
    """Bytes of the conv and fc weights at the given bits per value (one number, or per layer); every other
    parameter (BN, biases) stays float32."""
    layers = dict(model.named_modules())
    total = 0
    for name, p in model.named_parameters():
        owner, _, kind = name.rpartition(".")
        if isinstance(layers.get(owner), QUANTIZED_TYPES) and kind == "weight":
            b = bits if isinstance(bits, int) else bits.get(owner, 32)
            total += (p.numel() * b + 7) // 8
        else:
            total += p.numel() * 4
    return total


def sweep(model: nn.Module, data, device: torch.device, bits: Iterable[int] = (8, 6, 4, 3, 2),
          schemes: Iterable[Scheme] | None = None, quantize_activations: bool = True,
          progress=None) -> list[dict]:
    """Accuracy at each bit width for each scheme (weights, and activations unless told otherwise)."""
    schemes = list(schemes or [Scheme(granularity="per-channel"), Scheme(granularity="per-tensor"),
                               Scheme(granularity="per-channel", symmetric=False, calibration="mse")])
    bits = list(bits)
    calib = calibration_batches(data, device) if quantize_activations else []
    rows, done = [{"scheme": "float32", "bits": 32, "accuracy": accuracy(model, data, device)}], 0
    for scheme in schemes:
        for b in bits:
            s = Scheme(b, scheme.granularity, scheme.symmetric, scheme.calibration, scheme.percentile)
            act = Scheme(b, "per-tensor", scheme.symmetric, scheme.calibration, scheme.percentile)
            q = fake_quantized(model, s, act if quantize_activations else None, calib)
            rows.append({"scheme": scheme.label.split(" ", 1)[1], "bits": b, "accuracy": accuracy(q, data, device)})
            done += 1
            if progress:
                progress(done, len(schemes) * len(bits))
    return rows


def sensitivity(model: nn.Module, data, device: torch.device, scheme: Scheme = Scheme(bits=4),
                progress=None) -> list[dict]:
    """Quantize one layer at a time (weights only) and rank the layers by the accuracy that costs."""
    base = accuracy(model, data, device)
    layers = quantizable_layers(model)
    rows = []
    for i, name in enumerate(layers, 1):
        acc = accuracy(fake_quantized(model, scheme, None, layers=[name]), data, device)
        rows.append({"layer": name, "accuracy": acc, "drop": base - acc})
        if progress:
            progress(i, len(layers))
    rows.sort(key=lambda r: (-r["drop"], r["layer"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def mixed_precision_plan(model: nn.Module, data, device: torch.device, ranking: list[dict], fragile: int,
                         high_bits: int = 8, low_bits: int = 4) -> dict:
    """The ``fragile`` most sensitive layers at ``high_bits``, the rest at ``low_bits``: its accuracy and size."""
    plan = {row["layer"]: (high_bits if row["rank"] <= fragile else low_bits) for row in ranking}
    q = copy.deepcopy(model).eval()
    for bits in (high_bits, low_bits):
        chosen = [name for name, b in plan.items() if b == bits]
        if chosen:
            q = fake_quantized(q, Scheme(bits=bits), None, layers=chosen)
    return {"plan": plan, "accuracy": accuracy(q, data, device), "weight_bytes": weight_bytes(model, plan),
            "float32_bytes": weight_bytes(model, 32)}


# -- quantization-aware fine-tuning ---------------------------------------------------------------------------


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
    from .train import Trainer, TrainSettings

    weights, activations = Scheme(bits=bits), Scheme(bits=bits, granularity="per-tensor")
    calib = calibration_batches(data, device)
    base = accuracy(model, data, device)
    before = accuracy(fake_quantized(model, weights, activations, calib), data, device)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, device=str(device), precision="fp32",
                             warmup=0.0, schedule="cosine")
    trainer = Trainer(config, data, settings, model=prepare_qat(model, weights, activations))
    result = trainer.run(on_progress=on_progress)
    tuned = finish_qat(trainer.model).float()
    after = accuracy(fake_quantized(tuned, weights, activations, calib), data, device)
    return {"bits": bits, "float32": base, "before": before, "after": after, "history": result.history,
            "model": tuned}


def run_study(checkpoint, data, mode: str, bits: Iterable[int] | None = None, epochs: int = 3,
              device: str = "auto", progress=None, on_step=None) -> dict:
    """One study of a saved network, as a JSON-ready report (plus the fine-tuned model under "model" for qat,
    the int8 program under "program" for int8): ``mode`` "sweep", "sensitivity", "qat" or "int8". Both the
    command line and the app run this."""
    import dataclasses

    from .train import load_checkpoint, pick_device

    dev = pick_device(device)
    model, config, meta = load_checkpoint(checkpoint, dev)
    model = model.float()
    if "mean" in meta:  # normalise as the network was trained
        data = dataclasses.replace(data, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    if config.num_classes != len(data.classes):
        raise ConfigError(f"the checkpoint has {config.num_classes} outputs but {data.name} has "
                          f"{len(data.classes)} classes")
    bits = list(bits) if bits else None
    report = {"mode": mode, "network": config.describe(), "config": config.to_dict(), "data": data.describe()}
    if mode == "sweep":
        report["rows"] = sweep(model, data, dev, bits=bits or (8, 6, 4, 3, 2), progress=progress)
    elif mode == "sensitivity":
        rows = sensitivity(model, data, dev, Scheme(bits=bits[0] if bits else 4), progress=progress)
        plan = mixed_precision_plan(model, data, dev, rows, fragile=max(1, len(rows) // 5))
        report.update(bits=bits[0] if bits else 4, rows=rows, plan=plan)
    elif mode == "int8":
        report.update(_int8_study(model, config, data, dev, progress))
    elif mode == "qat":
        tuned = quantization_aware_finetune(model, config, data, dev, bits=bits[0] if bits else 4, epochs=epochs,
                                            on_progress=on_step)
        report.update(tuned)
    else:
        raise ConfigError(f"mode {mode!r} is not one of sweep, sensitivity, qat, int8")
    return report


def _int8_study(model: nn.Module, config, data, device: torch.device, progress=None) -> dict:
    """Real int8 on this CPU (torchao PT2E, see resnet_viz.int8) next to float32: accuracy, bytes and speed."""
    from . import int8

    steps = 5
    calib = calibration_batches(data, torch.device("cpu"), images=512)
    folded = [f"{conv} ← {bn}" for _, conv, bn in int8.conv_bn_pairs(model)]
    program = int8.quantize_int8(model.to("cpu"), calib)
    if progress:
        progress(1, steps)
    quantized = int8.CompiledModel(program)
    cpu = torch.device("cpu")
    rows = []
    for name, runner in (("float32", model), ("int8", quantized)):
        acc = accuracy(runner, data, cpu)
        if progress:
            progress(2 + len(rows), steps)
        rows.append({"model": name, "accuracy": acc,
                     "latency_ms_batch_1": int8.latency_ms(runner, config.input_shape, runs=50, warmup=5),
                     "images_per_s_batch_256": int8.images_per_s(runner, config.input_shape, runs=5, warmup=2)})
    sizes = int8.tensor_bytes(program)
    rows[0]["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    rows[1]["weight_bytes"] = sum(sizes.values())
    if progress:
        progress(steps, steps)
    return {"rows": rows, "batch_norms_folded": folded, "int8_bytes_by_dtype": sizes, "program": program,
            "float32_model": model}
