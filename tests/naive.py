"""Every plain-numpy twin a kernel is tested against, in one place (as stumpy's ``tests/naive.py``).

Each twin follows its definition literally, slow and obvious, and shares no code with the kernel it
checks; the kernels' tests compare the two.
"""

from __future__ import annotations

import math

import numpy as np

from tests import spec


# --- challenge.encoding ------------------------------------------------------------------------

def encode_reference(private_images, public_images, domain_affine, private_index, public_index, lam, sign_bits):
    """Plain numpy twin of :func:`challenge.encoding.encode`, slow and obvious."""
    rows, shape = len(lam), private_images.shape[1:]
    values = shape[0] * shape[1] * shape[2]
    scale, offset = domain_affine
    images = np.concatenate([private_images[private_index], public_images[public_index]], axis=1)
    weights = lam.astype(np.float64)
    acc = np.zeros((rows, values))
    lam_sum = np.zeros(rows)
    for j in range(lam.shape[1]):
        acc += weights[:, j, None] * images[:, j].reshape(rows, -1)
        lam_sum += weights[:, j]
    out = (acc / scale + offset * lam_sum[:, None]).astype(np.float32)
    signs = np.unpackbits(sign_bits, axis=1, bitorder="little")[:, :values].astype(bool)  # pad bits dropped
    out[signs] = -out[signs]
    return out.reshape(rows, *shape)


# --- challenge.keys ----------------------------------------------------------------------------

def lambda_reference(words, k, k_private, c1, c2, version):
    """Plain-Python twin of :func:`challenge.lambdas.draw_lambda`'s tries: the first accepted one.

    Version 2 is tests/spec.py's reading of FORMAT.md 7.5; version 1 drew |N(0,1)| by Box-Muller
    with the platform's log, cos and sin.
    """
    if version == 2:
        for try_words in words:
            accepted, lam = spec.lambda_try([int(w) for w in try_words], k, k_private, c1, c2)
            if accepted:
                return lam
        return None
    for try_words in words:
        z = []
        for i in range((k + 1) // 2):
            u1 = ((int(try_words[2 * i]) >> 11) + 1) * 2.0**-53
            u2 = (int(try_words[2 * i + 1]) >> 11) * 2.0**-53
            radius = math.sqrt(-2.0 * math.log(u1))
            z += [abs(radius * math.cos(2.0 * math.pi * u2)), abs(radius * math.sin(2.0 * math.pi * u2))]
        total = sum(z[:k])
        lam = np.array([z[j] / total for j in range(k)]).astype(np.float32)
        if float(lam.max()) <= c1 and sum(float(v) for v in lam[:k_private]) >= c2:
            return lam
    return None


# --- verifier.submission -----------------------------------------------------------------------

def tally_rows_reference(a: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy twin of :func:`verifier.submission._tally_rows`."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    outside = finite & ((a < lo) | (a > hi))
    counts = np.stack([(~finite).sum(axis=1), outside.sum(axis=1)], axis=1).astype(np.int64)
    extremes = np.stack([np.where(finite, a, np.inf).min(axis=1), np.where(finite, a, -np.inf).max(axis=1)], axis=1)
    return counts, extremes


# --- verifier.metrics and verifier.scoring -----------------------------------------------------

def ssim_reference(a, b) -> np.ndarray:
    """SSIM of a[i] vs b[i] (float (M, H, W, C), [-1, 1]) by the textbook route: pad, filter, crop."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    win, radius = 7, 3
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    cov_norm = 49 / 48

    def window_mean(img):
        # scipy's 'reflect' border (d c b a | a b c d | d c b a) is numpy's 'symmetric' padding.
        padded = np.pad(img, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="symmetric")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (win, win), axis=(1, 2))
        return windows.mean(axis=(-2, -1))  # (M, H, W, C): the full-size filtered map

    ux, uy = window_mean(a), window_mean(b)
    vx = cov_norm * (window_mean(a * a) - ux * ux)
    vy = cov_norm * (window_mean(b * b) - uy * uy)
    vxy = cov_norm * (window_mean(a * b) - ux * uy)
    s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    interior = s_map[:, radius:-radius, radius:-radius, :]
    return interior.mean(axis=(1, 2)).mean(axis=1)


def l2_reference(a, b) -> np.ndarray:
    """||a[i] - b[i]||_2 / sqrt(d), d = H*W*C, for float images (M, H, W, C)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.linalg.norm(diff.reshape(len(diff), -1), axis=1) / np.sqrt(np.prod(diff.shape[1:]))


def score_pairs_reference(recovered, private_images, private_index) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy twin of :func:`verifier.metrics.score_pairs` (same contract): an ``engine`` for ``score``."""
    index = np.asarray(private_index)
    rec = np.repeat(np.asarray(recovered, dtype=np.float64), index.shape[1], axis=0)
    truth = private_images[index.ravel()].astype(np.float64) / 127.5 - 1.0
    shape = index.shape
    return ssim_reference(rec, truth).reshape(shape), l2_reference(rec, truth).reshape(shape)


# --- attacks.pool ------------------------------------------------------------------------------

def pool_features_reference(images: np.ndarray, params) -> np.ndarray:
    """Twin of :func:`attacks.pool.pool_features`, from the definitions: uint8 pixels on the release's
    scale (FORMAT.md: [-1, 1] is u / 127.5 - 1, [0, 1] is u / 255), |x| unless mixup (no sign mask),
    the differences of vertical then horizontal neighbours, each row centred and scaled to unit norm."""
    x = images.astype(np.float32) / np.float32(127.5 if params.domain == "centered" else 255.0)
    if params.domain == "centered":
        x -= np.float32(1.0)
    if params.mode != "mixup":
        x = np.abs(x)
    n = len(x)
    f = np.concatenate([(x[:, 1:] - x[:, :-1]).reshape(n, -1), (x[:, :, 1:] - x[:, :, :-1]).reshape(n, -1)], axis=1)
    f -= f.mean(axis=1, keepdims=True)
    norm = np.sqrt((f * f).sum(axis=1, keepdims=True))
    return np.where(norm > 0, f / np.where(norm > 0, norm, 1), 0).astype(np.float32)


def best_candidates_reference(features: np.ndarray, pool, release) -> np.ndarray:
    """Twin of :func:`attacks.pool.best_candidates`: one dense product over the whole pool; where the
    pool's class names are the release's, a candidate only for the encryptions whose label has its class."""
    s = features @ pool_features_reference(pool.images, release.params).T
    if list(pool.class_names) == list(release.manifest.class_names or []) and len(pool.class_names):
        s[~(release.labels > 0)[:, pool.labels]] = -np.inf
    return np.argmax(s, axis=1)


# --- generator.patches -------------------------------------------------------------------------

def _blur_reference(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of a float32 image, reflect-101 border (numpy's 'reflect'): rows,
    then columns, each output summing its taps in order in float64, stored as float32."""
    r = len(kernel) // 2
    out = image
    for axis in (1, 0):
        padded = np.pad(out, [(r, r) if a == axis else (0, 0) for a in (0, 1)], mode="reflect").astype(np.float64)
        n = out.shape[axis]
        acc = np.zeros(out.shape)
        for j, weight in enumerate(kernel.astype(np.float64)):
            acc += weight * (padded[:, j : j + n] if axis == 1 else padded[j : j + n])
        out = acc.astype(np.float32)
    return out


def count_keypoints_reference(patches: np.ndarray, sigma: float = 1.6, input_blur: float = 0.5, layers: int = 3,
                              contrast: float = 0.04, edge: float = 10.0, border: int = 5, octaves: int = 3) -> np.ndarray:
    """Twin of :func:`generator.patches.count_keypoints`, from its docstring: grey level
    (0.299 R + 0.587 G + 0.114 B) / 255 (a grey patch's value / 255); 2x bilinear upsample (pixel centres aligned); blur to
    ``sigma`` assuming ``input_blur``; per octave ``layers + 3`` Gaussians by incremental blurs
    (kernel radius ceil(4 sigma)), their differences, and a keypoint at each 3x3x3 extremum with
    |D| >= contrast / layers, an edge ratio below ``edge`` and ``border`` px inside; the next
    octave starts from Gaussian ``layers``, subsampled by 2."""
    k = 2.0 ** (1.0 / layers)
    sigmas = [math.sqrt(sigma**2 - (2 * input_blur) ** 2)]
    sigmas += [sigma * k ** (i - 1) * math.sqrt(k * k - 1.0) for i in range(1, layers + 3)]
    kernels = []
    for s in sigmas:
        x = np.arange(-math.ceil(4 * s), math.ceil(4 * s) + 1, dtype=np.float64)
        g = np.exp(-0.5 * (x / s) ** 2)
        kernels.append((g / g.sum()).astype(np.float32))
    counts = []
    for patch in np.asarray(patches, dtype=np.uint8):
        rgb = patch.astype(np.float64)
        if patch.shape[2] == 1:  # a grey patch is its own grey level
            grey = (rgb[..., 0] / 255.0).astype(np.float32)
        else:
            grey = ((0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0).astype(np.float32)
        h0, w0 = grey.shape

        def taps(n0: int):
            s = np.maximum((np.arange(2 * n0) + 0.5) / 2.0 - 0.5, 0.0)
            lo = np.minimum(s.astype(np.int64), n0 - 1)
            return lo, np.minimum(lo + 1, n0 - 1), s - lo

        y0, y1, fy = taps(h0)
        x0, x1, fx = taps(w0)
        g = grey.astype(np.float64)
        top = g[y0][:, x0] * (1 - fx) + g[y0][:, x1] * fx
        bottom = g[y1][:, x0] * (1 - fx) + g[y1][:, x1] * fx
        current = _blur_reference((top * (1 - fy)[:, None] + bottom * fy[:, None]).astype(np.float32), kernels[0])
        count = 0
        for octave in range(octaves):
            if octave:
                current = current[::2, ::2]
            h, w = current.shape
            if h <= 2 * border or w <= 2 * border:
                break
            gauss = [current]
            for kernel in kernels[1:]:
                gauss.append(_blur_reference(gauss[-1], kernel))
            dog = np.stack([b - a for a, b in zip(gauss, gauss[1:])])
            for s in range(1, layers + 1):
                for y in range(border, h - border):
                    for x in range(border, w - border):
                        v = dog[s, y, x]
                        cube = dog[s - 1 : s + 2, y - 1 : y + 2, x - 1 : x + 2]
                        if abs(v) < contrast / layers or (v > 0 and cube.max() > v) or (v <= 0 and cube.min() < v):
                            continue
                        d = dog[s]
                        dxx = np.float64(d[y, x + 1] + d[y, x - 1]) - 2 * np.float64(v)
                        dyy = np.float64(d[y + 1, x] + d[y - 1, x]) - 2 * np.float64(v)
                        dxy = np.float64(d[y + 1, x + 1] - d[y + 1, x - 1] - d[y - 1, x + 1] + d[y - 1, x - 1]) / 4.0
                        det = dxx * dyy - dxy * dxy
                        if det > 0 and (dxx + dyy) ** 2 < (edge + 1.0) ** 2 / edge * det:
                            count += 1
            current = gauss[layers]
        counts.append(count)
    return np.array(counts, np.int32)


# --- attacks.graph -------------------------------------------------------------------------------

def gradients_reference(images) -> np.ndarray:
    """Twin of :func:`attacks.graph.gradients`, pixel by pixel: every vertical difference
    (row y+1 minus row y) in (y, x, c) order, then every horizontal one (column x+1 minus column x)."""
    a = np.asarray(images, np.float32)
    _, h, w, c = a.shape
    rows = []
    for image in a:
        vertical = [image[y + 1, x, ch] - image[y, x, ch] for y in range(h - 1) for x in range(w) for ch in range(c)]
        horizontal = [image[y, x + 1, ch] - image[y, x, ch] for y in range(h) for x in range(w - 1) for ch in range(c)]
        rows.append(vertical + horizontal)
    return np.array(rows, np.float32).reshape(len(a), (h - 1) * w * c + h * (w - 1) * c)


def best_groups_reference(y, images, public_term, labels, group_class, mu, k_private: int) -> np.ndarray:
    """What :func:`attacks.graph.reassign` looks for, by exhaustive search: per encryption, the set
    of ``k_private`` distinct groups covering exactly its label's classes (lambdas split equally
    within a class) with the smallest residual; int (N, k_private), each row sorted."""
    from itertools import combinations

    out = []
    for i in range(len(y)):
        present = set(np.flatnonzero(labels[i] > 0))
        best, best_cost = None, np.inf
        for groups in combinations(range(len(images)), k_private):
            classes = [int(group_class[g]) for g in groups]
            if set(classes) != present:
                continue
            fit = mu[i] * np.asarray(public_term, np.float64)
            for g, c in zip(groups, classes):
                fit = fit + labels[i, c] / classes.count(c) * images[g]
            cost = float(np.sum((np.asarray(y[i], np.float64) - fit) ** 2))
            if cost < best_cost:
                best, best_cost = groups, cost
        out.append(best)
    return np.array(out)


def centre_sums_reference(f, assign, k) -> np.ndarray:
    """Twin of :func:`attacks.graph.centre_sums`: the sum of the rows assigned to each centre."""
    out = np.zeros((k, f.shape[1]))
    np.add.at(out, assign, f.astype(np.float64))
    return out


def fit_images_reference(y, groups, lam, mu, n_groups: int, grey=None, chroma: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Twin of :func:`attacks.graph.fit_images`: dense least squares of y ~ D X, where row i of D
    holds lam_ij at column groups_ij (summed) and mu_i in the last column (the public term); in
    the first ``chroma`` columns of y the ``grey`` groups' columns of D are dropped (their images
    zero there)."""
    d = np.zeros((len(groups), n_groups + 1))
    for i in range(len(groups)):
        for j in range(groups.shape[1]):
            d[i, groups[i, j]] += lam[i, j]
        d[i, n_groups] = mu[i]
    y = np.asarray(y, np.float64)
    solved = np.linalg.lstsq(d, y, rcond=None)[0]
    if grey is not None:
        kept = np.flatnonzero(np.append(~grey, True))
        solved[:, :chroma] = 0.0
        solved[kept, :chroma] = np.linalg.lstsq(d[:, kept], y[:, :chroma], rcond=None)[0]
    return solved[:n_groups], solved[n_groups]


def gram_reference(groups, lam, mu, n_groups: int) -> np.ndarray:
    """Twin of :func:`attacks.graph._gram`: D^T D of the dense design of :func:`fit_images_reference`."""
    d = np.zeros((len(groups), n_groups + 1))
    for i in range(len(groups)):
        for j in range(groups.shape[1]):
            d[i, groups[i, j]] += lam[i, j]
        d[i, n_groups] = mu[i]
    return d.T @ d
