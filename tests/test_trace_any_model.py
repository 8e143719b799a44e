"""The tracer on models that are not ResNets: torchvision's classification models and small modules that do what
models from other libraries do (attention of every kind, item assignment, tensor arithmetic, type checks). Each is
checked against its real forward: parameters, MACs = FlopCounterMode / 2, and every module's output shape read
from plain forward hooks."""

import collections
import contextlib

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from resnet_viz import trace
from resnet_viz.tracing import TraceError

aten = torch.ops.aten


def _sdpa_on_cpu(*args, **kwargs):
    return flop_registry[aten._scaled_dot_product_flash_attention](*args, **kwargs)


_sdpa_on_cpu._get_raw = True  # FlopCounterMode takes it as it is (it is already wrapped)
# FlopCounterMode has no formula for the CPU kernel of scaled_dot_product_attention: it would count attention
# as no FLOPs on a CPU, where the tracer (and FlopCounterMode on a GPU) counts them all
SDPA_ON_CPU = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_on_cpu}


def _shape_of(output):
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    return [tuple(t.shape) for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)] or None


def _reference(model: nn.Module, x: torch.Tensor) -> tuple[dict, int]:
    """Every module call's output shape ("name#2" for a second call), from plain hooks, and the FLOPs of one real
    forward. nn.MultiheadAttention's fused fast path and oneDNN's recurrent layers, which FlopCounterMode cannot
    see into, are off."""
    shapes, handles = {}, []
    for name, module in model.named_modules():
        def hook(m, inputs, output, name=name):
            n = sum(k.split("#")[0] == name for k in shapes)
            shapes[name if n == 0 else f"{name}#{n + 1}"] = _shape_of(output)
        handles.append(module.register_forward_hook(hook))
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        rnn = any(isinstance(m, nn.RNNBase) for m in model.modules())
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False) if rnn else contextlib.nullcontext(), \
                FlopCounterMode(display=False, custom_mapping=SDPA_ON_CPU) as counter:
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        for h in handles:
            h.remove()
    return shapes, counter.get_total_flops()


def _check(model: nn.Module, input_size: tuple[int, ...], batch: int = 1):
    """Trace the model and hold it to its real forward; the trace, for more checks."""
    model.eval()
    shapes, flops = _reference(model, torch.randn(batch, *input_size))
    t = trace(model, input_size=input_size, batch_size=batch)
    assert t.totals.params == sum(p.numel() for p in model.parameters())
    assert 2 * t.totals.macs == t.totals.flops == flops
    assert {x.name: x.output_shape for x in t.layers if x.kind == "module"} == shapes
    return t


# -- torchvision's classification models ------------------------------------------------------------------------

TORCHVISION = [  # name, input side, builder arguments: small inputs, for speed
    ("alexnet", 64, {}),
    ("convnext_tiny", 64, {}),
    ("densenet121", 64, {}),
    ("efficientnet_b0", 64, {}),
    ("efficientnet_v2_s", 64, {}),
    ("googlenet", 64, {"aux_logits": False, "init_weights": False}),
    ("inception_v3", 75, {"aux_logits": False, "init_weights": False}),
    ("maxvit_t", 224, {}),  # its windows need 224
    ("mnasnet0_5", 64, {}),
    ("mobilenet_v2", 64, {}),
    ("mobilenet_v3_small", 64, {}),
    ("mobilenet_v3_large", 64, {}),
    ("regnet_x_400mf", 64, {}),
    ("regnet_y_400mf", 64, {}),
    ("regnet_y_800mf", 64, {}),
    ("resnext50_32x4d", 64, {}),
    ("shufflenet_v2_x0_5", 64, {}),
    ("shufflenet_v2_x1_0", 64, {}),
    ("squeezenet1_0", 64, {}),
    ("squeezenet1_1", 64, {}),
    ("swin_t", 224, {}),
    ("swin_v2_t", 64, {}),
    ("vgg11", 32, {}),
    ("vit_b_16", 64, {"image_size": 64}),
]


# Left out of the default run for time on a 2-core machine (together they take minutes to build and run, and try
# nothing the ones above do not): `pytest -m slow tests/test_trace_any_model.py` holds each to its real forward.
LEFT_OUT = (
    "convnext_small", "convnext_base", "convnext_large", "densenet161", "densenet169", "densenet201",
    "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6",
    "efficientnet_b7", "efficientnet_v2_m", "efficientnet_v2_l", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf", "regnet_x_16gf", "regnet_x_32gf",
    "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",  # tests/test_trace.py traces them too
    "resnext101_32x8d", "resnext101_64x4d", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "swin_s", "swin_b",
    "swin_v2_s", "swin_v2_b", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_32",
    "vit_l_16", "vit_l_32", "vit_h_14", "wide_resnet50_2", "wide_resnet101_2",
)


def test_every_torchvision_classification_model_is_tested_or_left_out_on_purpose():
    tested = [name for name, _, _ in TORCHVISION]
    assert sorted(tested + list(LEFT_OUT)) == sorted(torchvision.models.list_models(module=torchvision.models))


def _slow(name: str):
    side = 32 if name.startswith("vgg") else 56 if name == "vit_h_14" else 64
    return pytest.param(name, side, {"image_size": side} if name.startswith("vit") else {}, marks=pytest.mark.slow,
                        id=name)


@pytest.mark.parametrize(("name", "side", "kwargs"), TORCHVISION + [_slow(name) for name in LEFT_OUT],
                         ids=[c[0] for c in TORCHVISION] + list(LEFT_OUT))
def test_torchvision_model_against_its_real_forward(name, side, kwargs):
    torch.manual_seed(0)
    _check(torchvision.models.get_model(name, **kwargs), (3, side, side))


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.devices = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.devices |= {t.device.type for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)}
        return out


def test_a_weightless_transformer_traces_as_its_real_self_without_real_memory():
    torch.manual_seed(0)
    real = trace(torchvision.models.swin_t(), input_size=(3, 224, 224))
    with torch.device("meta"):
        weightless = torchvision.models.swin_t()
    with _Recorder() as rec:
        t = trace(weightless, input_size=(3, 224, 224))
    assert rec.devices == {"meta"}
    assert t.totals == real.totals
    key = lambda x: (x.name, x.output_shape, x.macs, x.input_shapes)  # noqa: E731
    assert [key(x) for x in t.layers] == [key(x) for x in real.layers]


# -- what models from other libraries do --------------------------------------------------------------------------

class _Arithmetic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        x[:, :2] = 0  # item assignment, in place
        y = x.clone()
        y[..., 0, :] = x[..., 1, :] * 2
        y **= 2
        z = -x + abs(x) - x // 2 + x % 3 + 2 ** x + (1 - x) / (x + 2) - x.flatten(1).T.T.view_as(x).mT.mT
        mask = (x > 0) & (x <= 1) | ~(x != 0.5)
        return torch.where(mask, y, z * 0.1) + x.sigmoid() @ x.transpose(-1, -2).tanh()


class _Surface(nn.Module):
    """Reads what forward code reads of a tensor, and branches on it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        assert x.shape == x.size() and x.size(-1) == 6 and x.dim() == x.ndim == 4 and len(x) == x.shape[0]
        assert x.is_floating_point() and not x.requires_grad and not x.is_nested and x.layout == torch.strided
        assert x.dtype == torch.float32 and x.numel() == x.nelement() and x.element_size() == 4
        rows = [self.fc(row) for row in x]  # iteration gives the rows
        ramp = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype)
        y = torch.stack(rows).to(x.device).float().cpu() + ramp
        return y.unsqueeze(1).expand(-1, 2, -1, -1, -1).contiguous()


class _Attention(nn.Module):
    """nn.MultiheadAttention, F.scaled_dot_product_attention and attention written out with einsum."""

    def __init__(self, d: int = 16, heads: int = 4):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
        self.qkv = nn.Linear(d, 3 * d)
        self.heads = heads

    def forward(self, x):  # (B, C, H, W)
        x = x.flatten(2).transpose(1, 2)  # B, N, C
        a, weights = self.mha(x, x, x)
        q, k, v = self.qkv(a).chunk(3, dim=-1)
        b, n, c = q.shape
        q, k, v = (t.reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3) for t in (q, k, v))
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        att = torch.einsum("bhnd,bhmd->bhnm", q, k).mul((c // self.heads) ** -0.5).softmax(-1)
        out = torch.cat([causal, torch.einsum("bhnm,bhmd->bhnd", att, v)], dim=-1).permute(0, 2, 1, 3)
        head, tail = torch.split(out.reshape(b, n, -1), [8, 24], dim=-1)
        return head.view(b, n, 2, 4).mean(1), tail, weights


class _TensorsOnly(nn.Module):
    """Refuses anything but a real tensor: it must run on the meta device, with its children."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 8)
        self.inner = nn.Sequential(nn.ReLU(), nn.Linear(8, 4))

    def forward(self, x):
        assert isinstance(x, torch.Tensor), "tensors only"
        y = self.lin(x.flatten(2).transpose(1, 2))
        y[:, 0] = y[:, 1]
        return {"out": self.inner(y), "total": x.sum()}


class _LateCheck(nn.Module):
    """Fails on the probe half-way, after a child's call and an op: what it recorded until then is undone."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x).relu()
        if not isinstance(y, torch.Tensor):
            raise TypeError("expected a tensor")
        return y + x


class _Layers(nn.Module):
    """Layers a ResNet has no shape rule for, a buffer written in place, and outputs in a namedtuple and a dict."""

    Out = collections.namedtuple("Out", "image extras")

    def __init__(self):
        super().__init__()
        self.conv1d, self.conv3d = nn.Conv1d(4, 4, 3, padding=1), nn.Conv3d(1, 2, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.norms = nn.Sequential(nn.InstanceNorm2d(4), nn.GroupNorm(2, 4))
        self.shuffle, self.bn1d = nn.PixelShuffle(2), nn.BatchNorm1d(4)
        self.pools = nn.Sequential(nn.Upsample(scale_factor=2), nn.MaxPool2d(3, 2, ceil_mode=True),
                                   nn.AdaptiveMaxPool2d(3))
        self.register_buffer("mean", torch.zeros(4))

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.conv1d(x.flatten(2)).view_as(x)
        z = self.conv3d(x[:, :1].unsqueeze(1)).sum(1)
        u = F.interpolate(self.up(self.norms(y)), size=(h, w), mode="bilinear", align_corners=False)
        self.mean.copy_(x.mean((0, 2, 3)))  # the real forward writes it: the trace must not
        v = self.shuffle(u)[:, :1, :h, :w]
        unfolded = F.unfold(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3)
        return self.Out(z + v, {"pooled": self.pools(x), "unfolded": unfolded, "bn": self.bn1d(x.mean((2, 3)))})


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True, num_layers=2)
        self.gru = nn.GRU(16, 8, bidirectional=True)
        self.rnn = nn.RNN(16, 4)

    def forward(self, x):
        y, (h, _) = self.lstm(x.flatten(2).transpose(1, 2))
        z, _ = self.gru(y)
        return self.rnn(z)[0], h


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.arith = _Arithmetic()
        self.proj = nn.Conv2d(4, 16, 1)
        self.attention = _Attention()
        self.strict = _TensorsOnly()
        self.head = nn.Linear(4, 4)
        self.late = _LateCheck()

    def forward(self, x):
        x = self.proj(self.arith(x))
        s, t, _ = self.attention(x=x)  # called with a keyword
        u = self.strict(x)
        return self.late(self.late(self.head(u["out"]) * 2)), s, t + u["total"]


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
@pytest.mark.parametrize(("module", "input_size"), [
    (_Arithmetic(), (3, 8, 8)), (_Surface(), (2, 5, 6)), (_Attention(), (16, 4, 4)), (_TensorsOnly(), (16, 3, 3)),
    (_Layers(), (4, 8, 8)), (_Recurrent(), (8, 4, 4)), (_Net(), (3, 6, 6)),
], ids=["arithmetic", "tensor-surface", "attention", "tensors-only", "layers", "recurrent", "all-together"])
def test_custom_modules_against_their_real_forward(module, input_size):
    _check(module, input_size, batch=2)


def test_a_module_the_probe_cannot_follow_runs_on_the_meta_device_with_its_children():
    t = _check(_Net(), (3, 6, 6), batch=2)
    strict = [x for x in t.layers if x.name == "strict" or x.parent and x.parent.startswith("strict")]
    assert {x.name for x in strict} >= {"strict", "strict.lin", "strict.inner", "strict.inner.0", "strict.inner.1"}
    assert all(x.fallback and x.receptive_field is None for x in strict)
    late = {x.name: x for x in t.layers if x.name.startswith("late")}
    assert list(late) == ["late", "late.fc", "late.relu", "late.add", "late#2", "late.fc#2", "late#2.relu",
                          "late#2.add"]
    assert all(x.fallback for x in late.values()) and late["late.fc#2"].macs == 2 * 36 * 4 * 4
    assert not any(x.fallback for x in t.layers if x not in strict and x.name not in late)
    assert t["strict.inner.1"].sources == ["strict.inner.0"] and t["strict"].sources == ["proj"]
    assert t["strict.lin"].macs == 2 * 36 * 16 * 8 and t["strict"].macs == 2 * 36 * (16 * 8 + 8 * 4)
    assert t["head"].sources == ["strict.inner.1"]  # the probes go on after it
    assert t["attention"].input_shapes == [(2, 16, 6, 6)]  # a keyword argument is an input too
    assert t["arith.setitem"].output_shape == (2, 4, 6, 6) and t["arith.setitem"].sources == ["arith.conv"]
    assert t.to_dict()["layers"][0]["fallback"] is False


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_scripted_submodule_is_counted_without_a_row():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), torch.jit.script(nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        expected = model(torch.randn(1, 3, 8, 8)).shape
    t = trace(model, input_size=(3, 8, 8))
    assert 2 * t.totals.macs == counter.get_total_flops() and t[""].output_shape == tuple(expected)
    assert "1" not in {x.name for x in t.layers}  # a ScriptModule takes no hooks


@pytest.mark.parametrize("model", [_Net(), _Layers()], ids=["with-a-fallback", "writing-a-buffer"])
def test_tracing_leaves_the_model_as_it_was(model):
    model.train()
    next(model.children()).eval()
    modes = {n: m.training for n, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace(model, input_size=(3, 6, 6) if isinstance(model, _Net) else (4, 8, 8))
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all("forward" not in m.__dict__ and not m._forward_hooks and not m._forward_pre_hooks
               for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# -- where a trace cannot go on: an error that says why ----------------------------------------------------------

class _Gate(nn.Module):
    def forward(self, x):
        return x * 2 if x.mean() > 0 else x


class _Select(nn.Module):
    def forward(self, x):
        return x[x > 0]


class _Scalar(nn.Module):
    def forward(self, x):
        return x * x.max().item()


@pytest.mark.parametrize(("module", "message"), [
    (nn.Sequential(nn.Conv2d(3, 4, 1), _Gate()),
     r"^module '1' \(_Gate\) needs the values of a tensor \(bool\(\) of a tensor: an if.*\), and a trace has only"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), _Scalar()),
     r"^module '1' \(_Scalar\) needs the values of a tensor \(\.item\(\)\)"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), _Select()),
     r"^module '1' \(_Select\) runs getitem, which PyTorch cannot run on the meta device \(its output's size may"),
    (nn.Sequential(nn.Conv2d(4, 4, 1)), r"^module '0' \(Conv2d\), given 1×3×8×8, could not be traced.*channel"),
], ids=["if-on-values", "item", "boolean-mask", "wrong-input-size"])
def test_what_needs_values_or_does_not_fit_stops_with_a_clear_error(module, message):
    with pytest.raises(TraceError, match=message):
        trace(module, input_size=(3, 8, 8))
    assert all("forward" not in m.__dict__ and not m._forward_hooks for m in module.modules())
