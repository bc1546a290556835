"""Rank scored submissions: a Markdown table like the 2020 README's and an HTML page with pictures.

Ranking uses nothing a participant reports about itself: the published (rounded) Max_SSIM, higher
first; equal published Max_SSIM is an equal rank ("1, 1, 3"), listed by folder name so the order
never depends on argument order.  The floors (``constant`` and ``mean`` baselines) appear as
reference rows, unranked.  Every text from a submission (folder name, metadata, problems) is shown
through :func:`verifier.submission.printable` and escaped for its medium, and a submission that
cannot even be read is listed as invalid with its reason: one bad submission never stops the board.
"""

from __future__ import annotations

import html
import io
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from challenge import format as fmt
from challenge.domain import to_uint8
from challenge.errors import UsageError
from challenge.preview import contact_sheet, save_png
from verifier.archive import add_layout_hint, submission_folder
from verifier.baselines import FLOORS, floor_blocks, floor_image
from verifier.scoring import HEADLINE, SUCCESS_SSIM, Scores, published, score, score_blocks, write_files
from challenge.npy import ROWS
from challenge.submission import Expected, expected_from_keys
from challenge.text import printable
from verifier.submission import Validation, centered

__all__ = ["Entry", "best_and_worst", "build", "html_page", "markdown", "rank", "recovery_sheet", "to_json", "write"]

PAIRS_SHOWN = 4  # best and worst recoveries pictured per submission
LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_HTML = "leaderboard.html"
IMAGES_DIR = "images"
REFERENCE_RANK = "ref"
# Markdown punctuation that could start a link, an image, emphasis, strike-through or code, or end
# a table cell, inside a cell; each is shown literally behind a backslash.  <, > and & become HTML
# entities, so no raw HTML gets through either.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()!|~])")


@dataclass
class Entry:
    folder: Path
    validation: Validation
    scores: Scores | None
    image: str | None = None  # picture file, relative to the leaderboard folder
    reference: str | None = None  # the floor's kind for a reference row (not a participant)

    @property
    def name(self) -> str:
        if self.reference:
            return f"baseline {self.reference}"
        return printable(self.folder.name or self.folder)

    @property
    def metadata(self) -> dict:
        return self.validation.metadata

    @property
    def max_ssim(self) -> float:
        return published(self.scores.summary["Max_SSIM"])


def rank(entries: list[Entry]) -> list[Entry]:
    """Valid participant entries in leaderboard order (reference rows and invalid ones left out)."""
    return sorted((e for e in entries if e.scores is not None and not e.reference), key=_order)


def _order(e: Entry) -> tuple:
    return -e.max_ssim, e.name


def _ranked_rows(entries: list[Entry]) -> list[tuple[str, Entry]]:
    """(rank, entry) for the participants and the reference rows among them, in table order."""
    rows, previous, position = [], None, 0
    ranked = rank(entries)
    for i, e in enumerate(ranked, 1):
        if e.max_ssim != previous:
            position, previous = i, e.max_ssim
        rows.append((str(position), e))
    rows += [(REFERENCE_RANK, e) for e in entries if e.reference and e.scores is not None]
    return sorted(rows, key=lambda row: (*_order(row[1]), row[0] == REFERENCE_RANK))


def best_and_worst(scores: Scores, count: int = PAIRS_SHOWN) -> tuple[np.ndarray, np.ndarray]:
    """Encryption indices of the ``count`` highest and lowest Max_SSIM (ties: lower index first)."""
    best = np.argsort(-scores.max_ssim, kind="stable")
    worst = np.argsort(scores.max_ssim, kind="stable")
    return scores.encryptions[best[:count]], scores.encryptions[worst[:count]]


def recovery_sheet(entry: Entry, store: fmt.KeyStore, expected: Expected, count: int = PAIRS_SHOWN):
    """Two rows of (recovery, closest private image) pairs: best recoveries on top, worst below."""
    private_images = store.read("private/images")
    index = store["encryption/private_index"]
    scores = entry.scores
    tiles = []
    for rows in best_and_worst(scores, count):
        for i in rows:
            i = int(i)
            recovery = centered(entry.validation.array.read_rows(i, i + 1), expected.domain)[0]
            tiles.append(to_uint8(recovery, "centered"))
            column = scores.best_column[np.searchsorted(scores.encryptions, i)]
            tiles.append(private_images[index[i, int(column)]])
    return contact_sheet(np.stack(tiles), columns=2 * min(count, len(scores.encryptions)), scale=3)


def build(submissions: list[Path], store: fmt.KeyStore, *, rows: int = ROWS, selected: np.ndarray | None = None,
          floors: tuple[str, ...] = FLOORS, unpacked: ExitStack | None = None, cluster=None) -> list[Entry]:
    """Validate and score every submission (in the order given), then the ``floors`` as reference rows.

    ``selected``: the encryptions that count (a holdout part), all by default.  A ``.zip``
    submission is extracted (checked, :mod:`verifier.archive`) into a folder that lives as long as
    ``unpacked``; without it, only folders are accepted.  With ``cluster`` (a Dask
    ``distributed.Client``) the scoring runs on its workers, to the same scores.
    """
    expected = expected_from_keys(store)
    entries = []
    for path in map(Path, submissions):
        try:
            folder = unpacked.enter_context(submission_folder(path, expected)) if unpacked is not None else path
            if cluster is None:
                validation, scores = score(folder, store, expected=expected, rows=rows, selected=selected)
            else:
                from verifier.distributed import score_on_cluster

                validation, scores = score_on_cluster(cluster, folder, store, expected, rows=rows, selected=selected)
            add_layout_hint(validation)
        except UsageError as e:  # not a folder, unreadable, an unsafe archive: invalid, the others are still ranked
            validation, scores = Validation(path, [str(e)]), None
        entries.append(Entry(path, validation, scores))
    for kind in floors:
        if cluster is None:
            scores = score_blocks(floor_blocks(kind, store, expected, rows), store, expected, selected=selected)
        else:
            from verifier.distributed import score_image_on_cluster

            scores = score_image_on_cluster(cluster, floor_image(kind, store), store, expected, rows=rows, selected=selected)
        metadata = {"team": "reference", "method": f"{kind} floor: a trivial submission (docs/FORMAT.md, section 8)"}
        entries.append(Entry(Path(kind), Validation(Path(kind), [], None, metadata), scores, reference=kind))
    return entries


def _cells(r: str, e: Entry) -> list[str]:
    m = e.metadata
    return [r, e.name, m.get("method", ""), m.get("team", ""), *(f"{published(e.scores.summary[c]):.4f}" for c in HEADLINE),
            m.get("running_time", ""), m.get("hardware", ""), m.get("date", "")]


def _md_cell(text: str) -> str:
    """Text shown literally in a Markdown table cell: one line, no markup, no raw HTML."""
    flat = " ".join(printable(text).split())
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", flat), quote=False) or "-"


def _html(text: str) -> str:
    return html.escape(printable(text))


def _invalid(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.scores is None]


def markdown(entries: list[Entry]) -> str:
    """The leaderboard table (2020 columns plus Min_L2 and the success rates), then the invalid ones."""
    head = ["Rank", "Submission", "Attack", "Submitted by", *HEADLINE, "Self-reported running time", "Hardware",
            "Submission date"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, e in _ranked_rows(entries):
        lines.append("| " + " | ".join(_md_cell(c) for c in _cells(r, e)) + " |")
    lines += ["", f"Rank {REFERENCE_RANK}: a reference row, a trivial submission every attack should beat (not ranked). "
              "Equal Max_SSIM, equal rank."]
    invalid = _invalid(entries)
    if invalid:
        lines += ["", "Not ranked (invalid submissions):", ""]
        lines += [f"- {_md_cell(e.name)}: {_md_cell('; '.join(e.validation.problems))}" for e in invalid]
    return "\n".join(lines) + "\n"


def to_json(entries: list[Entry]) -> dict:
    """The table as data: ranked rows (reference rows ranked ``ref``) with their published scores, then
    the invalid submissions with their problems (``leaderboard --json``)."""
    return {
        "ranked": [{"rank": r, "submission": e.name, "path": printable(e.folder), "reference": e.reference is not None,
                    "metadata": {k: printable(v) for k, v in e.metadata.items()},
                    "scores": {name: published(e.scores.summary[name]) for name in HEADLINE},
                    "n_encryptions": e.scores.summary["n_encryptions"]}
                   for r, e in _ranked_rows(entries)],
        "invalid": [{"submission": e.name, "path": printable(e.folder),
                     "problems": [printable(p) for p in e.validation.problems]} for e in _invalid(entries)],
    }


def html_page(entries: list[Entry]) -> str:
    """A self-describing page: the table, then each submission's best and worst recoveries."""
    head = ["Rank", "Submission", "Attack", "Submitted by", *HEADLINE, "Running time", "Hardware", "Date"]
    rows, figures = [], []
    for r, e in _ranked_rows(entries):
        style = ' class="reference"' if e.reference else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{_html(c)}</td>" for c in _cells(r, e)) + "</tr>")
        if e.image:
            figures.append(
                f'<figure><img src="{_html(e.image)}" alt="recoveries of {_html(e.name)}">'
                f"<figcaption>{r}. {_html(e.name)}: top row, its {PAIRS_SHOWN} best recoveries (by Max_SSIM), each "
                f"left of the private image it matches best; bottom row, its {PAIRS_SHOWN} worst.</figcaption></figure>")
    invalid = "".join(f"<li>{_html(e.name)}: {_html('; '.join(e.validation.problems))}</li>" for e in _invalid(entries))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>InstaHide challenge leaderboard</title>',
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{image-rendering:pixelated}"
        "tr.reference{color:#666;font-style:italic}</style>",
        "</head><body>",
        "<h1>InstaHide challenge leaderboard</h1>",
        f"<p>Ranked by Max_SSIM (published to 4 decimals; equal Max_SSIM, equal rank); success means SSIM &gt; "
        f"{SUCCESS_SSIM} (docs/FORMAT.md, section 9). Rows ranked {REFERENCE_RANK!r} are reference floors, trivial "
        "submissions every attack should beat.</p>",
        "<table><tr>" + "".join(f"<th>{_html(h)}</th>" for h in head) + "</tr>",
        *rows,
        "</table>",
        *figures,
        f"<h2>Not ranked</h2><ul>{invalid}</ul>" if invalid else "",
        "</body></html>",
        "",
    ])


def _picture(entry: Entry, store: fmt.KeyStore, expected: Expected) -> bytes | None:
    """The PNG of an entry's best and worst recoveries, or None if its file changed since scoring."""
    try:
        sheet = recovery_sheet(entry, store, expected)
    except UsageError:
        return None
    buffer = io.BytesIO()
    save_png(sheet, buffer)
    return buffer.getvalue()


def write(entries: list[Entry], store: fmt.KeyStore, out: Path) -> list[Path]:
    """Write the pictures, ``leaderboard.md`` and ``leaderboard.html`` into ``out``; all or nothing new."""
    expected = expected_from_keys(store)
    contents = {}
    for position, (r, e) in enumerate(((r, e) for r, e in _ranked_rows(entries) if not e.reference), 1):
        picture = _picture(e, store, expected)
        if picture is not None:
            e.image = f"{IMAGES_DIR}/{position:03d}-{re.sub(r'[^A-Za-z0-9._-]', '_', e.name)}.png"
            contents[e.image] = picture
    contents[LEADERBOARD_MD] = markdown(entries)
    contents[LEADERBOARD_HTML] = html_page(entries)
    return write_files(Path(out), contents, "leaderboard")[-2:]
