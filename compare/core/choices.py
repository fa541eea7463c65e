"""Which choice(s) a reply picks, for single-answer and multi-select (exam-style) questions.

Kept apart from the metric functions because the parsing rules are the part that needs care:
a leading "A" may be the article, a number in a choice may sit inside a longer number, and a
multi-select reply that lists every letter must be read as every letter (so it cannot score),
not as "contains the gold letters".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

# A reply may open with "Answer:", "The answers are", "Correct options:" before the letters.
_LEAD_IN = re.compile(
    r"^\s*(?:the\s+)?(?:correct\s+)?(?:answers?|options?|choices?)(?:\s+(?:is|are))?\s*[:\-]?\s*",
    re.IGNORECASE,
)


def _letters(choices: Mapping[str, str]) -> str:
    return "".join(k for k in sorted(choices) if re.fullmatch(r"[A-Z]", k))


def _words_inside(needle: str, hay: str) -> bool:
    """`needle` occurs in `hay` starting and ending on word boundaries ("10" is not in "100")."""
    return f" {needle} " in f" {hay} "


def chosen_letter(reply: str, choices: Mapping[str, str], normalize: Callable[[str], str]) -> str | None:
    """The choice a reply picks: "(B)", "B.", "B) text", "Answer: B", or a choice's own text.

    A leading "A" followed by a word is the article, not a choice, so a bare letter counts
    only when punctuation or the end of the reply marks it. A choice's text counts only as
    whole words: choice "10" is not picked by a reply saying "100".
    """
    letters = _letters(choices)
    if not letters:
        return None
    text = reply.strip()
    for pattern in (
        rf"^\(?([{letters}])(?:[).:\]]|$)",
        # after "Answer:" a letter followed by a word is the article or the pronoun ("Answer: A
        # careful reading shows C"), not a choice: "A"/"I" count there only when marked off
        rf"\b(?i:answer)(?:\s+(?i:is))?\s*[:\-]?\s*\(?([{letters}])(?:(?<![AI])\b|(?=[).:,;\]]|\s*$))",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    marked = set(re.findall(rf"\(([{letters}])\)", text))
    if len(marked) == 1:
        return marked.pop()
    # The choice's words without its letter; a reply cut short by max_tokens still names one
    # (its start must be on a word boundary of the choice; its last word may be cut).
    got = normalize(text)
    texts = {k: normalize(v) for k, v in choices.items()}
    named = [
        k for k, v in texts.items()
        if v and (_words_inside(v, got) or (len(got.split()) >= 3 and f" {got}" in f" {v}"))
    ]
    if len(named) == 1:
        return named[0]
    # Last, a reply that ends on a lone letter ("... shows C."): the letter it concludes with
    # (an article never ends a sentence).
    last = re.search(rf"(?<![\w'])([{letters}])[.)]?\s*$", text)
    return last.group(1) if last else None


def gold_letters(answer: str) -> frozenset[str]:
    """A multi-select gold as stored ("ACD") -> {"A", "C", "D"}."""
    return frozenset(re.findall(r"[A-Z]", answer))


def chosen_letters(reply: str, choices: Mapping[str, str]) -> frozenset[str]:
    """The set of choices a multi-select reply picks; empty when it names none.

    Read, in order: a first line made only of letters and separators ("ACD", "A, C and D",
    "(A) (C)"), else every letter that opens a line or stands in parentheses ("A. text" on
    its own line, "(C)"). No choice-text fallback: with several answers a phrase from one
    choice says nothing about the others. A reply listing every letter picks every letter.
    """
    letters = _letters(choices)
    if not letters:
        return frozenset()
    text = _LEAD_IN.sub("", reply.strip(), count=1)
    first = text.splitlines()[0] if text else ""
    only = rf"[\s(]*[{letters}](?:[\s,;/&+()]*(?:and\s+|or\s+)?[\s(]*[{letters}])*[\s).]*"
    if re.fullmatch(only, first):
        return frozenset(re.findall(rf"[{letters}]", first))
    marked = re.findall(rf"(?m)^\s*\(?([{letters}])[).:]", text) + re.findall(rf"\(([{letters}])\)", text)
    return frozenset(marked)


def set_f1(got: frozenset[str], gold: frozenset[str]) -> float:
    """F1 of the picked set against the gold set (0 when either is empty or nothing is shared)."""
    common = len(got & gold)
    if not common:
        return 0.0
    p, r = common / len(got), common / len(gold)
    return 2 * p * r / (p + r)
