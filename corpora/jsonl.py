"""Bring your own QA set: `documents.jsonl` + `questions.jsonl`, or one L-Eval-style file.

A user's file is checked completely before anything is used: every problem is collected and
reported with its file and line, because fixing a large file one error per run is miserable,
and a half-imported corpus would produce scores for questions nobody meant to ask.

documents.jsonl, one object per line:
    {"id": "d1", "text": "..."}  or  {"id": "d1", "path": "texts/d1.txt"}   (+ "metadata": {...})
    `path` is relative to the corpus directory and may not leave it; files are UTF-8.
questions.jsonl, one object per line:
    {"id": "q1", "doc_ids": ["d1"], "question": "...", "answers": ["..."],
     "choices": {"A": "...", "B": "..."} or ["...", "..."] (labelled A, B, ...; answers are letters:
        ["B"] one correct choice, ["A", "C"] either counts, ["ACD"] or ["A, C, D"] a multi-select
        question whose answer is exactly that set),
     "evidence": [["d1", start, end], ...]   (character offsets into that document's text),
     "tags": {"topic": "x", "year": 2020}}
    A question's headline metric follows its format (choices: choice accuracy or the exact set;
    otherwise its golds: one of at most 3 words is a short answer, scored by `contains`, a longer
    one free text, scored by `token_f1`: compare/core/metrics.py answer_format, the one rule);
    `"tags": {"primary_metric": "judge"}` (or any answer metric) declares another one.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StrictInt, model_validator

from compare.core.config import Strict
from compare.core.metrics import MULTI_SELECT, answer_format, default_primary
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus, Document, Example, Span
from corpora.leval import load_leval_file
from corpora.records import (
    CorpusError,
    StrictRecord,
    declared_metric_problems,
    metric_counts,
    read_jsonl,
    with_doc_tokens,
)

NonBlank = Annotated[str, Field(min_length=1, pattern=r"\S")]
Label = Annotated[str, Field(pattern=r"^[A-Z]$")]
ChoiceList = Annotated[list[NonBlank], Field(min_length=2, max_length=26)]


class DocumentRecord(StrictRecord):
    id: NonBlank
    text: str | None = None
    path: NonBlank | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DocumentRecord:
        if (self.text is None) == (self.path is None):
            raise ValueError("give exactly one of `text` or `path`")
        return self


class QuestionRecord(StrictRecord):
    id: NonBlank
    doc_ids: Annotated[list[NonBlank], Field(min_length=1)]
    question: NonBlank
    answers: Annotated[list[NonBlank], Field(min_length=1)]
    choices: dict[Label, NonBlank] | ChoiceList | None = None
    evidence: list[tuple[NonBlank, StrictInt, StrictInt]] | None = None
    tags: dict[NonBlank, str | float] | None = None

    def labelled_choices(self) -> dict[str, str]:
        if isinstance(self.choices, list):
            return {chr(ord("A") + i): c for i, c in enumerate(self.choices)}
        return dict(self.choices or {})


def _read_text(root: Path, rel: str, where: str, problems: list[str]) -> str | None:
    base = root.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(base):
        problems.append(f"{where}: path {rel!r} escapes the corpus directory {root}")
        return None
    if not target.is_file():
        problems.append(f"{where}: path {rel!r}: file not found")
        return None
    try:
        return target.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{where}: path {rel!r}: not UTF-8 (byte offset {exc.start})")
        return None


def _unique(rows: list[tuple[int, Any]], where: Callable[[int], str], what: str, problems: list[str]) -> None:
    first: dict[str, int] = {}
    for n, rec in rows:
        if rec.id in first:
            problems.append(f"{where(n)}: duplicate {what} id {rec.id!r} (first on line {first[rec.id]})")
        else:
            first[rec.id] = n


def _check_question(q: QuestionRecord, where: str, texts: dict[str, str | None], problems: list[str]) -> None:
    seen: set[str] = set()
    for d in q.doc_ids:
        if d not in texts:
            problems.append(f"{where}: unknown document id {d!r}")
        elif d in seen:
            problems.append(f"{where}: document id {d!r} listed twice")
        seen.add(d)
    choices = q.labelled_choices()
    for a in q.answers if choices else ():
        labels = _labels(a)
        if not labels or not set(labels) <= set(choices):
            problems.append(f"{where}: answer {a!r} is not a choice label ({', '.join(choices)})")
        elif len(set(labels)) != len(labels):
            problems.append(f"{where}: answer {a!r} names a choice twice")
    problems += declared_metric_problems(where, q.tags)
    for i, (doc, start, end) in enumerate(q.evidence or ()):
        if doc not in q.doc_ids:
            problems.append(f"{where}: evidence[{i}] names {doc!r}, not one of this question's doc_ids")
            continue
        text = texts.get(doc)
        if text is not None and not 0 <= start < end <= len(text):
            problems.append(
                f"{where}: evidence[{i}] [{start}, {end}] is outside document {doc!r} "
                f"(need 0 <= start < end <= {len(text)})"
            )


def load_jsonl_dir(path: Path | str) -> Corpus:
    """A corpus directory (documents.jsonl + questions.jsonl) or a single L-Eval-style file."""
    path = Path(path)
    if path.is_file():

        return load_leval_file(path)
    if not path.is_dir():
        raise CorpusError(str(path), [f"{path}: no such directory or file"])
    problems: list[str] = []
    docs_file, qs_file = path / "documents.jsonl", path / "questions.jsonl"
    doc_rows = read_jsonl(docs_file, DocumentRecord, problems)
    q_rows = read_jsonl(qs_file, QuestionRecord, problems)
    _unique(doc_rows, lambda n: f"{docs_file}:{n}", "document", problems)
    _unique(q_rows, lambda n: f"{qs_file}:{n}", "question", problems)
    texts: dict[str, str | None] = {}
    digest = hashlib.sha256()
    for n, d in doc_rows:
        where = f"{docs_file}:{n}"
        text = d.text if d.path is None else _read_text(path, d.path, where, problems)
        if text is not None and not text.strip():
            problems.append(f"{where}: document {d.id!r} is empty")
        texts.setdefault(d.id, text)
        digest.update(f"{d.id}\0{text}\0".encode())
    for n, q in q_rows:
        _check_question(q, f"{qs_file}:{n}", texts, problems)
        digest.update(q.model_dump_json().encode())
    if not q_rows and not any(p.startswith(str(qs_file)) for p in problems):
        problems.append(f"{qs_file}: no questions")
    if problems:
        raise CorpusError(str(path), problems)
    documents = {d.id: Document(id=d.id, text=texts[d.id] or "") for _, d in doc_rows}
    examples = [_example(q) for _, q in q_rows]
    params: dict[str, object] = {"builder": "jsonl", "path": str(path), "sha256": digest.hexdigest()}
    meta = {d.id: d.metadata for _, d in doc_rows if d.metadata}
    if meta:
        params["document_metadata"] = meta
    return Corpus(name=path.name, documents=documents, examples=examples, params=params)


_LABEL_LIST = re.compile(r"\s*[A-Z](?:\s*(?:,|;|&|\band\b)?\s*[A-Z])*\s*")


def _labels(answer: str) -> list[str]:
    """Choice labels of one answer: "B" -> [B]; "ACD", "A, C and D" -> [A, C, D]; else []."""
    return re.findall(r"[A-Z]", answer) if _LABEL_LIST.fullmatch(answer) else []


def _example(q: QuestionRecord) -> Example:
    tags: dict[str, str | float] = dict(q.tags or {})
    choices = q.labelled_choices()
    answers = tuple(q.answers)
    if choices:
        multi = any(len(_labels(a)) > 1 for a in answers)
        if multi:  # every answer is then a set of letters, stored sorted ("ACD")
            answers = tuple("".join(sorted(_labels(a))) for a in answers)
        tags |= {"answer_format": MULTI_SELECT if multi else "letter", "choices": json.dumps(choices)}
    tags.setdefault("primary_metric", default_primary(tags, answers))
    return Example(
        id=q.id,
        doc_ids=tuple(q.doc_ids),
        question=q.question,
        answers=answers,
        evidence=tuple(Span(d, s, e) for d, s, e in q.evidence or ()),
        tags=tags,
    )


def import_summary(path: Path | str) -> dict[str, Any]:
    """Validate a user corpus and describe it; raises CorpusError listing every problem."""
    corpus = load_jsonl_dir(path)
    sizes = sorted(len(d.text) for d in corpus.documents.values())
    formats = Counter(answer_format(ex.tags, ex.answers) for ex in corpus.examples)
    return {
        "name": corpus.name,
        "path": str(path),
        "documents": len(corpus.documents),
        "questions": len(corpus.examples),
        "with_evidence": sum(1 for ex in corpus.examples if ex.evidence),
        "answer_formats": dict(sorted(formats.items())),
        "metrics": metric_counts(corpus.examples),
        "chars_per_document": {
            "min": sizes[0],
            "median": int(statistics.median(sizes)),
            "max": sizes[-1],
            "total": sum(sizes),
        },
        "sha256": corpus.params.get("sha256"),
    }


class JsonlCorpusSpec(Strict):
    kind: Literal["jsonl"] = "jsonl"
    path: str  # a directory with documents.jsonl + questions.jsonl, or one L-Eval-style file
    # A corpus named only by its path: the files' content hash joins the run id.
    named_by_path: ClassVar[bool] = True


@register_corpus(JsonlCorpusSpec)
async def _build(cs: JsonlCorpusSpec, ctx: BuildContext) -> Corpus:
    return await with_doc_tokens(load_jsonl_dir(cs.path), ctx.tokenize)
