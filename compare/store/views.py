"""The SQL views every reader of the store goes through: what a row's kind, role, warmth and
length are is defined here once, and the analysis and report select from these views instead of
restating an expression (a rule restated in five queries drifts in one of them).

- `request_rows`: every prediction, with `kind` (the pipeline's `params.kind`, else its name),
  `role` (long_context / retrieval / router, declared by the pipeline class and stored per row)
  `cache` (cold / partial / warm, below) and `warm` (cache = 'warm').
- Cache classes (issue 24 item 10): a row's template is every prompt token that is not its
  context (prompt_tokens - context_tokens: the chat template, the system prompt, the question).
  cold = at most the template's tokens cached; warm = at least WARM_FRACTION of the DOCUMENT
  cached, counted after taking the whole template off the cached tokens (so a cached system
  prompt never makes a short document read as warm; conservative by the question's tokens);
  partial = anything between (a shared haystack prefix, a half-evicted document).
- `example_rows`: every example, with `length` (the needle grid's target tokens, else the measured
  document tokens: the x-axis of the report) and `doc_length` (the document's measured tokens,
  what a workload's document length is matched against).

They are TEMP views, made per connection (a read-only connection may make them too), so a
results file from any earlier version gets them without being rewritten.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np

# Warm means "the document was already in the cache": nearly all of it, not a shared haystack
# prefix. At 0.5 a needle-grid request that reused half a haystack (the prefix before an
# earlier needle) counted as warm and made long context's marginal cost look like a cold one.
WARM_FRACTION = 0.9
# A load run's id starts with this (compare/run/load.py load_run_id): its rows are requests
# under traffic, each step's cache started cold, so a view that defaults to "every run" (an idle
# comparison: quality, latency, cost) leaves load runs out unless they are named.
LOAD_RUN_PREFIX = "load-"
IDLE_RUN_SQL = f"NOT starts_with(run_id, '{LOAD_RUN_PREFIX}')"


def is_load_run(run_id: object) -> bool:
    """A run `ragvslc load` made: its requests were sent under traffic (the one test of it)."""
    return str(run_id).startswith(LOAD_RUN_PREFIX)


def idle_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every run but load runs, oldest first (what "all runs" means to an idle comparison)."""
    return [str(r[0]) for r in con.execute(
        f"SELECT run_id FROM runs WHERE {IDLE_RUN_SQL} ORDER BY created_at").fetchall()]



def _template(context: Any, prompt: Any) -> Any:
    """Tokens of the prompt that are not the context (0 where the prompt is unknown)."""
    return 0 * context if prompt is None else np.maximum(prompt - context, 0)


def is_warm(cached: Any, context: Any, prompt: Any = None) -> Any:
    """The same rule for priced requests in pandas (a router's steps are requests of one row):
    numbers or Series in, bool or a bool Series out. `prompt`: the request's prompt tokens, so
    the template's cached tokens are not counted as the document's (None: no template known)."""
    return (context > 0) & (cached - _template(context, prompt) >= WARM_FRACTION * context)


def cache_class(cached: Any, context: Any, prompt: Any = None) -> Any:
    """cold / partial / warm for one request (numbers) as the view's `cache` column says it."""
    if is_warm(cached, context, prompt):
        return "warm"
    return "cold" if cached <= _template(context, prompt) else "partial"


KIND_SQL = "coalesce(json_extract_string(params, '$.kind'), pipeline)"
_CACHED_SQL = "coalesce(cached_tokens, 0)"
_TEMPLATE_SQL = "greatest(coalesce(prompt_tokens, context_tokens) - context_tokens, 0)"
WARM_SQL = f"(context_tokens > 0 AND {_CACHED_SQL} - {_TEMPLATE_SQL} >= {WARM_FRACTION} * context_tokens)"
CACHE_SQL = (f"CASE WHEN {WARM_SQL} THEN 'warm' WHEN {_CACHED_SQL} <= {_TEMPLATE_SQL} THEN 'cold' "
             "ELSE 'partial' END")
# Rows written before roles were recorded (schema migration "prediction_role") carry no role:
# the four pipeline kinds that existed then are mapped here, the one place that names them.
_LEGACY_ROLE = (
    f"CASE {KIND_SQL} WHEN 'long_context' THEN 'long_context' WHEN 'rag' THEN 'retrieval' "
    "WHEN 'self_route' THEN 'router' WHEN 'length_rule' THEN 'router' END"
)
LENGTH_SQL = "coalesce(TRY_CAST(json_extract_string(tags, '$.target_tokens') AS DOUBLE), doc_tokens)"
DOC_LENGTH_SQL = "coalesce(TRY_CAST(json_extract_string(tags, '$.doc_tokens') AS DOUBLE), doc_tokens)"


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'",
        [table],
    ).fetchall()
    return {str(r[0]) for r in rows}


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or refresh) the views on this connection; cheap, so every reader calls it."""
    pred_cols = _columns(con, "predictions")
    if not pred_cols:
        return  # an empty file: nothing to view yet
    role = f"coalesce(role, {_LEGACY_ROLE})" if "role" in pred_cols else _LEGACY_ROLE
    rest = "* EXCLUDE (role)" if "role" in pred_cols else "*"
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW request_rows AS
        SELECT {rest}, {KIND_SQL} AS kind, {role} AS role,
            coalesce({WARM_SQL}, false) AS warm, {CACHE_SQL} AS cache
        FROM main.predictions
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW example_rows AS
        SELECT *, {LENGTH_SQL} AS length, {DOC_LENGTH_SQL} AS doc_length FROM main.examples
    """)


def has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """False on a store from before the migration opened read-only (it is not migrated)."""
    row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
                      "AND table_schema = 'main'", [table]).fetchone()
    return bool(row and row[0])
