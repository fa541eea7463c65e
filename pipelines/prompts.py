"""The one answer template every pipeline uses: only the context differs between them.

Keeping the document first and the question last lets a server's prefix cache reuse a
document's prefill across all questions about it (the cost advantage long context relies on).
"""

from __future__ import annotations

SYSTEM = (
    "You are a careful assistant. Answer the question using only the context. "
    "Reply with the answer alone, as briefly as possible, with no explanation."
)

UNANSWERABLE = "unanswerable"


def build_messages(context: str, question: str) -> list[dict[str, str]]:
    """Chat messages for one question over one context."""
    user = f"Context:\n{context}\n\nQuestion: {question}\nAnswer:"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def join_passages(passages: list[str]) -> str:
    """How retrieved passages are laid into the context slot."""
    return "\n\n[...]\n\n".join(p.strip() for p in passages)
