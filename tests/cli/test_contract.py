"""The CLI's contract (issue 29 items 6-10): bad input is one line and exit 2, never a traceback;
typed options list their choices; read-only commands leave the file alone; run ids by unique
prefix; tables that never break a number; `recommend` tells PARTIAL from NONE by exit code.

The database is the dashboard fixture (tests/fixtures/dashboard.py: runs "run-a" with lengths
1000 and 4000 and "run-b"), filled through the real Store into a real DuckDB file."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from rich.console import Console
from typer.testing import CliRunner

from main import app
from tests.cli.test_json_output import WORKLOAD_TOML
from tests.fixtures.dashboard import RUN_A, RUN_B, SHEET_API_TOML, fill
from tests.fixtures.store import store_fixtures

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
db, _ = store_fixtures(fill, "contract")

WORKLOAD = WORKLOAD_TOML.replace("tokens = [1000, 4000]", "tokens = {tokens}")  # lengths given per test


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def sheet(tmp_path: Path) -> Path:
    path = tmp_path / "sheet.toml"
    path.write_text(SHEET_API_TOML)
    return path


@pytest.fixture
def bad_files(tmp_path: Path) -> Iterator[dict[str, Path]]:
    empty = tmp_path / "empty.duckdb"
    empty.touch()
    text = tmp_path / "notes.duckdb"
    text.write_text("these are my notes, not a database\n" * 200)
    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute("CREATE TABLE orders (id INTEGER)")
    yield {"an empty file": empty, "not a DuckDB database": text, "not a ragvslc results database": foreign}


def test_bad_input_is_one_line_and_exit_2(bad_files: dict[str, Path], sheet: Path, tmp_path: Path) -> None:
    """Each bad input of issue 29 item 6, as a user types it (a real process: no traceback)."""
    res = _cli("run", "--lengths", "2k", "--db", str(tmp_path / "x.duckdb"))
    assert res.returncode == 2 and "--lengths" in res.stderr and "'2k'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "x.duckdb").exists()
    wl = ROOT / "workloads" / "demo.toml"
    for what, path in bad_files.items():
        for args in (["runs"], ["cost", "--price-sheet", str(sheet)], ["recommend", "--workload", str(wl)],
                     ["export", "--out", str(tmp_path / "exported")]):
            got = runner.invoke(app, [*args, "--db", str(path)])
            assert got.exit_code == 2, (args, what, got.output)
            assert what in got.output and "Traceback" not in got.output, (args, what, got.output)
    assert not (tmp_path / "exported").exists()  # not ours: nothing exported, not empty tables
    res = _cli("cost", "--price-sheet", str(sheet), "--queries-per-doc", "ten")
    assert res.returncode == 2 and "--queries-per-doc" in res.stderr and "'ten'" in res.stderr, res.stderr
    xml = runner.invoke(app, ["export", "--format", "xml"])
    assert xml.exit_code == 2 and "parquet" in xml.output and "csv" in xml.output


def test_help_lists_choices_keeps_brackets_and_answers_to_h() -> None:
    run_help = runner.invoke(app, ["run", "-h"], terminal_width=200).output
    assert "--schedule" in run_help and "prefix" in run_help and "given" in run_help
    assert "consistent_hash" in run_help and "power_of_two" in run_help
    assert runner.invoke(app, ["-h"], terminal_width=200).exit_code == 0
    assert "[models]" in runner.invoke(app, ["models", "prepare", "-h"], terminal_width=200).output
    assert "[corpus]" in runner.invoke(app, ["corpora", "list", "--help"], terminal_width=200).output
    assert "tesseract" in runner.invoke(app, ["video", "ingest", "-h"], terminal_width=200).output
    assert "4 partial evidence" in runner.invoke(app, ["--help"], terminal_width=200).output


def test_enum_choices_are_the_engine_choices() -> None:
    """The option Enums are written out for --help and shell completion; they must list exactly
    what the engine accepts."""
    from cli.data import OcrChoice
    from cli.results import ExportFormat
    from cli.run import RouterPolicy, Schedule
    from compare.run.spec import RunSpec, ServerSpec
    from compare.store.export import FORMATS
    from corpora.video import OCR_ENGINES

    def literal(annotation: object) -> set[str]:
        return {a for arg in typing.get_args(annotation) for a in (typing.get_args(arg) or (arg,))
                if isinstance(a, str)}

    assert {s.value for s in Schedule} == literal(RunSpec.model_fields["schedule"].annotation)
    assert {r.value for r in RouterPolicy} == literal(ServerSpec.model_fields["router"].annotation)
    assert {f.value for f in ExportFormat} == set(FORMATS)
    assert {o.value for o in OcrChoice} == set(OCR_ENGINES)


def test_run_ids_accept_a_unique_prefix(db: Path, sheet: Path) -> None:
    by_prefix = runner.invoke(app, ["cost", "--db", str(db), "--price-sheet", str(sheet), "--run", "a",
                                    "--json"])
    assert by_prefix.exit_code == 0, by_prefix.output
    assert {r["run_id"] for r in json.loads(by_prefix.stdout)["rows"]} == {RUN_A}
    ambiguous = runner.invoke(app, ["cost", "--db", str(db), "--price-sheet", str(sheet), "--run", "run-"])
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.output
    assert RUN_A in ambiguous.output and RUN_B in ambiguous.output
    unknown = runner.invoke(app, ["report", "--db", str(db), "--run", "zzz"])
    assert unknown.exit_code == 2 and "no run 'zzz'" in unknown.output


def test_runs_takes_n_and_shows_corpus_pipelines_and_headline(db: Path) -> None:
    res = runner.invoke(app, ["runs", "--db", str(db), "-n", "1", "--json"])
    assert res.exit_code == 0, res.output
    [latest] = json.loads(res.stdout)["runs"]
    assert latest["run_id"] == RUN_B  # the newest one
    [only] = latest["pipelines"]  # run-b: long context alone, each question answered
    # run-b scored `contains` only (stored before the headline): that one, named
    assert only["label"] and (only["metric"], only["headline"]) == ("contains", 1.0)
    both = json.loads(runner.invoke(app, ["runs", "--db", str(db), "--json"]).stdout)["runs"]
    labels = [p["label"] for r in both for p in r["pipelines"]]
    assert len(labels) == 5  # run-a's four pipelines and run-b's one
    table = runner.invoke(app, ["runs", "--db", str(db)])
    assert table.exit_code == 0 and "pipelines" in table.output and RUN_A in table.output
    assert labels[0].split()[0] in table.output


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cost_reads_only_and_saves_a_sheet_when_asked(db: Path, sheet: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    before = _digest(copy)
    copy.chmod(stat.S_IRUSR)  # a read-only file: writing would fail
    try:
        res = runner.invoke(app, ["cost", "--db", str(copy), "--price-sheet", str(sheet), "--run", RUN_A])
        assert res.exit_code == 0, res.output
    finally:
        copy.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert _digest(copy) == before  # cost changed nothing
    saved = runner.invoke(app, ["cost", "--db", str(copy), "--price-sheet", str(sheet), "--run", RUN_A,
                                "--save-sheet"])
    assert saved.exit_code == 0, saved.output
    with duckdb.connect(str(copy), read_only=True) as con:
        assert con.execute("SELECT run_id, name FROM price_sheets").fetchall() == [(RUN_A, "test sheet")]


def test_tables_never_break_numbers_or_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli import console

    buf = io.StringIO()
    monkeypatch.setattr(console, "out", Console(file=buf, width=60, color_system=None))
    rows = [{"run_id": "run-0123456789ab", "label": "rag k=4 cs=200 relevance with a long name",
             "usd_per_query_q10": 0.000389, "total_p50_ms": 12345.6}]
    console.table(rows, ["run_id", "label", "usd_per_query_q10", "total_p50_ms"])
    text = buf.getvalue()
    assert "0.000389" in text and "run-0123456789ab" in text and "12,346" in text


@pytest.mark.parametrize(("tokens", "code", "coverage"), [
    ("[1000, 4000]", 0, "covered"),
    ("[1000, 100000]", 4, "partial"),  # a winner from the 1000-token evidence, with a caveat
    ("[100000]", 3, "none"),
])
def test_recommend_exit_code_tells_partial_from_none(db: Path, tmp_path: Path, tokens: str, code: int,
                                                     coverage: str) -> None:
    wl = tmp_path / "wl.toml"
    wl.write_text(WORKLOAD.format(tokens=tokens))
    res = runner.invoke(app, ["recommend", "--db", str(db), "--workload", str(wl), "--run", RUN_A, "--json"])
    assert res.exit_code == code, res.output
    data = json.loads(res.stdout)
    assert data["coverage"] == coverage and (data["winner"] is not None) == (coverage != "none")


def test_shipped_workloads_ask_for_what_the_demo_measures() -> None:
    """`ragvslc recommend` on the demo's database: every shipped workload's lengths are measured
    by the demo's needle grid (within the workload's tolerance), so none of them exits 3."""
    from compare.analysis.workload import load_workload
    from compare.run.demo import DEMO_LENGTHS

    measured = [n for n in DEMO_LENGTHS if isinstance(n, int)]
    for path in sorted((ROOT / "workloads").glob("*.toml")):
        wl = load_workload(path)
        d = wl.documents
        asked = d.tokens if d.tokens is not None else [d.min_tokens, d.max_tokens]
        for t in asked:
            assert t is not None
            assert any(abs(m - t) <= wl.length_tolerance * t for m in measured), (path.name, t)
