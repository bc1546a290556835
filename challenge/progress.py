"""A small progress bar on stderr, drawn only when stderr is a terminal (never in logs, CI or pipes)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ["Progress", "human", "quiet"]

_quiet = False


@contextmanager
def quiet() -> Iterator[None]:
    """No bar drawn inside the block, terminal or not: a command's ``--json`` run, whose caller
    reads the result and not the progress."""
    global _quiet
    before, _quiet = _quiet, True
    try:
        yield
    finally:
        _quiet = before


def human(value: float) -> str:
    """``1234567`` -> ``"1.23M"``, ``123456`` -> ``"123k"``: rates and counts short enough for one terminal line."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(value) >= factor:
            value /= factor
            return f"{value:.3g}{suffix}" if abs(value) < 100 else f"{value:.0f}{suffix}"
    return f"{value:.3g}"


class Progress:
    """``with Progress("encode", total, unit="encryptions") as bar: bar.advance(n)``.

    Draws the share done, the count, elapsed time, the time left at the rate so far and that rate
    (``unit``/s; ``unit="B"`` shows bytes as kB/MB/GB). ``total`` may be raised while running, e.g.
    once a folder walk is complete.
    """

    def __init__(self, label: str, total: int, *, enabled: bool | None = None, stream=None, unit: str = "items"):
        self.label, self.total, self.done, self.unit = label, max(total, 1), 0, unit
        self.stream = stream or sys.stderr
        self.enabled = not _quiet and (self.stream.isatty() if enabled is None else enabled)
        self.start = time.monotonic()
        self._last_draw = 0.0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        share = min(self.done / self.total, 1.0)
        elapsed = now - self.start
        eta = elapsed / share - elapsed if share > 0 else 0.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        bar = "#" * int(30 * share)
        count = f"{human(self.done)}/{human(self.total)} {self.unit}" if self.unit == "B" else f"{self.done}/{self.total}"
        unit = "B" if self.unit == "B" else f" {self.unit}"
        self.stream.write(
            f"\r{self.label:>10} {share:4.0%} |{bar:<30}| {count} [{elapsed:5.1f}s<{eta:5.1f}s, {human(rate)}{unit}/s]"
        )
        self.stream.flush()
