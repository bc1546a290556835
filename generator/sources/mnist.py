"""MNIST / Fashion-MNIST IDX files: ``train-images-idx3-ubyte`` + ``train-labels-idx1-ubyte``
(``t10k-*`` with ``split="test"``), each plain or gzipped (``.gz``; the plain file is read when
both are there).

An IDX file is a big-endian header, magic ``00 00 08 D`` (unsigned bytes, D dimensions: 3 for
images, 1 for labels) then D uint32 sizes, then the bytes row-major.  The magic, the sizes
(images N x rows x cols, labels N, the same N) and the length (a plain file must hold exactly the
bytes its header claims; a gzipped one is inflated only up to the claim plus one byte, so a gzip
bomb stops there) are checked.  Images are grey (N, rows, cols, 1); class names are the label
numbers ("0".."9").
"""

from __future__ import annotations

import gzip
import zlib
import math
import os
from pathlib import Path

import numpy as np

from challenge.files import open_regular
from challenge.imageset import ImageSet
from generator import images as image_rules  # its caps read at call time (tests lower them)
from generator.images import SourceError
from generator.sources.arrays import read_exactly


IDX_UBYTE = 0x08


def load_idx(d: Path, split: str) -> ImageSet:
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
    return ImageSet(images[..., None], labels=labels, class_names=names,
                    source_files=(image_file.name, label_file.name), origin=origin)


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
        head = read_exactly(stream, head_size, str(path), "an IDX header needs").tobytes()
        magic = int.from_bytes(head[:4], "big")
        if magic != (IDX_UBYTE << 8) | ndim:
            raise SourceError(f"{path}: magic: expected 0x{(IDX_UBYTE << 8) | ndim:08x} (unsigned bytes, "
                              f"{ndim} dimension{'s' if ndim > 1 else ''}), got 0x{magic:08x}")
        dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        if min(dims) < 1:
            raise SourceError(f"{path}: dimensions {dims}: expected every size >= 1")
        nbytes = math.prod(dims)
        if nbytes > image_rules.MAX_ARRAY_BYTES:
            raise SourceError(f"{path}: header claims {'x'.join(map(str, dims))} = {nbytes:,} bytes, more than the "
                              f"{image_rules.MAX_ARRAY_BYTES:,} allowed; refused without reading it")
        length = os.fstat(fh.fileno()).st_size
        if stream is fh and length != head_size + nbytes:
            raise SourceError(f"{path}: {length:,} bytes; its header claims "
                              f"{'x'.join(map(str, dims))} values, {head_size + nbytes:,} bytes with the header")
        data = read_exactly(stream, nbytes, str(path), f"its header ({'x'.join(map(str, dims))}) claims")
        try:
            extra = stream.read(1)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(f"{path}: unreadable after the data ({e})") from None
        if extra:
            raise SourceError(f"{path}: more data than its header ({'x'.join(map(str, dims))}) claims; "
                              "refused (a damaged file or a gzip bomb)")
    return data.reshape(dims)
