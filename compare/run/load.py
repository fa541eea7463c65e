"""A load run (issue 28): each pipeline under open-loop traffic, step by step, every request a row.

Idle runs ask one question after another; a deployment is not idle. Here each pipeline in turn
gets the spec's `[load]` traffic (compare/run/arrivals.py): requests go out when they are due,
whether or not the server has answered the ones before (open loop, as `vllm bench serve`
sends them), or at a fixed concurrency (closed loop). Each request is asked through the runner's
own per-row function (compare/run/runner.py `_RunContext.ask`: the same pipeline call, scores,
replica and row as an idle run), then stamped with when it was due, when it went out and the
wait between (compare/store/rows.py `load_timing`).

A step is one pipeline at one rate (or concurrency). It is recorded in `load_steps` as it starts
("running") and as it ends: "done"; "saturated" when the requests due but unanswered reach
`max_backlog` (the queue grows without bound: sending stops, what is in flight is cut, and
higher rates of that pipeline are "skipped", never averaged in as if steady); "incomplete"
(Ctrl-C) or "stopped" (on_error, a dead server). Done, saturated and skipped steps are final;
the same command again redoes only the missing requests of the others. Each step's cache
starts cold: its requests carry their own vLLM cache salt per (step, pipeline, document), so a
step's hit rate is its own traffic's, not the step before it's. Retries are off under load: a
request that fails is a finding (it misses every SLO), and a retry would hide it.

Besides given rates: a trace replayed as its own step ("trace", compare/run/trace.py), and an
automatic sweep (`rates = "auto"`): per pipeline, a saturation probe (step "probe", a closed
loop at `probe_concurrency`), then rates spread up to what it measured (compare/run/sweep.py),
each rate step recording the probe's throughput and the list derived from it. One step's
sending and record: compare/run/load_step.py.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compare.core import metrics as metric_registry
from compare.core.protocols import Pipeline
from compare.core.secrets import REVEAL
from compare.run.arrivals import Arrival, Point, points, requests
from compare.run.execute import (
    _access,
    _content_sha,
    _same_questions,
    build_corpus,
    build_pipeline,
    serving,
)
from compare.run.load_spec import LoadSpec
from compare.run.load_step import FINAL, UNBOUNDED, Step, StepResult, step_records
from compare.run.runner import (
    FailurePolicy,
    Progress,
    RunResult,
    _doc_tokens,
    _prepare,
    _RunContext,
    ending,
    params_hash,
)
from compare.run.spec import RunSpec, SpecError, validate_spec
from compare.run.survey import survey
from compare.run.sweep import auto_rates, probe_throughput
from compare.run.trace import TraceError, read_trace
from compare.serving.pool import Pool, split_urls
from compare.serving.router import router_workers
from compare.store.db import Store
from compare.store.views import LOAD_RUN_PREFIX

__all__ = ["FINAL", "LoadResult", "StepResult", "load", "load_run_id", "run_load", "with_traffic"]


@dataclass
class LoadResult:
    run_id: str
    idle_run_id: str
    resumed: bool
    steps: list[StepResult] = field(default_factory=list)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # pipeline -> probe_rps, rates


def load_run_id(spec: RunSpec, corpus_sha256: str | None = None) -> str:
    """A load run's id: the idle run's (what is asked, of which model) and the traffic it is
    asked under (LoadSpec.identity: not the step list, so a new rate extends the sweep)."""
    load = spec.load or LoadSpec()
    blob = json.dumps({"run": spec.run_id(corpus_sha256), "load": load.identity()}, sort_keys=True)
    return LOAD_RUN_PREFIX + hashlib.sha256(blob.encode()).hexdigest()[:12]


def with_traffic(spec: RunSpec, source: str = "options", **overrides: Any) -> RunSpec:
    """The spec with `[load]` fields given on the command line (None: keep the spec's), checked
    as a spec file is; a load run needs at least one step. The spec's own trace and workload
    paths are relative to the spec file (`source`, when it is one); a workload's
    questions_per_doc becomes the traffic's (a different one given too is an error)."""
    data = spec.model_dump(mode="json", context=REVEAL)  # header values kept: re-validated below
    own = dict(data.get("load") or {})
    here = Path(source).parent if Path(source).is_file() else None
    for key in ("trace", "workload"):
        if here is not None and own.get(key) and not Path(own[key]).is_absolute():
            own[key] = str(here / own[key])
    data["load"] = {**own, **{k: v for k, v in overrides.items() if v is not None}}
    out = validate_spec(data, source=source)
    if out.load is None or not out.load.has_steps():
        raise SpecError(f"{source}: no load steps: give --rates (requests/s or auto), --trace, "
                        "or [load] rates / concurrency / trace")
    if out.load.workload:
        out = _questions_from_workload(out, data, source)
    if out.load is not None and out.load.trace:  # a malformed line: refused before a server starts
        try:
            read_trace(out.load.trace)
        except TraceError as exc:
            raise SpecError(str(exc)) from exc
    return out


def _questions_from_workload(spec: RunSpec, data: dict[str, Any], source: str) -> RunSpec:
    from compare.analysis.workload import WorkloadError, load_workload

    assert spec.load is not None and spec.load.workload is not None
    try:
        wl = load_workload(spec.load.workload)
    except (WorkloadError, ValueError) as exc:
        raise SpecError(f"{source}: [load] workload: {exc}") from exc
    given = spec.load.questions_per_doc
    if given is not None and given != wl.questions_per_doc:
        raise SpecError(f"{source}: [load] questions_per_doc = {given} but the workload {spec.load.workload} "
                        f"says {wl.questions_per_doc}: give one")
    data["load"]["questions_per_doc"] = wl.questions_per_doc
    return validate_spec(data, source=source)


def load(
    spec: RunSpec, db: Path, *, say: Callable[[str], None], base_url: str | Sequence[str] | None = None,
    data_dir: Path | None = None, progress: Progress | None = None,
) -> LoadResult:
    """Run a spec's load steps end to end: server up (or the given URLs), every request stored."""
    with Store(db) as store, serving(spec, say, base_url) as srv:
        return asyncio.run(run_load(spec, store, srv.url, srv.info, data_dir=data_dir, say=say,
                                    progress=progress))


async def run_load(
    spec: RunSpec, store: Store, base_url: str | Sequence[str], server_info: Mapping[str, Any], *,
    data_dir: Path | None = None, say: Callable[[str], None] | None = None, progress: Progress | None = None,
) -> LoadResult:
    """Every step of every pipeline that is not final yet, lowest load first."""
    traffic = spec.load or LoadSpec()
    urls = split_urls(base_url)
    async with Pool.connect(urls, spec.server.model, concurrency=UNBOUNDED, timeout_s=spec.timeout_s,
                            access=_access(spec), stats_urls=router_workers(dict(server_info))) as pool:
        surveyed = await survey(pool, model=spec.server.model, probe_chat=spec.server.probe_chat, say=say,
                                prefill=False)
        info = {**server_info, **surveyed.info}
        corpus = await build_corpus(spec, pool.primary, data_dir)
        pool.plan(corpus.examples, corpus.documents)
        pipelines = [build_pipeline(p) for p in spec.pipelines]
        sha = _content_sha(spec, corpus)
        run_id, idle_run_id = load_run_id(spec, sha), spec.run_id(sha)
        content = corpus.content_sha256()
        _same_questions(store, run_id, content)
        plan = {pt: requests(corpus.examples, pt, traffic) for pt in points(traffic)}  # TraceError: exit 2
        resumed = store.start_run(
            run_id, corpus=corpus.name, model=spec.server.model, base_url=",".join(urls),
            concurrency=spec.concurrency, spec=spec.model_dump(mode="json"),
            corpus_params={**corpus.params, "content_sha256": content}, server=info | pool.describe())
        add = functools.partial(store.add_examples, run_id, doc_tokens=_doc_tokens(corpus))
        add([a.example for todo in plan.values() for a in todo])
        params = {id(p): p.params() for p in pipelines}
        hashes = [params_hash(params[id(p)]) for p in pipelines]
        sweep = _Sweep(store, run_id, idle_run_id, traffic, LoadResult(run_id, idle_run_id, resumed), say)
        # Only pipelines with a step left build their index (as a rerun of an idle run).
        pending = [(corpus.examples[0], p, h) for p, h in zip(pipelines, hashes, strict=True)
                   if not sweep.all_final(p, h, plan)]
        await _prepare(pending, pipelines, hashes, corpus, pool.primary, store, run_id)
        context = functools.partial(
            _RunContext, run_id=run_id, store=store, resumed=resumed, params=params,
            metrics=metric_registry.resolve(spec.metrics), health=pool.health, progress=progress,
            policy=FailurePolicy(retries=0, on_error=spec.on_error), result=RunResult(run_id, resumed),
            isolate_cache=spec.cache_isolation == "document")
        status = "failed"
        try:
            for pipe, h in zip(pipelines, hashes, strict=True):
                steps: dict[Point, list[Arrival]] = plan
                extra: dict[str, Any] = {}
                if traffic.auto:
                    probe = Point(concurrency=traffic.probe_concurrency, probe=True)
                    await sweep.step(context, pool, pipe, h, probe, requests(corpus.examples, probe, traffic))
                    found = sweep.rates(pipe, h)
                    extra = {"auto": found}
                    sweep.result.probes[pipe.name] = found
                    if say:
                        rates = ", ".join(f"{r:g}" for r in found["rates"])
                        say(f"{pipe.name} probe: {found['probe_rps']:.3g} requests/s answered at concurrency "
                            f"{traffic.probe_concurrency}; rates {rates}")
                    auto = {Point(rate=r): requests(corpus.examples, Point(rate=r), traffic)
                            for r in found["rates"]}
                    add([a.example for todo in auto.values() for a in todo])
                    steps = {**auto, **plan}
                saturated_at: str | None = None
                for pt, arrivals in steps.items():
                    got = await sweep.step(context, pool, pipe, h, pt, arrivals,
                                           extra if traffic.auto and pt.rate is not None else {},
                                           skip_because=saturated_at if pt.rate is not None else None)
                    saturated_at = saturated_at or (pt.label if got == "saturated" else None)
            status = "done"
        except BaseException as exc:
            status = ending(exc)
            raise
        finally:
            store.finish_run(run_id, status)
        return sweep.result


@dataclass
class _Sweep:
    """A load run's steps as they are run or found final, and an automatic sweep's rates."""

    store: Store
    run_id: str
    idle_run_id: str
    traffic: LoadSpec
    result: LoadResult
    say: Callable[[str], None] | None

    def rates(self, pipe: Pipeline, h: str) -> dict[str, Any]:
        """What the pipeline's probe measured and the rates derived from it (recorded per step)."""
        probe = Point(concurrency=self.traffic.probe_concurrency, probe=True)
        rps = probe_throughput(self.store, self.run_id, pipe.name, h, probe.label)
        return {"probe_rps": round(rps, 6), "probe_concurrency": self.traffic.probe_concurrency,
                "rates": auto_rates(rps, self.traffic.auto_rates)}

    def all_final(self, pipe: Pipeline, h: str, plan: Mapping[Point, object]) -> bool:
        records = step_records(self.store, self.run_id)
        labels = [pt.label for pt in plan]
        if self.traffic.auto:
            labels.append(Point(concurrency=self.traffic.probe_concurrency, probe=True).label)
            if records.get((pipe.name, h, labels[-1]), {}).get("status") in FINAL:
                labels += [Point(rate=r).label for r in self.rates(pipe, h)["rates"]]
        return all(records.get((pipe.name, h, lb), {}).get("status") in FINAL for lb in labels)

    async def step(
        self, context: Callable[..., _RunContext], pool: Pool, pipe: Pipeline, h: str, pt: Point,
        arrivals: Sequence[Arrival], extra: Mapping[str, Any] | None = None, skip_because: str | None = None,
    ) -> str | None:
        """Run one step unless it is final (or skipped: a lower rate saturated); its status."""
        before = step_records(self.store, self.run_id).get((pipe.name, h, pt.label))
        step = Step(self.store, self.run_id, self.idle_run_id, pipe, h, pt, self.traffic, before,
                    {**(extra or {}), **_trace_extra(pt, arrivals)}, len(arrivals))
        if not step.final:
            if skip_because is not None:
                step.finish("skipped", f"{pipe.name} saturated at {skip_because}", 0, 0.0, {})
            else:
                await step.run(context, pool, arrivals, self.say)
        self.result.steps.append(step.result(self.store))
        return step.status


def _trace_extra(pt: Point, arrivals: Sequence[Arrival]) -> dict[str, Any]:
    """A trace step's offered load, for reading it beside the rate steps (it has no `rate`)."""
    if pt.trace_scale is None or not arrivals:
        return {}
    span = arrivals[-1].offset_s
    return {"trace_requests": len(arrivals), "trace_span_s": round(span, 6),
            "offered_rps": round(len(arrivals) / span, 6) if span > 0 else None}
