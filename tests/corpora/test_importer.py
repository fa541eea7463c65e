"""The generic importer: a valid corpus round-trips; a broken one names every file:line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from compare.core.metrics import METRICS
from compare.core.types import Completion, Prediction, Span
from compare.run.spec import JsonlCorpusSpec, validate_spec
from corpora.jsonl import CorpusError, import_summary, load_jsonl_dir


def _write(path: Path, rows: list[Any]) -> None:
    """Rows as JSONL; a str row is written verbatim (to plant broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _good(root: Path) -> Path:
    (root / "texts").mkdir(parents=True)
    (root / "texts" / "b.txt").write_text("Beta file text. The river is called Vesna.\n")
    _write(root / "documents.jsonl", [
        {"id": "a", "text": "Alpha. The code word is heron.", "metadata": {"year": 1999}},
        {"id": "b", "path": "texts/b.txt"},
    ])
    _write(root / "questions.jsonl", [
        {"id": "q1", "doc_ids": ["a"], "question": "What is the code word?", "answers": ["heron"],
         "evidence": [["a", 7, 30]]},
        {"id": "q2", "doc_ids": ["a", "b"], "question": "Which river?", "answers": ["B"],
         "choices": ["Volga", "Vesna"], "tags": {"topic": "geo", "year": 2020}},
        {"id": "q3", "doc_ids": ["b"], "question": "Pick", "answers": ["A"],
         "choices": {"A": "Vesna", "B": "Nile"}},
    ])
    return root


def test_valid_directory_round_trips(tmp_path: Path) -> None:
    corpus = load_jsonl_dir(_good(tmp_path / "c"))
    assert corpus.name == "c" and list(corpus.documents) == ["a", "b"]
    assert corpus.documents["b"].text.startswith("Beta file text.")
    q1, q2, q3 = corpus.examples
    assert q1.evidence == (Span("a", 7, 30),)
    assert corpus.documents["a"].text[7:30] == "The code word is heron."
    assert q2.doc_ids == ("a", "b") and q2.tags["topic"] == "geo" and q2.tags["year"] == 2020
    assert json.loads(str(q2.tags["choices"])) == {"A": "Volga", "B": "Vesna"}
    assert q3.tags["answer_format"] == "letter"
    reply = Prediction("(B)", Completion("(B)", 1, 0, 1, 0.1, 0.1, ()), 5)
    assert METRICS["choice_accuracy"](q2, reply) == 1.0
    assert corpus.params["document_metadata"] == {"a": {"year": 1999}}
    assert len(str(corpus.params["sha256"])) == 64
    summary = import_summary(tmp_path / "c")
    assert summary["documents"] == 2 and summary["questions"] == 3
    assert summary["with_evidence"] == 1 and summary["answer_formats"] == {"letter": 2, "short": 1}
    assert summary["metrics"] == {"choice_accuracy": 2, "contains": 1}
    assert summary["chars_per_document"]["min"] == len("Alpha. The code word is heron.")


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    docs = root / "documents.jsonl"
    _write(docs, [
        {"id": "a", "text": "Alpha text."},                          # 1 ok
        '{"id": "b", "text": "unterminated}',                         # 2 bad JSON
        {"id": "a", "text": "again"},                                 # 3 duplicate id
        {"id": "e", "text": "   "},                                   # 4 empty document
        {"id": "p", "path": "../outside.txt"},                        # 5 escapes the dir
        {"id": "t", "text": "x", "path": "y.txt"},                    # 6 both text and path
        {"id": "m", "path": "missing.txt"},                           # 7 file not found
        {"id": "x", "text": "fine", "colour": "red"},                 # 8 unknown field
    ])
    with docs.open("ab") as f:
        f.write(b'{"id": "latin", "text": "caf\xe9"}\n')               # 9 not UTF-8
    qs = root / "questions.jsonl"
    _write(qs, [
        {"id": "q1", "doc_ids": ["a"], "question": "Q?", "answers": ["x"]},       # 1 ok
        {"id": "q2", "doc_ids": ["zzz"], "question": "Q?", "answers": ["x"]},     # 2 unknown doc
        {"id": "q3", "doc_ids": ["a"], "question": "Q?"},                         # 3 missing answers
        {"id": "q1", "doc_ids": ["a"], "question": "Q?", "answers": ["x"]},       # 4 duplicate id
        {"id": "q5", "doc_ids": ["a"], "question": "Q?", "answers": ["x"],
         "evidence": [["a", 5, 500]]},                                            # 5 out of range
        {"id": "q6", "doc_ids": ["a"], "question": "Q?", "answers": ["E"],
         "choices": ["p", "q"]},                                                  # 6 not a label
        "[1, 2]",                                                                 # 7 not an object
        {"id": "q8", "doc_ids": ["a"], "question": "Q?", "answers": ["x"],
         "evidence": [["a", 0.5, 3]]},                                            # 8 float offset
    ])
    with pytest.raises(CorpusError) as info:
        load_jsonl_dir(root)
    msg = str(info.value)
    d, q = str(docs), str(qs)
    expected = [
        f"{d}:2: not valid JSON",
        f"{d}:3: duplicate document id 'a' (first on line 1)",
        f"{d}:4: document 'e' is empty",
        f"{d}:5: path '../outside.txt' escapes the corpus directory",
        f"{d}:6: (record): Value error, give exactly one of `text` or `path`",
        f"{d}:7: path 'missing.txt': file not found",
        f"{d}:8: colour: Extra inputs are not permitted",
        f"{d}:9: not UTF-8 (byte 0xe9",
        f"{q}:2: unknown document id 'zzz'",
        f"{q}:3: answers: Field required",
        f"{q}:4: duplicate question id 'q1' (first on line 1)",
        f"{q}:5: evidence[0] [5, 500] is outside document 'a' (need 0 <= start < end <= 11)",
        f"{q}:6: answer 'E' is not a choice label (A, B)",
        f"{q}:7: expected a JSON object, got list",
        f"{q}:8: evidence.0.1: Input should be a valid integer",
    ]
    for line in expected:
        assert line in msg, f"missing {line!r} in:\n{msg}"
    assert len(info.value.problems) == len(expected)
    assert msg.startswith(f"{root}: {len(expected)} problem(s), nothing imported")


def test_missing_files_and_empty_questions(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"documents\.jsonl: file not found") as info:
        load_jsonl_dir(tmp_path)
    assert "questions.jsonl: file not found" in str(info.value)
    _write(tmp_path / "documents.jsonl", [{"id": "a", "text": "t"}])
    (tmp_path / "questions.jsonl").write_text("\n\n")
    with pytest.raises(CorpusError, match=r"questions\.jsonl: no questions"):
        load_jsonl_dir(tmp_path)
    with pytest.raises(CorpusError, match="no such directory or file"):
        load_jsonl_dir(tmp_path / "nope")


def test_single_leval_style_file(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    _write(good, [
        {"input": "The cat is black. The dog is brown.", "instructions": ["Colour of the dog?",
         "Which animal is black?\nA. cat\nB. dog"], "outputs": ["brown", "A"], "source": "me"},
    ])
    corpus = load_jsonl_dir(good)
    assert list(corpus.documents) == ["mine-000"]
    free, mc = corpus.examples
    assert (free.id, free.answers, free.tags["answer_format"]) == ("mine-000-q000", ("brown",), "free")
    assert mc.answers == ("A",) and json.loads(str(mc.tags["choices"])) == {"A": "cat", "B": "dog"}
    assert import_summary(good)["questions"] == 2
    bad = tmp_path / "broken.jsonl"
    _write(bad, [
        {"input": "doc", "instructions": ["q1", "q2"], "outputs": ["a"]},
        {"input": "doc", "instructions": ["q"], "outputs": ["a"], "length": 3},
        {"input": "", "instructions": ["q"], "outputs": ["a"]},
    ])
    with pytest.raises(CorpusError) as info:
        load_jsonl_dir(bad)
    msg = str(info.value)
    assert f"{bad}:1: (record): Value error, 2 instructions but 1 outputs" in msg
    assert f"{bad}:2: length: Extra inputs are not permitted" in msg
    assert f"{bad}:3: input: String should have at least 1 character" in msg


def test_spec_kind_jsonl(tmp_path: Path) -> None:
    spec = validate_spec({"corpus": {"kind": "jsonl", "path": str(tmp_path)}})
    assert isinstance(spec.corpus, JsonlCorpusSpec) and spec.corpus.path == str(tmp_path)


def test_jsonl_run_id_follows_the_files_content(tmp_path: Path) -> None:
    """Editing the corpus files must start a new run, never resume the old one's answers."""
    from compare.run.execute import _content_sha

    root = _good(tmp_path)
    spec = validate_spec({"corpus": {"kind": "jsonl", "path": str(root)}})
    first = spec.run_id(_content_sha(spec, load_jsonl_dir(root)))
    assert first == spec.run_id(_content_sha(spec, load_jsonl_dir(root)))  # stable
    (root / "texts" / "b.txt").write_text("Beta file text. The river is called Drava.\n")
    assert spec.run_id(_content_sha(spec, load_jsonl_dir(root))) != first
    needle = validate_spec({})
    assert _content_sha(needle, load_jsonl_dir(root)) is None  # generated corpora: the spec says all


FREE_TEXT = Path(__file__).resolve().parents[1] / "fixtures" / "free_text"


def test_free_text_is_scored_as_free_text_and_the_summary_says_so() -> None:
    """Issue 25 item 2: the summary said `free: 12` while every question was stored with
    `contains`; now the one rule (compare/core/metrics.py answer_format) decides both."""
    corpus = load_jsonl_dir(FREE_TEXT)
    got = {ex.id: ex.tags["primary_metric"] for ex in corpus.examples}
    # golds of at most 3 words are short answers; the sentences (and "not in the text") free text
    assert got == {"m1": "contains", "m2": "token_f1", "m3": "contains", "m4": "token_f1",
                   "o1": "contains", "o2": "contains", "o3": "token_f1", "o4": "token_f1"}
    summary = import_summary(FREE_TEXT)
    assert summary["answer_formats"] == {"free": 4, "short": 4}
    assert summary["metrics"] == {"contains": 4, "token_f1": 4}


def test_the_import_command_names_the_metric_of_each_question() -> None:
    from typer.testing import CliRunner

    from main import app

    out = CliRunner().invoke(app, ["corpora", "import", str(FREE_TEXT)])
    assert out.exit_code == 0, out.output
    assert "scored by contains: 4, token_f1: 4" in out.output
