""".npy files from untrusted places: the header parsed with numpy's literal-only parser (no pickle is
ever unpickled) and checked against the file's size before a byte of data is read, then the rows
read in bounded blocks with plain reads from a descriptor checked the same way (a memory map would
count every touched page towards the resident set).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from challenge import format as fmt
from challenge.errors import UsageError
from challenge.files import UnsafeFile, open_regular
from challenge.text import printable

__all__ = ["ACCEPTED_DTYPES", "MAX_HEADER_BYTES", "NotNpy", "NpyFile", "ROWS", "npy_header", "open_npy", "parse_header",
           "read_npy_header"]

ROWS = 2048  # rows read (and scored) at a time: about 50 MB of float64 working memory
MAX_HEADER_BYTES = 10_000  # numpy's own limit for the header text
ACCEPTED_DTYPES = ("float32", "float64", "uint8")
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class NotNpy(ValueError):
    """Not a ``.npy`` file np.save writes: no magic string, or another format version."""


def parse_header(f) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``f``, left at the first data byte.

    The one header parser for every untrusted ``.npy`` (submissions, sources): numpy's literal-only
    reader, never an unpickler, for versions 1.0 and 2.0 with at most :data:`MAX_HEADER_BYTES` of
    header.  :class:`NotNpy` without the magic string or for another version; ValueError (or
    EOFError) for a malformed header.
    """
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise NotNpy("not a .npy file (no NumPy magic string); expected an array saved with np.save") from None
    if version not in _HEADER_READERS:
        raise NotNpy(f".npy format version {version[0]}.{version[1]}; expected 1.0 or 2.0 (what np.save writes)")
    return _HEADER_READERS[version](f, max_header_size=MAX_HEADER_BYTES)


@dataclass(frozen=True, kw_only=True)
class NpyFile:
    """A checked ``.npy`` header: where the C-order rows start, their dtype and shape."""

    path: Path
    dtype: np.dtype
    shape: tuple
    offset: int
    size: int  # bytes, as checked when the header was read

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def _open(self):
        """The file again, checked again: still a regular file of the size that was validated."""
        f = open_regular(self.path)
        if os.fstat(f.fileno()).st_size != self.size:
            f.close()
            raise UsageError(f"{printable(self.path)}: changed while being read; expected {self.size:,} bytes")
        return f

    def _read(self, f, start: int, stop: int) -> np.ndarray:
        buf = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        f.seek(self.offset + start * self.row_bytes)
        if f.readinto(memoryview(buf).cast("B")) != buf.nbytes:
            raise UsageError(f"{printable(self.path)}: file shrank while being read")
        return buf.astype(self.dtype.newbyteorder("="), copy=False)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a native-byte-order array, with one plain read."""
        with self._open() as f:
            return self._read(f, start, stop)

    def chunks(self, rows: int = ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)`` for consecutive blocks of ``rows`` rows from one checked descriptor;
        memory is bounded by ``rows``."""
        with self._open() as f:
            for start in range(0, self.shape[0], rows):
                yield start, self._read(f, start, min(start + rows, self.shape[0]))


def read_npy_header(path: Path, max_bytes: int) -> tuple[NpyFile | None, list[str]]:
    """Parse and check the header of ``path`` without reading (or unpickling) any data.

    Returns the header and the problems with the file as a container (not its shape or dtype).
    """
    name = path.name
    try:
        f = open_regular(path)
    except UnsafeFile as e:
        return None, [e.told_as(path, name)]
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            return None, [f"{name}: {size:,} bytes, more than the {max_bytes:,} bytes the largest valid "
                          f"submission needs; refused without reading it"]
        try:
            shape, fortran, dtype = parse_header(f)
            offset = f.tell()
        except NotNpy as e:
            return None, [f"{name}: {e}"]
        except (ValueError, EOFError) as e:
            return None, [f"{name}: unreadable .npy header ({str(e).splitlines()[0]}); expected an array saved with np.save"]
        except OSError as e:
            return None, [f"{name}: cannot be read ({e.strerror})"]
    problems = []
    if dtype.hasobject or dtype.fields is not None:
        problems.append(f"{name}: holds Python objects or records (dtype {dtype}); pickled data is refused, "
                        f"expected a plain numeric array ({' or '.join(ACCEPTED_DTYPES)})")
        return None, problems
    if fortran:
        problems.append(f"{name}: stored in Fortran order; expected C order (save np.ascontiguousarray(x))")
    if any(d < 0 for d in shape):
        return None, [f"{name}: header shape {shape} has a negative size; expected an array saved with np.save"]
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
        problems.append(f"{name}: truncated: {size:,} bytes, but its header {shape} {dtype} needs {need:,}")
    elif size > need:
        problems.append(f"{name}: {size - need:,} bytes after the array its header describes; expected exactly {need:,} bytes")
    return NpyFile(path=path, dtype=dtype, shape=tuple(shape), offset=offset, size=size), problems


# --- a release's own arrays, whose header is known exactly ----------------------------------------

def npy_header(shape: tuple) -> bytes:
    """The exact .npy 1.0 header ``np.save`` writes for a little-endian float32 C-order array."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def open_npy(path: Path, shape: tuple) -> np.ndarray:
    """Memory-map a float32 .npy file whose header and size are exactly those of ``shape``.

    Nothing is parsed or unpickled: the header bytes are compared with the one expected, so a
    hostile header (objects, a huge shape, Fortran order) is refused before any data is touched.
    """
    header = npy_header(shape)
    try:
        with open_regular(path, follow_symlinks=False) as f:
            head = f.read(1 << 16)
    except UnsafeFile as e:
        raise fmt.FormatError(str(e).split(": ", 1)[-1]) from None
    if head[: len(header)] != header:
        raise fmt.FormatError(f"header is not the .npy 1.0 header of float32 {tuple(shape)} C order ({_describe_npy(head)})")
    size, expected = path.stat().st_size, len(header) + 4 * int(np.prod(shape))
    if size != expected:
        raise fmt.FormatError(f"{size} bytes, expected {expected} ({'truncated' if size < expected else 'bytes after the array'})")
    return np.memmap(path, dtype="<f4", mode="r", offset=len(header), shape=tuple(shape))


def _describe_npy(head: bytes) -> str:
    """What a header says, for the message; parsed without ever unpickling."""
    try:
        shape, fortran, dtype = parse_header(io.BytesIO(head))
        return f"it says {dtype} {shape}{' Fortran order' if fortran else ''}"
    except NotNpy as e:
        return str(e).split(";")[0]
    except Exception as e:  # any malformed header: describe it, never raise
        return f"unreadable header: {type(e).__name__}"
