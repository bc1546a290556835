#!/usr/bin/env python3
"""Check an InstaHide challenge submission before uploading it.  Needs Python >= 3.9 and numpy >= 1.21 only.

    python3 check_submission.py SUBMISSION PUBLIC_DATA

SUBMISSION is the folder holding ``decryption.npy`` (and optionally ``metadata.json``) or the ``.zip``
of those two files; PUBLIC_DATA is the challenge's public data (the folder holding ``manifest.json``).
Exit 0: valid; 2: not, with every problem on stderr, one a line.  The checks and the verdict are
those of the tool's ``verify SUBMISSION --release PUBLIC_DATA`` (the release format's section 8);
the competition's scoring program runs this same file before it scores.
"""

import ast
import json
import math
import os
import re
import stat
import sys
import tempfile
import zipfile
from datetime import datetime

import numpy as np

DECRYPTION_FILE = "decryption.npy"
METADATA_FILE = "metadata.json"
MAX_METADATA_BYTES = 65536
MAX_MANIFEST_BYTES = 16 << 20
MAX_HEADER_BYTES = 10000  # numpy's own limit for a header's text
MAX_JSON_DEPTH = 64
RANGE_TOLERANCE = 1e-3  # floats may stray outside the domain by this share of its width
ROWS = 2048  # rows read at a time
DOMAINS = {"centered": (-1.0, 1.0), "positive": (0.0, 1.0)}
ACCEPTED_DTYPES = ("float32", "float64", "uint8")
METADATA_FIELDS = ("team", "method", "running_time", "hardware", "date")
UINT8_TO_CENTERED = np.arange(256, dtype=np.float64) / 127.5 - 1.0
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


class Invalid(Exception):
    """Bad input that is not a submission problem (a missing folder, an unreadable manifest): exit 2."""


def printable(text):
    """Text from a submission (names, metadata) on one line of valid Unicode."""
    return _UNPRINTABLE.sub(lambda m: "\\x%02x" % ord(m.group()) if ord(m.group()) < 0x100
                            else "\\u%04x" % ord(m.group()), str(text))


class Expected:
    """What a valid submission looks like: n rows of (height, width, channels) images in ``domain``."""

    def __init__(self, n, image_shape, domain):
        self.n, self.image_shape, self.domain = n, tuple(image_shape), domain
        self.shape = (n,) + self.image_shape
        self.values = image_shape[0] * image_shape[1] * image_shape[2]

    @classmethod
    def from_manifest(cls, manifest, where):
        params = manifest.get("params") if isinstance(manifest, dict) else None
        n = manifest.get("n_encryptions") if isinstance(manifest, dict) else None
        if not isinstance(params, dict) or type(n) is not int or n < 1:
            raise Invalid(f"{where}: not a release manifest (params, n_encryptions)")
        shape = params.get("image_shape", [32, 32, 3]) if manifest.get("format_version", 3) >= 3 else [32, 32, 3]
        if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int for v in shape)
                and 7 <= shape[0] <= 512 and 7 <= shape[1] <= 512 and shape[2] in (1, 3)):
            raise Invalid(f"{where}: params.image_shape is {shape!r}, expected [H, W, C], 7 <= H, W <= 512, C 1 or 3")
        if params.get("domain") not in DOMAINS:
            raise Invalid(f"{where}: params.domain is {params.get('domain')!r}, expected one of {', '.join(DOMAINS)}")
        return cls(n, shape, params["domain"])

    @property
    def limits(self):
        lo, hi = DOMAINS[self.domain]
        slack = RANGE_TOLERANCE * (hi - lo)
        return lo - slack, hi + slack

    def largest_valid_bytes(self):
        return 12 + MAX_HEADER_BYTES + self.n * self.values * 8


# --- files ---------------------------------------------------------------------------------------

def open_regular(path):
    """``path`` opened for reading if it is a regular file (checked on the descriptor: a FIFO is never
    waited on, a device never read); else Invalid."""
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Invalid(f"{name}: missing") from None
    except OSError as e:
        raise Invalid(f"{name}: cannot be read ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Invalid(f"{name}: not a regular file; refused without reading it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_json(path, limit, what):
    """A JSON file of at most ``limit`` bytes, nested at most 64 deep, without NaN, in valid Unicode."""
    name = os.path.basename(path)
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise Invalid(f"{name}: {size:,} bytes, more than the {limit:,} allowed for a {what}; refused without reading it")
        data = f.read(size + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"{name}: not UTF-8 text (byte {e.start}); expected a UTF-8 {what}") from None

    def refuse(constant):
        raise ValueError(f"{constant} is not a JSON number")
    try:
        obj = json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise Invalid(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels; expected a {what}") from None
    except ValueError as e:
        raise Invalid(f"{name}: not valid JSON ({e}); expected a {what}") from None
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise Invalid(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels; expected a {what}")
            for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
                if isinstance(key, str) and not _valid_unicode(key) or isinstance(item, str) and not _valid_unicode(item):
                    raise Invalid(f"{name}: a string is not valid Unicode (a lone surrogate); expected a {what}")
                stack.append((item, depth + 1))
    if isinstance(obj, str) and not _valid_unicode(obj):
        raise Invalid(f"{name}: a string is not valid Unicode (a lone surrogate); expected a {what}")
    return obj


def _valid_unicode(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_manifest(folder):
    """The release's manifest, from ``folder`` (public data) or ``folder/public`` (a release)."""
    for path in (os.path.join(folder, "manifest.json"), os.path.join(folder, "public", "manifest.json")):
        if os.path.isfile(path):
            return read_json(path, MAX_MANIFEST_BYTES, "release manifest"), path
    raise Invalid(f"{folder}: not a release (no manifest.json)")


# --- decryption.npy ------------------------------------------------------------------------------

class Npy:
    """A checked .npy header: dtype, shape and where the C-order rows start."""

    def __init__(self, path, dtype, shape, offset, size):
        self.path, self.dtype, self.shape, self.offset, self.size = path, dtype, shape, offset, size

    def blocks(self, rows=ROWS):
        """(start, rows in native byte order) for consecutive blocks, read with plain reads."""
        row_values = int(np.prod(self.shape[1:]))
        with open_regular(self.path) as f:
            if os.fstat(f.fileno()).st_size != self.size:
                raise Invalid(f"{DECRYPTION_FILE}: changed while being read; expected {self.size:,} bytes")
            f.seek(self.offset)
            for start in range(0, self.shape[0], rows):
                count = min(rows, self.shape[0] - start)
                buf = np.empty((count,) + tuple(self.shape[1:]), self.dtype)
                if f.readinto(memoryview(buf).cast("B")) != buf.nbytes:
                    raise Invalid(f"{DECRYPTION_FILE}: file shrank while being read")
                yield start, buf.astype(self.dtype.newbyteorder("="), copy=False).reshape(count, row_values)


def read_header(path, max_bytes):
    """(Npy or None, problems with the file as a container); the header is parsed as a Python literal,
    so nothing is ever unpickled."""
    name = DECRYPTION_FILE
    try:
        f = open_regular(path)
    except Invalid as e:
        return None, [str(e)]
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            return None, [f"{name}: {size:,} bytes, more than the {max_bytes:,} bytes the largest valid "
                          f"submission needs; refused without reading it"]
        head = f.read(12 + MAX_HEADER_BYTES)
    if len(head) < 8 or head[:6] != b"\x93NUMPY":
        return None, [f"{name}: not a .npy file (no NumPy magic string); expected an array saved with np.save"]
    major, minor = head[6], head[7]
    if (major, minor) not in ((1, 0), (2, 0)):
        return None, [f"{name}: .npy format version {major}.{minor}; expected 1.0 or 2.0 (what np.save writes)"]
    width = 2 if major == 1 else 4
    length = int.from_bytes(head[8:8 + width], "little")
    offset = 8 + width + length
    try:
        if len(head) < 8 + width or length > MAX_HEADER_BYTES or len(head) < offset:
            raise ValueError("header too long or cut short")
        header = ast.literal_eval(head[8 + width:offset].decode("latin1"))
        if not (isinstance(header, dict) and set(header) == {"descr", "fortran_order", "shape"}
                and isinstance(header["shape"], tuple) and all(type(d) is int for d in header["shape"])
                and isinstance(header["fortran_order"], bool)):
            raise ValueError("not a header dictionary")
        descr = header["descr"]
        if not isinstance(descr, str):  # a list of fields: records
            return None, [f"{name}: holds Python objects or records (dtype {descr!r}); pickled data is refused, "
                          f"expected a plain numeric array ({' or '.join(ACCEPTED_DTYPES)})"]
        dtype = np.dtype(descr)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        return None, [f"{name}: unreadable .npy header ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                      f"expected an array saved with np.save"]
    if dtype.hasobject or dtype.fields is not None:
        return None, [f"{name}: holds Python objects or records (dtype {dtype}); pickled data is refused, "
                      f"expected a plain numeric array ({' or '.join(ACCEPTED_DTYPES)})"]
    shape = header["shape"]
    if any(d < 0 for d in shape):
        return None, [f"{name}: header shape {shape} has a negative size; expected an array saved with np.save"]
    problems = []
    if header["fortran_order"]:
        problems.append(f"{name}: stored in Fortran order; expected C order (save np.ascontiguousarray(x))")
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
        problems.append(f"{name}: truncated: {size:,} bytes, but its header {shape} {dtype} needs {need:,}")
    elif size > need:
        problems.append(f"{name}: {size - need:,} bytes after the array its header describes; expected exactly {need:,} bytes")
    return Npy(path, dtype, shape, offset, size), problems


def shape_problems(npy, expected):
    """Problems with the dtype and shape, with a hint for the usual mistakes."""
    name, shape, want = DECRYPTION_FILE, npy.shape, expected.shape
    problems = []
    if npy.dtype.newbyteorder("=").name not in ACCEPTED_DTYPES:
        lo, hi = DOMAINS[expected.domain]
        problems.append(f"{name}: dtype {npy.dtype}; expected float32 or float64 in the release's {expected.domain} "
                        f"domain [{lo:g}, {hi:g}], or uint8 0..255")
    if shape != want:
        height, width, channels = expected.image_shape
        hint = ""
        if shape == (expected.n, channels, height, width) and channels > 1:
            hint = " (channels first, NCHW: transpose with x.transpose(0, 2, 3, 1))"
        elif shape == (expected.n, height, width) and channels == 1:
            hint = f" (no channel axis: add one with x.reshape(-1, {height}, {width}, 1))"
        elif shape == (expected.n, expected.values):
            hint = f" (flattened: reshape with x.reshape(-1, {height}, {width}, {channels}))"
        elif len(shape) == 4 and shape[1:] == expected.image_shape:
            hint = f" ({shape[0]} rows: one row per encryption is needed, row i the recovery of encryption i)"
        problems.append(f"{name}: shape {shape}; expected {want}{hint}")
    return problems


def centered(rows, domain):
    """Rows of a valid submission (R, values) as float64 on the [-1, 1] scale of every score."""
    if rows.dtype == np.uint8:
        return UINT8_TO_CENTERED[rows]
    lo, hi = DOMAINS[domain]
    x = rows.astype(np.float64)
    return x if (lo, hi) == (-1.0, 1.0) else (x - lo) * (2.0 / (hi - lo)) - 1.0


class Tally:
    """Non-finite and out-of-range values over the rows streamed so far."""

    def __init__(self, expected):
        self.expected = expected
        self.counts = {"nonfinite": [0, 0, -1], "outside": [0, 0, -1]}  # values, rows, first row
        self.vmin, self.vmax = math.inf, -math.inf

    @property
    def clean(self):
        return not (self.counts["nonfinite"][0] or self.counts["outside"][0])

    def add(self, start, rows):
        if rows.dtype == np.uint8:
            return
        lo, hi = self.expected.limits
        smallest, largest = rows.min(), rows.max()  # NaN if any value is: then the counts below
        if lo <= smallest and largest <= hi:
            self.vmin, self.vmax = min(self.vmin, float(smallest)), max(self.vmax, float(largest))
            return
        finite = np.isfinite(rows)
        outside = finite & ((rows < lo) | (rows > hi))
        for kind, bad in (("nonfinite", ~finite), ("outside", outside)):
            per_row = np.count_nonzero(bad, axis=1)
            hit = np.flatnonzero(per_row)
            if len(hit):
                count = self.counts[kind]
                count[0] += int(per_row.sum())
                count[1] += len(hit)
                if count[2] < 0:
                    count[2] = start + int(hit[0])
        if finite.any():
            self.vmin = min(self.vmin, float(rows[finite].min()))
            self.vmax = max(self.vmax, float(rows[finite].max()))

    def problems(self):
        out = []
        values, rows, first = self.counts["nonfinite"]
        if values:
            out.append(f"{DECRYPTION_FILE}: {values:,} NaN or infinite value(s) in {rows:,} row(s) (first: row {first}); "
                       f"expected finite numbers")
        values, rows, first = self.counts["outside"]
        if values:
            lo, hi = DOMAINS[self.expected.domain]
            out.append(f"{DECRYPTION_FILE}: {values:,} value(s) in {rows:,} row(s) (first: row {first}) lie outside "
                       f"[{lo:g}, {hi:g}], the release's {self.expected.domain} domain (tolerance "
                       f"{RANGE_TOLERANCE * (hi - lo):g}); values seen: {self.vmin:.6g} to {self.vmax:.6g}; "
                       f"expected floats in [{lo:g}, {hi:g}] or uint8 0..255")
        return out


# --- the submission ------------------------------------------------------------------------------

def metadata_problems(path):
    name = METADATA_FILE
    fields = ", ".join(METADATA_FIELDS)
    try:
        obj = read_json(path, MAX_METADATA_BYTES, f"JSON object with fields {fields}")
    except Invalid as e:
        return [str(e)]
    if not isinstance(obj, dict):
        return [f"{name}: a JSON {_json_type(obj)}; expected an object with fields {fields}"]
    problems = []
    unknown = sorted(set(obj) - set(METADATA_FIELDS))
    if unknown:
        problems.append(f"{name}: unknown fields {', '.join(map(repr, unknown))}; expected only {fields}")
    for key in METADATA_FIELDS:
        if key in obj and not isinstance(obj[key], str):
            problems.append(f"{name}: field {key!r} must be a string, got {_json_type(obj[key])}")
    if isinstance(obj.get("date"), str):
        try:  # Python < 3.11 reads fewer ISO 8601 forms than verify's: the usual UTC suffix at least
            datetime.fromisoformat(obj["date"][:-1] + "+00:00" if obj["date"].endswith("Z") else obj["date"])
        except ValueError:
            problems.append(f"{name}: field 'date' is {obj['date']!r}; expected an ISO 8601 date such as 2020-11-01")
    return problems


def _json_type(value):
    return {dict: "dict", list: "list", str: "str", bool: "bool", int: "int", float: "float"}.get(type(value), "null")


def check(folder, expected, on_rows=None):
    """Every problem with the submission folder; ``on_rows(start, rows)`` gets each block on the [-1, 1]
    scale (float64, (R, values)) for as long as no problem is found, so a scorer reads the file once."""
    try:
        with os.scandir(folder) as listing:
            present = {entry.name for entry in listing}
    except (FileNotFoundError, NotADirectoryError):
        raise Invalid(f"{printable(folder)}: not a folder; expected a submission folder holding {DECRYPTION_FILE}") from None
    except OSError as e:
        raise Invalid(f"{printable(folder)}: cannot be read ({e.strerror}); expected a readable submission folder") from None
    problems = metadata_problems(os.path.join(folder, METADATA_FILE)) if METADATA_FILE in present else []
    if DECRYPTION_FILE not in present:
        return problems + [f"{DECRYPTION_FILE}: missing; expected a .npy array of shape {expected.shape}"
                           + _layout_hint(folder, present)]
    npy, file_problems = read_header(os.path.join(folder, DECRYPTION_FILE), expected.largest_valid_bytes())
    if npy is not None:
        file_problems += shape_problems(npy, expected)
    problems += [printable(p) for p in file_problems]
    if file_problems:
        return problems
    tally = Tally(expected)
    for start, rows in npy.blocks():
        tally.add(start, rows)
        if on_rows is not None and tally.clean and not problems:
            on_rows(start, centered(rows, expected.domain))
    return problems + tally.problems()


def _layout_hint(folder, present):
    """Where a misplaced decryption.npy is: in a subfolder (a zip of the folder), or saved with np.savez."""
    if any(name.endswith(".npz") for name in present):
        return " (found a .npz file: save the array with np.save, not np.savez)"
    for name in sorted(present):
        if os.path.isfile(os.path.join(folder, name, DECRYPTION_FILE)):
            return f" (found {printable(name)}/{DECRYPTION_FILE}: zip the files, not their folder)"
    return ""


def unzipped(archive, workdir, expected):
    """Extract a submission zip into ``workdir`` as the platform does; members with unsafe names (absolute,
    ``..``) and members beyond the size a valid submission needs are problems, never written."""
    problems = []
    budget = expected.largest_valid_bytes() + MAX_METADATA_BYTES + (1 << 20)  # + room for a README
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if info.filename.startswith("/") or "\\" in info.filename or ".." in parts:
                    problems.append(f"{printable(info.filename)}: unsafe name in the zip; expected "
                                    f"{DECRYPTION_FILE} and {METADATA_FILE} at its top level")
                    continue
                if info.is_dir():
                    continue
                budget -= info.file_size
                if budget < 0:
                    problems.append(f"{printable(info.filename)}: the zip holds more than a valid submission needs; "
                                    f"refused without extracting it")
                    break
                target = os.path.join(workdir, *parts)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    while dst.tell() <= info.file_size:  # stops at the declared size even if it lies
                        block = src.read(1 << 20)
                        if not block:
                            break
                        dst.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, RuntimeError) as e:
        raise Invalid(f"{printable(os.path.basename(archive))}: not a readable zip ({e})") from None
    return problems


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0].startswith("-"):
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    submission, public = args
    try:
        manifest, where = read_manifest(public)
        expected = Expected.from_manifest(manifest, where)
        with tempfile.TemporaryDirectory() as tmp:
            problems = []
            if os.path.isfile(submission) and zipfile.is_zipfile(submission):
                problems = unzipped(submission, tmp, expected)
                submission = tmp
            problems += check(submission, expected)
    except Invalid as e:
        sys.stderr.write(f"check_submission.py: error: {printable(e)}\n")
        return 2
    if problems:
        sys.stderr.write("".join(f"invalid: {p}\n" for p in problems))
        return 2
    print(f"valid: {expected.n:,} rows of {expected.image_shape}; not scored (the scores need the secret keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
