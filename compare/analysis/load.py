"""What a load run's steps measured (issue 28): latency percentiles, throughput, SLO attainment,
goodput, prefix-cache hit rate and quality under load, one row per (pipeline, step).

Read from the store only (`load_steps` and the step's rows, written by compare/run/load.py).
Latencies are what the user waits for, from the moment the request went out: TTFT includes
RAG's retrieval (`retrieval_ms + ttft_ms`), E2E is the row's `total_ms`; TPOT is the decode's
own (`tpot_ms`). A request is *good* when it answered without error and meets every SLO given
(a one-token answer has no TPOT and meets that one, as in `vllm bench serve`); goodput is good
requests per second of the step's duration, attainment good requests over requests sent (a
failed or cut request is a miss). Only a step that ran to the end is steady: a saturated,
incomplete or skipped step gets no throughput, attainment or goodput (its latencies, of what
did answer, are shown and flagged `steady: false`), so it is never averaged in as if steady.
The hit rate is the server's (/metrics prefix_cache_hits over queries during the step: on a
shared server it includes others' traffic); `row_hit_rate` is the step's own rows' cached
prompt tokens over prompt tokens, as the responses' usage reported them. `derived_hit_rate` is
not measured: compare/analysis/cache_model.py's prediction for the step's own requests (in send
order, with their prompt and output lengths) when the run recorded the server's KV pool
(`--num-gpu-blocks-override`); `derived_hit_rate_basis` says what it assumed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from compare.analysis import cache_model
from compare.store import views

PERCENTILES = (50, 90, 99)
SLO_KEYS = ("ttft", "e2e", "tpot")

# The fields of one step's row, in order (the CLI's table and --json read these).
STEP_FIELDS = (
    "pipeline", "params_hash", "step", "rate", "concurrency", "status", "steady", "note", "requests",
    "sent", "answered", "errors", "duration_s", "achieved_rps", "input_tps", "output_tps",
    *(f"ttft_p{p}_ms" for p in PERCENTILES), *(f"itl_p{p}_ms" for p in PERCENTILES),
    *(f"e2e_p{p}_ms" for p in PERCENTILES), *(f"tpot_p{p}_ms" for p in PERCENTILES),
    "queue_p50_ms", "queue_max_ms", "good", "slo_attainment", "goodput_rps", "hit_rate",
    "row_hit_rate", "derived_hit_rate", "derived_hit_rate_basis", "quality", "quality_idle", "idle_run_id",
)


def step_metrics(
    con: duckdb.DuckDBPyConnection, run_id: str, slos: Mapping[str, float] | None = None,
    metric: str = "headline",
) -> list[dict[str, Any]]:
    """One row per step of the run (pipelines in first-step order, steps lowest load first);
    `slos`: {"ttft" | "e2e" | "tpot": ms}, none given means every answered request is good."""
    bad = [k for k, v in (slos or {}).items() if k not in SLO_KEYS or not v > 0]
    if bad:
        raise ValueError(f"SLOs must be positive milliseconds for {', '.join(SLO_KEYS)}: got {bad}")
    views.install(con)
    cur = con.execute(
        "SELECT * FROM load_steps WHERE run_id = ? "
        "ORDER BY started_at, pipeline, concurrency NULLS FIRST, rate", [run_id])
    cols = [c[0] for c in cur.description]
    records = cur.fetchall()  # before any other query: the cursor is the connection's
    pool = server_pool(con, run_id)
    out = []
    for r in records:
        rec = dict(zip(cols, r, strict=True))
        row = _step(con, rec, slos or {}, metric)
        if pool is not None:
            row["derived_hit_rate"] = predicted_hit_rate(con, run_id, rec["pipeline"], rec["params_hash"],
                                                         rec["step"], pool)
            row["derived_hit_rate_basis"] = (
                f"derived, not measured: LRU over {pool[0]} KV blocks of {pool[1]} tokens "
                "(compare/analysis/cache_model.py), the step's requests one after another in send order")
        out.append(row)
    return out


def server_pool(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[int, int] | None:
    """(KV blocks, block size) of the run's server when its recorded command line bounded the
    pool; None otherwise (a pool sized by memory depends on the model's layers: not guessed)."""
    row = con.execute("SELECT server FROM runs WHERE run_id = ?", [run_id]).fetchone()
    info = json.loads(row[0]) if row and row[0] else {}
    args = info.get("args") if isinstance(info, dict) else None
    if not isinstance(args, list):
        return None
    blocks, size = cache_model.blocks_from_args([str(a) for a in args])
    return None if blocks is None else (blocks, size)


def predicted_hit_rate(
    con: duckdb.DuckDBPyConnection, run_id: str, pipeline: str, params_hash: str, step: str,
    pool: tuple[int, int],
) -> float | None:
    """The cache model's hit rate for one step's stored requests. A long-context request shares
    its document's context with the document's other questions; any other request shares only
    with the same question asked again (retrieval picks per question). Each step is salted per
    document (compare/run/load.py), so a step starts from a cache with none of its blocks."""
    views.install(con)
    rows = con.execute(
        "SELECT e.doc_ids, coalesce(json_extract_string(e.tags, '$.load_question'), p.example_id), "
        "p.prompt_tokens, coalesce(p.output_tokens, 0), coalesce(p.context_tokens, 0), p.role "
        "FROM request_rows p JOIN examples e ON e.run_id = p.run_id AND e.example_id = p.example_id "
        "WHERE p.run_id = ? AND p.pipeline = ? AND p.params_hash = ? AND p.load_step = ? "
        "AND p.prompt_tokens IS NOT NULL ORDER BY p.sent_ms NULLS LAST, p.seq",
        [run_id, pipeline, params_hash, step]).fetchall()
    reqs = [cache_model.Request(str(doc), int(prompt), int(ctx) if role == "long_context" else 0, str(q),
                                int(out)) for doc, q, prompt, out, ctx, role in rows]
    return cache_model.predict(reqs, *pool).hit_rate if reqs else None


def _step(con: duckdb.DuckDBPyConnection, rec: Mapping[str, Any], slos: Mapping[str, float],
          metric: str) -> dict[str, Any]:
    key = [rec["run_id"], rec["pipeline"], rec["params_hash"], rec["step"]]
    rows = con.execute(
        "SELECT error IS NULL, retrieval_ms + ttft_ms, total_ms, tpot_ms, itl_ms, queue_ms, prompt_tokens, "
        "cached_tokens, output_tokens FROM request_rows "
        "WHERE run_id = ? AND pipeline = ? AND params_hash = ? AND load_step = ?", key).fetchall()
    ok = [r for r in rows if r[0]]
    steady = rec["status"] == "done"
    dur = float(rec["duration_s"] or 0.0)
    good = sum(1 for r in ok if _meets(r[1], r[2], r[3], slos))
    sent = int(rec["sent"] or 0)
    prompt = sum(int(r[6] or 0) for r in ok)
    out: dict[str, Any] = {
        "pipeline": rec["pipeline"], "params_hash": rec["params_hash"], "step": rec["step"],
        "rate": rec["rate"], "concurrency": rec["concurrency"], "status": rec["status"], "steady": steady,
        "note": rec["note"], "requests": rec["requests"], "sent": sent, "answered": len(ok),
        "errors": len(rows) - len(ok), "duration_s": dur, "idle_run_id": rec["idle_run_id"],
        "achieved_rps": len(ok) / dur if steady and dur > 0 else None,
        "input_tps": prompt / dur if steady and dur > 0 else None,
        "output_tps": sum(int(r[8] or 0) for r in ok) / dur if steady and dur > 0 else None,
        "good": good,
        "slo_attainment": good / sent if steady and sent else None,
        "goodput_rps": good / dur if steady and dur > 0 else None,
        "hit_rate": _hit_rate(json.loads(rec["server_deltas"] or "{}")),
        "row_hit_rate": sum(int(r[7] or 0) for r in ok) / prompt if prompt else None,
        "queue_p50_ms": _pct([r[5] for r in rows], 50),
        "queue_max_ms": max((float(r[5]) for r in rows if r[5] is not None), default=None),
    }
    itl = [x for r in ok for x in (r[4] or [])]
    for p in PERCENTILES:
        out[f"ttft_p{p}_ms"] = _pct([r[1] for r in ok], p)
        out[f"itl_p{p}_ms"] = _pct(itl, p)
        out[f"e2e_p{p}_ms"] = _pct([r[2] for r in ok], p)
        out[f"tpot_p{p}_ms"] = _pct([r[3] for r in ok], p)
    out["quality"], out["quality_idle"] = _quality(con, rec, metric)
    return {f: out.get(f) for f in STEP_FIELDS}


def _meets(ttft: float | None, e2e: float | None, tpot: float | None, slos: Mapping[str, float]) -> bool:
    got = {"ttft": ttft, "e2e": e2e, "tpot": tpot}
    for k, limit in slos.items():
        v = got[k]
        if v is None:
            if k == "tpot":  # a one-token answer has no decode to be slow in
                continue
            return False
        if v > limit:
            return False
    return True


def _pct(values: Sequence[Any], p: float) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return float(np.percentile(xs, p)) if xs else None


def _hit_rate(deltas: Mapping[str, float]) -> float | None:
    queries = deltas.get("vllm:prefix_cache_queries", 0.0)
    return deltas.get("vllm:prefix_cache_hits", 0.0) / queries if queries > 0 else None


def _quality(
    con: duckdb.DuckDBPyConnection, rec: Mapping[str, Any], metric: str,
) -> tuple[float | None, float | None]:
    """The step's mean score (a failed request scores 0, as in the idle summary) and the same
    questions' mean in the idle run of the spec, asked as often as the step asked them (None
    when that run is not in this database): a drop under load is a finding."""
    q = con.execute(
        """
        SELECT avg(coalesce(s.value, CASE WHEN p.error IS NOT NULL THEN 0.0 END)),
               avg(i.value)
        FROM request_rows p
        JOIN examples e ON e.run_id = p.run_id AND e.example_id = p.example_id
        LEFT JOIN scores s ON s.run_id = p.run_id AND s.example_id = p.example_id
             AND s.pipeline = p.pipeline AND s.params_hash = p.params_hash AND s.metric = ?
        LEFT JOIN scores i ON i.run_id = ? AND i.example_id = json_extract_string(e.tags, '$.load_question')
             AND i.pipeline = p.pipeline AND i.params_hash = p.params_hash AND i.metric = ?
        WHERE p.run_id = ? AND p.pipeline = ? AND p.params_hash = ? AND p.load_step = ?
        """,
        [metric, rec["idle_run_id"], metric, rec["run_id"], rec["pipeline"], rec["params_hash"], rec["step"]],
    ).fetchone()
    return (None, None) if q is None else (_num(q[0]), _num(q[1]))


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Busy:
    """The busy share a load step measured: the part of its wall time with at least one of its
    requests in flight, the quantity `recommend` estimates as rate x busy seconds per request."""

    share: float  # at the step's own rate
    at_rate: float  # scaled linearly to the rate asked for (what recommend compares)
    rate: float
    run_id: str
    step: str


def measured_busy(
    con: duckdb.DuckDBPyConnection, pipeline: str, params_hash: str, rate: float,
) -> Busy | None:
    """From the steady rate step nearest `rate` (by ratio) of any load sweep of this pipeline
    configuration in the file; None without one. Overlapping requests (a batch) count once, so
    under batching the measurement falls below the estimate, and under queueing above it."""
    if not views.has_table(con, "load_steps"):
        return None
    steps = con.execute(
        "SELECT run_id, step, rate, duration_s FROM load_steps WHERE pipeline = ? AND params_hash = ? "
        "AND rate > 0 AND status = 'done' AND duration_s > 0", [pipeline, params_hash]).fetchall()
    if not steps or not rate > 0:
        return None
    run_id, step, step_rate, duration_s = min(steps, key=lambda s: (abs(math.log(s[2] / rate)), s[0], s[1]))
    share = step_busy_share(con, run_id, pipeline, params_hash, step, float(duration_s))
    return Busy(share, share * rate / float(step_rate), float(step_rate), run_id, step)


def step_busy_share(con: duckdb.DuckDBPyConnection, run_id: str, pipeline: str, params_hash: str,
                    step: str, duration_s: float) -> float:
    """The share of one step's wall time with at least one of its requests in flight: the union
    of [sent, sent + time in system] over its rows (a batch counts once)."""
    spans = sorted(con.execute(
        "SELECT sent_ms, sent_ms + total_ms FROM predictions WHERE run_id = ? AND pipeline = ? "
        "AND params_hash = ? AND load_step = ? AND sent_ms IS NOT NULL AND total_ms IS NOT NULL",
        [run_id, pipeline, params_hash, step]).fetchall())
    busy_ms, end = 0.0, -math.inf
    for start, stop in spans:
        if stop > end:
            busy_ms += stop - max(start, end)
            end = stop
    return busy_ms / (1e3 * duration_s)
