"""One step of a load run (issue 28): one pipeline at one traffic point, sent and recorded.

Apart from compare/run/load.py (which orders the steps of a sweep): how a step's requests go
out on time (open loop) or through a fixed number of slots (closed loop), when a step is
over-saturated, and its record in `load_steps`, added to across sessions so a step resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compare.core.protocols import Pipeline
from compare.run.arrivals import Arrival, Point
from compare.run.load_spec import LoadSpec
from compare.run.row_writer import RowWriter
from compare.run.runner import RunStopped, _RunContext
from compare.serving.pool import Pool
from compare.serving.prometheus import metric_deltas
from compare.store.db import Store
from compare.store.rows import load_timing, now

FINAL = ("done", "saturated", "skipped")  # a rerun leaves these steps alone
UNBOUNDED = 1 << 20  # the replicas' own slots: a step's concurrency is bounded by its own gate
# Requests due closer together than this (mean gap, s) hold their rows until the step's last
# send (HeldWriter). A row's write costs ~15-20 ms of CPU here (most of it DuckDB's, some under
# the GIL) and up to ~100 ms on a loaded machine: at 50 requests/s the writes alone took more
# CPU than the sends, and the sender went out up to seconds late (benchmarks/load_sender.py).
# Slower steps keep writing each row as it comes (progress on disk, progress lines as they go).
HOLD_WRITES_BELOW_GAP_S = 0.5


class HeldWriter(RowWriter):
    """A fast step's row writes, held in memory until `release` (the step's last send), then
    written in order by the usual worker: while requests are due, none of a write's CPU or GIL
    time competes with sending them. `close` releases first, so an interrupted step (Ctrl-C, a
    stop on error) still stores every answered row before it is marked; a process killed
    outright loses the held rows, which a rerun asks again (as RowWriter's queued ones)."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[tuple[Callable[[], None] | None, Callable[..., None], tuple[Any, ...],
                               dict[str, Any]]] | None = []

    def submit(
        self, then: Callable[[], None] | None, fn: Callable[..., None], *args: Any, **kwargs: Any
    ) -> None:
        if self._held is None:
            super().submit(then, fn, *args, **kwargs)
        else:
            self._held.append((then, fn, args, kwargs))

    def release(self) -> None:
        """From now on each write goes straight to the worker; the held ones first, in order."""
        held, self._held = self._held or [], None
        for then, fn, args, kwargs in held:
            super().submit(then, fn, *args, **kwargs)

    def close(self) -> None:
        self.release()
        super().close()


def writer_for(point: Point, arrivals: Sequence[Arrival]) -> RowWriter:
    """A held writer for an open-loop step whose requests come faster than one every
    HOLD_WRITES_BELOW_GAP_S on average; the plain one otherwise (closed loops included: their
    sends wait for a free slot, not for a clock)."""
    if not point.open_loop or len(arrivals) < 2:
        return RowWriter()
    span = arrivals[-1].offset_s - arrivals[0].offset_s
    gap = span / (len(arrivals) - 1)
    return HeldWriter() if gap < HOLD_WRITES_BELOW_GAP_S else RowWriter()


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
class Step:
    """One pipeline at one traffic point: its record in `load_steps`, and how it runs."""

    store: Store
    run_id: str
    idle_run_id: str
    pipe: Pipeline
    h: str
    point: Point
    load: LoadSpec
    before: Mapping[str, Any] | None  # its record from an earlier session, if any
    extra: Mapping[str, Any] = field(default_factory=dict)  # recorded with the step's knobs
    planned: int | None = None  # its requests (a trace's lines); None: the spec's `requests`

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
                      seq=self.store.next_seq(self.run_id), salt_scope=f"\0{self.point.label}",
                      writer=writer_for(self.point, todo))
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
        old = step_records(self.store, self.run_id).get((self.pipe.name, self.h, self.point.label))
        prev = dict(json.loads(old["server_deltas"])) if old else {}
        summed = {k: prev.get(k, 0.0) + deltas.get(k, 0.0) for k in {*prev, *deltas}}
        self.store.insert("load_steps", [{
            "run_id": self.run_id, "pipeline": self.pipe.name, "params_hash": self.h,
            "step": self.point.label,
            "rate": self.point.rate, "concurrency": self.point.concurrency,
            "requests": self.planned or self.load.requests,
            "status": status, "note": note,
            "sessions": (old["sessions"] if old else 0) + (1 if started else 0),
            "sent": (old["sent"] if old else 0) + sent,
            "duration_s": (old["duration_s"] if old else 0.0) + elapsed_s,
            "started_at": old["started_at"] if old else now(), "finished_at": None if started else now(),
            "server_deltas": json.dumps(summed), "load": json.dumps({**self.load.recorded(), **self.extra}),
            "idle_run_id": self.idle_run_id,
        }], verb="INSERT OR REPLACE")

    def result(self, store: Store) -> StepResult:
        rec = step_records(store, self.run_id).get((self.pipe.name, self.h, self.point.label), {})
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
    cap = load.max_concurrency if point.open_loop else point.concurrency
    gate = asyncio.Semaphore(cap) if cap else None
    resumed = bool(todo) and todo[0].index > 0
    shift = todo[0].offset_s if resumed else 0.0
    tasks: list[asyncio.Task[None]] = []
    finished = 0
    failure: BaseException | None = None
    last = len(todo) - 1

    async def one(k: int, a: Arrival, due: float) -> None:
        nonlocal finished, failure
        sent: float | None = None
        try:
            async with gate if gate is not None else contextlib.nullcontext():
                sent = time.perf_counter() - t0
                if k == last and isinstance(ctx.writer, HeldWriter):  # nothing left to send on time
                    ctx.writer.release()
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
            if point.open_loop and backlog >= load.max_backlog:
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


def step_records(store: Store, run_id: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    cur = store.con.execute("SELECT * FROM load_steps WHERE run_id = ?", [run_id])
    cols = [c[0] for c in cur.description]
    return {(r["pipeline"], r["params_hash"], r["step"]): r
            for r in (dict(zip(cols, row, strict=True)) for row in cur.fetchall())}


async def _safe_metrics(pool: Pool) -> dict[str, float]:
    try:
        return await pool.metrics()
    except Exception:  # counters are best effort: a dead server must not mask the step's own error
        return {}
