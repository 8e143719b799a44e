"""Long work in a background thread, for a UI to poll: a job never calls the UI, the UI reads snapshots.

``BackgroundJob`` holds the thread, the lock and the snapshot; ``TrainingJob`` trains a network and
``StudyJob`` runs any function that reports progress (a quantization study)."""

from __future__ import annotations

import copy
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ResNetConfig
from .data import load_dataset
from .errors import ResNetVizError
from .training import Progress, Result, Trainer, TrainSettings

MAX_POINTS = 600  # progress points kept for the curves; older ones are thinned out


@dataclass
class JobState:
    """What a UI shows of a job: what it is doing, how far it is, and what it has found."""

    status: str = "starting"  # starting, running, loading data, training, evaluating, finished, failed
    message: str = ""
    progress: float = 0.0
    started: float = field(default_factory=time.time)


class BackgroundJob:
    """Work in a daemon thread: ``start()``, ``snapshot()`` from any thread, ``stop()`` to ask it to end.

    A subclass's ``work()`` does the job and returns the fields to set at the end (status "finished"); bad input
    (any ``ResNetVizError``) ends it as "failed" with its sentence, and anything else as "failed" with the
    exception's one line: a worker must report, never die silently."""

    name = "work"

    def __init__(self, state: JobState):
        self._state = state
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"resnet-viz {self.name}", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_requested.set()

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> JobState:
        with self._lock:
            return copy.copy(self._state)

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._state, key, value)

    def _report(self, done: int, total: int) -> None:
        """A ``progress(done, total)`` callback for the core's long functions."""
        self._update(progress=done / max(total, 1), message=f"{done:,} of {total:,}")

    def _run(self) -> None:
        try:
            self._update(status="finished", progress=1.0, **self.work())
        except ResNetVizError as e:
            self._update(status="failed", message=str(e))
        except Exception as e:
            detail = traceback.format_exception_only(type(e), e)[-1].strip()
            self._update(status="failed", message=f"{self.name} failed: {detail}")

    def work(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class TrainingState(JobState):
    data: str = ""
    device: str = ""
    precision: str = ""
    choice: str = ""  # the batch size and learning rate, and why
    latest: Progress | None = None
    points: list[dict[str, float]] = field(default_factory=list)  # step, loss, train_acc, lr, images_per_s
    epochs: list[dict[str, float]] = field(default_factory=list)  # val accuracy after each epoch
    inspections: list[dict[str, Any]] = field(default_factory=list)
    result: Result | None = None


class TrainingJob(BackgroundJob):
    """Load the data and train; ``stop()`` finishes after the current step, and the model is still evaluated
    and saved."""

    name = "training"

    def __init__(self, config: ResNetConfig, data: str, settings: TrainSettings, out_dir: str | Path,
                 limit_per_class: int | None = None, data_root: str | None = None):
        super().__init__(TrainingState())
        self.config, self.data_source, self.settings = config, data, settings
        self.out_dir, self.limit_per_class, self.data_root = Path(out_dir), limit_per_class, data_root
        self._trainer: Trainer | None = None

    def stop(self) -> None:
        super().stop()
        if self._trainer is not None:
            self._trainer.stop()

    def work(self) -> dict[str, Any]:
        self._update(status="loading data")

        def loading(done: int, total: int) -> None:
            self._update(progress=done / max(total, 1), message=f"decoding images {done:,}/{total:,}")

        data = load_dataset(self.data_source, root=self.data_root, limit_per_class=self.limit_per_class,
                            progress=loading)
        self._trainer = Trainer(self.config, data, self.settings, out_dir=self.out_dir)
        if self._stop_requested.is_set():
            self._trainer.stop()
        facts = {"data": data.describe(), "device": str(self._trainer.device), "precision": self._trainer.precision}
        if self._trainer.measuring():
            self._update(status="measuring the speed", message="", progress=0.0, **facts,
                         choice=f"measuring the speed at batch {self._trainer.choice.batch_size}")
        choice = self._trainer.choose()
        self._update(status="training", message="", progress=0.0, choice=choice.describe(), **facts)
        result = self._trainer.run(on_progress=self._on_progress, on_inspect=self._on_inspect,
                                   on_epoch=self._on_epoch)
        return {"result": result, "epochs": result.history,
                "message": "" if result.stopped == "finished" else f"ended by a {result.stopped}"}

    def _on_progress(self, p: Progress) -> None:
        with self._lock:
            state = self._state
            state.latest, state.progress = p, p.progress
            points = state.points + [{"step": p.step, "epoch": p.epoch, "loss": p.loss, "train_acc": p.train_acc,
                                      "lr": p.lr, "images_per_s": p.images_per_s, "seconds": p.elapsed}]
            state.points = points[::2] + points[-1:] if len(points) > MAX_POINTS else points
            if p.progress >= 1.0 or self._stop_requested.is_set():
                state.status = "evaluating"

    def _on_epoch(self, row: dict[str, float]) -> None:
        with self._lock:
            self._state.epochs = self._state.epochs + [row]

    def _on_inspect(self, look: dict[str, Any]) -> None:
        with self._lock:
            self._state.inspections = self._state.inspections + [look]


@dataclass
class StudyState(JobState):
    status: str = "running"
    report: Any = None


class StudyJob(BackgroundJob):
    """``work(progress)`` in the background; its return value becomes the snapshot's ``report``."""

    name = "quantization"

    def __init__(self, work: Callable[[Callable[[int, int], None]], Any]):
        super().__init__(StudyState())
        self._work_fn = work

    def work(self) -> dict[str, Any]:
        return {"report": self._work_fn(self._report), "message": ""}
