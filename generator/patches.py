"""The public patch bank: textured P x P crops of public images (ImageNet train layout).

In the spirit of the 2020 InstaHide challenge: every image is resized so its short side is 40 px,
32x32 crops are taken, and only non-flat crops are kept (the original kept crops with more than
40 SIFT keypoints).  A bank for a release of another image side P (``patch_size``) scales the
rule: short side ``round_half_up(40 * P / 32)`` (35 for MNIST's 28, 80 for 64), P x P crops; at
P = 32 this is the 2020 rule and its banks keep their bytes.  A bank for a grey release
(``grey=True``) holds grey patches (C = 1).

Rules (each changes which bytes end up in the bank, so they are part of the format):

* Files: every file under ``public_dir`` with an image extension
  (:data:`generator.images.IMAGE_EXTENSIONS`), walked without following symlinked directories,
  hidden entries ignored, sorted by relative POSIX path.  File index = position in that list.
* Decode and resize (:func:`load_resized`): JPEGs are decoded with Pillow's ``draft()`` at the
  largest DCT reduction that keeps both sides at least twice the target (Pillow's own
  ``reducing_gap=2`` idea, so the final filter still anti-aliases), converted to 8-bit RGB by
  :func:`generator.images.to_8bit` (grey replicated, 16-bit scaled by 1/257, palette expanded,
  alpha dropped; counted as ``converted_<MODE>``; with ``grey``, to Pillow's 8-bit grey "L",
  ITU-R 601-2 luma, counted as ``converted_RGB`` etc.), then resized with LANCZOS so the short
  side is 40 px (long side ``long * 40 / short`` rounded half up; the scaled short side for P).
* Crops: ``crops_per_image`` distinct top-left corners per file, each drawn as
  ``BLAKE2b(rel_path UTF-8 + 0x00 + counter, key=seed, person="instahide-patch") mod positions``
  (counter = 0, 1, ...; repeats skipped).  Crop positions are public (they are stored); the seed
  itself is not stored, only a BLAKE2b fingerprint so a resume with another seed is refused.
* Filter (:func:`count_keypoints`): a SIFT-style Difference-of-Gaussians detector on the patch's
  grey level (0.299 R + 0.587 G + 0.114 B, or a grey patch's value, scaled to [0, 1]), run as
  SIFT runs on a 32x32 image (the same detector and threshold at every patch side):
  the patch is upsampled 2x (bilinear) to 64x64, blurred to sigma 1.6 (assuming 0.5 input blur),
  3 scales per octave, octaves 64, 32 and 16 px; a keypoint is a 3x3x3 extremum of the DoG with
  ``|D| >= 0.04 / 3`` (SIFT's contrast threshold), an edge ratio below 10 (SIFT's ``r``) and at
  least 5 px from the border (OpenCV's ``SIFT_IMG_BORDER``).  These are the defaults of Lowe's
  SIFT and OpenCV's ``cv2.SIFT_create()``; on natural 32x32 patches the count correlates at
  r = 0.97 with scikit-image's SIFT (tested in ``tests/test_patches.py``); it differs by having no
  sub-pixel refinement and one count per location rather than one per dominant orientation.
* Threshold: a patch is kept when its count is **more than** ``min_keypoints``, default
  :data:`DEFAULT_MIN_KEYPOINTS` = 4.  Why not the original's 40: at the 32x32 scale a patch is
  used at, SIFT finds only 0-30 keypoints on natural patches (median about 7), so ">40" cannot
  have been counted at that scale; it matches SIFT on the *full-resolution* crop region, where
  counts are 10-20x larger.  Measured on 78 crops of the scikit-image sample photos resized
  ImageNet-like (short side 350) and of smooth synthetic images, "> 4 at patch scale" reproduces
  "> 40 SIFT keypoints on the full-resolution region" best (79 % agreement; 60-77 % for the
  other thresholds 0-11), and the disagreements are fine textures (gravel, grass, brick, star
  fields) that have hundreds of keypoints at full resolution but are flat once reduced to 40 px -
  flat where the patch is used, so dropping them is the intent of the original's filter.
  Uniform colours and smooth gradients have a zero DoG away from the borders and give no
  keypoint; single-pixel noise (sensor grain, JPEG noise) is finer than SIFT's finest scale and
  gives almost none either, as with SIFT itself.
* Unreadable files (corrupt, truncated, not an image, not a regular file when read) are skipped;
  their indices are stored in the ``unreadable`` array and counted in ``notes["unreadable"]``.
  Oversized images (the caps of :func:`generator.images.check_image_size`: too many pixels, or
  an aspect ratio beyond 16) are skipped the same way and also counted in
  ``notes["skipped_oversized"]``.

Storage (Zarr v3 group at ``out_path``): arrays ``patches`` uint8 (M, P, P, C) in chunks of about
3 MiB (1,024 patches at 32x32x3), ``origin``
int64 (M, 5) = (file index, x0, y0, x1, y1) crop box in the resized image, ``unreadable`` int64
(U,), and the relative file paths as ``files_utf8`` (uint8: each path in UTF-8, undecodable
names kept by ``surrogateescape``, followed by a NUL byte) with ``files_offsets`` int64 (F + 1,)
where path i is ``files_utf8[off[i]:off[i+1]-1]`` - arrays rather than an attribute, because ImageNet's 1.28M
paths would make the group's JSON rewritten at every batch ~50 MB.  Attributes: ``format``,
``params`` (``patch_size``, ``short_side``, ``colour`` only in a grey bank, ...), ``progress``
(files and patches committed), ``notes``, ``complete``.

Work is done in batches of files; a batch's results are appended and then committed by one
atomic attribute write.  A re-run finds the committed progress, drops anything appended after it
and carries on, so an interrupted and resumed build stores the same bytes as an uninterrupted
one; worker count and batch size do not change the result either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from contextlib import contextmanager
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numba
import numpy as np
import zarr
from PIL import Image

from challenge.files import check_tree
from challenge.geometry import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from challenge.imageset import ImageSet
from challenge.progress import Progress
from generator.images import (
    DECODE_ERRORS,
    MAX_ARRAY_BYTES,
    ImageTooLarge,
    SourceError,
    count_note,
    open_image,
    scaled_size,
    to_8bit,
    walk_image_files,
)
from generator.workers import WorkerDied, default_workers, in_order, start_pool

__all__ = [
    "PatchBankSummary",
    "build_patch_bank",
    "DEFAULT_MIN_KEYPOINTS",
    "count_keypoints",
    "crop_positions",
    "load_patch_bank",
    "load_resized",
]

FORMAT = "instahide-patch-bank"
FORMAT_VERSION = 1
PATCH = 32  # the 2020 patch side, and the default
GREY = "grey (Pillow L)"  # params["colour"] of a grey bank
DRAFT_GAP = 2
PATCH_CHUNK = 1024  # patches per Zarr chunk (3 MiB)
CHUNK_FILES = 32  # files decoded by one task of a process pool

# SIFT defaults (Lowe 2004; OpenCV SIFT_create): see the module docstring.
SIFT_SIGMA = 1.6
SIFT_INPUT_BLUR = 0.5
SIFT_LAYERS = 3
SIFT_CONTRAST = 0.04
SIFT_EDGE = 10.0
SIFT_BORDER = 5
SIFT_OCTAVES = 3  # 64, 32, 16 px; an 8 px octave has no pixel 5 px from every border
DEFAULT_MIN_KEYPOINTS = 4  # keep patches with more than this many keypoints (see module docstring)

ProgressHook = Callable[[int, int, int], None]


# --------------------------------------------------------------------------------------------
# Keypoint counter


def _kernels() -> tuple[np.ndarray, np.ndarray]:
    """Gaussian kernels (padded rows) and radii: base blur then the incremental per-layer blurs."""
    k = 2.0 ** (1.0 / SIFT_LAYERS)
    sigmas = [np.sqrt(SIFT_SIGMA**2 - (2 * SIFT_INPUT_BLUR) ** 2)]
    for i in range(1, SIFT_LAYERS + 3):
        prev = SIFT_SIGMA * k ** (i - 1)
        sigmas.append(prev * np.sqrt(k * k - 1.0))
    radii = np.array([int(np.ceil(4 * s)) for s in sigmas], np.int64)
    out = np.zeros((len(sigmas), 2 * radii.max() + 1), np.float32)
    for i, (s, r) in enumerate(zip(sigmas, radii)):
        x = np.arange(-r, r + 1, dtype=np.float64)
        g = np.exp(-0.5 * (x / s) ** 2)
        out[i, : 2 * r + 1] = g / g.sum()
    return out, radii


_KERNELS, _RADII = _kernels()


@numba.njit(cache=True)
def _reflect(i, n):
    while i < 0 or i >= n:  # reflect-101 (OpenCV's default border), repeated for tiny images
        if i < 0:
            i = -i
        else:
            i = 2 * n - 2 - i
    return i


@numba.njit(cache=True)
def _blur(src, ker, r, tmp, out, line, acc):
    """Separable Gaussian blur, reflect-101 border.  Loops run tap by tap over a whole row so they
    vectorise; each output still sums its taps in the same order (results do not depend on it)."""
    h, w = src.shape
    for y in range(h):
        for x in range(w + 2 * r):
            line[x] = src[y, _reflect(x - r, w)]
        acc[:w] = 0.0
        for j in range(2 * r + 1):
            kj = ker[j]
            for x in range(w):
                acc[x] += kj * line[x + j]
        for x in range(w):
            tmp[y, x] = acc[x]
    for y in range(h):
        acc[:w] = 0.0
        for j in range(2 * r + 1):
            kj = ker[j]
            yy = _reflect(y + j - r, h)
            for x in range(w):
                acc[x] += kj * tmp[yy, x]
        for x in range(w):
            out[y, x] = acc[x]


@numba.njit(cache=True)
def _count_one(patch, kernels, radii, n_layers, contrast, edge, border, n_octaves):
    h0, w0 = patch.shape[0], patch.shape[1]
    grey = np.empty((h0, w0), np.float32)
    for y in range(h0):
        for x in range(w0):
            if patch.shape[2] == 1:
                grey[y, x] = patch[y, x, 0] / 255.0
            else:
                grey[y, x] = (0.299 * patch[y, x, 0] + 0.587 * patch[y, x, 1] + 0.114 * patch[y, x, 2]) / 255.0
    # 2x bilinear upsampling, pixel centres aligned (OpenCV INTER_LINEAR)
    h, w = 2 * h0, 2 * w0
    base = np.empty((h, w), np.float32)
    for y in range(h):
        sy = max((y + 0.5) / 2.0 - 0.5, 0.0)
        y0 = min(int(sy), h0 - 1)
        y1 = min(y0 + 1, h0 - 1)
        fy = sy - y0
        for x in range(w):
            sx = max((x + 0.5) / 2.0 - 0.5, 0.0)
            x0 = min(int(sx), w0 - 1)
            x1 = min(x0 + 1, w0 - 1)
            fx = sx - x0
            top = grey[y0, x0] * (1 - fx) + grey[y0, x1] * fx
            bot = grey[y1, x0] * (1 - fx) + grey[y1, x1] * fx
            base[y, x] = top * (1 - fy) + bot * fy
    n_gauss = n_layers + 3
    threshold = contrast / n_layers
    edge_limit = (edge + 1.0) ** 2 / edge
    count = 0
    cur = np.empty((h, w), np.float32)
    tmp = np.empty((h, w), np.float32)
    line = np.empty(max(h, w) + 2 * radii.max(), np.float32)
    acc = np.empty(max(h, w), np.float64)
    _blur(base, kernels[0], radii[0], tmp, cur, line, acc)
    for octave in range(n_octaves):
        if octave > 0:  # next octave starts from the layer at twice the sigma, subsampled
            h, w = h // 2, w // 2
            nxt = np.empty((h, w), np.float32)
            for y in range(h):
                for x in range(w):
                    nxt[y, x] = cur[2 * y, 2 * x]
            cur = nxt
            tmp = np.empty((h, w), np.float32)
        if h <= 2 * border or w <= 2 * border:
            break
        gauss = np.empty((n_gauss, h, w), np.float32)
        gauss[0] = cur
        for i in range(1, n_gauss):
            _blur(gauss[i - 1], kernels[i], radii[i], tmp, gauss[i], line, acc)
        dog = np.empty((n_gauss - 1, h, w), np.float32)
        for i in range(n_gauss - 1):
            dog[i] = gauss[i + 1] - gauss[i]
        for s in range(1, n_layers + 1):
            for y in range(border, h - border):
                for x in range(border, w - border):
                    v = dog[s, y, x]
                    if abs(v) < threshold:
                        continue
                    is_max = v > 0
                    ok = True
                    for ds in range(-1, 2):
                        for dy in range(-1, 2):
                            for dx in range(-1, 2):
                                u = dog[s + ds, y + dy, x + dx]
                                if (is_max and u > v) or ((not is_max) and u < v):
                                    ok = False
                                    break
                            if not ok:
                                break
                        if not ok:
                            break
                    if not ok:
                        continue
                    d = dog[s]
                    dxx = d[y, x + 1] + d[y, x - 1] - 2 * v
                    dyy = d[y + 1, x] + d[y - 1, x] - 2 * v
                    dxy = (d[y + 1, x + 1] - d[y + 1, x - 1] - d[y - 1, x + 1] + d[y - 1, x - 1]) / 4.0
                    tr = dxx + dyy
                    det = dxx * dyy - dxy * dxy
                    if det > 0 and tr * tr < edge_limit * det:
                        count += 1
        cur = gauss[n_layers].copy()
    return count


@numba.njit(cache=True)
def _count_batch(patches, kernels, radii, n_layers, contrast, edge, border, n_octaves):
    out = np.empty(len(patches), np.int32)
    for i in range(len(patches)):
        out[i] = _count_one(patches[i], kernels, radii, n_layers, contrast, edge, border, n_octaves)
    return out


def count_keypoints(patches: np.ndarray) -> np.ndarray:
    """SIFT-style keypoint count of each uint8 (n, h, w, C) patch, C = 3 (RGB) or 1 (grey level
    already; see the module docstring)."""
    patches = np.ascontiguousarray(patches, dtype=np.uint8)
    if patches.ndim != 4 or patches.shape[3] not in (1, 3):
        raise ValueError(f"patches must be (n, h, w, 1 or 3) uint8, got {patches.shape}")
    return _count_batch(patches, _KERNELS, _RADII, SIFT_LAYERS, SIFT_CONTRAST, SIFT_EDGE,
                        SIFT_BORDER, SIFT_OCTAVES)


# --------------------------------------------------------------------------------------------
# Decoding and crops


def short_side(patch_size: int) -> int:
    """The 2020 rule scaled: 40/32 of the patch side, rounded half up (32 -> 40, 28 -> 35)."""
    return (5 * patch_size + 2) // 4


def load_resized(path: str | os.PathLike, patch_size: int = PATCH, grey: bool = False) -> tuple[np.ndarray, str | None]:
    """Decode ``path`` by the documented rule: (H, W, C) uint8 with short side
    ``short_side(patch_size)``, C = 1 with ``grey`` else 3; and the converted mode."""
    with open_image(path) as im:
        tw, th = scaled_size(*im.size, short_side(patch_size))
        im.draft("RGB", (tw * DRAFT_GAP, th * DRAFT_GAP))  # JPEG: DCT-domain reduction
        im.load()
        out, converted = to_8bit(im, grey)
        if out.size != (tw, th):
            out = out.resize((tw, th), Image.Resampling.LANCZOS)
        a = np.array(out, dtype=np.uint8)
        return (a[..., None] if a.ndim == 2 else a), converted


def _seed_key(seed: bytes) -> bytes:
    if not isinstance(seed, (bytes, bytearray)) or not seed:
        raise SourceError(f"seed: expected non-empty bytes, got {type(seed).__name__}")
    seed = bytes(seed)
    return seed if len(seed) <= 64 else hashlib.blake2b(seed).digest()


def crop_positions(seed: bytes, rel_path: str, *, width: int, height: int, k: int,
                   patch_size: int = PATCH) -> list[tuple[int, int]]:
    """Up to ``k`` distinct top-left corners of P x P crops in a width x height image."""
    key = _seed_key(seed)
    nx, ny = width - patch_size + 1, height - patch_size + 1
    if nx <= 0 or ny <= 0:
        return []
    total = nx * ny
    want = min(k, total)
    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    prefix = rel_path.encode("utf-8", "surrogateescape") + b"\0"
    counter = 0
    while len(out) < want and counter < 64 * want + 64:
        d = hashlib.blake2b(prefix + counter.to_bytes(8, "little"), key=key, digest_size=16,
                            person=b"instahide-patch").digest()
        v = int.from_bytes(d, "little") % total
        counter += 1
        if v not in seen:
            seen.add(v)
            out.append((v % nx, v // nx))
    return out


@dataclass
class _ChunkResult:
    patches: np.ndarray  # (m, P, P, C)
    origin: np.ndarray  # (m, 5)
    unreadable: list[int]
    notes: dict[str, int]


def _process_chunk(root: str, items: list[tuple[int, str]], key: bytes, crops: int,
                   min_keypoints: int, patch: int, grey: bool) -> _ChunkResult:
    """Decode, crop and filter a few files; runs in a worker process."""
    notes: dict[str, int] = {}
    unreadable: list[int] = []
    cand, boxes = [], []
    for idx, rel in items:
        try:
            img, converted = load_resized(os.path.join(root, rel), patch, grey)
        except DECODE_ERRORS as e:  # ImageTooLarge included: stored as unreadable, counted apart
            unreadable.append(idx)
            if isinstance(e, ImageTooLarge):
                count_note(notes, "skipped_oversized")
            continue
        if converted:
            count_note(notes, f"converted_{converted}")
        h, w = img.shape[:2]
        for x0, y0 in crop_positions(key, rel, width=w, height=h, k=crops, patch_size=patch):
            cand.append(img[y0 : y0 + patch, x0 : x0 + patch])
            boxes.append((idx, x0, y0, x0 + patch, y0 + patch))
    notes["crops_tried"] = len(cand)
    if not cand:
        return _ChunkResult(np.zeros((0, patch, patch, 1 if grey else 3), np.uint8), np.zeros((0, 5), np.int64),
                            unreadable, notes)
    patches = np.stack(cand)
    keep = count_keypoints(patches) > min_keypoints
    return _ChunkResult(patches[keep], np.asarray(boxes, np.int64)[keep], unreadable, notes)


def _warm_detector() -> None:
    """Compile, or load from numba's cache, the keypoint detector once per process."""
    count_keypoints(np.zeros((1, PATCH, PATCH, 3), np.uint8))


# --------------------------------------------------------------------------------------------
# Bank store


@dataclass(frozen=True, kw_only=True)
class PatchBankSummary:
    """What a build did: counts for the CLI and the release manifest."""

    path: str
    files: int
    patches: int
    unreadable: int
    resumed_from_file: int
    seconds: float
    notes: dict[str, int] = field(default_factory=dict)


def _encode_files(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    blobs = [f.encode("utf-8", "surrogateescape") for f in files]
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) + 1 for b in blobs])
    return np.frombuffer(b"".join(b + b"\0" for b in blobs), np.uint8), offsets


def _decode_files(blob: np.ndarray, offsets: np.ndarray) -> tuple[str, ...]:
    raw = blob.tobytes()
    return tuple(raw[offsets[i] : offsets[i + 1] - 1].decode("utf-8", "surrogateescape")
                 for i in range(len(offsets) - 1))


def _truncate(arr, n: int) -> None:
    """Shrink ``arr`` to ``n`` rows so its stored chunks equal those of a run that stopped at n."""
    if arr.shape[0] == n:
        return
    c = arr.chunks[0]
    start = (n // c) * c
    tail = arr[start:n]
    arr.resize((start,) + arr.shape[1:])  # deletes the boundary chunk with its stale rows
    arr.resize((n,) + arr.shape[1:])
    if n > start:
        arr[start:n] = tail


def _append(arr, data: np.ndarray, at: int) -> None:
    if len(data):
        arr.resize((at + len(data),) + arr.shape[1:])
        arr[at : at + len(data)] = data


def _open_bank(out: Path, files: list[str], params: dict, walk_notes: dict[str, int]):
    blob, offsets = _encode_files(files)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):  # an empty folder is fine
        if not (out / "zarr.json").is_file():
            raise SourceError(f"{out}: exists and is not a patch bank; choose another output path")
        try:
            g = zarr.open_group(out, mode="r+", zarr_format=3)
        except Exception as e:
            raise SourceError(f"{out}: not a readable Zarr v3 patch bank ({e})") from None
        if g.attrs.get("format") != FORMAT:
            raise SourceError(f"{out}: format: expected {FORMAT!r}, got {g.attrs.get('format')!r}")
        if g.attrs.get("params") != params:
            raise SourceError(f"{out}: params: this bank was started with other parameters or another "
                              "seed; delete it or choose another output path to start over")
        if not (np.array_equal(g["files_offsets"][:], offsets) and np.array_equal(g["files_utf8"][:], blob)):
            raise SourceError(f"{out}: files: the public folder's files differ from those this bank was "
                              "started with; delete it or choose another output path")
        prog = g.attrs["progress"]
        _truncate(g["patches"], prog["patches"])
        _truncate(g["origin"], prog["patches"])
        _truncate(g["unreadable"], prog["unreadable"])
        return g
    g = zarr.open_group(out, mode="w", zarr_format=3)
    shape = patch_shape(params)
    g.create_array("patches", shape=(0, *shape), dtype="uint8", chunks=(_chunk_rows(shape), *shape), fill_value=0)
    g.create_array("origin", shape=(0, 5), dtype="int64", chunks=(16 * PATCH_CHUNK, 5), fill_value=0)
    g.create_array("unreadable", shape=(0,), dtype="int64", chunks=(65536,), fill_value=0)
    g.create_array("files_utf8", data=blob, chunks=(max(1, min(len(blob), 1 << 22)),))
    g.create_array("files_offsets", data=offsets, chunks=(max(1, min(len(offsets), 1 << 20)),))
    g.attrs.update({"format": FORMAT, "version": FORMAT_VERSION, "params": params,
                    "origin_columns": ["file", "x0", "y0", "x1", "y1"],
                    "progress": {"files": 0, "patches": 0, "unreadable": 0},
                    "notes": dict(walk_notes), "complete": False})
    return g


def patch_shape(params: dict) -> tuple[int, int, int]:
    """(P, P, C) of a bank's patches, from its params (banks before grey ones have no "colour")."""
    return params["patch_size"], params["patch_size"], 1 if params.get("colour") == GREY else 3


def _chunk_rows(shape: tuple[int, int, int]) -> int:
    """Patches per Zarr chunk: about 3 MiB whatever the patch shape (1,024 at 32x32x3)."""
    return max(1, PATCH_CHUNK * PATCH * PATCH * 3 // (shape[0] * shape[1] * shape[2]))


def _params(seed: bytes, crops: int, min_keypoints: int, patch: int, grey: bool) -> dict:
    colour = {"colour": GREY} if grey else {}  # absent for RGB: RGB banks keep the bytes they had
    return {
        "patch_size": patch, "short_side": short_side(patch), **colour,
        "resize": "LANCZOS after JPEG draft >= 2x target",
        "crops_per_image": crops, "min_keypoints": min_keypoints,
        "keep_rule": "keypoints > min_keypoints",
        "detector": {"kind": "DoG extrema (SIFT defaults)", "sigma": SIFT_SIGMA, "layers": SIFT_LAYERS,
                     "contrast": SIFT_CONTRAST, "edge": SIFT_EDGE, "border": SIFT_BORDER,
                     "octaves": SIFT_OCTAVES, "upsample": 2},
        "crop_rule": "blake2b(rel_path + NUL + counter_le64, key=seed, person='instahide-patch') mod positions",
        "seed_fingerprint": hashlib.blake2b(b"instahide-patch-seed\0" + _seed_key(seed), digest_size=16).hexdigest(),
    }


def build_patch_bank(
    public_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    crops_per_image: int = 2,
    seed: bytes,
    workers: int | None = None,
    min_keypoints: int = DEFAULT_MIN_KEYPOINTS,
    progress: ProgressHook | None = None,
    batch_files: int = 1024,
    chunk_files: int | None = None,
    on_decoded: Callable[[int], None] | None = None,
    patch_size: int = PATCH,
    grey: bool = False,
    executor: Executor | None = None,
) -> PatchBankSummary:
    """Build (or resume) the patch bank of ``public_dir`` at ``out_path``; see the module docstring.

    ``patch_size`` x ``patch_size`` patches, grey (C = 1) with ``grey``, else RGB.
    ``workers``: processes decoding in parallel (None = CPU count; 1 = in this process).
    ``progress(files_done, files_total, patches)`` is called once before the first batch (with
    where a resumed build starts) and after each committed batch; ``on_decoded(n)`` after every
    ``chunk_files`` files decoded, for a bar that moves per file.
    ``batch_files`` bounds memory (results of one batch are held before being written);
    ``chunk_files`` files go to a worker at a time (default :data:`CHUNK_FILES`; with an executor,
    :func:`executor_chunk_files`).  Neither changes the bank.  ``executor``: decode there instead
    (e.g. a Dask client's ``get_executor()``, whose workers read ``public_dir`` by its path),
    ``workers`` tasks at a time.
    Raises :class:`SourceError` for user mistakes (no images, output path not a bank, resume
    with other parameters, seed or files).  A script calling this with several workers from a
    multi-threaded process needs the usual ``if __name__ == "__main__":`` guard (see
    :func:`generator.workers.start_pool`).
    """
    t0 = time.perf_counter()
    root = Path(public_dir)
    out = Path(out_path)
    if not root.is_dir():
        raise SourceError(f"{root}: public folder: expected a directory")
    if workers is None:
        workers = default_workers()
    if chunk_files is None:
        chunk_files = CHUNK_FILES if executor is None else executor_chunk_files(batch_files, workers)
    if crops_per_image < 1 or min_keypoints < 0 or batch_files < 1 or chunk_files < 1:
        raise SourceError("crops_per_image, batch_files, chunk_files must be >= 1 and min_keypoints >= 0")
    if not MIN_IMAGE_SIDE <= patch_size <= MAX_IMAGE_SIDE:
        raise SourceError(f"patch size: expected {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} px, got {patch_size}")
    params = _params(seed, crops_per_image, min_keypoints, patch_size, grey)
    key = _seed_key(seed)
    _warm_detector()  # compile or load the cache once, here
    own_pool = executor is None and workers > 1
    # starts while the folder is walked
    pool = start_pool(workers, preload=__name__, warm_up=_warm_detector) if own_pool else executor
    try:
        walk_notes: dict[str, int] = {}
        files = walk_image_files(root, walk_notes)
        if not files:
            raise SourceError(f"{root}: public folder has no image files")
        created = not os.path.lexists(out)
        committed: list[int] = []

        def on_commit(done: int, total: int, patches: int) -> None:
            committed.append(done)
            if progress:
                progress(done, total, patches)

        try:
            g = _open_bank(out, files, params, walk_notes)
            prog = dict(g.attrs["progress"])
            start_file = prog["files"]
            total = len(files)
            if progress:
                progress(start_file, total, prog["patches"])
            if not g.attrs["complete"]:
                _run_batches(g, root, files, (key, crops_per_image, min_keypoints, patch_size, grey), pool,
                             workers, on_commit, batch_files, chunk_files, on_decoded)
        except OSError as e:  # read-only, full disk, a file in the way: say which output, keep no debris
            if created and not committed:
                shutil.rmtree(out, ignore_errors=True)
                kept = "nothing was left behind"
            else:
                kept = "what was committed before is kept: re-run the same command to resume"
            raise SourceError(f"{out}: cannot write the patch bank ({e.strerror or e}); {kept}") from None
    finally:
        if own_pool:
            pool.shutdown(wait=True, cancel_futures=True)
    attrs = g.attrs.asdict()
    return PatchBankSummary(
        path=str(out), files=total, patches=attrs["progress"]["patches"],
        unreadable=attrs["progress"]["unreadable"], resumed_from_file=start_file,
        seconds=time.perf_counter() - t0, notes=dict(attrs["notes"]),
    )


def executor_chunk_files(batch_files: int, workers: int) -> int:
    """Files per task on an executor: a task there (a Dask cluster's) costs the client a few ms of
    its event loop, so one batch is cut into as many tasks as are in flight at once (4 per worker,
    :func:`generator.workers.in_order`), and no fewer files than :data:`CHUNK_FILES`."""
    return max(CHUNK_FILES, batch_files // (4 * workers))


@contextmanager
def bank_progress(label: str = "patches", enabled: bool | None = None, resumable: bool = True):
    """Keyword arguments for :func:`build_patch_bank` that draw a per-file bar on stderr.

    A resumed build says where it starts ("resumed at N of M files"); an interrupted one says how
    to go on ("re-run the same command to resume", unless the bank is a temporary one), both on
    stderr whatever the terminal.
    """
    bar = Progress(label, 1, enabled=enabled, unit="files")
    walked = False

    def progress(done: int, total: int, patches: int) -> None:
        nonlocal walked
        if not walked:  # the first call: the folder has been walked
            walked, bar.total = True, total
            if done:
                print(f"instahide: resumed at {done} of {total} files", file=sys.stderr)
            bar.advance(done)

    try:
        with bar:
            yield {"progress": progress, "on_decoded": bar.advance}
    except KeyboardInterrupt:
        if resumable:
            print(f"instahide: interrupted after {bar.done} of {bar.total} files: re-run the same command to resume",
                  file=sys.stderr)
        raise


def _run_batches(g, root: Path, files: list[str], rule: tuple, pool: Executor | None, workers: int,
                 progress: ProgressHook | None, batch_files: int, chunk_files: int,
                 on_decoded: Callable[[int], None] | None) -> None:
    """Decode the files not committed yet, a batch at a time, on ``pool`` (``workers`` at once);
    ``rule`` is the tail of :func:`_process_chunk`'s arguments (key, crops, min_keypoints, patch, grey)."""
    prog = dict(g.attrs["progress"])
    notes = dict(g.attrs["notes"])
    total = len(files)

    def tasks():
        """(root, chunk items, *rule), from where the last commit ended; made lazily."""
        for b0 in range(prog["files"], total, batch_files):
            b1 = min(b0 + batch_files, total)
            for c0 in range(b0, b1, chunk_files):
                yield (str(root), [(i, files[i]) for i in range(c0, min(c0 + chunk_files, b1))], *rule)

    arrays = g["patches"], g["origin"], g["unreadable"]

    def commit(batch_end: int, results: list[_ChunkResult]) -> None:
        pats = [r.patches for r in results]
        orig = [r.origin for r in results]
        unr = [i for r in results for i in r.unreadable]
        new_p = np.concatenate(pats)
        _append(arrays[0], new_p, prog["patches"])
        _append(arrays[1], np.concatenate(orig), prog["patches"])
        _append(arrays[2], np.asarray(unr, np.int64), prog["unreadable"])
        for r in results:
            for k, v in r.notes.items():
                notes[k] = notes.get(k, 0) + v
        notes["unreadable"] = notes.get("unreadable", 0) + len(unr)
        prog.update(files=batch_end, patches=prog["patches"] + len(new_p),
                    unreadable=prog["unreadable"] + len(unr))
        _commit(g, prog, notes, complete=batch_end == total)
        if progress:
            progress(batch_end, total, prog["patches"])

    pending: list[_ChunkResult] = []
    batch_start = prog["files"]
    try:
        for (_, items, *_), res in in_order(pool, _process_chunk, tasks(), workers):
            if on_decoded:
                on_decoded(len(items))
            pending.append(res)
            end = items[-1][0] + 1
            if end == total or end - batch_start == batch_files:
                commit(end, pending)
                pending, batch_start = [], end
    except WorkerDied as e:
        items = e.task[1]
        raise SourceError(f"{root}: a worker process died while decoding {items[0][1]} .. "
                          f"{items[-1][1]}; re-run with workers=1 to find the file") from None


def _commit(g, prog: dict, notes: dict, *, complete: bool) -> None:
    """One atomic write of the group's attributes: the batch becomes part of the bank."""
    g.attrs.update({"progress": dict(prog), "notes": dict(sorted(notes.items())), "complete": complete})


# --------------------------------------------------------------------------------------------
# Reading


MAX_BANK_FILE_BYTES = 16 << 20  # the largest file a bank holds: a chunk of files_offsets (8 MiB raw)
_BANK_ARRAYS = {  # name -> dtype, shape after the first axis
    "patches": ("uint8", None),  # (P, P, C) as the bank's params say
    "origin": ("int64", (5,)),
    "unreadable": ("int64", ()),
    "files_utf8": ("uint8", ()),
    "files_offsets": ("int64", ()),
}


def load_patch_bank(path: str | os.PathLike) -> ImageSet:
    """Read a finished bank as an ImageSet: labels -1, origin (file, x0, y0, x1, y1).

    A bank may come from someone else: its tree is checked (regular files of bounded size, no
    symlinks or FIFOs) before Zarr opens it, and every array's dtype, shape and chunk size and
    the committed counts before anything is read, so no read exceeds what the bank can hold.
    """
    p = Path(path)
    if not (p / "zarr.json").is_file():
        raise SourceError(f"{p}: not a patch bank (no zarr.json as a regular file)")
    check_tree(p, MAX_BANK_FILE_BYTES, what="patch bank")
    try:
        g = zarr.open_group(p, mode="r", zarr_format=3)
        attrs = g.attrs.asdict()
        arrays = {name: g[name] for name in _BANK_ARRAYS}
    except Exception as e:
        raise SourceError(f"{p}: not a readable Zarr v3 patch bank ({type(e).__name__}: {e})") from None
    if attrs.get("format") != FORMAT:
        raise SourceError(f"{p}: format: expected {FORMAT!r}, got {attrs.get('format')!r}")
    if not attrs.get("complete"):
        prog = attrs.get("progress", {})
        raise SourceError(f"{p}: complete: the build stopped after {prog.get('files')} files; "
                          "run the same build again to finish it")
    params = attrs.get("params")
    size = params.get("patch_size") if isinstance(params, dict) else None
    if type(size) is not int or not MIN_IMAGE_SIDE <= size <= MAX_IMAGE_SIDE:
        raise SourceError(f"{p}: params.patch_size is {size!r}; expected a side of {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} px")
    for name, (dtype, tail) in _BANK_ARRAYS.items():
        tail = tail if tail is not None else patch_shape(params)
        a = arrays[name]
        if (not isinstance(a, zarr.Array) or str(a.dtype) != dtype or a.shape[1:] != tail
                or a.nbytes > MAX_ARRAY_BYTES or a.chunks[0] * a.dtype.itemsize * int(np.prod(tail)) > MAX_BANK_FILE_BYTES):
            raise SourceError(f"{p}/{name}: {getattr(a, 'dtype', '?')} {getattr(a, 'shape', '?')} chunks "
                              f"{getattr(a, 'chunks', '?')}; expected {dtype} (N, {', '.join(map(str, tail))}) "
                              f"of at most {MAX_ARRAY_BYTES:,} bytes in chunks of at most {MAX_BANK_FILE_BYTES:,}")
    n = attrs.get("progress", {}).get("patches") if isinstance(attrs.get("progress"), dict) else None
    if type(n) is not int or not 0 <= n <= min(arrays["patches"].shape[0], arrays["origin"].shape[0]):
        raise SourceError(f"{p}: progress.patches is {n!r}; expected a count of at most the rows of patches and origin")
    images = arrays["patches"][:n]
    origin = arrays["origin"][:n]
    files = _decode_files(arrays["files_utf8"][:], arrays["files_offsets"][:])
    notes = {k: int(v) for k, v in attrs.get("notes", {}).items()}
    return ImageSet(np.ascontiguousarray(images, np.uint8), labels=np.full(n, -1, np.int64), class_names=(),
                    source_files=files, origin=np.asarray(origin, np.int64),
                    origin_columns=("file", "x0", "y0", "x1", "y1"), notes=notes)
