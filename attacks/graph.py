"""The keyless attack of Carlini et al. ("Is Private Learning Possible with Instance Encoding?",
IEEE S&P 2021, arXiv 2011.05315), in our own code and without a deep-learning framework.

1. Features: encryptions that share a private image look alike in |x| (in x itself without a
   mask), where the public patches' mix is noise.  The features are |x| whitened by the
   covariance of the encryptions (:func:`whitener`), in which that noise is about white; their
   cosines are the similarity of the grouping, their squared distances the fit's cost.  In the
   centred domain with a mask |x| is no mix and its folds no additive noise: there the features
   are the pixel differences (:func:`gradients`), not whitened; so too for images wider than
   :data:`MAX_WHITENED` values, whose covariance would not fit in memory.  Colour images enter in
   an opponent colour basis, chroma planes first (:func:`opponent`): the whitening is triangular,
   so a grey image stays in the luminance columns through every whitening, and a class the label's
   fit finds grey (:func:`grey_classes`) is grouped and fitted there alone, its images' 2 x H x W
   chroma values held at zero instead of fitted to noise.
2. Grouping: ``label.npy`` names the classes in each encryption, and two encryptions can share a
   private image only through a class both carry.  So each class is grouped on its own: its share
   of the label memberships gives its number of private images (:func:`class_sizes`), and a
   spherical k-means of the encryptions carrying it (cosine similarity to the group centres)
   assigns each of them one of its images.  This is 10 small problems instead of one large one,
   and no N x N similarity is ever formed.  The k-means, the attack's largest cost, works on a
   random projection of the features to 1,024 columns (:func:`project`).
3. Lambdas: ``label.npy`` row i is sum_j lam_ij onehot(class of private image j).  A group's class
   is known from step 2; an encryption's lambda for a group is its label entry at that class,
   split equally between its groups of one class.
4. Reconstruction and refinement: the private images P solve min sum_i ||y_i - sum_j lam_ij P_g(ij)
   - mu_i B||^2 with y = |x| (x for mixup), mu_i = 1 - sum of the private lambdas (the public
   patches' share, whose average B is a further unknown), exactly as the key-given ``pairing``
   baseline does.  Each encryption is then moved to the groups that fit it best (iterated
   conditional modes, respecting its label's classes) and the fit repeated.  k-means sometimes
   puts two images in one group and splits another between two; a group with 1.5 x the expected
   memberships is split in two (2-means of its residuals) into the smallest group of its class,
   if that is short (:func:`split_merged`), which the refinement cannot do by single moves.
   Once the refinement settles, the features are whitened again by the covariance of the fit's
   residuals, the public patches' mix alone (:data:`WHITENINGS` times); each class is grouped
   again on what the fit leaves of its own images, in the few directions where they differ
   (:func:`regroup`), and the refinement goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
from numba import njit, prange

from attacks.public import PublicRelease, magnitudes
from challenge.domain import DOMAINS
from challenge.progress import Progress

__all__ = ["GraphResult", "opponent", "from_opponent", "covariance", "features_floor", "rows_floor", "whitener",
           "residual_whitener", "transform", "residuals", "unit_rows", "top_neighbours", "class_sizes", "grey_classes",
           "centre_sums", "spherical_kmeans", "project", "initial_groups", "split_merged", "greedy_match", "signal_basis",
           "regroup", "private_lambdas", "fit_images", "reassign", "pair_accuracy", "graph_attack"]

EPS = 1e-12
DIMS = 1024  # the grouping's features (see :func:`project`)
FLOOR = 0.03  # a whitening's least floor on the eigenvalues, a share of their mean (see :func:`whitener`)
DIRECTIONS = 0.1  # the features' whitening evens out this share of its rows' directions (:func:`features_floor`)
COVARIANCE_ROWS = 16384  # the rows a covariance is estimated from (the release's order is random)
WHITENINGS = 2  # times the features are whitened again, by the fit's residuals (see :func:`graph_attack`)
SIGNAL_EDGE = 1.25  # a class's images differ along a direction that stands this far above its noise (see :func:`regroup`)
MAX_WHITENED = 4096  # values per image up to which the features are whitened: its D x D matrices (float64)
# take 4 x 134 MB at 4,096 and grow as D^2 (D^3 time); wider images keep the pixel differences
Advance = Callable[[int], None] | None  # told how many rows were just done (a progress bar's advance)


@dataclass
class GraphResult:
    """What the graph attack found: groups per encryption, their lambdas, the images."""

    groups: np.ndarray  # int32 (N, k_private): the groups (recovered private images) of each encryption
    lam: np.ndarray  # float64 (N, k_private): their lambdas
    images: np.ndarray  # float32 (n_private, H, W, C): the reconstructed private images, domain values

    def first_choice(self) -> np.ndarray:
        """Per encryption, its group with the largest lambda: the best-determined image in it."""
        column = np.argmax(self.lam, axis=1)
        return self.groups[np.arange(len(self.groups)), column]


# --- 1. features ---------------------------------------------------------------------------------

def gradients(images: np.ndarray) -> np.ndarray:
    """float32 (N, (H-1)*W*C + H*(W-1)*C): the vertical, then horizontal, differences of
    neighbouring pixels of each image (N, H, W, C); 5,952 values at 32x32x3.

    The public patches (and the sign mask's residue) add smooth, image-like noise whose energy
    sits at low spatial frequencies; differences whiten it, so a similarity weighs the detail that
    tells images apart.  The pool attack's features; the graph attack learns its whitening from
    the release (:func:`whitener`).
    """
    a = np.asarray(images, np.float32)
    return np.concatenate([np.diff(a, axis=1).reshape(len(a), -1), np.diff(a, axis=2).reshape(len(a), -1)], axis=1)


OPPONENT = np.array([[1, 1, 1], [1, -1, 0], [1, 1, -2]]).T / np.sqrt([3, 2, 6])  # RGB times it: grey, 2 chroma
GREY_RATIO = 3.0  # a class is grey where its mean image's chroma is below this many times its noise


def opponent(images: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 (N, H*W*C) and the number of chroma columns in it: colour images (N, H, W, 3) in an
    orthonormal opponent basis, plane by plane, the two chroma planes first, luminance last (grey
    images are zero in the chroma planes); other images as they are, with no chroma columns.

    Why chroma first: :func:`whitener`'s matrix is upper triangular, so column t of the whitened
    features depends on columns up to t only, and what is zero in the leading chroma columns stays
    zero there through every whitening: a grey image lives in the trailing H*W columns.
    """
    a = np.asarray(images, np.float32)
    if a.shape[-1] != 3:
        return a.reshape(len(a), -1), 0
    planes = np.moveaxis(a @ OPPONENT.astype(np.float32), -1, 1)[:, [1, 2, 0]]
    return np.ascontiguousarray(planes).reshape(len(a), -1), 2 * a.shape[1] * a.shape[2]


def from_opponent(rows: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The colour images (N, H, W, 3) of rows in :func:`opponent`'s order (its inverse)."""
    height, width, _ = shape
    planes = rows.reshape(len(rows), 3, height, width)[:, [2, 0, 1]]
    return np.moveaxis(planes, 1, -1) @ OPPONENT.T


def covariance(rows: np.ndarray, block: int = 4096) -> np.ndarray:
    """float64 (D, D): the covariance of ``rows`` (N, D).  Block products in float32 about the
    first block's mean, summed in float64."""
    d = rows.shape[1]
    centre = rows[:block].mean(axis=0, dtype=np.float64).astype(np.float32)
    total, second = np.zeros(d), np.zeros((d, d))
    for a in range(0, len(rows), block):
        b = rows[a : a + block] - centre
        total += b.sum(axis=0, dtype=np.float64)
        second += b.T @ b
    mean = total / max(len(rows), 1)
    return second / max(len(rows), 1) - np.outer(mean, mean)


def features_floor(cov: np.ndarray, n_rows: int) -> float:
    """The floor, a share of the mean eigenvalue of ``cov`` (estimated from ``n_rows`` rows), at
    which a whitening by it fits :data:`DIRECTIONS` x ``n_rows`` directions: sum g / (g + floor)
    over its eigenvalues g in units of their mean (a ridge's effective degrees of freedom); at
    least :data:`FLOOR`.

    Why: the whitening weighs an eigen-direction of variance g by 1 / (g + floor), so it evens out
    the rows' spread in about that many directions.  Estimated from the rows it whitens, the more
    directions it evens out, the more alike the rows' dot products: with fewer rows than values
    and no floor, the whitened rows are orthogonal and equally long, and the grouping sees nothing.
    How many directions that is at a given floor depends on the spectrum: natural photos put most
    of their variance in a few smooth directions, the embedded procedural images spread it.  A
    floor fixed by the rows alike, (D / N)^2 / 10, was 0.24 at 2,000 rows of 3,072 values, where
    the procedural images needed 1 to 3 (pair accuracy 0.32; 0.83 with this floor, 2.1 there) and
    the photos did as well at 0.2 to 3.  The share was chosen on the development sets (0.07 and
    0.14 no better; docs/ATTACKS.md has the figures).
    """
    g = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    g /= max(float(g.mean()), EPS)
    target = DIRECTIONS * n_rows
    if np.sum(g / (g + FLOOR)) <= target:
        return FLOOR
    lo, hi = np.log(FLOOR), np.log(1e6)  # directions fall as the floor rises: bisect its logarithm
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.sum(g / (g + np.exp(mid))) > target else (lo, mid)
    return float(np.exp(hi))


def rows_floor(values: int, n_rows: int) -> float:
    """The floor of a whitening by the residuals, max(:data:`FLOOR`, (D / N)^4 / 4) for N rows of
    D values.  Once the features are whitened, the residuals' spectrum is near flat, so the rows
    alone tell how far its small eigenvalues are estimated too low; with fewer rows than values
    the covariance is singular, and the floor rises steeply: 0.035 at 5,000 rows of 3,072 values,
    0.25 at as many rows as values, 1.4 at 2,000.  Chosen on the development sets (pair accuracy
    on the procedural images at 2,000 rows: 0.831 and 0.858 at k = 6 and 4; 0.788 and 0.832 with
    the rule before, (D / N)^2 / 10; 0.822 and 0.857 with the features' floor, which lowered the
    development textures at 5,000 rows: 0.838 and 0.870 against 0.854 and 0.880, three attack
    seeds; see docs/ATTACKS.md)."""
    return max(FLOOR, (values / max(n_rows, 1)) ** 4 / 4)


def whitener(rows: np.ndarray, floor: float | None = None, level: float | None = None, block: int = 4096) -> np.ndarray:
    """float32 (D, D): a matrix W with W W^T the inverse of the covariance of ``rows`` (N, D), its
    diagonal raised by ``floor`` x ``level`` (each eigenvalue raised alike): rows times W are
    whitened, their dot products those of that inverse covariance.  ``floor`` by default
    :func:`features_floor`'s; ``level`` by default the mean variance of ``rows``
    (:func:`residual_whitener` passes the features').

    Least squares weigh every direction alike, which is right for white noise only; the public
    patches' mix is far from white (natural images: most of its energy in smooth, grey changes).
    Times W, noise with this covariance is white, so the fit and the similarity weigh each
    direction by how far the noise hides it (on the development textures, the share of
    encryptions whose true images fit them best rose from 0.84 with pixel differences to 0.88).
    The floor keeps directions with almost no variance from being blown up.  W is the transposed
    inverse of the Cholesky factor: an eigendecomposition gives the same dot products but took
    13 s a call, against 4 s, on loaded cores.
    """
    cov = covariance(rows, block)
    d = rows.shape[1]
    floor = features_floor(cov, len(rows)) if floor is None else floor
    cov[np.diag_indices(d)] += floor * max(float(np.trace(cov)) / d if level is None else level, EPS)
    return np.linalg.inv(np.linalg.cholesky(cov)).T.astype(np.float32)


def residual_whitener(features: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """:func:`whitener` of the residuals ``noise`` (N, D) left by a fit of the ``features`` rows
    they came from: the floor :func:`rows_floor`'s, a share of the features' mean variance (so
    residuals near zero, an exact fit, change little).  The attack and the benchmark's caps both
    whiten this way."""
    level = float(np.mean(features.var(axis=0, dtype=np.float64)))
    return whitener(noise, rows_floor(noise.shape[1], len(noise)), level=level)


def transform(z: np.ndarray, matrix: np.ndarray, block: int = 4096, advance: Advance = None) -> None:
    """``z`` (N, D) float32 times ``matrix`` (D, D), in place, ``block`` rows at a time."""
    for a in range(0, len(z), block):
        z[a : a + block] = z[a : a + block] @ matrix
        if advance:
            advance(len(z[a : a + block]))


def residuals(z, groups, *, lam, images, public_term, mu, rows=None, keep=None, start: int = 0) -> np.ndarray:
    """float32 (len(rows), D - start): the ``rows`` of ``z`` (default all) from column ``start`` on,
    each minus its fit (its images' lambda mix and public term), but for the image of its slot
    ``keep`` (int, one per row; default none), which stays in: what the fit leaves of that image.

    One pass of :func:`_residuals` (numba) over the rows: the numpy expression made a float64
    temporary of all the rows per slot, 13 s of the regrouping's 31 s at 50,000 encryptions."""
    rows = np.arange(len(z)) if rows is None else np.asarray(rows, np.int64)
    keep = np.full(len(rows), -1, np.int64) if keep is None else np.asarray(keep, np.int64)
    return _residuals(z, rows, start, groups, lam, images, public_term, mu, keep)


@njit(cache=True, parallel=True)
def _residuals(z, rows, start, groups, lam, images, public_term, mu, keep):
    """See :func:`residuals`; each value summed in float64 in slot order, then rounded once.
    Rows are independent: any thread count gives the same bytes."""
    out = np.empty((len(rows), z.shape[1] - start), np.float32)
    for a in prange(len(rows)):
        i = rows[a]
        for t in range(out.shape[1]):
            v = z[i, start + t] - mu[i] * public_term[start + t]
            for j in range(groups.shape[1]):
                if j != keep[a]:
                    v -= lam[i, j] * images[groups[i, j], start + t]
            out[a, t] = v
    return out


def unit_rows(y: np.ndarray, in_place: bool = False, centre: bool = True) -> np.ndarray:
    """float32 rows centred and scaled to unit norm: their dot products are correlations.
    ``in_place``: a float32 ``y`` nothing else holds is changed and returned, not copied.
    ``centre=False``: scaled only (whitened rows, whose mean has no meaning): cosines."""
    f = y if in_place and y.dtype == np.float32 else np.array(y, dtype=np.float32, copy=True)
    if centre:
        f -= f.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    np.divide(f, norm, out=f, where=norm > 0)
    return f


def top_neighbours(f: np.ndarray, k: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``f`` most similar (dot product) to each row, itself excluded.

    Returns int32 indices and float32 similarities (N, k), best first, ties to the lower index.
    Works ``rows`` rows at a time (default: a 256 MB similarity block), so memory stays bounded.
    """
    n = len(f)
    k = min(k, n - 1)
    rows = rows or max(16, (1 << 26) // max(n, 1))
    index = np.empty((n, k), np.int32)
    sims = np.empty((n, k), np.float32)
    for a in range(0, n, rows):
        b = min(a + rows, n)
        s = f[a:b] @ f.T
        s[np.arange(b - a), np.arange(a, b)] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -vals), axis=-1)
        index[a:b] = np.take_along_axis(part, order, axis=1)
        sims[a:b] = np.take_along_axis(vals, order, axis=1)
    return index, sims


# --- 2. grouping ---------------------------------------------------------------------------------

def class_sizes(labels: np.ndarray, k_private: int, n_private: int) -> np.ndarray:
    """int64 (C,): how many private images each label class has, estimated from label.npy.

    Every private image is in about the same number of encryptions, so a class's share of the
    memberships (a present label column is one membership; a row with fewer present classes than
    k_private holds its spare images in its classes, split by their weight) is its share of the
    n_private images.  Rounded by largest remainder; every class that occurs gets at least one.
    """
    lab = labels.astype(np.float64)
    present = lab > 0
    spare = np.maximum(k_private - present.sum(axis=1), 0)[:, None] * lab / np.maximum(lab.sum(axis=1, keepdims=True), EPS)
    memberships = present.sum(axis=0) + spare.sum(axis=0)
    share = memberships / max(memberships.sum(), EPS) * n_private
    sizes = np.maximum(np.floor(share), present.any(axis=0)).astype(np.int64)
    for c in np.argsort(sizes - share, kind="stable"):  # largest remainder first
        if sizes.sum() >= n_private:
            break
        sizes[c] += 1
    for c in np.argsort(-sizes, kind="stable"):  # only when forced minimums overshoot
        if sizes.sum() <= n_private:
            break
        sizes[c] -= sizes[c] > 1
    return sizes


@njit(cache=True)
def centre_sums(f, assign, k):
    """float64 (k, D): the sum of the rows of ``f`` assigned to each centre, rows in order.

    One pass in memory order on one thread: the parallel loop over column blocks took 26 ms for
    1,000 x 1,024 on two loaded cores (its threads' start and join, and a row stride per block)."""
    out = np.zeros((k, f.shape[1]))
    for i in range(f.shape[0]):
        g = assign[i]
        for t in range(f.shape[1]):
            out[g, t] += f[i, t]
    return out


def spherical_kmeans(f: np.ndarray, k: int, *, seed: int = 0, restarts: int = 3, iterations: int = 30) -> np.ndarray:
    """float32 (k, D) unit centres maximising the summed cosine of each unit row of ``f`` to its
    nearest centre; k-means++ seeding, the best of ``restarts`` runs, seeded (same input, same output)."""
    rng = np.random.default_rng(seed)
    best, best_score = None, -np.inf
    for _ in range(restarts):
        centres = _seed_centres(f, k, rng)
        for _ in range(iterations):
            sims = f @ centres.T
            assign = np.argmax(sims, axis=1)
            counts = np.bincount(assign, minlength=k)
            sums = centre_sums(f, assign, k)
            for g in np.flatnonzero(counts == 0):  # an empty centre takes the worst-fitting row
                worst = int(np.argmin(sims[np.arange(len(f)), assign]))
                sums[g] = f[worst]
                sims[worst, assign[worst]] = np.inf
            new = unit_rows_uncentred(sums)
            if np.array_equal(new, centres):
                break
            centres = new
        score = float(np.max(f @ centres.T, axis=1).sum())
        if score > best_score:
            best, best_score = centres, score
    return best


def _seed_centres(f, k, rng) -> np.ndarray:
    """k-means++ for cosines: each next centre a row drawn with weight (1 - its best cosine)."""
    chosen = [int(rng.integers(len(f)))]
    closest = f @ f[chosen[0]]
    for _ in range(k - 1):
        weight = np.maximum(1.0 - closest.astype(np.float64), 0)
        total = weight.sum()
        pick = int(rng.choice(len(f), p=weight / total)) if total > 0 else int(rng.integers(len(f)))
        chosen.append(pick)
        np.maximum(closest, f @ f[pick], out=closest)
    return f[chosen].copy()


def unit_rows_uncentred(a: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit norm (zero rows stay zero)."""
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norm, out=np.zeros_like(a, dtype=np.float64), where=norm > 0).astype(np.float32)


def project(z: np.ndarray, dims: int, seed: int = 0, rows: int = 4096) -> np.ndarray:
    """float32 (N, dims): the rows of ``z`` times a seeded Gaussian matrix, which keeps their cosines
    to within about 1/sqrt(dims) (Johnson-Lindenstrauss); ``z`` itself when it has no more than
    ``dims`` columns.  The grouping's k-means, the attack's largest cost, works on these."""
    if z.shape[1] <= dims:
        return z
    basis = np.random.default_rng(seed).standard_normal((z.shape[1], dims)).astype(np.float32)
    out = np.empty((len(z), dims), np.float32)
    for a in range(0, len(z), rows):
        out[a : a + rows] = z[a : a + rows] @ basis
    return out


def initial_groups(z: np.ndarray, labels: np.ndarray, *, k_private: int, sizes: np.ndarray, seed: int = 0,
                   advance: Advance = None, grey: np.ndarray | None = None,
                   luminance: np.ndarray | None = None) -> np.ndarray:
    """int32 (N, k_private): groups from a spherical k-means of each class's encryptions.

    ``z``: the features (in the attack, their projection by :func:`project`), one row per
    encryption; a class's rows are scaled to unit norm (:func:`unit_rows`, not centred) when it is
    grouped, so no second copy of all of them is ever held.

    Groups ``offsets[c] .. offsets[c+1]`` are class c's images.  Each encryption takes its nearest
    centre in every class it carries; a spare slot (fewer classes than images) takes the next
    nearest centre of its heaviest class; a slot still empty (a class with too few groups) takes
    the lowest free group.  ``advance`` is told each class's row count once it is grouped.  The
    ``grey`` classes (bool, C) are grouped on the rows of ``luminance`` instead, the features'
    luminance columns (:func:`opponent`): their chroma columns hold noise only.
    """
    n_rows = len(z)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    present = labels > 0
    spare = np.maximum(k_private - present.sum(axis=1), 0)
    heaviest = np.argmax(labels, axis=1)
    slots = present.astype(np.int64)
    slots[np.arange(n_rows), heaviest] += spare
    groups = np.full((n_rows, k_private), -1, np.int32)
    filled = np.zeros(n_rows, np.int64)
    for c in np.flatnonzero(sizes):
        rows = np.flatnonzero(present[:, c])
        if len(rows) == 0:
            continue
        features = luminance if grey is not None and grey[c] else z
        fc = unit_rows(features[rows], in_place=True, centre=False)  # a copy already
        centres = spherical_kmeans(fc, int(min(sizes[c], len(rows))), seed=seed + int(c))
        order = np.argsort(-(fc @ centres.T), axis=1, kind="stable")
        for t in range(order.shape[1]):
            take = rows[slots[rows, c] > t]
            if len(take) == 0:
                break
            groups[take, filled[take]] = offsets[c] + order[slots[rows, c] > t, t]
            filled[take] += 1
        if advance:
            advance(len(rows))
    for i in np.flatnonzero(filled < k_private):
        free = np.setdiff1d(np.arange(offsets[-1]), groups[i])
        groups[i, filled[i]:] = free[: k_private - filled[i]]
    return groups


def split_merged(z, groups, *, lam, images, public_term, mu, group_class, expected: float, short: float | None = None,
                 seed: int = 0) -> bool:
    """Split each group that holds two images (over 1.5 x the ``expected`` memberships) into
    itself and the smallest group of its class, if that holds fewer than ``short`` (default
    ``expected``): the 2-means of its encryptions' residuals (the encryption minus its other
    images and the public term) separates the two images.  A class's memberships are fixed by the
    label, so a group that holds two images leaves another short: one that holds scraps of several
    images, or half of one split over two groups.  Such a group often keeps 60 to 80 memberships
    (45 to 81 on textures seed 0); the refinement then moves its scraps to where they fit.
    Changes ``groups`` in place; returns whether it did."""
    short = expected if short is None else short
    sizes = np.bincount(groups.ravel(), minlength=len(images))
    changed = False
    for c in np.unique(group_class):
        ids = np.flatnonzero(group_class == c)
        small = ids[np.argsort(sizes[ids], kind="stable")]
        big = ids[np.argsort(-sizes[ids], kind="stable")]
        for s, b in zip(small[sizes[small] < short], big[sizes[big] > 1.5 * expected]):
            rows, slot = np.nonzero(groups == b)
            f = unit_rows_uncentred(residuals(z, groups, lam=lam, images=images, public_term=public_term, mu=mu,
                                              rows=rows, keep=slot))
            half = np.argmax(f @ spherical_kmeans(f, 2, seed=seed).T, axis=1) == 1
            groups[rows[half], slot[half]] = s
            changed = True
    return changed


def greedy_match(overlap: np.ndarray) -> np.ndarray:
    """int64 (rows,): for each row of ``overlap`` (counts, no more rows than columns), the column
    matched to it one to one, largest overlaps first (ties to the lower index)."""
    match = np.full(overlap.shape[0], -1, np.int64)
    used = np.zeros(overlap.shape[1], bool)
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        row, column = divmod(int(flat), overlap.shape[1])
        if match[row] < 0 and not used[column]:
            match[row], used[column] = column, True
    return match


def signal_basis(r: np.ndarray, q: int, *, seed: int = 0, iterations: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """float32 (D, q), float (q,): an orthonormal basis of the ``q`` leading right singular vectors
    of ``r`` (N, D) and their singular values, by seeded subspace iteration (8 columns more than
    asked): O(N D q) a pass, where a full SVD costs O(N D^2)."""
    basis = np.linalg.qr(np.random.default_rng(seed).standard_normal((r.shape[1], q + 8)).astype(np.float32))[0]
    for _ in range(iterations):
        basis = np.linalg.qr(r.T @ (r @ basis))[0]
    _, values, vt = np.linalg.svd(r @ basis, full_matrices=False)
    return (basis @ vt[:q].T).astype(np.float32), values[:q]


def regroup(z, groups, *, lam, images, public_term, mu, group_class, grey=None, chroma: int = 0, seed: int = 0) -> None:
    """Group each class again, once the fit stands, on what its encryptions hold of its own
    images, in the few directions where those images differ; changes ``groups`` in place.

    The first grouping sees each encryption whole: its other private image and the public mix
    hide what tells alike images apart (a class of smooth grey textures came out no better than
    chance).  An encryption that carries the class once, minus its other images and the public
    term, leaves lam x its image + noise; minus lam x the class's mean image, lam x that image's
    difference from the mean: k images differ in k - 1 directions, the leading singular vectors
    of these residuals.  Kept are those whose singular value exceeds :data:`SIGNAL_EDGE` x the
    k-th (the noise's largest), at least one; a spherical k-means of the residuals in them, a few
    columns where there were thousands of noise, groups the class.  In one direction (images that
    barely differ) unit rows are its two signs: the class is split in two, and the rounds' splits
    of merged groups (:func:`split_merged`) divide it further, one cut at a time.  Each new cluster
    keeps the old group it shares most encryptions with, so encryptions with two images of the
    class (left out) keep theirs.  The ``grey`` groups' classes are grouped on the luminance
    columns (after ``chroma``), as in :func:`initial_groups`.
    """
    for c in np.unique(group_class):
        ids = np.flatnonzero(group_class == c)
        inside = group_class[groups] == c
        k, rows = len(ids), np.flatnonzero(inside.sum(axis=1) == 1)
        if k < 2 or len(rows) < 2 * k:
            continue
        slot = np.argmax(inside[rows], axis=1)
        own, own_lam = groups[rows, slot], lam[rows, slot]
        r = residuals(z, groups, lam=lam, images=images, public_term=public_term, mu=mu, rows=rows, keep=slot,
                      start=chroma if grey is not None and grey[ids[0]] else 0)
        mean = (own_lam @ r / max(float(own_lam @ own_lam), EPS)).astype(np.float32)
        r -= np.outer(own_lam, mean).astype(np.float32)
        basis, values = signal_basis(r, min(k, r.shape[1]), seed=seed + int(c))
        noise = values[k - 1] if len(values) == k else 0.0  # no more columns than images: none is noise's alone
        q = max(int(np.sum(values[: k - 1] > SIGNAL_EDGE * noise)), 1)
        f = unit_rows_uncentred(r @ basis[:, :q] + np.outer(own_lam, mean @ basis[:, :q]).astype(np.float32))
        clusters = k if q > 1 else 2  # one direction's unit rows are its two signs
        found = np.argmax(f @ spherical_kmeans(f, clusters, seed=seed + int(c)).T, axis=1)
        overlap = np.zeros((clusters, k), np.int64)
        np.add.at(overlap, (found, np.searchsorted(ids, own)), 1)
        groups[rows, slot] = ids[greedy_match(overlap)[found]]


def grey_classes(z: np.ndarray, labels: np.ndarray, *, mu: np.ndarray, chroma: int, block: int = 4096) -> np.ndarray:
    """bool (C,): the label classes whose private images are grey, judged from the public files.

    The label alone fits each class's mean image (the least squares of ``z`` on the label columns
    and ``mu``, the public term).  A grey class's mean is zero in the ``chroma`` leading columns
    (:func:`opponent`), so its fitted chroma is the fit's noise: its mean square over that noise's
    variance is about 1 (0.6 to 0.8 measured on the development photos and textures, where colour
    classes gave 16 to 56), and a class is grey below :data:`GREY_RATIO`.
    """
    if chroma == 0:
        return np.zeros(labels.shape[1], bool)
    present = (labels > 0).any(axis=0)
    design = np.concatenate([labels.astype(np.float64), mu[:, None]], axis=1)
    moments, total = np.zeros((design.shape[1], chroma)), 0.0
    for a in range(0, len(z), block):  # float64 blocks: no copy of all of z
        part = z[a : a + block, :chroma].astype(np.float64)
        moments += design[a : a + block].T @ part
        total += float(np.einsum("ij,ij->", part, part))
    inverse = np.linalg.pinv(design.T @ design, hermitian=True)
    means = inverse @ moments
    noise = (total - float(np.sum(means * moments))) / max(len(z) * chroma, 1)  # the fit's residual variance
    energy = np.mean(means[:-1] ** 2, axis=1) / np.maximum(np.diag(inverse)[:-1] * noise, EPS)
    return present & (energy < GREY_RATIO)


# --- 3. lambdas ----------------------------------------------------------------------------------

def private_lambdas(groups: np.ndarray, group_class: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 (N, k_private): each group's label entry at its class, split equally among the
    encryption's groups of that class (label.npy adds same-class lambdas in one column)."""
    cls = group_class[groups]
    same = (cls[:, :, None] == cls[:, None, :]).sum(axis=2)
    return np.take_along_axis(labels.astype(np.float64), cls, axis=1) / same


# --- 4. reconstruction ---------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _moments(y, groups, lam, mu, n_groups):
    """D^T y for the sparse design D (row i: lam_ij at column groups_ij, mu_i at column n_groups).

    Parallel over blocks of pixels, each summed over rows in order: thread-count independent."""
    out = np.zeros((n_groups + 1, y.shape[1]))
    block = 64
    for b in prange((y.shape[1] + block - 1) // block):
        lo = b * block
        hi = min(lo + block, y.shape[1])
        for i in range(y.shape[0]):
            for j in range(groups.shape[1]):
                g = groups[i, j]
                w = lam[i, j]
                for t in range(lo, hi):
                    out[g, t] += w * y[i, t]
            for t in range(lo, hi):
                out[n_groups, t] += mu[i] * y[i, t]
    return out


@njit(cache=True)
def _gram(groups, lam, mu, n_groups):
    """D^T D for the design of :func:`_moments`, from its k_private + 1 entries per row: O(N k^2)
    where the dense product took O(N n^2) (100 GFLOP per fit at 50,000 x 1,000).  Rows in order."""
    out = np.zeros((n_groups + 1, n_groups + 1))
    for i in range(groups.shape[0]):
        for j in range(groups.shape[1]):
            g = groups[i, j]
            w = lam[i, j]
            for q in range(groups.shape[1]):
                out[g, groups[i, q]] += w * lam[i, q]
            out[g, n_groups] += w * mu[i]
            out[n_groups, g] += w * mu[i]
        out[n_groups, n_groups] += mu[i] * mu[i]
    return out


def _solve(gram: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """Minimum-norm solution of gram @ x = moments.  The pseudo-inverse of the small symmetric
    gram, then one matrix product: lstsq's per-column back-substitution took minutes for 1,000
    images x 5,952 pixels."""
    return np.linalg.pinv(gram, hermitian=True) @ moments


def _solve_fit(gram: np.ndarray, moments: np.ndarray, grey: np.ndarray | None, chroma: int) -> np.ndarray:
    """:func:`_solve`, the first ``chroma`` columns with the ``grey`` groups out of the design
    (their images zero there): the rest of the design's gram and moments are unchanged by that."""
    if grey is None or not chroma:
        return _solve(gram, moments)
    kept = np.flatnonzero(np.append(~grey, True))  # and the public term
    solved = np.zeros_like(moments)
    solved[kept, :chroma] = _solve(gram[np.ix_(kept, kept)], moments[kept, :chroma])
    solved[:, chroma:] = _solve(gram, moments[:, chroma:])
    return solved


def fit_images(y, groups, *, lam, mu, n_groups: int, advance: Advance = None, grey: np.ndarray | None = None,
               chroma: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares images (n_groups, D) and public term (D,) for the model above (float64);
    the images of the ``grey`` groups (bool, n_groups) zero in the first ``chroma`` columns."""
    solved = _solve_fit(_gram(groups, lam, mu, n_groups), _moments(y, groups, lam, mu, n_groups), grey, chroma)
    if advance:
        advance(len(y))
    return solved[:n_groups], solved[n_groups]


@njit(cache=True, parallel=True)
def _icm(corr, gram, present, group_class, groups, lam_of, sweeps):
    """Per encryption, move one group at a time to the group that lowers its residual most.

    corr[i, g] = <r_i, P_g> (r_i: the encryption minus its public term), gram = P P^T, present[i]:
    label columns > 0, lam_of[i, c]: label entry of class c.  A group set must cover exactly the
    present classes; lambdas split equally within a class.  Rows are independent: any thread count
    gives the same result.
    """
    n, m = groups.shape
    n_groups = gram.shape[0]
    for i in prange(n):
        cur = groups[i].copy()
        lam = np.empty(m)
        best_cost = _cost(corr[i], gram, group_class, lam_of[i], cur, lam)
        for _ in range(sweeps):
            moved = False
            for j in range(m):
                keep = cur[j]
                for g in range(n_groups):
                    if not present[i, group_class[g]]:
                        continue
                    taken = False
                    for q in range(m):
                        if cur[q] == g:
                            taken = True
                    if taken:
                        continue
                    cur[j] = g
                    if not _covers(cur, group_class, present[i]):
                        cur[j] = keep
                        continue
                    cost = _cost(corr[i], gram, group_class, lam_of[i], cur, lam)
                    if cost < best_cost - 1e-12:
                        best_cost = cost
                        keep = g
                        moved = True
                    cur[j] = keep
            if not moved:
                break
        groups[i] = cur


@njit(cache=True)
def _covers(cur, group_class, present):
    for c in range(present.shape[0]):
        if present[c]:
            found = False
            for q in range(cur.shape[0]):
                if group_class[cur[q]] == c:
                    found = True
            if not found:
                return False
    return True


@njit(cache=True)
def _cost(corr, gram, group_class, lam_of, cur, lam):
    """||r - sum_j lam_j P_j||^2 - ||r||^2 for the group set ``cur`` (lambdas written to ``lam``)."""
    m = cur.shape[0]
    for j in range(m):
        same = 0
        for q in range(m):
            if group_class[cur[q]] == group_class[cur[j]]:
                same += 1
        lam[j] = lam_of[group_class[cur[j]]] / same
    cost = 0.0
    for j in range(m):
        cost -= 2.0 * lam[j] * corr[cur[j]]
        for q in range(m):
            cost += lam[j] * lam[q] * gram[cur[j], cur[q]]
    return cost


def _correlations(r, images, present, group_class, groups) -> np.ndarray:
    """float64 (rows, n_groups): <r_i, P_g> wherever :func:`_icm` reads it, the groups of the row's
    label classes and its current groups; 0 elsewhere.  A row carries at most k_private of the
    classes (2 of 10 in the 2020 shape: a fifth of the full product's work)."""
    corr = np.zeros((len(r), len(images)))
    for c in range(present.shape[1]):
        rows, ids = np.flatnonzero(present[:, c]), np.flatnonzero(group_class == c)
        if len(rows) and len(ids):
            corr[np.ix_(rows, ids)] = r[rows] @ images[ids].T
    for j in range(groups.shape[1]):  # a current group of a class the row lacks (a filled spare slot)
        rows = np.flatnonzero(~present[np.arange(len(r)), group_class[groups[:, j]]])
        corr[rows, groups[rows, j]] = np.einsum("ij,ij->i", r[rows], images[groups[rows, j]])
    return corr


def reassign(y, groups, *, images, public_term, labels, group_class, mu, sweeps: int = 3, rows: int = 4096,
             advance: Advance = None) -> np.ndarray:
    """Groups after iterated conditional modes on the fit (see :func:`_icm`); int32 (N, k_private)."""
    groups = np.array(groups, dtype=np.int32, copy=True)
    gram = images @ images.T
    p32 = images.astype(np.float32)
    lab = labels.astype(np.float64)
    present = labels > 0
    for a in range(0, len(y), rows):
        r = y[a : a + rows] - (mu[a : a + rows, None] * public_term[None, :]).astype(np.float32)
        corr = _correlations(r, p32, present[a : a + rows], group_class, groups[a : a + rows])
        block = groups[a : a + rows]
        _icm(corr, gram, present[a : a + rows], group_class, block, lab[a : a + rows], sweeps)
        groups[a : a + rows] = block
        if advance:
            advance(len(block))
    return groups


# --- scoring the grouping (with keys) ------------------------------------------------------------

def pair_accuracy(groups: np.ndarray, truth: np.ndarray, n_private: int) -> float:
    """Share of encryptions whose groups are exactly their private images, once each group is
    matched to the private image it shares most encryptions with (greedy one-to-one matching,
    largest overlaps first)."""
    overlap = np.zeros((n_private, n_private), np.int64)  # group x private image
    for j in range(groups.shape[1]):
        for q in range(truth.shape[1]):
            np.add.at(overlap, (groups[:, j], truth[:, q]), 1)
    mapped = np.sort(greedy_match(overlap)[groups], axis=1)
    return float(np.mean(np.all(mapped == np.sort(truth, axis=1), axis=1)))


# --- the attack ----------------------------------------------------------------------------------

def graph_attack(release: PublicRelease, *, rounds: int = 10, rows: int = 4096, seed: int = 0,
                 dims: int = DIMS) -> GraphResult:
    """The keyless attack (steps 1-4 above) on a release's public files, with a progress bar per
    step and per round.

    Where |x| is not the mix (a sign mask in the centred domain, whose folds are no additive noise),
    the features are the pixel differences, never whitened: whitening took pair accuracy from 0.46
    to 0.22 there (development photos, [-1, 1]).  So they are for images of more than
    :data:`MAX_WHITENED` values, whose covariance would not fit in memory.  With them the groups
    are far from whole images (pair accuracy about 0.5 in [-1, 1]), and a short group is as likely
    a real image as scraps: a merged group is split only into a group under half the expected
    memberships (into any short group: 0.464 against 0.492, attack seeds 0 to 3, same photos).

    Parameters
    ----------
    release : PublicRelease
        From :func:`attacks.open_public`.
    rounds : int, optional
        The most refinement rounds (step 4) before the first whitening by the residuals; half as
        many after each.
    rows : int, optional
        Rows handled at a time: bounds memory.
    seed : int, optional
        Seeds the random projection and every k-means: same seed, same answer.
    dims : int, optional
        Columns of the random projection the k-means works on.

    Returns
    -------
    result : GraphResult
        Each encryption's groups (recovered private images) and their lambdas, and the images;
        ``result.first_choice()`` picks one image per encryption to submit.
    """
    p = release.params
    n, m = p.n_private, p.k_private
    labels = release.labels
    n_rows = len(labels)
    mu = np.maximum(1.0 - labels.astype(np.float64).sum(axis=1), 0.0)
    height, width, channels = release.image_shape
    mix = not p.masked or DOMAINS[p.domain][0] >= 0  # |x| is the mix itself
    whiten = mix and height * width * channels <= MAX_WHITENED  # whitened |x|; else pixel differences
    d = height * width * channels if whiten else ((height - 1) * width + height * (width - 1)) * channels
    z = np.empty((n_rows, d), np.float32)  # filled, then whitened, in place
    chroma = 0  # leading chroma columns of z (see :func:`opponent`)
    start = 0
    with Progress("features", (2 if whiten else 1) * n_rows, unit="encryptions") as bar:
        for block in release.encryption_blocks(rows):
            y = magnitudes(block, p)
            if whiten:
                z[start : start + len(block)], chroma = opponent(y)
            else:
                z[start : start + len(block)] = gradients(y)
            start += len(block)
            bar.advance(len(block))
        if whiten:
            transform(z, whitener(z[:COVARIANCE_ROWS]), rows, bar.advance)
    sizes = class_sizes(labels, m, n)
    group_class = np.repeat(np.arange(len(sizes)), sizes)
    grey = grey_classes(z, labels, mu=mu, chroma=chroma)
    grey_group = grey[group_class] if grey.any() else None
    fit = partial(fit_images, mu=mu, n_groups=n, grey=grey_group, chroma=chroma)
    with Progress("grouping", int(np.count_nonzero(labels[:, sizes > 0] > 0)), unit="rows") as bar:
        groups = initial_groups(project(z, dims, seed, rows), labels, k_private=m, sizes=sizes, seed=seed,
                                advance=bar.advance, grey=grey,
                                luminance=project(z[:, chroma:], dims, seed, rows) if grey.any() else None)
    expected = len(z) * m / n
    short = expected if whiten else expected / 2  # a group that may take a split (see above)
    for stage in range(WHITENINGS + 1 if whiten else 1):
        if stage:
            with Progress(f"whitening {stage}/{WHITENINGS}", n_rows, unit="rows") as bar:
                lam = private_lambdas(groups, group_class, labels)
                images, public_term = fit(z, groups, lam=lam)
                head = slice(0, COVARIANCE_ROWS)
                noise = residuals(z[head], groups[head], lam=lam[head], images=images, public_term=public_term,
                                  mu=mu[head])
                transform(z, residual_whitener(z[head], noise), rows, bar.advance)
                del noise
                images, public_term = fit(z, groups, lam=lam)
                regroup(z, groups, lam=lam, images=images, public_term=public_term, mu=mu, group_class=group_class,
                        grey=grey_group, chroma=chroma, seed=seed)
        most = max(rounds // 2, 1) if stage else rounds  # each whitening starts from a settled fit
        for r in range(most):
            label = f"whitening {stage}/{WHITENINGS}, round {r + 1}/{most}" if stage else f"round {r + 1}/{most}"
            with Progress(label, 3 * n_rows, unit="rows") as bar:  # fit, maybe a refit, reassign
                lam = private_lambdas(groups, group_class, labels)
                images, public_term = fit(z, groups, lam=lam, advance=bar.advance)
                split = split_merged(z, groups, lam=lam, images=images, public_term=public_term, mu=mu,
                                     group_class=group_class, expected=expected, short=short, seed=seed)
                if split:
                    lam = private_lambdas(groups, group_class, labels)
                    images, public_term = fit(z, groups, lam=lam)
                bar.advance(n_rows)
                moved = reassign(z, groups, images=images, public_term=public_term, labels=labels, group_class=group_class,
                                 mu=mu, rows=rows, advance=bar.advance)
            if np.array_equal(moved, groups) and not split:
                break
            groups = moved
    del z
    lam = private_lambdas(groups, group_class, labels)
    moments = np.zeros((n + 1, int(np.prod(release.image_shape))))
    start = 0
    with Progress("fit", n_rows, unit="encryptions") as bar:
        for block in release.encryption_blocks(rows):
            stop = start + len(block)
            y = magnitudes(block, p)
            y = opponent(y)[0] if chroma else y.reshape(len(block), -1)
            moments += _moments(y, groups[start:stop], lam[start:stop], mu[start:stop], n)
            start = stop
            bar.advance(len(block))
    images = _solve_fit(_gram(groups, lam, mu, n), moments, grey_group, chroma)[:n]
    images = from_opponent(images, release.image_shape) if chroma else images.reshape(n, *release.image_shape)
    return GraphResult(groups, lam, images.astype(np.float32))
