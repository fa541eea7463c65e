"""`import ragvslc` as a notebook uses it (issue 29 item 11): a samples frame and a chart in a
few lines, on the dashboard fixture's store (tests/fixtures/dashboard.py gives the by-hand $)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import pytest

import ragvslc
from tests.fixtures.dashboard import LC_LABEL, RAG_LABELS, RUN_A, RUN_B, SHEET_TOML, fill
from tests.fixtures.store import store_fixtures

db, _ = store_fixtures(fill, "api")


def test_a_notebook_builds_a_samples_frame_and_a_chart_in_a_few_lines(db: Path, tmp_path: Path) -> None:
    (tmp_path / "sheet.toml").write_text(SHEET_TOML)
    # --- what a notebook cell says (under 10 lines) ---
    runs = ragvslc.runs(db)
    df = ragvslc.samples(db, runs.run_id, price_sheet=tmp_path / "sheet.toml")
    chart = alt.Chart(df).mark_boxplot().encode(x="label:N", y="usd_api:Q")
    # ---
    assert isinstance(chart.to_dict(), dict) and list(runs.run_id) == [RUN_A, RUN_B]
    assert runs["name"].str.startswith("needle, ").all() and runs["created_at"].dt.tz is not None
    assert len(df) == 42 and set(df.label) >= {LC_LABEL, *RAG_LABELS.values()}
    one = df[(df.run_id == RUN_A) & (df.label == LC_LABEL) & (df.example_id == "d1-q1")].iloc[0]
    # by hand: 1050 prompt tokens at $1/M + 10 output at $4/M; busy 1.5 s at $3.6/h
    assert one.usd_api == pytest.approx(1090e-6) and one.usd_self_hosted == pytest.approx(1.5e-3)
    warm = df[(df.run_id == RUN_A) & (df.label == LC_LABEL) & (df.example_id == "d1-q2")].iloc[0]
    assert warm.usd_api == pytest.approx(190e-6)  # 1000 of its tokens cached at $0.1/M
    assert one.score_contains == 1.0 and isinstance(one.started_at, pd.Timestamp) and one.started_at.tz


def test_report_verdict_and_cost_are_what_the_cli_prints(db: Path, tmp_path: Path) -> None:
    rep = ragvslc.report(db, [RUN_A])
    files = rep.write(tmp_path / "rep", images=False)
    assert files.html.is_file() and "<iframe srcdoc=" in rep._repr_html_()
    v = ragvslc.verdict(db, RUN_A)
    assert v.lines and v.decision is not None and v.decision.sentence
    (tmp_path / "sheet.toml").write_text(SHEET_TOML)
    cost = ragvslc.cost(db, tmp_path / "sheet.toml", [RUN_A], (1, 10))
    lc = cost[(cost.label == LC_LABEL) & (cost.view == "api")].iloc[0]
    assert lc.one_time_usd_per_doc > 0 and "usd_per_query_q10" in cost.columns
    with pytest.raises(ValueError, match="no database"):
        ragvslc.runs(tmp_path / "missing.duckdb")
