"""The strength page as a browser shows it (issue #22, part 2): headless Chromium at 1280 px, and
what a reader checks, measured in the DOM: the private-images warning first, the release and its
parameters, a verdict line per attacker, the columns defined, the chart drawn, and per attack its
best and worst recoveries apart, captioned, with distinct private images in every row.

Skipped without Chromium, except under ``INSTAHIDE_REQUIRE_BROWSER=1`` (CI), as the leaderboard's.
"""

from __future__ import annotations

import html
import json
import re

import pytest

from challenge.format import open_key_store
from tests.helpers import strength_report
from tests.test_leaderboard_browser import WIDTH, browse, chromium  # noqa: F401 (a fixture)
from attacks.registry import ATTACKS
from verifier.strength import COLUMNS

MEASURE = """<script>
window.addEventListener("load", () => {
const root = document.documentElement;
const out = document.createElement("pre");
out.id = "measurements";
const text = e => e ? e.textContent : null;
out.textContent = JSON.stringify({
  scrollWidth: Math.max(root.scrollWidth, document.body.scrollWidth),
  widest: Math.max(...[...document.querySelectorAll("body *")].map(e => e.getBoundingClientRect().right)),
  first: text(document.querySelector("body > p")),
  title: document.title,
  release: text(document.getElementById("release")),
  parameters: [...document.querySelectorAll("#parameters th")].map(text),
  verdict: [...document.querySelectorAll("ul.verdict li")].map(text),
  columns: [...document.querySelectorAll("#columns dt")].map(text),
  chart: document.querySelector("figure.chart img").naturalWidth,
  sections: [...document.querySelectorAll("section.recoveries")].map(s => ({
    title: text(s.querySelector("h3")),
    rows: [...s.querySelectorAll("div.pairs")].map(row => ({kind: row.className,
      captions: [...row.querySelectorAll("figcaption")].map(text),
      loaded: [...row.querySelectorAll("img")].every(i => i.naturalWidth > 0)})),
  })),
});
document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report(tiny_release, tmp_path_factory):  # its own: the browser test writes a page into it
    return strength_report(tiny_release, tmp_path_factory.mktemp("strength-page") / "report")


def test_the_page_reads_at_1280_px(chromium, report, tiny_release, tmp_path):  # noqa: F811
    probe = report / "measure.html"  # beside the page, so its pictures load as they do for it
    probe.write_text((report / "strength.html").read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"))
    dom = browse(chromium, tmp_path, f"--window-size={WIDTH},900", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="measurements">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    m = json.loads(html.unescape(found.group(1)))

    assert m["scrollWidth"] <= WIDTH and m["widest"] <= WIDTH, m
    assert m["first"].startswith("Private: this page shows the release's private images")
    assert m["title"] == f"Strength of {tiny_release.name}" and tiny_release.name in m["release"]
    assert {"mode", "k", "k_private", "c1", "c2", "domain", "per_image"} <= set(m["parameters"])
    assert len(m["verdict"]) >= len(ATTACKS) + 1 and m["verdict"][0].startswith("An attacker with the private source set (pool)")
    assert m["columns"] == [name for name, _ in COLUMNS]
    assert m["chart"] > 0

    assert [s["title"] for s in m["sections"]] == ["pairing", "pool", "graph"]
    caption = re.compile(r"(best|worst) ([1-4]) · SSIM (-?\d\.\d{4})encryption (\d+) · private image (\d+)")
    index = open_key_store(tiny_release / "secret" / "keys.zarr").read("encryption/private_index")
    for s in m["sections"]:
        assert [row["kind"] for row in s["rows"]] == ["pairs best", "pairs worst"]  # best and worst apart
        for row in s["rows"]:
            matches = [caption.fullmatch(c) for c in row["captions"]]
            assert len(matches) == 4 and all(matches) and row["loaded"], row
            assert all(f"pairs {match.group(1)}" == row["kind"] for match in matches)
            shown = [int(match.group(5)) for match in matches]
            assert len(set(shown)) == 4  # distinct private images in every row
            assert all(int(match.group(5)) in index[int(match.group(4))] for match in matches)
