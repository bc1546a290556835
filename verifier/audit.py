"""Audit a release with its key store, without the source data sets: is every published byte what
the format and the keys say it must be?

Each check (see :data:`CHECKS` and ``docs/AUDIT.md``) appends :class:`Finding` s naming the check,
the file, the row or field and what was expected.  The public files are not trusted for anything:
a file is opened only if its name is one the format declares, it is a regular file (not a
symlink) and its header or metadata is exactly the one the format prescribes; the arrays are
then read through memory maps, ``chunk`` rows at a time, so memory stays bounded whatever N is.
Because every public byte is compared with a value derived from the keys, the public folder can
hold nothing else: no seed, mask, index or private pixel.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from challenge import files
from challenge import format as fmt
from challenge.domain import affine, to_uint8
from challenge.encoding import encode
from challenge.errors import UsageError, argument
from challenge.keys import distinct_below, lambda_rows, select_private, sign_bits
from challenge.keystream import random_order, row_words, stream_key
from challenge.labels import weighted_labels
from challenge.files import safe_name
from challenge.manifest import PREVIEW_COUNT, Manifest
from challenge.npy import open_npy
from challenge.params import Params
from challenge.preview import read_png, release_preview
from challenge.progress import Progress

CHECKS = {  # name -> what it verifies, in the order they run
    "manifest": "manifest.json has exactly the format's fields and agrees with the key store",
    "public_files": "public/ holds exactly the declared files: none extra or missing, no symlink, no unsafe name",
    "digests": "every public file's SHA-256 equals the manifest's",
    "key_store": "the key store opens, follows the schema, and its Zarr metadata is exactly what generate writes",
    "commitment": "the key store hashes to the commitment published in the manifest",
    "seed_keys": "selection, order, partners, patches, lambdas and sign masks are those the seed draws",
    "lambda": "every lambda row is finite, non-negative, sums to 1, max <= c1, private sum >= c2",
    "counts": "each private image is the first image of exactly per_image encryptions; every stored patch is used",
    "partners": "indices in range; private images and public patches distinct within each encryption",
    "labels": "label.npy equals the lambda-weighted one-hot labels of the private images",
    "encryptions": "encryption.npy equals every encryption re-computed from its keys and the ground truth",
    "public_zarr": "public.zarr holds the same two arrays as the .npy files, and nothing else",
    "preview": "preview.png shows the first encryptions and carries no other data",
    "secrets": "no public text or image file contains the seed or the stream key derived from it",
}
ROW_CHECKS = ("seed_keys", "lambda", "counts", "partners", "labels", "encryptions")
_CHUNK_NAME = re.compile(r"public\.zarr/(encryption/c/\d+/0/0/0|label/c/\d+/0)")
_FIXED_NAMES = {fmt.ENCRYPTION_FILE, fmt.LABEL_FILE, fmt.PREVIEW_FILE, "public.zarr/zarr.json",
                "public.zarr/encryption/zarr.json", "public.zarr/label/zarr.json"}
_TABLES = ("seed", "private/images", "private/labels", "private/source_index", "public/images", "public/bank_index")
_PER_ENCRYPTION = ("private_index", "public_index", "lam", "sign_bits")
_EMPTY_GROUP = fmt.zarr_group_metadata({})
HASH_TASK_BYTES = 1 << 28  # public bytes hashed by one task (whole files): few tasks, so few round trips on a cluster


@dataclass(frozen=True)
class Finding:
    check: str
    file: str
    where: str  # row, field or "" for the whole file
    message: str

    def line(self) -> str:
        where = f" [{self.where}]" if self.where else ""
        return f"{self.file}{where}: {self.message} ({self.check})"


@dataclass
class Report:
    findings: list[Finding]
    skipped: list[str]
    n_encryptions: int | None
    not_published: list[str] = field(default_factory=list)  # checks of copies the release does not hold (--formats)

    @property
    def sound(self) -> bool:
        return not self.findings and not self.skipped

    def status(self, check: str) -> str:
        count = sum(f.check == check for f in self.findings)
        if count:
            return f"FAIL ({count})"
        return "skipped" if check in self.skipped else "n/a" if check in self.not_published else "ok"

    def to_json(self) -> dict:
        return {
            "sound": self.sound,
            "n_encryptions": self.n_encryptions,
            "checks": [{"name": c, "status": self.status(c), "verifies": CHECKS[c]} for c in CHECKS],
            "findings": [f.__dict__ for f in self.findings],
        }


def audit(release: Path, keys: Path, chunk: int = 4096, runner: Runner | None = None) -> Report:
    """Run every check; raise UsageError only when ``release`` or ``keys`` is not one at all.

    ``runner`` runs the heavy work, the per-encryption checks of each ``chunk`` rows and the digests
    (default: in this process, :class:`Runner`; on a Dask cluster:
    :func:`verifier.distributed.audit_on_cluster`); the report is the same, byte for byte.
    """
    release, keys = Path(release), Path(keys)
    if not (release / fmt.PUBLIC_DIR / fmt.MANIFEST_FILE).exists():
        raise UsageError(f"{release}: not a release (no {fmt.PUBLIC_DIR}/{fmt.MANIFEST_FILE})")
    if not (keys / "zarr.json").exists():
        raise UsageError(f"{keys}: not a key store (no zarr.json)")
    if chunk < 1:
        raise UsageError(f"{argument('chunk')} must be positive, got {chunk}")
    return _Audit(release, keys, chunk, runner or Runner()).run()


@dataclass
class _RowTally:
    """First row and count of each (check, file, message): one finding per kind, not per row."""

    first: dict = field(default_factory=dict)

    def add(self, key: tuple, rows: np.ndarray, offset: int) -> None:
        if len(rows):
            first, count = self.first.get(key, (int(rows[0]) + offset, 0))
            self.first[key] = (first, count + len(rows))

    def merge(self, later: "_RowTally") -> None:
        """Add the tally of rows that all come after this one's (chunks merged in row order are one pass)."""
        for key, (first, count) in later.first.items():
            mine = self.first.get(key)
            self.first[key] = (first, count) if mine is None else (mine[0], mine[1] + count)

    def findings(self) -> list[Finding]:
        out = []
        for (check, file, message), (first, count) in self.first.items():
            where = f"row {first}" + (f" (+{count - 1} more)" if count > 1 else "")
            out.append(Finding(check, file, where, message))
        return out


@dataclass(frozen=True)
class RowContext:
    """What the per-encryption checks share across chunks: tables, draws, names, the key store.  Plain
    data and paths, so a Dask cluster sends it once to every worker, which reads its chunks' keys and
    opens the published arrays by their paths."""

    params: Params
    tables: dict[str, np.ndarray]
    key: bytes  # the stream key (FORMAT.md 7.1): the seed itself in version 1
    version: int
    order: np.ndarray
    bank_size: int | None
    keys_name: str  # the key store as the report names it
    published: dict[str, tuple[Path, tuple]]  # name -> (path, shape) of the public .npy files that opened
    store: fmt.KeyStore  # opened and checked by the caller; its per-encryption arrays are read by chunk

    def key_file(self, array: str) -> str:
        return f"{self.keys_name}/{array}"

    def open_published(self) -> dict[str, np.ndarray]:
        """Memory maps of the published arrays (checked again: they are opened anew wherever this runs)."""
        return {name: open_npy(path, shape) for name, (path, shape) in self.published.items()}


@dataclass
class RowFindings:
    """The findings (a tally: first row and count of each kind) and counts of some rows."""

    tally: _RowTally
    counts: np.ndarray  # per private image: the encryptions it is the first image of
    used: np.ndarray  # per stored public patch: used by an encryption

    def merge(self, later: "RowFindings") -> None:
        """Add the findings of rows that all come after these (chunks merged in row order are one pass)."""
        self.tally.merge(later.tally)
        self.counts += later.counts
        self.used |= later.used


class Runner:
    """Where the audit's heavy work runs: in this process (this class), or on a Dask cluster's workers
    (:func:`verifier.distributed.audit_on_cluster`), where the whole-file work runs while the rows
    are checked.  The work and its results are the same."""

    def later(self, fn: Callable, *args) -> Callable[[], Any]:
        """Start ``fn(*args)``; calling what this returns, once, gives its result (here the work is
        done then, so a progress bar drawn while the results are taken shows the work as it is done)."""
        return partial(fn, *args)

    def check_chunks(self, context: RowContext, chunks: Iterable[tuple[int, int]]) -> Iterator[RowFindings]:
        """The findings of each chunk (rows ``a .. b``), in the order of ``chunks``."""
        arrays = context.open_published()
        for a, b in chunks:
            yield check_chunk(context, arrays, a, b)


class _Audit:
    def __init__(self, release: Path, keys: Path, chunk: int, runner: Runner):
        self.release, self.keys, self.chunk, self.runner = release, keys, chunk, runner
        self.public = release / fmt.PUBLIC_DIR
        self.findings: list[Finding | Callable[[], list[Finding]]] = []  # callables: see find_later
        self.version = fmt.FORMAT_VERSION  # until the manifest says otherwise
        self.skipped: list[str] = []
        self.not_published: list[str] = []
        self.tally = _RowTally()  # of the per-encryption checks
        self.keys_name = self.name(keys)

    def name(self, path: Path) -> str:
        """A path as the report shows it: relative to the release when inside it."""
        inside = path.resolve().is_relative_to(self.release.resolve())
        return Path(os.path.relpath(path.resolve(), self.release.resolve())).as_posix() if inside else str(path)

    def find(self, check: str, file: str, where: str, message: str) -> None:
        self.findings.append(Finding(check, file, where, message))

    def find_later(self, findings: Callable[[], list[Finding]]) -> None:
        """Findings of work started by :meth:`Runner.later`, in this place of the report, taken when it is made."""
        self.findings.append(findings)

    def store_error(self, check: str, error: fmt.FormatError) -> None:
        """A key-store error ("PATH: message") as a finding naming the file or array inside the store."""
        text = str(error).replace(str(self.keys.resolve()), self.keys_name).replace(str(self.keys), self.keys_name)
        file, _, message = text.partition(": ")
        self.find(check, file, "", message)

    def key_file(self, array: str) -> str:
        return f"{self.keys_name}/{array}"

    # --- driver -------------------------------------------------------------------------------

    def run(self) -> Report:
        manifest_name = f"{fmt.PUBLIC_DIR}/{fmt.MANIFEST_FILE}"
        try:
            obj = fmt.read_json(self.public / fmt.MANIFEST_FILE)
        except fmt.FormatError as e:
            self.find("manifest", manifest_name, "", str(e).split(": ", 1)[-1])
            self.skipped = [c for c in CHECKS if c != "manifest"]
            return self.report(None)
        manifest = self.check_manifest(obj)
        params = manifest.params
        names = self.check_public_files(manifest)
        self.check_digests(manifest, names)
        store = self.open_store()
        if store is not None:
            self.check_manifest_against_store(manifest, store)
            self.check_commitment(manifest, store)
        arrays = self.open_arrays(params, manifest) if params is not None else {}
        if store is not None and params is not None and params == store.params:
            self.check_rows(manifest, store, params, arrays)
        else:
            self.skip(*ROW_CHECKS)
        if params is not None:
            if publishes_zarr(manifest) or os.path.lexists(self.public / fmt.PUBLIC_ZARR):
                self.check_public_zarr(arrays, params.image_shape)
            else:  # generate --formats npy: the .npy files are the only copy
                self.not_published.append("public_zarr")
            self.check_preview(params, arrays)
        else:
            self.skip("public_zarr", "preview")
        if store is not None:
            self.check_secrets(store, names)
        return self.report(params.n_encryptions if params else None)

    def skip(self, *checks: str) -> None:
        self.skipped += [c for c in checks if c not in self.skipped]

    def report(self, n: int | None) -> Report:
        self.findings = [f for item in self.findings for f in (item() if callable(item) else [item])]
        self.findings += self.tally.findings()
        order = list(CHECKS)
        self.findings.sort(key=lambda f: order.index(f.check))
        failed = {f.check for f in self.findings}
        skipped = [c for c in self.skipped if c not in failed]
        return Report(self.findings, skipped, n, self.not_published)

    # --- manifest -----------------------------------------------------------------------------

    def check_manifest(self, obj: dict) -> Manifest:
        """Field by field against the format, each problem a finding; the manifest as far as it is
        well-formed (a field that is not is None, and the checks that need it are skipped)."""
        file = f"{fmt.PUBLIC_DIR}/{fmt.MANIFEST_FILE}"
        problems = []
        manifest = Manifest.from_json(obj, file, problems)
        for field_, message in problems:
            self.find("manifest", file, field_, message)
        self.version = manifest.version or fmt.FORMAT_VERSION
        return manifest

    def check_manifest_against_store(self, manifest: Manifest, store: fmt.KeyStore) -> None:
        file = f"{fmt.PUBLIC_DIR}/{fmt.MANIFEST_FILE}"
        if manifest.params != store.params:
            self.find("manifest", file, "params", f"differ from the key store's {store.params.to_dict(store.version)}")
        if manifest.class_names != store.attrs["class_names"]:
            self.find("manifest", file, "class_names", "differ from the key store's")
        if manifest.version != store.version:
            self.find("manifest", file, "format_version", f"differs from the key store's {store.version}")
        # the key store says which data its stream key was derived from (FORMAT.md 7.1); malformed
        # sources are a finding already
        if store.version >= 2 and manifest.sources is not None:
            bound = store.attrs["stream_context"]["sources"]
            for role in ("private", "public"):
                if manifest.fingerprint(role) != bound[role]:
                    self.find("manifest", file, f"sources.{role}.fingerprint",
                              f"differs from the key store's stream_context ({str(bound[role])[:16]}...)")

    # --- files ----------------------------------------------------------------------------------

    def check_public_files(self, manifest: Manifest) -> set[str]:
        """The declared names that are safe, listed and regular files: the only ones ever opened."""
        check = "public_files"
        listed = manifest.files or {}
        on_disk = set()
        if self.public.is_symlink():
            self.find(check, fmt.PUBLIC_DIR, "", "is a symlink; a release holds regular files only")
            return set()
        for root, dirs, names in os.walk(self.public):
            for entry in dirs + names:
                path = Path(root, entry)
                rel = path.relative_to(self.public).as_posix()
                if path.is_symlink():
                    self.find(check, f"{fmt.PUBLIC_DIR}/{rel}", "", f"symlink to {os.readlink(path)!r}; a release holds regular files only")
                elif entry in names and not path.is_file():
                    self.find(check, f"{fmt.PUBLIC_DIR}/{rel}", "", "not a regular file")
                elif entry in names and rel != fmt.MANIFEST_FILE:
                    on_disk.add(rel)
        usable = set()
        for name in sorted(listed):
            shown = f"{fmt.PUBLIC_DIR}/{name}"
            if not safe_name(name):
                self.find(check, f"{fmt.PUBLIC_DIR}/{fmt.MANIFEST_FILE}", f"files[{name!r}]", "unsafe name (absolute, empty or '..' part): not opened")
            elif name not in _FIXED_NAMES and not _CHUNK_NAME.fullmatch(name):
                self.find(check, shown, "", "listed in the manifest but not a file the format declares public")
            elif name not in on_disk:
                self.find(check, shown, "", "listed in the manifest but missing (or not a regular file)")
            else:
                usable.add(name)
        for name in sorted(on_disk - set(listed)):
            declared = name in _FIXED_NAMES or _CHUNK_NAME.fullmatch(name)
            why = "not listed in the manifest" + ("" if declared else " and not a file the format declares public")
            self.find(check, f"{fmt.PUBLIC_DIR}/{name}", "", why)
        return usable

    def check_digests(self, manifest: Manifest, names: set[str]) -> None:
        """Every file hashed, by tasks of about :data:`HASH_TASK_BYTES` started now (on a cluster they
        run while the rows are checked); their findings are taken when the report is made."""
        sizes = {name: os.stat(self.public / name, follow_symlinks=False).st_size for name in names}
        tasks = [(group, self.runner.later(_sha256_files, [self.public / name for name in group]))
                 for group in _hash_groups(sorted(names), sizes)]
        self.find_later(partial(_digest_findings, tasks, sizes, manifest.files or {}))

    # --- key store ------------------------------------------------------------------------------

    def open_store(self) -> fmt.KeyStore | None:
        try:  # index ranges are checked row by row below, as findings of the check they break
            store = fmt.open_key_store(self.keys, check_indices=False)
        except fmt.FormatError as e:
            self.store_error("key_store", e)
            self.skip("commitment", "secrets", *ROW_CHECKS)
            return None
        # the commitment covers contents, not storage metadata: that must be exactly what generate writes
        schema = fmt.key_schema(store.params)
        for group in ["", *sorted({name.rsplit("/", 1)[0] for name in schema if "/" in name})]:
            file = f"{group}/zarr.json" if group else "zarr.json"
            meta = self.read_zarr_json(self.keys / file)
            if not group and isinstance(meta, dict):
                meta = {**meta, "attributes": {}}  # the root's attributes are bound by the commitment
            if meta != _EMPTY_GROUP:
                self.find("key_store", self.key_file(file), "", f"expected exactly {_EMPTY_GROUP} (with attributes at the root)")
        for name in schema:
            array = store[name]
            expected = fmt.zarr_array_metadata(array.shape, str(array.dtype), array.chunks[0], compressed=True)
            if self.read_zarr_json(self.keys / name / "zarr.json") != expected:
                self.find("key_store", self.key_file(f"{name}/zarr.json"), "",
                          "metadata (fill value, codecs, attributes) is not what generate writes")
        for rel in _undeclared_entries(self.keys, store):
            self.find("key_store", self.key_file(rel), "",
                      "not part of the key store (FORMAT.md 5 declares every array and chunk it holds): refused")
        return store

    def check_commitment(self, manifest: Manifest, store: fmt.KeyStore) -> None:
        published = manifest.commitment
        try:
            actual = fmt.commitment(store)
        except fmt.FormatError as e:
            self.store_error("commitment", e)
            return
        if actual != published:
            self.find("commitment", self.keys_name, "",
                      f"hashes to {actual[:23]}..., but public/manifest.json key_store.commitment is {str(published)[:23]}...: "
                      "this is not the committed key store (or the manifest was changed)")

    # --- per-encryption checks ------------------------------------------------------------------

    def open_arrays(self, params: Params, manifest: Manifest) -> dict[str, np.ndarray]:
        """Memory maps of encryption.npy and label.npy, for those whose header and size are right."""
        out = {}
        shapes = {fmt.ENCRYPTION_FILE: ("encryptions", (params.n_encryptions, *params.image_shape)),
                  fmt.LABEL_FILE: ("labels", (params.n_encryptions, manifest.n_classes))}
        for name, (check, shape) in shapes.items():
            if shape[-1] is None:
                continue
            try:
                out[name] = open_npy(self.public / name, shape)
            except (fmt.FormatError, OSError) as e:
                self.find(check, f"{fmt.PUBLIC_DIR}/{name}", "", str(e))
        return out

    def check_rows(self, manifest: Manifest, store: fmt.KeyStore, params: Params, arrays: dict) -> None:
        """Every per-encryption rule, ``chunk`` rows at a time, by the runner."""
        N = params.n_encryptions
        try:
            t = {name: store.read(name) for name in _TABLES}
            key = stream_key(t["seed"].tobytes(), store.attrs.get("stream_context"), store.version)
            self.check_tables(manifest, store, params, t, key)
            context = RowContext(params, t, key, store.version, random_order(key, "order", N),
                                 manifest.images("public"), self.keys_name,
                                 {name: (self.public / name, array.shape) for name, array in arrays.items()}, store)
            chunks = [(a, min(a + self.chunk, N)) for a in range(0, N, self.chunk)]
            rows = RowFindings(self.tally, np.zeros(params.n_private, np.int64), np.zeros(len(t["public/images"]), bool))
            with Progress("audit", N, unit="encryptions") as bar:
                for a, found in zip(range(0, N, self.chunk), self.runner.check_chunks(context, chunks)):
                    rows.merge(found)
                    bar.advance(min(self.chunk, N - a))
        except fmt.FormatError as e:
            self.store_error("key_store", e)
            return
        for array, what, bad in (("encryption/private_index", "private image", rows.counts != params.per_image),
                                 ("public/images", "row", ~rows.used)):
            bad = np.flatnonzero(bad)
            if len(bad):
                more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
                message = (f"first image of {rows.counts[bad[0]]} encryptions, expected per_image = {params.per_image}"
                           if what == "private image" else "stored public patch used by no encryption")
                self.find("counts", self.key_file(array), f"{what} {bad[0]}{more}", message)

    def check_tables(self, manifest: Manifest, store: fmt.KeyStore, params: Params, t: dict, key: bytes) -> None:
        n_classes = len(store.attrs["class_names"])
        labels = t["private/labels"]
        if labels.min() < 0 or labels.max() >= n_classes:
            self.find("labels", self.key_file("private/labels"), "", f"values must be class indices 0..{n_classes - 1}")
        sizes = {role: manifest.images(role) for role in ("private", "public")}
        for name, source in (("private/source_index", "private"), ("public/bank_index", "public")):
            index, size = t[name], sizes[source]
            if len(index) and (np.any(np.diff(index) <= 0) or index[0] < 0 or (size is not None and index[-1] >= size)):
                self.find("seed_keys", self.key_file(name), "", f"must ascend strictly within 0..sources.{source}.images - 1")
        size = sizes["private"]
        if not params.balanced and size is not None:
            expected = select_private(key, np.zeros(size, np.int64), params.n_private, False)
            if not np.array_equal(expected, t["private/source_index"]):
                self.find("seed_keys", self.key_file("private/source_index"), "", "not the selection the seed draws")

    # --- public.zarr, preview, secrets ----------------------------------------------------------

    def check_public_zarr(self, arrays: dict, image_shape: tuple) -> None:
        check, root = "public_zarr", self.public / fmt.PUBLIC_ZARR
        group = fmt.zarr_group_metadata(fmt.public_zarr_attributes(self.version))
        if self.read_zarr_json(root / "zarr.json") != group:
            self.find(check, "public/public.zarr/zarr.json", "", f"expected exactly {group}")
        for name, source in (("encryption", fmt.ENCRYPTION_FILE), ("label", fmt.LABEL_FILE)):
            file = f"public/public.zarr/{name}"
            meta = self.read_zarr_json(root / name / "zarr.json")
            shape = arrays[source].shape if source in arrays else None
            rows = fmt.public_chunk_rows(name, image_shape)
            if shape is None or meta != fmt.zarr_array_metadata(shape, "float32", rows, compressed=False):
                self.find(check, f"{file}/zarr.json", "", f"expected the metadata of an uncompressed float32 array "
                          f"of shape {shape} in chunks of {rows} rows (FORMAT.md 5), and nothing else")
                continue
            self.check_zarr_chunks(file, root / name, arrays[source], source, rows)

    def read_zarr_json(self, path: Path) -> dict | None:
        if path.is_symlink():
            return None
        try:
            return fmt.read_json(path)
        except fmt.FormatError:
            return None

    def check_zarr_chunks(self, file: str, folder: Path, source: np.ndarray, source_name: str, rows: int) -> None:
        """Every chunk file holds exactly the rows of the .npy file, zero-padded: no room for more."""
        row_shape = source.shape[1:]
        count = -(-len(source) // rows)
        tail = "/0" * len(row_shape)
        expected = {f"c/{i}{tail}" for i in range(count)}
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.name != "zarr.json" and not p.is_dir()}
        for extra in sorted(present - expected):
            self.find("public_zarr", f"{file}/{extra}", "", "not a chunk of the array")
        for i in range(count):
            name = f"c/{i}{tail}"
            path = folder / name
            if path.is_symlink() or not path.is_file() or path.stat().st_size != rows * 4 * int(np.prod(row_shape)):
                self.find("public_zarr", f"{file}/{name}", "", f"missing or not {rows} rows of float32")
            elif not self.same_rows(path, source, i * rows, rows):
                self.find("public_zarr", f"{file}/{name}", f"rows {i * rows}..{i * rows + rows - 1}",
                          f"differs from public/{source_name} (or its zero padding)")

    def same_rows(self, path: Path, source: np.ndarray, first: int, rows: int) -> bool:
        """Whether a chunk file holds rows ``first ..`` of ``source``, zero past its end; read ``chunk`` rows at a time."""
        with files.open_regular(path, follow_symlinks=False) as f:
            for start in range(first, first + rows, self.chunk):
                stop = min(start + self.chunk, first + rows)
                block = np.zeros((stop - start, *source.shape[1:]), "<f4")
                part = source[start:stop]
                block[: len(part)] = part
                if f.read(block.nbytes) != block.tobytes():
                    return False
        return True

    def check_preview(self, params: Params, arrays: dict) -> None:
        file, path = f"{fmt.PUBLIC_DIR}/{fmt.PREVIEW_FILE}", self.public / fmt.PREVIEW_FILE
        if fmt.ENCRYPTION_FILE not in arrays or path.is_symlink() or not path.is_file():
            self.skip("preview")
            return
        expected = np.asarray(release_preview(to_uint8(arrays[fmt.ENCRYPTION_FILE][:PREVIEW_COUNT], params.domain), self.version))
        height, width = expected.shape[:2]
        try:
            pixels = read_png(path, width, height)
        except (ValueError, struct.error) as e:
            self.find("preview", file, "", f"not the format's preview PNG: {e}")
            return
        if not np.array_equal(pixels, expected):
            self.find("preview", file, "", f"pixels differ from the contact sheet of the first {PREVIEW_COUNT} encryptions")

    def check_secrets(self, store: fmt.KeyStore, names: set[str]) -> None:
        """The seed, raw or as hex, in no file whose content is not fully re-derived from the keys."""
        try:
            seed = store.read("seed").tobytes()
        except fmt.FormatError:
            return
        key = stream_key(seed, store.attrs.get("stream_context"), store.version)
        needles = tuple(form for secret in {seed, key} for form in (secret, secret.hex().encode(), secret.hex().upper().encode()))
        texts = [fmt.MANIFEST_FILE, *sorted(n for n in names if not n.endswith(".npy") and not _CHUNK_NAME.fullmatch(n))]
        for name in texts:
            path = self.public / name
            if not path.is_file() or path.is_symlink():
                continue
            try:
                found = _contains(path, needles)
            except files.UnsafeFile as e:
                self.find("secrets", f"{fmt.PUBLIC_DIR}/{name}", "", f"not searched: {str(e).split(': ', 1)[-1]}")
                continue
            if found:
                self.find("secrets", f"{fmt.PUBLIC_DIR}/{name}", "", "contains the secret seed")


def check_chunk(rows: RowContext, arrays: dict[str, np.ndarray], a: int, b: int) -> RowFindings:
    """The findings of rows ``a .. b``, their keys read from the key store; ``arrays`` are the
    published arrays (:meth:`RowContext.open_published`).  An unreadable key chunk is a FormatError."""
    pi, pu, lam, signs = (rows.store.rows(f"encryption/{name}", a, b) for name in _PER_ENCRYPTION)
    params, t = rows.params, rows.tables
    n, m, kp = params.n_private, len(t["public/images"]), params.k_private
    found = RowFindings(_RowTally(), np.zeros(n, np.int64), np.zeros(m, bool))

    def tally(check: str, file: str, bad: np.ndarray, message: str) -> None:
        found.tally.add((check, file, message), np.flatnonzero(bad), a)

    # partners: ranges first, because everything below indexes with them
    pi_file, pu_file = rows.key_file("encryption/private_index"), rows.key_file("encryption/public_index")
    bad_pi, bad_pu = np.any((pi < 0) | (pi >= n), axis=1), np.any((pu < 0) | (pu >= m), axis=1)
    tally("partners", pi_file, bad_pi, f"index outside 0..{n - 1}")
    tally("partners", pu_file, bad_pu, f"index outside 0..{m - 1}")
    tally("partners", pi_file, _repeats(pi), "a private image appears twice in one encryption")
    tally("partners", pu_file, _repeats(pu), "a public patch appears twice in one encryption")
    ok = ~(bad_pi | bad_pu)

    # lambda: the acceptance rule on the stored float32 values, private ones summed left to right
    lam_file = rows.key_file("encryption/lam")
    with np.errstate(invalid="ignore"):  # NaN is a finding, not a warning
        lam64 = lam.astype(np.float64)
        finite = np.all(np.isfinite(lam64), axis=1)
        private_sum = np.zeros(len(lam))
        for j in range(kp):
            private_sum += lam64[:, j]
        tally("lambda", lam_file, ~finite | np.any(lam64 < 0, axis=1), "not finite and non-negative")
        tally("lambda", lam_file, finite & (lam64.max(axis=1) > params.c1), f"max lambda > c1 = {params.c1}")
        tally("lambda", lam_file, finite & (private_sum < params.c2), f"private lambdas sum < c2 = {params.c2}")
        tally("lambda", lam_file, finite & (np.abs(lam64.sum(axis=1) - 1) > 1e-6), "lambdas do not sum to 1")

    # seed: every key of the row is the one its index draws
    seed = rows.key
    first = rows.order[a:b] // params.per_image
    partners = distinct_below(row_words(seed, "partners", first_row=a, n_rows=b - a, words_per_row=kp - 1), n,
                              excluded=first[:, None])
    tally("seed_keys", pi_file, np.any(pi != np.concatenate([first[:, None], partners], axis=1), axis=1),
          "not the images the seed draws")
    if params.k_public and rows.bank_size is not None:
        bank = distinct_below(row_words(seed, "public", first_row=a, n_rows=b - a, words_per_row=params.k_public),
                              rows.bank_size)
        stored = np.full(pu.shape, -1, np.int64)
        stored[ok] = t["public/bank_index"][pu[ok]]
        tally("seed_keys", pu_file, ok & np.any(stored != bank, axis=1), "not the patches the seed draws")
    drawn = lambda_rows(seed, params, first_row=a, n_rows=b - a, version=rows.version)
    tally("seed_keys", lam_file, rows_differ(lam, drawn), "not the lambdas the seed draws")
    signs_file = rows.key_file("encryption/sign_bits")
    if params.masked:
        tally("seed_keys", signs_file, rows_differ(signs, sign_bits(seed, a, b - a, params.image_shape)), "not the sign mask the seed draws")
    else:
        tally("seed_keys", signs_file, np.any(signs != 0, axis=1), "mixup has no sign mask: expected all zero")

    # counts and the published arrays, for the rows whose indices are usable
    found.counts += np.bincount(pi[ok, 0], minlength=n)
    found.used[pu[ok].ravel()] = True

    def usable(differs: np.ndarray) -> np.ndarray:  # a mask over the usable rows, spread over the chunk
        mask = np.zeros(len(lam), bool)
        mask[ok] = differs
        return mask

    labels, published = t["private/labels"], arrays.get(fmt.LABEL_FILE)
    if published is not None and 0 <= labels.min() and labels.max() < published.shape[1]:
        expected = weighted_labels(lam[ok], labels, pi[ok], published.shape[1])
        tally("labels", f"{fmt.PUBLIC_DIR}/{fmt.LABEL_FILE}", usable(rows_differ(published[a:b][ok], expected)),
              "differs from the lambda-weighted labels of its keys")
    published = arrays.get(fmt.ENCRYPTION_FILE)
    if published is not None:
        row_keys = dict(zip(("private_index", "public_index", "lam", "sign_bits"), (pi, pu, lam, signs)))
        expected = encode(t["private/images"], t["public/images"], affine(params.domain),
                          **{name: np.ascontiguousarray(x[ok]) for name, x in row_keys.items()})
        tally("encryptions", f"{fmt.PUBLIC_DIR}/{fmt.ENCRYPTION_FILE}", usable(rows_differ(published[a:b][ok], expected)),
              "differs from its re-computation from the keys")
    return found


def _sha256_files(paths: list[Path]) -> list[str]:
    """The SHA-256 of each file (a task of :meth:`_Audit.check_digests`)."""
    return [fmt.sha256_file(path) for path in paths]


def _hash_groups(names: list[str], sizes: dict[str, int]) -> Iterator[list[str]]:
    """``names`` in order, cut into groups of at least :data:`HASH_TASK_BYTES` (but the last)."""
    group, size = [], 0
    for name in names:
        group.append(name)
        size += sizes[name]
        if size >= HASH_TASK_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def _digest_findings(tasks: list[tuple[list[str], Callable[[], list[str]]]], sizes: dict[str, int],
                     listed: dict) -> list[Finding]:
    """The files whose digest differs from the manifest's, taking each task's hashes in turn; the bar
    counts the bytes hashed, as the hashes arrive."""
    found = []
    with Progress("digests", sum(sizes.values()), unit="B") as bar:
        for names, digests in tasks:
            found += [Finding("digests", f"{fmt.PUBLIC_DIR}/{name}", "",
                              f"SHA-256 {digest[:16]}... differs from public/manifest.json's {str(listed[name])[:16]}...")
                      for name, digest in zip(names, digests()) if digest != listed[name]]
            bar.advance(sum(sizes[name] for name in names))
    return found


def _contains(path: Path, needles: tuple[bytes, ...], block: int = 1 << 20) -> bool:
    """Whether a regular file holds any of ``needles``, read a block at a time (blocks overlap by a needle)."""
    overlap, tail = max(map(len, needles)) - 1, b""
    with files.open_regular(path, follow_symlinks=False) as f:
        while chunk := f.read(block):
            data = tail + chunk
            if any(needle in data for needle in needles):
                return True
            tail = data[-overlap:]
    return False


def publishes_zarr(manifest: Manifest) -> bool:
    """Whether the manifest lists public.zarr (``generate --formats`` with zarr, the default)."""
    return any(name.startswith(fmt.PUBLIC_ZARR + "/") for name in manifest.files or {})


def _repeats(index: np.ndarray) -> np.ndarray:
    ordered = np.sort(index, axis=1)
    return np.any(ordered[:, 1:] == ordered[:, :-1], axis=1)


def rows_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows whose bytes differ (so -0.0 != 0.0 and NaN == the same NaN: the format is the bytes)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return np.any(a.reshape(len(a), -1).view(np.uint8) != b.reshape(len(b), -1).view(np.uint8), axis=1)


def _undeclared_entries(keys: Path, store: fmt.KeyStore) -> list[str]:
    """Files and folders in the key store that its schema does not declare: an extra array, a stray
    file, a chunk outside an array's grid.  The commitment covers the declared arrays only, so
    anything else would ride along unseen with the keys."""
    schema = fmt.key_schema(store.params)
    groups = {name.rsplit("/", 1)[0] for name in schema if "/" in name}
    metadata = {"zarr.json", *(f"{name}/zarr.json" for name in (*groups, *schema))}
    chunks = {name: (re.compile(rf"{re.escape(name)}/c/(0|[1-9][0-9]*)" + "/0" * (store[name].ndim - 1)),
                     -(-store[name].shape[0] // store[name].chunks[0])) for name in schema}

    def declared_file(rel: str) -> bool:
        return rel in metadata or any((m := pattern.fullmatch(rel)) is not None and int(m[1]) < count
                                      for pattern, count in chunks.values())

    on_disk = {Path(root, entry).relative_to(keys).as_posix(): entry in dirs
               for root, dirs, names in os.walk(keys) for entry in dirs + names}
    kept = {rel for rel, is_folder in on_disk.items() if not is_folder and declared_file(rel)}
    folders = {str(parent) for rel in kept for parent in Path(rel).parents if str(parent) != "."}
    undeclared = {rel for rel in on_disk if rel not in kept and rel not in folders}
    return sorted(rel for rel in undeclared if str(Path(rel).parent) not in undeclared)  # a stray folder once, not its files
