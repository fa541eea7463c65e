"""What each request may take: answer tokens fitted to the corpus's golds, and seconds from the
machine's measured speed. Both are set once per run, before the first request, from what the run
measured (the golds in the served model's tokens; the prefill probe), and both are recorded with
the run, so one module holds the two limits a request is sent with.

**The answer budget** (how many tokens a pipeline may generate). A fixed cap of 32 output tokens
cut 13 of 36 free-text answers on a held-out set, most while the model was still restating the
question, and a cut answer scores as a wrong one. So the corpus decides: twice its longest gold in
the served model's tokens (a multi-value gold counts all its values: the reply lists them), at
least 128 for a corpus with free-text questions and at least the old cap of 32 otherwise (short-
answer corpora keep the cap they were measured with), and at most MAX_BUDGET so that a long gold
cannot eat the context window. A pipeline whose cap the spec sets (`max_tokens = N`) keeps it. The
budget is recorded in the run's corpus_params and, as `max_tokens`, in every pipeline's params (so
in each row's params hash).

**The timeout** (from the machine's measured speed when the spec leaves it to us). A fixed 900 s
is plenty on a fast machine and too short on a slow one: a cold 16k-token prefill of a 0.5B model
on a loaded 2-core CPU took over 15 minutes, and the run recorded a failed row where the user
would rather have waited. The run already measures the engine before the first request
(compare/serving/probe.py), so a spec that leaves `timeout_s` at its default gets, per request,
the larger of that default and FACTOR x the request's estimated cold prefill + decode at the
probe's rate, times the requests in flight (they share the engine). An explicit `timeout_s` is
obeyed as given. The rule and its inputs are recorded with the run and said once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from compare.core.metrics import answer_format, is_free_text
from compare.core.types import Corpus, Example, Message, TokenCounter
from compare.serving.probe import ModelDims, ProbeResult, Request, estimate_s

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


FACTOR = 3.0  # the probe runs on an idle engine; a shared machine is slower by a varying amount
OVERHEAD_TOKENS = 60  # chat template and instructions around the content (probe.planned_requests)
# Without a measured ratio a prompt counts one token per UTF-8 byte: an upper bound for
# byte-level BPE tokenizers, so the timeout errs long, which is the side a user prefers.
FALLBACK_BYTES_PER_TOKEN = 1.0


@dataclass(frozen=True)
class TimeoutRule:
    """timeout(prompt) = max(floor_s, FACTOR x in_flight x estimated seconds of that prompt)."""

    floor_s: float
    probe: ProbeResult
    dims: ModelDims | None
    bytes_per_token: float
    in_flight: int = 1
    factor: float = FACTOR

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Estimated from the text's size: counting exactly would cost a /tokenize per request."""
        size = sum(len(_text(m.get("content")).encode()) for m in messages)
        return math.ceil(size / self.bytes_per_token) + OVERHEAD_TOKENS

    def seconds(self, prompt_tokens: int, max_tokens: int) -> float:
        cold = estimate_s([Request(prompt_tokens, 0, max_tokens)], self.probe, self.dims)
        return max(self.floor_s, self.factor * self.in_flight * cold)

    def __call__(self, messages: Sequence[Message], max_tokens: int) -> float:
        return self.seconds(self.prompt_tokens(messages), max_tokens)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content)
    return "" if content is None else str(content)


def bytes_per_token(corpus: Corpus) -> float:
    """UTF-8 bytes per token of the corpus's own documents, as the corpus measured them with the
    served model's tokenizer (each example's `doc_tokens`); the fallback when none were."""
    tokens: dict[str, float] = {}
    for ex in corpus.examples:
        value = ex.tags.get("doc_tokens")
        if len(ex.doc_ids) == 1 and ex.doc_ids[0] in corpus.documents and value is not None:
            try:
                tokens[ex.doc_ids[0]] = float(value)
            except (TypeError, ValueError):
                continue
    size = sum(len(corpus.documents[d].text.encode()) for d in tokens)
    total = sum(tokens.values())
    return size / total if total > 0 and size > 0 else FALLBACK_BYTES_PER_TOKEN


def request_timeouts(
    *, given_s: float, explicit: bool, probe: ProbeResult | None, dims: ModelDims | None,
    corpus: Corpus, answer_tokens: int, in_flight: int,
) -> tuple[Callable[[Sequence[Message], int], float] | None, dict[str, Any], str | None]:
    """The per-request rule (None: every request gets `given_s`), what the run records, and the
    one line it says when the rule is in force (a fixed timeout is as before: nothing to say)."""
    if explicit or probe is None:
        why = "set in the spec" if explicit else "no prefill probe, so no estimate"
        return None, {"rule": "fixed", "timeout_s": given_s, "why": why}, None
    rule = TimeoutRule(floor_s=given_s, probe=probe, dims=dims, bytes_per_token=bytes_per_token(corpus),
                       in_flight=in_flight)
    longest = max((d.text for d in corpus.documents.values()), key=lambda t: len(t.encode()), default="")
    tokens = rule.prompt_tokens([{"role": "user", "content": longest}])
    worst = rule.seconds(tokens, answer_tokens)
    record = {
        "rule": f"max(default, {rule.factor:g} x requests in flight x estimated cold prefill + decode "
                "of the prompt at the probe's rate)",
        "default_s": given_s, "factor": rule.factor, "in_flight": in_flight,
        "bytes_per_token": round(rule.bytes_per_token, 3), "probe_tokens_per_s": round(probe.tokens_per_s, 1),
        "longest_document_tokens": tokens, "longest_document_timeout_s": round(worst, 1),
    }
    shared = f" x {in_flight} in flight" if in_flight > 1 else ""
    line = (f"request timeout: the larger of {given_s:.0f} s and {rule.factor:g}x each prompt's estimated "
            f"cold prefill + decode at the probe's rate{shared} (longest document, ~{tokens:,} tokens: "
            f"{worst:.0f} s); set timeout_s to fix it")
    return rule, record, line
