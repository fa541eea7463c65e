"""The timing rules of a streamed chat completion, as a pure function over (timestamp, chunk)
pairs so that a scripted stream can pin them in a unit test (compare/serving/client.py feeds it
the SDK's chunks)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from compare.core.errors import EmptyStreamError, MissingUsageError, TruncatedStreamError
from compare.core.types import Completion
from compare.serving.endpoint import read_usage


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
