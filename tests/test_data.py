"""Data: the CIFAR-10 JPEG archive, image folders, torchvision's CIFAR, synthetic data and DeviceBatches."""

from __future__ import annotations

import io
import os
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.datasets

from resnet_viz.data import (
    SYNTHETIC_NAME,
    DataError,
    DeviceBatches,
    Split,
    channel_stats,
    flip,
    load_dataset,
)

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg-train.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _no_pil(*args, **kwargs):
    raise AssertionError("PIL was asked to decode an image")


def _no_tar(*args, **kwargs):
    raise AssertionError("the archive was opened again")


# -- the CIFAR-10 JPEG archive --------------------------------------------------------------------

@pytest.fixture(scope="session")
def archive_cache(tmp_path_factory) -> Path:
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} is not here")
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def cifar_jpeg(archive_cache):
    return load_dataset(ARCHIVE, cache_dir=archive_cache, limit_per_class=50)


def test_archive_classes_sizes_and_layout(cifar_jpeg):
    assert cifar_jpeg.name == "cifar10-jpeg-train"
    assert cifar_jpeg.classes == CIFAR10_CLASSES
    assert not cifar_jpeg.synthetic
    assert len(cifar_jpeg.train) == 450 and len(cifar_jpeg.val) == 50
    assert torch.bincount(cifar_jpeg.train.labels).tolist() == [45] * 10
    assert torch.bincount(cifar_jpeg.val.labels).tolist() == [5] * 10
    assert cifar_jpeg.train.images.dtype == torch.uint8 and cifar_jpeg.train.labels.dtype == torch.int64
    assert cifar_jpeg.train.images.shape[1:] == (3, 32, 32) and cifar_jpeg.val.images.shape[1:] == (3, 32, 32)
    assert cifar_jpeg.describe() == ("cifar10-jpeg-train: 450 train / 50 validation images, 10 classes "
                                     "(validation: the last 10% of each class of train)")
    assert all(0.35 < m < 0.55 for m in cifar_jpeg.mean) and all(0.2 < s < 0.3 for s in cifar_jpeg.std)


def test_archive_labels_match_class_folders(cifar_jpeg, archive_cache):
    (extracted,) = (archive_cache / "archives").iterdir()
    for label in (0, 3, 9):
        folder = extracted / "train" / CIFAR10_CLASSES[label]
        first, last_val = sorted(folder.iterdir())[0], sorted(folder.iterdir())[49]
        expected = torch.from_numpy(np.array(PIL.Image.open(first).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(cifar_jpeg.train.images[cifar_jpeg.train.labels == label][0], expected)
        expected = torch.from_numpy(np.array(PIL.Image.open(last_val).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(cifar_jpeg.val.images[cifar_jpeg.val.labels == label][-1], expected)


def test_archive_second_load_hits_the_caches(cifar_jpeg, archive_cache, monkeypatch):
    monkeypatch.setattr(tarfile, "open", _no_tar)
    monkeypatch.setattr(PIL.Image, "open", _no_pil)
    again = load_dataset(ARCHIVE, cache_dir=archive_cache, limit_per_class=50)
    assert torch.equal(again.train.images, cifar_jpeg.train.images)
    assert torch.equal(again.val.labels, cifar_jpeg.val.labels)
    assert len(list((archive_cache / "archives").iterdir())) == 1  # one extracted folder, no temporary ones


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_with_a_member_outside_is_refused(tmp_path):
    archive = _tar(tmp_path / "evil.tar.gz", {"train/a/0.png": _png_bytes(_pixels(0, 0)), "../evil": b"x"})
    with pytest.raises(DataError, match=r"\.\./evil.*refusing"):
        load_dataset(archive, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "evil").exists()
    assert list((tmp_path / "cache" / "archives").iterdir()) == []  # no half-extracted folder left


def test_archive_with_one_top_folder(tmp_path):
    members = {f"mydata/train/{c}/{i}.png": _png_bytes(_pixels(k, i)) for k, c in enumerate("ab") for i in range(3)}
    members |= {f"mydata/val/{c}/0.png": _png_bytes(_pixels(k, 9)) for k, c in enumerate("ab")}
    ds = load_dataset(_tar(tmp_path / "small.tgz", members), cache_dir=tmp_path / "cache")
    assert ds.name == "small" and ds.classes == ("a", "b") and ds.val_source == "the val/ folder"
    assert (len(ds.train), len(ds.val)) == (6, 2)


# -- image folders ----------------------------------------------------------------------------------

def _pixels(label: int, index: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """A distinct image (H, W, 3) per class and index."""
    h, w = size
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((label * 50 + index * 7 + y * 3 + x * 5 + c * 11) % 256).astype(np.uint8)


def _png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _write_images(folder: Path, classes=("cat", "dog", "emu"), count: int = 10, size=(8, 8)) -> Path:
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            PIL.Image.fromarray(_pixels(label, i, size)).save(folder / name / f"{i:04d}.png")
    return folder


def _chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)


def test_folder_pixels_round_trip_and_the_carve(tmp_path):
    root = _write_images(tmp_path / "pets")
    ds = load_dataset(root, cache_dir=tmp_path / "cache")
    assert ds.name == "pets" and ds.classes == ("cat", "dog", "emu")
    assert ds.val_source == "the last 10% of each class of train"
    assert ds.train.labels.tolist() == [0] * 9 + [1] * 9 + [2] * 9 and ds.val.labels.tolist() == [0, 1, 2]
    for label in range(3):
        for i in range(9):
            assert torch.equal(ds.train.images[label * 9 + i], _chw(_pixels(label, i)))
        assert torch.equal(ds.val.images[label], _chw(_pixels(label, 9)))  # the last file of each class
    mean, std = channel_stats(ds.train.images)
    assert ds.mean == mean and ds.std == std
    expected = ds.train.images.double().div(255).mean((0, 2, 3))
    assert torch.allclose(torch.tensor(ds.mean, dtype=torch.float64), expected)


def test_folder_limit_per_class_carves_the_kept_files(tmp_path):
    ds = load_dataset(_write_images(tmp_path / "pets"), cache_dir=tmp_path / "cache", limit_per_class=5)
    assert (len(ds.train), len(ds.val)) == (12, 3)
    assert torch.equal(ds.val.images[1], _chw(_pixels(1, 4)))


def test_folder_second_load_comes_from_the_cache_until_a_file_changes(tmp_path, monkeypatch):
    root = _write_images(tmp_path / "pets")
    calls = []
    first = load_dataset(root, cache_dir=tmp_path / "cache", progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (30, 30)
    with monkeypatch.context() as m:
        m.setattr(PIL.Image, "open", _no_pil)
        again = load_dataset(root, cache_dir=tmp_path / "cache")
        assert torch.equal(again.train.images, first.train.images) and torch.equal(again.val.images, first.val.images)
    assert not [p for p in (tmp_path / "cache" / "decoded").iterdir() if p.name.endswith(".part")]
    PIL.Image.fromarray(_pixels(2, 2) // 2).save(root / "cat" / "0000.png")
    os.utime(root / "cat" / "0000.png", ns=(1, 1))
    changed = load_dataset(root, cache_dir=tmp_path / "cache")
    assert torch.equal(changed.train.images[0], _chw(_pixels(2, 2) // 2))


def test_folder_with_train_and_val(tmp_path):
    _write_images(tmp_path / "data" / "train", count=6)
    _write_images(tmp_path / "data" / "val", count=2)
    ds = load_dataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert (len(ds.train), len(ds.val)) == (18, 6)
    assert ds.val_source == "the val/ folder"
    assert ds.val.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(ds.val.images[3], _chw(_pixels(1, 1)))


def test_folder_with_train_and_test(tmp_path):
    _write_images(tmp_path / "data" / "train", count=3)
    _write_images(tmp_path / "data" / "test", count=1)
    ds = load_dataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert (len(ds.train), len(ds.val), ds.val_source) == (9, 3, "the test/ folder")


def test_folder_with_train_only_carves_train(tmp_path):
    _write_images(tmp_path / "data" / "train")
    ds = load_dataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert (len(ds.train), len(ds.val)) == (27, 3)


def test_mismatched_classes(tmp_path):
    _write_images(tmp_path / "data" / "train", classes=("cat", "dog", "emu"), count=2)
    _write_images(tmp_path / "data" / "val", classes=("cat", "dog", "fox"), count=1)
    with pytest.raises(DataError, match=r"only train has emu and only val has fox"):
        load_dataset(tmp_path / "data", cache_dir=tmp_path / "cache")


def test_mixed_sizes_name_the_file(tmp_path):
    root = _write_images(tmp_path / "pets")
    PIL.Image.fromarray(_pixels(1, 3, size=(9, 8))).save(root / "dog" / "0003.png")
    with pytest.raises(DataError, match=r"dog/0003\.png is 8×9 pixels .* is 8×8"):
        load_dataset(root, cache_dir=tmp_path / "cache")


def test_corrupt_image_names_the_file(tmp_path):
    root = _write_images(tmp_path / "pets")
    (root / "emu" / "0005.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"cannot read the image .*emu/0005\.jpg"):
        load_dataset(root, cache_dir=tmp_path / "cache")


def test_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no class folders"):
        load_dataset(tmp_path / "empty", cache_dir=tmp_path / "cache")
    (tmp_path / "empty" / "cat").mkdir()
    with pytest.raises(DataError, match=r"class folder .*cat holds no images"):
        load_dataset(tmp_path / "empty", cache_dir=tmp_path / "cache")


def test_unknown_source_and_bad_limit(tmp_path):
    with pytest.raises(DataError, match=r"no such dataset or folder: cifar11; use cifar10, cifar100, synthetic"):
        load_dataset("cifar11", cache_dir=tmp_path)
    with pytest.raises(DataError, match="limit_per_class"):
        load_dataset("synthetic", limit_per_class=0)


# -- CIFAR through torchvision --------------------------------------------------------------------

def test_cifar_offline_without_files_says_where_they_go(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_VIZ_CACHE", str(tmp_path))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10")
    message = str(e.value)
    assert str(tmp_path / "torchvision") in message
    assert "cifar-10-batches-py" in message and "cifar-10-python.tar.gz" in message and "download=True" in message
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        load_dataset("cifar100", root=tmp_path / "elsewhere")


class FakeCIFAR10:
    calls: list[tuple[str, bool, bool]] = []
    classes = list(CIFAR10_CLASSES)

    def __init__(self, root, train=True, download=False):
        FakeCIFAR10.calls.append((root, train, download))
        n = 50 if train else 20  # 5 and 2 per class
        self.targets = [i % 10 for i in range(n)]
        self.data = (np.arange(n * 32 * 32 * 3) % 251).astype(np.uint8).reshape(n, 32, 32, 3)


def test_cifar_download_path(tmp_path, monkeypatch):
    FakeCIFAR10.calls = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ds = load_dataset("cifar10", root=tmp_path, download=True)
    assert FakeCIFAR10.calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert ds.classes == CIFAR10_CLASSES and ds.val_source == "the official test split"
    assert ds.train.images.shape == (50, 3, 32, 32) and ds.val.images.shape == (20, 3, 32, 32)
    data = FakeCIFAR10(tmp_path).data
    assert torch.equal(ds.train.images[7, 2, 5, 9], torch.tensor(data[7, 5, 9, 2]))
    assert torch.equal(ds.train.images, torch.from_numpy(data).permute(0, 3, 1, 2))
    assert ds.train.labels.dtype == torch.int64 and ds.train.labels[:12].tolist() == [*range(10), 0, 1]

    limited = load_dataset("cifar10", root=tmp_path, download=True, limit_per_class=2)
    assert torch.bincount(limited.train.labels).tolist() == [2] * 10
    assert torch.bincount(limited.val.labels).tolist() == [1] * 10  # in proportion: 2 of 5 train, 1 of 2 val


def test_cifar_download_failure(tmp_path, monkeypatch):
    class Offline(FakeCIFAR10):
        def __init__(self, root, train=True, download=False):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(DataError, match=r"download failed \(\[Errno -3\] Temporary failure.*by hand") as e:
        load_dataset("cifar10", root=tmp_path, download=True)
    assert str(tmp_path) in str(e.value)


# -- synthetic data ---------------------------------------------------------------------------------

def test_synthetic_is_deterministic_and_labelled():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.images, b.val.images)
    assert a.synthetic and SYNTHETIC_NAME == "synthetic (random) data"
    assert "synthetic (random) data" in a.name and "synthetic (random) data" in a.describe()
    assert a.train.images.shape == (5000, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert len(a.val) == 1000 and len(a.classes) == 10
    assert not torch.equal(a.train.images[:1000], a.val.images)
    small = load_dataset("synthetic", limit_per_class=20)
    assert (len(small.train), len(small.val)) == (200, 40)


def test_synthetic_is_learnable():
    ds = load_dataset("synthetic")
    x = ds.train.images.flatten(1).float()
    centres = torch.stack([x[ds.train.labels == c].mean(0) for c in range(10)])
    guess = torch.cdist(ds.val.images.flatten(1).float(), centres).argmin(1)
    assert (guess == ds.val.labels).float().mean() > 0.9


# -- DeviceBatches ----------------------------------------------------------------------------------

def _split(n: int = 100, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(1, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n))


def test_batches_without_augmentation_are_the_normalised_images_in_order():
    split = _split()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    batches = DeviceBatches(split, "cpu", mean, std)
    x, y = next(batches.epoch(32, augment=False, generator=None))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    expected = (split.images[:32].float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)
    assert y.tolist() == list(range(32))
    assert len(batches) == 100 and batches.num_batches(32, drop_last=True) == 3
    assert batches.num_batches(32, drop_last=False) == 4


def test_channels_last_when_asked():
    batches = DeviceBatches(_split(), "cpu", (0.5,) * 3, (0.25,) * 3, channels_last=True)
    for augment in (False, True):
        x, _ = next(batches.epoch(16, augment=augment, generator=torch.Generator().manual_seed(0)))
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _placements(image: torch.Tensor) -> torch.Tensor:
    """Every shift in [-4, 4]² with zeros filling in, unflipped then flipped: (162, C, H, W)."""
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    shifts = [padded[:, 4 + dy:36 + dy, 4 + dx:36 + dx] for dy in range(-4, 5) for dx in range(-4, 5)]
    return torch.stack(shifts + [s.flip(2) for s in shifts])


def test_crop_shifts_by_at_most_four_pixels_with_zeros_and_flips_half_the_time():
    image = _split(1).images[0]  # no zero pixels, so zeros can only come from the padding
    batches = DeviceBatches(Split(image.expand(1000, -1, -1, -1), torch.zeros(1000, dtype=torch.int64)), "cpu",
                            (0.0,) * 3, (1.0,) * 3)
    x, _ = next(batches.epoch(1000, augment=True, generator=torch.Generator().manual_seed(1)))
    pixels = (x * 255).round().to(torch.uint8)
    candidates = _placements(image)
    matches = (pixels[:, None] == candidates[None]).flatten(2).all(2)  # (1000, 162)
    assert matches.sum(1).tolist() == [1] * 1000  # every output is exactly one shift (and flip) of the image
    placement = matches.int().argmax(1)
    assert len(placement.unique()) > 100  # shifts and flips vary from image to image
    assert 0.4 < (placement >= 81).float().mean() < 0.6  # flipped about half the time
    assert (placement % 81 == 40).float().mean() < 0.05  # unshifted about 1 in 81


def test_same_seed_same_batches_and_every_image_once():
    batches = DeviceBatches(_split(), "cpu", (0.5,) * 3, (0.25,) * 3)

    def run(seed):
        return list(batches.epoch(32, augment=True, generator=torch.Generator().manual_seed(seed), drop_last=False))

    first, again, other = run(3), run(3), run(4)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][1], other[0][1])
    assert [len(y) for _, y in first] == [32, 32, 32, 4]
    seen = torch.cat([y for _, y in first])
    assert sorted(seen.tolist()) == list(range(100)) and seen.tolist() != list(range(100))
    assert sum(len(y) for _, y in run(5)[:3]) == 96
    assert len(list(batches.epoch(32, augment=True, generator=torch.Generator().manual_seed(0)))) == 3


def test_augment_needs_a_generator_on_the_device():
    batches = DeviceBatches(_split(), "cpu", (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(DataError, match="torch.Generator on the data's device"):
        next(batches.epoch(32, augment=True, generator=None))
    with pytest.raises(DataError, match="batch size"):
        batches.num_batches(0)


def test_flip_mirrors_left_right():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    assert torch.equal(flip(x)[..., 0], x[..., 4]) and torch.equal(flip(flip(x)), x)
