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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import time
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
    _discover,
    _same_questions,
    build_corpus,
    build_pipeline,
    serving,
)
from compare.run.load_spec import LoadSpec
from compare.run.row_writer import RowWriter
from compare.run.runner import (
    FailurePolicy,
    Progress,
    RunResult,
    RunStopped,
    _doc_tokens,
    _prepare,
    _RunContext,
    ending,
    params_hash,
)
from compare.run.spec import RunSpec, SpecError, validate_spec
from compare.run.versions import package_versions
from compare.serving.pool import Pool, split_urls
from compare.serving.prometheus import metric_deltas
from compare.serving.router import router_workers
from compare.store.db import Store
from compare.store.rows import load_timing, now

FINAL = ("done", "saturated", "skipped")  # a rerun leaves these steps alone
UNBOUNDED = 1 << 20  # the replicas' own slots: a step's concurrency is bounded by its own gate


@dataclass
class StepResult:
    pipeline: str
    params_hash: str
    step: str
    status: str
    sent: int = 0
    answered: int = 0
    errors: int = 0
    note: str | None = None


@dataclass
class LoadResult:
    run_id: str
    idle_run_id: str
    resumed: bool
    steps: list[StepResult] = field(default_factory=list)


def load_run_id(spec: RunSpec, corpus_sha256: str | None = None) -> str:
    """A load run's id: the idle run's (what is asked, of which model) and the traffic it is
    asked under (LoadSpec.identity: not the step list, so a new rate extends the sweep)."""
    load = spec.load or LoadSpec()
    blob = json.dumps({"run": spec.run_id(corpus_sha256), "load": load.identity()}, sort_keys=True)
    return "load-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def with_traffic(spec: RunSpec, source: str = "options", **overrides: Any) -> RunSpec:
    """The spec with `[load]` fields given on the command line (None: keep the spec's), checked
    as a spec file is; a load run needs at least one step."""
    data = spec.model_dump(mode="json", context=REVEAL)  # header values kept: re-validated below
    data["load"] = {**(data.get("load") or {}), **{k: v for k, v in overrides.items() if v is not None}}
    out = validate_spec(data, source=source)
    if out.load is None or not (out.load.rates or out.load.concurrency):
        raise SpecError(f"{source}: no load steps: give --rates (requests/s) or [load] rates / concurrency")
    return out


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
        caps = await _discover(pool, spec, say)
        info = {**server_info, "capabilities": caps, "version": await pool.primary.version(),
                "packages": package_versions()}
        corpus = await build_corpus(spec, pool.primary, data_dir)
        pool.plan(corpus.examples, corpus.documents)
        pipelines = [build_pipeline(p) for p in spec.pipelines]
        sha = _content_sha(spec, corpus)
        run_id, idle_run_id = load_run_id(spec, sha), spec.run_id(sha)
        content = corpus.content_sha256()
        _same_questions(store, run_id, content)
        plan = {pt: requests(corpus.examples, pt, traffic) for pt in points(traffic)}
        resumed = store.start_run(
            run_id, corpus=corpus.name, model=spec.server.model, base_url=",".join(urls),
            concurrency=spec.concurrency, spec=spec.model_dump(mode="json"),
            corpus_params={**corpus.params, "content_sha256": content}, server=info | pool.describe())
        store.add_examples(run_id, [a.example for todo in plan.values() for a in todo], _doc_tokens(corpus))
        params = {id(p): p.params() for p in pipelines}
        hashes = [params_hash(params[id(p)]) for p in pipelines]
        records = _step_records(store, run_id)
        # Only pipelines with a step left build their index (as a rerun of an idle run).
        pending = [(corpus.examples[0], p, h) for p, h in zip(pipelines, hashes, strict=True)
                   if any(records.get((p.name, h, pt.label), {}).get("status") not in FINAL for pt in plan)]
        await _prepare(pending, pipelines, hashes, corpus, pool.primary, store, run_id)
        context = functools.partial(
            _RunContext, run_id=run_id, store=store, resumed=resumed, params=params,
            metrics=metric_registry.resolve(spec.metrics), health=pool.health, progress=progress,
            policy=FailurePolicy(retries=0, on_error=spec.on_error), result=RunResult(run_id, resumed),
            isolate_cache=spec.cache_isolation == "document")
        result = LoadResult(run_id, idle_run_id, resumed)
        status = "failed"
        try:
            for pipe, h in zip(pipelines, hashes, strict=True):
                saturated_at: str | None = None
                for pt, arrivals in plan.items():
                    step = _Step(store, run_id, idle_run_id, pipe, h, pt, traffic,
                                 records.get((pipe.name, h, pt.label)))
                    if step.final:
                        saturated_at = saturated_at or (pt.label if step.status == "saturated" else None)
                        result.steps.append(step.result(store))
                        continue
                    if saturated_at is not None and pt.rate is not None:
                        step.finish("skipped", f"{pipe.name} saturated at {saturated_at}", 0, 0.0, {})
                        result.steps.append(step.result(store))
                        continue
                    await step.run(context, pool, arrivals, say)
                    saturated_at = pt.label if step.status == "saturated" else saturated_at
                    result.steps.append(step.result(store))
            status = "done"
        except BaseException as exc:
            status = ending(exc)
            raise
        finally:
            store.finish_run(run_id, status)
        return result


@dataclass
class _Step:
    """One pipeline at one traffic point: its record in `load_steps`, and how it runs."""

    store: Store
    run_id: str
    idle_run_id: str
    pipe: Pipeline
    h: str
    point: Point
    load: LoadSpec
    before: Mapping[str, Any] | None  # its record from an earlier session, if any

    @property
    def status(self) -> str | None:
        return None if self.before is None else str(self.before["status"])

    @property
    def final(self) -> bool:
        return self.status in FINAL

    async def run(
        self, context: Callable[..., _RunContext], pool: Pool, arrivals: Sequence[Arrival],
        say: Callable[[str], None] | None,
    ) -> None:
        """Send what the store does not hold yet; record how the step ended, whatever ended it."""
        held = {k[0] for k in self.store.prediction_keys(self.run_id) if k[1:] == (self.pipe.name, self.h)}
        todo = [a for a in arrivals if a.example.id not in held]
        ctx = context(lane_of=pool.lanes([a.example for a in todo], [None] * len(todo)), total=len(todo),
                      seq=self.store.next_seq(self.run_id), salt_scope=f"\0{self.point.label}")
        if say:
            say(f"{self.pipe.name} {self.point.label}: {len(todo)} request(s)"
                + (f" ({len(arrivals) - len(todo)} stored before)" if len(todo) < len(arrivals) else ""))
        self._record("running", None, 0, 0.0, {}, started=True)
        before = await _safe_metrics(pool)
        t0 = time.perf_counter()
        status, tally = "incomplete", _Tally()
        note: str | None = "interrupted"
        try:
            status, note = await _send(ctx, self.pipe, self.h, self.point, self.load, todo, t0, tally)
        except RunStopped as exc:
            status, note = "stopped", str(exc)
            raise
        finally:
            elapsed = time.perf_counter() - t0
            ctx.writer.close()  # every answered row is on disk before the step is marked
            after = await _safe_metrics(pool)
            # A step that ended counts what it sent (a cut request is a miss); one that will be
            # resumed counts only what it stored: what it cut is sent again.
            sent = tally.sent if status in FINAL else tally.stored
            self.finish(status, note, sent, elapsed, metric_deltas(before, after) if before and after else {})
            if say:
                say(f"{self.pipe.name} {self.point.label}: {status}" + (f" ({note})" if note else "")
                    + f", {sent} sent in {elapsed:.1f} s")

    def finish(
        self, status: str, note: str | None, sent: int, elapsed_s: float, deltas: Mapping[str, float],
    ) -> None:
        self._record(status, note, sent, elapsed_s, deltas, started=False)
        self.before = {"status": status}

    def _record(self, status: str, note: str | None, sent: int, elapsed_s: float,
                deltas: Mapping[str, float], *, started: bool) -> None:
        """Write the step's record; a step's later session adds to its earlier ones."""
        old = _step_records(self.store, self.run_id).get((self.pipe.name, self.h, self.point.label))
        prev = dict(json.loads(old["server_deltas"])) if old else {}
        summed = {k: prev.get(k, 0.0) + deltas.get(k, 0.0) for k in {*prev, *deltas}}
        self.store.insert("load_steps", [{
            "run_id": self.run_id, "pipeline": self.pipe.name, "params_hash": self.h,
            "step": self.point.label,
            "rate": self.point.rate, "concurrency": self.point.concurrency, "requests": self.load.requests,
            "status": status, "note": note,
            "sessions": (old["sessions"] if old else 0) + (1 if started else 0),
            "sent": (old["sent"] if old else 0) + sent,
            "duration_s": (old["duration_s"] if old else 0.0) + elapsed_s,
            "started_at": old["started_at"] if old else now(), "finished_at": None if started else now(),
            "server_deltas": json.dumps(summed), "load": json.dumps(self.load.model_dump(mode="json")),
            "idle_run_id": self.idle_run_id,
        }], verb="INSERT OR REPLACE")

    def result(self, store: Store) -> StepResult:
        rec = _step_records(store, self.run_id).get((self.pipe.name, self.h, self.point.label), {})
        row = store.con.execute(
            "SELECT count(*), count(error) FROM predictions "
            "WHERE run_id = ? AND pipeline = ? AND params_hash = ? AND load_step = ?",
            [self.run_id, self.pipe.name, self.h, self.point.label]).fetchone() or (0, 0)
        return StepResult(self.pipe.name, self.h, self.point.label, str(rec.get("status")),
                          int(rec.get("sent") or 0), int(row[0]) - int(row[1]), int(row[1]), rec.get("note"))


@dataclass
class _Tally:
    sent: int = 0  # requests that went out
    stored: int = 0  # of those, the ones whose row was stored


async def _send(
    ctx: _RunContext, pipe: Pipeline, h: str, point: Point, load: LoadSpec, todo: Sequence[Arrival],
    t0: float, tally: _Tally,
) -> tuple[str, str | None]:
    """Send each request when it is due (a resumed step's first missing one at once, the rest
    keeping their gaps; a fresh step's first after its own gap, as `vllm bench serve`); returns
    (status, note). A rate step stops as saturated when the requests due but unanswered reach
    `max_backlog`; anything else stopping it cancels what is in flight."""
    cap = load.max_concurrency if point.rate is not None else point.concurrency
    gate = asyncio.Semaphore(cap) if cap else None
    resumed = bool(todo) and todo[0].index > 0
    shift = todo[0].offset_s if resumed else 0.0
    tasks: list[asyncio.Task[None]] = []
    finished = 0
    failure: BaseException | None = None

    async def one(k: int, a: Arrival, due: float) -> None:
        nonlocal finished, failure
        sent: float | None = None
        try:
            async with gate if gate is not None else contextlib.nullcontext():
                sent = time.perf_counter() - t0
                await ctx.ask(k, a.example, pipe, h)
            tally.stored += 1
        except RunStopped as exc:  # raised after its row was stored
            tally.stored += 1
            failure = failure or exc
            raise
        finally:
            finished += 1
            if sent is not None:  # the row (if the request got that far) is queued before this
                key = (ctx.run_id, a.example.id, pipe.name, h)
                timing = load_timing(point.label, due, sent)
                ctx.writer.submit(None, _stamp, ctx.writer, ctx.store, key, timing)

    try:
        for k, a in enumerate(todo):
            due = a.offset_s - shift
            delay = t0 + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if failure is not None:
                raise failure
            backlog = len(tasks) - finished
            if point.rate is not None and backlog >= load.max_backlog:
                note = (f"{backlog} requests due but unanswered after {time.perf_counter() - t0:.1f} s "
                        f"(max_backlog {load.max_backlog}); {len(todo) - k} not sent, {backlog} cut")
                await _cancel(tasks)
                return "saturated", note
            tasks.append(asyncio.create_task(one(k, a, due)))
            tally.sent += 1
        if tasks:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            await _cancel(list(pending))
            for t in done:
                exc = None if t.cancelled() else t.exception()
                if exc is not None:
                    raise exc
        return "done", None
    except BaseException:
        await _cancel(tasks)
        raise


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _stamp(writer: RowWriter, store: Store, key: tuple[str, str, str, str], cols: Mapping[str, Any]) -> None:
    """Put a request's load timing on its row (queued on the run's writer right after the row)."""
    sets = ", ".join(f"{c} = ?" for c in cols)
    store.con.execute(f"UPDATE predictions SET {sets} WHERE run_id = ? AND example_id = ? AND pipeline = ? "
                      "AND params_hash = ?", [*cols.values(), *key])
    # The writer counts every job as a row on disk (its progress line); this one adds none. Safe:
    # only the writer's own thread, where this runs, changes the count.
    writer.written -= 1


def _step_records(store: Store, run_id: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    cur = store.con.execute("SELECT * FROM load_steps WHERE run_id = ?", [run_id])
    cols = [c[0] for c in cur.description]
    return {(r["pipeline"], r["params_hash"], r["step"]): r
            for r in (dict(zip(cols, row, strict=True)) for row in cur.fetchall())}


async def _safe_metrics(pool: Pool) -> dict[str, float]:
    try:
        return await pool.metrics()
    except Exception:  # counters are best effort: a dead server must not mask the step's own error
        return {}
