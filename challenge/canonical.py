"""Canonical JSON bytes (RFC 8785, the JSON Canonicalization Scheme): one byte string per value.

Whatever is hashed (the key-store commitment, the key-derivation context) must be byte-exact in
any language, so it cannot depend on Python's ``json.dumps`` options.  RFC 8785 is a published
standard with implementations in many languages:

* no white space; object members sorted by their names' UTF-16 code units;
* strings as ECMAScript's ``JSON.stringify`` writes them: ``"`` and ``\\`` escaped, control
  characters as ``\\b \\t \\n \\f \\r`` or ``\\u00xx``, everything else as UTF-8 (no ``\\u`` escapes);
* numbers as IEEE 754 doubles written by ECMAScript's ``Number.prototype.toString``: the shortest
  digits that read back to the same double, ``1.0`` as ``1``, ``1e21`` as ``1e+21``, ``1e-7`` as
  ``1e-7``, ``0.000001`` as ``0.000001``, ``-0`` as ``0``.

Reference: A. Rundgren, B. Jordan, S. Erdtman, "JSON Canonicalization Scheme (JCS)", RFC 8785,
2020, https://www.rfc-editor.org/rfc/rfc8785.
"""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = ["canonical_json", "number_text"]

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_MAX_EXACT_INT = 2**53


def canonical_json(value) -> bytes:
    """The RFC 8785 bytes of a JSON value (dict with str keys, list, tuple, str, int, float, bool, None).

    Raises ValueError for what JSON cannot carry exactly: NaN, infinities, integers beyond 2**53,
    strings that are not valid Unicode, non-string keys.
    """
    return _text(value).encode("utf-8")


def _text(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT_INT:
            raise ValueError(f"integer {value} is not exact as a JSON (IEEE double) number")
        return number_text(float(value))
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(item) for item in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("JSON object names must be strings")
        names = sorted(value, key=lambda name: name.encode("utf-16-be"))
        return "{" + ",".join(_string(name) + ":" + _text(value[name]) for name in names) + "}"
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def _string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"string {text!r} is not valid Unicode") from None
    return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " else c) for c in text) + '"'


def number_text(x: float) -> str:
    """ECMAScript ``Number.prototype.toString`` of a finite double (RFC 8785, section 3.2.2.3)."""
    if not math.isfinite(x):
        raise ValueError(f"{x} is not a JSON number")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + number_text(-x)
    sign, digits, exponent = Decimal(repr(x)).normalize().as_tuple()  # repr: shortest round-trip digits
    s = "".join(map(str, digits))
    k = len(s)
    n = k + exponent  # x = 0.s * 10^n
    if k <= n <= 21:
        return s + "0" * (n - k)
    if 0 < n <= 21:
        return s[:n] + "." + s[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + s
    mantissa = s if k == 1 else s[0] + "." + s[1:]
    return f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
