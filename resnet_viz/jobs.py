"""A training run in a background thread, for a UI to poll: it never calls the UI, the UI reads snapshots."""

from __future__ import annotations

import copy
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, ResNetConfig
from .data import DataError, load_dataset
from .train import CheckpointError, Progress, Result, Trainer, TrainSettings

MAX_POINTS = 600  # progress points kept for the curves; older ones are thinned out


@dataclass
class JobState:
    status: str = "starting"  # starting, loading data, training, evaluating, finished, failed
    message: str = ""
    data: str = ""
    device: str = ""
    precision: str = ""
    progress: float = 0.0
    latest: Progress | None = None
    points: list[dict[str, float]] = field(default_factory=list)  # step, loss, train_acc, lr, images_per_s
    epochs: list[dict[str, float]] = field(default_factory=list)  # val accuracy after each epoch
    inspections: list[dict[str, Any]] = field(default_factory=list)
    result: Result | None = None
    started: float = field(default_factory=time.time)


class TrainingJob:
    """Load the data and train in a daemon thread; ``snapshot()`` is safe to call from any thread."""

    def __init__(self, config: ResNetConfig, data: str, settings: TrainSettings, out_dir: str | Path,
                 limit_per_class: int | None = None, data_root: str | None = None):
        self.config, self.data_source, self.settings = config, data, settings
        self.out_dir, self.limit_per_class, self.data_root = Path(out_dir), limit_per_class, data_root
        self._state = JobState()
        self._lock = threading.Lock()
        self._trainer: Trainer | None = None
        self._stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._work, name="resnet-viz training", daemon=True)

    def start(self) -> TrainingJob:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish after the current step; the model is still evaluated and saved."""
        self._stop_requested.set()
        if self._trainer is not None:
            self._trainer.stop()

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

    def _work(self) -> None:
        try:
            self._update(status="loading data")

            def loading(done: int, total: int) -> None:
                self._update(progress=done / max(total, 1), message=f"decoding images {done:,}/{total:,}")

            data = load_dataset(self.data_source, root=self.data_root, limit_per_class=self.limit_per_class,
                                progress=loading)
            self._trainer = Trainer(self.config, data, self.settings, out_dir=self.out_dir)
            if self._stop_requested.is_set():
                self._trainer.stop()
            self._update(status="training", message="", progress=0.0, data=data.describe(),
                         device=str(self._trainer.device), precision=self._trainer.precision)
            result = self._trainer.run(on_progress=self._on_progress, on_inspect=self._on_inspect,
                                       on_epoch=self._on_epoch)
            self._update(status="finished", result=result, progress=1.0, epochs=result.history,
                         message="" if result.stopped == "finished" else f"ended by a {result.stopped}")
        except (ConfigError, DataError, CheckpointError) as e:
            self._update(status="failed", message=str(e))
        except Exception as e:  # a worker must report, never die silently
            detail = traceback.format_exception_only(type(e), e)[-1].strip()
            self._update(status="failed", message=f"training failed: {detail}")

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


class QuantizeJob:
    """A quantization study in a daemon thread: ``work(progress)`` returns the report; ``snapshot()`` polls it."""

    def __init__(self, work):
        self._work_fn = work
        self._lock = threading.Lock()
        self._state = {"status": "running", "progress": 0.0, "message": "", "report": None}
        self._thread = threading.Thread(target=self._work, name="resnet-viz quantization", daemon=True)

    def start(self) -> QuantizeJob:
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def _progress(self, done: int, total: int) -> None:
        with self._lock:
            self._state.update(progress=done / max(total, 1), message=f"{done} of {total}")

    def _work(self) -> None:
        try:
            report = self._work_fn(self._progress)
            with self._lock:
                self._state.update(status="finished", progress=1.0, report=report, message="")
        except (ConfigError, DataError, CheckpointError) as e:
            with self._lock:
                self._state.update(status="failed", message=str(e))
        except Exception as e:  # a worker must report, never die silently
            detail = traceback.format_exception_only(type(e), e)[-1].strip()
            with self._lock:
                self._state.update(status="failed", message=f"quantization failed: {detail}")
