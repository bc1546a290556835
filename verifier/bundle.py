"""A Codabench competition bundle for a release, and the scoring program that runs inside it.

:func:`make_bundle` writes ``competition.zip``, a Codabench v2 bundle (docs.codabench.org,
"Competition Bundle Structure" and "YAML Structure"; the fields are those the platform's v2
unpacker reads, ``src/apps/competitions/unpackers/v2.py`` of codalab/codabench)::

    competition.yaml         version 2: title, description, image, terms, pages, tasks, solutions,
                             phases, leaderboards (one column per published score, Max_SSIM first)
    logo.png                 the release's preview.png
    pages/                   overview.md, data.md, evaluation.md (the metrics), terms.md
    scoring_program/         metadata.yaml, score.py, requirements.txt, Dockerfile, lib/ (this tool's code)
    reference_data/          manifest.json and keys.zarr/: what scoring needs, never shown to participants
    public_data/             the public release folder, as published
    starting_kit/            README.md and sample_submission.zip (the keyless blind baseline)

The platform runs the scoring program in the competition's ``docker_image`` with the submission,
unzipped, in ``/app/input/res``, the reference data in ``/app/input/ref``, and reads
``/app/output/scores.json`` (``compute_worker/compute_worker.py`` of codalab/codabench).  The image
has Python but not this tool, so the bundle *vendors* this tool's own pure-Python packages into
``scoring_program/lib`` (copied from the running installation, so the program scores exactly as the
``verify`` that built it, from a wheel install as from a checkout, offline); the third-party
libraries (numpy, numba, zarr, ...) must come from the image: ``requirements.txt`` pins the versions
the bundle was built with, and ``Dockerfile`` builds such an image.  ``score.py`` checks this first
and says in one line what is missing.

The scoring program (:func:`run_scoring`) validates and scores with :func:`verifier.scoring.score`
(a ``.zip`` in ``input/res`` is opened with :mod:`verifier.archive`), writes ``scores.json`` and
``scores.txt`` with :func:`verifier.scoring.write_scores`, and on bad input prints one line on
stderr and exits 2 (1 for an internal error): never a traceback.  With a holdout the bundle has two
phases, Development (public part) and Final (final part), each with its own copy of the program.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from datetime import date, datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

from challenge import format as fmt
from challenge.errors import UsageError
from verifier.scoring import DECIMALS, HEADLINE, PARTS, SUCCESS_SSIM, format_table, score, selected_rows, write_scores
from challenge.manifest import read_manifest
from challenge.submission import DECRYPTION_FILE, METADATA_FILE, expected_from_manifest, open_for_scoring
from challenge.text import printable
from verifier.submission import METADATA_FIELDS

__all__ = ["COLUMNS", "DEFAULT_DOCKER_IMAGE", "REQUIREMENTS", "VENDORED", "competition", "make_bundle", "run_scoring",
           "scoring_main", "to_yaml"]

VENDORED = ("challenge", "verifier")  # this tool's packages the scoring program imports
REQUIREMENTS = ("numpy", "numba", "zarr", "cryptography", "pillow")  # from the docker image
MIN_PYTHON = (3, 11)
# Codabench's default image (codalab/codalab-legacy:py3) lacks numba and zarr 3: the organizer builds
# scoring_program/Dockerfile and passes its name; this default is what that Dockerfile is tagged in the README.
DEFAULT_DOCKER_IMAGE = "instahide-challenge/scoring:latest"
# Leaderboard columns: (key = the scores.json name, sorting). Column 0 ranks (Codabench: the primary column).
COLUMNS = tuple((name, "asc" if "L2" in name else "desc") for name in HEADLINE)
COMMAND = "python3 $program/score.py $input $output"  # $program, $input, $output: the platform's mount points
BASELINE = "blind"  # the sample submission: keyless, so it reveals nothing about the keys


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


def competition(title: str, *, holdout: float | None, start: date, end: date | None,
                docker_image: str, description: str) -> dict:
    """The ``competition.yaml`` document (Codabench v2) as a dict."""
    parts = ("public", "final") if holdout is not None else ("public",)
    programs = {"public": "scoring_program", "final": "scoring_program_final"}
    tasks = [{"index": i, "name": f"{title}: {'final' if part == 'final' else 'public'} encryptions",
              "description": f"Scores the {part} part of the encryptions" if holdout is not None
              else "Scores every encryption",
              "scoring_program": programs[part], "reference_data": "reference_data"}
             for i, part in enumerate(parts)]
    phases = [{"index": 0, "name": "Development", "description": "Submit decryptions; scores on the "
               + ("public part of the encryptions" if holdout is not None else "encryptions") + ".",
               "start": start.isoformat(), "tasks": [0], "starting_kit": "starting_kit", "public_data": "public_data"}]
    if end is not None:
        phases[0]["end"] = end.isoformat()
    if holdout is not None:
        phases.append({"index": 1, "name": "Final", "description": "The final ranking, on the held-out "
                       "encryptions; submissions of the development phase are scored again.",
                       "start": end.isoformat(), "tasks": [1]})
    columns = [{"title": key, "key": key, "index": i, "sorting": sorting, "precision": DECIMALS}
               for i, (key, sorting) in enumerate(COLUMNS)]
    return {
        "version": 2,
        "title": title,
        "description": description,
        "image": "logo.png",
        "registration_auto_approve": True,
        "docker_image": docker_image,
        "make_programs_available": True,
        "terms": "pages/terms.md",
        "pages": [{"title": "Overview", "file": "pages/overview.md"}, {"title": "Data", "file": "pages/data.md"},
                  {"title": "Evaluation", "file": "pages/evaluation.md"}, {"title": "Terms", "file": "pages/terms.md"}],
        "tasks": tasks,
        "solutions": [{"index": 0, "name": f"{BASELINE} baseline", "path": "starting_kit/sample_submission.zip",
                       "tasks": [0]}],
        "phases": phases,
        "leaderboards": [{"index": 0, "title": "Results", "key": "main", "submission_rule": "Force_Last",
                          "columns": columns}],
    }


# --- pages -----------------------------------------------------------------------------------------

_MEANINGS = {
    "Max_SSIM": "mean over encryptions of the best SSIM against its private images (the ranking score)",
    "Mean_SSIM": "mean over encryptions of the mean SSIM against its private images",
    "Min_L2": "mean over encryptions of the smallest RMS difference on [-1, 1]",
    "Max_L2": "mean over encryptions of the largest RMS difference",
    "Mean_L2": "mean over encryptions of the mean RMS difference",
    "success_rate": f"share of encryptions whose best SSIM exceeds {SUCCESS_SSIM}",
    "recovered_share": f"share of the private images whose best SSIM, over every encryption that contains them, "
                       f"exceeds {SUCCESS_SSIM}",
}


def _pages(title: str, manifest: dict, holdout: float | None) -> dict[str, str]:
    n, params = manifest["n_encryptions"], manifest["params"]
    shape = expected_from_manifest(manifest).shape
    commitment = manifest.get("key_store", {}).get("commitment", "?")
    low, high = {"centered": (-1, 1), "positive": (0, 1)}.get(params["domain"], ("?", "?"))
    rows = "\n".join(f"| `{key}` | {'lower' if sorting == 'asc' else 'higher'} | {_MEANINGS[key]} |"
                     for key, sorting in COLUMNS)
    split = (f"\n\nA keyed share ({holdout:g}) of the encryptions is held out: the Development phase scores the "
             "others, the Final phase the held-out ones; nobody without the keys can tell which are which."
             if holdout is not None else "")
    return {
        "overview.md": f"# {title}\n\nRecover the private images hidden by InstaHide. Each of the {n:,} encryptions "
                       f"mixes {params.get('k_private', '?')} private image(s) with public patches by random "
                       f"coefficients and flips the sign of every pixel at random. Submit, for every encryption, "
                       f"your recovery of one of its private images.\n\nThe release commits to its secret keys: "
                       f"`{commitment}`. The keys are revealed after the competition, and anyone can then "
                       f"audit the release and recompute every score with `instahide audit` and `verify`.\n",
        "data.md": f"# Data\n\n`public_data/` is the public release: `encryption.npy` (float32, {' x '.join(f'{d:,}' for d in shape)}, "
                   f"NHWC, in the {params['domain']} pixel domain [{low}, {high}]), `label.npy`, `public.zarr/` "
                   f"(the same arrays), `preview.png` and `manifest.json`. The starting kit holds a sample "
                   f"submission and instructions.\n",
        "evaluation.md": f"# Evaluation\n\nA submission is a zip of `{DECRYPTION_FILE}` (shape {shape}, "
                         f"row i your recovery of encryption i: float32/float64 in [{low}, {high}] or uint8 "
                         f"0..255) and optionally `{METADATA_FILE}` (string fields: {', '.join(METADATA_FIELDS)}) "
                         f"at the top level of the zip.\n\nEvery score is computed on the [-1, 1] scale. SSIM is "
                         f"scikit-image's structural similarity (7 x 7 uniform window, sample covariance, "
                         f"data_range 2, mean of the channels); L2 is the root mean square difference. For "
                         f"encryption i and each of its private images j, s_ij = SSIM and l_ij = L2:\n\n"
                         f"| score | better | definition |\n|---|---|---|\n{rows}\n\nScores are rounded to "
                         f"{DECIMALS} decimals; the ranking is by `Max_SSIM`.{split}\n",
        "terms.md": "# Terms\n\nAttack only the published data: do not try to obtain the secret keys or the private "
                    "images by other means. Scores are a membership oracle (a submitted image's SSIM tells "
                    "whether it is close to a private one): do not use submissions to test candidate images. "
                    "The organizers may publish submitted metadata and scores.\n",
    }


# --- the bundle ------------------------------------------------------------------------------------

def _vendor(lib: Path) -> None:
    """Copy this tool's packages (their ``.py`` files) from the running installation into ``lib``."""
    for package in VENDORED:
        source = Path(importlib.import_module(package).__file__).parent
        for path in sorted(source.rglob("*.py")):
            target = lib / package / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def _requirements() -> str:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            pins.append(name)
    return "\n".join(pins) + "\n"


_SCORE_PY = '''\
"""Scoring program of an InstaHide challenge bundle, written by `instahide bundle`.

The platform runs: python3 score.py INPUT OUTPUT  (INPUT/ref: reference data, INPUT/res: the submission).
This tool's own code is in lib/; numpy, numba, zarr, ... must come from the docker image (requirements.txt).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))


def main():
    if sys.version_info < {min_python!r}:
        sys.stderr.write("score.py: error: Python %d.%d; this scoring program needs Python {min_text} or newer "
                         "and requirements.txt (set the competition's docker_image)\\n" % sys.version_info[:2])
        return 2
    try:
        from verifier.bundle import scoring_main
    except ImportError as e:
        sys.stderr.write("score.py: error: cannot import %s; the docker image must provide the packages of "
                         "requirements.txt ({requirements})\\n" % (e.name or e))
        return 2
    return scoring_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
'''

_DOCKERFILE = """\
# The image the scoring program runs in: Python and this tool's third-party libraries.
#   docker build -t {image} scoring_program/ && docker push {image}
FROM python:{python}-slim
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
"""


def _write_program(folder: Path, part: str, holdout: float | None, docker_image: str) -> None:
    folder.mkdir(parents=True)
    command = COMMAND + (f" --holdout {holdout!r} --part {part}" if holdout is not None else "")
    (folder / "metadata.yaml").write_text(to_yaml({"command": command}) + "\n")
    (folder / "score.py").write_text(_SCORE_PY.format(
        min_python=MIN_PYTHON, min_text=".".join(map(str, MIN_PYTHON)), requirements=", ".join(REQUIREMENTS)))
    (folder / "requirements.txt").write_text(_requirements())
    python = ".".join(map(str, sys.version_info[:2]))
    (folder / "Dockerfile").write_text(_DOCKERFILE.format(image=docker_image, python=python))
    _vendor(folder / "lib")


def _starting_kit(folder: Path, release: Path, expected, title: str) -> None:
    from verifier.baselines import write_baseline

    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "sample"
        write_baseline(BASELINE, sub, expected, release=release)
        with zipfile.ZipFile(folder / "sample_submission.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(sub.iterdir()):
                zf.write(path, path.name)
    (folder / "README.md").write_text(
        f"# {title}: starting kit\n\n"
        f"1. Download the public data (`public_data/`, the release's `public/` folder).\n"
        f"2. Write `{DECRYPTION_FILE}`: shape {expected.shape}, row i your recovery of encryption i, "
        f"float32 in the release's {expected.domain} domain or uint8 0..255; optionally `{METADATA_FILE}` "
        f"({', '.join(METADATA_FIELDS)}).\n"
        f"3. Check it locally: `pip install instahide-challenge` and `verify my-submission/ --release public_data/`.\n"
        f"4. Zip the files, not their folder: `cd my-submission && zip ../submission.zip {DECRYPTION_FILE} "
        f"{METADATA_FILE}`, and submit `submission.zip`.\n\n"
        f"`sample_submission.zip` is the `{BASELINE}` baseline (|encryption| stretched to the pixel range), made "
        f"with `instahide baseline {BASELINE} --release public_data/ --out sample/`; it shows the format and the "
        f"floor of the scores.\n")


def _zip_folder(folder: Path, out: Path) -> None:
    """Zip ``folder``'s tree into ``out`` (a temporary name, renamed at the end: never a half bundle)."""
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder).as_posix())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_bundle(release: str | os.PathLike, keys: str | os.PathLike, out_zip: str | os.PathLike, *,
                title: str | None = None, holdout: float | None = None, start: date | None = None,
                end: date | None = None, docker_image: str = DEFAULT_DOCKER_IMAGE, force: bool = False) -> Path:
    """Write the Codabench bundle of ``release`` (scored with ``keys``) to ``out_zip``; returns its path.

    The key store must be the release's (same parameters, the commitment its manifest publishes),
    checked as ``verify`` checks it.  With ``holdout`` (a fraction) the bundle has a Development
    phase on the public part and a Final phase, starting at ``end`` (required then), on the final part.
    """
    release, keys, out_zip = Path(release), Path(keys), Path(out_zip)
    if out_zip.exists() and not force:
        raise UsageError(f"{printable(out_zip)}: already exists; pass --force to replace it")
    if holdout is not None and end is None:
        raise UsageError("a bundle with a holdout needs an end date for its development phase (the final phase starts then)")
    expected, store = open_for_scoring(release, keys)
    if holdout is not None:
        selected_rows(store, holdout)  # refuses a fraction that leaves a part empty
    manifest = read_manifest(release)
    public = release / fmt.PUBLIC_DIR if (release / fmt.PUBLIC_DIR).is_dir() else release
    title = title or f"InstaHide challenge ({expected.n:,} encryptions)"
    start = start or datetime.now(timezone.utc).date()
    description = (f"Recover private images from {expected.n:,} InstaHide encryptions; "
                   f"keys committed as {manifest.get('key_store', {}).get('commitment', '?')}.")
    try:
        with tempfile.TemporaryDirectory(prefix=".bundle-", dir=out_zip.parent if out_zip.parent.is_dir() else None) as tmp:
            root = Path(tmp)
            doc = competition(title, holdout=holdout, start=start, end=end, docker_image=docker_image,
                              description=description)
            (root / "competition.yaml").write_text(to_yaml(doc) + "\n")
            shutil.copyfile(public / fmt.PREVIEW_FILE, root / "logo.png")
            (root / "pages").mkdir()
            for name, text in _pages(title, manifest, holdout).items():
                (root / "pages" / name).write_text(text)
            _write_program(root / "scoring_program", "public", holdout, docker_image)
            if holdout is not None:
                _write_program(root / "scoring_program_final", "final", holdout, docker_image)
            reference = root / "reference_data"
            reference.mkdir()
            shutil.copyfile(public / fmt.MANIFEST_FILE, reference / fmt.MANIFEST_FILE)
            shutil.copytree(keys, reference / fmt.KEYS_NAME)
            shutil.copytree(public, root / "public_data")
            _starting_kit(root / "starting_kit", release, expected, title)
            _zip_folder(root, out_zip)
    except OSError as e:
        raise UsageError(f"cannot write the bundle: {printable(e.filename or out_zip)}: {e.strerror or e}") from None
    return out_zip


# --- the scoring program ---------------------------------------------------------------------------

def run_scoring(input_dir: str | os.PathLike, output_dir: str | os.PathLike, *, holdout: float | None = None,
                part: str = "public") -> str:
    """Score ``input_dir/res`` against ``input_dir/ref``; write ``scores.json`` and ``scores.txt`` into
    ``output_dir``; return the score table.  An invalid submission is a one-line :class:`UsageError`."""
    from challenge.format import open_key_store
    from verifier.archive import layout_hint, submission_folder

    ref, res = Path(input_dir) / "ref", Path(input_dir) / "res"
    manifest = read_manifest(ref)
    expected = expected_from_manifest(manifest)
    store = open_key_store(ref / fmt.KEYS_NAME)
    if store.params.to_dict() != manifest.get("params"):
        raise UsageError(f"{printable(ref)}: the key store's parameters differ from the manifest's")
    selected = selected_rows(store, holdout, part)
    with submission_folder(res, expected) as folder:
        validation, scores = score(folder, store, expected=expected, selected=selected)
        hint = None if validation.valid else layout_hint(folder)
    if not validation.valid:
        problems = "; ".join(printable(p) for p in validation.problems)
        raise UsageError(f"invalid submission: {problems}" + (f" ({hint})" if hint else ""))
    write_scores(scores, Path(output_dir))
    return format_table(scores)


def scoring_main(argv: list[str]) -> int:
    """``score.py INPUT OUTPUT [--holdout F --part P]``: exit 0 scored, 2 invalid or bad input, 1 a bug."""
    parser = argparse.ArgumentParser(prog="score.py", description="Score an InstaHide challenge submission "
                                     "(INPUT/res) against the reference data (INPUT/ref).")
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--holdout", type=float)
    parser.add_argument("--part", choices=PARTS, default="public")
    args = parser.parse_args(argv)
    try:
        print(run_scoring(args.input, args.output, holdout=args.holdout, part=args.part))
    except UsageError as e:
        print(f"score.py: error: {printable(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"score.py: error: {printable(e.filename or '')}: {e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: still one line, as platforms show stderr to participants
        print(f"score.py: internal error: {type(e).__name__}: {printable(e)}", file=sys.stderr)
        return 1
    return 0
