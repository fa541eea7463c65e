"""Is the cache doing what the numbers assume? Cold requests that were not cold, and the run's
prefix-cache hit rate as the server counted it.

A document's first request (per pipeline configuration) is what the cost model calls its cold
prefill. With cache isolation (vLLM cache salts, the default) it cannot find anything cached;
one that reports more cached tokens than a chat template's worth was warmed by something else
(isolation off, a server without salt support, a provider's own cache), and its cold cost and
latency are not a cold measurement: it is flagged, never silently averaged in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from compare.store import views

TEMPLATE_TOKENS = 32  # more cached tokens than a chat template's worth: not a cold request

_LEAKS = f"""
WITH first AS (
    SELECT p.run_id, p.pipeline, p.params_hash, p.role, coalesce(p.cached_tokens, 0) AS cached,
        p.prompt_tokens
    FROM request_rows p JOIN example_rows e USING (run_id, example_id)
    WHERE list_contains($runs, p.run_id) AND p.error IS NULL AND p.role = 'long_context'
    QUALIFY row_number() OVER (PARTITION BY p.run_id, p.pipeline, p.params_hash, e.doc_ids ORDER BY p.seq) = 1
)
SELECT run_id, pipeline, params_hash, count(*) AS cold,
    count(*) FILTER (WHERE cached > {TEMPLATE_TOKENS}) AS leaked, max(cached) AS max_cached
FROM first GROUP BY ALL ORDER BY ALL
"""


def cold_leaks(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Per long-context configuration: its documents' first requests, and how many of them
    reported cached tokens beyond the template."""
    views.install(con)
    cur = con.execute(_LEAKS, {"runs": list(run_ids)})
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def leak_caveats(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[str]:
    return [
        f"{r['pipeline']}: {r['leaked']} of {r['cold']} cold (first) requests found up to "
        f"{r['max_cached']} tokens cached: not cold measurements (cache isolation off, or the "
        "endpoint ignores cache salts)"
        for r in cold_leaks(con, run_ids) if r["leaked"]
    ]


def prefix_hit_rates(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, float]:
    """Per run: prefix-cache hits / queries (tokens) from the server's /metrics deltas; runs
    against an endpoint without /metrics have none."""
    rows = con.execute(
        "SELECT run_id, sum(value) FILTER (WHERE name = 'vllm:prefix_cache_hits'), "
        "sum(value) FILTER (WHERE name = 'vllm:prefix_cache_queries') FROM server_stats "
        "WHERE list_contains(?, run_id) GROUP BY run_id", [list(run_ids)]).fetchall()
    return {str(r): float(h) / float(q) for r, h, q in rows if h is not None and q}
