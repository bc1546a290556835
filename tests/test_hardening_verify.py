"""Issue #8, verifier side: hostile submissions, hostile metadata, wrong keys, trivial floors,
the membership oracle and unwritable outputs. Each gives exit 2 with one line, or a leaderboard
that lists the bad submission as invalid; never a hang, a traceback or a half-written output."""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from commands import main as instahide
from challenge.format import open_key_store
from generator.release import generate
from tests.helpers import HANG, SEED, TINY, in_private_tmpfs, left_behind, run_cli
from commands import verify as verify_cli
from verifier.baselines import KINDS, write_baseline
from verifier.scoring import score
from challenge.submission import Expected

EXPECTED = Expected(100, "centered", (32, 32, 3))


def keys_of(release: Path) -> Path:
    return release / "secret" / "keys.zarr"


@pytest.fixture(scope="module")
def oracle(tiny_release, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("oracle") / "oracle"
    write_baseline("oracle", folder, EXPECTED, store=open_key_store(keys_of(tiny_release)))
    return folder


@pytest.fixture(scope="module")
def twin_release(tmp_path_factory, private_set, public_bank) -> Path:
    """Same parameters and data as tiny_release, another seed: a different key store."""
    out = tmp_path_factory.mktemp("twin") / "release"
    generate(out, TINY, seed=bytes(reversed(SEED)), private=private_set, public=public_bank)
    return out


def copy(oracle: Path, folder: Path, metadata: dict | str | None = None) -> Path:
    shutil.copytree(oracle, folder)
    (folder / "metadata.json").unlink(missing_ok=True)
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        (folder / "metadata.json").write_text(text)
    return folder


def call(capsys, *args, module=instahide):
    code = module.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str) -> bool:
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


# --- 1. untrusted submission files ----------------------------------------------------------------

def run_bounded(*args: str, module: str = "commands.verify") -> subprocess.CompletedProcess:
    """Run the CLI with :data:`HANG` s and 2 GB of heap at most: an endless read fails the test, not the machine.
    (A watchdog signal cannot stop a read of /dev/zero: it never returns to Python.)"""
    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=HANG,
                          preexec_fn=limit)


@pytest.mark.parametrize("name", ["metadata.json", "decryption.npy"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dev-null"])
def test_special_files_are_refused_unread(oracle, tiny_release, tmp_path, name, kind):
    folder = copy(oracle, tmp_path / "sub")
    (folder / name).unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(folder / name)
    else:
        os.symlink("/dev/zero" if kind == "dev-zero" else "/dev/null", folder / name)
    result = run_bounded(str(folder), "--keys", str(keys_of(tiny_release)), "--release", str(tiny_release))
    assert result.returncode == 2 and name in result.stderr and "not a regular file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (folder / "scores.json").exists()


def test_unreadable_folder_is_one_line(oracle, tiny_release, tmp_path, capsys, monkeypatch):
    folder = copy(oracle, tmp_path / "sub")
    real = os.scandir

    def denied(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", denied)
    code, _, err = call(capsys, folder, "--release", tiny_release, module=verify_cli)
    assert code == 2 and one_line_error(err) and str(folder) in err and "Permission denied" in err


def test_unreadable_decryption_is_a_problem(oracle, tiny_release, tmp_path, capsys, monkeypatch):
    folder = copy(oracle, tmp_path / "sub")
    real = os.open

    def denied(path, flags, *args, **kwargs):
        if str(path).endswith("decryption.npy"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", denied)
    code, _, err = call(capsys, folder, "--release", tiny_release, module=verify_cli)
    assert code == 2 and "decryption.npy" in err and "Permission denied" in err and "Traceback" not in err


# --- 2. no crash downstream: text that reaches an output is valid Unicode ---------------------------

def all_text_valid(obj) -> bool:
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(obj, dict):
        return all(all_text_valid(k) and all_text_valid(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(all_text_valid(v) for v in obj)
    return True


def test_lone_surrogate_metadata_is_invalid_and_the_board_goes_on(oracle, tiny_release, tmp_path, capsys):
    bad = copy(oracle, tmp_path / "surrogate", '{"team": "\\ud800"}')
    code, _, err = call(capsys, bad, "--release", tiny_release, module=verify_cli)
    assert code == 2 and "metadata.json" in err and "Unicode" in err
    good = copy(oracle, tmp_path / "good")
    code, out, err = call(capsys, "leaderboard", good, bad, "--keys", keys_of(tiny_release), "--release",
                          tiny_release, "--out", tmp_path / "board")
    assert code == 0 and "Traceback" not in err
    md = (tmp_path / "board" / "leaderboard.md").read_text(encoding="utf-8")
    assert "| 1 | good |" in md and "surrogate" in md.split("Not ranked")[1]


def test_non_utf8_folder_name_is_shown_escaped(oracle, tiny_release, tmp_path):
    raw = os.fsencode(tmp_path) + b"/sub\xff\x1b[31m"
    shutil.copytree(os.fsencode(oracle), raw)
    sub = os.fsdecode(raw)
    keys = str(keys_of(tiny_release))
    result = run_cli(sub, "--keys", keys, "--release", str(tiny_release), "--json", "--out",
                     str(tmp_path / "scores"), module="commands.verify")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all_text_valid(report) and report["submission"].endswith("sub\\xff\\x1b[31m")
    result = run_cli(sub, "--keys", keys, "--release", str(tiny_release), "--out", str(tmp_path / "s2"),
                     module="commands.verify")
    assert result.returncode == 0 and "sub\\xff" in result.stdout and "\x1b" not in result.stdout
    board = tmp_path / "board"
    result = run_cli("leaderboard", sub, str(tmp_path / "missing"), "--keys", keys, "--release", str(tiny_release),
                     "--out", str(board))
    assert result.returncode == 0, result.stderr
    md = (board / "leaderboard.md").read_text(encoding="utf-8")
    assert "sub\\\\xff" in md or "sub\\xff" in md
    assert "\x1b" not in md and "\x1b" not in (board / "leaderboard.html").read_text(encoding="utf-8")
    assert "missing" in md.split("Not ranked")[1]
    assert all(name.isascii() for name in os.listdir(board / "images"))


def test_a_file_where_a_submission_folder_should_be_is_listed_invalid(oracle, tiny_release, tmp_path, capsys):
    stray = tmp_path / "stray"
    stray.write_text("x")
    code, out, err = call(capsys, "leaderboard", oracle, stray, "--keys", keys_of(tiny_release), "--release",
                          tiny_release, "--out", tmp_path / "board")
    assert code == 0 and "| 1 | oracle |" in out and "stray" in out.split("Not ranked")[1]


# --- 3. ranking and Markdown ------------------------------------------------------------------------

def test_self_reported_date_does_not_decide_a_tie(oracle, tiny_release, tmp_path):
    store = open_key_store(keys_of(tiny_release))
    from verifier import leaderboard
    a = copy(oracle, tmp_path / "a")
    b = copy(oracle, tmp_path / "b", {"date": "0001-01-01"})
    entries = leaderboard.build([b, a], store)
    assert [e.name for e in leaderboard.rank(entries)] == ["a", "b"]
    md = leaderboard.markdown(entries)
    assert "| 1 | a |" in md and "| 1 | b |" in md  # an equal score is an equal rank


def test_markdown_escapes_metadata(oracle, tiny_release, tmp_path, capsys):
    hostile = {"team": "<script>alert(1)</script>", "method": "[click](javascript:alert(1)) ![x](http://e/x.png)",
               "running_time": "1 | 2 `code` **bold**\nnext line", "hardware": "<img src=x onerror=alert(1)>"}
    folder = copy(oracle, tmp_path / "evil", hostile)
    code, out, _ = call(capsys, "leaderboard", folder, "--keys", keys_of(tiny_release), "--release", tiny_release,
                        "--out", tmp_path / "board")
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert code == 0 and out.startswith(md.split("\n")[0])
    row = next(line for line in md.splitlines() if "evil" in line)
    head = md.splitlines()[0]
    unescaped = lambda line: len(re.findall(r"(?<!\\)\|", line))
    assert unescaped(row) == unescaped(head)  # no cell broke out
    for raw in ("<script", "<img", "](javascript", "![", "`code`", "**bold**"):
        assert raw not in md
    assert "next line" in row  # the newline did not start a new row


# --- 4. scoring integrity -------------------------------------------------------------------------

def test_keys_of_another_release_are_refused(oracle, tiny_release, twin_release, tmp_path, capsys):
    mine = open_key_store(keys_of(tiny_release)).params
    assert open_key_store(keys_of(twin_release)).params == mine  # the parameter check cannot tell them apart
    wrong = ("--keys", keys_of(twin_release), "--release", tiny_release)
    for args in ((oracle, *wrong, "--out", tmp_path / "s"),):
        code, out, err = call(capsys, *args, module=verify_cli)
        assert code == 2 and one_line_error(err) and out == ""
        assert len(re.findall(r"sha256:[0-9a-f]{64}", err)) == 2, err
    for args in (("leaderboard", oracle, *wrong, "--out", tmp_path / "b"),
                 ("baseline", "oracle", *wrong, "--out", tmp_path / "o")):
        code, out, err = call(capsys, *args)
        assert code == 2 and one_line_error(err) and len(re.findall(r"sha256:[0-9a-f]{64}", err)) == 2, err
    assert not (tmp_path / "s").exists() and not (tmp_path / "b").exists() and not (tmp_path / "o").exists()


def test_leaderboard_needs_the_release(oracle, tiny_release, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        instahide.main(["leaderboard", str(oracle), "--keys", str(keys_of(tiny_release)), "--out", str(tmp_path / "b")])
    assert exit.value.code == 2 and "--release" in capsys.readouterr().err


def test_verify_with_keys_alone_says_the_keys_were_not_checked(oracle, tiny_release, tmp_path, capsys):
    code, out, err = call(capsys, oracle, "--keys", keys_of(tiny_release), "--json", "--out", tmp_path,
                          module=verify_cli)
    report = json.loads(out)  # stdout holds nothing but the JSON
    assert code == 0 and report["keys_checked_against_release"] is False and "not checked" in err


# --- 5. floors -------------------------------------------------------------------------------------

def test_constant_and_mean_baselines_are_floors(tiny_release, tmp_path, capsys):
    store = open_key_store(keys_of(tiny_release))
    scores = {}
    for kind in ("constant", "mean", "blind"):
        code, _, err = call(capsys, "baseline", kind, "--keys", keys_of(tiny_release), "--release", tiny_release,
                            "--out", tmp_path / kind)
        assert code == 0, err
        scores[kind] = score(tmp_path / kind, store)[1].summary["Max_SSIM"]
    flat = np.load(tmp_path / "constant" / "decryption.npy")
    assert flat.dtype == np.uint8 and np.all(flat == flat.flat[0])  # one flat grey image
    for level in (0, 64, 127, 128, 200, 255):  # no flat grey beats it
        folder = tmp_path / f"grey{level}"
        folder.mkdir()
        np.save(folder / "decryption.npy", np.full((100, 32, 32, 3), level, np.uint8))
        assert score(folder, store)[1].summary["Max_SSIM"] <= scores["constant"]
    assert scores["constant"] > scores["blind"] and scores["mean"] > scores["blind"]


def test_leaderboard_shows_the_floors_unranked(oracle, tiny_release, tmp_path, capsys):
    code, out, _ = call(capsys, "leaderboard", oracle, "--keys", keys_of(tiny_release), "--release", tiny_release,
                        "--out", tmp_path / "board")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and "Rank" not in line]
    assert rows[0].startswith("| 1 | oracle |")
    for kind in ("constant", "mean"):
        row = next(r for r in rows if f"baseline {kind}" in r)
        assert row.startswith("| ref |")
    assert "constant" in (tmp_path / "board" / "leaderboard.html").read_text()


def test_top_level_help_lists_every_baseline():
    text = " ".join(run_cli("--help").stdout.split())
    listed = re.search(r"baseline write a reference submission \(([^)]*)\)", text)
    assert listed and set(listed.group(1).split(", ")) == set(KINDS), text


# --- 6. the membership oracle: holdout and rounding ------------------------------------------------

def holdout_rule(seed: bytes, n: int, fraction: float) -> np.ndarray:
    """docs/FORMAT.md section 9, recomputed from its text: ChaCha20(seed, nonce 'holdout\\0' + 0)."""
    nonce = b"holdout\0" + (0).to_bytes(4, "little")
    stream = Cipher(algorithms.ChaCha20(seed, bytes(4) + nonce), mode=None).encryptor().update(bytes(8 * n))
    words = np.frombuffer(stream, "<u8")
    return words < int(fraction * 2**64)


def test_holdout_splits_by_the_documented_rule(tiny_release, tmp_path, capsys):
    store = open_key_store(keys_of(tiny_release))
    rng = np.random.default_rng(5)
    oracle_rows = store.read("private/images")[store.read("encryption/private_index")[:, 0]] / 127.5 - 1
    noisy = np.clip(oracle_rows + rng.normal(0, 0.4, oracle_rows.shape), -1, 1)
    folder = tmp_path / "sub"
    folder.mkdir()
    np.save(folder / "decryption.npy", noisy)
    full = score(folder, store)[1]
    final = holdout_rule(bytes(store.read("seed")), 100, 0.3)
    assert 10 < final.sum() < 50
    keys = keys_of(tiny_release)
    for part, rows in (("public", ~final), ("final", final)):
        code, out, err = call(capsys, folder, "--keys", keys, "--release", tiny_release, "--holdout", "0.3",
                              "--part", part, "--out", tmp_path / part, "--json", module=verify_cli)
        assert code == 0, err
        published = json.loads((tmp_path / part / "scores.json").read_text())
        want = math.fsum(full.max_ssim[rows]) / rows.sum()
        assert published["Max_SSIM"] == round(want, 4)
        assert json.loads(out)["scores"]["n_encryptions"] == rows.sum()


def test_published_scores_are_rounded_to_4_decimals(oracle, tiny_release, tmp_path, capsys):
    rng = np.random.default_rng(1)
    folder = tmp_path / "sub"
    folder.mkdir()
    np.save(folder / "decryption.npy", rng.uniform(-1, 1, (100, 32, 32, 3)))
    code, out, _ = call(capsys, folder, "--keys", keys_of(tiny_release), "--json", module=verify_cli)
    published = json.loads((folder / "scores.json").read_text())
    assert code == 0 and all(round(v, 4) == v for v in published.values())
    assert all(f"{name}: {value!r}" in (folder / "scores.txt").read_text() for name, value in published.items())


# --- 7. unwritable outputs --------------------------------------------------------------------------

def test_an_existing_file_where_an_output_folder_goes_is_one_line(oracle, tiny_release, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    keys = keys_of(tiny_release)
    for module, args in ((verify_cli, (oracle, "--keys", keys, "--release", tiny_release, "--out", blocker)),
                         (instahide, ("leaderboard", oracle, "--keys", keys, "--release", tiny_release, "--out", blocker)),
                         (instahide, ("baseline", "noise", "--release", tiny_release, "--out", blocker))):
        code, out, err = call(capsys, *args, module=module)
        assert code == 2 and one_line_error(err) and str(blocker) in err, err
    assert blocker.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.parametrize("options, command", [  # no full disk for verify: its scores files fit in any disk that holds a folder
    ("ro,size=1m", "verify"), ("ro,size=1m", "leaderboard"), ("ro,size=1m", "baseline"),
    ("size=4k", "leaderboard"), ("size=4k", "baseline")])
def test_read_only_or_full_disk_leaves_nothing(oracle, tiny_release, tmp_path, options, command):
    keys, out = str(keys_of(tiny_release)), str(tmp_path / "mnt" / "out")
    module, args = {
        "verify": ("commands.verify", (str(oracle), "--keys", keys, "--release", str(tiny_release), "--out", out)),
        "leaderboard": ("commands.main", ("leaderboard", str(oracle), "--keys", keys, "--release", str(tiny_release),
                                          "--out", out)),
        "baseline": ("commands.main", ("baseline", "noise", "--release", str(tiny_release), "--out", out)),
    }[command]
    result = in_private_tmpfs(tmp_path, options, *args, module=module)
    stderr = result.stderr.strip()
    assert result.returncode == 2 and "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert str(tmp_path / "mnt") in stderr
    assert left_behind(result, files_only=True) == []  # no partial file left


def test_a_failed_leaderboard_write_leaves_no_partial_board(oracle, tiny_release, tmp_path, capsys):
    out = tmp_path / "board"
    (out / "leaderboard.html").mkdir(parents=True)  # the last file cannot be written
    code, _, err = call(capsys, "leaderboard", oracle, "--keys", keys_of(tiny_release), "--release", tiny_release,
                        "--out", out, "--force")
    assert code == 2 and one_line_error(err) and "leaderboard.html" in err, err
    assert [p.name for p in out.rglob("*") if p.is_file()] == []  # no pictures, no leaderboard.md
