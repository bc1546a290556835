"""The embedded default data (``generator/data/``, made by ``data/make_default_data.py``): used when
``generate`` is given no data set.  It is package data, read with :mod:`importlib.resources`, so an
installed wheel finds it as a checkout does."""

from __future__ import annotations

from importlib import resources

import numpy as np

from challenge.errors import UsageError
from challenge.imageset import ImageSet

__all__ = ["default_private", "default_public"]


def _load(name: str) -> dict[str, np.ndarray]:
    resource = resources.files("generator") / "data" / name
    try:
        with resource.open("rb") as f, np.load(f, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except FileNotFoundError:
        raise UsageError(f"{resource}: embedded default data not found; this installation is incomplete "
                         "(reinstall instahide-challenge)") from None


def _origin(n: int) -> np.ndarray:
    return np.stack([np.zeros(n, np.int64), np.arange(n, dtype=np.int64)], axis=1)


def default_private() -> ImageSet:
    """The embedded private set: 200 procedurally rendered 32x32 images in 10 classes (data/README.md).

    Returns
    -------
    images : ImageSet
        Anyone who has this tool has them: for practice and tests, never a real challenge.
    """
    z = _load("private.npz")
    images, labels, names = z["images"], z["labels"], z["class_names"]
    return ImageSet(images, labels=labels.astype(np.int64), class_names=tuple(map(str, names)),
                    source_files=("private.npz",), origin=_origin(len(images)))


def default_public() -> ImageSet:
    """The embedded public patch bank: 2,560 procedurally rendered 32x32 scene patches (data/README.md).

    Returns
    -------
    patches : ImageSet
        Labels -1 (patches have no class).
    """
    patches = _load("public.npz")["patches"]
    return ImageSet(patches, labels=np.full(len(patches), -1, np.int64), class_names=(), source_files=("public.npz",),
                    origin=_origin(len(patches)))
