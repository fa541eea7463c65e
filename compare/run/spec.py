"""RunSpec: everything that defines a run, validated strictly (unknown keys are errors).

The run id is a hash of the spec, so running the same spec again resumes the same run instead
of starting a second one; where the server lives (base_url) does not change a result and is
left out of the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, PositiveInt, model_validator

from compare.core import metrics as _metrics  # noqa: F401  (registers the built-in metrics)
from compare.core.config import Strict, read_toml, validate
from compare.core.registry import CORPORA, METRICS, PIPELINES, Registry
from compare.core.secrets import HeaderValue, literal_secrets, warning_line
from compare.run import components  # noqa: F401  (importing it registers every built-in kind)
from compare.run.load_spec import LoadSpec
from compare.serving.weights import DEFAULT_MODEL
from corpora.babi import BabiCorpusSpec
from corpora.jsonl import JsonlCorpusSpec
from corpora.leval import LevalCorpusSpec
from corpora.needle import NeedleCorpusSpec
from corpora.video_spec import ActivityNetCorpusSpec, VideoNeedleCorpusSpec, VideoQaCorpusSpec
from pipelines.long_context import LongContextSpec
from pipelines.rag_spec import RagSpec
from pipelines.routers import LengthRuleSpec, SelfRouteSpec

__all__ = [  # the built-in specs, re-exported so a spec is built from one module
    "ActivityNetCorpusSpec", "BabiCorpusSpec", "CorpusSpec", "JsonlCorpusSpec", "LengthRuleSpec",
    "LevalCorpusSpec", "LongContextSpec", "NeedleCorpusSpec", "PipelineSpec", "RagSpec", "RunSpec",
    "SelfRouteSpec", "ServerSpec", "SpecError", "VideoNeedleCorpusSpec", "VideoQaCorpusSpec",
    "load_spec", "validate_spec",
]


def _union(registry: Registry[Any]) -> Any:
    """Every registered spec of a component kind, told apart by its `kind` field."""
    specs = tuple(entry.spec for entry in registry.values())
    return Annotated[Union[specs], Field(discriminator="kind")]  # noqa: UP007  (built at run time)


if TYPE_CHECKING:
    CorpusSpec = BaseModel
    PipelineSpec = BaseModel
else:
    CorpusSpec = _union(CORPORA)
    PipelineSpec = _union(PIPELINES)


class ServerSpec(Strict):
    model: str = DEFAULT_MODEL
    # One endpoint, or several replicas of the same model (requests spread by document).
    base_url: str | list[str] | None = None
    max_model_len: Annotated[int, Field(ge=256)] = 32768
    kv_cache_gib: PositiveInt = 2
    # "auto": bf16 where the CPU has native bf16, else float32 (GPU: vLLM's choice); the
    # resolved dtype and why are recorded in runs.server. An explicit dtype joins the run id.
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    extra_args: list[str] = Field(default_factory=list)
    # Managed servers of the model, each on its own cores/GPUs (no base_url): like base_url,
    # where the servers live is recorded with the run but is not part of its id.
    replicas: Annotated[int, Field(ge=1, le=64)] = 1
    # How requests reach several replicas: a vllm-router in front of them with this policy
    # (compare/serving/router.py), or "client": ragvslc's own document affinity
    # (compare/serving/pool.py). None: "cache_aware" for managed replicas, "client" for a list
    # of base URLs (as before the field). router_args: more vllm-router flags. Like replicas,
    # how requests are spread is recorded with the run (runs.server), not part of its id.
    router: Literal["cache_aware", "consistent_hash", "round_robin", "power_of_two", "client"] | None = None
    router_args: list[str] = Field(default_factory=list)
    # Any OpenAI-compatible endpoint (a hosted API): the NAME of the variable that holds its key
    # (never the key), extra headers (a value from the environment, `{ env = "VAR" }` or "${VAR}",
    # or a literal; a dump of the spec, hence the store and the report, holds only each header's
    # name and where its value comes from: compare/core/secrets.py), which generation-cap
    # parameter it takes, and the local tokenizer that counts tokens where the endpoint has no
    # /tokenize ("hf:FOLDER", a model name, or "tiktoken:ENCODING"). Only the tokenizer can
    # change a result (budgets, needle lengths), so only it joins the run id.
    api_key_env: str = "OPENAI_API_KEY"
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    token_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    tokenizer: str | None = None
    probe_chat: bool = True  # the 2-token start-up chat (capabilities.py); off: those are unknown

    @model_validator(mode="after")
    def _replicas_are_managed(self) -> ServerSpec:
        if self.replicas > 1 and self.base_url:
            raise ValueError("replicas starts managed servers; with base_url, list every replica's URL")
        return self

    def secret_warning(self) -> str | None:
        """One line at start when the spec itself holds a secret (a literal header value or a
        secret flag's value): it is sent, but the spec file is where it should not be."""
        return warning_line(self.secret_names())

    def secret_names(self) -> list[str]:
        return literal_secrets(self.headers, self.extra_args, self.router_args)

    @model_validator(mode="after")
    def _router_args_need_a_router(self) -> ServerSpec:
        # Whether there are several replicas is known only at run time (--base-url may list them).
        if self.router_args and self.router == "client":
            raise ValueError("router_args are vllm-router flags; router = \"client\" starts no router")
        return self


# Long context and the default RAG. Built once: pydantic deep-copies a list default for each spec.
DEFAULT_PIPELINES: list[BaseModel] = [LongContextSpec(), RagSpec()]


# Knobs that do not change what the model is asked: left out of the run id, so a run can be
# resumed with another failure policy, or rescored with more metrics, without starting over.
NOT_IN_RUN_ID = ("timeout_s", "retries", "retry_backoff_s", "on_error", "metrics")


class RunSpec(Strict):
    corpus: CorpusSpec = NeedleCorpusSpec()
    pipelines: list[PipelineSpec] = Field(default=DEFAULT_PIPELINES, min_length=1)
    server: ServerSpec = ServerSpec()
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    # Metrics stored per row; default: every metric registered when the spec is made, as `score`
    # computes them, so a newly registered metric is not skipped (the list is stored with the
    # run's spec). headline is each question's own metric (compare/core/metrics.py).
    metrics: list[str] = Field(default_factory=METRICS.names)
    timeout_s: Annotated[float, Field(gt=0)] = 900.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    retry_backoff_s: Annotated[float, Field(ge=0, le=600)] = 2.0
    on_error: Literal["continue", "stop"] = "continue"
    # Request order: "prefix" groups prompts sharing a prefix (compare/serving/schedule.py), "given" is
    # corpus order. It changes latency and cache hits, so it is part of the run id.
    schedule: Literal["prefix", "given"] = "prefix"
    # "document": every (pipeline, document) gets its own vLLM cache salt, so a cold request is
    # cold by construction (no sibling document or other pipeline warms it); "shared": requests
    # share the prefix cache freely, as runs did before the field (their run ids are kept).
    cache_isolation: Literal["document", "shared"] = "document"
    # `ragvslc load`'s traffic (compare/run/load_spec.py). A load run has its own id, covering
    # this section (compare/run/load.py load_run_id); the idle run of the spec keeps its id.
    load: LoadSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_corpus_kind(cls, data: Any) -> Any:
        """`[corpus]` without `kind` means the needle corpus, the only default-able one."""
        if isinstance(data, dict) and isinstance(data.get("corpus"), dict):
            data = {**data, "corpus": {"kind": "needle", **data["corpus"]}}
        return data

    def secret_warning(self) -> str | None:
        """The one warning line at start: literal secrets in [server] and in any pipeline's
        embed_headers (a router's rag table included)."""
        names = self.server.secret_names()
        for p in self.pipelines:
            routed = getattr(p, "rag", None)  # a router's RAG table, kept as a dump with its values
            for table in (getattr(p, "embed_headers", None),
                          routed.get("embed_headers") if isinstance(routed, dict) else None):
                for name in literal_secrets(table or {}):
                    names.append(f"embed_headers.{name}")
        return warning_line(names)

    def run_id(self, corpus_sha256: str | None = None) -> str:
        """Stable id of what the run measures (not where the server happens to be).

        A corpus read from files (jsonl) is named by its path in the spec; its content hash,
        when given, joins the id, so editing the files starts a new run instead of resuming
        the old one with answers to other questions."""
        data = self.model_dump(mode="json", exclude=set(NOT_IN_RUN_ID))
        data.pop("load", None)  # a load run's id covers it (compare/run/load.py); an idle run's not
        data["server"].pop("base_url", None)
        data["server"].pop("replicas", None)
        data["server"].pop("router", None)  # how requests reach the replicas, like replicas
        data["server"].pop("router_args", None)
        for where_not_what in ("api_key_env", "headers", "token_param", "probe_chat"):
            data["server"].pop(where_not_what, None)
        _drop_key(data["pipelines"], "embed_headers")  # like [server] headers (a router's rag too)
        if data["server"].get("tokenizer") is None:  # the server's own /tokenize, as before the field
            data["server"].pop("tokenizer", None)
        if data["server"].get("dtype") == "auto":  # runs from before the field keep their ids
            data["server"].pop("dtype")
        if corpus_sha256 is not None:
            data["corpus"]["sha256"] = corpus_sha256
        if data.get("cache_isolation") == "shared":  # runs from before the field shared the cache
            data.pop("cache_isolation")
        if data.get("schedule") == "given":  # runs from before the field existed ran in corpus order
            data.pop("schedule")
        blob = json.dumps(data, sort_keys=True)
        return "run-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _drop_key(obj: Any, key: str) -> None:
    """Remove `key` from every mapping nested in `obj` (a dump of pipeline specs)."""
    if isinstance(obj, dict):
        obj.pop(key, None)
        obj = list(obj.values())
    if isinstance(obj, list):
        for item in obj:
            _drop_key(item, key)


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the fields."""


def load_spec(path: Path | None, overrides: Mapping[str, Any] | None = None) -> RunSpec:
    """A spec file (no file: the defaults) with `overrides` put in before it is validated, once.

    Overrides are what a command line or a caller sets on top of the file: keys are dotted paths
    ("corpus.lengths", "server.model", "concurrency"); a None value is an option not given and is
    left out. Errors name the file, and "options" when an override took part."""
    data = read_toml(path, SpecError, "run spec") if path is not None else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for dotted, value in given.items():
        *parents, key = dotted.split(".")
        node = data
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"{path}: {part} must be a table to set {dotted}")
            node = child
        node[key] = value
    source = " + ".join([*([str(path)] if path is not None else []), *(["options"] if given else [])])
    return validate_spec(data, source=source or "defaults")


def validate_spec(data: dict[str, Any], source: str = "spec") -> RunSpec:
    return validate(RunSpec, data, SpecError, source, "run spec")
