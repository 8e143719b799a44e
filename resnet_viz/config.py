"""ResNetConfig: one frozen dataclass that describes a residual network, its
validation, and the named presets.

Everything here is plain Python: a config is checked, and its feature-map
sizes and parameter count are worked out, before any tensor exists.
"""

from __future__ import annotations

import dataclasses
import json
import reprlib
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ConfigError

BLOCK_TYPES = ("basic", "bottleneck", "preact", "preact-bottleneck")
SHORTCUTS = ("A", "B", "C", "none")
STEMS = ("cifar", "imagenet")
EXPANSION = {"basic": 1, "bottleneck": 4, "preact": 1, "preact-bottleneck": 4}
BASE_WIDTH = 64  # torchvision's width_per_group of a plain bottleneck: its 3x3 conv is as wide as the stage

# Limits that keep a config within what one machine can build and trace.
MAX_STAGES = 8
MAX_BLOCKS_PER_STAGE = 512
MAX_WIDTH = 8192
MAX_STRIDE = 8
MAX_IN_CHANNELS = 256
MAX_CLASSES = 100_000
MAX_INPUT_SIDE = 4096
MAX_PARAMS = 1_000_000_000  # 4 GB of fp32 weights
MAX_DROPOUT = 0.99
MAX_CONFIG_BYTES = 1 << 20  # a config file, or a config's JSON text (one is a few hundred bytes)


class BlockSpec(NamedTuple):
    """One residual block, as the model builder and the counters see it."""

    stage: int  # 1-based stage number (layer1, layer2, ...)
    index: int  # 0-based block number within the stage
    in_channels: int
    width: int  # channels of the 3x3 conv(s)
    out_channels: int  # the stage's width * expansion
    stride: int  # only a stage's first block strides
    shortcut: str  # "identity", "pad" (option A), "projection" (1x1 conv, + BN after a post-activation block), "none"
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    groups: int = 1  # groups of the 3x3 conv (ResNeXt's cardinality)

    @property
    def name(self) -> str:
        return f"layer{self.stage}.{self.index}"


@dataclass(frozen=True)
class ResNetConfig:
    """A residual network, stage by stage. The defaults are ResNet-20 for CIFAR-10."""

    name: str = "custom"  # a label for tables and files; not part of the architecture
    # "basic": two 3x3 convs; "bottleneck": 1x1, 3x3, 1x1 with 4x expansion; "preact" and "preact-bottleneck": the
    # same with BN -> ReLU before each conv and nothing after the addition (He et al. 2016b)
    block: str = "basic"
    widths: tuple[int, ...] = (16, 32, 64)  # each stage's width: its 3x3 convs' channels (a bottleneck's: see groups)
    blocks: tuple[int, ...] = (3, 3, 3)  # residual blocks per stage
    strides: tuple[int, ...] = (1, 2, 2)  # stride of each stage's first block
    # A: zero-pad identity, B: projection where the shape changes, C: always project, none: no skip (a plain net)
    shortcut: str = "B"
    stem: str = "cifar"  # cifar: 3x3 conv stride 1; imagenet: 7x7 conv stride 2 + 3x3 max-pool stride 2
    stem_width: int | None = None  # channels out of the stem; None means the first stage's width
    num_classes: int = 10
    in_channels: int = 3
    input_size: tuple[int, int] = (32, 32)  # height, width
    groups: int = 1  # ResNeXt's cardinality: a bottleneck's 3x3 conv in this many groups
    width_per_group: int = BASE_WIDTH  # a bottleneck's 3x3 conv has width × width_per_group / 64 × groups channels
    dropout: float = 0.0  # dropout before each block's last conv (Wide ResNets); 0 for none

    def __post_init__(self) -> None:
        for field in ("widths", "blocks", "strides"):
            object.__setattr__(self, field, _int_tuple(field, getattr(self, field)))
        size = self.input_size
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        object.__setattr__(self, "input_size", _int_tuple("input_size", size))
        object.__setattr__(self, "dropout", _fraction("dropout", self.dropout))
        self._validate()

    # -- derived facts -------------------------------------------------------

    @property
    def expansion(self) -> int:
        return EXPANSION[self.block]

    @property
    def preact(self) -> bool:
        """Pre-activation blocks: BN → ReLU before each conv, the network closed by BN → ReLU before pooling."""
        return self.block.startswith("preact")

    @property
    def bottleneck(self) -> bool:
        return self.block.endswith("bottleneck")

    @property
    def residual(self) -> bool:
        """False for a plain network: the same layers without skips."""
        return self.shortcut != "none"

    def inner_width(self, width: int) -> int:
        """Channels of a block's 3x3 conv for a stage of ``width``: torchvision's
        ``int(width * width_per_group / 64) * groups`` in a bottleneck, the width itself in a basic block."""
        return width * self.width_per_group // BASE_WIDTH * self.groups if self.bottleneck else width

    @property
    def stem_channels(self) -> int:
        return self.stem_width if self.stem_width is not None else self.widths[0]

    @property
    def out_features(self) -> int:
        """Channels into the pooling and the fc layer."""
        return self.widths[-1] * self.expansion

    @property
    def depth(self) -> int:
        """Weighted layers on the main path, as in the name "ResNet-20"; a pre-activation Wide ResNet counts as
        its paper names it, its projections in and its fc out (WRN-28-10: 28)."""
        depth = 2 + sum(self.blocks) * (3 if self.bottleneck else 2)
        if self.preact and self.family == "Wide ResNet":
            depth += sum(b.shortcut == "projection" for b in self.block_specs()) - 1
        return depth

    @property
    def family(self) -> str:
        """What kind of residual network this is, in words: "ResNet", "plain network", "pre-activation ResNet",
        "ResNeXt" or "Wide ResNet"."""
        if not self.residual:
            return "plain network"
        if self.groups > 1:
            return "ResNeXt"
        if self.width_per_group > BASE_WIDTH or (self.preact and self.widths[0] > self.stem_channels):
            return "Wide ResNet"
        return "pre-activation ResNet" if self.preact else "ResNet"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.input_size)

    def stem_out_size(self) -> tuple[int, int]:
        return _stem_size(self.stem, self.input_size)

    def block_specs(self) -> Iterator[BlockSpec]:
        """Every residual block in order, with its channels, stride and shortcut."""
        channels, size = self.stem_channels, self.stem_out_size()
        for stage, (width, count, stage_stride) in enumerate(
            zip(self.widths, self.blocks, self.strides), start=1
        ):
            out_channels, inner = width * self.expansion, self.inner_width(width)
            for index in range(count):
                stride = stage_stride if index == 0 else 1
                out_size = tuple(_out(s, 1, stride, 0) for s in size)
                shortcut = self._shortcut_kind(stride != 1 or channels != out_channels)
                yield BlockSpec(stage, index, channels, inner, out_channels, stride, shortcut, size, out_size,
                                self.groups)
                channels, size = out_channels, out_size

    def _shortcut_kind(self, reshapes: bool) -> str:
        if self.shortcut == "none":
            return "none"
        if self.shortcut == "C" or (self.shortcut == "B" and reshapes):
            return "projection"
        return "pad" if reshapes else "identity"

    def num_params(self) -> int:
        """The exact parameter count, from the config alone (no model is built)."""
        k = 3 if self.stem == "cifar" else 7
        total = self.in_channels * self.stem_channels * k * k + 2 * sum(self.norm_channels())
        for b in self.block_specs():
            if self.bottleneck:
                total += b.in_channels * b.width + 9 * b.width * b.width // b.groups + b.width * b.out_channels
            else:
                total += 9 * b.in_channels * b.width + 9 * b.width * b.width
            if b.shortcut == "projection":
                total += b.in_channels * b.out_channels
        return total + self.out_features * self.num_classes + self.num_classes

    def norm_channels(self) -> list[int]:
        """The channels of every BatchNorm layer in order (each has a weight and a bias per channel)."""
        norms = [self.stem_channels] if not self.preact or self.stem == "imagenet" else []
        for b in self.block_specs():
            if self.preact:
                norms += [b.in_channels, b.width, b.width] if self.bottleneck else [b.in_channels, b.width]
            else:
                norms += [b.width, b.width, b.out_channels] if self.bottleneck else [b.width, b.width]
                norms += [b.out_channels] if b.shortcut == "projection" else []
        return norms + ([self.out_features] if self.preact else [])

    def conv_count(self) -> int:
        """Convolutions in the network: the stem's, each block's, and each projection's."""
        per_block = 3 if self.bottleneck else 2
        return 1 + sum(per_block + (b.shortcut == "projection") for b in self.block_specs())

    def describe(self) -> str:
        """One line, e.g. "resnet20: basic 16/32/64 x 3/3/3, shortcut B, 3x32x32 -> 10"."""
        widths = "/".join(map(str, self.widths))
        blocks = "/".join(map(str, self.blocks))
        c, h, w = self.input_shape
        extra = f", {self.groups}×{self.width_per_group}d" if (self.groups, self.width_per_group) != (1, 64) else ""
        extra += f", dropout {self.dropout:g}" if self.dropout else ""
        shortcut = "no shortcut (plain)" if self.shortcut == "none" else f"shortcut {self.shortcut}"
        return (f"{self.name}: {self.block} {widths} × {blocks}{extra}, {shortcut}, "
                f"{self.stem} stem, {c}×{h}×{w} → {self.num_classes}")

    # -- serialisation --------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("widths", "blocks", "strides", "input_size"):
            d[key] = list(d[key])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_query(self) -> dict[str, str]:
        """The config as short URL query parameters (``widths=16,32,64``...), for a link that reopens it."""
        c, h, w = self.input_shape
        query = {"name": self.name, "block": self.block, "widths": _csv(self.widths), "blocks": _csv(self.blocks),
                 "strides": _csv(self.strides), "shortcut": self.shortcut, "stem": self.stem,
                 "classes": str(self.num_classes), "input": f"{c}x{h}x{w}"}
        if self.stem_width is not None:
            query["stem_width"] = str(self.stem_width)
        if self.groups != 1:
            query["groups"] = str(self.groups)
        if self.width_per_group != BASE_WIDTH:
            query["width_per_group"] = str(self.width_per_group)
        if self.dropout:
            query["dropout"] = f"{self.dropout:g}"
        return query

    @classmethod
    def from_query(cls, query: dict[str, str]) -> ResNetConfig:
        """The inverse of ``to_query``; missing parameters take the defaults (ResNet-20)."""
        fields: dict[str, Any] = {}
        key = ""
        try:
            for key in ("name", "block", "shortcut", "stem"):
                if key in query:
                    fields[key] = query[key]
            for key in ("widths", "blocks", "strides"):
                if key in query:
                    fields[key] = tuple(int(v) for v in query[key].split(","))
            if "classes" in query:
                key = "classes"
                fields["num_classes"] = int(query[key])
            for key in ("stem_width", "groups", "width_per_group"):
                if key in query:
                    fields[key] = int(query[key])
            if "dropout" in query:
                key = "dropout"
                fields[key] = float(query[key])
            if "input" in query:
                key = "input"
                c, h, w = (int(v) for v in query[key].lower().split("x"))
                fields.update(in_channels=c, input_size=(h, w))
        except ValueError:
            value = str(query[key])
            shown = value if len(value) <= 40 else f"{value[:40]}…"
            form = "3x32x32" if key == "input" else "16,32,64" if key in ("widths", "blocks", "strides") else "10"
            if key == "dropout":
                raise ConfigError(f"the link's dropout is malformed (dropout={shown}): it takes a number, as in "
                                  "dropout=0.3") from None
            raise ConfigError(f"the link's {key} is malformed ({key}={shown}): it takes whole numbers, as in "
                              f"{key}={form}") from None
        return cls(**fields)

    @classmethod
    def from_dict(cls, data: Any) -> ResNetConfig:
        """A config from a dict; also accepts the ``{"config": {...}}`` of a summary JSON."""
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]
        if not isinstance(data, dict):
            raise ConfigError("a config must be a JSON object with fields such as \"widths\" and \"blocks\"")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config field {_shown(unknown[0])} — known fields are {_field_names()}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes) -> ResNetConfig:
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config is larger than {_CONFIG_LIMIT}; a config is a few hundred bytes of JSON")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"the config is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        except RecursionError:
            raise ConfigError("the config is not valid JSON (its lists or objects are nested too deeply)") from None
        except ValueError as e:  # Python's limit on the digits of an integer read from text, or bytes not UTF-8
            digits = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
            problem = f"a number has more than {digits:,} digits" if "digits" in str(e) else str(e)
            raise ConfigError(f"the config is not valid JSON ({problem})") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ResNetConfig:
        """A config from a JSON file: a regular file of at most ``MAX_CONFIG_BYTES`` (a pipe, a device or a folder
        is refused before it is opened, and no more than that is read)."""
        return cls.from_json(_read_config(Path(path)))

    # -- validation -------------------------------------------------------------

    def _validate(self) -> None:
        _choice("block", self.block, BLOCK_TYPES)
        _choice("shortcut", self.shortcut, SHORTCUTS)
        _choice("stem", self.stem, STEMS)
        if not isinstance(self.name, str):
            raise ConfigError("name must be text")
        n = len(self.widths)
        if not 1 <= n <= MAX_STAGES:
            raise ConfigError(f"a network needs 1 to {MAX_STAGES} stages, got {n}")
        if len(self.blocks) != n or len(self.strides) != n:
            raise ConfigError(
                f"widths, blocks and strides need one value per stage, got {n}, "
                f"{len(self.blocks)} and {len(self.strides)} values"
            )
        for stage, (width, count, stride) in enumerate(zip(self.widths, self.blocks, self.strides), start=1):
            _in_range(f"stage {stage}: width", width, 1, MAX_WIDTH, "widths")
            _in_range(f"stage {stage}: blocks", count, 1, MAX_BLOCKS_PER_STAGE, "block counts")
            _in_range(f"stage {stage}: stride", stride, 1, MAX_STRIDE, "strides")
        if self.stem_width is not None:
            _in_range("stem_width", _whole("stem_width", self.stem_width), 1, MAX_WIDTH, "the stem width")
        _in_range("num_classes", _whole("num_classes", self.num_classes), 1, MAX_CLASSES, "the number of classes")
        _in_range("in_channels", _whole("in_channels", self.in_channels), 1, MAX_IN_CHANNELS, "input channels")
        if len(self.input_size) != 2:
            raise ConfigError(f"input_size is height and width, got {len(self.input_size)} values")
        for side in self.input_size:
            _in_range("input_size", side, 1, MAX_INPUT_SIDE, "input sides")
        self._check_sizes()
        self._check_groups()
        if self.shortcut == "A":
            for b in self.block_specs():
                if b.out_channels < b.in_channels:
                    raise ConfigError(
                        f"{b.name}: shortcut A can only pad channels ({b.in_channels} → {b.out_channels}) "
                        "— use shortcut B or C, or widths that do not shrink"
                    )
        params = self.num_params()
        if params > MAX_PARAMS:
            raise ConfigError(
                f"this network would have {params:,} parameters, over the limit of {MAX_PARAMS:,} "
                "— use fewer or narrower stages"
            )

    def _check_groups(self) -> None:
        _in_range("groups", _whole("groups", self.groups), 1, MAX_WIDTH, "groups")
        _in_range("width_per_group", _whole("width_per_group", self.width_per_group), 1, MAX_WIDTH,
                  "widths per group")
        if not self.bottleneck:
            if (self.groups, self.width_per_group) != (1, BASE_WIDTH):
                raise ConfigError(f"groups and width per group shape a bottleneck's 3×3 conv — use block "
                                  f"bottleneck or preact-bottleneck, or groups 1 and width per group {BASE_WIDTH} "
                                  f"with a {self.block} block")
            return
        for stage, width in enumerate(self.widths, start=1):
            inner = self.inner_width(width)
            if inner < self.groups:
                raise ConfigError(f"stage {stage}: width {width} × width per group {self.width_per_group} / "
                                  f"{BASE_WIDTH} leaves less than one channel per group — use a width per group of "
                                  f"at least {-(-BASE_WIDTH // width)} or a wider stage")
            _in_range(f"stage {stage}: 3×3 conv width", inner, 1, MAX_WIDTH, "widths")

    def _check_sizes(self) -> None:
        """Refuse a stride that meets a feature map smaller than itself: nothing is left to downsample."""
        problem = _first_collapse(self, self.input_size)
        if problem is None:
            return
        side = 1
        while _first_collapse(self, (side, side)) is not None and side < MAX_INPUT_SIDE:
            side += 1
        layer, size, stride = problem
        h, w = self.input_size
        raise ConfigError(
            f"input {h}×{w} is too small: the feature map is {size[0]}×{size[1]} when {layer} "
            f"(stride {stride}) downsamples it — use an input of at least {side}×{side}, or smaller strides"
        )


_CONFIG_LIMIT = f"{MAX_CONFIG_BYTES >> 20} MiB"


def _read_config(path: Path) -> str:
    shown = repr(str(path))
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ConfigError(f"config file {shown} is not a regular file")
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {shown} is larger than {_CONFIG_LIMIT}; a config is a few hundred "
                              "bytes of JSON")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {shown} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read config file {shown}: it is not UTF-8 text (at byte {e.start:,})") from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(f"cannot read config file {shown}: {reason[:1].lower()}{reason[1:]}") from None


def _first_collapse(cfg: ResNetConfig, size: tuple[int, int]) -> tuple[str, tuple[int, int], int] | None:
    """The first layer whose stride exceeds the feature map it receives, for an input of ``size``."""
    layers = [("conv1", 7, 2, 3), ("maxpool", 3, 2, 1)] if cfg.stem == "imagenet" else []
    layers += [(f"layer{i}.0", 1, s, 0) for i, s in enumerate(cfg.strides, start=1)]
    for layer, kernel, stride, padding in layers:
        if min(size) < stride:
            return layer, size, stride
        size = tuple(_out(x, kernel, stride, padding) for x in size)
    return None


def _stem_size(stem: str, size: tuple[int, int]) -> tuple[int, int]:
    if stem == "cifar":
        return size
    # 7x7 conv stride 2 pad 3, then 3x3 max-pool stride 2 pad 1
    return tuple(_out(_out(s, 7, 2, 3), 3, 2, 1) for s in size)


def _out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output side of a conv or pool (dilation 1, floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {_shown(value)}")
    return value


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{name} must be a number from 0 to {MAX_DROPOUT}, got {_shown(value)}")
    if not 0 <= value <= MAX_DROPOUT:
        raise ConfigError(f"{name} {value:g} — it must be from 0 (none) to {MAX_DROPOUT}")
    return float(value)


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{name} must be a list of whole numbers, got {_shown(value)}")
    items = tuple(value)
    for item in items:
        _whole(f"each value of {name}", item)
    return items


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {_shown(value)} is not one of {', '.join(choices)}")


def _in_range(label: str, value: int, low: int, high: int, what: str) -> None:
    if value < low:
        raise ConfigError(f"{label} {_number(value)} — {what} must be {low} or more")
    if value > high:
        raise ConfigError(f"{label} {_number(value)} — {what} are limited to {high:,}")


def _number(value: int) -> str:
    """An integer as a message shows it: 100,000; one too long to read as its first digits and its length, as in
    "100000… (4,001 digits)" (Python will not write out an integer of more than 4,300 digits at all)."""
    size = abs(value)
    if size < 10**18:
        return f"{value:,}"
    digits = int(size.bit_length() * 0.30103)  # log10(2): the count, or one short of it
    digits += size >= 10**digits
    return f"{'-' if value < 0 else ''}{size // 10 ** (digits - 6)}… ({digits:,} digits)"


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 4, 4, 4
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40


def _shown(value: Any) -> str:
    """A value a message quotes, cut short: a long text, a deep or long list or a huge number stays readable."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _number(value)
    return _SHORT.repr(value)


def _field_names() -> str:
    return ", ".join(f.name for f in dataclasses.fields(ResNetConfig))


# -- presets --------------------------------------------------------------------

def _cifar(name: str, depth: int, **fields: Any) -> ResNetConfig:
    n = (depth - 2) // 6  # the paper's 6n+2 layers: three stages of n basic blocks
    return ResNetConfig(name=name, blocks=(n, n, n), **fields)


def _preact_bottleneck(name: str, depth: int) -> ResNetConfig:
    n = (depth - 2) // 9  # 9n+2 layers: three stages of n bottlenecks (He et al. 2016b, ResNet-164)
    return ResNetConfig(name=name, block="preact-bottleneck", blocks=(n, n, n))


def _wide(depth: int, k: int) -> ResNetConfig:
    n = (depth - 4) // 6  # WRN-d-k (Zagoruyko & Komodakis 2016): (d-4)/6 pre-activation blocks a stage, widths 16k...
    return ResNetConfig(name=f"wrn-{depth}-{k}", block="preact", widths=(16 * k, 32 * k, 64 * k), blocks=(n, n, n),
                        stem_width=16)


def _imagenet(name: str, block: str, blocks: tuple[int, ...], cifar: bool = False, **fields: Any) -> ResNetConfig:
    return ResNetConfig(
        name=name, block=block, widths=(64, 128, 256, 512), blocks=blocks, strides=(1, 2, 2, 2),
        stem="cifar" if cifar else "imagenet", num_classes=10 if cifar else 1000,
        input_size=(32, 32) if cifar else (224, 224), **fields,
    )


_IMAGENET_LAYOUTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}

# torchvision's ResNeXt and Wide ResNet-50/101: the ResNet-50/101 layouts with grouped or wider 3x3 convs
_GROUPED = {
    "resnext50_32x4d": ("resnet50", 32, 4),
    "resnext101_32x8d": ("resnet101", 32, 8),
    "resnext101_64x4d": ("resnet101", 64, 4),
    "wide_resnet50_2": ("resnet50", 1, 128),
    "wide_resnet101_2": ("resnet101", 1, 128),
}

PRESETS: dict[str, ResNetConfig] = {
    **{f"resnet{d}": _cifar(f"resnet{d}", d) for d in (20, 32, 44, 56, 110, 1202)},
    **{name: _imagenet(name, *layout) for name, layout in _IMAGENET_LAYOUTS.items()},
    **{f"cifar-{name}": _imagenet(f"cifar-{name}", *_IMAGENET_LAYOUTS[name], cifar=True)
       for name in ("resnet18", "resnet34", "resnet50")},
    **{f"plain{d}": _cifar(f"plain{d}", d, shortcut="none") for d in (20, 32, 44, 56, 110)},
    **{f"preresnet{d}": _cifar(f"preresnet{d}", d, block="preact") for d in (20, 56, 110)},
    "preresnet164": _preact_bottleneck("preresnet164", 164),
    **{f"wrn-{d}-{k}": _wide(d, k) for d, k in ((16, 8), (28, 10), (40, 4))},
    **{name: _imagenet(name, *_IMAGENET_LAYOUTS[base], groups=groups, width_per_group=per_group)
       for name, (base, groups, per_group) in _GROUPED.items()},
}


def preset(name: str, **overrides: Any) -> ResNetConfig:
    """A named preset, or a new config from a preset plus overrides (``shortcut="A"``, ``num_classes=100``...)."""
    try:
        base = PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown preset {_shown(name)} — choose one of {', '.join(PRESETS)}") from None
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ResNetConfig)})
    if unknown:
        raise ConfigError(f"unknown config field {_shown(unknown[0])} — known fields are {_field_names()}")
    return dataclasses.replace(base, **overrides) if overrides else base
