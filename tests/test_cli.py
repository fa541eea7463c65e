"""The CLI, through Typer's runner and as a subprocess, reading the database back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from main import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_run_runs_report(server_url: str, tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    args = ["run", "--base-url", server_url, "--db", str(db), "--lengths", "300", "--depths", "0.5"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 requests done" in first.output
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), count(error) FROM predictions").fetchone() == (2, 0)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 requests done, 2 already stored" in again.output
    listed = _cli("runs", "--db", str(db))
    assert listed.returncode == 0 and "needle" in listed.stdout and "done" in listed.stdout
    out = tmp_path / "rep"
    rep = _cli("report", "--db", str(db), "--out", str(out))
    assert rep.returncode == 0, rep.stderr
    assert (out / "report.html").stat().st_size > 10_000
    assert list(out.glob("*.png")) and list(out.glob("*.svg"))


def test_bad_spec_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[corpus]\nkind = "needle"\nlengths = [10]\ncolour = "red"\n')
    res = _cli("run", "--spec", str(spec), "--db", str(tmp_path / "x.duckdb"))
    assert res.returncode == 2
    assert "bad.toml: invalid run spec" in res.stderr and "colour" in res.stderr
    assert "lengths" in res.stderr  # every problem is listed, not just the first
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_missing_database_and_models_list(tmp_path: Path) -> None:
    res = runner.invoke(app, ["runs", "--db", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "no database" in res.output
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "qwen2.5-coder-0.5b-instruct" in listed.output


def test_corpora_import_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "documents.jsonl").write_text('{"id": "d1", "text": "Paris is the capital of France."}\n')
    (good / "questions.jsonl").write_text(
        '{"id": "q1", "doc_ids": ["d1"], "question": "Capital of France?", "answers": ["Paris"]}\n'
    )
    ok = runner.invoke(app, ["corpora", "import", str(good)])
    assert ok.exit_code == 0 and "1 documents, 1 questions" in ok.output
    (good / "questions.jsonl").write_text(
        '{"id": "q1", "doc_ids": ["d9"], "question": "?", "answers": ["x"]}\n'
        '{"id": "q2", "doc_ids": ["d1"], "question": "?", "answers": ["x"], "colour": 1}\n'
        "not json\n"
    )
    bad = _cli("corpora", "import", str(good))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    for line in (2, 3):  # each problem names its file and line
        assert f"questions.jsonl:{line}" in bad.stderr
    assert "d9" in bad.stderr


def test_recommend_without_evidence_says_so_and_exits_3(tmp_path: Path) -> None:
    from compare.store import Store

    db = tmp_path / "empty.duckdb"
    Store(db).close()
    res = _cli("recommend", "--workload", str(ROOT / "workloads" / "demo.toml"), "--db", str(db))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
