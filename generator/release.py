"""Write a complete release: keys, encryptions, labels, key store, manifest, preview.

Everything is written into a hidden sibling folder ``.NAME.partial-PID`` and renamed to ``NAME``
only at the end, so an interrupted run never leaves a folder that looks like a release.  A run
holds the lock file ``.NAME.lock`` from start to end, so two runs never write one ``NAME``, and a
release replaced by ``--force`` is never deleted before the new one has its name (docs/FORMAT.md
section 1 says how a crash is recovered).  The
encryptions are produced chunk by chunk (``chunk`` rows at a time): memory stays bounded and the
bytes do not depend on the chunk size, because every key is drawn by row index.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import shutil
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import zarr

from challenge import format as fmt
from challenge.domain import affine, to_uint8
from challenge.encoding import encode
from challenge.errors import UsageError, argument
from challenge.geometry import DEFAULT_IMAGE_SHAPE, sign_bytes
from challenge.imageset import ImageSet
from challenge.keys import draw_plan, sign_bits
from challenge.keystream import stream_context, stream_key
from challenge.labels import weighted_labels
from challenge.manifest import PREVIEW_COUNT, Manifest
from challenge.npy import npy_header
from challenge.params import SHAPED_SINCE, Params
from challenge.preview import release_preview, save_png
from challenge.progress import Progress

# the copies of the public arrays a release can hold, all by default (docs/FORMAT.md section 1): .npy for
# 2020-era code and every reader of ours, public.zarr for chunked readers
__all__ = ["FORMATS", "RowEncoder", "ZarrChunks", "formats_of", "generate", "output_lock", "parse_formats",
           "sync_path"]

FORMATS = ("npy", "zarr")


def parse_formats(text: str) -> tuple[str, ...]:
    """``--formats npy,zarr`` as a tuple in :data:`FORMATS` order; ``npy`` is required (every reader uses it)."""
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    if not chosen <= set(FORMATS):
        raise UsageError(f"{argument('formats', text)}: expected a comma-separated subset of {','.join(FORMATS)}")
    if "npy" not in chosen:
        raise UsageError(f"{argument('formats', text)}: must include npy (the 2020 format, which every reader of "
                         "a release uses)")
    return tuple(name for name in FORMATS if name in chosen)


def formats_of(files: dict) -> tuple[str, ...]:
    """The formats a release was written with, from its manifest's ``files``: what reproduce regenerates."""
    return FORMATS if any(name.startswith(fmt.PUBLIC_ZARR + "/") for name in files) else ("npy",)


class _HashedFile:
    """A new file whose SHA-256 is computed from the bytes as they are written: no second read to hash it.

    Every ``WRITEBACK_BYTES`` the kernel is told to start writing the bytes so far to the disk
    (``POSIX_FADV_DONTNEED`` starts the writeback of dirty pages without waiting for it), so the
    disk works while the release is encoded instead of when the final fsync asks.
    """

    WRITEBACK_BYTES = 32 << 20

    def __init__(self, path: Path, digests: dict, name: str):
        self.file, self.hash = open(path, "xb"), hashlib.sha256()
        self.digests, self.name = digests, name
        self.written = self.started = 0

    def write(self, data) -> None:
        self.hash.update(data)
        self.file.write(data)
        self.written += memoryview(data).nbytes
        if self.written - self.started >= self.WRITEBACK_BYTES:
            self._start_writeback()

    def close(self) -> None:
        self._start_writeback()
        self.file.close()
        self.digests[self.name] = self.hash.hexdigest()

    def _start_writeback(self) -> None:
        self.file.flush()
        os.posix_fadvise(self.file.fileno(), self.started, self.written - self.started, os.POSIX_FADV_DONTNEED)
        self.started = self.written


class _InBackground:
    """A copy (:class:`_HashedFile` or :class:`ZarrChunks`) written by a thread of its own.

    Hashing and file writes release the GIL, so the copies are hashed and written in parallel with
    each other and with the encoding. Blocks are handed over in order (the bytes do not depend on
    timing) and at most one waits per copy, so memory stays bounded.
    """

    def __init__(self, copy):
        self.copy, self.queue, self.error = copy, queue.Queue(maxsize=1), None
        self.thread = threading.Thread(target=self._run, name=f"write {type(copy).__name__}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (block := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.copy.write(block)
                except BaseException as e:  # re-raised in the encoding thread
                    self.error = e

    def write(self, block: np.ndarray) -> None:
        self._raise()
        self.queue.put(block)

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def close(self) -> None:
        self._raise()
        self.copy.close()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


@contextmanager
def _written_in_background(copies: list):
    """Yield background writers for ``copies``; their threads have ended when the block is left,
    even by an error (so nothing writes into a build folder being removed)."""
    writers = [_InBackground(copy) for copy in copies]
    try:
        yield writers
    finally:
        for writer in writers:
            writer.stop()
    for writer in writers:
        writer.close()


def _npy_file(path: Path, shape: tuple, digests: dict, name: str) -> _HashedFile:
    """A hashed ``.npy`` file with the version-1.0 header ``np.save`` writes; the caller appends C-order float32 rows."""
    f = _HashedFile(path, digests, name)
    f.write(npy_header(shape))
    return f


class ZarrChunks:
    """The chunk files of an uncompressed float32 Zarr v3 array, written from rows as they come.

    The bytes are what zarr writes for such an array (its ``bytes`` codec is the rows themselves;
    the last chunk is written whole, zero past the end), so each file is hashed as it is written.
    Chunk boundaries are the array's, whatever the size of the blocks given to :meth:`write`.
    """

    def __init__(self, public_dir: Path, array: str, *, rows: int, row_shape: tuple, digests: dict,
                 first_chunk: int = 0):
        self.public_dir, self.array, self.digests = public_dir, array, digests
        self.buffer = np.zeros((rows, *row_shape), "<f4")
        self.filled, self.index = 0, first_chunk

    def write(self, block: np.ndarray) -> None:
        while len(block):
            take = min(len(self.buffer) - self.filled, len(block))
            self.buffer[self.filled : self.filled + take] = block[:take]
            self.filled += take
            block = block[take:]
            if self.filled == len(self.buffer):
                self._flush()

    def close(self) -> None:
        if self.filled:
            self.buffer[self.filled :] = 0
            self._flush()

    def _flush(self) -> None:
        name = f"{fmt.PUBLIC_ZARR}/{self.array}/c/{self.index}" + "/0" * (self.buffer.ndim - 1)
        path = self.public_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        f = _HashedFile(path, self.digests, name)
        f.write(self.buffer)
        f.close()
        self.filled, self.index = 0, self.index + 1


@dataclass(frozen=True, kw_only=True)
class RowEncoder:
    """What encoding rows needs besides their keys: small enough to send once to every worker of a cluster."""

    key: bytes  # the stream key, which draws the sign rows by row index
    masked: bool
    ground_truth: np.ndarray
    public_images: np.ndarray
    domain_affine: tuple

    @property
    def image_shape(self) -> tuple:
        return self.ground_truth.shape[1:]

    def rows(self, start: int, private_index: np.ndarray, public_index: np.ndarray, lam: np.ndarray, *,
             out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The sign rows and encryptions of rows ``start .. start + len(lam)``, whatever the split into
        blocks; the encryptions in ``out`` (C-order float32) if given."""
        n, shape = len(lam), self.image_shape
        signs = sign_bits(self.key, start, n, shape) if self.masked else np.zeros((n, sign_bytes(shape)), np.uint8)
        return signs, encode(self.ground_truth, self.public_images, self.domain_affine, private_index=private_index,
                             public_index=public_index, lam=lam, sign_bits=signs, out=out)


def _write_encryptions(encoder: RowEncoder, row_keys: tuple, copies: list, z_signs, chunk: int,
                       progress: bool | None) -> np.ndarray:
    """Encode ``chunk`` rows at a time into ``copies`` and the key store's sign rows; return the preview's rows."""
    N = len(row_keys[0])
    head = np.zeros((0, *encoder.image_shape), np.float32)  # the first encryptions, for the preview
    with Progress("write", N, enabled=progress, unit="encryptions") as bar, _written_in_background(copies) as writers:
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            signs, block = encoder.rows(a, *(keys[a:b] for keys in row_keys))
            for writer in writers:
                writer.write(block)
            z_signs[a:b] = signs
            if len(head) < PREVIEW_COUNT:
                head = np.concatenate([head, block[: PREVIEW_COUNT - len(head)]])
            bar.advance(b - a)
    return head


def _sync_tree(root: Path, progress: bool | None) -> None:
    """fsync every file and folder under ``root`` (deepest first): the release is on disk before it takes its name.

    Writing leaves most of a large release in the page cache; this is where the disk catches up,
    so it has its own bar.
    """
    tree = [(Path(folder), [(Path(folder) / name).stat().st_size for name in names], names)
            for folder, _, names in os.walk(root, topdown=False)]
    with Progress("sync", sum(sum(sizes) for _, sizes, _ in tree), enabled=progress, unit="B") as bar:
        for folder, sizes, names in tree:
            for name, size in zip(names, sizes):
                sync_path(folder / name)
                bar.advance(size)
            _sync_folder(folder)


def sync_path(path: Path, flags: int = os.O_RDONLY | os.O_NOFOLLOW) -> None:
    """fsync one file (or, with ``O_DIRECTORY``, a folder's entries)."""
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    sync_path(folder, os.O_RDONLY | os.O_DIRECTORY)


def _leftover(out: Path, kind: str, pid: int | str = "*") -> Path:
    """A hidden sibling of ``out``: ``partial`` (being built), ``old`` (the release being
    replaced), ``discard`` (a replaced release being deleted) or ``lock``."""
    return out.parent / (f".{out.name}.{kind}" if kind == "lock" else f".{out.name}.{kind}-{pid}")


@contextmanager
def output_lock(out: Path):
    """Hold the exclusive claim on ``out`` for a whole run: a lock file beside it, recording our PID.

    ``flock`` dies with the process, so a killed run never leaves a stale claim; the file is
    re-checked after locking because a finishing holder unlinks it.
    """
    path = _leftover(out, "lock")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise UsageError(f"{out.parent}: cannot write here ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise UsageError(f"{out}: is being written by process {holder}; wait for it to finish") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file as we opened it: claim the new one
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            raise UsageError(f"{out.parent}: cannot write here ({e.strerror})") from None
        yield
    finally:
        os.unlink(path)
        os.close(fd)


def _recover_leftovers(out: Path) -> None:
    """Tidy what killed runs left beside ``out``, losing no release that was ever published.

    Called with the output lock held, so every leftover belongs to a dead run.  ``partial`` and
    ``discard`` folders were never, or are no longer, a published release: deleted.  ``old`` holds
    a replaced release with its keys: put back as ``out`` if the replacement never took the name,
    else kept where it is and named.
    """
    for kind in ("partial", "discard"):
        for stale in out.parent.glob(_leftover(out, kind).name):
            shutil.rmtree(stale, ignore_errors=True)
    for old in sorted(out.parent.glob(_leftover(out, "old").name)):
        if not os.path.lexists(out):
            os.rename(old, out)
            print(f"instahide: restored {out} from {old.name}, left by an interrupted --force run", file=sys.stderr)
        else:
            print(f"instahide: warning: {old} holds the release an interrupted --force run replaced, with its "
                  "secret keys; kept: delete it yourself once it is not needed", file=sys.stderr)


def _check_replaceable(out: Path, force: bool) -> None:
    if out.is_symlink():
        raise UsageError(f"{out}: is a symlink (to {os.readlink(out)}); give the folder itself as {argument('out')}")
    if not out.exists():
        return
    if not (out / fmt.PUBLIC_DIR / fmt.MANIFEST_FILE).is_file():
        raise UsageError(f"{out}: exists and is not a release; refusing to replace it even with "
                         f"{argument('force', True)}")
    if not force:
        raise UsageError(f"{out}: already exists; pass {argument('force', True)} to replace it")


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{out.parent}: cannot create the output's parent folder ({e.strerror})") from None


def _make_build_folder(out: Path) -> Path:
    tmp = _leftover(out, "partial", os.getpid())
    try:
        tmp.mkdir()
    except OSError as e:
        raise UsageError(f"{out.parent}: cannot write here ({e.strerror})") from None
    return tmp


def _seal_secrets(secret_dir: Path) -> None:
    """Owner-only modes on the key store, whatever the umask (Zarr creates its own files)."""
    for folder, _, files in os.walk(secret_dir):
        os.chmod(folder, 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)


def _publish(tmp: Path, out: Path) -> None:
    """Put the finished release in place, replacing an old one if --force.

    Three renames, so a crash between any two leaves the old release whole under a name that
    :func:`_recover_leftovers` restores or keeps: ``out`` -> ``.out.old-PID``, the new release ->
    ``out``, ``.out.old-PID`` -> ``.out.discard-PID``, which is then deleted.
    """
    if not out.exists():
        os.rename(tmp, out)
        return
    old, discard = _leftover(out, "old", os.getpid()), _leftover(out, "discard", os.getpid())
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    os.rename(old, discard)
    shutil.rmtree(discard, ignore_errors=True)


def generate(
    out: Path,
    params: Params,
    *,
    seed: bytes,
    private: ImageSet,
    public: ImageSet | None,
    practice: bool = False,
    chunk: int = 4096,
    force: bool = False,
    progress: bool | None = None,
    format_version: int = fmt.FORMAT_VERSION,
    formats: tuple[str, ...] = FORMATS,
    write_elsewhere=None,
) -> dict:
    """Build the release at ``out`` (``public/`` and ``secret/keys.zarr``) and return its manifest.

    Parameters
    ----------
    out : path
        The release folder; its parent is created if missing.
    params : Params
        The release's parameters; ``image_shape`` is set from the private images.
    seed : bytes
        32 bytes: :func:`challenge.fresh_seed`, or :func:`challenge.parse_seed`.
    private : ImageSet
        The private set the private images are drawn from.
    public : ImageSet or None
        The public patch bank, at the private images' shape; None for ``mode="inside"``.
    practice : bool, optional
        Mark the release as replayable (a seed from ``parse_seed(..., practice=True)``).
    chunk : int, optional
        Encryptions encoded at a time: bounds memory, never changes a byte.
    force : bool, optional
        Replace an existing release at ``out`` (never another kind of folder).
    progress : bool or None, optional
        Draw progress bars; None: on a terminal.
    format_version : int, optional
        1 and 2 exist to reproduce releases of those versions byte for byte (32x32x3 images only).
    formats : tuple of str, optional
        The copies of the public arrays (:data:`FORMATS`); ``npy`` is required.
    write_elsewhere : callable, optional
        Encodes and writes the encryptions instead of this process, to the same bytes (a Dask
        cluster: :func:`generator.distributed.on_cluster`).

    Returns
    -------
    manifest : dict
        The JSON object written as ``public/manifest.json``.

    Raises
    ------
    UsageError
        For invalid parameters or data, an ``out`` that exists without ``force``, or a failed
        write; nothing is left behind, and a replaced release is kept until the new one has its name.

    Notes
    -----
    Every file is synced to disk before the release takes its name, and the name itself after.
    """
    if format_version not in fmt.READABLE_VERSIONS:
        raise UsageError(f"format version {format_version}: this tool writes {', '.join(map(str, fmt.READABLE_VERSIONS))}")
    params = replace(params, image_shape=private.images.shape[1:])
    if format_version < SHAPED_SINCE and params.image_shape != DEFAULT_IMAGE_SHAPE:
        raise UsageError(f"format version {format_version} holds only 32x32x3 images; the private images are "
                         f"{'x'.join(map(str, params.image_shape))} (use format version {fmt.FORMAT_VERSION})")
    params.validate()
    if params.k_public and public is not None and public.images.shape[1:] != params.image_shape:
        raise UsageError(f"the public patches are {'x'.join(map(str, public.images.shape[1:]))}, the private images "
                         f"{'x'.join(map(str, params.image_shape))}: a release mixes images of one shape "
                         "(make the patch bank at the private images' size)")
    if chunk < 1:
        raise UsageError(f"{argument('chunk')} must be positive, got {chunk}")
    formats = parse_formats(",".join(formats))
    if params.k_public and public is None:
        raise UsageError(f"{argument('mode', params.mode)} needs a public patch bank")
    out = Path(os.path.abspath(out))
    _make_parent(out)
    with output_lock(out):
        _recover_leftovers(out)
        _check_replaceable(out, force)
        tmp = _make_build_folder(out)
        try:
            manifest = _build(tmp, params, seed, private, public, practice, chunk, progress, format_version, formats,
                              write_elsewhere)
            _seal_secrets(tmp / fmt.SECRET_DIR)
            _sync_tree(tmp, progress)
            _publish(tmp, out)
            _sync_folder(out.parent)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and not isinstance(e, UsageError):
                raise UsageError(f"{out}: writing the release failed ({e.strerror or e}); nothing was left behind") from None
            raise
    return manifest


def _build(tmp: Path, params: Params, seed: bytes, private: ImageSet, public: ImageSet | None, practice: bool,
           chunk: int, progress: bool | None, version: int, formats: tuple[str, ...], write_elsewhere) -> dict:
    N = params.n_encryptions
    bank_size = len(public) if public is not None and params.k_public else 0
    fingerprints = {"private": private.fingerprint(), "public": public.fingerprint() if bank_size else None}
    context = stream_context(params.to_dict(version), fingerprints["private"], fingerprints["public"])
    key = stream_key(seed, context, version)
    plan = draw_plan(key, params, labels=private.labels, bank_size=bank_size, version=version)
    ground_truth = private.images[plan.selection]
    truth_labels = private.labels[plan.selection]
    used = np.unique(plan.public_bank_index)
    image_shape = params.image_shape
    public_images = public.images[used] if bank_size else np.zeros((0, *image_shape), np.uint8)
    public_origin = public.origin[used] if bank_size else np.zeros((0, 0), np.int64)
    public_index = np.searchsorted(used, plan.public_bank_index).astype(np.int32)
    n_classes = len(private.class_names) or int(private.labels.max()) + 1
    labels = weighted_labels(plan.lam, truth_labels, plan.private_index, n_classes)

    public_dir, secret_dir = tmp / fmt.PUBLIC_DIR, tmp / fmt.SECRET_DIR
    public_dir.mkdir()
    secret_dir.mkdir(mode=0o700)
    keys = fmt.create_key_store(
        secret_dir / fmt.KEYS_NAME,
        params,
        {
            "class_names": list(private.class_names),
            "private_source": {"files": list(private.source_files), "origin_columns": list(private.origin_columns)},
            "public_source": None if not bank_size else {
                "files": list(public.source_files), "origin_columns": list(public.origin_columns)},
            **({"stream_context": context} if version >= 2 else {}),
        },
        {
            "seed": np.frombuffer(seed, np.uint8),
            "private/images": ground_truth,
            "private/labels": truth_labels,
            "private/source_index": plan.selection,
            "private/origin": private.origin[plan.selection],
            "public/images": public_images,
            "public/bank_index": used,
            "public/origin": public_origin,
            "encryption/private_index": plan.private_index,
            "encryption/public_index": public_index,
            "encryption/lam": plan.lam,
        },
        version,
    )
    shape = (N, *image_shape)
    zarr_rows, label_rows = fmt.public_chunk_rows("encryption", image_shape), fmt.public_chunk_rows("label", image_shape)
    digests: dict[str, str] = {}  # of the files hashed as they were written
    label_file = _npy_file(public_dir / fmt.LABEL_FILE, labels.shape, digests, fmt.LABEL_FILE)
    label_file.write(np.ascontiguousarray(labels, "<f4"))
    label_file.close()
    if "zarr" in formats:
        public_zarr = zarr.open_group(str(public_dir / fmt.PUBLIC_ZARR), mode="w-")
        public_zarr.attrs.update(fmt.public_zarr_attributes(version))
        public_zarr.create_array("encryption", shape=shape, chunks=(zarr_rows, *image_shape),
                                 dtype="float32", compressors=None, fill_value=0)
        public_zarr.create_array("label", shape=labels.shape, chunks=(label_rows, n_classes),
                                 dtype="float32", compressors=None, fill_value=0)
        label_chunks = ZarrChunks(public_dir, "label", rows=label_rows, row_shape=labels.shape[1:], digests=digests)
        label_chunks.write(labels)
        label_chunks.close()
    z_signs = keys["encryption/sign_bits"]
    encoder = RowEncoder(key=key, masked=params.masked, ground_truth=ground_truth, public_images=public_images,
                         domain_affine=affine(params.domain))
    row_keys = (plan.private_index, public_index, plan.lam)
    if write_elsewhere is None:
        copies = [_npy_file(public_dir / fmt.ENCRYPTION_FILE, shape, digests, fmt.ENCRYPTION_FILE)]
        if "zarr" in formats:
            copies.append(ZarrChunks(public_dir, "encryption", rows=zarr_rows, row_shape=image_shape, digests=digests))
        head = _write_encryptions(encoder, row_keys, copies, z_signs, chunk, progress)
    else:
        head = write_elsewhere(encoder, row_keys, public_dir=public_dir, z_signs=z_signs, with_zarr="zarr" in formats,
                              chunk=chunk, digests=digests, progress=progress)
    save_png(release_preview(to_uint8(head, params.domain), version), public_dir / fmt.PREVIEW_FILE)

    store = fmt.KeyStore(keys, params, dict(keys.attrs))
    manifest = Manifest(
        params=params,
        class_names=list(private.class_names),
        n_classes=n_classes,
        practice=practice,
        sources={
            "private": {"fingerprint": fingerprints["private"], "images": len(private), "notes": dict(private.notes)},
            "public": None if not bank_size else {
                "fingerprint": fingerprints["public"], "images": len(public), "notes": dict(public.notes)},
        },
        commitment=fmt.commitment(store),
        version=version,
        files={name: digests.get(name) or fmt.sha256_file(public_dir / name) for name in fmt.public_files(public_dir)},
    ).to_json()
    fmt.write_json(public_dir / fmt.MANIFEST_FILE, manifest)
    return manifest
