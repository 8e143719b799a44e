"""One image for a trained network to look at: read from a PNG, JPEG or WebP file, checked before it is decoded,
centre-cropped to the network's aspect and resized to its input, as uint8 RGB (3, H, W) — the exact pixels the
network sees before normalisation."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from ..errors import DataError
from ..formatting import human_bytes
from ..limits import limits, over

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}


def read_image(data: bytes, size: tuple[int, int], name: str = "the image") -> torch.Tensor:
    """``data`` (the bytes of a PNG, JPEG or WebP file) as uint8 RGB (3, H, W) for an input of ``size`` (H, W):
    the largest centred crop of the network's aspect, resized with antialiasing. Anything else, or an image over
    the bounds (``limits().image_bytes``, ``image_pixels``), is refused in one sentence before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    bound = limits()
    if len(data) > bound.image_bytes:
        raise DataError(f"{name} is {human_bytes(len(data))}, over {over('image_bytes', bound.image_bytes)}; "
                        "give a smaller file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind = FORMATS.get(image.format or "")
                if kind is None:
                    what = f"a {image.format} image" if image.format else "an image of an unknown kind"
                    raise DataError(f"{name} is {what}; give a PNG, JPEG or WebP file")
                w, h = image.size
                if w * h > bound.image_pixels:
                    raise DataError(f"{name} is {w:,}×{h:,} pixels, over {over('image_pixels', bound.image_pixels)}; "
                                    "give a smaller image")
                return _fit(image.convert("RGB"), size)
    except DataError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{name} is not a PNG, JPEG or WebP image that can be read") from None
    except (OSError, ValueError, SyntaxError) as e:  # a truncated or damaged file
        raise DataError(f"{name} cannot be read as an image ({e}); give a PNG, JPEG or WebP file") from None


def _fit(image, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop to the aspect of ``size`` (H, W), then resize to it (bicubic, antialiased)."""
    from PIL import Image

    h, w = size
    width, height = image.size
    if width * h > height * w:  # too wide: keep the full height
        crop_w, crop_h = max(1, round(height * w / h)), height
    else:
        crop_w, crop_h = width, max(1, round(width * h / w))
    left, top = int(round((width - crop_w) / 2)), int(round((height - crop_h) / 2))  # as torchvision centres
    cropped = image.crop((left, top, left + crop_w, top + crop_h))
    if cropped.size != (w, h):
        cropped = cropped.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
    return torch.from_numpy(np.asarray(cropped).transpose(2, 0, 1).copy())
