"""Leaderboard ranking and pages, and the baselines that calibrate it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from commands import main as instahide
from challenge.format import open_key_store
from verifier import leaderboard
from verifier.baselines import blind, write_baseline
from challenge.submission import Expected
from verifier.scoring import Scores

EXPECTED = Expected(100, "centered", (32, 32, 3))


@pytest.fixture(scope="module")
def subs(tiny_release, tmp_path_factory):
    """The three baselines, a dated copy of the oracle and an invalid submission."""
    root = tmp_path_factory.mktemp("subs")
    keys = open_key_store(tiny_release / "secret" / "keys.zarr")
    for kind in ("oracle", "blind", "noise"):
        write_baseline(kind, root / kind, EXPECTED, store=keys, release=tiny_release)
    shutil.copytree(root / "oracle", root / "z-early")
    (root / "z-early" / "metadata.json").write_text(json.dumps({"team": "<script>x</script> | y", "date": "2020-01-01"}))
    (root / "bad").mkdir()
    np.save(root / "bad" / "decryption.npy", np.zeros((100, 3, 32, 32), np.float32))
    return root


def run(capsys, *args):
    code = instahide.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_leaderboard_ranks_and_writes_pages(subs, tiny_release, tmp_path, capsys):
    keys = tiny_release / "secret" / "keys.zarr"
    order = ("noise", "bad", "oracle", "blind", "z-early")
    code, out, err = run(capsys, "leaderboard", *(subs / s for s in order), "--keys", keys, "--release", tiny_release,
                         "--out", tmp_path)
    assert code == 0 and "bad: invalid, not ranked" in err
    md = (tmp_path / "leaderboard.md").read_text()
    assert out == md
    table = [line.split(" | ")[:2] for line in md.splitlines()[2:] if line.startswith("| ")]
    rows = [name for rank, name in table if rank != "| ref"]
    # the two oracles tie: equal rank, listed by name; noise and blind score far lower
    assert table[:2] == [["| 1", "oracle"], ["| 1", "z-early"]] and set(rows[2:]) == {"blind", "noise"}
    assert {name for rank, name in table if rank == "| ref"} == {"baseline constant", "baseline mean"}
    assert "Max_SSIM | Mean_SSIM | Min_L2 | Max_L2 | Mean_L2" in md.splitlines()[0]
    assert "Not ranked" in md and "NCHW" in md and "\\|" in md  # a team's '|' cannot break the table
    page = (tmp_path / "leaderboard.html").read_text()
    assert "<script>x" not in page and "&lt;script&gt;" in page
    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    pictured = [f"{r:03d}-{name}-{kind}{place}.png" for r, name in enumerate(rows, 1)
                for kind in ("best", "worst") for place in range(1, 5)]
    assert images == sorted(pictured)
    assert all(f'src="images/{name}"' in page for name in images)
    pair = np.asarray(Image.open(tmp_path / "images" / pictured[0]))
    assert pair.shape[1] == 2 * 98 + 2 and pair.shape[0] > 98  # two 96 px tiles, 2 px gaps, captions below
    assert f"Release <strong class=\"name\">{tiny_release.name}</strong>" in page
    commitment = json.loads((tiny_release / "public" / "manifest.json").read_text())["key_store"]["commitment"]
    assert f'<code class="commitment">{commitment}</code>' in page


def test_oracle_pairs_match_and_show_distinct_private_images(subs, tiny_release):
    keys = open_key_store(tiny_release / "secret" / "keys.zarr")
    entries = leaderboard.build([subs / "oracle"], keys)
    pairs = leaderboard.recovery_pairs(entries[0], keys, EXPECTED)
    assert [(p.kind, p.place) for p, _ in pairs] == [(k, i) for k in ("best", "worst") for i in range(1, 5)]
    index = keys.read("encryption/private_index")
    for pair, picture in pairs:  # a perfect recovery looks exactly like the image beside it
        sheet = np.asarray(picture)
        np.testing.assert_array_equal(sheet[2:98, 2:98], sheet[2:98, 100:196])
        assert pair.ssim == 1.0 and pair.private in index[pair.encryption]
    for kind in ("best", "worst"):
        shown = [p.private for p, _ in pairs if p.kind == kind]
        assert len(set(shown)) == len(shown)


def test_best_and_worst_skip_a_private_image_already_shown():
    # encryptions 0..5; the three best all match private image 7: only the first of them is shown
    ssim = np.array([0.99, 0.98, 0.97, 0.5, 0.4, 0.1])
    matched = np.array([7, 7, 7, 1, 2, 3])
    scores = Scores({}, encryptions=np.arange(6), max_ssim=ssim, best_column=np.zeros(6, int),
                    best_per_private=np.zeros(8))
    best, worst = leaderboard.best_and_worst(scores, matched, count=3)
    assert best.tolist() == [0, 3, 4] and worst.tolist() == [5, 4, 3]
    best, worst = leaderboard.best_and_worst(scores, np.arange(6), count=2)  # all distinct: plain order
    assert best.tolist() == [0, 1] and worst.tolist() == [5, 4]


def test_tie_is_an_equal_rank_by_name_whatever_the_order_or_date(subs, tiny_release):
    keys = open_key_store(tiny_release / "secret" / "keys.zarr")
    entries = leaderboard.build([subs / "z-early", subs / "oracle"], keys, floors=())
    for order in (entries, entries[::-1]):
        assert [e.name for e in leaderboard.rank(order)] == ["oracle", "z-early"]


def test_baselines_and_their_errors(tiny_release, tmp_path, capsys):
    code, _, err = run(capsys, "baseline", "oracle", "--release", tiny_release, "--out", tmp_path / "o")
    assert code == 2 and "needs --keys" in err
    code, _, err = run(capsys, "baseline", "blind", "--keys", tiny_release / "secret" / "keys.zarr", "--out", tmp_path / "b")
    assert code == 2 and "needs --release" in err
    assert run(capsys, "baseline", "noise", "--release", tiny_release, "--out", tmp_path / "n")[0] == 0
    first = np.load(tmp_path / "n" / "decryption.npy")
    code, _, err = run(capsys, "baseline", "noise", "--release", tiny_release, "--out", tmp_path / "n")
    assert code == 2 and "--force" in err
    assert run(capsys, "baseline", "noise", "--release", tiny_release, "--out", tmp_path / "n", "--force")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "n" / "decryption.npy"), first)  # seeded
    assert first.dtype == np.float32 and first.min() >= -1 and first.max() <= 1 and first.std() > 0.5
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == ["decryption.npy", "metadata.json"]


def test_blind_stretches_each_image_to_the_domain():
    x = np.zeros((2, 32, 32, 3), np.float32)
    x[0, 0, 0, 0], x[0, 1, 1, 1] = -0.5, 0.25  # |x| spans 0 .. 0.5
    out = blind(x, Expected(2, "positive", (32, 32, 3)))
    assert out[0].min() == 0 and out[0].max() == 1 and out[0, 1, 1, 1] == 0.5
    assert np.all(out[1] == 0.5)  # a flat image maps to the middle of the range
