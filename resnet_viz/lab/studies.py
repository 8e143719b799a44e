"""The Lab's studies, as the command line and the app run them: each takes trained networks (or configs, or
runs), some images, and settings, and gives a ``LabReport`` of plain data (a table for CSV, a JSON document)
that ``resnet_viz.lab.charts`` draws."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import PRESETS, ResNetConfig
from ..data import Dataset
from ..errors import ConfigError
from ..training import load_checkpoint
from .curves import curve_rows
from .erf import effective_fields
from .gradients import gradient_study
from .landscape import loss_landscape
from .lesion import lesion_study
from .networks import Network, check_images, open_networks, study_images
from .responses import layer_responses

Progress = Callable[[int, int], None]
Found = tuple[dict[str, Any], str, dict[str, Any]]  # per network; the images in words; "residual" and "configs"
DEPTH_PAIRS = ("plain20", "resnet20", "plain56", "resnet56", "plain110", "resnet110")


@dataclass(frozen=True)
class LabSettings:
    """What a study may be told; each study reads the fields it needs (``None``: the study's own default)."""

    images: int | None = None  # how many images (spread over the split)
    seed: int = 0
    draws: int = 4  # lesion: random sets of k blocks for each k
    steps: int = 11  # landscape: points along each axis of the surface
    line_steps: int = 11  # landscape: points along the line (on the surface's middle row when equal to steps)
    span: float = 1.0  # landscape: from -span to span along each direction
    batch_size: int = 64  # gradients at initialisation: the batch


@dataclass(frozen=True)
class Study:
    """A kind of study: what it is called, where it comes from, what it shows, and what it needs."""

    name: str
    title: str
    paper: str
    shows: str
    takes: str  # "networks" (checkpoints), "configs" (presets or checkpoints) or "runs"
    data: str  # "val", "train", "optional" (the sample images without data), or "none"
    images: int  # the default number of images
    run: Callable[[Study, list[str], Dataset | None, LabSettings, Progress], Found]


@dataclass
class LabReport:
    """What a study found, for each network (by its label), as plain data."""

    study: str
    networks: list[str]
    data: str  # the images, in words
    settings: dict[str, Any]
    results: dict[str, Any]  # network label -> what the study found for it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> Study:
        return STUDIES[self.study]

    def config(self, network: str) -> ResNetConfig | None:
        """The config of a studied network (None for a run's curves)."""
        found = self.extra.get("configs", {}).get(network)
        return None if found is None else ResNetConfig.from_json(json.dumps(found))

    def block_drops(self, network: str) -> dict[str, float]:
        """Lesion: the accuracy each block's removal costs, by block (only the removable ones)."""
        found = self.results[network]
        return {r["block"]: found["baseline"] - r["accuracy"] for r in found["single"] if r["accuracy"] is not None}

    def rows(self) -> list[dict[str, Any]]:
        """The table: one row per network and item (layer, block, k, stage, point), for CSV."""
        return ROWS[self.study](self)

    def summary_lines(self) -> list[str]:
        """What it found, a line per network."""
        return LINES[self.study](self)

    def _ipython_display_(self) -> None:
        """In a notebook: what the study shows and found, its table and its charts."""
        from ..views.notebook import show
        from .charts import figures

        info = self.info
        show([f"{info.title} ({info.paper}): {', '.join(self.networks)} on {self.data}", *self.summary_lines()],
             self.rows(), figures(self))

    def to_json(self) -> dict[str, Any]:
        info = self.info
        return {"study": self.study, "title": info.title, "paper": info.paper, "shows": info.shows,
                "networks": self.networks, "data": self.data, "settings": self.settings, "results": self.results,
                **self.extra}


def _share(progress: Progress | None, index: int, count: int) -> Progress:
    """Network ``index`` of ``count``'s progress as the whole study's (in thousandths)."""
    def report(done: int, total: int) -> None:
        if progress:
            progress(int(1000 * (index + done / max(total, 1)) / count), 1000)
    return report


def _each(networks: list[Network], progress: Progress | None, work: Callable[[Network, Progress], Any]) -> dict:
    return {n.label: work(n, _share(progress, i, len(networks))) for i, n in enumerate(networks)}


def _per_network(networks: list[Network], data: Dataset | None, count: int, split: str, progress: Progress | None,
                 work: Callable[[Network, torch.Tensor, torch.Tensor, Progress], Any]) -> Found:
    """``work(network, images, labels, progress)`` for each network, on the same images (normalised as each
    network was trained); where the images come from in words; and which networks are residual."""
    images, labels, where = study_images(data, count, split)
    found = _each(networks, progress, lambda n, p: work(n, n.normalise(images), labels, p))
    return found, where, {"residual": {n.label: n.residual for n in networks},
                          "configs": {n.label: json.loads(n.config.to_json()) for n in networks}}


def _open(sources: list[str], data: Dataset | None, need_data: bool, study: str) -> list[Network]:
    if need_data and data is None:
        raise ConfigError(f"the {study} study needs data: give a dataset (--data)")
    networks = open_networks(sources)
    check_images(networks, data)
    return networks


def _gradients(study: Study, sources: list[str], data: Dataset | None, s: LabSettings,
               progress: Progress) -> Found:
    configs = [_config_of(source) for source in (sources or DEPTH_PAIRS)]
    images = labels = None
    where = f"one batch of {s.batch_size} random images and labels drawn from seed {s.seed}"
    if data is not None:
        raw, labels, where = study_images(data, s.batch_size, "train")
        images = (raw.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(
            1, -1, 1, 1)
        for config in configs:
            if config.num_classes != len(data.classes):
                raise ConfigError(f"{config.name} has {config.num_classes} outputs but {data.name} has "
                                  f"{len(data.classes)} classes")
    found = gradient_study(configs, s.seed, s.batch_size, images, labels, progress)
    return found, where, {"residual": {c.name: c.shortcut != "none" for c in configs},
                          "configs": {c.name: json.loads(c.to_json()) for c in configs}}


def _config_of(source: str | ResNetConfig) -> ResNetConfig:
    """A config, a preset by name, or the config of a checkpoint (the study initialises it afresh)."""
    if isinstance(source, ResNetConfig):
        return source
    return PRESETS[source] if source in PRESETS else load_checkpoint(source)[1]


def _curves(study: Study, sources: list[str], data: Dataset | None, s: LabSettings,
            progress: Progress) -> Found:
    rows, residual = curve_rows(sources)
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row["run"], []).append(row)
    progress(1, 1)
    return found, "what each run recorded while it trained", {"residual": residual}


def _responses(study: Study, sources: list[str], data: Dataset | None, s: LabSettings,
               progress: Progress) -> Found:
    networks = _open(sources, data, False, study.name)
    return _per_network(networks, data, s.images or study.images, "val", progress,
                        lambda n, x, y, p: layer_responses(n.model, x, progress=p))


def _lesion(study: Study, sources: list[str], data: Dataset | None, s: LabSettings,
            progress: Progress) -> Found:
    networks = _open(sources, data, True, study.name)
    return _per_network(networks, data, s.images or study.images, "val", progress,
                        lambda n, x, y, p: lesion_study(n.model, x, y, s.draws, s.seed, progress=p))


def _erf(study: Study, sources: list[str], data: Dataset | None, s: LabSettings,
         progress: Progress) -> Found:
    networks = _open(sources, data, False, study.name)

    def one(n: Network, x: torch.Tensor, y: torch.Tensor, p: Progress) -> dict:
        fields = effective_fields(n.model, x, progress=p)
        return {"stages": [f.row() for f in fields],  # the gradient scaled to a maximum of 1
                "gradient": {f.stage: np.round(f.gradient / max(f.gradient.max(), 1e-30), 6).tolist()
                             for f in fields}}
    return _per_network(networks, data, s.images or study.images, "val", progress, one)


def _landscape(study: Study, sources: list[str], data: Dataset | None, s: LabSettings,
               progress: Progress) -> Found:
    networks = _open(sources, data, True, study.name)
    return _per_network(networks, data, s.images or study.images, "train", progress,
                        lambda n, x, y, p: loss_landscape(n.model, x, y, s.span, s.steps, s.line_steps, s.seed,
                                                          progress=p))


def run_study(name: str, sources: list[str], data: Dataset | None = None, settings: LabSettings | None = None,
              progress: Progress | None = None) -> LabReport:
    """One study of ``sources`` (checkpoints, ``bundled:NAME``, presets or runs, as the study takes). Both the
    command line and the app run this."""
    if name not in STUDIES:
        raise ConfigError(f"study {name!r} is not one of {', '.join(STUDIES)}")
    study = STUDIES[name]
    settings = settings or LabSettings()
    if study.data == "none":
        data = None
    results, where, extra = study.run(study, list(sources), data, settings, progress or (lambda done, total: None))
    used = dataclasses.asdict(settings)
    if settings.images is None and study.data != "none":
        used["images"] = study.images
    return LabReport(name, list(results), where, used, results, extra)


# -- the table of each study ------------------------------------------------------------------------------

def _gradient_rows(report: LabReport) -> list[dict]:
    return [{"network": net, **row} for net, rows in report.results.items() for row in rows]


def _curve_rows(report: LabReport) -> list[dict]:
    return [row for rows in report.results.values() for row in rows]


def _lesion_rows(report: LabReport) -> list[dict]:
    rows = []
    for net, found in report.results.items():
        rows.append({"network": net, "removed": "nothing", "k": 0, "accuracy": found["baseline"],
                     "note": "baseline"})
        for row in found["single"]:
            rows.append({"network": net, "removed": row["block"], "k": 1, "accuracy": row["accuracy"],
                         "note": row.get("why_not", "single")})
        for k in found["random"]:
            for accuracy, removed in zip(k["accuracy"], k["removed"]):
                rows.append({"network": net, "removed": " ".join(removed), "k": k["k"], "accuracy": accuracy,
                             "note": "random"})
    return rows


def _erf_rows(report: LabReport) -> list[dict]:
    return [{"network": net, **{k: v for k, v in row.items() if k not in ("box", "unit", "centre")}}
            for net, found in report.results.items() for row in found["stages"]]


def _landscape_rows(report: LabReport) -> list[dict]:
    rows = []
    for net, found in report.results.items():
        line = found["line"]
        rows += [{"network": net, "alpha": a, "beta": "", "loss": loss, "accuracy": acc}
                 for a, loss, acc in zip(line["alpha"], line["loss"], line["accuracy"])]
        surface = found["surface"]
        rows += [{"network": net, "alpha": a, "beta": b, "loss": surface["loss"][i][j], "accuracy": ""}
                 for i, b in enumerate(surface["beta"]) for j, a in enumerate(surface["alpha"])]
    return rows


def _plain_rows(report: LabReport) -> list[dict]:
    return [{"network": net, **row} for net, rows in report.results.items() for row in rows]


STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("gradients", "Gradients at initialisation", "He et al. 2016, Sec. 4.2; Balduzzi et al. 2017",
          "The gradient of one batch's loss reaches every layer of a freshly initialised residual network with "
          "about the same norm; in a plain network it shrinks or grows with the distance from the loss, more "
          "the deeper the network.", "configs", "none", 64, _gradients),
    Study("curves", "Training curves, plain vs residual", "He et al. 2016, Fig. 6",
          "Deeper plain networks have higher training error, not only validation error (the degradation "
          "problem); residual networks of the same depth train further.", "runs", "none", 0, _curves),
    Study("responses", "Layer responses", "He et al. 2016, Fig. 7",
          "The standard deviation of each 3×3 layer's response after its batch norm: a residual network's "
          "responses are smaller than a plain network's, as its layers learn small changes to what the skip "
          "carries.", "networks", "optional", 500, _responses),
    Study("lesion", "Lesion study", "Veit et al. 2016",
          "A residual network survives losing a block's branch (a deep one at almost no cost; the fewer its "
          "blocks, the more each one matters), and degrades smoothly as more are removed, like an ensemble of "
          "shallower paths. Removing a layer pair of a plain network breaks its only path: it falls to chance.",
          "networks", "val", 2000, _lesion),
    Study("erf", "Effective receptive field", "Luo et al. 2016",
          "The pixels that move a stage's centre unit fill only the middle of its theoretical receptive field, "
          "and fall off like a Gaussian towards its edge.", "networks", "optional", 32, _erf),
    Study("landscape", "Loss landscape", "Li et al. 2018",
          "The training loss around the trained weights along random, filter-normalised directions. At 20 layers "
          "plain and residual networks both sit in a smooth, convex-looking basin; without skips the basin turns "
          "chaotic as depth grows (the paper's 56- and 110-layer networks), with skips it stays smooth.",
          "networks", "train", 512, _landscape),
)}

ROWS: dict[str, Callable[[LabReport], list[dict]]] = {
    "gradients": _gradient_rows, "curves": _curve_rows, "responses": _plain_rows, "lesion": _lesion_rows,
    "erf": _erf_rows, "landscape": _landscape_rows,
}


# -- what a study found, in words --------------------------------------------------------------------------

def _gradient_lines(report: LabReport) -> list[str]:
    lines = []
    for net, rows in report.results.items():
        main = [r["grad_norm"] for r in rows if r["kind"] != "shortcut"]
        lines.append(f"{net}: ‖∂L/∂W‖ {main[0]:.3g} at the first layer, {main[-1]:.3g} at the last "
                     f"({main[0] / max(main[-1], 1e-30):.3g}×), smallest {min(main):.3g}")
    return lines


def _curve_lines(report: LabReport) -> list[str]:
    return [f"{net}: after {rows[-1]['epoch']} epochs, training error {rows[-1]['train_error']:.2%}, validation "
            f"error {rows[-1]['val_error']:.2%}" if rows else f"{net}: no finished epoch"
            for net, rows in report.results.items()]


def _response_lines(report: LabReport) -> list[str]:
    lines = []
    for net, rows in report.results.items():
        stds = [r["std"] for r in rows]
        lines.append(f"{net}: response std, mean {np.mean(stds):.3f}, from {min(stds):.3f} to {max(stds):.3f} over "
                     f"{len(stds)} 3×3 layers")
    return lines


def _lesion_lines(report: LabReport) -> list[str]:
    lines = []
    for net, found in report.results.items():
        removable = [r for r in found["single"] if r["accuracy"] is not None]
        line = f"{net}: {found['baseline']:.2%} with nothing removed"
        if removable:
            worst = min(removable, key=lambda r: r["accuracy"])
            mean = np.mean([r["accuracy"] for r in removable])
            line += (f"; one block removed: {mean:.2%} on average, worst {worst['block']} ({worst['accuracy']:.2%}); "
                     + ", ".join(f"k={k['k']}: {np.mean(k['accuracy']):.1%}" for k in found["random"]))
        if len(removable) < len(found["single"]):
            line += f"; {len(found['single']) - len(removable)} blocks cannot be removed (they change the shape)"
        lines.append(line)
    return lines


def _erf_lines(report: LabReport) -> list[str]:
    return [f"{net}: " + ", ".join(f"{s['stage']} {s['erf_50']}/{s['erf_90']} of {s['theoretical_side']}"
                                   for s in found["stages"]) + " (sides holding 50%/90% of the gradient, of the "
            "theoretical field)" for net, found in report.results.items()]


def _landscape_lines(report: LabReport) -> list[str]:
    lines = []
    for net, found in report.results.items():
        line, surface = found["line"], np.array(found["surface"]["loss"])
        lines.append(f"{net}: loss {found['origin_loss']:.3f} at the trained weights, {line['loss'][0]:.3f} and "
                     f"{line['loss'][-1]:.3f} at α = ±{report.settings['span']:g}; over the surface "
                     f"{surface.min():.3f} to {surface.max():.3f}")
    return lines


LINES: dict[str, Callable[[LabReport], list[str]]] = {
    "gradients": _gradient_lines, "curves": _curve_lines, "responses": _response_lines, "lesion": _lesion_lines,
    "erf": _erf_lines, "landscape": _landscape_lines,
}
