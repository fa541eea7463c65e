"""Spoken needles in real background audio: the benchmark's scoring, and one needle found end to end.

The slow test plants an espeak-ng sentence 15 dB over the Big Buck Bunny soundtrack (real
music, 24 s), ingests the result as an audio file through the video QA corpus, and asks both
pipelines on the real server; the speech line's stamp is scored with the time metrics.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from benchmarks.spoken_needles import SR, Needle, _edits, background, mix_in, plan, score, speak, write_wav
from compare.core.metrics import contains_answer, evidence_recall_time, time_hit
from compare.core.timeline import clock
from compare.core.types import Example, Prediction
from corpora.video_qa import build_video_qa_corpus

DATA = Path(os.environ.get("RAGVSLC_DATA", "/work/shared/data"))


def test_plan_is_seeded_distinct_and_spreads_voices_and_backgrounds() -> None:
    a, b = plan(30, seed=1), plan(30, seed=1)
    assert a == b and len({n.phrase for n in a}) == 30
    assert len({n.voice for n in a}) == 5 and len({n.speed for n in a}) == 2
    assert {n.background for n in a} == {"music", "babble", "noise"}
    assert plan(30, seed=2) != a


def test_score_needs_both_words_in_order_near_the_needle() -> None:
    n = Needle("bramble", "kestrel", "en-us", 140, "music", start_s=10.0, word_s=11.0, end_s=12.5)
    said = [(10.0, 10.5, "The"), (10.5, 10.9, "code"), (11.1, 11.5, "Bramble-"), (11.5, 12.0, "Kestrel.")]
    got = score(n, said)
    assert got["exact"] and got["wer"] == 0.0 and got["ts_err"] == pytest.approx(0.1)
    garbled = score(n, [(11.0, 11.4, "Dramble-Castro")])
    assert not garbled["exact"] and garbled["wer"] == 1.0 and garbled["heard"] == "dramble castro"
    far = score(n, [(30.0, 30.5, "bramble"), (30.5, 31.0, "kestrel")])  # said, but 18 s later
    assert not far["exact"] and far["wer"] == 1.0
    # a transcript without word times: the words span their segment, the segment start is the time
    seg = score(n, [(8.0, 14.0, w) for w in ["the", "code", "name", "is", "bramble", "kestrel"]])
    assert seg["exact"] and seg["ts_err"] == pytest.approx(3.0)
    assert _edits(["a", "b"], ["a", "c", "b"]) == 1 and _edits([], ["a", "b"]) == 2


@pytest.mark.slow
async def test_spoken_needle_in_real_music_is_found_by_both_pipelines(tmp_path: Path, backend) -> None:  # type: ignore[no-untyped-def]
    from pipelines.long_context import LongContextPipeline
    from pipelines.rag import RagPipeline

    music = background("music", DATA, 24.0, random.Random(0))
    sentence = speak("The secret word for the red door is volcano.", "en-us", 150, tmp_path)
    start = 13.0
    end = round(start + len(sentence) / SR, 2)
    write_wav(tmp_path / "talk.wav", mix_in(music, [(start, sentence)], 15.0))
    rows = [{"id": "what", "video": "talk.wav", "question": "What is the secret word for the red door?",
             "answers": ["volcano"], "evidence": [[start, end]]},
            {"id": "when", "video": "talk.wav", "question": "When is the secret word for the red door said?",
             "answers": [clock(start)], "evidence": [[start, end]], "tags": {"answer_format": "time"}}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = build_video_qa_corpus(tmp_path / "q.jsonl", cache_dir=tmp_path / "timelines")
    [doc] = corpus.documents.values()
    what, when = corpus.examples
    line = next(ln for ln in doc.text.splitlines() if "volcano" in ln.lower())
    assert line.startswith("[00:00:1") and "(speech)" in line, doc.text
    # the line's stamp (word times) answers "when" within the time metric's 1 s tolerance
    assert time_hit(when, Prediction(line[1:9], None, 0)) == 1.0, doc.text
    rag = RagPipeline(chunk_size=24, chunk_overlap=0, top_k=2, max_tokens=16, cache_dir=tmp_path / "ix")
    for pipeline in (LongContextPipeline(max_tokens=16), rag):
        await pipeline.prepare(corpus.documents, backend)
        pred = await pipeline.answer(what, backend)
        assert pred.ok, pred.error
        assert contains_answer(what, pred) == 1.0, f"{pipeline.name}: {pred.answer!r}\n{doc.text}"
        if pipeline.name == "rag":
            assert evidence_recall_time(what, pred) == 1.0
    assert isinstance(when, Example) and when.tags["primary_metric"] in ("time_hit", "time_iou")
