"""An image given to a trained network: what it is turned into, checked against torchvision's transforms, and
every bad file refused in one sentence."""

import io

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from resnet_viz.data.images import read_image
from resnet_viz.errors import DataError


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **options)
    return out.getvalue()


def _random(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("h", "w", "size"), [(60, 101, (32, 32)), (101, 60, (32, 32)), (47, 47, (32, 32)),
                                              (300, 200, (224, 224)), (40, 90, (32, 64))])
def test_centre_crop_and_resize_as_torchvisions_transforms(h, w, size):
    array = _random(h, w)
    ours = read_image(_encoded(array, "PNG"), size)
    image = Image.fromarray(array)
    side_h, side_w = size
    crop = (h, round(h * side_w / side_h)) if w * side_h > h * side_w else (round(w * side_h / side_w), w)
    expected = TF.resize(TF.center_crop(image, list(crop)), list(size), InterpolationMode.BICUBIC)
    assert ours.shape == (3, *size) and ours.dtype == torch.uint8
    assert torch.equal(ours, torch.from_numpy(np.asarray(expected).transpose(2, 0, 1).copy()))


def test_an_image_of_the_input_size_is_taken_as_it_is():
    array = _random(32, 32)
    assert torch.equal(read_image(_encoded(array, "PNG"), (32, 32)), torch.from_numpy(array.transpose(2, 0, 1)))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_and_webp_are_read(fmt):
    array = _random(64, 64)
    out = read_image(_encoded(array, fmt, quality=95), (32, 32))
    assert out.shape == (3, 32, 32)
    reference = torch.from_numpy(np.asarray(Image.fromarray(array).resize((32, 32), Image.Resampling.BICUBIC))
                                 .transpose(2, 0, 1).astype(np.int16))
    assert (out.to(torch.int16) - reference).abs().float().mean() < 12  # lossy, but the same picture


def test_grey_and_transparent_images_become_rgb():
    grey = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    out = read_image(_encoded(grey, "PNG"), (32, 32))
    assert out.shape == (3, 32, 32) and torch.equal(out[0], out[1]) and torch.equal(out[0], torch.from_numpy(grey))
    rgba = np.dstack([_random(32, 32), np.full((32, 32), 128, np.uint8)])
    assert read_image(_encoded(rgba, "PNG"), (32, 32)).shape == (3, 32, 32)


@pytest.mark.parametrize(("data", "message"), [
    (b"plain text, not an image", "the image is not a PNG, JPEG or WebP image that can be read"),
    (b"", "the image is not a PNG, JPEG or WebP image that can be read"),
    (_encoded(_random(32, 32), "GIF"), "the image is a GIF image; give a PNG, JPEG or WebP file"),
    (_encoded(_random(32, 32), "BMP"), "the image is a BMP image; give a PNG, JPEG or WebP file"),
    (_encoded(_random(64, 64), "PNG")[:300], "the image cannot be read as an image"),
])
def test_what_is_not_an_image_gets_one_sentence(data, message):
    with pytest.raises(DataError) as info:
        read_image(data, (32, 32))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_huge_files_and_huge_images_are_refused_before_decoding(monkeypatch):
    big = _encoded(np.zeros((3000, 3000, 3), np.uint8), "PNG")  # 27 MB of pixels in a small file
    assert len(big) < 5 << 20
    monkeypatch.setenv("RESNET_VIZ_IMAGE_PIXELS", "1000000")
    with pytest.raises(DataError, match=r"the image is 3,000×3,000 pixels, over the limit of 1,000,000 "
                                        r"\(RESNET_VIZ_IMAGE_PIXELS\); give a smaller image"):
        read_image(big, (32, 32))
    with pytest.raises(DataError, match=r"upload.png is 6.00 MiB, over the limit of 5.00 MiB "
                                        r"\(RESNET_VIZ_IMAGE_BYTES\)"):
        read_image(b"\0" * (6 << 20), (32, 32), name="upload.png")
