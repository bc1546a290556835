"""challenge.canonical against RFC 8785's own examples and an independent check by parsing back."""

import json
import math
import struct

import numpy as np
import pytest

from challenge.canonical import canonical_json, number_text


@pytest.mark.parametrize("bits, text", [  # RFC 8785, appendix B (IEEE 754 hex -> expected text)
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
])
def test_rfc8785_numbers(bits, text):
    assert number_text(struct.unpack(">d", bytes.fromhex(bits))[0]) == text


def test_rfc8785_example_object():
    value = {"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
             "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"\u002f",
             "literals": [None, True, False]}
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert canonical_json(value) == expected.encode("utf-8")


def test_names_sorted_by_utf16_code_units():
    # U+FB33 sorts after U+1F600 in code points but before it in UTF-16 (a surrogate pair 0xD83D...)
    value = {"\U0001f600": 1, "\ufb33": 2, "a": 3, "\r": 4}
    assert canonical_json(value).decode() == '{"\\r":4,"a":3,"\U0001f600":1,"\ufb33":2}'


def test_round_trip_of_random_doubles():
    """Every text reads back to the same double."""
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000),
                             rng.integers(-2**53, 2**53, 200).astype(float)])
    for x in values:
        text = number_text(float(x))
        assert float(text) == x


@pytest.mark.parametrize("value", [math.nan, math.inf, 2**53 + 1, "\ud800", {1: 2}, object()])
def test_refused(value):
    with pytest.raises(ValueError):
        canonical_json(value)


def test_plain_values_match_json_dumps_compact():
    value = {"b": [1, 2.5, "x"], "a": {"d": None, "c": False}, "e": "caf\u00e9"}
    assert canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"),
                                               ensure_ascii=False).encode()
