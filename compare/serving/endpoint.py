"""How OpenAI-compatible endpoints answer differently: refusals, rate limits, usage shapes.

vLLM and hosted APIs speak the same chat-completions protocol but differ around it: how they word
a prompt over the window or a refused `max_tokens`, how long a 429 asks to wait, and how their
usage reports cached and cache-written tokens. This module holds those differences so the client
stays one code path. Where an endpoint is and how it is reached (URL, key variable, headers) is
`compare.core.endpoints.Endpoint`, shared with the embedding endpoints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from compare.core.errors import BackendError


class BadRequest(BackendError):
    """The endpoint rejected the request itself (HTTP 400): not a server failure."""


class ContextTooLong(BackendError):
    """The endpoint refused the prompt as longer than its window: its message starts with
    `context_overflow` (a permanent failure: another attempt cannot fix the prompt)."""


class RateLimited(BackendError):
    """HTTP 429: the message says how long the endpoint asked to wait (`retry_after_s` reads it
    back), so the runner's retry honours the provider's Retry-After instead of its own backoff."""


class AuthError(BackendError):
    """The endpoint refused the key: every request would fail the same way, so a run stops."""


@dataclass(frozen=True)
class UsageTokens:
    """A response's token counts, whatever shape its usage came in."""

    prompt: int
    output: int | None
    cached: int | None  # read from the provider's prompt cache (None: not reported)
    cache_write: int | None  # written to it by this request (None: not reported)


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def read_usage(usage: Mapping[str, Any]) -> UsageTokens | None:
    """Usage in the shapes providers send, one meaning:

    - OpenAI and vLLM: `prompt_tokens` (all of them), `prompt_tokens_details.cached_tokens`;
      cache writes, where reported, as `created_cache_tokens` (top level or in the details);
    - Anthropic-style fields: `cache_read_input_tokens`, `cache_creation_input_tokens`; with
      `input_tokens` (Anthropic's native count, which excludes both) the prompt is their sum;
    - DeepSeek-style: `prompt_cache_hit_tokens`.
    None when the usage has no prompt count at all."""
    details = usage.get("prompt_tokens_details") or {}
    if not isinstance(details, Mapping):
        details = {}
    cached = _int(details.get("cached_tokens"))
    for name in ("cache_read_input_tokens", "prompt_cache_hit_tokens"):
        if cached is None:
            cached = _int(usage.get(name))
    write = _int(usage.get("cache_creation_input_tokens"))
    for where in (usage, details):
        if write is None:
            write = _int(where.get("created_cache_tokens"))
    output = _int(usage.get("completion_tokens"))
    if output is None:
        output = _int(usage.get("output_tokens"))
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is None and _int(usage.get("input_tokens")) is not None:
        prompt = int(usage["input_tokens"]) + (cached or 0) + (write or 0)
    if prompt is None:
        return None
    return UsageTokens(prompt, output, cached, write)


def refuses_max_tokens(message: str) -> bool:
    """A 400 saying the model takes `max_completion_tokens` instead (OpenAI's reasoning models)."""
    text = message.lower()
    return "max_tokens" in text and ("max_completion_tokens" in text or "unsupported" in text)


# How providers word a prompt over the window: vLLM ("This model's maximum context length is
# 4096 tokens"), OpenAI (code context_length_exceeded), Anthropic ("prompt is too long"), Gemini
# ("exceeds the maximum number of tokens"), and gateways that pass them on (LiteLLM's
# ContextWindowExceededError).
_TOO_LONG = ("maximum context length", "context_length_exceeded", "context window", "prompt is too long",
             "contextwindowexceeded", "exceeds the maximum number of tokens", "input is too long",
             "too many input tokens")


def too_long(message: str) -> bool:
    """A 400 saying the prompt does not fit the model's window."""
    text = message.lower()
    return any(p in text for p in _TOO_LONG)


_RETRY_AFTER = re.compile(r"^rate_limited: HTTP 429, retry after (\d+(?:\.\d+)?) s")


def rate_limited(retry_after: str | None, detail: str) -> str:
    """A 429's row message: `rate_limited: HTTP 429, retry after 60 s: ...` (seconds or an HTTP
    date in Retry-After; none given: the runner's own backoff)."""
    wait: float | None = None
    if retry_after:
        try:
            wait = max(float(retry_after), 0.0)
        except ValueError:
            try:
                wait = max((parsedate_to_datetime(retry_after) - datetime.now(UTC)).total_seconds(), 0.0)
            except (TypeError, ValueError):
                wait = None
    after = f", retry after {wait:g} s" if wait is not None else ""
    return f"rate_limited: HTTP 429{after}: {detail[:300]}"


def retry_after_s(error: str | None) -> float | None:
    """The wait a `rate_limited` row message carries (None: not one, or no Retry-After)."""
    m = _RETRY_AFTER.match(error or "")
    return float(m.group(1)) if m else None
