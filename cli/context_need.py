"""`ragvslc context-need`: how much of its document each question of a spec's corpus needs
(issue 30; the measurement is compare/run/context_need.py, the strata compare/analysis/strata.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import console
from cli.common import COUNTS, BaseUrlOpt, DataOpt, DbOpt, JsonOpt, fail, interruptible, list_option

COLUMNS = ("example_id", "source", "context_need", "stratum", "requests", "prompt_tokens", "e2e_ms")


def context_need_cmd(
    spec: Annotated[Path, typer.Option(help="Run spec (TOML): its corpus, server and first RAG pipeline.")],
    ks: Annotated[Any, list_option(COUNTS, "top_k values the probe tries, smallest first, e.g. 1,2,4,8.",
                                   "--ks")] = "1,2,4,8",
    db: DbOpt = Path("results.duckdb"),
    base_url: BaseUrlOpt = None,
    data_dir: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each question's context need, stored per corpus and reused by every run of it: from its
    evidence spans (chunks touched), else by a retrieval probe (the smallest top-k at which RAG's
    answer is correct, the model answering; correct at no k: needs the whole document). The
    probe's requests are stored apart (kind context_probe) with their cost, never compared."""
    import asyncio

    from compare.run.context_need import measure
    from compare.run.spec import SpecError, load_spec

    try:
        run_spec = load_spec(spec)
        values = COUNTS.convert(ks)
        with interruptible():
            res = asyncio.run(measure(run_spec, db, values, base_url=",".join(base_url) if base_url else None,
                                      data_dir=data_dir, say=console.say))
    except (SpecError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc))
    strata = Counter(str(r["stratum"]) for r in res.rows)
    if as_json:
        console.emit_json({"corpus_key": res.corpus_key, "db": str(db), "requests": res.requests,
                           "reused": res.reused, "prompt_tokens": res.prompt_tokens,
                           "output_tokens": res.output_tokens, "e2e_ms": res.e2e_ms, "strata": dict(strata),
                           "rows": [{c: r.get(c) for c in COLUMNS} for r in res.rows]})
        return
    console.table(res.rows, COLUMNS, title=f"context need, corpus {res.corpus_key[:12]}")
    console.out.print(f"strata: {', '.join(f'{s} {n}' for s, n in sorted(strata.items()))}; probe: "
                      f"{res.requests} request(s) now ({res.prompt_tokens:,} prompt + {res.output_tokens:,} "
                      f"output tokens, {res.e2e_ms / 1e3:.1f} s), {res.reused} question(s) reused; "
                      f"stored in {db}", highlight=False, markup=False)
