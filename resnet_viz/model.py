"""Residual blocks, shortcuts, and a ResNet built from a ResNetConfig.

Module names follow torchvision (conv1, bn1, relu, maxpool, layer1..., downsample,
avgpool, fc), so an ImageNet-style preset's state_dict loads into
``torchvision.models.resnetXX`` (and ``resnext…``, ``wide_resnet…``) with ``strict=True``.
Like torchvision (ResNet v1.5), a bottleneck block strides in its 3x3 conv, not its first 1x1.

The same blocks without their skip make a plain network (shortcut "none"); the
pre-activation blocks (He et al. 2016b) put BN → ReLU before each conv and nothing
after the addition, and the network closes with BN → ReLU (``final_bn``) before pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import BlockSpec, ResNetConfig

Device = torch.device | str | None


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, device: Device = None,
            groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False,
                     device=device)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, device: Device = None) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, device=device)


class ZeroPadShortcut(nn.Module):
    """Option A of the ResNet paper: subsample by the stride, append zero channels. No parameters."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def make_shortcut(spec: BlockSpec, device: Device = None, norm: bool = True) -> nn.Module | None:
    """None for an identity skip (as torchvision does) and for no skip at all. A projection is a 1x1 conv, then
    BN after a post-activation block (``norm``); a pre-activation block's projection has no BN."""
    if spec.shortcut == "projection":
        conv = conv1x1(spec.in_channels, spec.out_channels, spec.stride, device)
        return nn.Sequential(conv, nn.BatchNorm2d(spec.out_channels, device=device)) if norm else nn.Sequential(conv)
    if spec.shortcut == "pad":
        return ZeroPadShortcut(spec.stride, spec.out_channels - spec.in_channels)
    return None


def _dropout(p: float) -> nn.Dropout | None:
    return nn.Dropout(p) if p else None


class BasicBlock(nn.Module):
    """Two 3x3 convs; the skip joins before the last ReLU. Without a skip (shortcut "none") it is a plain block."""

    expansion = 1

    def __init__(self, spec: BlockSpec, device: Device = None, dropout: float = 0.0):
        super().__init__()
        self.conv1 = conv3x3(spec.in_channels, spec.width, spec.stride, device)
        self.bn1 = nn.BatchNorm2d(spec.width, device=device)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = _dropout(dropout)
        self.conv2 = conv3x3(spec.width, spec.width, device=device)
        self.bn2 = nn.BatchNorm2d(spec.width, device=device)
        # both conv1 and downsample downsample the input when stride != 1
        self.downsample = make_shortcut(spec, device)
        self.skip = spec.shortcut != "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.bn2(self.conv2(out))
        if self.skip:
            identity = x if self.downsample is None else self.downsample(x)
            out += identity  # the skip joins the main path
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, grouped in a ResNeXt), 1x1 expand by 4; the skip joins before the last ReLU."""

    expansion = 4

    def __init__(self, spec: BlockSpec, device: Device = None, dropout: float = 0.0):
        super().__init__()
        self.conv1 = conv1x1(spec.in_channels, spec.width, device=device)
        self.bn1 = nn.BatchNorm2d(spec.width, device=device)
        self.conv2 = conv3x3(spec.width, spec.width, spec.stride, device, spec.groups)
        self.bn2 = nn.BatchNorm2d(spec.width, device=device)
        self.dropout = _dropout(dropout)
        self.conv3 = conv1x1(spec.width, spec.out_channels, device=device)
        self.bn3 = nn.BatchNorm2d(spec.out_channels, device=device)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(spec, device)
        self.skip = spec.shortcut != "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.bn3(self.conv3(out))
        if self.skip:
            identity = x if self.downsample is None else self.downsample(x)
            out += identity  # the skip joins the main path
        return self.relu(out)


class PreActBlock(nn.Module):
    """Full pre-activation: BN → ReLU → conv 3x3 (stride s) → BN → ReLU → conv 3x3, then + the skip, no ReLU after.

    A projection skip (a 1x1 conv, no BN) takes the pre-activated input; an identity or zero-pad skip the input
    itself (He et al. 2016b, Fig. 4e)."""

    expansion = 1
    conv_norm_pairs = (("conv1", "bn2"),)  # each conv and the BN right after it (bn1 normalises the input)

    def __init__(self, spec: BlockSpec, device: Device = None, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(spec.in_channels, device=device)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(spec.in_channels, spec.width, spec.stride, device)
        self.bn2 = nn.BatchNorm2d(spec.width, device=device)
        self.dropout = _dropout(dropout)
        self.conv2 = conv3x3(spec.width, spec.width, device=device)
        self._skip_path(spec, device)

    def _skip_path(self, spec: BlockSpec, device: Device) -> None:
        self.downsample = make_shortcut(spec, device, norm=False)
        self.skip = spec.shortcut != "none"
        self.project = spec.shortcut == "projection"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.relu(self.bn2(self.conv1(pre)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.conv2(out)
        return self._join(out, x, pre)

    def _join(self, out: torch.Tensor, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        if not self.skip:
            return out
        identity = x if self.downsample is None else self.downsample(pre if self.project else x)
        out += identity  # the skip joins the main path; nothing follows the addition
        return out


class PreActBottleneck(PreActBlock):
    """BN → ReLU → 1x1, BN → ReLU → 3x3 (stride s, grouped in a ResNeXt), BN → ReLU → 1x1 (×4), + the skip."""

    expansion = 4
    conv_norm_pairs = (("conv1", "bn2"), ("conv2", "bn3"))

    def __init__(self, spec: BlockSpec, device: Device = None, dropout: float = 0.0):
        nn.Module.__init__(self)
        self.bn1 = nn.BatchNorm2d(spec.in_channels, device=device)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(spec.in_channels, spec.width, device=device)
        self.bn2 = nn.BatchNorm2d(spec.width, device=device)
        self.conv2 = conv3x3(spec.width, spec.width, spec.stride, device, spec.groups)
        self.bn3 = nn.BatchNorm2d(spec.width, device=device)
        self.dropout = _dropout(dropout)
        self.conv3 = conv1x1(spec.width, spec.out_channels, device=device)
        self._skip_path(spec, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.relu(self.bn2(self.conv1(pre)))
        out = self.relu(self.bn3(self.conv2(out)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.conv3(out)
        return self._join(out, x, pre)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck, "preact": PreActBlock, "preact-bottleneck": PreActBottleneck}
BLOCK_CLASSES = tuple(BLOCKS.values())


def branch_end(block: nn.Module) -> nn.Module:
    """The last layer of a block's residual branch, whose output the skip is added to: its BN after a
    post-activation block, its last conv in a pre-activation one."""
    if isinstance(block, PreActBottleneck):
        return block.conv3
    if isinstance(block, PreActBlock):
        return block.conv2
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


class ResNet(nn.Module):
    """stem -> layer1..layerN -> global average pool -> fc. ``self.config`` is the config it was built from.

    A pre-activation network's CIFAR stem is the conv alone (its first block normalises), and BN → ReLU
    (``final_bn``, ``relu``) close the last stage; its ImageNet stem keeps BN → ReLU before the max-pool."""

    def __init__(self, config: ResNetConfig, device: Device = None):
        super().__init__()
        self.config = config
        stem = config.stem_channels
        if config.stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_channels, stem, 7, stride=2, padding=3, bias=False, device=device)
        else:
            self.conv1 = conv3x3(config.in_channels, stem, device=device)
        stem_norm = not config.preact or config.stem == "imagenet"
        self.bn1 = nn.BatchNorm2d(stem, device=device) if stem_norm else None
        self.relu = nn.ReLU(inplace=True)
        # the CIFAR stem keeps full resolution: no max-pool at all
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if config.stem == "imagenet" else None
        block = BLOCKS[config.block]
        stages: dict[int, list[nn.Module]] = {}
        for spec in config.block_specs():
            stages.setdefault(spec.stage, []).append(block(spec, device, config.dropout))
        for stage, blocks in stages.items():
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.final_bn = nn.BatchNorm2d(config.out_features, device=device) if config.preact else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(config.out_features, config.num_classes, device=device)
        if not self.fc.weight.is_meta:  # meta tensors hold no values to initialise
            self._init_weights()

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i}") for i in range(1, len(self.config.blocks) + 1)]

    def _init_weights(self) -> None:
        # torchvision's scheme: He init for convs, BN starts as the identity
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """What comes before the first stage: conv1 (→ BN → ReLU) (→ max-pool)."""
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        return x if self.maxpool is None else self.maxpool(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """What comes after the last stage: (BN → ReLU →) global average pool → fc, to logits."""
        if self.final_bn is not None:
            x = self.relu(self.final_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def hooked_forward(model: nn.Module, x: torch.Tensor, attach) -> torch.Tensor:
    """One eval-mode forward of ``x`` without gradients, with the hooks ``attach(handles)`` registers (appending
    each handle to ``handles``); afterwards the hooks are removed and the model's train/eval mode restored. Returns
    the model's output."""
    handles: list = []
    was_training = model.training
    try:
        attach(handles)
        model.eval()
        with torch.no_grad():
            return model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def build_model(config: ResNetConfig, device: Device = None) -> ResNet:
    """The network a config describes, with freshly initialised weights.

    ``device="meta"`` builds it without allocating any weights (what tracing uses).
    """
    return ResNet(config, device=device)
