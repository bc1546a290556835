"""A release re-derived from docs/FORMAT.md alone (tests/spec.py), byte for byte, and the known
answers docs/known-answers.json publishes for other implementations."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from challenge.keystream import parse_seed
from challenge.params import Params
from generator.release import generate
from tests import spec
from tests.helpers import TINY, resized
from tests.test_reproduce import KNOWN, digests

KNOWN_ANSWERS = Path(__file__).parent.parent / "docs" / "known-answers.json"
CASES = {  # name -> (parameters, image shape, format version): every mode, both domains, a row of redraws,
    # grey and odd shapes (9 x 11 x 3 = 297 values: a sign row of 38 bytes whose last 7 bits are padding), versions 1-3
    "cross": (Params(n_private=12, per_image=3), (32, 32, 3), 3),
    "cross-v2": (Params(n_private=12, per_image=3), (32, 32, 3), 2),
    "cross-v1": (Params(n_private=12, per_image=3), (32, 32, 3), 1),
    "inside": (Params(mode="inside", k=3, k_private=3, n_private=12, per_image=3, domain="positive"), (32, 32, 3), 3),
    "mixup-balanced": (Params(mode="mixup", k=4, k_private=1, c1=0.5, c2=0.2, n_private=20, per_image=2, balanced=True),
                       (32, 32, 3), 3),
    "grey-28x28": (Params(n_private=12, per_image=3), (28, 28, 1), 3),
    "odd-9x11": (Params(n_private=12, per_image=3, domain="positive"), (9, 11, 3), 3),
    # tests/test_reproduce.py's pinned practice releases "kat" of every version, so that KNOWN is derived, not only pinned
    **{f"kat-v{version}": (TINY, (32, 32, 3), version) for version in (1, 2, 3)},
}


def seed_text(case: str) -> str:
    """The practice seed of a case: its name, "kat" for the pinned releases."""
    return "kat" if case.startswith("kat-") else case


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request, tmp_path_factory, private_set, public_bank):
    params, shape, version = CASES[request.param]
    private_set, public_bank = resized(private_set, shape), resized(public_bank, shape)
    out = tmp_path_factory.mktemp("conformance") / request.param
    generate(out, params, seed=parse_seed(seed_text(request.param), practice=True), private=private_set,
             public=public_bank, practice=True,
             format_version=version)
    return out, private_set, public_bank, params, version


def read_store(release: Path) -> tuple[dict, dict]:
    group = zarr.open_group(str(release / "secret" / "keys.zarr"), mode="r")
    arrays = {name: node[...] for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}
    return arrays, dict(group.attrs)


def source(images) -> dict:
    return {"files": list(images.source_files), "origin_columns": list(images.origin_columns)}


def test_a_release_is_what_the_spec_derives(built):
    """Every byte of public/ (but the preview's compressed bytes), every zarr.json and every value of
    the key store, derived by the spec from the inputs alone: the seed text, the parameters, the
    format version, the image sets and the generator's version."""
    release, private_set, public_bank, case_params, version = built
    published_manifest = json.loads((release / "public" / "manifest.json").read_text())
    seed = spec.seed_from_text(seed_text(release.name), practice=True)
    shape = private_set.image_shape
    params = spec.params_dict({**case_params.__dict__, "image_shape": shape}, version)
    n, per_image, k, kp = params["n_private"], params["per_image"], params["k"], params["k_private"]
    N = n * per_image
    private_fp = spec.fingerprint(private_set.images, private_set.labels)
    public_fp = spec.fingerprint(public_bank.images, None) if k > kp else None
    key = spec.stream_key(seed, params, private_fp, public_fp, version)

    selection = spec.select(key, private_set.labels, n, params["balanced"])
    order = spec.publication_order(key, N)
    bank = len(public_bank) if k > kp else 0
    private_index, drawn, lam, signs = [], [], [], []
    for p in range(N):
        first = order[p] // per_image
        partners = spec.distinct(spec.words(spec.row(key, "partners", p, 8 * (kp - 1))), n, [first]) if kp > 1 else []
        private_index.append([first, *partners])
        drawn.append(spec.distinct(spec.words(spec.row(key, "public", p, 8 * (k - kp))), bank, []) if k > kp else [])
        lam.append(spec.lambdas(key, params, p, version))
        row_signs = spec.sign_row(key, p, shape)
        signs.append(bytes(len(row_signs)) if params["mode"] == "mixup" else row_signs)
    used = sorted({i for row in drawn for i in row})
    derived = {
        "seed": np.frombuffer(seed, np.uint8),
        "private/images": private_set.images[selection],
        "private/labels": private_set.labels[selection].astype(np.int64),
        "private/source_index": selection,
        "private/origin": private_set.origin[selection].astype(np.int64),
        "public/images": public_bank.images[used] if used else np.zeros((0, *shape), np.uint8),
        "public/bank_index": np.array(used, np.int64),
        "public/origin": public_bank.origin[used].astype(np.int64) if used else np.zeros((0, 0), np.int64),
        "encryption/private_index": np.array(private_index, np.int32).reshape(N, kp),
        "encryption/public_index": np.array([[used.index(i) for i in row] for row in drawn], np.int32).reshape(N, k - kp),
        "encryption/lam": np.array(lam, np.float32),
        "encryption/sign_bits": np.frombuffer(b"".join(signs), np.uint8).reshape(N, -1),
    }
    attributes = spec.key_attributes(params, version, list(private_set.class_names), source(private_set),
                                     source(public_bank) if used else None, private_fp, public_fp)
    arrays, stored_attributes = read_store(release)
    assert set(arrays) == set(derived) and stored_attributes == attributes
    for name, array in derived.items():
        assert arrays[name].dtype == array.dtype and np.array_equal(arrays[name], array), name
    keys = release / "secret" / "keys.zarr"
    assert (keys / "zarr.json").read_bytes() == spec.zarr_group_json(attributes)
    for group in ("private", "public", "encryption"):
        assert (keys / group / "zarr.json").read_bytes() == spec.zarr_group_json({})
    for name, array in derived.items():
        rows = spec.key_chunk_rows(array.shape, array.dtype.name, version, name == "encryption/sign_bits")
        assert (keys / name / "zarr.json").read_bytes() == spec.zarr_array_json(array.shape, array.dtype.name, rows, True), name

    images = derived["private/images"]
    encryptions = np.zeros((N, *shape), np.float32)
    n_classes = len(private_set.class_names)
    labels = np.zeros((N, n_classes), np.float32)
    for p in range(N):
        mixed = [images[i] for i in private_index[p]] + [derived["public/images"][i] for i in derived["encryption/public_index"][p]]
        encryptions[p] = spec.encrypt(mixed, lam[p], derived["encryption/sign_bits"][p], params["domain"])
        labels[p] = spec.label_row(lam[p], [int(derived["private/labels"][i]) for i in private_index[p]], n_classes)
    public = {"encryption.npy": spec.npy_bytes(encryptions), "label.npy": spec.npy_bytes(labels)}
    zarr_attributes = {"format": "instahide-public", "format_version": version}
    public["public.zarr/zarr.json"] = spec.zarr_group_json(zarr_attributes)
    for name, array in (("encryption", encryptions), ("label", labels)):
        rows = spec.public_chunk_rows(name, shape)
        public[f"public.zarr/{name}/zarr.json"] = spec.zarr_array_json(array.shape, "float32", rows, False)
        public.update({f"public.zarr/{name}/{chunk}": data for chunk, data in spec.zarr_chunk_files(array, rows).items()})
    on_disk = sorted(p.relative_to(release / "public").as_posix() for p in (release / "public").rglob("*") if p.is_file())
    assert on_disk == sorted([*public, "preview.png", "manifest.json"])
    for name, data in public.items():
        assert (release / "public" / name).read_bytes() == data, name

    preview = release / "public" / "preview.png"
    width, height, corners = spec.preview_layout(min(N, 64), shape, version)
    with Image.open(preview) as picture:
        assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (width, height))
        pixels = np.asarray(picture)
    sheet = np.full_like(pixels, 255)
    for (x, y), encryption in zip(corners, encryptions):
        tile = spec.preview_tile(encryption, params["domain"])
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        assert np.array_equal(pixels[y : y + tile.shape[0], x : x + tile.shape[1]], tile)
    if version < 3:  # no text: every pixel is defined
        assert np.array_equal(pixels, sheet)

    files = {name: hashlib.sha256(data).hexdigest() for name, data in public.items()}
    files["preview.png"] = hashlib.sha256(preview.read_bytes()).hexdigest()
    sources = {"private": {"fingerprint": private_fp, "images": len(private_set), "notes": dict(private_set.notes)},
               "public": {"fingerprint": public_fp, "images": len(public_bank), "notes": dict(public_bank.notes)} if used else None}
    manifest = spec.manifest_bytes(params, version, published_manifest["generator"]["version"], list(private_set.class_names),
                                   True, sources, spec.commitment(derived, attributes, version), files, shape)
    assert (release / "public" / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize("built", ["kat-v1", "kat-v2", "kat-v3"], indirect=True)
def test_the_pinned_releases_are_the_ones_the_spec_derives(built):
    """With the test above (every byte but the preview's compressed ones), KNOWN of test_reproduce.py is
    re-derived from the text for versions 1 to 3, not only pinned."""
    release, *_, version = built
    assert digests(release) == KNOWN[version]


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
        "version_1": {
            "about": "Version 1 (7.1: the key is the seed; 7.5: Box-Muller tries of 2 ceil(k / 2) words), the same seed and params.",
            "stream_key": spec.stream_key(seed, params, private_fp, public_fp, 1).hex(),
            "lambda_rows_0_to_3": [[float(v) for v in spec.lambdas(seed, params, p, 1)] for p in range(4)],
        },
        "lambda_redraw": known_lambda_redraw(seed, private_fp, public_fp),
        "practice_seed": {"about": "7.6: the text is stripped, then hashed into the stored seed.",
                          "text": " tutorial\n", "seed": spec.seed_from_text(" tutorial\n", practice=True).hex()},
        "holdout": {"about": "Section 9: the holdout stream keyed by the seed above; final part where word i < int(F 2^64).",
                    "fraction": 0.25, "words_0_to_3": spec.words(spec.stream(seed, "holdout", 32)),
                    "final_0_to_15": spec.holdout(seed, 16, 0.25)},
        "worked_example": worked_example(seed),
    }


def known_lambda_redraw(seed: bytes, private_fp: str, public_fp: str) -> dict:
    """7.5: the first row whose 8 round-0 tries are all rejected (c2 = 0.6 accepts about 4 % of tries)."""
    params = Params(n_private=4, per_image=2, c2=0.6).to_dict(2)
    key = spec.stream_key(seed, params, private_fp, public_fp)
    p = next(p for p in range(100) if spec.lambdas(key, params, p, with_round=True)[1] > 0)
    lam, round_ = spec.lambdas(key, params, p, with_round=True)
    return {"about": "Format version 2, the seed and sources above, c2 = 0.6: row `row` is drawn in round `round`.",
            "params": params, "stream_key": key.hex(), "row": p, "round": round_, "lambda": [float(v) for v in lam]}


def example_sets() -> tuple[dict, dict]:
    """The inputs of the worked example: 6 private images and 5 patches of 9 x 11 x 3, pixels by formula."""
    t = np.arange(9 * 11 * 3)
    private = {"images": np.array([(37 * i + t) % 256 for i in range(6)], np.uint8).reshape(6, 9, 11, 3),
               "labels": np.arange(6, dtype=np.int64) % 3, "class_names": ["a", "b", "c"], "file": "private.npz"}
    public = {"images": np.array([(200 + 11 * j + 3 * t) % 256 for j in range(5)], np.uint8).reshape(5, 9, 11, 3),
              "file": "public.npz"}
    return private, public


def worked_example(seed: bytes) -> dict:
    """A whole version-3 release of 8 encryptions, from inputs given by formula, derived step by step."""
    private, public = example_sets()
    params = spec.params_dict({**Params(n_private=4, per_image=2).__dict__, "image_shape": (9, 11, 3)}, 3)
    private_fp, public_fp = spec.fingerprint(private["images"], private["labels"]), spec.fingerprint(public["images"], None)
    info = spec.canonical_json(spec.context(params, private_fp, public_fp))
    key = spec.stream_key(seed, params, private_fp, public_fp, 3)
    selection = spec.select(key, private["labels"], 4, False)
    order = spec.publication_order(key, 8)
    private_index = [[order[p] // 2, *spec.distinct(spec.words(spec.row(key, "partners", p, 8)), 4, [order[p] // 2])]
                     for p in range(8)]
    drawn = [spec.distinct(spec.words(spec.row(key, "public", p, 32)), 5, []) for p in range(8)]
    used = sorted({i for row in drawn for i in row})
    lam = [spec.lambdas(key, params, p) for p in range(8)]
    signs = [spec.sign_row(key, p, (9, 11, 3)) for p in range(8)]
    images = private["images"][selection]
    first = spec.encrypt([images[i] for i in private_index[0]] + [public["images"][i] for i in drawn[0]], lam[0],
                         np.frombuffer(signs[0], np.uint8), "centered")
    origin = lambda rows: np.stack([np.zeros(len(rows), np.int64), np.asarray(rows, np.int64)], axis=1)
    arrays = {
        "seed": np.frombuffer(seed, np.uint8), "private/images": images,
        "private/labels": private["labels"][selection], "private/source_index": selection,
        "private/origin": origin(selection), "public/images": public["images"][used],
        "public/bank_index": np.array(used, np.int64), "public/origin": origin(used),
        "encryption/private_index": np.array(private_index, np.int32),
        "encryption/public_index": np.array([[used.index(i) for i in row] for row in drawn], np.int32),
        "encryption/lam": np.array(lam, np.float32), "encryption/sign_bits": np.frombuffer(b"".join(signs), np.uint8).reshape(8, -1),
    }
    sources = {"files": [private["file"]], "origin_columns": ["file", "record"]}
    attributes = spec.key_attributes(params, 3, private["class_names"], sources,
                                     {"files": [public["file"]], "origin_columns": ["file", "record"]}, private_fp, public_fp)
    return {
        "about": ("A version-3 release of 4 x 2 encryptions under the seed above, practice; inputs (.npz rules of "
                  "section 4): private image i (i < 6) has the value (37 i + t) mod 256 at flat index t, label i mod 3, "
                  "class names a, b, c, file private.npz; patch j (j < 5) has (200 + 11 j + 3 t) mod 256, file public.npz."),
        "params": params,
        "fingerprints": {"private": private_fp, "public": public_fp},
        "hkdf_info": info.decode("ascii"),
        "stream_key": key.hex(),
        "private_source_index": selection.tolist(),
        "order": order,
        "private_index": private_index,
        "public_bank_draws": drawn,
        "public_bank_index": used,
        "lambda_row_0": [float(v) for v in lam[0]],
        "encryption_0_values_0_to_3": [float(v) for v in first.ravel()[:4]],
        "label_row_0": [float(v) for v in spec.label_row(lam[0], [int(arrays["private/labels"][i]) for i in private_index[0]], 3)],
        "commitment": spec.commitment(arrays, attributes, 3),
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


def test_the_tool_gives_the_version_1_redraw_seed_and_holdout_known_answers():
    from challenge.keys import lambda_rows
    from challenge.keystream import stream_context, stream_key
    from verifier.scoring import holdout_mask

    published = json.loads(KNOWN_ANSWERS.read_text())
    seed, sources = bytes.fromhex(published["seed"]), published["sources"]
    v1 = published["version_1"]
    key = stream_key(seed, stream_context(published["params"], sources["private"], sources["public"]), 1)
    assert key.hex() == v1["stream_key"]
    assert lambda_rows(key, Params(**published["params"]), first_row=0, n_rows=4,
                       version=1).tolist() == v1["lambda_rows_0_to_3"]
    redraw = published["lambda_redraw"]
    key = stream_key(seed, stream_context(redraw["params"], sources["private"], sources["public"]), 2)
    assert key.hex() == redraw["stream_key"]
    assert lambda_rows(key, Params(**redraw["params"]), first_row=redraw["row"], n_rows=1,
                       version=2).tolist() == [redraw["lambda"]]
    assert parse_seed(published["practice_seed"]["text"], practice=True).hex() == published["practice_seed"]["seed"]
    holdout = published["holdout"]
    assert holdout_mask(seed, 16, holdout["fraction"]).tolist() == holdout["final_0_to_15"]


def test_the_tool_writes_the_worked_example(tmp_path):
    from challenge.canonical import canonical_json
    from challenge.imageset import ImageSet
    from challenge.keystream import stream_context, stream_key

    published = json.loads(KNOWN_ANSWERS.read_text())
    example, seed = published["worked_example"], bytes.fromhex(published["seed"])
    private, public = example_sets()
    origin = lambda n: np.stack([np.zeros(n, np.int64), np.arange(n, dtype=np.int64)], axis=1)
    private_set = ImageSet(private["images"], labels=private["labels"], class_names=tuple(private["class_names"]),
                           source_files=(private["file"],), origin=origin(6))
    public_set = ImageSet(public["images"], labels=np.full(5, -1, np.int64), class_names=(),
                          source_files=(public["file"],), origin=origin(5))
    assert {"private": private_set.fingerprint(), "public": public_set.fingerprint()} == example["fingerprints"]
    context = stream_context(example["params"], *example["fingerprints"].values())
    assert canonical_json(context).decode() == example["hkdf_info"]
    assert stream_key(seed, context, 3).hex() == example["stream_key"]

    manifest = generate(tmp_path / "example", Params(n_private=4, per_image=2), seed=seed, private=private_set,
                        public=public_set, practice=True)
    assert manifest["params"] == example["params"] and manifest["key_store"]["commitment"] == example["commitment"]
    arrays, _ = read_store(tmp_path / "example")
    assert arrays["private/source_index"].tolist() == example["private_source_index"]
    assert arrays["encryption/private_index"].tolist() == example["private_index"]
    assert arrays["public/bank_index"].tolist() == example["public_bank_index"]
    assert [[example["public_bank_index"][i] for i in row] for row in arrays["encryption/public_index"]] == example["public_bank_draws"]
    assert arrays["encryption/lam"][0].tolist() == example["lambda_row_0"]
    encryptions = np.load(tmp_path / "example" / "public" / "encryption.npy")
    assert encryptions[0].ravel()[:4].tolist() == example["encryption_0_values_0_to_3"]
    assert np.load(tmp_path / "example" / "public" / "label.npy")[0].tolist() == example["label_row_0"]


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
        assert keystream(key, purpose, first_block=0, n_bytes=64).tobytes().hex() == head
    assert lambda_rows(key, params, first_row=0, n_rows=4, version=2).tolist() == published["lambda_rows_0_to_3"]
    assert acceptance(params.lambda_constraints) == published["feasibility_accepted_tries_of_the_defaults"]
    v3 = published["version_3"]
    params = Params(**v3["params"])
    key = stream_key(bytes.fromhex(published["seed"]),
                     stream_context(v3["params"], published["sources"]["private"], published["sources"]["public"]), 3)
    assert key.hex() == v3["stream_key"]
    assert [row.tobytes().hex() for row in sign_bits(key, 0, 3, params.image_shape)] == v3["sign_rows_0_to_2"]
    assert lambda_rows(key, params, first_row=0, n_rows=4, version=3).tolist() == v3["lambda_rows_0_to_3"]
    assert json.loads(KNOWN_ANSWERS.read_bytes().decode("ascii")) == published  # plain ASCII: one reading in any language
