"""Secrets never leave ``secret/`` (issue 19): no command writes into a release or a key store,
everything that shows private images is readable by its owner alone, and every command that takes
keys and a release refuses keys that are not the release's, naming both commitments."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from challenge import format as fmt
from challenge.places import protected_place
from commands.main import main
from generator.release import generate
from tests.helpers import TINY


def keys_of(release: Path) -> Path:
    return release / "secret" / "keys.zarr"


def call(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def tree(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size and modification time: what a refused command must not change."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def other_release(tmp_path_factory, private_set, public_bank) -> Path:
    """A release of the same parameters and data with another seed: its keys are foreign to tiny_release."""
    out = tmp_path_factory.mktemp("other") / "release"
    generate(out, TINY, seed=bytes(32), private=private_set, public=public_bank)
    return out


@pytest.fixture(scope="module")
def copy(tmp_path_factory, tiny_release) -> Path:
    """A release this module may write beside (tiny_release is shared and read-only)."""
    out = tmp_path_factory.mktemp("copy") / "r1"
    shutil.copytree(tiny_release, out)
    return out


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, tiny_release) -> Path:
    out = tmp_path_factory.mktemp("oracle") / "oracle"
    assert main(["baseline", "oracle", "--keys", str(keys_of(tiny_release)), "--out", str(out)]) == 0
    return out


# --- no output inside a release or a key store ------------------------------------------------------------------


def test_protected_places_are_recognised_by_their_contents(copy, tmp_path):
    public, keys = copy / "public", keys_of(copy)
    assert protected_place(copy) == ("the release", copy.resolve())
    assert protected_place(public / "x" / "y.png") == ("the release's public folder", public.resolve())
    assert protected_place(keys / "extra")[0] == "the key store"
    assert protected_place(copy / "secret" / "new")[0] == "the release"
    assert protected_place(tmp_path / "public" / "board") is None  # a folder called public is not a release
    link = tmp_path / "innocent"
    link.symlink_to(public)
    assert protected_place(link / "board") == ("the release's public folder", public.resolve())


@pytest.mark.parametrize("command", [
    ["baseline", "blind", "--release", "{r}", "--out", "{r}/public", "--force"],
    ["baseline", "oracle", "--keys", "{keys}", "--out", "{keys}", "--force"],
    ["baseline", "noise", "--release", "{r}", "--out", "{r}/notes"],
    ["verify", "{oracle}", "--keys", "{keys}", "--release", "{r}", "--out", "{keys}"],
    ["leaderboard", "{oracle}", "--keys", "{keys}", "--release", "{r}", "--out", "{r}"],
    ["leaderboard", "{oracle}", "--keys", "{keys}", "--release", "{r}", "--out", "{r}/public/board"],
    ["inspect", "{r}", "--keys", "{keys}", "--sheet", "{r}/secret/truth.png"],
    ["inspect", "{r}", "--keys", "{keys}", "--sheet", "{link}/truth.png"],
    ["generate", "--out", "{r}/public/again", "--n-private", "10", "--per-image", "2"],
    ["reproduce", "{r}", "--work", "{r}/secret"],
    ["bundle", "{r}", "--keys", "{keys}", "--out", "{r}/public/competition.zip"],
])
def test_no_command_writes_into_a_release_or_a_key_store(command, copy, oracle, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(copy / "public")
    argv = [a.format(r=copy, keys=keys_of(copy), oracle=oracle, link=link) for a in command]
    before = tree(copy)
    if argv[0] == "verify":
        from commands.verify import main as verify_main

        code = verify_main(argv[1:])
        err = capsys.readouterr().err
    else:
        code, _, err = call(capsys, *argv)
    assert code == 2, err
    assert "inside the" in err and "choose a path outside it" in err and len(err.strip().splitlines()) == 1
    assert tree(copy) == before


def test_generate_may_still_replace_a_whole_release_with_force(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["generate", "--out", out, "--n-private", "10", "--per-image", "2", "--practice", "--seed", "x"]
    assert call(capsys, *args)[0] == 0
    assert call(capsys, *args, "--force")[0] == 0


# --- what shows private images is private -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["oracle", "constant", "mean", "pairing", "blind", "noise"])
def test_baselines_from_the_keys_are_readable_by_their_owner_alone(kind, tiny_release, tmp_path, capsys):
    out = tmp_path / "nested" / kind
    code, _, err = call(capsys, "baseline", kind, "--keys", keys_of(tiny_release), "--release", tiny_release, "--out", out)
    assert code == 0, err
    secret = kind in ("oracle", "constant", "mean", "pairing")
    for name in ("decryption.npy", "metadata.json"):
        assert mode(out / name) == (0o600 if secret else 0o644), name
    if secret:
        assert mode(out) == 0o700 and mode(out.parent) == 0o700


def test_the_leaderboard_is_private_and_says_so(oracle, tiny_release, tmp_path, capsys):
    out = tmp_path / "board"
    code, _, err = call(capsys, "leaderboard", oracle, "--keys", keys_of(tiny_release), "--release", tiny_release,
                        "--out", out)
    assert code == 0, err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(mode(p) == 0o600 for p in files)
    assert mode(out) == 0o700 and mode(out / "images") == 0o700
    page = (out / "leaderboard.html").read_text()
    assert page.index('id="secret"') < page.index("<table")  # at the top, before anything else
    assert "private image" in page


def test_a_public_board_shows_no_private_image(oracle, tiny_release, tmp_path, capsys):
    out = tmp_path / "public-board"
    code, _, err = call(capsys, "leaderboard", oracle, "--keys", keys_of(tiny_release), "--release", tiny_release,
                        "--out", out, "--public")
    assert code == 0, err
    page = (out / "leaderboard.html").read_text()
    assert 'id="secret"' not in page and 'class="private"' not in page and "beside private image" not in page
    pictures = sorted((out / "images").glob("*.png"))
    assert pictures and all(mode(p) == 0o644 for p in pictures)
    for picture in pictures:  # one tile (the recovery), never the pair
        pixels = np.asarray(Image.open(picture))
        assert pixels.shape[1] < 2 * 96
    assert all(mode(p) == 0o644 for p in (out / "leaderboard.md", out / "leaderboard.html"))


def test_the_inspect_sheet_is_private(tiny_release, tmp_path, capsys):
    sheet = tmp_path / "truth.png"
    assert call(capsys, "inspect", tiny_release, "--keys", keys_of(tiny_release), "--sheet", sheet)[0] == 0
    assert mode(sheet) == 0o600


# --- keys bound to their release ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["inspect", "{r}", "--keys", "{keys}", "--sheet", "{tmp}/s.png"],
    ["baseline", "oracle", "--release", "{r}", "--keys", "{keys}", "--out", "{tmp}/o"],
    ["leaderboard", "{oracle}", "--release", "{r}", "--keys", "{keys}", "--out", "{tmp}/b"],
    ["reproduce", "{r}", "--keys", "{keys}"],
])
def test_foreign_keys_are_refused_naming_both_commitments(command, tiny_release, other_release, oracle, tmp_path,
                                                          capsys):
    argv = [a.format(r=tiny_release, keys=keys_of(other_release), oracle=oracle, tmp=tmp_path) for a in command]
    code, _, err = call(capsys, *argv)
    published = fmt.read_json(tiny_release / "public" / "manifest.json")["key_store"]["commitment"]
    theirs = fmt.read_json(other_release / "public" / "manifest.json")["key_store"]["commitment"]
    assert code == 2 and "not this release's keys" in err, err
    assert published in err and theirs in err
    assert list(tmp_path.iterdir()) == []  # no sheet, no baseline, no board


# --- loose ends -------------------------------------------------------------------------------------------------


def test_a_negative_noise_seed_is_one_line_and_leaves_no_folder(tiny_release, tmp_path, capsys):
    out = tmp_path / "X"
    with pytest.raises(SystemExit) as exit_:
        main(["baseline", "noise", "--release", str(tiny_release), "--out", str(out), "--seed", "-1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--seed" in err and "0 or more" in err and "Traceback" not in err
    assert not out.exists()


def test_a_failed_baseline_leaves_no_empty_out(tiny_release, tmp_path, capsys):
    release = tmp_path / "r"
    shutil.copytree(tiny_release, release)
    (release / "public" / "encryption.npy").write_bytes(b"not an npy file")
    out = tmp_path / "deep" / "blind"
    code, _, err = call(capsys, "baseline", "blind", "--release", release, "--out", out)
    assert code == 2 and "encryption.npy" in err
    assert not (tmp_path / "deep").exists()


def test_a_leaderboard_is_replaced_only_with_force_and_loses_its_stale_pictures(oracle, tiny_release, tmp_path, capsys):
    out, second = tmp_path / "board", tmp_path / "second"
    shutil.copytree(oracle, second)
    common = ["--keys", keys_of(tiny_release), "--release", tiny_release, "--out", out]
    assert call(capsys, "leaderboard", oracle, second, *common)[0] == 0
    pictures = len(list((out / "images").glob("*.png")))
    code, _, err = call(capsys, "leaderboard", oracle, *common)
    assert code == 2 and "already holds a leaderboard" in err and "--force" in err
    assert call(capsys, "leaderboard", oracle, *common, "--force")[0] == 0
    assert len(list((out / "images").glob("*.png"))) == pictures // 2


def test_the_same_submission_given_twice_is_ranked_once(oracle, tiny_release, tmp_path, capsys):
    link = tmp_path / "again"
    link.symlink_to(oracle)
    code, out, err = call(capsys, "leaderboard", oracle, oracle, link, "--keys", keys_of(tiny_release),
                          "--release", tiny_release, "--out", tmp_path / "board", "--json")
    assert code == 0, err
    board = json.loads(out)
    assert [row["submission"] for row in board["ranked"] if not row["reference"]] == ["oracle"]
    assert len(board["invalid"]) == 2 and all("same file as" in p for row in board["invalid"] for p in row["problems"])


# --- audit: every byte of the key store declared, no free text in the manifest --------------------------------


@pytest.fixture
def writable(tmp_path, tiny_release) -> Path:
    release = tmp_path / "r"
    shutil.copytree(tiny_release, release)
    return release


def audit_findings(release: Path) -> list:
    from verifier.audit import audit

    return audit(release, keys_of(release)).findings


def test_audit_refuses_an_extra_array_and_a_stray_chunk_in_the_key_store(writable):
    import zarr

    extra = zarr.open_array(str(keys_of(writable) / "extra"), mode="w", shape=(4,), dtype="uint8")
    extra[:] = 7
    (keys_of(writable) / "seed" / "c" / "7").write_bytes(b"x")  # outside the seed's one-chunk grid
    findings = audit_findings(writable)
    assert [(f.check, f.file) for f in findings] == [("key_store", "secret/keys.zarr/extra"),
                                                     ("key_store", "secret/keys.zarr/seed/c/7")]


@pytest.mark.parametrize("version, sound", [("0.1.0", True), ("0.2.0rc1", True), ("1.2.3.dev4", True),
                                            ("0.1.0 " + "ab" * 32, False), ("0.1.0+local", False), ("", False)])
def test_audit_takes_the_generator_version_as_a_release_number_only(version, sound, writable):
    path = writable / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    manifest["generator"]["version"] = version
    fmt.write_json(path, manifest)
    findings = [(f.check, f.where) for f in audit_findings(writable) if f.check == "manifest"]
    assert findings == ([] if sound else [("manifest", "generator")])


def test_problems_name_the_submissions_files_not_a_temporary_folder(oracle, tiny_release, tmp_path, capsys):
    import zipfile

    sub, bad = tmp_path / "sub.zip", tmp_path / "bad.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.write(oracle / "decryption.npy", "decryption.npy")
        zf.writestr("metadata.json", "{")
    bad.write_bytes(b"not a zip")
    code, out, err = call(capsys, "leaderboard", sub, bad, "--keys", keys_of(tiny_release), "--release", tiny_release,
                          "--out", tmp_path / "board", "--json")
    problems = {row["submission"]: row["problems"] for row in json.loads(out)["invalid"]}
    assert problems["sub.zip"][0].startswith("metadata.json: not valid JSON"), problems
    assert problems["bad.zip"][0].startswith("not a readable zip archive"), problems
    assert "instahide-submission-" not in out + err and "bad.zip: bad.zip" not in err


def test_a_private_output_folder_restricts_what_it_wrote_and_leaves_what_was_there(tmp_path):
    from challenge.files import output_folder

    out = tmp_path / "existing"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "mine.txt").write_text("a user's file")
    (out / "notes" / "mine.txt").chmod(0o644)
    (out / "notes").chmod(0o755)
    with output_folder(out, private=True):
        (out / "notes" / "new.png").write_bytes(b"picture")
        (out / "report").mkdir()
        (out / "report" / "page.html").write_text("page")
    assert mode(out) == 0o700
    assert mode(out / "notes") == 0o755 and mode(out / "notes" / "mine.txt") == 0o644  # not the command's to change
    assert mode(out / "notes" / "new.png") == 0o600
    assert mode(out / "report") == 0o700 and mode(out / "report" / "page.html") == 0o600
