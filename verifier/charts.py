"""The strength report's charts, drawn with matplotlib (its Agg renderer, no pyplot state and no
display), as PNG bytes without a timestamp or software tag: same data and matplotlib, same bytes.

matplotlib is the optional ``report`` extra (``pip install 'instahide-challenge[report]'``): the
maintainer who runs ``instahide strength`` needs it, a participant who only verifies does not.
"""

from __future__ import annotations

import io

import numpy as np

from challenge.errors import UsageError
from verifier.baselines import FLOORS

__all__ = ["require_matplotlib", "ssim_against_floors", "sweep_chart"]

FLOOR_COLOUR, RECOVERED_COLOUR, OTHER_COLOUR = "#888888", "#22aa77", "#cc5533"


def require_matplotlib() -> None:
    """One line naming the missing extra, before any long run starts."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("the strength report draws its charts with matplotlib, which is not installed; "
                         "pip install 'instahide-challenge[report]'") from None


def _figure(width: float, height: float):
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def ssim_against_floors(panels: list[tuple[str, np.ndarray]], floor: np.ndarray, success: float) -> bytes:
    """One panel per attack: each private image's best SSIM under the attack (y) against the best
    the constant and mean floors reach on it (x).  Green: recovered above the floors (above the
    diagonal and above ``success``); grey: what a floor already matches; red: the rest."""
    figure = _figure(3.2 * len(panels), 3.4)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    values = np.concatenate([floor, *(best for _, best in panels)])
    lo = min(0.0, float(np.nanmin(values)) - 0.02)
    for ax, (name, best) in zip(axes, panels):
        recovered = (best > success) & (best > floor)
        trivial = ~recovered & (floor > success)
        rest = ~recovered & ~trivial
        ax.fill_between([success, 1], [success, 1], [1, 1], color=RECOVERED_COLOUR, alpha=0.08, linewidth=0)
        ax.fill_between([lo, success], [success, success], [1, 1], color=RECOVERED_COLOUR, alpha=0.08, linewidth=0)
        ax.plot([lo, 1], [lo, 1], color=FLOOR_COLOUR, linewidth=0.8)
        ax.axhline(success, color=FLOOR_COLOUR, linewidth=0.8, linestyle="--")
        for mask, colour in ((rest, OTHER_COLOUR), (trivial, FLOOR_COLOUR), (recovered, RECOVERED_COLOUR)):
            ax.scatter(floor[mask], best[mask], s=9, color=colour, linewidths=0)
        ax.set(xlim=(lo, 1), ylim=(lo, 1), aspect="equal", xlabel="best of the floors on the image",
               title=f"{name}: {int(recovered.sum())} of {len(best)} above")
        ax.title.set_fontsize(10)
    axes[0].set_ylabel("attack's best SSIM on the image")
    return _png(figure)


def sweep_chart(settings: list[str], attacks: list[str], share: np.ndarray, max_ssim: np.ndarray) -> bytes:
    """Grouped bars per setting (x), one colour per attack: left, its share of the private images
    recovered above the floors; right, its Max_SSIM (matrices settings x attacks; NaN, not measured,
    is left blank).  The floors recover nothing by definition: they appear on the right only."""
    figure = _figure(min(14.0, 3.0 + 0.5 * len(settings) * max(2, len(attacks))), 4.0)
    left, right = figure.subplots(1, 2)
    x = np.arange(len(settings))
    for ax, values, label, names in ((left, share, "share recovered above the floors", attacks),
                                     (right, max_ssim, "Max_SSIM", attacks)):
        shown = [j for j, name in enumerate(attacks) if ax is right or name not in FLOORS]
        width = 0.8 / max(1, len(shown))
        for place, j in enumerate(shown):
            ax.bar(x + (place - (len(shown) - 1) / 2) * width, values[:, j], width, label=names[j], color=f"C{j}")
        ax.set_xticks(x, settings, rotation=20, ha="right", fontsize=8)
        ax.set(ylim=(0, 1), ylabel=label)
    if attacks:
        right.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(figure)
