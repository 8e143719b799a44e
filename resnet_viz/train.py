"""A short, fast training run: the whole split on the device, augmented there, one loop.

SGD with Nesterov momentum; a one-cycle (or cosine) learning rate with warm-up; label smoothing;
no weight decay on BN and biases; bf16 autocast where the hardware has it (CUDA, and CPUs with
native bf16); channels_last and optional ``torch.compile``. The schedule runs on progress, the
larger of the share of steps done and the share of the time budget used, so a run cut short by
its budget still anneals. A stop request or the budget ends the run cleanly: the model is
evaluated and saved all the same. Files are written whole or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, ResNetConfig
from .data import Dataset, DeviceBatches, Split, flip
from .export import write_file
from .model import build_model
from .watch import block_activity, gradient_norms

CHECKPOINT_FORMAT = "resnet-viz checkpoint 1"
SCHEDULES = ("onecycle", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message says why."""


@dataclass(frozen=True)
class TrainSettings:
    """How to train. Learning rates are per step, for the batch size given."""

    epochs: int = 10
    batch_size: int = 512
    lr: float = 0.4  # peak learning rate
    momentum: float = 0.9  # Nesterov
    weight_decay: float = 5e-4  # on conv and fc weights only
    label_smoothing: float = 0.1
    schedule: str = "onecycle"  # "onecycle": linear up, linear down; "cosine": linear up, cosine down
    warmup: float = 0.2  # share of the run spent warming up
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    precision: str = "auto"  # "bf16" autocast, "fp32", or "auto": bf16 on CUDA and on CPUs with native bf16
    compile: bool = False  # torch.compile the model
    time_budget: float | None = None  # seconds of training; the run anneals into it and stops there
    seed: int = 0
    inspect_every: int = 0  # steps between looks inside the blocks (0: once an epoch)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch size must be 1 or more")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate {self.lr} — it must be a positive number")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"time budget {self.time_budget} s — it must be more than 0")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warm-up {self.warmup} — it is a share of the run, from 0 to below 1")


@dataclass
class Progress:
    """Sent after every training step."""

    step: int
    epoch: int
    progress: float  # 0..1 of the run (steps or time budget, whichever is further)
    loss: float
    train_acc: float  # of this batch
    lr: float
    images_per_s: float
    elapsed: float


@dataclass
class Result:
    config: ResNetConfig
    settings: TrainSettings
    device: str
    precision: str
    data: str
    steps: int
    epochs_done: float
    train_seconds: float
    images_per_s: float
    val_acc: float
    val_acc_flip: float  # with flip test-time augmentation
    per_class: list[dict[str, Any]]
    stopped: str  # "finished", "time budget" or "stop request"
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    inspections: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        return d


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"device {name!r} is not a device name such as cpu, cuda, cuda:1 or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for, but PyTorch sees no CUDA GPU here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("device mps was asked for, but it is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_precision(setting: str, device: torch.device) -> str:
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and _cpu_has_bf16():
        return "bf16"
    return "fp32"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def lr_factor(progress: float, schedule: str, warmup: float) -> float:
    """Share of the peak learning rate at a point of the run (0..1)."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup and progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    rest = (progress - warmup) / (1 - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * rest))
    return 1.0 - rest


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and fc weights; none on BN parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """One training run. ``run`` may be called from a worker thread; ``stop()`` ends it cleanly."""

    def __init__(self, config: ResNetConfig, data: Dataset, settings: TrainSettings | None = None,
                 out_dir: str | Path | None = None, model: nn.Module | None = None):
        """``model``, if given, is trained from where it stands (e.g. a trained network prepared for
        quantization-aware fine-tuning) instead of a freshly initialised one built from ``config``."""
        self.config, self.data, self.initial_model = config, data, model
        self.settings = settings or TrainSettings()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if config.num_classes != len(data.classes):
            raise ConfigError(f"the network has {config.num_classes} outputs but {data.name} has "
                              f"{len(data.classes)} classes — set classes to {len(data.classes)}")
        shape = tuple(data.train.images.shape[1:])
        if shape != config.input_shape:
            raise ConfigError(f"the network expects inputs of {_shape(config.input_shape)} but {data.name} "
                              f"has images of {_shape(shape)} — set the input size to match")
        if self.out_dir is not None and self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(f"{self.out_dir} exists and is not a folder")
        self.device = pick_device(self.settings.device)
        self.precision = pick_precision(self.settings.precision, self.device)
        self._stop = threading.Event()
        self.model: nn.Module | None = None

    def stop(self) -> None:
        """Ask the run to finish after the current step (then it evaluates and saves)."""
        self._stop.set()

    # -- the loop -----------------------------------------------------------------------------------------

    def run(self, on_progress: Callable[[Progress], None] | None = None,
            on_inspect: Callable[[dict[str, Any]], None] | None = None,
            on_epoch: Callable[[dict[str, float]], None] | None = None) -> Result:
        """Train; the callbacks hear of every step, every look inside the blocks and every epoch's metrics."""
        s, device = self.settings, self.device
        torch.manual_seed(s.seed)
        # channels_last suits cuDNN and oneDNN alike: on this kind of CPU it trained ResNet-20 about 20% faster
        channels_last = device.type in ("cuda", "cpu")
        model = self.initial_model.to(device) if self.initial_model is not None else build_model(self.config, device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        step_model = torch.compile(model) if s.compile else model
        train = DeviceBatches(self.data.train, device, self.data.mean, self.data.std, channels_last=channels_last)
        val = DeviceBatches(self.data.val, device, self.data.mean, self.data.std, channels_last=channels_last)
        generator = torch.Generator(device=device).manual_seed(s.seed)
        steps_per_epoch = train.num_batches(s.batch_size, drop_last=True)
        if steps_per_epoch == 0:
            raise ConfigError(f"the batch size {s.batch_size} is larger than the {len(self.data.train):,} "
                              "training images: use a smaller batch")
        total_steps = steps_per_epoch * s.epochs
        optimizer = torch.optim.SGD(param_groups(model, s.weight_decay), lr=s.lr, momentum=s.momentum,
                                    nesterov=True)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=s.label_smoothing)
        inspect_every = s.inspect_every or steps_per_epoch
        probe_x = next(val.epoch(min(256, len(self.data.val)), augment=False, generator=generator, drop_last=False))[0]

        history, inspections = [], []
        step, images, train_time, stopped = 0, 0, 0.0, "finished"
        loss_sum = correct = seen = 0.0
        start, paused = time.perf_counter(), 0.0  # evaluations and looks inside don't count as training time
        for epoch in range(1, s.epochs + 1):
            model.train()
            for x, y in train.epoch(s.batch_size, augment=True, generator=generator, drop_last=True):
                progress = max(step / total_steps, (train_time / s.time_budget) if s.time_budget else 0.0)
                lr = s.lr * lr_factor(progress, s.schedule, s.warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with self._autocast():
                    out = step_model(x)
                    loss = loss_fn(out, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                step += 1
                if step % inspect_every == 0:
                    pause = time.perf_counter()
                    inspections.append(self._inspect(step, epoch, probe_x, on_inspect))
                    paused += time.perf_counter() - pause
                optimizer.step()
                batch_loss = loss.item()
                if not math.isfinite(batch_loss):
                    raise ConfigError(f"the loss became {batch_loss} at step {step}: lower the learning rate "
                                      f"(now {s.lr})")
                batch_correct = int((out.argmax(1) == y).sum())
                images += len(y)
                loss_sum, correct, seen = loss_sum + batch_loss * len(y), correct + batch_correct, seen + len(y)
                train_time = time.perf_counter() - start - paused
                if on_progress:
                    on_progress(Progress(step, epoch, max(step / total_steps, train_time / s.time_budget
                                                          if s.time_budget else 0.0),
                                         batch_loss, batch_correct / len(y), lr, images / train_time, train_time))
                if self._stop.is_set():
                    stopped = "stop request"
                elif s.time_budget and train_time >= s.time_budget:
                    stopped = "time budget"
                if stopped != "finished":
                    break
            row = {"epoch": epoch, "step": step, "seconds": round(train_time, 3), "lr": lr,
                   "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1)}
            pause = time.perf_counter()
            row["val_acc"] = self._accuracy(val, flip_tta=False)[0]
            paused += time.perf_counter() - pause
            history.append(row)
            if on_epoch:
                on_epoch(row)
            loss_sum = correct = seen = 0.0
            if stopped != "finished":
                break

        val_acc, per_class = self._accuracy(val, flip_tta=False)
        val_acc_flip, per_class_flip = self._accuracy(val, flip_tta=True)
        result = Result(
            config=self.config, settings=s, device=str(device), precision=self.precision, data=self.data.describe(),
            steps=step, epochs_done=round(step / steps_per_epoch, 3), train_seconds=train_time,
            images_per_s=images / max(train_time, 1e-9), val_acc=val_acc, val_acc_flip=val_acc_flip,
            per_class=self._per_class_table(per_class, per_class_flip), stopped=stopped, history=history,
            inspections=inspections,
        )
        if self.out_dir is not None:
            result.files = self._save(result)
        return result

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _inspect(self, step: int, epoch: int, x: torch.Tensor, on_inspect) -> dict[str, Any]:
        grads = gradient_norms(self.model)
        with self._autocast():
            activity = block_activity(self.model, x)
        look = {"step": step, "epoch": epoch,
                "blocks": {name: {**activity[name], "grad_norm": grads[name]} for name in activity}}
        if on_inspect:
            on_inspect(look)
        return look

    @torch.no_grad()
    def _accuracy(self, split: DeviceBatches, flip_tta: bool) -> tuple[float, torch.Tensor]:
        """Accuracy and a per-class (correct, total) table; ``flip_tta`` averages with the mirrored images."""
        return evaluate(self.model, split, self.device, len(self.data.classes), self._autocast, flip_tta)

    def _per_class_table(self, plain: torch.Tensor, flipped: torch.Tensor) -> list[dict[str, Any]]:
        return [{"class": name, "images": int(plain[i, 1]), "correct": int(plain[i, 0]),
                 "accuracy": float(plain[i, 0] / max(plain[i, 1], 1)),
                 "accuracy_flip": float(flipped[i, 0] / max(flipped[i, 1], 1))}
                for i, name in enumerate(self.data.classes)]

    def _save(self, result: Result) -> dict[str, str]:
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "checkpoint": out / "checkpoint.pt",
            "config": out / "config.json",
            "metrics_json": out / "metrics.json",
            "metrics_csv": out / "metrics.csv",
            "per_class_csv": out / "per_class.csv",
        }
        meta = {"val_acc": result.val_acc, "val_acc_flip": result.val_acc_flip, "data": result.data,
                "classes": list(self.data.classes), "mean": list(self.data.mean), "std": list(self.data.std),
                "steps": result.steps, "stopped": result.stopped}
        write_file(files["checkpoint"], checkpoint_bytes(self.model, self.config, meta))
        write_file(files["config"], self.config.to_json().encode())
        result.files = {k: str(v) for k, v in files.items()}
        write_file(files["metrics_json"], json.dumps(result.summary(), indent=2, default=str).encode())
        write_file(files["metrics_csv"], _csv(result.history))
        write_file(files["per_class_csv"], _csv(result.per_class))
        return result.files


@torch.no_grad()
def evaluate(model: nn.Module, split: DeviceBatches, device: torch.device, num_classes: int, autocast,
             flip_tta: bool = False, batch_size: int = 1024) -> tuple[float, torch.Tensor]:
    """Accuracy over a split and a (num_classes, 2) tensor of (correct, total) per class."""
    model.eval()
    table = torch.zeros(num_classes, 2, dtype=torch.long)
    generator = torch.Generator(device=device)
    for x, y in split.epoch(batch_size, augment=False, generator=generator, drop_last=False):
        with autocast():
            logits = model(x).float()
            if flip_tta:
                logits = logits.softmax(1) + model(flip(x)).float().softmax(1)
        hit = (logits.argmax(1) == y).cpu()
        y = y.cpu()
        table[:, 1] += torch.bincount(y, minlength=num_classes)
        table[:, 0] += torch.bincount(y[hit], minlength=num_classes)
    return float(table[:, 0].sum() / max(int(table[:, 1].sum()), 1)), table


# -- checkpoints --------------------------------------------------------------------------------------------


def checkpoint_bytes(model: nn.Module, config: ResNetConfig, meta: dict[str, Any]) -> bytes:
    """A checkpoint: the config (as JSON text), the weights and a few facts, loadable with weights_only=True."""
    state = {k: v.detach().to("cpu", memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "config": config.to_json(), "meta": json.dumps(meta),
                "state_dict": state}, buffer)
    return buffer.getvalue()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ResNetConfig, dict]:
    """The model, its config and the saved facts. Only tensors and plain data are read (``weights_only=True``):
    a file that holds anything else is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors for bad files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path.name} is not a readable resnet-viz checkpoint ({reason[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path.name} is not a resnet-viz checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    try:
        config = ResNetConfig.from_json(data["config"])
        meta = json.loads(data["meta"])
        model = build_model(config, device="meta").to_empty(device=device)
        model.load_state_dict(data["state_dict"], strict=True)
    except (ConfigError, KeyError, RuntimeError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name} does not match its own config: {str(e).splitlines()[0][:200]}") from None
    return model.eval(), config, meta


def evaluate_checkpoint(path: str | Path, data: Dataset, split: str = "val", device: str = "auto",
                        flip_tta: bool = False) -> tuple[float, list[dict[str, Any]]]:
    """Accuracy of a saved model on a dataset's split, and its per-class table."""
    device = pick_device(device)
    model, config, meta = load_checkpoint(path, device)
    chosen: Split = {"val": data.val, "train": data.train}[split]
    if config.num_classes != len(data.classes):
        raise ConfigError(f"the checkpoint has {config.num_classes} outputs but {data.name} has "
                          f"{len(data.classes)} classes")
    # normalise as in training: with the training set's statistics stored in the checkpoint
    batches = DeviceBatches(chosen, device, tuple(meta["mean"]), tuple(meta["std"]), channels_last=False)
    precision = pick_precision("auto", device)

    def autocast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return torch.autocast(device.type, enabled=False)

    acc, table = evaluate(model, batches, device, len(data.classes), autocast, flip_tta)
    rows = [{"class": name, "images": int(table[i, 1]), "correct": int(table[i, 0]),
             "accuracy": float(table[i, 0] / max(table[i, 1], 1))} for i, name in enumerate(data.classes)]
    return acc, rows


def _csv(rows: list[dict[str, Any]]) -> bytes:
    if not rows:
        return b""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _shape(shape) -> str:
    return "×".join(str(s) for s in shape)
