"""HF-datasets-style rows through a field mapping: the real L-Eval files, a LongBench-shaped JSONL,
Parquet written by DuckDB, and every problem named by file and line (or row) at once."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from compare.core.metrics import METRICS
from compare.core.types import Completion, Prediction
from compare.run.execute import build_corpus
from compare.run.spec import SpecError, validate_spec
from compare.serving.client import HttpBackend
from corpora.books import data_dir
from corpora.hf_import import HfCorpusSpec, load_hf
from corpora.leval import load_leval
from corpora.records import CorpusError
from main import app

LEVAL_MAP = {"question": "instructions", "answers": "outputs", "document": "input",
             "tags": "evaluation+source"}
LONGBENCH_MAP = "question=input,answers=answers,document=context,id=_id"
LAKE = ("Lake Vostok lies under the East Antarctic ice sheet, about four kilometres below the "
        "surface. Its water has been sealed off from the atmosphere for millions of years.")
BRIDGE = ("The Forth Bridge, a cantilever railway bridge in Scotland, opened in 1890. Painting it "
          "became a byword for an endless task, although a modern coating now lasts decades.")
runner = CliRunner()


def _reply(text: str) -> Prediction:
    return Prediction(text, Completion(text, 1, 0, 1, 0.1, 0.1, ()), 10)


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Rows as JSON Lines; a str row is written verbatim (to plant a broken line)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _longbench_rows() -> list[dict[str, Any]]:
    """LongBench's own fields: two questions share one context (as its multi-question sets do)."""
    common = {"length": 30, "dataset": "narrativeqa", "language": "en", "all_classes": None}
    return [
        {"input": "Where does Lake Vostok lie?", "context": LAKE,
         "answers": ["under the East Antarctic ice sheet"], "_id": "lb-1", **common},
        {"input": "How long has its water been sealed off?", "context": LAKE,
         "answers": ["millions of years", "for millions of years"], "_id": "lb-2", **common},
        {"input": "When did the Forth Bridge open?", "context": BRIDGE, "answers": ["1890"], "_id": "lb-3",
         **common, "dataset": "trec", "all_classes": ["date", "place"]},
    ]


@pytest.mark.parametrize("subset", ["natural_question", "financial_qa"])
def test_leval_files_through_the_mapping_match_the_leval_loader(subset: str) -> None:
    path = data_dir() / "leval" / f"{subset}.jsonl"
    mapped, loaded = load_hf(path, LEVAL_MAP), load_leval(subset)  # type: ignore[arg-type]
    assert len(mapped.examples) == len(loaded.examples) == sum(
        len(json.loads(line)["instructions"]) for line in path.read_text().splitlines())
    pairs = [(e.question, e.answers) for e in loaded.examples]
    assert [(e.question, e.answers) for e in mapped.examples] == pairs
    for got, want in zip(mapped.examples, loaded.examples, strict=True):  # the same document text
        assert mapped.documents[got.doc_ids[0]].text == loaded.documents[want.doc_ids[0]].text
    # L-Eval repeats some documents on two lines: the mapping keeps ONE document per text.
    inputs = [json.loads(line)["input"] for line in path.read_text().splitlines()]
    assert len(mapped.documents) == len(set(inputs)) < len(loaded.documents)
    assert {d.text for d in mapped.documents.values()} == {d.text for d in loaded.documents.values()}
    first = mapped.examples[0]
    assert first.tags["evaluation"] == "f1" and first.tags["task"] == subset
    # the one free-text rule per question: NQ's "April 25 , 2018" is short, a report's sentences free
    expected = {"natural_question": ("short", "contains"), "financial_qa": ("free", "token_f1")}[subset]
    assert (first.tags["answer_format"], first.tags["primary_metric"]) == expected
    assert METRICS["exact_match"](first, _reply(first.answers[0])) == 1.0
    assert mapped.params["rows"] == len(inputs) and len(str(mapped.params["sha256"])) == 64


def test_leval_multiple_choice_subset_keeps_every_question() -> None:
    """quality's outputs are "(B) text": read as free text, the same questions and documents."""
    path = data_dir() / "leval" / "quality.jsonl"
    mapped, loaded = load_hf(path, LEVAL_MAP), load_leval("quality")
    assert [e.question for e in mapped.examples] == [e.question for e in loaded.examples]
    assert len(mapped.documents) == len(loaded.documents) == 15
    assert mapped.examples[0].answers[0].startswith(f"({loaded.examples[0].answers[0]})")


def test_longbench_shaped_jsonl_and_the_cli(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "narrativeqa.jsonl", _longbench_rows())
    mapping = dict(p.split("=") for p in LONGBENCH_MAP.split(","))
    mapping["tags"] = "dataset+language+length+all_classes"
    corpus = load_hf(path, mapping)
    assert [e.id for e in corpus.examples] == ["lb-1", "lb-2", "lb-3"]
    assert len(corpus.documents) == 2  # the repeated context is one document
    q1, q2, q3 = corpus.examples
    assert q1.doc_ids == q2.doc_ids != q3.doc_ids and corpus.documents[q1.doc_ids[0]].text == LAKE
    assert q2.answers == ("millions of years", "for millions of years")  # a list: any one counts
    assert q3.tags["dataset"] == "trec" and q3.tags["length"] == 30.0 and q3.tags["language"] == "en"
    assert json.loads(str(q3.tags["all_classes"])) == ["date", "place"] and "all_classes" not in q1.tags
    assert METRICS["token_f1"](q3, _reply("It opened in 1890.")) == pytest.approx(0.4)
    assert METRICS["contains"](q2, _reply("For millions of years.")) == 1.0

    ok = runner.invoke(app, ["corpora", "import", str(path), "--map", LONGBENCH_MAP])
    assert ok.exit_code == 0, ok.output
    assert "2 documents from 3 rows, 3 questions (free: 2, short: 1), 0 with evidence" in ok.output
    assert "scored by contains: 1, token_f1: 2;" in ok.output  # the summary is true per question
    spec_line = ok.output.split("use it with [corpus] ", 1)[1].strip()
    spec = validate_spec({"corpus": tomllib.loads(f"c = {{ {spec_line} }}")["c"]})  # the line is TOML
    assert isinstance(spec.corpus, HfCorpusSpec) and spec.corpus.map["id"] == "_id"
    limited = runner.invoke(app, ["corpora", "import", str(path), "--map", LONGBENCH_MAP, "--limit", "2"])
    assert "1 documents from 2 rows, 2 questions" in limited.output and "limit = 2" in limited.output

    before = load_hf(path, mapping).params["sha256"]
    _write_jsonl(path, _longbench_rows()[:2])  # edited files: another content hash, another run id
    after = load_hf(path, mapping).params["sha256"]
    assert before != after and spec.run_id(str(before)) != spec.run_id(str(after))
    assert HfCorpusSpec.named_by_path


def test_each_answered_question_gets_the_one_free_text_rule(tmp_path: Path) -> None:
    """A short gold ("1890") is a short answer scored by `contains`; a question with a gold longer
    than three words ("for millions of years") is free text scored by token F1: compare/core/metrics.py's
    rule, the one the user's own JSONL corpus follows. A declared primary metric still wins."""
    path = _write_jsonl(tmp_path / "lb.jsonl", _longbench_rows())
    mapping = {"question": "input", "answers": "answers", "document": "context", "id": "_id"}
    corpus = load_hf(path, mapping)
    got = {e.id: (e.tags["answer_format"], e.tags["primary_metric"]) for e in corpus.examples}
    assert got == {"lb-1": ("free", "token_f1"), "lb-2": ("free", "token_f1"), "lb-3": ("short", "contains")}
    assert METRICS["contains"](corpus.examples[2], _reply("The bridge opened to trains in 1890.")) == 1.0
    declared = load_hf(path, mapping, primary_metric="token_f1")
    assert {e.tags["primary_metric"] for e in declared.examples} == {"token_f1"}
    assert [e.tags["answer_format"] for e in declared.examples] == ["free", "free", "short"]


def _to_parquet(rows: list[dict[str, Any]], out: Path, scratch: Path) -> Path:
    """Parquet written by DuckDB itself (nested columns become STRUCT and LIST types)."""
    src = _write_jsonl(scratch, rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * FROM read_json('{src}', format = 'newline_delimited')) "
                    f"TO '{out}' (FORMAT parquet)")
    return out


def test_parquet_shards_nested_columns_split_and_limit(tmp_path: Path) -> None:
    """SQuAD-style rows: answers is a struct {text, answer_start}; its offsets become evidence."""
    def squad(i: int, context: str, answer: str) -> dict[str, Any]:
        return {"id": f"s{i}", "title": "t", "context": context, "question": f"Question {i}?",
                "answers": {"text": [answer], "answer_start": [context.index(answer)]}}

    root = tmp_path / "squadlike"
    _to_parquet([squad(0, LAKE, "four kilometres"), squad(1, LAKE, "millions of years")],
                root / "data" / "train-00000-of-00002.parquet", tmp_path / "a.jsonl")
    _to_parquet([squad(2, BRIDGE, "1890")], root / "data" / "train-00001-of-00002.parquet",
                tmp_path / "b.jsonl")
    _to_parquet([squad(3, BRIDGE, "Scotland")], root / "data" / "validation-00000-of-00001.parquet",
                tmp_path / "c.jsonl")
    mapping = {"question": "question", "document": "context", "id": "id", "answers": "answers.text",
               "answer_start": "answers.answer_start", "tags": "title"}
    train = load_hf(root, mapping, split="train")
    assert train.name == "squadlike-train" and [e.id for e in train.examples] == ["s0", "s1", "s2"]
    assert train.params["files"] == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert len(train.documents) == 2
    for ex in train.examples:
        (span,) = ex.evidence
        assert train.documents[ex.doc_ids[0]].text[int(span.start) : int(span.end)] == ex.answers[0]
    assert [e.id for e in load_hf(root, mapping).examples] == ["s0", "s1", "s2", "s3"]  # no split: all
    assert [e.id for e in load_hf(root, mapping, split="validation").examples] == ["s3"]
    two = load_hf(root, mapping, split="train", limit=2)
    assert [e.id for e in two.examples] == ["s0", "s1"] and len(two.documents) == 1
    with pytest.raises(CorpusError, match=r"no \.jsonl/\.json/\.parquet files of split 'test'"):
        load_hf(root, mapping, split="test")

    bad = {**mapping, "answers": "answers"}  # the struct itself, not its text field
    with pytest.raises(CorpusError) as err:
        load_hf(root / "data" / "train-00000-of-00002.parquet", bad)
    (problem,) = err.value.problems
    assert problem.startswith(f"{root / 'data' / 'train-00000-of-00002.parquet'}: row 1: answers (answers):")
    assert "name a nested column as col.key" in problem and "(same on 1 more row(s): 2)" in problem


def test_a_json_array_with_choices(tmp_path: Path) -> None:
    """A .json array of rows; answers given as an index, a label or an option's text."""
    rows = [{"q": "Which sheet covers Lake Vostok?", "opts": ["Greenland", "East Antarctic"], "gold": 1,
             "ctx": LAKE},
            {"q": "Which country has the bridge?", "opts": {"A": "Scotland", "B": "Wales"}, "gold": "A",
             "ctx": BRIDGE},
            {"q": "What kind of bridge?", "opts": ["suspension", "cantilever"], "gold": "Cantilever",
             "ctx": BRIDGE}]
    path = tmp_path / "mc.json"
    path.write_text(json.dumps(rows, indent=2))
    corpus = load_hf(path, {"question": "q", "choices": "opts", "answers": "gold", "document": "ctx"})
    assert [e.answers for e in corpus.examples] == [("B",), ("A",), ("B",)]
    assert Counter(str(e.tags["answer_format"]) for e in corpus.examples) == {"letter": 3}
    assert METRICS["choice_accuracy"](corpus.examples[0], _reply("(B) East Antarctic")) == 1.0
    assert corpus.examples[0].tags["primary_metric"] == "choice_accuracy"


def test_every_problem_names_its_file_and_line_and_nothing_is_imported(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [
        {"input": "Q1?", "context": LAKE, "answers": ["x"], "_id": "a"},            # 1 ok
        '{"input": "Q2?", "context": "unterminated}',                                  # 2 bad JSON
        {"input": "Q3?", "context": LAKE, "answers": {"text": ["x"]}, "_id": "c"},  # 3 an object
        {"input": "Q4?", "context": "   ", "answers": ["x"], "_id": "d"},           # 4 blank document
        {"input": "Q5?", "context": LAKE, "answers": [], "_id": "a"},                # 5 no answer, id again
        {"question": "Q6?", "context": LAKE, "answers": ["x"], "_id": "f"},          # 6 no `input` column
    ])
    mapping = {"question": "input", "answers": "answers", "document": "context", "id": "_id"}
    with pytest.raises(CorpusError) as err:
        load_hf(path, mapping)
    msg = str(err.value)
    assert "nothing imported" in msg and len(err.value.problems) == 6, msg
    for line, what in [(2, "not valid JSON"), (3, "answers (answers): expected a string"),
                       (4, "document (context): expected a non-empty string, got blank"),
                       (5, "answers (answers): no answer"), (5, "id (_id): id 'a' again (first: "),
                       (6, "question (input): no such column (the row has: _id, answers, context, "
                           "question)")]:
        assert f"{path}:{line}: {what}" in msg, (line, what, msg)

    with pytest.raises(CorpusError) as bad_map:
        load_hf(path, {"question": "input", "answer": "answers", "document": ""})
    assert bad_map.value.problems == [
        "map: unknown field 'answer'; known: question, document, answers, id, doc_id, choices, evidence, "
        "answer_start, tags",
        "map: document = '': not a column name",
        "map: give `answers` (or `evidence`, for retrieval-only use)",
    ]
    with pytest.raises(SpecError, match=r"corpus\.hf\.map: .*unknown field 'answer'"):
        validate_spec({"corpus": {"kind": "hf", "path": str(path), "map": {"question": "q", "answer": "a",
                                                                            "document": "d"}}})
    cli = runner.invoke(app, ["corpora", "import", str(path), "--map", LONGBENCH_MAP])
    assert cli.exit_code == 2 and f"{path}:2: not valid JSON" in cli.output
    assert "Traceback" not in cli.output
    assert runner.invoke(app, ["corpora", "import", str(path), "--map", "question"]).exit_code == 2


def test_offsets_and_ids_are_checked_against_the_document(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "spans.jsonl", [
        {"q": "Where?", "doc": LAKE, "d": "lake", "a": "four kilometres", "s": LAKE.index("four"),
         "ev": [[0, 10]]},
        {"q": "When?", "doc": BRIDGE, "d": "lake", "a": "1890", "s": 3, "ev": [[0, 10_000]]},
    ])
    mapping = {"question": "q", "document": "doc", "doc_id": "d", "answers": "a", "answer_start": "s",
               "evidence": "ev"}
    with pytest.raises(CorpusError) as err:
        load_hf(path, mapping)
    assert sorted(err.value.problems) == sorted([
        f"{path}:2: doc_id (d): document 'lake' has another text at {path}:1",
        f"{path}:2: evidence (ev): [0, 10000] is outside the document (0..{len(BRIDGE)})",
        f"{path}:2: answer_start (s): offset 3 does not point at the answer '1890'",
    ])
    ok = load_hf(path, mapping | {"doc_id": "q"}, limit=1)  # the limit stops before line 2
    (ex,) = ok.examples
    assert [(s.start, s.end) for s in ex.evidence] == [(0, 10), (LAKE.index("four"), LAKE.index("four") + 15)]
    assert list(ok.documents) == ["Where?"]


@pytest.mark.slow  # measures documents with the served model's tokenizer: needs the vLLM server
async def test_built_through_the_registry_with_the_served_tokenizer(
    backend: HttpBackend, tmp_path: Path
) -> None:
    path = _write_jsonl(tmp_path / "lb.jsonl", _longbench_rows())
    mapping = {"question": "input", "answers": "answers", "document": "context"}
    spec = validate_spec({"corpus": {"kind": "hf", "path": str(path), "primary_metric": "contains",
                                     "map": mapping}})
    corpus = await build_corpus(spec, backend, None)
    sizes = {d: await backend.tokenize(doc.text) for d, doc in corpus.documents.items()}
    for ex in corpus.examples:  # measured once per document, in the served model's tokens
        assert ex.tags["doc_tokens"] == float(sizes[ex.doc_ids[0]]) > 0
    assert all(ex.tags["primary_metric"] == "contains" for ex in corpus.examples)
    assert [ex.id for ex in corpus.examples] == ["r00000", "r00001", "r00002"]
    with pytest.raises(SpecError, match="primary_metric"):
        validate_spec({"corpus": {**spec.corpus.model_dump(), "primary_metric": "evidence_mrr"}})
