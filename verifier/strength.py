"""``instahide strength``: what the known attacks recover from a release, before it is published.

Runs the attacks it is given (the command tree passes the rows of ``attacks.registry.ATTACKS``:
``graph`` always; ``pool`` when a pool is given or the private set is the embedded demo data, whose
pool ships with the tool), the trivial floors (``constant``, ``mean``) and the key-given ``pairing``
baseline; scores each with the verifier and writes
``strength.json`` and ``strength.html`` (a verdict per attacker, the table, a chart, and each
attack's best and worst recoveries beside the truth).  A private image counts as recovered by an
attack only where its SSIM exceeds the success threshold and what the floors reach on that image:
a flat grey that already matches a dark crop is no attack.  The keys are used only to score and to
measure the graph attack's pairing accuracy; everything written is the owner's only (it shows the
private images).
"""

from __future__ import annotations

import html
import io
import json
import time
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from challenge import format as fmt
from challenge.errors import UsageError, argument
from challenge.files import output_folder, write_files
from challenge.preview import save_png
from challenge.submission import Expected, encryption_blocks, open_for_scoring, write_submission
from verifier import charts
from verifier.baselines import FLOORS, METHODS, floor_blocks, pairing_blocks
from verifier.leaderboard import PAGE_STYLE, PAIRS_SHOWN, Entry as Scored, pair_figure, recovery_pairs, release_line, release_of
from verifier.scoring import METRICS, SUCCESS_SSIM, Scores, published, score
from verifier.submission import Validation

__all__ = ["COLUMNS", "PAIRING", "STRENGTH_HTML", "STRENGTH_JSON", "SWEEP_HTML", "SWEEP_JSON", "SWEEP_MD", "Attacker",
           "Writer", "strength", "sweep_files", "verdict"]

STRENGTH_JSON = "strength.json"
STRENGTH_HTML = "strength.html"
CHART = "charts/ssim-against-floors.png"
SWEEP_JSON, SWEEP_MD, SWEEP_HTML, SWEEP_CHART = "sweep.json", "sweep.md", "sweep.html", "charts/sweep.png"
PICTURES_DIR = "pictures"
PRIVATE_WARNING = ('<p class="private"><strong>Private: this page shows the release\'s private images</strong> '
                   "(the ground truth, and recoveries of it). Keep it, like the key store, from anyone who may "
                   "take part in the challenge until the keys are revealed.</p>")

# The table's columns: (heading, definition); docs/ATTACKS.md repeats them
COLUMNS = (
    ("attack", "constant and mean are the floors (trivial submissions: the best flat grey, the mean private "
     "image); pairing is given the keys; keyless attacks (pool, graph) use the public files only (and pool "
     "a data set the attacker can obtain)"),
    *((metric.name, metric.meaning) for metric in METRICS[:2]),  # as verify and the leaderboard define them
    ("success rate", f"share of encryptions whose recovery has SSIM > {SUCCESS_SSIM} against one of its private images"),
    ("recovered", f"private images with SSIM > {SUCCESS_SSIM} in at least one encryption's recovery"),
    ("above the floors", f"private images recovered (SSIM > {SUCCESS_SSIM}) with an SSIM above what both floors reach "
     "on that image: the count the verdict uses"),
    ("pair accuracy", "graph only: share of encryptions whose groups are exactly their private images (each group "
     "matched to the private image it shares most encryptions with)"),
    ("time", "wall time of the attack and of writing its submission, not of scoring it"),
)


@dataclass
class Entry:
    name: str
    keyless: bool
    seconds: float
    scores: Scores
    extra: dict
    validation: Validation  # of its submission: the recoveries pictured are read from it
    recovered_above: int = 0  # private images recovered above the floors (set once the floors are scored)
    pairs: list = field(default_factory=list)  # (leaderboard Pair, picture size) of its pictured recoveries

    def to_json(self) -> dict:
        s = self.scores.summary
        best = self.scores.to_json()["best_ssim_per_private"]
        return {"attack": self.name, "keyless": self.keyless, "running_time_s": round(self.seconds, 3),
                **{k: published(s[k]) for k in ("Max_SSIM", "Mean_SSIM", "success_rate", "recovered_share")},
                "n_private": s["n_private"], "recovered": int(np.sum(self.scores.best_per_private > SUCCESS_SSIM)),
                "recovered_above_floors": self.recovered_above, "best_ssim_per_private": best, **self.extra}


Writer = Callable[[Path, fmt.KeyStore], dict]  # writes a submission into a folder; returns report fields


@dataclass(frozen=True)
class Attacker:
    """An attack as the verdict and the page name it: the attacker it stands for and what that
    attacker has; ``write`` runs it (None: not assessed here, ``missing`` says what it needs)."""

    name: str
    _: KW_ONLY
    who: str
    has: str
    write: Writer | None = None
    missing: str = ""


PAIRING = Attacker("pairing", who="an attacker given the keys' pairing",  # the verifier's own baseline, always run
                   has="which private images each encryption mixes, and their lambdas, from the keys: the ceiling of "
                   "the graph attack's last step once its grouping is solved")


def strength(release_path: Path, keys: Path, out: Path, attackers: Sequence[Attacker], *, force: bool = False,
             rows: int = 4096, log: Callable[[str], None] | None = None) -> dict:
    """Run, score and report the keyless attacks of ``attackers`` beside the floors and the key-given
    pairing baseline; returns the report written to strength.json.

    Parameters
    ----------
    release_path, keys : Path
        The release and the key store it commits to.
    out : Path
        The report folder (private: it shows the private images).
    attackers : sequence of Attacker
        Every keyless attack, in the verdict's order; those without ``write`` are reported not
        assessed.  They come from the caller (the command tree), so the verifier imports none.
    force : bool
        Replace an existing report.
    rows : int
        Rows processed at a time.
    log : callable, optional
        Told one line per attack once it is scored.

    Returns
    -------
    dict
        The report, as written to strength.json.
    """
    charts.require_matplotlib()
    expected, store = open_for_scoring(release_path, keys)  # the keys the release commits to
    out = Path(out)
    report_path = out / STRENGTH_JSON
    if report_path.exists() and not force:
        raise UsageError(f"{report_path}: already exists; pass {argument('force', True)} to replace it")
    subs = out / "submissions"

    def floor(kind: str) -> Writer:
        return lambda d, store: _write(d, floor_blocks(kind, store, expected, rows), "uint8", expected, METHODS[kind], force)

    runs: list[tuple[str, bool, Writer]] = [
        ("constant", False, floor("constant")),
        ("mean", False, floor("mean")),
        ("pairing", False, lambda d, store: _write(
            d, pairing_blocks(store, encryption_blocks(release_path, expected, rows), expected, rows),
            "float32", expected, METHODS["pairing"], force)),
        *((a.name, True, a.write) for a in attackers if a.write is not None),
    ]
    with output_folder(out, private=True):
        entries = []
        for name, keyless, run in runs:
            start = time.perf_counter()
            extra = run(subs / name, store)
            seconds = time.perf_counter() - start
            validation, scores = score(subs / name, store, expected=expected, rows=rows)
            if not validation.valid:
                raise RuntimeError(f"{name}: wrote an invalid submission: {validation.problems}")
            entries.append(Entry(name, keyless, seconds, scores, extra, validation))
            if log:
                log(f"{name}: Max_SSIM {scores.summary['Max_SSIM']:.3f}, recovered "
                    f"{round(scores.summary['recovered_share'] * scores.summary['n_private'])} in {seconds:.1f} s")
        floors = floor_ssim(entries)
        for e in entries:
            e.recovered_above = int(np.sum(above_floors(e.scores.best_per_private, floors)))
        release = release_of(release_path)
        report = {"release": {"name": release.name, "path": str(release_path), "format_version": release.format_version,
                              "n_encryptions": release.n_encryptions, "commitment": release.commitment},
                  "params": store.params.to_dict(), "success_ssim": SUCCESS_SSIM,
                  "floor_recovered": int(np.sum(floors > SUCCESS_SSIM)), "verdict": verdict(entries, floors, attackers),
                  "attacks": [e.to_json() for e in entries]}
        files = _pictures(entries, store, expected)
        files[CHART] = charts.ssim_against_floors([(e.name, e.scores.best_per_private) for e in entries
                                                   if e.name not in FLOORS], floors, SUCCESS_SSIM)
        files[STRENGTH_HTML] = _html(report, entries, release, attackers)
        files[STRENGTH_JSON] = json.dumps(report, indent=2, sort_keys=True) + "\n"
        write_files(out, files, "strength report", private=True)  # the JSON last: a report without it is not whole
    return report


def _write(folder: Path, blocks, dtype: str, expected: Expected, method: str, force: bool) -> dict:
    write_submission(folder, blocks, expected=expected, dtype=dtype,
                     metadata={"team": "instahide strength", "method": method}, force=force)
    return {}


def floor_ssim(entries: list[Entry]) -> np.ndarray:
    """Per private image, the best SSIM either floor (constant, mean) reaches on it."""
    by_name = {e.name: e.scores.best_per_private for e in entries}
    return np.fmax(by_name["constant"], by_name["mean"])


def above_floors(best: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Per private image: recovered (best SSIM above the success threshold) and above both floors on it."""
    return (best > SUCCESS_SSIM) & (best > floors)


def verdict(entries: list[Entry], floors: np.ndarray, attackers: Sequence[Attacker]) -> list[str]:
    """One line per attacker (``attackers``, then :data:`PAIRING`): what it recovers above the floors,
    or a plain "nothing"; then what the floors reach alone, and whether any attack beats them at all."""
    by_name = {e.name: e for e in entries}
    n = len(floors)
    constant = by_name["constant"].scores.summary["Max_SSIM"]
    lines = []
    for attacker in (*attackers, PAIRING):
        name, who = attacker.name, attacker.who
        e = by_name.get(name)
        if e is None:
            lines.append(f"{who.capitalize()}: not assessed ({attacker.missing})")
            continue
        s = e.scores.summary
        beaten = int(np.sum(e.scores.best_per_private > floors))
        if e.recovered_above:
            lines.append(f"{who.capitalize()} ({name}): recovers {e.recovered_above} of {n} private images above the "
                         f"floors (Max_SSIM {s['Max_SSIM']:.3f})")
        elif beaten:
            lines.append(f"{who.capitalize()} ({name}): recovers nothing above the floors; it beats them on {beaten} of "
                         f"{n} private images, none above SSIM {SUCCESS_SSIM} (Max_SSIM {s['Max_SSIM']:.3f})")
        else:
            lines.append(f"{who.capitalize()} ({name}): recovers nothing; it beats the floors on no private image "
                         f"(Max_SSIM {s['Max_SSIM']:.3f}, the constant floor's {constant:.3f})")
    trivial = int(np.sum(floors > SUCCESS_SSIM))
    if trivial:
        lines.append(f"The floors alone reach SSIM > {SUCCESS_SSIM} on {trivial} of {n} private images (flat grey or "
                     "the mean image): those count for no attack")
    if not any(e.recovered_above for e in entries):
        lines.append("No attack recovers any private image above the trivial floors")
    return lines


def _pictures(entries: list[Entry], store: fmt.KeyStore, expected: Expected) -> dict[str, bytes]:
    """Per attack (not the floors), its best and worst recoveries, each beside the private image it
    matches best; a private image appears once per row.  Sets ``entry.pairs`` for the page."""
    files = {}
    for e in entries:
        if e.name in FLOORS:
            continue
        scored = Scored(Path(e.name), validation=e.validation, scores=e.scores)
        for pair, picture in recovery_pairs(scored, store, expected):
            name = f"{PICTURES_DIR}/{e.name}-{pair.kind}{pair.place}.png"
            buffer = io.BytesIO()
            save_png(picture, buffer)
            files[name] = buffer.getvalue()
            e.pairs.append((replace(pair, picture=name), picture.size))
    return files


def _number(value, digits: int = 4) -> str:
    return f'<td class="number">{value:.{digits}f}</td>' if isinstance(value, float) else f'<td class="number">{value}</td>'


def _html(report: dict, entries: list[Entry], release, attackers: Sequence[Attacker]) -> str:
    e_json = {j["attack"]: j for j in report["attacks"]}
    attackers = (*attackers, PAIRING)
    who = {a.name: a.who for a in attackers}
    rows = []
    for e in entries:
        j = e_json[e.name]
        pair = j.get("pair_accuracy")
        style = ' class="reference"' if e.name in FLOORS else ""
        rows.append(f'<tr{style}><td>{html.escape(e.name)}</td><td>{html.escape(who.get(e.name, "keyless" if e.keyless else "floor"))}</td>'
                    + _number(j["Max_SSIM"]) + _number(j["Mean_SSIM"]) + _number(j["success_rate"], 3)
                    + _number(f"{j['recovered']} of {j['n_private']}") + _number(f"{j['recovered_above_floors']} of {j['n_private']}")
                    + (_number(pair, 3) if pair is not None else '<td class="number">-</td>')
                    + _number(f"{j['running_time_s']:.1f} s") + "</tr>")
    params = "".join(f"<th>{html.escape(k)}</th>" for k in report["params"]) + "</tr><tr>" + "".join(
        f"<td>{html.escape(str(v))}</td>" for v in report["params"].values())
    columns = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>" for name, text in COLUMNS)
    defined = "".join(f"<dt>{html.escape(a.name)}: {html.escape(a.who)}</dt><dd>{html.escape(a.has)}</dd>"
                      for a in attackers)
    sections = []
    for e in entries:
        if not e.pairs:
            continue
        rows_of_pairs = "".join(
            f'<h4>{kind} {PAIRS_SHOWN}</h4><div class="pairs {kind}">'
            + "".join(pair_figure(pair, size) for pair, size in e.pairs if pair.kind == kind) + "</div>"
            for kind in ("best", "worst"))
        sections.append(f'<section class="recoveries" id="recoveries-{html.escape(e.name)}"><h3>{html.escape(e.name)}</h3>'
                        f"{rows_of_pairs}</section>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">',
        f"<title>Strength of {html.escape(release.name)}</title>",
        f"<style>{PAGE_STYLE}p.private{{background:#fde8e4;border-left:4px solid #c53;padding:6px 10px}}"
        "ul.verdict li{margin:.3em 0}table.params th{font-weight:normal;color:#555;font-size:.85em}h4{margin:.6em 0 .2em}</style>",
        "</head><body>",
        f"<h1>Strength of {html.escape(release.name)}</h1>",
        PRIVATE_WARNING,
        release_line(release),
        f'<table class="params" id="parameters"><tr>{params}</tr></table>',
        '<h2 id="verdict">Verdict</h2><ul class="verdict">',
        *(f"<li>{html.escape(line)}.</li>" for line in report["verdict"]),
        "</ul>",
        f'<p>A private image counts as recovered by an attack only where its SSIM exceeds {SUCCESS_SSIM} and what both '
        "floors (the best flat grey, the mean private image) reach on that image.</p>",
        '<h2 id="attacks">Attacks</h2><table><thead><tr><th>attack</th><th>attacker</th><th>Max_SSIM</th>'
        "<th>Mean_SSIM</th><th>success rate</th><th>recovered</th><th>above the floors</th><th>pair accuracy</th>"
        "<th>time</th></tr></thead><tbody>",
        *rows,
        "</tbody></table>",
        f'<dl id="columns">{columns}</dl>',
        f'<h3>Attackers</h3><dl id="attackers">{defined}</dl>',
        '<h2 id="chart">Each private image against the floors</h2>',
        f'<figure class="chart"><img src="{CHART}" alt="per attack, each private image\'s best SSIM against the best '
        'of the floors on it" style="max-width:100%"><figcaption>One dot per private image: the best SSIM the floors '
        f"reach on it (x) and the attack's best (y). Green: recovered above the floors (above the diagonal and above "
        f"{SUCCESS_SSIM}); grey: a floor already matches it; red: not recovered.</figcaption></figure>",
        '<h2 id="recoveries">Recoveries</h2>',
        f"<p>Per attack, its {PAIRS_SHOWN} best recoveries by SSIM (green), then its {PAIRS_SHOWN} worst (red); a private "
        "image appears at most once in each row. Each pair: the recovery (left) beside the private image it matches "
        "best (right), with the encryption's row, that private image's index and their SSIM.</p>",
        *sections,
        "</body></html>",
        "",
    ])


def sweep_files(sweep: dict) -> dict[str, str | bytes]:
    """The sweep's table (Markdown and a page), chart and JSON: per setting, each attack's private
    images recovered above the floors and its Max_SSIM; a setting over its budget says so."""
    attacks = list(dict.fromkeys(a["attack"] for row in sweep["settings"] for a in row["attacks"]))
    keyed = [{a["attack"]: a for a in row["attacks"]} for row in sweep["settings"]]

    def cell(row: dict, name: str) -> str:
        a = row.get(name)
        return "-" if a is None else f"{a['recovered_above_floors']} of {a['n_private']} ({a['Max_SSIM']:.3f})"

    head = ["setting", *attacks, "time"]
    times = [f"over budget ({sweep['budget_s']} s)" if row["over_budget"] else f"{row['seconds']:.0f} s"
             for row in sweep["settings"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, by_name, time_cell in zip(sweep["settings"], keyed, times):
        lines.append("| " + " | ".join([row["setting"], *(cell(by_name, n) for n in attacks), time_cell]) + " |")
    lines += ["", f"Each cell: private images recovered above the floors (SSIM > {SUCCESS_SSIM} and above what the "
              "constant and mean floors reach on that image), then Max_SSIM; docs/ATTACKS.md defines both."]
    markdown = "\n".join(lines) + "\n"
    def matrix(value) -> np.ndarray:
        return np.array([[value(by_name[n]) if n in by_name else np.nan for n in attacks]
                         for by_name in keyed]).reshape(len(keyed), len(attacks))

    share = matrix(lambda a: a["recovered_above_floors"] / a["n_private"])
    table = "".join(
        "<tr>" + f"<td>{html.escape(row['setting'])}</td>"
        + "".join(f'<td class="number">{html.escape(cell(by_name, n))}</td>' for n in attacks)
        + f'<td class="number">{html.escape(time_cell)}</td><td>{_report_link(row["report"])}</td></tr>'
        for row, by_name, time_cell in zip(sweep["settings"], keyed, times))
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">',
        f"<title>Strength sweep</title><style>{PAGE_STYLE}</style></head><body>",
        "<h1>Strength sweep</h1>",
        "<p>Per setting, a small practice release built from the same sources; each attack's private images "
        f"recovered above the floors, then its Max_SSIM (seed {html.escape(str(sweep['seed']))}, budget "
        f"{sweep['budget_s']} s per setting). Each setting's report shows private images.</p>",
        "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "<th></th></tr></thead><tbody>",
        table,
        "</tbody></table>",
        f'<img src="{SWEEP_CHART}" alt="share recovered above the floors per setting and attack" style="max-width:100%">',
        "</body></html>",
        "",
    ])
    return {SWEEP_CHART: charts.sweep_chart([row["setting"] for row in sweep["settings"]], attacks, share,
                                            matrix(lambda a: a["Max_SSIM"])),
            SWEEP_MD: markdown, SWEEP_HTML: page, SWEEP_JSON: json.dumps(sweep, indent=2, sort_keys=True) + "\n"}


def _report_link(path: str | None) -> str:
    return "" if path is None else f'<a href="{html.escape(path)}">report</a>'
