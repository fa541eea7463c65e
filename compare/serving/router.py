"""vLLM's own router (`vllm-router`) in front of several replicas, started and stopped with a run.

A deployment with several replicas already has a router; measuring the one users run (the vLLM
project's Rust load balancer: cache-aware, consistent-hash, round-robin and power-of-two
policies, health checks, retries, circuit breakers) says more than re-implementing one. The run
talks to the router's one URL, so the same run works against a router a user already operates
(`--base-url http://router:port`); ragvslc's own document affinity (compare/serving/pool.py) is
the `client` policy, kept to be measured against it (benchmarks/router.py).

What vllm-router 0.1.17 tells and does not tell, checked here against real vLLM servers:

- No response header names the worker that served a request: the headers are the worker's,
  passed through (plus `x-request-id`).
- `/metrics` on the router's port is one worker's `/metrics`, a different worker on each scrape,
  so counters read through it are not the run's. The router's own Prometheus endpoint
  (`--prometheus-port`) counts per worker: requests processed, policy decisions,
  circuit-breaker failures, health, retries.
- `cache_aware` matches token prefixes that it asks each worker for at
  `/v1/chat/completions/render`, which vLLM serves only with `--enable-scale-out`; without it
  every chat request is "missing_tokens" and they all go to one worker. Replicas started behind
  a router get the flag (compare/serving/replicas.py).
- `consistent_hash` hashes an `x-session-id` header (or the body's `user`); chat requests without
  either all hash to the same key, so one worker gets everything.
- `/health` is 503 as soon as one worker is unhealthy (`/readiness` stays 200 while one is up).

So which replica served how much is measured from per-replica `/metrics` deltas, read by the
run from the replicas themselves (the pool's stats sources, compare/serving/pool.py: the
router's own /metrics are its counters, not the engines'), summed over the replicas into the
run's server stats, and from the router's per-worker counters (`routing_counters`), recorded
per run session as `replica<i>/router:...` (the same replica numbering). Per row,
managed replicas name themselves in every response (vLLM's `system_fingerprint`, set per replica
by compare/serving/replicas.py): that is the one in-band signal a client can record per row.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

import httpx
from prometheus_client.parser import text_string_to_metric_families

from compare.serving.server import (
    ManagedProcess,
    ManagedServer,
    ServerError,
    free_port,
    port_in_use,
)

RouterPolicy = Literal["cache_aware", "consistent_hash", "round_robin", "power_of_two"]
POLICIES: tuple[str, ...] = get_args(RouterPolicy)
DIST = "vllm-router"

# Set unless the spec's router_args name them: the defaults (a check a minute, three failures)
# keep a dead replica in rotation for minutes; the router's own retries hide that from requests
# but not from its /health. Workers are checked every second at start (default: every 30 s).
DEFAULT_FLAGS: tuple[tuple[str, str], ...] = (
    ("--health-check-interval-secs", "5"),
    ("--health-failure-threshold", "2"),
    ("--worker-startup-check-interval", "1"),
    ("--log-level", "info"),
)

# The router's own Prometheus series that say where requests went (labelled by worker URL).
ROUTER_SERIES = {
    "vllm_router_processed_requests": "router:requests",
    "vllm_router_cb_outcomes": "router:cb",  # split by outcome: success / failure
    "vllm_router_worker_health": "router:healthy",  # a gauge: 1 healthy, 0 dropped
}


class RouterError(ServerError):
    """The router could not start; the message carries the end of its log."""


def router_version() -> str | None:
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def router_binary() -> str:
    """The vllm-router launcher of this environment (beside its Python), else one on PATH."""
    here = Path(sys.executable).parent / "vllm-router"
    found = str(here) if here.is_file() else shutil.which("vllm-router")
    if found is None or router_version() is None:
        raise RouterError(
            "vllm-router is not installed (pip install 'ragvslc[router]'; Linux x86-64 wheels "
            "only); or route by document in the client: [server] router = \"client\""
        )
    return found


@dataclass(frozen=True)
class RouterConfig:
    """Everything about the router that can change where requests go; recorded with the run."""

    workers: tuple[str, ...]
    policy: RouterPolicy = "cache_aware"
    extra_args: tuple[str, ...] = ()
    worker_startup_timeout_s: int = 120

    def args(self, port: int, metrics_port: int) -> list[str]:
        named = {a.partition("=")[0] for a in self.extra_args}
        defaults = [x for flag, value in DEFAULT_FLAGS if flag not in named for x in (flag, value)]
        if "--worker-startup-timeout-secs" not in named:
            defaults += ["--worker-startup-timeout-secs", str(self.worker_startup_timeout_s)]
        return [
            "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *self.workers,
            "--policy", self.policy,
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
            *defaults, *self.extra_args,
        ]


class ManagedRouter(ManagedProcess):
    """One vllm-router process: its own process group and log, stopped however the run ends
    (Ctrl-C, kill, error), with ManagedServer's lifecycle (compare/serving/server.py)."""

    what = "vllm-router"
    log_name = "vllm-router"
    ready_path = "/readiness"  # it binds its port only once its workers are healthy
    not_ready = "not ready"
    error = RouterError
    poll_s = 0.25
    stop_grace_s = 10.0
    startup_digits = 2

    def __init__(
        self,
        config: RouterConfig,
        *,
        port: int | None = None,
        startup_timeout_s: float = 180.0,
        progress: Callable[[str], None] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        if len(config.workers) < 1:
            raise RouterError("a router needs at least one worker URL")
        self.config = config
        self.binary = router_binary()
        self.version = router_version()
        super().__init__(port=port, startup_timeout_s=startup_timeout_s, progress=progress, log_dir=log_dir)
        self.metrics_port = free_port()
        self.restarts = 0
        # Managed replicas behind this router (RoutedServer sets itself here): a restarted one
        # comes back on a new port, and the router is re-pointed at it.
        self.replicas: list[ManagedServer] = []

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        return [self.binary, *self.config.args(self.port, self.metrics_port)]

    def _env(self) -> dict[str, str]:
        return _env()

    def _announce(self) -> str:
        workers = ", ".join(self.config.workers)
        return f"vllm-router {self.version} ({self.config.policy}) in front of {workers}"

    def describe(self) -> dict[str, Any]:
        """What the store records: the router's version, policy, flags and workers (their order
        is the `replica<i>` numbering of the per-replica counters)."""
        return {
            "router": f"{DIST}=={self.version}", "policy": self.config.policy,
            "args": self.command()[1:], "workers": list(self.config.workers),
            "base_url": self.base_url, "metrics_url": self.metrics_url, "startup_s": self.startup_s,
            "log": str(self.log_path), **({"restarts": self.restarts} if self.restarts else {}),
            # How "which replica served" is known (no response header names the worker):
            "replica_attribution": "server_stats replica<i>/...: each replica's /metrics deltas (read "
                                   "from it) and the router's per-worker counters, per session",
        }

    def repoint(self, workers: Sequence[str]) -> None:
        """The same router (same port, same policy) in front of another set of workers: a
        restart, because a policy's view of the workers (cache trees, hash ring) starts over."""
        self.stop()
        self.config = replace(self.config, workers=tuple(workers))
        self.restarts += 1
        if port_in_use(self.port):  # someone took the port meanwhile: the run follows base_url
            self.port = free_port()
        self.metrics_port = free_port()
        self.start()


class RoutedServer(ManagedServer):
    """A managed replica behind a managed router. `execute` restarts a dead replica on a fresh
    port; the router is then re-pointed, so the run's one URL keeps working."""

    router: ManagedRouter | None = None

    def restart(self) -> None:
        super().restart()
        if self.router is not None:
            self.router.repoint([s.base_url for s in self.router.replicas])


def router_installed() -> bool:
    """Whether a vllm-router can be started here (its wheel is Linux x86-64 only)."""
    try:
        router_binary()
    except RouterError:
        return False
    return True


def routing_policy(router: str | None, servers: int, *, managed: bool) -> str | None:
    """How requests reach `servers` replicas: None for one server, "client" for ragvslc's own
    document affinity (compare/serving/pool.py), else a vllm-router policy. Unset: the router's
    default (cache_aware), for managed replicas and a list of URLs alike: benchmarks/router.py
    found our affinity no faster in every pass (1.02x overall), so the router routes; where no
    vllm-router can be installed, client affinity is the fallback. `managed` is kept for the
    callers' record: both kinds of replicas follow this rule."""
    if servers < 2:
        if router not in (None, "client"):
            raise RouterError(f"router = {router!r} spreads requests over replicas: start replicas >= 2 "
                              "or give several --base-url (for a router you already run: its URL alone)")
        return None
    return router or ("cache_aware" if router_installed() else "client")


@contextlib.contextmanager
def managed_router(
    workers: Sequence[str], policy: str | None, router_args: Sequence[str], say: Callable[[str], None],
    *, replicas: Sequence[ManagedServer] = (),
) -> Iterator[ManagedRouter]:
    """A vllm-router with `policy` in front of `workers` for the block; managed `replicas`
    (RoutedServer) are tied to it so that restarting one re-points the router."""
    if policy not in POLICIES:
        raise RouterError(f"unknown router policy {policy!r}; one of {', '.join(POLICIES)} or client")
    config = RouterConfig(tuple(workers), cast(RouterPolicy, policy), tuple(router_args))
    with ManagedRouter(config, progress=say) as router:
        router.replicas = list(replicas)
        for s in replicas:
            if isinstance(s, RoutedServer):
                s.router = router
        say(f"vllm-router ({policy}) ready at {router.base_url} after {router.startup_s:.1f}s")
        yield router


def session_routing(before: Mapping[str, float], info: Mapping[str, Any]) -> dict[str, float]:
    """Where a router of ours sent one session's requests (empty without one): the deltas of
    `routing_counters` since `before`, stored by the run as a server_stats session of its own."""
    if not before:
        return {}
    after = routing_counters(info)
    return routing_deltas(before, after) if after else {}


def _env() -> dict[str, str]:
    """The router only speaks HTTP to its workers; nothing of it may reach the network or the
    Hub (it can load tokenizers), and its log file is plain text."""
    return {**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def router_of(info: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The router section of a run's server description, if a router ragvslc started fronts it."""
    section = info.get("router")
    return section if isinstance(section, Mapping) and section.get("workers") else None


def router_workers(info: Mapping[str, Any]) -> list[str]:
    """The replicas behind a router of ours (empty without one), in the router's order."""
    section = router_of(info)
    return [str(w) for w in section["workers"]] if section is not None else []


def routing_counters(info: Mapping[str, Any], timeout_s: float = 10.0) -> dict[str, float]:
    """The router's per-worker counters as `replica<i>/router:<name>` and its retries as
    `router:retries` (the replicas' own engine counters are the run's server stats). Empty when
    no router of ours fronts the run, or it does not answer."""
    section = router_of(info)
    if section is None:
        return {}
    text = _get(str(section["metrics_url"]), timeout_s)
    return _router_series(text, router_workers(info)) if text is not None else {}


def _router_series(text: str, workers: Sequence[str]) -> dict[str, float]:
    index = {w.rstrip("/"): i for i, w in enumerate(workers)}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            base = s.name.removesuffix("_total")
            if base == "vllm_router_retries":
                out["router:retries"] = out.get("router:retries", 0.0) + float(s.value)
            name = ROUTER_SERIES.get(base)
            i = index.get(str(s.labels.get("worker", "")).rstrip("/"))
            if name is None or i is None:
                continue
            key = f"replica{i}/{name}" + (f":{s.labels['outcome']}" if "outcome" in s.labels else "")
            out[key] = out.get(key, 0.0) + float(s.value)
    return out


def routing_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Counters as deltas over the session; the health gauge as its value at the end (0: the
    router dropped that replica during the session)."""
    return {k: (v if k.endswith("router:healthy") else v - before.get(k, 0.0)) for k, v in after.items()}


def _get(url: str, timeout_s: float) -> str | None:
    try:
        resp = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None

