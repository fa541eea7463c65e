"""BEIR-style corpus/queries/qrels: examples whose evidence is the relevant documents, scored by
`ragvslc retrieval` over the whole corpus (real MiniLM, real FAISS, the model's own tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from compare.core.metrics import METRICS
from compare.core.types import Prediction, Span
from compare.run.retrieval_run import evaluate
from compare.run.spec import load_spec, validate_spec
from corpora.beir import BeirCorpusSpec, load_beir
from corpora.records import CorpusError
from main import app

DOCS = [
    {"_id": "volcano", "title": "Mauna Loa",
     "text": "Mauna Loa is the largest active volcano on Earth. Its lava flows have reshaped the island "
             "of Hawaii many times, and it last erupted in 2022."},
    {"_id": "jazz", "title": "Bebop",
     "text": "Bebop is a style of jazz with fast tempos and complex chord progressions, developed by "
             "saxophonist Charlie Parker and trumpeter Dizzy Gillespie in the 1940s."},
    {"_id": "glacier", "title": "",
     "text": "Glaciers form where snow piles up faster than it melts; the compressed ice then flows slowly "
             "downhill under its own weight, carving valleys.", "metadata": {"source": "wiki"}},
]
QUERIES = [
    {"_id": "q1", "text": "Which volcano is the largest active one in the world?"},
    {"_id": "q2", "text": "How does compressed ice move down a valley?", "metadata": {}},
    {"_id": "q3", "text": "Who developed bebop?"},  # only in the dev split
]
runner = CliRunner()


def _jsonl(path: Path, rows: list[Any]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    _jsonl(root / "corpus.jsonl", DOCS)
    _jsonl(root / "queries.jsonl", QUERIES)
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tvolcano\t1\nq2\tglacier\t2\nq2\tjazz\t0\n")
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq3\tjazz\t1\n")
    return root


def test_corpus_queries_and_qrels_become_examples_with_document_evidence(tmp_path: Path) -> None:
    corpus = load_beir(_beir(tmp_path / "tiny"))
    assert corpus.name == "tiny-test" and list(corpus.documents) == ["volcano", "jazz", "glacier"]
    assert corpus.documents["volcano"].text == f"Mauna Loa\n\n{DOCS[0]['text']}"  # title, then text
    assert corpus.documents["glacier"].text == DOCS[2]["text"]  # no title
    q1, q2 = corpus.examples
    assert (q1.id, q1.question, q1.doc_ids) == ("q1", QUERIES[0]["text"], ("volcano",))
    assert q2.doc_ids == ("glacier",)  # score 0 is not relevant
    assert q2.evidence == (Span("glacier", 0, len(corpus.documents["glacier"].text)),)
    assert q1.answers == () and q1.tags["relevant"] == 1.0 and len(str(corpus.params["sha256"])) == 64
    # No answers: answer metrics do not apply (None), evidence metrics score the retrieval.
    hit = Prediction("", None, 0, retrieved=(Span("jazz", 0, 40), Span("volcano", 10, 60)))
    assert METRICS["evidence_recall"](q1, hit) == 1.0 and METRICS["evidence_mrr"](q1, hit) == 0.5
    for name in ("contains", "token_f1", "exact_match", "headline"):
        assert METRICS[name](q1, hit) is None, name
    assert METRICS["headline"](q1, Prediction("", None, 0, error="boom")) is None
    dev = load_beir(tmp_path / "tiny", split="dev", limit=5)
    assert [e.id for e in dev.examples] == ["q3"] and len(dev.documents) == 3  # the whole search space


def test_every_problem_is_named_by_file_and_line(tmp_path: Path) -> None:
    root = _beir(tmp_path / "bad")
    _jsonl(root / "corpus.jsonl", [*DOCS, {"_id": "jazz", "text": "again"}, {"id": "x", "text": "y"},
                                   {"_id": "empty", "title": " ", "text": ""}])
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tvolcano\t1\nq9\tvolcano\t1\nq1\tnowhere\t1\nq2\tglacier\thigh\n"
        "q1\tvolcano\t1\n")
    with pytest.raises(CorpusError) as err:
        load_beir(root)
    corpus, qrels = root / "corpus.jsonl", root / "qrels" / "test.tsv"
    got = str(err.value)
    for want in (f"{corpus}:4: duplicate _id 'jazz' (first on line 2)", f"{corpus}:5: _id: Field required",
                 f"{corpus}:5: id: Extra inputs are not permitted", f"{corpus}: document 'empty' is empty",
                 f"{qrels}:3: unknown query id 'q9'", f"{qrels}:4: unknown corpus id 'nowhere'",
                 f"{qrels}:5: expected query-id, corpus-id, integer score",
                 f"{qrels}:6: pair ('q1', 'volcano') listed twice"):
        assert want in got, (want, got)
    assert "nothing imported" in got and len(err.value.problems) == 8
    with pytest.raises(CorpusError, match="splits: dev, test"):
        load_beir(root, split="train")


def test_ragvslc_retrieval_scores_a_beir_spec_over_the_whole_corpus(tmp_path: Path) -> None:
    root = _beir(tmp_path / "tiny")
    spec = tmp_path / "beir.toml"
    spec.write_text(f'[corpus]\nkind = "beir"\npath = "{root}"\n\n'
                    '[[pipelines]]\nkind = "rag"\nscope = "corpus"\nchunk_size = 128\nchunk_overlap = 0\n')
    assert isinstance(load_spec(spec).corpus, BeirCorpusSpec)
    res = runner.invoke(app, ["retrieval", "--spec", str(spec), "--top-k", "1,3",
                              "--db", str(tmp_path / "r.duckdb"), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["rows"]
    assert [r["k"] for r in rows] == [1, 3] and all("corpus" in r["config"] for r in rows)
    assert all(r["n_examples"] == 2 for r in rows)
    # One chunk per document: the right document ranks first for both queries, among all three.
    assert [(r["recall"], r["mrr"]) for r in rows] == [(1.0, 1.0), (1.0, 1.0)]


async def test_evaluate_ranks_among_all_documents(tmp_path: Path) -> None:
    """The same through compare.run.retrieval_run.evaluate: at k=1 each query's one chunk is its
    relevant document's, ranked against the other documents (scope = "corpus")."""
    rag = {"kind": "rag", "scope": "corpus", "chunk_size": 128, "chunk_overlap": 0, "top_k": 1}
    spec = validate_spec({"corpus": {"kind": "beir", "path": str(_beir(tmp_path / "t"))}, "pipelines": [rag]})
    got = await evaluate(spec, [1, 2], [], None)
    rows, name, params = got.rows, got.corpus, got.corpus_params
    assert name == "t-test" and params["builder"] == "beir"
    assert [r["k"] for r in rows] == [1, 2] and rows[0]["n_chunks"] == 3
    assert rows[0]["recall"] == 1.0 and rows[1]["mean_chunks"] == 2
