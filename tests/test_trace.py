import pytest
import torch
import torchinfo
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from resnet_viz import PRESETS, ConfigError, build_model, preset, trace

# -- the exact figures -------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "overrides", "params", "macs"),
    [
        ("resnet20", {"shortcut": "B"}, 272_474, 40_813_184),
        ("resnet20", {"shortcut": "A"}, 269_722, 40_551_040),
        ("resnet18", {}, 11_689_512, 1_814_073_344),
        ("resnet50", {}, 25_557_032, 4_089_184_256),
    ],
)
def test_exact_parameter_and_mac_counts(name, overrides, params, macs):
    totals = trace(preset(name, **overrides)).totals
    assert (totals.params, totals.macs, totals.flops) == (params, macs, 2 * macs)


def test_the_seeds_resnet20_shapes_read_from_hooks():
    t = trace(preset("resnet20"))
    expected = {
        "relu": (1, 16, 32, 32),  # after the stem
        "layer1": (1, 16, 32, 32),
        "layer2": (1, 32, 16, 16),
        "layer3": (1, 64, 8, 8),
        "avgpool": (1, 64, 1, 1),
        "fc": (1, 10),
    }
    assert {name: t[name].output_shape for name in expected} == expected
    assert t[""].input_shapes == [(1, 3, 32, 32)]
    # the stride-2 3x3 conv and the 1x1 stride-2 projection that open stage 2
    conv, proj = t["layer2.0.conv1"], t["layer2.0.downsample.0"]
    assert (conv.kernel, conv.stride, conv.padding, conv.output_shape) == ((3, 3), (2, 2), (1, 1), (1, 32, 16, 16))
    assert (proj.kernel, proj.stride, proj.padding, proj.output_shape) == ((1, 1), (2, 2), (0, 0), (1, 32, 16, 16))


# -- every preset against independent references -----------------------------------------

def _record_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Output shapes of every module call ("relu#2" is a module's second call), from plain forward hooks."""
    shapes = {}
    for name, module in model.named_modules():
        def hook(m, inputs, output, name=name):
            key = name if name not in shapes else f"{name}#{sum(k.split('#')[0] == name for k in shapes) + 1}"
            shapes[key] = tuple(output.shape)
        module.register_forward_hook(hook)
    return shapes


def _remove_hooks(model: nn.Module) -> None:
    for m in model.modules():
        m._forward_hooks.clear()


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_against_a_real_forward_flopcounter_and_torchinfo(name):
    cfg = preset(name)
    model = build_model(cfg).eval()
    batch = 2
    real_shapes = _record_shapes(model)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, *cfg.input_shape))
    _remove_hooks(model)
    t = trace(model, batch_size=batch)
    assert t.totals.macs == counter.get_total_flops() // 2
    assert t.totals.flops == counter.get_total_flops()
    traced = {layer.name: layer.output_shape for layer in t.layers if layer.kind == "module"}
    assert traced == real_shapes  # every module, read from hooks on the real forward
    info = torchinfo.summary(model, input_size=(1, *cfg.input_shape), verbose=0, device="cpu")
    assert t.totals.params == info.total_params == cfg.num_params()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet152"])
def test_tracing_torchvisions_model_gives_the_same_table(name):
    ours = trace(preset(name))
    theirs = trace(getattr(torchvision.models, name)(), input_size=(3, 224, 224))
    key = lambda layer: (layer.name, layer.output_shape, layer.params, layer.macs, layer.all_ops)  # noqa: E731
    assert [key(x) for x in theirs.layers] == [key(x) for x in ours.layers]
    assert theirs.totals == ours.totals


# -- the tracer leaves the model alone and computes nothing --------------------------------

def test_trace_never_moves_or_changes_the_callers_model():
    model = build_model(preset("resnet20", shortcut="A"))
    model.train()
    model.layer2.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pointers = {k: v.data_ptr() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    trace(model, batch_size=4)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].data_ptr() == pointers[k] for k in before)
    assert all(p.device.type == "cpu" for p in model.parameters())


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append((func, out.device.type if isinstance(out, torch.Tensor) else None))
        return out


def test_no_kernel_runs_and_no_activation_is_allocated():
    model = build_model(preset("resnet50"))
    with _Recorder() as rec:
        trace(model, batch_size=64)
    assert rec.ops == []
    # option A's subsample-and-pad has no shape rule: it runs on the meta device, never on real memory
    model = build_model(preset("resnet20", shortcut="A"))
    with _Recorder() as rec:
        trace(model, batch_size=64)
    assert rec.ops and {device for _, device in rec.ops} == {"meta"}


def test_batch_size_scales_counts_but_not_the_layer_list():
    one, many = trace(preset("resnet56")), trace(preset("resnet56"), batch_size=64)
    assert [x.name for x in one.layers] == [x.name for x in many.layers]
    assert all(b.output_shape == (64, *a.output_shape[1:]) for a, b in zip(one.layers, many.layers))
    assert many.totals.macs == 64 * one.totals.macs
    assert many.totals.macs_per_image == one.totals.macs
    assert many.totals.activation_bytes == 64 * one.totals.activation_bytes
    assert many.totals.params == one.totals.params


def test_resolution_scales_conv_macs():
    small = trace(preset("resnet20"))
    large = trace(preset("resnet20", input_size=(64, 64)))
    convs = lambda t: sum(x.macs for x in t.layers if x.type == "Conv2d")  # noqa: E731
    assert convs(large) == 4 * convs(small)
    assert large["fc"].macs == small["fc"].macs


# -- what the trace shows -------------------------------------------------------------------

def test_every_residual_addition_is_a_row_inside_its_block():
    t = trace(preset("resnet20"))
    adds = [x for x in t.layers if x.type == "add"]
    assert [x.name for x in adds] == [f"layer{s}.{b}.add" for s in (1, 2, 3) for b in range(3)]
    for add in adds:
        main, skip = add.input_shapes
        assert main == skip == add.output_shape
        assert t[add.parent].type == "BasicBlock" and add.depth == t[add.parent].depth + 1
    # in each block the add comes after the main path and the projection, before the last ReLU
    names = [x.name for x in t.layers if x.parent == "layer2.0"]
    assert names == ["layer2.0.conv1", "layer2.0.bn1", "layer2.0.relu", "layer2.0.conv2", "layer2.0.bn2",
                     "layer2.0.downsample", "layer2.0.add", "layer2.0.relu#2"]


def test_rows_have_parents_depths_and_parameters():
    t = trace(preset("resnet20"))
    root = t.layers[0]
    assert (root.name, root.type, root.depth, root.parent) == ("", "ResNet", 0, None)
    for layer in t.layers[1:]:
        assert t[layer.parent].depth == layer.depth - 1
    block = t["layer2.0"]
    children = [x for x in t.layers if x.parent == "layer2.0" and x.kind == "module"]
    assert block.params == sum(c.params for c in children if "#" not in c.name) == 14_528
    assert block.macs == sum(x.macs for x in t.layers if x.parent == "layer2.0")
    assert t["layer1.0.conv1"].trainable_params == 2304


def test_frozen_parameters_are_not_trainable():
    model = build_model(preset("resnet20"))
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    totals = trace(model).totals
    assert totals.params - totals.trainable_params == 14_016


def _empirical_receptive_field(model, layer, size=128):
    """Input pixels that reach the centre output of ``layer``, with every path switched on."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    model.eval()
    x = torch.ones(1, 3, size, size, requires_grad=True)
    out = []
    h = getattr(model, layer).register_forward_hook(lambda m, i, o: out.append(o))
    model(x)
    h.remove()
    y = out[0]
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize(("name", "layer"), [("resnet20", "layer3"), ("resnet20", "layer2"),
                                             ("cifar-resnet18", "layer2"), ("resnet18", "layer1")])
def test_receptive_field_matches_the_gradient_footprint(name, layer):
    cfg = preset(name)
    size = 128 if cfg.stem == "cifar" else 224
    t = trace(preset(name, input_size=(size, size)))
    model = build_model(cfg)
    if model.maxpool is not None:  # max-pool sends gradient to one pixel; average-pool has the same window
        model.maxpool = nn.AvgPool2d(3, stride=2, padding=1)
    assert _empirical_receptive_field(model, layer, size) == t[layer].receptive_field
    assert t[layer].jump[0] == size // t[layer].output_shape[2]


def test_peak_activation_memory_of_resnet20():
    t = trace(preset("resnet20"))
    # in a stage-1 block: the block input (kept for the skip), conv1's output and bn1's output
    assert t.totals.peak_activation_bytes == 3 * 16 * 32 * 32 * 4
    assert t.totals.input_bytes == 3 * 32 * 32 * 4
    assert t.training_bytes("sgd") < t.training_bytes("momentum") < t.training_bytes("adam")
    assert t.training_bytes("adam") - t.training_bytes("momentum") == t.totals.param_bytes


class _Odd(nn.Module):
    """Ops without shape rules: they must fall back to the meta device and still be exact."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding="same")
        self.proj = nn.Linear(8, 5)

    def forward(self, x):
        y = self.conv(x)
        y = torch.cat([y, y * 2], dim=1).sigmoid()
        z = y.mean(dim=(2, 3)).view(y.shape[0], 2, 8)
        w = torch.matmul(z, z.transpose(1, 2))
        return self.proj(z) + w.sum()


def test_ops_without_a_shape_rule_fall_back_exactly():
    model = _Odd()
    x = torch.randn(3, 3, 20, 20)
    real = _record_shapes(model)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        expected = model(x).shape
    _remove_hooks(model)
    t = trace(model, input_size=(3, 20, 20), batch_size=3)
    assert t[""].output_shape == tuple(expected)
    assert {x.name: x.output_shape for x in t.layers if x.kind == "module"} == real
    assert t.totals.macs == counter.get_total_flops() // 2
    ops = [x.type for x in t.layers if x.kind == "op"]
    assert ops == ["mul", "cat", "sigmoid", "mean", "view", "transpose", "matmul", "sum", "add"]


def test_bad_trace_arguments():
    with pytest.raises(ConfigError, match="batch size 0"):
        trace(preset("resnet20"), batch_size=0)
    with pytest.raises(ConfigError, match="input_size .C, H, W. is needed"):
        trace(nn.Sequential(nn.Conv2d(3, 3, 3)))
    with pytest.raises(ConfigError, match="give channels, height and width"):
        trace(preset("resnet20"), input_size=(32, 32))


def test_dataframe_has_a_row_per_layer():
    t = trace(preset("resnet20"))
    df = t.to_dataframe()
    assert len(df) == len(t.layers)
    assert {"name", "type", "depth", "parent", "input_shapes", "output_shape", "params", "trainable_params",
            "macs", "flops", "all_ops", "output_bytes", "kernel", "stride", "padding", "receptive_field",
            "jump"} <= set(df.columns)
    assert df.loc[df["name"] == "layer3", "output_shape"].item() == "1×64×8×8"
    assert df["macs"].iloc[0] == 40_813_184
