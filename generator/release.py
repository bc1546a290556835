"""Write a complete release: keys, encryptions, labels, key store, manifest, preview.

Everything is written into a hidden sibling folder ``.NAME.partial-PID`` and renamed to ``NAME``
only at the end, so an interrupted run never leaves a folder that looks like a release.  The
encryptions are produced chunk by chunk (``chunk`` rows at a time): memory stays bounded and the
bytes do not depend on the chunk size, because every key is drawn by row index.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import zarr

from challenge import format as fmt
from challenge.domain import affine, describe, to_uint8
from challenge.errors import UsageError
from challenge.imageset import ImageSet
from challenge.params import Params
from challenge.preview import contact_sheet, save_png
from challenge.progress import Progress
from generator.encoder import encode
from generator.keys import draw_plan, sign_bits

PREVIEW_COUNT = 64
SEED_NOTES = {  # manifest "seed.note" by kind; fixed text, so an audit can check it byte for byte
    "practice": "practice seed: guessable, anyone can replay every key",
    "strong": "256-bit seed from a CSPRNG or the maintainer; keys are drawn from ChaCha20 keystreams",
}


def weighted_labels(lam: np.ndarray, private_labels: np.ndarray, private_index: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 (N, C): sum of lam_j * onehot(label of private image j), as in the 2020 release.

    Public patches contribute nothing and rows are not renormalised; two private images of one
    class add in one column (in float64, then rounded once to float32).
    """
    out = np.zeros((len(lam), n_classes))
    rows = np.arange(len(lam))
    for j in range(private_index.shape[1]):
        np.add.at(out, (rows, private_labels[private_index[:, j]]), lam[:, j].astype(np.float64))
    return out.astype(np.float32)


def _npy_writer(path: Path, shape: tuple, dtype: str):
    """Open ``path`` and write a version-1.0 .npy header; the caller appends C-order rows."""
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return f


def _claim_output(out: Path, force: bool) -> Path:
    """Check the output folder can be written; return the temporary folder to build in."""
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists; pass --force to replace it")
    if out.exists() and not (out / fmt.PUBLIC_DIR / fmt.MANIFEST_FILE).is_file():
        raise UsageError(f"{out}: exists and is not a release; refusing to replace it even with --force")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{parent}: cannot create the output's parent folder ({e.strerror})") from None
    # left by a killed run: a half-built release, or the replaced one (with its secret keys) if killed mid-publish
    for stale in [*parent.glob(f".{out.name}.partial-*"), *parent.glob(f".{out.name}.old-*")]:
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as e:
        raise UsageError(f"{parent}: cannot write here ({e.strerror})") from None
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(tmp: Path, out: Path) -> None:
    """Atomically put the finished release in place (replacing an old one if --force)."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out)


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
) -> dict:
    """Build the release at ``out`` and return its manifest."""
    params.validate()
    if chunk < 1:
        raise UsageError(f"--chunk must be positive, got {chunk}")
    if params.k_public and public is None:
        raise UsageError(f"--mode {params.mode} needs a public patch bank")
    out = Path(out)
    tmp = _claim_output(out, force)
    try:
        manifest = _build(tmp, params, seed, private, public, practice, chunk, progress)
        _publish(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, UsageError):
            raise UsageError(f"{out}: writing the release failed ({e.strerror or e}); nothing was left behind") from None
        raise
    return manifest


def _build(tmp: Path, params: Params, seed: bytes, private: ImageSet, public: ImageSet | None,
           practice: bool, chunk: int, progress: bool | None) -> dict:
    N = params.n_encryptions
    bank_size = len(public) if public is not None and params.k_public else 0
    plan = draw_plan(seed, params, private.labels, bank_size)
    ground_truth = private.images[plan.selection]
    truth_labels = private.labels[plan.selection]
    used = np.unique(plan.public_bank_index)
    public_images = public.images[used] if bank_size else np.zeros((0, *fmt.IMAGE_SHAPE), np.uint8)
    public_origin = public.origin[used] if bank_size else np.zeros((0, 0), np.int64)
    public_index = np.searchsorted(used, plan.public_bank_index).astype(np.int32)
    n_classes = len(private.class_names) or int(private.labels.max()) + 1
    labels = weighted_labels(plan.lam, truth_labels, plan.private_index, n_classes)

    public_dir, secret_dir = tmp / fmt.PUBLIC_DIR, tmp / fmt.SECRET_DIR
    public_dir.mkdir()
    secret_dir.mkdir()
    keys = fmt.create_key_store(
        secret_dir / fmt.KEYS_NAME,
        params,
        {
            "class_names": list(private.class_names),
            "private_source": {"files": list(private.source_files), "origin_columns": list(private.origin_columns)},
            "public_source": None if not bank_size else {
                "files": list(public.source_files), "origin_columns": list(public.origin_columns)},
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
    )
    shape = (N, *fmt.IMAGE_SHAPE)
    public_zarr = zarr.open_group(str(public_dir / fmt.PUBLIC_ZARR), mode="w-")
    public_zarr.attrs.update({"format": "instahide-public", "format_version": fmt.FORMAT_VERSION})
    z_enc = public_zarr.create_array("encryption", shape=shape, chunks=(1024, *fmt.IMAGE_SHAPE),
                                     dtype="float32", compressors=None, fill_value=0)
    public_zarr.create_array("label", data=labels, chunks=(fmt.ROWS_PER_ZARR_CHUNK, n_classes), compressors=None)
    np.save(public_dir / fmt.LABEL_FILE, labels)
    z_signs = keys["encryption/sign_bits"]
    domain_affine = affine(params.domain)
    with _npy_writer(public_dir / fmt.ENCRYPTION_FILE, shape, "<f4") as enc_file, \
            Progress("encode", N, enabled=progress) as bar:
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            signs = sign_bits(seed, a, b - a) if params.masked else np.zeros((b - a, fmt.SIGN_BYTES), np.uint8)
            block = encode(ground_truth, public_images, domain_affine, plan.private_index[a:b],
                           public_index[a:b], plan.lam[a:b], signs)
            enc_file.write(block.data)
            z_enc[a:b] = block
            z_signs[a:b] = signs
            bar.advance(b - a)
    save_png(contact_sheet(to_uint8(z_enc[:PREVIEW_COUNT], params.domain)), public_dir / fmt.PREVIEW_FILE)

    store = fmt.KeyStore(keys, params, dict(keys.attrs))
    manifest = {
        "format": "instahide-challenge-release",
        "format_version": fmt.FORMAT_VERSION,
        "generator": fmt.generator_info(),
        "params": params.to_dict(),
        "n_encryptions": N,
        "class_names": list(private.class_names),
        "pixel_domain": describe(params.domain),
        "arrays": {
            fmt.ENCRYPTION_FILE: {"dtype": "float32", "shape": list(shape), "layout": "NHWC"},
            fmt.LABEL_FILE: {"dtype": "float32", "shape": list(labels.shape)},
        },
        "seed": {
            "kind": "practice" if practice else "strong",
            "replayable": practice,
            "note": SEED_NOTES["practice" if practice else "strong"],
        },
        "sources": {
            "private": {"fingerprint": private.fingerprint(), "images": len(private), "notes": dict(private.notes)},
            "public": None if not bank_size else {
                "fingerprint": public.fingerprint(), "images": len(public), "notes": dict(public.notes)},
        },
        "key_store": {"commitment": fmt.commitment(store), "scheme": "instahide-key-commitment-v1"},
        "files": {name: fmt.sha256_file(public_dir / name) for name in fmt.public_files(public_dir)},
    }
    fmt.write_json(public_dir / fmt.MANIFEST_FILE, manifest)
    return manifest
