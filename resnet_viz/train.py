"""A short, fast training run: the whole split on the device, augmented there, one loop; on one device
or, started by torchrun, on several processes with DistributedDataParallel (see ``distributed``).

SGD with Nesterov momentum; a one-cycle (or cosine) learning rate with warm-up; label smoothing;
no weight decay on BN and biases; bf16 autocast where the hardware has it (CUDA, and CPUs with
native bf16); channels_last and optional ``torch.compile``. The schedule runs on progress, the
larger of the share of steps done and the share of the time budget used, so a run cut short by
its budget still anneals. A stop request or the budget ends the run cleanly: the model is
evaluated and saved all the same. Files are written whole or not at all, by rank 0 alone.

Checkpoints hold where the run stands (optimizer, step, epoch, position in the epoch, the epoch's running
sums): ``load_resume`` reads one back and the run goes on, on any number of processes. The data order and
the crops and flips are drawn from (seed, epoch, batch), so that position is the whole random state.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, ResNetConfig
from .data import Dataset, DeviceBatches, Split, flip
from .distributed import World
from .export import write_file
from .model import build_model
from .watch import block_activity, gradient_norms

CHECKPOINT_FORMAT = "resnet-viz checkpoint 1"
# settings a resumed run may change: where and how fast it runs, not what it computes
RESUME_MAY_CHANGE = ("device", "precision", "compile", "sync_bn", "micro_batches", "inspect_every")
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
    micro_batches: int = 1  # each process's share of a batch in this many passes, gradients accumulated
    sync_bn: bool = False  # several GPU processes: BatchNorm statistics over the global batch (SyncBatchNorm)

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
        if self.micro_batches < 1:
            raise ConfigError(f"micro-batches {self.micro_batches} — it must be 1 or more")
        if self.batch_size % self.micro_batches:
            raise ConfigError(f"the batch size {self.batch_size} does not split into {self.micro_batches} "
                              "micro-batches: use a multiple of it")


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
    processes: str = "1 process"
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


class Trainer:
    """One training run. ``run`` may be called from a worker thread; ``stop()`` ends it cleanly.

    Under torchrun, give each process's ``World`` (``distributed.join()``): every process then runs this same
    loop on its share of each global batch and rank 0 alone writes files."""

    def __init__(self, config: ResNetConfig, data: Dataset, settings: TrainSettings | None = None,
                 out_dir: str | Path | None = None, model: nn.Module | None = None, world: World | None = None,
                 resume: Resume | None = None):
        """``model``, if given, is trained from where it stands (e.g. a trained network prepared for
        quantization-aware fine-tuning) instead of a freshly initialised one built from ``config``;
        ``resume`` goes on with a run saved in a checkpoint (its config and settings must be the ones given)."""
        self.config, self.data, self.initial_model, self.resume = config, data, model, resume
        self.settings = settings or TrainSettings()
        self.world = world or World()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if config.num_classes != len(data.classes):
            raise ConfigError(f"the network has {config.num_classes} outputs but {data.name} has "
                              f"{len(data.classes)} classes — set classes to {len(data.classes)}")
        shape = tuple(data.train.images.shape[1:])
        if shape != config.input_shape:
            raise ConfigError(f"the network expects inputs of {_shape(config.input_shape)} but {data.name} "
                              f"has images of {_shape(shape)} — set the input size to match")
        if self.out_dir is not None:
            _check_writable(self.out_dir)
        self.device = self.world.device if self.world.distributed else pick_device(self.settings.device)
        self.precision = pick_precision(self.settings.precision, self.device)
        s, w = self.settings, self.world
        if s.batch_size % (w.size * s.micro_batches):
            raise ConfigError(f"the batch size {s.batch_size} does not split evenly into {w.size} process"
                              f"{'es' if w.size > 1 else ''} × {s.micro_batches} micro-batch"
                              f"{'es' if s.micro_batches > 1 else ''}: use a multiple of {w.size * s.micro_batches}")
        if s.sync_bn and w.distributed and self.device.type != "cuda":
            raise ConfigError("SyncBatchNorm runs on GPUs only (PyTorch has no CPU kernel for it): leave out "
                              "--sync-bn when training on CPUs")
        if resume is not None:
            self._check_resume(resume)
        self._stop = threading.Event()
        self.model: nn.Module | None = None

    def _check_resume(self, resume: Resume) -> None:
        if resume.config != self.config:
            raise ConfigError("the network given is not the one in the checkpoint being resumed")
        changed = [f.name for f in fields(TrainSettings) if f.name not in RESUME_MAY_CHANGE
                   and getattr(resume.settings, f.name) != getattr(self.settings, f.name)]
        if changed:
            raise ConfigError(f"a resumed run keeps its {changed[0].replace('_', ' ')} "
                              f"({getattr(resume.settings, changed[0])})")
        if resume.position.finished:
            raise ConfigError(f"the run in {Path(resume.path).name or 'the checkpoint'} has already finished "
                              f"({resume.position.step:,} steps): there is nothing to resume")
        mine = _data_facts(self.data)
        if (resume.data["train_images"], resume.data["classes"]) != (mine["train_images"], mine["classes"]):
            raise ConfigError(f"the checkpoint was trained on {resume.data['name']} with "
                              f"{resume.data['train_images']:,} training images, but this data is {mine['name']} "
                              f"with {mine['train_images']:,}: resume with the same --data and --limit-per-class")

    def stop(self) -> None:
        """Ask the run to finish after the current step (then it evaluates and saves). Under torchrun a stop asked
        of any process stops them all after the same step."""
        self._stop.set()

    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the loop -----------------------------------------------------------------------------------------

    def run(self, on_progress: Callable[[Progress], None] | None = None,
            on_inspect: Callable[[dict[str, Any]], None] | None = None,
            on_epoch: Callable[[dict[str, float]], None] | None = None,
            on_backward: Callable[[int, nn.Module], None] | None = None) -> Result:
        """Train; the callbacks hear of every step, every look inside the blocks and every epoch's metrics (in
        every process, with the metrics of all processes), and ``on_backward(step, model)`` sees the gradients,
        averaged over the processes, before each optimizer step."""
        s, device, world = self.settings, self.device, self.world
        torch.manual_seed(s.seed)
        # channels_last suits cuDNN and oneDNN alike: on this kind of CPU it trained ResNet-20 about 20% faster
        channels_last = device.type in ("cuda", "cpu")
        model = self.initial_model.to(device) if self.initial_model is not None else build_model(self.config, device)
        if self.resume is not None:
            model.load_state_dict(self.resume.model_state)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if s.sync_bn and world.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        else:
            wrapped = model
        step_model = torch.compile(wrapped) if s.compile else wrapped
        train = DeviceBatches(self.data.train, device, self.data.mean, self.data.std, channels_last=channels_last)
        val = DeviceBatches(self.data.val, device, self.data.mean, self.data.std, channels_last=channels_last)
        steps_per_epoch = train.num_batches(s.batch_size, drop_last=True)
        if steps_per_epoch == 0:
            raise ConfigError(f"the batch size {s.batch_size} is larger than the {len(self.data.train):,} "
                              "training images: use a smaller batch")
        total_steps = steps_per_epoch * s.epochs
        optimizer = torch.optim.SGD(param_groups(model, s.weight_decay), lr=s.lr, momentum=s.momentum,
                                    nesterov=True)
        if self.resume is not None:
            optimizer.load_state_dict(self.resume.optimizer_state)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=s.label_smoothing)
        inspect_every = s.inspect_every or steps_per_epoch
        probe_x = next(val.epoch(min(256, len(self.data.val)), augment=False, generator=None, drop_last=False))[0]

        at = copy.deepcopy(self.resume.position) if self.resume is not None else Position()
        history, stopped, lr = list(at.history), "finished", s.lr * lr_factor(0.0, s.schedule, s.warmup)
        before = at.train_seconds  # training time of earlier sessions of this run
        start, paused = time.perf_counter(), 0.0  # evaluations and looks inside don't count as training time
        for epoch in range(at.epoch, s.epochs + 1):
            model.train()
            if epoch != at.epoch:
                at.epoch, at.batch, at.sums = epoch, 0, [0.0, 0.0, 0.0]
            batches = train.global_batches(s.batch_size, seed=s.seed, epoch=epoch, rank=world.rank,
                                           world=world.size, start=at.batch)
            for x, y in batches:
                progress = max(at.step / total_steps, (at.train_seconds / s.time_budget) if s.time_budget else 0.0)
                lr = s.lr * lr_factor(progress, s.schedule, s.warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss_sum, correct = self._forward_backward(step_model, wrapped, loss_fn, x, y)
                at.step += 1
                at.batch += 1
                if on_backward:
                    on_backward(at.step, model)
                if world.main and at.step % inspect_every == 0:
                    pause = time.perf_counter()
                    at.inspections.append(self._inspect(at.step, epoch, probe_x, on_inspect))
                    paused += time.perf_counter() - pause
                optimizer.step()
                # one exchange a step: the global batch's loss and hits, any stop request, the training time
                local = torch.zeros(5, dtype=torch.float64, device=device)
                local[0], local[1] = loss_sum, correct
                local[2:] = torch.tensor([len(y), float(self._stop.is_set()),
                                          before + time.perf_counter() - start - paused], dtype=torch.float64)
                batch_loss_sum, batch_correct, n, stops, seconds = world.all_sum(local).tolist()
                at.train_seconds = seconds / world.size
                batch_loss = batch_loss_sum / n
                if not math.isfinite(batch_loss):
                    raise ConfigError(f"the loss became {batch_loss} at step {at.step}: lower the learning rate "
                                      f"(now {s.lr})")
                at.images += int(n)
                at.sums = [at.sums[0] + batch_loss_sum, at.sums[1] + batch_correct, at.sums[2] + n]
                if on_progress:
                    progress = max(at.step / total_steps, at.train_seconds / s.time_budget if s.time_budget else 0.0)
                    on_progress(Progress(at.step, epoch, progress, batch_loss, batch_correct / n, lr,
                                         at.images / max(at.train_seconds, 1e-9), at.train_seconds))
                if stops or (not world.distributed and self._stop.is_set()):  # several: all stop at one step
                    stopped = "stop request"
                elif s.time_budget and at.train_seconds >= s.time_budget:
                    stopped = "time budget"
                if stopped != "finished":
                    break
            row = {"epoch": epoch, "step": at.step, "seconds": round(at.train_seconds, 3), "lr": lr,
                   "train_loss": at.sums[0] / max(at.sums[2], 1), "train_acc": at.sums[1] / max(at.sums[2], 1)}
            pause = time.perf_counter()
            row["val_acc"] = self._accuracy(val, flip_tta=False)[0]
            paused += time.perf_counter() - pause
            history.append(row)
            if on_epoch:
                on_epoch(row)
            if at.batch == steps_per_epoch:  # the epoch is whole: it joins the saved history
                at.history.append(row)
                at.epoch, at.batch, at.sums = epoch + 1, 0, [0.0, 0.0, 0.0]
                if stopped == "finished" and epoch < s.epochs and self.out_dir is not None and world.main:
                    self._save_checkpoint(optimizer, at, {"val_acc": row["val_acc"], "stopped": "in progress"})
            if stopped != "finished":
                break

        at.finished = stopped != "stop request"
        val_acc, per_class = self._accuracy(val, flip_tta=False)
        val_acc_flip, per_class_flip = self._accuracy(val, flip_tta=True)
        result = Result(
            config=self.config, settings=s, device=str(device), precision=self.precision, data=self.data.describe(),
            steps=at.step, epochs_done=round(at.step / steps_per_epoch, 3), train_seconds=at.train_seconds,
            images_per_s=at.images / max(at.train_seconds, 1e-9), val_acc=val_acc, val_acc_flip=val_acc_flip,
            per_class=self._per_class_table(per_class, per_class_flip), stopped=stopped, processes=world.describe(),
            history=history, inspections=at.inspections,
        )
        if self.out_dir is not None and world.main:
            result.files = self._save(result, optimizer, at)
        return result

    def _forward_backward(self, step_model: nn.Module, wrapped: nn.Module, loss_fn: nn.Module, x: torch.Tensor,
                          y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of this process's share of the batch, in ``micro_batches`` passes (DDP exchanges them after
        the last); returns the share's loss sum and correct count, still on the device."""
        parts = self.settings.micro_batches
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        for i, (xs, ys) in enumerate(zip(x.chunk(parts), y.chunk(parts))):
            quiet = self.world.distributed and i < parts - 1
            with wrapped.no_sync() if quiet else nullcontext():
                with self._autocast():
                    out = step_model(xs)
                    loss = loss_fn(out, ys)
                (loss / parts).backward()
            loss_sum += loss.detach().float() * len(ys)
            correct += (out.argmax(1) == ys).sum()
        return loss_sum, correct

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
        """Accuracy and a per-class (correct, total) table; ``flip_tta`` averages with the mirrored images. Each
        process scores its share of the split with rank 0's BatchNorm statistics; the tables are summed."""
        world = self.world
        world.broadcast_buffers(self.model)
        _, table = evaluate(self.model, split, self.device, len(self.data.classes), self._autocast, flip_tta,
                            part=(world.rank, world.size))
        table = world.all_sum(table)
        return float(table[:, 0].sum() / max(int(table[:, 1].sum()), 1)), table

    def _per_class_table(self, plain: torch.Tensor, flipped: torch.Tensor) -> list[dict[str, Any]]:
        return [{"class": name, "images": int(plain[i, 1]), "correct": int(plain[i, 0]),
                 "accuracy": float(plain[i, 0] / max(plain[i, 1], 1)),
                 "accuracy_flip": float(flipped[i, 0] / max(flipped[i, 1], 1))}
                for i, name in enumerate(self.data.classes)]

    def _meta(self) -> dict[str, Any]:
        return {"data": self.data.describe(), "classes": list(self.data.classes), "mean": list(self.data.mean),
                "std": list(self.data.std)}

    def _save_checkpoint(self, optimizer: torch.optim.Optimizer, at: Position, facts: dict[str, Any]) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        run = {"settings": asdict(self.settings), "position": asdict(at), "data": _data_facts(self.data)}
        return write_file(self.out_dir / "checkpoint.pt", checkpoint_bytes(
            self.model, self.config, {**self._meta(), "steps": at.step, **facts}, run=run,
            optimizer=optimizer.state_dict()))

    def _save(self, result: Result, optimizer: torch.optim.Optimizer, at: Position) -> dict[str, str]:
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "checkpoint": out / "checkpoint.pt",
            "config": out / "config.json",
            "metrics_json": out / "metrics.json",
            "metrics_csv": out / "metrics.csv",
            "per_class_csv": out / "per_class.csv",
        }
        self._save_checkpoint(optimizer, at, {"val_acc": result.val_acc, "val_acc_flip": result.val_acc_flip,
                                              "stopped": result.stopped})
        write_file(files["config"], self.config.to_json().encode())
        result.files = {k: str(v) for k, v in files.items()}
        write_file(files["metrics_json"], json.dumps(result.summary(), indent=2, default=str).encode())
        write_file(files["metrics_csv"], _csv(result.history))
        write_file(files["per_class_csv"], _csv(result.per_class))
        return result.files


def _check_writable(out_dir: Path) -> None:
    """Refuse, before any training, a folder the results could not be written to."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a folder")
    existing = next(folder for folder in (out_dir, *out_dir.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot make the folder {out_dir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to {out_dir}: {existing} is not writable")


def _data_facts(data: Dataset) -> dict[str, Any]:
    return {"name": data.describe(), "train_images": len(data.train), "classes": list(data.classes)}


@torch.no_grad()
def evaluate(model: nn.Module, split: DeviceBatches, device: torch.device, num_classes: int, autocast,
             flip_tta: bool = False, batch_size: int = 1024,
             part: tuple[int, int] = (0, 1)) -> tuple[float, torch.Tensor]:
    """Accuracy over a split (or over its ``part=(rank, parts)``) and a (num_classes, 2) tensor of
    (correct, total) per class."""
    model.eval()
    table = torch.zeros(num_classes, 2, dtype=torch.long)
    for x, y in split.epoch(batch_size, augment=False, generator=None, drop_last=False, part=part):
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
    a file that holds anything else is refused, never executed."""
    path = Path(path)
    model, config, meta, _ = _load(path, device)
    return model, config, meta


def _load(path: Path, device: str | torch.device) -> tuple[nn.Module, ResNetConfig, dict, dict]:
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
    return model.eval(), config, meta, data


def load_resume(path: str | Path) -> Resume:
    """A run saved by ``train`` (after each epoch, and when it ends), to go on with: read safely, like
    ``load_checkpoint``."""
    path = Path(path)
    model, config, _, data = _load(path, "cpu")
    if "run" not in data or "optimizer" not in data:
        raise CheckpointError(f"{path.name} holds a model but not a run to resume (it was not written by train)")
    try:
        run = json.loads(data["run"])
        settings = TrainSettings(**run["settings"])
        position = Position(**run["position"])
        facts = run["data"]
        facts["train_images"], facts["classes"]  # noqa: B018 (both must be there)
    except (ConfigError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name} has a damaged run record ({str(e).splitlines()[0][:160]})") from None
    return Resume(config, settings, position, facts, model.state_dict(), data["optimizer"], str(path))


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
