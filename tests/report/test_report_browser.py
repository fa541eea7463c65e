"""The report opened in a real browser (Debian `chromium`, headless) with the network off: every
chart renders, nothing is logged to the console, and the run picker filters the charts.

Network off: every host resolves to nothing and every request goes to a dead proxy, so a page
that fetched anything (a CDN script, a data URL) would fail to render here. The screenshot is
kept as a test artifact (in RAGVSLC_TEST_ARTIFACTS when set, else the test's tmp folder).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest
from PIL import Image, ImageStat

from compare.analysis import summary
from compare.report.assemble import ReportFiles, write_report
from compare.report.palette import KIND_COLOURS
from tests.fixtures.dashboard import RUN_A, RUN_B, fill

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian package `chromium` is not installed (apt-get install -y chromium)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",  # the network is off
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def _console(stderr: str) -> list[str]:
    """Console messages the page logged (chromium prints each as INFO:CONSOLE)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


class _Inside(HTMLParser):
    """Text and tags inside one element (by id): what the chart drew, not the tables beside it."""

    def __init__(self, element_id: str) -> None:
        super().__init__()
        self.id, self.depth, self.parts = element_id, 0, []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth or dict(attrs).get("id") == self.id:
            self.depth += tag not in VOID
            self.parts.append(f"<{tag} " + " ".join(f'{k}="{v}"' for k, v in attrs) + ">")

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


VOID = {"br", "img", "input", "meta", "link", "hr", "source", "wbr", "col", "area", "base", "embed"}


def _chart_html(dom: str, name: str) -> str:
    parser = _Inside(f"chart-{name}")
    parser.feed(dom)
    return "".join(parser.parts)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    """Two runs, so the page carries the run picker as well as every chart."""
    folder = tmp_path_factory.mktemp("browser")
    fill(folder / "runs.duckdb")
    return write_report(folder / "runs.duckdb", folder / "report", [RUN_A, RUN_B], images=False)


def test_every_chart_renders_offline_without_console_errors(report: ReportFiles, tmp_path: Path) -> None:
    done = _chromium(report.html.as_uri(), tmp_path / "profile", "--dump-dom")
    dom = done.stdout
    assert len(report.charts) == 7
    for name in report.charts:
        chart = _chart_html(dom, name)
        assert chart.count('class="marks"') == 1, name  # vega drew its scenegraph root into the div
        assert "<path" in chart or "<text" in chart, name
    assert dom.count('class="marks"') == len(report.charts)
    assert _console(done.stderr) == []


def _pipeline_legend(chart: str) -> str:
    """The values vega lists in a chart's pipeline legend (its accessible label)."""
    found = re.search(r"legend titled 'pipeline' for [^\"]*? values?: ([^\"]*)\"", chart)
    assert found, chart[:300]
    return found.group(1)


def test_run_picker_link_filters_the_charts(report: ReportFiles, tmp_path: Path) -> None:
    """report.html#run=<id> picks that run: legends (computed from the filtered data) shrink to it."""
    picked = _chromium(report.html.as_uri() + f"#run={RUN_B}", tmp_path / "profile", "--dump-dom").stdout
    everything = _chromium(report.html.as_uri(), tmp_path / "profile2", "--dump-dom").stdout
    names = _names(report)  # a run is named by its corpus and time in labels, never by its id
    lc_b, k2_a = f"Long context \u00b7 {names[RUN_B]}", f"RAG k=2 \u00b7 {names[RUN_A]}"
    for name in ("quality_vs_length", "latency_percentiles", "cost_vs_queries", "quality_vs_cost"):
        assert _pipeline_legend(_chart_html(picked, name)) == lc_b, name
        legend = _pipeline_legend(_chart_html(everything, name))
        assert lc_b in legend and k2_a in legend, name


def _names(report: ReportFiles) -> dict[str, str]:
    with duckdb.connect(str(report.html.parent.parent / "runs.duckdb"), read_only=True) as con:
        return summary.run_names(con, [RUN_A, RUN_B])


# Appended to a copy of the page: what the first screen shows (text nodes whose box starts in the
# viewport) and how wide the page is, written into the DOM that --dump-dom prints.
_PROBE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); const seen = [];
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    if (n.parentElement.closest('script, style, #probe')) continue;
    const r = document.createRange(); r.selectNodeContents(n); const box = r.getBoundingClientRect();
    if (box.height > 0 && box.top < window.innerHeight) seen.push(n.textContent.trim());
  }
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({first: seen.join(' '), width: document.documentElement.scrollWidth,
                                    view: window.innerWidth});
  document.body.appendChild(out);
}, 500));</script>"""


@pytest.mark.parametrize("width", [1400, 420])
def test_first_screen_opens_on_the_decision_without_run_ids(report: ReportFiles, tmp_path: Path,
                                                            width: int) -> None:
    """Issue 29 items 1-4: at desktop and phone width the first screen holds the decision line
    and the pipeline cards, names runs by corpus and time (no run id), and the page is no wider
    than the screen (charts fit their box, tables scroll inside theirs)."""
    page = tmp_path / "probe.html"
    head, _, tail = report.html.read_text().rpartition("</body>")  # the last one: the bundle has one
    page.write_text(head + _PROBE + "</body>" + tail)
    dom = _chromium(page.as_uri(), tmp_path / "profile", "--dump-dom", f"--window-size={width},900").stdout
    probe = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))  # type: ignore[union-attr]
    first = probe["first"]
    assert first.startswith("Long context vs RAG") and "Decision" in first, first[:300]
    assert RUN_A not in first and RUN_B not in first, first
    assert _names(report)[RUN_A] in first
    assert probe["width"] <= probe["view"], probe  # nothing wider than the screen
    assert 'name="viewport"' in dom


def test_one_colour_per_pipeline_kind_on_every_chart(report: ReportFiles, tmp_path: Path) -> None:
    """Issue 29 item 3: every long-context line and card is Okabe-Ito blue, every RAG one orange,
    in both runs, and no chart falls back to Vega's default palette."""
    dom = _chromium(report.html.as_uri(), tmp_path / "profile", "--dump-dom").stdout.lower()
    lc, rag = KIND_COLOURS["long_context"].lower(), KIND_COLOURS["rag"].lower()
    for name in ("quality_vs_length", "latency_percentiles", "cost_vs_queries", "quality_vs_cost"):
        chart = _chart_html(dom, name)
        assert lc in chart and rag in chart, name
        assert "#4c78a8" not in chart and "#f58518" not in chart, name  # vega's default scheme
    cards = re.findall(r"<div class=\"card[^\"]*\" style=\"border-top-color: (#\w+)\"><h3>([^<]*)", dom)
    assert cards and all(c == (lc if t.startswith("long context") else rag) for c, t in cards), cards


def test_screenshot_shows_the_charts(report: ReportFiles, tmp_path: Path) -> None:
    folder = Path(os.environ.get("RAGVSLC_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "report-screenshot.png"
    _chromium(report.html.as_uri(), tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,7000")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 7000)
    # Charts are colour: a page of only text and tables would be (nearly) grey everywhere.
    top = image.crop((0, 0, 1400, 3500))
    coloured = sum(1 for r, g, b in top.getdata() if max(r, g, b) - min(r, g, b) > 60)
    assert coloured > 20_000, f"only {coloured} coloured pixels in {shot}"
    assert ImageStat.Stat(top).stddev[0] > 20
    print(f"\nscreenshot: {shot}")
