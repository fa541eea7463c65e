"""The CLI, through Typer's runner and as a subprocess, reading the database back."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from main import app

ROOT = Path(__file__).resolve().parents[2]
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
    as_json = _cli("runs", "--db", str(db), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [r["predictions"] for r in json.loads(as_json.stdout)["runs"]] == [2]
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
    assert bad.returncode == 2 and "Traceback" not in bad.stderr  # bad input
    for line in (2, 3):  # each problem names its file and line
        assert f"questions.jsonl:{line}" in bad.stderr
    assert "d9" in bad.stderr


def test_recommend_without_evidence_says_so_and_exits_3(tmp_path: Path) -> None:
    from compare.store.db import Store

    db = tmp_path / "empty.duckdb"
    Store(db).close()
    res = _cli("recommend", "--workload", str(ROOT / "workloads" / "demo.toml"), "--db", str(db))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_run_json_and_fail_on_error(server_url: str, tmp_path: Path) -> None:
    """A needle longer than the server's window is an error row (truncation = "error"): the run
    still finishes (exit 0), unless --fail-on-error asks CI to fail on it (exit 1)."""
    import httpx

    window = httpx.get(f"{server_url}/v1/models", timeout=30).json()["data"][0]["max_model_len"]
    spec = tmp_path / "err.toml"
    spec.write_text(f'[corpus]\nkind = "needle"\nlengths = [300, {window + 500}]\ndepths = [0.5]\n'
                    '[[pipelines]]\nkind = "long_context"\n')
    db = tmp_path / "err.duckdb"
    args = ["run", "--spec", str(spec), "--base-url", server_url, "--db", str(db), "--json"]
    first = _cli(*args, "--fail-on-error")
    assert first.returncode == 1, first.stderr
    data = json.loads(first.stdout)  # the summary is printed before the exit
    assert (data["done"], data["errors"]) == (2, 1)
    [pipe] = data["pipelines"]
    assert (pipe["pipeline"], pipe["n"], pipe["errors"]) == ("long_context", 2, 1)
    assert pipe["metrics"]["request_ok"] == 0.5 and "1 row(s)" in first.stderr
    again = _cli(*args)  # resumed: nothing to do, and without the flag an error row is data
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["skipped"], json.loads(again.stdout)["errors"]) == (2, 0)


def test_version_help_and_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `--home` sets RAGVSLC_HOME for the engine of this process: restored after the test, or
    # every later test would prepare (convert) the model again in this test's empty cache.
    monkeypatch.setenv("RAGVSLC_HOME", "recorded")  # records the value to restore (or its absence)
    monkeypatch.delenv("RAGVSLC_HOME")
    version = _cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith(f"ragvslc {importlib.metadata.version('ragvslc')}")
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if sha.returncode == 0:  # a checkout: the commit is named
        assert f"(git {sha.stdout.strip()[:12]}" in version.stdout
    from cli.data import corpora_app, models_app, video_app

    assert not any(a.pretty_exceptions_show_locals for a in (app, models_app, corpora_app, video_app))
    root_help = runner.invoke(app, ["--help"]).output
    assert "RAGVSLC_HOME" in root_help and "OPENAI_API_KEY" in root_help and "130" in root_help
    run_help = runner.invoke(app, ["run", "--help"], terminal_width=200).output
    for var in ("RAGVSLC_DB", "RAGVSLC_DATA", "RAGVSLC_BASE_URL"):
        assert var in run_help, var
    assert "--fail-on-error" in run_help and "--json" in run_help
    retrieval_help = runner.invoke(app, ["retrieval", "--help"], terminal_width=200).output
    assert "--top-k" in retrieval_help and "--budget-tokens" in retrieval_help
    assert "--k " not in retrieval_help and "--budget " not in retrieval_help  # hidden old names

    # The variables are read: RAGVSLC_DB picks the database, RAGVSLC_HOME (or --home) the cache.
    from compare.store.db import Store

    db = tmp_path / "env.duckdb"
    Store(db).close()
    res = runner.invoke(app, ["runs", "--json"], env={"RAGVSLC_DB": str(db)})
    assert res.exit_code == 0 and json.loads(res.stdout) == {"db": str(db), "runs": []}
    for args, env in ((["--home", str(tmp_path)], {}), ([], {"RAGVSLC_HOME": str(tmp_path)})):
        res = runner.invoke(app, [*args, "models", "list", "--json"], env=env)
        assert res.exit_code == 0, res.output
        assert not any(m["prepared"] for m in json.loads(res.stdout)["models"])  # empty cache


def test_interrupt_exits_130() -> None:
    import typer

    from cli.common import interruptible

    tiny = typer.Typer()

    @tiny.command()
    def work() -> None:
        with interruptible():
            raise KeyboardInterrupt

    res = runner.invoke(tiny, [])
    assert res.exit_code == 130 and "interrupted" in res.output


@pytest.mark.slow
def test_retrieval_top_k_and_its_old_name(tmp_path: Path) -> None:
    """No server: the model's tokenizer builds a 300-token needle; --k still means --top-k."""
    outs = []
    for flag in ("--top-k", "--k"):
        res = runner.invoke(app, ["retrieval", "--lengths", "300", flag, "1,3",
                                  "--db", str(tmp_path / "r.duckdb"), "--json"])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(res.stdout))
    assert [r["k"] for r in outs[0]["rows"]] == [r["k"] for r in outs[1]["rows"]] == [1, 3]
    assert [r["recall"] for r in outs[0]["rows"]] == [r["recall"] for r in outs[1]["rows"]]
    assert outs[1]["rows"][0]["cache_hit"]  # the second time the index came from the cache
    for row in outs[0]["rows"]:  # one length x the default 3 depths, each needle with evidence
        assert 0.0 <= row["recall"] <= 1.0 and row["n_examples"] == 3


def test_wheel_ships_the_data_read_at_run_time(tmp_path: Path) -> None:
    """A non-editable install (`pip install .`) must hold prices/: the report's default price
    sheet is read from beside the packages (compare/analysis/prices.py)."""
    import shutil
    import zipfile

    from compare.analysis.prices import DEFAULT_SHEET

    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "main.py"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("cli", "compare", "pipelines", "corpora", "prices", "ragvslc"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("ragvslc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert DEFAULT_SHEET.relative_to(ROOT).as_posix() in names
    assert {f"prices/{p.name}" for p in (ROOT / "prices").glob("*.toml")} <= names
    assert {"main.py", "cli/results.py", "compare/store/export.py"} <= names
