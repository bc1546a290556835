"""docs/FORMAT.md, versions 2 and 3, implemented a second time from its text alone, in plain numpy.

Nothing here imports the tool's key drawing, keystreams or encoder: a stranger's implementation
would look like this, and ``tests/test_conformance.py`` checks that it re-derives a release the
tool wrote, byte for byte.  It favours obviousness over speed (loops per row), so it is for small
releases only.  Besides numpy it uses the standard primitives the format names: ChaCha20 and
HKDF-SHA256 from ``cryptography``, SHA-256 from ``hashlib``, and RFC 8785 canonical JSON
(``challenge.canonical``, tested separately on the RFC's own vectors).
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from challenge.canonical import canonical_json

LAMBDA_TRIES = 8
MAX_ROUND = 99_999
DOMAINS = {"centered": (127.5, -1.0), "positive": (255.0, 0.0)}  # section 3: (scale, offset)
LN2 = float.fromhex("0x1.62e42fefa39efp-1")
SQRT2 = float.fromhex("0x1.6a09e667f3bcdp+0")


# --- 7.1, 7.2: the key, the streams, rows and words ------------------------------------------

def stream_key(seed: bytes, params: dict, private_fingerprint: str, public_fingerprint: str | None) -> bytes:
    context = {"params": params, "sources": {"private": private_fingerprint, "public": public_fingerprint}}
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"instahide-challenge-v2", info=canonical_json(context))
    return hkdf.derive(seed)


def stream(key: bytes, purpose: str, n_bytes: int, round_: int = 0) -> bytes:
    """The first ``n_bytes`` of a purpose's keystream: block counter 0, nonce = name + round."""
    nonce = purpose.encode("ascii").ljust(8, b"\0") + round_.to_bytes(4, "little")
    encryptor = Cipher(algorithms.ChaCha20(key, (0).to_bytes(4, "little") + nonce), mode=None).encryptor()
    return encryptor.update(bytes(n_bytes))


def row(key: bytes, purpose: str, r: int, b: int, round_: int = 0) -> bytes:
    return stream(key, purpose, b * (r + 1), round_)[b * r:]


def image_shape(manifest: dict) -> tuple[int, int, int]:
    """Section 2: ``params.image_shape`` from version 3 on; versions 1 and 2 mean 32 x 32 x 3."""
    return tuple(manifest["params"]["image_shape"]) if manifest["format_version"] >= 3 else (32, 32, 3)


def sign_row(key: bytes, p: int, shape: tuple[int, int, int]) -> bytes:
    """Section 7.2: row p of the sign stream, ceil(H W C / 8) bytes, the pad bits past H W C set to 0."""
    values = shape[0] * shape[1] * shape[2]
    data = bytearray(row(key, "sign", p, -(-values // 8)))
    if values % 8:
        data[-1] &= (1 << (values % 8)) - 1
    return bytes(data)


def words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data), 8)]


# --- 7.3, 7.4: selection, order, distinct draws ------------------------------------------------

def selection_order(key: bytes, n_sources: int) -> list[int]:
    w = words(stream(key, "select", 8 * n_sources))
    return sorted(range(n_sources), key=lambda i: (w[i], i))


def select(key: bytes, labels: np.ndarray, n_private: int, balanced: bool) -> np.ndarray:
    order = selection_order(key, len(labels))
    if not balanced:
        return np.array(sorted(order[:n_private]), np.int64)
    classes = sorted(set(int(c) for c in labels))
    quota = n_private // len(classes)
    chosen = []
    for c in classes:
        chosen += [i for i in order if labels[i] == c][:quota]
    return np.array(sorted(chosen), np.int64)


def publication_order(key: bytes, n: int) -> list[int]:
    w = words(stream(key, "order", 8 * n))
    return sorted(range(n), key=lambda c: (w[c], c))


def distinct(draw_words: list[int], bound: int, taken: list[int]) -> list[int]:
    taken, out = list(taken), []
    for w in draw_words:
        j = w % (bound - len(taken))
        for tau in sorted(taken):
            if j >= tau:
                j += 1
        out.append(j)
        taken.append(j)
    return out


# --- 7.5: lambda ----------------------------------------------------------------------------

def ln(x):
    """The logarithm of section 7.5 (challenge/lambdas.py's rules), for a double or an array of them."""
    m, e = np.frexp(np.asarray(x, np.float64))
    m, e = 2.0 * m, e - 1
    high = m > SQRT2
    m, e = np.where(high, m / 2.0, m), np.where(high, e + 1, e)
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    p = np.full_like(t, 1.0 / 23)
    for j in range(21, 2, -2):
        p = p * t2 + 1.0 / j
    return e.astype(np.float64) * LN2 + 2.0 * t * (p * t2 + 1.0)


def half_normals(words: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` values of the polar method on the word pairs, in order (fewer if they run out)."""
    words = np.asarray(words, np.uint64)
    u = (words[0::2] >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0
    v = (words[1::2] >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0
    s = u * u + v * v
    ok = (s < 1.0) & (s != 0.0)
    u, v, s = u[ok], v[ok], s[ok]
    f = np.sqrt(-2.0 * ln(s) / s)
    return np.abs(np.stack([u * f, v * f], axis=1).ravel())[:count]


def lambda_try(try_words: list[int], k: int, k_private: int, c1: float, c2: float) -> tuple[bool, np.ndarray | None]:
    z = half_normals(np.array(try_words, np.uint64), k)
    if len(z) < k:
        return False, None
    total = 0.0
    for value in z:
        total += float(value)
    if total == 0.0:
        return False, None
    lam = np.array([np.float32(float(value) / total) for value in z], np.float32)
    private_sum = 0.0
    for j in range(k_private):
        private_sum += float(lam[j])
    return max(float(v) for v in lam) <= c1 and private_sum >= c2, lam


def lambda_row_bytes(k: int) -> int:
    return 8 * LAMBDA_TRIES * 2 * (-(-k // 2) + 3)


def lambdas(key: bytes, params: dict, p: int) -> np.ndarray:
    k, kp, c1, c2 = params["k"], params["k_private"], float(params["c1"]), float(params["c2"])
    b = lambda_row_bytes(k)
    for round_ in range(MAX_ROUND + 1):
        w = words(row(key, "lambda", p, b, round_))
        per_try = len(w) // LAMBDA_TRIES
        for t in range(LAMBDA_TRIES):
            accepted, lam = lambda_try(w[t * per_try : (t + 1) * per_try], k, kp, c1, c2)
            if accepted:
                return lam
    raise ValueError("parameters refused")


def feasibility_accepted(params: dict) -> int:
    """Section 7.7: accepted tries out of 20,000 (parameters need at least 20)."""
    key = hashlib.sha256(b"instahide-feasibility-v2").digest()
    k, kp, c1, c2 = params["k"], params["k_private"], float(params["c1"]), float(params["c2"])
    b = lambda_row_bytes(k)
    w = words(stream(key, "lambda", 2500 * b))
    per_try = b // 8 // LAMBDA_TRIES
    return sum(lambda_try(w[t * per_try : (t + 1) * per_try], k, kp, c1, c2)[0] for t in range(20_000))


# --- sections 3 and 4: encryptions and labels ------------------------------------------------

def encrypt(images: list[np.ndarray], lam: np.ndarray, sign_row: np.ndarray, domain: str) -> np.ndarray:
    """One encryption: images (private first) as uint8 (H, W, C), lam float32 (k,), sign bytes (ceil(H W C / 8),)."""
    scale, offset = DOMAINS[domain]
    acc = float(lam[0]) * images[0].ravel().astype(np.float64)
    lam_sum = float(lam[0])
    for j in range(1, len(images)):
        acc = acc + float(lam[j]) * images[j].ravel().astype(np.float64)
        lam_sum = lam_sum + float(lam[j])
    mix = (acc / scale + offset * lam_sum).astype(np.float32)
    negated = np.unpackbits(sign_row, bitorder="little")[: mix.size].astype(bool)
    mix[negated] = -mix[negated]
    return mix.reshape(images[0].shape)


def label_row(lam: np.ndarray, private_classes: list[int], n_classes: int) -> np.ndarray:
    out = np.zeros(n_classes, np.float64)
    for j, c in enumerate(private_classes):
        out[c] += float(lam[j])
    return out.astype(np.float32)


# --- section 6: the commitment -----------------------------------------------------------------

def commitment(arrays: dict[str, np.ndarray], attributes: dict) -> str:
    h = hashlib.sha256(b"instahide-key-commitment-v2\0")
    for name in sorted(arrays, key=lambda n: n.encode("utf-8")):
        a = arrays[name]
        h.update(canonical_json([name, a.dtype.name, list(a.shape)]) + b"\0")
        h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    h.update(canonical_json(attributes))
    return "sha256:" + h.hexdigest()
