"""Rank scored submissions: a Markdown table like the 2020 README's and an HTML page with pictures.

Ranking: Max_SSIM, higher first; ties go to the earlier ``metadata.json`` date (no date: after
every dated one), then to the folder name, so the order never depends on argument order.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from challenge import format as fmt
from challenge.domain import to_uint8
from challenge.preview import contact_sheet, save_png
from verifier.scoring import HEADLINE, SUCCESS_SSIM, Scores, score, write_atomic
from verifier.submission import ROWS, Expected, Validation, centered, expected_from_keys, submission_date

PAIRS_SHOWN = 4  # best and worst recoveries pictured per submission
LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_HTML = "leaderboard.html"
IMAGES_DIR = "images"
_LATEST = datetime.max.replace(tzinfo=timezone.utc)


@dataclass
class Entry:
    folder: Path
    validation: Validation
    scores: Scores | None
    image: str | None = None  # picture file, relative to the leaderboard folder

    @property
    def name(self) -> str:
        return self.folder.name or str(self.folder)

    @property
    def metadata(self) -> dict:
        return self.validation.metadata


def rank(entries: list[Entry]) -> list[Entry]:
    """Valid entries in leaderboard order."""
    scored = [e for e in entries if e.scores is not None]
    return sorted(scored, key=lambda e: (-e.scores.summary["Max_SSIM"], submission_date(e.metadata) or _LATEST, e.name))


def best_and_worst(scores: Scores, count: int = PAIRS_SHOWN) -> tuple[np.ndarray, np.ndarray]:
    """Encryption indices of the ``count`` highest and lowest Max_SSIM (ties: lower index first)."""
    best = np.argsort(-scores.max_ssim, kind="stable")
    worst = np.argsort(scores.max_ssim, kind="stable")
    return best[:count], worst[:count]


def recovery_sheet(entry: Entry, store: fmt.KeyStore, expected: Expected, count: int = PAIRS_SHOWN):
    """Two rows of (recovery, closest private image) pairs: best recoveries on top, worst below."""
    private_images = store.read("private/images")
    index = store["encryption/private_index"]
    tiles = []
    for rows in best_and_worst(entry.scores, count):
        for i in rows:
            i = int(i)
            recovery = centered(entry.validation.array.read_rows(i, i + 1), expected.domain)[0]
            tiles.append(to_uint8(recovery, "centered"))
            tiles.append(private_images[index[i, int(entry.scores.best_column[i])]])
    return contact_sheet(np.stack(tiles), columns=2 * min(count, expected.n), scale=3)


def build(folders: list[Path], store: fmt.KeyStore, *, rows: int = ROWS) -> list[Entry]:
    """Validate and score every folder (in the order given)."""
    expected = expected_from_keys(store)
    entries = []
    for folder in folders:
        validation, scores = score(folder, store, expected=expected, rows=rows)
        entries.append(Entry(Path(folder), validation, scores))
    return entries


def _cells(r: int, e: Entry) -> list[str]:
    m = e.metadata
    return [str(r), e.name, m.get("method", ""), m.get("team", ""), *(f"{e.scores.summary[c]:.4f}" for c in HEADLINE),
            m.get("running_time", ""), m.get("hardware", ""), m.get("date", "")]


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") or "-"


def markdown(entries: list[Entry]) -> str:
    """The leaderboard table (2020 columns plus Min_L2 and the success rates), then the invalid ones."""
    head = ["Rank", "Submission", "Attack", "Submitted by", *HEADLINE, "Self-reported running time", "Hardware",
            "Submission date"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, e in enumerate(rank(entries), 1):
        lines.append("| " + " | ".join(_md_cell(c) for c in _cells(r, e)) + " |")
    invalid = [e for e in entries if e.scores is None]
    if invalid:
        lines += ["", "Not ranked (invalid submissions):", ""]
        lines += [f"- {_md_cell(e.name)}: {_md_cell('; '.join(e.validation.problems))}" for e in invalid]
    return "\n".join(lines) + "\n"


def html_page(entries: list[Entry]) -> str:
    """A self-describing page: the table, then each submission's best and worst recoveries."""
    esc = html.escape
    head = ["Rank", "Submission", "Attack", "Submitted by", *HEADLINE, "Running time", "Hardware", "Date"]
    rows, figures = [], []
    for r, e in enumerate(rank(entries), 1):
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in _cells(r, e)) + "</tr>")
        if e.image:
            figures.append(
                f'<figure><img src="{esc(e.image)}" alt="recoveries of {esc(e.name)}">'
                f"<figcaption>{r}. {esc(e.name)}: top row, its {PAIRS_SHOWN} best recoveries (by Max_SSIM), each "
                f"left of the private image it matches best; bottom row, its {PAIRS_SHOWN} worst.</figcaption></figure>")
    invalid = "".join(f"<li>{esc(e.name)}: {esc('; '.join(e.validation.problems))}</li>"
                      for e in entries if e.scores is None)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>InstaHide challenge leaderboard</title>',
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{image-rendering:pixelated}</style>",
        "</head><body>",
        "<h1>InstaHide challenge leaderboard</h1>",
        f"<p>Ranked by Max_SSIM; success means SSIM &gt; {SUCCESS_SSIM} (docs/FORMAT.md, section 9).</p>",
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>",
        *rows,
        "</table>",
        *figures,
        f"<h2>Not ranked</h2><ul>{invalid}</ul>" if invalid else "",
        "</body></html>",
        "",
    ])


def write(entries: list[Entry], store: fmt.KeyStore, out: Path) -> list[Path]:
    """Write the pictures, ``leaderboard.md`` and ``leaderboard.html`` into ``out``."""
    out = Path(out)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    expected = expected_from_keys(store)
    for r, e in enumerate(rank(entries), 1):
        e.image = f"{IMAGES_DIR}/{r:03d}-{re.sub(r'[^A-Za-z0-9._-]', '_', e.name)}.png"
        tmp = out / f"{e.image}.partial-{os.getpid()}"
        save_png(recovery_sheet(e, store, expected), tmp)
        os.replace(tmp, out / e.image)
    write_atomic(out / LEADERBOARD_MD, markdown(entries))
    write_atomic(out / LEADERBOARD_HTML, html_page(entries))
    return [out / LEADERBOARD_MD, out / LEADERBOARD_HTML]
