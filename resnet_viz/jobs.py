"""Long work in a background thread, for a UI to poll: a job never calls the UI, the UI reads snapshots.

``BackgroundJob`` holds the thread, the lock and the snapshot; ``TrainingJob`` trains a network and
``StudyJob`` runs any function that reports progress (a quantization or Lab study). ``JobManager`` owns every job of
a server: how many run at once (the rest wait in line), whose each one is, and when it is stopped because its
owner has gone."""

from __future__ import annotations

import copy
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .caches import remove
from .config import ResNetConfig
from .data import load_dataset
from .errors import ConfigError, ResNetVizError
from .formatting import ordinal
from .training import Progress, Result, Trainer, TrainSettings

MAX_POINTS = 600  # progress points kept for the curves; older ones are thinned out
ENDED = ("finished", "failed", "stopped")


class Stopped(Exception):
    """Raised inside a job's work by its progress callback once ``stop()`` was asked."""


@dataclass
class JobState:
    """What a UI shows of a job: what it is doing, how far it is, and what it has found."""

    status: str = "queued"  # queued, running, loading data, training, evaluating, finished, failed, stopped
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
        self.temporary: list[Path] = []  # files and folders removed when the job ends, however it ends
        self.uses: list[Path] = []  # folders it reads or writes, which no cache pruning may delete meanwhile
        self.on_end: list[Callable[[BackgroundJob], None]] = []

    def start(self):
        self._update(status="running", started=time.time())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_requested.set()

    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def running(self) -> bool:
        return self._thread.is_alive()

    def ended(self) -> bool:
        return self.snapshot().status in ENDED

    def cancel(self) -> None:
        """End a job that never started (it waited in line): nothing ran, its files go."""
        self._update(status="stopped", message="stopped before it started")
        self._end()

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
        """A ``progress(done, total)`` callback for the core's long functions; after ``stop()`` it ends the work
        at the next report."""
        if self._stop_requested.is_set():
            raise Stopped
        self._update(progress=done / max(total, 1), message=f"{done:,} of {total:,}")

    def _run(self) -> None:
        try:
            self._update(status="finished", progress=1.0, **self.work())
        except Stopped:
            self._update(status="stopped", message="stopped on request")
        except ResNetVizError as e:
            self._update(status="failed", message=str(e))
        except Exception as e:
            detail = traceback.format_exception_only(type(e), e)[-1].strip()
            self._update(status="failed", message=f"{self.name} failed: {detail}")
        finally:
            self._end()

    def _end(self) -> None:
        for path in self.temporary:
            remove(path)
        for callback in self.on_end:
            callback(self)

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
        self.uses.append(self.out_dir)
        self._trainer: Trainer | None = None

    def stop(self) -> None:
        super().stop()
        if self._trainer is not None:
            self._trainer.stop()

    def work(self) -> dict[str, Any]:
        self._update(status="loading data")

        def loading(done: int, total: int) -> None:
            if self._stop_requested.is_set():
                raise Stopped
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
    report: Any = None


class StudyJob(BackgroundJob):
    """``work(progress)`` in the background; its return value becomes the snapshot's ``report``. ``name`` names
    its thread (a quantization study, a Lab study)."""

    def __init__(self, work: Callable[[Callable[[int, int], None]], Any], name: str = "study"):
        self.name = name
        super().__init__(StudyState())
        self._work_fn = work

    def work(self) -> dict[str, Any]:
        return {"report": self._work_fn(self._report), "message": ""}


class JobManager:
    """Every background job of one server. At most ``max_running`` run at once and the rest wait in line, first
    come first served; an owner (a browser, known by a cookie that outlives page reloads) has at most
    ``per_owner`` jobs waiting or running; a job whose owner has not been seen for ``grace`` seconds is stopped.
    Ended jobs are kept for their owner to look at until ``keep`` of them are newer."""

    def __init__(self, max_running: int = 1, per_owner: int = 2, grace: float = 120.0, keep: int = 64,
                 clock: Callable[[], float] = time.monotonic):
        self.max_running, self.per_owner, self.grace, self.keep = max_running, per_owner, grace, keep
        self._clock = clock
        self._lock = threading.RLock()
        self._jobs: list[tuple[str, str, BackgroundJob]] = []  # (owner, kind, job), oldest first
        self._line: list[BackgroundJob] = []
        self._seen: dict[str, float] = {}

    def submit(self, owner: str, kind: str, job: BackgroundJob) -> BackgroundJob:
        """Start ``job`` now, or put it in line; refused when its owner already has ``per_owner`` jobs."""
        with self._lock:
            self._seen[owner] = self._clock()
            mine = [j for o, _, j in self._jobs if o == owner and not j.ended()]
            if len(mine) >= self.per_owner:
                raise ConfigError(f"you already have {len(mine)} job{'s' * (len(mine) > 1)} waiting or running, "
                                  f"the most one person may have on this server; stop one or wait for it to end")
            job.on_end.append(self._ended)
            self._jobs.append((owner, kind, job))
            self._line.append(job)
            self._forget_old()
            self._advance()
        return job

    def find(self, owner: str, kind: str) -> BackgroundJob | None:
        """The owner's newest job of this kind, waiting, running or ended."""
        with self._lock:
            return next((j for o, k, j in reversed(self._jobs) if o == owner and k == kind), None)

    def place(self, job: BackgroundJob) -> int | None:
        """The job's place in line (1: next to start), or None once it has started."""
        with self._lock:
            return self._line.index(job) + 1 if job in self._line else None

    def status_line(self, job: BackgroundJob, snap: JobState | None = None) -> str:
        """What a job is doing, in a few words: "training: 1,024 of 5,000", or its place in line."""
        place = self.place(job)
        if place is not None:
            running = len(self.running())
            return f"waiting: {ordinal(place)} in line, behind {running} running job{'s' * (running != 1)}"
        snap = snap or job.snapshot()
        return f"{snap.status}: {snap.message}" if snap.message else snap.status

    def running(self) -> list[BackgroundJob]:
        """The jobs started and not yet ended."""
        with self._lock:
            return [j for _, _, j in self._jobs if j not in self._line and not j.ended()]

    def in_use(self) -> list[Path]:
        """The folders that jobs waiting or running read or write."""
        with self._lock:
            return [path for _, _, j in self._jobs if not j.ended() for path in j.uses]

    def stop(self, job: BackgroundJob) -> None:
        """Stop a running job after its current step, or take a waiting one out of line."""
        with self._lock:
            if job in self._line:
                self._line.remove(job)
                job.cancel()
            else:
                job.stop()

    def seen(self, owner: str) -> None:
        """The owner's page is open: its jobs go on. (Only owners of jobs are remembered.)"""
        with self._lock:
            if any(o == owner for o, _, _ in self._jobs):
                self._seen[owner] = self._clock()

    def sweep(self) -> list[BackgroundJob]:
        """Stop the jobs of owners gone for longer than the grace period; returns them."""
        now = self._clock()
        with self._lock:
            gone = [j for o, _, j in self._jobs
                    if not j.ended() and not j.stop_requested() and now - self._seen.get(o, now) > self.grace]
            for job in gone:
                self.stop(job)
            return gone

    def start_sweeping(self, every: float = 5.0) -> None:
        """Sweep in a daemon thread, so that jobs are stopped even when no page is open at all."""
        def loop() -> None:
            while True:
                time.sleep(every)
                self.sweep()
        threading.Thread(target=loop, name="resnet-viz job sweeper", daemon=True).start()

    def _ended(self, job: BackgroundJob) -> None:
        with self._lock:
            if job in self._line:
                self._line.remove(job)
            self._advance()

    def _advance(self) -> None:
        while self._line and len(self.running()) < self.max_running:
            self._line.pop(0).start()

    def _forget_old(self) -> None:
        ended = [entry for entry in self._jobs if entry[2].ended()]
        for entry in ended[:max(0, len(ended) - self.keep)]:
            self._jobs.remove(entry)
        owners = {owner for owner, _, _ in self._jobs}
        self._seen = {owner: t for owner, t in self._seen.items() if owner in owners}  # only owners of jobs matter
