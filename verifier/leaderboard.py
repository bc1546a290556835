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
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from challenge import format as fmt
from challenge.domain import to_uint8
from challenge.errors import UsageError, argument
from challenge.manifest import Manifest
from challenge.preview import contact_sheet, save_png
from verifier.archive import add_layout_hint, submission_folder
from verifier.baselines import FLOORS, floor_blocks, floor_image
from verifier.describe import public_folder
from challenge.files import write_files
from verifier.scoring import SUCCESS_SSIM, Scores, headline, published, score, score_blocks
from challenge.npy import ROWS
from challenge.submission import Expected, expected_from_keys
from challenge.text import printable
from verifier.submission import Validation, centered

__all__ = ["PAGE_STYLE", "Entry", "Pair", "Release", "best_and_worst", "build", "check_replaceable", "html_page", "markdown",
           "pair_figure", "rank", "recovery_pairs", "release_line", "release_of", "to_json", "write"]

PAIRS_SHOWN = 4  # best and worst recoveries pictured per submission
TILE_PIXELS = 96  # a pictured image is enlarged by a whole factor to about this size
ATTACK_CHARS = 80  # longer attack descriptions are shortened in the table and shown in full below it
NAME_CHARS = 40  # longer submission names are shortened in the table (in full in its title and below)
LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_HTML = "leaderboard.html"
IMAGES_DIR = "images"
REFERENCE_RANK = "ref"
# Markdown punctuation that could start a link, an image, emphasis, strike-through or code, or end
# a table cell, inside a cell; each is shown literally behind a backslash.  <, > and & become HTML
# entities, so no raw HTML gets through either.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()!|~])")


@dataclass(frozen=True)
class Pair:
    """One pictured recovery: the ``place``-th ``kind`` ("best" or "worst") by Max_SSIM, the encryption
    it recovers, the private image it matches best, their SSIM (published) and the picture of the two."""

    kind: str
    place: int
    _: KW_ONLY
    encryption: int
    private: int | None  # None on a public board, which never shows or names a private image
    ssim: float
    picture: str = ""  # PNG file, relative to the leaderboard folder


@dataclass(frozen=True)
class Release:
    """What the page says about the release: its name (folder), format version, size and commitment."""

    name: str
    format_version: int
    n_encryptions: int
    commitment: str


@dataclass
class Entry:
    folder: Path
    _: KW_ONLY
    validation: Validation
    scores: Scores | None
    pairs: list[Pair] = field(default_factory=list)  # its pictured recoveries, best then worst
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


def best_and_worst(scores: Scores, matched: np.ndarray, count: int = PAIRS_SHOWN) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``scores.encryptions`` of the ``count`` highest and of the ``count`` lowest Max_SSIM,
    each showing a private image (``matched``, per position) not shown before it in its row, so that
    one well-recovered image cannot fill the row (ties: lower encryption index first)."""

    def distinct(order: np.ndarray) -> np.ndarray:
        _, first = np.unique(matched[order], return_index=True)
        return order[np.sort(first)[:count]]

    return distinct(np.argsort(-scores.max_ssim, kind="stable")), distinct(np.argsort(scores.max_ssim, kind="stable"))


def recovery_pairs(entry: Entry, store: fmt.KeyStore, expected: Expected, count: int = PAIRS_SHOWN, *,
                   public: bool = False) -> list[tuple[Pair, Image.Image]]:
    """The entry's best and worst recoveries, each with a picture of it beside the private image it
    matches best (captioned, so the picture alone says which is which); with ``public``, the
    recovery alone, its private image neither shown nor named (which encryptions share a private
    image is a secret too)."""
    scores = entry.scores
    matched = store.read("encryption/private_index")[scores.encryptions, scores.best_column]
    out = []
    for kind, positions in zip(("best", "worst"), best_and_worst(scores, matched, count)):
        for place, at in enumerate(positions, 1):
            i, p = int(scores.encryptions[at]), int(matched[at])
            recovery = to_uint8(centered(entry.validation.array.read_rows(i, i + 1), expected.domain), "centered")
            tiles, captions = (recovery, [f"recovery {i}"]) if public else (
                np.concatenate([recovery, store.rows("private/images", p, p + 1)]), [f"recovery {i}", f"private {p}"])
            scale = max(1, round(TILE_PIXELS / max(tiles.shape[1:3])))
            picture = contact_sheet(tiles, columns=len(tiles), scale=scale, captions=captions)
            pair = Pair(kind, place, encryption=i, private=None if public else p, ssim=published(float(scores.max_ssim[at])))
            out.append((pair, picture))
    return out


def release_of(release: Path) -> Release:
    """The release's name (its folder's, also when given its ``public/`` folder) and what its manifest
    says about it (the leaderboard checked the keys against that manifest before scoring)."""
    manifest = Manifest.read(release)
    public = public_folder(release).resolve()
    name = public.parent.name if public.name == fmt.PUBLIC_DIR else public.name
    return Release(name, manifest.version, manifest.params.n_encryptions, manifest.commitment)


def build(submissions: list[Path], store: fmt.KeyStore, *, rows: int = ROWS, selected: np.ndarray | None = None,
          floors: tuple[str, ...] = FLOORS, unpacked: ExitStack | None = None, cluster=None) -> list[Entry]:
    """Validate and score every submission (in the order given), then the ``floors`` as reference rows.

    ``selected``: the encryptions that count (a holdout part), all by default.  A ``.zip``
    submission is extracted (checked, :mod:`verifier.archive`) into a folder that lives as long as
    ``unpacked``; without it, only folders are accepted.  With ``cluster`` (a Dask
    ``distributed.Client``) the scoring runs on its workers, to the same scores.
    """
    expected = expected_from_keys(store)
    entries, seen = [], {}
    for path in map(Path, submissions):
        first = seen.setdefault(_identity(path), path)
        if first is not path:  # the same folder or file given twice (or through a link): ranked once
            repeated = Validation(path, [f"same file as {printable(first)}, ranked once"])
            entries.append(Entry(path, validation=repeated, scores=None))
            continue
        try:
            folder = unpacked.enter_context(submission_folder(path, expected)) if unpacked is not None else path
            if cluster is None:
                validation, scores = score(folder, store, expected=expected, rows=rows, selected=selected)
            else:
                from verifier.distributed import score_on_cluster

                validation, scores = score_on_cluster(cluster, folder, store, expected, rows=rows, selected=selected)
            add_layout_hint(validation)
        except UsageError as e:  # not a folder, unreadable, an unsafe archive: invalid, the others are still ranked
            validation, scores = Validation(path, [str(e).removeprefix(f"{printable(path)}: ")]), None
        entries.append(Entry(path, validation=validation, scores=scores))
    for kind in floors:
        if cluster is None:
            scores = score_blocks(floor_blocks(kind, store, expected, rows), store, expected, selected=selected)
        else:
            from verifier.distributed import score_image_on_cluster

            scores = score_image_on_cluster(cluster, floor_image(kind, store), store, expected, rows=rows, selected=selected)
        metadata = {"team": "reference", "method": f"{kind} floor: a trivial submission (docs/FORMAT.md, section 8)"}
        entries.append(Entry(Path(kind), validation=Validation(Path(kind), [], None, metadata), scores=scores,
                             reference=kind))
    return entries


def _identity(path: Path) -> tuple | Path:
    """What makes two given paths the same submission: the file or folder they lead to."""
    try:
        info = path.stat()
    except OSError:
        return path
    return info.st_dev, info.st_ino


def _cells(r: str, e: Entry) -> list[str]:
    m = e.metadata
    return [r, e.name, m.get("method", ""), m.get("team", ""), *(f"{published(e.scores.summary[c]):.4f}" for c in headline()),
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
    head = ["Rank", "Submission", "Attack", "Submitted by", *headline(), "Self-reported running time", "Hardware",
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
                    "scores": {name: published(e.scores.summary[name]) for name in headline()},
                    "n_encryptions": e.scores.summary["n_encryptions"]}
                   for r, e in _ranked_rows(entries)],
        "invalid": [{"submission": e.name, "path": printable(e.folder),
                     "problems": [printable(p) for p in e.validation.problems]} for e in _invalid(entries)],
    }


PAGE_STYLE = """
body{font-family:sans-serif;margin:1.5em;max-width:1232px;line-height:1.35}
code,dt,dd,h3,li{overflow-wrap:anywhere}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
td.rank,td.number,td.date{white-space:nowrap}
td.number{text-align:right;font-variant-numeric:tabular-nums}
td>div{overflow-wrap:anywhere;max-width:12em}
td.attack>div{min-width:11em;max-width:18em}
tr.reference{color:#666;font-style:italic}
dd{margin:0 0 .6em 1.5em;white-space:pre-wrap}
.pairs{display:flex;flex-wrap:wrap;gap:10px;margin:.3em 0 .8em}
figure.pair{margin:0;padding:6px;border:3px solid #2a7;border-radius:6px;max-width:100%}
figure.pair.worst{border-color:#c53}
figure.pair img{display:block;image-rendering:pixelated;max-width:100%;height:auto}
figure.pair figcaption{font-size:.85em;margin-top:4px}
p.secret{background:#fde8e8;border:2px solid #c53;padding:.5em .8em;font-weight:bold}
"""


def _shortened(text: str, limit: int = ATTACK_CHARS) -> tuple[str, bool]:
    """``text`` on one line, cut at a word before ``limit`` characters (with an ellipsis) if longer."""
    flat = " ".join(printable(text).split())
    if len(flat) <= limit:
        return flat, False
    cut = flat[:limit].rsplit(" ", 1)[0] if " " in flat[:limit] else flat[:limit]
    return cut + "\u2026", True


def _table_row(r: str, e: Entry, anchor: str) -> str:
    plain = _cells(r, e)
    rank, name, method, *later = map(_html, plain)
    short_name = _html(_shortened(plain[1], NAME_CHARS)[0])
    if e.pairs:
        short_name = f'<a href="#recoveries-{anchor}">{short_name}</a>'
    attack, cut = _shortened(plain[2])
    attack = _html(attack) + (f' <a href="#attack-{anchor}">(more)</a>' if cut else "")
    cells = [f'<td class="rank">{rank}</td>', f'<td class="name" title="{name}"><div>{short_name}</div></td>',
             f'<td class="attack" title="{method}"><div>{attack}</div></td>']
    kinds = ("team", *("number",) * len(headline()), "time", "hardware", "date")  # CSS class of each later column
    for kind, text in zip(kinds, later):  # text in a <div> is capped in width (see PAGE_STYLE)
        cells.append(f'<td class="{kind}">{text}</td>' if kind in ("number", "date") else f'<td class="{kind}"><div>{text}</div></td>')
    style = ' class="reference"' if e.reference else ""
    return f"<tr{style}>{''.join(cells)}</tr>"


def pair_figure(pair: Pair, size: tuple[int, int]) -> str:
    label = f"{pair.kind} {pair.place}"
    beside = "" if pair.private is None else f" beside private image {pair.private}"
    private = "" if pair.private is None else f' &middot; <span class="private">private image {pair.private}</span>'
    return (f'<figure class="pair {pair.kind}"><img src="{_html(pair.picture)}" width="{size[0]}" height="{size[1]}" '
            f'alt="{label}: the recovery of encryption {pair.encryption}{beside}">'
            f'<figcaption><b class="place">{label}</b> &middot; <span class="ssim">SSIM {pair.ssim:.4f}</span><br>'
            f'<span class="encryption">encryption {pair.encryption}</span>{private}</figcaption></figure>')


def release_line(release: Release | None) -> str:
    if release is None:
        return ""
    return (f'<p id="release">Release <strong class="name">{_html(release.name)}</strong> (format version '
            f"{_html(str(release.format_version))}, {_html(str(release.n_encryptions))} encryptions); key store "
            f'commitment <code class="commitment">{_html(str(release.commitment))}</code>: the keys revealed after '
            "the challenge must hash to it (docs/FORMAT.md).</p>")


SECRET_NOTICE = ("SECRET: this page shows the private images (the ground truth) beside the recoveries. Keep it, "
                 "and its folder, to the maintainers until the keys are revealed; publish a board made with --public.")


def html_page(entries: list[Entry], release: Release | None = None, sizes: dict[str, tuple[int, int]] | None = None,
              *, public: bool = False) -> str:
    """A self-describing page that reads at 1280 px: the release, the table (attack descriptions
    shortened, in full below it), then each submission's best and worst recoveries as labelled pairs.

    ``sizes``: width and height of each picture file, so the page lays out before they load.
    ``public``: the pairs show the recoveries alone (see :func:`recovery_pairs`); otherwise the page
    opens with :data:`SECRET_NOTICE`.
    """
    sizes = sizes or {}
    head = ["Rank", "Submission", "Attack", "Submitted by", *headline(), "Running time", "Hardware", "Date"]
    rows, attacks, recoveries = [], [], []
    for n, (r, e) in enumerate(_ranked_rows(entries), 1):
        anchor = str(n)
        rows.append(_table_row(r, e, anchor))
        attacks.append(f'<dt id="attack-{anchor}">{_html(r)}. {_html(e.name)}</dt><dd>{_html(e.metadata.get("method", "")) or "-"}</dd>')
        if e.pairs:
            rows_of_pairs = "".join(
                f'<div class="pairs {kind}">' + "".join(pair_figure(pair, sizes.get(pair.picture, (0, 0)))
                                                    for pair in e.pairs if pair.kind == kind) + "</div>"
                for kind in ("best", "worst"))
            recoveries.append(f'<section class="recoveries" id="recoveries-{anchor}"><h3>{_html(r)}. {_html(e.name)}</h3>'
                              f"{rows_of_pairs}</section>")
    header = "".join(f"<th>{_html(h).replace('_', '_<wbr>')}</th>" for h in head)
    invalid = "".join(f"<li>{_html(e.name)}: {_html('; '.join(e.validation.problems))}</li>" for e in _invalid(entries))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">',
        f"<title>InstaHide challenge leaderboard{': ' + _html(release.name) if release else ''}</title>",
        f"<style>{PAGE_STYLE}</style>",
        "</head><body>",
        "<h1>InstaHide challenge leaderboard</h1>",
        "" if public else f'<p id="secret" class="secret">{_html(SECRET_NOTICE)}</p>',
        release_line(release),
        f"<p>Ranked by Max_SSIM (published to 4 decimals; equal Max_SSIM, equal rank); success means SSIM &gt; "
        f"{SUCCESS_SSIM} (docs/FORMAT.md, section 9). Rows ranked {REFERENCE_RANK!r} are reference floors, trivial "
        "submissions every attack should beat.</p>",
        f"<table><thead><tr>{header}</tr></thead><tbody>",
        *rows,
        "</tbody></table>",
        '<h2 id="attacks">Attacks</h2><dl>', *attacks, "</dl>",
        *(['<h2 id="recoveries">Recoveries</h2>',
           f"<p>Per submission, its {PAIRS_SHOWN} best recoveries by Max_SSIM (green), then its {PAIRS_SHOWN} worst "
           "(red); a private image appears at most once in each row. "
           + ("Each: the recovery, with the encryption's row and its SSIM against the private image it matches best "
              "(not shown: the private images stay secret until the keys are revealed).</p>" if public else
              "Each pair: the recovery (left) beside the private image it matches best (right), with the encryption's "
              "row, that private image's index and their SSIM.</p>"), *recoveries] if recoveries else []),
        f"<h2>Not ranked</h2><ul>{invalid}</ul>" if invalid else "",
        "</body></html>",
        "",
    ])


def check_replaceable(out: Path, force: bool) -> None:
    """Refuse to write over a board in ``out`` unless ``force``: checked before any scoring starts."""
    if not force and any((Path(out) / name).exists() for name in (LEADERBOARD_MD, LEADERBOARD_HTML)):
        raise UsageError(f"{printable(out)}: already holds a leaderboard; pass {argument('force', True)} to replace it")


def write(entries: list[Entry], store: fmt.KeyStore, out: Path, release: Path | None = None, *,
          public: bool = False, force: bool = False) -> list[Path]:
    """Write the pictures, ``leaderboard.md`` and ``leaderboard.html`` into ``out``; all or nothing new.

    ``release``: the release folder, named on the page with its commitment.  The board shows the
    private images, so its files are 0600 in folders created 0700, unless ``public`` (a board to
    publish during the challenge: scores and recoveries, no private image).  A folder that already
    holds a board is replaced only with ``force``, and then its pictures that the new board does
    not show are removed.
    """
    out = Path(out)
    check_replaceable(out, force)
    expected = expected_from_keys(store)
    contents, sizes = {}, {}
    for position, (r, e) in enumerate(((r, e) for r, e in _ranked_rows(entries) if not e.reference), 1):
        try:
            pictured = recovery_pairs(e, store, expected, public=public)
        except UsageError:  # its file changed since scoring: no pictures, still ranked
            pictured = []
        stem = f"{IMAGES_DIR}/{position:03d}-{re.sub(r'[^A-Za-z0-9._-]', '_', e.name)[:40]}"
        e.pairs = []
        for pair, picture in pictured:
            name = f"{stem}-{pair.kind}{pair.place}.png"
            buffer = io.BytesIO()
            save_png(picture, buffer)
            contents[name], sizes[name] = buffer.getvalue(), picture.size
            e.pairs.append(replace(pair, picture=name))
    contents[LEADERBOARD_MD] = markdown(entries)
    contents[LEADERBOARD_HTML] = html_page(entries, release_of(release) if release is not None else None, sizes,
                                           public=public)
    written = write_files(out, contents, "leaderboard", private=not public)
    for stale in sorted((out / IMAGES_DIR).glob("*.png")):
        if f"{IMAGES_DIR}/{stale.name}" not in contents:
            stale.unlink()
    return written[-2:]
