"""Learned step size quantization (LSQ, Esser et al. 2020, "Learned step size quantization"), and PACT's learned
clipping (Choi et al. 2018) as an option for activations.

A quantizer rounds ``v`` to ``s · round(clamp(v / s, -Qn, Qp))``. In LSQ the step ``s`` is a parameter trained
with the network: rounding passes the gradient straight through, and the step's gradient, per element,

    ∂v̂/∂s = -v/s + round(v/s)   inside the range,   -Qn or Qp   where v/s is clipped,

is scaled by g = 1 / √(N · Qp), N the number of values that share the step (the paper's gradient scale). The
paper's initial value is 2 · mean(|v|) / √Qp (``init="lsq"``). By default (``init="mse"``) each step starts where
the rounding's squared error is least instead, as LSQ+ (Bhalgat et al. 2020) and most of LSQ's successors start it:
on the shipped ResNet-20 at W4A4 that is 85.4% before any fine-tuning, against 59.2% from the paper's value.

Weights are signed (Qn = 2^(b-1), Qp = 2^(b-1) - 1: 2^b levels), with one step per output channel; activations
after a ReLU are unsigned (Qn = 0, Qp = 2^b - 1), one step per tensor.

PACT clips an unsigned activation at a learned α and rounds [0, α] to 2^b - 1 equal steps; α's gradient is the
share of values clipped (the straight-through estimate of ∂ clamp(v, 0, α) / ∂α).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError

METHODS = ("lsq", "pact")
INITS = ("mse", "lsq")  # where a step starts: least squared rounding error, or LSQ's 2 · mean(|v|) / √Qp
MSE_CANDIDATES = 100  # steps tried, evenly spaced up to the one that just reaches the largest value
MSE_VALUES = 2**20  # values per step the search looks at (a strided sample of a larger tensor)
STEP_MIN = float(torch.finfo(torch.float32).eps)  # the smallest step (and PACT α) a quantizer keeps


def round_pass(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward (exactly: the added term is y - y = 0), the identity backward."""
    return x.round().detach() + (x - x.detach())


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x forward (exactly, so the forward pass uses the step as saved), its gradient times ``scale`` backward."""
    scaled = x * scale
    return x.detach() + (scaled - scaled.detach())


def levels(bits: int, signed: bool) -> tuple[int, int]:
    """(Qn, Qp): the grid runs from -Qn to Qp steps, 2^b levels in all."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ConfigError(f"{bits!r} bits — quantization takes 2 to 16 bits")
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


@torch.no_grad()
def least_squares_step(rows: torch.Tensor, qn: int, qp: int, candidates: int = MSE_CANDIDATES) -> torch.Tensor:
    """For each row of ``rows``, the step (of ``candidates`` spaced evenly up to the one whose grid just reaches
    the row's largest value) at which rounding to the -Qn … Qp grid changes the row least, in squared error."""
    rows = rows[:, :: max(1, rows.shape[1] // MSE_VALUES)]
    reach = torch.maximum(rows.amax(dim=1) / max(qp, 1), -rows.amin(dim=1) / max(qn, 1)).clamp_min(1e-8)
    best, least = reach.clone(), torch.full_like(reach, float("inf"))
    for k in range(1, candidates + 1):
        step = (reach * k / candidates)[:, None]
        error = (torch.clamp(torch.round(rows / step), -qn, qp) * step - rows).square().sum(dim=1)
        better = error < least
        least, best = torch.where(better, error, least), torch.where(better, step[:, 0], best)
    return best


class LsqQuantizer(nn.Module):
    """A learned-step quantizer for ``bits``; ``channels`` steps along dim 0 (a weight's output channels), or one
    (``channels=None``: an activation). The step is set from the first tensor it sees, unless set before, as
    ``init`` says (one of ``INITS``)."""

    def __init__(self, bits: int, signed: bool, channels: int | None = None, init: str = "mse"):
        super().__init__()
        if init not in INITS:
            raise ConfigError(f"step initialisation {init!r} is not one of {', '.join(INITS)}")
        self.bits, self.signed, self.channels, self.init = bits, signed, channels, init
        self.qn, self.qp = levels(bits, signed)
        self.step = nn.Parameter(torch.ones(channels or 1))  # 1-D: no weight decay
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def initialise(self, v: torch.Tensor) -> None:
        """The initial step (per channel for a weight): ``least_squares_step``, or LSQ's 2 · mean(|v|) / √Qp."""
        flat = v.detach().float().reshape(v.shape[0] if self.channels else 1, -1)
        if self.init == "mse":
            step = least_squares_step(flat, self.qn, self.qp)
        else:
            step = 2 * flat.abs().mean(dim=1) / math.sqrt(self.qp)
        self.step.copy_(step.clamp_min(1e-8).reshape(self.step.shape))
        self.initialised.fill_(True)

    def _shape(self, v: torch.Tensor) -> tuple[int, ...]:
        return (-1,) + (1,) * (v.ndim - 1) if self.channels else ()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialised):
            self.initialise(v)
        with torch.no_grad():  # a step that an update pushed through zero would flip or collapse its grid
            self.step.clamp_(min=STEP_MIN)  # (as torch.ao's learnable fake quantize clamps its scale)
        per_step = v.numel() // (self.channels or 1)
        g = 1.0 / math.sqrt(per_step * self.qp)
        s = grad_scale(self.step, g).reshape(self._shape(v))
        return round_pass(torch.clamp(v / s, -self.qn, self.qp)) * s

    def extra_repr(self) -> str:
        kind = f"per channel ({self.channels})" if self.channels else "per tensor"
        return f"bits={self.bits}, {'signed' if self.signed else 'unsigned'}, {kind}"


class PactQuantizer(nn.Module):
    """An unsigned activation clipped at a learned α, then rounded to 2^b - 1 equal steps of [0, α]."""

    def __init__(self, bits: int, alpha: float = 6.0):
        super().__init__()
        self.bits = bits
        self.qp = levels(bits, signed=False)[1]
        self.alpha = nn.Parameter(torch.tensor([float(alpha)]))

    @property
    def step(self) -> torch.Tensor:
        return self.alpha / self.qp

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.alpha.clamp_(min=STEP_MIN)
        alpha = self.alpha.reshape(())
        clipped = torch.where(v < alpha, torch.relu(v), alpha)  # ∂/∂α: 1 where v ≥ α, else 0
        s = (alpha / self.qp).detach()  # PACT's estimate: α moves by the clipping alone, not by the rounding
        return round_pass(clipped / s) * s

    def extra_repr(self) -> str:
        return f"bits={self.bits}, unsigned, learned clipping"


def quantize_input(module: nn.Module, inputs: tuple[torch.Tensor, ...]):
    """A forward pre-hook: the layer's input through its own quantizer (``module.input_quantizer``)."""
    return (module.input_quantizer(inputs[0]), *inputs[1:])


def edge_layers(model: nn.Module) -> tuple[str, str]:
    """The first conv and the last linear layer: kept at 8 bits by default, as LSQ, PACT and APoT keep them."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not convs or not linears:
        raise ConfigError("learned-step quantization needs a network with convolutions and a final linear layer")
    return convs[0], linears[-1]


def layer_bits(model: nn.Module, bits: int, edge_bits: int | None = 8,
               plan: dict[str, int] | None = None) -> dict[str, int]:
    """Bits of every conv and linear layer: ``plan``'s where it names the layer, else ``edge_bits`` for the first
    conv and the last linear layer (``None``: no exception for them), else ``bits``."""
    edges = set(edge_layers(model)) if edge_bits is not None else set()
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            found[name] = (plan or {}).get(name, edge_bits if name in edges else bits)
    unknown = set(plan or {}) - set(found)
    if unknown:
        raise ConfigError(f"no conv or linear layer named {sorted(unknown)[0]!r} in the bit plan")
    return found


def prepare_learned(model: nn.Module, bits: dict[str, int], method: str = "lsq", init: str = "mse") -> nn.Module:
    """A copy of ``model`` whose conv and linear layers compute with weights and inputs on learned grids: LSQ for
    the weights (signed, per output channel) and for the inputs (per tensor: signed for the network's input, else
    unsigned), or PACT's learned clipping for the unsigned inputs (``method="pact"``). ``bits`` by layer name
    (``layer_bits``). Each step is initialised (``init``: one of ``INITS``) from the weights now, and from the first
    batch for the inputs."""
    import copy

    from torch.nn.utils import parametrize

    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not one of {', '.join(METHODS)}")
    prepared = copy.deepcopy(model)
    first = edge_layers(prepared)[0]
    for name, module in prepared.named_modules():
        if name not in bits:
            continue
        b = bits[name]
        parametrize.register_parametrization(module, "weight", LsqQuantizer(b, True, module.weight.shape[0], init))
        if name == first:  # the network's input is normalised: it has negative values
            module.input_quantizer = LsqQuantizer(b, signed=True, init=init)
        else:  # every other layer's input comes out of a ReLU
            module.input_quantizer = LsqQuantizer(b, signed=False, init=init) if method == "lsq" else PactQuantizer(b)
        module.register_forward_pre_hook(quantize_input)
    return prepared


def _plain_copy(model: nn.Module, rounded: bool) -> tuple[nn.Module, dict[str, tuple[nn.Module, nn.Module]]]:
    """A copy of a ``prepare_learned`` network without its parametrizations, quantizers and hooks: each weight as
    its grid gives it (``rounded``) or the float weight it trains; and each layer's (weight, input) quantizers.

    torch's ``remove_parametrizations`` deletes the weight property from the class it made, which the model
    and its copies share; so each module gets its own class back here instead, and the model is left whole."""
    import copy

    from torch.nn.utils import parametrize

    plain, quantizers = copy.deepcopy(model), {}
    for name, module in plain.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        with torch.no_grad():
            weight = (module.weight if rounded else module.parametrizations.weight.original).detach().clone()
        quantizers[name] = (module.parametrizations.weight[0], module.input_quantizer)
        module.__class__ = module.__class__.__bases__[0]  # the layer's own class, not the parametrized one
        del module.parametrizations, module.input_quantizer
        module.weight = nn.Parameter(weight)
        module._forward_pre_hooks.clear()
    return plain, quantizers


def strip_learned(model: nn.Module) -> nn.Module:
    """A plain copy of a ``prepare_learned`` network with the float weights it trains (not their rounded values)
    and no quantizers: what the fine-tune made of the float weights. Not where a next stage should start: a channel
    rounded to zero has a batch norm that never saw its float weights (``bake_learned`` gives the weights it saw)."""
    return _plain_copy(model, rounded=False)[0]


def bake_learned(model: nn.Module) -> tuple[nn.Module, dict]:
    """A plain copy of a ``prepare_learned`` network, its weights left on their grids, without its quantizers; and
    what it needs to compute as quantized, as plain data: each layer's bits, weight steps and input step."""
    baked, quantizers = _plain_copy(model, rounded=True)
    layers = {}
    for name, (weight_q, input_q) in quantizers.items():
        layers[name] = {"bits": weight_q.bits, "weight_step": weight_q.step.detach().cpu().tolist(),
                        "input_step": float(input_q.step.detach().reshape(-1)[0]),
                        "input": "pact" if isinstance(input_q, PactQuantizer) else
                        ("signed" if input_q.signed else "unsigned")}
    return baked, {"method": "learned steps", "layers": layers}
