"""README and ``--help`` agree: every example of every help text parses, and runs on a tiny release;
every command is in the README's tables; the top-level help names every baseline."""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import re
import secrets
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from commands import main as instahide
from commands import verify
from generator.default_data import default_private
from tests.helpers import check_inspect_json
from verifier.baselines import KINDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROGRAMS = {"instahide": instahide, "verify": verify}
# Examples that need data no test has (CIFAR-10, ImageNet, photos, a Docker registry, a cluster): parsed, not run.
EXTERNAL = ("cifar-10-batches-py", "/data/", "/shared/", "photos/", "bank.zarr", "<unzipped>", "docker", "tcp://")
SMALL = ["--n-private", "20", "--per-image", "5"]  # generate's examples, made tiny (100 encryptions)


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of both programs and every subcommand, nested ones included."""
    found, queue = [], [(name, module.build_parser()) for name, module in PROGRAMS.items()]
    while queue:
        name, parser = queue.pop(0)
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                queue += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return found


def examples(parser: argparse.ArgumentParser) -> list[str]:
    """The command lines under ``examples:`` in a help epilog, comments removed."""
    text = (parser.epilog or "").split("examples:\n", 1)
    lines = []
    for line in text[1].splitlines() if len(text) == 2 else []:
        if not line.startswith("  "):
            break
        command = line.split(" # ", 1)[0].strip()
        if command.startswith(tuple(PROGRAMS)):
            lines.append(command.split(" | ")[0])
    return lines


ALL = [(name, example) for name, parser in parsers() for example in examples(parser)]


def test_every_subcommand_has_examples():
    bare = [name for name, parser in parsers() if " " in name and not examples(parser)]
    assert not bare


@pytest.mark.parametrize("name, example", ALL)
def test_example_parses(name, example):
    program, *argv = shlex.split(example)
    PROGRAMS[program].build_parser().parse_args(argv)  # argparse exits 2 on a wrong example


def _parses_in(block: str) -> list[str]:
    commands = []
    for line in block.splitlines():
        for part in re.split(r"&&|\|", line.split(" #", 1)[0]):
            words = part.strip()
            if words.startswith(tuple(PROGRAMS)) or words.startswith(".venv/bin/instahide"):
                commands.append(words.removeprefix(".venv/bin/"))
    return commands


README_COMMANDS = [c for block in re.findall(r"```bash\n(.*?)```", README, re.S) for c in _parses_in(block)]


@pytest.mark.parametrize("example", README_COMMANDS)
def test_readme_example_parses(example):
    program, *argv = shlex.split(example)
    PROGRAMS[program].build_parser().parse_args(argv)


def test_readme_examples_run(tmp_path, capsys):
    """The README's commands, in order, in an empty folder, generate made tiny: each one that needs
    no outside data (nor the output of one that does) runs and says or writes what it should."""
    unavailable, ran = set(), []
    for example in README_COMMANDS:
        program, *argv = shlex.split(example)
        out = argv[argv.index("--out") + 1].rstrip("/") if "--out" in argv else None
        if any(x in example for x in EXTERNAL) or any(Path(a).parts[0] in unavailable for a in argv if "/" in a):
            unavailable.add(out)  # made from data no test has: what reads it cannot run either
            continue
        with contextlib.chdir(tmp_path):
            code = PROGRAMS[program].main(argv + (SMALL if argv[0] == "generate" else []))
            output = capsys.readouterr()
            assert code == 0, f"{example}: {output.err}"
            check_output(argv, output.out)
        ran.append(example)
    assert len(ran) >= 4, ran  # the quick start and the practice round


def test_readme_names_every_command_and_baseline():
    subcommands = {name.split()[1] for name, _ in parsers() if name.startswith("instahide ") and name.count(" ") == 1}
    missing = sorted(c for c in subcommands if f"`instahide {c}" not in README)
    assert not missing
    table = re.search(r"`instahide baseline \{([a-z,]+)\}`", README)
    assert table and set(table.group(1).split(",")) == set(KINDS)


def test_top_level_help_lists_every_baseline_and_verify():
    text = instahide.build_parser().format_help()
    assert all(kind in text for kind in KINDS) and "verify" in text


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder holding what the examples name: a tiny practice release (as release/, r/), its key
    store (keys.zarr, revealed/keys.zarr), submissions (submission/, subs/a/, a/, b.zip), a seed file."""
    here = tmp_path_factory.mktemp("examples")
    with contextlib.chdir(here):
        assert instahide.main(["generate", "--out", "release", "--practice", "--seed", "examples",
                               "--n-private", "20", "--per-image", "5"]) == 0
        shutil.copytree("release", "r")
        shutil.copytree("release/secret/keys.zarr", "keys.zarr")
        shutil.copytree("release/secret/keys.zarr", "revealed/keys.zarr")
        for folder in ("submission", "subs/a", "a"):
            assert instahide.main(["baseline", "oracle", "--keys", "keys.zarr", "--out", folder]) == 0
        shutil.make_archive("b", "zip", "a")
    return here


RUNNABLE = [(n, e) for n, e in ALL if not any(x in e for x in EXTERNAL) and not e.startswith("instahide generate")]


@pytest.mark.parametrize("name, example", RUNNABLE)
def test_example_runs(workspace, name, example, capsys):
    """Each example, in order, on the tiny release (outputs of one example feed the next)."""
    program, *argv = shlex.split(example)
    argv = [a for word in argv for a in (sorted(glob.glob(word, root_dir=workspace)) if "*" in word else [word])]
    with contextlib.chdir(workspace):
        code = PROGRAMS[program].main(argv + (["--force"] if _replaces(argv) else []))
        output = capsys.readouterr()
        assert code == 0, output.err
        check_output(argv, output.out)


# what each command says on stdout: (its words without --json, the fields of its JSON)
SAYS = {
    "verify": (r"valid, (scored on \d+ encryptions|not scored)", {"valid": True}),
    "generate": (r"wrote \S+: \d+ encryptions", None),
    "leaderboard": (r"\| *1 *\|", None),
    "baseline": (r"wrote \S+/decryption.npy: \w+ baseline, 100 rows", {"rows": 100}),
    "bundle": (r"wrote \S+\.zip", None),
    "audit": (r"sound: every check passed", {"sound": True}),
    "reproduce": (r"reproduced: identical", {"identical": True}),
    "inspect": (r"commitment: sha256:[0-9a-f]{64}", None),
    "attack": (r"wrote \S+/decryption.npy: \w+ attack, 100 rows", {"rows": 100}),
    "strength": (r"wrote \S+strength.json", None),
    "docs": (r"FORMAT|^# ", None),
}


def check_output(argv: list[str], out: str) -> None:
    """What an example must say and write beyond exiting 0 (run in the folder it wrote to)."""
    command = argv[0] if argv[0] in SAYS else "verify"
    words, fields = SAYS[command]
    if "--json" in argv:
        report = json.loads(out)
        assert not fields or {k: report[k] for k in fields} == fields, (argv, out)
    else:
        assert re.search(words, out, re.M), (argv, out)
    written = argv[argv.index("--out") + 1] if "--out" in argv else {"bundle": "competition.zip", "leaderboard": "leaderboard"}.get(command)
    if written:  # a non-empty file or a folder that holds files
        assert Path(written).is_file() and Path(written).stat().st_size or any(p.is_file() for p in Path(written).rglob("*")), written
    if "--sheet" in argv:
        assert Path(argv[argv.index("--sheet") + 1]).read_bytes().startswith(b"\x89PNG"), argv


def _replaces(argv: list[str]) -> bool:
    """Examples that write an output an earlier example wrote: run them with --force."""
    return argv[0] in ("bundle", "attack", "strength", "leaderboard") or argv[:1] == ["baseline"]


@pytest.mark.parametrize("example", [e for _, e in ALL if e.startswith("instahide generate")
                                     and not any(x in e for x in EXTERNAL)])
def test_generate_example_runs(tmp_path, example, capsys):
    """generate's examples, made tiny (20 x 5 encryptions); the seed file is the one they name."""
    (tmp_path / "seed.txt").write_text(secrets.token_hex(32))
    program, *argv = shlex.split(example)
    with contextlib.chdir(tmp_path):
        code = instahide.main(argv + SMALL)
        output = capsys.readouterr()
        assert code == 0, output.err
        check_output(argv, output.out)


# --- the rest of consistency: what a user types where another thing was expected --------------------------

def _run(workspace, program, *argv, capsys) -> tuple[int, str, str]:
    with contextlib.chdir(workspace):
        code = PROGRAMS[program].main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("program, argv", [
    ("verify", ["submission", "--keys", "{given}"]),
    ("instahide", ["audit", "release", "--keys", "{given}"]),
    ("instahide", ["inspect", "release", "--keys", "{given}", "--sheet", "sheet.png"]),
    ("instahide", ["leaderboard", "submission", "--release", "release", "--keys", "{given}", "--out", "board"]),
])
@pytest.mark.parametrize("given, suggested", [("release", "release/secret/keys.zarr"),
                                              ("release/secret", "release/secret/keys.zarr")])
def test_release_given_as_keys_names_the_key_store(workspace, program, argv, given, suggested, capsys):
    code, _, err = _run(workspace, program, *[a.format(given=given) for a in argv], capsys=capsys)
    assert code == 2 and f"did you mean --keys {suggested}?" in err and len(err.strip().splitlines()) == 1


def test_public_folder_given_as_keys_says_where_keys_are(workspace, capsys):
    code, _, err = _run(workspace, "verify", "submission", "--keys", "release/public", capsys=capsys)
    assert code == 2 and "secret/keys.zarr" in err and "not a key store" in err


@pytest.mark.parametrize("keys", [[], ["--keys", "release/secret/keys.zarr"]])
def test_inspect_accepts_the_public_folder(workspace, keys, capsys):
    """inspect, like verify, takes the release or its public/ folder (what participants have)."""
    code, out, err = _run(workspace, "instahide", "inspect", "release/public", "--json", *keys,
                          "--sheet", "public-sheet.png", capsys=capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info.pop("sheet", None) == ("public-sheet.png" if keys else None) and info["n_encryptions"] == 100
    with contextlib.chdir(workspace):
        check_inspect_json(info, Path("release/public"), Path(keys[1]) if keys else None)
    assert not keys or info["key_store"]["matches_manifest"]


def test_reproduce_with_other_data_names_the_recorded_files(workspace, tmp_path, capsys):
    private = default_private()
    np.savez(tmp_path / "other.npz", images=private.images[::-1], labels=private.labels[::-1],
             class_names=np.array(private.class_names))
    code, _, err = _run(workspace, "instahide", "reproduce", "release", "--private", str(tmp_path / "other.npz"),
                        capsys=capsys)
    assert code == 2 and "different data" in err and "private_source.files): private.npz" in err


def test_leaderboard_and_baseline_json(workspace, capsys):
    code, out, err = _run(workspace, "instahide", "baseline", "noise", "--release", "release", "--out", "noisy",
                          "--force", "--json", capsys=capsys)
    assert code == 0 and json.loads(out) == {"baseline": "noise", "rows": 100, "file": "noisy/decryption.npy"}
    (workspace / "broken").mkdir(exist_ok=True)
    code, out, err = _run(workspace, "instahide", "leaderboard", "submission", "noisy", "broken", "--keys", "keys.zarr",
                          "--release", "release", "--out", "board-json", "--json", capsys=capsys)
    board = json.loads(out)
    assert code == 0 and [row["rank"] for row in board["ranked"] if not row["reference"]] == ["1", "2"]
    assert board["ranked"][0]["submission"] == "submission" and board["ranked"][0]["scores"]["Max_SSIM"] == 1.0
    assert [i["submission"] for i in board["invalid"]] == ["broken"] and board["invalid"][0]["problems"]
    assert "leaderboard.html" in " ".join(board["files"])


def test_version_and_docs(workspace, capsys):
    from challenge import __version__

    for program in PROGRAMS:
        with pytest.raises(SystemExit) as exit_:
            PROGRAMS[program].main(["--version"])
        assert exit_.value.code == 0 and capsys.readouterr().out.split()[-1] == __version__
    code, out, _ = _run(workspace, "instahide", "docs", capsys=capsys)
    assert code == 0 and {line.split()[0] for line in out.splitlines()} >= {"FORMAT", "AUDIT", "ATTACKS", "API"}
    code, out, _ = _run(workspace, "instahide", "docs", "api", capsys=capsys)
    assert code == 0 and out.startswith("# Python API")
