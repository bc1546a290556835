"""A release re-derived from docs/FORMAT.md alone (tests/spec.py), byte for byte, and the known
answers docs/known-answers.json publishes for other implementations."""

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from challenge.keystream import parse_seed
from challenge.params import Params
from generator.release import generate
from tests import spec
from tests.helpers import resized

KNOWN_ANSWERS = Path(__file__).parent.parent / "docs" / "known-answers.json"
CASES = {  # name -> (parameters, image shape, format version): every mode, both domains, a row of redraws,
    # grey and odd shapes (9 x 11 x 3 = 297 values: a sign row of 38 bytes whose last 7 bits are padding)
    "cross": (Params(n_private=12, per_image=3), (32, 32, 3), 3),
    "cross-v2": (Params(n_private=12, per_image=3), (32, 32, 3), 2),
    "inside": (Params(mode="inside", k=3, k_private=3, n_private=12, per_image=3, domain="positive"), (32, 32, 3), 3),
    "mixup-balanced": (Params(mode="mixup", k=4, k_private=1, c1=0.5, c2=0.2, n_private=20, per_image=2, balanced=True),
                       (32, 32, 3), 3),
    "grey-28x28": (Params(n_private=12, per_image=3), (28, 28, 1), 3),
    "odd-9x11": (Params(n_private=12, per_image=3, domain="positive"), (9, 11, 3), 3),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request, tmp_path_factory, private_set, public_bank):
    params, shape, version = CASES[request.param]
    private_set, public_bank = resized(private_set, shape), resized(public_bank, shape)
    out = tmp_path_factory.mktemp("conformance") / request.param
    generate(out, params, parse_seed(request.param, practice=True), private_set, public_bank, practice=True,
             format_version=version)
    return out, private_set, public_bank


def read_store(release: Path) -> tuple[dict, dict]:
    group = zarr.open_group(str(release / "secret" / "keys.zarr"), mode="r")
    arrays = {name: node[...] for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}
    return arrays, dict(group.attrs)


def test_a_release_is_what_the_spec_derives(built):
    release, private_set, public_bank = built
    manifest = json.loads((release / "public" / "manifest.json").read_text())
    arrays, attrs = read_store(release)
    params, shape = manifest["params"], spec.image_shape(manifest)
    n, per_image, k, kp = params["n_private"], params["per_image"], params["k"], params["k_private"]
    N = n * per_image
    public_fp = manifest["sources"]["public"]["fingerprint"] if manifest["sources"]["public"] else None
    key = spec.stream_key(bytes(arrays["seed"]), params, manifest["sources"]["private"]["fingerprint"], public_fp)

    selection = spec.select(key, private_set.labels, n, params["balanced"])
    assert np.array_equal(arrays["private/source_index"], selection)
    assert np.array_equal(arrays["private/images"], private_set.images[selection])

    order = spec.publication_order(key, N)
    bank = len(public_bank) if k > kp else 0
    drawn_patches = []
    for p in range(N):
        first = order[p] // per_image
        partners = spec.distinct(spec.words(spec.row(key, "partners", p, 8 * (kp - 1))), n, [first]) if kp > 1 else []
        assert list(arrays["encryption/private_index"][p]) == [first, *partners], p
        patches = spec.distinct(spec.words(spec.row(key, "public", p, 8 * (k - kp))), bank, []) if k > kp else []
        drawn_patches.append(patches)
        assert np.array_equal(arrays["encryption/lam"][p], spec.lambdas(key, params, p)), p
        signs = spec.sign_row(key, p, shape)
        if params["mode"] == "mixup":
            signs = bytes(len(signs))
        assert arrays["encryption/sign_bits"][p].tobytes() == signs, p
    used = sorted({i for row in drawn_patches for i in row})
    assert list(arrays["public/bank_index"]) == used
    for p, patches in enumerate(drawn_patches):
        assert [used[i] for i in arrays["encryption/public_index"][p]] == patches

    encryptions = np.load(release / "public" / "encryption.npy", allow_pickle=False)
    assert encryptions.shape == (N, *shape) and arrays["private/images"].shape == (n, *shape)
    labels = np.load(release / "public" / "label.npy", allow_pickle=False)
    classes = private_set.labels[selection]
    for p in range(N):
        images = [arrays["private/images"][i] for i in arrays["encryption/private_index"][p]]
        images += [arrays["public/images"][i] for i in arrays["encryption/public_index"][p]]
        expected = spec.encrypt(images, arrays["encryption/lam"][p], arrays["encryption/sign_bits"][p], params["domain"])
        assert encryptions[p].tobytes() == expected.tobytes(), p
        own = [int(classes[i]) for i in arrays["encryption/private_index"][p]]
        assert labels[p].tobytes() == spec.label_row(arrays["encryption/lam"][p], own, labels.shape[1]).tobytes(), p

    assert spec.commitment(arrays, attrs) == manifest["key_store"]["commitment"]


def known_answers() -> dict:
    """What docs/known-answers.json publishes, computed by the spec's implementation."""
    seed = bytes(range(32))
    params = Params(n_private=4, per_image=2).to_dict(2)
    private_fp, public_fp = "ab" * 32, "cd" * 32
    key = spec.stream_key(seed, params, private_fp, public_fp)
    streams = {purpose: spec.stream(key, purpose, 64).hex()
               for purpose in ("select", "order", "partners", "public", "lambda", "sign")}
    return {
        "about": "Known answers of docs/FORMAT.md section 7 (format version 2; version 3 below); tests/test_conformance.py recomputes them.",
        "seed": seed.hex(),
        "params": params,
        "sources": {"private": private_fp, "public": public_fp},
        "stream_key": key.hex(),
        "first_64_bytes_of_each_stream": streams,
        "lambda_rows_0_to_3": [[float(v) for v in spec.lambdas(key, params, p)] for p in range(4)],
        "ln": {str(x): spec.ln(x).hex() for x in (0.5, 0.1, 0.75, 1e-30)},
        "distinct_example": {"words": [2**64 - 1, 12345, 7], "bound": 10, "taken": [3],
                             "draws": spec.distinct([2**64 - 1, 12345, 7], 10, [3])},
        "feasibility_accepted_tries_of_the_defaults": spec.feasibility_accepted(params),
        "version_3": known_answers_v3(seed, private_fp, public_fp),
    }


def known_answers_v3(seed: bytes, private_fp: str, public_fp: str) -> dict:
    """Version 3 at an odd shape: image_shape in the key's context, sign rows with pad bits."""
    shape = (9, 11, 3)  # 297 values: 38-byte sign rows, the last 7 bits of each zero
    params = Params(n_private=4, per_image=2, image_shape=shape).to_dict(3)
    key = spec.stream_key(seed, params, private_fp, public_fp)
    return {
        "about": "The same seed and sources under format version 3, with image_shape 9 x 11 x 3.",
        "params": params,
        "stream_key": key.hex(),
        "sign_rows_0_to_2": [spec.sign_row(key, p, shape).hex() for p in range(3)],
        "lambda_rows_0_to_3": [[float(v) for v in spec.lambdas(key, params, p)] for p in range(4)],
    }


def test_known_answers_are_published():
    assert json.loads(KNOWN_ANSWERS.read_text()) == json.loads(json.dumps(known_answers()))


def test_the_tool_gives_the_known_answers():
    from challenge.keystream import keystream, stream_context, stream_key
    from challenge.lambdas import acceptance
    from challenge.keys import lambda_rows, sign_bits

    published = json.loads(KNOWN_ANSWERS.read_text())
    params = Params(**published["params"])
    key = stream_key(bytes.fromhex(published["seed"]),
                     stream_context(published["params"], published["sources"]["private"], published["sources"]["public"]), 2)
    assert key.hex() == published["stream_key"]
    for purpose, head in published["first_64_bytes_of_each_stream"].items():
        assert keystream(key, purpose, 0, 64).tobytes().hex() == head
    assert lambda_rows(key, params, 0, 4, 2).tolist() == published["lambda_rows_0_to_3"]
    assert acceptance(params.lambda_constraints) == published["feasibility_accepted_tries_of_the_defaults"]
    v3 = published["version_3"]
    params = Params(**v3["params"])
    key = stream_key(bytes.fromhex(published["seed"]),
                     stream_context(v3["params"], published["sources"]["private"], published["sources"]["public"]), 3)
    assert key.hex() == v3["stream_key"]
    assert [row.tobytes().hex() for row in sign_bits(key, 0, 3, params.image_shape)] == v3["sign_rows_0_to_2"]
    assert lambda_rows(key, params, 0, 4, 3).tolist() == v3["lambda_rows_0_to_3"]
    assert json.loads(KNOWN_ANSWERS.read_bytes().decode("ascii")) == published  # plain ASCII: one reading in any language
