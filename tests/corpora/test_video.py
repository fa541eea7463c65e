"""Video ingestion and video needles with the real tools: ffmpeg, espeak-ng, OCR, whisper.

The slow tests build one 30 s video from the real clips (concatenated and looped), with a
drawtext needle and a spoken needle at known times, and check that the timeline says both
at the right second, that a second ingest is a cache hit, and that RAG's retrieved character
spans are scored against the evidence in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from compare.core.metrics import evidence_recall_time
from compare.core.timeline import (
    Entry,
    Timeline,
    chars_to_seconds,
    clock,
    render,
    retrieved_seconds,
    seconds_to_chars,
    video_tags,
)
from compare.core.types import Corpus, Example, Prediction, Span
from corpora.jsonl import CorpusError
from corpora.ocr import ocr_frames, parse_tsv
from corpora.video import IngestSettings, VideoError, ingest
from corpora.video_needle import build_video_needle_corpus
from corpora.video_qa import build_video_qa_corpus
from corpora.video_spec import ingest_report

DATA = Path(os.environ.get("RAGVSLC_DATA", "/work/shared/data"))
Stage = tuple[str, float, float]
CLIPS = ("chaplin.mp4", "bikes.mp4", "cityCC0.mpg")  # 27 s: a 30 s video loops back to chaplin


# --- timeline: pure ---------------------------------------------------------------------------

ENTRIES = [
    Entry(151.0, 154.0, "screen", "The secret word  is volcano."),
    Entry(2.5, 6.0, "speech", "Hello there."),
    Entry(2.0, 3.0, "screen", "EXIT"),
]


def test_render_sorts_by_time_and_keeps_each_line_span() -> None:
    tl = render(ENTRIES)
    assert tl.text.splitlines() == [
        "[00:00:02] (screen) EXIT",
        "[00:00:02] (speech) Hello there.",
        "[00:02:31] (screen) The secret word is volcano.",
    ]
    for line, text in zip(tl.lines, tl.text.splitlines(), strict=True):
        assert tl.text[line.char_start : line.char_end] == text
    assert render(ENTRIES, ranges=True).text.splitlines()[2].startswith("[00:02:31-00:02:34] (screen)")
    assert clock(3723.9) == "01:02:03"


def test_chars_seconds_round_trip() -> None:
    tl = render(ENTRIES)
    for ln in tl.lines:
        as_time = chars_to_seconds(tl, Span("v", ln.char_start, ln.char_end))
        assert as_time == Span("v", ln.t_start, ln.t_end)
        back = seconds_to_chars(tl, as_time)
        assert back is not None and back.start <= ln.char_start and ln.char_end <= back.end
    last = tl.lines[-1]
    # a chunk covering the tail of line 2 and line 3 spans both lines' times
    across = Span("v", tl.lines[1].char_end - 3, last.char_start + 5)
    assert chars_to_seconds(tl, across) == Span("v", 2.5, 154.0)
    assert seconds_to_chars(tl, Span("v", 152.0, 152.0)) == Span("v", last.char_start, last.char_end)
    assert seconds_to_chars(tl, Span("v", 100.0, 120.0)) is None
    assert chars_to_seconds(tl, Span("v", len(tl.text) + 5, len(tl.text) + 9)) is None
    rebuilt = Timeline.from_rows(tl.text, json.loads(json.dumps(tl.rows())))
    assert rebuilt == tl


def test_evidence_recall_time_maps_retrieved_chars_to_seconds() -> None:
    tl = render(ENTRIES)
    ex = Example("e", ("v",), "What is the secret word?", ("volcano",),
                 evidence=(Span("v", 151.0, 154.0),), tags=video_tags({"v": tl}))
    needle = tl.lines[2]
    hit = Prediction("volcano", None, 0, retrieved=(Span("v", needle.char_start + 3, needle.char_end),))
    miss = Prediction("volcano", None, 0, retrieved=(Span("v", 0, tl.lines[1].char_end),))
    assert evidence_recall_time(ex, hit) == 1.0
    assert evidence_recall_time(ex, miss) == 0.0
    assert evidence_recall_time(ex, Prediction("x", None, 0)) is None  # long context: no retrieval
    assert retrieved_seconds(str(ex.tags["time_map"]), hit.retrieved) == [Span("v", 151.0, 154.0)]
    text_ex = Example("t", ("d",), "q", ("a",), evidence=(Span("d", 0, 5),))
    assert evidence_recall_time(text_ex, hit) is None  # text examples keep evidence_recall


# --- OCR: real tesseract -----------------------------------------------------------------------

def _drawn_frame(text: str, tmp: Path) -> np.ndarray:
    (tmp / "t.txt").write_text(text)
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=0x336699:s=640x360:d=1", "-vf",
         f"drawtext=fontfile=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf:textfile={tmp / 't.txt'}:"
         "fontsize=28:fontcolor=white:x=40:y=160,format=gray", "-frames:v", "1", "-f", "rawvideo", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(360, 640)


def test_ocr_reads_exact_text_with_spaces_and_skips_blank_frames(tmp_path: Path) -> None:
    text = "Meet me at 7 pm near the old bridge"
    blank = np.full((360, 640), 90, dtype=np.uint8)
    assert ocr_frames([_drawn_frame(text, tmp_path), blank]) == [text, ""]


def test_parse_tsv_drops_low_confidence_texture() -> None:
    head = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tl\tt\tw\th\tconf\ttext"
    rows = [
        "5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t44.7\t7",  # stray glyph before a real caption
        *[f"5\t1\t1\t1\t1\t{i}\t0\t0\t1\t1\t96.0\t{w}" for i, w in enumerate(["The", "word"], 2)],
        *[f"5\t1\t2\t1\t1\t{i}\t0\t0\t1\t1\t{c}\t{w}" for i, (c, w) in
          enumerate([(0.0, "———"), (16.8, "ae"), (20.0, "eal")])],
        "5\t2\t1\t1\t1\t1\t0\t0\t1\t1\t95.0\t ",
    ]
    assert parse_tsv("\n".join([head, *rows]), 2, 60.0) == ["The word", ""]


# --- errors and silent media: real files -------------------------------------------------------

def test_unreadable_video_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "holiday.mp4"
    bad.write_bytes(b"this is not a video\n" * 100)
    with pytest.raises(VideoError, match=r"holiday\.mp4: cannot read video"):
        ingest(bad, cache_dir=tmp_path / "cache")
    with pytest.raises(VideoError, match=r"missing\.mp4: video file not found"):
        ingest(tmp_path / "missing.mp4", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_bad_declared_metric_is_a_problem_found_before_any_ingest(tmp_path: Path) -> None:
    """The video here is unreadable: only a check made before ingest names the metric."""
    (tmp_path / "talk.mp4").write_bytes(b"this is not a video\n" * 100)
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"video": "talk.mp4", "question": "q", "answers": ["a"],
                                 "tags": {"primary_metric": "evidence_recall"}}) + "\n")
    with pytest.raises(CorpusError, match=r"q\.jsonl:1: tags\.primary_metric 'evidence_recall'"):
        build_video_qa_corpus(qfile, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing was ingested


@pytest.mark.slow
def test_silent_and_audio_less_videos_give_an_empty_speech_track(tmp_path: Path) -> None:
    silent = tmp_path / "silent.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:d=4", "-f", "lavfi", "-i",
         "anullsrc=r=16000:cl=mono", "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
         str(silent)], check=True,
    )
    got = ingest(silent, IngestSettings(fps=1.0), cache_dir=tmp_path)
    assert got.stats["has_audio"] == 1.0 and got.stats["speech_lines"] == 0
    no_audio = ingest(DATA / "video" / "bikes.mp4", IngestSettings(fps=0.5), cache_dir=tmp_path)
    assert no_audio.stats["has_audio"] == 0.0 and "(speech)" not in no_audio.timeline.text
    assert no_audio.duration_s == pytest.approx(10.0, abs=0.1)


# --- the needle video: real clips, drawtext, espeak-ng, tesseract, whisper ----------------------

@pytest.fixture(scope="module")
def needle_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Corpus, Path, list[Stage]]:
    cache = tmp_path_factory.mktemp("video-cache")
    stages: list[Stage] = []
    corpus = build_video_needle_corpus(
        lengths_s=(30.0,), modalities=("screen", "speech"), variant="multi", n_needles=2, seed=3,
        clips=CLIPS, root=DATA, cache_dir=cache, progress=lambda s, d, t: stages.append((s, d, t)),
    )
    return corpus, cache, stages


def _line_near(text: str, source: str, value: str, start: float, end: float) -> str:
    for line in text.splitlines():
        stamp = line[1:9]
        h, m, s = (int(x) for x in stamp.split(":"))
        t = h * 3600 + m * 60 + s
        if f"({source})" in line and value in line.lower() and start - 1.5 <= t <= end + 0.5:
            return line
    raise AssertionError(f"no {source} line with {value!r} between {start:.1f} and {end:.1f} s:\n{text}")


@pytest.mark.slow
def test_needles_appear_in_the_timeline_at_the_right_second(needle_corpus) -> None:  # type: ignore[no-untyped-def]
    corpus, _, stages = needle_corpus
    [ex] = corpus.examples
    [doc] = corpus.documents.values()
    needles = json.loads(str(ex.tags["needles"]))
    assert [n["modality"] for n in needles] == ["screen", "speech"]
    assert doc.modality == "video" and doc.media_path is not None and doc.media_path.is_file()
    assert ex.tags["evidence_unit"] == "seconds" and ex.tags["video_s"] == pytest.approx(30.0, abs=0.1)
    for n, ev in zip(needles, ex.evidence, strict=True):
        assert (ev.start, ev.end) == (n["start_s"], n["end_s"])
        _line_near(doc.text, n["modality"], n["value"], ev.start, ev.end)
    screen = _line_near(doc.text, "screen", needles[0]["value"], ex.evidence[0].start, ex.evidence[0].end)
    assert f"The secret word for {needles[0]['key']} is {needles[0]['value']}." in screen  # exact OCR
    params = corpus.params
    assert params["ingest"]["fps"] == 1.0  # type: ignore[index]
    assert params["ingest"]["ocr_engine"] == "rapidocr"  # type: ignore[index]
    assert str(params["ingest"]["ocr_version"]).startswith("rapidocr-onnxruntime")  # type: ignore[index]
    assert "tiny.en" in str(params["ingest"]["asr_model"])  # type: ignore[index]
    assert {s.split(": ")[1] for s, _, _ in stages} >= {"render", "decode+ocr", "asr"}


@pytest.mark.slow
def test_second_ingest_is_a_cache_hit_and_settings_change_the_key(needle_corpus) -> None:  # type: ignore[no-untyped-def]
    corpus, cache, _ = needle_corpus
    [doc] = corpus.documents.values()
    assert doc.media_path is not None
    again = ingest(doc.media_path, cache_dir=cache / "timelines")
    assert again.cache_hit and again.timeline.text == doc.text
    report = ingest_report(again)
    assert report.endswith(doc.text + "\n") and "[cached]" in report and "OCR rapidocr" in report
    assert again.stats["frames_ocr"] > 0 and again.stats["asr_s"] > 0  # the original costs are kept
    other = ingest(doc.media_path, IngestSettings(fps=0.5, asr=False), cache_dir=cache / "timelines")
    assert not other.cache_hit and "(speech)" not in other.timeline.text
    assert other.stats["frames_sampled"] == pytest.approx(15, abs=1)
    # scene cuts only: the clip boundaries (9.6, 19.6, 27.2 s) and the film's own cuts
    cuts = ingest(doc.media_path, IngestSettings(fps=None, scene_threshold=25.0, asr=False),
                  cache_dir=cache / "timelines")
    assert 3 <= cuts.stats["scene_cuts"] < 15 and cuts.stats["frames_sampled"] == cuts.stats["scene_cuts"] + 1


@pytest.mark.slow
def test_rag_retrieval_on_the_timeline_is_scored_in_seconds(needle_corpus) -> None:  # type: ignore[no-untyped-def]
    from pipelines.rag import RagPipeline

    corpus, cache, _ = needle_corpus
    [ex] = corpus.examples
    rag = RagPipeline(chunk_size=24, chunk_overlap=0, top_k=2, cache_dir=cache / "index")
    rag.build(corpus.documents)
    chunks = rag.retrieve(ex)
    pred = Prediction("", None, 0, retrieved=tuple(c.span() for c in chunks))
    as_seconds = retrieved_seconds(str(ex.tags["time_map"]), pred.retrieved)
    assert len(as_seconds) == len(chunks) and all(s.end <= 31 for s in as_seconds)
    recall = evidence_recall_time(ex, pred)
    assert recall is not None and 0.0 <= recall <= 1.0
    # the chunk that holds a needle's words maps onto that needle's evidence seconds
    for ev, n in zip(ex.evidence, json.loads(str(ex.tags["needles"])), strict=True):
        holding = [c for c in chunks if n["value"] in c.text.lower()]
        if holding:
            pred_one = Prediction("", None, 0, retrieved=(holding[0].span(),))
            one = Example(ex.id, ex.doc_ids, ex.question, ex.answers, (ev,), ex.tags)
            assert evidence_recall_time(one, pred_one) == 1.0


@pytest.mark.slow
def test_single_needle_cell_shows_and_says_the_needle(tmp_path: Path) -> None:
    corpus = build_video_needle_corpus(
        lengths_s=(20.0,), depths=(0.5,), modalities=("both",), clips=CLIPS, root=DATA,
        cache_dir=tmp_path, settings=IngestSettings(fps=1.0),
    )
    [ex] = corpus.examples
    [doc] = corpus.documents.values()
    assert ex.id == "vneedle-20s-both-050" and ex.tags["modality"] == "both"
    [ev] = ex.evidence
    assert ev.start == pytest.approx(0.5 * (20.0 - (ev.end - ev.start)), abs=0.01)
    for source in ("screen", "speech"):
        _line_near(doc.text, source, ex.answers[0], ev.start, ev.end)
    assert ex.question.startswith("What is the secret word for ")


@pytest.mark.slow
def test_user_questions_file_over_an_own_video(tmp_path: Path, needle_corpus) -> None:  # type: ignore[no-untyped-def]
    corpus, cache, _ = needle_corpus
    [doc] = corpus.documents.values()
    [ex] = corpus.examples
    screen, speech = ex.evidence
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "video": str(doc.media_path), "question": ex.question, "answers": list(ex.answers),
         "evidence": [[screen.start, screen.end], [clock(speech.start), clock(speech.end + 1)]]},
        {"video": str(doc.media_path), "question": "When is the secret word shown?",
         "answers": ["x"], "evidence": [[screen.start, screen.end]], "tags": {"answer_format": "time"}},
    ]) + "\n")
    user = build_video_qa_corpus(qfile, cache_dir=cache / "timelines")
    [udoc] = user.documents.values()
    assert udoc.text == doc.text and udoc.modality == "video"  # same file, same settings: cached
    assert [e.id for e in user.examples] == ["a", "q2"]
    assert user.examples[0].evidence[1].start == int(speech.start)
    assert user.params["ingest"] == corpus.params["ingest"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"video": "nope.mp4", "question": "q", "answers": ["a"],
                               "evidence": [["0:10", "0:05"]]}) + "\n")
    with pytest.raises(CorpusError) as err:
        build_video_qa_corpus(bad, cache_dir=cache / "timelines")
    assert "nope.mp4" in str(err.value) and "start < end" in str(err.value)


@pytest.mark.slow
async def test_both_pipelines_answer_over_the_timeline(needle_corpus, backend) -> None:  # type: ignore[no-untyped-def]
    """Unchanged pipelines on a video: long context reads the timeline, RAG retrieves lines of
    it, and RAG's evidence recall is computed in seconds."""
    from compare.core.metrics import contains_all
    from pipelines.long_context import LongContextPipeline
    from pipelines.rag import RagPipeline

    corpus, cache, _ = needle_corpus
    [ex] = corpus.examples
    rag = RagPipeline(chunk_size=24, chunk_overlap=0, top_k=2, max_tokens=24, cache_dir=cache / "ix")
    for pipeline in (LongContextPipeline(max_tokens=24), rag):
        await pipeline.prepare(corpus.documents, backend)
        pred = await pipeline.answer(ex, backend)
        assert pred.ok and pred.completion is not None and pred.context_tokens > 0, pred.error
        assert contains_all(ex, pred) is not None
        if pipeline.name == "rag":
            assert pred.retrieved and evidence_recall_time(ex, pred) is not None
        else:
            assert evidence_recall_time(ex, pred) is None


@pytest.mark.slow
async def test_long_video_needle_is_found_by_both_pipelines(tmp_path: Path, backend) -> None:  # type: ignore[no-untyped-def]
    """A 2-minute video (the clips looped) with a caption needle past its middle: scene-text OCR
    puts it in the timeline, long context reads it there and RAG retrieves the line holding it."""
    from compare.core.metrics import contains_answer
    from pipelines.long_context import LongContextPipeline
    from pipelines.rag import RagPipeline

    corpus = build_video_needle_corpus(
        lengths_s=(120.0,), depths=(0.6,), modalities=("screen",), clips=CLIPS, root=DATA, cache_dir=tmp_path,
    )
    [ex] = corpus.examples
    [doc] = corpus.documents.values()
    [ev] = ex.evidence
    line = _line_near(doc.text, "screen", ex.answers[0], ev.start, ev.end)
    assert f"is {ex.answers[0]}" in line.lower()
    rag = RagPipeline(top_k=2, max_tokens=16, cache_dir=tmp_path / "ix")
    for pipeline in (LongContextPipeline(max_tokens=16), rag):
        await pipeline.prepare(corpus.documents, backend)
        pred = await pipeline.answer(ex, backend)
        assert pred.ok, pred.error
        assert contains_answer(ex, pred) == 1.0, f"{pipeline.name}: {pred.completion!r}"
        if pipeline.name == "rag":
            assert all(doc.text[r.start:r.end].startswith("[") for r in pred.retrieved)  # whole lines
            assert evidence_recall_time(ex, pred) == 1.0
