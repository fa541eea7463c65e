"""OpenAI-compatible async client, timed the way vLLM's serving benchmark times requests.

Streaming goes through the `openai` SDK (it owns SSE parsing, auth and connection reuse); the
timing rules live in compare/serving/stream.py. `/tokenize` and `/metrics` are vLLM extensions the
SDK does not cover, so they are plain `httpx` calls on the same connection settings, made only
where `discover` found them (compare/serving/capabilities.py).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from compare.core.endpoints import Endpoint
from compare.core.errors import BackendError, EmptyStreamError, MissingUsageError, TruncatedStreamError
from compare.core.types import Completion, Message
from compare.serving import capabilities as capability
from compare.serving.endpoint import (
    AuthError,
    BadRequest,
    ContextTooLong,
    RateLimited,
    rate_limited,
    refuses_max_tokens,
    too_long,
)
from compare.serving.prometheus import parse_metrics
from compare.serving.stream import StreamChunk, chunk_from_openai, collect_stream
from compare.serving.tokenizers import LocalTokenizer

__all__ = ["AuthError", "BackendError", "EmptyStreamError", "Endpoint", "HttpBackend", "MissingUsageError",
           "RequestOptions", "StreamChunk", "TruncatedStreamError", "collect_stream"]


@dataclass(frozen=True)
class RequestOptions:
    """What the runner says about one request beyond its messages. Bound to the backend a
    pipeline is handed (`HttpBackend.with_options`), so pipelines need not thread it through.

    `cache_salt`: vLLM's per-request salt: requests with different salts share no prefix-cache
    block, so a document's first request is cold by construction (not warmed by a sibling
    document's identical haystack prefix) while its later questions, sent with the same salt,
    are warm; sent only where the endpoint accepted it. `session_key`: the document's routing
    key, sent as `x-session-id`: vllm-router's consistent_hash policy hashes that header (a chat
    body has nothing else it hashes), so a document's questions reach one replica and its cache.
    `on_first_token`: called once when the first token arrives, i.e. when the prompt has been
    prefilled (and, with prefix caching, is reusable by requests sent after it)."""

    cache_salt: str | None = None
    session_key: str | None = None
    on_first_token: Callable[[], None] | None = None


NO_OPTIONS = RequestOptions()
PROBE_TIMEOUT_S = 120.0  # a stalled endpoint delays the run's start by at most this, not by timeout_s
PROBE_MESSAGES: tuple[Message, ...] = ({"role": "user", "content": "Reply with the word OK."},)


class HttpBackend:
    """One OpenAI-compatible endpoint serving one model: vLLM, a gateway in front of it, or a
    hosted API.

    What the endpoint can do beyond chat completions is asked for (`discover`), never guessed
    from a name: vLLM's routes (/tokenize, /metrics, /health, /version) are used where they
    answer, and a tiny chat says whether `cache_salt` is accepted and what the usage reports.
    Without /tokenize, counts come from `tokenizer` (a LocalTokenizer named in the spec or
    known from the model's name); without /health, liveness is whether `/models` answers."""

    def __init__(
        self,
        base_url: str | Endpoint,
        model: str,
        *,
        timeout_s: float = 600.0,
        max_retries: int = 0,
        tokenizer: LocalTokenizer | None = None,
        declared_max_model_len: int | None = None,
    ) -> None:
        self.endpoint = base_url if isinstance(base_url, Endpoint) else Endpoint(base_url)
        self.base_url = self.endpoint.base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        # Per request (messages, max_tokens) -> seconds, when the run derives it (compare/run/limits.py).
        self.timeout_for: Callable[[Sequence[Message], int], float] | None = None
        self.tokenizer = tokenizer
        self._declared_len = declared_max_model_len
        # The key only ever comes from the environment, so it cannot land in a spec or the store.
        key = self.endpoint.key()
        headers = self.endpoint.resolved_headers()
        self._client = openai.AsyncOpenAI(base_url=self.endpoint.api_url, api_key=key, timeout=timeout_s,
                                          max_retries=max_retries, default_headers=headers or None)
        auth = {"Authorization": f"Bearer {key}", **headers}
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=auth)
        self._max_model_len: int | None = None
        self._token_param = self.endpoint.token_param
        # None: not discovered yet (a plain vLLM URL keeps today's behaviour: extras assumed at
        # the root). After `discover`, each route's URL where it answered (None: not here).
        self.capabilities: dict[str, Any] | None = None
        self._routes: dict[str, str | None] = {r: f"{self.endpoint.root_url}/{r}" for r in capability.ROUTES}

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def with_options(self, options: RequestOptions) -> BoundBackend:
        """This backend with one request's options bound (what a pipeline is handed)."""
        return BoundBackend(self, options)

    def _has(self, extra: str) -> bool:
        return self.capabilities is None or bool(self.capabilities.get(extra))

    async def discover(self, *, chat: bool = True) -> dict[str, Any]:
        """What this endpoint offers: `/models` (one GET, key checked), then each optional route
        at the URL given and at the server root, then (`chat`) one tiny chat that says whether
        `cache_salt` is accepted and what its streamed usage reports."""
        try:
            resp = await self._http.get(f"{self.endpoint.api_url}/models", timeout=30.0)
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.endpoint.api_url}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code in (401, 403):
            raise AuthError(f"{self.endpoint.api_url} refused the API key in ${self.endpoint.api_key_env} "
                            f"(HTTP {resp.status_code})")
        entries, mine = capability.listing(resp, self.model)
        if mine and mine.get("max_model_len"):
            self._max_model_len = int(mine["max_model_len"])
        routes, tried, tokenized = await capability.find_routes(self._http, self.endpoint, self.model)
        self._routes = routes
        if tokenized.get("max_model_len"):
            self._max_model_len = int(tokenized["max_model_len"])
        caps = capability.record(resp.status_code == 200, entries, mine, routes, tried, self.endpoint,
                                 self.tokenizer)
        # [server] probe_chat = false, or a liveness check: not asked, so not known.
        caps |= await self._probe_chat() if chat else capability.UNPROBED
        self.capabilities = capability.settle(caps)
        return self.capabilities

    async def _probe_chat(self) -> dict[str, Any]:
        """One two-token chat with a fresh `cache_salt`: a 400 naming it means not accepted (the
        chat is then asked again without it); the usage says what is reported. Best effort: a
        failure here is met again, and reported, by the run's own requests. What it spent is
        recorded (`probe_chat_usage`): a hosted provider bills it like any request."""
        salt = RequestOptions(cache_salt=f"ragvslc-probe-{uuid.uuid4().hex[:12]}")
        out: dict[str, Any] = {"cache_salt": True, "probe_chat": True}
        wait = min(self.timeout_s, PROBE_TIMEOUT_S)
        sent = 1
        try:
            try:
                got = await self._complete(PROBE_MESSAGES, 2, 0.0, 0, salt, force_salt=True, timeout_s=wait)
            except BadRequest as exc:
                if "cache_salt" not in str(exc) and "extra" not in str(exc).lower():
                    raise
                out["cache_salt"], sent = False, 2
                got = await self._complete(PROBE_MESSAGES, 2, 0.0, 0, NO_OPTIONS, timeout_s=wait)
        except MissingUsageError:  # answered, but said nothing of what it billed
            return {**out, "stream_usage": False, "cached_tokens_reported": False,
                    "probe_chat_usage": capability.probe_usage(sent, None)}
        except AuthError:
            raise
        except BackendError as exc:
            return {**capability.UNPROBED, "probe_chat": True, "chat_probe_error": str(exc)[:300],
                    "probe_chat_usage": capability.probe_usage(sent, None)}
        return {**out, "stream_usage": True, "cached_tokens_reported": got.cached_tokens is not None,
                "probe_chat_usage": capability.probe_usage(sent, got)}

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Completion:
        """Stream one chat completion and time it (no request options: see `with_options`)."""
        return await self._complete(messages, max_tokens, temperature, seed, NO_OPTIONS)

    async def _complete(
        self, messages: Sequence[Message], max_tokens: int, temperature: float, seed: int,
        options: RequestOptions, *, force_salt: bool = False, timeout_s: float | None = None,
    ) -> Completion:
        try:
            return await self._stream(messages, max_tokens, temperature, seed, options, force_salt, timeout_s)
        except BadRequest as exc:
            if self._token_param != "auto" or not refuses_max_tokens(str(exc)):
                raise
            self._token_param = "max_completion_tokens"  # remembered for the rest of the run
            return await self._stream(messages, max_tokens, temperature, seed, options, force_salt, timeout_s)

    async def _stream(
        self, messages: Sequence[Message], max_tokens: int, temperature: float, seed: int,
        options: RequestOptions, force_salt: bool = False, timeout_s: float | None = None,
    ) -> Completion:
        # Where this request's timeout came from, for a timed-out row to say.
        source = "the run's fixed timeout_s" if timeout_s is None else "the caller's"
        if timeout_s is None and self.timeout_for is not None:
            timeout_s, source = self.timeout_for(messages, max_tokens), "the run's rule for this prompt"
        client = self._client if timeout_s is None else self._client.with_options(timeout=timeout_s)
        limit = self.timeout_s if timeout_s is None else timeout_s
        cap = "max_completion_tokens" if self._token_param == "max_completion_tokens" else "max_tokens"
        salt = options.cache_salt if force_salt or self._has("cache_salt") else None
        extra: dict[str, Any] = {"extra_body": {"cache_salt": salt}} if salt else {}
        if options.session_key and self._has("session_header"):
            extra["extra_headers"] = {"x-session-id": options.session_key}
        start = time.perf_counter()
        try:
            stream = await client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model,
                messages=[dict(m) for m in messages],
                temperature=temperature,
                seed=seed,
                stream=True,
                stream_options={"include_usage": True},
                **{cap: max_tokens},
                **extra,
            )
            hook = options.on_first_token
            timed: list[tuple[float, StreamChunk]] = []
            async for raw in _aiter(stream):
                ts = time.perf_counter()
                chunk = chunk_from_openai(raw)
                timed.append((ts, chunk))
                if hook is not None and chunk.text:
                    hook()
                    hook = None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise AuthError(f"{self.endpoint.api_url} refused the API key in ${self.endpoint.api_key_env} "
                            f"({type(exc).__name__})") from exc
        except openai.BadRequestError as exc:  # complete() may retry with max_completion_tokens
            if too_long(str(exc)):
                raise ContextTooLong(self._overflow(exc)) from exc
            raise BadRequest(f"{type(exc).__name__}: {exc}") from exc
        except openai.RateLimitError as exc:  # the runner waits what Retry-After says, then retries
            raise RateLimited(rate_limited(exc.response.headers.get("retry-after"), str(exc))) from exc
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:  # the row says its own limit
            raise BackendError(f"{type(exc).__name__}: no complete answer within this request's timeout "
                               f"of {limit:.1f} s ({source})") from exc
        except (openai.APIError, httpx.HTTPError) as exc:  # httpx: a connection lost mid-stream
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        return collect_stream(start, timed)

    def _overflow(self, exc: Exception) -> str:
        """A provider's context-length refusal, as a row says it: the counts it was planned with."""
        local = None if self._has("tokenize") else self.tokenizer
        counter = "server /tokenize" if local is None else local.name
        approx = " (approximate)" if local is not None and local.approximate else ""
        return (f"context_overflow: the endpoint refused the prompt as longer than its context window "
                f"(counted before sending with {counter}{approx}): {str(exc)[:300]}")

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Message] | None = None) -> int:
        """Exact prompt length with the server's own tokenizer (and chat template for messages);
        the local tokenizer when the endpoint has no /tokenize."""
        url = self._routes.get("tokenize")
        if url is None or not self._has("tokenize"):
            if self.tokenizer is None:
                raise BackendError(f"{self.endpoint.api_url} has no /tokenize: name a local tokenizer "
                                   "([server] tokenizer = \"hf:FOLDER\", a model name, or \"approximate\")")
            return await self.tokenizer.tokenize(text, messages=messages)
        body: dict[str, Any] = {"model": self.model}
        if messages is not None:
            body["messages"] = [dict(m) for m in messages]
            body["add_generation_prompt"] = True
        else:
            body["prompt"] = text or ""
            body["add_special_tokens"] = False
        data = await self._post_json(url, body)
        if data.get("max_model_len"):
            self._max_model_len = int(data["max_model_len"])
        return int(data["count"])

    async def max_model_len(self) -> int:
        """The served context window, as the server reports it (/tokenize's answer, or `/models`
        where a vLLM's listing is passed through), else as the spec declares it."""
        if self._max_model_len is None and self._has("tokenize"):
            await self.tokenize("x")
        if self._max_model_len is None and self._has("models_endpoint"):
            with contextlib.suppress(httpx.HTTPError):
                resp = await self._http.get(f"{self.endpoint.api_url}/models")
                _, mine = capability.listing(resp, self.model)
                if mine and mine.get("max_model_len"):
                    self._max_model_len = int(mine["max_model_len"])
        if self._max_model_len is None and self._declared_len is not None:
            self._max_model_len = self._declared_len
        if self._max_model_len is None:
            raise BackendError("server did not report max_model_len; pass --max-model-len")
        return self._max_model_len

    async def metrics(self) -> dict[str, float]:
        """Current values of the server's counters; empty if the endpoint has no vLLM /metrics."""
        url = self._routes.get("metrics")
        if url is None or not self._has("metrics"):
            return {}
        try:
            resp = await self._http.get(url)
        except httpx.HTTPError:
            return {}
        if resp.status_code != 200:
            return {}
        return parse_metrics(resp.text)

    async def health(self) -> bool:
        """Whether the server still answers; tells a dead server from a bad request. Without
        /health, the standard /models answering counts as alive. A vllm-router's /health is 503
        as soon as one worker is down while it still serves from the others: its /readiness
        (200 while a worker is up; a plain vLLM has none) then says it is alive."""
        url = self._routes.get("health")
        if url is None or not self._has("health"):
            return await self._ok(f"{self.endpoint.api_url}/models")
        return await self._ok(url) or await self._ok(url.removesuffix("/health") + "/readiness")

    async def _ok(self, url: str) -> bool:
        try:
            resp = await self._http.get(url, timeout=10.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def version(self) -> str | None:
        url = self._routes.get("version")
        if url is None or not self._has("version"):
            return None
        try:
            resp = await self._http.get(url)
        except httpx.HTTPError:
            return None
        return str(resp.json().get("version")) if resp.status_code == 200 else None

    async def _post_json(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        path = "/" + url.rsplit("/", 1)[-1]
        try:
            resp = await self._http.post(url, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise BackendError(f"{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        result: dict[str, Any] = resp.json()
        return result


class BoundBackend:
    """An HttpBackend with one request's options (cache salt, routing key, first-token hook):
    the Backend a pipeline is handed for one question. Everything else is the shared backend's
    (its clients, what it discovered, what it learned during the run)."""

    def __init__(self, backend: HttpBackend, options: RequestOptions) -> None:
        self.backend = backend
        self.options = options
        self.model = backend.model

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Completion:
        return await self.backend._complete(messages, max_tokens, temperature, seed, self.options)

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Message] | None = None) -> int:
        return await self.backend.tokenize(text, messages=messages)

    async def max_model_len(self) -> int:
        return await self.backend.max_model_len()

    def __getattr__(self, name: str) -> Any:  # metrics, version, endpoint, ...: the shared backend's
        return getattr(self.backend, name)


async def _aiter(stream: Any) -> AsyncIterator[Any]:
    async for item in stream:
        yield item
