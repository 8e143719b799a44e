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

from ..errors import ConfigError

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


def fake_quantized_plan(model: nn.Module, bits: dict[str, int], calibration: Iterable[torch.Tensor] = (),
                        activations: bool = True) -> nn.Module:
    """``fake_quantized`` with a width per layer (``bits`` by layer name, as ``lsq.layer_bits`` gives them):
    weights per channel, inputs per tensor, both at the layer's bits."""
    batches, quantized = list(calibration), copy.deepcopy(model).eval()
    for b in sorted(set(bits.values()), reverse=True):
        chosen = [name for name, layer_b in bits.items() if layer_b == b]
        act = Scheme(bits=b, granularity="per-tensor") if activations else None
        quantized = fake_quantized(quantized, Scheme(bits=b), act, batches, layers=chosen)
    return quantized


def calibration_batches(data, device: torch.device, images: int = 256, batch_size: int = 128) -> list[torch.Tensor]:
    """The first ``images`` training images, normalised as in training: the data ranges are calibrated on."""
    from ..data import DeviceBatches

    batches = DeviceBatches(data.train, device, data.mean, data.std)
    out, seen = [], 0
    for x, _ in batches.epoch(batch_size, augment=False, generator=None, drop_last=False):
        out.append(x[: images - seen])
        seen += len(out[-1])
        if seen >= images:
            break
    return out


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
