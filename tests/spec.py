"""docs/FORMAT.md, versions 1 to 3, implemented a second time from its text alone, in plain numpy.

Nothing here imports the tool's key drawing, keystreams, encoder or writers: a stranger's
implementation would look like this, and ``tests/test_conformance.py`` checks that it re-derives a
release the tool wrote, byte for byte (every public file but the preview's compressed bytes, the
manifest, every ``zarr.json`` and the key store's values).  It favours obviousness over speed
(loops per row), so it is for small releases only.  Besides numpy it uses the standard primitives
the format names: ChaCha20 and HKDF-SHA256 from ``cryptography``, SHA-256 from ``hashlib``,
Python's ``json.dumps`` and ``math`` (the text rules of sections 4 and 5, version 1's Box-Muller),
and RFC 8785 canonical JSON (``challenge.canonical``, tested separately on the RFC's own vectors).
"""

from __future__ import annotations

import hashlib
import json
import math

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

def context(params: dict, private_fingerprint: str, public_fingerprint: str | None) -> dict:
    return {"params": params, "sources": {"private": private_fingerprint, "public": public_fingerprint}}


def stream_key(seed: bytes, params: dict, private_fingerprint: str, public_fingerprint: str | None,
               version: int = 2) -> bytes:
    if version == 1:
        return seed
    info = canonical_json(context(params, private_fingerprint, public_fingerprint))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"instahide-challenge-v2", info=info).derive(seed)


def stream(key: bytes, purpose: str, n_bytes: int, round_: int = 0) -> bytes:
    """The first ``n_bytes`` of a purpose's keystream: block counter 0, nonce = name + round."""
    nonce = purpose.encode("ascii").ljust(8, b"\0") + round_.to_bytes(4, "little")
    encryptor = Cipher(algorithms.ChaCha20(key, (0).to_bytes(4, "little") + nonce), mode=None).encryptor()
    return encryptor.update(bytes(n_bytes))


def row(key: bytes, purpose: str, r: int, b: int, round_: int = 0) -> bytes:
    return stream(key, purpose, b * (r + 1), round_)[b * r:]


PARAMS = ("mode", "k", "k_private", "c1", "c2", "n_private", "per_image", "domain", "balanced", "image_shape")


def params_dict(values: dict, version: int) -> dict:
    """Section 2's parameters in the table's order, as a release of ``version`` records them."""
    return {name: list(values[name]) if name == "image_shape" else values[name]
            for name in PARAMS if version >= 3 or name != "image_shape"}


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


# --- 7.6: seeds; 4: fingerprints ---------------------------------------------------------------

def seed_from_text(text: str, practice: bool) -> bytes:
    text = text.strip()
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        seed = bytes.fromhex(text)
        if not practice and hand_made(seed):
            raise ValueError("guessable seed")
        return seed
    if not practice:
        raise ValueError("not 64 hex digits")
    return hashlib.sha256(b"instahide-practice-seed\0" + text.encode("utf-8")).digest()


def hand_made(seed: bytes) -> bool:
    return len(set(seed)) < 17 or len({(b - a) % 256 for a, b in zip(seed, seed[1:])}) == 1


def fingerprint(images: np.ndarray, labels: np.ndarray | None) -> str:
    """Section 4: ``labels`` None for a patch set (-1 each)."""
    n = len(images)
    labels = np.full(n, -1) if labels is None else labels
    h = hashlib.sha256(b"instahide-imageset-v1\0")
    if images.shape[1:] != (32, 32, 3):
        h.update(b"shape\0" + b"".join(int(v).to_bytes(8, "little", signed=True) for v in images.shape[1:]))
    h.update(n.to_bytes(8, "little"))
    h.update(np.ascontiguousarray(images, np.uint8).tobytes())
    h.update(b"".join(int(v).to_bytes(8, "little", signed=True) for v in labels))
    return h.hexdigest()


# --- 9: the holdout split ------------------------------------------------------------------------

def holdout(seed: bytes, n: int, fraction: float) -> list[bool]:
    """True for the encryptions of the final part: word i of the ``holdout`` stream keyed by the seed."""
    return [w < int(fraction * 2**64) for w in words(stream(seed, "holdout", 8 * n))]


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


def box_muller(try_words: list[int], k: int) -> list[float]:
    """Version 1's step 1: one pair per two values, the platform's log, cos and sin."""
    z = []
    for i in range(-(-k // 2)):
        u1 = ((try_words[2 * i] >> 11) + 1) * 2.0**-53
        u2 = (try_words[2 * i + 1] >> 11) * 2.0**-53
        r, a = math.sqrt(-2.0 * math.log(u1)), 2.0 * math.pi * u2
        z += [abs(r * math.cos(a)), abs(r * math.sin(a))]
    return z[:k]


def lambda_try(try_words: list[int], k: int, k_private: int, c1: float, c2: float,
               version: int = 2) -> tuple[bool, np.ndarray | None]:
    z = box_muller(try_words, k) if version == 1 else half_normals(np.array(try_words, np.uint64), k)
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


def lambda_row_bytes(k: int, version: int = 2) -> int:
    return 8 * LAMBDA_TRIES * 2 * (-(-k // 2) + (0 if version == 1 else 3))


def lambdas(key: bytes, params: dict, p: int, version: int = 2, with_round: bool = False):
    """Row p's coefficients (and, ``with_round``, the round that gave them)."""
    k, kp, c1, c2 = params["k"], params["k_private"], float(params["c1"]), float(params["c2"])
    b = lambda_row_bytes(k, version)
    for round_ in range(MAX_ROUND + 1):
        w = words(row(key, "lambda", p, b, round_))
        per_try = len(w) // LAMBDA_TRIES
        for t in range(LAMBDA_TRIES):
            accepted, lam = lambda_try(w[t * per_try : (t + 1) * per_try], k, kp, c1, c2, version)
            if accepted:
                return (lam, round_) if with_round else lam
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

def commitment(arrays: dict[str, np.ndarray], attributes: dict, version: int = 2) -> str:
    if version == 1:
        h, text = hashlib.sha256(b"instahide-key-commitment-v1\0"), lambda x, sort=False: json.dumps(x, sort_keys=sort).encode()
    else:
        h, text = hashlib.sha256(b"instahide-key-commitment-v2\0"), lambda x, sort=False: canonical_json(x)
    for name in sorted(arrays, key=lambda n: n.encode("utf-8")):
        a = arrays[name]
        h.update(text([name, a.dtype.name, list(a.shape)]) + b"\0")
        h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    h.update(text(attributes, True))
    return "sha256:" + h.hexdigest()


def key_attributes(params: dict, version: int, class_names: list[str], private_source: dict,
                   public_source: dict | None, private_fingerprint: str, public_fingerprint: str | None) -> dict:
    """Section 5: the key store's group attributes, in their stored member order."""
    attributes = {"format": "instahide-keys", "format_version": version, "params": params, "class_names": class_names,
                  "private_source": private_source, "public_source": public_source}
    if version >= 2:
        attributes["stream_context"] = context(params, private_fingerprint, public_fingerprint)
    return attributes


# --- section 5: storage -------------------------------------------------------------------------

def key_chunk_rows(shape: tuple, dtype: str, version: int, filled_later: bool) -> int:
    """R for a key-store array; ``filled_later``: encryption/sign_bits (4096 in version 1)."""
    if version == 1 and filled_later:
        return 4096
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, min(shape[0], 4096, (16 << 20) // max(1, row_bytes)))


def public_chunk_rows(name: str, image_shape: tuple) -> int:
    if name == "label":
        return 4096
    return max(1, min(1024, (16 << 20) // (4 * image_shape[0] * image_shape[1] * image_shape[2])))


def zarr_group_json(attributes: dict) -> bytes:
    return json.dumps({"attributes": attributes, "zarr_format": 3, "node_type": "group"}, indent=2).encode()


def zarr_array_json(shape: tuple, dtype: str, rows: int, compressed: bool) -> bytes:
    codecs = [{"name": "bytes"} if dtype == "uint8" else {"name": "bytes", "configuration": {"endian": "little"}}]
    if compressed:
        codecs.append({"name": "zstd", "configuration": {"level": 0, "checksum": False}})
    meta = {
        "shape": list(shape), "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [rows, *shape[1:]]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0 if dtype.startswith("float") else 0, "codecs": codecs, "attributes": {},
        "zarr_format": 3, "node_type": "array", "storage_transformers": [],
    }
    return json.dumps(meta, indent=2).encode()


def zarr_chunk_files(array: np.ndarray, rows: int) -> dict[str, bytes]:
    """An uncompressed float32 array's chunk files: whole chunks, zeros past the last row."""
    tail = "/0" * (array.ndim - 1)
    out = {}
    for i in range(-(-len(array) // rows)):
        chunk = np.zeros((rows, *array.shape[1:]), "<f4")
        part = array[i * rows : (i + 1) * rows]
        chunk[: len(part)] = part
        out[f"c/{i}{tail}"] = chunk.tobytes()
    return out


# --- sections 1 and 4: the .npy files, the manifest, the preview ------------------------------------

def npy_bytes(array: np.ndarray) -> bytes:
    """Section 1: a float32 array as the .npy 1.0 file of a release."""
    shape = "(" + ", ".join(map(str, array.shape)) + ("," if array.ndim == 1 else "") + ")"
    h = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }" + " " * (21 - len(str(array.shape[0])))
    pad = 64 - (len(h) + 11) % 64
    header = h + " " * pad + "\n"
    return (b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("ascii")
            + np.ascontiguousarray(array, "<f4").tobytes())


SEED_NOTES = {True: "practice seed: guessable, anyone can replay every key",
              False: "256-bit seed from a CSPRNG or the maintainer; keys are drawn from ChaCha20 keystreams"}
PIXEL_DOMAINS = {
    "centered": {"name": "centered", "range": [-1.0, 1.0], "from_uint8": "u / 127.5 - 1",
                 "mask_hides": "signs of a centred mix: |encryption| does not reveal the mix"},
    "positive": {"name": "positive", "range": [0.0, 1.0], "from_uint8": "u / 255",
                 "mask_hides": "nothing: every mix is non-negative, so |encryption| equals the mix (InstaHide = Mixup)"},
}


def manifest_bytes(params: dict, version: int, generator_version: str, class_names: list[str], practice: bool,
                   sources: dict, commitment_: str, files: dict[str, str], image_shape: tuple) -> bytes:
    """Section 4: ``sources`` as the manifest's (fingerprint, images, notes per set, or None)."""
    n = params["n_private"] * params["per_image"]
    manifest = {
        "format": "instahide-challenge-release", "format_version": version,
        "generator": {"name": "instahide-challenge", "version": generator_version},
        "params": params, "n_encryptions": n, "class_names": class_names,
        "pixel_domain": PIXEL_DOMAINS[params["domain"]],
        "arrays": {"encryption.npy": {"dtype": "float32", "layout": "NHWC", "shape": [n, *image_shape]},
                   "label.npy": {"dtype": "float32", "shape": [n, len(class_names)]}},
        "seed": {"kind": "practice" if practice else "strong", "replayable": practice, "note": SEED_NOTES[practice]},
        "sources": sources,
        "key_store": {"commitment": commitment_,
                      "scheme": "instahide-key-commitment-v1" if version == 1 else "instahide-key-commitment-v2"},
        "files": files,
    }
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


def preview_layout(n: int, image_shape: tuple, version: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Section 1: the sheet's width, height and each tile's top-left corner (x, y)."""
    h, w = image_shape[0], image_shape[1]
    if version < 3:
        cell_w, cell_h, top, title_w = 2 * w, 2 * h, 0, 0
    else:
        title = f"encryption.npy, rows 0 to {n - 1} (first {n} encryptions)"
        cell_w, cell_h, top, title_w = max(2 * w, 6 * len(f"row {n - 1}")), 2 * h + 12, 14, 6 * len(title)
    rows = max(1, -(-n // 8))
    corners = [(2 + (i % 8) * (cell_w + 2), top + 2 + (i // 8) * (cell_h + 2)) for i in range(n)]
    return max(8 * (cell_w + 2) + 2, title_w + 4), top + rows * (cell_h + 2) + 2, corners


def preview_tile(encryption: np.ndarray, domain: str) -> np.ndarray:
    """uint8 (2H, 2W, 3): one encryption's tile."""
    lo, hi = PIXEL_DOMAINS[domain]["range"]
    u = np.clip(np.rint((encryption.astype(np.float64) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    u = np.broadcast_to(u, (*u.shape[:2], 3))
    return u.repeat(2, axis=0).repeat(2, axis=1)
