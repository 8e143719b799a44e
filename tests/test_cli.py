import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_viz import PRESETS, ResNetConfig, preset, trace
from resnet_viz.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_presets_lists_every_preset_with_its_totals(capsys):
    code, out, err = run(capsys, "presets")
    assert code == 0 and err == ""
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.split()[0] in PRESETS}
    assert list(lines) == list(PRESETS)
    assert "272,474" in lines["resnet20"] and "40,813,184" in lines["resnet20"]
    assert "25,557,032" in lines["resnet50"] and "4,089,184,256" in lines["resnet50"]


def test_summary_table_shows_the_seed_walkthrough(capsys):
    code, out, _ = run(capsys, "summary", "resnet20", "--depth", "1")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert rows["layer1"][2] == "1×16×32×32"
    assert rows["layer2"][2] == "1×32×16×16"
    assert rows["layer3"][2] == "1×64×8×8"
    assert rows["avgpool"][2] == "1×64×1×1"
    assert rows["fc"][2] == "1×10"
    assert "layer1.0" not in out  # --depth 1 stops at the stages
    assert "Parameters       272,474" in out and "MACs             40,813,184" in out


def test_summary_json_has_config_totals_and_layers(capsys):
    code, out, _ = run(capsys, "summary", "resnet20", "--shortcut", "A", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert ResNetConfig.from_dict(data["config"]) == preset("resnet20", shortcut="A")
    assert {"params", "trainable_params", "macs", "flops", "all_ops", "activation_bytes",
            "peak_activation_bytes", "training_bytes"} <= set(data["totals"])
    assert (data["totals"]["params"], data["totals"]["macs"]) == (269_722, 40_551_040)
    layer = next(x for x in data["layers"] if x["name"] == "layer2.0.conv1")
    assert layer["input_shapes"] == [[1, 16, 32, 32]] and layer["output_shape"] == [1, 32, 16, 16]
    assert {"name", "type", "depth", "params", "macs"} <= set(layer)
    assert len(data["layers"]) == len(trace(preset("resnet20", shortcut="A")).layers)


def test_summary_json_config_feeds_back_in(capsys, tmp_path):
    _, out, _ = run(capsys, "summary", "resnet32", "--classes", "100", "--input", "3x64x64", "--format", "json")
    path = tmp_path / "net.json"
    path.write_text(out)
    code, again, _ = run(capsys, "summary", str(path), "--format", "json")
    assert code == 0
    assert json.loads(again)["totals"] == json.loads(out)["totals"]
    assert json.loads(again)["config"]["input_size"] == [64, 64]


def test_summary_csv_reads_back_to_the_same_numbers(capsys):
    code, out, _ = run(capsys, "summary", "resnet18", "--format", "csv", "--batch", "8")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    t = trace(preset("resnet18"), batch_size=8)
    assert len(rows) == len(t.layers)
    assert int(rows[0]["macs"]) == t.totals.macs == 8 * 1_814_073_344
    assert rows[0]["output_shape"] == "8×1000"


def test_summary_markdown(capsys):
    code, out, _ = run(capsys, "summary", "resnet20", "--format", "markdown", "--depth", "1")
    assert code == 0
    assert "| Layer | Type | Output shape | Params | MACs | RF |" in out
    assert "| &nbsp;&nbsp;layer3 | Sequential | 1×64×8×8 | 205,696 | 13,107,200 | 81 |" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "resnet21"], "unknown preset 'resnet21'"),
        (["summary", "missing.json"], "config file 'missing.json' does not exist"),
        (["summary", "resnet20", "--input", "3x2x2"], "input 2×2 is too small"),
        (["summary", "resnet20", "--input", "32x32"], "write it as CxHxW"),
        (["summary", "resnet20", "--shortcut", "D"], "invalid choice: 'D'"),
        (["summary", "resnet20", "--classes", "ten"], "invalid int value"),
        (["summary", "resnet20", "--classes", "0"], "num_classes 0"),
        (["summary", "resnet20", "--batch", "0"], "batch size 0"),
        (["summary", "resnet20", "--depth", "-1"], "--depth -1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: command"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_malformed_config_file(capsys, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"widths": [16, 32,')
    code, _, err = run(capsys, "summary", str(path))
    assert code == 2 and "is not valid JSON" in err
    path.write_text('{"widths": [16, 32], "blocks": [1, 1], "strides": [1, 0]}')
    code, _, err = run(capsys, "summary", str(path))
    assert code == 2 and "stage 2: stride 0" in err


def test_the_module_runs_as_a_program_without_tracebacks():
    ok = subprocess.run([sys.executable, "-m", "resnet_viz", "summary", "resnet20", "--depth", "0"],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0 and "272,474" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "resnet_viz", "summary", "nope"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
