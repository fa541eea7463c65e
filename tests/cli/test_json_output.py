"""`--json` output: one valid JSON object on stdout, the documented fields, the stored values.

The database is the dashboard fixture (tests/fixtures/dashboard.py), filled through the real
Store into a real DuckDB file, so the expected values below are worked out from its chosen
tokens and scores, not read back from the code under test.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import jsonout
from cli.console import emit_json, jsonable
from main import app
from tests.fixtures.dashboard import RUN_A, SHEET_API_TOML, fill
from tests.fixtures.store import store_fixtures

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

WORKLOAD_TOML = """name = "fixture"
model = "tiny"
questions_per_doc = 5
requests_per_s = 0.01
quality_metric = "contains"
quality_floor = 0.5
[documents]
tokens = [1000, 4000]
[latency]
metric = "e2e"
p95_ms = 100000
"""


db, _ = store_fixtures(fill, "json")  # the read-only `con` is not used here


def _json(*args: str, code: int = 0) -> Any:
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return json.loads(res.stdout)  # stdout alone: messages go to stderr


def test_runs_json_pipes_into_json_tool_and_nothing_else_is_on_stdout(db: Path) -> None:
    listed = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "runs", "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=listed.stdout, capture_output=True,
                          text=True, timeout=60)
    assert tool.returncode == 0, tool.stderr
    data = json.loads(listed.stdout)
    assert set(data) == set(jsonout.TOP_LEVEL["runs"])
    rows = {r["run_id"]: r for r in data["runs"]}
    assert set(rows) == {"run-a", "run-b"}
    assert all(list(r) == list(jsonout.RUN_FIELDS) for r in data["runs"])
    # run-a: 10 questions x 4 pipelines, run-b: 2 questions x long context; no failures.
    assert (rows["run-a"]["predictions"], rows["run-b"]["predictions"]) == (40, 2)
    assert rows["run-a"]["errors"] == 0 and rows["run-a"]["status"] == "done"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", rows["run-a"]["created_at"])


def test_models_and_corpora_list_json() -> None:
    from compare.run.spec import CorpusSpec
    from compare.serving import weights as models

    data = _json("models", "list", "--json")
    assert data["models"][0]["name"] == models.DEFAULT_MODEL
    assert all(list(m) == list(jsonout.MODEL_FIELDS) for m in data["models"])
    assert data["models"][0]["context_tokens"] == 32768 and data["models"][0]["default"] is True

    kinds = {s.model_fields["kind"].default for s in typing.get_args(typing.get_args(CorpusSpec)[0])}
    corpora = _json("corpora", "list", "--json")["corpora"]
    assert {c["kind"] for c in corpora} == kinds
    assert all(c["description"] for c in corpora), "every corpus kind needs a line in cli/data.py"
    needle = next(c for c in corpora if c["kind"] == "needle")
    assert {"lengths", "depths"} <= set(needle["options"]) and "kind" not in needle["options"]
    table = runner.invoke(app, ["corpora", "list"])
    assert table.exit_code == 0 and "activitynet" in table.stdout


def test_cost_json_prices_by_queries_per_doc(db: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.toml"
    sheet.write_text(SHEET_API_TOML)
    data = _json("cost", "--db", str(db), "--price-sheet", str(sheet), "--run", RUN_A,
                 "--queries-per-doc", "1,10", "--json")
    assert set(data) == set(jsonout.TOP_LEVEL["cost"])
    assert data["price_sheet"]["name"] == "test sheet" and data["price_sheet"]["date"] == "2026-11-23"
    assert data["queries_per_doc"] == [1, 10]
    rows = data["rows"]
    # 4 pipelines, one view (the sheet has API prices only)
    assert len(rows) == 4 and {r["view"] for r in rows} == {"api"}
    for r in rows:
        assert list(r) == list(jsonout.COST_FIELDS)
        assert set(r["usd_per_query"]) == {"1", "10"}
        for q in (1, 10):  # the curve: marginal + one-time / q
            want = r["marginal_usd_per_query"] + r["one_time_usd_per_doc"] / q
            assert math.isclose(r["usd_per_query"][str(q)], want, rel_tol=1e-9)
        assert isinstance(r["caveats"], list)
    rag2 = next(r for r in rows if r["label"] == "RAG k=2")
    # 10 questions on 2 documents; RAG's 430 prompt tokens are never cached, 10 output tokens:
    # its marginal $ is at least 430 x $1/M + 10 x $4/M = 470e-6 (plus retrieval seconds).
    assert (rag2["n"], rag2["docs"]) == (10, 2) and rag2["marginal_usd_per_query"] >= 470e-6
    pairs = {(b["a"], b["b"]) for b in data["break_even"]}
    assert len(pairs) == 6  # every pair of the 4 pipelines, once
    for b in data["break_even"]:
        assert list(b) == list(jsonout.BREAK_EVEN_FIELDS)
        if b["break_even_q"] is not None:  # the curves meet there: equal $ per query
            a, c = (next(r for r in rows if r["label"] == b[k]) for k in ("a", "b"))
            cost_a = a["marginal_usd_per_query"] + a["one_time_usd_per_doc"] / b["break_even_q"]
            cost_c = c["marginal_usd_per_query"] + c["one_time_usd_per_doc"] / b["break_even_q"]
            assert math.isclose(cost_a, cost_c, rel_tol=1e-9)


def test_recommend_json_names_the_winner_and_exits_3_without_evidence(db: Path, tmp_path: Path) -> None:
    wl = tmp_path / "wl.toml"
    wl.write_text(WORKLOAD_TOML)
    data = _json("recommend", "--db", str(db), "--workload", str(wl), "--run", RUN_A, "--json")
    assert set(data) == set(jsonout.TOP_LEVEL["recommend"])
    assert data["coverage"] == "covered" and data["run_ids"] == [RUN_A]
    rows = {r["strategy"]: r for r in data["rows"]}
    assert all(list(r) == list(jsonout.RECOMMEND_FIELDS) for r in data["rows"])
    # By hand: long context answers all 10 (quality 1.0); rag k=2 3 of 5 per document (0.6).
    # No price sheet, so cost = computed tokens per 1k queries: rag k=2 sends 430 uncached
    # prompt + 10 output tokens, the cheapest of all, and meets the 0.5 floor: it wins.
    assert math.isclose(rows["Long context"]["quality"], 1.0)
    k2 = rows["RAG k=2"]
    assert math.isclose(k2["quality"], 0.6)
    assert (k2["input_tokens_per_1k"], k2["output_tokens_per_1k"]) == (430_000, 10_000)
    assert data["winner"] == "RAG k=2" and k2["rank"] == 1
    assert data["workload"]["name"] == "fixture"
    assert data["lengths_used"] == {"1000": [1000.0], "4000": [4000.0]}

    other = tmp_path / "other.toml"
    other.write_text(WORKLOAD_TOML.replace('model = "tiny"', 'model = "no-such-model"'))
    res = runner.invoke(app, ["recommend", "--db", str(db), "--workload", str(other), "--json"])
    assert res.exit_code == 3, res.output
    empty = json.loads(res.stdout)
    assert empty["winner"] is None and empty["rows"] == [] and empty["coverage"] == "none"


def test_json_has_no_nan_and_timestamps_are_iso() -> None:
    import datetime as dt

    import numpy as np
    import pandas as pd

    value = {"a": float("nan"), "b": np.float64("inf"), "c": pd.NaT, "d": np.int64(7),
             "e": dt.datetime(2026, 1, 2, 3, 4, 5), "f": (np.float32(0.5),), "g": Path("/x")}
    assert jsonable(value) == {"a": None, "b": None, "c": None, "d": 7, "e": "2026-01-02T03:04:05",
                               "f": [0.5], "g": "/x"}
    with pytest.raises(TypeError):
        emit_json({"x": object()})


def test_readme_documents_every_json_field() -> None:
    """docs/reference.md's "--json" list names each command's top-level keys and row fields."""
    text = (ROOT / "docs" / "reference.md").read_text()
    rows = {
        "run": jsonout.SUMMARY_FIELDS, "runs": jsonout.RUN_FIELDS, "models list": jsonout.MODEL_FIELDS,
        "corpora list": jsonout.CORPUS_FIELDS, "cost": jsonout.COST_FIELDS + jsonout.BREAK_EVEN_FIELDS,
        "recommend": jsonout.RECOMMEND_FIELDS, "retrieval": jsonout.RETRIEVAL_FIELDS,
        "export": jsonout.EXPORT_FIELDS,
    }
    for command, top in jsonout.TOP_LEVEL.items():
        match = re.search(rf"^- `{command} --json`: (.*?)(?=^- |^\n)", text, re.M | re.S)
        assert match, f"docs/reference.md has no line for `{command} --json`"
        named = set(re.findall(r"[a-z_0-9]+", match.group(1)))
        missing = [f for f in (*top, *rows[command]) if f not in named]
        assert not missing, f"`{command} --json`: docs/reference.md does not name {missing}"
