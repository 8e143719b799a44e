"""Two processes on this CPU, started by torchrun and joined by gloo, against one process.

The one-process references run in the test process with the worker's own code (one thread, as in each
torchrun process), so the kernels and their summation order are the same on both sides."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnet_viz.training.distributed import World
from tests.distributed.worker import train

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
SETTINGS = {"epochs": 5, "batch_size": 64, "lr": 0.2, "precision": "fp32"}  # 20 steps an epoch


def torchrun(*args: str, nproc: int = 2, timeout: float = 240, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def run_workers(spec: dict, tmp: Path, nproc: int = 2) -> list[dict]:
    report = tmp / "report"
    report.mkdir(exist_ok=True)
    process = torchrun(str(WORKER), json.dumps({**spec, "report": str(report)}), nproc=nproc)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    return [torch.load(report / f"rank{r}.pt", weights_only=True) for r in range(nproc)]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The uninterrupted two-process run."""
    tmp = tmp_path_factory.mktemp("two")
    return run_workers({"settings": SETTINGS, "out": str(tmp / "out")}, tmp), tmp


def test_a_short_run_on_two_processes_finishes_and_rank_0_alone_writes(two):
    reports, tmp = two
    assert [r["stopped"] for r in reports] == ["finished", "finished"] and reports[0]["steps"] == 100
    assert sorted(p.name for p in (tmp / "out").iterdir()) == ["rank0"]  # rank 1 wrote nothing
    assert sorted(p.name for p in (tmp / "out" / "rank0").iterdir()) == [
        "checkpoint.pt", "config.json", "metrics.csv", "metrics.json", "per_class.csv"]
    assert reports[0]["files"] and not reports[1]["files"]
    # the metrics are the two processes' together, so both report the same
    assert reports[0]["history"] == reports[1]["history"] and reports[0]["per_class"] == reports[1]["per_class"]
    assert sum(row["images"] for row in reports[0]["per_class"]) == 320  # the whole validation split
    for name, weight in reports[0]["weights"].items():  # DDP kept the models equal
        assert torch.equal(weight, reports[1]["weights"][name]), name


def test_two_processes_compute_what_one_process_computes_in_two_micro_batches(two, tmp_path):
    """Same global batch, same seed: the first step's gradients are equal (DDP's mean of the two shares is the
    accumulated mean of the two micro-batches), and so is every training loss after it. Only BatchNorm's
    running statistics differ (rank 0 keeps its own share's, the one process sees both micro-batches), so
    validation accuracy may differ slightly."""
    reports, _ = two
    one = train({"settings": {**SETTINGS, "micro_batches": 2}, "out": str(tmp_path)})
    assert one["grads"].keys() == reports[0]["grads"].keys()
    for name, grad in one["grads"].items():
        assert torch.equal(reports[0]["grads"][name], grad), name  # bit for bit
    losses = [[row["train_loss"] for row in r["history"]] for r in (reports[0], one)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert reports[0]["val_acc"] == pytest.approx(one["val_acc"], abs=0.02)


def test_two_processes_match_one_process_with_the_same_global_batch(two, tmp_path):
    """Against plain one-process training (BatchNorm over 64 images, not 2 × 32): the same first batch and
    schedule, so both learn alike. Stated tolerance: each epoch's training loss within 0.05, the final
    validation accuracy within 2 points."""
    reports, _ = two
    one = train({"settings": SETTINGS, "out": str(tmp_path)})
    for a, b in zip(reports[0]["history"], one["history"], strict=True):
        assert (a["epoch"], a["step"], a["lr"]) == (b["epoch"], b["step"], b["lr"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=0.05)
    assert reports[0]["val_acc"] == pytest.approx(one["val_acc"], abs=0.02)


def test_a_stop_on_one_process_stops_both_and_the_run_resumes_on_any_number_of_processes(two, tmp_path):
    reports, _ = two
    stopped = run_workers({"settings": SETTINGS, "out": str(tmp_path / "first"), "stop": [1, 34]}, tmp_path)
    # rank 1 asked after step 34; both heard at the next exchange and stopped after step 35, mid-epoch 2
    assert [(r["stopped"], r["steps"]) for r in stopped] == [("stop request", 35)] * 2
    checkpoint = str(tmp_path / "first" / "rank0" / "checkpoint.pt")
    again = run_workers({"resume": checkpoint, "out": str(tmp_path / "again")}, tmp_path)
    keys = ("epoch", "step", "lr", "train_loss", "train_acc", "val_acc")
    for a, b in zip(again[0]["history"], reports[0]["history"], strict=True):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert again[0]["val_acc"] == reports[0]["val_acc"] and again[0]["per_class"] == reports[0]["per_class"]
    # on one process, in two micro-batches: the same training, the same losses
    alone = train({"resume": checkpoint, "changes": {"micro_batches": 2}, "out": str(tmp_path / "alone")})
    assert alone["steps"] == 100
    assert [r["train_loss"] for r in alone["history"]] == pytest.approx(
        [r["train_loss"] for r in reports[0]["history"]], rel=1e-6)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def _workers(process: subprocess.Popen) -> list[int]:
    """The processes torchrun started (its children), read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == process.pid:  # the field after the state is the parent's pid
            children.append(int(stat.parent.name))
    return children


def test_cli_ctrl_c_on_one_process_ends_every_process_cleanly(tmp_path):
    out = tmp_path / "run"
    process = torchrun("-m", "resnet_viz", "train", "resnet20", "--data", "synthetic", "--limit-per-class", "64",
                       "--epochs", "200", "--batch-size", "64", "--precision", "fp32", "--out", str(out))
    _wait_for(out / "checkpoint.pt", process)  # written after the first epoch
    workers = _workers(process)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGINT)  # one process, as `kill -INT` would
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.count("validation accuracy") == 1 and "2 processes (gloo)); ended by: stop request" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.csv",
                                                      "metrics.json", "per_class.csv"]  # whole, no .part left
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped"] == "stop request" and metrics["processes"] == "2 processes (gloo)"


FAIL_ON_RANK_1 = """
import sys, torch
from resnet_viz import training
from resnet_viz.cli import main
real = training.Trainer._forward_backward
def failing(self, *args):
    if self.world.rank == 1 and self.settings.epochs:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return real(self, *args)
training.Trainer._forward_backward = failing
sys.exit(main(sys.argv[1:]))
"""


def test_a_failure_on_one_process_ends_every_process_with_one_message(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAIL_ON_RANK_1)
    out = tmp_path / "run"
    process = torchrun(str(script), "train", "resnet20", "--data", "synthetic", "--limit-per-class", "64",
                       "--epochs", "2", "--batch-size", "64", "--out", str(out))
    _, stderr = process.communicate(timeout=120)  # every process ended: none was left waiting for the other
    assert process.returncode != 0
    ours = re.findall(r"error: .*", stderr)
    assert ours == ["error: rank 1: the device ran out of memory: use a smaller --batch-size, more "
                    "--micro-batches or more processes"]
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_the_same_command_without_torchrun_is_one_process(tmp_path):
    world = World()
    assert not world.distributed and world.main and world.describe() == "1 process"
