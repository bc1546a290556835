"""Mixing coefficients lambda (docs/FORMAT.md, section 7.5): tries, rounds and feasibility.

A *try* turns keystream words into k coefficients |z| / sum |z|, z ~ N(0, 1), rounded to float32,
and is accepted when ``max(lam) <= c1`` and the private lambdas sum to at least ``c2``.

Half-normal variates that every implementation computes to the same bit (format version 2).
Version 1 drew |N(0, 1)| by Box-Muller, which calls ``log``, ``cos`` and ``sin``: maths libraries
round their last bit differently, so another implementation could draw a different float32
lambda (rarely, but a format must not say "rarely").  Version 2 uses Marsaglia's polar method,
which needs no trigonometry, and a logarithm defined here by a fixed sequence of IEEE 754 double
operations (+, -, *, / and sqrt, each correctly rounded everywhere; no fused multiply-add), so
the result is the same on every machine and in every language:

``ln(x)`` for a positive normal double x:
    ``m, e = frexp(x)`` (x = m 2^e, m in [0.5, 1)), then ``m = 2 m, e = e - 1`` (m in [1, 2));
    if ``m > SQRT2`` (the double nearest sqrt 2): ``m = m / 2, e = e + 1``;
    ``t = (m - 1) / (m + 1)``, ``t2 = t * t``;
    ``p = 1 / 23``, then for j = 21, 19, ..., 3: ``p = p * t2 + 1 / j`` (each ``1 / j`` a
    correctly rounded double);
    ``ln(x) = e * LN2 + 2 * t * (p * t2 + 1)`` (e converted exactly; LN2 the double nearest ln 2),
    evaluated left to right.  This is the series ln m = 2 atanh(t), accurate to about 1e-16 for
    |t| <= 0.172.

The polar method on a pair of 64-bit words (a, b):
    ``u = (a >> 11) * 2^-52 - 1``, ``v = (b >> 11) * 2^-52 - 1`` (exact, in [-1, 1));
    ``s = u * u + v * v``; the pair is rejected when ``s >= 1`` or ``s == 0``;
    otherwise ``f = sqrt(-2 * ln(s) / s)`` and the pair gives ``|u * f|`` then ``|v * f|``.

Reference: G. Marsaglia, T. A. Bray, "A convenient method for generating normal variables",
SIAM Review 6(3), 260-264, 1964.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from numba import njit, prange

from challenge.errors import argument
from challenge.keystream import row_words

__all__ = ["LAMBDA_TRIES", "LN2", "MAX_ROUNDS", "SQRT2", "LambdaRejected", "acceptance", "draw_lambda",
           "half_normals", "ln", "words_per_try"]

LAMBDA_TRIES = 8  # tries per row and round; a row that rejects them all redraws in the next round
MAX_ROUNDS = 100_000  # rounds 0 .. 99,999; then the parameters are refused
FEASIBILITY_KEY = hashlib.sha256(b"instahide-feasibility-v2").digest()  # public: feasibility is no secret
FEASIBILITY_ROWS = 2500  # x LAMBDA_TRIES = 20,000 tries

LN2 = float.fromhex("0x1.62e42fefa39efp-1")
SQRT2 = float.fromhex("0x1.6a09e667f3bcdp+0")
_SERIES_TOP = 23  # last odd denominator of the atanh series


@njit(cache=True)
def ln(x):
    """Natural logarithm of a positive normal double, bit-exact as the module docstring defines."""
    m, e = math.frexp(x)
    m = 2.0 * m
    e = e - 1
    if m > SQRT2:
        m = m / 2.0
        e = e + 1
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    p = 1.0 / _SERIES_TOP
    for j in range(_SERIES_TOP - 2, 2, -2):
        p = p * t2 + 1.0 / j
    return e * LN2 + 2.0 * t * (p * t2 + 1.0)


@njit(cache=True)
def half_normals(words, out):
    """Fill ``out`` with |N(0, 1)| variates from word pairs of ``words`` by the polar method.

    Returns how many values were written: fewer than ``len(out)`` when the words ran out.
    """
    filled = 0
    for i in range(len(words) // 2):
        if filled == len(out):
            break
        u = np.float64(words[2 * i] >> np.uint64(11)) * 2.0**-52 - 1.0
        v = np.float64(words[2 * i + 1] >> np.uint64(11)) * 2.0**-52 - 1.0
        s = u * u + v * v
        if s >= 1.0 or s == 0.0:
            continue
        f = math.sqrt(-2.0 * ln(s) / s)
        out[filled] = abs(u * f)
        filled += 1
        if filled < len(out):
            out[filled] = abs(v * f)
            filled += 1
    return filled


class LambdaRejected(ValueError):
    """Every try of a row up to :data:`MAX_ROUNDS` was rejected: the constraints are too tight."""


def words_per_try(k: int, version: int) -> int:
    """Version 1: one word pair per two values (Box-Muller never rejects a pair); version 2: three
    spare pairs for the polar method's rejections (a pair is rejected with probability 1 - pi/4)."""
    pairs = (k + 1) // 2
    return 2 * pairs if version == 1 else 2 * (pairs + 3)


@njit(cache=True)
def _box_muller(words, z):
    """Version 1: |N(0,1)| by Box-Muller with the platform's log, cos and sin."""
    for i in range((len(z) + 1) // 2):
        u1 = ((words[2 * i] >> np.uint64(11)) + np.uint64(1)) * 2.0**-53
        u2 = (words[2 * i + 1] >> np.uint64(11)) * 2.0**-53
        radius = math.sqrt(-2.0 * math.log(u1))
        z[2 * i] = abs(radius * math.cos(2.0 * math.pi * u2))
        if 2 * i + 1 < len(z):
            z[2 * i + 1] = abs(radius * math.sin(2.0 * math.pi * u2))
    return len(z)


@njit(cache=True)
def _try(words, k, k_private, c1, c2, version, lam):
    """One try into ``lam`` (float32); whether the stored values meet max <= c1 and private sum >= c2."""
    z = np.empty(k)
    filled = _box_muller(words, z) if version == 1 else half_normals(words, z)
    if filled < k:
        return False
    total = 0.0
    for j in range(k):
        total += z[j]
    if total == 0.0:
        return False
    largest = 0.0
    private_sum = 0.0
    for j in range(k):
        lam[j] = np.float32(z[j] / total)
        largest = max(largest, np.float64(lam[j]))
        if j < k_private:
            private_sum += np.float64(lam[j])
    return largest <= c1 and private_sum >= c2


@njit(cache=True, parallel=True)
def _first_accepted(words, k, k_private, c1, c2, version, lam, accepted):
    """For each row of ``words`` (R, tries, words per try), the first of its tries that is accepted."""
    for r in prange(words.shape[0]):
        accepted[r] = False
        for t in range(words.shape[1]):
            if _try(words[r, t], k, k_private, c1, c2, version, lam[r]):
                accepted[r] = True
                break


@njit(cache=True, parallel=True)
def _count_accepted(words, k, k_private, c1, c2, version):
    """How many of the tries (rows of ``words``) are accepted."""
    ok = np.zeros(words.shape[0], np.int64)
    for t in prange(words.shape[0]):
        lam = np.empty(k, np.float32)
        ok[t] = _try(words[t], k, k_private, c1, c2, version, lam)
    return ok.sum()


def draw_lambda(key: bytes, constraints: tuple, *, first_row: int, n_rows: int, version: int) -> np.ndarray:
    """float32 (n_rows, k): the accepted coefficients of rows ``first_row ..``.

    ``constraints`` is ``(k, k_private, c1, c2)``.  Round 0 gives each row :data:`LAMBDA_TRIES`
    tries; a row that rejects them all takes the same row of round 1, 2, ... (nonce round number),
    so a row's lambda depends on nothing but its index.
    """
    k = constraints[0]
    per_try = words_per_try(k, version)
    lam = np.zeros((n_rows, k), np.float32)
    accepted = np.zeros(n_rows, np.bool_)
    words = row_words(key, "lambda", first_row=first_row, n_rows=n_rows, words_per_row=LAMBDA_TRIES * per_try)
    _first_accepted(words.reshape(n_rows, LAMBDA_TRIES, per_try), *constraints, version, lam, accepted)
    for r in np.flatnonzero(~accepted):
        for round_ in range(1, MAX_ROUNDS):
            words = row_words(key, "lambda", first_row=first_row + r, n_rows=1, words_per_row=LAMBDA_TRIES * per_try,
                              round_=round_)
            _first_accepted(words.reshape(1, LAMBDA_TRIES, per_try), *constraints, version, lam[r : r + 1], accepted[r : r + 1])
            if accepted[r]:
                break
        else:
            raise LambdaRejected(f"lambda constraints rejected every draw; loosen {argument('c1')} / {argument('c2')}")
    return lam


def acceptance(constraints: tuple) -> int:
    """Accepted tries out of 20,000 by the feasibility rule (FORMAT.md 7.7): version-2 tries read
    from rows 0 .. 2,499 of the lambda stream under a public key, so every install agrees."""
    per_try = words_per_try(constraints[0], 2)
    words = row_words(FEASIBILITY_KEY, "lambda", first_row=0, n_rows=FEASIBILITY_ROWS,
                      words_per_row=LAMBDA_TRIES * per_try)
    return int(_count_accepted(words.reshape(-1, per_try), *constraints, 2))
