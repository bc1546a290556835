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

import os
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from numba import njit, prange

from challenge.domain import UINT8_TO_CENTERED, to_centered
from challenge.errors import UsageError
from challenge.files import UnsafeFile, read_json
from challenge.geometry import image_values
from challenge.npy import ACCEPTED_DTYPES, MAX_HEADER_BYTES, ROWS, NpyFile, read_npy_header
from challenge.progress import Progress
from challenge.submission import DECRYPTION_FILE, METADATA_FILE, Expected
from challenge.text import printable

__all__ = ["METADATA_FIELDS", "RANGE_TOLERANCE", "Validation", "ValueTally", "centered", "check_files", "check_shape",
           "largest_valid_bytes", "submission_date", "validate"]

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

    def merge(self, later: "BadValues") -> None:
        """Add the count of rows that all come after this one's (another worker's block)."""
        self.values += later.values
        self.rows += later.rows
        if self.first_row < 0:
            self.first_row = later.first_row


@dataclass
class ValueTally:
    """Running count of non-finite and out-of-range values over the streamed rows."""

    expected: Expected
    _: KW_ONLY
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

    def merge(self, later: "ValueTally") -> None:
        """Add the tally of rows that all come after this one's: tallies of blocks merged in row order
        are the tally of one pass (how a cluster validates a file)."""
        self.nonfinite.merge(later.nonfinite)
        self.outside.merge(later.outside)
        self.vmin, self.vmax = min(self.vmin, later.vmin), max(self.vmax, later.vmax)

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
    """Rows of a valid submission on the [-1, 1] scale of every score (float64, or float32 as given).

    uint8 ``u`` means ``u / 127.5 - 1`` in every domain; floats are mapped from the release's domain.
    Native floats already on that scale are returned as they are, not copied to float64: the
    metrics read float32 values as float64 exactly, so the scores are the same, and the copy would
    cost a fifth of the scoring time.
    """
    if rows.dtype == np.uint8:
        return UINT8_TO_CENTERED[rows]
    if domain == "centered" and rows.dtype in (np.float32, np.float64):
        return rows
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


def check_shape(array, expected: Expected) -> list[str]:
    """Problems with the dtype and shape of a submission (a checked .npy header or an array)."""
    name, shape, want = DECRYPTION_FILE, array.shape, expected.shape
    problems = []
    if array.dtype.newbyteorder("=").name not in ACCEPTED_DTYPES:
        lo, hi = expected.value_range
        problems.append(f"{name}: dtype {array.dtype}; expected float32 or float64 in the release's {expected.domain} "
                        f"domain [{lo:g}, {hi:g}], or uint8 0..255")
    if shape != want:
        hint = ""
        height, width, channels = expected.image_shape
        if shape == (expected.n, channels, height, width) and channels > 1:
            hint = " (channels first, NCHW: transpose with x.transpose(0, 2, 3, 1))"
        elif shape == (expected.n, height, width) and channels == 1:
            hint = f" (no channel axis: add one with x.reshape(-1, {height}, {width}, 1))"
        elif shape == (expected.n, image_values(expected.image_shape)):
            hint = f" (flattened: reshape with x.reshape(-1, {height}, {width}, {channels}))"
        elif len(shape) == 4 and shape[1:] == expected.image_shape:
            hint = f" ({shape[0]} rows: one row per encryption is needed, row i the recovery of encryption i)"
        problems.append(f"{name}: shape {shape}; expected {want}{hint}")
    return problems


def _check_metadata(path: Path) -> tuple[dict, list[str]]:
    """The metadata's known string fields and every problem; read bounded, as valid Unicode JSON."""
    name = path.name
    try:
        obj = read_json(path, MAX_METADATA_BYTES, what=f"JSON object with fields {', '.join(METADATA_FIELDS)}")
    except UnsafeFile as e:
        return {}, [e.told_as(path, name)]
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
    return 12 + MAX_HEADER_BYTES + expected.n * image_values(expected.image_shape) * 8


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
    result = check_files(folder, expected)
    if result.array is None:
        return result
    tally = ValueTally(expected)
    with Progress("score" if on_rows is not None else "validate", expected.n, unit="encryptions") as bar:
        for start, block in result.array.chunks(rows):
            tally.add(start, block)
            if on_rows is not None and tally.clean and not result.problems:
                on_rows(start, centered(block, expected.domain))
            bar.advance(len(block))
    result.problems += tally.problems()
    return result


def check_files(folder: Path, expected: Expected) -> Validation:
    """Every check but the values: the folder, the metadata, ``decryption.npy``'s header and size.

    ``array`` is set when the rows can be read (their values are then checked by a :class:`ValueTally`).
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
        file_problems += check_shape(array, expected)
    result.problems += file_problems
    if not file_problems:  # else the rows cannot be read meaningfully
        result.array = array
    return result
