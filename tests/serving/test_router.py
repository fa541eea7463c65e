"""vLLM's router (vllm-router) in front of replicas: its flags, its process, what it tells, and runs
through it. "Two replicas" are the session's server and the same server behind a FaultProxy (one
real vLLM per test session); the proxy is what gets killed mid-run.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import httpx
import pytest

from compare.serving.router import (
    ManagedRouter,
    RouterConfig,
    RouterError,
    _router_series,
    router_installed,
    router_version,
    routing_deltas,
    routing_policy,
)
from tests.fixtures.book import book_corpus_dir
from tests.fixtures.proxy import FaultProxy

# FaultProxy kept: a second 'replica' to kill mid-run; a gateway is not a replica

def _router_runs() -> str | None:
    """Why the router cannot run here (None: it can): its wheel is Linux x86-64 only."""
    if router_version() is None:
        return "vllm-router is not installed (pip install 'ragvslc[router]')"
    probe = subprocess.run([sys.executable, "-c", "import vllm_router_rs"], capture_output=True, timeout=60)
    return None if probe.returncode == 0 else f"vllm-router cannot load here: {probe.stderr.decode()[-300:]}"


CANNOT_RUN = _router_runs()
needs_router = pytest.mark.skipif(CANNOT_RUN is not None, reason=CANNOT_RUN or "")


# --- pure --------------------------------------------------------------------------------------


def test_router_flags_keep_ours_unless_the_spec_names_them() -> None:
    args = RouterConfig(("http://a:1", "http://b:2"), "round_robin").args(9000, 9001)
    assert args[args.index("--worker-urls") + 1 : args.index("--policy")] == ["http://a:1", "http://b:2"]
    assert args[args.index("--policy") + 1] == "round_robin"
    assert args[args.index("--prometheus-port") + 1] == "9001"
    assert args[args.index("--health-check-interval-secs") + 1] == "5"
    ours = ("--health-check-interval-secs=30", "--cache-threshold", "0.5")
    mine = RouterConfig(("http://a:1",), extra_args=ours)
    args = mine.args(9000, 9001)
    assert "--health-check-interval-secs" not in args and args[-3:] == list(mine.extra_args)


def test_routing_policy_defaults_and_refusals() -> None:
    assert routing_policy(None, 1, managed=True) is None
    assert routing_policy(None, 2, managed=True) == ("cache_aware" if router_installed() else "client")
    # a list of URLs: the router too (the benchmark's verdict), client affinity where it is missing
    assert routing_policy(None, 2, managed=False) == ("cache_aware" if router_installed() else "client")
    assert routing_policy("round_robin", 3, managed=False) == "round_robin"
    assert routing_policy("client", 2, managed=True) == "client"
    assert routing_policy("client", 1, managed=True) is None
    with pytest.raises(RouterError, match="spreads requests over replicas"):
        routing_policy("cache_aware", 1, managed=False)


def test_router_fields_do_not_change_run_ids() -> None:
    from compare.run.spec import SpecError, validate_spec

    base = validate_spec({})
    for server in ({"router": "round_robin", "router_args": ["--cache-threshold", "0.5"]},
                   {"router": "client"}, {"replicas": 2, "router": "power_of_two"}):
        assert validate_spec({"server": server}).run_id() == base.run_id()
    with pytest.raises(SpecError, match="router_args"):
        validate_spec({"server": {"router": "client", "router_args": ["--policy", "random"]}})
    with pytest.raises(SpecError):
        validate_spec({"server": {"router": "random"}})


def test_replicas_behind_a_router_render_chats_and_name_themselves() -> None:
    from compare.serving.replicas import behind_router
    from compare.serving.server import ServerConfig

    plain = ServerConfig("m", "m")
    mine = ServerConfig("m", "m", extra_args=("--fingerprint-mode", "none"))
    first, second = behind_router([plain, mine])
    assert first.extra_args == ("--enable-scale-out", "--fingerprint-mode", "custom",
                                "--fingerprint-value", "ragvslc-replica-0")
    assert second.extra_args == ("--enable-scale-out", "--fingerprint-mode", "none")  # the user's wins


ROUTER_METRICS = """\
# TYPE vllm_router_processed_requests_total counter
vllm_router_processed_requests_total{worker="http://a:1"} 7
vllm_router_processed_requests_total{worker="http://b:2"} 5
vllm_router_cb_outcomes_total{worker="http://b:2",outcome="failure"} 3
vllm_router_worker_health{worker="http://a:1"} 1
vllm_router_worker_health{worker="http://b:2"} 0
vllm_router_retries_total{route="/v1/chat/completions"} 2
vllm_router_processed_requests_total{worker="http://elsewhere:3"} 9
"""


def test_router_counters_are_named_by_replica_and_health_is_a_gauge() -> None:
    out = _router_series(ROUTER_METRICS, ["http://a:1", "http://b:2/"])
    assert out == {"replica0/router:requests": 7.0, "replica1/router:requests": 5.0,
                   "replica1/router:cb:failure": 3.0, "replica0/router:healthy": 1.0,
                   "replica1/router:healthy": 0.0, "router:retries": 2.0}
    before = {"replica1/router:requests": 2.0, "replica1/router:healthy": 1.0}
    deltas = routing_deltas(before, out)
    assert deltas["replica1/router:requests"] == 3.0 and deltas["replica1/router:healthy"] == 0.0


# --- the router process, in front of stub workers (no vLLM) ------------------------------------


@pytest.fixture
def stub_workers(stub_servers: list[http.server.ThreadingHTTPServer]) -> list[str]:
    return [f"http://127.0.0.1:{s.server_address[1]}" for s in stub_servers]


@pytest.fixture
def stub_servers() -> Iterator[list[http.server.ThreadingHTTPServer]]:
    """Two HTTP servers that are healthy and whose /metrics say who they are."""
    servers = []
    for name in ("a", "b"):
        class Handler(http.server.BaseHTTPRequestHandler):
            who = name

            def do_GET(self) -> None:
                metrics = f"stub_requests{{who=\"{self.who}\"}} 1\n".encode()
                body = metrics if self.path == "/metrics" else b"ok"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


@needs_router
def test_router_starts_records_itself_and_stops_with_its_group(
    stub_workers: list[str], tmp_path: Path
) -> None:
    with ManagedRouter(RouterConfig(tuple(stub_workers), "round_robin"), log_dir=tmp_path) as router:
        assert router.proc is not None
        pid = router.proc.pid
        info = router.describe()
        assert info["router"] == f"vllm-router=={router_version()}" and info["policy"] == "round_robin"
        assert info["workers"] == stub_workers and "--policy" in info["args"]
        # Its /metrics is one worker's, another one on the next scrape: not the run's counters.
        seen = {httpx.get(f"{router.base_url}/metrics", timeout=10).text for _ in range(4)}
        assert seen == {'stub_requests{who="a"} 1\n', 'stub_requests{who="b"} 1\n'}
        assert httpx.get(router.metrics_url, timeout=10).status_code == 200  # its own counters
    assert router.log_path.is_file() and router.log_path.parent == tmp_path
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group is gone


@needs_router
def test_a_router_whose_workers_never_answer_fails_with_its_log(tmp_path: Path) -> None:
    from compare.serving.server import free_port

    config = RouterConfig((f"http://127.0.0.1:{free_port()}",), "round_robin", worker_startup_timeout_s=2)
    with pytest.raises(RouterError, match="log"):
        ManagedRouter(config, log_dir=tmp_path, startup_timeout_s=60).start()


CHILD = """
import sys, time
from compare.serving.router import ManagedRouter, RouterConfig
r = ManagedRouter(RouterConfig(tuple(sys.argv[1:]), "round_robin")).start()
print(r.proc.pid, flush=True)
time.sleep(600)
"""


@needs_router
def test_a_router_with_one_worker_left_is_alive(
    stub_servers: list[http.server.ThreadingHTTPServer], stub_workers: list[str]
) -> None:
    """vllm-router's /health is 503 once one worker is unhealthy; the run's liveness check must
    then read its /readiness (200 while a worker is up), or one dead replica behind the router
    stops the whole run as server_down although the router routes around it."""
    import asyncio

    from compare.serving.client import HttpBackend

    async def alive(url: str) -> bool:
        async with HttpBackend(url, "m") as b:
            return await b.health()

    def kill_and_wait(worker: int, page: str) -> None:
        """Stop a worker and wait for the router's health checks to see it (its `page` leaves 200)."""
        stub_servers[worker].shutdown()
        stub_servers[worker].server_close()
        deadline = time.monotonic() + 40
        while httpx.get(f"{router.base_url}{page}", timeout=5).status_code == 200:
            assert time.monotonic() < deadline, f"the router never noticed worker {worker} die"
            time.sleep(1)

    with ManagedRouter(RouterConfig(tuple(stub_workers), "round_robin")) as router:
        assert asyncio.run(alive(router.base_url))
        kill_and_wait(1, "/health")
        assert asyncio.run(alive(router.base_url))  # one worker left: alive
        kill_and_wait(0, "/readiness")
        assert not asyncio.run(alive(router.base_url))


@needs_router
def test_the_router_dies_with_a_killed_run(stub_workers: list[str]) -> None:
    """kill -9 of the process that started it (no clean-up runs) still stops the router."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, *stub_workers], stdout=subprocess.PIPE,
                             cwd=Path(__file__).resolve().parents[2])
    assert child.stdout is not None
    pid = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too (reaped by init)
            if f.read().split()[2] == "Z":
                return
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    pytest.fail("the router outlived the run that started it")


# --- runs through the router, in front of the session's vLLM --------------------------------


def _spec(policy: str, **over: object) -> object:
    from compare.run.spec import validate_spec

    return validate_spec({
        "pipelines": [{"kind": "long_context", "max_tokens": 4}],
        "server": {"router": policy}, "timeout_s": 60.0, **over,
    })


def _run(tmp_path: Path, spec: object, urls: list[str], kill: FaultProxy | None = None,
         at: int = 4) -> tuple[list[tuple[object, ...]], dict[str, object], dict[str, float], str]:
    from compare.run.execute import execute

    db = tmp_path / "router.duckdb"

    def progress(_msg: str, done: int, _total: int) -> None:
        if kill is not None and done == at:
            kill.kill()

    execute(spec, db, say=lambda _m: None, base_url=urls, progress=progress)  # type: ignore[arg-type]
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT example_id, replica, attempts, error FROM predictions").fetchall()
        server, status = con.execute("SELECT server, status FROM runs").fetchone() or ("{}", "")
        stats = dict(con.execute("SELECT name, value FROM server_stats "
                                 "WHERE name LIKE 'replica%' OR name LIKE 'router%'").fetchall())
    return rows, json.loads(server), stats, status


@pytest.mark.slow
@needs_router
def test_a_run_through_the_router_records_where_requests_went(server_url: str, tmp_path: Path) -> None:
    corpus = {"kind": "jsonl", "path": str(book_corpus_dir(tmp_path))}
    with FaultProxy(int(urlparse(server_url).port or 0)) as proxy:
        urls = [server_url.rstrip("/"), proxy.url]
        rows, server, stats, status = _run(tmp_path, _spec("round_robin", corpus=corpus, concurrency=2), urls)
    router = server["router"]
    assert status == "done" and len(rows) == 12 and all(err is None for *_, err in rows)
    assert router["policy"] == "round_robin" and router["workers"] == urls
    assert router["router"] == f"vllm-router=={router_version()}" and "--worker-urls" in router["args"]
    assert {rep for _, rep, _, _ in rows} == {router["base_url"]} == {server["base_url"]}
    # Both replicas served (round robin), counted by the router per worker; each replica's own
    # counters were read from it, not through the router.
    assert stats["replica0/router:requests"] > 0 and stats["replica1/router:requests"] > 0
    assert stats["replica0/vllm:request_success"] > 0 and "replica0/vllm:prefix_cache_hits" in stats


@pytest.mark.slow
@needs_router
def test_a_replica_killed_mid_run_loses_no_row(server_url: str, tmp_path: Path) -> None:
    """The router routes around the dead replica; the rows cut with it are retried through the
    router; the run records the failures (circuit breaker, router retries, row attempts)."""
    corpus = {"kind": "jsonl", "path": str(book_corpus_dir(tmp_path))}
    # The router drops a dead worker after two failed health checks 5 s apart: a row's retries
    # must outlast that window (backoff 2, 4, 8, 16 s), or a row sent to the dead worker each
    # time fails honestly, and the test would measure the timing, not the routing.
    spec = _spec("round_robin", corpus=corpus, concurrency=2, retries=5, retry_backoff_s=2.0)
    with FaultProxy(int(urlparse(server_url).port or 0)) as proxy:
        rows, _, stats, status = _run(tmp_path, spec, [server_url.rstrip("/"), proxy.url], kill=proxy)
    assert status == "done" and len(rows) == 12 and all(err is None for *_, err in rows)
    assert stats.get("replica1/router:cb:failure", 0) > 0  # the router saw the dead replica fail
    assert max(int(str(a)) for _, _, a, _ in rows) > 1 or stats.get("router:retries", 0) > 0
    assert "replica1/vllm:request_success" not in stats  # dead at the end: nothing read from it


@pytest.mark.slow
@needs_router
def test_consistent_hash_needs_a_session_key_to_spread_chats(server_url: str) -> None:
    """Why the router's consistent_hash sends a whole run to one replica: chat requests carry no
    text it hashes, only an x-session-id header (or the body's `user`) spreads them."""
    from compare.serving.router import routing_counters

    chat = {"model": "qwen2.5-coder-0.5b-instruct", "max_tokens": 1}
    with FaultProxy(int(urlparse(server_url).port or 0)) as proxy:
        urls = [server_url.rstrip("/"), proxy.url]
        with ManagedRouter(RouterConfig(tuple(urls), "consistent_hash")) as router:
            info = {"router": router.describe()}
            before = routing_counters(info)
            for doc in range(6):
                body = {**chat, "messages": [{"role": "user", "content": f"document {doc}: hello"}]}
                httpx.post(f"{router.base_url}/v1/chat/completions", json=body, timeout=60).raise_for_status()
            unkeyed = routing_deltas(before, routing_counters(info))
            before = routing_counters(info)
            for doc in range(6):
                body = {**chat, "messages": [{"role": "user", "content": "hello"}]}
                httpx.post(f"{router.base_url}/v1/chat/completions", json=body, timeout=60,
                           headers={"x-session-id": f"doc-{doc}"}).raise_for_status()
            keyed = routing_deltas(before, routing_counters(info))
    def per_replica(d: dict[str, float]) -> list[float]:
        return [d.get(f"replica{i}/router:requests", 0.0) for i in range(2)]

    assert sorted(per_replica(unkeyed)) == [0, 6]
    assert min(per_replica(keyed)) > 0


@pytest.mark.slow
@needs_router
def test_consistent_hash_spreads_documents_and_counters_are_the_replicas_own(
    server_url: str, tmp_path: Path
) -> None:
    """Each request carries its document's key as `x-session-id`, so consistent_hash spreads the
    documents over both workers (without it, one worker got everything); the run's server
    stats are read from the workers themselves and summed (through the router they were the
    router's own /metrics). Both workers here are the one session vLLM (directly and through a
    proxy), so each worker's own counters see every request."""
    # 12 documents: the router's ring (160 virtual nodes per worker, keyed by the workers' random
    # ports) puts all of them on one worker with chance ~2^-11 (with 8: ~1/128; a CI run saw it).
    corpus = {"kind": "jsonl", "path": str(book_corpus_dir(tmp_path, n_docs=12, questions=1))}
    with FaultProxy(int(urlparse(server_url).port or 0)) as proxy:
        urls = [server_url.rstrip("/"), proxy.url]
        rows, server, _, status = _run(tmp_path, _spec("consistent_hash", corpus=corpus), urls)
        through_proxy = proxy.chats
    assert status == "done" and len(rows) == 12 and all(err is None for *_, err in rows)
    # The key is sent only where the probe found a vLLM (or a gateway passing cache_salt): said
    # first, so a failure below is told apart from a probe that found neither.
    caps = server["capabilities"]
    assert caps["session_header"], {k: caps.get(k) for k in ("vllm", "cache_salt", "not_found")}
    # 12 rows + the probe's 2 prompts: without the key all 14 reach one worker (checked with 8
    # documents: 10 of 10 through the proxy); with it the documents spread
    assert 0 < through_proxy < len(rows) + 2, through_proxy
    with duckdb.connect(str(tmp_path / "router.duckdb"), read_only=True) as con:
        sessions = con.execute("SELECT session, name, value FROM server_stats").fetchall()
    by: dict[int, dict[str, float]] = {}
    for session, name, value in sessions:
        by.setdefault(session, {})[name] = value
    run_stats = next(s for s in by.values() if "vllm:request_success" in s)
    routed = next(s for s in by.values() if "replica0/router:requests" in s)
    assert routed["replica0/router:requests"] > 0 and routed["replica1/router:requests"] > 0
    own = [run_stats[f"replica{i}/vllm:request_success"] for i in (0, 1)]
    assert run_stats["vllm:request_success"] == sum(own) and min(own) >= 12
