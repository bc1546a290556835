"""The Codabench bundle: its competition.yaml follows the platform's documented schema, and its scoring
program, run exactly as the platform lays out its folders, scores a submission or refuses it in one line.

Sources of the schema checked here (Codabench v2):
* docs.codabench.org/latest/Organizers/Benchmark_Creation/Yaml-Structure: ``version: 2``; required
  ``title``, ``image``, ``terms``; optional ``description``, ``docker_image``, ...
* docs.codabench.org/latest/Organizers/Benchmark_Creation/Competition-Bundle-Structure: files are
  referenced by their path in the bundle; ``pages`` are ``title`` + ``file``.
* the Leaderboard-Functionality page: columns ``title``, ``key``, ``index``, ``sorting`` (asc/desc),
  the column at index 0 ranks, ``submission_rule`` one of six values; ``scores.json`` maps keys to numbers.
* codalab/codabench ``src/apps/competitions/unpackers/v2.py``: ``tasks`` need ``index`` and
  ``scoring_program``; ``phases`` need ``tasks``, and a phase followed by another needs an ``end`` not
  after the next ``start``; ``solutions`` need ``index``, ``tasks``, ``path``; ``leaderboards`` required.
* codalab/codabench ``compute_worker/compute_worker.py``: the program's ``metadata.yaml`` ``command``
  runs in ``/app/program`` with ``$program``, ``$input``, ``$output`` replaced by ``/app/program``,
  ``/app/input``, ``/app/output``; reference data unzipped in ``input/ref``, the submission in
  ``input/res``; scores read from ``output/scores.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from challenge.errors import UsageError
from challenge.format import open_key_store
from verifier.baselines import write_baseline
from verifier.bundle import COLUMNS, make_bundle
from verifier.scoring import HEADLINE, platform_scores, score
from challenge.submission import Expected

yaml = pytest.importorskip("yaml")  # what the platform parses competition.yaml with

SUBMISSION_RULES = {"Add", "Add_And_Delete", "Add_And_Delete_Multiple", "Force_Last", "Force_Latest_Multiple",
                    "Force_Best"}


def unzip(path: Path, folder: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    return folder


@pytest.fixture(scope="module")
def bundle(tiny_release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    path = make_bundle(tiny_release, tiny_release / "secret" / "keys.zarr", out / "competition.zip")
    return unzip(path, out / "unpacked")


@pytest.fixture(scope="module")
def platform(bundle, tmp_path_factory):
    """Run the scoring program as Codabench does: program, input/ref, input/res, output under /app."""
    app = tmp_path_factory.mktemp("app")
    shutil.copytree(bundle / "scoring_program", app / "program")  # kept: numba caches its kernels there
    shutil.copytree(bundle / "reference_data", app / "input" / "ref")

    def run(submission: Path | None, program: Path = app / "program") -> tuple[subprocess.CompletedProcess, Path]:
        for name in ("res", "output"):
            shutil.rmtree(app / ("input" if name == "res" else "") / name, ignore_errors=True)
        res, output = app / "input" / "res", app / "output"
        output.mkdir()
        if submission is not None and submission.suffix == ".zip":
            unzip(submission, res)  # the platform unzips every submission
        elif submission is not None:
            shutil.copytree(submission, res)
        command = yaml.safe_load((program / "metadata.yaml").read_text())["command"]
        for var, value in (("$program", program), ("$input", app / "input"), ("$output", output)):
            command = command.replace(var, str(value))
        # -S: no site-packages hooks, so this project's own (editable) install is invisible; the third-party
        # libraries come from PYTHONPATH, as they would from the docker image.
        argv = [sys.executable, "-S", *command.split()[1:]]
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": sysconfig.get_paths()["purelib"], "HOME": str(app)}
        done = subprocess.run(argv, cwd=program, env=env, capture_output=True, text=True, timeout=300)
        return done, output

    return run


def zipped(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return out


def test_competition_yaml_follows_the_documented_schema(bundle):
    doc = yaml.safe_load((bundle / "competition.yaml").read_text())
    assert doc["version"] == 2
    for field in ("title", "image", "terms"):  # required
        assert isinstance(doc[field], str) and doc[field]
    assert isinstance(doc["description"], str) and isinstance(doc["docker_image"], str)
    assert (bundle / doc["image"]).stat().st_size > 0 and (bundle / doc["terms"]).read_text().strip()
    for page in doc["pages"]:
        assert isinstance(page["title"], str) and (bundle / page["file"]).read_text().strip()
    tasks = {task["index"]: task for task in doc["tasks"]}
    assert len(tasks) == len(doc["tasks"])
    for task in doc["tasks"]:
        assert isinstance(task["index"], int) and isinstance(task["name"], str)
        assert (bundle / task["scoring_program"] / "metadata.yaml").is_file()
        assert (bundle / task["reference_data"]).is_dir()
    for solution in doc["solutions"]:
        assert isinstance(solution["index"], int) and (bundle / solution["path"]).is_file()
        assert set(solution["tasks"]) <= set(tasks)
    for phase in doc["phases"]:
        assert isinstance(phase["index"], int) and isinstance(phase["name"], str)
        date.fromisoformat(phase["start"])
        assert phase["tasks"] and set(phase["tasks"]) <= set(tasks)
        for folder in ("starting_kit", "public_data"):
            if folder in phase:
                assert (bundle / phase[folder]).is_dir()
    (board,) = doc["leaderboards"]
    assert isinstance(board["title"], str) and isinstance(board["key"], str)
    assert board["submission_rule"] in SUBMISSION_RULES
    columns = sorted(board["columns"], key=lambda c: c["index"])
    assert [c["index"] for c in columns] == list(range(len(columns)))
    assert [c["key"] for c in columns] == list(HEADLINE) and columns[0]["key"] == "Max_SSIM"  # index 0 ranks
    for column in columns:
        assert isinstance(column["title"], str) and len(column["key"]) <= 36  # Column.key is max_length=36
        assert column["sorting"] == dict(COLUMNS)[column["key"]] and column["sorting"] in ("asc", "desc")
    program = yaml.safe_load((bundle / "scoring_program" / "metadata.yaml").read_text())
    assert isinstance(program["command"], str) and "score.py" in program["command"]


def test_bundle_holds_what_scoring_and_participants_need(bundle, tiny_release):
    assert sorted(p.name for p in (bundle / "reference_data").iterdir()) == ["keys.zarr", "manifest.json"]
    assert sorted(p.name for p in (bundle / "public_data").iterdir()) == sorted(
        p.name for p in (tiny_release / "public").iterdir())
    assert {"README.md", "sample_submission.zip"} <= {p.name for p in (bundle / "starting_kit").iterdir()}
    assert "verify" in (bundle / "starting_kit" / "README.md").read_text()
    assert "Max_SSIM" in (bundle / "pages" / "evaluation.md").read_text()
    lib = bundle / "scoring_program" / "lib"
    assert (lib / "verifier" / "scoring.py").is_file() and (lib / "challenge" / "format.py").is_file()
    assert "numba==" in (bundle / "scoring_program" / "requirements.txt").read_text()


def test_our_package_is_not_importable_without_the_bundle(platform, tmp_path):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    done = subprocess.run([sys.executable, "-S", "-c", "import verifier"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "No module named 'verifier'" in done.stderr


def test_scoring_program_scores_the_sample_submission(platform, bundle, tiny_release, tmp_path):
    done, output = platform(bundle / "starting_kit" / "sample_submission.zip")
    assert done.returncode == 0, done.stderr
    scores = json.loads((output / "scores.json").read_text())
    assert list(scores) == list(HEADLINE)
    folder = unzip(bundle / "starting_kit" / "sample_submission.zip", tmp_path / "sample")
    store = open_key_store(tiny_release / "secret" / "keys.zarr")
    validation, expected = score(folder, store)
    assert validation.valid and scores == platform_scores(expected)  # exactly what verify publishes
    assert (output / "scores.txt").is_file() and "Max_SSIM" in done.stdout


def test_scoring_program_scores_the_oracle(platform, tiny_release, tmp_path):
    store = open_key_store(tiny_release / "secret" / "keys.zarr")
    write_baseline("oracle", tmp_path / "oracle", Expected(100, store.params.domain, (32, 32, 3)), store=store)
    done, output = platform(zipped(tmp_path / "oracle", tmp_path / "oracle.zip"))
    assert done.returncode == 0, done.stderr
    scores = json.loads((output / "scores.json").read_text())
    assert scores["Max_SSIM"] == 1.0 and scores["Min_L2"] == 0.0 and scores["recovered_share"] == 1.0


@pytest.mark.parametrize("case, words", [
    ("shape", ["invalid submission", "shape (3, 32, 32, 3)"]),
    ("npz", ["decryption.npy: missing", "np.savez"]),
    ("folder", ["decryption.npy: missing", "not their folder"]),
    ("empty", ["decryption.npy: missing"]),
])
def test_invalid_submission_exits_2_with_one_line(platform, tmp_path, case, words):
    sub = tmp_path / "sub"
    sub.mkdir()
    if case == "shape":
        np.save(sub / "decryption.npy", np.zeros((3, 32, 32, 3), np.float32))
    elif case == "npz":
        np.savez(sub / "decryption.npz", x=np.zeros(3))
    elif case == "folder":
        (sub / "inner").mkdir()
        np.save(sub / "inner" / "decryption.npy", np.zeros((3, 32, 32, 3), np.float32))
    done, output = platform(sub)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("score.py: error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (output / "scores.json").exists()


def test_missing_reference_data_exits_2_with_one_line(platform, bundle, tmp_path):
    program = tmp_path / "program"
    shutil.copytree(bundle / "scoring_program", program)
    app_ref = program.parent  # an input folder without ref/: a misconfigured task
    done = subprocess.run([sys.executable, "-S", str(program / "score.py"), str(app_ref / "nothing"), str(tmp_path)],
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": sysconfig.get_paths()["purelib"],
                               "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "not a release" in done.stderr


def test_missing_libraries_are_named_in_one_line(bundle, tmp_path):
    done = subprocess.run([sys.executable, "-S", str(bundle / "scoring_program" / "score.py"), "in", "out"],
                          env={"PATH": os.environ["PATH"]}, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "cannot import numpy" in done.stderr and "requirements.txt" in done.stderr


def test_holdout_bundle_has_two_phases(tiny_release, tmp_path):
    keys = tiny_release / "secret" / "keys.zarr"
    with pytest.raises(UsageError, match="end date"):
        make_bundle(tiny_release, keys, tmp_path / "c.zip", holdout=0.5)
    path = make_bundle(tiny_release, keys, tmp_path / "c.zip", holdout=0.5, start=date(2027, 1, 1),
                       end=date(2027, 3, 1))
    bundle = unzip(path, tmp_path / "unpacked")
    doc = yaml.safe_load((bundle / "competition.yaml").read_text())
    first, final = doc["phases"]
    assert first["end"] <= final["start"] and first["tasks"] == [0] and final["tasks"] == [1]
    commands = [yaml.safe_load((bundle / t["scoring_program"] / "metadata.yaml").read_text())["command"]
                for t in doc["tasks"]]
    assert "--part public" in commands[0] and "--part final" in commands[1]
    with pytest.raises(UsageError, match="already exists"):
        make_bundle(tiny_release, keys, path)


def test_keys_of_another_release_are_refused(tiny_release, tmp_path, private_set, public_bank):
    from generator.release import generate
    from tests.helpers import TINY

    other = tmp_path / "other"
    generate(other, TINY, bytes(range(1, 33)), private_set, public_bank)
    with pytest.raises(UsageError, match="commitment"):
        make_bundle(tiny_release, other / "secret" / "keys.zarr", tmp_path / "c.zip")
    assert not (tmp_path / "c.zip").exists()


def test_bundle_command(tmp_path, tiny_release):
    from tests.helpers import run_cli

    out = tmp_path / "competition.zip"
    args = ("bundle", str(tiny_release), "--keys", str(tiny_release / "secret" / "keys.zarr"), "--out", str(out))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "competition.yaml" in zipfile.ZipFile(out).namelist()
    again = run_cli(*args)
    assert again.returncode == 2 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
