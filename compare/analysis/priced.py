"""Stored rows -> priced HTTP requests: one per row, or one per step of a router's row, each with
its busy seconds (self-hosted) and the columns the one cost function (compare/analysis/doc_costs.py,
whose docstring states the rules) prices. Split from it so pricing a request and pricing a document
are read apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from compare.analysis.cache_terms import PREFIX_CACHED_ROLES
from compare.store import views

DOC_KEY = ["run_id", "pipeline", "params_hash", "doc_key"]
PIPE_KEY = ["run_id", "pipeline", "params_hash"]

_ROWS = """
SELECT p.run_id, p.pipeline, p.params_hash, p.example_id, p.seq, r.concurrency,
    p.kind, p.role, p.route, e.doc_ids AS doc_key,
    p.error IS NOT NULL AS failed, p.steps, p.prompt_tokens, p.cached_tokens, p.cache_write_tokens,
    p.output_tokens,
    p.context_tokens, p.ttft_ms, p.e2e_ms, coalesce(p.retrieval_ms, 0) / 1e3 AS retrieval_s, p.total_ms,
    coalesce(p.embed_tokens, 0) AS embed_tokens
FROM request_rows p JOIN example_rows e USING (run_id, example_id) JOIN runs r USING (run_id)
WHERE list_contains($runs, p.run_id)
"""
_CALIBRATION = """
SELECT run_id,
    sum(value) FILTER (WHERE name = 'vllm:request_prefill_time_seconds_sum') AS prefill_s,
    sum(value) FILTER (WHERE name = 'vllm:request_decode_time_seconds_sum') AS decode_s
FROM server_stats WHERE list_contains($runs, run_id) GROUP BY run_id
"""


def _known(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _request(row: dict[str, Any], step: dict[str, Any] | None) -> dict[str, Any] | None:
    """One priced request (a row, or one step of it); None when its usage is unknown."""
    src = step if step is not None else row
    raw = [src.get(k) for k in ("prompt_tokens", "output_tokens", "ttft_ms", "e2e_ms")]
    values = [float(v) for v in raw if v is not None and _known(v)]
    if len(values) < len(raw) or values[0] < 0 or values[1] < 0:
        return None  # no usage chunk (or -1 placeholders): never priced as if it were free
    prompt, out, ttft, e2e = values
    cached, write = src.get("cached_tokens"), src.get("cache_write_tokens")
    return {
        "prompt": int(prompt), "cached": int(cached) if cached is not None and _known(cached) else 0,
        "cache_unreported": not _known(cached), "output": int(out),
        "write": float(write) if write is not None and _known(write) else math.nan,
        "ctx": int(src.get("context_tokens") or 0), "ttft_s": ttft / 1e3,
        "decode_wall_s": max(e2e - ttft, 0) / 1e3,
    }


_ROW_KEYS = (*PIPE_KEY, "example_id", "seq", "kind", "role", "doc_key", "concurrency")
_REQ_COLUMNS = [*_ROW_KEYS, "prompt", "cached", "cache_unreported", "output", "write", "ctx", "ttft_s",
                "decode_wall_s", "doc_prefix"]


def _starts_with_document(row: dict[str, Any], step: dict[str, Any] | None) -> bool:
    """Whether this request's prompt starts with the whole document (so the prefix cache prices it):
    a long-context row, or a router's long-context step (a row without steps: its route)."""
    if row["role"] in PREFIX_CACHED_ROLES:
        return True
    route = step.get("route") if step is not None else row.get("route")
    return row["role"] == "router" and route == "long_context"


def _expand(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[bool]]:
    """Rows -> priced requests (a row, or each of its steps); and whether each row is priced."""
    reqs, priced = [], []
    for row in rows.to_dict("records"):
        steps = json.loads(row["steps"]) if row["steps"] else [None]
        found = [(st, r) for st in steps if (r := _request(row, st)) is not None]
        ok = len(found) == len(steps) or (bool(row["failed"]) and bool(found))
        priced.append(ok)
        keys = {k: row[k] for k in _ROW_KEYS}
        reqs += [keys | r | {"doc_prefix": _starts_with_document(row, st)} for st, r in (found if ok else [])]
    req = pd.DataFrame(reqs, columns=_REQ_COLUMNS)
    for col in ("prompt", "cached", "output", "ctx", "seq", "concurrency"):
        req[col] = req[col].astype(int)
    req[["ttft_s", "decode_wall_s", "write"]] = req[["ttft_s", "decode_wall_s", "write"]].astype(float)
    req[["cache_unreported", "doc_prefix"]] = req[["cache_unreported", "doc_prefix"]].astype(bool)
    return req, priced


def priced_requests(
    con: duckdb.DuckDBPyConnection, runs: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(requests, rows): one row per priced HTTP request with its busy seconds, and one per
    stored prediction with whether it failed and whether its spend is known (`priced`)."""
    views.install(con)
    rows = con.execute(_ROWS, {"runs": list(runs)}).df().astype(object)
    rows = rows.where(rows.notna(), None)
    req, priced = _expand(rows)
    rows["priced"] = pd.Series(priced, index=rows.index, dtype=bool)
    rows["failed"] = rows["failed"].astype(bool)
    if req.empty:
        return req, rows
    cal = con.execute(_CALIBRATION, {"runs": list(runs)}).df().set_index("run_id").astype(float)
    sums = req.groupby("run_id")[["ttft_s", "decode_wall_s"]].sum().reindex(cal.index)
    kp = (cal["prefill_s"] / sums["ttft_s"]).clip(upper=1.0)
    kd = (cal["decode_s"] / sums["decode_wall_s"]).clip(upper=1.0)
    kp, kd = kp[np.isfinite(kp) & (kp > 0)], kd[np.isfinite(kd) & (kd > 0)]
    req["calibrated"] = req["run_id"].isin(kp.index) & req["run_id"].isin(kd.index)
    req["prefill_s"] = req["ttft_s"] * req["run_id"].map(kp).fillna(1.0).astype(float)
    req["decode_s"] = req["decode_wall_s"] * req["run_id"].map(kd).fillna(1.0).astype(float)
    req["busy_s"] = req["prefill_s"] + req["decode_s"]
    req["warm"] = views.is_warm(req["cached"], req["ctx"], req["prompt"])
    req["from_nothing"] = req["cached"] <= (req["prompt"] - req["ctx"]).clip(lower=0)
    req["doc_cached"] = np.minimum(req["prompt"], np.maximum(req["cached"], req["ctx"]))
    # Prefill seconds per computed token of the requests that were not warm: per pipeline, else
    # its kind, else the run (what a cached token would have cost to compute).
    cold = req[~req["warm"]].assign(computed=lambda d: d["prompt"] - d["cached"])
    rate = pd.Series(np.nan, index=req.index)
    for keys in (PIPE_KEY, ["run_id", "kind"], ["run_id"]):
        per = cold.groupby(keys)[["prefill_s", "computed"]].sum()
        s_tok = (per["prefill_s"] / per["computed"].where(per["computed"] > 0)).rename("s_tok")
        rate = rate.fillna(req.join(s_tok, on=keys)["s_tok"])
    req["busy_s_cold"] = req["busy_s"] + rate.fillna(0.0) * req["cached"]
    left = (req["prompt"] - req["doc_cached"]) / (req["prompt"] - req["cached"]).where(lambda s: s > 0)
    derived = req["decode_s"] + req["prefill_s"] * left.fillna(0.0)
    req["busy_s_warm"] = req["busy_s"].where(req["warm"], derived)
    return req, rows
