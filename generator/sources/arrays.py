"""numpy files: an ``.npz`` with ``images`` (N, H, W, C) uint8, C = 1 (grey) or 3 (RGB), and
``labels`` (N,) integer (optional ``class_names``, a unicode array), or a directory holding
``images.npy`` + ``labels.npy``; and the ``.npz``/``.npy`` readers the other layouts share.

Read without pickle: each array's header (shape, dtype) is checked against the bytes the file or
zip member really holds and against :data:`generator.images.MAX_ARRAY_BYTES` before anything is
allocated.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from challenge.files import open_regular
from challenge.imageset import ImageSet
from challenge.npy import parse_header
from generator import images as image_rules  # its caps read at call time (tests lower them)
from generator.images import SourceError


def check_arrays(images, labels, where_i: str, where_l: str, class_names=None) -> tuple:
    if not is_image_array(images):
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
    if nbytes > image_rules.MAX_ARRAY_BYTES:
        raise SourceError(f"{where}: header claims {dtype} {shape} = {nbytes:,} bytes, more than the "
                          f"{image_rules.MAX_ARRAY_BYTES:,} allowed; refused without reading it")
    if f.tell() + nbytes != size:
        raise SourceError(f"{where}: header claims {dtype} {shape} = {nbytes:,} bytes of data, but "
                          f"{size - f.tell():,} follow the header")
    buffer = read_exactly(f, nbytes, where, "the header claims")
    return buffer.view(dtype).reshape(shape, order="F" if fortran_order else "C")


def read_exactly(f, nbytes: int, where: str, claim: str) -> np.ndarray:
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


def load_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
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
                if info.file_size > image_rules.MAX_ARRAY_BYTES + 65536:
                    raise SourceError(f"{where}: declares {info.file_size:,} bytes, more than the "
                                      f"{image_rules.MAX_ARRAY_BYTES:,} allowed; refused without inflating it")
                try:
                    with archive.open(info) as f:
                        out[key] = _read_npy(f, where, info.file_size)
                except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
                    if isinstance(e, SourceError):
                        raise
                    raise SourceError(f"{where}: unreadable ({e})") from None
            return out


def load_npz_set(path: Path) -> ImageSet:
    arrays = load_npz(path, ("images", "labels"), ("class_names",))
    images, labels, names, origin = check_arrays(arrays["images"], arrays["labels"], str(path), str(path),
                                                  arrays.get("class_names"))
    return ImageSet(np.ascontiguousarray(images), labels=labels, class_names=names, source_files=(path.name,),
                    origin=origin)


def load_npy_pair(d: Path) -> ImageSet:
    ip, lp = d / "images.npy", d / "labels.npy"
    images, labels = _load_npy_file(ip), _load_npy_file(lp)
    cp = d / "class_names.npy"
    cn = _load_npy_file(cp) if os.path.lexists(cp) else None
    images, labels, names, origin = check_arrays(images, labels, str(ip), str(lp), cn)
    return ImageSet(np.ascontiguousarray(images), labels=labels, class_names=names, source_files=("images.npy",),
                    origin=origin)


def npz_shape(path: Path, key: str) -> tuple:
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


def is_image_array(a: np.ndarray) -> bool:
    return a.dtype == np.uint8 and a.ndim == 4 and a.shape[3] in (1, 3) and min(a.shape[1:3]) >= 1
