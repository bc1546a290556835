"""Text from untrusted places (file names, submission metadata) made safe for any output."""

from __future__ import annotations

import os
import re

__all__ = ["printable"]

# Characters that must not reach a one-line output as they are: control characters (newlines,
# terminal escapes), bidirectional overrides (text that displays in another order than it reads)
# and surrogates (a file name's undecodable bytes, which no UTF-8 writer accepts).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text) -> str:
    """``text`` (or a path) as valid, one-line Unicode: what any output (terminal, JSON, Markdown,
    HTML, file name) can take.  Undecodable file-name bytes show as ``\\xff``, controls as escapes."""
    return _UNPRINTABLE.sub(_escape, os.fspath(text) if isinstance(text, os.PathLike) else str(text))
