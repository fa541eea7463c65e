"""What an OpenAI-compatible endpoint offers beyond chat completions, found by asking for it.

vLLM's extra routes (/tokenize, /metrics, /health, /version) make counts exact, cache hit rates
measurable and a dead server tellable from a bad request. Behind a gateway (LiteLLM, an API
gateway, an ingress with a path prefix, a provider serving vLLM under its own URL) any of them
may be missing even when `/models` is vLLM's own answer passed through (`owned_by: "vllm"`),
so nothing is inferred from a name: each route is asked for once, at the URL the user gave and
then at the server root, and a 404/405/501 (or an answer not in the route's own shape: a
gateway's page, its own metrics) means "not here". What was found is remembered for the run
and recorded with it (`runs.server.capabilities`), with the fallback each missing one implies,
so a report can say which numbers the server measured and which were estimated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx

from compare.core.endpoints import Endpoint
from compare.core.types import Completion
from compare.serving.prometheus import parse_metrics
from compare.serving.tokenizers import LocalTokenizer

ROUTES = ("tokenize", "metrics", "health", "version")
NOT_HERE = (404, 405, 501)  # the answers that mean "no such route"; anything else is recorded as seen
# What only the probe chat can tell, when it is not sent (`[server] probe_chat = false`: a hosted
# provider bills it; or a liveness check): unknown, so cache_salt is not sent.
# How long each route may take to answer its probe. vLLM's /health answers at once, so a slow one
# is not vLLM's: LiteLLM's /health makes a real chat to every upstream (37-53 s on a loaded 2-core
# CPU), which would hold every run's start for the whole 30 s. Recorded with the capabilities.
PROBE_TIMEOUT_S = 30.0
PROBE_TIMEOUTS_S = {"health": 5.0}
UNPROBED: dict[str, Any] = {"probe_chat": False, "cache_salt": None, "stream_usage": None,
                            "cached_tokens_reported": None}


def probe_usage(requests: int, got: Completion | None) -> dict[str, Any]:
    """What the probe chat spent, recorded with the run's capabilities (its start-up overhead, kept
    out of the per-question rows so no pipeline is charged for it): None where not reported."""
    return {"requests": requests, "prompt_tokens": got.prompt_tokens if got else None,
            "output_tokens": got.output_tokens if got else None,
            "cached_tokens": got.cached_tokens if got else None}


def total_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """Every replica's probe chat summed (each sends one): a count unknown anywhere is unknown."""
    def add(key: str) -> int | None:
        got = [u.get(key) for u in usages]
        known = [int(v) for v in got if v is not None]
        return sum(known) if len(known) == len(got) else None
    return {"requests": sum(int(u.get("requests") or 0) for u in usages),
            **{k: add(k) for k in ("prompt_tokens", "output_tokens", "cached_tokens")}}


def candidates(endpoint: Endpoint) -> list[str]:
    """Where a route may live: under the URL as given (a gateway that forwards a prefix), then at
    the server root (vLLM's own layout, `http://host:8000/v1` -> `http://host:8000/tokenize`)."""
    given = endpoint.base_url.rstrip("/")
    return [given] if given == endpoint.root_url else [given, endpoint.root_url]


def _usable(route: str, resp: httpx.Response) -> tuple[bool, str]:
    """Whether a 200 is the route itself, and why not: a gateway can answer any path with a page,
    export its own Prometheus series, or report the health of its upstreams with a 200."""
    if resp.status_code != 200:
        return False, f"HTTP {resp.status_code}"
    if route == "metrics":
        try:
            series = parse_metrics(resp.text)
        except ValueError:
            return False, "not Prometheus text"
        return (True, "") if series else (False, "no vllm: series (not the engine's counters)")
    if route == "health":
        # LiteLLM's /health answers 200 with {"unhealthy_endpoints": [...]} while its upstream is
        # down, so it cannot tell a dead server; vLLM's (and vllm-router's) carries no such list.
        body = _json(resp)
        ok = not (isinstance(body, Mapping) and "unhealthy_endpoints" in body)
        return ok, "" if ok else "a gateway's upstream report"
    body = _json(resp)
    if route == "tokenize":
        ok = isinstance(body, Mapping) and isinstance(body.get("count"), int)
        return ok, "" if ok else "no token count in the answer"
    ok = isinstance(body, Mapping) and isinstance(body.get("version"), str)
    return ok, "" if ok else "no version in the answer"


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


async def _ask(http: httpx.AsyncClient, route: str, url: str, model: str) -> httpx.Response | str:
    wait = PROBE_TIMEOUTS_S.get(route, PROBE_TIMEOUT_S)
    try:
        if route == "tokenize":
            return await http.post(url, json={"model": model, "prompt": "x", "add_special_tokens": False},
                                   timeout=wait)
        return await http.get(url, timeout=wait)
    except httpx.TimeoutException as exc:
        return f"{type(exc).__name__} after {wait:g} s"
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def find_route(
    http: httpx.AsyncClient, endpoint: Endpoint, route: str, model: str
) -> tuple[str | None, list[str], httpx.Response | None]:
    """The URL where `route` answers in its own shape (or None), what each place tried said, and
    the answer found (a /tokenize answer carries the window)."""
    tried: list[str] = []
    for base in candidates(endpoint):
        url = f"{base}/{route}"
        got = await _ask(http, route, url, model)
        if isinstance(got, str):
            tried.append(f"{url}: {got}")
            continue
        ok, why = _usable(route, got)
        if ok:
            return url, tried, got
        tried.append(f"{url}: {why}" + (" (not here)" if got.status_code in NOT_HERE else ""))
    return None, tried, None


async def find_routes(
    http: httpx.AsyncClient, endpoint: Endpoint, model: str
) -> tuple[dict[str, str | None], dict[str, list[str]], dict[str, Any]]:
    """Every optional route at once: where each answers, what was tried, and the /tokenize answer."""
    found = await asyncio.gather(*(find_route(http, endpoint, r, model) for r in ROUTES))
    urls = {r: f[0] for r, f in zip(ROUTES, found, strict=True)}
    tried = {r: f[1] for r, f in zip(ROUTES, found, strict=True) if f[1] and f[0] is None}
    tok = found[0][2]
    return urls, tried, (_json(tok) if tok is not None else None) or {}


def listing(resp: httpx.Response, model: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A `/models` answer's entries (none when it is not one), and the entry of `model` if listed."""
    entries: list[dict[str, Any]] = []
    if resp.status_code == 200:
        try:
            data = resp.json().get("data", [])
        except (ValueError, AttributeError):
            data = []
        entries = [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
    return entries, next((e for e in entries if e.get("id") == model), None)


def record(
    models_endpoint: bool, entries: list[dict[str, Any]], mine: Mapping[str, Any] | None,
    routes: Mapping[str, str | None], tried: Mapping[str, list[str]], endpoint: Endpoint,
    tokenizer: LocalTokenizer | None,
) -> dict[str, Any]:
    """What `/models` and the route probes found, as the run records it (before the probe chat;
    `settle` completes it). Written here, beside `sources` and `fallback_line` that read it."""
    found = {r: routes[r] is not None for r in ROUTES}
    return {
        "models_endpoint": models_endpoint,
        "model_listed": mine is not None if entries else None,
        "owned_by": sorted({str(e.get("owned_by")) for e in entries if e.get("owned_by")}),
        # vLLM's own extras answer here (not: /models says vllm, which a gateway passes through).
        "vllm": found["tokenize"] or found["metrics"],
        **found, "routes": {r: u for r, u in routes.items() if u}, "not_found": dict(tried),
        "probe_timeouts_s": {r: PROBE_TIMEOUTS_S.get(r, PROBE_TIMEOUT_S) for r in ROUTES},
        **_counter(found["tokenize"], tokenizer),
        **endpoint.describe(),
    }


def _counter(tokenize: bool, tokenizer: LocalTokenizer | None) -> dict[str, Any]:
    """Who counts tokens before a request: the server, the local tokenizer, or nobody."""
    if tokenize:
        return {"tokenizer": "server /tokenize", "tokenizer_approximate": False}
    if tokenizer is None:
        return {"tokenizer": None, "tokenizer_approximate": None}
    return {"tokenizer": tokenizer.name, "tokenizer_approximate": tokenizer.approximate}


def settle(caps: dict[str, Any]) -> dict[str, Any]:
    """The record completed once the probe chat's answers (or UNPROBED) are in: where the routing
    key may go (a vLLM, or a gateway that forwards vLLM's request fields), and each number's source."""
    caps["session_header"] = bool(caps["vllm"] or caps.get("cache_salt"))
    caps["sources"] = sources(caps)
    return caps


def sources(caps: Mapping[str, Any]) -> dict[str, str]:
    """Which number came from where in this run: the server's own measurement or an estimate."""
    counter = caps.get("tokenizer") or "none"
    if caps.get("tokenizer_approximate"):
        counter += " (approximate)"
    unprobed = caps.get("probe_chat") is False
    return {
        "prompt_tokens": "each response's usage" if caps.get("stream_usage") is not False else "not reported",
        "cached_tokens": "each response's usage" + (" where reported (not probed)" if unprobed else "")
        if caps.get("cached_tokens_reported") or unprobed else "not reported",
        "budgets_and_windows": counter,
        "server_hit_rate": "server /metrics" if caps.get("metrics") else "none (no /metrics here)",
        "liveness": "server /health" if caps.get("health") else "/models answering",
        "cache_isolation": "cache_salt" if caps.get("cache_salt") else
        "none (probe chat off: cache_salt not sent)" if unprobed else "none (cache_salt not accepted)",
    }


def fallback_line(caps: Mapping[str, Any]) -> str | None:
    """The one line a run says about what it will do without: None when nothing is missing."""
    missing = [r for r in ROUTES if not caps.get(r)]
    unprobed = caps.get("probe_chat") is False
    if not missing and caps.get("cache_salt") is not False and caps.get("stream_usage") is not False \
            and not unprobed:
        return None
    tok = f"{caps.get('tokenizer')}" + (" (an approximation)" if caps.get("tokenizer_approximate") else "")
    head = (f"endpoint {caps.get('api_url')}: no vLLM extras (/tokenize, /metrics, /health, /version "
            "not found here or at the server root)" if len(missing) == len(ROUTES) else
            f"endpoint {caps.get('api_url')}: not found: " + ", ".join(f"/{r}" for r in missing)
            if missing else f"endpoint {caps.get('api_url')}")
    parts = [head]
    if unprobed:
        parts.append("no probe chat ([server] probe_chat = false): cache_salt, streamed usage and cached "
                     "tokens unknown; cache_salt not sent, so documents are not cache-isolated")
    if not caps.get("tokenize"):
        parts.append(f"tokens counted with {tok} before a request, each response's usage after it")
    if not caps.get("metrics"):
        none = not (caps.get("cached_tokens_reported") or unprobed)
        parts.append("no server-side cache hit rate (cached tokens from each response's usage"
                     + (", which reports none" if none else "") + ")")
    if not caps.get("health"):
        parts.append("liveness from /models")
    if caps.get("cache_salt") is False:
        parts.append("cache_salt refused: documents are not cache-isolated")
    if caps.get("stream_usage") is False:
        parts.append("no usage in the stream: rows cannot be counted or priced")
    return "; ".join(parts)
