"""Inside a network on one image: feature maps against plain forward hooks, and each block's skip and residual
branch against the block's own sum."""

import pytest
import torch
from torch import nn

from resnet_viz import build_model, preset
from resnet_viz.views.inside import feature_maps, look_inside


def _model(name: str, **overrides) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(preset(name, **overrides))
    for m in model.modules():  # running statistics that are not the identity, so that BN does something
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_feature_maps_equal_plain_forward_hooks():
    model = _model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    expected = {}

    def keep(name):
        def hook(module, inputs, output):
            expected.setdefault(name, output[0].clone())  # the stem's relu: its first call
        return hook

    handles = [model.relu.register_forward_hook(keep("stem"))]
    handles += [getattr(model, f"layer{i}").register_forward_hook(keep(f"layer{i}")) for i in (1, 2, 3)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    maps = feature_maps(model, x)
    assert list(maps) == ["stem", "layer1", "layer2", "layer3"]
    assert [tuple(m.shape) for m in maps.values()] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert all(torch.equal(maps[k], expected[k]) for k in expected)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(("name", "overrides"), [("resnet20", {}), ("resnet20", {"shortcut": "A"}),
                                                 ("cifar-resnet50", {"blocks": (1, 1, 1, 1)}),
                                                 ("preresnet20", {}), ("preresnet164", {"blocks": (1, 1, 1)})])
def test_branch_plus_skip_is_the_blocks_own_sum_exactly(name, overrides):
    model = _model(name, **overrides)
    x = torch.randn(2, 3, 32, 32)
    looks = look_inside(model, x)
    assert len(looks) == sum(model.config.blocks)
    for look in looks.values():
        assert torch.equal(look.branch + look.skip, look.total), look.name
        assert look.ratio == pytest.approx(float(look.branch.norm() / look.skip.norm()))
    # the sum is what the block puts out: after its ReLU in a post-activation block, as it is in a pre-activation one
    with torch.no_grad():
        out = model.layer1[0](model.relu(model.bn1(model.conv1(x))) if model.bn1 is not None else model.conv1(x))
    first = looks["layer1.0"].total
    assert torch.equal(out[0], first if model.config.preact else first.clamp(min=0))
    assert looks["layer2.0"].skip.shape == looks["layer2.0"].branch.shape


def test_a_plain_block_has_no_skip_to_show():
    looks = look_inside(_model("plain20"), torch.randn(1, 3, 32, 32))
    assert all(look.skip is None and look.ratio is None and torch.equal(look.branch, look.total)
               for look in looks.values())
