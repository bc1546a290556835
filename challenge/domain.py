"""Pixel domains: how uint8 pixels become the numbers that InstaHide mixes and masks.

The domain decides what the sign mask can hide.  In the ``centered`` domain [-1, 1] a mix of
images has both signs and flipping signs destroys information.  In the ``positive`` domain
[0, 1] every mix is non-negative, so ``|encryption|`` *is* the mix: the mask hides nothing and
InstaHide collapses to Mixup.  The domain is therefore an explicit, recorded parameter.
"""

from __future__ import annotations

import numpy as np

DOMAINS = {
    # name: (value of uint8 0, value of uint8 255); u -> u / (255 / (hi - lo)) + lo
    "centered": (-1.0, 1.0),
    "positive": (0.0, 1.0),
}


def check_domain(name: str) -> str:
    if name not in DOMAINS:
        raise ValueError(f"unknown pixel domain {name!r}; expected one of {', '.join(DOMAINS)}")
    return name


def affine(name: str) -> tuple[float, float]:
    """``(scale, offset)`` with domain value = u / scale + offset for a uint8 pixel u."""
    lo, hi = DOMAINS[check_domain(name)]
    return 255.0 / (hi - lo), lo


UINT8_TO_CENTERED = np.arange(256, dtype=np.float64) / 127.5 - 1.0
"""float64 (256,): every uint8 pixel on the [-1, 1] scale of the scores (u / 127.5 - 1)."""


def describe(name: str) -> dict:
    """The manifest's record of a domain: its range, the uint8 rule and what the mask hides."""
    lo, hi = DOMAINS[check_domain(name)]
    rule = "u / 127.5 - 1" if name == "centered" else "u / 255"
    hides = (
        "signs of a centred mix: |encryption| does not reveal the mix"
        if name == "centered"
        else "nothing: every mix is non-negative, so |encryption| equals the mix (InstaHide = Mixup)"
    )
    return {"name": name, "range": [lo, hi], "from_uint8": rule, "mask_hides": hides}


def to_centered(x: np.ndarray, name: str) -> np.ndarray:
    """Map float values in domain ``name`` to the [-1, 1] scale used by every score."""
    lo, hi = DOMAINS[check_domain(name)]
    x = np.asarray(x, dtype=np.float64)
    return x if (lo, hi) == (-1.0, 1.0) else (x - lo) * (2.0 / (hi - lo)) - 1.0


def to_uint8(x: np.ndarray, name: str) -> np.ndarray:
    """Float values in domain ``name`` to displayable uint8 (clipped, rounded)."""
    lo, hi = DOMAINS[check_domain(name)]
    y = (np.asarray(x, dtype=np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)
