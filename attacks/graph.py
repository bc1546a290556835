"""The keyless attack of Carlini et al. ("Is Private Learning Possible with Instance Encoding?",
IEEE S&P 2021, arXiv 2011.05315), in our own code and without a deep-learning framework.

1. Similarity: encryptions that share a private image look alike in |x| (in x itself without a
   mask).  Each row of |x| is centred and scaled to unit norm; the cosine of two rows is their
   similarity.  Only the top ``neighbours`` per row are kept, computed ``rows`` at a time by BLAS,
   so memory is O(N * neighbours) beyond the features themselves.
2. Grouping: the neighbour graph is factorised by symmetric non-negative matrix factorisation
   (W ~ H H^T, H >= 0 of rank n_private; Kuang, Ding, Park, "Symmetric Nonnegative Matrix
   Factorization for Graph Clustering", SDM 2012).  Column g of H is private image g; the
   k_private largest entries of row i are the images in encryption i.  Overlapping groups are what
   InstaHide makes: every encryption belongs to k_private of them.
3. Lambdas: ``label.npy`` row i is sum_j lam_ij onehot(class of private image j).  A group's class
   is the label column most of its encryptions carry; an encryption's lambda for a group is its
   label entry at that class, split equally between its groups of one class.
4. Reconstruction and refinement: the private images P solve min sum_i ||y_i - sum_j lam_ij P_g(ij)
   - mu_i B||^2 with y = |x| (x for mixup), mu_i = 1 - sum of the private lambdas (the public
   patches' share, whose average B is a further unknown), exactly as the key-given ``pairing``
   baseline does.  Each encryption is then moved to the groups that fit it best (iterated
   conditional modes, respecting its label's classes) and the fit repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from attacks.public import PublicRelease, magnitudes

__all__ = ["GraphResult", "unit_rows", "top_neighbours", "neighbour_graph", "spmm", "spmm_reference",
           "symnmf", "group_classes", "private_lambdas", "fit_images", "fit_images_reference",
           "reassign", "pair_accuracy", "graph_attack"]

PIXELS = 32 * 32 * 3
EPS = 1e-12


@dataclass
class GraphResult:
    """What the graph attack found: groups per encryption, their lambdas, the images."""

    groups: np.ndarray  # int32 (N, k_private): the groups (recovered private images) of each encryption
    lam: np.ndarray  # float64 (N, k_private): their lambdas
    images: np.ndarray  # float32 (n_private, 3072): the reconstructed private images, domain values
    group_class: np.ndarray  # int64 (n_private,)

    def first_choice(self) -> np.ndarray:
        """Per encryption, its group with the largest lambda: the best-determined image in it."""
        column = np.argmax(self.lam, axis=1)
        return self.groups[np.arange(len(self.groups)), column]


# --- 1. similarity -------------------------------------------------------------------------------

def gradients(y: np.ndarray) -> np.ndarray:
    """float32 (N, 5952): vertical and horizontal differences of neighbouring pixels of each row.

    The public patches (and the sign mask's residue) add smooth, image-like noise whose energy
    sits at low spatial frequencies; differences whiten it, so both the similarity and the fit's
    choice between two candidate images weigh the detail that tells images apart.
    """
    a = np.asarray(y, np.float32).reshape(len(y), 32, 32, 3)
    return np.concatenate([np.diff(a, axis=1).reshape(len(a), -1), np.diff(a, axis=2).reshape(len(a), -1)], axis=1)


def unit_rows(y: np.ndarray) -> np.ndarray:
    """float32 rows centred and scaled to unit norm: their dot products are correlations."""
    f = np.array(y, dtype=np.float32, copy=True)
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

def neighbour_graph(index: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The symmetric graph W = (A + A^T) / 2 of the neighbour lists, in CSR form (indptr, cols, weights).

    Negative similarities are dropped; a mutual pair of neighbours keeps both halves.
    """
    n, k = index.shape
    r = np.repeat(np.arange(n, dtype=np.int64), k)
    c = index.ravel().astype(np.int64)
    w = np.maximum(sims.ravel(), 0).astype(np.float64) / 2
    rows, cols, weights = np.concatenate([r, c]), np.concatenate([c, r]), np.concatenate([w, w])
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols[order].astype(np.int32), weights[order]


@njit(cache=True, parallel=True)
def spmm(indptr, cols, weights, h):
    """W @ h for W in CSR form: each output row is summed in a fixed order (thread-count independent)."""
    out = np.zeros((len(indptr) - 1, h.shape[1]))
    for i in prange(len(indptr) - 1):
        for p in range(indptr[i], indptr[i + 1]):
            w = weights[p]
            j = cols[p]
            for g in range(h.shape[1]):
                out[i, g] += w * h[j, g]
    return out


def spmm_reference(indptr, cols, weights, h) -> np.ndarray:
    """Dense numpy stand-in for :func:`spmm`, for the tests."""
    n = len(indptr) - 1
    dense = np.zeros((n, n))
    rows = np.repeat(np.arange(n), np.diff(indptr))
    np.add.at(dense, (rows, cols), weights)
    return dense @ h


def symnmf(graph, rank: int, iterations: int = 300, seed: int = 0) -> np.ndarray:
    """H >= 0 (N, rank) with W ~ H H^T, by the damped multiplicative rule of Kuang et al.:
    H <- H * (1/2 + (W H) / (2 H H^T H)).  Seeded, so the same graph gives the same H."""
    indptr, cols, weights = graph
    n = len(indptr) - 1
    scale = np.sqrt(max(weights.sum() / n, EPS) / rank)
    h = np.random.default_rng(seed).uniform(0.5, 1.5, (n, rank)) * scale
    for _ in range(iterations):
        wh = spmm(indptr, cols, weights, h)
        h *= 0.5 + 0.5 * wh / np.maximum(h @ (h.T @ h), EPS)
    return h


def strongest(h: np.ndarray, m: int) -> np.ndarray:
    """int32 (N, m): per row, the m columns with the largest values, largest first."""
    order = np.argsort(-h, axis=1, kind="stable")[:, :m]
    return order.astype(np.int32)


# --- 3. lambdas ----------------------------------------------------------------------------------

def group_classes(groups: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the label column carried by most of its encryptions (ties: the lower column)."""
    votes = np.zeros((n_groups, labels.shape[1]))
    present = (labels > 0).astype(np.float64)
    for j in range(groups.shape[1]):
        np.add.at(votes, groups[:, j], present)
    return np.argmax(votes, axis=1)


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


def _design(groups, lam, mu, n_groups) -> np.ndarray:
    d = np.zeros((len(groups), n_groups + 1))
    for j in range(groups.shape[1]):
        np.add.at(d, (np.arange(len(groups)), groups[:, j]), lam[:, j])
    d[:, n_groups] = mu
    return d


def _solve(gram: np.ndarray, moments: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(gram, moments, rcond=None)[0]


def fit_images(y, groups, lam, mu, n_groups: int, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares images (n_groups, D) and public term (D,) for the model above (float64)."""
    gram = np.zeros((n_groups + 1, n_groups + 1))
    for a in range(0, len(y), rows):
        d = _design(groups[a : a + rows], lam[a : a + rows], mu[a : a + rows], n_groups)
        gram += d.T @ d
    solved = _solve(gram, _moments(y, groups, lam, mu, n_groups))
    return solved[:n_groups], solved[n_groups]


def fit_images_reference(y, groups, lam, mu, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense numpy stand-in for :func:`fit_images`, for the tests."""
    d = _design(groups, lam, mu, n_groups)
    solved = _solve(d.T @ d, d.T @ np.asarray(y, np.float64))
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
    count = 0
    for c in range(present.shape[0]):
        if present[c]:
            found = False
            for q in range(cur.shape[0]):
                if group_class[cur[q]] == c:
                    found = True
            if not found:
                return False
            count += 1
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


def reassign(y, images, public_term, groups, labels, group_class, mu, sweeps: int = 3, rows: int = 4096) -> np.ndarray:
    """Groups after iterated conditional modes on the fit (see :func:`_icm`); int32 (N, k_private)."""
    groups = np.array(groups, dtype=np.int32, copy=True)
    gram = images @ images.T
    p32 = images.astype(np.float32)
    lab = labels.astype(np.float64)
    present = labels > 0
    for a in range(0, len(y), rows):
        r = y[a : a + rows] - (mu[a : a + rows, None] * public_term[None, :]).astype(np.float32)
        corr = (r @ p32.T).astype(np.float64)
        block = groups[a : a + rows]
        _icm(corr, gram, present[a : a + rows], group_class, block, lab[a : a + rows], sweeps)
        groups[a : a + rows] = block
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
    match = np.full(n_private, -1)
    used = np.zeros(n_private, bool)
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        g, p = divmod(int(flat), n_private)
        if match[g] < 0 and not used[p]:
            match[g], used[p] = p, True
    mapped = np.sort(match[groups], axis=1)
    return float(np.mean(np.all(mapped == np.sort(truth, axis=1), axis=1)))


# --- the attack ----------------------------------------------------------------------------------

def graph_attack(release: PublicRelease, *, neighbours: int = 64, iterations: int = 100, rounds: int = 6,
                 rows: int = 4096, truth: np.ndarray | None = None, log=None) -> GraphResult:
    """Run steps 1-4 on a release's public files; ``truth`` (keys) only feeds ``log`` diagnostics."""
    p = release.params
    n, m = p.n_private, p.k_private
    labels = release.labels
    mu = np.maximum(1.0 - labels.astype(np.float64).sum(axis=1), 0.0)
    z = np.concatenate([gradients(magnitudes(block, p)) for block in release.encryption_blocks(rows)])
    index, sims = top_neighbours(unit_rows(z), neighbours)
    _log(log, "neighbours", truth, None, n)
    groups = strongest(symnmf(neighbour_graph(index, sims), n, iterations), m)
    _log(log, "grouping", truth, groups, n)
    for _ in range(rounds):
        group_class = group_classes(groups, labels, n)
        images, public_term = fit_images(z, groups, private_lambdas(groups, group_class, labels), mu, n, rows)
        moved = reassign(z, images, public_term, groups, labels, group_class, mu, rows=rows)
        _log(log, "refine", truth, moved, n)
        if np.array_equal(moved, groups):
            break
        groups = moved
    del z
    group_class = group_classes(groups, labels, n)
    lam = private_lambdas(groups, group_class, labels)
    gram = np.zeros((n + 1, n + 1))
    moments = np.zeros((n + 1, PIXELS))
    start = 0
    for block in release.encryption_blocks(rows):
        stop = start + len(block)
        d = _design(groups[start:stop], lam[start:stop], mu[start:stop], n)
        gram += d.T @ d
        moments += _moments(magnitudes(block, p), groups[start:stop], lam[start:stop], mu[start:stop], n)
        start = stop
    images = _solve(gram, moments)[:n]
    return GraphResult(groups, lam, images.astype(np.float32), group_class)


def _log(log, step, truth, groups, n) -> None:
    if log is not None:
        log(step, None if truth is None or groups is None else pair_accuracy(groups, truth, n))
