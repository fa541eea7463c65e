"""LLM-as-judge for free-text answers: a fixed rubric, one verdict per stored row, asked once.

Token F1 undercounts a right answer said in other words and credits a wrong one that shares
words with the gold; a judge model reads the question, the gold and the reply instead. Asking
is the expensive part, so every verdict is stored in `judgements` with the judge model, the
prompt's hash and the judge's raw reply, and `ragvslc score` restores the `judge` scores from
there without asking again. The judge is a metric like the others: None where it does not
apply (a question that is not free text, a failed request, a reply the judge did not rule on).
Its agreement with token F1 is reported beside it, so a reader can see how far to trust either.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from compare.analysis.judgements import JUDGE_METRIC
from compare.core.errors import BackendError
from compare.core.metrics import primary_metric
from compare.core.types import Example
from compare.serving.client import HttpBackend
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
_VERDICT = re.compile(r"\b(incorrect|correct)\b", re.IGNORECASE)


def parse_verdict(raw: str) -> float | None:
    """1.0 for CORRECT, 0.0 for INCORRECT (the first one said), None if the judge said neither."""
    m = _VERDICT.search(raw)
    return None if m is None else float(m.group(1).lower() == "correct")


def applies(ex: Example) -> bool:
    """Free-text questions only: the ones whose own metric is token F1."""
    return primary_metric(ex) == "token_f1"


def messages(ex: Example, reply: str) -> list[dict[str, str]]:
    gold = " | ".join(ex.answers)
    user = TEMPLATE.format(question=ex.question, gold=gold, reply=reply)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class JudgeResult:
    judge_model: str
    prompt_hash: str
    asked: int = 0
    reused: int = 0  # verdicts already stored for this judge and prompt
    unparsed: int = 0  # the judge replied, but neither CORRECT nor INCORRECT
    failed: int = 0  # the judge request failed: nothing stored, a rerun asks again


def _where(run_ids: Sequence[str] | None, alias: str = "") -> tuple[str, list[str]]:
    if not run_ids:
        return "", []
    return f"{alias}run_id IN ({', '.join('?' * len(run_ids))})", list(run_ids)


async def judge_runs(store: Store, backend: HttpBackend, run_ids: Sequence[str] | None = None) -> JudgeResult:
    """Ask `backend`'s model for a verdict on every answered free-text row not yet judged by it
    with this prompt; store each verdict, then refresh the `judge` scores of these runs."""
    cond, args = _where(run_ids, "p.")
    rows = store.con.execute(
        "SELECT p.run_id, p.example_id, p.pipeline, p.params_hash, p.answer, e.question, e.answers, "
        "e.tags, (j.run_id IS NOT NULL) AS done "
        "FROM predictions p JOIN examples e USING (run_id, example_id) "
        "LEFT JOIN judgements j ON j.run_id = p.run_id AND j.example_id = p.example_id "
        "AND j.pipeline = p.pipeline AND j.params_hash = p.params_hash AND j.judge_model = ? "
        f"AND j.prompt_hash = ? WHERE p.error IS NULL {'AND ' + cond if cond else ''} ORDER BY p.seq",
        [backend.model, PROMPT_HASH, *args],
    ).fetchall()
    counts = {"asked": 0, "reused": 0, "unparsed": 0, "failed": 0}
    for run_id, ex_id, pipe, h, answer, question, answers, tags, done in rows:
        ex = Example(ex_id, (), question, tuple(json.loads(answers)), (), json.loads(tags))
        if not applies(ex):
            continue
        if done:
            counts["reused"] += 1
            continue
        try:
            reply = await backend.complete(messages(ex, answer), max_tokens=MAX_TOKENS, temperature=0.0)
        except BackendError:
            counts["failed"] += 1
            continue
        verdict = parse_verdict(reply.text)
        counts["asked"] += 1
        counts["unparsed"] += verdict is None
        store.insert("judgements", [{
            "run_id": run_id, "example_id": ex_id, "pipeline": pipe, "params_hash": h,
            "judge_model": backend.model, "prompt_hash": PROMPT_HASH, "verdict": verdict,
            "raw": reply.text, "judged_at": datetime.now(UTC).replace(tzinfo=None),
        }], verb="INSERT OR REPLACE")
    restore_scores(store, run_ids)
    return JudgeResult(backend.model, PROMPT_HASH, **counts)


def restore_scores(store: Store, run_ids: Sequence[str] | None = None) -> int:
    """`judge` scores from the stored verdicts (the latest judgement of each row), no model
    call: what `ragvslc score` does. Returns the number of rows scored."""
    cond, args = _where(run_ids)
    j_cond, _ = _where(run_ids, "j.")
    store.con.execute("BEGIN")
    try:
        store.con.execute(
            f"DELETE FROM scores WHERE metric = '{JUDGE_METRIC}' {'AND ' + cond if cond else ''}", args)
        store.con.execute(
            f"""
            INSERT INTO scores SELECT j.run_id, j.example_id, j.pipeline, j.params_hash, '{JUDGE_METRIC}',
                j.verdict
            FROM judgements j SEMI JOIN predictions p USING (run_id, example_id, pipeline, params_hash)
            {'WHERE ' + j_cond if j_cond else ''}
            QUALIFY row_number() OVER (PARTITION BY j.run_id, j.example_id, j.pipeline, j.params_hash
                                       ORDER BY j.judged_at DESC, j.judge_model, j.prompt_hash) = 1
            """,
            args,
        )
        store.con.execute("COMMIT")
    except Exception:
        store.con.execute("ROLLBACK")
        raise
    row = store.con.execute(
        f"SELECT count(*) FROM scores WHERE metric = '{JUDGE_METRIC}' {'AND ' + cond if cond else ''}", args
    ).fetchone()
    return int(row[0]) if row else 0
