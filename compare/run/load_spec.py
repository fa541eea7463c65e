"""The run spec's `[load]` section: the traffic a load run offers each pipeline (issue 28).

Apart from compare/run/load.py so that compare/run/spec.py can name it without importing the
load driver (which imports the spec). Which knobs name the load run (its id) and which only
name a step or a reading of the rows is decided here, next to the fields, in `identity`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from compare.core.config import Grown

Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Slo = Annotated[float, Field(gt=0, allow_inf_nan=False)] | None
# A list of rates, or "auto"; told apart by type so a bad rate is one error, not one per branch.
Rates = Annotated[
    Annotated[list[Rate], Tag("rates")] | Annotated[Literal["auto"], Tag("auto")],
    Discriminator(lambda v: "auto" if isinstance(v, str) else "rates"),
]

# Knobs that do not change what one step sends: the step list (each step is named by its
# rate or concurrency, so adding a rate extends the same sweep instead of redoing it) and the
# SLOs (a reading of the stored rows: changing one re-reads, never re-sends).
# The trace and the workload are named by what they say, not where they lie: the trace by its
# bytes' sha256 (identity), the workload by the questions_per_doc it gave (resolved into the
# field by compare/run/load.py with_traffic). The automatic sweep's knobs shape the step list,
# and the trace's time scale names its step ("trace*0.5"), so a faster replay extends the sweep.
NOT_IN_LOAD_ID = ("rates", "concurrency", "slo_ttft_ms", "slo_e2e_ms", "slo_tpot_ms", "trace", "workload",
                  "auto_rates", "probe_concurrency", "trace_time_scale")
AUTO = "auto"


class LoadSpec(Grown):
    """Open-loop traffic over the corpus's questions, one pipeline at a time.

    Arrivals follow `vllm bench serve`: inter-arrival gaps are Gamma(shape=burstiness,
    scale=1/(rate x burstiness)), so burstiness 1 is Poisson, below 1 burstier, and
    "constant" is the infinite-burstiness limit (every gap 1/rate); the gaps are then scaled so
    the last request is due at requests/rate (vLLM's normalisation, stable throughput across
    seeds). A concurrency step is the closed loop `--request-rate inf --max-concurrency c`.
    """

    # Knobs added after the first load runs were stored: their defaults keep those runs' ids.
    NEW_DEFAULTS: ClassVar[dict[str, object]] = {
        "trace": None, "trace_time_scale": 1.0, "workload": None, "auto_rates": 3, "probe_concurrency": 8}

    # requests/s, one step each; "auto": a saturation probe first, then `auto_rates` rates up to
    # the throughput it measured (compare/run/sweep.py), per pipeline.
    rates: Rates = Field(default_factory=list)
    auto_rates: Annotated[int, Field(ge=1, le=20)] = 3
    # The probe is a closed loop at this concurrency (GuideLLM's "throughput" step): high enough
    # to keep the engine's batch full, so what it answers per second is its saturation rate.
    probe_concurrency: Annotated[int, Field(ge=1, le=4096)] = 8
    # A timestamped JSONL trace (compare/run/trace.py) replayed as one more step, "trace": every
    # line one request at its own offset x trace_time_scale (0.5: twice as fast).
    trace: str | None = None
    trace_time_scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    # A workload file (compare/analysis/workload.py): its questions_per_doc sets the one below.
    workload: str | None = None
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

    @property
    def auto(self) -> bool:
        return self.rates == AUTO

    @property
    def rate_list(self) -> list[float]:
        """The rates given as numbers (none for an automatic sweep: they are measured)."""
        return [] if isinstance(self.rates, str) else list(self.rates)

    def has_steps(self) -> bool:
        return bool(self.rates or self.concurrency or self.trace)

    def trace_sha256(self) -> str | None:
        """The trace file's content hash (what the run id and each step's record name)."""
        if self.trace is None:
            return None
        try:
            return hashlib.sha256(Path(self.trace).read_bytes()).hexdigest()
        except OSError as exc:
            raise ValueError(f"{self.trace}: cannot read the trace: {exc.strerror}") from exc

    def identity(self) -> dict[str, Any]:
        """What a load run's id covers (see NOT_IN_LOAD_ID): a trace by its content."""
        out = self.model_dump(mode="json", exclude=set(NOT_IN_LOAD_ID))
        if self.trace is not None:
            out["trace_sha256"] = self.trace_sha256()
        return out

    def recorded(self) -> dict[str, Any]:
        """What each step's record keeps: every knob, the trace's path and its sha256."""
        out = self.model_dump(mode="json")
        if self.trace is not None:
            out["trace_sha256"] = self.trace_sha256()
        return out

    def slos(self) -> dict[str, float]:
        """The SLOs given, by metric (ttft, e2e, tpot), in ms."""
        given = {"ttft": self.slo_ttft_ms, "e2e": self.slo_e2e_ms, "tpot": self.slo_tpot_ms}
        return {k: v for k, v in given.items() if v is not None}
