"""What each quantization study found, as typed reports: the figures the command line prints and the app draws,
the table a CSV holds, the JSON a report is saved as, and the files a study leaves (programs, a checkpoint).

Every figure derived from the measurements is a property here, so that the two doors show the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..config import ResNetConfig
from ..training import checkpoint_bytes
from ..views.charts import accuracy_vs_bits
from .int8 import onnx_bytes, program_bytes
from .packed import SUFFIX, packed_bytes, weight_sizes


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

    def figures(self) -> dict[str, Any]:
        """Its charts, by name (plotly figures): accuracy against bits, where the study has it."""
        return {}

    def _ipython_display_(self) -> None:
        """In a notebook: the summary, the table and the charts."""
        from ..views.notebook import show

        show(self.summary_lines(), self.rows, self.figures())


@dataclass(frozen=True)
class SweepReport(Report):
    """Accuracy at each bit width for each rounding scheme, after a float32 row."""

    mode: ClassVar[str] = "sweep"
    chart_title: ClassVar[str] = "Accuracy against bits (weights and activations rounded, simulated)"
    rows: list[dict[str, Any]]  # scheme, bits, accuracy

    def _findings(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def figures(self) -> dict[str, Any]:
        return {"bits": accuracy_vs_bits(self.rows, self.chart_title)}

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
class Stage:
    """One width of a quantization-aware fine-tune; a progressive schedule has several, each starting from the
    last. ``model`` computes with its weights on their grids; ``quantization`` (learned methods) holds every layer's
    bits and steps as plain data, from which the input rounding and the packed file are made."""

    bits: int
    epochs: int
    before: float  # as quantized, before this stage's fine-tune
    after: float
    after_flip: float | None
    train_seconds: float
    layer_bits: dict[str, int]
    history: list[dict[str, Any]]
    model: nn.Module = field(repr=False, compare=False)
    quantization: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"W{self.bits}A{self.bits}"

    @property
    def sizes(self) -> dict[str, int] | None:
        """Bytes of the quantized layers' weights in float32, int8 and packed at their bits (learned methods)."""
        return None if self.quantization is None else weight_sizes(self.model, self.quantization["layers"])


@dataclass(frozen=True)
class QatReport(Report):
    """A quantization-aware fine-tune, one stage or a progressive schedule of them, next to float32 (with and
    without flip TTA); with ``compare``, post-training rounding and the STE fine-tune at the same widths."""

    mode: ClassVar[str] = "qat"
    chart_title: ClassVar[str] = "Accuracy against bits: rounding alone and fine-tuned"
    method: str  # "lsq", "pact" or "ste"
    float32: float
    float32_flip: float | None
    stages: list[Stage]
    normalisation: dict[str, Any] = field(repr=False)  # mean, std and classes of the data it was tuned on
    distilled: bool = False
    compare: list[dict[str, Any]] = field(default_factory=list)  # scheme, bits, accuracy: other methods' results

    @property
    def last(self) -> Stage:
        return self.stages[-1]

    @property
    def bits(self) -> int:
        return self.last.bits

    @property
    def gain(self) -> float:
        """What the last stage's fine-tune won back, as a share of the images."""
        return self.last.after - self.last.before

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for st in self.stages:
            row = {"method": self.method, "bits": st.bits, "epochs": st.epochs,
                   "train_seconds": round(st.train_seconds), "float32": self.float32, "before": st.before,
                   "after": st.after, "points_below_float32": round(100 * (self.float32 - st.after), 2)}
            if st.after_flip is not None and self.float32_flip is not None:
                row.update(float32_flip=self.float32_flip, after_flip=st.after_flip,
                           points_below_float32_flip=round(100 * (self.float32_flip - st.after_flip), 2))
            rows.append({**row, **{f"weight_bytes_{k}": v for k, v in (st.sizes or {}).items()}})
        return rows

    @property
    def chart_rows(self) -> list[dict[str, Any]]:
        """Accuracy against bits for the chart: float32, this fine-tune's stages, and what it was compared with."""
        label = {"ste": "STE fine-tune", "lsq": "LSQ fine-tune", "pact": "LSQ + PACT fine-tune"}[self.method]
        return [{"scheme": "float32", "bits": 32, "accuracy": self.float32},
                *({"scheme": label, "bits": st.bits, "accuracy": st.after} for st in self.stages), *self.compare]

    def figures(self) -> dict[str, Any]:
        return {"bits": accuracy_vs_bits(self.chart_rows, self.chart_title)}

    def _findings(self) -> dict[str, Any]:
        return {"method": self.method, "distilled": self.distilled, "float32": self.float32,
                "float32_flip": self.float32_flip, "stages": self.rows, "compare": self.compare,
                "layer_bits": {st.name: st.layer_bits for st in self.stages},
                "history": {st.name: st.history for st in self.stages}}

    def _finding_lines(self) -> list[str]:
        flip = "" if self.float32_flip is None else f", {self.float32_flip:.2%} with flip TTA"
        lines = [f"float32: {self.float32:.2%}{flip}; method {self.method}"
                 + (", distilled from the float32 network" if self.distilled else "")]
        for st in self.stages:
            after = f"{st.after:.2%}" + ("" if st.after_flip is None else f" ({st.after_flip:.2%} with flip TTA)")
            lines.append(f"{st.name}: {st.before:.2%} before, {after} after {st.epochs} epochs "
                         f"({st.train_seconds:,.0f} s), {100 * (self.float32 - st.after):.2f} points below float32")
            if st.sizes:
                sz = st.sizes
                lines.append(f"  weights packed: {sz['packed']:,} B against {sz['int8']:,} in int8 and "
                             f"{sz['float32']:,} in float32 ({sz['float32'] / sz['packed']:.1f}× smaller)")
        other = {name: b for name, b in self.last.layer_bits.items() if b != self.bits}
        if other:
            lines.append("kept at other widths: " + ", ".join(f"{n} {b}-bit" for n, b in other.items()))
        lines += [f"compared: {r['scheme']} at {r['bits']} bits: {r['accuracy']:.2%}" for r in self.compare]
        return lines

    def file_names(self) -> list[str]:
        """The names of ``files()``, without making them."""
        return [f"qat-{st.name}{ext}" for st in self.stages
                for ext in ((".pt",) if st.quantization is None else (".pt", SUFFIX))]

    def files(self) -> dict[str, bytes]:
        """Each stage's network: a checkpoint (``qat-W4A4.pt``) and, for learned methods, the packed file
        (``qat-W4A4.rvq``), which ``evaluate`` reads as quantized."""
        out = {}
        for st in self.stages:
            how = st.quantization or f"{st.bits}-bit weights on their grids after QAT"
            meta = {**self.normalisation, "quantization": how}
            out[f"qat-{st.name}.pt"] = checkpoint_bytes(st.model, self.config, meta)
            if st.quantization is not None:  # learned steps define the grid the packed codes count in
                out[f"qat-{st.name}{SUFFIX}"] = packed_bytes(st.model, self.config, meta)
        return out


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
