"""The run spec's `[load]` section: the traffic a load run offers each pipeline (issue 28).

Apart from compare/run/load.py so that compare/run/spec.py can name it without importing the
load driver (which imports the spec). Which knobs name the load run (its id) and which only
name a step or a reading of the rows is decided here, next to the fields, in `identity`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from compare.core.config import Strict

Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Slo = Annotated[float, Field(gt=0, allow_inf_nan=False)] | None

# Knobs that do not change what one step sends: the step list (each step is named by its
# rate or concurrency, so adding a rate extends the same sweep instead of redoing it) and the
# SLOs (a reading of the stored rows: changing one re-reads, never re-sends).
NOT_IN_LOAD_ID = ("rates", "concurrency", "slo_ttft_ms", "slo_e2e_ms", "slo_tpot_ms")


class LoadSpec(Strict):
    """Open-loop traffic over the corpus's questions, one pipeline at a time.

    Arrivals follow `vllm bench serve`: inter-arrival gaps are Gamma(shape=burstiness,
    scale=1/(rate x burstiness)), so burstiness 1 is Poisson, below 1 burstier, and
    "constant" is the infinite-burstiness limit (every gap 1/rate); the gaps are then scaled so
    the last request is due at requests/rate (vLLM's normalisation, stable throughput across
    seeds). A concurrency step is the closed loop `--request-rate inf --max-concurrency c`.
    """

    rates: list[Rate] = Field(default_factory=list)  # requests/s, one step each
    concurrency: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=list)
    arrival: Literal["poisson", "gamma", "constant"] = "poisson"
    burstiness: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    # Requests in flight at most during a rate step (vllm bench serve --max-concurrency);
    # None: unbounded, a true open loop. Waiting for a slot is the row's queue_ms.
    max_concurrency: Annotated[int, Field(ge=1, le=4096)] | None = None
    requests: Annotated[int, Field(ge=1, le=100_000)] = 16  # per step and pipeline
    # Document popularity: the r-th document of the corpus (corpus order) is asked with
    # probability proportional to r^-zipf (0: every document alike).
    zipf: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    # Each document's questions are asked in turn; this caps them at the first k (the
    # workload's questions per document; None: all the corpus has).
    questions_per_doc: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0
    # A rate step whose requests due but unanswered reach this many is over-saturated (its
    # queue grows without bound): it is stopped, marked, and higher rates are not sent.
    max_backlog: Annotated[int, Field(ge=2, le=100_000)] = 32
    # Service-level objectives, in ms: a request is good when it meets every one given.
    slo_ttft_ms: Slo = None
    slo_e2e_ms: Slo = None
    slo_tpot_ms: Slo = None

    @model_validator(mode="after")
    def _burstiness_fits_arrival(self) -> LoadSpec:
        if self.arrival != "gamma" and self.burstiness != 1.0:
            raise ValueError(f"burstiness applies to arrival = \"gamma\" (\"{self.arrival}\" has none)")
        return self

    def identity(self) -> dict[str, Any]:
        """What a load run's id covers (see NOT_IN_LOAD_ID)."""
        return self.model_dump(mode="json", exclude=set(NOT_IN_LOAD_ID))

    def slos(self) -> dict[str, float]:
        """The SLOs given, by metric (ttft, e2e, tpot), in ms."""
        given = {"ttft": self.slo_ttft_ms, "e2e": self.slo_e2e_ms, "tpot": self.slo_tpot_ms}
        return {k: v for k, v in given.items() if v is not None}
