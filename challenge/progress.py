"""A small progress bar on stderr, drawn only when stderr is a terminal (never in logs or CI)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress("encode", total) as bar: bar.advance(n)``."""

    def __init__(self, label: str, total: int, enabled: bool | None = None, stream=None):
        self.label, self.total, self.done = label, max(total, 1), 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
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
        bar = "#" * int(30 * share)
        self.stream.write(
            f"\r{self.label:>10} {share:4.0%} |{bar:<30}| {self.done}/{self.total} [{elapsed:5.1f}s<{eta:5.1f}s]"
        )
        self.stream.flush()
