"""Rows of HF-datasets-style files (JSON, JSON Lines, Parquet) as a corpus, through a field mapping.

Each QA set names its columns its own way (LongBench: input/context/answers, L-Eval:
instructions/input/outputs), so a mapping names the column (dotted if nested) of each field:
  question      the question; a list of them (L-Eval) is one question each, and each mapped
                per-question column (answers, id, choices, evidence, answer_start) then a
                parallel list, entry j for question j
  document      the text; rows repeating it share ONE document (by `doc_id`, else content hash)
  answers       a string, a number or a list of them (any one counts)
  id, doc_id    question / document ids (default: the row's number / the text's hash)
  choices       a list (labelled A, B, ...) or {label: text}; answers are then a label, a
                0-based index or an option's text
  evidence      [[start, end], ...] or [{"start", "end"}, ...] offsets into the row's document
  answer_start  each answer's character offset in the document (SQuAD's answers.answer_start)
  tags          columns kept as tags, joined by "+": tags=dataset+language
A question needs `answers`, or evidence for retrieval-only use; other columns are ignored.
A folder is read shard by shard (sorted, hidden folders skipped); `split` keeps one split's files
(a folder so named, `<split>.jsonl`, `<split>-00000-of-00002.parquet`, ...). `.json` is a JSON
array of rows or JSON Lines (as `Dataset.to_json` writes); Parquet is read by DuckDB. Every
problem is reported at once, "file:line: what" ("file: row N" in Parquet and JSON arrays), one
repeated on many rows once with where it recurs; nothing is imported while there is one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, PositiveInt, RootModel

from compare.core.config import Strict
from compare.core.metrics import answer_format, check_primary, default_primary, normalize
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus, Document, Example, Span
from corpora.records import CorpusError, read_jsonl, with_doc_tokens

FIELDS = ("question", "document", "answers", "id", "doc_id", "choices", "evidence", "answer_start", "tags")
PER_QUESTION = ("answers", "id", "choices", "evidence", "answer_start")
RESERVED_TAGS = frozenset({"answer_format", "choices", "primary_metric", "doc_tokens"})
SUFFIXES = (".jsonl", ".json", ".parquet")
_MISSING: Any = object()


def check_map(mapping: Mapping[str, str]) -> list[str]:
    """Every problem of a mapping: unknown fields, empty column names, what is missing."""
    problems = [f"map: unknown field {k!r}; known: {', '.join(FIELDS)}" for k in mapping if k not in FIELDS]
    problems += [f"map: {k} = {v!r}: not a column name" for k, v in mapping.items()
                 if any(not seg.strip() for seg in v.split("+" if k == "tags" else "."))]
    problems += [f"map: {k!r} is required (the dataset's column holding the {k})"
                 for k in ("question", "document") if k not in mapping]
    if not {"answers", "evidence"} & set(mapping):
        problems.append("map: give `answers` (or `evidence`, for retrieval-only use)")
    if "answer_start" in mapping and "answers" not in mapping:
        problems.append("map: `answer_start` needs `answers` (they are the answers' offsets)")
    problems += [f"map: tag {t!r} is one of ours ({', '.join(sorted(RESERVED_TAGS))})"
                 for t in mapping.get("tags", "").split("+") if t in RESERVED_TAGS]
    return problems


def data_files(path: Path, split: str | None) -> list[Path]:
    """The files to read: `path` itself, or the folder's shards of `split` (all without one)."""
    if path.is_file():
        if split is not None:
            raise CorpusError(str(path), [f"{path}: `split` picks shards in a folder; this is one file"])
        if path.suffix not in SUFFIXES:
            raise CorpusError(str(path), [f"{path}: unknown format; expected {', '.join(SUFFIXES)}"])
        return [path]
    if not path.is_dir():
        raise CorpusError(str(path), [f"{path}: no such file or directory"])
    found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()
                   and not any(s.startswith(".") for s in p.relative_to(path).parts))
    chosen = [p for p in found if split is None or _in_split(p.relative_to(path), split)]
    if not chosen:
        seen = ", ".join(sorted({str(p.relative_to(path)) for p in found})[:10]) or "none"
        what = f" of split {split!r}" if split else ""
        raise CorpusError(str(path), [f"{path}: no {'/'.join(SUFFIXES)} files{what} (found: {seen})"])
    return chosen


def _in_split(rel: Path, split: str) -> bool:
    stem = rel.name.removesuffix(rel.suffix)
    return split in rel.parts[:-1] or stem == split or stem.startswith((f"{split}-", f"{split}_"))


class _Row(RootModel[dict[str, Any]]):
    """One JSON object, any columns (the mapping decides which matter)."""


@dataclass(frozen=True)
class _At:
    """Where a row is: a line of a JSON Lines file, or a row of a Parquet file / JSON array."""

    file: str
    n: int
    unit: Literal["line", "row"] = "line"

    def __str__(self) -> str:
        return f"{self.file}:{self.n}" if self.unit == "line" else f"{self.file}: row {self.n}"


def _json_rows(path: Path, problems: list[str]) -> Iterator[tuple[_At, dict[str, Any]]]:
    raw = path.read_bytes() if path.suffix == ".json" else b""
    if not raw.lstrip().startswith(b"["):
        yield from ((_At(str(path), n), r.root) for n, r in read_jsonl(path, _Row, problems))
        return
    try:
        rows = json.loads(raw)
    except ValueError as exc:  # not UTF-8, or not JSON (the message says where)
        problems.append(f"{path}: not a valid UTF-8 JSON array: {exc}")
        return
    for n, row in enumerate(rows, start=1):
        if isinstance(row, dict):
            yield _At(str(path), n, "row"), row
        else:
            problems.append(f"{_At(str(path), n, 'row')}: expected a JSON object, got {type(row).__name__}")


def _parquet_rows(path: Path, problems: list[str]) -> Iterator[tuple[_At, dict[str, Any]]]:
    import duckdb  # only for Parquet files

    with duckdb.connect() as con:
        try:
            cur = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        except duckdb.Error as exc:
            problems.append(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}")
            return
        names = [d[0] for d in cur.description or ()]
        batches = iter(lambda: cur.fetchmany(1024), [])
        for n, values in enumerate((v for batch in batches for v in batch), start=1):
            yield _At(str(path), n, "row"), dict(zip(names, values, strict=True))


class _Bad(ValueError):
    """A value that does not fit its field; `kind` groups the same problem across rows."""

    def __init__(self, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.kind = kind


def _lookup(row: Mapping[str, Any], column: str) -> Any:
    """A column's value, dotted for nested objects (a key that itself holds a dot wins)."""
    if column in row:
        return row[column]
    cur: Any = row
    for seg in column.split("."):
        cur = cur.get(seg, _MISSING) if isinstance(cur, Mapping) else _MISSING
    return cur


def _kind(v: Any) -> str:
    if isinstance(v, Mapping):  # the usual slip: a struct column named without its field
        return f"an object with keys {', '.join(map(str, list(v)[:6]))} (name a nested column as col.key)"
    return "null" if v is None else ("blank" if isinstance(v, str) else type(v).__name__)


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("type", f"expected a non-empty string, got {_kind(v)}")
    return v


def _ident(v: Any) -> str:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else _text(v).strip()


def _choices(v: Any) -> dict[str, str]:
    if isinstance(v, list) and 2 <= len(v) <= 26:
        return {chr(ord("A") + i): _text(c).strip() for i, c in enumerate(v)}
    if isinstance(v, Mapping) and len(v) >= 2 and all(len(str(k)) == 1 and str(k).isupper() for k in v):
        return {str(k): _text(c).strip() for k, c in v.items()}
    raise _Bad("type", f"expected 2-26 options (a list, or {{\"A\": text}}), got {_kind(v)}")


def _answers(v: Any, choices: Mapping[str, str]) -> tuple[str, ...]:
    items = v if isinstance(v, list) else [v]
    if not items:
        raise _Bad("empty", "no answer")
    for a in items:
        if isinstance(a, bool) or not isinstance(a, str | int | float):
            raise _Bad("type", f"expected a string, a number or a list of them, got {_kind(a)}")
    return tuple(_label(a, choices) if choices else _text(str(a)).strip() for a in items)


def _label(a: str | int | float, choices: Mapping[str, str]) -> str:
    """A choice answer as its label: "B", the 0-based index 1, or the option's own text."""
    if isinstance(a, int) and 0 <= a < len(choices):
        return list(choices)[a]
    if isinstance(a, str) and a.strip() in choices:
        return a.strip()
    named = [k for k, t in choices.items() if isinstance(a, str) and normalize(t) == normalize(a)]
    if len(named) != 1:
        raise _Bad("choice", f"answer {a!r} is not a label ({', '.join(choices)}), an index or an option")
    return named[0]


def _offsets(v: Any, doc: str) -> list[tuple[int, int]]:
    spans = []
    for e in v if isinstance(v, list) else [v]:
        pair = [e.get("start"), e.get("end")] if isinstance(e, Mapping) else e
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int for x in pair)):
            raise _Bad("type", f"expected [[start, end], ...] character offsets, got {str(e)[:60]}")
        if not 0 <= pair[0] < pair[1] <= len(doc):
            raise _Bad("range", f"[{pair[0]}, {pair[1]}] is outside the document (0..{len(doc)})")
        spans.append((pair[0], pair[1]))
    return spans


def _starts(v: Any, answers: tuple[str, ...], doc: str) -> list[tuple[int, int]]:
    starts = v if isinstance(v, list) else [v]
    if len(starts) != len(answers) or not all(type(s) is int for s in starts):
        raise _Bad("type", f"expected {len(answers)} integer offset(s), one per answer, got {str(v)[:60]}")
    for s, a in zip(starts, answers, strict=True):
        if doc[s : s + len(a)] != a:
            raise _Bad("range", f"offset {s} does not point at the answer {a!r}")
    return [(s, s + len(a)) for s, a in zip(starts, answers, strict=True)]


def _tag(v: Any) -> str | float | None:
    """A tag as stored: text, a number, or the JSON of a list or object (LongBench's all_classes)."""
    if v is None or isinstance(v, str) or (isinstance(v, int | float) and not isinstance(v, bool)):
        return v if v is None or isinstance(v, str) else float(v)
    return json.dumps(v, default=str, ensure_ascii=False)


@dataclass
class _Reader:
    """Rows -> documents and examples. Every problem is noted, none raised; a row problem is
    grouped by (file, field, column, kind): the first in full, then the rows it recurs on."""

    mapping: Mapping[str, str]
    name: str
    primary: str | None
    plain: list[str] = field(default_factory=list)  # file-level problems, as the readers say them
    grouped: dict[tuple[str, str, str, str, str], list[str]] = field(default_factory=dict)
    documents: dict[str, tuple[Document, _At]] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)
    ids: dict[str, _At] = field(default_factory=dict)
    rows: int = 0

    def problems(self) -> list[str]:
        out = list(self.plain)
        for (_, unit, *_), (first, *more) in self.grouped.items():
            shown = ", ".join(more[:8]) + (", ..." if len(more) > 8 else "")
            out.append(first + (f" (same on {len(more)} more {unit}(s): {shown})" if more else ""))
        return out

    def _note(self, at: _At, ours: str, bad: _Bad, column: str | None = None) -> Any:
        theirs = column or self.mapping[ours]
        seen = self.grouped.setdefault((at.file, at.unit, ours, theirs, bad.kind), [])
        seen.append(f"{at}: {ours} ({theirs}): {bad}" if not seen else str(at.n))
        return _MISSING

    def _raw(self, at: _At, row: Mapping[str, Any], ours: str, column: str | None = None) -> Any:
        v = _lookup(row, column or self.mapping[ours])
        if v is _MISSING:
            have = ", ".join(sorted(row))[:200]
            return self._note(at, ours, _Bad("missing", f"no such column (the row has: {have})"), column)
        return v

    def _conv(self, at: _At, ours: str, fn: Callable[..., Any], v: Any, *args: Any) -> Any:
        try:
            return v if v is _MISSING else fn(v, *args)
        except _Bad as bad:
            return self._note(at, ours, bad)

    def add_row(self, at: _At, row: Mapping[str, Any]) -> None:
        n, self.rows = self.rows, self.rows + 1
        doc = self._conv(at, "document", _text, self._raw(at, row, "document"))
        doc_id = self._doc_id(at, row, doc)
        qs = self._raw(at, row, "question")
        many = isinstance(qs, list)
        if many and not qs:
            self._note(at, "question", _Bad("empty", "an empty list of questions"))
        count = len(qs) if many else 1
        per = {f: self._per_question(at, row, f, many, count) for f in PER_QUESTION if f in self.mapping}
        tags: dict[str, str | float] = {}
        for col in self.mapping["tags"].split("+") if "tags" in self.mapping else ():
            if (raw := self._raw(at, row, "tags", col)) is not _MISSING and (tag := _tag(raw)) is not None:
                tags[col] = tag
        for j in range(count):
            q = self._conv(at, "question", _text, qs[j] if many else qs)
            qid = f"r{n:05d}" + (f"-q{j:03d}" if many else "")
            self._question(at, q, doc, doc_id, {f: v[j] for f, v in per.items()}, tags, qid)

    def _per_question(self, at: _At, row: Mapping[str, Any], ours: str, many: bool, count: int) -> list[Any]:
        """The column's value for each of the row's questions (a parallel list when there are many)."""
        v = self._raw(at, row, ours)
        if not many or v is _MISSING:
            return [v] * count
        if isinstance(v, list) and len(v) == count:
            return v
        bad = _Bad("parallel", f"expected a list of {count} entries (one per question), got {_kind(v)}")
        return [self._note(at, ours, bad)] * count

    def _doc_id(self, at: _At, row: Mapping[str, Any], doc: Any) -> str | None:
        """The row's document: one per id, or per text without an id column."""
        mapped = "doc_id" in self.mapping
        given = self._conv(at, "doc_id", _ident, self._raw(at, row, "doc_id")) if mapped else None
        if doc is _MISSING or given is _MISSING:
            return None
        doc_id = given or "doc-" + hashlib.sha256(doc.encode()).hexdigest()[:16]
        known, first = self.documents.setdefault(doc_id, (Document(doc_id, doc), at))
        if known.text != doc:
            self._note(at, "doc_id", _Bad("clash", f"document {doc_id!r} has another text at {first}"))
            return None
        return doc_id

    def _question(self, at: _At, q: Any, doc: Any, doc_id: str | None, v: dict[str, Any],
                  tags: dict[str, str | float], qid: Any) -> None:
        choices = self._conv(at, "choices", _choices, v["choices"]) if "choices" in v else {}
        answers: Any = ()
        if "answers" in v:  # choice answers are read as labels: not without the choices
            answers = _MISSING if choices is _MISSING else self._conv(
                at, "answers", _answers, v["answers"], choices)
        qid = self._conv(at, "id", _ident, v["id"]) if "id" in v else qid
        spans: list[Any] = []
        if isinstance(doc, str) and "evidence" in v:
            spans.append(self._conv(at, "evidence", _offsets, v["evidence"], doc))
        if isinstance(doc, str) and "answer_start" in v and answers is not _MISSING:
            spans.append(self._conv(at, "answer_start", _starts, v["answer_start"], answers, doc))
        if isinstance(qid, str) and qid in self.ids:
            qid = self._note(at, "id", _Bad("duplicate", f"id {qid!r} again (first: {self.ids[qid]})"))
        if any(x is _MISSING for x in (q, choices, answers, qid, *spans)) or doc_id is None:
            return
        self.ids[qid] = at
        tags = {"task": self.name, **tags}
        if choices:
            tags |= {"answer_format": "letter", "choices": json.dumps(choices)}
        elif answers:  # the one rule, per question: "1890" is a short answer, a sentence free text
            tags["answer_format"] = answer_format({}, answers)
        tags["primary_metric"] = self.primary or default_primary(tags, answers)
        evidence = tuple(Span(doc_id, s, e) for part in spans for s, e in part)
        self.examples.append(Example(qid, (doc_id,), q, answers, evidence, tags))


def load_hf(path: Path | str, mapping: Mapping[str, str], *, split: str | None = None,
            limit: int | None = None, primary_metric: str | None = None) -> Corpus:
    """The mapped rows of `path` (a file or a folder of shards), up to `limit` questions."""
    path = Path(path)
    if problems := check_map(mapping):
        raise CorpusError(str(path), problems)
    files = data_files(path, split)
    reader = _Reader(mapping, path.stem if path.is_file() else path.name, primary_metric)
    root = path if path.is_dir() else path.parent
    digest = hashlib.sha256()
    for f in files:
        if limit is None or len(reader.examples) < limit:
            read = _parquet_rows if f.suffix == ".parquet" else _json_rows
            for at, row in read(f, reader.plain):
                reader.add_row(at, row)
                if limit is not None and len(reader.examples) >= limit:
                    break
        with f.open("rb") as fh:  # the files' content names the corpus (in the run id)
            digest.update(f"{f.relative_to(root)}\0".encode() + hashlib.file_digest(fh, "sha256").digest())
    problems = reader.problems()
    if not reader.examples and not problems:
        problems.append(f"{path}: no questions")
    if problems:
        raise CorpusError(str(path), problems)
    examples = reader.examples[:limit]
    used = {d for ex in examples for d in ex.doc_ids}
    params: dict[str, object] = {
        "builder": "hf", "path": str(path), "map": dict(mapping), "split": split, "limit": limit,
        "files": [str(f.relative_to(root)) for f in files], "rows": reader.rows, "sha256": digest.hexdigest(),
    }
    documents = {d: doc for d, (doc, _) in reader.documents.items() if d in used}
    return Corpus(reader.name + (f"-{split}" if split else ""), documents, examples, params)


def _valid_map(v: dict[str, str]) -> dict[str, str]:
    if problems := check_map(v):
        raise ValueError("; ".join(problems))
    return v


class HfCorpusSpec(Strict):
    """HF-datasets-style JSON / JSONL / Parquet rows read through a field mapping."""

    kind: Literal["hf"] = "hf"
    path: str  # a file, or a folder of shards
    map: Annotated[dict[str, str], AfterValidator(_valid_map)]  # our field -> the dataset's column
    split: str | None = None
    limit: PositiveInt | None = None  # the first N questions
    # each question's headline metric (default: by its format, token_f1 for free text)
    primary_metric: Annotated[str, AfterValidator(check_primary)] | None = None
    # A corpus named only by its path: the files' content hash joins the run id.
    named_by_path: ClassVar[bool] = True


@register_corpus(HfCorpusSpec)
async def _build(cs: HfCorpusSpec, ctx: BuildContext) -> Corpus:
    corpus = load_hf(cs.path, cs.map, split=cs.split, limit=cs.limit, primary_metric=cs.primary_metric)
    return await with_doc_tokens(corpus, ctx.tokenize)
