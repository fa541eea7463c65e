"""An automatic sweep's rates (issue 28 item 2): measured, not guessed.

Which rates are worth offering depends on the pipeline and the server: long context on a
2-core CPU saturates near 0.1 requests/s, RAG higher, a GPU orders of magnitude higher. As
GuideLLM's sweep does, a short closed-loop probe at a high fixed concurrency first measures
what the server answers per second when never idle (its saturation throughput); the sweep's
rates are then spread evenly up to it: k/n of it for k = 1..n (n = `auto_rates`), so the
lowest is lightly loaded and the highest sits at saturation, where the queue starts to grow.
The probe is a step like any other (label "probe", stored rows, resumable), so the rates a
rerun derives are the ones the first session derived.
"""

from __future__ import annotations

import math

from compare.store.db import Store

SIGNIFICANT = 3  # rates are rounded so their step labels ("rate=0.123") stay short and stable


def auto_rates(probe_rps: float, n: int) -> list[float]:
    """n rates evenly spread up to the probe's throughput (k/n of it, k = 1..n), 3 significant
    digits; one clear error when the probe measured nothing to spread."""
    if not (probe_rps > 0 and math.isfinite(probe_rps)):
        raise ValueError(f"the saturation probe measured no throughput ({probe_rps:g} requests/s answered): "
                         "check the probe step's errors, or give --rates")
    return sorted({_round(probe_rps * k / n) for k in range(1, n + 1)})


def _round(x: float) -> float:
    return float(f"{x:.{SIGNIFICANT}g}")


def probe_throughput(store: Store, run_id: str, pipeline: str, params_hash: str, label: str) -> float:
    """Requests answered without error per second of the probe step's duration (all sessions)."""
    row = store.con.execute(
        "SELECT s.duration_s, (SELECT count(*) FROM predictions p WHERE p.run_id = s.run_id "
        "AND p.pipeline = s.pipeline AND p.params_hash = s.params_hash AND p.load_step = s.step "
        "AND p.error IS NULL) "
        "FROM load_steps s WHERE s.run_id = ? AND s.pipeline = ? AND s.params_hash = ? AND s.step = ?",
        [run_id, pipeline, params_hash, label]).fetchone()
    if row is None or not row[0]:
        return 0.0
    return float(row[1]) / float(row[0])
