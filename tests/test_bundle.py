"""The Codabench bundle: what it holds (and what it never lets out), its competition.yaml against the
platform's own unpacker, and its scoring program run exactly as the platform lays out its folders.

The platform (codalab/codabench ``compute_worker/compute_worker.py``) runs the program's
``metadata.yaml`` ``command`` with ``$program``, ``$input``, ``$output`` replaced by ``/app/program``,
``/app/input``, ``/app/output``; the reference data is unzipped in ``input/ref``, the submission in
``input/res``; the scores are read from ``output/scores.json``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest

from challenge.errors import UsageError
from challenge.format import open_key_store
from challenge.submission import Expected
from tests.helpers import extra_module, run_cli
from verifier.baselines import write_baseline
from verifier.bundle import DEFAULT_DOCKER_IMAGE, make_bundle
from verifier.scoring import METRICS, headline, platform_scores, score

# --- what codalab/codabench's v2 unpacker (src/apps/competitions/unpackers/v2.py, base_unpacker.py) and the
# models it saves into require, written down by us: a bundle that breaks one of these is refused at upload.
SUBMISSION_RULES = {"Add", "Add_And_Delete", "Add_And_Delete_Multiple", "Force_Last", "Force_Latest_Multiple",
                    "Force_Best"}  # leaderboards/models.py Leaderboard.SUBMISSION_RULES


def unpacker_problems(doc: dict, root: Path) -> list[str]:
    """Why the platform's v2 unpacker (or the models it fills) would refuse ``doc``; empty if it would not."""
    problems = []

    def need(ok, message):
        if not ok:
            problems.append(message)

    def file_with_content(name):
        path = root / name if isinstance(name, str) else None
        return path is not None and path.is_file() and path.read_bytes().strip() != b""

    need(doc.get("version") == 2, "version: expected 2")
    need(isinstance(doc.get("title"), str) and doc["title"], "title: a string")
    need(isinstance(doc.get("docker_image", ""), str) and len(doc.get("docker_image", "")) <= 128,
         "docker_image: at most 128 characters (Competition.docker_image)")
    for field in ("registration_auto_approve", "make_programs_available", "enable_detailed_results",
                  "auto_run_submissions", "can_participants_make_submissions_public", "forum_enabled"):
        need(type(doc.get(field, False)) is bool, f"{field}: a boolean")  # BooleanFields, read with .get
    need(isinstance(doc.get("description", ""), str), "description: a string")
    need(file_with_content(doc.get("image")), "image: a file of the bundle")
    need(file_with_content(doc.get("terms")), "terms: a non-empty file")
    for page in doc.get("pages") or []:
        need(file_with_content(page.get("file")), f"pages: {page.get('file')}: a non-empty file")
        need(isinstance(page.get("title"), str), "pages: each needs a title")
    tasks = doc.get("tasks")
    need(isinstance(tasks, list) and tasks, "tasks: required")
    indexes = [t.get("index") for t in tasks or []]
    need(None not in indexes and len(set(indexes)) == len(indexes), "tasks: each needs a distinct index")
    for task in tasks or []:
        need("key" in task or "scoring_program" in task, f"task {task.get('index')}: needs a scoring_program")
        for kind in ("scoring_program", "reference_data", "ingestion_program", "input_data"):
            if kind in task:
                need((root / task[kind]).exists(), f"task {task.get('index')}: {kind} {task[kind]} missing")
    for solution in doc.get("solutions") or []:
        need("index" in solution and "tasks" in solution and "path" in solution, "solutions: index, tasks, path")
        need(set(solution.get("tasks", [])) <= set(indexes), "solutions: tasks must be task indexes")
        need((root / solution.get("path", "")).is_file(), "solutions: path must be a file of the bundle")
    phases = sorted(doc.get("phases") or [], key=lambda p: p.get("index", 0))
    need(phases, "phases: required")
    times = []
    for phase in phases:
        need(phase.get("tasks") and set(phase["tasks"]) <= set(indexes), f"phase {phase.get('name')}: tasks")
        for field in ("max_submissions_per_day", "max_submissions", "execution_time_limit"):
            value = phase.get(field)  # PositiveIntegerField; 0 would mean "no limit" to the platform's check
            need(value is None or (type(value) is int and value > 0), f"phase {phase.get('name')}: {field}")
        need(type(phase.get("auto_migrate_to_this_phase", False)) is bool, "auto_migrate_to_this_phase: a boolean")
        for folder in ("public_data", "starting_kit"):
            if folder in phase:
                need((root / phase[folder]).exists(), f"phase {phase.get('name')}: {folder} missing")
        times.append((datetime.fromisoformat(phase["start"]), phase.get("end") and datetime.fromisoformat(phase["end"])))
    for (_, end), (next_start, _) in zip(times, times[1:]):  # base_unpacker._validate_phase_ordering
        need(end is not None and next_start > end, "phases: each ends strictly before the next starts")
    boards = doc.get("leaderboards")
    need(isinstance(boards, list) and boards, "leaderboards: required")
    for board in boards or []:
        need(isinstance(board.get("title"), str) and len(board["title"]) <= 64, "leaderboard title: <= 64 characters")
        need(isinstance(board.get("key"), str) and len(board["key"]) <= 36, "leaderboard key: <= 36 characters")
        need(board.get("submission_rule", "Add") in SUBMISSION_RULES, "leaderboard submission_rule")
        keys = [c.get("key") for c in board.get("columns", [])]
        need(len(set(keys)) == len(keys), "columns: distinct keys")
        for column in board.get("columns", []):
            need(len(column.get("title", "")) <= 36 and len(column.get("key", "")) <= 36, "column title/key <= 36")
            need(column.get("sorting") in ("asc", "desc") and type(column.get("index")) is int, "column sorting/index")
            need(type(column.get("precision", 2)) is int, "column precision: an integer")
    return problems


def unzip(path: Path, folder: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    return folder


def zipped(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return out


def keys_of(release: Path) -> Path:
    return release / "secret" / "keys.zarr"


def run_program(python: str, program: Path, ref: Path, submission: Path | None, app: Path, *flags: str):
    """Lay out ``app`` as the platform does and run the program's command there; (process, output folder)."""
    for name in ("input", "output"):
        shutil.rmtree(app / name, ignore_errors=True)
    (app / "input").mkdir(parents=True)
    (app / "output").mkdir()
    shutil.copytree(ref, app / "input" / "ref")
    res = app / "input" / "res"
    if submission is not None and submission.suffix == ".zip":
        unzip(submission, res)  # the platform unzips every submission
    elif submission is not None:
        shutil.copytree(submission, res)
    else:
        res.mkdir()
    command = (program / "metadata.yaml").read_text().split("command:", 1)[1].strip().strip('"')
    for var, value in (("$program", program), ("$input", app / "input"), ("$output", app / "output")):
        command = command.replace(var, str(value))
    argv = [python, "-I", *command.split()[1:], *flags]
    done = subprocess.run(argv, cwd=program, env={"PATH": os.environ["PATH"], "HOME": str(app)},
                          capture_output=True, text=True, timeout=300)
    return done, app / "output"


@pytest.fixture(scope="module")
def bundle_zip(tiny_release, tmp_path_factory) -> Path:
    return make_bundle(tiny_release, keys_of(tiny_release), tmp_path_factory.mktemp("bundle") / "competition.zip")


@pytest.fixture(scope="module")
def bundle(bundle_zip) -> Path:
    return unzip(bundle_zip, bundle_zip.parent / "unpacked")


@pytest.fixture(scope="module")
def platform(bundle, tmp_path_factory):
    app = tmp_path_factory.mktemp("app")
    program = shutil.copytree(bundle / "scoring_program", app / "program")

    def run(submission: Path | None, ref: Path = bundle / "reference_data"):
        return run_program(sys.executable, program, ref, submission, app)
    return run


def test_competition_yaml_passes_the_platforms_unpacker(bundle):
    yaml = extra_module("yaml")  # what the platform parses competition.yaml with
    doc = yaml.safe_load((bundle / "competition.yaml").read_text())
    assert unpacker_problems(doc, bundle) == []
    assert doc["docker_image"] == DEFAULT_DOCKER_IMAGE and doc["docker_image"].startswith("codalab/codalab-legacy:")
    (board,) = doc["leaderboards"]
    columns = sorted(board["columns"], key=lambda c: c["index"])
    assert [c["key"] for c in columns] == list(headline()) and columns[0]["key"] == "Max_SSIM"  # index 0 ranks
    assert [c["sorting"] for c in columns] == [{"higher": "desc", "lower": "asc"}[m.better] for m in METRICS]
    (phase,) = doc["phases"]
    assert phase["max_submissions_per_day"] == 2 and phase["max_submissions"] == 40
    assert phase["execution_time_limit"] >= 120


def test_unpacker_rules_can_fail(bundle):
    """The rules above find what the platform refuses (so the test above can fail)."""
    yaml = extra_module("yaml")
    doc = yaml.safe_load((bundle / "competition.yaml").read_text())
    broken = json.loads(json.dumps(doc))
    broken["phases"].append({**broken["phases"][0], "index": 1, "start": broken["phases"][0]["start"]})
    broken["tasks"][0].pop("scoring_program")
    broken["leaderboards"][0]["columns"][0]["key"] = "x" * 37
    broken["phases"][0]["max_submissions_per_day"] = 0
    broken["make_programs_available"] = "yes"
    found = " | ".join(unpacker_problems(broken, bundle))
    for words in ("ends strictly before", "scoring_program", "<= 36", "max_submissions_per_day", "a boolean"):
        assert words in found


def test_bundle_holds_what_scoring_and_participants_need_and_no_more(bundle, bundle_zip, tiny_release):
    assert bundle_zip.stat().st_mode & 0o777 == 0o600  # it holds the keys
    assert sorted(p.name for p in (bundle / "scoring_program").iterdir()) == [
        "check_submission.py", "manifest.json", "metadata.yaml", "score.py"]
    reference = sorted(p.relative_to(bundle / "reference_data").as_posix()
                       for p in (bundle / "reference_data").rglob("*") if p.is_file())
    store = open_key_store(keys_of(tiny_release))
    from challenge.format import key_schema
    assert reference == sorted([f"{name}.npy" for name in key_schema(store.params)] + ["attributes.json"])
    assert sorted(p.name for p in (bundle / "public_data").iterdir()) == [
        "encryption.npy", "label.npy", "manifest.json", "preview.png"]
    for name in ("encryption.npy", "manifest.json"):
        assert (bundle / "public_data" / name).read_bytes() == (tiny_release / "public" / name).read_bytes()
    assert sorted(p.name for p in (bundle / "starting_kit").iterdir()) == [
        "README.md", "check_submission.py", "sample_submission.zip"]
    with zipfile.ZipFile(bundle / "starting_kit" / "sample_submission.zip") as zf:
        assert sorted(zf.namelist()) == ["decryption.npy", "metadata.json"]
        header = zf.read("decryption.npy")[:128]
        assert b"'|u1'" in header  # uint8: a quarter of float32's size
    assert "check_submission.py" in (bundle / "starting_kit" / "README.md").read_text()


def test_nothing_private_leaves_reference_data(bundle_zip, tiny_release):
    """Red team on a good bundle: no private image, no seed, no key byte outside reference_data/."""
    store = open_key_store(keys_of(tiny_release))
    seed = bytes(store.read("seed"))
    images = store.read("private/images")
    with zipfile.ZipFile(bundle_zip) as zf:
        public = {name: zf.read(name) for name in zf.namelist() if not name.startswith("reference_data/")}
    for name in [n for n in public if n.endswith(".zip")]:  # the sample submission: look inside too
        with zipfile.ZipFile(io.BytesIO(public[name])) as inner:
            public.update({f"{name}:{m}": inner.read(m) for m in inner.namelist()})
    assert "starting_kit/sample_submission.zip:decryption.npy" in public
    for name, data in public.items():
        assert seed not in data and seed.hex().encode() not in data, name
        assert not any(image.tobytes()[:256] in data for image in images), name
    assert not any("keys" in name or name.endswith(".zarr") for name in public)


def red_team_plants(release: Path):
    keys = keys_of(release)
    yield "keys.zarr/zarr.json", lambda: shutil.copytree(keys, release / "public" / "keys.zarr")
    yield "board/images/1.png", lambda: (release / "public" / "board" / "images").mkdir(parents=True) or (
        release / "public" / "board" / "images" / "1.png").write_bytes(
        open_key_store(keys).read("private/images")[0].tobytes())
    yield "truth.png", lambda: (release / "public" / "truth.png").write_bytes(b"\x89PNG sheet of ground truth")


@pytest.mark.parametrize("plant", ["keys.zarr/zarr.json", "board/images/1.png", "truth.png"])
def test_red_team_files_planted_in_public_are_refused(tiny_release, tmp_path, plant):
    release = shutil.copytree(tiny_release, tmp_path / "release")
    dict(red_team_plants(release))[plant]()
    out = tmp_path / "out" / "competition.zip"
    out.parent.mkdir()
    done = run_cli("bundle", str(release), "--keys", str(keys_of(release)), "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and f"public/{plant.split('/')[0]}" in done.stderr and "audit" in done.stderr
    assert list(out.parent.iterdir()) == []


def test_scoring_program_scores_the_sample_submission_as_verify(platform, bundle, tiny_release, tmp_path):
    done, output = platform(bundle / "starting_kit" / "sample_submission.zip")
    assert done.returncode == 0, done.stderr
    scores = json.loads((output / "scores.json").read_text())
    assert list(scores) == list(headline())
    folder = unzip(bundle / "starting_kit" / "sample_submission.zip", tmp_path / "sample")
    validation, expected = score(folder, open_key_store(keys_of(tiny_release)))
    assert validation.valid and scores == platform_scores(expected)
    assert (output / "scores.txt").read_text().splitlines()[0].startswith("Max_SSIM: ")


def test_scoring_program_scores_the_oracle(platform, tiny_release, tmp_path):
    store = open_key_store(keys_of(tiny_release))
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


def test_reference_data_of_another_release_does_not_score(platform, bundle, tmp_path, private_set, public_bank):
    """Issue 19: foreign keys in the scoring program exit 2 naming both commitments; so does one changed byte."""
    from generator.release import generate
    from tests.helpers import TINY

    other = tmp_path / "other"
    generate(other, TINY, seed=bytes(range(1, 33)), private=private_set, public=public_bank)
    foreign = make_bundle(other, keys_of(other), tmp_path / "other.zip")
    ref = unzip(foreign, tmp_path / "foreign") / "reference_data"
    sample = bundle / "starting_kit" / "sample_submission.zip"
    done, output = platform(sample, ref)
    mine = json.loads((bundle / "scoring_program" / "manifest.json").read_text())["key_store"]["commitment"]
    theirs = json.loads((other / "public" / "manifest.json").read_text())["key_store"]["commitment"]
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert mine in done.stderr and theirs in done.stderr and "not this release's keys" in done.stderr
    assert not (output / "scores.json").exists()
    changed = shutil.copytree(bundle / "reference_data", tmp_path / "changed")
    lam = np.load(changed / "encryption" / "lam.npy")
    lam[0, 0] = np.nextafter(lam[0, 0], np.float32(1))
    np.save(changed / "encryption" / "lam.npy", lam)
    done, _ = platform(sample, changed)
    assert done.returncode == 2 and "not this release's keys" in done.stderr


def test_holdout_bundle_has_a_final_phase_that_rescores(tiny_release, tmp_path):
    yaml = extra_module("yaml")
    keys = keys_of(tiny_release)
    with pytest.raises(UsageError, match="end date"):
        make_bundle(tiny_release, keys, tmp_path / "c.zip", holdout=0.5)
    path = make_bundle(tiny_release, keys, tmp_path / "c.zip", holdout=0.5, start=date(2027, 1, 1),
                       end=date(2027, 3, 1), per_day=3, total=20)
    bundle = unzip(path, tmp_path / "unpacked")
    doc = yaml.safe_load((bundle / "competition.yaml").read_text())
    assert unpacker_problems(doc, bundle) == []
    first, final = doc["phases"]
    assert first["tasks"] == [0] and final["tasks"] == [1] and final["auto_migrate_to_this_phase"] is True
    assert (first["max_submissions_per_day"], first["max_submissions"]) == (3, 20)
    assert final["max_submissions"] == 1 and "auto_migrate_to_this_phase" not in first
    commands = [(bundle / t["scoring_program"] / "metadata.yaml").read_text() for t in doc["tasks"]]
    assert "--part public" in commands[0] and "--part final" in commands[1]
    app = tmp_path / "app"
    sample = bundle / "starting_kit" / "sample_submission.zip"
    scores = {}
    for part, task in zip(("public", "final"), doc["tasks"]):
        done, output = run_program(sys.executable, bundle / task["scoring_program"], bundle / "reference_data",
                                   sample, app)
        assert done.returncode == 0, done.stderr
        scores[part] = json.loads((output / "scores.json").read_text())
    store = open_key_store(keys)
    from verifier.scoring import selected_rows
    folder = unzip(sample, tmp_path / "sample")
    for part in ("public", "final"):
        _, expected = score(folder, store, selected=selected_rows(store, 0.5, part))
        assert scores[part] == platform_scores(expected)
    assert scores["public"] != scores["final"]
    with pytest.raises(UsageError, match="already exists"):
        make_bundle(tiny_release, keys, path)


@pytest.mark.parametrize("start, end", [("2027-03-01", "2027-03-01"), ("2027-03-02", "2027-03-01")])
def test_start_must_come_before_end(tiny_release, tmp_path, start, end):
    done = run_cli("bundle", str(tiny_release), "--keys", str(keys_of(tiny_release)), "--out", str(tmp_path / "c.zip"),
                   "--start", start, "--end", end)
    assert done.returncode == 2 and "is not after --start" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "c.zip").exists()


def test_keys_of_another_release_are_refused(tiny_release, tmp_path, private_set, public_bank):
    from generator.release import generate
    from tests.helpers import TINY

    other = tmp_path / "other"
    generate(other, TINY, seed=bytes(range(1, 33)), private=private_set, public=public_bank)
    with pytest.raises(UsageError, match="commitment"):
        make_bundle(tiny_release, keys_of(other), tmp_path / "c.zip")
    assert not (tmp_path / "c.zip").exists()


@pytest.mark.parametrize("where", ["public", "release", "keys", "other release"])
def test_out_inside_a_release_or_key_store_is_refused(tiny_release, tmp_path, where):
    release = shutil.copytree(tiny_release, tmp_path / "release")
    other = shutil.copytree(tiny_release, tmp_path / "other")
    out = {"public": release / "public" / "comp.zip", "release": release / "comp.zip",
           "keys": keys_of(release) / "comp.zip", "other release": other / "secret" / "comp.zip"}[where]
    done = run_cli("bundle", str(release), "--keys", str(keys_of(release)), "--out", str(out))
    assert done.returncode == 2 and "choose a path outside it" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not out.exists() and not list(out.parent.glob(".comp.zip*"))


_KILLED = """
import os, signal, sys, zipfile
from verifier import bundle

write = zipfile.ZipFile.write
def write_then_die(self, path, name=None, *args, **kwargs):
    write(self, path, name, *args, **kwargs)
    if name and name.startswith("reference_data/"):  # half a zip with the keys in it: killed here
        os.kill(os.getpid(), signal.SIGKILL)
zipfile.ZipFile.write = write_then_die
bundle.make_bundle(sys.argv[1], sys.argv[2], sys.argv[3])
"""


def test_a_killed_run_leaves_only_its_0700_folder_which_the_next_run_removes(tiny_release, tmp_path):
    out = tmp_path / "out" / "competition.zip"
    out.parent.mkdir()
    killed = subprocess.run([sys.executable, "-c", _KILLED, str(tiny_release), str(keys_of(tiny_release)), str(out)],
                            capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (left,) = out.parent.iterdir()
    assert re.fullmatch(r"\.competition\.zip\.bundle-\d+", left.name), left.name
    assert left.is_dir() and left.stat().st_mode & 0o777 == 0o700
    done = run_cli("bundle", str(tiny_release), "--keys", str(keys_of(tiny_release)), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.parent.iterdir()] == ["competition.zip"]


def test_a_full_disk_is_one_line_and_leaves_nothing(tiny_release, tmp_path, monkeypatch):
    def full(self, path, name=None, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(zipfile.ZipFile, "write", full)
    out = tmp_path / "out" / "competition.zip"
    out.parent.mkdir()
    with pytest.raises(UsageError) as e:
        make_bundle(tiny_release, keys_of(tiny_release), out)
    assert "cannot write the bundle" in str(e.value) and "No space left on device" in str(e.value)
    assert "\n" not in str(e.value) and list(out.parent.iterdir()) == []


def test_bundle_command(tmp_path, tiny_release):
    out = tmp_path / "competition.zip"
    args = ("bundle", str(tiny_release), "--keys", str(keys_of(tiny_release)), "--out", str(out))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "competition.yaml" in zipfile.ZipFile(out).namelist() and "never publish" in first.stdout
    again = run_cli(*args)
    assert again.returncode == 2 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
