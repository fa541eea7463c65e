"""OpenAI-compatible async client, timed the way vLLM's serving benchmark times requests.

Streaming goes through the `openai` SDK (it owns SSE parsing, auth and connection reuse); the
timing rules live in `collect_stream`, a pure function over (timestamp, chunk) pairs so that a
scripted stream can pin them in a unit test. `/tokenize` and `/metrics` are vLLM extensions the
SDK does not cover, so they are plain `httpx` calls on the same connection settings.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from compare.core.errors import BackendError, EmptyStreamError, MissingUsageError, TruncatedStreamError
from compare.core.types import Completion, Message

__all__ = ["BackendError", "EmptyStreamError", "HttpBackend", "MissingUsageError", "TruncatedStreamError"]

# Prometheus series (vLLM v1 names) whose before/after deltas describe a run's server work.
SERVER_COUNTERS: tuple[str, ...] = (
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:request_success",
    "vllm:request_prefill_time_seconds_sum",
    "vllm:request_decode_time_seconds_sum",
    "vllm:request_queue_time_seconds_sum",
    "vllm:request_inference_time_seconds_sum",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:e2e_request_latency_seconds_sum",
    "vllm:prompt_tokens_cached",
    "vllm:prompt_tokens_by_source",
    "vllm:request_prefill_kv_computed_tokens_sum",
    "vllm:num_preemptions",
)


# Called once when the request running in this context receives its first token, i.e. when its
# prompt has been prefilled (and, with prefix caching, is reusable by requests sent after it).
# A context variable rather than an argument, so pipelines need not thread it through.
first_token_hook: ContextVar[Callable[[], None] | None] = ContextVar("first_token_hook", default=None)


@dataclass(frozen=True)
class StreamChunk:
    """What one SSE chunk contributes to timing: its token text and, at the end, usage."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None


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
    text_chunks = 0
    for ts, chunk in chunks:
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
        if chunk.prompt_tokens is not None:
            prompt_tokens = chunk.prompt_tokens
            cached = chunk.cached_tokens
            output_tokens = chunk.output_tokens
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
    if usage is None:
        return StreamChunk(text=text, finish_reason=finish)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return StreamChunk(
        text=text,
        finish_reason=finish,
        prompt_tokens=usage.prompt_tokens,
        cached_tokens=cached,
        output_tokens=usage.completion_tokens,
    )


def parse_metrics(text: str, names: Sequence[str] = SERVER_COUNTERS) -> dict[str, float]:
    """Sum each wanted Prometheus series over its labels (one model per server here)."""
    wanted = set(names)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            base = name[: -len("_total")] if name.endswith("_total") else name
            if base in wanted:
                # Split by source (local compute vs cache hit) instead of summing it away.
                key = f"{base}:{sample.labels['source']}" if "source" in sample.labels else base
                out[key] = out.get(key, 0.0) + float(sample.value)
    return out


class HttpBackend:
    """One OpenAI-compatible endpoint serving one model."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        timeout_s: float = 600.0,
        max_retries: int = 0,
        api_key_env: str = "OPENAI_API_KEY",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        # The key only ever comes from the environment, so it cannot land in a spec or the store.
        key = os.environ.get(api_key_env) or "EMPTY"
        self._client = openai.AsyncOpenAI(
            base_url=f"{self.base_url}/v1", api_key=key, timeout=timeout_s, max_retries=max_retries
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, headers={"Authorization": f"Bearer {key}"}
        )
        self._max_model_len: int | None = None

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Completion:
        """Stream one chat completion and time it."""
        start = time.perf_counter()
        try:
            stream = await self._client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model,
                messages=[dict(m) for m in messages],
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                stream=True,
                stream_options={"include_usage": True},
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
        except (openai.APIError, httpx.HTTPError) as exc:  # httpx: a connection lost mid-stream
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        return collect_stream(start, timed)

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Message] | None = None) -> int:
        """Exact prompt length with the server's own tokenizer (and chat template for messages)."""
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
        """The served context window, as the server reports it."""
        if self._max_model_len is None:
            await self.tokenize("x")
        if self._max_model_len is None:
            resp = await self._http.get("/v1/models")
            resp.raise_for_status()
            for entry in resp.json().get("data", []):
                if entry.get("id") == self.model and entry.get("max_model_len"):
                    self._max_model_len = int(entry["max_model_len"])
        if self._max_model_len is None:
            raise BackendError("server did not report max_model_len; pass --max-model-len")
        return self._max_model_len

    async def metrics(self) -> dict[str, float]:
        """Current values of the server's counters; empty if the server has no /metrics."""
        try:
            resp = await self._http.get("/metrics")
        except httpx.HTTPError:
            return {}
        if resp.status_code != 200:
            return {}
        return parse_metrics(resp.text)

    async def health(self) -> bool:
        """Whether the server still answers; tells a dead server from a bad request."""
        try:
            resp = await self._http.get("/health", timeout=10.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def version(self) -> str | None:
        try:
            resp = await self._http.get("/version")
        except httpx.HTTPError:
            return None
        return str(resp.json().get("version")) if resp.status_code == 200 else None

    async def _post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise BackendError(f"{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        result: dict[str, Any] = resp.json()
        return result


async def _aiter(stream: Any) -> AsyncIterator[Any]:
    async for item in stream:
        yield item


def metric_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What the server did between two scrapes."""
    return {k: after[k] - before.get(k, 0.0) for k in after}
