import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_viz import ConfigError, ResNetConfig, build_model, preset
from resnet_viz.cli import main
from resnet_viz.data import load_dataset, synthetic_dataset
from resnet_viz.errors import CheckpointError
from resnet_viz.jobs import TrainingJob
from resnet_viz.training import (
    Trainer,
    TrainSettings,
    evaluate_checkpoint,
    load_checkpoint,
    lr_factor,
    param_groups,
)
from resnet_viz.training.watch import block_activity, gradient_norms

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cifar10-jpeg-train.tar.gz"
needs_cifar = pytest.mark.skipif(not SHARED.exists(), reason="the CIFAR-10 JPEG archive is not at ../shared/data")
TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))  # trains in a blink


class _Evil:
    """Unpickling this would create a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """4,500 training and 500 held-out CIFAR-10 images, from the shared JPEGs."""
    cache = tmp_path_factory.mktemp("cache")
    return load_dataset(str(SHARED), cache_dir=cache, limit_per_class=500)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_dataset(train_per_class=60, val_per_class=20)


# -- the proof: it learns, and the checkpoint keeps what it learnt ------------------------------------

@needs_cifar
def test_resnet20_learns_cifar10_on_the_cpu_and_its_checkpoint_reloads(cifar, tmp_path):
    settings = TrainSettings(epochs=4, batch_size=128, lr=0.2, seed=0)
    result = Trainer(preset("resnet20"), cifar, settings, out_dir=tmp_path).run()
    assert len(cifar.val) == 500 and result.val_acc > 0.35  # chance is 0.10
    assert result.stopped == "finished" and result.steps == 4 * (4500 // 128)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    # the saved model, loaded safely, gives the same accuracy on the same held-out images
    accuracy, rows = evaluate_checkpoint(tmp_path / "checkpoint.pt", cifar, "val", device="cpu")
    assert accuracy == pytest.approx(result.val_acc, abs=1e-9)
    assert sum(r["images"] for r in rows) == 500 and sum(r["correct"] for r in rows) == round(accuracy * 500)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val_acc"] == result.val_acc and metrics["config"]["name"] == "resnet20"
    history = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4]
    assert ResNetConfig.load(tmp_path / "config.json") == preset("resnet20")


def test_same_seed_same_run(synthetic):
    runs = [Trainer(TINY, synthetic, TrainSettings(epochs=2, batch_size=64, lr=0.1, seed=3)).run()
            for _ in range(2)]
    assert runs[0].val_acc == runs[1].val_acc
    assert [r["train_loss"] for r in runs[0].history] == [r["train_loss"] for r in runs[1].history]


# -- ending early ------------------------------------------------------------------------------------------

def test_a_stop_request_ends_cleanly_then_evaluates_and_saves(synthetic, tmp_path):
    trainer = Trainer(TINY, synthetic, TrainSettings(epochs=50, batch_size=32, lr=0.1), out_dir=tmp_path)

    def stop_at_three(progress):
        if progress.step == 3:
            trainer.stop()

    result = trainer.run(on_progress=stop_at_three)
    assert (result.stopped, result.steps) == ("stop request", 3)
    assert 0 <= result.val_acc <= 1 and len(result.history) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "config.json", "metrics.csv",
                                                          "metrics.json", "per_class.csv"]
    model, config, meta = load_checkpoint(tmp_path / "checkpoint.pt")
    assert config == TINY and meta["stopped"] == "stop request"


def test_a_time_budget_ends_the_run_after_annealing(synthetic):
    seen = []
    result = Trainer(TINY, synthetic, TrainSettings(epochs=1000, batch_size=16, lr=0.1, time_budget=1.0)).run(
        on_progress=seen.append)
    assert result.stopped == "time budget" and 1.0 <= result.train_seconds < 3.0
    assert seen[-1].progress >= 1.0
    assert seen[-1].lr < 0.1 * 0.1  # the schedule ran on the budget: the learning rate ended near 0


def test_learning_rate_schedules():
    assert lr_factor(0.0, "onecycle", 0.2) == pytest.approx(0.1)
    assert lr_factor(0.2, "onecycle", 0.2) == pytest.approx(1.0)
    assert lr_factor(0.6, "onecycle", 0.2) == pytest.approx(0.5)
    assert lr_factor(1.0, "onecycle", 0.2) == pytest.approx(0.0)
    assert lr_factor(0.6, "cosine", 0.2) == pytest.approx(0.5)
    assert lr_factor(0.4, "cosine", 0.2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_no_weight_decay_on_batch_norm_and_biases():
    model = build_model(preset("resnet20"))
    decay, no_decay = param_groups(model, 5e-4)
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])  # conv and fc weights
    bn_and_bias = sum(p.numel() for n, p in model.named_parameters() if "bn" in n or n.endswith("bias")
                      or "downsample.1" in n)
    assert sum(p.numel() for p in no_decay["params"]) == bn_and_bias
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (5e-4, 0.0)


# -- refusing bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "settings", "message"), [
    (preset("resnet20", num_classes=100), TrainSettings(), "the network has 100 outputs but synthetic"),
    (preset("resnet20", input_size=(64, 64)), TrainSettings(), "inputs of 3×64×64 but synthetic"),
    (TINY, TrainSettings(batch_size=100_000), "larger than the 600 training images"),
])
def test_mismatches_are_one_sentence(synthetic, config, settings, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(config, synthetic, settings).run()


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(synthetic, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        Trainer(TINY, synthetic, TrainSettings(), out_dir=tmp_path / "file")
    with pytest.raises(ConfigError, match=r"cannot make the folder .*: .*file is a file"):
        Trainer(TINY, synthetic, TrainSettings(), out_dir=tmp_path / "file" / "run")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root may write anywhere
        with pytest.raises(ConfigError, match="is not writable"):
            Trainer(TINY, synthetic, TrainSettings(), out_dir=locked / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "locked"]  # nothing made


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": -1}, "learning rate -1"), ({"epochs": 0}, "epochs and batch size"),
    ({"schedule": "step"}, "schedule 'step'"), ({"time_budget": 0}, "time budget 0"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainSettings(**kwargs)


def test_checkpoints_are_loaded_safely(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="is not a readable resnet-viz checkpoint"):
        load_checkpoint(junk)
    # a pickle that would run code when unpickled is refused, never executed
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "resnet-viz checkpoint 1", "payload": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert not marker.exists()
    plain = tmp_path / "plain.pt"
    torch.save(build_model(TINY).state_dict(), plain)
    with pytest.raises(CheckpointError, match="no 'resnet-viz checkpoint 1' header"):
        load_checkpoint(plain)
    mismatch = tmp_path / "mismatch.pt"
    torch.save({"format": "resnet-viz checkpoint 1", "config": preset("resnet20").to_json(), "meta": "{}",
                "state_dict": build_model(TINY).state_dict()}, mismatch)
    with pytest.raises(CheckpointError, match="does not match its own config"):
        load_checkpoint(mismatch)


# -- seeing inside -----------------------------------------------------------------------------------------

def test_block_activity_measures_what_it_says():
    torch.manual_seed(0)
    model = build_model(preset("resnet20"))
    x = torch.randn(8, 3, 32, 32)
    stats = block_activity(model, x)
    assert list(stats) == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert all(v["residual_ratio"] > 0 and 0 <= v["dead_relu"] <= 1 for v in stats.values())
    with torch.no_grad():
        model.layer2[1].bn2.weight.zero_()
        model.layer2[1].bn2.bias.zero_()
    assert block_activity(model, x)["layer2.1"]["residual_ratio"] == 0.0  # the branch adds nothing
    assert model.training  # the model's mode is restored
    assert all(v == 0.0 for v in gradient_norms(model).values())
    model(x).sum().backward()
    norms = gradient_norms(model)
    expected = torch.cat([p.grad.flatten() for p in model.layer3[0].parameters()]).norm()
    assert norms["layer3.0"] == pytest.approx(float(expected), rel=1e-5)


def test_training_looks_inside_the_blocks(synthetic):
    looks = []
    result = Trainer(TINY, synthetic, TrainSettings(epochs=2, batch_size=32, lr=0.1, inspect_every=5)).run(
        on_inspect=looks.append)
    assert looks == result.inspections and [look["step"] for look in looks] == list(range(5, 37, 5))
    assert set(looks[0]["blocks"]) == {"layer1.0", "layer2.0"}
    assert set(looks[0]["blocks"]["layer1.0"]) == {"residual_ratio", "dead_relu", "grad_norm"}


# -- the background job the app polls ------------------------------------------------------------------------

def test_training_job_reports_progress_and_the_result(tmp_path):
    job = TrainingJob(TINY, "synthetic", TrainSettings(epochs=2, batch_size=64, lr=0.1), tmp_path,
                      limit_per_class=40).start()
    job.join(timeout=120)
    state = job.snapshot()
    assert state.status == "finished", state.message
    assert state.result.val_acc == state.epochs[-1]["val_acc"] and state.points[-1]["step"] == state.result.steps
    assert "synthetic" in state.data and (tmp_path / "checkpoint.pt").exists()


def test_training_job_failure_is_a_sentence(tmp_path):
    job = TrainingJob(TINY, str(tmp_path / "missing-folder"), TrainSettings(), tmp_path / "out").start()
    job.join(timeout=60)
    state = job.snapshot()
    assert state.status == "failed" and "no such dataset or folder" in state.message
    assert not (tmp_path / "out").exists()


# -- the command line ---------------------------------------------------------------------------------------------

def test_cli_train_and_evaluate(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(TINY.to_json())
    out = tmp_path / "run"
    code = main(["train", str(config), "--data", "synthetic", "--limit-per-class", "40", "--epochs", "2",
                 "--batch-size", "64", "--lr", "0.1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "validation accuracy" in captured.out and f"wrote {out / 'checkpoint.pt'}" in captured.out
    code = main(["evaluate", str(out / "checkpoint.pt"), "--data", "synthetic", "--limit-per-class", "40"])
    captured = capsys.readouterr()
    assert code == 0 and "val accuracy" in captured.out
    rows = list(csv.DictReader((out / "evaluation-val.csv").open()))
    assert len(rows) == 10 and sum(int(r["images"]) for r in rows) > 0


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "resnet20", "--data", "no/such/folder", "--out", "run"], "no such dataset or folder"),
    (["train", "resnet20", "--data", "synthetic", "--classes", "7", "--out", "run"], "has 10 classes"),
    (["train", "resnet20", "--data", "synthetic", "--lr", "-1", "--out", "run"], "learning rate -1"),
    (["train", "resnet20", "--data", "synthetic", "--device", "cuda:9", "--out", "run"], "cuda"),
    (["evaluate", "missing.pt", "--data", "synthetic"], "does not exist"),
])
def test_cli_training_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_cli_train_ctrl_c_stops_cleanly(tmp_path):
    """A real interrupt: the run stops after the step, still evaluates and saves, and exits 0."""
    import signal
    import time

    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "resnet_viz", "train", "resnet20", "--data", "synthetic", "--epochs", "100",
         "--batch-size", "32", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline and "training" not in (process.stderr.readline() or ""):
        pass
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-500:]
    assert "ended by: stop request" in stdout and (out / "checkpoint.pt").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_uses_bf16_and_channels_last(synthetic):
    trainer = Trainer(TINY, synthetic, TrainSettings(epochs=1, batch_size=64, device="cuda"))
    result = trainer.run()
    assert result.device.startswith("cuda") and result.precision == "bf16"
    assert next(trainer.model.parameters()).is_cuda


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    from resnet_viz.training import devices, precision_and_why

    cpu = torch.device("cpu")
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    precision, why = precision_and_why("auto", cpu)
    assert precision == ("bf16" if native else "fp32") and ("natively" in why) == native
    assert precision_and_why("fp32", cpu) == ("fp32", "as asked") and precision_and_why("bf16", cpu)[0] == "bf16"
    monkeypatch.setattr(devices, "_cpu_has_bf16", lambda: False)
    assert precision_and_why("auto", cpu) == ("fp32", "this CPU has no native bf16 (no AVX-512 bf16, no AMX), "
                                                      "where bf16 would be slower than fp32")
    monkeypatch.setattr(devices, "_cpu_has_bf16", lambda: True)
    assert precision_and_why("auto", cpu)[0] == "bf16"
