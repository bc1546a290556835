"""The embedded default data (``data/``): used when ``generate`` is given no data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from challenge.errors import UsageError
from challenge.imageset import ImageSet

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _require(name: str) -> Path:
    path = DATA_DIR / name
    if not path.is_file():
        raise UsageError(f"{path}: embedded default data not found; install from a checkout (pip install -e .)")
    return path


def _origin(n: int) -> np.ndarray:
    return np.stack([np.zeros(n, np.int64), np.arange(n, dtype=np.int64)], axis=1)


def default_private() -> ImageSet:
    """200 procedurally rendered 32x32 images in 10 classes (see data/README.md)."""
    with np.load(_require("private.npz"), allow_pickle=False) as z:
        images, labels, names = z["images"], z["labels"], z["class_names"]
    return ImageSet(images, labels.astype(np.int64), tuple(map(str, names)), ("private.npz",),
                    _origin(len(images)), ("file", "record"))


def default_public() -> ImageSet:
    """2,560 procedurally rendered 32x32 scene patches (see data/README.md)."""
    with np.load(_require("public.npz"), allow_pickle=False) as z:
        patches = z["patches"]
    return ImageSet(patches, np.full(len(patches), -1, np.int64), (), ("public.npz",),
                    _origin(len(patches)), ("file", "record"))
