"""Low-bit networks as a deployed file holds them: every quantized layer's weights as b-bit integer codes packed
into bytes (two 4-bit codes a byte, four 2-bit ones, 3-bit codes straddling bytes), with one float32 step per
output channel and the step of the layer's input; everything else (batch norms, biases) in float32.

The file is a safetensors file (a JSON header, then raw tensor bytes: reading it executes nothing). Its one
metadata entry, "resnet-viz", holds as JSON the format's name, the network's config, the checkpoint's facts and,
per layer, the bits, the weight's shape and the input's step. A code ``c`` stands for the weight
``(c - Qn) · step`` (Qn = 2^(b-1)); bits are filled from each byte's lowest bit up, codes in the weight's
row-major order.

``open_quantized`` opens a packed file, or a checkpoint saved after a learned-step fine-tune, as a network that
computes as quantized: weights on their grids and every layer's input rounded to its learned step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..config import ResNetConfig
from ..errors import CheckpointError, ConfigError
from ..formatting import human_bytes
from ..model import build_model
from ..training import load_checkpoint
from ..training.inflation import checkpoint_bytes_allowed
from ..weights import resolve
from .lsq import LsqQuantizer, PactQuantizer, levels, quantize_input

PACKED_FORMAT = "resnet-viz packed 1"
SUFFIX = ".rvq"
HEADER = "resnet-viz"  # the one metadata entry: the header as JSON


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes in [0, 2^bits) as a byte string of ceil(n · bits / 8) bytes, lowest bit first."""
    flat = codes.reshape(-1).to(torch.uint8)
    planes = (flat.unsqueeze(1) >> torch.arange(bits, dtype=torch.uint8)) & 1
    stream = planes.reshape(-1)
    stream = torch.cat([stream, stream.new_zeros((-len(stream)) % 8)])
    return (stream.reshape(-1, 8).to(torch.int32) << torch.arange(8, dtype=torch.int32)).sum(1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first ``count`` codes of ``pack_codes``'s bytes, as int64."""
    stream = ((packed.reshape(-1, 1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1)[:count * bits]
    return (stream.reshape(count, bits).to(torch.int64) << torch.arange(bits)).sum(1)


def packed_size(count: int, bits: int) -> int:
    """Bytes of ``count`` codes of ``bits`` each."""
    return math.ceil(count * bits / 8)


def weight_codes(weight: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """A weight on its grid as codes in [0, 2^bits): round(w / step) + Qn, one step per output channel."""
    qn, qp = levels(bits, signed=True)
    steps = step.reshape((-1,) + (1,) * (weight.ndim - 1))
    return (torch.round(weight.detach().float() / steps).clamp(-qn, qp) + qn).to(torch.int64)


def packed_bytes(model: nn.Module, config: ResNetConfig, meta: dict) -> bytes:
    """A ``bake_learned`` network (its meta's "quantization" naming every layer's bits and steps) as a packed
    file."""
    from safetensors.torch import save

    layers = _layers(meta)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if ".input_quantizer." not in k}  # a network opened as quantized: its input steps are in the header
    tensors, described = {}, {}
    for name, layer in layers.items():
        weight, bits = state.pop(f"{name}.weight"), layer["bits"]
        step = torch.tensor(layer["weight_step"], dtype=torch.float32)
        tensors[f"{name}.weight.codes"] = pack_codes(weight_codes(weight, step, bits), bits)
        tensors[f"{name}.weight.step"] = step
        described[name] = {"bits": bits, "shape": list(weight.shape), "input_step": layer["input_step"],
                           "input": layer["input"]}
    tensors.update(state)
    facts = {k: v for k, v in meta.items() if k != "quantization"}
    header = {"format": PACKED_FORMAT, "config": json.loads(config.to_json()), "meta": facts, "layers": described}
    return save(tensors, metadata={HEADER: json.dumps(header, sort_keys=True)})  # one entry: written in one order


def read_packed(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ResNetConfig, dict]:
    """A packed file as (network computing as quantized, config, facts with "quantization"), read safely: the
    header is checked against the config it names before any tensor is read."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            config, facts, layers = _header(path, metadata)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path.name} is not a readable packed file ({str(e).splitlines()[0][:160]})") from None
    model = build_model(config, device="meta").to_empty(device="cpu")
    state = _unpacked_state(path, model, tensors, layers)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path.name} does not match its own config: {str(e).splitlines()[0]}") from None
    quantization = {"method": "learned steps", "layers": {
        name: {**layer, "weight_step": tensors[f"{name}.weight.step"].tolist()} for name, layer in layers.items()}}
    install_input_quantizers(model, quantization["layers"])
    return model.to(device).eval(), config, {**facts, "quantization": quantization}


def _header(path: Path, metadata: dict[str, str]) -> tuple[ResNetConfig, dict, dict]:
    try:
        header = json.loads(metadata.get(HEADER, "null"))
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != PACKED_FORMAT:
        raise CheckpointError(f"{path.name} is not a resnet-viz packed file (no '{PACKED_FORMAT}' header)")
    try:
        config = ResNetConfig.from_json(json.dumps(header["config"]))
        facts, layers = header["meta"], header["layers"]
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path.name} has a broken header ({str(e).splitlines()[0][:160]})") from None
    allowed = checkpoint_bytes_allowed(config)
    if path.stat().st_size > allowed:
        raise CheckpointError(f"{path.name} is {human_bytes(path.stat().st_size)}, but its config "
                              f"({config.describe()}) needs at most {human_bytes(allowed)}; refusing to read it")
    if not isinstance(facts, dict) or not isinstance(layers, dict):
        raise CheckpointError(f"{path.name} has a broken header (its facts and layers are not tables)")
    return config, facts, layers


def _unpacked_state(path: Path, model: nn.Module, tensors: dict, layers: dict) -> dict[str, torch.Tensor]:
    """The state dict the packed tensors stand for, every layer's codes and steps checked against the network."""
    modules, state = dict(model.named_modules()), dict(tensors)
    for name, layer in layers.items():
        module = modules.get(name)
        try:
            bits, shape = int(layer["bits"]), tuple(int(n) for n in layer["shape"])
            codes, step = state.pop(f"{name}.weight.codes"), state.pop(f"{name}.weight.step").float()
            float(layer["input_step"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path.name}: layer {name!r} is missing its bits, shape, codes or steps") from None
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or tuple(module.weight.shape) != shape:
            raise CheckpointError(f"{path.name}: layer {name!r} does not match its network's layers")
        count = math.prod(shape)
        if not 2 <= bits <= 8 or codes.dtype != torch.uint8 or codes.numel() != packed_size(count, bits):
            raise CheckpointError(f"{path.name}: layer {name!r} holds {codes.numel()} bytes of codes, not "
                                  f"{packed_size(count, bits) if 2 <= bits <= 8 else 'a 2- to 8-bit layer'}")
        if step.shape != (shape[0],) or not bool(torch.isfinite(step).all() and (step > 0).all()):
            raise CheckpointError(f"{path.name}: layer {name!r} needs {shape[0]} positive steps")
        qn = levels(bits, signed=True)[0]
        state[f"{name}.weight"] = ((unpack_codes(codes, bits, count) - qn).float().reshape(shape)
                                   * step.reshape((-1,) + (1,) * (len(shape) - 1)))
    return state


def install_input_quantizers(model: nn.Module, layers: dict[str, dict]) -> None:
    """Round each named layer's input to its saved step (fixed, for inference): unsigned after a ReLU, signed for
    the network's input, or clipped at the saved α (PACT)."""
    modules = dict(model.named_modules())
    for name, layer in layers.items():
        bits, step = int(layer["bits"]), float(layer["input_step"])
        if layer["input"] == "pact":
            quantizer = PactQuantizer(bits, alpha=step * levels(bits, signed=False)[1])
        else:
            quantizer = LsqQuantizer(bits, signed=layer["input"] == "signed")
            quantizer.step.data.fill_(step)
            quantizer.initialised.fill_(True)
        quantizer.requires_grad_(False)
        modules[name].input_quantizer = quantizer
        modules[name].register_forward_pre_hook(quantize_input)


def is_packed(path: str | Path) -> bool:
    """Whether ``path`` (or ``bundled:NAME``) names a packed file rather than a checkpoint."""
    return str(path).endswith(SUFFIX)


def open_quantized(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ResNetConfig, dict]:
    """A packed file or a checkpoint, as it computes when deployed: a learned-step fine-tune's checkpoint gets its
    saved input steps back (its weights are on their grids already); any other checkpoint opens as it is."""
    if is_packed(path):
        return read_packed(resolve(path), device)
    model, config, meta = load_checkpoint(path, device)
    quantization = meta.get("quantization")
    if isinstance(quantization, dict) and quantization.get("method") == "learned steps":
        try:
            install_input_quantizers(model, quantization["layers"])
        except (KeyError, TypeError, ValueError, ConfigError):
            raise CheckpointError(f"{Path(str(path)).name}: its quantization record is broken") from None
        model.to(device)
    return model, config, meta


def weight_sizes(model: nn.Module, layers: dict[str, dict]) -> dict[str, int]:
    """Bytes of the quantized layers' weights: float32, int8 (one byte a weight, a float32 step per channel) and
    packed at their bits (codes and steps), as a deployed file holds them."""
    modules = dict(model.named_modules())
    out = {"float32": 0, "int8": 0, "packed": 0}
    for name, layer in layers.items():
        weight = modules[name].weight
        count, channels = weight.numel(), weight.shape[0]
        out["float32"] += 4 * count
        out["int8"] += count + 4 * channels
        out["packed"] += packed_size(count, int(layer["bits"])) + 4 * channels
    return out


def _layers(meta: dict) -> dict[str, dict]:
    quantization = meta.get("quantization")
    if not isinstance(quantization, dict) or quantization.get("method") != "learned steps":
        raise ConfigError("only a network fine-tuned with learned steps (LSQ or PACT) can be packed: its steps "
                          "define the grid")
    return quantization["layers"]


def quantized_description(meta: dict) -> str | None:
    """How a learned-step network computes, in words ("as quantized: 4-bit weights and inputs; conv1 and fc 8-bit"),
    or None for a float network."""
    quantization = meta.get("quantization")
    if not isinstance(quantization, dict) or not quantization.get("layers"):
        return None
    bits = [int(layer["bits"]) for layer in quantization["layers"].values()]
    common = max(set(bits), key=bits.count)
    other = [f"{name} {layer['bits']}-bit" for name, layer in quantization["layers"].items()
             if int(layer["bits"]) != common]
    return f"as quantized: {common}-bit weights and inputs" + (f"; {', '.join(other)}" if other else "")
