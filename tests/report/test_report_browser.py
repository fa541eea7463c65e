"""The report opened in a real browser (Debian `chromium`, headless) with the network off: every
chart renders, nothing is logged to the console, and the run picker filters the charts.

Network off: every host resolves to nothing and every request goes to a dead proxy, so a page
that fetched anything (a CDN script, a data URL) would fail to render here. The screenshot is
kept as a test artifact (in RAGVSLC_TEST_ARTIFACTS when set, else the test's tmp folder).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from compare.report.assemble import ReportFiles, write_report
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
    for name in ("quality_vs_length", "latency_percentiles", "cost_vs_queries", "quality_vs_cost"):
        assert _pipeline_legend(_chart_html(picked, name)) == f"long_context @{RUN_B}", name
        legend = _pipeline_legend(_chart_html(everything, name))
        assert f"long_context @{RUN_B}" in legend and f"rag k=2 cs=200 relevance @{RUN_A}" in legend, name


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
