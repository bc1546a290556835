"""Regenerate a release from its source data and its seed, and compare it with the published one.

``audit`` shows that a release agrees with its key store; ``reproduce`` shows that the key store
and the release are what the named data and the seed produce, byte for byte.  The sources are
checked first (their fingerprints are in the manifest), so different data is reported as such,
not as a thousand differing bytes.  The regenerated release is written to a temporary folder and
removed afterwards; nothing is written into the release or the key store.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from challenge import format as fmt
from challenge.errors import UsageError, argument
from challenge.imageset import ImageSet
from challenge.params import Params
from challenge.text import printable
from challenge.files import safe_name
from challenge.manifest import Manifest, json_get
from challenge.npy import open_npy
from challenge.preview import read_png
from verifier.audit import rows_differ


@dataclass(frozen=True)
class Difference:
    file: str  # as shown: "public/encryption.npy", "secret/keys.zarr/encryption/lam", ...
    where: str  # "encryption 17", "field generator.version", "row 3", or ""
    message: str

    def line(self) -> str:
        where = f" [{self.where}]" if self.where else ""
        return f"{self.file}{where}: {self.message}"


def check_sources(manifest: Manifest, given: dict[str, tuple[ImageSet | None, str]], recorded: dict | None = None) -> None:
    """Refuse data whose fingerprint is not the manifest's: that is not this release's data.  The
    message names the source files the key store records (``recorded``: its attributes), so the
    maintainer knows which data to find.  Malformed ``sources`` (audit names the problem) are not
    checked here: the regenerated manifest shows how they differ."""
    if manifest.sources is None:
        return
    for role, (images, named) in given.items():
        claimed = manifest.fingerprint(role)
        if images is not None and images.fingerprint() != claimed:
            raise UsageError(
                f"--{role} {named}: different data: fingerprint {images.fingerprint()[:16]}... of {len(images)} images, "
                f"the release was made from {str(claimed)[:16]}... of {manifest.images(role)} images"
                + _recorded_files(recorded, role)
            )


def _recorded_files(recorded: dict | None, role: str, shown: int = 5) -> str:
    """``; its files (key store attribute ROLE_source.files): a, b, ... and N more``, or ``""``."""
    files = json_get(recorded or {}, f"{role}_source", "files")
    if not isinstance(files, list) or not files:
        return ""
    names = [printable(str(f)) for f in files[:shown]]
    more = f" and {len(files) - shown} more" if len(files) > shown else ""
    return f"; its files, as the key store records them ({role}_source.files): {', '.join(names)}{more}"


@dataclass(frozen=True)
class Published:
    """A published release and its key store, as reproduce reads them before regenerating: its
    manifest read as far as it is well-formed (a damaged field shows as a difference)."""

    path: Path
    keys: Path
    manifest: Manifest
    store: fmt.KeyStore

    @property
    def params(self) -> Params:
        return self.manifest.params

    @property
    def seed(self) -> bytes:
        return self.store.read("seed").tobytes()

    @property
    def files(self) -> dict:
        """The manifest's ``files`` (empty when malformed): which formats to regenerate."""
        return self.manifest.files or {}

    @property
    def practice(self) -> bool:
        return bool(self.manifest.practice)


def open_published(release: Path, keys: Path) -> Published:
    """The manifest, its parameters and the key store: what regenerating the release needs."""
    release, keys = Path(release), Path(keys)
    path = release / fmt.PUBLIC_DIR / fmt.MANIFEST_FILE
    problems = []
    manifest = Manifest.from_json(fmt.read_json(path), printable(path), problems)
    if manifest.params is None:
        raise UsageError(f"{printable(path)}: {dict(problems)['params']}")
    store = fmt.open_key_store(keys)
    fmt.check_commitment(manifest.commitment, store, release, keys)  # another release's keys regenerate another release
    return Published(release, keys, manifest, store)


def check_work(work: Path | None) -> None:
    """``work`` must be a folder; checked before anything is loaded."""
    if work is not None and not Path(work).is_dir():
        raise UsageError(f"{argument('work', work)}: not a folder")


def _where(work: Path | None) -> str:
    return argument("work", work) if work is not None else f"the temporary folder {tempfile.gettempdir()}"


@contextmanager
def scratch_folder(work: Path | None) -> Iterator[Path]:
    """A temporary folder for the regenerated release (in ``work`` if given), removed afterwards."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix="instahide-reproduce-", dir=work))
    except OSError as e:
        raise UsageError(f"{_where(work)}: cannot create the folder for the regenerated release ({e.strerror or e})") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def regeneration_failed(work: Path | None, error: UsageError) -> UsageError:
    """A full or read-only disk while regenerating: the error says which option chose the place."""
    return UsageError(f"{_where(work)}: regenerating the release failed: {error}")


def compare(published: Published, again: Path) -> list[Difference]:
    """Every public file and the key store of ``published`` against the regenerated release ``again``."""
    differences = compare_public(published.path, published.files, again)
    regenerated = fmt.open_key_store(again / fmt.SECRET_DIR / fmt.KEYS_NAME)
    return differences + compare_keys(published.store, regenerated, str(published.keys))


def compare_public(release: Path, claimed: dict[str, str], again: Path) -> list[Difference]:
    """Every public file of ``release`` (whose manifest lists the digests ``claimed``) against the
    regenerated one, in name order."""
    published, regenerated = release / fmt.PUBLIC_DIR, again / fmt.PUBLIC_DIR
    # the regenerated manifest holds the regenerated digests: only the manifest itself needs hashing
    expected = {**Manifest.read(again).files,
                fmt.MANIFEST_FILE: fmt.sha256_file(regenerated / fmt.MANIFEST_FILE)}
    names = sorted(set(expected) | set(claimed) | set(fmt.public_files(published)) | {fmt.MANIFEST_FILE})
    out = []
    for name in names:
        shown, mine = f"{fmt.PUBLIC_DIR}/{name}", published / name
        if not safe_name(name):
            out.append(Difference(f"{fmt.PUBLIC_DIR}/{fmt.MANIFEST_FILE}", f"files[{name!r}]", "unsafe file name (not opened)"))
        elif name not in expected:
            out.append(Difference(shown, "", "not part of the regenerated release"))
        elif mine.is_symlink() or not mine.is_file():
            out.append(Difference(shown, "", "missing from the release (or not a regular file)"))
        else:
            digest = fmt.sha256_file(mine)
            if name in claimed and claimed[name] != digest:
                out.append(Difference(shown, "", f"SHA-256 {digest[:16]}... but public/manifest.json lists {str(claimed[name])[:16]}..."))
            if digest != expected[name]:
                out.append(explain(name, mine, regenerated / name))
    return out


def explain(name: str, mine: Path, theirs: Path) -> Difference:
    """Where two versions of a public file first differ: encryption, row and column, or field."""
    shown = f"{fmt.PUBLIC_DIR}/{name}"
    if name == fmt.MANIFEST_FILE:
        a, b = fmt.read_json(mine), fmt.read_json(theirs)
        path = first_field_difference(a, b)
        if path is None:
            return Difference(shown, "", "same fields, different bytes (not canonical JSON)")
        return Difference(shown, f"field {_field_name(path)}", f"release has {_short(_at(a, path))}, regenerated {_short(_at(b, path))}")
    if name in (fmt.ENCRYPTION_FILE, fmt.LABEL_FILE):
        expected = np.load(theirs, mmap_mode="r", allow_pickle=False)
        try:
            array = open_npy(mine, expected.shape)
        except fmt.FormatError as e:
            return Difference(shown, "header", str(e))
        row = first_row_difference(array, expected)
        flat = np.flatnonzero(_bits(array[row]) != _bits(expected[row]))
        if name == fmt.ENCRYPTION_FILE:
            pixel = tuple(int(i) for i in np.unravel_index(flat[0], expected.shape[1:]))
            return Difference(shown, f"encryption {row}", f"{len(flat)} of {expected[row].size} values differ, first at (h, w, c) = {pixel}")
        column = int(flat[0])
        return Difference(shown, f"row {row}, column {column}", f"release has {array[row, column]!r}, regenerated {expected[row, column]!r}")
    if name == fmt.PREVIEW_FILE:
        with Image.open(theirs) as regenerated:  # written just now: trusted
            width, height = regenerated.size
            expected = np.asarray(regenerated.convert("RGB"))
        try:
            pixels = read_png(mine, width, height)  # untrusted: its header is checked before it is decoded
        except ValueError as e:
            return Difference(shown, "", f"not the regenerated {width}x{height} preview: {e}")
        same = np.array_equal(pixels, expected)
        return Difference(shown, "", "same pixels, different PNG bytes (another zlib or Pillow?)" if same else "pixels differ")
    return Difference(shown, "", "bytes differ from the regenerated file")


def compare_keys(store: fmt.KeyStore, again: fmt.KeyStore, shown: str, rows: int = 65536) -> list[Difference]:
    """The given key store against the regenerated one: first differing array and row, or attribute."""
    out = []
    for name in sorted(fmt.key_schema(again.params)):
        a, b = store[name], again[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            out.append(Difference(f"{shown}/{name}", "", f"{a.dtype} {a.shape}, regenerated {b.dtype} {b.shape}"))
            continue
        for start in range(0, a.shape[0], rows):
            x, y = store.rows(name, start, start + rows), again.rows(name, start, start + rows)
            if x.tobytes() != y.tobytes():
                out.append(Difference(f"{shown}/{name}", f"row {start + first_row_difference(x, y)}", "differs from the regenerated key"))
                break
    path = first_field_difference(store.attrs, again.attrs)
    if path is not None:
        out.append(Difference(f"{shown}/zarr.json", f"attribute {_field_name(path)}",
                              f"{_short(_at(store.attrs, path))}, regenerated {_short(_at(again.attrs, path))}"))
    return out


def first_row_difference(a: np.ndarray, b: np.ndarray, rows: int = 4096) -> int:
    """Index of the first row whose bytes differ (the arrays are known to differ somewhere)."""
    for start in range(0, len(a), rows):
        differs = rows_differ(a[start : start + rows], b[start : start + rows])
        if differs.any():
            return start + int(np.argmax(differs))
    raise ValueError("arrays are equal")


def first_field_difference(a, b, path: tuple = ()) -> tuple | None:
    """Keys (and list indices) leading to the first place, in sorted key order, where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return (*path, key)
            found = first_field_difference(a[key], b[key], (*path, key))
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_field_difference(x, y, (*path, i))
            if found is not None:
                return found
        return None
    return None if type(a) is type(b) and a == b else path


def _field_name(path: tuple) -> str:
    name = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")
    return name or "(top level)"


def _at(obj, path: tuple):
    """The value at ``path``, or ``<absent>``."""
    for key in path:
        if isinstance(obj, dict) and key in obj or isinstance(obj, list) and isinstance(key, int) and key < len(obj):
            obj = obj[key]
        else:
            return "<absent>"
    return obj


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bits(row: np.ndarray) -> np.ndarray:
    """A float32 row's values as their bit patterns, so that NaN payloads and -0.0 count as differences."""
    return np.ascontiguousarray(row, dtype="<f4").ravel().view(np.uint32)
