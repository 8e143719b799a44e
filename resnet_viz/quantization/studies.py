"""Studies of a trained network under quantization, as the command line and the app run them: a bit sweep,
layer-by-layer sensitivity with a mixed-precision plan, a quantization-aware fine-tune, and real int8 on this
CPU."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ResNetConfig
from ..data import Dataset
from ..errors import ConfigError
from ..training import Progress, accuracy, check_classes, load_checkpoint, pick_device
from . import int8
from .fake import Scheme, calibration_batches, fake_quantized, fake_quantized_plan, quantizable_layers, weight_bytes
from .lsq import bake_learned, layer_bits
from .qat import learned_finetune, overall_progress, progressive_finetune, quantization_aware_finetune
from .reports import Int8Report, QatReport, Report, SensitivityReport, Stage, SweepReport


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


@dataclass(frozen=True)
class QatOptions:
    """How a quantization-aware fine-tune runs, besides its method: a progressive ``schedule`` of (bits, epochs)
    stages (None: one stage at the study's width and epochs); the width of the first conv and the fc
    (``edge_bits``; None: the same as the rest); ``plan``, widths by layer name, or "sensitivity" (the layers a
    sensitivity study finds most fragile at 8 bits); ``distill`` from the float32 network (learned methods); and
    ``compare``, which adds post-training rounding and the other fine-tune at every width."""

    schedule: list[tuple[int, int]] | None = None
    edge_bits: int | None = 8
    plan: dict[str, int] | str | None = None
    distill: bool = True
    compare: bool = False


@dataclass(frozen=True)
class Study:
    """A saved network loaded for a study, the data to measure it on (normalised as the network was trained), and
    what was asked: bit widths (None: the mode's default), fine-tuning epochs, and progress callbacks; for a
    fine-tune, its method, schedule and per-layer widths."""

    model: nn.Module
    config: ResNetConfig
    data: Dataset
    device: torch.device
    bits: list[int] | None = None
    epochs: int = 3
    progress: Callable[[int, int], None] | None = None  # done, total
    on_step: Callable[[Progress], None] | None = None  # each training step of a fine-tune
    method: str = "lsq"  # qat: "lsq", "pact" (LSQ weights, PACT inputs) or "ste" (rounding with fixed ranges)
    qat: QatOptions = QatOptions()

    @property
    def width(self) -> int:
        """The one bit width of a study other than the sweep."""
        return self.bits[0] if self.bits else 4

    @property
    def schedule(self) -> list[tuple[int, int]]:
        """The fine-tune's (bits, epochs) stages: the schedule asked for, else one stage."""
        return self.qat.schedule or [(self.width, self.epochs)]


@dataclass(frozen=True)
class Mode:
    """A kind of study, as the app offers it (``label``) and the command line explains it (``help``)."""

    label: str
    help: str
    run: Callable[[Study], Report]


def run_study(checkpoint, data, mode: str, bits: Iterable[int] | None = None, epochs: int = 3,
              device: str = "auto", progress=None, on_step=None, method: str = "lsq",
              qat: QatOptions | None = None) -> Report:
    """One study of a saved network: ``mode`` is a key of ``MODES``. Both the command line and the app run this."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if method not in QAT_METHODS:
        raise ConfigError(f"method {method!r} is not one of {', '.join(QAT_METHODS)}")
    dev = pick_device(device)
    model, config, meta = load_checkpoint(checkpoint, dev)
    if "mean" in meta:  # normalise as the network was trained
        data = dataclasses.replace(data, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    check_classes(config, data, "the checkpoint")
    study = Study(model.float(), config, data, dev, list(bits) if bits else None, epochs, progress, on_step, method,
                  qat or QatOptions())
    return MODES[mode].run(study)


def _sweep_study(study: Study) -> SweepReport:
    rows = sweep(study.model, study.data, study.device, bits=study.bits or (8, 6, 4, 3, 2), progress=study.progress)
    return SweepReport(study.config, study.data.describe(), rows)


def _sensitivity_study(study: Study) -> SensitivityReport:
    model, data, device = study.model, study.data, study.device
    rows = sensitivity(model, data, device, Scheme(bits=study.width), progress=study.progress)
    plan = mixed_precision_plan(model, data, device, rows, fragile=max(1, len(rows) // 5))
    return SensitivityReport(study.config, data.describe(), study.width, rows, plan)


def _qat_study(study: Study) -> QatReport:
    data, model, device, options = study.data, study.model, study.device, study.qat
    normalisation = {"mean": list(data.mean), "std": list(data.std), "classes": list(data.classes)}
    base, base_flip = accuracy(model, data, device), accuracy(model, data, device, flip_tta=True)
    fixed = _fixed_widths(study)
    if study.method == "ste":
        stages = _ste_stages(study, fixed)
    else:
        tuned = progressive_finetune(model, study.config, data, device, study.schedule, distill=options.distill,
                                     float32=base, on_progress=study.on_step, method=study.method,
                                     edge_bits=options.edge_bits, plan=fixed)
        stages = [_learned_stage(t) for t in tuned]
    compare = _compare(study, fixed) if options.compare else []
    return QatReport(study.config, data.describe(), study.method, base, base_flip, stages, normalisation,
                     distilled=options.distill and study.method != "ste", compare=compare)


def _fixed_widths(study: Study) -> dict[str, int] | None:
    """The widths set by layer name: the plan given, or the sensitivity study's fragile layers at 8 bits."""
    plan = study.qat.plan
    if plan != "sensitivity":
        return plan
    rows = sensitivity(study.model, study.data, study.device, Scheme(bits=min(b for b, _ in study.schedule)))
    mixed = mixed_precision_plan(study.model, study.data, study.device, rows, fragile=max(1, len(rows) // 5))
    return {name: b for name, b in mixed["plan"].items() if b == 8}


def _learned_stage(tuned: dict) -> Stage:
    baked, quantization = bake_learned(tuned["model"])
    return Stage(tuned["bits"], tuned["epochs"], tuned["before"], tuned["after"], tuned["after_flip"],
                 tuned["train_seconds"], tuned["layer_bits"], tuned["history"], baked.float(), quantization)


def _ste_stages(study: Study, fixed: dict[str, int] | None) -> list[Stage]:
    """STE fine-tunes along the schedule, each starting from the last one's network."""
    current, stages = study.model, []
    for i, (bits, epochs) in enumerate(study.schedule):
        plan = layer_bits(study.model, bits, study.qat.edge_bits, fixed)
        tuned = quantization_aware_finetune(current, study.config, study.data, study.device, bits=bits,
                                            epochs=epochs, layer_bits=plan,
                                            on_progress=overall_progress(study.on_step, i, len(study.schedule)))
        stages.append(Stage(bits, epochs, tuned["before"], tuned["after"], tuned["after_flip"],
                            tuned["train_seconds"], plan, tuned["history"], tuned["model"]))
        current = tuned["model"]
    return stages


def _compare(study: Study, fixed: dict[str, int] | None) -> list[dict]:
    """Post-training rounding (weights per channel, inputs per tensor, calibrated on 256 training images) and the
    other kind of fine-tune (STE for a learned method, LSQ for STE), at every width of the schedule, each from the
    float32 network with the same per-layer widths and epochs."""
    model, data, device = study.model, study.data, study.device
    calib, rows = calibration_batches(data, device), []
    for bits, epochs in study.schedule:
        plan = layer_bits(model, bits, study.qat.edge_bits, fixed)
        rows.append({"scheme": "post-training", "bits": bits,
                     "accuracy": accuracy(fake_quantized_plan(model, plan, calib), data, device)})
        if study.method == "ste":
            tuned = learned_finetune(model, study.config, data, device, bits=bits, epochs=epochs, plan=plan,
                                     teacher=copy.deepcopy(model).eval() if study.qat.distill else None)
            rows.append({"scheme": "LSQ fine-tune", "bits": bits, "accuracy": tuned["after"]})
        else:
            tuned = quantization_aware_finetune(model, study.config, data, device, bits=bits, epochs=epochs,
                                                layer_bits=plan)
            rows.append({"scheme": "STE fine-tune", "bits": bits, "accuracy": tuned["after"]})
    return rows


def _int8_study(study: Study) -> Int8Report:
    """Real int8 on this CPU (torchao PT2E, see resnet_viz.quantization.int8) next to float32: accuracy, bytes and
    speed."""
    steps, cpu, progress = 5, torch.device("cpu"), study.progress or (lambda done, total: None)
    model, shape = study.model.to(cpu), study.config.input_shape
    program = int8.quantize_int8(model, calibration_batches(study.data, cpu, images=512))
    progress(1, steps)
    rows = []
    for name, runner in (("float32", model), ("int8", int8.CompiledModel(program))):
        acc = accuracy(runner, study.data, cpu)
        progress(2 + len(rows), steps)
        rows.append({"model": name, "accuracy": acc,
                     "latency_ms_batch_1": int8.latency_ms(runner, shape, runs=50, warmup=5),
                     "images_per_s_batch_256": int8.images_per_s(runner, shape, runs=5, warmup=2)})
    rows[0]["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    rows[1]["weight_bytes"] = sum(int8.tensor_bytes(program).values())
    progress(steps, steps)
    folded = [f"{conv} ← {bn}" for conv, bn in int8.folded_batch_norms(model)]
    return Int8Report(study.config, study.data.describe(), rows, folded, program, model)


QAT_METHODS = {"lsq": "learned step size (LSQ) for weights and inputs",
               "pact": "LSQ weights, inputs clipped at a learned α (PACT)",
               "ste": "fixed ranges with straight-through rounding"}

MODES: dict[str, Mode] = {
    "int8": Mode("Real int8 on this CPU", "real int8 against float32 on this CPU", _int8_study),
    "sweep": Mode("Bit sweep (simulated)", "accuracy at each bit width per scheme", _sweep_study),
    "sensitivity": Mode("Layer sensitivity", "one layer at a time", _sensitivity_study),
    "qat": Mode("Quantization-aware fine-tune", "a short quantization-aware fine-tune", _qat_study),
}
