"""Low-bit networks as files and as schedules: b-bit codes packed into bytes (a layout checked by hand), a packed
file that round-trips bit for bit and computes exactly as the fine-tuned network did, hostile packed files
refused, a progressive schedule whose stages start from the last, and distillation's loss against its
definition."""

from __future__ import annotations

import json
import math

import pytest
import torch

from resnet_viz import ResNetConfig
from resnet_viz.errors import CheckpointError, ConfigError
from resnet_viz.quantization.lsq import bake_learned, layer_bits, prepare_learned, strip_learned
from resnet_viz.quantization.packed import (
    open_quantized,
    pack_codes,
    packed_bytes,
    quantized_description,
    read_packed,
    unpack_codes,
    weight_sizes,
)
from resnet_viz.training import checkpoint_bytes

TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))


def test_codes_are_packed_lowest_bit_first_as_worked_out_by_hand():
    assert pack_codes(torch.tensor([1, 2, 3, 4]), 4).tolist() == [0x21, 0x43]  # two 4-bit codes a byte
    assert pack_codes(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]  # four 2-bit codes a byte
    # 3-bit codes straddle bytes: 7 = 111, 1 = 100, 5 = 101 (lowest bit first) -> 11110010 1(0000000)
    assert pack_codes(torch.tensor([7, 1, 5]), 3).tolist() == [0b01001111, 0b00000001]
    assert pack_codes(torch.tensor([200, 3]), 8).tolist() == [200, 3]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 7, 8])
def test_unpacking_gives_back_every_code(bits):
    generator = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (1001,), generator=generator)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, 1001), codes)


def _tuned(bits: int = 3):
    """TINY prepared at ``bits`` (first conv and fc at 8), its steps initialised on a batch, then baked."""
    from resnet_viz.model import build_model

    torch.manual_seed(0)
    model = build_model(TINY).eval()
    prepared = prepare_learned(model, layer_bits(model, bits)).eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        prepared(x)
        expected = prepared(x)
    baked, quantization = bake_learned(prepared)
    meta = {"mean": [0.5] * 3, "std": [0.25] * 3, "classes": [str(i) for i in range(10)],
            "quantization": quantization}
    return prepared, baked, meta, x, expected


def test_a_packed_file_round_trips_bit_for_bit_and_computes_as_the_fine_tuned_network(tmp_path):
    prepared, baked, meta, x, expected = _tuned(3)
    data = packed_bytes(baked, TINY, meta)
    (tmp_path / "n.rvq").write_bytes(data)
    model, config, read_meta = read_packed(tmp_path / "n.rvq")
    layers = read_meta["quantization"]["layers"]
    assert config == TINY and layers.keys() == meta["quantization"]["layers"].keys()
    for name, layer in meta["quantization"]["layers"].items():  # bits, steps and input kinds, exactly
        assert {k: v for k, v in layers[name].items() if k != "shape"} == layer
    assert packed_bytes(model, config, read_meta) == data  # written again, the same bytes
    with torch.no_grad():
        assert torch.equal(model(x), expected)  # the same logits as the network with its quantizers
    for name, layer in meta["quantization"]["layers"].items():  # the weights themselves, bit for bit
        assert torch.equal(dict(model.named_modules())[name].weight, dict(baked.named_modules())[name].weight)
        assert len(torch.unique(dict(model.named_modules())[name].weight[0])) <= 2 ** layer["bits"]
    assert quantized_description(read_meta) == "as quantized: 3-bit weights and inputs; conv1 8-bit, fc 8-bit"


def test_a_checkpoint_of_a_learned_fine_tune_opens_computing_as_quantized(tmp_path):
    prepared, baked, meta, x, expected = _tuned(4)
    (tmp_path / "n.pt").write_bytes(checkpoint_bytes(baked, TINY, meta))
    model, _, _ = open_quantized(tmp_path / "n.pt")
    with torch.no_grad():
        assert torch.equal(model(x), expected)
        assert not torch.equal(baked(x), expected)  # without its input rounding it would not


def test_packed_sizes_are_a_bit_width_of_float32_plus_the_steps():
    _, baked, meta, _, _ = _tuned(4)
    layers = meta["quantization"]["layers"]
    sizes = weight_sizes(baked, layers)
    modules = dict(baked.named_modules())
    expected = sum(math.ceil(modules[n].weight.numel() * layer["bits"] / 8) + 4 * modules[n].weight.shape[0]
                   for n, layer in layers.items())
    floats = sum(4 * modules[n].weight.numel() for n in layers)
    assert sizes["packed"] == expected and sizes["float32"] == floats
    assert sizes["packed"] < sizes["int8"] < sizes["float32"]


def _rewrite(path, data: bytes, change) -> None:
    """The packed file ``data`` with its tensors and header passed through ``change``, written to ``path``."""
    from safetensors.torch import load, save

    tensors = load(data)
    from safetensors import safe_open

    (path.parent / "src.rvq").write_bytes(data)
    with safe_open(str(path.parent / "src.rvq"), framework="pt") as handle:
        header = json.loads(handle.metadata()["resnet-viz"])
    change(tensors, header)
    path.write_bytes(save(tensors, metadata={"resnet-viz": json.dumps(header)}))


@pytest.mark.parametrize("change, message", [
    (lambda t, h: h.update(format="something else"), "not a resnet-viz packed file"),
    (lambda t, h: t.update({"layer1.0.conv1.weight.codes": t["layer1.0.conv1.weight.codes"][:-1]}),
     "bytes of codes"),
    (lambda t, h: t.update({"layer1.0.conv1.weight.step": -t["layer1.0.conv1.weight.step"]}), "positive steps"),
    (lambda t, h: h["layers"]["layer1.0.conv1"].update(shape=[8, 8, 1, 1]), "does not match its network"),
    (lambda t, h: h["layers"]["layer1.0.conv1"].update(bits=1), "not a 2- to 8-bit layer"),
    (lambda t, h: t.pop("layer1.0.bn1.weight"), "does not match its own config"),
    (lambda t, h: h.update(config={"name": "x", "widths": [-1]}), "broken header"),
])
def test_a_hostile_or_broken_packed_file_gets_one_sentence(tmp_path, change, message):
    _, baked, meta, _, _ = _tuned(4)
    _rewrite(tmp_path / "bad.rvq", packed_bytes(baked, TINY, meta), change)
    with pytest.raises(CheckpointError, match=message):
        read_packed(tmp_path / "bad.rvq")


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    (tmp_path / "junk.rvq").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable packed file"):
        open_quantized(tmp_path / "junk.rvq")


def test_only_a_learned_step_network_can_be_packed():
    from resnet_viz.model import build_model

    with pytest.raises(ConfigError, match="learned steps"):
        packed_bytes(build_model(TINY), TINY, {"quantization": "4-bit weights on their grids after QAT"})


def test_strip_gives_the_float_weights_a_stage_trained_and_leaves_the_network_whole():
    prepared, baked, _, x, expected = _tuned(2)
    stripped = strip_learned(prepared)
    conv = prepared.layer1[0].conv1
    assert torch.equal(stripped.layer1[0].conv1.weight, conv.parametrizations.weight.original)
    assert set(stripped.state_dict()) == set(baked.state_dict())
    with torch.no_grad():
        assert torch.equal(prepared(x), expected)  # the prepared network still computes as before


def test_a_progressive_schedule_runs_its_stages_in_order_each_from_the_last(trained):
    from resnet_viz.quantization.fake import calibration_batches
    from resnet_viz.quantization.qat import calibrate_learned, progressive_finetune
    from resnet_viz.training import accuracy

    model, data = trained
    seen = []
    stages = progressive_finetune(model, TINY, data, torch.device("cpu"), [(8, 1), (4, 1), (2, 1)],
                                  on_stage=lambda i, r: seen.append(i), batch_size=32)
    assert seen == [0, 1, 2] and [s["bits"] for s in stages] == [8, 4, 2]
    assert all(s["distilled"] for s in stages) and stages[0]["float32"] == accuracy(model, data, torch.device("cpu"))
    assert stages[2]["layer_bits"]["layer1.0.conv1"] == 2 and stages[2]["layer_bits"]["fc"] == 8
    # the 2-bit stage started from the 4-bit stage's weights on their grids: its "before" is theirs, at 2 bits
    start = prepare_learned(bake_learned(stages[1]["model"])[0], stages[2]["layer_bits"])
    calibrate_learned(start, calibration_batches(data, torch.device("cpu"), images=256))
    assert stages[2]["before"] == accuracy(start, data, torch.device("cpu"))


def test_a_schedule_can_go_on_from_a_saved_stage_learning_from_the_float_network(trained, monkeypatch):
    from resnet_viz.model import build_model
    from resnet_viz.quantization import qat

    model, data = trained
    stage4 = build_model(TINY)
    calls = []

    def fake_finetune(current, config, data, device, bits, epochs, teacher, float32, **options):
        calls.append((current, teacher, float32))
        return {"bits": bits, "model": prepare_learned(current, layer_bits(current, bits))}

    monkeypatch.setattr(qat, "learned_finetune", fake_finetune)
    qat.progressive_finetune(model, TINY, data, torch.device("cpu"), [(3, 1), (2, 1)], float32=0.5, start=stage4)
    (first, teacher, base), (second, *_) = calls
    assert first is stage4 and base == 0.5  # the first stage starts from the saved stage, measured against float32
    assert teacher is not model and all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(),
                                                                           model.state_dict().values()))
    assert second is not stage4 and calls[1][1] is teacher  # the next one from the first's, with the same teacher


def test_distillation_is_half_the_label_loss_and_half_kl_from_the_teacher():
    from resnet_viz.training.loop import distillation_loss

    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 3)
    x, out = torch.randn(8, 5), torch.randn(8, 3)
    with torch.no_grad():
        p = teacher(x).softmax(1)
    kl = (p * (p.log() - out.log_softmax(1))).sum(1).mean()
    torch.testing.assert_close(distillation_loss(torch.tensor(2.0), out, teacher, x), 0.5 * 2.0 + 0.5 * kl)
    with torch.no_grad():  # a student that predicts as the teacher does pays only half its label loss
        same = distillation_loss(torch.tensor(2.0), teacher(x), teacher, x)
    torch.testing.assert_close(same, torch.tensor(1.0))


@pytest.mark.parametrize("text, message", [("8:1,4", "not BITS:EPOCHS"), ("1:2", "bits run from 2 to 8"),
                                           ("4:0", "epochs from 1"), ("x:y", "not BITS:EPOCHS")])
def test_bad_schedules_get_one_sentence(text, message):
    from resnet_viz.quantization.qat import parse_schedule

    with pytest.raises(ConfigError, match=message):
        parse_schedule(text)


def test_a_schedule_reads_in_order():
    from resnet_viz.quantization.qat import parse_schedule

    assert parse_schedule("8:1, 4:4,3:3,2:4") == [(8, 1), (4, 4), (3, 3), (2, 4)]


def test_a_plan_by_layer_sets_each_layers_bits_and_levels(trained):
    from resnet_viz.quantization.fake import calibration_batches, fake_quantized_plan

    model, data = trained
    plan = layer_bits(model, 2, edge_bits=8, plan={"layer1.0.conv1": 6})
    assert plan["conv1"] == 8 and plan["layer1.0.conv1"] == 6 and plan["layer2.0.conv1"] == 2
    quantized = fake_quantized_plan(model, plan, calibration_batches(data, torch.device("cpu"), images=64))
    for name, bits in plan.items():
        weight = dict(quantized.named_modules())[name].weight
        assert max(len(torch.unique(w)) for w in weight) <= 2**bits
    with pytest.raises(ConfigError, match="no conv or linear layer named 'nope'"):
        layer_bits(model, 2, plan={"nope": 8})
