import importlib.util
import os
import shutil
import sys
import zipfile

import pytest
import torch
from torch import nn

from resnet_viz import ResNetConfig, build_model, preset
from resnet_viz.quantization.fake import calibration_batches, quantizable_layers
from resnet_viz.quantization.int8 import (
    CompiledModel,
    QuantizationError,
    export_program,
    fold_batch_norm,
    folded_batch_norms,
    load_program,
    quantize_int8,
    save_program,
    tensor_bytes,
)
from resnet_viz.training import accuracy, checkpoint_bytes

CPU = torch.device("cpu")
TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))  # as conftest's `trained`
BOTTLENECK = ResNetConfig(name="tiny-bottleneck", block="bottleneck", widths=(8, 16), blocks=(1, 2), strides=(1, 2),
                          stem="imagenet", input_size=(64, 64))
WIDE = ResNetConfig(name="wide", widths=(64, 128, 256), blocks=(1, 1, 1))  # 2.8M parameters: weights dominate

needs_torchao = pytest.mark.skipif(importlib.util.find_spec("torchao") is None,
                                   reason="int8 quantization needs torchao (pip install torchao)")
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                    reason="compiled programs need a C++ compiler (g++) for Inductor")


def _with_batch_norm_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from the identity, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()




@pytest.fixture(scope="module")
def resnet20_files(tmp_path_factory):
    """ResNet-20 (random weights) as a float32 program and an int8 one, in memory and on disk."""
    torch.manual_seed(0)
    model = _with_batch_norm_statistics(build_model(preset("resnet20")))
    calibration = [torch.randn(64, 3, 32, 32) for _ in range(2)]
    folder = tmp_path_factory.mktemp("programs")
    fp32, int8 = export_program(model, (3, 32, 32)), quantize_int8(model, calibration)
    return model, int8, save_program(fp32, folder / "fp32.pt2"), save_program(int8, folder / "int8.pt2")


@pytest.mark.parametrize("config", [preset("resnet20", shortcut="A"), preset("resnet20", shortcut="B"),
                                    preset("resnet20", shortcut="C"), BOTTLENECK], ids=["A", "B", "C", "bottleneck"])
def test_folding_batch_norm_keeps_the_outputs(config):
    torch.manual_seed(1)
    model = _with_batch_norm_statistics(build_model(config))
    x = torch.randn(4, *config.input_shape)
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is not changed
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max() < 1e-4


def test_folded_batch_norms_are_named_in_full():
    assert folded_batch_norms(build_model(TINY)) == [
        ("conv1", "bn1"), ("layer1.0.conv1", "layer1.0.bn1"), ("layer1.0.conv2", "layer1.0.bn2"),
        ("layer2.0.conv1", "layer2.0.bn1"), ("layer2.0.conv2", "layer2.0.bn2"),
        ("layer2.0.downsample.0", "layer2.0.downsample.1")]
    pairs = folded_batch_norms(build_model(BOTTLENECK))
    assert ("layer2.1.conv3", "layer2.1.bn3") in pairs and ("layer1.0.downsample.0", "layer1.0.downsample.1") in pairs
    assert len(pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in build_model(BOTTLENECK).modules())


@needs_torchao
@needs_compiler
def test_int8_keeps_the_accuracy_and_runs_on_int8_kernels(trained):
    from torch._dynamo.utils import counters

    model, data = trained
    program = quantize_int8(model, calibration_batches(data, CPU, images=256))
    counters.clear()
    int8 = CompiledModel(program)
    x = calibration_batches(data, CPU, images=64)[0]
    with torch.no_grad():
        compiled, reference = int8(x), program(x)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert counters["inductor"]["qconv_weight_prepack_matcher_count"] == convs  # every conv runs in oneDNN int8
    assert counters["inductor"]["qlinear_weight_prepack_matcher_count"] == 1
    assert (compiled.argmax(1) == reference.argmax(1)).float().mean() >= 0.95
    base, eight = accuracy(model, data, CPU), accuracy(int8, data, CPU, batch_size=256)
    assert base > 0.5 and abs(base - eight) <= 0.02


@needs_torchao
def test_int8_weights_are_int8_and_a_quarter_of_the_bytes(resnet20_files):
    model, int8, fp32_path, int8_path = resnet20_files
    loaded = load_program(int8_path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), int8(x))
    weights = sum(m.weight.numel() for name, m in model.named_modules() if name in quantizable_layers(model))
    held = tensor_bytes(loaded)
    assert held["int8"] == weights  # every conv and fc weight, one byte each
    assert sum(held.values()) * 3.5 < sum(tensor_bytes(load_program(fp32_path)).values())
    # the file also holds the graph, which for ResNet-20 is comparable to its int8 weights
    assert int8_path.stat().st_size * 2 < fp32_path.stat().st_size


@needs_torchao
def test_int8_file_is_a_quarter_when_weights_dominate(tmp_path):
    torch.manual_seed(0)
    model = build_model(WIDE).eval()
    int8 = save_program(quantize_int8(model, [torch.randn(16, 3, 32, 32)]), tmp_path / "int8.pt2")
    fp32 = save_program(export_program(model, (3, 32, 32)), tmp_path / "fp32.pt2")
    assert int8.stat().st_size * 3.5 < fp32.stat().st_size


def test_missing_or_corrupt_programs_give_one_sentence(tmp_path):
    with pytest.raises(QuantizationError, match=r"^program '.*nothing\.pt2' does not exist$"):
        load_program(tmp_path / "nothing.pt2")
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip archive at all")
    with pytest.raises(QuantizationError, match=r"^bad\.pt2 is not a readable exported program \(.+\)$"):
        load_program(bad)


class _Planted:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")  # unpickling would create the marker file


@needs_torchao
def test_a_program_holding_other_objects_is_refused_not_run(resnet20_files, tmp_path):
    _, _, _, int8_path = resnet20_files
    marker = tmp_path / "ran"
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(int8_path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("sample_inputs/model.pt"):
                planted = tmp_path / "planted.pt"
                torch.save(_Planted(str(marker)), planted)
                data = planted.read_bytes()
            dst.writestr(item, data)
    with pytest.raises(QuantizationError, match=r"^tampered\.pt2 holds pickled objects other than tensors, so it is "
                                                r"refused: only tensors and plain data are read$"):
        load_program(tampered)
    assert not marker.exists()


def test_quantizing_needs_calibration_images_and_torchao(monkeypatch):
    model = build_model(TINY)
    with pytest.raises(QuantizationError, match="needs calibration images"):
        quantize_int8(model, [])
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer", None)
    with pytest.raises(QuantizationError, match=r"needs the torchao package: pip install 'resnet-viz\[quantize\]'"):
        quantize_int8(model, [torch.randn(2, 3, 32, 32)])


def test_cli_int8_without_torchao_says_so_in_one_line_and_writes_nothing(trained, tmp_path, capsys, monkeypatch):
    from resnet_viz.cli import main

    model, data = trained
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint_bytes(model, TINY, {"mean": list(data.mean), "std": list(data.std),
                                                          "classes": list(data.classes)}))
    for name in ("torchao", "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError, as if it were not installed
    out = tmp_path / "q"
    code = main(["quantize", str(checkpoint), "--data", "synthetic", "--limit-per-class", "10", "--mode", "int8",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    # one line: the progress bar draws and clears itself on it (carriage returns), then the sentence
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    last = captured.err.rsplit("\r", 1)[-1]
    assert last == "error: int8 quantization needs the torchao package: pip install 'resnet-viz[quantize]'\n"
    assert not out.exists()
