"""Load a private image set from the user's disk into an :class:`ImageSet`, trusting no file.

``load_private(path)`` looks at what is on disk and picks the layout:

* CIFAR-10 binary: ``data_batch_1.bin``..``data_batch_5.bin`` (``test_batch.bin`` with
  ``split="test"``); records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32).
  Class names from ``batches.meta.txt`` when present.
* CIFAR-100 binary: ``train.bin`` (``test.bin``); records of 2 label bytes (coarse, fine) + 3072.
  Labels are the *fine* labels; class names from ``fine_label_names.txt`` when present.
* CIFAR-10 python: ``data_batch_1``..``data_batch_5`` (``test_batch``), ``batches.meta``.
* CIFAR-100 python: ``train`` (``test``), ``meta``; fine labels.
  These are Python 2 pickles: they are read with :class:`RestrictedUnpickler`, which admits only the
  numpy array reconstruction globals the real files contain and refuses anything else before it runs.
* MNIST / Fashion-MNIST IDX files: ``train-images-idx3-ubyte`` + ``train-labels-idx1-ubyte``
  (``t10k-*`` with ``split="test"``), each plain or gzipped (``.gz``; the plain file is read when
  both are there).  An IDX file is a big-endian header, magic ``00 00 08 D`` (unsigned bytes, D
  dimensions: 3 for images, 1 for labels) then D uint32 sizes, then the bytes row-major.  The
  magic, the sizes (images N x rows x cols, labels N, the same N) and the length (a plain file
  must hold exactly the bytes its header claims; a gzipped one is inflated only up to the claim
  plus one byte, so a gzip bomb stops there) are checked.  Images are grey (N, rows, cols, 1);
  class names are the label numbers ("0".."9").
* Downsampled ImageNet (Imagenet32 / Imagenet64 / Imagenet16 ``npz`` version):
  ``train_data_batch_1.npz``.. (``val_data.npz`` with ``split="test"``), each with ``data`` uint8
  (N, 3*S*S), every row R, G, B planes of an S x S image row-major (as CIFAR's), and ``labels``
  (N,) integers 1..1000; S is taken from the width and must be the same in every file; other
  arrays (``mean``) are not read.  Labels are stored 0-based (``labels - 1``) and the class names
  are the file's 1-based label numbers as text ("1".."1000"), so a name is the authors' class id.
* ``.npz`` with arrays ``images`` (N, H, W, C) uint8, C = 1 (grey) or 3 (RGB), and ``labels``
  (N,) integer (optional ``class_names``, a unicode array), or a directory holding
  ``images.npy`` + ``labels.npy``.  Read with ``allow_pickle=False``.
* An image folder with one subfolder per class (torchvision ``ImageFolder`` / ImageNet layout);
  classes are the sorted subfolder names.

Shape (``size``, ``grey``): a set is loaded at its own shape (CIFAR 32x32x3, MNIST 28x28x1,
Imagenet64 64x64x3, ...), or with ``size`` = S resized to S x S by the image-folder rule below
(short side to S with Pillow LANCZOS, then centre crop), keeping its channels: grey stays grey
(C = 1), RGB stays RGB.  An image folder is decoded at S (32 when no size is given)
and to RGB, or with ``grey`` to 8-bit grey (Pillow's "L", ITU-R 601-2 luma: 299 R + 587 G +
114 B over 1000): a folder of grey photos loads as RGB with three equal channels unless
``grey`` is asked for, so the same folder never changes shape by what happens to be in it.
``grey`` for another layout is refused unless the set is grey already (convert the data set
itself if a grey release of colour images is wanted).

Untrusted files are read through :mod:`challenge.files` (regular files only) and capped before
they are read or allocated: a ``.npy`` array's header (shape, dtype) is checked against the bytes
the file or zip member really holds and against :data:`MAX_ARRAY_BYTES`; a CIFAR file against
:data:`MAX_BATCH_BYTES`; a class-name file against ``MAX_NAMES_BYTES``.

Every set has ``origin_columns = ("file", "record")``: index into ``source_files`` and record
number inside that file (0 for an image file).  :func:`load_public` reads the public set (a patch
bank folder or an ``.npz`` with ``patches``).

The training files are used by default (``split="train"``); every batch file present is required
to be numbered 1..k without gaps.  A directory that holds exactly one of the folders the official
archives unpack to (``cifar-10-batches-bin`` etc.) is looked into.

Image folder rules (documented here because they change pixels):

* Files: recursive walk of each class folder, sorted by relative POSIX path; hidden entries
  (name starting with ".") are ignored; symlinked *directories* are never followed (so symlink
  loops cannot hang the walk) and are counted in ``notes["skipped_symlinked_dirs"]``; only files
  with an extension in :data:`IMAGE_EXTENSIONS` are read, others are counted in
  ``notes["ignored_non_image_files"]``.  Multi-frame files give their first frame; EXIF
  orientation is ignored (pixels as stored), as torchvision does.  Symlinked files are read;
  files directly in the top folder are ignored (``notes["ignored_top_level_files"]``).
* Conversion to 8-bit RGB (:func:`generator.images.to_8bit`; to 8-bit grey with ``grey``, where an
  RGB file counts as ``converted_RGB``), counted as ``notes["converted_<MODE>"]``:
  16-bit/32-bit integer grey (``I;16*``, ``I``) -> clip to 0..65535, then ``round(v / 257)``;
  everything else through Pillow's ``convert("RGB")`` (grey is replicated, palettes expanded,
  CMYK converted, alpha dropped as torchvision does; ``F`` is clipped to 0..255 by Pillow).
* Resize: images already S x S (S = ``size``, 32 by default) are kept as they are; others are
  resized so the short side is S (long side ``long * S / short`` rounded half up) with Pillow
  LANCZOS, then centre-cropped to S x S (offset ``(resized side - S) // 2``).
* Decoding runs in ``workers`` processes (default: one per CPU; a folder of fewer than
  :data:`PARALLEL_FROM` files is decoded in this process) with a progress bar on a terminal's
  stderr; files are decoded in chunks taken back in order, so the set is the same bytes in the
  same order whatever the worker count.
* Oversized images are skipped before decoding and counted in ``notes["skipped_oversized"]``:
  more than :data:`MAX_IMAGE_PIXELS` pixels, or a long side more than :data:`MAX_ASPECT_RATIO`
  times the short one (a 1.2 KB PNG of 1 x 200,000 px would otherwise be upscaled to
  32 x 6,400,000).  Entries that cannot be examined (a symlink loop, a link into an unreadable
  place) are counted in ``notes["skipped_unreadable_entries"]``; FIFOs, devices and sockets, or
  links to them, in ``notes["ignored_not_regular"]``, and an image is opened only if it is a
  regular file at the moment it is read.
* Unreadable files (corrupt, truncated, unknown format) are skipped and counted in
  ``notes["skipped_unreadable"]``; the private set must stay usable when one file of 50,000 is
  damaged, and the count is reported in summaries.  A class folder with no image file, or with
  none readable, is an error naming the folder.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from challenge.files import open_regular, read_bytes, read_text
from challenge.geometry import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from challenge.imageset import ImageSet
from challenge.npy import parse_header
from challenge.progress import Progress
from generator.default_data import default_private, default_public
from generator.images import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    MAX_ARRAY_BYTES,
    SIZE,
    ImageTooLarge,
    SourceError,
    count_note,
    read_image8,
    resize_center_crop,
    resize_images,
    walk_image_files,
)
from generator.patches import bank_progress, build_patch_bank, load_patch_bank
from generator.workers import WorkerDied, default_workers, in_order, start_pool

__all__ = [
    "DEFAULT_BANK_SEED",
    "MAX_BATCH_BYTES",
    "PARALLEL_FROM",
    "RestrictedUnpickler",
    "SourceError",
    "bank_seed",
    "detect_layout",
    "load_private",
    "load_public",
    "load_sources",
]

CIFAR_PIXELS = 3072
DEFAULT_BANK_SEED = "instahide-patches-v1"

# Caps on what an untrusted data set may make this tool read or allocate (see the module doc;
# MAX_ARRAY_BYTES and the image caps are in generator.images).
MAX_BATCH_BYTES = 256 << 20  # one CIFAR batch file (CIFAR-100's train is 155 MB)
MAX_NAMES_BYTES = 1 << 20  # a class-name text file

PARALLEL_FROM = 256  # image files from which a folder is decoded by worker processes
FOLDER_CHUNK = 32  # image files a worker decodes at a time
IMAGENET_CLASSES = 1000

_ARCHIVE_DIRS = ("cifar-10-batches-bin", "cifar-100-binary", "cifar-10-batches-py", "cifar-100-python")


# --------------------------------------------------------------------------------------------
# Layout detection


def detect_layout(path: str | os.PathLike) -> tuple[str, Path]:
    """Return (layout name, resolved path) for ``path`` without reading any data.

    Layout names: ``cifar10-bin``, ``cifar100-bin``, ``cifar10-py``, ``cifar100-py``, ``mnist-idx``,
    ``imagenet-npz``, ``npz``, ``npy``, ``image-folder``.
    """
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
    if "data_batch_1.bin" in names or "test_batch.bin" in names:
        return "cifar10-bin", p
    if "train.bin" in names or "test.bin" in names:
        return "cifar100-bin", p
    if "data_batch_1" in names or "test_batch" in names:
        return "cifar10-py", p
    if ("train" in names or "test" in names) and "meta" in names:
        return "cifar100-py", p
    if any(f"{prefix}-images-idx3-ubyte{gz}" in names for prefix in ("train", "t10k") for gz in ("", ".gz")):
        return "mnist-idx", p
    if "train_data_batch_1.npz" in names or "val_data.npz" in names:
        return "imagenet-npz", p
    if "images.npy" in names and "labels.npy" in names:
        return "npy", p
    inner = [d for d in _ARCHIVE_DIRS if (p / d).is_dir()]
    if len(inner) == 1:
        return detect_layout(p / inner[0])
    if any(e.is_dir(follow_symlinks=False) and not e.name.startswith(".") for e in os.scandir(p)):
        return "image-folder", p
    raise SourceError(
        f"{p}: unrecognised layout; expected CIFAR-10/100 (binary or python version), MNIST IDX files, "
        "Imagenet32/64 npz batches, images.npy + labels.npy, a .npz file, or one subfolder per class"
    )


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
        return _load_image_folder(p, size or SIZE, grey, workers)
    if layout == "cifar10-bin":
        s = _load_cifar_bin(p, split, cifar100=False)
    elif layout == "cifar100-bin":
        s = _load_cifar_bin(p, split, cifar100=True)
    elif layout == "cifar10-py":
        s = _load_cifar_py(p, split, cifar100=False)
    elif layout == "cifar100-py":
        s = _load_cifar_py(p, split, cifar100=True)
    elif layout == "mnist-idx":
        s = _load_mnist(p, split)
    elif layout == "imagenet-npz":
        s = _load_imagenet_npz(p, split)
    elif layout == "npz":
        s = _load_npz_set(p)
    else:
        s = _load_npy_pair(p)
    return _reshaped(s, size, grey, str(p))


def _check_size(size: int | None) -> None:
    """``size`` is None (each set at its own shape) or a release's image side (FORMAT.md 2)."""
    if size is not None and (type(size) is not int or not MIN_IMAGE_SIDE <= size <= MAX_IMAGE_SIDE):
        raise SourceError(f"size: expected a side of {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} px (e.g. 28, 32, 64), got {size!r}")


def _reshaped(s: ImageSet, size: int | None, grey: bool, where: str) -> ImageSet:
    """``s`` resized to size x size (None: as it is); ``grey`` only confirms a grey set."""
    if grey and s.image_shape[2] != 1:
        raise SourceError(f"{where}: --grey: this set is RGB ({'x'.join(map(str, s.image_shape))}); "
                          "grey decoding applies to image folders (convert the data set to grey first)")
    if size is None or s.image_shape[:2] == (size, size):
        return s
    return ImageSet(resize_images(s.images, size), s.labels, s.class_names, s.source_files, s.origin,
                    s.origin_columns, s.notes)


def load_public(path: str | os.PathLike) -> ImageSet:
    """Load the public set: a patch bank folder written by ``instahide patches``
    (:func:`generator.patches.build_patch_bank`), or an ``.npz`` with an array ``patches``
    (N, H, W, C) uint8, C = 1 or 3.  Labels are -1.  Taken at its own shape (never resized)."""
    p = Path(path)
    if p.is_dir():
        return load_patch_bank(p)
    if not os.path.lexists(p):
        raise SourceError(f"{p}: no such file or directory")
    patches = _load_npz(p, ("patches",))["patches"]
    if not _image_array(patches):
        raise SourceError(f"{p}: patches: expected uint8 (N, H, W, C) with C = 1 or 3, got {patches.dtype} {patches.shape}")
    n = len(patches)
    origin = np.stack([np.zeros(n, np.int64), np.arange(n, dtype=np.int64)], axis=1)
    return ImageSet(np.ascontiguousarray(patches), np.full(n, -1, np.int64), (), (p.name,), origin,
                    ("file", "record"))


def _image_array(a: np.ndarray) -> bool:
    return a.dtype == np.uint8 and a.ndim == 4 and a.shape[3] in (1, 3) and min(a.shape[1:3]) >= 1


# --------------------------------------------------------------------------------------------
# CIFAR, binary version


def _numbered_batches(d: Path, pattern: str, what: str) -> list[Path]:
    """Files data_batch_1..k (no gaps) in ``d``; ``pattern`` has one ``(\\d+)`` group."""
    rx = re.compile(pattern)
    found = {}
    for e in os.scandir(d):
        m = rx.fullmatch(e.name)
        if m:
            found[int(m.group(1))] = d / e.name
    if not found:
        raise SourceError(f"{d}: no {what} files found")
    missing = [i for i in range(1, max(found) + 1) if i not in found]
    if missing:
        raise SourceError(f"{d}: {what} {missing[0]} is missing; batches must be numbered 1..{max(found)}")
    return [found[i] for i in sorted(found)]


def _read_class_names_txt(path: Path, expected: int) -> tuple[str, ...]:
    if not os.path.lexists(path):
        return tuple(str(i) for i in range(expected))
    text = read_text(path, MAX_NAMES_BYTES, what="class-name file (UTF-8, one name a line)")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != expected:
        raise SourceError(f"{path}: class names: expected {expected} non-empty lines, got {len(names)}")
    return names


def _planar_to_hwc(planes: np.ndarray, out: np.ndarray) -> None:
    """(n, C*H*W) planes (R, G, B) -> out (n, H, W, C); in blocks that stay in cache (4x faster
    than one big transpose)."""
    n, h, w, channels = out.shape
    flat = out.reshape(n, h * w, channels)
    rows = max(1, (256 * 3072) // (h * w * channels))
    for i in range(0, n, rows):
        block = planes[i : i + rows]
        for c in range(channels):
            flat[i : i + rows, :, c] = block[:, c * h * w : (c + 1) * h * w]


def _load_cifar_bin(d: Path, split: str, *, cifar100: bool) -> ImageSet:
    label_bytes = 2 if cifar100 else 1
    n_classes = 100 if cifar100 else 10
    if cifar100:
        files = [d / f"{split}.bin"]
        if not files[0].is_file():
            raise SourceError(f"{files[0]}: missing (CIFAR-100 binary {split} file)")
        names = _read_class_names_txt(d / "fine_label_names.txt", 100)
    else:
        if split == "train":
            files = _numbered_batches(d, r"data_batch_(\d+)\.bin", "data_batch_N.bin")
        else:
            files = [d / "test_batch.bin"]
            if not files[0].is_file():
                raise SourceError(f"{files[0]}: missing (CIFAR-10 binary test file)")
        names = _read_class_names_txt(d / "batches.meta.txt", 10)
    rec = label_bytes + CIFAR_PIXELS
    counts = []
    for f in files:
        with open_regular(f) as fh:
            size = os.fstat(fh.fileno()).st_size
        if size > MAX_BATCH_BYTES:
            raise SourceError(f"{f}: {size:,} bytes, more than the {MAX_BATCH_BYTES:,} a CIFAR batch file may have")
        if size == 0 or size % rec:
            raise SourceError(
                f"{f}: file size {size} bytes is not a whole number of {rec}-byte records "
                f"({label_bytes} label byte{'s' if label_bytes > 1 else ''} + {CIFAR_PIXELS} pixel bytes)"
            )
        counts.append(size // rec)
    total = sum(counts)
    images = np.empty((total, 32, 32, 3), np.uint8)
    labels = np.empty(total, np.int64)
    origin = np.empty((total, 2), np.int64)
    at = 0
    for i, (f, n) in enumerate(zip(files, counts)):
        raw = np.frombuffer(read_bytes(f, n * rec, what="CIFAR batch file"), np.uint8)
        if raw.size != n * rec:  # file changed while reading
            raise SourceError(f"{f}: read {raw.size} bytes, expected {n * rec}")
        raw = raw.reshape(n, rec)
        lab = raw[:, label_bytes - 1]
        if cifar100:
            bad = np.flatnonzero(raw[:, 0] >= 20)
            if bad.size:
                raise SourceError(f"{f}: record {bad[0]}: coarse label: expected 0..19, got {raw[bad[0], 0]}")
        bad = np.flatnonzero(lab >= n_classes)
        if bad.size:
            field = "fine label" if cifar100 else "label"
            raise SourceError(f"{f}: record {bad[0]}: {field}: expected 0..{n_classes - 1}, got {lab[bad[0]]}")
        _planar_to_hwc(raw[:, label_bytes:], images[at : at + n])
        labels[at : at + n] = lab
        origin[at : at + n, 0] = i
        origin[at : at + n, 1] = np.arange(n)
        at += n
    return ImageSet(images, labels, names, tuple(f.name for f in files), origin, ("file", "record"))


# --------------------------------------------------------------------------------------------
# CIFAR, python version


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NdarrayType:
    """Stands for ``numpy.ndarray`` in a pickle: it may only name the type to rebuild, never be
    called (``ndarray((10**12,))`` would allocate before any check)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a CIFAR pickle holds (numpy array rebuilding).

    Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`SourceError` before
    it is called, so a crafted file cannot run code.  Arrays are rebuilt only the way numpy
    pickles them: an empty array whose state (shape, dtype, bytes) then comes from the file, so an
    array is never larger than the file.  ``name`` is used in error messages.
    """

    def __init__(self, file, *, name: str, encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)
        self.name = name
        reconstruct = self._empty_array
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): _NdarrayType,
            ("numpy", "dtype"): np.dtype,
        }

    def _empty_array(self, cls, shape, dtype):
        if cls is not _NdarrayType or shape != (0,):
            raise SourceError(f"{self.name}: refused array reconstruction {shape!r}: numpy pickles rebuild "
                              "arrays from an empty one; the file is not a CIFAR batch, or it is malicious")
        return _numpy_reconstruct()(np.ndarray, (0,), dtype)

    def find_class(self, module: str, name: str):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise SourceError(
                f"{self.name}: refused global '{module}.{name}': a CIFAR pickle may only hold numpy "
                "arrays, lists, ints and strings; the file is not a CIFAR batch, or it is malicious"
            )
        return obj

    def persistent_load(self, pid):
        raise SourceError(f"{self.name}: refused persistent id in pickle")


def _unpickle(path: Path) -> dict:
    data = read_bytes(path, MAX_BATCH_BYTES, what="CIFAR pickle")
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), name=str(path)).load()
    except SourceError:
        raise
    except Exception as e:  # any malformed pickle (MemoryError and RecursionError included): user error
        raise SourceError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise SourceError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _labels_from(value, path: Path, key: str, n: int, n_classes: int) -> np.ndarray:
    """``n`` labels in 0..n_classes-1 from a pickled list of ints or an integer array.

    The elements are checked one by one (no ``np.asarray`` on an unknown object: a list that
    contains itself, or lists nested without end, would recurse until Python gives up).
    """
    if isinstance(value, np.ndarray):
        ok = value.dtype.kind in "iu" and value.shape == (n,)
        values = value.tolist() if ok else []
    else:
        ok = isinstance(value, list) and len(value) == n and all(type(v) is int for v in value)
        values = value
    if not ok:
        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else (
            f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__)
        raise SourceError(f"{path}: {key}: expected {n} integers, got {got}")
    bad = next((i for i, v in enumerate(values) if not 0 <= v < n_classes), None)
    if bad is not None:
        raise SourceError(f"{path}: record {bad}: {key}: expected 0..{n_classes - 1}, got {values[bad]}")
    return np.array(values, np.int64)


def _names_from(value, path: Path, key: str, expected: int) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != expected:
        raise SourceError(f"{path}: {key}: expected a list of {expected} names")
    out = []
    for v in value:
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        if not isinstance(v, str):
            raise SourceError(f"{path}: {key}: expected strings, got {type(v).__name__}")
        out.append(v)
    return tuple(out)


def _load_cifar_py(d: Path, split: str, *, cifar100: bool) -> ImageSet:
    n_classes = 100 if cifar100 else 10
    label_key = "fine_labels" if cifar100 else "labels"
    if cifar100:
        files = [d / split]
        meta_path, meta_key = d / "meta", "fine_label_names"
    elif split == "train":
        files = _numbered_batches(d, r"data_batch_(\d+)", "data_batch_N")
        meta_path, meta_key = d / "batches.meta", "label_names"
    else:
        files = [d / "test_batch"]
        meta_path, meta_key = d / "batches.meta", "label_names"
    for f in files:
        if not os.path.lexists(f):
            raise SourceError(f"{f}: missing")
    names = tuple(str(i) for i in range(n_classes))
    if os.path.lexists(meta_path):
        meta = _unpickle(meta_path)
        if meta_key not in meta:
            raise SourceError(f"{meta_path}: {meta_key}: missing key")
        names = _names_from(meta[meta_key], meta_path, meta_key, n_classes)
    parts_i, parts_l, parts_o = [], [], []
    for i, f in enumerate(files):
        batch = _unpickle(f)
        data = batch.get("data")
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == CIFAR_PIXELS):
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise SourceError(f"{f}: data: expected a uint8 array (N, {CIFAR_PIXELS}), got {got}")
        n = len(data)
        if label_key not in batch:
            raise SourceError(f"{f}: {label_key}: missing key")
        lab = _labels_from(batch[label_key], f, label_key, n, n_classes)
        img = np.empty((n, 32, 32, 3), np.uint8)
        _planar_to_hwc(data, img)
        parts_i.append(img)
        parts_l.append(lab)
        parts_o.append(np.stack([np.full(n, i, np.int64), np.arange(n, dtype=np.int64)], axis=1))
    images = np.concatenate(parts_i)
    return ImageSet(
        images, np.concatenate(parts_l), names, tuple(f.name for f in files),
        np.concatenate(parts_o), ("file", "record"),
    )


# --------------------------------------------------------------------------------------------
# numpy files


def _check_arrays(images, labels, where_i: str, where_l: str, class_names=None) -> tuple:
    if not _image_array(images):
        raise SourceError(f"{where_i}: images: expected uint8 (N, H, W, C) with C = 1 or 3, "
                          f"got {images.dtype} {images.shape}")
    n = len(images)
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise SourceError(f"{where_l}: labels: expected integer ({n},), got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if n and labels.min() < 0:
        raise SourceError(f"{where_l}: labels: expected values >= 0, got {labels.min()}")
    n_classes = int(labels.max()) + 1 if n else 0
    if class_names is not None:
        if class_names.dtype.kind != "U" or class_names.ndim != 1:
            raise SourceError(f"{where_l}: class_names: expected a 1-D unicode array, got {class_names.dtype}")
        names = tuple(str(s) for s in class_names)
        if len(names) < n_classes:
            raise SourceError(f"{where_l}: class_names: expected at least {n_classes} names, got {len(names)}")
    else:
        names = tuple(str(i) for i in range(n_classes))
    origin = np.stack([np.zeros(n, np.int64), np.arange(n, dtype=np.int64)], axis=1)
    return images, labels, names, origin


def _read_npy(f, where: str, size: int) -> np.ndarray:
    """The array in the ``.npy`` stream ``f`` of ``size`` bytes, its header checked first.

    The shape and dtype in the header must account for exactly ``size`` bytes and stay under
    :data:`MAX_ARRAY_BYTES`, so a header claiming 10^9 images is refused before anything is
    allocated; object arrays (pickles) are refused.
    """
    shape, fortran_order, dtype = _read_npy_header(f, where)
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))
    if nbytes > MAX_ARRAY_BYTES:
        raise SourceError(f"{where}: header claims {dtype} {shape} = {nbytes:,} bytes, more than the "
                          f"{MAX_ARRAY_BYTES:,} allowed; refused without reading it")
    if f.tell() + nbytes != size:
        raise SourceError(f"{where}: header claims {dtype} {shape} = {nbytes:,} bytes of data, but "
                          f"{size - f.tell():,} follow the header")
    buffer = _read_exactly(f, nbytes, where, "the header claims")
    return buffer.view(dtype).reshape(shape, order="F" if fortran_order else "C")


def _read_exactly(f, nbytes: int, where: str, claim: str) -> np.ndarray:
    """``nbytes`` bytes of the stream ``f`` as a uint8 array; fewer is an error naming ``claim``."""
    buffer = np.empty(nbytes, np.uint8)
    view, got = memoryview(buffer), 0
    try:
        while got < nbytes and (n := f.readinto(view[got:])):
            got += n
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise SourceError(f"{where}: unreadable ({e})") from None
    if got != nbytes:
        raise SourceError(f"{where}: {got:,} bytes of data, {claim} {nbytes:,} (truncated?)")
    return buffer


def _read_npy_header(f, where: str) -> tuple:
    """(shape, fortran_order, dtype) of the ``.npy`` stream ``f``; object dtypes refused."""
    try:
        shape, fortran_order, dtype = parse_header(f)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise SourceError(f"{where}: not a readable .npy header ({e})") from None
    if dtype.hasobject:
        raise SourceError(f"{where}: dtype {dtype} holds Python objects; expected plain numbers")
    return shape, fortran_order, dtype


def _load_npy_file(path: Path) -> np.ndarray:
    with open_regular(path) as f:
        return _read_npy(f, str(path), os.fstat(f.fileno()).st_size)


def _load_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Arrays ``required`` (and those of ``optional`` present) of the ``.npz`` at ``path``.

    Each member's declared size comes from the zip directory and is checked against its ``.npy``
    header before it is inflated; the zip reader stops at the declared size and checks the CRC,
    so a member that inflates to more than it declares (a zip bomb) is refused too.
    """
    with open_regular(path) as fh:
        try:
            archive = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise SourceError(f"{path}: not a readable .npz archive ({e})") from None
        with archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            for key in required:
                if key not in members:
                    raise SourceError(f"{path}: {key}: missing array (has {', '.join(sorted(members)) or 'none'})")
            out = {}
            for key in required + tuple(k for k in optional if k in members):
                info = members[key]
                where = f"{path}: member {info.filename} ({key})"
                if info.file_size > MAX_ARRAY_BYTES + 65536:
                    raise SourceError(f"{where}: declares {info.file_size:,} bytes, more than the "
                                      f"{MAX_ARRAY_BYTES:,} allowed; refused without inflating it")
                try:
                    with archive.open(info) as f:
                        out[key] = _read_npy(f, where, info.file_size)
                except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
                    if isinstance(e, SourceError):
                        raise
                    raise SourceError(f"{where}: unreadable ({e})") from None
            return out


def _load_npz_set(path: Path) -> ImageSet:
    arrays = _load_npz(path, ("images", "labels"), ("class_names",))
    images, labels, names, origin = _check_arrays(arrays["images"], arrays["labels"], str(path), str(path),
                                                  arrays.get("class_names"))
    return ImageSet(np.ascontiguousarray(images), labels, names, (path.name,), origin, ("file", "record"))


def _load_npy_pair(d: Path) -> ImageSet:
    ip, lp = d / "images.npy", d / "labels.npy"
    images, labels = _load_npy_file(ip), _load_npy_file(lp)
    cp = d / "class_names.npy"
    cn = _load_npy_file(cp) if os.path.lexists(cp) else None
    images, labels, names, origin = _check_arrays(images, labels, str(ip), str(lp), cn)
    return ImageSet(np.ascontiguousarray(images), labels, names, ("images.npy",), origin, ("file", "record"))


def _load_image_folder(root: Path, size: int, grey: bool, workers: int | None) -> ImageSet:
    notes: dict[str, int] = {}
    classes = []
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=False):
            classes.append(e.name)
        elif e.is_symlink() and os.path.isdir(e.path):
            count_note(notes, "skipped_symlinked_dirs")
        else:
            count_note(notes, "ignored_top_level_files")
    if not classes:
        raise SourceError(f"{root}: image folder: expected one subfolder per class, found none")
    files, labels = [], []
    for label, cls in enumerate(classes):
        rels = walk_image_files(root / cls, notes)
        if not rels:
            raise SourceError(f"{root / cls}: class folder '{cls}' has no image files "
                              f"(extensions read: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        files += [f"{cls}/{rel}" for rel in rels]
        labels += [label] * len(rels)
    images = np.empty((len(files), size, size, 1 if grey else 3), np.uint8)
    kept = np.zeros(len(files), bool)
    workers = default_workers() if workers is None else workers
    pool = None
    if workers > 1 and len(files) >= PARALLEL_FROM:
        pool = start_pool(workers, preload=__name__)
    tasks = ((str(root), files[i : i + FOLDER_CHUNK], size, grey) for i in range(0, len(files), FOLDER_CHUNK))
    try:
        with Progress("load", len(files), unit="files") as bar:
            at = 0
            for (_, chunk, *_), (arrays, ok, chunk_notes) in in_order(pool, _decode_files, tasks):
                images[at : at + len(chunk)][ok] = arrays
                kept[at : at + len(chunk)] = ok
                for k, v in chunk_notes.items():
                    count_note(notes, k, v)
                at += len(chunk)
                bar.advance(len(chunk))
    except WorkerDied as e:
        raise SourceError(f"{root}: a worker process died while decoding {e.task[1][0]} .. {e.task[1][-1]}; "
                          "re-run with one worker to find the file") from None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    labels = np.asarray(labels, np.int64)
    for label, cls in enumerate(classes):
        if not kept[labels == label].any():
            raise SourceError(f"{root / cls}: class folder '{cls}' has no readable image "
                              f"({int((labels == label).sum())} file(s), all corrupt or truncated)")
    n = int(kept.sum())
    origin = np.stack([np.arange(n, dtype=np.int64), np.zeros(n, np.int64)], axis=1)
    images = images if n == len(files) else images[kept]  # no second copy when every file was read
    return ImageSet(images, labels[kept], tuple(classes), tuple(f for f, k in zip(files, kept) if k),
                    origin, ("file", "record"), notes)


def _decode_files(root: str, rels: list[str], size: int, grey: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode a few image files by the folder rule; runs in a worker process.  Returns the images
    decoded, which of ``rels`` they are, and the notes (skipped, converted)."""
    notes: dict[str, int] = {}
    arrays, ok = [], np.zeros(len(rels), bool)
    for i, rel in enumerate(rels):
        try:
            im, converted = read_image8(os.path.join(root, rel), grey)
            arrays.append(resize_center_crop(im, size))
        except ImageTooLarge:
            count_note(notes, "skipped_oversized")
            continue
        except DECODE_ERRORS:
            count_note(notes, "skipped_unreadable")
            continue
        if converted:
            count_note(notes, f"converted_{converted}")
        ok[i] = True
    out = np.stack(arrays) if arrays else np.zeros((0, size, size, 1 if grey else 3), np.uint8)
    return out, ok, notes


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST IDX files

IDX_UBYTE = 0x08


def _load_mnist(d: Path, split: str) -> ImageSet:
    prefix = "train" if split == "train" else "t10k"
    image_file = _idx_file(d, f"{prefix}-images-idx3-ubyte")
    label_file = _idx_file(d, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(image_file, 3)
    labels = _read_idx(label_file, 1).astype(np.int64)
    if len(labels) != len(images):
        raise SourceError(f"{label_file}: labels: expected {len(images)} (one per image of {image_file.name}), "
                          f"got {len(labels)}")
    n = len(images)
    origin = np.stack([np.zeros(n, np.int64), np.arange(n, dtype=np.int64)], axis=1)
    names = tuple(str(i) for i in range(int(labels.max()) + 1))
    return ImageSet(images[..., None], labels, names, (image_file.name, label_file.name), origin,
                    ("file", "record"))


def _idx_file(d: Path, name: str) -> Path:
    for candidate in (d / name, d / f"{name}.gz"):
        if os.path.lexists(candidate):
            return candidate
    raise SourceError(f"{d / name}: missing (nor {name}.gz); an MNIST folder holds images and labels of a split")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file of ``ndim`` dimensions (plain or gzipped), checked as the
    module docstring says; no more than the header claims is ever inflated."""
    with open_regular(path) as fh:
        stream = gzip.GzipFile(fileobj=fh, mode="rb") if path.suffix == ".gz" else fh
        head_size = 4 + 4 * ndim
        head = _read_exactly(stream, head_size, str(path), "an IDX header needs").tobytes()
        magic = int.from_bytes(head[:4], "big")
        if magic != (IDX_UBYTE << 8) | ndim:
            raise SourceError(f"{path}: magic: expected 0x{(IDX_UBYTE << 8) | ndim:08x} (unsigned bytes, "
                              f"{ndim} dimension{'s' if ndim > 1 else ''}), got 0x{magic:08x}")
        dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        if min(dims) < 1:
            raise SourceError(f"{path}: dimensions {dims}: expected every size >= 1")
        nbytes = math.prod(dims)
        if nbytes > MAX_ARRAY_BYTES:
            raise SourceError(f"{path}: header claims {'x'.join(map(str, dims))} = {nbytes:,} bytes, more than the "
                              f"{MAX_ARRAY_BYTES:,} allowed; refused without reading it")
        length = os.fstat(fh.fileno()).st_size
        if stream is fh and length != head_size + nbytes:
            raise SourceError(f"{path}: {length:,} bytes; its header claims "
                              f"{'x'.join(map(str, dims))} values, {head_size + nbytes:,} bytes with the header")
        data = _read_exactly(stream, nbytes, str(path), f"its header ({'x'.join(map(str, dims))}) claims")
        try:
            extra = stream.read(1)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(f"{path}: unreadable after the data ({e})") from None
        if extra:
            raise SourceError(f"{path}: more data than its header ({'x'.join(map(str, dims))}) claims; "
                              "refused (a damaged file or a gzip bomb)")
    return data.reshape(dims)


# --------------------------------------------------------------------------------------------
# Downsampled ImageNet (Imagenet32 / Imagenet64 npz batches)


def _load_imagenet_npz(d: Path, split: str) -> ImageSet:
    if split == "train":
        files = _numbered_batches(d, r"train_data_batch_(\d+)\.npz", "train_data_batch_N.npz")
    else:
        files = [d / "val_data.npz"]
        if not os.path.lexists(files[0]):
            raise SourceError(f"{files[0]}: missing (downsampled ImageNet validation file)")
    shapes = [_npz_shape(f, "data") for f in files]  # allocate once: Imagenet64's train is 15.7 GB
    for f, shape in zip(files, shapes):
        side = math.isqrt(shape[1] // 3) if len(shape) == 2 else 0
        if len(shape) != 2 or side < 1 or 3 * side * side != shape[1] or shape[1] != shapes[0][1]:
            raise SourceError(f"{f}: data: expected (N, 3*S*S) with the same S in every file "
                              f"(S = 32 for Imagenet32), got {shape}")
    side = math.isqrt(shapes[0][1] // 3)
    total = sum(shape[0] for shape in shapes)
    images = np.empty((total, side, side, 3), np.uint8)
    labels = np.empty(total, np.int64)
    origin = np.empty((total, 2), np.int64)
    at = 0
    for i, f in enumerate(files):
        arrays = _load_npz(f, ("data", "labels"))
        data, lab = arrays["data"], arrays["labels"]
        n = len(data)
        if data.dtype != np.uint8 or data.shape != shapes[i]:
            raise SourceError(f"{f}: data: expected uint8 {shapes[i]}, got {data.dtype} {data.shape}")
        if lab.dtype.kind not in "iu" or lab.shape != (n,):
            raise SourceError(f"{f}: labels: expected integer ({n},), got {lab.dtype} {lab.shape}")
        bad = np.flatnonzero((lab < 1) | (lab > IMAGENET_CLASSES))
        if bad.size:
            raise SourceError(f"{f}: record {bad[0]}: labels: expected 1..{IMAGENET_CLASSES}, got {lab[bad[0]]}")
        _planar_to_hwc(data, images[at : at + n])
        labels[at : at + n] = lab - 1
        origin[at : at + n, 0] = i
        origin[at : at + n, 1] = np.arange(n)
        at += n
    names = tuple(str(i) for i in range(1, IMAGENET_CLASSES + 1))
    return ImageSet(images, labels, names, tuple(f.name for f in files), origin, ("file", "record"))


def _npz_shape(path: Path, key: str) -> tuple:
    """Shape in the header of member ``key`` of an ``.npz``, read without inflating its data."""
    with open_regular(path) as fh:
        try:
            with zipfile.ZipFile(fh) as archive, archive.open(f"{key}.npy") as f:
                return _read_npy_header(f, f"{path}: member {key}.npy")[0]
        except KeyError:
            raise SourceError(f"{path}: {key}: missing array") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            if isinstance(e, SourceError):
                raise
            raise SourceError(f"{path}: not a readable .npz archive ({e})") from None


# --------------------------------------------------------------------------------------------
# The sources of a release, as generate (and reproduce) load them


def load_sources(private_path: Path | None, public_path: Path | None, params, size: int | None = None,
                 grey: bool = False):
    """The private set and (when the mode uses one) the public bank; embedded data by default.

    ``size`` and ``grey`` shape the private set (:func:`load_private`); the bank must have its
    shape: one built here from an image folder is built at it, a stored one that differs is refused.
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
            f"{_shape_text(shape)}; every image of a release has one shape: give --public an image folder "
            f"(a bank is built at the private shape) or build one with 'instahide patches DIR --out bank.zarr "
            f"--size {shape[0]}{' --grey' if shape[2] == 1 else ''}'")
    return private, public


def _shape_text(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


def _bank_from_folder(folder: Path, shape: tuple[int, int, int]) -> ImageSet:
    """Build a patch bank of an image folder with the default settings at ``shape``, in a temporary place."""
    if shape[0] != shape[1]:
        raise SourceError(f"{folder}: patch banks are square; the private images are {_shape_text(shape)}: "
                          "resize them with --size")
    with tempfile.TemporaryDirectory(prefix="instahide-bank-") as tmp:
        bank = Path(tmp) / "bank.zarr"
        with bank_progress("bank", resumable=False) as hooks:
            build_patch_bank(folder, bank, seed=bank_seed(DEFAULT_BANK_SEED), patch_size=shape[0],
                             grey=shape[2] == 1, **hooks)
        return load_public(bank)


def bank_seed(text: str) -> bytes:
    """Crop positions are public: the bank seed only makes them reproducible, it guards nothing."""
    return text.encode()
