"""One row per stored request, in a reader's words: the pipeline's label, every score, the tokens
(cached ones apart) and what the request cost in both price views. What `ragvslc.samples()` returns
and what `export` writes as `requests`, like inspect's `samples_df()`.

A request's $ is its own model calls as measured (compare/analysis/priced.py: a router's row is
its steps, each at its own prompt's tier; cached tokens at the sheet's discount): `usd_api` at the
sheet's token prices, `usd_self_hosted` its busy seconds at the machine's hourly price. Index
builds and retrieval seconds are per document or per run, not per request: they are in
`ragvslc.cost()`'s per-query model, not here. NaN: the view is not in the sheet, or the request
reported no usage (a failed request, a stream without its usage chunk).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd

from compare.analysis import cache_terms, summary
from compare.analysis.priced import priced_requests
from compare.analysis.prices import PriceSheet
from compare.store import views

_KEY = ["run_id", "pipeline", "params_hash", "example_id"]

_ROWS = """
SELECT p.run_id, p.example_id, p.pipeline, p.params_hash, p.kind, p.role, p.route,
    e.question, p.answer, p.error, e.length, e.doc_length AS doc_tokens,
    p.context_tokens, p.prompt_tokens, p.cached_tokens, p.output_tokens, p.warm,
    p.retrieval_ms, p.ttft_ms, p.e2e_ms, p.total_ms, p.attempts, p.started_at, p.finished_at
FROM request_rows p JOIN example_rows e USING (run_id, example_id)
WHERE list_contains($runs, p.run_id)
ORDER BY p.run_id, p.seq
"""

# What each column of the frame is: (unit, meaning), for the export's data dictionary.
COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("", "the run's id (ragvslc.runs() names it by corpus and time)"),
    "run_name": ("", "the run as the report names it: its corpus and when it started (UTC)"),
    "example_id": ("", "the question's id within its corpus"),
    "pipeline": ("", "the pipeline's kind (long_context, rag, self_route, length_rule or a plug-in)"),
    "label": ("", "the pipeline as the report names it: what differs from its defaults (\"RAG k=4\")"),
    "params_hash": ("", "hash of the pipeline's full configuration (its knobs: predictions.params)"),
    "kind": ("", "the pipeline's kind, as its params record it"),
    "role": ("", "long_context, retrieval or router: what the analysis compares"),
    "route": ("", "a router's path for this question (rag or long_context); empty otherwise"),
    "question": ("", "the question asked"),
    "answer": ("", "the model's answer (empty when the request failed)"),
    "error": ("", "why the request failed; empty when it answered"),
    "length": ("tokens", "the document length the report plots: the needle grid's target, else measured"),
    "doc_tokens": ("tokens", "the question's documents, measured with the served model's tokenizer"),
    "context_tokens": ("tokens", "the context the pipeline sent (whole documents, or retrieved chunks)"),
    "prompt_tokens": ("tokens", "prompt tokens the endpoint reported (summed over a router's steps)"),
    "cached_tokens": ("tokens", "of the prompt tokens, those served from the prefix cache"),
    "output_tokens": ("tokens", "tokens generated"),
    "warm": ("", "true when at least 90% of the context was served from the prefix cache"),
    "retrieval_ms": ("ms", "retrieval time (question embedding, search, budget fill); 0 for long context"),
    "ttft_ms": ("ms", "time to first token of the answer"),
    "e2e_ms": ("ms", "end to end: request sent to last token"),
    "total_ms": ("ms", "retrieval + end to end: what the user waits"),
    "attempts": ("", "tries the request took (retries after a failure)"),
    "started_at": ("UTC timestamp", "when the request started"),
    "finished_at": ("UTC timestamp", "when its row was written"),
    "usd_api": ("USD", "the request's model calls at the sheet's API token prices (cached tokens at "
                       "their discount, cache writes at theirs); no index or retrieval share"),
    "usd_self_hosted": ("USD", "the request's busy engine seconds at the sheet's hourly machine price"),
    "score_*": ("0..1", "the metric's score for this answer; empty where the metric does not apply"),
}


def _costs(con: duckdb.DuckDBPyConnection, runs: Sequence[str], sheet: PriceSheet | None) -> pd.DataFrame:
    """Per stored row: $ in each view, summed over its priced requests (a router's steps)."""
    req, _ = priced_requests(con, runs)
    out = pd.DataFrame(columns=[*_KEY, "usd_api", "usd_self_hosted"])
    if req.empty or sheet is None:
        return out
    if sheet.api is not None:
        cache_terms.write_columns(req, sheet.api)
        cache_terms.api_columns(req, sheet.api)
    else:
        req["api_usd"] = np.nan
    hourly = sheet.self_hosted.usd_per_hour if sheet.self_hosted is not None else np.nan
    req["usd_self_hosted"] = req["busy_s"] * hourly / 3600
    return (req.rename(columns={"api_usd": "usd_api"}).groupby(_KEY, as_index=False)[
        ["usd_api", "usd_self_hosted"]].sum(min_count=1))


def samples(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None = None,
            sheet: PriceSheet | None = None) -> pd.DataFrame:
    """One row per stored request (see the module docstring; `COLUMNS` says what each column is).
    `run_ids` None: every run but load runs. `sheet` None: the sheet the report would choose."""
    from compare.analysis.prices import choose_sheet

    views.install(con)
    runs = list(run_ids) if run_ids is not None else views.idle_runs(con)  # load runs only when named
    rows = con.execute(_ROWS, {"runs": runs}).df()
    if rows.empty:
        return rows
    # each run's own labels ("RAG k=4"): the run is its own column here, not a suffix
    labels = pd.concat([summary.pipeline_labels(con, [r]) for r in runs], ignore_index=True)
    names = summary.run_names(con, runs)
    scores = con.execute(
        "SELECT run_id, pipeline, params_hash, example_id, 'score_' || metric AS metric, value FROM scores "
        "WHERE list_contains(?, run_id)", [runs]).df()
    # one score per (row, metric): the table's key, so a plain pivot
    wide = (scores.pivot(index=_KEY, columns="metric", values="value").reset_index()
            if not scores.empty else pd.DataFrame(columns=_KEY))
    wide.columns.name = None
    sheet = sheet if sheet is not None else choose_sheet(con, runs, None).sheet
    df = (rows.merge(labels, on=["run_id", "pipeline", "params_hash"], how="left")
          .merge(wide, on=_KEY, how="left").merge(_costs(con, runs, sheet), on=_KEY, how="left"))
    df.insert(1, "run_name", df["run_id"].map(names))
    for col in ("started_at", "finished_at"):  # stored as UTC without a zone: say so
        df[col] = pd.to_datetime(df[col]).dt.tz_localize("UTC")
    first = [c for c in COLUMNS if c in df.columns]
    return df[[*first, *sorted(c for c in df.columns if c not in first)]]
