"""Input at the edges: numbers too long to read, nesting too deep, files that are not files, and disks that fill up.
Each ends in one sentence (exit status 2 on the command line), and no file is left half written."""

import errno
import os
import stat
import threading
from pathlib import Path

import pytest
import torch

from resnet_viz import ResNetConfig, build_model, preset
from resnet_viz import io as rio
from resnet_viz.cli import main
from resnet_viz.config import MAX_CONFIG_BYTES
from resnet_viz.data import synthetic_dataset
from resnet_viz.errors import ConfigError, ExportError
from resnet_viz.training import Trainer, TrainSettings, load_resume
from resnet_viz.training.checkpoints import checkpoint_bytes, checkpoint_size_estimate
from resnet_viz.training.schedule import param_groups

TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))  # trains in a blink
REAL_FDOPEN = os.fdopen
NO_SPACE = os.strerror(errno.ENOSPC).lower()  # "no space left on device"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


class _DiskFills:
    """``os.fdopen`` on a disk that fills up: from the ``fail_from``-th file opened for writing on, the first
    write puts half its bytes down and then fails with ENOSPC, as a real full disk does."""

    def __init__(self, fail_from: int = 1):
        self.fail_from, self.opened = fail_from, 0

    def __call__(self, fd, mode="r", *args, **kwargs):
        file = REAL_FDOPEN(fd, mode, *args, **kwargs)
        if "w" not in mode:
            return file
        self.opened += 1
        return _FullFile(file) if self.opened >= self.fail_from else file


class _FullFile:
    def __init__(self, file):
        self.file = file

    def write(self, data) -> int:
        self.file.write(bytes(data[: len(data) // 2]))
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


# -- config JSON ------------------------------------------------------------------------------------------------

def test_a_number_past_pythons_digit_limit_is_a_sentence(tmp_path, capsys):
    text = '{"num_classes": ' + "9" * 5000 + "}"
    with pytest.raises(ConfigError, match=r"^the config is not valid JSON \(a number has more than 4,300 digits\)$"):
        ResNetConfig.from_json(text)
    path = tmp_path / "net.json"
    path.write_text(text)
    code, out, err = run(capsys, "summary", path)
    assert (code, out) == (2, "")
    assert err == "error: the config is not valid JSON (a number has more than 4,300 digits)\n"


def test_nesting_too_deep_is_a_sentence(tmp_path, capsys):
    path = tmp_path / "net.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    code, out, err = run(capsys, "summary", path)
    assert (code, out) == (2, "")
    assert err == "error: the config is not valid JSON (its lists or objects are nested too deeply)\n"


def test_a_huge_number_gets_the_range_sentence_in_a_few_words():
    with pytest.raises(ConfigError) as e:
        ResNetConfig.from_json('{"num_classes": 1' + "0" * 4000 + "}")  # 4,001 digits: Python reads it
    assert str(e.value) == "num_classes 100000… (4,001 digits) — the number of classes are limited to 100,000"
    with pytest.raises(ConfigError, match=r"^num_classes -100000… \(5,001 digits\) — .* must be 1 or more$"):
        ResNetConfig(num_classes=-(10**5000))  # too long for Python to write out
    with pytest.raises(ConfigError, match=r"^stage 1: width 123,456,789 — widths are limited to 8,192$"):
        ResNetConfig(widths=(123_456_789, 32, 64))


@pytest.mark.parametrize("field", ['"block": "' + "x" * 100_000 + '"', '"widths": ' + "[" * 900 + "]" * 900,
                                   '"' + "y" * 100_000 + '": 1', '"num_classes": "' + "z" * 100_000 + '"'])
def test_a_long_or_deep_value_is_quoted_short(field):
    with pytest.raises(ConfigError) as e:
        ResNetConfig.from_json("{" + field + "}")
    assert len(str(e.value)) < 250 and "\n" not in str(e.value)


def test_config_text_over_the_limit_is_refused_before_parsing():
    with pytest.raises(ConfigError, match=r"^the config is larger than 1 MiB; a config is a few hundred bytes"):
        ResNetConfig.from_json(" " * MAX_CONFIG_BYTES + "{}")  # valid JSON, but no config is this long


# -- config files ------------------------------------------------------------------------------------------------

def test_a_config_file_must_be_a_regular_file_of_at_most_1_mib(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^config file '.*' is not a regular file$"):
        ResNetConfig.load(tmp_path)
    big = tmp_path / "big.json"
    big.write_text(" " * MAX_CONFIG_BYTES + TINY.to_json())  # valid JSON
    code, out, err = run(capsys, "summary", big)
    assert (code, out) == (2, "")
    assert err == (f"error: config file {str(big)!r} is larger than 1 MiB; a config is a few hundred bytes of "
                   "JSON\n")
    fits = tmp_path / "fits.json"
    fits.write_text(" " * (MAX_CONFIG_BYTES - 1000) + TINY.to_json())
    assert ResNetConfig.load(fits) == TINY


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_refused_without_being_opened(tmp_path, capsys):
    pipe = tmp_path / "net.json"
    os.mkfifo(pipe)

    def writer() -> None:  # waits for a reader: the loader, if it opened the pipe, would read a good config
        with open(pipe, "w") as f:
            f.write(TINY.to_json())

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        code, out, err = run(capsys, "summary", pipe)
    finally:
        reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer finish whatever happened
        thread.join()
        os.close(reader)
    assert (code, out) == (2, "")
    assert err == f"error: config file {str(pipe)!r} is not a regular file\n"


# -- files written whole or not at all ------------------------------------------------------------------------------

def test_a_full_disk_leaves_the_earlier_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    target.write_text("old")
    monkeypatch.setattr(rio.os, "fdopen", _DiskFills())
    with pytest.raises(ExportError) as e:
        rio.write_file(target, b"new" * 1000)
    assert str(e.value) == f"cannot write {target}: {NO_SPACE}"
    assert isinstance(e.value, OSError)  # code that treats any failed write as an OSError still does
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_export_to_a_full_disk_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rio.os, "fdopen", _DiskFills())
    code, out, err = run(capsys, "export", "resnet20", "--what", "table", "-o", "resnet20.csv")
    assert (code, out) == (2, "")
    assert err == f"error: cannot write resnet20.csv: {NO_SPACE}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_pipe_or_device_is_never_replaced_by_a_file(tmp_path, capsys):
    pipe = tmp_path / "out.csv"
    os.mkfifo(pipe)
    code, _, err = run(capsys, "export", "resnet20", "--what", "table", "-o", pipe)
    assert code == 2 and err == f"error: cannot write {pipe}: it exists and is not a regular file\n"
    assert stat.S_ISFIFO(pipe.lstat().st_mode)
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "export", "resnet20", "--what", "table", "-o", tmp_path / "file" / "t.csv")
    assert code == 2 and err == f"error: {str(tmp_path / 'file')!r} is not a folder\n"  # as -o /dev/full/t.csv


def test_a_link_is_written_through_and_stays_a_link(tmp_path, capsys):
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    code, _, _ = run(capsys, "export", "resnet20", "--what", "table", "-o", link)
    assert code == 0 and link.is_symlink() and "layer1" in real.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]


# -- training: room for the checkpoints, and a save that fails --------------------------------------------------------

def test_the_checkpoint_estimate_is_a_little_over_the_real_size():
    for config in (preset("resnet20"), preset("resnet20", shortcut="A"), preset("resnet18", num_classes=10)):
        model = build_model(config)
        optimizer = torch.optim.SGD(param_groups(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
        model(torch.randn(2, *config.input_shape)).sum().backward()
        optimizer.step()  # the momentum buffers exist from the first step
        real = len(checkpoint_bytes(model, config, {"classes": [f"class {i}" for i in range(config.num_classes)]},
                                    run={"position": {}}, optimizer=optimizer.state_dict()))
        assert real <= checkpoint_size_estimate(config) <= 1.1 * real


def _tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(TINY.to_json())
    return path


TRAIN = ("--data", "synthetic", "--limit-per-class", "40", "--batch-size", "64", "--lr", "0.1")


def test_a_run_without_room_for_its_checkpoints_is_refused_before_training(tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 100_000, 100_000))
    data = synthetic_dataset(train_per_class=40, val_per_class=10)
    with pytest.raises(ExportError, match=r"^.*run has 97.66 KiB free but the run needs about \d+\.\d\d MiB for its "
                                          r"checkpoints and metrics; free some space or choose another folder"):
        Trainer(TINY, data, TrainSettings(epochs=2, batch_size=64), out_dir=tmp_path / "run")
    code, out, err = run(capsys, "train", _tiny_file(tmp_path), *TRAIN, "--epochs", "2", "--out", tmp_path / "run")
    assert (code, out) == (2, "") and len(err.splitlines()) == 1 and "97.66 KiB free" in err
    assert not (tmp_path / "run").exists()


def test_a_save_that_fails_mid_run_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(rio.os, "fdopen", _DiskFills(fail_from=2))  # the second checkpoint meets a full disk
    code, stdout, err = run(capsys, "train", _tiny_file(tmp_path), *TRAIN, "--epochs", "3", "--out", out)
    monkeypatch.undo()
    resume = load_resume(out / "checkpoint.pt")  # the first, whole
    assert resume.position.epoch == 2 and len(resume.position.history) == 1
    assert (code, stdout) == (2, "") and "Traceback" not in err
    assert errors(err) == [f"error: cannot write {out / 'checkpoint.pt'}: {NO_SPACE}; the last checkpoint saved "
                           f"(epoch 1, step {resume.position.step:,}) is kept"]
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]  # no half-written temporary file


def test_a_final_save_that_fails_says_nothing_was_saved(tmp_path, monkeypatch):
    data = synthetic_dataset(train_per_class=40, val_per_class=10)
    trainer = Trainer(TINY, data, TrainSettings(epochs=1, batch_size=64, lr=0.1), out_dir=tmp_path / "run")
    monkeypatch.setattr(rio.os, "fdopen", _DiskFills())
    with pytest.raises(ExportError) as e:
        trainer.run()
    assert str(e.value) == (f"cannot write {tmp_path / 'run' / 'checkpoint.pt'}: {NO_SPACE}; no checkpoint of "
                            "this run was saved")
    assert list((tmp_path / "run").iterdir()) == []
