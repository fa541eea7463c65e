"""What every file-based corpus shares: the strict JSONL reader (each problem named "file:line:
what", all at once, nothing imported when there is one) and the measured document lengths.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from compare.core.metrics import check_primary, primary_metric
from compare.core.types import Corpus, Example, TokenCounter

M = TypeVar("M", bound=BaseModel)


class CorpusError(ValueError):
    """A corpus that cannot be used; `problems` lists every one as "file:line: what"."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s), nothing imported:\n{lines}")


class StrictRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



def read_jsonl(path: Path, model: type[M], problems: list[str]) -> list[tuple[int, M]]:
    """Validated records with their 1-based line numbers; every problem appended, none raised."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{path}: file not found")
        return []
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
        return []
    out: list[tuple[int, M]] = []
    for n, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{n}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = line_bytes[exc.start]
            problems.append(f"{where}: not UTF-8 (byte 0x{bad:02x} at column {exc.start + 1})")
            continue
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(data, dict):
            problems.append(f"{where}: expected a JSON object, got {type(data).__name__}")
            continue
        try:
            out.append((n, model.model_validate_json(line, strict=True)))
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "(record)"
                problems.append(f"{where}: {field}: {err['msg']}")
    return out


async def with_doc_tokens(corpus: Corpus, count: TokenCounter) -> Corpus:
    """Tag each example with its documents' length in the served model's own tokens.

    Loaded corpora (L-Eval, imports) come without lengths; reports plot quality against
    `doc_tokens`, which must be a measurement. One count per document, not per question.
    """
    sizes = {d: await count(doc.text) for d, doc in corpus.documents.items()}
    examples = [
        ex if "doc_tokens" in ex.tags
        else replace(ex, tags={**ex.tags, "doc_tokens": float(sum(sizes[d] for d in ex.doc_ids))})
        for ex in corpus.examples
    ]
    return Corpus(corpus.name, corpus.documents, examples, corpus.params)


def declared_metric_problems(where: str, tags: Mapping[str, object] | None) -> list[str]:
    """A question's declared headline metric (`tags.primary_metric`) must be a known one: named
    at its file and line before anything is ingested or asked."""
    declared = (tags or {}).get("primary_metric")
    if declared is None:
        return []
    try:
        check_primary(str(declared))
    except ValueError as exc:
        return [f"{where}: tags.{exc}"]
    return []


def metric_counts(examples: Sequence[Example]) -> dict[str, int]:
    """Questions per headline metric: what each question will be scored by, said at import."""
    return dict(sorted(Counter(primary_metric(ex) for ex in examples).items()))
