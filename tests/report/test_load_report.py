"""A load sweep in the report (issue 28): goodput vs offered rate, hit rate per step, the
frontier per rate, in the palette's colours, with the saturated step marked and never on a
steady curve. The store is filled through the real Store API with hand-made rows (the report
sits above the runner: made-up timings make every expected number exact)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from compare.analysis import prices
from compare.core.types import Completion, Example, Prediction
from compare.report.assemble import Report, build_report
from compare.report.charts import with_colours
from compare.report.load_charts import (
    best_at_each_rate,
    busy_shares,
    goodput_chart,
    hit_rate_chart,
    load_points,
    priced,
)
from compare.report.palette import KIND_COLOURS
from compare.store.db import Store
from compare.store.rows import load_timing, now
from tests.fixtures.store import store_fixtures

RUN = "load-sweep"
PIPES = {"long_context": ("h-lc", {"kind": "long_context", "max_tokens": 8}),
         "rag": ("h-rag", {"kind": "rag", "top_k": 4, "max_tokens": 8})}
RATES = (0.5, 1.0, 2.0)
# (pipeline, rate) -> (status, ttft s, score): RAG is faster but worse and saturates at 2/s.
PLAN = {("long_context", 0.5): ("done", 0.4, 1.0), ("long_context", 1.0): ("done", 0.8, 1.0),
        ("long_context", 2.0): ("done", 1.6, 1.0), ("rag", 0.5): ("done", 0.1, 0.5),
        ("rag", 1.0): ("done", 0.2, 0.5), ("rag", 2.0): ("saturated", 0.3, 0.5)}
HITS = {"long_context": 600.0, "rag": 100.0}  # of 1000 prompt tokens queried per step


def _fill(path: Path) -> None:
    with Store(path) as store:
        store.start_run(RUN, corpus="c", model="m", base_url=None, concurrency=1, spec={}, corpus_params={},
                        server={"managed": True, "args": ["--num-gpu-blocks-override", "8"]})
        seq = 0
        for (name, rate), (status, ttft, score) in PLAN.items():
            h, params = PIPES[name]
            step = f"rate={rate:g}"
            ids = [f"q{i}@{step}#{i}" for i in range(4)]
            store.add_examples(RUN, [Example(e, ("doc",), "?", ("a",), tags={"load_question": f"q{i}",
                                                                            "load_step": step})
                                     for i, e in enumerate(ids)]) if name == "long_context" else None
            for i, e in enumerate(ids):
                done = Completion("a", 300, 128, 4, ttft, ttft + 0.3, (0.1, 0.1, 0.1), finish_reason="stop")
                store.add_prediction(RUN, e, name, h, params, Prediction("a", done, 256), seq=seq,
                                     resumed=False, started_at=now(), scores={"headline": score})
                seq += 1
                cols = load_timing(step, i / rate, i / rate)
                sets = ", ".join(f"{c} = ?" for c in cols)
                store.con.execute(f"UPDATE predictions SET {sets} WHERE run_id = ? AND example_id = ? "
                                  "AND pipeline = ?", [*cols.values(), RUN, e, name])
            store.insert("load_steps", [{
                "run_id": RUN, "pipeline": name, "params_hash": h, "step": step, "rate": rate,
                "concurrency": None, "requests": 4, "status": status,
                "note": "32 requests due but unanswered" if status != "done" else None, "sessions": 1,
                "sent": 4, "duration_s": 4 / rate, "started_at": now(), "finished_at": now(),
                "server_deltas": json.dumps({"vllm:prefix_cache_queries": 1000.0,
                                             "vllm:prefix_cache_hits": HITS[name]}),
                "load": json.dumps({"slo_ttft_ms": 1000.0}), "idle_run_id": "idle"}])


db, con = store_fixtures(_fill, "load_report")


@pytest.fixture(scope="module")
def rep(db: Path) -> Report:
    return build_report(db, [RUN])  # once: building a report is the slow part


def _values(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every data row a chart's spec embeds (altair puts them in top-level `datasets`)."""
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def _layer_rows(spec: dict[str, Any], mark: str, shape: str | None = None) -> list[dict[str, Any]]:
    """The data rows of the layers drawn with `mark` (and point shape)."""
    out = []
    for layer in spec["layer"]:
        m = layer["mark"]
        kind, this_shape = (m, None) if isinstance(m, str) else (m["type"], m.get("shape"))
        if kind == mark and (shape is None or this_shape == shape):
            out += spec["datasets"][layer["data"]["name"]]
    return out


def test_the_report_draws_goodput_hit_rate_and_the_frontier_of_a_sweep(rep: Report, db: Path) -> None:
    assert {"load_goodput", "load_hit_rate", "load_frontier"} <= set(rep.charts)
    page = rep.html()
    assert "Under load" in page and "did not keep up" in page

    goodput = rep.charts["load_goodput"].to_dict()
    line, crosses = _layer_rows(goodput, "line"), _layer_rows(goodput, "point", "cross")
    steady = {(r["label"], r["rate"]): r["goodput_plot"] for r in line if "label" in r}
    # SLO TTFT 1000 ms (the sweep's recorded [load]): long context's 1.6 s step misses it.
    assert steady[("Long context", 0.5)] == pytest.approx(4 / 8)
    assert steady[("Long context", 2.0)] == pytest.approx(0.0)
    assert steady[("RAG k=4", 1.0)] == pytest.approx(1.0)
    # The saturated step is a cross at zero, not a point on RAG's steady line.
    assert ("RAG k=4", 2.0) not in steady
    assert [(r["label"], r["status"], r["goodput_plot"]) for r in crosses] == [("RAG k=4", "saturated", 0.0)]
    colour = next(layer["encoding"]["color"] for layer in goodput["layer"] if "color" in layer["encoding"])
    assert dict(zip(colour["scale"]["domain"], colour["scale"]["range"], strict=True)) == {
        "Long context": KIND_COLOURS["long_context"], "RAG": KIND_COLOURS["rag"]}

    hits = rep.charts["load_hit_rate"].to_dict()
    measured = {(r["label"], r["step"]): r["hit_rate"] for r in _layer_rows(hits, "line")}
    assert measured[("Long context", "rate=1")] == pytest.approx(0.6)
    assert measured[("RAG k=4", "rate=0.5")] == pytest.approx(0.1)
    assert [r["step"] for r in _layer_rows(hits, "point")] == ["rate=2"]  # hollow: RAG's saturated step
    assert {r["derived_hit_rate"] is not None for r in _layer_rows(hits, "tick")} == {True}

    # The frontier's cost of a good answer: the replica time its requests held over the good answers
    # (long context at 2/s met no SLO: no good answer, no cost, not drawn). RAG at 1/s sends at
    # 0, 1, 2, 3 s, each 0.5 s in flight (TTFT 0.2 + 0.3): 2 s of 4 busy, goodput 1/s; long context
    # at 0.5/s: 4 x 0.7 s of 8 s, goodput 0.5/s. The shipped sheet has no self-hosted $/h: seconds.
    front = {(r["label"], r["rate"]): r for r in _values(rep.charts["load_frontier"].to_dict())}
    assert set(front) == {("Long context", 0.5), ("Long context", 1.0), ("RAG k=4", 0.5), ("RAG k=4", 1.0)}
    assert front[("RAG k=4", 1.0)]["replica_s_per_good"] == pytest.approx(0.5 / 1.0)
    assert front[("Long context", 0.5)]["replica_s_per_good"] == pytest.approx(0.35 / 0.5)
    with duckdb.connect(str(db), read_only=True) as c:
        assert prices.choose_sheet(c, [RUN]).sheet.self_hosted is None
        points = load_points(c, [RUN])
    # With a price: 0.5 s per good answer at $3.60/h is $0.50 per 1,000 good answers.
    usd = priced(points, 3.6, pd.Series(0.5, index=points.index))["usd_per_1k_good"]
    assert usd[(points["label"] == "RAG k=4") & (points["rate"] == 1.0)].item() == pytest.approx(0.5)


def test_a_load_run_leads_with_a_claim_per_rate_above_its_pooled_decision(rep: Report) -> None:
    """The decision line pools every rate's rows (each question asked at every rate): the page
    first says, rate by rate, who kept the SLOs, with each attainment's n and interval."""
    page = rep.html()
    assert page.index("id='load-decision'") < page.index("id='decision'")
    box = page[page.index("id='load-decision'"):page.index("id='decision'")]
    assert "TTFT &lt;= 1000 ms" in box and "At 0.5 requests/s" in box and "n = 4" in box
    # 4/4 against 4/4 at 0.5/s: no claim; at 2/s long context misses TTFT and RAG saturated
    assert box.count("no winner named") == 2
    assert "RAG k=4 (saturated: 32 requests due but unanswered)" in box


def test_each_rate_names_its_frontier_and_who_did_not_keep_up(con: duckdb.DuckDBPyConnection) -> None:
    points = load_points(con, [RUN])
    rows = {r["rate"]: r for r in best_at_each_rate(priced(points, 3.6, busy_shares(con, points)))}
    # At 0.5/s RAG is cheaper per good answer (4 x 0.4 s of 8 s busy, long context 4 x 0.7 s, both
    # 0.5 good answers/s) and long context better: both on the frontier.
    assert set(rows[0.5]["best"].split(", ")) == {"Long context", "RAG k=4"}
    # At 2/s long context met no SLO (no good answer to price) and RAG saturated.
    assert rows[2.0]["best"] == "none: no good answer" and rows[2.0]["not_steady"] == "RAG k=4 (saturated)"
    # Without a self-hosted price the frontier is the same, in replica seconds.
    unpriced = best_at_each_rate(priced(points, None, busy_shares(con, points)))
    assert {r["rate"]: r["best"] for r in unpriced} == {rate: r["best"] for rate, r in rows.items()}


def test_a_run_without_load_steps_has_no_load_section(tmp_path: Path) -> None:
    path = tmp_path / "idle.duckdb"
    with Store(path) as store:
        store.start_run("idle", corpus="c", model="m", base_url=None, concurrency=1, spec={},
                        corpus_params={}, server={})
        store.add_examples("idle", [Example("q", ("doc",), "?", ("a",))])
        store.add_prediction("idle", "q", "rag", "h", {"kind": "rag"}, Prediction(
            "a", Completion("a", 10, 0, 2, 0.1, 0.2, (0.1,)), 5), seq=0, resumed=False, started_at=now(),
            scores={"headline": 1.0})
    rep = build_report(path, ["idle"])
    assert not {"load_goodput", "load_hit_rate", "load_frontier"} & set(rep.charts)
    assert "Under load" not in rep.html()


def test_the_load_charts_build_without_altair_type_warnings(con: duckdb.DuckDBPyConnection) -> None:
    """Seen on a real sweep: `ragvslc report` printed altair's "I don't know how to infer vegalite
    type from 'empty'" for an all-empty tooltip column (no step had a note); fields are typed."""
    kinds = {"long_context": "long_context", "rag": "rag"}
    points = load_points(con, [RUN])
    points = with_colours(points[points["status"] == "done"].assign(note=None), kinds)  # all steady
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        goodput_chart(points).to_dict()
        hit_rate_chart(points).to_dict()
