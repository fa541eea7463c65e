"""Retrieval-only evaluation: corpora and RAG configurations without a model server.

Token lengths still come from the served model's own tokenizer (loaded from the prepared model
folder), so a needle grid built here has the same documents as one built against the server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compare.run.retrieval_eval import Row, evaluate_retrieval_async
from compare.run.runner import params_hash
from compare.run.spec import RagSpec, RunSpec
from compare.serving.tokenizers import load_tokenizer
from compare.store.db import Store


@dataclass(frozen=True)
class Evaluation:
    """An evaluation's rows and what they were measured on: the corpus, and the id a `run` of
    the same spec gets (so a report of that run shows this evaluation, and no other)."""

    rows: list[Row]
    corpus: str
    corpus_params: dict[str, Any]
    run_id: str


async def evaluate(
    spec: RunSpec, ks: Sequence[int], budgets: Sequence[int], data_dir: Path | None
) -> Evaluation:
    """Rows of recall@k / MRR per RAG configuration of the spec (a plain RAG one if none)."""
    from compare.run.execute import _content_sha, build_corpus, build_pipeline
    from pipelines.rag import RagPipeline

    tok = load_tokenizer(spec.server.tokenizer or spec.server.model)  # the served model's own, in-process
    corpus = await build_corpus(spec, tok, data_dir)  # type: ignore[arg-type]
    rag_specs = [p for p in spec.pipelines if isinstance(p, RagSpec)] or [RagSpec()]
    if corpus.params.get("builder") == "beir":
        # A BEIR question names its relevant documents among many: the search must be over the
        # whole corpus (a per-document search looks only where the answer is: recall 1 for
        # free). The scope used is in every row's params, as always.
        rag_specs = [p.model_copy(update={"scope": "corpus"}) for p in rag_specs]
    configs = [build_pipeline(p) for p in rag_specs]
    rows = await evaluate_retrieval_async(
        corpus, [c for c in configs if isinstance(c, RagPipeline)], ks, budgets=budgets,
        count=tok.tokenize,
    )
    return Evaluation(rows, corpus.name, dict(corpus.params), spec.run_id(_content_sha(spec, corpus)))


def store_rows(db: Path, ev: Evaluation) -> str:
    """Keep an evaluation beside the runs, under the run id of its spec, so the report of that
    run can draw recall vs k from it."""
    rows, corpus, corpus_params = ev.rows, ev.corpus, ev.corpus_params
    blob = json.dumps([corpus, corpus_params, list(rows)], sort_keys=True, default=str)
    eval_id = "retr-" + hashlib.sha256(blob.encode()).hexdigest()[:12]
    now = datetime.now(UTC).replace(tzinfo=None)
    with Store(db) as store:
        store.con.execute("DELETE FROM retrieval_eval WHERE eval_id = ?", [eval_id])
        store.insert(
            "retrieval_eval",
            [
                {"eval_id": eval_id, "run_id": ev.run_id, "created_at": now, "corpus": corpus,
                 "corpus_params": json.dumps(corpus_params, default=str), "config": r["config"],
                 "params_hash": r.get("params_hash") or params_hash({"config": r["config"]}),
                 "params": json.dumps(r.get("index") or {}, default=str), "k": r.get("k"),
                 "budget_tokens": r.get("budget_tokens"), "recall": r.get("recall"), "mrr": r.get("mrr"),
                 "n_examples": int(r.get("n_examples") or 0),
                 "mean_context_tokens": r.get("mean_context_tokens"), "build_s": r.get("build_s")}
                for r in rows
            ],
        )
    return eval_id
