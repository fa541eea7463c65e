"""The long free-text set of benchmarks/free_text.py (issue 25's done-means): its documents are
slices of ../shared/data read in place, and each gold is grounded in the slice it was written
from. Fast: no server (the benchmark itself runs the pipelines and the judge)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.free_text import DATA, SliceError, main, read_slice, write_corpus
from compare.core.metrics import primary_metric
from compare.run import judge
from corpora.books import data_dir
from corpora.jsonl import load_jsonl_dir

# Each answerable question's gold, as the text says it (the careful read, checked every run).
SAID = {
    "lm1": "Jacquin Labarre", "lm2": "Your name is Jean Valjean",
    "lm3": "condemned to five\nyears in the galleys", "lm4": "One hundred and nine francs fifteen sous",
    "fi1": "with 6,000 troops led by General John Forbes",
    "fi2": "sugar cane to be greater and easier to defend",
    "fi3": "outnumbered the French 20 to 1", "fi4": "buried lead plates engraved with the French claim",
    "wp1": "from la grippe", "wp2": "the life I am leading here does not suit",
    "wp3": "Hippolyte is at least a quiet fool, but Anatole is an active one",
    "wp4": "Anatole is costing me forty thousand\nrubles a year",
}


def _sources() -> list[dict[str, object]]:
    return json.loads((DATA / "sources.json").read_text(encoding="utf-8"))["documents"]


def test_the_set_imports_with_a_grounded_gold_per_question(tmp_path: Path) -> None:
    corpus = load_jsonl_dir(write_corpus(tmp_path, data_dir()))
    assert sorted(corpus.documents) == sorted(str(s["id"]) for s in _sources())
    for doc in corpus.documents.values():  # long documents: 58-67k characters each
        assert 55_000 < len(doc.text) < 70_000
    by_doc = Counter(ex.doc_ids[0] for ex in corpus.examples)
    assert set(by_doc.values()) == {5}
    for ex in corpus.examples:
        text = " ".join(corpus.documents[ex.doc_ids[0]].text.split())  # line breaks read as spaces
        if ex.id in SAID:
            assert " ".join(SAID[ex.id].split()) in text, ex.id
            assert not judge.says_no_answer(ex)
        else:  # one question per document whose answer is not in the text, and its gold says so
            assert judge.says_no_answer(ex), ex.id
    assert Counter(judge.says_no_answer(ex) for ex in corpus.examples) == {False: 12, True: 3}
    # the one free-text rule: sentences are token F1, the three short golds `contains`
    assert Counter(primary_metric(ex) for ex in corpus.examples) == {"token_f1": 12, "contains": 3}


def test_a_changed_source_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = dict(_sources()[0])
    copy = tmp_path / str(entry["source"])
    copy.parent.mkdir(parents=True)
    copy.write_bytes((data_dir() / str(entry["source"])).read_bytes().replace(b"Jacquin", b"Jacques"))
    with pytest.raises(SliceError, match=r"les_miserables_the_fall: .* has sha256 \w+…, not the recorded"):
        read_slice(entry, tmp_path)
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not found" in err and "\n" not in err
