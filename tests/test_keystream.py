import numpy as np
import pytest

from challenge.keystream import (
    PURPOSES, chacha20_keystream, keystream, nonce, parse_seed, random_order, row_bytes, row_words, uniform_below,
)

SEED = bytes(range(32))


def test_rfc8439_block_function_vector():
    # RFC 8439 section 2.3.2: key 00..1f, nonce 000000090000004a00000000, block counter 1
    got = chacha20_keystream(bytes(range(32)), 1, bytes.fromhex("000000090000004a00000000"), 64)
    assert got.tobytes().hex() == (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
    )


def test_rfc8439_appendix_a1_vector():
    # RFC 8439 appendix A.1, test vector #1: all-zero key and nonce, counter 0
    got = chacha20_keystream(bytes(32), 0, bytes(12), 64)
    assert got.tobytes().hex() == (
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    )


def test_random_access_equals_one_contiguous_stream():
    whole = keystream(SEED, "sign", first_block=0, n_bytes=64 * 50)
    assert np.array_equal(keystream(SEED, "sign", first_block=7, n_bytes=64 * 3), whole[7 * 64 : 10 * 64])
    rows = row_bytes(SEED, "sign", first_row=0, n_rows=40, bytes_per_row=37)
    assert np.array_equal(row_bytes(SEED, "sign", first_row=13, n_rows=5, bytes_per_row=37), rows[13:18])
    words = row_words(SEED, "partners", first_row=0, n_rows=30, words_per_row=3)
    assert np.array_equal(row_words(SEED, "partners", first_row=11, n_rows=4, words_per_row=3), words[11:15])
    stream = keystream(SEED, "partners", first_block=0, n_bytes=720)
    assert np.array_equal(words.reshape(-1), np.frombuffer(stream.tobytes(), "<u8"))


def test_purposes_rounds_and_seeds_give_independent_streams():
    streams = {keystream(SEED, p, first_block=0, n_bytes=64).tobytes() for p in PURPOSES}
    streams.add(keystream(SEED, "lambda", first_block=0, n_bytes=64, round_=1).tobytes())
    streams.add(keystream(bytes(32), "lambda", first_block=0, n_bytes=64).tobytes())
    assert len(streams) == len(PURPOSES) + 2


def test_counter_overflow_is_refused():
    assert len(keystream(SEED, "sign", first_block=2**32 - 1, n_bytes=64)) == 64  # the last block of the 32-bit counter
    for first, n_bytes in ((2**32 - 1, 65), (2**32 - 1, 128), (2**32, 1), (-1, 64)):
        with pytest.raises(ValueError, match="32-bit counter"):
            keystream(SEED, "sign", first_block=first, n_bytes=n_bytes)


def test_nonce_is_the_purpose_padded_then_the_round():
    """FORMAT.md 7.2: the purpose's ASCII padded with zero bytes to 8, then the round, 4 bytes little-endian."""
    assert nonce("select") == b"select\0\0" + bytes(4)
    assert nonce("lambda", 258) == b"lambda\0\0" + bytes([2, 1, 0, 0])
    with pytest.raises(ValueError, match="unknown keystream purpose"):
        nonce("labels")


@pytest.mark.parametrize("hex_seed", [
    bytes((0xF0 + i) % 256 for i in range(32)).hex(),  # a run that wraps past ff
    bytes((0x10 - 3 * i) % 256 for i in range(32)).hex(),  # a falling run
    "00ff" * 16,  # two bytes, no constant step
    bytes(i % 16 for i in range(32)).hex(),  # 16 distinct bytes: one fewer than a fresh seed is bound to have
])
def test_hand_made_seeds_are_refused_without_practice(hex_seed):
    with pytest.raises(ValueError, match="guessable"):
        parse_seed(hex_seed, practice=False)
    assert parse_seed(hex_seed, practice=True) == bytes.fromhex(hex_seed)


def test_parse_seed():
    strong = "9e3b71c05fa2d846b1e07c3a5d92f4680ca7e1b53d6f082947bc1ea5603fd28b"
    assert parse_seed(strong, practice=False) == bytes.fromhex(strong)
    assert parse_seed("ab" * 32, practice=True) == bytes([0xAB] * 32)  # a repeated byte is guessable
    with pytest.raises(ValueError, match="only with practice=True"):
        parse_seed("42", practice=False)
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_seed("zz" * 32, practice=False)
    practice = parse_seed("42", practice=True)
    assert len(practice) == 32 and practice == parse_seed("42", practice=True) != parse_seed("43", practice=True)


def test_uniform_below_and_random_order():
    words = row_words(SEED, "select", first_row=0, n_rows=60_000, words_per_row=1)[:, 0]
    values = uniform_below(words, 6)
    counts = np.bincount(values, minlength=6)
    assert values.min() >= 0 and values.max() < 6
    assert np.all(np.abs(counts - 10_000) < 500)  # ~5 sigma
    order = random_order(SEED, "order", 1000)
    assert np.array_equal(np.sort(order), np.arange(1000)) and not np.array_equal(order, np.arange(1000))
