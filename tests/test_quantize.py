import json

import pytest
import torch

from resnet_viz import ConfigError, ResNetConfig
from resnet_viz.quantization.fake import (
    Scheme,
    calibration_batches,
    fake_quantized,
    quantizable_layers,
    quantize_weight,
    weight_bytes,
)
from resnet_viz.quantization.studies import mixed_precision_plan, sensitivity, sweep
from resnet_viz.training import accuracy

CPU = torch.device("cpu")
TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))  # as conftest's `trained`




@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_a_b_bit_tensor_has_at_most_2_to_the_b_levels(bits):
    torch.manual_seed(bits)
    w = torch.randn(16, 8, 3, 3) * torch.linspace(0.1, 3, 16)[:, None, None, None]
    per_channel = quantize_weight(w, Scheme(bits=bits, granularity="per-channel"))
    assert max(len(torch.unique(c)) for c in per_channel) <= 2**bits - 1  # symmetric: one level unused
    per_tensor = quantize_weight(w, Scheme(bits=bits, granularity="per-tensor"))
    assert len(torch.unique(per_tensor)) <= 2**bits - 1
    affine = quantize_weight(w, Scheme(bits=bits, granularity="per-channel", symmetric=False))
    assert max(len(torch.unique(c)) for c in affine) <= 2**bits
    # per channel fits each channel's own range better than one range for all
    assert (per_channel - w).pow(2).mean() <= (per_tensor - w).pow(2).mean()


def test_error_falls_with_bits_and_mse_calibration_clips_outliers():
    torch.manual_seed(0)
    w = torch.randn(32, 64) ** 3  # heavy tails: min-max wastes the grid on a few outliers
    errors = [(quantize_weight(w, Scheme(bits=b)) - w).pow(2).mean() for b in (2, 3, 4, 6, 8)]
    assert errors == sorted(errors, reverse=True)
    minmax = (quantize_weight(w, Scheme(bits=4)) - w).pow(2).mean()
    mse = (quantize_weight(w, Scheme(bits=4, calibration="mse")) - w).pow(2).mean()
    assert mse < minmax


def test_int8_weights_take_a_quarter_of_the_bytes(trained):
    model, _ = trained
    quantizable = sum(m.weight.numel() for n, m in model.named_modules() if n in quantizable_layers(model))
    rest = sum(p.numel() for p in model.parameters()) - quantizable
    assert weight_bytes(model, 32) == 4 * (quantizable + rest)
    assert weight_bytes(model, 8) == quantizable + 4 * rest


def test_fake_quantized_copies_and_8_bit_keeps_the_accuracy(trained):
    model, data = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = accuracy(model, data, CPU)
    calib = calibration_batches(data, CPU, images=128)
    eight = accuracy(fake_quantized(model, Scheme(bits=8), Scheme(bits=8, granularity="per-tensor"), calib),
                     data, CPU)
    assert base > 0.5 and abs(base - eight) <= 0.02
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="needs calibration images"):
        fake_quantized(model, None, Scheme(bits=8))
    with pytest.raises(ConfigError, match="no conv or fc layer named 'layer9.0.conv1'"):
        fake_quantized(model, Scheme(), None, layers=["layer9.0.conv1"])


def test_sweep_has_a_row_per_scheme_and_bit_width(trained):
    model, data = trained
    rows = sweep(model, data, CPU, bits=(8, 2), schemes=[Scheme(), Scheme(granularity="per-tensor")])
    assert [(r["scheme"], r["bits"]) for r in rows] == [
        ("float32", 32), ("per-channel symmetric minmax", 8), ("per-channel symmetric minmax", 2),
        ("per-tensor symmetric minmax", 8), ("per-tensor symmetric minmax", 2)]
    by = {(r["scheme"], r["bits"]): r["accuracy"] for r in rows}
    assert by[("per-channel symmetric minmax", 8)] >= by[("per-channel symmetric minmax", 2)]


def test_sensitivity_ranks_are_reproducible_and_the_plan_sits_between(trained):
    model, data = trained
    first, second = sensitivity(model, data, CPU), sensitivity(model, data, CPU)
    assert first == second
    assert [r["rank"] for r in first] == list(range(1, len(quantizable_layers(model)) + 1))
    assert sorted(r["layer"] for r in first) == sorted(quantizable_layers(model))
    assert all(r["drop"] == pytest.approx(accuracy(model, data, CPU) - r["accuracy"]) for r in first)
    plan = mixed_precision_plan(model, data, CPU, first, fragile=2)
    assert sorted(plan["plan"].values()).count(8) == 2
    assert weight_bytes(model, 4) < plan["weight_bytes"] < weight_bytes(model, 8)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bits": 1}, "1 bits — quantization takes 2 to 16 bits"),
    ({"granularity": "per-row"}, "granularity 'per-row'"),
    ({"calibration": "kl"}, "calibration 'kl'"),
    ({"percentile": 10}, "percentile 10"),
])
def test_bad_schemes(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Scheme(**kwargs)


def _train_tiny_checkpoint(tmp_path, capsys, epochs: int, batch_size: int):
    """Train TINY through the command line; the folder holding its checkpoint.pt."""
    from resnet_viz.cli import main

    run, arch = tmp_path / "run", tmp_path / "tiny.json"
    arch.write_text(TINY.to_json())
    assert main(["train", str(arch), "--data", "synthetic", "--limit-per-class", "30", "--epochs", str(epochs),
                 "--batch-size", str(batch_size), "--out", str(run)]) == 0
    capsys.readouterr()
    return run


def test_cli_quantize_sweep_and_sensitivity(trained, tmp_path, capsys):
    from resnet_viz.cli import main

    run = _train_tiny_checkpoint(tmp_path, capsys, epochs=1, batch_size=64)
    code = main(["quantize", str(run / "checkpoint.pt"), "--data", "synthetic", "--limit-per-class", "30",
                 "--mode", "sweep", "--bits", "8", "4", "--out", str(tmp_path / "q")])
    out = capsys.readouterr().out
    assert code == 0 and "per-channel symmetric minmax" in out
    report = json.loads((tmp_path / "q" / "sweep.json").read_text())
    assert [r["bits"] for r in report["rows"]] == [32, 8, 4, 8, 4, 8, 4]
    code = main(["quantize", str(run / "checkpoint.pt"), "--data", "synthetic", "--limit-per-class", "30",
                 "--mode", "sensitivity"])
    out = capsys.readouterr().out
    assert code == 0 and "  1. " in out and "most fragile layers at 8 bits" in out
    code = main(["quantize", str(run / "checkpoint.pt"), "--data", "synthetic", "--limit-per-class", "30",
                 "--mode", "qat", "--bits", "4", "--epochs", "1", "--out", str(tmp_path / "q")])
    out = capsys.readouterr().out
    assert code == 0 and "method lsq, distilled from the float32 network" in out
    assert "W4A4: " in out and "after 1 epochs" in out and "with flip TTA" in out and "weights packed: " in out
    assert "kept at other widths: conv1 8-bit, fc 8-bit" in out
    from resnet_viz.training import load_checkpoint

    model, config, meta = load_checkpoint(tmp_path / "q" / "qat-W4A4.pt")  # the learned steps as plain data
    layers = meta["quantization"]["layers"]
    assert config == TINY and layers["layer1.0.conv1"]["bits"] == 4 and layers["conv1"]["input"] == "signed"
    assert len(layers["layer1.0.conv1"]["weight_step"]) == model.layer1[0].conv1.out_channels
    steps = torch.tensor(layers["layer1.0.conv1"]["weight_step"]).view(-1, 1, 1, 1)
    on_grid = model.layer1[0].conv1.weight / steps
    torch.testing.assert_close(on_grid, on_grid.round(), rtol=0, atol=1e-3)  # its weights lie on their grids
    report = json.loads((tmp_path / "q" / "qat.json").read_text())
    after = report["stages"][0]["after"]
    for name in ("qat-W4A4.pt", "qat-W4A4.rvq"):  # evaluate reads both as quantized, to the report's accuracy
        code = main(["evaluate", str(tmp_path / "q" / name), "--data", "synthetic", "--limit-per-class", "30",
                     "--out", str(tmp_path / "e.csv")])
        out = capsys.readouterr().out
        assert code == 0 and f"val accuracy {after:.2%}" in out and "as quantized: 4-bit" in out
    code = main(["quantize", str(run / "checkpoint.pt"), "--data", "synthetic", "--limit-per-class", "30",
                 "--mode", "qat", "--method", "ste", "--bits", "4", "--epochs", "1", "--out", str(tmp_path / "s")])
    assert code == 0 and "method ste" in capsys.readouterr().out
    assert "after QAT" in load_checkpoint(tmp_path / "s" / "qat-W4A4.pt")[2]["quantization"]
    code = main(["quantize", str(tmp_path / "missing.pt"), "--data", "synthetic", "--mode", "sweep"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_straight_through_rounding_trains_and_finishes_on_the_grid(trained):
    from torch.nn.utils import parametrize

    from resnet_viz.quantization.qat import finish_qat, prepare_qat

    model, data = trained
    prepared = prepare_qat(model, Scheme(bits=3), None)
    conv = prepared.layer1[0].conv1
    assert torch.equal(conv.weight, quantize_weight(conv.parametrizations.weight.original, Scheme(bits=3)))
    x = torch.randn(4, 3, 32, 32)
    prepared(x).sum().backward()
    assert conv.parametrizations.weight.original.grad.abs().sum() > 0  # gradients pass the rounding
    finished = finish_qat(prepared)
    assert not any(parametrize.is_parametrized(m) for m in finished.modules())
    weight = finished.layer1[0].conv1.weight
    assert max(len(torch.unique(c)) for c in weight) <= 2**3 - 1
    assert set(finished.state_dict()) == set(model.state_dict())


def test_quantization_aware_finetune_reports_before_and_after(trained):
    from resnet_viz.quantization.qat import quantization_aware_finetune

    model, data = trained
    result = quantization_aware_finetune(model, TINY, data, CPU, bits=3, epochs=2, lr=0.01, batch_size=32)
    assert result["float32"] == accuracy(model, data, CPU)
    assert 0 <= result["before"] <= 1 and 0 <= result["after"] <= 1
    assert result["after"] >= result["before"] - 0.05  # a fine-tune at the same bits does not undo the network
    assert [row["epoch"] for row in result["history"]] == [1, 2]


def test_cli_quantize_int8(tmp_path, capsys):
    pytest.importorskip("torchao")
    from resnet_viz.cli import main
    from resnet_viz.quantization.int8 import load_program

    run = _train_tiny_checkpoint(tmp_path, capsys, epochs=2, batch_size=32)
    code = main(["quantize", str(run / "checkpoint.pt"), "--data", "synthetic", "--limit-per-class", "30",
                 "--mode", "int8", "--out", str(tmp_path / "q")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "batch norms folded" in captured.out and "× the throughput" in captured.out
    report = json.loads((tmp_path / "q" / "int8.json").read_text())
    f32, i8 = report["rows"]
    assert abs(f32["accuracy"] - i8["accuracy"]) <= 0.05 and i8["weight_bytes"] < f32["weight_bytes"] / 2.5
    assert load_program(tmp_path / "q" / "int8.pt2") is not None
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "q" / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert "Conv" in {node.op_type for node in onnx.load(str(tmp_path / "q" / "float32.onnx")).graph.node}


def test_cli_quantize_a_schedule_with_a_plan_compared_with_rounding_and_ste(trained, tmp_path, capsys):
    from resnet_viz.cli import main

    run = _train_tiny_checkpoint(tmp_path, capsys, epochs=1, batch_size=64)
    common = [str(run / "checkpoint.pt"), "--data", "synthetic", "--limit-per-class", "30"]
    code = main(["quantize", *common, "--mode", "sensitivity", "--bits", "2", "--out", str(tmp_path / "sens")])
    assert code == 0
    capsys.readouterr()
    code = main(["quantize", *common, "--mode", "qat", "--schedule", "4:1,2:1", "--edge-bits", "0", "--no-distill",
                 "--plan", str(tmp_path / "sens" / "sensitivity.json"), "--compare", "--out", str(tmp_path / "q")])
    out = capsys.readouterr().out
    assert code == 0 and "W4A4: " in out and "W2A2: " in out and "distilled" not in out
    report = json.loads((tmp_path / "q" / "qat.json").read_text())
    fragile = {row["layer"] for row in json.loads((tmp_path / "sens" / "sensitivity.json").read_text())["rows"]
               if row["rank"] == 1}
    bits = report["layer_bits"]["W2A2"]
    assert all(bits[name] == 8 for name in fragile)  # the sensitivity study's plan
    assert all(b == 2 for name, b in bits.items() if name not in fragile)  # the edges too: --edge-bits 0
    assert [(r["scheme"], r["bits"]) for r in report["compare"]] == [
        ("post-training", 4), ("STE fine-tune", 4), ("post-training", 2), ("STE fine-tune", 2)]
    assert [s["bits"] for s in report["stages"]] == [4, 2]
    html = (tmp_path / "q" / "qat.html").read_text()
    assert "LSQ fine-tune" in html and "STE fine-tune" in html and "post-training" in html
    assert {p.name for p in (tmp_path / "q").iterdir()} >= {"qat-W4A4.pt", "qat-W4A4.rvq", "qat-W2A2.rvq"}


@pytest.mark.parametrize("flags, message", [
    (["--schedule", "4:1,x"], "is not BITS:EPOCHS"),
    (["--plan", "conv1"], "is not NAME=BITS"),
    (["--plan", "nope.json"], "not a sensitivity.json"),
    (["--plan", "nope=8"], "no conv or linear layer named 'nope'"),
    (["--edge-bits", "1"], "--edge-bits 1: give 2 to 16 bits"),
])
def test_cli_quantize_refuses_bad_fine_tune_options_in_one_sentence(trained, tmp_path, capsys, flags, message):
    from resnet_viz.cli import main

    run = _train_tiny_checkpoint(tmp_path, capsys, epochs=1, batch_size=64)
    code = main(["quantize", str(run / "checkpoint.pt"), "--data", "synthetic", "--limit-per-class", "10",
                 "--mode", "qat", "--epochs", "1", *flags])
    assert code == 2 and message in capsys.readouterr().err
