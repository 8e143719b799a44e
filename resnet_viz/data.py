"""Datasets for training: CIFAR-10/100, image folders and archives of them, and synthetic data.

A whole split lives in one uint8 tensor (N, C, H, W) and, for training, on the training device:
``DeviceBatches`` crops, flips and normalises whole batches there, so no DataLoader and no
per-image Python work sits in the training loop. Image folders are decoded once and cached on
disk; archives are extracted once into the cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Per-channel mean and standard deviation of CIFAR-10's training images (0-1 scale). The often
# copied std (0.2023, 0.1994, 0.2010) is an average of per-image stds, not the dataset's.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
VAL_FRACTION = 0.1  # carved validation: the last 10% of each class
CROP_PADDING = 4
SYNTHETIC_NAME = "synthetic (random) data"
CACHE_FORMAT = 1  # bump when the decoded cache's contents change

Progress = Callable[[int, int], None]

_CIFAR = {  # source: (label, torchvision class, extracted folder, archive)
    "cifar10": ("CIFAR-10", "CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR-100", "CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz"),
}
_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


class DataError(Exception):
    """Data that cannot be loaded; the message says what to fix or where to put the files."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    val_source: str  # where the validation images come from, in words
    synthetic: bool
    mean: tuple[float, ...]  # per channel, 0-1 scale, of the train images
    std: tuple[float, ...]

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train):,} train / {len(self.val):,} validation images, "
                f"{len(self.classes)} classes (validation: {self.val_source})")


def default_cache_dir() -> Path:
    """``$RESNET_VIZ_CACHE`` if set, else ``~/.cache/resnet-viz``."""
    return Path(os.environ.get("RESNET_VIZ_CACHE") or Path.home() / ".cache" / "resnet-viz")


def load_dataset(source: str | Path, root: str | Path | None = None, cache_dir: str | Path | None = None,
                 download: bool = False, limit_per_class: int | None = None,
                 progress: Progress | None = None) -> Dataset:
    """A dataset by name ("cifar10", "cifar100", "synthetic"), or an image folder or a .tar.gz of one.

    ``root`` is where torchvision's CIFAR files live (default ``<cache_dir>/torchvision``);
    ``limit_per_class`` keeps at most that many train images per class, and validation in proportion;
    ``progress(done, total)`` hears about image decoding.
    """
    if limit_per_class is not None and (isinstance(limit_per_class, bool) or not isinstance(limit_per_class, int)
                                        or limit_per_class < 1):
        raise DataError(f"limit_per_class must be a whole number of 1 or more, got {limit_per_class!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = str(source)
    if name in _CIFAR:
        return _load_cifar(name, Path(root) if root is not None else cache / "torchvision", download, limit_per_class)
    if name == "synthetic":
        return synthetic_dataset(limit_per_class=limit_per_class)
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_folder(path, cache, limit_per_class, progress)
    if path.is_file() and _archive_stem(path) is not None:
        return _load_folder(_extract(path, cache), cache, limit_per_class, progress, name=_archive_stem(path))
    raise DataError(f"no such dataset or folder: {name}; use cifar10, cifar100, synthetic, a folder or a .tar.gz")


# -- CIFAR through torchvision -------------------------------------------------------------------

def _load_cifar(source: str, root: Path, download: bool, limit: int | None) -> Dataset:
    import torchvision.datasets

    label, class_name, folder, archive = _CIFAR[source]
    cls = getattr(torchvision.datasets, class_name)
    fetch = download
    if not download and not (root / folder).is_dir():
        if not (root / archive).is_file():
            raise DataError(f"{label} is not in {root}: put the folder {folder} (or the archive {archive}) there, "
                            "or pass download=True (command line: --download) to fetch it when online")
        _check_cifar_archive(root / archive, cls, label)
        fetch = True  # only extracts: torchvision skips the download when the archive's md5 is the official one
    # torchvision checks every CIFAR file's md5 against the official checksums before it unpickles it,
    # so only the official files are ever unpickled.
    try:
        train, test = cls(str(root), train=True, download=fetch), cls(str(root), train=False, download=fetch)
    except OSError as e:
        if not download:
            raise DataError(f"cannot read {label} in {root}: {e}") from None
        raise DataError(f"the {label} download failed ({_reason(e)}); try again when online, or put {archive} "
                        f"from {_CIFAR_PAGE} in {root} by hand") from None
    except RuntimeError:
        raise DataError(f"the {label} files in {root} are incomplete or not the official ones; delete {root / folder}"
                        f" and pass download=True (command line: --download), or put the official {archive} there"
                        ) from None
    train_split, test_split = _cifar_split(train), _cifar_split(test)
    if limit is not None:
        test_split = _limit(test_split, limit, like=train_split)
        train_split = _limit(train_split, limit)
    return _dataset(label, tuple(train.classes), train_split, test_split, "the official test split")


def _check_cifar_archive(path: Path, cls, label: str) -> None:
    from torchvision.datasets.utils import check_integrity

    if not check_integrity(str(path), cls.tgz_md5):
        raise DataError(f"{path} is not the official {label} archive (its md5 differs); download it again from "
                        f"{_CIFAR_PAGE}, or pass download=True (command line: --download)")


def _cifar_split(dataset) -> Split:
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.as_tensor(dataset.targets, dtype=torch.int64))


def _limit(split: Split, limit: int, like: Split | None = None) -> Split:
    """The first ``limit`` images of each class; with ``like`` (the full train split), the same share of each class."""
    keep = []
    for c in split.labels.unique().tolist():
        index = (split.labels == c).nonzero().flatten()
        n = limit
        if like is not None:
            n = _scaled(limit, len(index), int((like.labels == c).sum()))
        keep.append(index[:n])
    index = torch.cat(keep).sort().values
    return Split(split.images[index], split.labels[index])


def _scaled(limit: int, n_val: int, n_train: int) -> int:
    """How many of a separate validation set's ``n_val`` images to keep when train keeps ``limit`` of ``n_train``."""
    if n_train <= limit:
        return n_val
    return max(1, math.ceil(limit * n_val / max(n_train, 1)))


def _reason(error: BaseException) -> str:
    return str(getattr(error, "reason", None) or error) or type(error).__name__


# -- image folders -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Listing:
    classes: tuple[str, ...]
    train: list[list[Path]]  # per class, sorted by name
    val: list[list[Path]]
    val_source: str


def _load_folder(root: Path, cache: Path, limit: int | None, progress: Progress | None,
                 name: str | None = None) -> Dataset:
    root = root.resolve()
    listing = _listing(root, limit)
    cache_file = cache / "decoded" / f"{_safe(root.name)}-{_fingerprint(root, listing)}.pt"
    tensors = _read_cache(cache_file)
    if tensors is None:
        tensors = _decode_listing(listing, progress)
        _write_cache(cache_file, tensors)
    train = Split(tensors["train_images"], tensors["train_labels"])
    val = Split(tensors["val_images"], tensors["val_labels"])
    return _dataset(name or root.name, listing.classes, train, val, listing.val_source)


def _listing(root: Path, limit: int | None) -> _Listing:
    """Which files are train and which validation, by the folder's layout."""
    train_dir, val_dir, val_source = _layout(root)
    train = _class_folders(train_dir)
    if not train:
        raise DataError(f"{root} holds no class folders of images; expected {root}/train/<class>/<image> "
                        f"or {root}/<class>/<image>")
    classes = tuple(train)
    train_files = [_image_files(train[c]) for c in classes]
    if val_dir is None:
        kept = [files[:limit] for files in train_files]
        cut = [len(files) - _carved(len(files)) for files in kept]
        return _Listing(classes, [f[:n] for f, n in zip(kept, cut)], [f[n:] for f, n in zip(kept, cut)], val_source)
    val = _class_folders(val_dir)
    if tuple(val) != classes:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise DataError(f"{train_dir} and {val_dir} must hold the same class folders, but only train has "
                        f"{_names(only_train)} and only {val_dir.name} has {_names(only_val)}")
    val_files = [_image_files(val[c]) for c in classes]
    if limit is not None:
        val_files = [v[:_scaled(limit, len(v), len(t))] for v, t in zip(val_files, train_files)]
        train_files = [t[:limit] for t in train_files]
    return _Listing(classes, train_files, val_files, val_source)


def _layout(root: Path) -> tuple[Path, Path | None, str]:
    if not (root / "train").is_dir():
        return root, None, "the last 10% of each class of train"
    for folder in ("val", "test"):
        if (root / folder).is_dir():
            return root / "train", root / folder, f"the {folder}/ folder"
    return root / "train", None, "the last 10% of each class of train"


def _carved(n: int) -> int:
    """Validation images carved from a class of ``n``: 10%, at least one while one is left for training."""
    return max(1, round(n * VAL_FRACTION)) if n > 1 else 0


def _class_folders(folder: Path) -> dict[str, Path]:
    with os.scandir(folder) as entries:
        found = {e.name: Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")}
    return dict(sorted(found.items()))


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name (subfolders and other files are ignored)."""
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries
                       if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())
    if not names:
        raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [folder / name for name in names]


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "nothing"


def _fingerprint(root: Path, listing: _Listing) -> str:
    """A hash of the folder's path and of every chosen file's split, class, name, size and mtime."""
    h = hashlib.sha256(f"{CACHE_FORMAT}\n{root}\n{listing.classes}\n".encode())
    for split, per_class in (("train", listing.train), ("val", listing.val)):
        for label, files in enumerate(per_class):
            for path in files:
                stat = path.stat()
                h.update(f"{split}\t{label}\t{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "data"


def _decode_listing(listing: _Listing, progress: Progress | None) -> dict[str, torch.Tensor]:
    train = [(path, label) for label, files in enumerate(listing.train) for path in files]
    val = [(path, label) for label, files in enumerate(listing.val) for path in files]
    images = _decode_all([p for p, _ in train + val], progress)
    return {
        "train_images": images[:len(train)], "train_labels": torch.tensor([y for _, y in train], dtype=torch.int64),
        "val_images": images[len(train):], "val_labels": torch.tensor([y for _, y in val], dtype=torch.int64),
    }


def _decode_all(paths: list[Path], progress: Progress | None) -> torch.Tensor:
    """Every image as RGB uint8 in one (N, 3, H, W) tensor, decoded by a thread pool (PIL releases the GIL)."""
    first = _decode(paths[0])
    out = torch.empty((len(paths), *first.shape), dtype=torch.uint8)
    pixels = out.numpy()
    chunks = [range(i, min(i + 256, len(paths))) for i in range(0, len(paths), 256)]

    def work(chunk: range) -> int:
        for i in chunk:
            pixels[i] = _decode(paths[i], expect=(paths[0], first.shape))
        return len(chunk)

    done = 0
    pool = ThreadPoolExecutor(max_workers=max(2, min(16, os.cpu_count() or 1)))
    try:
        for count in pool.map(work, chunks):
            done += count
            if progress is not None:
                progress(done, len(paths))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _decode(path: Path, expect: tuple[Path, tuple[int, ...]] | None = None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    except Exception as e:  # PIL raises many types for a bad file
        raise DataError(f"cannot read the image {path} ({_reason(e)}); replace or delete it") from None
    if expect is not None and pixels.shape != expect[1]:
        (_, h, w), (_, eh, ew) = pixels.shape, expect[1]
        raise DataError(f"all images must have one size, but {path} is {w}×{h} pixels and {expect[0]} is "
                        f"{ew}×{eh}; resize them first")
    return pixels


def _read_cache(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable cache is only a cache: decode again
        return None
    keys = {"train_images", "train_labels", "val_images", "val_labels"}
    if not isinstance(tensors, dict) or set(tensors) != keys:
        return None
    return tensors


def _write_cache(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:
        warnings.warn(f"the decoded images are not cached ({e}); set RESNET_VIZ_CACHE to a writable folder",
                      stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(tensors, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- archives ------------------------------------------------------------------------------------

def _archive_stem(path: Path) -> str | None:
    for suffix in (".tar.gz", ".tgz"):
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.name[:-len(suffix)]
    return None


def _extract(archive: Path, cache: Path) -> Path:
    """Extract once into the cache: into a temporary folder, renamed into place only when complete."""
    if not hasattr(tarfile, "data_filter"):
        raise DataError("extracting archives safely needs Python 3.10.12, 3.11.4 or newer; extract it by hand "
                        "and give the folder instead")
    stat = archive.stat()
    tag = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache / "archives" / f"{_safe(_archive_stem(archive))}-{tag}"
    if not target.is_dir():
        _extract_into(archive, target)
    return _archive_root(target)


def _extract_into(archive: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    except OSError as e:
        raise DataError(f"cannot write to the cache folder {target.parent} ({e}); set RESNET_VIZ_CACHE "
                        "or cache_dir to a writable folder") from None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, '..', and links leading outside
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # else another process finished first: use its copy
                raise
    except tarfile.FilterError as e:
        raise DataError(f"{archive} holds {e.tarinfo.name!r}, which would land outside its folder or is not a "
                        "plain file or folder; refusing to extract it") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot extract {archive} ({_reason(e)}); check that it is a complete .tar.gz") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _archive_root(folder: Path) -> Path:
    """The dataset folder inside an extracted archive: its top, or the one folder at its top."""
    if (folder / "train").is_dir():
        return folder
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


# -- synthetic data ------------------------------------------------------------------------------

def synthetic_dataset(seed: int = 0, train_per_class: int = 500, val_per_class: int = 100, num_classes: int = 10,
                      limit_per_class: int | None = None) -> Dataset:
    """Random CIFAR-shaped images that can be learned: each class has its own smooth random template
    (4×4 noise upsampled to 32×32), and each image is its class's template plus pixel noise."""
    if limit_per_class is not None and limit_per_class < train_per_class:
        val_per_class = _scaled(limit_per_class, val_per_class, train_per_class)
        train_per_class = limit_per_class
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)
    templates = 40 + 175 * F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)

    def sample(per_class: int) -> Split:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        noise = 48 * torch.randn(len(labels), 3, 32, 32, generator=g)
        return Split((templates[labels] + noise).round().clamp(0, 255).to(torch.uint8), labels)

    train, val = sample(train_per_class), sample(val_per_class)
    classes = tuple(f"class {i}" for i in range(num_classes))
    return _dataset(SYNTHETIC_NAME, classes, train, val, "a separate synthetic sample", synthetic=True)


# -- shared --------------------------------------------------------------------------------------

def _dataset(name: str, classes: tuple[str, ...], train: Split, val: Split, val_source: str,
             synthetic: bool = False) -> Dataset:
    mean, std = channel_stats(train.images)
    return Dataset(name, classes, train, val, val_source, synthetic, mean, std)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), on the 0-1 scale."""
    channels = images.shape[1]
    total, squares = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(4096):  # float64 copies of a chunk at a time, not of the whole split
        x = chunk.to(torch.float64)
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
    count = max(images.numel() // channels, 1)
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


# -- batches on the training device ----------------------------------------------------------------

class DeviceBatches:
    """One split on a device, served as normalised float32 batches, augmented there on the whole batch.

    The ``generator`` given to ``epoch`` must live on the same device as the data
    (``torch.Generator(device=device)``): the order, crops and flips are drawn from it there.
    """

    def __init__(self, split: Split, device: torch.device | str, mean: tuple[float, ...], std: tuple[float, ...],
                 *, channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.images = split.images.to(self.device)  # uint8 (N, C, H, W)
        self.labels = split.labels.to(self.device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.channels_last = channels_last
        std_t = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add
        self._scale, self._shift = 1 / (255 * std_t), -mean_t / std_t

    def __len__(self) -> int:
        return self.images.shape[0]

    def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
        _check_batch_size(batch_size)
        return len(self) // batch_size if drop_last else math.ceil(len(self) / batch_size)

    def epoch(self, batch_size: int, *, augment: bool, generator: torch.Generator | None,
              drop_last: bool = True, part: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(x, y)``: with ``augment``, in a random order with random crops and flips; else in order.
        ``part=(rank, parts)`` serves only every ``parts``-th image from the ``rank``-th on (evaluation split
        over processes); the parts together hold each image once."""
        _check_batch_size(batch_size)
        rank, parts = part
        images, labels = (self.images, self.labels) if parts == 1 else (self.images[rank::parts],
                                                                         self.labels[rank::parts])
        n = images.shape[0]
        if augment:
            if generator is None or generator.device.type != self.device.type:
                raise DataError(f"augmenting needs a torch.Generator on the data's device ({self.device}), "
                                f"got {'none' if generator is None else generator.device}")
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        batches = n // batch_size if drop_last else math.ceil(n / batch_size)
        for start in range(0, batches * batch_size, batch_size):
            index = order[start:start + batch_size]
            batch = images[index]
            if augment:
                batch = crop_and_flip(batch, generator)
            yield self._normalise(batch), labels[index]

    def shard_indices(self, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Which images a process trains on in an epoch: row k holds its share of the epoch's k-th global batch.

        The epoch's order is one permutation drawn from ``(seed, epoch)``, the same in every process; global
        batch k is ``order[k*batch_size:(k+1)*batch_size]`` and process ``rank`` of ``world`` takes the
        ``rank``-th of its ``world`` equal slices. So the global batches do not depend on the number of
        processes, and the processes' shards together hold each image of the epoch once (the last
        ``len % batch_size`` images of the order sit the epoch out)."""
        _check_batch_size(batch_size)
        share = _share(batch_size, world)
        order = torch.randperm(len(self), generator=_generator(self.device, seed, epoch), device=self.device)
        steps = len(self) // batch_size
        return order[:steps * batch_size].view(steps, world, share)[:, rank]

    def global_batches(self, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                       start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share ``(x, y)`` of each global training batch of an epoch, from batch ``start`` on,
        cropped and flipped. Each batch's crops and flips are drawn for the whole global batch from
        ``(seed, epoch, k)`` (each process draws them on its own device and keeps its slice), so the images a
        step trains on are the same for any number of processes, and a run resumed at batch ``start`` sees
        exactly what the uninterrupted run saw."""
        index = self.shard_indices(batch_size, seed=seed, epoch=epoch, rank=rank, world=world)
        share = index.shape[1]
        mine = slice(rank * share, (rank + 1) * share)
        for k in range(start, index.shape[0]):
            shifts = crop_shifts(batch_size, _generator(self.device, seed, epoch, k), self.device)
            images = shift_and_flip(self.images[index[k]], *(t[mine] for t in shifts))
            yield self._normalise(images), self.labels[index[k]]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = images.to(torch.float32, memory_format=fmt)
        return x.mul_(self._scale).add_(self._shift)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"the batch size must be a whole number of 1 or more, got {batch_size!r}")


def crop_and_flip(images: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """The standard CIFAR augmentation on a whole batch (B, C, H, W) at once: each image shifted by up to
    ``padding`` pixels each way with zeros filling in (a random crop of the zero-padded image), and
    mirrored left-right with probability 0.5. One gather does both; the result is channels_last in memory."""
    return shift_and_flip(images, *crop_shifts(images.shape[0], generator, images.device, padding), padding)


def crop_shifts(n: int, generator: torch.Generator, device: torch.device | str,
                padding: int = CROP_PADDING) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``n`` images: vertical and horizontal shifts in [-padding, padding] and mirror flags, each (n, 1)."""
    dy = torch.randint(-padding, padding + 1, (n, 1), generator=generator, device=device)
    dx = torch.randint(-padding, padding + 1, (n, 1), generator=generator, device=device)
    mirror = torch.rand(n, 1, generator=generator, device=device) < 0.5
    return dy, dx, mirror


def shift_and_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mirror: torch.Tensor,
                   padding: int = CROP_PADDING) -> torch.Tensor:
    """Each image shifted by (dy, dx) with zeros filling in, and mirrored where ``mirror``: one gather."""
    b, _, h, w = images.shape
    device = images.device
    cols = torch.arange(w, device=device).expand(b, w)
    cols = torch.where(mirror, w - 1 - cols, cols)
    rows = torch.arange(h, device=device) + dy + padding  # (B, H), into the padded image
    cols = cols + dx + padding  # (B, W)
    padded = F.pad(images, (padding, padding, padding, padding))
    batch = torch.arange(b, device=device).view(b, 1, 1)
    # advanced indices around a slice: the result is (B, H, W, C)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _share(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise DataError(f"the batch size {batch_size} does not split evenly over {world} processes: "
                        f"use a multiple of {world}")
    return batch_size // world


def _generator(device: torch.device, *parts: int) -> torch.Generator:
    """A generator on ``device`` seeded from a few whole numbers, mixed so that nearby tuples give unrelated
    streams (splitmix64 finaliser)."""
    seed = 0
    for part in parts:
        seed = (seed ^ (part & (2**64 - 1))) * 0x9E3779B97F4A7C15 % 2**64
        seed ^= seed >> 30
        seed = seed * 0xBF58476D1CE4E5B9 % 2**64
        seed ^= seed >> 27
    return torch.Generator(device=device).manual_seed(seed % 2**63)


def flip(x: torch.Tensor) -> torch.Tensor:
    """A batch (B, C, H, W) mirrored left-right, for test-time augmentation."""
    return x.flip(3)
