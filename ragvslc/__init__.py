"""ragvslc's public Python API: what the CLI does and prints, as Python values, for a notebook.

    import ragvslc
    runs = ragvslc.runs("results.duckdb")                    # one row per run, named and timed
    df = ragvslc.samples("results.duckdb", runs.run_id)      # one row per request: label, scores, $
    ragvslc.report("results.duckdb").write("report/")        # or display it in a notebook

The names here are the stable surface; the `compare`, `pipelines` and `corpora` packages behind
them are the implementation. Importing changes nothing (no environment variable, no model
loaded); `run` sets the offline defaults before it loads a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from compare.analysis.cache_terms import CacheUse
from compare.analysis.decision import Decision
from compare.analysis.recommend import Recommendation
from compare.analysis.verdict import Verdict
from compare.api import decision, export, report, run, run_async, spec
from compare.report.assemble import Report
from compare.run.runner import RunResult
from compare.run.spec import RunSpec

__all__ = ["Decision", "Recommendation", "Report", "RunResult", "RunSpec", "Verdict", "cost", "decision",
           "export", "recommend", "report", "run", "run_async", "runs", "samples", "spec", "verdict"]


def _connect(db: str | Path) -> duckdb.DuckDBPyConnection:
    if not Path(db).is_file():
        raise ValueError(f"no database at {db}")
    return duckdb.connect(str(db), read_only=True)


def runs(db: str | Path = "results.duckdb") -> pd.DataFrame:
    """One row per stored run, oldest first: `name` (its corpus and when it ran, as the report
    names it), `run_id`, corpus, model, status, concurrency, `created_at` (UTC)."""
    from compare.analysis.summary import run_names

    with _connect(db) as con:
        df = con.execute("SELECT run_id, corpus, model, status, concurrency, created_at FROM runs "
                         "ORDER BY created_at, run_id").df()
        names = run_names(con, list(df["run_id"])) if not df.empty else {}
    df.insert(0, "name", df["run_id"].map(names))
    df["created_at"] = pd.to_datetime(df["created_at"]).dt.tz_localize("UTC")
    return df


def samples(db: str | Path = "results.duckdb", runs: Iterable[str] | None = None,
            *, price_sheet: str | Path | None = None) -> pd.DataFrame:
    """One row per request (like inspect's `samples_df()`): its run, pipeline label, question,
    answer, every score (`score_<metric>`), tokens (cached apart), latency and $ in both price
    views (`usd_api`, `usd_self_hosted`). `runs` None: every run. `price_sheet` None: the sheet
    the report would choose. compare.analysis.samples.COLUMNS says what each column is."""
    from compare.analysis.prices import load_price_sheet
    from compare.analysis.samples import samples as frame

    sheet = load_price_sheet(Path(price_sheet)) if price_sheet is not None else None
    with _connect(db) as con:
        return frame(con, None if runs is None else [str(r) for r in runs], sheet)


def cost(db: str | Path = "results.duckdb", price_sheet: str | Path = "prices/example-api.toml",
         runs: Iterable[str] | None = None, queries_per_doc: Iterable[int] = (1, 10, 100),
         use: CacheUse | None = None) -> pd.DataFrame:
    """What `ragvslc cost` prints: $ per query at each q per pipeline and price view (columns
    `usd_per_query_q<q>`, one-time and marginal terms, caveats)."""
    from compare.analysis.cost import cost_report

    rows = cost_report(db, None if runs is None else list(runs), price_sheet, list(queries_per_doc),
                       use if use is not None else CacheUse())
    return pd.DataFrame(rows)


def recommend(db: str | Path, workload: str | Path, runs: Iterable[str] | None = None,
              **kwargs: Any) -> Recommendation:
    """What `ragvslc recommend` prints, as its structure: the ranked strategies for the workload,
    the winner and how well the runs cover it (`coverage`), with its notes."""
    from compare.analysis.recommend import recommend as rank
    from compare.analysis.workload import load_workload

    return rank(db, load_workload(Path(workload)), None if runs is None else list(runs), **kwargs)


def verdict(db: str | Path, run_id: str, q: int = 10) -> Verdict:
    """What `ragvslc run` prints after a run: the decision line (`.decision`), the per-axis lines
    and the caveats, at q questions per document."""
    from compare.analysis.verdict import verdict_for

    with _connect(db) as con:
        return verdict_for(con, run_id, q)
