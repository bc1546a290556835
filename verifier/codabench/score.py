#!/usr/bin/env python3
"""Scoring program of an InstaHide challenge on Codabench.  Needs Python >= 3.9 and numpy >= 1.21 only.

    python3 score.py INPUT OUTPUT [--holdout FRACTION --part public|final]

INPUT/res holds the submission (unzipped by the platform), INPUT/ref the reference data: every array
of the release's key store as a .npy file (``private/images.npy``, ...) and ``attributes.json``, the
exact bytes of the store's attributes that the commitment hashes.  ``manifest.json`` beside this file
is the release's public manifest.  Writes OUTPUT/scores.json and OUTPUT/scores.txt.

Before scoring, the reference data is hashed as the release format's section 6 defines the
commitment, and must give the commitment the manifest publishes: keys of another release (or a
changed byte) exit 2 naming both.  The submission is checked by check_submission.py (the checks of
``verify``), then scored as the format's section 9 defines it: SSIM (7 x 7 uniform window, sample
covariance, data range 2, the interior pixels, mean of the channels) and L2 on the [-1, 1] scale,
means over the encryptions summed exactly, published rounded to 4 decimals.  Exit 0 scored,
2 invalid submission or bad reference data (one line on stderr), 1 an internal error.
"""

import argparse
import hashlib
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # check_submission.py, beside this file
from check_submission import UINT8_TO_CENTERED, Expected, Invalid, check, printable, read_json  # noqa: E402

HEADLINE = ("Max_SSIM", "Mean_SSIM", "Min_L2", "Max_L2", "Mean_L2", "success_rate", "recovered_share")
DECIMALS = 4
SUCCESS_SSIM = 0.8
KEY_ARRAYS = ("encryption/lam", "encryption/private_index", "encryption/public_index", "encryption/sign_bits",
              "private/images", "private/labels", "private/origin", "private/source_index", "public/bank_index",
              "public/images", "public/origin", "seed")  # every array of the key store, in commitment order
ATTRIBUTES = "attributes.json"
HOLDOUT_NONCE = b"holdout\0" + bytes(4)
HOLDOUT_ROWS = 1 << 18  # rows of the split drawn at a time: 2 MB of keystream
WIN = 7
NP = WIN * WIN
C1N = NP * NP * (0.01 * 2.0) ** 2  # the division-free form of SSIM: numerator and denominator scaled
C2N = NP * (NP - 1) * (0.03 * 2.0) ** 2  # by NP^2 and NP (NP - 1), which cancel
PAIR_VALUES = 1 << 16  # values of the pairs computed at once: their arrays stay in the cache


# --- the reference data --------------------------------------------------------------------------

def _npy_data(path):
    """(dtype, shape, file positioned at the data) of a little-endian C-order .npy file."""
    f = open(path, "rb")
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran or dtype.byteorder == ">" or dtype.hasobject or dtype.fields is not None:
            raise ValueError(f"{dtype} {'Fortran' if fortran else 'C'} order, expected a little-endian C-order array")
        if os.fstat(f.fileno()).st_size != f.tell() + math.prod(shape) * dtype.itemsize:
            raise ValueError("its size is not what its header says")
        return dtype, shape, f
    except BaseException:
        f.close()
        raise


def commitment(ref, scheme):
    """The commitment (FORMAT.md section 6) of the key store whose arrays are in ``ref``."""
    v2 = scheme != "instahide-key-commitment-v1"
    h = hashlib.sha256(scheme.encode() + b"\0")
    for name in KEY_ARRAYS:
        path = os.path.join(ref, name + ".npy")
        try:
            dtype, shape, f = _npy_data(path)
        except (OSError, ValueError) as e:
            raise Invalid(f"reference data: {name}.npy: {getattr(e, 'strerror', None) or e}") from None
        with f:
            header = [name, dtype.name, list(shape)]
            h.update(json.dumps(header, separators=(",", ":") if v2 else (", ", ": ")).encode() + b"\0")
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    try:
        with open(os.path.join(ref, ATTRIBUTES), "rb") as f:
            h.update(f.read())
    except OSError as e:
        raise Invalid(f"reference data: {ATTRIBUTES}: {e.strerror}") from None
    return "sha256:" + h.hexdigest()


def load_reference(ref, manifest):
    """(private images as uint8, private_index, seed), once the reference data is shown to be the key
    store the manifest commits to."""
    entry = manifest.get("key_store") if isinstance(manifest.get("key_store"), dict) else {}
    published, scheme = entry.get("commitment"), entry.get("scheme")
    if scheme not in ("instahide-key-commitment-v1", "instahide-key-commitment-v2") or not isinstance(published, str):
        raise Invalid("manifest.json: key_store is not {commitment, scheme} of a known scheme")
    actual = commitment(ref, scheme)
    if actual != published:
        raise Invalid(f"reference data: key store commitment {actual} differs from {published}, the one the "
                      f"release publishes: not this release's keys")
    load = lambda name: np.load(os.path.join(ref, name + ".npy"), allow_pickle=False)  # noqa: E731
    return load("private/images"), load("encryption/private_index"), load("seed").tobytes()


# --- the holdout (FORMAT.md section 9): ChaCha20 (RFC 8439) in numpy --------------------------------

def _rotl(v, n):
    return (v << np.uint32(n)) | (v >> np.uint32(32 - n))


def chacha20(key, nonce, first_block, n_blocks):
    """The ChaCha20 keystream of (key, nonce), blocks ``first_block ..`` (RFC 8439, section 2.3)."""
    init = np.empty((16, n_blocks), np.uint32)
    init[:4] = np.frombuffer(b"expand 32-byte k", "<u4")[:, None]
    init[4:12] = np.frombuffer(key, "<u4")[:, None]
    init[12] = np.arange(first_block, first_block + n_blocks, dtype=np.uint64).astype(np.uint32)
    init[13:] = np.frombuffer(nonce, "<u4")[:, None]
    x = init.copy()
    rounds = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
              (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))
    with np.errstate(over="ignore"):
        for _ in range(10):
            for a, b, c, d in rounds:
                x[a] += x[b]
                x[d] = _rotl(x[d] ^ x[a], 16)
                x[c] += x[d]
                x[b] = _rotl(x[b] ^ x[c], 12)
                x[a] += x[b]
                x[d] = _rotl(x[d] ^ x[a], 8)
                x[c] += x[d]
                x[b] = _rotl(x[b] ^ x[c], 7)
        x += init
    return x.T.astype("<u4").tobytes()


def holdout_rows(seed, n, fraction, part):
    """The encryptions a part covers: encryption i is final iff word i of the holdout stream is below
    int(fraction 2^64)."""
    if not 0 < fraction < 1:
        raise Invalid(f"--holdout is {fraction}; expected a fraction strictly between 0 and 1")
    bound = np.uint64(int(fraction * 2**64))
    final = np.empty(n, bool)
    for start in range(0, n, HOLDOUT_ROWS):  # 8 rows a block; HOLDOUT_ROWS is a multiple of 8
        stop = min(start + HOLDOUT_ROWS, n)
        stream = chacha20(seed, HOLDOUT_NONCE, start // 8, -(-(stop - start) // 8))
        final[start:stop] = np.frombuffer(stream, "<u8")[:stop - start] < bound
    rows = final if part == "final" else ~final
    if not rows.any():
        raise Invalid(f"--holdout {fraction} leaves no encryption in the {part} part")
    return rows


# --- the metrics (FORMAT.md section 9) -----------------------------------------------------------

def _window_sums(f):
    """7 x 7 window sums of (B, H, W, C) images at the (H - 6) x (W - 6) interior pixels: 7 = 4 + 2 + 1
    along each axis, 4 additions an axis."""
    for axis in (1, 2):
        n = f.shape[axis]
        take = lambda a, start, stop: a[(slice(None),) * axis + (slice(start, stop),)]  # noqa: E731
        two = take(f, 0, n - 1) + take(f, 1, n)
        four = take(two, 0, n - 3) + take(two, 2, n - 1)
        f = take(four, 0, n - 6) + take(two, 4, n - 2) + take(f, 6, n)
    return f


def window_stats(images):
    """(window sums, window sums of squares) of (B, H, W, C) float64 images."""
    return _window_sums(images), _window_sums(images * images)


def ssim_l2(x, stats_x, y, stats_y):
    """(SSIM, L2) of x[b] against y[b] (float64 (B, H, W, C) on the [-1, 1] scale), given their
    :func:`window_stats`; only the cross term is summed here."""
    (sx, sxx), (sy, syy) = stats_x, stats_y
    sxy = _window_sums(x * y)
    t = sx * sy
    xx_yy = sx * sx + sy * sy
    s_map = (2.0 * t + C1N) * (2.0 * (NP * sxy - t) + C2N) / ((xx_yy + C1N) * ((NP * (sxx + syy) - xx_yy) + C2N))
    ssim = s_map.mean(axis=(1, 2)).mean(axis=1)
    d = (x - y).reshape(len(x), -1)
    return ssim, np.sqrt(np.einsum("ij,ij->i", d, d) / d.shape[1])


def _in_chunks(run, fn, count, per_item):
    """fn(a, b) over consecutive ranges of ``count`` items of ``per_item`` values, by ``run`` (a map); in order."""
    step = max(1, PAIR_VALUES // per_item)
    return list(run(lambda a: fn(a, min(a + step, count)), range(0, count, step)))


def _pairs(rec, where, truth, truth_stats):
    """(2, B, m): SSIM and L2 of rec[b] against truth[where[b, j]]."""
    stats = window_stats(rec)
    out = np.empty((2,) + where.shape)
    for j in range(where.shape[1]):
        rows = where[:, j]
        out[:, :, j] = ssim_l2(rec, stats, truth[rows], tuple(s[rows] for s in truth_stats))
    return out


def score_pairs(recovered, images, index, run=map):
    """(SSIM, L2), each (B, m), of recovered[b] (float64 (B, H, W, C), [-1, 1]) against the uint8 private
    images[index[b, j]].  The images a block uses are taken to [-1, 1] and their windows summed once, as
    each recovery's, so a pair sums only its cross term.  ``run`` maps the work over chunks (threads)."""
    used, where = np.unique(np.ravel(index), return_inverse=True)
    where = where.reshape(np.shape(index))
    truth = UINT8_TO_CENTERED[images[used]]
    parts = _in_chunks(run, lambda a, b: window_stats(truth[a:b]), len(truth), truth[0].size)
    truth_stats = tuple(np.concatenate([p[i] for p in parts]) for i in (0, 1))
    parts = _in_chunks(run, lambda a, b: _pairs(recovered[a:b], where[a:b], truth, truth_stats), len(recovered),
                       recovered[0].size * where.shape[1])
    return tuple(np.concatenate(parts, axis=1))


class Scorer:
    """Per-encryption scores of a submission, block by block, and their aggregates."""

    def __init__(self, images, private_index, selected, image_shape):
        self.images, self.index, self.shape = images, private_index, image_shape
        n = len(private_index)
        self.selected = np.ones(n, bool) if selected is None else selected
        self.per_encryption = np.full((n, 5), np.nan)  # max / mean SSIM, min / max / mean L2
        self.best_per_private = np.full(len(images), -np.inf)
        self.filled = 0
        self.pool = ThreadPoolExecutor(max(1, min(os.cpu_count() or 1, 8)))

    def add(self, start, rows):
        index = self.index[start:start + len(rows)]
        ssim, l2 = score_pairs(rows.reshape((len(rows),) + self.shape), self.images, index, self.pool.map)
        self.per_encryption[start:start + len(rows)] = np.stack(
            [ssim.max(axis=1), ssim.mean(axis=1), l2.min(axis=1), l2.max(axis=1), l2.mean(axis=1)], axis=1)
        counted = self.selected[start:start + len(rows)]
        np.maximum.at(self.best_per_private, index[counted].ravel(), ssim[counted].ravel())
        self.filled += len(rows)

    def summary(self):
        if self.filled != len(self.index):
            raise RuntimeError(f"scored {self.filled} of {len(self.index)} encryptions")
        values = self.per_encryption[self.selected]
        n = len(values)
        out = dict(zip(HEADLINE[:5], (math.fsum(column) / n for column in values.T)))
        out["success_rate"] = float(np.count_nonzero(values[:, 0] > SUCCESS_SSIM)) / n
        out["recovered_share"] = float(np.count_nonzero(self.best_per_private > SUCCESS_SSIM)) / len(self.images)
        return out


# --- the program ---------------------------------------------------------------------------------

def write_atomic(path, text):
    tmp = f"{path}.partial-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def evaluate(input_dir, manifest_path=os.path.join(HERE, "manifest.json"), holdout=None, part="public"):
    """Check the reference data and the submission, then score it: the exact (unrounded) aggregates."""
    manifest = read_json(manifest_path, 16 << 20, "release manifest")
    expected = Expected.from_manifest(manifest, "manifest.json")
    images, private_index, seed = load_reference(os.path.join(input_dir, "ref"), manifest)
    if len(private_index) != expected.n or images.shape[1:] != expected.image_shape:
        raise Invalid("reference data: its arrays do not have the manifest's shapes")
    selected = None if holdout is None else holdout_rows(seed, expected.n, holdout, part)
    scorer = Scorer(images, private_index, selected, expected.image_shape)
    problems = check(os.path.join(input_dir, "res"), expected, on_rows=scorer.add)
    if problems:
        raise Invalid("invalid submission: " + "; ".join(problems))
    return scorer.summary()


def run(input_dir, output_dir, holdout=None, part="public"):
    """Score INPUT/res against INPUT/ref and write the published scores; returns them."""
    scores = {name: round(value, DECIMALS) for name, value in evaluate(input_dir, holdout=holdout, part=part).items()}
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(os.path.join(output_dir, "scores.json"), json.dumps(scores, indent=2) + "\n")
    write_atomic(os.path.join(output_dir, "scores.txt"), "".join(f"{k}: {v!r}\n" for k, v in scores.items()))
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(prog="score.py", description="Score an InstaHide challenge submission.")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--holdout", type=float)
    parser.add_argument("--part", choices=("public", "final"), default="public")
    args = parser.parse_args(argv)
    try:
        scores = run(args.input, args.output, args.holdout, args.part)
    except Invalid as e:
        sys.stderr.write(f"score.py: error: {printable(e)}\n")
        return 2
    except OSError as e:
        sys.stderr.write(f"score.py: error: {printable(e.filename or '')}: {e.strerror or e}\n")
        return 2
    except Exception as e:  # a bug: still one line, as the platform shows stderr to participants
        sys.stderr.write(f"score.py: internal error: {type(e).__name__}: {printable(e)}\n")
        return 1
    print("\n".join(f"{name:<16}{value:9.4f}" for name, value in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
