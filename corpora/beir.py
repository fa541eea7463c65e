"""BEIR-style retrieval sets: corpus.jsonl + queries.jsonl + qrels/<split>.tsv, for retrieval alone.

    corpus.jsonl    {"_id": "d1", "title": "...", "text": "...", "metadata": {...}}, one document
                    each (its text: the title, a blank line, then the text)
    queries.jsonl   {"_id": "q1", "text": "...", "metadata": {...}}
    qrels/test.tsv  query-id <TAB> corpus-id <TAB> score (a header line first); score > 0: relevant

Each query of the split with a relevant document is one example; its evidence is each relevant
document's whole text (Span(doc, 0, len(text))), so evidence recall@k is the share of the
relevant documents some top-k chunk comes from and MRR the rank of the first such chunk (k
counts chunks, not documents: with chunks longer than the documents the two are the same).

BEIR has no answers: an example's answers are empty, every answer metric says "does not apply"
(None, as for any question without a findable gold) and the evidence is what is scored. The set
is for `ragvslc retrieval` or a run's evidence metrics, with RAG over the whole corpus:
`scope = "corpus"`. An example's doc_ids are its relevant documents (what a Corpus requires, and
what a long-context pipeline would read), so RAG's default scope = "document" would search only
those and rank trivially well; the qrels' other documents are the search space.
As for every file corpus, each problem is reported as "file:line: what", all at once, and
nothing is imported while there is one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from compare.core.config import Strict
from compare.core.metrics import default_primary
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus, Document, Example, Span
from corpora.jsonl import NonBlank
from corpora.records import CorpusError, StrictRecord, read_jsonl, with_doc_tokens

QRELS_HEADER = ["query-id", "corpus-id", "score"]


class BeirDocument(StrictRecord):
    id: NonBlank = Field(alias="_id")
    title: str = ""
    text: str
    metadata: dict[str, Any] | None = None

    def joined(self) -> str:
        return "\n\n".join(t for t in (self.title.strip(), self.text) if t.strip())


class BeirQuery(StrictRecord):
    id: NonBlank = Field(alias="_id")
    text: NonBlank
    metadata: dict[str, Any] | None = None


def _unique(rows: list[tuple[int, Any]], path: Path, problems: list[str]) -> dict[str, Any]:
    first: dict[str, int] = {}
    out: dict[str, Any] = {}
    for n, rec in rows:
        if rec.id in first:
            problems.append(f"{path}:{n}: duplicate _id {rec.id!r} (first on line {first[rec.id]})")
        else:
            first[rec.id], out[rec.id] = n, rec
    return out


Qrels = dict[str, dict[str, int]]  # query -> {document: score}


def read_qrels(path: Path, queries: set[str], docs: set[str], problems: list[str]) -> Qrels:
    """{query: {document: score}} in file order; unknown ids and bad lines are problems."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        splits = sorted(p.stem for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        problems.append(f"{path}: cannot read ({type(exc).__name__}); splits: {', '.join(splits) or 'none'}")
        return {}
    qrels: Qrels = {}
    for n, line in enumerate(lines, start=1):
        cols = [c.strip() for c in line.split("\t")]
        if not line.strip() or (n == 1 and cols == QRELS_HEADER):
            continue
        where = f"{path}:{n}"
        if len(cols) != 3 or not cols[2].lstrip("-").isdigit():
            problems.append(f"{where}: expected query-id, corpus-id, integer score (tab-separated), "
                            f"got {line[:80]!r}")
        elif cols[0] not in queries:
            problems.append(f"{where}: unknown query id {cols[0]!r} (not in queries.jsonl)")
        elif cols[1] not in docs:
            problems.append(f"{where}: unknown corpus id {cols[1]!r} (not in corpus.jsonl)")
        elif cols[1] in qrels.get(cols[0], {}):
            problems.append(f"{where}: pair ({cols[0]!r}, {cols[1]!r}) listed twice")
        else:
            qrels.setdefault(cols[0], {})[cols[1]] = int(cols[2])
    return qrels


def load_beir(path: Path | str, *, split: str = "test", limit: int | None = None) -> Corpus:
    """Every document of corpus.jsonl (the search space); the split's queries, the first `limit`."""
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(str(root), [f"{root}: no such directory (of corpus.jsonl, queries.jsonl, qrels/)"])
    files = (root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv")
    problems: list[str] = []
    docs = _unique(read_jsonl(files[0], BeirDocument, problems), files[0], problems)
    queries = _unique(read_jsonl(files[1], BeirQuery, problems), files[1], problems)
    texts = {d: rec.joined() for d, rec in docs.items()}
    problems += [f"{files[0]}: document {d!r} is empty" for d, t in texts.items() if not t.strip()]
    qrels = read_qrels(files[2], set(queries), set(docs), problems)
    asked = [q for q in queries if any(s > 0 for s in qrels.get(q, {}).values())][:limit]
    if not asked and not problems:
        problems.append(f"{files[2]}: no query with a relevant document (score > 0)")
    if problems:
        raise CorpusError(str(root), problems)
    examples = []
    for q in asked:
        relevant = tuple(d for d, s in qrels[q].items() if s > 0)
        tags: dict[str, str | float] = {"task": "beir", "relevant": float(len(relevant))}
        tags["primary_metric"] = default_primary(tags)
        examples.append(Example(id=q, doc_ids=relevant, question=queries[q].text, answers=(),
                                evidence=tuple(Span(d, 0, len(texts[d])) for d in relevant), tags=tags))
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            digest.update(f"{f.name}\0".encode() + hashlib.file_digest(fh, "sha256").digest())
    params: dict[str, object] = {
        "builder": "beir", "path": str(root), "split": split, "limit": limit, "sha256": digest.hexdigest(),
        "queries_without_relevant": sum(1 for rel in qrels.values() if not any(s > 0 for s in rel.values())),
    }
    documents = {d: Document(id=d, text=t) for d, t in texts.items()}
    return Corpus(name=f"{root.name}-{split}", documents=documents, examples=examples, params=params)


class BeirCorpusSpec(Strict):
    """BEIR-style corpus.jsonl + queries.jsonl + qrels/<split>.tsv (retrieval; RAG scope = "corpus")."""

    kind: Literal["beir"] = "beir"
    path: str  # the folder holding corpus.jsonl, queries.jsonl and qrels/
    split: NonBlank = "test"
    limit: PositiveInt | None = None  # the first N queries (every document stays: the search space)
    # A corpus named only by its path: the files' content hash joins the run id.
    named_by_path: ClassVar[bool] = True


@register_corpus(BeirCorpusSpec)
async def _build(cs: BeirCorpusSpec, ctx: BuildContext) -> Corpus:
    return await with_doc_tokens(load_beir(cs.path, split=cs.split, limit=cs.limit), ctx.tokenize)
