"""`recommend` and `cost` at the user's traffic (issue 28 items 4-5, issue 30's regret), worked by
hand on stores filled through the real Store API.

Evidence run "idle" (model "tiny", corpus "hand"): long context on one document of 1024 tokens
(8 blocks of 128), each prompt 1074 tokens (50 of question), one output token. Its first
question is cold (nothing cached, 2.0 s), its second warm (1024 cached, 0.2 s). The sheet is
tests/fixtures/cost.py's: self-hosted $3.60/h = $1e-3 per busy second (no server stats, so busy
seconds are the client's). With p the share of later questions that find their document gone,
the one cost function gives, in the self-hosted view, per document

    one_time = (1 - p) (2.0 - 0.2) s,   marginal = (1 - p) 0.2 s + p 2.0 s

so at q = 2 questions per document: p = 0 -> 0.2 + 1.8 / 2 = 1.1 s = $1.1 per 1k queries;
p = 1 -> 2.0 s = $2.0 per 1k.

The cache model (LRU over blocks): a cache far larger than the documents loses nothing (p = 0);
a cache of one block (vLLM's null block: nothing usable) keeps nothing (p = 1). Two documents
and 10 blocks (9 usable): a request holds its 8 document blocks and a partial ninth, so the
other document's request evicts every block of the first; a later question keeps its document
only when the request before it was about the same document: p = 1 - sum_i p_i^2 (uniform:
1/2; Zipf 1 over two documents, p = (2/3, 1/3): 4/9).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cli.jsonout import TOP_LEVEL, recommendation_json
from compare.analysis import traffic_cache
from compare.analysis.cache_terms import NO_USE
from compare.analysis.cost import cost_table
from compare.analysis.prices import sheet_json
from compare.analysis.recommend import recommend
from compare.analysis.workload import Workload
from compare.core.types import Completion, Example, Prediction
from compare.store.db import Store
from tests.fixtures.cost import LC, SHEET
from tests.fixtures.store import store_fixtures

NOW = datetime(2026, 1, 1)


def _lc(cached: int, seconds: float) -> Prediction:
    return Prediction("a", Completion("a", 1074, cached, 1, seconds, seconds, ()), 1024)


def _fill(db: Path) -> None:
    with Store(db) as s:
        s.start_run("idle", corpus="hand", model="tiny", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        exs = [Example(f"q{i}", ("d",), f"question {i}?", ("a",)) for i in (1, 2)]
        s.add_examples("idle", exs, {"d": 1024})
        for seq, (q, pred) in enumerate((("q1", _lc(0, 2.0)), ("q2", _lc(1024, 0.2)))):
            s.add_prediction("idle", q, *LC, pred, seq=seq, resumed=False, started_at=NOW,
                             scores={"headline": 1.0})
        s.add_price_sheet("idle", SHEET.name, sheet_json(SHEET))
        s.finish_run("idle", "done")


db, con = store_fixtures(_fill, "traffic")


TWO = {"tokens": [1024], "count": 2}  # two documents of 1024 tokens share the KV cache


def workload(**kw: Any) -> Workload:
    base: dict[str, Any] = {
        "name": "t", "documents": {"tokens": [1024]}, "questions_per_doc": 2,
        "requests_per_s": 2.5, "latency": {"metric": "e2e", "p95_ms": 1e7}, "quality_floor": 0.0,
    }
    return Workload.model_validate(base | kw)


# issue 28 item 4: the cache model prices the self-hosted view ------------------------------------
@pytest.mark.parametrize(("kv", "p", "usd_per_1k", "cached_per_1k"), [
    (None, 0.0, 1.1, 512_000),  # no cache size: no evictions modelled (as before)
    (10_000_000, 0.0, 1.1, 512_000),  # everything fits
    (128, 1.0, 2.0, 0.0),  # one block, vLLM's null block: nothing survives
])
def test_the_cache_model_sets_long_contexts_cached_share(
        db: Path, kv: int | None, p: float, usd_per_1k: float, cached_per_1k: float) -> None:
    rec = recommend(db, workload(documents=TWO, kv_cache_tokens=kv), view=None if kv else "self_hosted")
    (row,) = rec.rows
    assert row["usd_per_1k"] == pytest.approx(usd_per_1k)
    assert row["cached_tokens_per_1k"] == pytest.approx(cached_per_1k)  # the latency/token mix follows p
    assert "(self_hosted view;" in str(rec.price_sheet)
    if kv is None:
        assert rec.cache_basis is not None and "no kv_cache_tokens stated" in rec.cache_basis
        assert not rec.assumptions
    else:
        assert rec.cache_basis is not None and rec.cache_basis in rec.assumptions
        assert "DERIVED, not measured" in rec.cache_basis and f"{kv // 128:,} KV blocks" in rec.cache_basis
        assert f"1024 tokens {1 - p:.2f} (n=" in rec.cache_basis  # the share kept, with its n


@pytest.mark.parametrize(("zipf", "want"), [(None, 1 / 2), (1.0, 4 / 9)])
def test_two_documents_in_a_cache_that_holds_one(zipf: float | None, want: float) -> None:
    by, requests = traffic_cache.survival([("d", 1024), ("d", 1024)], 10, 128, zipf, 50, 1)
    s = by["d"]
    assert requests == traffic_cache.MIN_REQUESTS and s.n > 400  # later questions in the counted half
    assert s.miss == pytest.approx(want, abs=0.06)  # a seeded replay of ~500 draws: within 2.7 SE


def test_recommend_prices_the_models_p_in_the_self_hosted_view(db: Path) -> None:
    rec = recommend(db, workload(documents=TWO, kv_cache_tokens=1280))  # 10 blocks, 2 documents, uniform
    assert rec.cache_basis is not None
    p = 1 - float(rec.cache_basis.split("1024 tokens ")[1].split(" ")[0])
    assert p == pytest.approx(0.5, abs=0.06)
    (row,) = rec.rows
    # marginal + one_time / 2, in seconds at $1e-3/s, x 1000 queries
    assert row["usd_per_1k"] == pytest.approx((1 - p) * 0.2 + p * 2.0 + (1 - p) * 1.8 / 2, abs=0.006)


def test_the_api_view_keeps_the_ttl_rule_and_says_the_kv_cache_is_not_a_providers(db: Path) -> None:
    plain = recommend(db, workload(), view="api")
    rec = recommend(db, workload(documents=TWO, kv_cache_tokens=128), view="api")
    assert rec.rows[0]["usd_per_1k"] == pytest.approx(plain.rows[0]["usd_per_1k"])
    assert rec.cache_basis is not None and "no TTL rule applies" in rec.cache_basis
    assert "not a provider's: it prices the self-hosted view" in rec.cache_basis


def test_the_documents_sharing_the_cache_come_from_the_rates_or_are_asked_for() -> None:
    wl = workload(documents={"tokens": [1024]}, kv_cache_tokens=4096, queries_per_doc_per_hour=18.0,
                  requests_per_s=0.01)
    assert wl.document_count == 2  # 0.01 req/s x 3600 s / 18 per document
    with pytest.raises(ValueError, match="kv_cache_tokens needs the number of documents"):
        workload(documents={"tokens": [1024]}, kv_cache_tokens=4096)


def test_cost_prices_evictions_over_the_runs_documents(con: duckdb.DuckDBPyConnection) -> None:
    use = traffic_cache.over_runs(con, ["idle"], traffic_cache.KvCache(128), NO_USE)
    assert use.evicted == pytest.approx(1.0)
    rows = {r["view"]: r for r in cost_table(con, ["idle"], SHEET, [2], use)}
    assert rows["self_hosted"]["usd_per_query_q2"] == pytest.approx(2.0e-3)
    assert "find their document evicted with p = 1" in rows["self_hosted"]["caveats"]
    assert "DERIVED, not measured" in rows["self_hosted"]["caveats"]
    plain = {r["view"]: r for r in cost_table(con, ["idle"], SHEET, [2], NO_USE)}
    assert plain["self_hosted"]["usd_per_query_q2"] == pytest.approx(1.1e-3)
    assert rows["api"]["usd_per_query_q2"] == pytest.approx(plain["api"]["usd_per_query_q2"])


def test_the_cost_command_takes_the_kv_cache(db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from main import app

    sheet = Path(__file__).resolve().parents[2] / "prices" / "cpu-2core.toml"
    args = ["cost", "--db", str(db), "--price-sheet", str(sheet), "--queries-per-doc", "2", "--json"]
    res = CliRunner().invoke(app, [*args, "--kv-cache-tokens", "128"])
    assert res.exit_code == 0, res.output
    assert any("evicted with p = 1" in c for c in json.loads(res.output)["caveats"])
    bad = CliRunner().invoke(app, [*args, "--zipf", "1"])
    assert bad.exit_code == 2 and "give --kv-cache-tokens" in bad.output


# issue 28 item 5: replicas at the workload's rate from a load sweep ------------------------------
def _with_sweep(db: Path) -> None:
    """Load run "load-1" of the same model, corpus and configuration: steady steps at 0.5 and 1
    req/s, four requests each of 500 ms; a steady step at 2 req/s where one of four took 3 s."""
    with Store(db) as s:
        s.start_run("load-1", corpus="hand", model="tiny", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        for rate, slow in ((0.5, 0), (1.0, 0), (2.0, 1)):
            step = f"rate={rate:g}"
            exs = [Example(f"{step}#{i}", ("d",), "q?", ("a",)) for i in range(4)]
            s.add_examples("load-1", exs, {"d": 1024})
            for i, ex in enumerate(exs):
                t = 3.0 if i < slow else 0.5
                s.add_prediction("load-1", ex.id, *LC, _lc(1024, t), seq=i, resumed=False, started_at=NOW,
                                 scores={"headline": 1.0})
                s.con.execute("UPDATE predictions SET load_step = ?, scheduled_ms = ?, sent_ms = ?, "
                              "queue_ms = 0 WHERE run_id = 'load-1' AND example_id = ?",
                              [step, i * 1e3, i * 1e3, ex.id])
            s.insert("load_steps", [{
                "run_id": "load-1", "pipeline": LC[0], "params_hash": LC[1], "step": step, "rate": rate,
                "concurrency": None, "requests": 4, "status": "done", "note": None, "sessions": 1, "sent": 4,
                "duration_s": 4.0 / rate, "started_at": NOW, "finished_at": NOW, "server_deltas": "{}",
                "load": "{}", "idle_run_id": "idle"}])
        s.finish_run("load-1", "done")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("swept") / "runs.duckdb"
    _fill(path)
    _with_sweep(path)
    return path


def test_replicas_from_the_highest_swept_rate_that_met_the_target(swept: Path) -> None:
    rec = recommend(swept, workload(latency={"metric": "e2e", "p95_ms": 1000.0}), view="self_hosted")
    (row,) = rec.rows
    assert rec.run_ids == ["idle"]  # the load run is the sweep, not evidence
    # 0.5 and 1 req/s: 4/4 within 1 s; 2 req/s: 3/4 (0.75 < 0.95) -> one replica takes 1 req/s
    assert (row["replicas"], row["per_replica_rps"], row["per_replica_n"]) == (3, 1.0, 4)  # ceil(2.5 / 1)
    assert row["replicas_basis"] == "derived" and row["swept_rps"] == [0.5, 1.0, 2.0]
    assert row["per_replica_goodput_rps"] == pytest.approx(1.0)  # 4 good in the step's 4 s
    assert row["replicas_usd_per_hour"] == pytest.approx(3 * 3.6)
    assert row["replicas_usd_per_1k"] == pytest.approx(10.8 / (2.5 * 3.6))  # $/h over 9,000 queries/h x 1k
    assert "missed at 2 req/s" in row["replicas_note"] and "measured: 1.00 of n=4" in row["replicas_note"]
    out = recommendation_json(rec)
    assert set(out) == set(TOP_LEVEL["recommend"]) and out["rows"][0]["replicas"] == 3


def test_every_swept_rate_met_is_an_upper_bound_and_none_met_is_beyond_the_sweep(swept: Path) -> None:
    loose_wl = workload(latency={"metric": "e2e", "p95_ms": 5000.0})
    (loose,) = recommend(swept, loose_wl, view="self_hosted").rows
    assert (loose["replicas"], loose["per_replica_rps"]) == (2, 2.0)  # ceil(2.5 / 2)
    assert loose["replicas_basis"] == "derived (upper bound)"
    (tight,) = recommend(swept, workload(latency={"metric": "e2e", "p95_ms": 400.0}), view="self_hosted").rows
    assert tight["replicas"] is None and tight["replicas_basis"] == "beyond the swept rates"
    assert "missed already at the lowest swept rate 0.5 req/s" in tight["replicas_note"]


def test_without_a_sweep_no_replicas_are_claimed(db: Path) -> None:
    (row,) = recommend(db, workload()).rows
    assert row["replicas"] is None and row["replicas_note"] is None


# issue 30: each router's regret in recommend ---------------------------------------------------
def test_recommend_shows_each_routers_regret(tmp_path: Path) -> None:
    from tests.analysis.test_regret import _fill as fill_regret  # the hand-worked regret store

    path = tmp_path / "regret.duckdb"
    fill_regret(path)
    wl = workload(documents={"tokens": [950]}, quality_metric="contains", price_sheet=tmp_path / "sheet.toml")
    rec = recommend(path, wl)
    (router,) = rec.regret
    assert router["strategy"] == "kind_router" and (router["n"], router["n_priced"]) == (4, 3)
    assert (router["quality_lost"], router["usd_saved_per_q"], router["usd_saved_share"]) == pytest.approx(
        (0.25, 200e-6, 0.2))
    line = router["line"]
    assert line.startswith("regret (run r): kind_router loses 0.250 quality against the per-question")
    assert "n=4 questions" in line and "(20%) against always long_context (n=3 priced" in line
    assert recommendation_json(rec)["regret"][0]["quality_lost"] == pytest.approx(0.25)


def test_the_cli_prints_replicas_and_the_cache_rule_once(swept: Path, tmp_path: Path, capsys: Any) -> None:
    from cli.recommend import recommend_command

    wl = tmp_path / "w.toml"
    wl.write_text('questions_per_doc = 2\nrequests_per_s = 2.5\nquality_floor = 0.0\nkv_cache_tokens = 128\n'
                  '[documents]\ntokens = [1024]\ncount = 2\n[latency]\nmetric = "e2e"\np95_ms = 1000\n')
    assert recommend_command(swept, wl) == 0
    out = capsys.readouterr().out
    assert "replicas, Long context: 3 replica(s) at 2.5 req/s" in " ".join(out.split())
    assert " ".join(out.split()).count("cache survival (self-hosted view): DERIVED") == 1
