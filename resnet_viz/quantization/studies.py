"""Studies of a trained network under quantization, as the command line and the app run them: a bit sweep,
layer-by-layer sensitivity with a mixed-precision plan, a quantization-aware fine-tune, and real int8 on this
CPU."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..training import accuracy, check_classes, load_checkpoint, pick_device
from . import int8
from .fake import Scheme, calibration_batches, fake_quantized, quantizable_layers, weight_bytes
from .qat import quantization_aware_finetune


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


def run_study(checkpoint, data, mode: str, bits: Iterable[int] | None = None, epochs: int = 3,
              device: str = "auto", progress=None, on_step=None) -> dict:
    """One study of a saved network, as a JSON-ready report (plus the fine-tuned model under "model" for qat,
    the int8 program under "program" for int8): ``mode`` "sweep", "sensitivity", "qat" or "int8". Both the
    command line and the app run this."""
    dev = pick_device(device)
    model, config, meta = load_checkpoint(checkpoint, dev)
    model = model.float()
    if "mean" in meta:  # normalise as the network was trained
        data = dataclasses.replace(data, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    check_classes(config, data, "the checkpoint")
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
