"""A short, fast training run: the whole split on the device, augmented there, one loop; on one device
or, started by torchrun, on several processes with DistributedDataParallel (see ``distributed``).

SGD with Nesterov momentum; a one-cycle (or cosine) learning rate with warm-up; label smoothing;
no weight decay on BN and biases; the first half of the run on images downscaled to 3/4 of their side
(progressive resizing); a batch size and learning rate chosen for the device and the time budget when they are
not given (``defaults``); bf16 autocast where the hardware has it (CUDA, and CPUs with
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
import dataclasses
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ResNetConfig
from ..data import Dataset, DeviceBatches, Split, downscale
from ..errors import ConfigError, ExportError, FileWriteError
from ..formatting import format_shape, human_bytes
from ..io import csv_bytes, write_error, write_file
from ..model import build_model
from .checkpoints import Position, Resume, checkpoint_bytes, checkpoint_size_estimate
from .defaults import Choice, choose, needs_measuring
from .devices import autocast, pick_device, precision_and_why
from .distributed import World
from .evaluation import check_classes, evaluate, per_class_rows, share
from .schedule import lr_factor, param_groups
from .settings import TrainSettings, changed_run_setting
from .watch import block_activity, gradient_norms


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


@dataclass
class StepStats:
    """One step's figures; under torchrun each is summed over the processes in one all-reduce."""

    loss_sum: float | torch.Tensor  # of the cross-entropy over the step's images
    correct: float | torch.Tensor
    images: float
    stop_requests: float  # processes that were asked to stop
    seconds: float  # training time so far

    def summed(self, world: World, device: torch.device) -> StepStats:
        values = [torch.as_tensor(getattr(self, f.name), device=device).to(torch.float64)
                  for f in dataclasses.fields(self)]
        return StepStats(*world.all_sum(torch.stack(values)).tolist())


@dataclass
class _Session:
    """What a run trains with, set up once by ``Trainer._prepare``."""

    model: nn.Module  # the network itself: its weights are what is saved
    wrapped: nn.Module  # with DistributedDataParallel under torchrun
    step_model: nn.Module  # compiled, when asked
    train: DeviceBatches
    val: DeviceBatches
    steps_per_epoch: int
    total_steps: int
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    inspect_every: int  # steps between looks inside the blocks
    probe_x: torch.Tensor  # the validation images the looks inside the blocks run on


class _Clock:
    """Training time across the sessions of a run; evaluations and looks inside the blocks don't count."""

    def __init__(self, before: float):
        self.before, self.start, self.paused = before, time.perf_counter(), 0.0

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start - self.paused

    @contextmanager
    def pause(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - start


@dataclass
class _Hooks:
    """The callbacks ``run`` was given."""

    on_progress: Callable[[Progress], None] | None = None
    on_inspect: Callable[[dict[str, Any]], None] | None = None
    on_epoch: Callable[[dict[str, float]], None] | None = None
    on_backward: Callable[[int, nn.Module], None] | None = None


@dataclass
class _RunState:
    """What changes from step to step besides the Position a checkpoint saves."""

    clock: _Clock
    lr: float
    history: list[dict[str, float]]
    stopped: str = "finished"


class Trainer:
    """One training run. ``run`` may be called from a worker thread; ``stop()`` ends it cleanly.

    Under torchrun, give each process's ``World`` (``distributed.join()``): every process then runs this same
    loop on its share of each global batch and rank 0 alone writes files."""

    def __init__(self, config: ResNetConfig, data: Dataset, settings: TrainSettings | None = None,
                 out_dir: str | Path | None = None, model: nn.Module | None = None, world: World | None = None,
                 resume: Resume | None = None, teacher: nn.Module | None = None):
        """``model``, if given, is trained from where it stands (e.g. a trained network prepared for
        quantization-aware fine-tuning) instead of a freshly initialised one built from ``config``;
        ``resume`` goes on with a run saved in a checkpoint (its config and settings must be the ones given);
        ``teacher``, if given, is distilled from (``distillation_loss``): the loss is half the cross-entropy with
        the labels and half the KL divergence from the teacher's predictions."""
        self.config, self.data, self.initial_model, self.resume = config, data, model, resume
        self.teacher = teacher
        self.settings = settings or TrainSettings()
        self.world = world or World()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        check_classes(config, data, hint=f" — set classes to {len(data.classes)}")
        shape = tuple(data.train.images.shape[1:])
        if shape != config.input_shape:
            raise ConfigError(f"the network expects inputs of {format_shape(config.input_shape)} but {data.name} "
                              f"has images of {format_shape(shape)} — set the input size to match")
        if self.out_dir is not None:
            folder = _check_writable(self.out_dir)
            if self.world.main:  # rank 0 alone writes
                _check_space(self.out_dir, folder, config, self.settings.epochs)
        self.device = self.world.device if self.world.distributed else pick_device(self.settings.device)
        self.precision, self.precision_reason = precision_and_why(self.settings.precision, self.device)
        self._lr_given = self.settings.lr
        self._measuring = needs_measuring(self.settings.batch_size, self.settings.time_budget, self.world.size)
        self.measured_seconds = 0.0  # spent measuring the speed, counted in the time budget
        self._settle(choose(self.settings.batch_size, self.settings.lr, self.device, multiple=self._multiple()))
        self._check_processes()
        if resume is not None:
            self._check_resume(resume)
        self._stop = threading.Event()
        self.model: nn.Module | None = None
        self._kept = self._checkpoint_kept()  # what a failed save leaves in out_dir, in words

    def _multiple(self) -> int:
        return self.world.size * self.settings.micro_batches

    def _settle(self, choice: Choice) -> None:
        self.choice = choice
        self.settings = dataclasses.replace(self.settings, batch_size=choice.batch_size, lr=choice.lr)

    def measuring(self) -> bool:
        """Whether ``choose`` has yet to measure the speed."""
        return self._measuring

    def choose(self) -> Choice:
        """The batch size and learning rate this run trains with, and why. Where the batch is chosen for a time
        budget, the first call measures the speed at the device's batch (a few steps of a scratch copy of the
        network, counted in the budget); until then ``choice`` holds the device's batch."""
        if self._measuring:
            self._measuring = False
            start = time.perf_counter()
            rate = self._measure_speed(self.choice.batch_size)
            self.measured_seconds = time.perf_counter() - start
            self._settle(choose(None, self._lr_given, self.device, time_budget=self.settings.time_budget,
                                images_per_s=rate, multiple=self._multiple()))
        return self.choice

    def _measure_speed(self, batch_size: int, warmup: int = 2, steps: int = 4) -> float:
        """Training images/s at ``batch_size`` on this device, in this precision, over ``steps`` steps after
        ``warmup``, of a scratch copy of the network on the first training images."""
        model = copy.deepcopy(self.initial_model) if self.initial_model is not None else build_model(self.config)
        model = model.to(self.device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        n = min(len(self.data.train), batch_size * (warmup + steps))
        split = Split(self.data.train.images[:n], self.data.train.labels[:n])
        batches = DeviceBatches(split, self.device, self.data.mean, self.data.std, channels_last=True)
        generator = torch.Generator(device=self.device).manual_seed(self.settings.seed)
        served = list(batches.epoch(min(batch_size, n), augment=True, generator=generator, drop_last=False))
        loss_fn, start, images = nn.CrossEntropyLoss(), 0.0, 0
        for i in range(warmup + steps):
            if i == warmup:
                _sync(self.device)
                start, images = time.perf_counter(), 0
            x, y = served[i % len(served)]
            with autocast(self.device, self.precision):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(y)
        _sync(self.device)
        return images / max(time.perf_counter() - start, 1e-9)

    def _check_processes(self) -> None:
        s, w = self.settings, self.world
        if s.batch_size % (w.size * s.micro_batches):
            raise ConfigError(f"the batch size {s.batch_size} does not split evenly into {w.size} process"
                              f"{'es' if w.size > 1 else ''} × {s.micro_batches} micro-batch"
                              f"{'es' if s.micro_batches > 1 else ''}: use a multiple of {w.size * s.micro_batches}")
        if s.sync_bn and w.distributed and self.device.type != "cuda":
            raise ConfigError("SyncBatchNorm runs on GPUs only (PyTorch has no CPU kernel for it): leave out "
                              "--sync-bn when training on CPUs")

    def _check_resume(self, resume: Resume) -> None:
        if resume.config != self.config:
            raise ConfigError("the network given is not the one in the checkpoint being resumed")
        changed = changed_run_setting(resume.settings, self.settings)
        if changed:
            raise ConfigError(f"a resumed run keeps its {changed.replace('_', ' ')} "
                              f"({getattr(resume.settings, changed)})")
        if resume.position.finished:
            raise ConfigError(f"the run in {Path(resume.path).name or 'the checkpoint'} has already finished "
                              f"({resume.position.step:,} steps): there is nothing to resume")
        mine = data_facts(self.data)
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

    # -- the loop: prepare, epochs of steps, finish ------------------------------------------------------------

    def run(self, on_progress: Callable[[Progress], None] | None = None,
            on_inspect: Callable[[dict[str, Any]], None] | None = None,
            on_epoch: Callable[[dict[str, float]], None] | None = None,
            on_backward: Callable[[int, nn.Module], None] | None = None) -> Result:
        """Train; the callbacks hear of every step, every look inside the blocks and every epoch's metrics (in
        every process, with the metrics of all processes), and ``on_backward(step, model)`` sees the gradients,
        averaged over the processes, before each optimizer step."""
        hooks = _Hooks(on_progress, on_inspect, on_epoch, on_backward)
        self.choose()
        session = self._prepare()
        at = copy.deepcopy(self.resume.position) if self.resume is not None else Position()
        at.train_seconds += self.measured_seconds
        s = self.settings
        state = _RunState(_Clock(at.train_seconds), s.lr * lr_factor(0.0, s.schedule, s.warmup), list(at.history))
        for epoch in range(at.epoch, s.epochs + 1):
            self._epoch(session, at, epoch, state, hooks)
            if state.stopped != "finished":
                break
        return self._finish(session, at, state)

    def _prepare(self) -> _Session:
        s, device = self.settings, self.device
        torch.manual_seed(s.seed)
        # channels_last suits cuDNN and oneDNN alike: on this kind of CPU it trained ResNet-20 about 20% faster
        channels_last = device.type in ("cuda", "cpu")
        model, wrapped = self._place_model(channels_last)
        if self.teacher is not None:
            self.teacher = self.teacher.to(device).eval()
            if channels_last:
                self.teacher = self.teacher.to(memory_format=torch.channels_last)
        step_model = torch.compile(wrapped) if s.compile else wrapped
        train = DeviceBatches(self.data.train, device, self.data.mean, self.data.std, channels_last=channels_last)
        val = DeviceBatches(self.data.val, device, self.data.mean, self.data.std, channels_last=channels_last)
        steps_per_epoch = train.num_batches(s.batch_size, drop_last=True)
        if steps_per_epoch == 0:
            raise ConfigError(f"the batch size {s.batch_size} is larger than the {len(self.data.train):,} "
                              "training images: use a smaller batch")
        optimizer = torch.optim.SGD(param_groups(model, s.weight_decay), lr=s.lr, momentum=s.momentum,
                                    nesterov=True)
        if self.resume is not None:
            optimizer.load_state_dict(self.resume.optimizer_state)
        probe_x = next(val.epoch(min(256, len(self.data.val)), augment=False, generator=None, drop_last=False))[0]
        return _Session(model, wrapped, step_model, train, val, steps_per_epoch, steps_per_epoch * s.epochs,
                        optimizer, nn.CrossEntropyLoss(label_smoothing=s.label_smoothing),
                        s.inspect_every or steps_per_epoch, probe_x)

    def _place_model(self, channels_last: bool) -> tuple[nn.Module, nn.Module]:
        """The network on the device (resumed, channels_last, SyncBN as asked), and it wrapped in DDP under
        torchrun."""
        device, world = self.device, self.world
        model = self.initial_model.to(device) if self.initial_model is not None else build_model(self.config, device)
        if self.resume is not None:
            model.load_state_dict(self.resume.model_state)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.settings.sync_bn and world.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        if not world.distributed:
            return model, model
        from torch.nn.parallel import DistributedDataParallel

        return model, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def _progress(self, at: Position, session: _Session) -> float:
        """How far the run is, 0..1: the share of its steps done, or of its time budget used, whichever is more."""
        budget = self.settings.time_budget
        return max(at.step / session.total_steps, at.train_seconds / budget if budget else 0.0)

    def _epoch(self, session: _Session, at: Position, epoch: int, state: _RunState, hooks: _Hooks) -> None:
        session.model.train()
        if epoch != at.epoch:
            at.epoch, at.batch, at.sums = epoch, 0, [0.0, 0.0, 0.0]
        s, world = self.settings, self.world
        batches = session.train.global_batches(s.batch_size, seed=s.seed, epoch=epoch, rank=world.rank,
                                               world=world.size, start=at.batch)
        for x, y in batches:
            if s.low_res and self._progress(at, session) < s.low_res:
                x = downscale(x)
            state.stopped = self._step(session, at, epoch, x, y, state, hooks)
            if state.stopped != "finished":
                break
        self._end_epoch(session, at, epoch, state, hooks)

    def _step(self, session: _Session, at: Position, epoch: int, x: torch.Tensor, y: torch.Tensor,
              state: _RunState, hooks: _Hooks) -> str:
        """One optimizer step; returns why the run ends after it ("finished": it goes on)."""
        s, world, optimizer = self.settings, self.world, session.optimizer
        state.lr = s.lr * lr_factor(self._progress(at, session), s.schedule, s.warmup)
        for group in optimizer.param_groups:
            group["lr"] = state.lr
        optimizer.zero_grad(set_to_none=True)
        loss_sum, correct = self._forward_backward(session.step_model, session.wrapped, session.loss_fn, x, y)
        at.step += 1
        at.batch += 1
        if hooks.on_backward:
            hooks.on_backward(at.step, session.model)
        if world.main and at.step % session.inspect_every == 0:
            with state.clock.pause():
                at.inspections.append(self._inspect(at.step, epoch, session.probe_x, hooks.on_inspect))
        optimizer.step()
        # one exchange a step: the global batch's loss and hits, any stop request, the training time
        mine = StepStats(loss_sum, correct, len(y), float(self._stop.is_set()), state.clock.seconds())
        step = mine.summed(world, self.device)
        at.train_seconds = step.seconds / world.size
        loss = step.loss_sum / step.images
        if not math.isfinite(loss):
            raise ConfigError(f"the loss became {loss} at step {at.step}: lower the learning rate (now {s.lr})")
        at.images += int(step.images)
        at.sums = [at.sums[0] + step.loss_sum, at.sums[1] + step.correct, at.sums[2] + step.images]
        if hooks.on_progress:
            hooks.on_progress(Progress(at.step, epoch, self._progress(at, session), loss, step.correct / step.images,
                                       state.lr, at.images / max(at.train_seconds, 1e-9), at.train_seconds))
        if step.stop_requests or (not world.distributed and self._stop.is_set()):  # several: all stop at one step
            return "stop request"
        if s.time_budget and at.train_seconds >= s.time_budget:
            return "time budget"
        return "finished"

    def _end_epoch(self, session: _Session, at: Position, epoch: int, state: _RunState, hooks: _Hooks) -> None:
        """The epoch's metrics and validation accuracy; a whole epoch joins the saved history and a checkpoint."""
        row = {"epoch": epoch, "step": at.step, "seconds": round(at.train_seconds, 3), "lr": state.lr,
               "train_loss": at.sums[0] / max(at.sums[2], 1), "train_acc": at.sums[1] / max(at.sums[2], 1)}
        with state.clock.pause():
            row["val_acc"] = self._accuracy(session.val, flip_tta=False)[0]
        state.history.append(row)
        if hooks.on_epoch:
            hooks.on_epoch(row)
        if at.batch == session.steps_per_epoch:  # the epoch is whole: it joins the saved history
            at.history.append(row)
            at.epoch, at.batch, at.sums = epoch + 1, 0, [0.0, 0.0, 0.0]
            if state.stopped == "finished" and epoch < self.settings.epochs and self.out_dir is not None \
                    and self.world.main:
                self._save_checkpoint(session.optimizer, at, {"val_acc": row["val_acc"], "stopped": "in progress"})

    def _finish(self, session: _Session, at: Position, state: _RunState) -> Result:
        """The final evaluation (plain and with flip TTA), the result, and rank 0's files."""
        at.finished = state.stopped != "stop request"
        val_acc, per_class = self._accuracy(session.val, flip_tta=False)
        val_acc_flip, per_class_flip = self._accuracy(session.val, flip_tta=True)
        result = Result(
            config=self.config, settings=self.settings, device=str(self.device), precision=self.precision,
            data=self.data.describe(), steps=at.step, epochs_done=round(at.step / session.steps_per_epoch, 3),
            train_seconds=at.train_seconds, images_per_s=at.images / max(at.train_seconds, 1e-9), val_acc=val_acc,
            val_acc_flip=val_acc_flip, per_class=per_class_rows(self.data.classes, per_class, per_class_flip),
            stopped=state.stopped, processes=self.world.describe(), history=state.history,
            inspections=at.inspections,
        )
        if self.out_dir is not None and self.world.main:
            result.files = self._save(result, session.optimizer, at)
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
                with autocast(self.device, self.precision):
                    out = step_model(xs)
                    loss = loss_fn(out, ys)
                    if self.teacher is not None:
                        loss = distillation_loss(loss, out, self.teacher, xs)
                (loss / parts).backward()
            loss_sum += loss.detach().float() * len(ys)
            correct += (out.argmax(1) == ys).sum()
        return loss_sum, correct

    def _inspect(self, step: int, epoch: int, x: torch.Tensor, on_inspect) -> dict[str, Any]:
        grads = gradient_norms(self.model)
        with autocast(self.device, self.precision):
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
        _, table = evaluate(self.model, split, len(self.data.classes), self.precision, flip_tta,
                            part=(world.rank, world.size))
        table = world.all_sum(table)
        return share(table), table

    def _meta(self) -> dict[str, Any]:
        return {"data": self.data.describe(), "classes": list(self.data.classes), "mean": list(self.data.mean),
                "std": list(self.data.std)}

    def _save_checkpoint(self, optimizer: torch.optim.Optimizer, at: Position, facts: dict[str, Any]) -> Path:
        """Save where the run stands. A save that fails (a full disk) ends the run with a sentence that says which
        checkpoint is kept: the file is replaced whole or not at all."""
        path = self.out_dir / "checkpoint.pt"
        run = {"settings": asdict(self.settings), "position": asdict(at), "data": data_facts(self.data)}
        data = checkpoint_bytes(self.model, self.config, {**self._meta(), "steps": at.step, **facts}, run=run,
                                optimizer=optimizer.state_dict())
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_file(path, data)
        except OSError as e:  # a FileWriteError is one too
            error = e if isinstance(e, FileWriteError) else write_error(self.out_dir, e)
            raise FileWriteError(f"{error}; {self._kept}") from None
        self._kept = f"the last checkpoint saved (epoch {len(at.history)}, step {at.step:,}) is kept"
        return path

    def _checkpoint_kept(self) -> str:
        """What a failed first save of this run leaves: the checkpoint it went on from, when that is in out_dir."""
        if self.out_dir is None or self.resume is None or not self.resume.path:
            return "no checkpoint of this run was saved"
        if Path(self.resume.path).resolve() != (self.out_dir / "checkpoint.pt").resolve():
            return "no checkpoint of this run was saved"
        return f"the checkpoint the run went on from (step {self.resume.position.step:,}) is kept"

    def _save(self, result: Result, optimizer: torch.optim.Optimizer, at: Position) -> dict[str, str]:
        out = self.out_dir
        files = {
            "checkpoint": out / "checkpoint.pt",
            "config": out / "config.json",
            "metrics_json": out / "metrics.json",
            "metrics_csv": out / "metrics.csv",
            "per_class_csv": out / "per_class.csv",
        }
        self._save_checkpoint(optimizer, at, {"val_acc": result.val_acc, "val_acc_flip": result.val_acc_flip,
                                              "stopped": result.stopped})
        result.files = {k: str(v) for k, v in files.items()}
        try:
            write_file(files["config"], self.config.to_json().encode())
            write_file(files["metrics_json"], json.dumps(result.summary(), indent=2, default=str).encode())
            write_file(files["metrics_csv"], csv_bytes(result.history))
            write_file(files["per_class_csv"], csv_bytes(result.per_class))
        except FileWriteError as e:
            raise FileWriteError(f"{e}; the run's final checkpoint, {files['checkpoint']}, is saved") from None
        return result.files


METRICS_BYTES = 1 << 20  # metrics.json, metrics.csv, per_class.csv and config.json, with room to spare


def distillation_loss(label_loss: torch.Tensor, out: torch.Tensor, teacher: nn.Module,
                      x: torch.Tensor) -> torch.Tensor:
    """Half the loss against the labels, half KL(teacher ‖ student) at temperature 1: the distillation that LSQ
    (Esser et al. 2020, Sec. 3.6) adds to low-bit fine-tunes. The teacher runs in eval mode, without gradients."""
    with torch.no_grad():
        target = torch.log_softmax(teacher(x).float(), dim=1)
    kl = nn.functional.kl_div(torch.log_softmax(out.float(), dim=1), target, reduction="batchmean", log_target=True)
    return 0.5 * label_loss + 0.5 * kl


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_writable(out_dir: Path) -> Path:
    """Refuse, before any training, a folder the results could not be written to; returns the folder that exists
    now, ``out_dir`` or the nearest one above it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a folder")
    existing = next(folder for folder in (out_dir, *out_dir.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot make the folder {out_dir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to {out_dir}: {existing} is not writable")
    return existing


def _check_space(out_dir: Path, existing: Path, config: ResNetConfig, epochs: int) -> None:
    """Refuse, before any training, a folder without room for what the run writes: its first checkpoint; when it
    saves more than one, the next, written beside the last before it replaces it (less the room of a checkpoint.pt
    already there, which the first replaces); the metrics; and a tenth more for the records that grow."""
    checkpoint = checkpoint_size_estimate(config)
    old = out_dir / "checkpoint.pt"
    replaced = min(old.stat().st_size, checkpoint) if old.is_file() else 0
    need = checkpoint + (checkpoint - replaced if epochs > 1 else 0) + checkpoint // 10 + METRICS_BYTES
    free = shutil.disk_usage(existing).free
    if free < need:
        raise ExportError(f"{out_dir} has {human_bytes(free)} free but the run needs about {human_bytes(need)} for "
                          "its checkpoints and metrics; free some space or choose another folder (--out)")


def data_facts(data: Dataset) -> dict[str, Any]:
    return {"name": data.describe(), "train_images": len(data.train), "classes": list(data.classes)}
