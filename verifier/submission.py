"""Validate a submission folder: ``decryption.npy`` (+ optional ``metadata.json``), streamed.

Every check runs and every problem is collected, so a participant fixes everything in one go.
Every file is opened through :mod:`challenge.files`: only a regular file is read (a FIFO, a
device or a symlink to one is a problem, never a read), and its size is compared with the largest
valid submission on the open descriptor before a byte is read.  The header is parsed with numpy's
literal-only parser (no pickle is ever unpickled), and the rows are then read in chunks with plain
reads from a descriptor checked the same way (a memory map would count every touched page towards
the resident set).  Messages name what was expected and depend only on public facts (N and the
pixel domain), never on the keys.  Text from a submission (its folder name, its metadata) reaches
outputs only through :func:`printable`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from numba import njit, prange

from challenge import format as fmt
from challenge.domain import DOMAINS, UINT8_TO_CENTERED, to_centered
from challenge.errors import UsageError
from challenge.files import UnsafeFile, open_regular, read_json

DECRYPTION_FILE = "decryption.npy"
METADATA_FILE = "metadata.json"
IMAGE_VALUES = 32 * 32 * 3
ROWS = 2048  # rows read (and scored) at a time: about 50 MB of float64 working memory
MAX_HEADER_BYTES = 10_000  # numpy's own limit for the header text
MAX_METADATA_BYTES = 65_536
METADATA_FIELDS = {
    "team": "who submitted",
    "method": "the attack, in a few words",
    "running_time": "self-reported running time, e.g. '12 GPU-hours'",
    "hardware": "what it ran on",
    "date": "submission date, ISO 8601 (e.g. 2020-11-01); shown, never used for ranking",
}
# Floats may stray outside the domain by this share of its width (2e-3 on [-1, 1], about a quarter
# of one uint8 step) so that rounding in a participant's own conversion is not an error.
RANGE_TOLERANCE = 1e-3
ACCEPTED_DTYPES = ("float32", "float64", "uint8")

# Characters that must not reach a one-line output as they are: control characters (newlines,
# terminal escapes), bidirectional overrides (text that displays in another order than it reads)
# and surrogates (a file name's undecodable bytes, which no UTF-8 writer accepts).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text) -> str:
    """``text`` (or a path) as valid, one-line Unicode: what any output (terminal, JSON, Markdown,
    HTML, file name) can take.  Undecodable file-name bytes show as ``\\xff``, controls as escapes."""
    return _UNPRINTABLE.sub(_escape, os.fspath(text) if isinstance(text, os.PathLike) else str(text))


@dataclass(frozen=True)
class Expected:
    """What a valid submission looks like: N rows, floats in ``domain`` (all of it public)."""

    n: int
    domain: str

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n, *fmt.IMAGE_SHAPE)

    @property
    def value_range(self) -> tuple[float, float]:
        return DOMAINS[self.domain]


def read_manifest(path: Path) -> dict:
    """A release's manifest, from ``release/`` or from its ``public/`` folder (all participants have)."""
    path = Path(path)
    manifest_path = path / fmt.PUBLIC_DIR / fmt.MANIFEST_FILE
    if not manifest_path.is_file():
        manifest_path = path / fmt.MANIFEST_FILE
    if not manifest_path.is_file():
        raise UsageError(f"{path}: not a release (no {fmt.PUBLIC_DIR}/{fmt.MANIFEST_FILE} or {fmt.MANIFEST_FILE})")
    manifest = fmt.read_json(manifest_path)
    if manifest.get("format") != "instahide-challenge-release" or manifest.get("format_version") not in fmt.READABLE_VERSIONS:
        raise UsageError(f"{manifest_path}: not an instahide-challenge-release manifest of version "
                         f"{' or '.join(map(str, fmt.READABLE_VERSIONS))}")
    n = manifest.get("n_encryptions")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"{manifest_path}: 'n_encryptions' is {n!r}, expected a positive integer")
    params = manifest.get("params")
    domain = params.get("domain") if isinstance(params, dict) else None
    if domain not in DOMAINS:
        raise UsageError(f"{manifest_path}: params.domain is {domain!r}, expected one of {', '.join(DOMAINS)}")
    return manifest


def expected_from_manifest(manifest: dict) -> Expected:
    return Expected(manifest["n_encryptions"], manifest["params"]["domain"])


def expected_from_keys(store: fmt.KeyStore) -> Expected:
    return Expected(store.params.n_encryptions, store.params.domain)


# --- the .npy file -------------------------------------------------------------------------------

@dataclass(frozen=True)
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
        return None, [str(e)]
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            return None, [f"{name}: {size:,} bytes, more than the {max_bytes:,} bytes the largest valid "
                          f"submission needs; refused without reading it"]
        try:
            header = _parse_npy_header(f, name)
        except (ValueError, EOFError) as e:
            return None, [f"{name}: unreadable .npy header ({str(e).splitlines()[0]}); expected an array saved with np.save"]
        except OSError as e:
            return None, [f"{name}: cannot be read ({e.strerror})"]
    if isinstance(header, str):
        return None, [header]
    shape, fortran, dtype, offset = header
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
    return NpyFile(path, dtype, tuple(shape), offset, size), problems


def _parse_npy_header(f, name: str) -> tuple | str:
    """(shape, fortran_order, dtype, data offset) from an open ``.npy`` file, or why it is not one."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        return f"{name}: not a .npy file (no NumPy magic string); expected an array saved with np.save"
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_HEADER_BYTES)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_HEADER_BYTES)
    else:
        return f"{name}: .npy format version {version[0]}.{version[1]}; expected 1.0 or 2.0 (what np.save writes)"
    return shape, fortran, dtype, f.tell()


# --- values --------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _tally_rows(a, lo, hi):
    """Per row of a (R, D) float array: [non-finite count, count outside [lo, hi]], min, max of the finite."""
    counts = np.zeros((a.shape[0], 2), np.int64)
    extremes = np.empty((a.shape[0], 2))
    for r in prange(a.shape[0]):
        bad = 0
        out = 0
        vmin = np.inf
        vmax = -np.inf
        for i in range(a.shape[1]):
            v = a[r, i]
            if not np.isfinite(v):
                bad += 1
                continue
            if v < lo or v > hi:
                out += 1
            vmin = min(vmin, v)
            vmax = max(vmax, v)
        counts[r, 0] = bad
        counts[r, 1] = out
        extremes[r, 0] = vmin
        extremes[r, 1] = vmax
    return counts, extremes


def tally_rows_reference(a: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy version of :func:`_tally_rows`, for the tests."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    outside = finite & ((a < lo) | (a > hi))
    counts = np.stack([(~finite).sum(axis=1), outside.sum(axis=1)], axis=1).astype(np.int64)
    extremes = np.stack([np.where(finite, a, np.inf).min(axis=1), np.where(finite, a, -np.inf).max(axis=1)], axis=1)
    return counts, extremes


@dataclass
class BadValues:
    """How many values of one kind are bad, in how many rows, and the first such row."""

    values: int = 0
    rows: int = 0
    first_row: int = -1

    def add(self, start: int, per_row: np.ndarray) -> None:
        bad = np.flatnonzero(per_row)
        if len(bad):
            self.values += int(per_row.sum())
            self.rows += len(bad)
            if self.first_row < 0:
                self.first_row = start + int(bad[0])


@dataclass
class ValueTally:
    """Running count of non-finite and out-of-range values over the streamed rows."""

    expected: Expected
    nonfinite: BadValues = field(default_factory=BadValues)
    outside: BadValues = field(default_factory=BadValues)
    vmin: float = np.inf
    vmax: float = -np.inf

    @property
    def limits(self) -> tuple[float, float]:
        lo, hi = self.expected.value_range
        slack = RANGE_TOLERANCE * (hi - lo)
        return lo - slack, hi + slack

    @property
    def clean(self) -> bool:
        return self.nonfinite.values == 0 and self.outside.values == 0

    def add(self, start: int, rows: np.ndarray) -> None:
        if rows.dtype == np.uint8:  # every byte is a valid pixel
            return
        counts, extremes = _tally_rows(rows.reshape(len(rows), -1), *self.limits)
        self.nonfinite.add(start, counts[:, 0])
        self.outside.add(start, counts[:, 1])
        self.vmin = min(self.vmin, float(extremes[:, 0].min()))
        self.vmax = max(self.vmax, float(extremes[:, 1].max()))

    def problems(self) -> list[str]:
        out = []
        bad, outside = self.nonfinite, self.outside
        if bad.values:
            out.append(f"{DECRYPTION_FILE}: {bad.values:,} NaN or infinite value(s) in {bad.rows:,} "
                       f"row(s) (first: row {bad.first_row}); expected finite numbers")
        if outside.values:
            lo, hi = self.expected.value_range
            out.append(f"{DECRYPTION_FILE}: {outside.values:,} value(s) in {outside.rows:,} row(s) (first: row "
                       f"{outside.first_row}) lie outside [{lo:g}, {hi:g}], the release's {self.expected.domain} "
                       f"domain (tolerance {RANGE_TOLERANCE * (hi - lo):g}); values seen: {self.vmin:.6g} to "
                       f"{self.vmax:.6g}; expected floats in [{lo:g}, {hi:g}] or uint8 0..255")
        return out


def centered(rows: np.ndarray, domain: str) -> np.ndarray:
    """Rows of a valid submission on the [-1, 1] scale of every score (float64).

    uint8 ``u`` means ``u / 127.5 - 1`` in every domain; floats are mapped from the release's domain.
    """
    if rows.dtype == np.uint8:
        return UINT8_TO_CENTERED[rows]
    return to_centered(rows, domain)


# --- the folder ----------------------------------------------------------------------------------

@dataclass
class Validation:
    """Outcome of :func:`validate`: every problem found, the checked file and the metadata."""

    folder: Path
    problems: list[str] = field(default_factory=list)
    array: NpyFile | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.problems


def _check_shape(array: NpyFile, expected: Expected) -> list[str]:
    name, shape, want = DECRYPTION_FILE, array.shape, expected.shape
    problems = []
    if array.dtype.newbyteorder("=").name not in ACCEPTED_DTYPES:
        lo, hi = expected.value_range
        problems.append(f"{name}: dtype {array.dtype}; expected float32 or float64 in the release's {expected.domain} "
                        f"domain [{lo:g}, {hi:g}], or uint8 0..255")
    if shape != want:
        hint = ""
        if shape == (expected.n, 3, 32, 32):
            hint = " (channels first, NCHW: transpose with x.transpose(0, 2, 3, 1))"
        elif shape == (expected.n, IMAGE_VALUES):
            hint = " (flattened: reshape with x.reshape(-1, 32, 32, 3))"
        elif len(shape) == 4 and shape[1:] == fmt.IMAGE_SHAPE:
            hint = f" ({shape[0]} rows: one row per encryption is needed, row i the recovery of encryption i)"
        problems.append(f"{name}: shape {shape}; expected {want}{hint}")
    return problems


def _check_metadata(path: Path) -> tuple[dict, list[str]]:
    """The metadata's known string fields and every problem; read bounded, as valid Unicode JSON."""
    name = path.name
    try:
        obj = read_json(path, MAX_METADATA_BYTES, what=f"JSON object with fields {', '.join(METADATA_FIELDS)}")
    except UnsafeFile as e:
        return {}, [str(e)]
    if not isinstance(obj, dict):
        return {}, [f"{name}: a JSON {type(obj).__name__}; expected an object with fields {', '.join(METADATA_FIELDS)}"]
    problems = []
    unknown = sorted(set(obj) - set(METADATA_FIELDS))
    if unknown:
        problems.append(f"{name}: unknown fields {', '.join(map(repr, unknown))}; expected only {', '.join(METADATA_FIELDS)}")
    for key in METADATA_FIELDS:
        if key in obj and not isinstance(obj[key], str):
            problems.append(f"{name}: field {key!r} must be a string ({METADATA_FIELDS[key]}), got {type(obj[key]).__name__}")
    if isinstance(obj.get("date"), str) and submission_date(obj) is None:
        problems.append(f"{name}: field 'date' is {obj['date']!r}; expected an ISO 8601 date such as 2020-11-01")
    return {k: v for k, v in obj.items() if k in METADATA_FIELDS and isinstance(v, str)}, problems


def submission_date(metadata: dict) -> datetime | None:
    """The metadata's date as an aware datetime (naive ones are taken as UTC), or None."""
    try:
        date = datetime.fromisoformat(metadata.get("date", ""))
    except (TypeError, ValueError):
        return None
    return date if date.tzinfo else date.replace(tzinfo=timezone.utc)


def largest_valid_bytes(expected: Expected) -> int:
    """Size of the biggest file a valid submission can be: float64 rows and a maximal header."""
    return 12 + MAX_HEADER_BYTES + expected.n * IMAGE_VALUES * 8


def _list_folder(folder: Path) -> set[str]:
    """The names in a submission folder; a folder that is missing, not one or unreadable is bad input."""
    try:
        with os.scandir(folder) as listing:
            return {entry.name for entry in listing}
    except (FileNotFoundError, NotADirectoryError):
        hint = " (pass the folder that holds it)" if folder.name == DECRYPTION_FILE else ""
        raise UsageError(f"{printable(folder)}: not a folder; expected a submission folder holding "
                         f"{DECRYPTION_FILE}{hint}") from None
    except OSError as e:
        raise UsageError(f"{printable(folder)}: cannot be read ({e.strerror}); expected a readable submission "
                         f"folder") from None


def validate(folder: Path, expected: Expected, *, rows: int = ROWS,
             on_rows: Callable[[int, np.ndarray], None] | None = None) -> Validation:
    """Check ``folder`` completely, streaming ``decryption.npy`` in blocks of ``rows``.

    ``on_rows(start, block)`` receives each block on the [-1, 1] scale for as long as no problem
    has been found (the scorer uses it, so validation and scoring read the file once).
    """
    folder = Path(folder)
    result = Validation(folder)
    present = _list_folder(folder)
    if METADATA_FILE in present:
        result.metadata, result.problems = _check_metadata(folder / METADATA_FILE)
    path = folder / DECRYPTION_FILE
    if DECRYPTION_FILE not in present:
        result.problems.append(f"{DECRYPTION_FILE}: missing; expected a .npy array of shape {expected.shape}")
        return result
    array, file_problems = read_npy_header(path, largest_valid_bytes(expected))
    if array is not None:
        file_problems += _check_shape(array, expected)
    result.problems += file_problems
    if file_problems:
        return result  # the rows cannot be read meaningfully
    result.array = array
    tally = ValueTally(expected)
    for start, block in array.chunks(rows):
        tally.add(start, block)
        if on_rows is not None and tally.clean and not result.problems:
            on_rows(start, centered(block, expected.domain))
    result.problems += tally.problems()
    return result
