"""Format 3 at any image shape: the encoder, sign rows and parameters follow ``image_shape``, and a
release of each shape goes end to end on the command line (generate -> oracle scores 1 -> audit sound
-> reproduce identical -> inspect -> baselines and attacks scored -> leaderboard)."""

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import numba
import numpy as np
import pytest
from PIL import Image

from challenge import format as fmt
from challenge.domain import affine
from challenge.encoding import encode
from challenge.errors import UsageError
from challenge.geometry import check_image_shape, sign_bytes
from challenge.keys import draw_plan, sign_bits
from challenge.params import ParameterError, Params
from generator.release import generate
from commands.main import main as instahide_main
from commands.verify import main as verify_main
from tests.helpers import SEED, TINY, resized, run_cli
from tests.naive import encode_reference
from tests.test_loaders_shapes import write_folder, write_mnist
from tests.test_patches import make_public

SHAPES = [(28, 28, 1), (9, 11, 3), (32, 32, 3), (64, 64, 3)]


def test_sign_row_sizes_and_pad_bits():
    assert [sign_bytes(s) for s in SHAPES] == [98, 38, 384, 1536]
    rows = sign_bits(SEED, 5, 50, (9, 11, 3))  # 297 values: the last byte uses 1 bit
    assert rows.shape == (50, 38) and np.all(rows[:, -1] <= 1) and rows[:, -1].any()
    assert np.array_equal(rows[:, :-1], sign_bits(SEED, 5, 50, (11, 9, 3))[:, :-1])  # same stream, same row length


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["cross", "mixup"])
def test_encoder_equals_numpy_twin_and_ignores_threads_and_chunks(private_set, public_bank, shape, mode):
    params = Params(mode=mode, n_private=20, per_image=3, image_shape=shape)
    private, bank = resized(private_set, shape), resized(public_bank, shape)
    plan = draw_plan(SEED, params, labels=private.labels, bank_size=len(bank), version=3)
    N = params.n_encryptions
    signs = sign_bits(SEED, 0, N, shape) if params.masked else np.zeros((N, sign_bytes(shape)), np.uint8)
    truth = private.images[plan.selection]
    tables = (truth, bank.images, affine("centered"))
    keys = {"private_index": plan.private_index, "public_index": plan.public_bank_index, "lam": plan.lam, "sign_bits": signs}
    slow = encode_reference(*tables, *keys.values())
    threads = numba.get_num_threads()
    try:
        for n_threads, chunk in ((1, N), (min(2, numba.config.NUMBA_NUM_THREADS), 7)):
            numba.set_num_threads(n_threads)
            fast = np.concatenate([encode(*tables, **{name: a[i : i + chunk] for name, a in keys.items()})
                                   for i in range(0, N, chunk)])
            assert fast.shape == (N, *shape) and fast.tobytes() == slow.tobytes()
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("shape, message", [
    ((6, 32, 3), "height 6 is out of range .*SSIM's 7x7 window"),
    ((32, 5, 1), "width 5 is out of range"),
    ((32, 32, 2), "channels must be 1 .grey. or 3 .RGB."),
    ((513, 32, 3), "height 513 is out of range .7, 512."),
    ((32, 32), "three integers"),
    ((32.0, 32, 3), "three integers"),
    ((True, 32, 3), "three integers"),
])
def test_bad_image_shapes_are_named(shape, message):
    with pytest.raises(ValueError, match=message):
        check_image_shape(shape)
    with pytest.raises(ParameterError, match="image_shape: .*" + message):
        Params(image_shape=shape).validate()


def test_release_size_is_capped_whatever_the_shape():
    Params(n_private=1000, per_image=1000, image_shape=(224, 224, 3)).validate()
    with pytest.raises(ParameterError, match="values per release"):
        Params(n_private=10_000, per_image=1000, image_shape=(224, 224, 3)).validate()


def test_params_dict_of_older_versions_has_no_shape():
    params = Params(image_shape=(28, 28, 1))
    assert "image_shape" not in Params().to_dict(2) and Params().to_dict(2) == Params().to_dict(1)
    assert params.to_dict(3)["image_shape"] == [28, 28, 1]
    assert fmt.read_params(params.to_dict(3), "x", 3) == params
    with pytest.raises(fmt.FormatError, match="exactly the fields"):
        fmt.read_params(params.to_dict(3), "x", 2)
    with pytest.raises(fmt.FormatError, match=r"'image_shape' is \[28, 28\], expected \[height, width, channels\]"):
        fmt.read_params({**params.to_dict(3), "image_shape": [28, 28]}, "x", 3)
    with pytest.raises(fmt.FormatError, match="channels must be 1"):
        fmt.read_params({**params.to_dict(3), "image_shape": [28, 28, 4]}, "x", 3)


def test_key_store_chunks_hold_at_most_16_mib():
    assert fmt.chunk_rows(10**6, 3, False, 32 * 32 * 3) == 4096  # as versions 1 and 2
    assert fmt.chunk_rows(10**6, 3, False, 224 * 224 * 3) == 111
    assert fmt.chunk_rows(10**6, 3, False, 512 * 512 * 3) == 21


def test_shape_mismatches_and_old_versions_are_refused(tmp_path, private_set, public_bank):
    grey = resized(private_set, (28, 28, 1))
    with pytest.raises(UsageError, match="public patches are 32x32x3, the private images 28x28x1"):
        generate(tmp_path / "a", TINY, seed=SEED, private=grey, public=public_bank)
    with pytest.raises(UsageError, match="format version 2 holds only 32x32x3 images; the private images are 28x28x1"):
        generate(tmp_path / "b", TINY, seed=SEED, private=grey, public=resized(public_bank, (28, 28, 1)),
                 format_version=2)
    with pytest.raises(ParameterError, match="height 6 is out of range"):
        generate(tmp_path / "c", TINY, seed=SEED, private=resized(private_set, (6, 6, 3)),
                 public=resized(public_bank, (6, 6, 3)))
    assert not any(tmp_path.iterdir())


def cli(argv: list, main=instahide_main) -> SimpleNamespace:
    """A command run in this process (no interpreter start, compiled kernels reused): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


def _sources(shape, root, private_set, public_bank) -> tuple[list[str], list[str], list[str]]:
    """Source data of ``shape`` on disk as a user has it: (generate's, reproduce's and attack pool's options)."""
    if shape == (28, 28, 1):  # MNIST IDX files; a bank built at 28x28x1 from a photo folder, by generate and reproduce
        mnist = resized(private_set, shape)
        write_mnist(root / "mnist", mnist.images[:40, ..., 0], mnist.labels[:40])
        make_public(root / "photos", n=6)
        sources = ["--private", str(root / "mnist"), "--public", str(root / "photos")]
        return sources, sources, ["--pool", str(root / "mnist")]
    if shape == (64, 64, 3):  # an image folder at --size 64; a bank made at 64 by 'instahide patches'
        write_folder(root / "folder", 8)
        make_public(root / "photos", n=6)
        assert cli(["patches", root / "photos", "--out", root / "bank", "--size", 64]).code == 0
        sources = ["--private", str(root / "folder"), "--public", str(root / "bank")]
        return [*sources, "--size", "64"], sources, ["--pool", str(root / "folder")]
    if shape == (9, 11, 3):  # an odd shape from .npz files
        odd = resized(private_set, shape)
        np.savez(root / "private.npz", images=odd.images, labels=odd.labels, class_names=np.array(odd.class_names))
        np.savez(root / "public.npz", patches=resized(public_bank, shape).images)
        sources = ["--private", str(root / "private.npz"), "--public", str(root / "public.npz")]
        return sources, sources, ["--pool", str(root / "private.npz")]
    return [], [], []  # 32x32x3: the embedded data


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 3), (9, 11, 3)], ids=lambda shape: "x".join(map(str, shape)))
def test_end_to_end_on_the_command_line(tmp_path, private_set, public_bank, shape):
    """Every command a maintainer, a participant and an attacker runs, at each shape, from the data on disk."""
    generate_sources, reproduce_sources, pool = _sources(shape, tmp_path, private_set, public_bank)
    release, keys = tmp_path / "release", tmp_path / "release" / "secret" / "keys.zarr"
    made = cli(["generate", "--out", release, "--practice", "--seed", "e2e", "--n-private", 10, "--per-image", 2,
                *generate_sources, "--json"])
    assert made.code == 0, made.err
    manifest = json.loads(made.out)
    assert manifest["format_version"] == 3 and manifest["params"]["image_shape"] == list(shape)
    assert np.load(release / "public" / "encryption.npy").shape == (20, *shape)

    scoring = ["--keys", keys, "--release", release]
    for kind, who in (("oracle", scoring), ("blind", ["--release", release]), ("pairing", scoring)):
        assert cli(["baseline", kind, *who, "--out", tmp_path / kind]).code == 0
        assert np.load(tmp_path / kind / "decryption.npy").shape == (20, *shape)
    scored = cli([tmp_path / "oracle", *scoring, "--json"], verify_main)
    assert scored.code == 0, scored.err
    oracle = json.loads(scored.out)["scores"]
    assert oracle["Max_SSIM"] == 1.0 and oracle["Min_L2"] == 0.0

    assert cli(["audit", release]).code == 0
    reproduced = cli(["reproduce", release, *reproduce_sources])
    assert reproduced.code == 0 and reproduced.out.startswith("reproduced: identical"), reproduced.out + reproduced.err
    inspected = cli(["inspect", release, "--keys", keys, "--sheet", tmp_path / "sheet.png", "--json"])
    assert inspected.code == 0 and Image.open(tmp_path / "sheet.png").size > (2 * shape[1], shape[0])

    for attack, options in (("pool", pool), ("graph", [])):
        attacked = cli(["attack", attack, "--release", release, *options, "--out", tmp_path / attack, "--json"])
        assert attacked.code == 0, attacked.err
        assert cli([tmp_path / attack, *scoring], verify_main).code == 0
    board = cli(["leaderboard", *(tmp_path / s for s in ("oracle", "blind", "pairing", "pool", "graph")), *scoring,
                 "--out", tmp_path / "board", "--json"])
    assert board.code == 0, board.err
    assert (tmp_path / "board" / "leaderboard.html").is_file() and "oracle" in board.out

    tampered = np.load(release / "public" / "encryption.npy")
    tampered[3, 0, 0, 0] += 1
    np.save(release / "public" / "encryption.npy", tampered)
    differs = cli(["reproduce", release, *reproduce_sources])
    assert differs.code == 3 and "encryption.npy" in differs.out, differs.out + differs.err


def test_wrong_shape_submission_gets_a_hint(tmp_path, private_set, public_bank):
    shape = (28, 28, 1)
    release = tmp_path / "release"
    generate(release, Params(n_private=10, per_image=3), seed=SEED, private=resized(private_set, shape),
             public=resized(public_bank, shape),
             progress=False)
    for array, hint in ((np.zeros((30, 28, 28), np.float32), "no channel axis: add one with x.reshape(-1, 28, 28, 1)"),
                        (np.zeros((30, 784), np.float32), "flattened: reshape with x.reshape(-1, 28, 28, 1)"),
                        (np.zeros((29, 28, 28, 1), np.float32), "29 rows: one row per encryption is needed")):
        folder = tmp_path / f"sub{array.ndim}{array.shape[-1]}"
        folder.mkdir()
        np.save(folder / "decryption.npy", array)
        result = run_cli("--release", str(release), str(folder), module="commands.verify")
        assert result.returncode == 2 and hint in result.stdout + result.stderr, result.stdout + result.stderr


def test_generate_format_version_option(tmp_path):
    for version in (2, 3):
        out = tmp_path / f"v{version}"
        result = run_cli("generate", "--out", str(out), "--practice", "--seed", "kat", "--n-private", "20", "--per-image", "5",
                         "--format-version", str(version), "--json")
        assert result.returncode == 0, result.stderr
        manifest = fmt.read_json(out / "public" / "manifest.json")
        assert manifest["format_version"] == version and ("image_shape" in manifest["params"]) == (version == 3)
    result = run_cli("generate", "--out", str(tmp_path / "v4"), "--format-version", "4")
    assert result.returncode == 2 and "invalid choice: 4" in result.stderr


@pytest.mark.parametrize("shape", [(7, 7, 1), (28, 28, 1), (32, 32, 3), (64, 64, 1), (64, 64, 3), (224, 224, 3),
                                   (300, 509, 3), (512, 512, 3)])
def test_largest_release_of_any_shape_lists_no_more_chunk_files_than_the_manifest_cap_allows(shape):
    from challenge.format import ENCRYPTION_ZARR_ROWS, public_chunk_rows
    from challenge.params import MAX_ENCRYPTIONS, MAX_RELEASE_VALUES
    n = min(MAX_ENCRYPTIONS, MAX_RELEASE_VALUES // int(np.prod(shape)))
    assert -(-n // public_chunk_rows("encryption", shape)) <= -(-MAX_ENCRYPTIONS // ENCRYPTION_ZARR_ROWS)
    assert public_chunk_rows("encryption", shape) * 4 * np.prod(shape) <= fmt.MAX_CHUNK_BYTES
