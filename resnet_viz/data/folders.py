"""Image folders (ImageFolder layout) and .tar.gz archives of them: decoded once by a thread pool and cached
on disk; archives are extracted once into the cache, safely."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tarfile
import tempfile
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..caches import prune_least_recent, remove, touch, tree_bytes, tree_stats
from ..errors import DataError
from ..formatting import human_bytes
from ..io import atomic_file
from ..limits import limits, over
from .splits import VAL_FRACTION, Dataset, Progress, Split, make_dataset, reason, scaled_limit

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

CACHE_FORMAT = 1  # bump when the decoded cache's contents change


@dataclass(frozen=True)
class _Listing:
    classes: tuple[str, ...]
    train: list[list[Path]]  # per class, sorted by name
    val: list[list[Path]]
    val_source: str


def load_folder(root: Path, cache: Path, limit: int | None, progress: Progress | None,
                 name: str | None = None) -> Dataset:
    root = root.resolve()
    listing = _listing(root, limit)
    cache_file = cache / "decoded" / f"{_safe(root.name)}-{_fingerprint(root, listing)}.pt"
    tensors = _read_cache(cache_file)
    if tensors is None:
        tensors = _decode_listing(listing, progress)
        _write_cache(cache_file, tensors)
        prune_cache(cache, keep=cache_file)
    else:
        touch(cache_file)
    train = Split(tensors["train_images"], tensors["train_labels"])
    val = Split(tensors["val_images"], tensors["val_labels"])
    return make_dataset(name or root.name, listing.classes, train, val, listing.val_source)


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
        val_files = [v[:scaled_limit(limit, len(v), len(t))] for v, t in zip(val_files, train_files)]
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
    _check_decoded_size(len(paths), first.shape, paths[0])
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


def _check_decoded_size(count: int, shape: tuple[int, ...], first: Path) -> None:
    """Refuse a dataset whose decoded images would pass ``limits().decoded_bytes``, before decoding the rest."""
    limit = limits().decoded_bytes
    need = count * math.prod(shape)
    if need > limit:
        _, h, w = shape
        raise DataError(f"{count:,} images of {w}×{h} pixels (as {first.name}) take {human_bytes(need)} decoded, "
                        f"over {over('decoded_bytes', limit)}; keep fewer images per class or resize them")


def _decode(path: Path, expect: tuple[Path, tuple[int, ...]] | None = None) -> np.ndarray:
    from PIL import Image

    side = limits().image_side
    try:
        with Image.open(path) as image:
            if max(image.size) > side:  # read from the header: nothing is decoded yet
                w, h = image.size
                raise DataError(f"the image {path} is {w}×{h} pixels, over {over('image_side', side)} a side; "
                                "resize the images first")
            pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    except DataError:
        raise
    except Exception as e:  # PIL raises many types for a bad file
        raise DataError(f"cannot read the image {path} ({reason(e)}); replace or delete it") from None
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
    """Cache the decoded images, whole or not at all; a cache that cannot be written is only a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            torch.save(tensors, f)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        warnings.warn(f"the decoded images are not cached ({e}); set RESNET_VIZ_CACHE to a writable folder",
                      stacklevel=3)


# -- archives ------------------------------------------------------------------------------------

def archive_stem(path: Path) -> str | None:
    for suffix in (".tar.gz", ".tgz"):
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.name[:-len(suffix)]
    return None


def extract(archive: Path, cache: Path) -> Path:
    """Extract once into the cache: into a temporary folder, renamed into place only when complete. A copy that
    has lost files since (a deleted class folder) is extracted again."""
    if not hasattr(tarfile, "data_filter"):
        raise DataError("extracting archives safely needs Python 3.10.12, 3.11.4 or newer; extract it by hand "
                        "and give the folder instead")
    stat = archive.stat()
    tag = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache / "archives" / f"{_safe(archive_stem(archive))}-{tag}"
    if _complete(target):
        touch(target)
    else:
        remove(target)
        _extract_into(archive, target)
        prune_cache(cache, keep=target)
    return _archive_root(target)


MANIFEST = ".resnet-viz-extracted"  # in an extracted copy: how many files it had, and their bytes


def _complete(target: Path) -> bool:
    try:
        return json.loads((target / MANIFEST).read_text()) == tree_stats(target, skip=MANIFEST)
    except (OSError, ValueError):
        return False


def _extract_into(archive: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    except OSError as e:
        raise DataError(f"cannot write to the cache folder {target.parent} ({e}); set RESNET_VIZ_CACHE "
                        "or cache_dir to a writable folder") from None
    try:
        with tarfile.open(archive, "r|gz") as tar:  # a stream: each member is checked before it is written
            # the filter refuses absolute paths, '..', and links leading outside
            tar.extractall(tmp, members=_bounded(tar, archive), filter="data")
        (tmp / MANIFEST).write_text(json.dumps(tree_stats(tmp, skip=MANIFEST)))
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # else another process finished first: use its copy
                raise
    except tarfile.FilterError as e:
        raise DataError(f"{archive} holds {e.tarinfo.name!r}, which would land outside its folder or is not a "
                        "plain file or folder; refusing to extract it") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"cannot extract {archive} ({reason(e)}); check that it is a complete .tar.gz and that "
                        f"{target.parent} has room") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bounded(tar: tarfile.TarFile, archive: Path):
    """The archive's members, refused as soon as they add up to more than the bounds allow: the bytes they
    claim (at most ``archive_ratio`` times the archive's own size, and ``archive_bytes``) and their number."""
    bounds = limits()
    compressed = archive.stat().st_size
    by_ratio = bounds.archive_ratio * compressed < bounds.archive_bytes
    allowed = bounds.archive_ratio * compressed if by_ratio else bounds.archive_bytes
    bound = over("archive_ratio", bounds.archive_ratio) if by_ratio else over("archive_bytes", bounds.archive_bytes)
    total = 0
    for count, member in enumerate(tar, 1):
        total += member.size
        if total > allowed:
            raise DataError(f"{archive.name} would extract to more than {human_bytes(allowed)} "
                            f"({human_bytes(compressed)} compressed), over {bound}; refusing to extract it")
        if count > bounds.archive_members:
            raise DataError(f"{archive.name} holds more than {bounds.archive_members:,} files and folders, over "
                            f"{over('archive_members', bounds.archive_members)}; refusing to extract it")
        yield member


def _archive_root(folder: Path) -> Path:
    """The dataset folder inside an extracted archive: its top, or the one folder at its top."""
    if (folder / "train").is_dir():
        return folder
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


# -- the cache's size ----------------------------------------------------------------------------

def _entry_bytes(path: Path) -> int:
    try:  # an extracted archive knows its size
        return json.loads((path / MANIFEST).read_text())["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return tree_bytes(path)


def prune_cache(cache: Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Delete the least recently used decoded datasets and extracted archives until the cache holds at most
    ``limit`` bytes (``limits().disk_cache_bytes``); ``keep``, the entry just made, stays. Returns what went."""
    entries = [p for folder, pattern in (("decoded", "*.pt"), ("archives", "*")) for p in (cache / folder).glob(pattern)
               if not p.name.startswith(".")]
    return prune_least_recent(entries, limits().disk_cache_bytes if limit is None else limit,
                              keep=[keep] if keep else [], size=_entry_bytes)
