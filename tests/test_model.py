import pytest
import torch
import torchvision

from resnet_viz import build_model, preset
from resnet_viz.model import ZeroPadShortcut

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_presets_load_into_torchvision_and_agree(name):
    ours = build_model(preset(name)).eval()
    reference = getattr(torchvision.models, name)().eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "cifar-resnet18", "cifar-resnet50"])
@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_forward_gives_logits(name, shortcut):
    cfg = preset(name, shortcut=shortcut, num_classes=7)
    model = build_model(cfg).eval()
    with torch.no_grad():
        assert model(torch.randn(3, *cfg.input_shape)).shape == (3, 7)


def test_shortcut_options():
    a = build_model(preset("resnet20", shortcut="A"))
    b = build_model(preset("resnet20", shortcut="B"))
    c = build_model(preset("resnet20", shortcut="C"))
    ds = lambda m: [n for n, _ in m.named_modules() if n.endswith("downsample")]  # noqa: E731
    assert ds(a) == ds(b) == ["layer2.0.downsample", "layer3.0.downsample"]
    assert isinstance(a.layer2[0].downsample, ZeroPadShortcut)
    assert sum(p.numel() for p in a.layer2[0].downsample.parameters()) == 0
    assert len(ds(c)) == 9
    # the projection is the seed's 1x1 conv with stride 2 and no padding, then BN
    conv = b.layer2[0].downsample[0]
    assert (conv.kernel_size, conv.stride, conv.padding, conv.out_channels) == ((1, 1), (2, 2), (0, 0), 32)


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
    x = torch.randn(2, 16, 32, 32)
    y = ZeroPadShortcut(2, 16)(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_torchvision_module_names():
    names = {n for n, _ in build_model(preset("resnet18")).named_children()}
    assert names == {"conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"}
    cifar = {n for n, _ in build_model(preset("resnet20")).named_children()}
    assert cifar == {"conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"}


def test_meta_build_allocates_no_weights():
    model = build_model(preset("resnet152"), device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model.config == preset("resnet152")
