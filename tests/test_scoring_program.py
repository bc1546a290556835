"""The bundle's scoring program (verifier/codabench/): plain numpy and the standard library, yet the
scores of ``verify`` to 1e-12 and the same published (rounded) scores on every image shape, the same
verdict on every submission, the commitment and the holdout split of the format; and it runs where
only numpy is installed, on Python 3.9 (checked by vermin, not by eye)."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from challenge import format as fmt
from challenge.keystream import chacha20_keystream, nonce as keystream_nonce
from challenge.params import Params
from challenge.manifest import Manifest
from challenge.submission import Expected, expected_from_params
from generator.release import generate
from tests.helpers import SEED, extra_module, manifest_json, resized
from tests.naive import score_pairs_reference
from tests.test_submission import BAD
from verifier import metrics
from verifier.baselines import write_baseline
from verifier.bundle import PROGRAM, PROGRAM_FILES, _write_reference
from verifier.scoring import headline, holdout_mask, published, score, selected_rows
from verifier.submission import validate

sys.path.insert(0, str(PROGRAM))  # as on the platform: score.py imports check_submission beside it
score_py = importlib.import_module("score")
check_py = importlib.import_module("check_submission")

SHAPES = [(7, 7, 1), (7, 9, 3), (9, 11, 3), (28, 28, 1), (32, 32, 3), (64, 48, 3), (512, 512, 1)]


def pairs(shape, n, rng):
    private = rng.integers(0, 256, (5, *shape), dtype=np.uint8)
    index = rng.integers(0, 5, (n, 2)).astype(np.int32)
    recovered = rng.uniform(-1, 1, (n, *shape))
    recovered[0] = private[index[0, 0]] / 127.5 - 1.0  # identical: SSIM exactly 1
    recovered[1] = np.clip(private[index[1, 1]] / 127.5 - 1.0 + rng.normal(0, 0.05, shape), -1, 1)
    recovered[2] = 0.3  # flat
    return recovered, private, index


@pytest.mark.parametrize("shape", SHAPES)
def test_metrics_equal_verifys_kernel_and_the_numpy_reference(shape):
    recovered, private, index = pairs(shape, 4 if shape[0] > 100 else 12, np.random.default_rng(sum(shape)))
    ssim, l2 = score_py.score_pairs(recovered, private, index)
    kernel_ssim, kernel_l2 = metrics.score_pairs(recovered, private, index)
    naive_ssim, naive_l2 = score_pairs_reference(recovered, private, index)
    assert np.abs(ssim - kernel_ssim).max() < 1e-12 and np.abs(l2 - kernel_l2).max() < 1e-12
    assert np.abs(ssim - naive_ssim).max() < 1e-12 and np.abs(l2 - naive_l2).max() < 1e-12
    assert ssim[0, 0] == 1.0 and l2[0, 0] == 0.0


@pytest.mark.parametrize("first_block, n_blocks", [(0, 1), (0, 37), (5, 3), (2**32 - 4, 4)])
def test_chacha20_equals_the_tools(first_block, n_blocks):
    key, nonce = bytes(range(32)), keystream_nonce("holdout")
    assert score_py.chacha20(key, nonce, first_block, n_blocks) == chacha20_keystream(
        key, first_block, nonce, 64 * n_blocks).tobytes()


@pytest.mark.parametrize("n, fraction", [(1, 0.5), (100, 0.3), (1001, 0.9), (2 * 2**18 + 13, 0.5)])
def test_holdout_split_equals_verifys(n, fraction):
    seed = bytes(range(3, 35))
    final = holdout_mask(seed, n, fraction)
    if final.any():
        assert np.array_equal(score_py.holdout_rows(seed, n, fraction, "final"), final)
    if (~final).any():
        assert np.array_equal(score_py.holdout_rows(seed, n, fraction, "public"), ~final)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_commitment_from_npy_files_equals_the_stores(tmp_path, private_set, public_bank, version):
    release = tmp_path / "release"
    generate(release, Params(n_private=20, per_image=3), seed=SEED, private=private_set, public=public_bank,
             format_version=version)
    store = fmt.open_key_store(release / "secret" / "keys.zarr")
    _write_reference(store, tmp_path / "ref")
    manifest = manifest_json(release)
    assert score_py.commitment(tmp_path / "ref", manifest["key_store"]["scheme"]) == manifest["key_store"]["commitment"]


# --- the same scores as verify ---------------------------------------------------------------------

RELEASES = [((28, 28, 1), "centered"), ((9, 11, 3), "positive"), ((7, 7, 3), "centered"), ((32, 32, 3), "centered"),
            ((512, 512, 1), "centered")]


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: f"{'x'.join(map(str, r[0]))}-{r[1]}")
def shaped(request, tmp_path_factory, private_set, public_bank):
    """A small release of one shape, its key store, and the program's input folder (reference data as shipped)."""
    shape, domain = request.param
    root = tmp_path_factory.mktemp("shaped")
    per_image = 1 if shape[0] > 100 else 3
    params = Params(n_private=20, per_image=per_image, image_shape=shape, domain=domain)
    generate(root / "release", params, seed=SEED, private=resized(private_set, shape),
             public=resized(public_bank, shape))
    store = fmt.open_key_store(root / "release" / "secret" / "keys.zarr")
    _write_reference(store, root / "input" / "ref")
    return root, store, expected_from_params(Manifest.read(root / "release").params)


def submissions(root: Path, store, expected: Expected):
    """Submissions in every dtype the format takes: the ground truth (uint8), blind (float32), noise in float64
    and big-endian float32, one image off."""
    write_baseline("oracle", root / "oracle", expected, store=store, force=True)
    write_baseline("blind", root / "blind", expected, release=root / "release", force=True)
    rng = np.random.default_rng(1)
    lo, hi = expected.value_range
    for name, array in (("noise64", rng.uniform(lo, hi, expected.shape)),
                        ("noise-be", rng.uniform(lo, hi, expected.shape).astype(">f4"))):
        (root / name).mkdir(exist_ok=True)
        np.save(root / name / "decryption.npy", array)
    return ["oracle", "blind", "noise64", "noise-be"]


def test_the_program_and_the_spec_publish_the_scores_of_METRICS():
    """A row added to verifier.scoring.METRICS is added to the numpy-only program and to FORMAT.md
    section 9 too (CONTRIBUTING.md, "Adding a metric"): neither can read the table."""
    assert score_py.HEADLINE == headline()
    spec = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    section = spec[spec.index("## 9. Scores"):]
    section = section[: section.find("\n## ")] if "\n## " in section else section
    assert re.findall(r"^\| `(\w+)` +\|", section, flags=re.M) == list(headline())


@pytest.mark.parametrize("holdout", [None, 0.4])
def test_scores_equal_verifys_on_every_shape(shaped, holdout):
    root, store, expected = shaped
    manifest = root / "release" / "public" / "manifest.json"
    for name in submissions(root, store, expected):
        res = root / "input" / "res"
        if res.is_symlink():
            res.unlink()
        res.symlink_to(root / name)
        parts = ("public", "final") if holdout is not None else ("public",)
        for part in parts:
            mine = score_py.evaluate(root / "input", manifest, holdout, part)
            validation, theirs = score(root / name, store, expected=expected,
                                       selected=selected_rows(store, holdout, part))
            assert validation.valid
            for key, value in mine.items():
                assert abs(value - theirs.summary[key]) <= 1e-12, (name, part, key)
                assert round(value, 4) == published(theirs.summary[key]), (name, part, key)


# --- the same verdict as verify without keys --------------------------------------------------------

def verdict_of_check_submission(folder: Path, release: Path, capsys) -> tuple[bool, str]:
    code = check_py.main([str(folder), str(release / "public")])
    err = capsys.readouterr().err
    assert code in (0, 2)
    return code == 0, err


def hostile(tmp_path: Path) -> dict[str, Path]:
    """Submissions that try to hang, exhaust or trick a reader (valid ones at the end)."""
    cases = {}

    def folder(name):
        cases[name] = tmp_path / name
        cases[name].mkdir(parents=True)
        return cases[name]

    os.mkfifo(folder("fifo") / "decryption.npy")
    os.symlink("/dev/zero", folder("device") / "decryption.npy")
    import io
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 32, 32, 3)})
    (folder("huge-header") / "decryption.npy").write_bytes(header.getvalue())
    (folder("records") / "decryption.npy").write_bytes(
        b"\x93NUMPY\x01\x00" + b"v\x00{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (100, 32, 32, 3), }"
        .ljust(118) + b"\n")
    (folder("metadata-deep") / "metadata.json").write_text("[" * 100 + "]" * 100)
    np.save(cases["metadata-deep"] / "decryption.npy", np.zeros((100, 32, 32, 3), np.uint8))
    (folder("metadata-surrogate") / "metadata.json").write_text('{"team": "\\ud800"}')
    np.save(cases["metadata-surrogate"] / "decryption.npy", np.zeros((100, 32, 32, 3), np.uint8))
    (folder("metadata-utc") / "metadata.json").write_text('{"date": "2020-11-01T10:00:00Z"}')
    np.save(cases["metadata-utc"] / "decryption.npy", np.zeros((100, 32, 32, 3), np.uint8))
    np.save(folder("valid-uint8") / "decryption.npy", np.zeros((100, 32, 32, 3), np.uint8))
    np.save(folder("valid-edge") / "decryption.npy", np.full((100, 32, 32, 3), 1.002, np.float32))
    np.save(folder("invalid-edge") / "decryption.npy", np.full((100, 32, 32, 3), 1.0021, np.float64))
    return cases


def test_check_submission_gives_verifys_verdict(tiny_release, tmp_path, capsys):
    expected = expected_from_params(Manifest.read(tiny_release).params)
    cases = {name: build(tmp_path / name) for name, (build, _) in BAD.items()}
    cases.update(hostile(tmp_path / "hostile"))
    for name, folder in cases.items():
        theirs = validate(folder, expected)
        valid, err = verdict_of_check_submission(folder, tiny_release, capsys)
        assert valid == theirs.valid, (name, err, theirs.problems)
        if name in BAD:
            assert BAD[name][1] in err, (name, err)
        assert len(err.splitlines()) == len(theirs.problems), (name, err, theirs.problems)
    assert cases.keys() >= {"valid-uint8", "valid-edge", "fifo"}


def test_check_submission_reads_the_zip_participants_upload(tiny_release, tmp_path, capsys):
    from verifier.archive import submission_folder

    expected = expected_from_params(Manifest.read(tiny_release).params)
    folder = tmp_path / "sub"
    folder.mkdir()
    np.save(folder / "decryption.npy", np.zeros((100, 32, 32, 3), np.uint8))
    zips = {"good": shutil.make_archive(str(tmp_path / "good"), "zip", folder),
            "nested": shutil.make_archive(str(tmp_path / "nested"), "zip", tmp_path, "sub")}
    (folder / "README.txt").write_text("how we did it")
    zips["with-readme"] = shutil.make_archive(str(tmp_path / "readme"), "zip", folder)
    np.save(folder / "decryption.npy", np.full((100, 32, 32, 3), 7.0, np.float32))
    zips["out-of-range"] = shutil.make_archive(str(tmp_path / "range"), "zip", folder)
    for name, path in zips.items():
        with submission_folder(Path(path), expected) as unpacked:
            theirs = validate(unpacked, expected)
        valid, err = verdict_of_check_submission(Path(path), tiny_release, capsys)
        assert valid == theirs.valid == (name in ("good", "with-readme")), (name, err)
    assert "zip the files, not their folder" in verdict_of_check_submission(Path(zips["nested"]), tiny_release, capsys)[1]


# --- it runs where only numpy is ---------------------------------------------------------------------

def vermin_problems(*files: str) -> str | None:
    """vermin's report if a file needs a Python newer than 3.9, else None."""
    done = subprocess.run([sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "--no-tips",
                           "--eval-annotations", "--violations", "-t=3.9-", *files],
                          capture_output=True, text=True, timeout=300)
    return None if done.returncode == 0 else done.stdout + done.stderr


def test_every_file_of_the_program_needs_at_most_python_3_9(tmp_path):
    extra_module("vermin")
    assert vermin_problems(*(str(PROGRAM / name) for name in PROGRAM_FILES)) is None
    newer = tmp_path / "newer.py"
    newer.write_text("from itertools import pairwise\n")  # 3.10
    assert vermin_problems(str(newer))  # the check can fail


def test_the_bundle_scores_in_a_numpy_only_environment(numpy_only_python, tiny_release, tmp_path):
    from tests.test_bundle import run_program, unzip, zipped
    from verifier.bundle import make_bundle

    bundle = unzip(make_bundle(tiny_release, tiny_release / "secret" / "keys.zarr", tmp_path / "c.zip"), tmp_path / "b")
    probe = subprocess.run([numpy_only_python, "-I", "-c", "import numba"], capture_output=True, timeout=60)
    assert probe.returncode != 0  # nothing of the tool's stack is there
    program, ref, app = bundle / "scoring_program", bundle / "reference_data", tmp_path / "app"
    done, output = run_program(numpy_only_python, program, ref, bundle / "starting_kit" / "sample_submission.zip", app)
    assert done.returncode == 0, done.stderr
    folder = unzip(bundle / "starting_kit" / "sample_submission.zip", tmp_path / "sample")
    _, expected = score(folder, fmt.open_key_store(tiny_release / "secret" / "keys.zarr"))
    from verifier.scoring import platform_scores
    assert json.loads((output / "scores.json").read_text()) == platform_scores(expected)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "decryption.npy", np.full((100, 32, 32, 3), np.nan, np.float32))
    done, output = run_program(numpy_only_python, program, ref, zipped(bad, tmp_path / "bad.zip"), app)
    assert done.returncode == 2 and "NaN" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (output / "scores.json").exists()
    kit = subprocess.run([numpy_only_python, "-I", str(bundle / "starting_kit" / "check_submission.py"),
                          str(tmp_path / "bad.zip"), str(bundle / "public_data")], capture_output=True, text=True,
                         timeout=120)
    assert kit.returncode == 2 and "NaN" in kit.stderr
