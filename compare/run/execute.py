"""Turn a RunSpec into live objects (server, backend, corpus, pipelines) and run it.

This is the one place where configuration becomes components, so the CLI stays a parser and
tests can drive a whole run with the same code path the CLI uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from compare.core import registry
from compare.core.protocols import Backend, BuildContext, Pipeline, Plan, Role
from compare.core.registry import spec_kind
from compare.core.types import Corpus, Example
from compare.run.heartbeat import Watch
from compare.run.limits import answer_budget, request_timeouts, with_answer_budget
from compare.run.runner import FailurePolicy, Progress, RunResult, ServerDown, run
from compare.run.spec import RunSpec
from compare.run.survey import survey
from compare.serving import weights as models
from compare.serving.pool import Access, Pool, health_of, split_urls
from compare.serving.probe import ModelDims, ProbeResult, clock, estimate_s, planned_requests
from compare.serving.replicas import behind_router, managed_replicas, replica_configs
from compare.serving.router import (
    ManagedRouter,
    RoutedServer,
    managed_router,
    router_workers,
    routing_counters,
    routing_policy,
    session_routing,
)
from compare.serving.server import ManagedServer, ServerConfig, split_args
from compare.serving.tokenizers import load_tokenizer
from compare.store.db import Store


def build_pipeline(ps: BaseModel) -> Pipeline:
    """The pipeline a spec describes, from the registry (its spec's fields are its arguments)."""
    return registry.build_pipeline(ps)


async def build_corpus(spec: RunSpec, backend: Backend, data_dir: Path | None) -> Corpus:
    """The corpus a spec describes, its documents measured with the served model's tokenizer."""
    entry = registry.CORPORA[spec_kind(type(spec.corpus))]
    return await entry.build(spec.corpus, BuildContext(backend.tokenize, data_dir))


@contextlib.contextmanager
def server_for(
    spec: RunSpec, say: Callable[[str], None], base_url: str | Sequence[str] | None = None
) -> Iterator[tuple[str | list[str], dict[str, Any], list[ManagedServer]]]:
    """Base URL(s) to talk to: the given server(s), or managed vLLM(s) for the spec's model;
    with several and a router policy, the URL of a managed vllm-router in front of them."""
    urls = split_urls(base_url) or split_urls(spec.server.base_url)
    if len(urls) == 1 and spec.server.router in (None, "client"):  # one server, no router asked for
        yield urls[0], {"managed": False, "base_url": urls[0]}, []
        return
    policy = routing_policy(spec.server.router, len(urls) or spec.server.replicas, managed=not urls)
    routed = policy not in (None, "client")
    if urls and not routed:
        url = urls[0] if len(urls) == 1 else urls
        yield url, {"managed": False, "base_url": url}, []
        return
    if urls:  # replicas someone else runs, behind a router of ours
        with managed_router(urls, policy, spec.server.router_args, say) as router:
            yield router.base_url, {"managed": False, "base_url": router.base_url, **_router_info(router)}, []
        return
    path = models.prepare(spec.server.model, progress=say)
    config = ServerConfig(
        model_path=str(path),
        served_name=spec.server.model,
        max_model_len=spec.server.max_model_len,
        kv_cache_gib=spec.server.kv_cache_gib,
        dtype=spec.server.dtype,
        extra_args=split_args(spec.server.extra_args),
    )
    n = spec.server.replicas
    say(f"starting vLLM for {spec.server.model}" + (f" ({n} replicas)" if n > 1 else "") + " ...")
    configs = [config] if n == 1 else replica_configs(config, n)
    with managed_replicas(behind_router(configs) if routed else configs, say,
                          RoutedServer if routed else ManagedServer) as servers:
        for s in servers:
            say(f"vLLM ready at {s.base_url} after {s.startup_s:.0f}s")
        with managed_router([s.base_url for s in servers], policy, spec.server.router_args, say,
                            replicas=servers) if routed else contextlib.nullcontext():
            yield _urls(servers), _describe(servers), servers


def _urls(servers: Sequence[ManagedServer]) -> str | list[str]:
    """The URL the run talks to: the router in front of the replicas, the one server, or each."""
    router = getattr(servers[0], "router", None) if servers else None
    if isinstance(router, ManagedRouter):
        return router.base_url
    return servers[0].base_url if len(servers) == 1 else [s.base_url for s in servers]


def _describe(servers: Sequence[ManagedServer]) -> dict[str, Any]:
    if len(servers) == 1:
        return servers[0].describe()
    return {"managed": True, "servers": [s.describe() for s in servers],
            **_router_info(getattr(servers[0], "router", None))}


def _router_info(router: object) -> dict[str, Any]:
    return {"router": router.describe()} if isinstance(router, ManagedRouter) else {}


def _same_questions(store: Store, run_id: str, content: str) -> None:
    """A resumed run must ask what it asked before: a corpus whose content changed (another book
    file, a new generator version) would mix answers to different questions under one id."""
    row = store.con.execute("SELECT json_extract_string(corpus_params, '$.content_sha256') FROM runs "
                            "WHERE run_id = ?", [run_id]).fetchone()
    if row and row[0] and row[0] != content:
        raise ValueError(f"run {run_id}: the corpus content changed since the run started (sha256 "
                         f"{row[0][:12]} -> {content[:12]}); its stored answers are to other questions. "
                         "Use another --db, or delete the run's rows")


def _content_sha(spec: RunSpec, corpus: Corpus) -> str | None:
    """The files' content hash for corpora the spec names only by path."""
    sha = corpus.params.get("sha256")
    return str(sha) if getattr(spec.corpus, "named_by_path", False) and sha else None


async def execute_async(
    spec: RunSpec,
    store: Store,
    base_url: str | Sequence[str],
    server_info: dict[str, Any],
    *,
    data_dir: Path | None = None,
    retry_errors: bool = False,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> RunResult:
    """One run on servers that are up: the spec becomes components here, then the runner runs."""
    access = _access(spec)
    # A router of ours (server_for names it in the info): where it sends this session's requests
    # (its counters before and after) and the replicas behind it, whose counters are the run's.
    ours = bool(server_info.get("router"))
    given, before = server_info, routing_counters(server_info) if ours else {}
    stats_urls = router_workers(server_info) if ours else []
    urls = split_urls(base_url)
    async with Pool.connect(
        urls, spec.server.model, concurrency=spec.concurrency, timeout_s=spec.timeout_s, access=access,
        stats_urls=stats_urls,
    ) as pool:
        backend = pool.primary
        found = await survey(pool, model=spec.server.model, probe_chat=spec.server.probe_chat, say=say)
        server_info = {**server_info, **found.info}
        measured, dims = found.measured, found.dims
        corpus = await build_corpus(spec, backend, data_dir)
        pool.plan(corpus.examples, corpus.documents)  # each document's replica, fixed up front
        server_info |= pool.describe()
        budget = await answer_budget(corpus.examples, backend.tokenize)  # fitted to the golds
        _request_timeouts(spec, pool, measured, dims, corpus, budget["answer_tokens"], server_info, say)
        pipelines = [build_pipeline(with_answer_budget(p, budget["answer_tokens"])) for p in spec.pipelines]
        run_id = spec.run_id(_content_sha(spec, corpus))
        content = corpus.content_sha256()
        _same_questions(store, run_id, content)
        result = await run(
            run_id=run_id,
            corpus=corpus,
            pipelines=pipelines,
            backend=backend,
            store=store,
            run_meta={
                "model": spec.server.model,
                "base_url": ",".join(urls),
                "spec": spec.model_dump(mode="json"),
                "corpus_params": {**corpus.params, "content_sha256": content, "answer_budget": budget},
                "server": server_info,
            },
            metric_names=spec.metrics,
            concurrency=spec.concurrency,
            retry_errors=retry_errors,
            progress=progress,
            policy=FailurePolicy(
                retries=spec.retries, backoff_s=spec.retry_backoff_s, on_error=spec.on_error
            ),
            health=pool.health,
            schedule=spec.schedule,
            isolate_cache=spec.cache_isolation == "document",
            pool=pool,
            watch=Watch(
                say=say if say and not sys.stderr.isatty() else None,  # a terminal has its live bar
                interval_s=HEARTBEAT_S,
                estimate=(lambda todo: say(_estimate_line(todo, measured, dims)))
                if say and measured else None,
            ),
        )
    if routed := session_routing(before, given):
        store.add_server_stats(result.run_id, routed)
    return result


def _access(spec: RunSpec) -> Access:
    s = spec.server
    tok = load_tokenizer(s.tokenizer, served=s.model) if s.tokenizer else None
    return Access(api_key_env=s.api_key_env, headers=s.headers, token_param=s.token_param, tokenizer=tok,
                  declared_max_model_len=s.max_model_len)


def _request_timeouts(
    spec: RunSpec, pool: Pool, measured: ProbeResult | None, dims: ModelDims | None, corpus: Corpus,
    answer_tokens: int, server_info: dict[str, Any], say: Callable[[str], None] | None,
) -> None:
    """Issue 25 (task F): a spec that leaves timeout_s at its default gets each request's timeout
    from the probe's estimate (compare/run/limits.py); recorded with the run, said once."""
    rule, record, line = request_timeouts(
        given_s=spec.timeout_s, explicit="timeout_s" in spec.model_fields_set, probe=measured, dims=dims,
        corpus=corpus, answer_tokens=answer_tokens, in_flight=spec.concurrency,
    )
    for b in pool.backends:
        b.timeout_for = rule
    server_info["request_timeout"] = record
    if say and line:
        say(line)


HEARTBEAT_S = 30.0  # a line per request in flight this often, in logs (not on a terminal)


def _estimate_line(todo: Sequence[tuple[Example, Plan, Role]], measured: ProbeResult,
                   dims: ModelDims | None) -> str:
    requests = planned_requests(todo)
    secs = estimate_s(requests, measured, dims)
    prompt = sum(r.prompt_tokens - r.cached_tokens for r in requests)
    return (f"estimate: {len(requests)} requests, ~{prompt:,} prompt tokens to prefill: about "
            f"{clock(secs)} of engine time at the probe's rate (plus index builds)")


@dataclass
class Serving:
    """The server(s) a run talks to, kept up across several runs (the demo runs two specs on
    one managed server instead of paying its start-up twice)."""

    url: str | list[str]
    info: dict[str, Any]
    servers: list[ManagedServer]


@contextlib.contextmanager
def serving(
    spec: RunSpec, say: Callable[[str], None], base_url: str | Sequence[str] | None = None
) -> Iterator[Serving]:
    with server_for(spec, say, base_url) as (url, info, servers):
        yield Serving(url, info, servers)


def execute(
    spec: RunSpec,
    db: Path,
    *,
    say: Callable[[str], None],
    base_url: str | Sequence[str] | None = None,
    data_dir: Path | None = None,
    retry_errors: bool = False,
    progress: Progress | None = None,
    shared: Serving | None = None,
) -> RunResult:
    """Run a spec end to end: server up (or `shared`), corpus built, every request stored."""
    if warning := spec.secret_warning():  # a literal secret in the spec: said once, at start
        say(warning)
    up_for_run = contextlib.nullcontext(shared) if shared else serving(spec, say, base_url)
    with Store(db) as store, up_for_run as srv:

        def attempt(urls: str | Sequence[str], info: dict[str, Any], retry: bool) -> RunResult:
            return asyncio.run(execute_async(
                spec, store, urls, info, data_dir=data_dir, retry_errors=retry, progress=progress,
                say=say,
            ))

        try:
            return attempt(srv.url, srv.info, retry_errors)
        except ServerDown as exc:
            if not srv.servers:
                return _fail_over(split_urls(srv.url), srv.info, exc, say, attempt, _access(spec))
            # Managed servers that died are restarted once; the failed rows are then redone.
            up = asyncio.run(health_of([s.base_url for s in srv.servers], _access(spec)))
            dead = [s for s, ok in zip(srv.servers, up, strict=True) if not ok]
            if not dead:
                raise
            say(f"{exc}; restarting {len(dead)} managed vLLM(s) once and retrying the failed rows")
            for s in dead:
                s.restart()
            srv.url = _urls(srv.servers)
            srv.info = {**_describe(srv.servers), "restarts": 1, "restart_reason": str(exc)}
            return attempt(srv.url, srv.info, True)


def _fail_over(
    urls: list[str],
    info: dict[str, Any],
    exc: ServerDown,
    say: Callable[[str], None],
    attempt: Callable[[list[str], dict[str, Any], bool], RunResult],
    access: Access,
) -> RunResult:
    """Replicas we do not manage: drop the dead ones and go on with the rest, as long as one
    answers. Consistent hashing moves only the dead replicas' documents (their caches are gone
    anyway); finished rows stay, the failed ones are redone, and the run records who failed."""
    failed: list[str] = list(info.get("failed_over", []))
    while True:
        alive = [u for u, ok in zip(urls, asyncio.run(health_of(urls, access)), strict=True) if ok]
        dead = [u for u in urls if u not in alive]
        if not alive or not dead:  # nothing to fail over to, or nobody died (a bad request)
            raise exc
        failed += dead
        say(f"{exc}; replica(s) {', '.join(dead)} down: going on with {', '.join(alive)}")
        info = {**info, "base_url": alive, "failed_over": failed, "failover_reason": str(exc)}
        urls = alive
        try:
            return attempt(urls, info, True)
        except ServerDown as again:
            exc = again

