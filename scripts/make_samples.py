"""Make the package's sample images from the CIFAR-10 JPEG archive.

    .venv/bin/python scripts/make_samples.py PATH/cifar10-jpeg-train.tar.gz

From each class's validation part (its last 10%: files 4500-4999 of 5,000) every 50th image, 10 a class, is
decoded to RGB and written losslessly as PNG into resnet_viz/samples/, with labels.json beside them.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS, IMAGES_PER_CLASS = 10, 5000
FIRST_VALIDATION = IMAGES_PER_CLASS - IMAGES_PER_CLASS // 10  # the last 10% of each class
STEP = (IMAGES_PER_CLASS - FIRST_VALIDATION) // PER_CLASS
OUT = Path(__file__).resolve().parents[1] / "resnet_viz" / "samples"


def chosen() -> dict[str, tuple[int, str]]:
    """Archive member -> (label, PNG name)."""
    return {f"train/{name}/{index:04d}.jpg": (label, f"{name}-{index:04d}.png")
            for label, name in enumerate(CLASSES)
            for index in range(FIRST_VALIDATION, IMAGES_PER_CLASS, STEP)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path)
    args = parser.parse_args()
    wanted = chosen()
    found = {}
    with tarfile.open(args.archive, "r|gz") as tar:
        for member in tar:
            if member.name in wanted:
                found[member.name] = tar.extractfile(member).read()
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise SystemExit(f"the archive lacks {len(missing)} of the images, {missing[0]} first")
    OUT.mkdir(exist_ok=True)
    images = []
    for source, (label, file) in wanted.items():
        with Image.open(io.BytesIO(found[source])) as image:
            image.convert("RGB").save(OUT / file, optimize=True)
        images.append({"file": file, "label": label, "class_name": CLASSES[label], "source": source})
    index = {"source": "CIFAR-10 (Krizhevsky 2009), training split as JPEG at quality 75; validation part only",
             "classes": list(CLASSES), "images": images}
    (OUT / "labels.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(images)} images to {OUT}")


if __name__ == "__main__":
    main()
