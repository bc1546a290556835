"""Half-normal variates that every implementation computes to the same bit (format version 2).

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

import math

import numpy as np
from numba import njit

__all__ = ["LN2", "SQRT2", "half_normals", "ln"]

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
