"""A workload: what a deployment will face, stated so `recommend` can match it to evidence.

Validated strictly (a misspelt key is an error, as in run specs and price sheets) because a
silently ignored `quality_flor` would produce a confident recommendation for the wrong question.

Two optional knobs say how the deployment uses a hosted provider's cache (both default to "not
stated", which changes nothing): `queries_per_doc_per_hour`, the rate questions about one
document arrive at, taken as Poisson arrivals, so that with the sheet's chosen cache TTL a later
question finds the cache expired with probability exp(-rate x TTL) and re-pays the cold prefill
and the write; and `cache_hold_hours`, the hours each document is kept in a cache that bills
storage (else the sheet's `cache_hold_hours`). See compare/analysis/cache_terms.py.

Three more say what the deployment's own KV cache holds (issue 28 item 4): `kv_cache_tokens`
(vLLM's KV pool, in tokens; blocks of `kv_block_size`), how many documents share it
(`documents.count`, else requests_per_s x 3600 / queries_per_doc_per_hour) and how their
questions are spread (`popularity_zipf`, else uniform). With them the self-hosted view prices
long context's evictions from the cache model (compare/analysis/traffic_cache.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from compare.analysis.cache_terms import CacheUse
from compare.core.config import read_toml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DocumentSizes(_Strict):
    """Either the list of document lengths (tokens) or their range."""

    tokens: list[PositiveInt] | None = None
    min_tokens: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    count: PositiveInt | None = None  # documents in play (the cache model's); None: from the rates

    @model_validator(mode="after")
    def _one_form(self) -> DocumentSizes:
        lo, hi = self.min_tokens, self.max_tokens
        listed = bool(self.tokens) and lo is None and hi is None
        ranged = self.tokens is None and lo is not None and hi is not None
        if not (listed or ranged):
            raise ValueError("give either a non-empty `tokens = [...]` or both `min_tokens` and `max_tokens`")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_tokens ({lo}) > max_tokens ({hi})")
        return self


class LatencyTarget(_Strict):
    metric: Literal["ttft", "e2e"] = "e2e"
    p95_ms: PositiveFloat


class Workload(_Strict):
    name: str = "workload"
    model: str | None = None  # None: the database's only model
    corpus: str | None = None  # corpus family prefix, e.g. "needle" or "leval"
    documents: DocumentSizes
    questions_per_doc: PositiveInt
    requests_per_s: PositiveFloat
    latency: LatencyTarget
    quality_metric: str = "headline"  # each question's own metric (compare/core/metrics.py)
    quality_floor: Annotated[float, Field(ge=0.0, le=1.0)]
    price_sheet: Path | None = None
    length_tolerance: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25
    queries_per_doc_per_hour: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    cache_hold_hours: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None  # None: the sheet's
    kv_cache_tokens: PositiveInt | None = None  # the deployment's KV cache (self-hosted); None: not stated
    kv_block_size: PositiveInt = 128  # vLLM's CPU default
    popularity_zipf: Annotated[float, Field(ge=0.0, le=10.0)] | None = None  # None: uniform
    # The workload's kinds of question (issue 30): stratum -> share (normalised), e.g.
    # {local = 0.7, aggregation = 0.3}; recommend then also answers at this mix. None: not stated.
    strata_mix: dict[Literal["local", "multi_hop", "aggregation", "whole"],
                     Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] | None = None

    @model_validator(mode="after")
    def _a_mix_weighs_something(self) -> Workload:
        if self.strata_mix is not None and not sum(self.strata_mix.values()) > 0:
            raise ValueError("strata_mix needs at least one positive share")
        return self

    @model_validator(mode="after")
    def _documents_for_the_cache(self) -> Workload:
        if self.kv_cache_tokens is not None and self.document_count is None:
            raise ValueError("kv_cache_tokens needs the number of documents sharing the cache: give "
                             "`documents.count` or `queries_per_doc_per_hour`")
        return self

    @property
    def document_count(self) -> int | None:
        """Documents in play: stated, else the request rate over one document's rate (rounded, >= 1)."""
        if self.documents.count is not None:
            return self.documents.count
        if self.queries_per_doc_per_hour is None:
            return None
        return max(1, round(self.requests_per_s * 3600 / self.queries_per_doc_per_hour))

    @property
    def cache_use(self) -> CacheUse:
        return CacheUse(self.queries_per_doc_per_hour, self.cache_hold_hours)


class WorkloadError(ValueError):
    """A workload file that cannot be used; the message names the file and the fields."""


def load_workload(path: Path | str) -> Workload:
    """Parse and validate; a relative price sheet path is relative to the workload file."""
    path = Path(path)
    wl = validate(Workload, read_toml(path, WorkloadError, "workload"), WorkloadError, str(path), "workload")
    if wl.price_sheet is not None and not wl.price_sheet.is_absolute():
        wl = wl.model_copy(update={"price_sheet": path.parent / wl.price_sheet})
    return wl


