"""Load the source image sets from the user's disk into :class:`ImageSet` s, trusting no file.

``load_private(path)`` looks at what is on disk and picks the layout from :data:`LAYOUTS`, a table
with one row per format family, each family a module of this package that documents its rules:

* :mod:`~generator.sources.cifar`: CIFAR-10 and CIFAR-100, binary and python versions (the
  pickles read by a restricted unpickler);
* :mod:`~generator.sources.mnist`: MNIST / Fashion-MNIST IDX files, plain or gzipped;
* :mod:`~generator.sources.imagenet`: downsampled ImageNet (Imagenet32/64 ``npz`` batches);
* :mod:`~generator.sources.arrays`: an ``.npz`` with ``images`` and ``labels``, or a folder of
  ``images.npy`` + ``labels.npy``;
* :mod:`~generator.sources.folder`: an image folder with one subfolder per class, decoded by
  worker processes (the fallback: a folder no other row recognises).

A folder holding exactly one of the folders the official archives unpack to
(``cifar-10-batches-bin`` etc.) is looked into.  The training files are used by default
(``split="train"``).  Adding a format is one module with its loader and one row of
:data:`LAYOUTS` (CONTRIBUTING.md).

Shape (``size``, ``grey``): a set is loaded at its own shape (CIFAR 32x32x3, MNIST 28x28x1,
Imagenet64 64x64x3, ...), or with ``size`` = S resized to S x S by the image-folder rule (short
side to S with Pillow LANCZOS, then centre crop), keeping its channels: grey stays grey (C = 1),
RGB stays RGB.  An image folder is decoded at S (32 when no size is given) and to RGB, or with
``grey`` to 8-bit grey; ``grey`` for another layout is refused unless the set is grey already
(convert the data set itself if a grey release of colour images is wanted).

Untrusted files are read through :mod:`challenge.files` (regular files only) and capped before
they are read or allocated.  Every set has ``origin_columns = ("file", "record")``: index into
``source_files`` and record number inside that file (0 for an image file).  :func:`load_public`
reads the public set (a patch bank folder or an ``.npz`` with ``patches``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from challenge.errors import argument
from challenge.geometry import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from challenge.imageset import ImageSet
from generator.default_data import default_private, default_public
from generator.images import SIZE, SourceError, resize_images
from generator.patches import bank_progress, build_patch_bank, load_patch_bank
from generator.sources import arrays, cifar, folder, imagenet, mnist

__all__ = ["DEFAULT_BANK_SEED", "LAYOUTS", "Layout", "SourceError", "bank_seed", "detect_layout", "load_private",
           "load_public", "load_sources"]

DEFAULT_BANK_SEED = "instahide-patches-v1"
_ARCHIVE_DIRS = ("cifar-10-batches-bin", "cifar-100-binary", "cifar-10-batches-py", "cifar-100-python")


@dataclass(frozen=True)
class Layout:
    """One format family: how a folder of it is recognised (by the names of the files it holds, so
    nothing is read to decide) and the loader that reads it, at the set's own shape."""

    name: str
    what: str  # as the "unrecognised layout" message lists it
    recognises: Callable[[set[str]], bool]
    load: Callable[[Path, str], ImageSet]  # (folder, split)


def _any_of(*marks: str) -> Callable[[set[str]], bool]:
    return lambda names: any(mark in names for mark in marks)


LAYOUTS = (  # tried in this order; an image folder is the fallback (see detect_layout)
    Layout("cifar10-bin", "CIFAR-10 binary", _any_of("data_batch_1.bin", "test_batch.bin"),
           partial(cifar.load_binary, cifar100=False)),
    Layout("cifar100-bin", "CIFAR-100 binary", _any_of("train.bin", "test.bin"), partial(cifar.load_binary, cifar100=True)),
    Layout("cifar10-py", "CIFAR-10 python version", _any_of("data_batch_1", "test_batch"),
           partial(cifar.load_python, cifar100=False)),
    Layout("cifar100-py", "CIFAR-100 python version", lambda names: "meta" in names and bool({"train", "test"} & names),
           partial(cifar.load_python, cifar100=True)),
    Layout("mnist-idx", "MNIST IDX files", _any_of(*(f"{prefix}-images-idx3-ubyte{gz}" for prefix in ("train", "t10k")
                                                     for gz in ("", ".gz"))), mnist.load_idx),
    Layout("imagenet-npz", "Imagenet32/64 npz batches", _any_of("train_data_batch_1.npz", "val_data.npz"),
           imagenet.load_batches),
    Layout("npy", "images.npy + labels.npy", lambda names: {"images.npy", "labels.npy"} <= names,
           lambda path, split: arrays.load_npy_pair(path)),
)


def detect_layout(path: str | os.PathLike) -> tuple[str, Path]:
    """Return (layout name, resolved path) for ``path`` without reading any data: a row of
    :data:`LAYOUTS`, ``npz`` (a file) or ``image-folder``."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: no such file or directory")
    if not p.is_dir():  # a file, or something posing as one: read only through open_regular
        if p.suffix == ".npz":
            return "npz", p
        if p.suffix == ".npy":
            if (p.parent / "labels.npy").is_file() and p.name != "labels.npy":
                return "npy", p.parent
            raise SourceError(f"{p}: a .npy images file needs labels.npy beside it")
        raise SourceError(f"{p}: unrecognised file; expected a .npz file or a data set directory")
    names = {e.name for e in os.scandir(p) if not e.is_dir(follow_symlinks=False)}  # FIFOs too: refused when read
    for layout in LAYOUTS:
        if layout.recognises(names):
            return layout.name, p
    inner = [d for d in _ARCHIVE_DIRS if (p / d).is_dir()]
    if len(inner) == 1:
        return detect_layout(p / inner[0])
    if any(e.is_dir(follow_symlinks=False) and not e.name.startswith(".") for e in os.scandir(p)):
        return "image-folder", p
    raise SourceError(f"{p}: unrecognised layout; expected {', '.join(layout.what for layout in LAYOUTS)}, "
                      "a .npz file, or one subfolder per class")


def load_private(path: str | os.PathLike, *, split: str = "train", size: int | None = None,
                 grey: bool = False, workers: int | None = None) -> ImageSet:
    """Load the private set at ``path`` (layout detected from disk); ``split`` is "train" or "test".

    ``size`` resizes to size x size, ``grey`` decodes an image folder to grey (see the module
    docstring); ``workers`` decode an image folder (None: one per CPU).
    """
    if split not in ("train", "test"):
        raise SourceError(f"split: expected 'train' or 'test', got {split!r}")
    _check_size(size)
    layout, p = detect_layout(path)
    if layout == "image-folder":
        return folder.load_folder(p, size or SIZE, grey, workers)
    s = arrays.load_npz_set(p) if layout == "npz" else {row.name: row for row in LAYOUTS}[layout].load(p, split)
    return _reshaped(s, size, grey, str(p))


def _check_size(size: int | None) -> None:
    """``size`` is None (each set at its own shape) or a release's image side (FORMAT.md 2)."""
    if size is not None and (type(size) is not int or not MIN_IMAGE_SIDE <= size <= MAX_IMAGE_SIDE):
        raise SourceError(f"size: expected a side of {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} px (e.g. 28, 32, 64), got {size!r}")


def _reshaped(s: ImageSet, size: int | None, grey: bool, where: str) -> ImageSet:
    """``s`` resized to size x size (None: as it is); ``grey`` only confirms a grey set."""
    if grey and s.image_shape[2] != 1:
        raise SourceError(f"{where}: {argument('grey')}: this set is RGB ({'x'.join(map(str, s.image_shape))}); "
                          "grey decoding applies to image folders (convert the data set to grey first)")
    if size is None or s.image_shape[:2] == (size, size):
        return s
    return replace(s, images=resize_images(s.images, size))


def load_public(path: str | os.PathLike) -> ImageSet:
    """Load the public set: a patch bank folder written by ``instahide patches``
    (:func:`generator.patches.build_patch_bank`), or an ``.npz`` with an array ``patches``
    (N, H, W, C) uint8, C = 1 or 3.  Labels are -1.  Taken at its own shape (never resized)."""
    p = Path(path)
    if p.is_dir():
        return load_patch_bank(p)
    if not os.path.lexists(p):
        raise SourceError(f"{p}: no such file or directory")
    patches = arrays.load_npz(p, ("patches",))["patches"]
    if not arrays.is_image_array(patches):
        raise SourceError(f"{p}: patches: expected uint8 (N, H, W, C) with C = 1 or 3, got {patches.dtype} {patches.shape}")
    n = len(patches)
    origin = np.stack([np.zeros(n, np.int64), np.arange(n, dtype=np.int64)], axis=1)
    return ImageSet(np.ascontiguousarray(patches), labels=np.full(n, -1, np.int64), class_names=(),
                    source_files=(p.name,), origin=origin)


def load_sources(private_path: Path | None, public_path: Path | None, params, *, size: int | None = None,
                 grey: bool = False):
    """The private set and (when the mode uses one) the public bank; embedded data by default.

    Parameters
    ----------
    private_path : path or None
        A data set in one of :data:`LAYOUTS` or an image folder (:func:`load_private`); None: the
        embedded private set.
    public_path : path or None
        A patch bank (``instahide patches``), an ``.npz`` of patches, or an image folder (a bank
        is built of it at the private images' shape); None: the embedded patches.
    params : Params
        The release's parameters: whether its mode uses public patches.
    size : int, optional
        Resize the private images to size x size.
    grey : bool, optional
        Decode an image folder to grey.

    Returns
    -------
    private : ImageSet
    public : ImageSet or None
        None when ``params.mode`` uses no public patch.

    Raises
    ------
    SourceError
        If a data set is unreadable or malformed, or the bank's shape is not the private images'
        (a :class:`challenge.UsageError`).
    """
    _check_size(size)
    if private_path is not None:
        private = load_private(private_path, size=size, grey=grey)
    else:
        private = _reshaped(default_private(), size, grey, "the embedded private set")
    if not params.k_public:
        return private, None
    shape = private.image_shape
    if public_path is not None and public_path.is_dir() and not (public_path / "zarr.json").is_file():
        return private, _bank_from_folder(public_path, shape)
    public = default_public() if public_path is None else load_public(public_path)
    if public.image_shape != shape:
        where = "the embedded public patches" if public_path is None else str(public_path)
        raise SourceError(
            f"{where}: patches are {_shape_text(public.image_shape)}, the private images "
            f"{_shape_text(shape)}; every image of a release has one shape: give "
            f"{argument('public_path', flag='--public')} an image folder "
            f"(a bank is built at the private shape) or build one with 'instahide patches DIR --out bank.zarr "
            f"--size {shape[0]}{' --grey' if shape[2] == 1 else ''}'")
    return private, public


def _shape_text(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


def _bank_from_folder(folder: Path, shape: tuple[int, int, int]) -> ImageSet:
    """Build a patch bank of an image folder with the default settings at ``shape``, in a temporary place."""
    if shape[0] != shape[1]:
        raise SourceError(f"{folder}: patch banks are square; the private images are {_shape_text(shape)}: "
                          f"resize them with {argument('size')}")
    with tempfile.TemporaryDirectory(prefix="instahide-bank-") as tmp:
        bank = Path(tmp) / "bank.zarr"
        with bank_progress("bank", resumable=False) as hooks:
            build_patch_bank(folder, bank, seed=bank_seed(DEFAULT_BANK_SEED), patch_size=shape[0],
                             grey=shape[2] == 1, **hooks)
        return load_public(bank)


def bank_seed(text: str) -> bytes:
    """Crop positions are public: the bank seed only makes them reproducible, it guards nothing."""
    return text.encode()
