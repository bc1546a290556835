"""CIFAR-10 and CIFAR-100, in both official layouts.

* Binary: ``data_batch_1.bin``..``data_batch_5.bin`` (``test_batch.bin`` with ``split="test"``);
  records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32); class names from
  ``batches.meta.txt`` when present.  CIFAR-100: ``train.bin`` (``test.bin``); records of 2 label
  bytes (coarse, fine) + 3072; the *fine* labels; class names from ``fine_label_names.txt``.
* Python version: ``data_batch_1``..``data_batch_5`` (``test_batch``), ``batches.meta``;
  CIFAR-100: ``train`` (``test``), ``meta``; fine labels.  These are Python 2 pickles: they are
  read with :class:`RestrictedUnpickler`, which admits only the numpy array reconstruction globals
  the real files contain and refuses anything else before it runs.

Every batch file present must be numbered 1..k without gaps; a file larger than
:data:`MAX_BATCH_BYTES` is refused unread, a class-name file larger than :data:`MAX_NAMES_BYTES` too.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import numpy as np

from challenge.files import open_regular, read_bytes, read_text
from challenge.imageset import ImageSet
from generator.images import SourceError

CIFAR_PIXELS = 3072
# Caps on what an untrusted data set may make this tool read or allocate
MAX_BATCH_BYTES = 256 << 20  # one CIFAR batch file (CIFAR-100's train is 155 MB)
MAX_NAMES_BYTES = 1 << 20  # a class-name text file


def numbered_batches(d: Path, pattern: str, what: str) -> list[Path]:
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


def planar_to_hwc(planes: np.ndarray, out: np.ndarray) -> None:
    """(n, C*H*W) planes (R, G, B) -> out (n, H, W, C); in blocks that stay in cache (4x faster
    than one big transpose)."""
    n, h, w, channels = out.shape
    flat = out.reshape(n, h * w, channels)
    rows = max(1, (256 * 3072) // (h * w * channels))
    for i in range(0, n, rows):
        block = planes[i : i + rows]
        for c in range(channels):
            flat[i : i + rows, :, c] = block[:, c * h * w : (c + 1) * h * w]


def load_binary(d: Path, split: str, *, cifar100: bool) -> ImageSet:
    label_bytes = 2 if cifar100 else 1
    n_classes = 100 if cifar100 else 10
    if cifar100:
        files = [d / f"{split}.bin"]
        if not files[0].is_file():
            raise SourceError(f"{files[0]}: missing (CIFAR-100 binary {split} file)")
        names = _read_class_names_txt(d / "fine_label_names.txt", 100)
    else:
        if split == "train":
            files = numbered_batches(d, r"data_batch_(\d+)\.bin", "data_batch_N.bin")
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
        planar_to_hwc(raw[:, label_bytes:], images[at : at + n])
        labels[at : at + n] = lab
        origin[at : at + n, 0] = i
        origin[at : at + n, 1] = np.arange(n)
        at += n
    return ImageSet(images, labels=labels, class_names=names, source_files=tuple(f.name for f in files), origin=origin)


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


def load_python(d: Path, split: str, *, cifar100: bool) -> ImageSet:
    n_classes = 100 if cifar100 else 10
    label_key = "fine_labels" if cifar100 else "labels"
    if cifar100:
        files = [d / split]
        meta_path, meta_key = d / "meta", "fine_label_names"
    elif split == "train":
        files = numbered_batches(d, r"data_batch_(\d+)", "data_batch_N")
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
        planar_to_hwc(data, img)
        parts_i.append(img)
        parts_l.append(lab)
        parts_o.append(np.stack([np.full(n, i, np.int64), np.arange(n, dtype=np.int64)], axis=1))
    images = np.concatenate(parts_i)
    return ImageSet(images, labels=np.concatenate(parts_l), class_names=names,
                    source_files=tuple(f.name for f in files), origin=np.concatenate(parts_o))
