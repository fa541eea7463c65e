"""OpenAI-compatible async client, timed the way vLLM's serving benchmark times requests.

Streaming goes through the `openai` SDK (it owns SSE parsing, auth and connection reuse); the
timing rules live in `collect_stream`, a pure function over (timestamp, chunk) pairs so that a
scripted stream can pin them in a unit test. `/tokenize` and `/metrics` are vLLM extensions the
SDK does not cover, so they are plain `httpx` calls on the same connection settings.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from compare.core.errors import BackendError, EmptyStreamError, MissingUsageError, TruncatedStreamError
from compare.core.types import Completion, Message
from compare.serving.endpoint import AuthError, BadRequest, Endpoint, read_usage, refuses_max_tokens
from compare.serving.prometheus import parse_metrics
from compare.serving.tokenizers import LocalTokenizer

__all__ = ["AuthError", "BackendError", "EmptyStreamError", "Endpoint", "HttpBackend", "MissingUsageError",
           "TruncatedStreamError"]

# Called once when the request running in this context receives its first token, i.e. when its
# prompt has been prefilled (and, with prefix caching, is reusable by requests sent after it).
# A context variable rather than an argument, so pipelines need not thread it through.
first_token_hook: ContextVar[Callable[[], None] | None] = ContextVar("first_token_hook", default=None)
# vLLM's `cache_salt` for the request running in this context: requests with different salts
# share no prefix-cache block, so a document's first request is cold by construction (not warmed
# by a sibling document's identical haystack prefix) while its later questions, sent with the
# same salt, are warm. Set by the runner per (pipeline config, document); only vLLM gets it.
cache_salt: ContextVar[str | None] = ContextVar("cache_salt", default=None)
# The document key of the request running in this context, sent to vLLM-served endpoints as
# `x-session-id`: vllm-router's consistent_hash policy hashes that header (a chat body has
# nothing else it hashes), so a document's questions reach one replica and its prefix cache.
session_key: ContextVar[str | None] = ContextVar("session_key", default=None)


@dataclass(frozen=True)
class StreamChunk:
    """What one SSE chunk contributes to timing: its token text and, at the end, usage."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    cache_write_tokens: int | None = None
    served_by: str | None = None


def collect_stream(start: float, chunks: Iterable[tuple[float, StreamChunk]]) -> Completion:
    """Turn timestamped chunks into a Completion.

    TTFT is the first chunk carrying text; ITL are the gaps between text chunks; E2E ends at
    the last text chunk (so E2E - TTFT == sum(ITL) exactly); usage comes from the usage chunk.
    A stream without a token, without a finish reason or without usage raises (see the errors).
    """
    first: float | None = None
    last: float | None = None
    itl: list[float] = []
    parts: list[str] = []
    finish: str | None = None
    prompt_tokens: int | None = None
    cached: int | None = None
    output_tokens: int | None = None
    written: int | None = None
    served_by: str | None = None
    text_chunks = 0
    for ts, chunk in chunks:
        served_by = chunk.served_by or served_by
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
        if chunk.prompt_tokens is not None:
            prompt_tokens = chunk.prompt_tokens
            cached = chunk.cached_tokens
            output_tokens = chunk.output_tokens
            written = chunk.cache_write_tokens
        if chunk.text:
            text_chunks += 1
            parts.append(chunk.text)
            if first is None:
                first = ts
            elif last is not None:
                itl.append(ts - last)
            last = ts
    if first is None or last is None:
        raise EmptyStreamError(f"stream ended without a token (finish_reason={finish})")
    if finish is None:
        raise TruncatedStreamError(
            f"stream_cut: ended without a finish reason after {text_chunks} token chunk(s); "
            "the reply may be cut mid-answer"
        )
    if prompt_tokens is None:
        raise MissingUsageError(
            "usage_missing: the stream carried no usage chunk (stream_options.include_usage), "
            "so its tokens are unknown and it cannot be priced"
        )
    return Completion(
        text="".join(parts),
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        output_tokens=output_tokens if output_tokens is not None else text_chunks,
        ttft_s=first - start,
        e2e_s=last - start,
        itl_s=tuple(itl),
        finish_reason=finish,
        cache_write_tokens=written,
        served_by=served_by,
    )


def chunk_from_openai(raw: Any) -> StreamChunk:
    """Map one `ChatCompletionChunk` from the SDK to the fields timing needs."""
    text = ""
    finish = None
    if raw.choices:
        choice = raw.choices[0]
        text = (choice.delta.content or "") if choice.delta is not None else ""
        finish = choice.finish_reason
    usage = getattr(raw, "usage", None)
    got = read_usage(usage.model_dump() if hasattr(usage, "model_dump") else usage) if usage else None
    fp = getattr(raw, "system_fingerprint", None)
    if got is None:
        return StreamChunk(text=text, finish_reason=finish, served_by=fp)
    return StreamChunk(text=text, finish_reason=finish, prompt_tokens=got.prompt, cached_tokens=got.cached,
                       output_tokens=got.output, cache_write_tokens=got.cache_write, served_by=fp)


class HttpBackend:
    """One OpenAI-compatible endpoint serving one model: vLLM, or a hosted API.

    What the endpoint can do beyond chat completions is discovered (`discover`), not assumed: a
    vLLM server lists its models as `owned_by: "vllm"` and has /tokenize, /metrics, /health and
    /version at its root; any other endpoint gets none of those calls. Without /tokenize, counts
    come from `tokenizer` (a LocalTokenizer named in the spec); without /health, liveness is
    whether the standard `/models` still answers."""

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
        # None: not discovered yet (a plain vLLM URL keeps today's behaviour: extras assumed).
        self.capabilities: dict[str, Any] | None = None

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _has(self, extra: str) -> bool:
        return self.capabilities is None or bool(self.capabilities.get(extra))

    async def discover(self) -> dict[str, Any]:
        """What this endpoint offers, from its standard `/models` (one GET, key checked)."""
        try:
            resp = await self._http.get(f"{self.endpoint.api_url}/models", timeout=30.0)
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.endpoint.api_url}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code in (401, 403):
            raise AuthError(f"{self.endpoint.api_url} refused the API key in ${self.endpoint.api_key_env} "
                            f"(HTTP {resp.status_code})")
        entries = resp.json().get("data", []) if resp.status_code == 200 else []
        vllm = any(e.get("owned_by") == "vllm" for e in entries)
        mine = next((e for e in entries if e.get("id") == self.model), None)
        if mine and mine.get("max_model_len"):
            self._max_model_len = int(mine["max_model_len"])
        self.capabilities = {
            "models_endpoint": resp.status_code == 200, "vllm": vllm,
            "tokenize": vllm, "metrics": vllm, "health": vllm, "version": vllm,
            "model_listed": mine is not None if entries else None,
            **self._counter(vllm),
            **self.endpoint.describe(),
        }
        return self.capabilities

    def _counter(self, vllm: bool) -> dict[str, Any]:
        """Who counts tokens before a request: the server, the local tokenizer, or nobody."""
        if vllm:
            return {"tokenizer": "server /tokenize", "tokenizer_approximate": False}
        if self.tokenizer is None:
            return {"tokenizer": None, "tokenizer_approximate": None}
        return {"tokenizer": self.tokenizer.name, "tokenizer_approximate": self.tokenizer.approximate}

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Completion:
        """Stream one chat completion and time it."""
        try:
            return await self._stream(messages, max_tokens, temperature, seed)
        except BadRequest as exc:
            if self._token_param != "auto" or not refuses_max_tokens(str(exc)):
                raise
            self._token_param = "max_completion_tokens"  # remembered for the rest of the run
            return await self._stream(messages, max_tokens, temperature, seed)

    async def _stream(
        self, messages: Sequence[Message], max_tokens: int, temperature: float, seed: int
    ) -> Completion:
        cap = "max_completion_tokens" if self._token_param == "max_completion_tokens" else "max_tokens"
        salt = cache_salt.get()
        extra: dict[str, Any] = {"extra_body": {"cache_salt": salt}} if salt and self._has("vllm") else {}
        key = session_key.get()
        if key and self._has("vllm"):
            extra["extra_headers"] = {"x-session-id": key}
        start = time.perf_counter()
        try:
            stream = await self._client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model,
                messages=[dict(m) for m in messages],
                temperature=temperature,
                seed=seed,
                stream=True,
                stream_options={"include_usage": True},
                **{cap: max_tokens},
                **extra,
            )
            hook = first_token_hook.get()
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
            raise BadRequest(f"{type(exc).__name__}: {exc}") from exc
        except (openai.APIError, httpx.HTTPError) as exc:  # httpx: a connection lost mid-stream
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        return collect_stream(start, timed)

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Message] | None = None) -> int:
        """Exact prompt length with the server's own tokenizer (and chat template for messages);
        the local tokenizer when the endpoint has no /tokenize."""
        if not self._has("tokenize"):
            if self.tokenizer is None:
                raise BackendError(f"{self.endpoint.api_url} has no /tokenize: name a local tokenizer "
                                   "([server] tokenizer = \"hf:FOLDER\" or a model name)")
            return await self.tokenizer.tokenize(text, messages=messages)
        body: dict[str, Any] = {"model": self.model}
        if messages is not None:
            body["messages"] = [dict(m) for m in messages]
            body["add_generation_prompt"] = True
        else:
            body["prompt"] = text or ""
            body["add_special_tokens"] = False
        data = await self._post_json("/tokenize", body)
        if data.get("max_model_len"):
            self._max_model_len = int(data["max_model_len"])
        return int(data["count"])

    async def max_model_len(self) -> int:
        """The served context window, as the server reports it (else as the spec declares it)."""
        if self._max_model_len is None and self._has("tokenize"):
            await self.tokenize("x")
        if self._max_model_len is None and self._has("vllm"):
            resp = await self._http.get(f"{self.endpoint.api_url}/models")
            resp.raise_for_status()
            for entry in resp.json().get("data", []):
                if entry.get("id") == self.model and entry.get("max_model_len"):
                    self._max_model_len = int(entry["max_model_len"])
        if self._max_model_len is None and self._declared_len is not None:
            self._max_model_len = self._declared_len
        if self._max_model_len is None:
            raise BackendError("server did not report max_model_len; pass --max-model-len")
        return self._max_model_len

    async def metrics(self) -> dict[str, float]:
        """Current values of the server's counters; empty if the server has no /metrics."""
        if not self._has("metrics"):
            return {}
        try:
            resp = await self._http.get(f"{self.endpoint.root_url}/metrics")
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
        if not self._has("health"):
            return await self._ok(f"{self.endpoint.api_url}/models")
        return await self._ok(f"{self.endpoint.root_url}/health") or \
            await self._ok(f"{self.endpoint.root_url}/readiness")

    async def _ok(self, url: str) -> bool:
        try:
            resp = await self._http.get(url, timeout=10.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def version(self) -> str | None:
        if not self._has("version"):
            return None
        try:
            resp = await self._http.get(f"{self.endpoint.root_url}/version")
        except httpx.HTTPError:
            return None
        return str(resp.json().get("version")) if resp.status_code == 200 else None

    async def _post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._http.post(f"{self.endpoint.root_url}{path}", json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise BackendError(f"{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        result: dict[str, Any] = resp.json()
        return result


async def _aiter(stream: Any) -> AsyncIterator[Any]:
    async for item in stream:
        yield item
