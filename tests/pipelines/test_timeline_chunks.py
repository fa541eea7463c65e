"""RAG over a video timeline: chunks cut on line boundaries, each starting with its stamp
(pure: no video, no server; the end-to-end video needle is in tests/corpora/test_video.py)."""

from __future__ import annotations

import itertools
import json

from compare.core.timeline import Entry, Timeline, render
from compare.core.types import Document


def _timeline_doc(n: int = 12) -> tuple[Document, Timeline]:
    entries = [Entry(float(i), float(i) + 1, "screen" if i % 2 else "speech", " ".join(["w"] * (1 + i % 4)))
               for i in range(n)]
    tl = render(entries)
    return Document("v", tl.text, modality="video"), tl


def test_timeline_chunks_are_whole_stamped_lines_within_size() -> None:
    from pipelines.chunking import chunk_document

    doc, tl = _timeline_doc()
    words = str.split  # one token per word: lines are 3-6 tokens ("[00:00:03] (screen) w w w w")
    chunks = chunk_document(doc, 12, 5, words, "lines")
    starts = {ln.char_start for ln in tl.lines}
    ends = {ln.char_end for ln in tl.lines}
    assert chunks[0].start_char == 0 and chunks[-1].end_char == len(doc.text)
    for c in chunks:
        assert c.start_char in starts and c.end_char in ends and c.text.startswith("[00:00:")
        assert c.text == doc.text[c.start_char:c.end_char] and len(words(c.text)) <= 12
    # every line is in some chunk; consecutive chunks share at most 5 tokens of whole lines
    for ln in tl.lines:
        assert any(c.start_char <= ln.char_start and ln.char_end <= c.end_char for c in chunks)
    for a, b in itertools.pairwise(chunks):
        assert a.start_char < b.start_char and b.start_char <= a.end_char + 1
        shared = doc.text[b.start_char:a.end_char]
        assert len(words(shared)) <= 5
    # by hand: lines 0-3 have 3,4,5,6 tokens -> [0,1,2] (12), then the overlap line 2 (5) + 3 (6)
    assert [(c.start_char, c.end_char) for c in chunks[:2]] == [
        (tl.lines[0].char_start, tl.lines[2].char_end), (tl.lines[2].char_start, tl.lines[3].char_end)]
    # a line longer than the chunk size is cut inside, its first piece keeping the stamp
    text = "[00:00:01] (speech) " + " ".join(f"x{i}" for i in range(30)) + "\n[00:00:09] (screen) end"
    pieces = chunk_document(Document("l", text, modality="video"), 10, 0, words, "lines")
    assert pieces[0].text.startswith("[00:00:01] (speech) x0")
    assert pieces[-1].text == "[00:00:09] (screen) end"
    assert all(len(words(p.text)) <= 10 for p in pieces)


def test_rag_cuts_timelines_on_lines_without_changing_text_runs() -> None:
    from compare.run.spec import RagSpec, validate_spec
    from pipelines.rag import RagPipeline

    doc, _ = _timeline_doc()
    rag = RagPipeline()
    assert rag.splitter_for([doc]) == "lines"
    assert rag.splitter_for([Document("t", "plain text")]) == "sentence"
    assert rag.splitter_for([doc, Document("t", "x")]) == "sentence"  # a mixed corpus index
    assert RagPipeline(timeline_chunking="splitter").splitter_for([doc]) == "sentence"
    # the default leaves the spec dump, the run id and the pipeline's params hash as before
    assert "timeline_chunking" not in RagSpec().model_dump() and "timeline_chunking" not in rag.params()
    assert RagPipeline(timeline_chunking="splitter").params()["timeline_chunking"] == "splitter"
    base = {"pipelines": [{"kind": "rag"}]}
    same = {"pipelines": [{"kind": "rag", "timeline_chunking": "lines"}]}
    other = {"pipelines": [{"kind": "rag", "timeline_chunking": "splitter"}]}
    assert validate_spec(base).run_id() == validate_spec(same).run_id() != validate_spec(other).run_id()
    routed = validate_spec({"pipelines": [{"kind": "self_route", "rag": {"top_k": 2}}]})
    assert "timeline_chunking" not in json.dumps(routed.model_dump(mode="json"))
