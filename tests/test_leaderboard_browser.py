"""The leaderboard page as a browser shows it: headless Chromium at a 1280 px window, a screenshot,
and measurements a script writes into the DOM (``--dump-dom``): nothing wider than the window,
every pictured pair labelled, the release and its commitment named, no hostile markup alive.

Skipped without Chromium (Debian: ``apt-get install chromium``), except under
``INSTAHIDE_REQUIRE_BROWSER=1`` (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from challenge.format import open_key_store, read_json
from verifier import leaderboard
from verifier.baselines import write_baseline
from challenge.submission import Expected
from tests.helpers import unavailable

WIDTH = 1280
TIMEOUT = 120  # seconds per browser call; it takes a few on a loaded machine
HOSTILE = "<b>team|x<i>_" + "A" * 150  # markup and a long unbroken word, in a folder name
LONG_METHOD = "we cluster encryptions by their public mixing partners, then solve a linear program; " * 6

# Appended to a copy of the page: once everything has loaded, the numbers and texts a reader would
# check, as JSON in the DOM.
MEASURE = """<script>
window.addEventListener("load", () => {
const root = document.documentElement;
const out = document.createElement("pre");
out.id = "measurements";
out.textContent = JSON.stringify({
  innerWidth: window.innerWidth,
  scrollWidth: Math.max(root.scrollWidth, document.body.scrollWidth),
  widest: Math.max(...[...document.querySelectorAll("body *")].map(e => e.getBoundingClientRect().right)),
  scripts: document.scripts.length,
  injected: document.querySelectorAll("b b, i b, td b, td i, h3 b").length,
  release: document.getElementById("release").textContent,
  sections: [...document.querySelectorAll("section.recoveries")].map(s => ({
    title: s.querySelector("h3").textContent,
    pairs: [...s.querySelectorAll("figure.pair")].map(f => ({
      kind: f.className, caption: f.querySelector("figcaption").textContent,
      image: f.querySelector("img").naturalWidth, shown: f.querySelector("img").getBoundingClientRect().width})),
  })),
});
document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        unavailable("BROWSER", "no chromium on PATH (apt-get install chromium): the leaderboard page is not rendered "
                    "(see README, 'Looking at the leaderboard')")
    return path


def browse(chromium: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """One headless Chromium call on local files only: no network, a fresh profile, a timeout."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    result = subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def board(tiny_release, tmp_path_factory):
    """A leaderboard of the oracle (long attack description), a hostile-named copy and the blind baseline."""
    root = tmp_path_factory.mktemp("browser")
    store = open_key_store(tiny_release / "secret" / "keys.zarr")
    expected = Expected(100, "centered", (32, 32, 3))
    for kind in ("oracle", "blind"):
        write_baseline(kind, root / "subs" / kind, expected, store=store, release=tiny_release)
    shutil.copytree(root / "subs" / "oracle", root / "subs" / HOSTILE)
    (root / "subs" / "oracle" / "metadata.json").write_text(json.dumps(
        {"team": "<script>alert(1)</script>", "method": LONG_METHOD, "hardware": "8x A100 80GB, 2 TB RAM"}))
    entries = leaderboard.build([root / "subs" / n for n in ("oracle", HOSTILE, "blind")], store)
    leaderboard.write(entries, store, root / "board", release=tiny_release)
    return root / "board"


def test_page_fits_1280_px_and_labels_every_pair(chromium, board, tiny_release, tmp_path):
    page = (board / "leaderboard.html").read_text(encoding="utf-8")
    probe = board / "measure.html"  # beside the page, so the pictures load as they do for it
    probe.write_text(page.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = browse(chromium, tmp_path, f"--window-size={WIDTH},900", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="measurements">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    m = json.loads(html.unescape(found.group(1)))

    assert m["innerWidth"] == WIDTH
    assert m["scrollWidth"] <= WIDTH and m["widest"] <= WIDTH, m  # no horizontal scrolling
    assert m["scripts"] == 1 and m["injected"] == 0  # only the probe's script; names stay text

    manifest = read_json(tiny_release / "public" / "manifest.json")
    assert tiny_release.name in m["release"] and manifest["key_store"]["commitment"] in m["release"]

    sections = m["sections"]
    assert [s["title"] for s in sections] == [f"1. {HOSTILE}", "1. oracle", "3. blind"]
    caption = re.compile(r"(best|worst) ([1-4]) · SSIM (-?\d\.\d{4})encryption (\d+) · private image (\d+)")
    index = open_key_store(tiny_release / "secret" / "keys.zarr").read("encryption/private_index")
    for s in sections:
        pairs = [(p["kind"], caption.fullmatch(p["caption"])) for p in s["pairs"]]
        assert len(pairs) == 8 and all(match for _, match in pairs), s["pairs"]
        for kind, match in pairs:
            assert kind == f"pair {match.group(1)}"  # grouped and coloured by kind
            assert int(match.group(5)) in index[int(match.group(4))]  # the private image is in that encryption
        for kind in ("best", "worst"):  # no private image twice in a row
            shown = [match.group(5) for k, match in pairs if match.group(1) == kind]
            assert len(set(shown)) == len(shown) == 4
        assert all(p["image"] > 0 and 0 < p["shown"] <= WIDTH for p in s["pairs"])  # every picture loaded


def test_screenshot_at_1280_px(chromium, board, tmp_path):
    shot = tmp_path / "leaderboard.png"
    browse(chromium, tmp_path, f"--window-size={WIDTH},2000", f"--screenshot={shot}",
           (board / "leaderboard.html").as_uri())
    with Image.open(shot) as picture:
        assert picture.size == (WIDTH, 2000)
        assert len(picture.convert("L").getcolors(1 << 16) or ()) > 50  # a page with pictures, not a blank
