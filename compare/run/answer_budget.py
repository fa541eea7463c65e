"""The answer budget: how many tokens a pipeline may generate, fitted to the corpus's golds.

A fixed cap of 32 output tokens cut 13 of 36 free-text answers on a held-out set, most while the
model was still restating the question, and a cut answer scores as a wrong one. So the corpus
decides: twice its longest gold in the served model's tokens (a multi-value gold counts all its
values: the reply lists them), at least 128 for a corpus with free-text questions and at least
the old cap of 32 otherwise (short-answer corpora keep the cap they were measured with), and at
most MAX_BUDGET so that a long gold cannot eat the context window. A pipeline whose cap the spec
sets (`max_tokens = N`) keeps it. The budget is recorded in the run's corpus_params and, as
`max_tokens`, in every pipeline's params (so in each row's params hash).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from compare.core.metrics import answer_format, is_free_text
from compare.core.types import Example, TokenCounter

SHORT_FLOOR = 32  # the cap every pipeline had before budgets: short-answer runs keep it
FREE_FLOOR = 128  # free text: a sentence or two with the model's lead-in
MAX_BUDGET = 512  # a budget is taken from the context window of long context's prompt
_MEASURED = 8  # golds measured in tokens: the longest by characters (one request each)
ROUTER_PATHS = ("rag", "long_context")  # a router's inner specs, stored as dicts


def _needed(ex: Example) -> str:
    """The text a right reply must hold: every value of a multi-value gold, else its longest."""
    if answer_format(ex.tags, ex.answers) == "all":
        return ", ".join(ex.answers)
    return max(ex.answers, key=len, default="")


async def answer_budget(examples: Sequence[Example], count: TokenCounter) -> dict[str, Any]:
    """The corpus's budget and how it was found (what corpus_params records)."""
    needed = sorted({_needed(ex) for ex in examples if ex.answers}, key=len, reverse=True)[:_MEASURED]
    longest = max([await count(text) for text in needed], default=0)
    free = sum(is_free_text(ex) for ex in examples)
    floor = FREE_FLOOR if free else SHORT_FLOOR
    budget = min(max(2 * longest, floor), MAX_BUDGET)
    return {"answer_tokens": budget, "longest_gold_tokens": longest, "free_text_questions": free,
            "rule": f"2 x longest gold, at least {floor} ({'free text' if free else 'short answers'}), "
                    f"at most {MAX_BUDGET}"}


def with_answer_budget(ps: BaseModel, budget: int) -> BaseModel:
    """The pipeline spec with the budget as its `max_tokens`, unless the spec set one (a
    router's paths: unless set to other than the default)."""
    update: dict[str, Any] = {}
    if "max_tokens" in type(ps).model_fields and "max_tokens" not in ps.model_fields_set:
        update["max_tokens"] = budget
    for name in ROUTER_PATHS:
        inner = getattr(ps, name, None)
        if isinstance(inner, dict) and inner.get("max_tokens") == SHORT_FLOOR:
            update[name] = {**inner, "max_tokens": budget}
    return ps.model_copy(update=update) if update else ps
