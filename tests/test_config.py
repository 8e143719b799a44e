import dataclasses
import json

import pytest
import torch

from resnet_viz import PRESETS, ConfigError, ResNetConfig, build_model, preset

CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"]
IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR_VARIANTS = ["cifar-resnet18", "cifar-resnet34", "cifar-resnet50"]
FAMILY = ["plain20", "plain32", "plain44", "plain56", "plain110", "preresnet20", "preresnet56", "preresnet110",
          "preresnet164", "wrn-16-8", "wrn-28-10", "wrn-40-4", "resnext50_32x4d", "resnext101_32x8d",
          "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


def test_preset_names_are_exactly_the_documented_ones():
    assert list(PRESETS) == CIFAR + IMAGENET + CIFAR_VARIANTS + FAMILY


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_presets_follow_the_papers_6n_plus_2_rule(name):
    cfg = preset(name)
    depth = int(name.removeprefix("resnet"))
    n = (depth - 2) // 6
    assert cfg.depth == depth
    assert (cfg.blocks, cfg.widths, cfg.strides) == ((n, n, n), (16, 32, 64), (1, 2, 2))
    assert (cfg.stem, cfg.block, cfg.shortcut, cfg.num_classes, cfg.input_shape) == (
        "cifar", "basic", "B", 10, (3, 32, 32))


@pytest.mark.parametrize("name", IMAGENET + CIFAR_VARIANTS)
def test_imagenet_style_presets(name):
    cfg = preset(name)
    assert cfg.depth == int(name.rsplit("resnet", 1)[1])
    assert cfg.widths == (64, 128, 256, 512) and cfg.strides == (1, 2, 2, 2)
    if name.startswith("cifar-"):
        assert (cfg.stem, cfg.num_classes, cfg.input_size) == ("cifar", 10, (32, 32))
    else:
        assert (cfg.stem, cfg.num_classes, cfg.input_size) == ("imagenet", 1000, (224, 224))


def test_preset_with_overrides_is_a_new_validated_config():
    base = preset("resnet20")
    cfg = preset("resnet20", shortcut="A", num_classes=100, widths=(32, 64, 128))
    assert (cfg.shortcut, cfg.num_classes, cfg.widths, cfg.blocks) == ("A", 100, (32, 64, 128), (3, 3, 3))
    assert base.shortcut == "B" and base.num_classes == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.shortcut = "C"


def test_input_size_accepts_one_side_and_lists_become_tuples():
    cfg = ResNetConfig(widths=[8, 16], blocks=[1, 1], strides=[1, 2], input_size=64)
    assert cfg.widths == (8, 16) and cfg.input_size == (64, 64)
    assert hash(cfg) == hash(ResNetConfig(widths=(8, 16), blocks=(1, 1), strides=(1, 2), input_size=(64, 64)))


@pytest.mark.parametrize("shortcut", ["A", "B", "C", "none"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_formula_matches_the_built_model(name, shortcut):
    cfg = preset(name, shortcut=shortcut)
    model = build_model(cfg, device="meta")
    assert cfg.num_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strides": (1, 0, 2)}, "stage 2: stride 0 — strides must be 1 or more"),
        ({"widths": (16, 32, -4)}, "stage 3: width -4 — widths must be 1 or more"),
        ({"blocks": (3, 0, 3)}, "stage 2: blocks 0 — block counts must be 1 or more"),
        ({"blocks": (3, 3)}, "one value per stage, got 3, 2 and 3 values"),
        ({"shortcut": "D"}, "shortcut 'D' is not one of A, B, C, none"),
        ({"block": "wide"}, "block 'wide' is not one of basic, bottleneck, preact, preact-bottleneck"),
        ({"widths": (16, 32.5, 64)}, "whole number"),
        ({"widths": "16,32,64"}, "widths must be a list of whole numbers"),
        ({"num_classes": 0}, "num_classes 0 — the number of classes must be 1 or more"),
        ({"num_classes": True}, "num_classes must be a whole number"),
        ({"input_size": (32, 32, 3)}, "input_size is height and width"),
        ({"widths": (64, 32, 16), "shortcut": "A"}, "layer2.0: shortcut A can only pad channels (64 → 32)"),
    ],
)
def test_invalid_values_raise_one_error_type_with_an_actionable_sentence(overrides, message):
    with pytest.raises(ConfigError) as info:
        preset("resnet20", **overrides)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"blocks": (3, 3, 100_000)}, "stage 3: blocks 100,000 — block counts are limited to 512"),
        ({"widths": (16, 32, 100_000)}, "widths are limited to 8,192"),
        ({"input_size": (100_000, 32)}, "input sides are limited to 4,096"),
        ({"widths": (8192, 8192, 8192), "blocks": (8, 8, 8)}, "over the limit of 1,000,000,000"),
        ({"num_classes": 10**9}, "the number of classes are limited to 100,000"),
    ],
)
def test_absurd_sizes_are_refused_with_the_limit_named(overrides, message):
    with pytest.raises(ConfigError) as info:
        preset("resnet20", **overrides)
    assert message in str(info.value)


def test_a_feature_map_that_shrinks_to_nothing_names_the_layer():
    with pytest.raises(ConfigError) as info:
        preset("resnet20", input_size=(2, 2))
    assert str(info.value) == (
        "input 2×2 is too small: the feature map is 1×1 when layer3.0 (stride 2) downsamples it "
        "— use an input of at least 3×3, or smaller strides"
    )
    with pytest.raises(ConfigError, match="when layer4.0 .stride 2.*at least 17×17"):
        preset("resnet18", input_size=16)
    with pytest.raises(ConfigError, match="when conv1 .stride 2"):
        preset("resnet18", input_size=1)
    # the smallest size it names is accepted
    assert preset("resnet18", input_size=17).input_size == (17, 17)


def test_errors_come_before_any_tensor_exists(monkeypatch):
    def no_tensors(*args, **kwargs):
        raise AssertionError("a tensor was created")

    monkeypatch.setattr(torch, "empty", no_tensors)
    with pytest.raises(ConfigError):
        preset("resnet20", strides=(1, 0, 2))


def test_unknown_preset_and_unknown_field():
    with pytest.raises(ConfigError, match="unknown preset 'resnet21' — choose one of resnet20, "):
        preset("resnet21")
    with pytest.raises(ConfigError, match="unknown config field 'widht'"):
        preset("resnet20", widht=(1, 2, 3))
    with pytest.raises(ConfigError, match="unknown config field 'depth'"):
        ResNetConfig.from_dict({"depth": 20})


@pytest.mark.parametrize("name", list(PRESETS))
def test_json_round_trip(name):
    cfg = preset(name, shortcut="C")
    assert ResNetConfig.from_json(cfg.to_json()) == cfg
    assert ResNetConfig.from_dict({"config": cfg.to_dict(), "totals": {}}) == cfg  # a summary JSON


def test_loading_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ResNetConfig.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"widths": [16, 32')
    with pytest.raises(ConfigError, match="not valid JSON"):
        ResNetConfig.load(bad)
    bad.write_text("[1, 2, 3]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        ResNetConfig.load(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read config file"):
        ResNetConfig.load(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"widths": [8, 16], "blocks": [1, 2], "strides": [1, 2], "name": "tiny"}))
    cfg = ResNetConfig.load(good)
    assert (cfg.name, cfg.widths, cfg.blocks, cfg.depth) == ("tiny", (8, 16), (1, 2), 8)


def test_block_specs_project_only_where_the_shape_changes():
    specs = list(preset("resnet20").block_specs())
    assert [s.shortcut for s in specs] == ["identity"] * 3 + ["projection", "identity", "identity"] * 2
    assert [s.out_size for s in specs] == [(32, 32)] * 3 + [(16, 16)] * 3 + [(8, 8)] * 3
    a = [s.shortcut for s in preset("resnet20", shortcut="A").block_specs()]
    assert a == ["identity"] * 3 + ["pad", "identity", "identity"] * 2
    assert {s.shortcut for s in preset("resnet20", shortcut="C").block_specs()} == {"projection"}
    # a bottleneck's first block changes channels (64 -> 256) without striding: B projects it
    first = next(preset("resnet50").block_specs())
    assert (first.in_channels, first.out_channels, first.stride, first.shortcut) == (64, 256, 1, "projection")
