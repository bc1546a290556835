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
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zarr

from challenge import format as fmt
from challenge.domain import affine, to_uint8
from challenge.encoding import encode
from challenge.errors import UsageError
from challenge.geometry import IMAGE_SHAPE, SIGN_BYTES
from challenge.imageset import ImageSet
from challenge.keys import draw_plan, sign_bits
from challenge.keystream import stream_context, stream_key
from challenge.labels import weighted_labels
from challenge.manifest import PREVIEW_COUNT, Manifest
from challenge.params import Params
from challenge.preview import contact_sheet, save_png
from challenge.progress import Progress

def _npy_writer(path: Path, shape: tuple, dtype: str):
    """Open ``path`` and write a version-1.0 .npy header; the caller appends C-order rows."""
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return f


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
        raise UsageError(f"{out}: is a symlink (to {os.readlink(out)}); give the folder itself as --out")
    if not out.exists():
        return
    if not (out / fmt.PUBLIC_DIR / fmt.MANIFEST_FILE).is_file():
        raise UsageError(f"{out}: exists and is not a release; refusing to replace it even with --force")
    if not force:
        raise UsageError(f"{out}: already exists; pass --force to replace it")


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
    seed: bytes,
    private: ImageSet,
    public: ImageSet | None,
    *,
    practice: bool = False,
    chunk: int = 4096,
    force: bool = False,
    progress: bool | None = None,
    format_version: int = fmt.FORMAT_VERSION,
) -> dict:
    """Build the release at ``out`` and return its manifest.

    ``format_version`` 1 exists to reproduce releases of that version byte for byte.
    """
    if format_version not in fmt.READABLE_VERSIONS:
        raise UsageError(f"format version {format_version}: this tool writes {' and '.join(map(str, fmt.READABLE_VERSIONS))}")
    params.validate()
    if chunk < 1:
        raise UsageError(f"--chunk must be positive, got {chunk}")
    if params.k_public and public is None:
        raise UsageError(f"--mode {params.mode} needs a public patch bank")
    out = Path(os.path.abspath(out))
    _make_parent(out)
    with output_lock(out):
        _recover_leftovers(out)
        _check_replaceable(out, force)
        tmp = _make_build_folder(out)
        try:
            manifest = _build(tmp, params, seed, private, public, practice, chunk, progress, format_version)
            _seal_secrets(tmp / fmt.SECRET_DIR)
            _publish(tmp, out)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and not isinstance(e, UsageError):
                raise UsageError(f"{out}: writing the release failed ({e.strerror or e}); nothing was left behind") from None
            raise
    return manifest


def _build(tmp: Path, params: Params, seed: bytes, private: ImageSet, public: ImageSet | None,
           practice: bool, chunk: int, progress: bool | None, version: int) -> dict:
    N = params.n_encryptions
    bank_size = len(public) if public is not None and params.k_public else 0
    fingerprints = {"private": private.fingerprint(), "public": public.fingerprint() if bank_size else None}
    context = stream_context(params.to_dict(), fingerprints["private"], fingerprints["public"])
    key = stream_key(seed, context, version)
    plan = draw_plan(key, params, private.labels, bank_size, version)
    ground_truth = private.images[plan.selection]
    truth_labels = private.labels[plan.selection]
    used = np.unique(plan.public_bank_index)
    public_images = public.images[used] if bank_size else np.zeros((0, *IMAGE_SHAPE), np.uint8)
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
    shape = (N, *IMAGE_SHAPE)
    public_zarr = zarr.open_group(str(public_dir / fmt.PUBLIC_ZARR), mode="w-")
    public_zarr.attrs.update({"format": "instahide-public", "format_version": version})
    z_enc = public_zarr.create_array("encryption", shape=shape, chunks=(1024, *IMAGE_SHAPE),
                                     dtype="float32", compressors=None, fill_value=0)
    public_zarr.create_array("label", data=labels, chunks=(fmt.ROWS_PER_ZARR_CHUNK, n_classes), compressors=None)
    np.save(public_dir / fmt.LABEL_FILE, labels)
    z_signs = keys["encryption/sign_bits"]
    domain_affine = affine(params.domain)
    with _npy_writer(public_dir / fmt.ENCRYPTION_FILE, shape, "<f4") as enc_file, \
            Progress("encode", N, enabled=progress) as bar:
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            signs = sign_bits(key, a, b - a) if params.masked else np.zeros((b - a, SIGN_BYTES), np.uint8)
            block = encode(ground_truth, public_images, domain_affine, private_index=plan.private_index[a:b],
                           public_index=public_index[a:b], lam=plan.lam[a:b], sign_bits=signs)
            enc_file.write(block.data)
            z_enc[a:b] = block
            z_signs[a:b] = signs
            bar.advance(b - a)
    save_png(contact_sheet(to_uint8(z_enc[:PREVIEW_COUNT], params.domain)), public_dir / fmt.PREVIEW_FILE)

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
        files={name: fmt.sha256_file(public_dir / name) for name in fmt.public_files(public_dir)},
    ).to_json()
    fmt.write_json(public_dir / fmt.MANIFEST_FILE, manifest)
    return manifest
