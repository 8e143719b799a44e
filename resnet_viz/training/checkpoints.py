"""Checkpoints: the config (as JSON text), the weights, a few facts and, for a run that can go on, where it
stands. Everything is tensors and plain data, read back with ``weights_only=True``: a file that holds anything
else is refused, never executed."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ResNetConfig
from ..errors import CheckpointError, ConfigError
from ..formatting import first_line
from ..model import build_model
from ..weights import resolve
from .inflation import check_inflation
from .settings import RESUME_MAY_CHANGE, TrainSettings

CHECKPOINT_FORMAT = "resnet-viz checkpoint 1"


@dataclass
class Position:
    """Where a run stands between two steps: what a checkpoint needs, beside the weights and the optimizer, for
    the run to go on exactly as if it had never stopped."""

    step: int = 0  # optimizer steps done
    epoch: int = 1  # the epoch under way
    batch: int = 0  # global batches of that epoch done
    train_seconds: float = 0.0
    images: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # the epoch's loss sum, correct, images
    history: list[dict[str, float]] = field(default_factory=list)  # finished epochs
    inspections: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


@dataclass
class Resume:
    """A run read back from its checkpoint (``load_resume``), to go on with ``Trainer(..., resume=...)``."""

    config: ResNetConfig
    settings: TrainSettings
    position: Position
    data: dict[str, Any]  # what it trained on: name, number of training images, classes
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    path: str = ""

    def settings_with(self, **changes: Any) -> TrainSettings:
        """The run's settings with some of ``RESUME_MAY_CHANGE`` changed (the others define the run)."""
        fixed = sorted(set(changes) - set(RESUME_MAY_CHANGE))
        if fixed:
            raise ConfigError(f"a resumed run keeps its {fixed[0].replace('_', ' ')}; only "
                              f"{', '.join(RESUME_MAY_CHANGE)} may change")
        return replace(self.settings, **changes)


def checkpoint_bytes(model: nn.Module, config: ResNetConfig, meta: dict[str, Any], run: dict[str, Any] | None = None,
                     optimizer: dict[str, Any] | None = None) -> bytes:
    """A checkpoint: the config (as JSON text), the weights and a few facts, loadable with weights_only=True;
    with ``run`` (settings, position, data, as JSON text) and the ``optimizer``'s state, a run can go on from it."""
    buffer = io.BytesIO()
    content = {"format": CHECKPOINT_FORMAT, "config": config.to_json(), "meta": json.dumps(meta),
               "state_dict": _on_cpu(model.state_dict())}
    if run is not None and optimizer is not None:
        content.update(run=json.dumps(run), optimizer=_on_cpu(optimizer))
    torch.save(content, buffer)
    return buffer.getvalue()


def _on_cpu(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", memory_format=torch.contiguous_format)
    if isinstance(tree, dict):
        return {k: _on_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_on_cpu(v) for v in tree)
    return tree


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ResNetConfig, dict]:
    """The model, its config and the saved facts. Only tensors and plain data are read (``weights_only=True``):
    a file that holds anything else is refused, never executed. ``bundled:NAME`` names a network that ships with
    the package."""
    model, config, meta, _ = _load(resolve(path), device)
    return model, config, meta


def _load(path: Path, device: str | torch.device) -> tuple[nn.Module, ResNetConfig, dict, dict]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    check_inflation(path, CHECKPOINT_FORMAT)  # before torch.load inflates anything
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors for bad files
        raise CheckpointError(f"{path.name} is not a readable resnet-viz checkpoint ({first_line(e, 160)})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path.name} is not a resnet-viz checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    try:
        config = ResNetConfig.from_json(data["config"])
        meta = json.loads(data["meta"])
        model = build_model(config, device="meta").to_empty(device=device)
        model.load_state_dict(data["state_dict"], strict=True)
    except (ConfigError, KeyError, RuntimeError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name} does not match its own config: {first_line(e)}") from None
    return model.eval(), config, meta, data


SAVED_BEFORE = {"low_res": 0.0}  # what runs saved before a setting existed did


def load_resume(path: str | Path) -> Resume:
    """A run saved by ``train`` (after each epoch, and when it ends), to go on with: read safely, like
    ``load_checkpoint``."""
    path = resolve(path)
    model, config, _, data = _load(path, "cpu")
    if "run" not in data or "optimizer" not in data:
        raise CheckpointError(f"{path.name} holds a model but not a run to resume (it was not written by train)")
    try:
        run = json.loads(data["run"])
        # a setting added since the run was saved takes the value that run had: none
        settings = TrainSettings(**{**SAVED_BEFORE, **run["settings"]})
        position = Position(**run["position"])
        facts = run["data"]
        facts["train_images"], facts["classes"]  # noqa: B018 (both must be there)
    except (ConfigError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name} has a damaged run record ({first_line(e, 160)})") from None
    return Resume(config, settings, position, facts, model.state_dict(), data["optimizer"], str(path))


TENSOR_FRAMING_BYTES = 512  # what torch.save adds to each tensor (its zip entry, alignment, pickled reference), over
RECORD_BYTES = 64 * 1024  # the config, the facts and the run record as JSON, besides the class names
CLASS_NAME_BYTES = 64  # each class's name, written twice (in the facts and in the run record)


def checkpoint_size_estimate(config: ResNetConfig) -> int:
    """About the bytes of one checkpoint that a run of ``config`` saves, a little over: the float32 weights, SGD's
    momentum (one more copy of them), BatchNorm's running statistics and counters, torch.save's framing of each
    tensor, and the JSON records. From the config alone: no model is built."""
    norms = config.norm_channels()  # the channels of every BatchNorm layer
    convs = config.conv_count()
    parameters = convs + 2 * len(norms) + 2  # conv weights, BN weights and biases, the fc's weight and bias
    buffers = 8 * sum(norms) + 8 * len(norms)  # running mean and variance (float32), num_batches_tracked (int64)
    tensors = 2 * parameters + 3 * len(norms)  # each parameter and its momentum; three buffers per BN
    return (2 * 4 * config.num_params() + buffers + TENSOR_FRAMING_BYTES * tensors + RECORD_BYTES
            + CLASS_NAME_BYTES * config.num_classes)
