"""The run loop: examples x pipelines against one backend, bounded concurrency, resumable.

Every finished request is written (with its scores) before the next result is awaited, so an
interrupted run keeps all finished work and a rerun of the same spec only does what is missing.
Requests go in corpus order, each example asked of every pipeline before the next ("given"), or
in the prefix-sharing order of compare/serving/schedule.py ("prefix": one document's questions back to
back, every pipeline done with a document before the next, documents with long common prefixes
adjacent, followers waiting for the request that warms their prefix); either way a partial run
still compares the pipelines on the same questions or documents.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Container, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from compare.core import metrics as metric_registry
from compare.core.protocols import Indexed, Pipeline, label_of, plan_of
from compare.core.types import Corpus, Example, Prediction
from compare.run.heartbeat import InFlight, Watch, heartbeat, watched
from compare.run.interrupt import Latch, latch_sigint
from compare.run.row_writer import RowWriter
from compare.serving.client import BoundBackend, HttpBackend, RequestOptions
from compare.serving.endpoint import retry_after_s
from compare.serving.pool import Lane, Pool
from compare.serving.prometheus import metric_deltas
from compare.serving.replicas import FINGERPRINT_PREFIX
from compare.serving.schedule import Schedule, plan_run
from compare.store.db import Store


def params_hash(params: Mapping[str, Any]) -> str:
    """Cache key of a pipeline configuration (lm-eval-harness style: hash of the arguments)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class FailurePolicy:
    """What to do when a request fails: recorded with the run (spec), applied here."""

    retries: int = 1
    backoff_s: float = 2.0
    on_error: Literal["continue", "stop"] = "continue"


class RunStopped(RuntimeError):
    """The run stopped on purpose: `on_error = "stop"`, or the server is gone."""


class ServerDown(RunStopped):
    """Requests fail because the server no longer answers /health; a managed one can restart."""


def ending(exc: BaseException) -> str:
    """How a run that raised `exc` ended, as runs.status records it (one rule for an idle run and
    a load run)."""
    if isinstance(exc, RunStopped):
        return "server_down" if isinstance(exc, ServerDown) else "stopped"
    return "interrupted" if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt) else "failed"


# Failures that another attempt cannot fix: the prompt itself is the problem.
PERMANENT_ERRORS = ("context_overflow",)
MAX_RETRY_AFTER_S = 300.0  # the longest a 429 makes a request wait before its retry


def retryable(pred: Prediction) -> bool:
    return pred.error is not None and not pred.error.startswith(PERMANENT_ERRORS)


@dataclass
class RunResult:
    run_id: str
    resumed: bool
    done: int = 0
    skipped: int = 0
    errors: int = 0
    server_deltas: dict[str, float] = field(default_factory=dict)


Progress = Callable[[str, int, int], None]


Todo = list[tuple[Example, Pipeline, str]]  # (example, pipeline, params hash) still to ask


async def run(
    *,
    run_id: str,
    corpus: Corpus,
    pipelines: Sequence[Pipeline],
    backend: HttpBackend,
    store: Store,
    run_meta: Mapping[str, Any],
    metric_names: Sequence[str],
    concurrency: int = 1,
    retry_errors: bool = False,
    progress: Progress | None = None,
    policy: FailurePolicy = FailurePolicy(),
    health: Callable[[], Awaitable[bool]] | None = None,
    schedule: Schedule = "given",
    pool: Pool | None = None,
    watch: Watch | None = None,
    isolate_cache: bool = False,
) -> RunResult:
    """Ask every example of every pipeline that the store does not already hold.

    `isolate_cache`: each (pipeline config, document) gets its own vLLM cache salt, so a
    document's first request is cold by construction and only its own later questions are warm.

    `schedule` orders (and gates) the requests for prefix-cache reuse (compare/serving/schedule.py);
    `pool` spreads them over replicas by document, `concurrency` slots each (compare/serving/pool.py).
    """
    metrics = metric_registry.resolve(metric_names)
    resumed = store.start_run(run_id, corpus=corpus.name, concurrency=concurrency, **run_meta)
    store.add_examples(run_id, corpus.examples, _doc_tokens(corpus))
    result = RunResult(run_id=run_id, resumed=resumed)
    keep = store.prediction_keys(run_id, errors=False if retry_errors else None)

    # Each pipeline's params once: hashed for the resume key, stored with every row.
    params = {id(p): p.params() for p in pipelines}
    hashes = [params_hash(params[id(p)]) for p in pipelines]
    todo = _missing(corpus, pipelines, hashes, keep, result)
    plan = plan_run(todo, corpus.documents, schedule)
    todo = list(plan.items)
    lanes = pool or Pool([backend], concurrency)
    lane_of = lanes.lanes([ex for ex, _, _ in todo], plan.after)
    watch = watch or Watch()
    if watch.estimate is not None and todo:
        watch.estimate([(ex, plan_of(p), p.role) for ex, p, _ in todo])
    if progress:
        progress("preparing pipelines", 0, len(todo))
    await _prepare(todo, pipelines, hashes, corpus, backend, store, run_id)

    before = await lanes.metrics()
    ctx = _RunContext(
        run_id=run_id, store=store, resumed=resumed, params=params, metrics=metrics, policy=policy,
        health=health, progress=progress, lane_of=lane_of, total=len(todo), result=result,
        seq=store.next_seq(run_id), isolate_cache=isolate_cache,
    )
    await _drive(ctx, todo, lanes, concurrency == 1 and len(lanes) == 1, watch, before)
    return result


def salt_for(run_id: str, params_hash: str, doc_ids: Sequence[str]) -> str:
    """One salt per (run, pipeline config, documents): a pipeline's later questions on a document
    reuse its cache; nothing else (another document, another pipeline) can warm it."""
    return hashlib.sha256("\0".join([run_id, params_hash, *doc_ids]).encode()).hexdigest()[:24]


def session_for(doc_ids: Sequence[str]) -> str:
    """A document's routing key (`x-session-id`): the same for all its questions and all
    pipelines (one replica holds its prefix), ASCII whatever the ids are."""
    return hashlib.sha256("\0".join(doc_ids).encode()).hexdigest()[:16]


def _doc_tokens(corpus: Corpus) -> dict[str, int] | None:
    """Each document's token count, when the corpus tagged it (the report's length axis)."""
    doc_tokens = {
        d: int(t) for ex in corpus.examples if (t := ex.tags.get("doc_tokens")) is not None
        for d in ex.doc_ids[:1]
    }
    return doc_tokens if doc_tokens else None


def _missing(
    corpus: Corpus, pipelines: Sequence[Pipeline], hashes: Sequence[str],
    keep: Container[tuple[str, str, str]], result: RunResult,
) -> Todo:
    """What a rerun still owes, in corpus order; rows the store holds are counted as skipped."""
    todo: Todo = []
    for ex in corpus.examples:
        for pipe, h in zip(pipelines, hashes, strict=True):
            if (ex.id, pipe.name, h) in keep:
                result.skipped += 1
            else:
                todo.append((ex, pipe, h))
    return todo


async def _prepare(
    todo: Todo, pipelines: Sequence[Pipeline], hashes: Sequence[str], corpus: Corpus,
    backend: HttpBackend, store: Store, run_id: str,
) -> None:
    """Only pipelines with work left build their index: a finished one costs a rerun nothing."""
    needed = {id(p) for _, p, _ in todo}
    for pipe, h in zip(pipelines, hashes, strict=True):
        if id(pipe) in needed:
            await pipe.prepare(corpus.documents, backend)
            if isinstance(pipe, Indexed) and pipe.index_stats:
                store.add_index_stats(run_id, pipe.name, h, pipe.index_stats)


@dataclass
class _RunContext:
    """What every request of one run shares, so `ask` takes only the request itself."""

    run_id: str
    store: Store
    resumed: bool
    params: Mapping[int, Mapping[str, object]]
    metrics: Mapping[str, metric_registry.Metric]
    policy: FailurePolicy
    health: Callable[[], Awaitable[bool]] | None
    progress: Progress | None
    lane_of: Sequence[Lane]
    total: int
    result: RunResult
    seq: int
    isolate_cache: bool = False
    salt_scope: str = ""  # a load step's name: each step's cache starts cold (compare/run/load.py)
    writer: RowWriter = field(default_factory=lambda: RowWriter())
    latch: Latch = field(default_factory=Latch)
    flights: InFlight = field(init=False)

    def __post_init__(self) -> None:
        self.flights = InFlight(self.total)

    async def ask(self, i: int, ex: Example, pipe: Pipeline, h: str) -> None:
        """One request, in its lane's turn; its row is queued before the next result is awaited."""
        self.latch.check()
        lane = self.lane_of[i]
        label = f"{pipe.name} {ex.id}"
        async with lane.turn(i):
            started = datetime.now(UTC).replace(tzinfo=None)
            self.flights.start(i, label)

            def on_first_token() -> None:
                self.flights.first_token(i)
                lane.dispatcher.prefilled(i)

            salt = salt_for(self.run_id + self.salt_scope, h, ex.doc_ids) if self.isolate_cache else None
            options = RequestOptions(  # passed with the request, not through a context variable
                cache_salt=salt,
                session_key=session_for(ex.doc_ids), on_first_token=on_first_token,
            )
            try:
                # the heartbeat sees each request
                backend = watched(lane.backend.with_options(options), self.flights, i)
                pred, attempts = await _attempts(pipe, ex, backend, self.policy)
            finally:
                self.flights.end(i)
        progress, total = self.progress, self.total
        self.writer.submit(
            (lambda: progress(label, self.writer.written, total)) if progress else None,
            self.store.add_prediction, self.run_id, ex.id, pipe.name, h, self.params[id(pipe)], pred,
            seq=self.seq, resumed=self.resumed, started_at=started, attempts=attempts,
            scores=metric_registry.score(self.metrics, ex, pred), replica=_replica(pred, lane.name),
            role=pipe.role, label=label_of(pipe),
        )
        self.seq += 1
        self.result.done += 1
        self.result.errors += 0 if pred.ok else 1
        if not pred.ok:
            await self._after_error(ex, pipe, pred)

    async def _after_error(self, ex: Example, pipe: Pipeline, pred: Prediction) -> None:
        """A dead server fails every request after it: stop rather than store a run of errors."""
        if retryable(pred) and self.health is not None and not await self.health():
            raise ServerDown(f"server stopped answering during the run ({pred.error})")
        if self.policy.on_error == "stop":
            raise RunStopped(f"stopped on the first error (on_error=stop): {ex.id} {pipe.name}: {pred.error}")


def _replica(pred: Prediction, lane: str) -> str:
    """Which replica answered: behind a router, the one the response names (managed replicas set
    their system_fingerprint, compare/serving/replicas.py: ragvslc-replica-<i>, i = runs.server
    router.workers order); else the lane's URL, as before."""
    fp = pred.completion.served_by if pred.completion is not None else None
    return fp if fp and fp.startswith(FINGERPRINT_PREFIX) else lane


async def _drive(
    ctx: _RunContext, todo: Todo, lanes: Pool, serial: bool, watch: Watch, before: Mapping[str, float]
) -> None:
    """Ask everything, then mark the run with how it ended, whatever ended it."""
    status = "failed"
    try:
        with latch_sigint(ctx.latch):
            async with heartbeat(ctx.flights, watch.say, watch.interval_s):
                if serial:
                    for i, item in enumerate(todo):
                        await ctx.ask(i, *item)
                else:
                    await _all_or_nothing([ctx.ask(i, *item) for i, item in enumerate(todo)])
        status = "done"
    except BaseException as exc:
        status = ending(exc)
        raise
    finally:
        ctx.writer.close()  # every answered row is on disk before the run is marked, even on Ctrl-C
        after = await _safe_metrics(lanes)
        if before and after:
            ctx.result.server_deltas = metric_deltas(before, after)
            ctx.store.add_server_stats(ctx.run_id, ctx.result.server_deltas)
        ctx.store.finish_run(ctx.run_id, status)


async def _all_or_nothing(coros: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run concurrently; the first exception cancels the rest (finished rows are already stored)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        exc = t.exception()
        if exc is not None:
            raise exc


async def _attempts(
    pipe: Pipeline, ex: Example, backend: BoundBackend, policy: FailurePolicy
) -> tuple[Prediction, int]:
    """Answer, retrying transient failures with exponential backoff; returns the attempts used."""
    attempt = 1
    pred = await _answer(pipe, ex, backend)
    while retryable(pred) and attempt <= policy.retries:
        wait = policy.backoff_s * 2 ** (attempt - 1)
        asked = retry_after_s(pred.error)  # an endpoint's 429 says how long: at least that
        await asyncio.sleep(max(wait, min(asked, MAX_RETRY_AFTER_S)) if asked is not None else wait)
        attempt += 1
        pred = await _answer(pipe, ex, backend)
    return pred, attempt


async def _answer(pipe: Pipeline, ex: Example, backend: BoundBackend) -> Prediction:
    """Pipelines return failures as rows; anything they raise becomes a row too."""
    try:
        return await pipe.answer(ex, backend)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a failed request must become a stored row, never vanish
        return Prediction(
            answer="", completion=None, context_tokens=0, error=f"{type(exc).__name__}: {exc}"
        )


async def _safe_metrics(backend: HttpBackend | Pool) -> dict[str, float]:
    try:
        return await backend.metrics()
    except Exception:  # stats are best effort: a dead server must not mask the run's own error
        return {}
