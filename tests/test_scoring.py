"""Scoring: hand-computed aggregates, the oracle, row swaps, the numpy path, files and concurrency."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from challenge.format import open_key_store
from commands import verify as cli
from verifier.baselines import write_baseline
from verifier.metrics import K1
from tests.naive import score_pairs_reference
from verifier.scoring import Accumulator, score, score_array
from challenge.submission import Expected

C1 = (K1 * 2) ** 2


class HandStore:
    """Just what ``score`` reads from a key store, from plain arrays."""

    def __init__(self, images, index):
        self.arrays = {"private/images": images, "encryption/private_index": index}

    def __getitem__(self, name):
        return self.arrays[name]

    def read(self, name):
        return self.arrays[name]


def constant_ssim(a: float, b: float) -> float:
    """SSIM of two constant images: no variance, so only the luminance term (2ab + C1) / (a^2 + b^2 + C1)."""
    return (2 * a * b + C1) / (a * a + b * b + C1)


def save(folder, array, metadata=None):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "decryption.npy", array)
    if metadata:
        (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


@pytest.fixture(scope="module")
def keys(tiny_release):
    return open_key_store(tiny_release / "secret" / "keys.zarr")


@pytest.fixture(scope="module")
def oracle(tiny_release, keys, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oracle")
    write_baseline("oracle", folder, Expected(100, "centered", (32, 32, 3)), store=keys)
    return folder


def test_hand_built_three_encryptions(tmp_path):
    # Constant images: SSIM and L2 have closed forms. Private values: u = 0, 255, 153 -> -1, 1, 0.2.
    images = np.stack([np.full((32, 32, 3), u, np.uint8) for u in (0, 255, 153)])
    p = [-1.0, 1.0, 153 / 127.5 - 1]
    index = np.array([[0, 1], [1, 2], [2, 0]], np.int32)
    r = [-1.0, 0.6, 0.0]
    folder = save(tmp_path, np.stack([np.full((32, 32, 3), v) for v in r]))
    _, scores = score(folder, HandStore(images, index), expected=Expected(3, "centered", (32, 32, 3)))

    s = [[constant_ssim(r[0], p[0]), constant_ssim(r[0], p[1])],  # 1, about -0.9996
         [constant_ssim(r[1], p[1]), constant_ssim(r[1], p[2])],  # about 0.882, 0.601
         [constant_ssim(r[2], p[2]), constant_ssim(r[2], p[0])]]  # about 0.0099, 0.0004
    l2 = [[0.0, 2.0], [0.4, 0.4], [0.2, 1.0]]  # |r - p| for constant images
    want = {
        "Max_SSIM": (s[0][0] + s[1][0] + s[2][0]) / 3,
        "Mean_SSIM": ((s[0][0] + s[0][1]) / 2 + (s[1][0] + s[1][1]) / 2 + (s[2][0] + s[2][1]) / 2) / 3,
        "Min_L2": (l2[0][0] + l2[1][0] + l2[2][0]) / 3,
        "Max_L2": (l2[0][1] + l2[1][1] + l2[2][1]) / 3,
        "Mean_L2": ((l2[0][0] + l2[0][1]) / 2 + (l2[1][0] + l2[1][1]) / 2 + (l2[2][0] + l2[2][1]) / 2) / 3,
        "success_rate": 2 / 3,  # encryptions 0 (SSIM 1) and 1 (0.882) exceed 0.8
        "recovered_share": 2 / 3,  # private 0 (1) and 1 (0.882); private 2 at best 0.601
    }
    assert s[1][0] > 0.8 > s[1][1] > s[2][0]
    for name, value in want.items():
        assert scores.summary[name] == pytest.approx(value, abs=1e-12), name
    np.testing.assert_allclose(scores.best_per_private, [s[0][0], s[1][0], s[1][1]], atol=1e-12)
    np.testing.assert_array_equal(scores.best_column, [0, 0, 0])


def test_accumulator_from_tables():
    acc = Accumulator(3, 4)
    ssim = np.array([[0.9, 0.1], [0.5, 0.7], [0.85, 0.2]])
    l2 = np.array([[0.1, 0.5], [0.3, 0.2], [0.4, 0.6]])
    index = np.array([[0, 1], [1, 2], [2, 0]])
    acc.add(0, ssim[:2], l2[:2], index[:2])  # blocks may arrive in any order
    acc.add(2, ssim[2:], l2[2:], index[2:])
    s = acc.result().summary
    assert s["Max_SSIM"] == pytest.approx((0.9 + 0.7 + 0.85) / 3)
    assert s["Mean_SSIM"] == pytest.approx((0.5 + 0.6 + 0.525) / 3)
    assert s["Min_L2"] == pytest.approx((0.1 + 0.2 + 0.4) / 3)
    assert s["Max_L2"] == pytest.approx((0.5 + 0.3 + 0.6) / 3)
    assert s["Mean_L2"] == pytest.approx((0.3 + 0.25 + 0.5) / 3)
    assert s["success_rate"] == pytest.approx(2 / 3)
    # best per private image: 0 -> 0.9, 1 -> 0.5, 2 -> 0.85, 3 -> never seen (not recovered)
    assert s["recovered_share"] == pytest.approx(2 / 4)
    np.testing.assert_array_equal(acc.result().best_per_private, [0.9, 0.5, 0.85, np.nan])


def test_oracle_scores_one_and_zero(oracle, keys):
    validation, scores = score(oracle, keys)
    assert validation.valid and validation.array.dtype == np.uint8
    s = scores.summary
    assert s["Max_SSIM"] == pytest.approx(1.0, abs=1e-12)
    assert s["Min_L2"] == pytest.approx(0.0, abs=1e-12)
    assert s["success_rate"] == 1.0 and s["recovered_share"] == 1.0
    assert s["Mean_SSIM"] < 0.9 and s["Max_L2"] > 0.1  # the partners are other images


def test_swapping_two_rows_lowers_the_score(oracle, keys, tmp_path):
    truth = np.load(oracle / "decryption.npy")
    index = keys.read("encryption/private_index")
    j = next(j for j in range(1, len(index)) if not set(index[j]) & set(index[0]))
    swapped = truth.copy()
    swapped[[0, j]] = truth[[j, 0]]
    _, base = score(oracle, keys)
    _, worse = score(save(tmp_path, swapped), keys)
    assert worse.summary["Max_SSIM"] < base.summary["Max_SSIM"]
    assert worse.summary["Min_L2"] > base.summary["Min_L2"]
    assert worse.max_ssim[0] < 0.8 and worse.max_ssim[j] < 0.8
    np.testing.assert_array_equal(np.delete(worse.max_ssim, [0, j]), np.delete(base.max_ssim, [0, j]))


def test_uint8_and_float_submissions_score_alike(oracle, keys, tmp_path):
    truth = np.load(oracle / "decryption.npy")
    _, as_bytes = score(oracle, keys)
    _, as_floats = score(save(tmp_path / "f", truth / 127.5 - 1.0), keys)
    assert as_floats.summary == as_bytes.summary
    # the same pictures in the positive domain [0, 1] are mapped to [-1, 1] before scoring
    _, positive = score(save(tmp_path / "p", truth / 255.0), keys, expected=Expected(100, "positive", (32, 32, 3)))
    for name, value in as_bytes.summary.items():
        assert positive.summary[name] == pytest.approx(value, abs=1e-12)


def test_numba_and_numpy_paths_agree(tiny_release, keys, tmp_path):
    folder = tmp_path / "blind"
    write_baseline("blind", folder, Expected(100, "centered", (32, 32, 3)), release=tiny_release)
    _, fast = score(folder, keys)
    _, slow = score(folder, keys, engine=score_pairs_reference)
    for name, value in slow.summary.items():
        assert fast.summary[name] == pytest.approx(value, abs=1e-12), name
    np.testing.assert_allclose(fast.best_per_private, slow.best_per_private, atol=1e-12)


def test_block_size_does_not_change_a_score(oracle, keys, tmp_path):
    rng = np.random.default_rng(3)
    noisy = np.clip(np.load(oracle / "decryption.npy") / 127.5 - 1 + rng.normal(0, 0.2, (100, 32, 32, 3)), -1, 1)
    folder = save(tmp_path, noisy)
    _, whole = score(folder, keys, rows=100)
    _, pieces = score(folder, keys, rows=7)
    assert whole.summary == pieces.summary
    assert 0.1 < whole.summary["Max_SSIM"] < 0.99


def test_invalid_submission_is_not_scored(keys, tmp_path):
    a = np.zeros((100, 32, 32, 3))
    a[99, 0, 0, 0] = np.nan
    validation, scores = score(save(tmp_path, a), keys, rows=10)
    assert scores is None and len(validation.problems) == 1


def test_cli_writes_scores_and_leaves_release_alone(oracle, tiny_release, tmp_path, capsys):
    before = sorted((p, p.stat().st_mtime_ns) for p in tiny_release.rglob("*"))
    out = tmp_path / "results"
    code = cli.main([str(oracle), "--keys", str(tiny_release / "secret" / "keys.zarr"), "--release",
                     str(tiny_release), "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["valid"] and report["scored"]
    assert len(report["scores"]["best_ssim_per_private"]) == 20
    flat = json.loads((out / "scores.json").read_text())
    assert flat == {k: report["scores"][k] for k in flat} and flat["Max_SSIM"] == pytest.approx(1)
    lines = (out / "scores.txt").read_text().splitlines()
    assert [line.split(": ")[0] for line in lines] == list(flat)
    assert all(float(line.split(": ")[1]) == flat[line.split(": ")[0]] for line in lines)
    assert sorted(p.name for p in out.iterdir()) == ["scores.json", "scores.txt"]  # no temporary files left
    assert sorted((p, p.stat().st_mtime_ns) for p in tiny_release.rglob("*")) == before

    code = cli.main([str(oracle), "--keys", str(tiny_release / "secret" / "keys.zarr")])
    table = capsys.readouterr().out
    assert code == 0 and "Max_SSIM" in table and "1.0000" in table and "(20 of 20)" in table
    assert (oracle / "scores.json").is_file()


def test_concurrent_runs_do_not_interfere(oracle, tiny_release, tmp_path):
    keys = str(tiny_release / "secret" / "keys.zarr")
    runs = [subprocess.Popen([sys.executable, "-m", "commands.verify", str(oracle), "--keys", keys, "--out",
                              str(tmp_path / str(i)), "--json"], stdout=subprocess.PIPE, text=True) for i in range(3)]
    reports = [json.loads(run.communicate(timeout=300)[0]) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert reports[0]["scores"] == reports[1]["scores"] == reports[2]["scores"]
    assert [json.loads((tmp_path / str(i) / "scores.json").read_text()) for i in range(3)].count(
        json.loads((tmp_path / "0" / "scores.json").read_text())) == 3


def test_float32_scores_are_those_of_its_float64_copy_to_the_last_bit(keys):
    """A float32 submission on the [-1, 1] scale is scored as it is, not copied to float64 first:
    the same scores, bit for bit, as the float64 copy."""
    rng = np.random.default_rng(3)
    recovery = rng.uniform(-1, 1, (keys.params.n_encryptions, *keys.params.image_shape)).astype(np.float32)
    as_float32 = score_array(recovery, keys)
    as_float64 = score_array(recovery.astype(np.float64), keys)
    assert as_float32.summary == as_float64.summary
    assert np.array_equal(as_float32.max_ssim, as_float64.max_ssim)
    assert np.array_equal(as_float32.best_per_private, as_float64.best_per_private, equal_nan=True)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("rows_per_draw", [8, 64, 1 << 20])
def test_holdout_split_is_the_one_format_md_defines(monkeypatch, fraction, rows_per_draw):
    """FORMAT.md section 9, computed here with the cryptography package alone: encryption i is final
    iff word i of ChaCha20(seed, nonce 'holdout' NUL + uint32 0, counter 0) is below int(F * 2^64)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    import verifier.scoring

    seed, n = bytes(range(100, 132)), 1000
    counter_and_nonce = (0).to_bytes(4, "little") + b"holdout\0" + (0).to_bytes(4, "little")
    stream = Cipher(algorithms.ChaCha20(seed, counter_and_nonce), mode=None).encryptor().update(bytes(8 * n))
    words = [int.from_bytes(stream[8 * i:8 * i + 8], "little") for i in range(n)]
    monkeypatch.setattr(verifier.scoring, "_HOLDOUT_ROWS", rows_per_draw)
    mask = verifier.scoring.holdout_mask(seed, n, fraction)
    assert mask.tolist() == [w < int(fraction * 2**64) for w in words]
    assert 0 < mask.sum() < n


def test_a_failed_scores_write_names_the_file_and_the_reason_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from challenge import files
    from challenge.errors import UsageError

    real, calls = files.write_atomic, []

    def full_disk(path, data, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second file: the first one, written, must go again
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, **kwargs)
    monkeypatch.setattr(files, "write_atomic", full_disk)
    with pytest.raises(UsageError) as error:
        files.write_files(tmp_path / "out", {"a.json": "{}", "b.txt": "x"}, "scores files")
    assert str(error.value) == f"cannot write the scores files: {tmp_path / 'out' / 'b.txt'}: No space left on device"
    assert not (tmp_path / "out").exists()  # nor the folder it made
