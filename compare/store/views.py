"""The SQL views every reader of the store goes through: what a row's kind, role, warmth and
length are is defined here once, and the analysis and report select from these views instead of
restating an expression (a rule restated in five queries drifts in one of them).

- `request_rows`: every prediction, with `kind` (the pipeline's `params.kind`, else its name),
  `role` (long_context / retrieval / router, declared by the pipeline class and stored per row)
  and `warm` (at least WARM_FRACTION of the row's context was served from the prefix cache).
- `example_rows`: every example, with `length` (the needle grid's target tokens, else the measured
  document tokens: the x-axis of the report) and `doc_length` (the document's measured tokens,
  what a workload's document length is matched against).

They are TEMP views, made per connection (a read-only connection may make them too), so a
results file from any earlier version gets them without being rewritten.
"""

from __future__ import annotations

from typing import Any

import duckdb

# Warm means "the document was already in the cache": nearly all of it, not a shared haystack
# prefix. At 0.5 a needle-grid request that reused half a haystack (the prefix before an
# earlier needle) counted as warm and made long context's marginal cost look like a cold one.
WARM_FRACTION = 0.9



def is_warm(cached: Any, context: Any) -> Any:
    """The same rule for priced requests in pandas (a router's steps are requests of one row):
    numbers or Series in, bool or a bool Series out."""
    return (context > 0) & (cached >= WARM_FRACTION * context)


KIND_SQL = "coalesce(json_extract_string(params, '$.kind'), pipeline)"
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
            context_tokens > 0 AND coalesce(cached_tokens, 0) >= {WARM_FRACTION} * context_tokens AS warm
        FROM main.predictions
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW example_rows AS
        SELECT *, {LENGTH_SQL} AS length, {DOC_LENGTH_SQL} AS doc_length FROM main.examples
    """)
