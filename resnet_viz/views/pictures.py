"""Tensors as pictures: feature maps and branches coloured with plotly's colour scales, grids of them, heat maps
laid over the image, filters as small RGB images, and PNG bytes. Every picture is an RGB uint8 array (H, W, 3),
which the page shows as it is and the command line writes as a PNG."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

SEQUENTIAL, DIVERGING, HEAT = "Viridis", "RdBu_r", "Turbo"
GAP = 2  # pixels of white between the cells of a grid


@cache
def _palette(scale: str) -> np.ndarray:
    """256 colours of a plotly colour scale, (256, 3) uint8."""
    from plotly.colors import sample_colorscale

    colours = sample_colorscale(scale, np.linspace(0, 1, 256).tolist())
    return np.array([[round(float(v)) for v in re.findall(r"[\d.]+", c)[:3]] for c in colours], dtype=np.uint8)


def colour(values: torch.Tensor, scale: str = SEQUENTIAL, lo: float | None = None, hi: float | None = None
           ) -> np.ndarray:
    """A 2-D tensor coloured from ``lo`` (first colour) to ``hi`` (last); by default its own minimum and maximum."""
    v = values.detach().float().cpu()
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    scaled = ((v - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    return _palette(scale)[(scaled * 255).round().to(torch.int64).numpy()]


def signed(values: torch.Tensor, limit: float) -> np.ndarray:
    """A 2-D tensor on a diverging scale centred on zero: blue below, white at 0, red above, saturating at
    ±``limit``."""
    return colour(values, DIVERGING, -limit, limit)


def enlarge(picture: np.ndarray, at_least: int) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor, so that the shorter side is at least ``at_least`` pixels
    (a browser would blur an 8×8 map)."""
    factor = max(1, -(-at_least // min(picture.shape[:2])))
    return picture.repeat(factor, axis=0).repeat(factor, axis=1)


def tile(pictures: Sequence[np.ndarray], columns: int, gap: int = GAP) -> np.ndarray:
    """Pictures of one size in rows of ``columns``, on white."""
    h, w = pictures[0].shape[:2]
    rows = -(-len(pictures) // columns)
    columns = min(columns, len(pictures))
    sheet = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, dtype=np.uint8)
    for i, picture in enumerate(pictures):
        r, c = divmod(i, columns)
        sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = picture
    return sheet


def most_active(maps: torch.Tensor, count: int) -> list[int]:
    """The ``count`` channels of (C, H, W) with the largest mean activation, most active first."""
    return maps.float().mean(dim=(1, 2)).argsort(descending=True)[:count].tolist()


def feature_grid(maps: torch.Tensor, channels: Sequence[int], columns: int = 8, cell: int = 48) -> np.ndarray:
    """The chosen channels of (C, H, W), each enlarged to about ``cell`` pixels, on one shared colour range (so a
    weak channel looks weak)."""
    chosen = maps[list(channels)].float()
    lo, hi = float(chosen.min()), float(chosen.max())
    return tile([enlarge(colour(m, SEQUENTIAL, lo, hi), cell) for m in chosen], columns)


def upsample(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (h, w) map bilinearly resized to the image's (H, W), as captum's ``LayerAttribution.interpolate`` does."""
    return F.interpolate(heat[None, None].float(), size=size, mode="bilinear")[0, 0]


def overlay(pixels: np.ndarray, heat: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """A heat map (any size, values ≥ 0) over the image (3, H, W) uint8: resized to it, scaled to its own maximum,
    coloured and blended."""
    h, w = pixels.shape[1:]
    heat = upsample(heat, (h, w)) if tuple(heat.shape) != (h, w) else heat.float()
    painted = colour(heat, HEAT, 0.0, max(float(heat.max()), 1e-12)).astype(np.float32)
    image = pixels.transpose(1, 2, 0).astype(np.float32)
    return np.round((1 - alpha) * image + alpha * painted).clip(0, 255).astype(np.uint8)


def image(pixels: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 as (H, W, 3)."""
    return np.ascontiguousarray(pixels.transpose(1, 2, 0))


def filters(weight: torch.Tensor, columns: int = 8, cell: int = 36) -> np.ndarray:
    """The first layer's filters (out, 3, k, k) as small RGB images: each filter scaled on its own so that grey
    is zero, then enlarged."""
    w = weight.detach().float().cpu()
    limit = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    rgb = ((w / limit + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if rgb.shape[-1] != 3:  # not an RGB input: its first channel in grey
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    return tile([enlarge(f, cell) for f in rgb], columns)


def png(picture: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()
