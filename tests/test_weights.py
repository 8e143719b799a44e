"""Trained networks in the package: the bundling script, ``bundled:NAME`` wherever a checkpoint is taken, the
``weights`` and ``inside`` commands, and the shipped networks themselves against the sample images."""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_viz import ResNetConfig, weights
from resnet_viz.cli import main
from resnet_viz.errors import CheckpointError
from resnet_viz.samples import samples
from resnet_viz.training import load_checkpoint
from resnet_viz.views.inside import normalise

ROOT = Path(__file__).resolve().parents[1]
TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))
CARD_FIELDS = {"name", "network", "command", "recipe", "settings", "epochs", "data", "val_acc", "val_acc_flip",
               "per_class", "history", "torch", "date", "machine", "bytes", "sha256"}
TARGETS = {"resnet20": 0.86, "plain20": 0.84}  # validation accuracy, with or without flip TTA


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """TINY trained for one epoch by the command line, then bundled by scripts/bundle_weights.py."""
    tmp = tmp_path_factory.mktemp("bundle")
    arch, run, out = tmp / "tiny.json", tmp / "run", tmp / "weights"
    arch.write_text(TINY.to_json())
    assert main(["train", str(arch), "--data", "synthetic", "--limit-per-class", "30", "--epochs", "1",
                 "--batch-size", "64", "--out", str(run)]) == 0
    done = subprocess.run([sys.executable, "scripts/bundle_weights.py", str(run), "--name", "tiny", "--command",
                           "python -m resnet_viz train tiny.json --data synthetic --epochs 1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def only_tiny(tiny_bundle, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tiny_bundle)
    weights.bundled.cache_clear()
    yield tiny_bundle
    weights.bundled.cache_clear()


def test_the_bundling_script_keeps_the_weights_and_writes_the_card(tiny_bundle):
    blob = (tiny_bundle / "tiny.pt").read_bytes()
    saved = torch.load(tiny_bundle / "tiny.pt", weights_only=True)
    assert set(saved) == {"format", "config", "meta", "state_dict"}  # no optimizer, no run record
    card = json.loads((tiny_bundle / "tiny.json").read_text())
    assert CARD_FIELDS <= set(card)
    assert card["sha256"] == hashlib.sha256(blob).hexdigest() and card["bytes"] == len(blob)
    assert card["history"][-1]["val_acc"] == pytest.approx(card["val_acc"], abs=1e-4)
    assert card["torch"] == torch.__version__ and card["epochs"] == 1


def test_bundled_names_a_shipped_checkpoint_wherever_one_is_taken(only_tiny, tmp_path, monkeypatch, capsys):
    model, config, meta = load_checkpoint("bundled:tiny")
    assert config == TINY and not model.training
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "bundled:tiny", "--data", "synthetic", "--limit-per-class", "30"]) == 0
    assert "wrote tiny-evaluation-val.csv" in capsys.readouterr().out
    assert (tmp_path / "tiny-evaluation-val.csv").is_file()  # in the current folder, not in the package
    assert not list(only_tiny.glob("*.csv"))


def test_an_unknown_bundled_name_is_one_sentence(only_tiny, capsys):
    with pytest.raises(CheckpointError, match="there is no bundled network 'resnet99': choose one of tiny"):
        load_checkpoint("bundled:resnet99")
    assert main(["evaluate", "bundled:resnet99", "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose one of tiny" in err


def test_weights_lists_name_network_accuracy_size_and_file(only_tiny, capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    card = json.loads((only_tiny / "tiny.json").read_text())
    row = next(line for line in out.splitlines() if line.startswith("bundled:tiny"))
    assert f"{card['val_acc']:.2%}" in row and str(only_tiny / "tiny.pt") in row and "tiny" in row.split()[1]


# --- the shipped networks ---------------------------------------------------------------------------------------

def test_the_package_ships_its_networks_each_under_5_mb_and_on_target():
    shipped = {b.name: b for b in weights.bundled()}
    assert set(TARGETS) <= set(shipped)
    for name, target in TARGETS.items():
        b = shipped[name]
        assert b.size_bytes < 5 * 1024 * 1024
        assert CARD_FIELDS <= set(b.card) and b.card["network"] == name
        assert max(b.val_acc, b.val_acc_flip) >= target
        assert b.card["sha256"] == hashlib.sha256(b.path.read_bytes()).hexdigest()
        assert b.card["command"].startswith(f"python -m resnet_viz train {name} ")


@pytest.mark.parametrize("name", list(TARGETS))
def test_a_shipped_network_scores_its_stated_accuracy_on_the_sample_images(name):
    """The 100 sample images are validation images; on them the accuracy is a draw of 100 from the stated
    validation accuracy p, whose standard deviation is sqrt(p(1 − p) / 100), about 3 points: within 3 of those."""
    model, config, meta = load_checkpoint(f"bundled:{name}")
    x = torch.cat([normalise(s.pixels(), meta) for s in samples()])
    labels = torch.tensor([s.label for s in samples()])
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == labels).float().mean())
    p = weights.get(name).val_acc
    assert abs(accuracy - p) <= 3 * math.sqrt(p * (1 - p) / len(labels))


# --- inside -----------------------------------------------------------------------------------------------------

def test_inside_writes_pngs_and_the_json(tmp_path, capsys):
    out = tmp_path / "cat"
    assert main(["inside", "bundled:resnet20", "sample:cat-4550", "--out", str(out), "--channels", "8"]) == 0
    printed = capsys.readouterr().out
    assert "cat-4550.png (true class: cat)" in printed and "layer3.2: ‖F(x)‖/‖x‖" in printed
    report = json.loads((out / "inside.json").read_text())
    assert report["true_class"] == "cat" and report["network"] == "resnet20"
    assert len(report["predictions"]) == 5 and sum(p["probability"] for p in report["predictions"]) <= 1 + 1e-6
    assert [set(row) for row in report["blocks"]] == [{"block", "branch_norm", "skip_norm", "ratio"}] * 9
    assert len(list(out.glob("*.png"))) == 19


@pytest.mark.parametrize("argv, message", [
    (["bundled:resnet20", "README.md"], "README.md is not a PNG, JPEG or WebP image that can be read"),
    (["bundled:resnet20", "no-such.png"], "image 'no-such.png' does not exist"),
    (["bundled:resnet20", "sample:cat-1"], "there is no sample image 'cat-1'"),
    (["bundled:resnet20", "sample:cat-4550", "--class", "dragon"], "--class 'dragon' is not one of the network's"),
    (["bundled:resnet20", "sample:cat-4550", "--channel", "40"], "channel 40 is not one of block layer1.0's"),
])
def test_inside_refuses_bad_input_in_one_sentence_and_writes_nothing(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "never"
    assert main(["inside", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_the_most_accurate_network_comes_first(only_tiny):
    card = json.loads((only_tiny / "tiny.json").read_text())
    better = {**card, "name": "better", "val_acc": card["val_acc"] + 0.5}
    (only_tiny / "better.pt").write_bytes((only_tiny / "tiny.pt").read_bytes())
    (only_tiny / "better.json").write_text(json.dumps(better))
    weights.bundled.cache_clear()
    try:
        assert weights.names() == ("better", "tiny")
    finally:
        (only_tiny / "better.pt").unlink()
        (only_tiny / "better.json").unlink()
