"""The one answer template every pipeline uses: only the context differs between them.

Keeping the document first and the question last lets a server's prefix cache reuse a
document's prefill across all questions about it (the cost advantage long context relies on).
"""

from __future__ import annotations

from typing import Any

from compare.core.types import CacheMarker

# The wire form of a cache breakpoint after the document, for providers that cache only what a
# request marks (Anthropic-style `cache_control` on a content part, as OpenAI-compatible gateways
# pass it through); "none" sends the plain string content every server takes.
_CACHE_CONTROL: dict[str, dict[str, str]] = {
    "ephemeral-5m": {"type": "ephemeral"}, "ephemeral-1h": {"type": "ephemeral", "ttl": "1h"},
}

SYSTEM = (
    "You are a careful assistant. Answer the question using only the context. "
    "Reply with the answer alone, as briefly as possible, with no explanation."
)

UNANSWERABLE = "unanswerable"


def build_messages(context: str, question: str) -> list[dict[str, str]]:
    """Chat messages for one question over one context."""
    user = _head(context) + _tail(question)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def marked_messages(context: str, question: str, marker: CacheMarker) -> list[dict[str, Any]]:
    """The same prompt with the user turn as two text parts, the cache breakpoint on the one that
    ends with the document: what a marking provider caches is then the document's prefix, and
    the question after it stays outside (the text is the same; only its parts are)."""
    if marker == "none":
        return list(build_messages(context, question))
    parts = [{"type": "text", "text": _head(context), "cache_control": dict(_CACHE_CONTROL[marker])},
             {"type": "text", "text": _tail(question)}]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": parts}]


def _head(context: str) -> str:
    return f"Context:\n{context}\n\n"


def _tail(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def join_passages(passages: list[str]) -> str:
    """How retrieved passages are laid into the context slot."""
    return "\n\n[...]\n\n".join(p.strip() for p in passages)
