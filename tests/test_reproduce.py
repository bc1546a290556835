"""``instahide reproduce``: a pinned known-answer release, and each kind of difference reported."""

import json
import os
import shutil

import numba
import numpy as np
import pytest

from challenge import format as fmt
from commands.main import main
from challenge.errors import UsageError
from challenge.keystream import parse_seed
from generator.default_data import default_private, default_public
from generator.release import generate
from tests.helpers import TINY, manifest_json, resized, run_cli
from commands.release import reproduce, reproduce_from
from verifier.reproduce import open_published

TINY_ARGS = ["--n-private", "20", "--per-image", "5"]

# Every public file and the commitment of the practice release "kat" (20 x 5 encryptions of the
# embedded data), per format version.  A change here is a change of the algorithm, the format or a
# library's bytes: it must be deliberate (a new FORMAT_VERSION), never a side effect.  Version 1's
# digests were pinned when version 1 was current; they must never change.
KNOWN = {
    3: {
        "encryption.npy": "c1277caca4f26d5addf09cc61faf46fbc18dc820efc736fa08e677acd8402ff4",
        "label.npy": "3e3cdab8bad5250fcae787dd70891412d28c704b6705641c3eaf99708802c6fa",
        "manifest.json": "f3f6664cc9828bb7cf9c259854d16b9d62b2077483f2233bb91d94229b09d274",
        "preview.png": "0325b1bb58db8c8187c8c5c960832e43c299d50a5c32fea2f1a5132284f83e34",
        "public.zarr/encryption/c/0/0/0/0": "a3daccdf26354f7d0731c7996b98c7969c8c8c4c47ebb29cfa7074c2bb996b7b",
        "public.zarr/encryption/zarr.json": "061433f855f0b629da78a741bffb11385dfa09acd72f399c1e56efc6fcacef09",
        "public.zarr/label/c/0/0": "96b6653ce1e995580a8a8f333936957589e6f27faf1fbc7f5cc75ae2e18a31ae",
        "public.zarr/label/zarr.json": "56b8ad507976b4bbe0a8dc385c954ed2d5df07a2f48e7d1c2b84922d9b4d67ba",
        "public.zarr/zarr.json": "c5e54fdb0a5225db1f3447070678709d8f86d2f56467691dd126a5feec46f335",
        "commitment": "sha256:35aa38c63bfb2c3d38961e8ce58fa625b99b2240f59444c8e3f3193f216fb56a",
    },
    2: {
        "encryption.npy": "4eb0ae4e065163f460dbe04efcc146129bdd275a4082b8d889fcb5838b227872",
        "label.npy": "e906b58ae83155c8833048a7c3befb52cc6457f5cf870a04ce630fdbede28a8a",
        "manifest.json": "8ebc9dfab1c091dcd175d44cd01af0f15f9aae58bef3b0b56b8eebd50f31a5fb",
        "preview.png": "ab1adbf21435dbe315272d05c66ebf61e5fdbc62251343f9ef878754eed97f92",
        "public.zarr/encryption/c/0/0/0/0": "f124ce8e09b7c4988e2591d1c29393866488d51d90bf430a9f0e05b7652e0411",
        "public.zarr/encryption/zarr.json": "061433f855f0b629da78a741bffb11385dfa09acd72f399c1e56efc6fcacef09",
        "public.zarr/label/c/0/0": "286c7151731b2ec0751dee5d70b43f2ce6cfb065b267df28c1a61ff5b90b82ea",
        "public.zarr/label/zarr.json": "56b8ad507976b4bbe0a8dc385c954ed2d5df07a2f48e7d1c2b84922d9b4d67ba",
        "public.zarr/zarr.json": "cbf0d8084a57a6b8a59dd70fbfd05a60785c3ec7b50e1e9cd92cd45919ca6c9c",
        "commitment": "sha256:93b9b2df09c56a2ea4c12dc2f77d42e3e9008df59660d6da9298074bdc4865ce",
    },
    1: {
        "encryption.npy": "f65d8b61a8079fcb1126d2bf788c22fe0b616bef19a12d4874265199fb7d2d09",
        "label.npy": "3ba4506a24f5bdba92f33ca36ac211d0c90bc45ff58e5b7f1ed943e247ec65be",
        "manifest.json": "4500c0938ca2e5c68abf375e37b9e1f3e9883f74e847883b72d9857934b71fb6",
        "preview.png": "5a5f14196f920ace17a589cfaf8bbf16426e2afe96031fd55480abef8b08b025",
        "public.zarr/encryption/c/0/0/0/0": "f4c1e481a2fc71f7f4518ff9ce96795e4f8dab6bf3183ed6b01fc354558c0fa3",
        "public.zarr/encryption/zarr.json": "061433f855f0b629da78a741bffb11385dfa09acd72f399c1e56efc6fcacef09",
        "public.zarr/label/c/0/0": "796deee0c66dcb2c96cecf36217a0a333f4f321c8a780e6c8365e5f33576d695",
        "public.zarr/label/zarr.json": "56b8ad507976b4bbe0a8dc385c954ed2d5df07a2f48e7d1c2b84922d9b4d67ba",
        "public.zarr/zarr.json": "44fd836aaf44ed429ee4c58287b074a5e0369b528c6e2cacdb4ec3f8bb011c02",
        "commitment": "sha256:ea91a289403f86ab6be3148a13e7789b4c0d886b6d635d2ac7a8aad4c0c844b5",
    },
}


# The same practice release under version 3 at 28 x 28 x 1: the embedded images' red channel resized
# (tests/helpers.py's ``resized``).
KNOWN_GREY = {
    "encryption.npy": "7ee7ce831ec11f075e54295e5217b74d212050be39a6857a9666b80ef3817fdf",
    "label.npy": "2f19fedd2bf8bdf6c23c9defeecd73fa221b3d506326dd4af17b57dd6ad90a75",
    "manifest.json": "beaa936e4696801af35c88253e4831121eac34296b8e1f0132a7fed0eb08bb91",
    "preview.png": "3a6ff3edc81c243509e26a27f7268a45742dd075d6258688dc329d1d5229806d",
    "public.zarr/encryption/c/0/0/0/0": "4d1137bc72f54e4da1e34aeaf45b96643c52e4037a880ec80a2a54899e528245",
    "public.zarr/encryption/zarr.json": "f29abadf9c74eb17af06855db8e4234d67ea3cfb7912ba2799df8e60e5245470",
    "public.zarr/label/c/0/0": "2e9e83d402125e57ecb2256975daf6b8ab74c0231dd774a72c092202c8cdca33",
    "public.zarr/label/zarr.json": "56b8ad507976b4bbe0a8dc385c954ed2d5df07a2f48e7d1c2b84922d9b4d67ba",
    "public.zarr/zarr.json": "c5e54fdb0a5225db1f3447070678709d8f86d2f56467691dd126a5feec46f335",
    "commitment": "sha256:3a5294da5163ef2ef02405aaaea9d6716a42839fc0029cb26e36433b241bd14b",
}


def digests(release):
    public = release / "public"
    out = {name: fmt.sha256_file(public / name) for name in [*fmt.public_files(public), "manifest.json"]}
    out["commitment"] = fmt.read_json(public / "manifest.json")["key_store"]["commitment"]
    return out


@pytest.fixture
def release(tiny_release, tmp_path):
    return shutil.copytree(tiny_release, tmp_path / "release")


def keys(release):
    return release / "secret" / "keys.zarr"


def rehash(release):
    path = release / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    manifest["files"] = {name: fmt.sha256_file(release / "public" / name) for name in fmt.public_files(release / "public")}
    fmt.write_json(path, manifest)


def test_known_answer_release_on_any_thread_count_and_chunk(tmp_path):
    for threads, chunk in (("1", "7"), ("2", "4096")):
        out = tmp_path / f"kat-{threads}"
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        result = run_cli("generate", "--out", str(out), "--practice", "--seed", "kat", "--chunk", chunk, *TINY_ARGS, env=env)
        assert result.returncode == 0, result.stderr
        assert digests(out) == KNOWN[fmt.FORMAT_VERSION]
        assert fmt.read_json(out / "public" / "manifest.json")["seed"]["replayable"] is True
    result = run_cli("reproduce", str(out), env=dict(os.environ, NUMBA_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reproduced: identical (100 encryptions")


@pytest.mark.parametrize("version", [1, 2])
def test_older_versions_known_answers_still_come_out_and_reproduce(tmp_path, private_set, public_bank, version):
    out = tmp_path / f"kat-v{version}"
    generate(out, TINY, seed=parse_seed("kat", practice=True), private=private_set, public=public_bank, practice=True,
             format_version=version)
    assert digests(out) == KNOWN[version]
    _, differences = reproduce(out, keys(out))
    assert differences == []


def test_grey_known_answers_on_any_thread_count_and_chunk(tmp_path, private_set, public_bank):
    """28 x 28 x 1, version 3: the pinned bytes whatever the thread count and chunk; reproduce agrees."""
    grey = [resized(images, (28, 28, 1)) for images in (private_set, public_bank)]
    threads = numba.get_num_threads()
    try:
        for n_threads, chunk in ((1, 7), (min(2, numba.config.NUMBA_NUM_THREADS), 4096)):
            numba.set_num_threads(n_threads)
            out = tmp_path / f"grey-{n_threads}-{chunk}"
            generate(out, TINY, seed=parse_seed("kat", practice=True), private=grey[0], public=grey[1], practice=True,
                     chunk=chunk)
            assert digests(out) == KNOWN_GREY
    finally:
        numba.set_num_threads(threads)
    _, differences = reproduce_from(open_published(out, keys(out)), (grey[0], "grey"), (grey[1], "grey bank"))
    assert differences == []


def test_fresh_release_reproduces_and_leaves_nothing_behind(tiny_release, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    before = digests(tiny_release)
    _, differences = reproduce(tiny_release, keys(tiny_release), work=work)
    assert differences == []
    assert list(work.iterdir()) == [] and digests(tiny_release) == before


def test_changed_encryption_names_file_and_encryption(release):
    enc = np.load(release / "public" / "encryption.npy")
    enc[7, 3, 4, 2] = -enc[7, 3, 4, 2]
    np.save(release / "public" / "encryption.npy", enc)
    _, differences = reproduce(release, keys(release))
    assert differences[0].file == "public/encryption.npy" and "public/manifest.json lists" in differences[0].message
    rehash(release)
    _, differences = reproduce(release, keys(release))
    first = differences[0]
    assert (first.file, first.where) == ("public/encryption.npy", "encryption 7")
    assert first.message == "1 of 3072 values differ, first at (h, w, c) = (3, 4, 2)"


def test_changed_label_names_row_and_column(release):
    labels = np.load(release / "public" / "label.npy")
    column = int(np.flatnonzero(labels[4])[0])
    labels[4, column] += np.float32(0.125)
    np.save(release / "public" / "label.npy", labels)
    rehash(release)
    first = reproduce(release, keys(release))[1][0]
    assert (first.file, first.where) == ("public/label.npy", f"row 4, column {column}")


def test_changed_manifest_field_is_named(release):
    path = release / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    manifest["generator"]["version"] = "9.9.9"
    fmt.write_json(path, manifest)
    differences = reproduce(release, keys(release))[1]
    assert [(d.file, d.where) for d in differences] == [("public/manifest.json", "field generator.version")]
    assert differences[0].message == "release has '9.9.9', regenerated '0.1.0'"


@pytest.mark.parametrize("field, value", [("seed.note", "trust me"), ("pixel_domain.name", "positive"), ("class_names", [])])
def test_a_malformed_manifest_field_is_a_difference_too(release, field, value):
    """The manifest is read as far as it is well-formed (``Manifest.from_json`` with ``problems``):
    a field the format refuses is still regenerated and named, not a reason to stop."""
    path = release / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    *parents, last = field.split(".")
    target = manifest
    for key in parents:
        target = target[key]
    target[last] = value
    fmt.write_json(path, manifest)
    differences = reproduce(release, keys(release))[1]
    assert [(d.file, d.where) for d in differences] == [("public/manifest.json", f"field {field}")]


def test_key_store_of_another_seed(release, tmp_path, private_set, public_bank):
    generate(tmp_path / "other", TINY, seed=bytes(32), private=private_set, public=public_bank)
    shutil.rmtree(keys(release))
    shutil.copytree(keys(tmp_path / "other"), keys(release))
    published = manifest_json(release)["key_store"]["commitment"]
    other = fmt.commitment(fmt.open_key_store(keys(release)))
    with pytest.raises(UsageError, match="not this release's keys") as refused:  # not "differs": exit 2, before regenerating
        reproduce(release, keys(release))
    assert published in str(refused.value) and other in str(refused.value)


def test_different_data_is_refused_first(release, tmp_path, capsys):
    private = default_private()
    images = private.images.copy()
    images[0, 0, 0, 0] ^= 1
    np.savez(tmp_path / "private.npz", images=images, labels=private.labels, class_names=np.array(private.class_names))
    assert main(["reproduce", str(release), "--private", str(tmp_path / "private.npz")]) == 2
    error = capsys.readouterr().err
    assert "--private" in error and "different data" in error and "200 images" in error
    with pytest.raises(UsageError, match="fingerprint"):  # a corrupted fingerprint in the manifest: same verdict
        path = release / "public" / "manifest.json"
        manifest = fmt.read_json(path)
        manifest["sources"]["public"]["fingerprint"] = "0" * 64
        fmt.write_json(path, manifest)
        reproduce(release, keys(release))


def test_npz_sources_reproduce_like_the_embedded_data(tiny_release, tmp_path, capsys):
    private, public = default_private(), default_public()
    np.savez(tmp_path / "private.npz", images=private.images, labels=private.labels, class_names=np.array(private.class_names))
    np.savez(tmp_path / "public.npz", patches=public.images)
    argv = ["reproduce", str(tiny_release), "--private", str(tmp_path / "private.npz"),
            "--public", str(tmp_path / "public.npz"), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"identical": True, "differences": []}


def test_bad_input_exit_2(tiny_release, tmp_path, capsys):
    assert main(["reproduce", str(tmp_path)]) == 2
    assert main(["reproduce", str(tiny_release), "--public", str(tmp_path / "missing.npz")]) == 2
    assert main(["reproduce", str(tiny_release), "--work", str(tmp_path / "missing")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("instahide: error:") for line in errors)


def test_release_of_a_resized_grey_folder_reproduces_from_the_same_folder(tmp_path, capsys):
    """The shape comes from the manifest: reproduce needs no --size/--grey to reload a folder as generate did."""
    from tests.test_loaders_shapes import write_folder

    write_folder(tmp_path / "folder", 6)
    release = tmp_path / "release"
    assert main(["generate", "--out", str(release), "--practice", "--seed", "grey", "--private", str(tmp_path / "folder"),
                 "--size", "28", "--grey", "--mode", "inside", "--k", "2", "--n-private", "10", "--per-image", "2"]) == 0
    assert fmt.read_json(release / "public" / "manifest.json")["params"]["image_shape"] == [28, 28, 1]
    capsys.readouterr()
    assert main(["reproduce", str(release), "--private", str(tmp_path / "folder")]) == 0
    assert capsys.readouterr().out.startswith("reproduced: identical")
    labels = np.load(release / "public" / "label.npy")
    labels[4, 0] += 0.5
    np.save(release / "public" / "label.npy", labels)
    assert main(["reproduce", str(release), "--private", str(tmp_path / "folder")]) == 3
    assert capsys.readouterr().out.startswith("differs: public/label.npy")
