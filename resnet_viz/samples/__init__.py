"""Sample images that ship with the package: 100 CIFAR-10 images, 10 a class, from the validation part of the
training split (the last 10% of each class, which training never sees), stored losslessly as PNG with their
labels. ``scripts/make_samples.py`` makes them from the CIFAR-10 JPEG archive."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

SAMPLES_DIR = Path(__file__).parent  # the PNGs and labels.json lie beside this module
INDEX = "labels.json"


@dataclass(frozen=True)
class Sample:
    file: str  # the PNG's name in SAMPLES_DIR
    label: int  # CIFAR-10's label
    class_name: str
    source: str  # the image it was decoded from, in the CIFAR-10 JPEG archive ("train/cat/4550.jpg")

    @property
    def name(self) -> str:
        """How a command or a page names it: the PNG's name without ``.png`` ("cat-4550")."""
        return self.file.removesuffix(".png")

    @property
    def path(self) -> Path:
        return SAMPLES_DIR / self.file

    def pixels(self) -> np.ndarray:
        """The image as RGB uint8, (3, H, W): the pixels a network trained on the archive sees."""
        from PIL import Image

        with Image.open(self.path) as image:
            return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()


@cache
def samples() -> tuple[Sample, ...]:
    """Every sample image, in class order."""
    index = json.loads((SAMPLES_DIR / INDEX).read_text(encoding="utf-8"))
    return tuple(Sample(**entry) for entry in index["images"])


@cache
def by_name() -> dict[str, Sample]:
    """Every sample image by its name ("cat-4550")."""
    return {sample.name: sample for sample in samples()}


def classes() -> tuple[str, ...]:
    """CIFAR-10's class names in label order."""
    return tuple(json.loads((SAMPLES_DIR / INDEX).read_text(encoding="utf-8"))["classes"])
