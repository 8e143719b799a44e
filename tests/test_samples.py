"""The sample images in the package: CIFAR-10's validation part, decoded exactly as the archive holds them."""

import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_viz.data.folders import _carved
from resnet_viz.samples import SAMPLES_DIR, classes, samples

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg-train.tar.gz"
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # label order


def test_ten_images_a_class_with_cifar10s_labels():
    found = samples()
    assert classes() == CIFAR10
    assert len(found) == 100 and Counter(s.label for s in found) == {label: 10 for label in range(10)}
    assert all(CIFAR10[s.label] == s.class_name and s.source.startswith(f"train/{s.class_name}/") for s in found)
    assert sorted(p.name for p in SAMPLES_DIR.glob("*.png")) == sorted(s.file for s in found)
    assert sum(p.stat().st_size for p in SAMPLES_DIR.iterdir() if p.is_file()) < 1 << 20
    assert all(s.pixels().shape == (3, 32, 32) and s.pixels().dtype == np.uint8 for s in found)


def test_every_sample_comes_from_the_validation_part():
    first_validation = 5000 - _carved(5000)  # the last 10% of each class, as the data loader carves it
    assert first_validation == 4500
    assert all(int(Path(s.source).stem) >= first_validation for s in samples())


@pytest.mark.skipif(not ARCHIVE.exists(), reason="the CIFAR-10 JPEG archive is not at ../shared/data")
def test_the_pngs_hold_the_archives_pixels_exactly():
    wanted = {s.source: s for s in samples()}
    with tarfile.open(ARCHIVE, "r|gz") as tar:
        decoded = {m.name: np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
                   for m in tar if m.name in wanted}
    assert set(decoded) == set(wanted)
    for source, sample in wanted.items():
        assert np.array_equal(sample.pixels(), decoded[source].transpose(2, 0, 1)), source
