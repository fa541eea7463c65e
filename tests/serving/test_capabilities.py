"""Capabilities are asked for, not guessed (issue 27): the shape each optional route must answer
in, the one line a run says about what is missing, a provider's refusals read as what they mean,
and request options that travel with the request (issue 26 item 4), against the real server."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from compare.core.endpoints import Endpoint
from compare.core.types import Completion, Example, Prediction
from compare.run.runner import FailurePolicy, _attempts
from compare.serving import weights as models
from compare.serving.capabilities import _usable, fallback_line, sources
from compare.serving.client import HttpBackend, RequestOptions
from compare.serving.endpoint import rate_limited, refuses_max_tokens, retry_after_s, too_long
from tests.fixtures.hosted_proxy import HostedProxy

# HostedProxy kept: it records each request's body and headers to assert on
VLLM_METRICS = "# TYPE vllm:prompt_tokens counter\nvllm:prompt_tokens_total 12.0\n"
GATEWAY_METRICS = "# TYPE litellm_requests counter\nlitellm_requests_total 3.0\n"


def _resp(status: int, body: str | dict[str, object]) -> httpx.Response:
    text = json.dumps(body) if isinstance(body, dict) else body
    return httpx.Response(status, text=text)


def test_a_route_counts_only_when_it_answers_in_its_own_shape() -> None:
    assert _usable("tokenize", _resp(200, {"count": 3, "max_model_len": 4096}))[0]
    assert not _usable("tokenize", _resp(200, "<!DOCTYPE html><html>gateway</html>"))[0]
    assert _usable("tokenize", _resp(404, {"detail": "Not Found"})) == (False, "HTTP 404")
    assert _usable("metrics", _resp(200, VLLM_METRICS))[0]
    assert _usable("metrics", _resp(200, GATEWAY_METRICS)) == (
        False, "no vllm: series (not the engine's counters)")
    assert _usable("health", _resp(200, ""))[0]  # vLLM's: an empty 200
    litellm = {"healthy_endpoints": [], "unhealthy_endpoints": [{"model": "x"}], "healthy_count": 0}
    assert not _usable("health", _resp(200, litellm))[0]  # 200 while its upstream is down
    assert _usable("version", _resp(200, {"version": "0.11.0"}))[0]
    assert not _usable("version", _resp(200, {"detail": "ok"}))[0]


def test_the_run_says_once_what_it_does_without() -> None:
    everything = {"api_url": "http://h/v1", "tokenize": True, "metrics": True, "health": True,
                  "version": True, "cache_salt": True, "stream_usage": True, "cached_tokens_reported": True,
                  "tokenizer": "server /tokenize", "tokenizer_approximate": False}
    assert fallback_line(everything) is None
    assert sources(everything)["server_hit_rate"] == "server /metrics"
    gateway = {**everything, "tokenize": False, "metrics": False, "health": False, "version": False,
               "cache_salt": False, "tokenizer": "approximate:chars/4", "tokenizer_approximate": True}
    line = fallback_line(gateway)
    assert line is not None and line.startswith("endpoint http://h/v1: no vLLM extras")
    for part in ("tokens counted with approximate:chars/4 (an approximation)",
                 "no server-side cache hit rate", "liveness from /models", "cache_salt refused"):
        assert part in line, line
    assert sources(gateway)["budgets_and_windows"] == "approximate:chars/4 (approximate)"
    partial = fallback_line({**everything, "metrics": False})
    assert partial is not None and partial.startswith("endpoint http://h/v1: not found: /metrics")


def test_provider_refusals_read_as_what_they_mean() -> None:
    vllm = ("Error code: 400 - {'message': \"'max_tokens' or 'max_completion_tokens' is too large: 8. This "
            "model's maximum context length is 4096 tokens and your request has 5210 input tokens\"}")
    assert too_long(vllm)  # checked before the max_tokens refusal, which the same text also matches
    assert refuses_max_tokens(vllm)
    assert too_long("Error code: 400 - {'error': {'code': 'context_length_exceeded'}}")
    assert too_long("prompt is too long: 210000 tokens > 200000 maximum")
    assert not too_long("Unsupported parameter: 'max_tokens' is not supported with this model.")
    msg = rate_limited("60", "Rate limit exceeded for api_key")
    assert msg.startswith("rate_limited: HTTP 429, retry after 60 s: Rate limit")
    assert retry_after_s(msg) == 60.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    got = retry_after_s(rate_limited(later, "slow down"))
    assert got is not None and 25.0 <= got <= 30.0
    assert retry_after_s(rate_limited(None, "slow down")) is None
    assert retry_after_s("BackendError: HTTP 500") is None


class _Twice:
    """A pipeline stub above the runner's retry: rate-limited once, then answered."""

    name = "stub"
    role = "long_context"

    def __init__(self, first_error: str) -> None:
        self.calls: list[float] = []
        self.first_error = first_error

    async def answer(self, example: Example, backend: object) -> Prediction:
        self.calls.append(time.monotonic())
        if len(self.calls) == 1:
            return Prediction("", None, 0, error=self.first_error)
        done = Completion("ok", 5, 0, 1, 0.1, 0.1, (), "stop")
        return Prediction("ok", done, 5)


async def test_a_429_is_retried_after_what_retry_after_says() -> None:
    stub = _Twice(rate_limited("0.6", "slow down"))
    ex = Example("q", ("d",), "?", ("a",))
    pred, attempts = await _attempts(stub, ex, None, FailurePolicy(retries=1, backoff_s=0.01))  # type: ignore[arg-type]
    assert pred.ok and attempts == 2
    assert stub.calls[1] - stub.calls[0] >= 0.55  # the provider's wait, not the 10 ms backoff


@pytest.mark.slow
async def test_the_real_vllm_offers_every_capability_at_its_root(server_url: str) -> None:
    async with HttpBackend(server_url.rstrip("/") + "/v1", models.DEFAULT_MODEL, timeout_s=120) as b:
        caps = await b.discover()
    assert all(caps[r] for r in ("tokenize", "metrics", "health", "version")) and caps["vllm"]
    root = server_url.rstrip("/").removesuffix("/v1")
    assert caps["routes"]["tokenize"] == f"{root}/tokenize"  # not under /v1: asked there first, then the root
    assert caps["cache_salt"] is True and caps["stream_usage"] is True
    assert caps["cached_tokens_reported"] is True and caps["tokenizer"] == "server /tokenize"
    assert fallback_line(caps) is None


@pytest.mark.slow
async def test_request_options_travel_with_the_request(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The salt and the routing key reach the wire from the options bound to the backend a
    pipeline is handed (no context variable); the unbound backend sends neither."""
    monkeypatch.setenv("PROXY_KEY", "k-1")
    with HostedProxy(server_url, "k-1", verbatim_models=True) as proxy:
        endpoint = Endpoint(proxy.base_url, "PROXY_KEY")
        async with HttpBackend(endpoint, models.DEFAULT_MODEL, timeout_s=120) as b:
            await b.discover()
            seen: list[str] = []
            bound = b.with_options(RequestOptions(cache_salt="salt-a", session_key="doc-a",
                                                  on_first_token=lambda: seen.append("first")))
            msgs = [{"role": "user", "content": "Say hi."}]
            await asyncio.gather(bound.complete(msgs, max_tokens=2), b.complete(msgs, max_tokens=2))
    sent = zip(proxy.bodies[1:], proxy.sessions[1:], strict=True)  # [0]: discover's probe chat
    by_salt = {body.get("cache_salt"): session for body, session in sent}
    assert by_salt == {"salt-a": "doc-a", None: None} and seen == ["first"]
