"""The targets of issue #10, each beside a baseline measured in the same run.

1. graph pair accuracy on natural-photo releases (100 private x 50, scikit-image sample crops) in
   [0, 1], mixup and [-1, 1]; baseline: the share of encryptions whose nearest neighbour by the
   cosine of |x| shares a private image (the issue's floor).
2. keyless reconstruction: graph's Max_SSIM beside the key-given pairing baseline's, [0, 1].
3. pool on the default release with the default pool: recovered share; baseline: the best
   correlation of |pixels| (the issue's figure).
4. speed: ``instahide strength`` on the default 5,000-encryption release (its own process, warm
   numba cache); with ``--big``, ``instahide attack graph`` on 50,000 encryptions and its peak RSS.
5. with ``--shape HxWxC`` (repeatable): graph pair accuracy and time in [0, 1] on the same photo
   crops resized to that shape (grey when C is 1), encrypted directly (tests/synthetic.py).
6. with ``--heldout``, only this: graph pair accuracy in [0, 1] on the held-out photos
   (tests/photos.py: never used as private images while developing), 100 private x 50, over
   ``--seeds`` seeds (crops and keys), with the caps the label puts on it: the refinement started
   from the true pairing, and the shares of encryptions whose two private images share a class
   (their lambda split is assumed equal) or have a lambda under 0.05; the development sets'
   figures at seed 0 beside it, in the same run (``--dev``: the development sets only, the
   photos and the synthetic textures, over ``--seeds`` seeds; ``--per-image 20``: 2,000
   encryptions each, where the whitening's floor matters most).
7. with ``--big-full``, only this: time, peak RSS and pair accuracy of the graph attack on
   50,000 encryptions (1,000 private photo crops x 50, [0, 1]), all refinement rounds.

    python benchmarks/bench_attacks.py [--big] [--shape 28x28x1] [--heldout | --dev [--seeds 3] [--per-image 20]]
                                       [--big-full] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attacks.graph import (COVARIANCE_ROWS, EPS, fit_images, graph_attack, pair_accuracy, private_lambdas,  # noqa: E402
                           reassign, residual_whitener, top_neighbours, unit_rows, whitener)
from attacks.public import magnitudes  # noqa: E402
from attacks.pool import pool_attack  # noqa: E402
from attacks.public import open_public  # noqa: E402
from challenge import format as fmt  # noqa: E402
from challenge.params import Params  # noqa: E402
from generator.default_data import default_private, default_public  # noqa: E402
from generator.release import generate  # noqa: E402
from challenge.submission import write_submission  # noqa: E402
from verifier.baselines import pairing_blocks  # noqa: E402
from verifier.scoring import score  # noqa: E402

SEED = bytes(range(32))


def nearest_share(release, truth) -> float:
    """Share of encryptions whose nearest neighbour by the cosine of |x| shares a private image."""
    y = np.concatenate([np.abs(b.reshape(len(b), -1)) for b in release.encryption_blocks(4096)])
    index, _ = top_neighbours(unit_rows(y), 1)
    return float(np.mean((truth[:, :, None] == truth[index[:, 0]][:, None, :]).any(axis=(1, 2))))


def big_private(sets: int = 10):
    """1,000 labelled photo crops: ``sets`` independent draws of 10 per photo (the photos have too
    few mutually distinct crops for one draw of 100 each); for time and memory only."""
    from tests.photos import natural_private

    parts = [natural_private(per_photo=10, seed=s) for s in range(sets)]
    images = np.concatenate([q.images for q in parts])
    origin = np.stack([np.zeros(len(images), np.int64), np.arange(len(images), dtype=np.int64)], axis=1)
    return replace(parts[0], images=images, labels=np.concatenate([q.labels for q in parts]), origin=origin)


def scored(folder, blocks, release, store, dtype="float32") -> dict:
    write_submission(folder, blocks, expected=release.expected, dtype=dtype, metadata={"team": "bench"}, force=True)
    return score(folder, store, expected=release.expected)[1].summary


def image_shape(text: str) -> tuple[int, int, int]:
    h, w, c = (int(v) for v in text.lower().split("x"))
    return h, w, c


def resized(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images resized (Lanczos) to ``shape``, grey (ITU-R 601-2 luma) when C is 1."""
    from PIL import Image

    h, w, c = shape
    out = [np.asarray(Image.fromarray(a).convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.LANCZOS))
           for a in images]
    return np.stack(out).reshape(len(images), h, w, c)


def graph_at_shape(work: Path, shape: tuple[int, int, int], private, public) -> None:
    """Graph pair accuracy in [0, 1] on the photo crops at ``shape``, 100 private x 50 encryptions."""
    from tests.synthetic import synthetic_release

    classes = len(private.class_names)
    per_class = private.images.reshape(classes, -1, *private.images.shape[1:])
    interleaved = per_class.swapaxes(0, 1).reshape(private.images.shape)  # image p is of class p % classes
    path = work / ("shape-" + "x".join(map(str, shape)))
    truth = synthetic_release(path, shape, per_image=50, classes=classes, private=resized(interleaved, shape),
                              patches=resized(public.images, shape))
    release = open_public(path)
    start = time.perf_counter()
    result = graph_attack(release)
    seconds = time.perf_counter() - start
    accuracy = pair_accuracy(result.groups, truth.index, len(truth.private))
    print(f"graph {'x'.join(map(str, shape)):8} pair accuracy {accuracy:.3f} in [0, 1]  baseline: |x| nearest "
          f"neighbour shares an image {nearest_share(release, truth.index):.3f}  [{seconds:.1f} s]")


def local_optima(y, images, public_term, truth, lam, group_class, mu) -> np.ndarray:
    """bool (N,): whether no single swap of one of an encryption's true images for another image of
    its class (its lambda kept) fits it better than its true images, with these ``images`` and
    lambdas: where not, no refinement by this cost can place it."""
    c = (y - (mu[:, None] * public_term[None, :]).astype(np.float32)) @ images.T.astype(np.float32)
    gram, rows, ok = images @ images.T, np.arange(len(y)), np.ones(len(y), bool)
    for j in range(truth.shape[1]):
        a, lj = truth[:, j], lam[:, j, None]
        delta = -2 * lj * (c - c[rows, a, None]) + lj ** 2 * (np.diag(gram)[None, :] - gram[a, a][:, None])
        for q in range(truth.shape[1]):
            if q != j:
                delta += 2 * lj * lam[:, q, None] * (gram[truth[:, q]] - gram[truth[:, q], a][:, None])
        candidate = group_class[None, :] == group_class[a][:, None]
        candidate[(truth[:, :, None] == np.arange(len(images))[None, None, :]).any(axis=1)] = False
        ok &= ~(candidate & (delta < 0)).any(axis=1)
    return ok


def held_out_fits(y, images, public_term, truth, lam, group_class, mu) -> np.ndarray:
    """bool (N,): whether each of an encryption's true images, fitted from the true pairing without
    this encryption, fits it better than every other image of its class (the images fitted from
    all of them, ``images``; lambdas ``lam``).  What a perfect grouping lets the refinement keep
    once no image can absorb the encryption's own noise: the cap of a grouping whose images are
    estimated, where :func:`local_optima`'s are the true ones.  Each image's own refit drops the
    encryption from its least squares alone (its coupling to the other images is left)."""
    weight = np.bincount(truth.ravel(), weights=(lam ** 2).ravel(), minlength=len(images))
    ok = np.ones(len(y), bool)
    norms = np.einsum("ij,ij->i", images, images)
    for j in range(truth.shape[1]):
        a, lj = truth[:, j], lam[:, j, None]
        r = y - mu[:, None] * public_term[None, :]
        for q in range(truth.shape[1]):
            if q != j:
                r = r - lam[:, q, None] * images[truth[:, q]]
        without = images[a] + lj * (lj * images[a] - r) / np.maximum(weight[a] - lj[:, 0] ** 2, EPS)[:, None]
        own = np.einsum("ij,ij->i", r - lj * without, r - lj * without)
        other = np.einsum("ij,ij->i", r, r)[:, None] - 2 * lj * (r @ images.T) + lj ** 2 * norms[None, :]
        candidate = group_class[None, :] == group_class[a][:, None]
        candidate[(truth[:, :, None] == np.arange(len(images))[None, None, :]).any(axis=1)] = False
        ok &= ~(candidate & (other < own[:, None])).any(axis=1)
    return ok


def caps(release, store) -> dict:
    """What the label lets any grouping reach, in the attack's final features (|x| whitened by the
    encryptions' covariance, then by the covariance of what the true images and lambdas leave,
    the public patches' mix: what the attack's whitening by its own residuals approaches): the
    refinement started from the true pairing (fit, then one reassignment), and the same held out
    (:func:`held_out_fits`, the equal split); the oracle caps: the
    share of encryptions whose true images are the best fit (:func:`local_optima`) given the true
    images and the true lambdas (what no attack by this cost passes), and given the true images
    with the label's equal split; the shares of encryptions whose two private images share a
    class (their lambda split is assumed equal) or have a lambda under 0.05, and of the oracle's
    misfits with a lambda under 0.05."""
    from challenge.domain import DOMAINS

    truth = store["encryption/private_index"][:].astype(np.int32)
    classes = store.read("private/labels")
    n, m = release.params.n_private, release.params.k_private
    y = np.concatenate([magnitudes(b, release.params).reshape(len(b), -1) for b in release.encryption_blocks(4096)])
    lo, hi = DOMAINS[release.params.domain]
    true_images = (store.read("private/images") / 255.0 * (hi - lo) + lo).reshape(n, -1)
    true_lam = store["encryption/lam"][:, :m].astype(np.float64)
    mu = np.maximum(1.0 - release.labels.astype(np.float64).sum(axis=1), 0.0)
    w = whitener(y[:COVARIANCE_ROWS]).astype(np.float64)
    z, true_images = (y @ w).astype(np.float32), true_images @ w
    mix = np.zeros_like(z, dtype=np.float64)
    for j in range(m):
        mix += true_lam[:, j, None] * true_images[truth[:, j]]
    public_true = ((z - mix) * mu[:, None]).sum(axis=0) / max(float((mu ** 2).sum()), EPS)
    noise = (z - mix - mu[:, None] * public_true)[:COVARIANCE_ROWS]
    w = residual_whitener(z[:COVARIANCE_ROWS], noise).astype(np.float64)
    z, true_images, public_true = (z @ w).astype(np.float32), true_images @ w, public_true @ w
    lam = private_lambdas(truth, classes, release.labels)
    images, public_term = fit_images(z, truth, lam=lam, mu=mu, n_groups=n)
    kept = reassign(z, truth, images=images, public_term=public_term, labels=release.labels, group_class=classes, mu=mu)
    oracle = local_optima(z, true_images, public_true, truth, true_lam, classes, mu)
    small = true_lam.min(axis=1) < 0.05
    return {"from_truth": pair_accuracy(kept, truth, n),
            "held_out": float(held_out_fits(z.astype(np.float64), images, public_term, truth, lam, classes, mu).mean()),
            "oracle": float(oracle.mean()),
            "oracle_equal_split": float(local_optima(z, true_images, public_true, truth, lam, classes, mu).mean()),
            "misfit_small_lambda": float(small[~oracle].mean()) if (~oracle).any() else 0.0,
            "same_class": float(np.mean(classes[truth[:, 0]] == classes[truth[:, 1]])),
            "small_lambda": float(np.mean(small))}


def heldout(work: Path, seeds: int, development: bool = False, per_image: int = 50) -> None:
    """Graph pair accuracy in [0, 1] on held-out photo releases of ``per_image`` encryptions per
    image over ``seeds`` seeds, with the caps (``development``: on the development sets instead,
    the photos and the textures, to develop on), and the development sets at seed 0 in the same run."""
    from tests.photos import heldout_private, heldout_public, natural_private, natural_public, texture_private

    print(f"releases of 100 private images x {per_image} encryptions")

    def measure(name: str, path: Path, private, public, seed: int) -> float:
        generate(path, Params(domain="positive", per_image=per_image), seed=bytes([seed + 1]) * 32, private=private,
                 public=public)
        release, store = open_public(path), fmt.open_key_store(path / "secret" / "keys.zarr")
        start = time.perf_counter()
        result = graph_attack(release)
        seconds = time.perf_counter() - start
        accuracy = pair_accuracy(result.groups, store["encryption/private_index"][:], release.params.n_private)
        c = caps(release, store)
        print(f"{name:11} seed {seed}: pair accuracy {accuracy:.3f} [{seconds:.0f} s]; from the true pairing "
              f"{c['from_truth']:.3f}, each encryption held out of its images' fit {c['held_out']:.3f}; "
              f"oracle (true images, true lambdas) {c['oracle']:.3f}, with the equal split "
              f"{c['oracle_equal_split']:.3f}, its misfits with a lambda < 0.05 {c['misfit_small_lambda']:.3f}; "
              f"two images of one class {c['same_class']:.3f}, a lambda < 0.05 {c['small_lambda']:.3f}")
        shutil.rmtree(path)
        return accuracy

    def photos(s):
        return measure("development", work / f"dev-{s}", natural_private(seed=s), natural_public(seed=s + 100), s)

    def textures(s):  # patches of the development photos, as held-out releases have
        return measure("textures", work / f"textures-{s}", texture_private(seed=s), heldout_public(seed=s + 100), s)

    if development:
        for name, run in (("development", photos), ("textures", textures)):
            found = [run(s) for s in range(seeds)]
            print(f"{name:11} pair accuracy over {seeds} seeds: mean {np.mean(found):.3f}, min {min(found):.3f}, "
                  f"max {max(found):.3f}")
        return
    found = [measure("held-out", work / f"heldout-{s}", heldout_private(seed=s), heldout_public(seed=s + 100), s)
             for s in range(seeds)]
    print(f"held-out    pair accuracy over {seeds} seeds: mean {np.mean(found):.3f}, min {min(found):.3f}, "
          f"max {max(found):.3f} (target >= 0.9 at 50 per image)")
    photos(0)
    textures(0)


def big_full(work: Path, public) -> None:
    """Time, peak RSS and pair accuracy of the graph attack on 50,000 encryptions, all rounds, in a
    process of its own that reads the public files only (the groups go to a file, scored here)."""
    big = work / "big"
    generate(big, Params(n_private=1000, per_image=50, domain="positive"), seed=SEED, private=big_private(),
             public=public)
    code = ("import sys, numpy; from attacks.graph import graph_attack; from attacks.public import open_public; "
            "numpy.save(sys.argv[2], graph_attack(open_public(sys.argv[1])).groups)")
    wall, rss = timed(["-c", code, str(big), str(work / "groups.npy")], module=False)
    truth = fmt.open_key_store(big / "secret" / "keys.zarr")["encryption/private_index"][:]
    accuracy = pair_accuracy(np.load(work / "groups.npy"), truth, 1000)
    print(f"graph, 50,000 encryptions, all rounds: {wall:.1f} s (target < 300 s), peak RSS {rss:.0f} MB "
          f"(target < 2,048 MB), pair accuracy {accuracy:.3f}")


def timed(args: list[str], module: bool = True) -> tuple[float, float]:
    start = time.perf_counter()
    pid = os.posix_spawn(sys.executable, [sys.executable, *(["-m"] if module else []), *args], os.environ,
                         file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(args)}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also run graph on 50,000 encryptions (slow)")
    parser.add_argument("--shape", type=image_shape, action="append", default=[], metavar="HxWxC",
                        help="also run graph on the photo crops at this image shape, e.g. 28x28x1 (repeatable)")
    parser.add_argument("--heldout", action="store_true", help="only: graph pair accuracy on the held-out photos")
    parser.add_argument("--dev", action="store_true", help="only: --heldout's figures on the development photos")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of --heldout and --dev (default: %(default)s)")
    parser.add_argument("--per-image", type=int, default=50,
                        help="encryptions per private image of --heldout and --dev (default: %(default)s)")
    parser.add_argument("--big-full", action="store_true",
                        help="only: graph time, peak RSS and pair accuracy on 50,000 encryptions")
    parser.add_argument("--workdir", type=Path, help="folder for the releases (made if missing; default: the system's temporary folder)")
    args = parser.parse_args()
    os.chdir(Path(__file__).resolve().parent.parent)
    from tests.photos import natural_private, natural_public

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-attacks-", dir=args.workdir))
    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, work folder: {work}")
    if args.heldout or args.dev or args.big_full:
        if args.heldout or args.dev:
            heldout(work, args.seeds, development=args.dev, per_image=args.per_image)
        if args.big_full:
            big_full(work, natural_public())
        shutil.rmtree(work)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        return 0
    private, public = natural_private(), natural_public()
    for label, params in (("[0, 1]", Params(domain="positive")), ("mixup", Params(mode="mixup")),
                          ("[-1, 1]", Params())):
        path = work / label.strip("[]").replace(", ", "_")
        generate(path, params, seed=SEED, private=private, public=public)
        release, store = open_public(path), fmt.open_key_store(path / "secret" / "keys.zarr")
        truth = store["encryption/private_index"][:]
        graph_attack(open_public(path)) if label == "[0, 1]" else None  # JIT warm-up, outside the timing
        start = time.perf_counter()
        result = graph_attack(release)
        seconds = time.perf_counter() - start
        accuracy = pair_accuracy(result.groups, truth, params.n_private)
        print(f"graph {label:8} pair accuracy {accuracy:.3f} (target >= 0.9 in [0, 1] and mixup)  "
              f"baseline: |x| nearest neighbour shares an image {nearest_share(release, truth):.3f}  [{seconds:.1f} s]")
        if label == "[0, 1]":
            lo, hi = release.expected.value_range
            images = np.clip(result.images, lo, hi)
            graph_scores = scored(work / "sub-graph", iter([images[result.first_choice()]]), release, store)
            pairing = scored(work / "sub-pairing", pairing_blocks(store, release.encryption_blocks(4096), release.expected),
                             release, store)
            print(f"graph [0, 1] Max_SSIM {graph_scores['Max_SSIM']:.3f} = "
                  f"{graph_scores['Max_SSIM'] / pairing['Max_SSIM']:.2f} x the key-given pairing baseline's "
                  f"{pairing['Max_SSIM']:.3f} (target >= 0.9 x)")

    for shape in args.shape:
        graph_at_shape(work, shape, private, public)

    default = work / "default"
    generate(default, Params(), seed=SEED, private=default_private(), public=default_public())
    release, store = open_public(default), fmt.open_key_store(default / "secret" / "keys.zarr")
    pool = default_private()
    start = time.perf_counter()
    choice, _ = pool_attack(release, pool)
    seconds = time.perf_counter() - start
    ours = scored(work / "sub-pool", iter([pool.images[choice]]), release, store, "uint8")
    y = unit_rows(np.concatenate([np.abs(b.reshape(len(b), -1)) for b in release.encryption_blocks(4096)]))
    naive = np.argmax(y @ unit_rows(np.abs(pool.images.reshape(len(pool), -1) / 127.5 - 1)).T, axis=1)
    base = scored(work / "sub-naive", iter([pool.images[naive]]), release, store, "uint8")
    print(f"pool default release: recovered share {ours['recovered_share']:.2f}, Max_SSIM {ours['Max_SSIM']:.3f} "
          f"[{seconds:.1f} s] (target >= 0.95)  baseline |pixels| correlation: recovered share "
          f"{base['recovered_share']:.2f}, Max_SSIM {base['Max_SSIM']:.3f}")

    wall, rss = timed(["commands.main", "strength", str(default), "--keys", str(default / "secret" / "keys.zarr"),
                       "--out", str(work / "report"), "--force"])
    print(f"strength, 5,000 encryptions: {wall:.1f} s, peak RSS {rss:.0f} MB (target < 60 s)")
    if args.big:
        big = work / "big"
        generate(big, Params(n_private=1000, per_image=50, domain="positive"), seed=SEED, private=big_private(),
                 public=public)
        wall, rss = timed(["commands.main", "attack", "graph", "--release", str(big), "--out", str(work / "sub-big")])
        print(f"graph, 50,000 encryptions: {wall:.1f} s, peak RSS {rss:.0f} MB (target < 4,096 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
