"""The ResNet family: plain networks, pre-activation blocks, Wide ResNets and ResNeXt, checked against the papers'
definitions, torchvision's models and counts derived here by hand."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_viz import ConfigError, ResNetConfig, build_model, preset, trace
from resnet_viz.model import BasicBlock, PreActBlock, PreActBottleneck

GROUPED = ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


# -- the exact figures, derived here -----------------------------------------------------------------

def _plain_cifar_counts(n: int) -> tuple[int, int]:
    """Parameters and MACs of the 6n+2 plain CIFAR net, layer by layer from the paper's description: a 3×3 stem
    of 16, three stages of 2n 3×3 convs (16, 32, 64 channels on 32², 16², 8² maps), BN after each conv, fc 64→10."""
    params = 3 * 16 * 9 + 2 * 16
    macs = 32 * 32 * 16 * 3 * 9
    c_in = 16
    for width, side in ((16, 32), (32, 16), (64, 8)):
        for _ in range(2 * n):
            params += c_in * width * 9 + 2 * width
            macs += side * side * width * c_in * 9
            c_in = width
    return params + 64 * 10 + 10, macs + 64 * 10


def test_plain20_exact_figures():
    assert _plain_cifar_counts(3) == (269_722, 40_551_040)
    t = trace(preset("plain20"))
    assert (t.totals.params, t.totals.macs) == (269_722, 40_551_040)
    # the ResNet-20 option-A network minus its skips: the same weights, the same MACs
    a = trace(preset("resnet20", shortcut="A")).totals
    assert (a.params, a.macs) == (t.totals.params, t.totals.macs)


@pytest.mark.parametrize("depth", [32, 44, 56, 110])
def test_plain_presets_are_the_cifar_series_without_skips(depth):
    cfg = preset(f"plain{depth}")
    assert (cfg.depth, cfg.shortcut, cfg.widths, cfg.block) == (depth, "none", (16, 32, 64), "basic")
    t = trace(cfg)
    assert (t.totals.params, t.totals.macs) == _plain_cifar_counts((depth - 2) // 6)
    assert not [x for x in t.layers if x.type == "add"]


@pytest.mark.parametrize(("name", "params"), [("resnext50_32x4d", 25_028_904), ("wide_resnet50_2", 68_883_240)])
def test_torchvisions_parameter_counts(name, params):
    reference = getattr(torchvision.models, name)()
    assert sum(p.numel() for p in reference.parameters()) == params
    assert preset(name).num_params() == trace(preset(name)).totals.params == params


def _wide_resnet_params(depth: int, k: int, classes: int = 10) -> int:
    """WRN-d-k from the Wide ResNet paper's Table 1: a 3×3 stem of 16, three groups of (d-4)/6 pre-activation
    blocks of widths 16k, 32k, 64k, a 1×1 projection where the width changes, BN-ReLU, fc."""
    n = (depth - 4) // 6
    params, c_in = 3 * 16 * 9, 16
    for width in (16 * k, 32 * k, 64 * k):
        for i in range(n):
            params += 2 * c_in + 9 * c_in * width + 2 * width + 9 * width * width
            params += c_in * width if i == 0 else 0
            c_in = width
    return params + 2 * c_in + c_in * classes + classes


def _preact_bottleneck_params(n: int, classes: int = 10) -> int:
    """The pre-activation paper's ResNet-164: three stages of n bottlenecks (16/32/64 wide, ×4 out), BN before each
    conv, a 1×1 projection (no BN) opening each stage, BN-ReLU at the end."""
    params, c_in = 3 * 16 * 9, 16
    for width in (16, 32, 64):
        for i in range(n):
            out = 4 * width
            params += 2 * c_in + c_in * width + 2 * width + 9 * width * width + 2 * width + width * out
            params += c_in * out if i == 0 else 0
            c_in = out
    return params + 2 * c_in + c_in * classes + classes


def test_wide_and_preactivation_parameter_counts_match_the_papers():
    wrn = preset("wrn-28-10")
    assert wrn.num_params() == trace(wrn).totals.params == _wide_resnet_params(28, 10)
    assert round(wrn.num_params() / 1e6, 1) == 36.5  # the Wide ResNet paper's Table 2
    for name in ("wrn-16-8", "wrn-40-4"):
        d, k = (int(v) for v in name.split("-")[1:])
        assert preset(name).num_params() == _wide_resnet_params(d, k)
    pre = preset("preresnet164")
    assert pre.num_params() == trace(pre).totals.params == _preact_bottleneck_params(18)
    assert round(pre.num_params() / 1e6, 1) == 1.7  # the pre-activation paper's Table 2
    assert (pre.depth, preset("preresnet110").depth, wrn.blocks) == (164, 110, (4, 4, 4))
    assert [preset(name).depth for name in ("wrn-16-8", "wrn-28-10", "wrn-40-4")] == [16, 28, 40]


@pytest.mark.parametrize("name", GROUPED)
def test_grouped_and_wide_presets_load_into_torchvision_and_agree(name):
    torch.manual_seed(0)
    ours = build_model(preset(name)).eval()
    reference = getattr(torchvision.models, name)().eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.randn(1, 3, 64, 64)  # fully convolutional: a small input checks the same arithmetic, faster
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), rtol=1e-4, atol=1e-5)
    conv = ours.layer1[0].conv2
    assert (conv.groups, conv.in_channels) == (reference.layer1[0].conv2.groups, reference.layer1[0].conv2.in_channels)


# -- the blocks, against the papers' definitions written out with functional ops ------------------------------

def _bn(x, bn: nn.BatchNorm2d):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomise(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


def test_a_plain_block_is_the_residual_block_without_its_skip():
    model = _randomise(build_model(preset("plain20")))
    block = model.layer2[0]
    assert isinstance(block, BasicBlock) and block.downsample is None
    x = torch.randn(2, 16, 32, 32)
    expected = F.relu(_bn(block.conv2(F.relu(_bn(block.conv1(x), block.bn1))), block.bn2))
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)
    assert set(model.state_dict()) == set(build_model(preset("resnet20", shortcut="A")).state_dict())


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_a_preactivation_block_follows_he_2016b(shortcut):
    model = _randomise(build_model(preset("preresnet20", shortcut=shortcut)))
    block = model.layer2[0]
    assert isinstance(block, PreActBlock)
    x = torch.randn(2, 16, 32, 32)
    pre = F.relu(_bn(x, block.bn1))
    branch = block.conv2(F.relu(_bn(block.conv1(pre), block.bn2)))
    if shortcut == "B":  # a 1×1 conv with no BN, on the pre-activated input
        assert [type(m) for m in block.downsample] == [nn.Conv2d]
        skip = block.downsample[0](pre)
    else:  # zero-pad the input itself
        skip = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16))
    with torch.no_grad():
        out = block(x)
        assert torch.allclose(out, branch + skip, atol=1e-5)
    assert (out < 0).any()  # no ReLU after the addition


def test_a_preactivation_network_has_a_bare_stem_and_closes_with_bn_relu():
    model = _randomise(build_model(preset("preresnet20")))
    assert model.bn1 is None and isinstance(model.final_bn, nn.BatchNorm2d)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.layer3(model.layer2(model.layer1(model.conv1(x))))
        expected = model.fc(F.relu(_bn(features, model.final_bn)).mean((2, 3)))
        assert torch.allclose(model(x), expected, atol=1e-4)
    names = [x.name for x in trace(preset("preresnet20")).layers if x.depth == 1]
    assert names == ["conv1", "layer1", "layer2", "layer3", "final_bn", "relu", "avgpool", "flatten", "fc"]


def test_a_preactivation_bottleneck_follows_he_2016b():
    model = _randomise(build_model(preset("preresnet164")))
    block = model.layer2[0]
    assert isinstance(block, PreActBottleneck) and (block.conv1.in_channels, block.conv3.out_channels) == (64, 128)
    x = torch.randn(2, 64, 32, 32)
    pre = F.relu(_bn(x, block.bn1))
    out = F.relu(_bn(block.conv1(pre), block.bn2))
    out = block.conv3(F.relu(_bn(block.conv2(out), block.bn3)))
    with torch.no_grad():
        assert torch.allclose(block(x), out + block.downsample[0](pre), atol=1e-4)
    assert block.conv2.stride == (2, 2)


def test_dropout_sits_between_the_two_convs_and_only_when_asked():
    assert not [m for m in build_model(preset("wrn-16-8"), device="meta").modules() if isinstance(m, nn.Dropout)]
    cfg = preset("wrn-16-8", dropout=0.3, widths=(16, 32, 64))
    assert "dropout 0.3" in cfg.describe()
    rows = [x for x in trace(cfg).layers if x.parent == "layer1.0"]
    order = [x.name.rsplit(".", 1)[1] for x in rows if x.kind == "module"]
    assert order.index("conv1") < order.index("dropout") < order.index("conv2")
    model = build_model(cfg)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))  # off in eval mode
        model.train()
        assert not torch.equal(model(x), model(x))  # on in training


# -- the tracer follows every member of the family -------------------------------------------------------------

@pytest.mark.parametrize("name", ["plain20", "preresnet20", "preresnet164", "wrn-16-8", "resnext50_32x4d"])
def test_the_family_traces_exactly(name):
    cfg = preset(name)
    size = (3, 64, 64) if cfg.stem == "imagenet" else cfg.input_shape
    model = build_model(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *size))
    t = trace(model, input_size=size)
    assert t.totals.macs == counter.get_total_flops() // 2
    assert t.totals.params == sum(p.numel() for p in model.parameters()) == cfg.num_params()


def test_a_grouped_conv_counts_its_groups():
    t = trace(preset("resnext50_32x4d"))
    conv = t["layer1.0.conv2"]  # 3×3, 128 -> 128 in 32 groups, on 56×56
    assert conv.macs == 56 * 56 * 128 * (128 // 32) * 9
    assert conv.params == 128 * 4 * 9


# -- the new fields are validated like every other ---------------------------------------------------------

@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"groups": 32}, "groups and width per group shape a bottleneck's 3×3 conv — use block bottleneck"),
        ({"block": "bottleneck", "groups": 0}, "groups 0 — groups must be 1 or more"),
        ({"block": "bottleneck", "width_per_group": 2}, "stage 1: width 16 × width per group 2 / 64 leaves less "
                                                         "than one channel per group — use a width per group of "
                                                         "at least 4"),
        ({"block": "bottleneck", "groups": 1.5}, "groups must be a whole number"),
        ({"dropout": 1.0}, "dropout 1 — it must be from 0 (none) to 0.99"),
        ({"dropout": -0.1}, "dropout -0.1 — it must be from 0 (none) to 0.99"),
        ({"dropout": True}, "dropout must be a number from 0 to 0.99"),
        ({"dropout": float("nan")}, "dropout must be a number"),
        ({"dropout": "0.3"}, "dropout must be a number"),
        ({"shortcut": "None"}, "shortcut 'None' is not one of A, B, C, none"),
    ],
)
def test_new_fields_are_refused_with_a_sentence(overrides, message):
    with pytest.raises(ConfigError) as info:
        preset("resnet20", **overrides)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["plain56", "preresnet164", "wrn-28-10", "resnext101_64x4d", "wide_resnet50_2"])
def test_links_and_json_keep_the_new_fields(name):
    cfg = preset(name, dropout=0.25)
    assert ResNetConfig.from_query(cfg.to_query()) == cfg
    assert ResNetConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="the link's dropout is malformed .dropout=lots.: it takes a number"):
        ResNetConfig.from_query({**cfg.to_query(), "dropout": "lots"})


def test_family_names():
    assert [preset(n).family for n in ("resnet20", "plain20", "preresnet56", "wrn-28-10", "resnext50_32x4d",
                                       "wide_resnet50_2")] == [
        "ResNet", "plain network", "pre-activation ResNet", "Wide ResNet", "ResNeXt", "Wide ResNet"]


# -- everything downstream: diagrams, the walk-through, the studies, the command line ----------------------

def _edges(dot: str) -> list[str]:
    return [line.strip() for line in dot.splitlines() if "->" in line]


def test_a_plain_block_diagram_has_no_skip_and_no_addition():
    from resnet_viz.views.diagram import SKIP_COLOUR, block_diagram

    t = trace(preset("plain20"))
    for level in ("block", "layer"):
        dot = block_diagram(t, level).source
        assert 'label="+"' not in dot and SKIP_COLOUR not in dot and "skip connection" not in dot
    assert "layer1.0 – layer1.2  ×3" in block_diagram(t, "block").source  # plain blocks still fold
    assert "3 × plain basic block, 32 ch, /2" in block_diagram(t, "stage").source


def test_a_preactivation_block_diagram_puts_bn_relu_before_each_conv_and_the_addition_last():
    from resnet_viz.views.diagram import SKIP_COLOUR, block_diagram

    dot = block_diagram(trace(preset("preresnet20")), "block").source
    edges = _edges(dot)
    chain = ["bn1", "relu", "conv1", "bn2", "relu#2", "conv2", "add"]
    for a, b in zip(chain, chain[1:]):
        assert any(e.startswith(f'"layer2.0.{a}" -> "layer2.0.{b}"') for e in edges), (a, b)
    skip = next(e for e in edges if e.startswith('"layer2.0.relu" -> "layer2.0.add"'))
    assert 'label="1×1 conv, 32, /2"' in skip and SKIP_COLOUR in skip  # the projection of the pre-activated input
    assert any(e.startswith('"layer2.0.add" -> "layer2.1.bn1"') for e in edges)  # nothing after the addition
    assert "3 × pre-activation block, 64 ch, /2" in block_diagram(trace(preset("preresnet20")), "stage").source


def test_grouped_convs_are_labelled_with_their_groups():
    from resnet_viz.views.diagram import block_diagram
    from resnet_viz.views.structure import layer_label

    t = trace(preset("resnext50_32x4d"))
    assert layer_label(t["layer1.0.conv2"]) == "conv 3×3, 128, g=32"
    assert layer_label(t["layer2.0.conv2"]) == "conv 3×3, 256, g=32, /2"
    assert layer_label(t["layer1.0.conv1"]) == "conv 1×1, 128"
    assert 'label="conv 3×3, 128, g=32"' in block_diagram(t, "block").source
    assert layer_label(trace(preset("wide_resnet50_2"))["layer1.0.conv2"]) == "conv 3×3, 128"


def test_the_walkthrough_speaks_of_each_block_kind():
    from resnet_viz.views.walkthrough import walkthrough

    plain = {s.title: s.text for s in walkthrough(trace(preset("plain20")))}
    assert "3 plain basic blocks: conv 3×3, 16 → BN → ReLU → conv 3×3, 16 → BN → ReLU, with no skip" in plain[
        "Stage 1 (layer1)"]
    assert "skip" not in plain["Stage 2 (layer2)"].split("with no skip")[1]
    pre = {s.title: s.text for s in walkthrough(trace(preset("preresnet20")))}
    assert pre["Stage 2 (layer2)"].startswith("3 pre-activation blocks: BN → ReLU → conv 3×3, 32 → BN → ReLU → "
                                              "conv 3×3, 32, then the skip is added, with no ReLU after the addition")
    assert "a point-wise projection (1×1 conv, 32, /2)" in pre["Stage 2 (layer2)"]
    assert pre["Pooling and fully-connected layer"].startswith("BN → ReLU normalise and activate")
    assert pre["Initial convolution (stem)"] == "conv 3×3 with 16 output channels, stride 1, pad 1."


def test_residual_vs_plain_study():
    from resnet_viz.views import compare

    result = compare.residual_vs_plain("resnet56")
    assert list(result.totals["name"]) == ["resnet56", "plain56"]
    assert result.totals["params_delta"].iloc[1] == preset("plain56").num_params() - preset("resnet56").num_params()
    assert compare.residual_pair(preset("plain20"))[0] == preset("resnet20", shortcut="A")
    series = compare.plain_depth_study("A")
    assert list(series["plain"]) == list(compare.PLAIN_DEPTHS)
    assert (series["params"] == series["residual_params"]).all() and (series["macs"] == series["residual_macs"]).all()
    # the skips add one addition per element of each block's output: 9 blocks of plain20
    per_block = [32 * 32 * 16] * 3 + [16 * 16 * 32] * 3 + [8 * 8 * 64] * 3
    assert series["skip_additions"].iloc[0] == sum(per_block)


def test_the_command_line_takes_the_family(tmp_path, capsys):
    from resnet_viz.cli import main

    assert main(["presets"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("plain110", "preresnet164", "wrn-28-10", "resnext101_64x4d"))
    assert main(["summary", "wrn-16-8", "--dropout", "0.3"]) == 0
    assert "dropout 0.3" in capsys.readouterr().out
    out = tmp_path / "residual.csv"
    assert main(["export", "--what", "compare", "--study", "residual", "-o", str(out)]) == 0
    assert out.read_text().splitlines()[1].startswith("plain20,resnet20,20,269722,269722,")
    assert main(["export", "resnext50_32x4d", "--what", "diagram", "--level", "stage",
                 "-o", str(tmp_path / "r.dot")]) == 0
    assert "bottleneck block" in (tmp_path / "r.dot").read_text()


@pytest.mark.parametrize("config", [preset("preresnet20"), preset("preresnet164", blocks=(2, 2, 2)),
                                    preset("plain20")], ids=["preact", "preact-bottleneck", "plain"])
def test_batch_norm_folding_for_int8_keeps_the_outputs(config):
    from resnet_viz.quantization.int8 import fold_batch_norm, folded_batch_norms

    model = _randomise(build_model(config))
    pairs = folded_batch_norms(model)
    if config.preact:  # a BN before its conv cannot fold into it: only those right after a conv do
        assert ("layer1.0.conv1", "layer1.0.bn2") in pairs and not any(bn.endswith(".bn1") for _, bn in pairs)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, folded = model(x), fold_batch_norm(model)(x)
    assert torch.allclose(folded, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
