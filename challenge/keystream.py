"""Secret randomness: ChaCha20 keystreams with random access, keyed by a 256-bit seed.

Why not ``np.random``: the 2020 release drew its secrets from ordinary seeded PRNGs, and an
attacker who tried all 2^32 seeds replayed the whole generation.  Here every secret choice is
read from a ChaCha20 keystream (RFC 8439, via the ``cryptography`` package) keyed by the
32-byte seed.  Each *purpose* (selection, order, partners, public patches, lambda, signs) has
its own 96-bit nonce, and each row of a purpose owns a fixed run of 64-byte blocks addressed by
the block counter, so any row can be drawn on its own: the bytes do not depend on thread count,
chunk size or the order in which rows are produced.

Nonce layout (12 bytes): the purpose name in ASCII, NUL-padded to 8 bytes, then the round
number as a little-endian uint32 (rounds > 0 exist only for lambda redraws).  The ``holdout``
purpose (the verifier's split of the encryptions, FORMAT.md 9) is keyed by the seed itself.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from challenge.canonical import canonical_json
from challenge.errors import argument

__all__ = ["BLOCK_BYTES", "KEY_SALT", "MIN_DISTINCT_SEED_BYTES", "PURPOSES", "SEED_BYTES",
           "chacha20_keystream", "fresh_seed", "keystream", "nonce", "parse_seed", "random_order",
           "row_bytes", "row_words", "stream_context", "stream_key", "uniform_below"]

SEED_BYTES = 32
BLOCK_BYTES = 64
PURPOSES = ("select", "order", "partners", "public", "lambda", "sign", "holdout")
_MAX_BLOCKS = 2**32  # the RFC 8439 block counter is 32 bits


def fresh_seed() -> bytes:
    """A new secret seed from the operating system's CSPRNG.

    Returns
    -------
    seed : bytes
        32 random bytes, for :func:`generator.generate`'s ``seed``.
    """
    return secrets.token_bytes(SEED_BYTES)


MIN_DISTINCT_SEED_BYTES = 17  # a uniform 32-byte seed has fewer with probability below 2^-50
_HEX_SEED = re.compile(r"[0-9a-fA-F]{%d}" % (2 * SEED_BYTES))


def parse_seed(text: str, *, practice: bool) -> bytes:
    """Turn seed text into a 32-byte key.

    Parameters
    ----------
    text : str
        64 hex digits, or (with ``practice``) any text.
    practice : bool
        Accept a guessable seed; the manifest then marks the release as replayable.

    Returns
    -------
    seed : bytes
        32 bytes, for :func:`generator.generate`'s ``seed``.

    Raises
    ------
    ValueError
        If ``text`` is not a strong seed and ``practice`` is false.

    Notes
    -----
    A strong seed is exactly 64 hex digits (surrounding whitespace ignored; ``bytes.fromhex``
    alone would skip inner spaces and give a shorter key) that do not look chosen by hand:
    at least :data:`MIN_DISTINCT_SEED_BYTES` distinct byte values (so no repeated byte and no
    pattern of up to 16 bytes written again) and not a run like ``00 01 02 ...``.  Any other
    text is accepted only for practice releases and is hashed into a key; such a seed can be
    guessed, which is how the 2020 release fell, so the manifest then marks the release as
    replayable.
    """
    text = text.strip()
    if _HEX_SEED.fullmatch(text):
        key = bytes.fromhex(text)
        if practice or not _looks_hand_made(key):
            return key
        raise ValueError(
            f"{argument('seed')} is 64 hex digits but guessable (too few distinct bytes, or a run like 00 01 02 ...); "
            f"use a fresh one (omit {argument('seed')}) or pass {argument('practice', True)} to mark the release as "
            "replayable"
        )
    if not practice:
        raise ValueError(
            f"{argument('seed')} must be exactly 64 hex digits (256 bits); a shorter, guessable seed is accepted "
            f"only with {argument('practice', True)}, which marks the release as replayable"
        )
    return hashlib.sha256(b"instahide-practice-seed\0" + text.encode()).digest()


def _looks_hand_made(key: bytes) -> bool:
    steps = {(b - a) % 256 for a, b in zip(key, key[1:])}
    return len(set(key)) < MIN_DISTINCT_SEED_BYTES or len(steps) == 1


KEY_SALT = b"instahide-challenge-v2"


def stream_context(params: dict, private_fingerprint: str, public_fingerprint: str | None) -> dict:
    """What a version-2 stream key is bound to: the parameters and the source data (FORMAT.md 7.1)."""
    return {"params": params, "sources": {"private": private_fingerprint, "public": public_fingerprint}}


def stream_key(seed: bytes, context: dict, version: int) -> bytes:
    """The ChaCha20 key of every stream of a release (FORMAT.md 7.1).

    Version 2 derives it by HKDF-SHA256 (RFC 5869) from the seed and the canonical JSON of
    :func:`stream_context`, so a seed used again for other parameters or data shares no stream
    (equal sign masks would cancel when two encryptions are multiplied).  Version 1 used the seed.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if version == 1:
        return seed
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=KEY_SALT, info=canonical_json(context)).derive(seed)


def nonce(purpose: str, round_: int = 0) -> bytes:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown keystream purpose {purpose!r}")
    return purpose.encode().ljust(8, b"\0") + int(round_).to_bytes(4, "little")


def chacha20_keystream(key: bytes, counter: int, nonce96: bytes, n_bytes: int) -> np.ndarray:
    """Raw RFC 8439 ChaCha20 keystream: ``n_bytes`` from block ``counter`` of (key, nonce)."""
    n_blocks = -(-n_bytes // BLOCK_BYTES)
    if counter < 0 or counter + n_blocks > _MAX_BLOCKS:
        raise ValueError(f"keystream block range {counter}+{n_blocks} exceeds the 32-bit counter")
    cipher = Cipher(algorithms.ChaCha20(key, int(counter).to_bytes(4, "little") + nonce96), mode=None)
    out = np.empty(n_bytes, dtype=np.uint8)
    if n_bytes:
        cipher.encryptor().update_into(np.zeros(n_bytes, dtype=np.uint8), out)
    return out


def keystream(seed: bytes, purpose: str, *, first_block: int, n_bytes: int, round_: int = 0) -> np.ndarray:
    """``n_bytes`` of the keystream for ``purpose`` (and lambda round) from block ``first_block``."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return chacha20_keystream(seed, first_block, nonce(purpose, round_), n_bytes)


def row_bytes(seed: bytes, purpose: str, *, first_row: int, n_rows: int, bytes_per_row: int,
              round_: int = 0) -> np.ndarray:
    """uint8 (n_rows, bytes_per_row): the keystream of ``purpose`` cut into packed rows.

    Row r owns bytes ``[bytes_per_row * r, bytes_per_row * (r + 1))`` of the stream, so any row is
    found from its index alone.
    """
    start = bytes_per_row * first_row
    skip = start % BLOCK_BYTES
    raw = keystream(seed, purpose, first_block=start // BLOCK_BYTES, n_bytes=skip + n_rows * bytes_per_row,
                    round_=round_)
    return raw[skip:].reshape(n_rows, bytes_per_row)


def row_words(seed: bytes, purpose: str, *, first_row: int, n_rows: int, words_per_row: int,
              round_: int = 0) -> np.ndarray:
    """Like :func:`row_bytes`, read as little-endian uint64 words: (n_rows, words_per_row)."""
    raw = row_bytes(seed, purpose, first_row=first_row, n_rows=n_rows, bytes_per_row=8 * words_per_row, round_=round_)
    return np.ascontiguousarray(raw).view("<u8").astype(np.uint64)


def uniform_below(words: np.ndarray, bound) -> np.ndarray:
    """Map uniform 64-bit words to integers in ``[0, bound)``; modulo bias < bound / 2^64."""
    return (words % np.asarray(bound, dtype=np.uint64)).astype(np.int64)


def random_order(seed: bytes, purpose: str, n: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)``: stable argsort of one 64-bit word per item."""
    return np.argsort(row_words(seed, purpose, first_row=0, n_rows=n, words_per_row=1)[:, 0], kind="stable")
