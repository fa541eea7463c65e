"""What the LLM judge's stored verdicts say beside token F1 (the asking is compare/run/judge.py)."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pandas as pd

JUDGE_METRIC = "judge"  # the verdicts' metric name in `scores`


def agreement(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], f1_at: float = 0.5) -> pd.DataFrame:
    """Per pipeline: rows with both a verdict and a token F1, their means, the share where the
    two agree (F1 >= `f1_at` counted as correct) and their correlation (NULL when either is
    constant). Empty without judge scores."""
    return con.execute(
        """
        WITH pair AS (
            SELECT j.run_id, j.pipeline, j.params_hash, j.value AS judge, f.value AS f1
            FROM scores j JOIN scores f USING (run_id, example_id, pipeline, params_hash)
            WHERE j.metric = $judge AND f.metric = 'token_f1' AND list_contains($runs, j.run_id)
                AND j.value IS NOT NULL AND f.value IS NOT NULL
        )
        SELECT run_id, pipeline, params_hash, count(*) AS n, avg(judge) AS judge_mean,
            avg(f1) AS token_f1_mean, avg(((f1 >= $at) = (judge >= 0.5))::INTEGER) AS agreement,
            corr(judge, f1) AS correlation
        FROM pair GROUP BY ALL ORDER BY ALL
        """,
        {"judge": JUDGE_METRIC, "runs": list(run_ids), "at": f1_at},
    ).df()


def judges(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[tuple[str, str, int]]:
    """(judge model, prompt hash, verdicts) stored for these runs; [] for a store without the table."""
    has = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'judgements'").fetchone()
    if not has or not has[0]:
        return []
    rows = con.execute(
        "SELECT judge_model, prompt_hash, count(*) FROM judgements WHERE list_contains(?, run_id) "
        "GROUP BY ALL ORDER BY ALL", [list(run_ids)]
    ).fetchall()
    return [(str(m), str(h), int(n)) for m, h, n in rows]
