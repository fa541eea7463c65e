"""How many replicas a strategy needs to meet the workload's latency target at its rate, from a
load sweep (issue 28 item 5), and what they cost.

The workload's target is a p95: a replica meets it at a rate when, at a steady step of that
rate, at least 95 % of the requests sent were good (answered within the target: SLO attainment
>= 0.95, compare/analysis/load.py; a failed request is a miss). A saturated step is a miss at
its rate; incomplete or skipped steps say nothing. The capacity of one replica is the highest
swept rate that met the target below every rate that missed it (measured, with its step's n and
goodput). Then

    replicas = ceil(workload rate / capacity)          (derived: traffic split evenly, each
                                                         replica as the measured one)

and $ per hour = replicas x the sheet's self-hosted $ per hour, $ per 1k queries = that over the
workload's queries in an hour (derived). Nothing is extrapolated: a target missed already at the
lowest swept rate is "beyond the swept rates" (no count), and when every swept rate met it the
count is an upper bound (a replica may take more than the highest rate swept). Rates below the
capacity are taken to be no slower than the capacity's (the sweep measured the harder case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import duckdb

from compare.analysis.load import step_metrics
from compare.analysis.prices import PriceSheet
from compare.analysis.workload import Workload
from compare.store import views

ATTAINMENT = 0.95  # a p95 target: 95 % of requests within it
FIELDS = ("replicas", "replicas_basis", "per_replica_rps", "per_replica_goodput_rps", "per_replica_n",
          "load_run_id", "load_step", "swept_rps", "replicas_usd_per_hour", "replicas_usd_per_1k",
          "replicas_note")


@dataclass(frozen=True)
class Replicas:
    """One strategy's replicas at the workload's rate (None where it cannot be said: `note`)."""

    replicas: int | None
    basis: str  # "derived (upper bound)" / "derived" / "beyond the swept rates" / "no steady step"
    per_replica_rps: float | None  # measured: the highest swept rate that met the target
    per_replica_goodput_rps: float | None  # measured at that step
    per_replica_n: int  # requests sent in that step
    load_run_id: str | None
    load_step: str | None
    swept_rps: list[float]
    usd_per_hour: float | None
    usd_per_1k: float | None
    note: str

    def fields(self) -> dict[str, Any]:
        return dict(zip(FIELDS, (
            self.replicas, self.basis, self.per_replica_rps, self.per_replica_goodput_rps, self.per_replica_n,
            self.load_run_id, self.load_step, self.swept_rps, self.usd_per_hour, self.usd_per_1k, self.note),
            strict=True))


def _steps(con: duckdb.DuckDBPyConnection, model: str | None, wl: Workload, pipeline: str, params_hash: str,
           ) -> list[dict[str, Any]]:
    """Every rate step of this configuration in the file's load runs of the same model and corpus,
    scored against the workload's target."""
    if not views.has_table(con, "load_steps"):
        return []
    runs = [r[0] for r in con.execute(
        "SELECT DISTINCT s.run_id FROM load_steps s JOIN runs r USING (run_id) WHERE s.pipeline = ? "
        "AND s.params_hash = ? AND s.rate > 0 AND (? IS NULL OR r.model = ?) AND starts_with(r.corpus, ?) "
        "ORDER BY s.run_id", [pipeline, params_hash, model, model, wl.corpus or ""]).fetchall()]
    slo: dict[str, float] = {str(wl.latency.metric): wl.latency.p95_ms}
    return [{**s, "run_id": run} for run in runs for s in step_metrics(con, run, slo)
            if s["pipeline"] == pipeline and s["params_hash"] == params_hash and s["rate"]]


def replicas_for(con: duckdb.DuckDBPyConnection, model: str | None, wl: Workload, sheet: PriceSheet,
                 pipeline: str, params_hash: str) -> Replicas | None:
    """The module docstring's rule for one configuration; None when no load run measured it."""
    steps = _steps(con, model, wl, pipeline, params_hash)
    judged = [s for s in steps if s["steady"] or s["status"] == "saturated"]
    if not steps:
        return None
    swept = sorted({float(s["rate"]) for s in judged})
    target = f"p95 {wl.latency.metric} <= {wl.latency.p95_ms:,.0f} ms"

    def met(s: dict[str, Any]) -> bool:
        return bool(s["steady"]) and (s["slo_attainment"] or 0.0) >= ATTAINMENT

    missed = [float(s["rate"]) for s in judged if not met(s)]
    ok = [s for s in judged if met(s) and float(s["rate"]) < min(missed, default=math.inf)]
    if not judged:
        return Replicas(None, "no steady step", None, None, 0, None, None, [], None, None,
                        "the load sweep has no steady or saturated rate step")
    if not ok:
        low = min(judged, key=lambda s: float(s["rate"]))
        att = "saturated" if not low["steady"] else f"{low['slo_attainment']:.2f} of {low['sent']} within it"
        return Replicas(None, "beyond the swept rates", None, None, int(low["sent"] or 0), low["run_id"],
                        low["step"], swept, None, None,
                        f"beyond the swept rates: {target} missed already at the lowest swept rate "
                        f"{float(low['rate']):g} req/s (measured: {att}); not extrapolated")
    best = max(ok, key=lambda s: (float(s["rate"]), s["run_id"]))
    cap = float(best["rate"])
    n = math.ceil(wl.requests_per_s / cap - 1e-9)
    bound = not missed
    basis = "derived (upper bound)" if bound else "derived"
    usd_h = n * sheet.self_hosted.usd_per_hour if sheet.self_hosted is not None else None
    usd_1k = usd_h / (wl.requests_per_s * 3.6) if usd_h is not None else None
    note = (f"{n} replica(s) at {wl.requests_per_s:g} req/s (derived: ceil(rate / {cap:g})); one replica "
            f"met {target} at {cap:g} req/s (measured: {best['slo_attainment']:.2f} of n={best['sent']} "
            f"within it, goodput {best['goodput_rps']:.3g} req/s; load run {best['run_id']}, "
            f"step {best['step']})")
    if bound:
        note += f"; every swept rate met it, so a replica may take more than {cap:g} req/s (an upper bound)"
    else:
        note += f"; missed at {min(missed):g} req/s"
    note += (f"; ${usd_h:.4g}/h, ${usd_1k:.4g} per 1k queries (derived: replicas x the sheet's self-hosted "
             "$/h)" if usd_h is not None and usd_1k is not None else "; no self-hosted prices: no $")
    return Replicas(n, basis, cap, best["goodput_rps"], int(best["sent"] or 0), best["run_id"], best["step"],
                    swept, usd_h, usd_1k, note)
