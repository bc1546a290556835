"""A Codabench competition bundle for a release, with a scoring program that runs on the platform's
stock images.

:func:`make_bundle` writes ``competition.zip``, a Codabench v2 bundle (the fields are those the
platform's v2 unpacker reads, ``src/apps/competitions/unpackers/v2.py`` of codalab/codabench)::

    competition.yaml         version 2: title, description, image, terms, pages, tasks, solutions,
                             phases (submission limits, time limit), leaderboards (Max_SSIM first)
    logo.png                 the release's preview.png
    pages/                   overview.md, data.md, evaluation.md (the metrics), terms.md
    scoring_program/         score.py, check_submission.py, manifest.json (public), metadata.yaml
    reference_data/          every key-store array as .npy and attributes.json: SECRET, never shown
    public_data/             encryption.npy, label.npy, preview.png, manifest.json (the release's files)
    starting_kit/            README.md, check_submission.py, sample_submission.zip (uint8); with --wheel,
                             this tool's wheel (the version that made the bundle) and a Dockerfile with it

The bundle holds the keys: it is written 0600 and must go only to the platform.  The platform runs
the scoring program in the competition's ``docker_image`` with the submission, unzipped, in
``input/res``, the reference data in ``input/ref`` and reads ``output/scores.json``
(``compute_worker/compute_worker.py`` of codalab/codabench).  The program (``verifier/codabench/``,
shipped as it is) needs Python >= 3.9 and numpy >= 1.21 only, so it runs on the stock image
:data:`DEFAULT_DOCKER_IMAGE`; before scoring it recomputes the commitment of the reference data with
hashlib and refuses keys that are not the ones the manifest commits to.

Nothing is copied by walking a folder: the public files are the manifest's own list (after the
release passes :func:`verifier.audit.audit`, which refuses any file in ``public/`` the manifest does
not list), the reference data is written from the opened key store.  The zip is assembled in a
0700 folder beside ``--out`` and renamed into place; a killed run leaves only that folder, which the
next run removes.  Before renaming, the bundle's own scoring program scores the sample submission,
and must give ``verify``'s scores; its time sets the phases' ``execution_time_limit``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from challenge import __version__
from challenge import format as fmt
from challenge.domain import to_uint8
from challenge.errors import UsageError, argument
from challenge.manifest import Manifest
from challenge.submission import (DECRYPTION_FILE, METADATA_FILE, encryption_blocks, expected_from_params,
                                  open_for_scoring, write_submission)
from challenge.places import check_output
from challenge.text import printable
from verifier.audit import audit
from verifier.baselines import blind
from verifier.scoring import DECIMALS, METRICS, platform_scores, score, selected_rows
from verifier.submission import METADATA_FIELDS

__all__ = ["DEFAULT_DOCKER_IMAGE", "DEFAULT_PER_DAY", "DEFAULT_TOTAL", "PROGRAM", "PUBLIC_FILES",
           "competition", "make_bundle", "to_yaml"]

# codalab/codalab-dockers Dockerfiles/Dockerfile-py312: Python 3.12, numpy 1.26.4 (and scipy, pandas, ...);
# the newest of the stock CPU images.  The program also runs on :py39 (Anaconda 2022.05: Python 3.9, numpy 1.21).
DEFAULT_DOCKER_IMAGE = "codalab/codalab-legacy:py312"
PROGRAM = Path(__file__).resolve().parent / "codabench"  # the scoring program's files, shipped as they are
PROGRAM_FILES = ("score.py", "check_submission.py")
PUBLIC_FILES = (fmt.ENCRYPTION_FILE, fmt.LABEL_FILE, fmt.PREVIEW_FILE)  # + manifest.json; not the zarr copy
ATTRIBUTES_FILE = "attributes.json"
# Submission limits: every score is a membership test of the submitted images (recovered_share counts the
# private images matched), so each submission is one group test of up to N candidates; see the README.
DEFAULT_PER_DAY = 2
DEFAULT_TOTAL = 40
TIME_MARGIN = 10  # execution_time_limit = this many times the measured scoring time of the sample ...
MIN_TIME_LIMIT = 120  # ... and at least this many seconds (a cold container, a busy worker)
COMMAND = "python3 $program/score.py $input $output"  # $program, $input, $output: the platform's mount points
STAGING = ".{name}.bundle-"  # + pid: the run's 0700 work folder beside --out
WHEEL_NAME = f"instahide_challenge-{__version__}-py3-none-any.whl"
_DOCKERFILE = f"""\
# An image with this challenge's tool (verify, audit, the attacks), installed from the kit's wheel:
#   docker build -t instahide starting_kit/ && docker run --rm -v $PWD:/w -w /w instahide verify SUB --release public_data/
# (the competition itself scores on a stock image: its scoring program needs only numpy)
FROM python:3.12-slim
COPY {WHEEL_NAME} /tmp/
RUN pip install --no-cache-dir /tmp/{WHEEL_NAME}
"""


# --- competition.yaml ------------------------------------------------------------------------------

def _yaml_scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=True)  # a JSON string is a YAML double-quoted scalar


def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (strings always quoted), without a YAML library."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {json.dumps(item) if isinstance(item, (dict, list)) else _yaml_scalar(item)}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {body[indent + 2:]}")
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
        return "\n".join(lines)
    return pad + _yaml_scalar(value)


def competition(title: str, *, holdout: float | None, start: date, end: date | None, docker_image: str,
                description: str, per_day: int = DEFAULT_PER_DAY, total: int = DEFAULT_TOTAL,
                time_limit: int = MIN_TIME_LIMIT) -> dict:
    """The ``competition.yaml`` document (Codabench v2) as a dict.

    The Development phase ends at the start (00:00 UTC) of ``end``; the Final phase starts a minute
    later (the platform refuses a phase that starts when the one before ends), takes in every
    participant's last submission (``auto_migrate_to_this_phase``) and scores it on the held-out part;
    it allows one submission more, not a new oracle.
    """
    parts = ("public", "final") if holdout is not None else ("public",)
    programs = {"public": "scoring_program", "final": "scoring_program_final"}
    tasks = [{"index": i, "name": f"{title}: {part} encryptions",
              "description": f"Scores the {part} part of the encryptions" if holdout is not None
              else "Scores every encryption",
              "scoring_program": programs[part], "reference_data": "reference_data"}
             for i, part in enumerate(parts)]
    phases = [{"index": 0, "name": "Development", "description": "Submit decryptions; scores on the "
               + ("public part of the encryptions" if holdout is not None else "encryptions") + ".",
               "start": start.isoformat(), "tasks": [0], "starting_kit": "starting_kit", "public_data": "public_data",
               "max_submissions_per_day": per_day, "max_submissions": total, "execution_time_limit": time_limit}]
    if end is not None:
        phases[0]["end"] = end.isoformat()
    if holdout is not None:
        final_start = datetime.combine(end, datetime.min.time()) + timedelta(minutes=1)
        phases.append({"index": 1, "name": "Final", "description": "The final ranking, on the held-out "
                       "encryptions: every participant's last development submission is scored again.",
                       "start": final_start.isoformat(), "tasks": [1], "auto_migrate_to_this_phase": True,
                       "max_submissions_per_day": 1, "max_submissions": 1, "execution_time_limit": time_limit})
    columns = [{"title": metric.name, "key": metric.name, "index": i, "precision": DECIMALS,  # column 0 ranks
                "sorting": "desc" if metric.better == "higher" else "asc"} for i, metric in enumerate(METRICS)]
    return {
        "version": 2,
        "title": title,
        "description": description,
        "image": "logo.png",
        "registration_auto_approve": True,
        "docker_image": docker_image,
        "make_programs_available": True,  # the program is public: it holds no secret
        "terms": "pages/terms.md",
        "pages": [{"title": "Overview", "file": "pages/overview.md"}, {"title": "Data", "file": "pages/data.md"},
                  {"title": "Evaluation", "file": "pages/evaluation.md"}, {"title": "Terms", "file": "pages/terms.md"}],
        "tasks": tasks,
        "solutions": [{"index": 0, "name": "blind baseline", "path": "starting_kit/sample_submission.zip",
                       "tasks": [0]}],
        "phases": phases,
        "leaderboards": [{"index": 0, "title": "Results", "key": "main", "submission_rule": "Force_Last",
                          "columns": columns}],
    }


# --- pages -----------------------------------------------------------------------------------------



def _pages(title: str, manifest: Manifest, holdout: float | None, per_day: int, total: int) -> dict[str, str]:
    params, commitment = manifest.params, manifest.commitment
    n, expected = params.n_encryptions, expected_from_params(params)
    low, high = expected.value_range
    rows = "\n".join(f"| `{metric.name}` | {metric.better} | {metric.meaning} |" for metric in METRICS)
    split = (f"\n\nA keyed share ({holdout:g}) of the encryptions is held out: the Development phase scores the "
             "others, the Final phase the held-out ones (your last development submission is scored there "
             "automatically); nobody without the keys can tell which are which." if holdout is not None else "")
    return {
        "overview.md": f"# {title}\n\nRecover the private images hidden by InstaHide. Each of the {n:,} encryptions "
                       f"mixes {params.k_private} private image(s) with public patches by random "
                       f"coefficients and flips the sign of every pixel at random. Submit, for every encryption, "
                       f"your recovery of one of its private images.\n\nThe release commits to its secret keys: "
                       f"`{commitment}`. The scoring program checks its reference data against this commitment "
                       f"before it scores. The keys are revealed after the competition, and anyone can then "
                       f"audit the release and recompute every score with `instahide audit` and `verify`.\n",
        "data.md": f"# Data\n\n`public_data/` holds the release's public files: `encryption.npy` (float32, "
                   f"{' x '.join(f'{d:,}' for d in expected.shape)}, NHWC, in the {params.domain} pixel domain "
                   f"[{low:g}, {high:g}]), `label.npy` (the lambda-weighted labels), `preview.png` and "
                   f"`manifest.json` (its `files` gives the SHA-256 of each; it also lists the release's Zarr "
                   f"copy of the same arrays, `public.zarr/`, which is not shipped here). The starting kit holds "
                   f"a sample submission, `check_submission.py` and instructions.\n",
        "evaluation.md": f"# Evaluation\n\nA submission is a zip of `{DECRYPTION_FILE}` (shape {expected.shape}, "
                         f"row i your recovery of encryption i: float32/float64 in [{low:g}, {high:g}] or uint8 "
                         f"0..255) and optionally `{METADATA_FILE}` (string fields: {', '.join(METADATA_FIELDS)}) "
                         f"at the top level of the zip. Check it first with the starting kit's "
                         f"`check_submission.py`: it gives the scoring program's verdict.\n\nEvery score is "
                         f"computed on the [-1, 1] scale. SSIM is scikit-image's structural similarity (7 x 7 "
                         f"uniform window, sample covariance, data_range 2, mean of the channels); L2 is the root "
                         f"mean square difference. For encryption i and each of its private images j, s_ij = "
                         f"SSIM and l_ij = L2:\n\n| score | better | definition |\n|---|---|---|\n{rows}\n\nScores "
                         f"are rounded to {DECIMALS} decimals; the ranking is by `Max_SSIM`.{split}\n",
        "terms.md": f"# Terms\n\nAttack only the published data: do not try to obtain the secret keys or the private "
                    f"images by other means. Scores are a membership oracle (a submitted image's SSIM tells "
                    f"whether it is close to a private one): do not use submissions to test candidate images. "
                    f"This is why submissions are limited to {per_day} a day and {total} in all. The organizers "
                    f"may publish submitted metadata and scores.\n",
    }


def _starting_kit_readme(title: str, expected, wheel: bool) -> str:
    install = (f"The kit also holds this challenge's tool, the version that made the competition (Python 3.11 or "
               f"newer; pip fetches numpy, numba, zarr, ... unless they are installed):\n\n"
               f"    python3 -m venv venv && venv/bin/pip install {WHEEL_NAME}\n"
               f"    venv/bin/verify my-submission/ --release public_data/\n"
               f"    venv/bin/instahide baseline blind --release public_data/ --out blind/\n\n"
               f"or, in Docker: `docker build -t instahide .` in the kit's folder.\n") if wheel else ""
    return (f"# {title}: starting kit\n\n"
            f"1. Download the public data (`public_data/`).\n"
            f"2. Write `{DECRYPTION_FILE}` with `np.save`: shape {expected.shape}, row i your recovery of "
            f"encryption i, float32 in the release's {expected.domain} domain or uint8 0..255; optionally "
            f"`{METADATA_FILE}` ({', '.join(METADATA_FIELDS)}).\n"
            f"3. Check it, with Python 3.9 or newer and numpy only: "
            f"`python3 check_submission.py my-submission/ public_data/` (a folder or the zip). It gives the verdict "
            f"of the competition's scoring program, which runs the same file.\n"
            f"4. Zip the files, not their folder: `cd my-submission && zip ../submission.zip {DECRYPTION_FILE} "
            f"{METADATA_FILE}`, and submit `submission.zip`.\n\n"
            f"`sample_submission.zip` is the blind baseline (|encryption| stretched to the pixel range, as uint8): "
            f"it shows the format and the floor of the scores.\n\n{install}")


# --- the bundle ------------------------------------------------------------------------------------

def _check_wheel(wheel: Path) -> None:
    """The kit's wheel must be this tool's, of the version that makes the bundle."""
    if wheel.name != WHEEL_NAME or not wheel.is_file():
        raise UsageError(f"{printable(wheel)}: expected {WHEEL_NAME}, the wheel of this version of the tool "
                         f"(pip wheel --no-deps -w dist/ SOURCE)")
    try:
        with zipfile.ZipFile(wheel) as zf:
            metadata = zf.read(f"instahide_challenge-{__version__}.dist-info/METADATA").decode("utf-8", "replace")
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise UsageError(f"{printable(wheel)}: not a wheel of instahide-challenge {__version__} ({printable(e)})") from None
    if f"\nVersion: {__version__}\n" not in metadata:
        raise UsageError(f"{printable(wheel)}: its METADATA is not that of version {__version__}")


def _audited(release: Path, keys: Path) -> None:
    """Refuse a release the audit does not pass, e.g. a file in ``public/`` the manifest does not list."""
    report = audit(release, keys)
    if not report.sound:
        first = report.findings[0].line() if report.findings else f"checks skipped: {', '.join(report.skipped)}"
        raise UsageError(f"{printable(release)}: not bundled: `instahide audit` finds {len(report.findings)} "
                         f"problem(s); first: {printable(first)}")


def _staging(out: Path) -> Path:
    """This run's 0700 work folder beside ``out``, after removing those of runs that are gone."""
    prefix, out = STAGING.format(name=out.name), out.absolute()
    for old in out.parent.glob(prefix + "*"):
        pid = old.name[len(prefix):]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = out.parent / f"{prefix}{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def _write_reference(store: fmt.KeyStore, folder: Path) -> None:
    """Every key-store array as a little-endian .npy file, and the attributes' bytes as the commitment
    hashes them: all the scoring program needs to recompute the commitment with hashlib."""
    for name in fmt.key_schema(store.params):
        path = folder / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        array = store[name]
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": array.dtype.newbyteorder("<").str, "fortran_order": False,
                                                     "shape": tuple(array.shape)})
            for start in range(0, array.shape[0], 65536):
                f.write(np.ascontiguousarray(store.rows(name, start, start + 65536),
                                             dtype=array.dtype.newbyteorder("<")).tobytes())
    (folder / ATTRIBUTES_FILE).write_bytes(fmt.commitment_json(store.attrs, store.version))


def _write_program(folder: Path, manifest_path: Path, holdout: float | None, part: str) -> None:
    folder.mkdir()
    for name in PROGRAM_FILES:
        shutil.copyfile(PROGRAM / name, folder / name)
    shutil.copyfile(manifest_path, folder / fmt.MANIFEST_FILE)
    command = COMMAND + (f" --holdout {holdout!r} --part {part}" if holdout is not None else "")
    (folder / "metadata.yaml").write_text(to_yaml({"command": command}) + "\n")


def _sample(release: Path, expected, folder: Path) -> Path:
    """The blind baseline as uint8 (a quarter of float32's size), zipped as participants submit."""
    blocks = (to_uint8(blind(block, expected), expected.domain) for block in encryption_blocks(release, expected))
    sub = folder / "sample"
    write_submission(sub, blocks, expected=expected, dtype="uint8",
                     metadata={"team": "baseline", "method": "blind: |encryption| stretched per image to the pixel range"})
    path = folder / "sample_submission.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in (DECRYPTION_FILE, METADATA_FILE):
            zf.write(sub / name, name)
    return sub


def _self_test(program: Path, reference: Path, sample: Path, store, holdout: float | None, work: Path) -> float:
    """Run the bundle's scoring program on the sample as the platform does (a fresh interpreter, the
    platform's folders); its scores must be ``verify``'s.  Returns its wall time in seconds."""
    (work / "input").mkdir(parents=True)
    (work / "input" / "ref").symlink_to(reference)
    (work / "input" / "res").symlink_to(sample)
    argv = [sys.executable, "-I", "-B", str(program / "score.py"), str(work / "input"), str(work / "output")]
    if holdout is not None:
        argv += ["--holdout", repr(holdout), "--part", "public"]
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=work)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the bundle's scoring program fails on the sample submission: {done.stderr.strip()}")
    validation, scores = score(sample, store, selected=selected_rows(store, holdout))
    got = json.loads((work / "output" / "scores.json").read_text())
    if not validation.valid or got != platform_scores(scores):
        raise RuntimeError(f"the bundle's scoring program gives {got} on the sample, verify "
                           f"{platform_scores(scores) if validation.valid else validation.problems}")
    return seconds


def _zip(out: Path, work: Path, members: list[tuple[str, Path]]) -> None:
    """Write the zip (0600: it holds the keys) in ``work``, then rename it to ``out``."""
    tmp = work / "competition.zip"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, path in members:
                zf.write(path, name)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


def _members(root: Path) -> list[tuple[str, Path]]:
    """(name in the zip, file) for the files this run wrote under ``root``: its own output, not the release."""
    return [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*")) if p.is_file()]


def make_bundle(release: str | os.PathLike, keys: str | os.PathLike, out_zip: str | os.PathLike, *,
                title: str | None = None, holdout: float | None = None, start: date | None = None,
                end: date | None = None, docker_image: str = DEFAULT_DOCKER_IMAGE, per_day: int = DEFAULT_PER_DAY,
                total: int = DEFAULT_TOTAL, wheel: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write the Codabench bundle of ``release`` (scored with ``keys``) to ``out_zip`` (0600); returns its path.

    The key store must be the release's (the commitment its manifest publishes) and the release must
    pass the audit.  With ``holdout`` (a fraction) the bundle has a Development phase on the public
    part and a Final phase, from ``end`` (required then), on the held-out part.  ``wheel``: this tool's
    wheel, shipped in the starting kit.
    """
    release, keys, out_zip = Path(release), Path(keys), Path(out_zip)
    start = start or datetime.now(timezone.utc).date()
    if out_zip.exists() and not force:
        raise UsageError(f"{printable(out_zip)}: already exists; pass {argument('force', True)} to replace it")
    if holdout is not None and end is None:
        raise UsageError("a bundle with a holdout needs an end date for its development phase (the final phase starts then)")
    if end is not None and end <= start:
        raise UsageError(f"{argument('end', end.isoformat())} is not after {argument('start', start.isoformat())}")
    if per_day < 1 or total < 1:
        raise UsageError(f"submission limits must be positive, got {per_day} a day and {total} in all")
    if wheel is not None:
        _check_wheel(Path(wheel))
    check_output(out_zip)  # the bundle holds the keys: never inside a release or a key store
    expected, store = open_for_scoring(release, keys)
    if holdout is not None:
        selected_rows(store, holdout, "public")  # refuses a fraction that leaves a part empty
        selected_rows(store, holdout, "final")
    _audited(release, keys)
    manifest = Manifest.read(release)
    public = release / fmt.PUBLIC_DIR
    title = title or f"InstaHide challenge ({expected.n:,} encryptions)"
    description = (f"Recover private images from {expected.n:,} InstaHide encryptions; "
                   f"keys committed as {manifest.commitment}.")
    try:
        work = _staging(out_zip)
        try:
            root = work / "bundle"
            root.mkdir()
            _write_program(root / "scoring_program", public / fmt.MANIFEST_FILE, holdout, "public")
            if holdout is not None:
                _write_program(root / "scoring_program_final", public / fmt.MANIFEST_FILE, holdout, "final")
            _write_reference(store, root / "reference_data")
            kit = root / "starting_kit"
            kit.mkdir()
            sample = _sample(release, expected, kit)
            seconds = _self_test(root / "scoring_program", root / "reference_data", sample, store, holdout, work / "run")
            shutil.rmtree(sample)
            shutil.copyfile(PROGRAM / "check_submission.py", kit / "check_submission.py")
            (kit / "README.md").write_text(_starting_kit_readme(title, expected, wheel is not None))
            if wheel is not None:
                shutil.copyfile(wheel, kit / WHEEL_NAME)
                (kit / "Dockerfile").write_text(_DOCKERFILE)
            (root / "pages").mkdir()
            for name, text in _pages(title, manifest, holdout, per_day, total).items():
                (root / "pages" / name).write_text(text)
            limit = max(MIN_TIME_LIMIT, math.ceil(TIME_MARGIN * seconds))
            doc = competition(title, holdout=holdout, start=start, end=end, docker_image=docker_image,
                              description=description, per_day=per_day, total=total, time_limit=limit)
            (root / "competition.yaml").write_text(to_yaml(doc) + "\n")
            members = _members(root) + [("logo.png", public / fmt.PREVIEW_FILE)]
            members += [(f"public_data/{name}", public / name) for name in (*PUBLIC_FILES, fmt.MANIFEST_FILE)]
            _zip(out_zip, work, sorted(members))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except OSError as e:
        raise UsageError(f"cannot write the bundle: {printable(e.filename or out_zip)}: {e.strerror or e}") from None
    return out_zip
