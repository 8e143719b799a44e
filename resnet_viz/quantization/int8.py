"""Real int8 inference on the CPU: post-training static quantization of a trained ResNet.

torchao's PT2E flow: the model, with each BatchNorm folded into its conv, is captured by ``torch.export``;
``X86InductorQuantizer`` marks where int8 goes (per-channel symmetric int8 weights, per-tensor affine uint8
activations, conv + add + ReLU of a residual block as one fused int8 op); a few hundred training images
calibrate the activation ranges; ``convert_pt2e`` turns the observers into quantize/dequantize pairs and the
weights into int8 tensors. Run as it is, that program only simulates int8 in float. ``torch.compile`` with
frozen weights (``CompiledModel``) lowers the pairs to oneDNN's int8 convolutions: that is the fast path, and
it needs a C++ compiler (g++) for Inductor's generated code.

Programs are saved and loaded as ``torch.export`` archives (.pt2). Loading reads tensors only
(``weights_only``): a file that holds anything else is refused, never executed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import pickle
import statistics
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..errors import QuantizationError
from ..formatting import first_line
from ..io import write_file

MAX_BATCH = 1 << 16  # the largest batch an exported program accepts


# -- BatchNorm folding -------------------------------------------------------------------------------------


def conv_bn_pairs(model: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
    """(parent, conv name, BN name) for each Conv2d followed by its BatchNorm2d: convN/bnN in the stem and the
    blocks, and adjacent Conv2d, BatchNorm2d in a Sequential (the projection shortcut's downsample.0/1). A block
    that names its pairs (``conv_norm_pairs``: a pre-activation block, whose bn1 comes before conv1) is taken
    at its word."""
    for parent in model.modules():
        children = dict(parent.named_children())
        named = getattr(parent, "conv_norm_pairs", None)
        if named is not None:
            yield from ((parent, conv, bn) for conv, bn in named)
            continue
        if isinstance(parent, nn.Sequential):
            names = list(children)
            for conv, bn in zip(names, names[1:]):
                if isinstance(children[conv], nn.Conv2d) and isinstance(children[bn], nn.BatchNorm2d):
                    yield parent, conv, bn
            continue
        for conv, module in children.items():
            bn = "bn" + conv[len("conv"):]
            if conv.startswith("conv") and isinstance(module, nn.Conv2d) and isinstance(children.get(bn),
                                                                                        nn.BatchNorm2d):
                yield parent, conv, bn


def folded_batch_norms(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, BN) qualified names, as ``named_modules`` gives them, of each pair ``fold_batch_norm`` folds:
    ("conv1", "bn1") in the stem, ("layer2.0.downsample.0", "layer2.0.downsample.1") in a projection shortcut."""
    names = {module: name for name, module in model.named_modules()}
    return [(_qualified(names[parent], conv), _qualified(names[parent], bn)) for parent, conv, bn in
            conv_bn_pairs(model)]


def _qualified(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


@torch.no_grad()
def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy in which each BatchNorm2d is folded into the weight and bias of the conv before it and
    replaced by ``nn.Identity``: the same outputs as the original in eval mode, one layer fewer per conv."""
    folded = copy.deepcopy(model).eval()
    for parent, conv_name, bn_name in list(conv_bn_pairs(folded)):
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        if bn.running_mean is None or bn.running_var is None:
            raise QuantizationError(f"BatchNorm {bn_name!r} keeps no running statistics, so it cannot be folded")
        conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                      bn.eps, bn.weight, bn.bias)
        setattr(parent, bn_name, nn.Identity())
    return folded


# -- programs: export, quantize, save, load -----------------------------------------------------------------


def export_program(model: nn.Module, input_shape: tuple[int, ...]) -> torch.fx.GraphModule:
    """The model with its BatchNorms folded, captured by ``torch.export`` for inputs of ``input_shape`` (C, H, W)
    and any batch size, on the CPU in float32.

    The capture is strict (TorchDynamo): the non-strict default of torch 2.14 records no ``source_fn_stack``,
    so the quantizer groups nodes by module, and the two calls of a block's one ``relu`` module become one
    partition with two outputs, which it refuses ("Input partition has more than one output node")."""
    folded = fold_batch_norm(model).to("cpu", torch.float32)
    example = torch.zeros(2, *input_shape)  # batch 2, not 1: export specialises a dimension of size 1
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        return torch.export.export(folded, (example,), dynamic_shapes=({0: batch},), strict=True).module()
    except Exception as e:  # export raises many kinds of errors for code it cannot capture
        raise QuantizationError(f"torch.export cannot capture the model: {first_line(e)}") from None


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor]) -> torch.fx.GraphModule:
    """The model as an int8 program: BatchNorms folded, int8 weights (symmetric, one scale per output channel)
    and uint8 activations (one scale and zero point per tensor) calibrated on ``calibration`` batches
    (normalised images, as in training). The model is not changed."""
    batches = [x.detach().to("cpu", torch.float32) for x in calibration]
    if not batches:
        raise QuantizationError("int8 quantization needs calibration images, and none were given")
    prepare_pt2e, convert_pt2e, quantizer = _torchao()
    program = export_program(model, tuple(batches[0].shape[1:]))
    try:
        prepared = prepare_pt2e(program, quantizer)
        with torch.no_grad():
            for x in batches:
                prepared(x)
        converted = convert_pt2e(prepared)
    except Exception as e:  # torchao raises ValueError, AssertionError and more for patterns it cannot take
        raise QuantizationError(f"torchao cannot quantize the model: {first_line(e)}") from None
    return _drop_unused_tensors(converted)


def _torchao():
    """prepare_pt2e, convert_pt2e and the x86 quantizer with its default int8 config."""
    x86 = _x86_quantizer_module()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    return prepare_pt2e, convert_pt2e, quantizer


def _x86_quantizer_module():
    """torchao's x86 quantizer module. Importing it also registers, in Inductor, the passes that turn an int8
    program's quantize/dequantize pairs into oneDNN int8 ops: without them it compiles to float convolutions."""
    # torchao's import logs a deprecation notice of torch's own about an Enum; it is not ours to act on
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    except ImportError:
        raise QuantizationError("int8 quantization needs the torchao package: "
                                "pip install 'resnet-viz[quantize]'") from None
    finally:
        pytree_log.setLevel(level)
    return x86


def _drop_unused_tensors(program: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Delete the tensors no node reads: convert_pt2e keeps each float32 weight beside its int8 copy, and a
    saved program would carry both."""
    used = {node.target for node in program.graph.nodes if node.op == "get_attr"}
    for name, _ in [*program.named_parameters(), *program.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(program.get_submodule(owner), attr)
    program.delete_all_unused_submodules()
    program.recompile()
    return program


def image_shape(program: torch.fx.GraphModule) -> tuple[int, ...]:
    """(C, H, W) of the images an exported program takes."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and isinstance(node.meta.get("val"), torch.Tensor):
            return tuple(int(d) for d in node.meta["val"].shape[1:])
    raise QuantizationError("the program has no image input to read its shape from")


def program_bytes(program: torch.fx.GraphModule) -> bytes:
    """A program as a ``torch.export`` archive (.pt2), for any batch size."""
    example = torch.zeros(2, *image_shape(program))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    buffer = io.BytesIO()
    try:
        exported = torch.export.export(program, (example,), dynamic_shapes=({0: batch},))
        for node in exported.graph.nodes:
            # where each node came from (source lines with this machine's paths, the passes it went through):
            # for debugging the capture, and most of the file's graph in bytes
            for key in ("stack_trace", "from_node"):
                node.meta.pop(key, None)
        torch.export.save(exported, buffer)
    except Exception as e:  # export raises many kinds of errors
        raise QuantizationError(f"the program cannot be saved: {first_line(e)}") from None
    return buffer.getvalue()


def save_program(program: torch.fx.GraphModule, path: str | Path) -> Path:
    """Write a program (float32 or int8) to a .pt2 file, whole or not at all."""
    return write_file(path, program_bytes(program))


def load_program(path: str | Path) -> torch.fx.GraphModule:
    """A program saved by ``save_program``. Only tensors and plain data are read: a file that holds any other
    pickled object is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise QuantizationError(f"program {str(path)!r} does not exist")
    _register_quantized_ops()
    try:
        with _weights_only_loads():
            return torch.export.load(io.BytesIO(path.read_bytes())).module()
    except pickle.UnpicklingError:
        raise QuantizationError(f"{path.name} holds pickled objects other than tensors, so it is refused: only "
                                "tensors and plain data are read") from None
    except Exception as e:  # zip, JSON and schema errors, among others
        raise QuantizationError(f"{path.name} is not a readable exported program ({first_line(e, 160)})") from None


def _register_quantized_ops() -> None:
    """Register the quantize/dequantize ops that int8 programs call (torch defines them in a module it does not
    import by itself)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Force ``weights_only=True`` on every torch.load inside: torch.export.load falls back to full unpickling
    when a safe load fails."""
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


# -- running ------------------------------------------------------------------------------------------------


class CompiledModel:
    """A program compiled by Inductor with its weights frozen into the code: how an int8 program runs on
    oneDNN's int8 kernels (float32 programs compile the same way, as a like-for-like baseline).

    The first call with a batch size compiles (seconds); the next different one compiles once more, for
    any batch size. ``eval`` and calling it make it usable where a model is expected, as in
    ``resnet_viz.quantize.accuracy``."""

    def __init__(self, program: nn.Module):
        import torch._inductor.config

        _x86_quantizer_module()
        self.program = program
        self._run = torch.compile(program)

    def eval(self) -> CompiledModel:
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised images."""
        try:
            # freezing is read from the global config where the int8 patterns are lowered: options={"freezing":
            # True} in torch.compile leaves them as float ops that fail to compile
            with torch._inductor.config.patch(freezing=True), warnings.catch_warnings():
                # Inductor's int8 lowering copies a tensor with torch.tensor(); harmless, and not ours to fix
                warnings.filterwarnings("ignore", message="To copy construct from a tensor")
                return self._run(x.to("cpu", torch.float32))
        except torch._dynamo.exc.BackendCompilerFailed as e:
            raise QuantizationError(f"Inductor cannot compile the program (it needs a C++ compiler such as g++): "
                                    f"{first_line(e.inner_exception)}") from None

    __call__ = predict


def tensor_bytes(program: nn.Module) -> dict[str, int]:
    """Bytes of the tensors a program holds, by dtype ("int8", "float32", ...)."""
    tensors = dict(program.named_parameters())
    tensors.update(program.named_buffers())
    if isinstance(program, torch.fx.GraphModule):
        for node in program.graph.nodes:
            if node.op == "get_attr":
                value = _attr(program, node.target)
                if isinstance(value, torch.Tensor):
                    tensors[node.target] = value
    out: dict[str, int] = {}
    for t in tensors.values():
        kind = str(t.dtype).removeprefix("torch.")
        out[kind] = out.get(kind, 0) + t.numel() * t.element_size()
    return out


def _attr(module: nn.Module, target: str):
    for part in target.split("."):
        module = getattr(module, part)
    return module


def latency_ms(model, shape: tuple[int, ...], runs: int = 200, warmup: int = 20) -> float:
    """Median milliseconds of one call on a batch of one image of ``shape`` (C, H, W), after warm-up calls."""
    x = torch.randn(1, *shape)
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def images_per_s(model, shape: tuple[int, ...], batch: int = 256, runs: int = 10, warmup: int = 3) -> float:
    """Images per second on batches of ``batch`` images of ``shape`` (C, H, W), after warm-up calls."""
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        start = time.perf_counter()
        for _ in range(runs):
            model(x)
        return batch * runs / (time.perf_counter() - start)


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The model (float32, or an int8 program as QuantizeLinear/DequantizeLinear pairs) as an ONNX file, for
    Netron or ONNX Runtime; any batch size. Needs the onnx and onnxscript packages."""
    import tempfile

    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(folder) / "model.onnx"
        try:
            exported = torch.onnx.export(model.to("cpu").eval() if not isinstance(model, torch.fx.GraphModule)
                                         else model, (example,), dynamo=True, verbose=False,
                                         dynamic_shapes=({0: batch},))
            exported.save(str(path))
        except ImportError as e:
            raise QuantizationError(f"ONNX export needs the onnx and onnxscript packages ({e}): "
                                    "pip install 'resnet-viz[quantize]'") from None
        except Exception as e:  # the exporter raises many kinds of errors for graphs it cannot translate
            raise QuantizationError(f"the model cannot be exported to ONNX: {first_line(e)}") from None
        return path.read_bytes()
