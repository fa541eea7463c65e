"""L-Eval long-document QA (../shared/data/leval), one loader for all seven subsets.

Each line is one document with parallel lists of questions and gold outputs. The answer
format is read off each question rather than assumed per file, so a user's L-Eval-style
file gets the same treatment, and a test pins that every real subset parses as expected:
- multiple choice (quality, tpo): choices inline in the question, one per line, marked
  "(A) ..." (quality) or "A. ..." (tpo); the output starts with the letter ("(B) text" / "B");
- multi-select (L-Eval's exam-style subsets such as coursera): the same inline choices, and an
  output of several letters ("ACD", "A, C"): gold stored as the sorted letters, scored as a set;
- true/false (sci_fi): the output is "True [fact: False]": the label asked about is the
  document's world, the bracket the real-world fact. Two of the 64 statements lack the
  "True or False?" prompt the others carry; it is appended so the model knows the format;
- exact topic (topic_retrieval_longchat) and free text (the rest): the output as is.
Questions are otherwise kept verbatim (the choices must reach the model); gold letters, labels and the
parsed choices go to the example's answers and tags, where the metrics look for them, with
the metric each question is judged by (`primary_metric`, from its format: compare/core/metrics.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from compare.core.config import Strict
from compare.core.metrics import MULTI_SELECT, default_primary, normalize
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus, Document, Example
from corpora.books import data_dir
from corpora.records import CorpusError, StrictRecord, read_jsonl, with_doc_tokens

Subset = Literal[
    "quality", "tpo", "sci_fi", "topic_retrieval_longchat", "natural_question", "financial_qa",
    "multidoc_qa",
]
SUBSETS: tuple[str, ...] = Subset.__args__  # type: ignore[attr-defined]
# What each real subset's questions parse as (pinned by tests/test_leval.py).
EXPECTED_FORMAT = {
    "quality": "letter", "tpo": "letter", "sci_fi": "true_false",
    "topic_retrieval_longchat": "exact", "natural_question": "free", "financial_qa": "free",
    "multidoc_qa": "free",
}
_CHOICE = re.compile(r"(?m)^[ \t]*\(?([A-Z])[).][ \t]*")
_LETTER = re.compile(r"^\s*\(?([A-Z])(?:[).:]|\s*$)")
_LETTER_SET = re.compile(r"[\s(]*[A-Z](?:[\s,;&/+()]*(?:and\s+)?[\s(]*[A-Z])+[\s).]*")
_LABEL = re.compile(r"^\s*(True|False)\b(?:\s*\[fact:\s*(True|False)\])?", re.IGNORECASE)


class LevalRecord(StrictRecord):
    input: Annotated[str, Field(min_length=1, pattern=r"\S")]
    instructions: Annotated[list[str], Field(min_length=1)]
    outputs: Annotated[list[str], Field(min_length=1)]
    source: str | None = None
    evaluation: str | None = None

    @model_validator(mode="after")
    def _paired(self) -> LevalRecord:
        if len(self.instructions) != len(self.outputs):
            raise ValueError(
                f"{len(self.instructions)} instructions but {len(self.outputs)} outputs"
            )
        return self


def parse_choices(question: str) -> dict[str, str]:
    """Inline choices "A. x" / "(A) x", one per line, lettered A, B, C... in order; else {}."""
    marks = list(_CHOICE.finditer(question))
    letters = [m.group(1) for m in marks]
    if len(marks) < 2 or letters != [chr(ord("A") + i) for i in range(len(marks))]:
        return {}
    ends = [m.start() for m in marks[1:]] + [len(question)]
    return {m.group(1): " ".join(question[m.end() : e].split()) for m, e in zip(marks, ends, strict=True)}


Gold = tuple[tuple[str, ...], dict[str, str | float]]


def classify(question: str, output: str, exact: bool = False) -> Gold:
    """Gold answers and tags for one question: letter, letters, true/false, exact or free text."""
    choices = parse_choices(question)
    if choices:
        picked = set(re.findall(r"[A-Z]", output)) if _LETTER_SET.fullmatch(output.strip()) else set()
        if len(picked) >= 2 and picked <= set(choices):
            return ("".join(sorted(picked)),), {"answer_format": MULTI_SELECT, "choices": json.dumps(choices)}
        m = _LETTER.match(output)
        letter = m.group(1) if m and m.group(1) in choices else None
        if letter is None:  # an output that repeats a choice's text instead of its letter
            named = [k for k, v in choices.items() if normalize(v) == normalize(output)]
            letter = named[0] if len(named) == 1 else None
        if letter:
            return (letter,), {"answer_format": "letter", "choices": json.dumps(choices)}
    label = _LABEL.match(output)
    if label and ("true or false" in question.lower() or label.group(2)):
        tags: dict[str, str | float] = {"answer_format": "true_false"}
        if label.group(2):
            tags["fact"] = label.group(2).capitalize()
        return (label.group(1).capitalize(),), tags
    return (output.strip(),), {"answer_format": "exact" if exact else "free"}


def asked(question: str, tags: dict[str, str | float]) -> str:
    """The question as sent: verbatim, except a true/false statement that never says so."""
    if tags.get("answer_format") == "true_false" and "true or false" not in question.lower():
        return question.rstrip() + " True or False?"
    return question


def load_leval_file(
    path: Path,
    *,
    name: str | None = None,
    task: str | None = None,
    max_docs: int | None = None,
    max_questions_per_doc: int | None = None,
) -> Corpus:
    """Documents `<name>-000`, ... in file order; questions `<doc id>-q000`, ... in list order."""
    name = name or path.stem
    problems: list[str] = []
    rows = read_jsonl(path, LevalRecord, problems)
    if not rows and not problems:
        problems.append(f"{path}: no documents")
    if problems:
        raise CorpusError(str(path), problems)
    exact = "topic_retrieval" in name
    documents: dict[str, Document] = {}
    examples: list[Example] = []
    for i, (line, rec) in enumerate(rows[:max_docs]):
        doc_id = f"{name}-{i:03d}"
        documents[doc_id] = Document(id=doc_id, text=rec.input)
        pairs = list(zip(rec.instructions, rec.outputs, strict=True))[:max_questions_per_doc]
        for j, (question, output) in enumerate(pairs):
            answers, tags = classify(question, output, exact)
            tags = {"task": task or name, **tags, "doc_index": float(i), "line": float(line)}
            tags["primary_metric"] = default_primary(tags)
            if rec.evaluation:
                tags["evaluation"] = rec.evaluation
            examples.append(
                Example(id=f"{doc_id}-q{j:03d}", doc_ids=(doc_id,), question=asked(question, tags),
                        answers=answers, tags=tags)
            )
    params: dict[str, object] = {
        "builder": "leval",
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "max_docs": max_docs,
        "max_questions_per_doc": max_questions_per_doc,
    }
    return Corpus(name=name, documents=documents, examples=examples, params=params)


def load_leval(
    subset: Subset,
    *,
    max_docs: int | None = None,
    max_questions_per_doc: int | None = None,
    root: Path | None = None,
) -> Corpus:
    """One real L-Eval subset; ids `leval-<subset>-NNN` stay stable across runs and limits."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown L-Eval subset {subset!r}; known: {', '.join(SUBSETS)}")
    path = data_dir(root) / "leval" / f"{subset}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; set --data-dir or RAGVSLC_DATA to the data directory")
    corpus = load_leval_file(
        path, name=f"leval-{subset}", task=subset, max_docs=max_docs,
        max_questions_per_doc=max_questions_per_doc,
    )
    return Corpus(corpus.name, corpus.documents, corpus.examples, {**corpus.params, "subset": subset})


class LevalCorpusSpec(Strict):
    kind: Literal["leval"] = "leval"
    subset: Literal[
        "quality", "tpo", "sci_fi", "topic_retrieval_longchat", "natural_question",
        "financial_qa", "multidoc_qa",
    ]
    max_docs: PositiveInt | None = None
    max_questions_per_doc: PositiveInt | None = None


@register_corpus(LevalCorpusSpec)
async def _build(cs: LevalCorpusSpec, ctx: BuildContext) -> Corpus:
    corpus = load_leval(cs.subset, max_docs=cs.max_docs, max_questions_per_doc=cs.max_questions_per_doc,
                        root=ctx.data_dir)
    return await with_doc_tokens(corpus, ctx.tokenize)
