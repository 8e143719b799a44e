"""What each quantization study found, as typed reports: the figures the command line prints and the app draws,
the table a CSV holds, the JSON a report is saved as, and the files a study leaves (programs, a checkpoint).

Every figure derived from the measurements is a property here, so that the two doors show the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..config import ResNetConfig
from ..training import checkpoint_bytes
from .int8 import onnx_bytes, program_bytes


@dataclass(frozen=True)
class Report:
    """What every study reports: the network studied and the data it was measured on. Each kind of report also
    has ``rows``, its findings as a table of dicts (what the CSV holds)."""

    mode: ClassVar[str]
    config: ResNetConfig
    data: str  # the data, in words

    @property
    def network(self) -> str:
        return self.config.describe()

    def to_json(self) -> dict[str, Any]:
        """The report as plain data for a JSON file: no models, no programs."""
        return {"mode": self.mode, "network": self.network, "config": self.config.to_dict(), "data": self.data,
                **self._findings()}

    def summary_lines(self) -> list[str]:
        """The report as text: the network and the data, then the findings."""
        return [f"{self.network} on {self.data}", *self._finding_lines()]

    def _findings(self) -> dict[str, Any]:
        raise NotImplementedError

    def _finding_lines(self) -> list[str]:
        raise NotImplementedError

    def files(self) -> dict[str, bytes]:
        """Files the study leaves besides its report, by file name."""
        return {}


@dataclass(frozen=True)
class SweepReport(Report):
    """Accuracy at each bit width for each rounding scheme, after a float32 row."""

    mode: ClassVar[str] = "sweep"
    rows: list[dict[str, Any]]  # scheme, bits, accuracy

    def _findings(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def _finding_lines(self) -> list[str]:
        return [f"{r['scheme']:<36} {r['bits']:>2} bits  {r['accuracy']:.2%}" for r in self.rows]


@dataclass(frozen=True)
class SensitivityReport(Report):
    """Each layer quantized alone, most fragile first, and a mixed-precision plan that keeps the most fragile
    layers at 8 bits and the rest at 4."""

    mode: ClassVar[str] = "sensitivity"
    bits: int  # the width each layer was tried at
    rows: list[dict[str, Any]]  # layer, accuracy, drop, rank
    plan: dict[str, Any]  # plan (bits by layer), accuracy, weight_bytes, float32_bytes

    @property
    def kept_high(self) -> int:
        """How many layers the plan keeps at 8 bits."""
        return sum(b == 8 for b in self.plan["plan"].values())

    @property
    def block_drops(self) -> dict[str, float]:
        """The accuracy lost by each residual block ("layer2.0"), as much as by its most fragile layer."""
        drops: dict[str, float] = {}
        for row in self.rows:
            block = ".".join(row["layer"].split(".")[:2])
            if block.startswith("layer"):  # the stem and the classifier belong to no block
                drops[block] = max(drops.get(block, 0.0), row["drop"])
        return dict(sorted(drops.items()))

    def _findings(self) -> dict[str, Any]:
        return {"bits": self.bits, "rows": self.rows, "plan": self.plan}

    def _finding_lines(self) -> list[str]:
        plan = self.plan
        return [*(f"{r['rank']:>3}. {r['layer']:<28} {r['accuracy']:.2%}  (−{r['drop']:.2%})" for r in self.rows),
                f"plan: the {self.kept_high} most fragile layers at 8 bits, the rest at 4: {plan['accuracy']:.2%}, "
                f"{plan['weight_bytes']:,} bytes of weights (float32: {plan['float32_bytes']:,})"]


@dataclass(frozen=True)
class QatReport(Report):
    """Accuracy at ``bits`` before and after a quantization-aware fine-tune, next to float32; the tuned network."""

    mode: ClassVar[str] = "qat"
    bits: int
    float32: float
    before: float
    after: float
    history: list[dict[str, Any]]  # one row per epoch
    epochs: int
    model: nn.Module = field(repr=False, compare=False)
    normalisation: dict[str, Any] = field(repr=False)  # mean, std and classes of the data it was tuned on
    method: str = "ste"  # "lsq", "pact" or "ste"
    layer_bits: dict[str, int] = field(default_factory=dict)  # every conv and fc layer's bits (learned methods)
    after_flip: float | None = None  # after the fine-tune, with flip TTA

    @property
    def gain(self) -> float:
        """What the fine-tune won back at ``bits``, as a share of the images."""
        return self.after - self.before

    @property
    def rows(self) -> list[dict[str, Any]]:
        row = {"method": self.method, "bits": self.bits, "float32": self.float32, "before": self.before,
               "after": self.after}
        return [row if self.after_flip is None else {**row, "after_flip": self.after_flip}]

    @property
    def other_bits(self) -> dict[str, int]:
        """The layers not at ``bits`` (the first conv and the fc, by default)."""
        return {name: b for name, b in self.layer_bits.items() if b != self.bits}

    def _findings(self) -> dict[str, Any]:
        return {**self.rows[0], "layer_bits": self.layer_bits, "history": self.history}

    def _finding_lines(self) -> list[str]:
        flip = "" if self.after_flip is None else f" ({self.after_flip:.2%} with flip TTA)"
        lines = [f"{self.bits}-bit accuracy ({self.method}): {self.before:.2%} before the fine-tune, "
                 f"{self.after:.2%}{flip} after {self.epochs} epochs (float32: {self.float32:.2%})"]
        if self.other_bits:
            lines.append("kept at other widths: " + ", ".join(f"{n} {b}-bit" for n, b in self.other_bits.items()))
        return lines

    def files(self) -> dict[str, bytes]:
        meta = {"quantization": f"{self.bits}-bit weights on their grids after QAT", **self.normalisation}
        return {"qat-checkpoint.pt": checkpoint_bytes(self.model, self.config, meta)}


@dataclass(frozen=True)
class Int8Report(Report):
    """Real int8 on this CPU against float32: accuracy, speed and bytes of weights; the two networks."""

    mode: ClassVar[str] = "int8"
    # float32, then int8: model, accuracy, latency_ms_batch_1, images_per_s_batch_256, weight_bytes
    rows: list[dict[str, Any]]
    batch_norms_folded: list[str]  # "conv ← batch norm", by qualified names
    program: nn.Module = field(repr=False, compare=False)  # the int8 program (torch.export)
    float32_model: nn.Module = field(repr=False, compare=False)

    @property
    def float32_row(self) -> dict[str, Any]:
        return self.rows[0]

    @property
    def int8_row(self) -> dict[str, Any]:
        return self.rows[1]

    @property
    def speedup(self) -> float:
        """int8's throughput at batch 256 over float32's."""
        return self.int8_row["images_per_s_batch_256"] / self.float32_row["images_per_s_batch_256"]

    @property
    def accuracy_delta_points(self) -> float:
        """int8's accuracy minus float32's, in percentage points."""
        return (self.int8_row["accuracy"] - self.float32_row["accuracy"]) * 100

    @property
    def size_ratio(self) -> float:
        """How many times smaller the int8 weights are."""
        return self.float32_row["weight_bytes"] / self.int8_row["weight_bytes"]

    def _findings(self) -> dict[str, Any]:
        return {"rows": self.rows, "batch_norms_folded": self.batch_norms_folded}

    def _finding_lines(self) -> list[str]:
        return [f"{len(self.batch_norms_folded)} batch norms folded into their convolutions first",
                f"{'':<8}{'accuracy':>10}{'batch 1':>11}{'batch 256':>16}{'weights':>14}",
                *(f"{r['model']:<8}{r['accuracy']:>10.2%}{r['latency_ms_batch_1']:>8.2f} ms"
                  f"{r['images_per_s_batch_256']:>10,.0f} img/s{r['weight_bytes']:>12,} B" for r in self.rows),
                f"int8: {self.speedup:.1f}× the throughput, {self.size_ratio:.1f}× smaller weights, "
                f"{self.accuracy_delta_points:+.2f} points"]

    def files(self) -> dict[str, bytes]:
        """The int8 program for PyTorch, and both networks as ONNX files for Netron."""
        shape = self.config.input_shape
        return {"int8.pt2": program_bytes(self.program), "float32.onnx": onnx_bytes(self.float32_model, shape),
                "int8.onnx": onnx_bytes(self.program, shape)}
