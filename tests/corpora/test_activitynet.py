"""ActivityNet temporal QA over the real captions, and the time metrics on hand-made replies."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from compare.core.metrics import METRICS, evidence_recall_time, parse_times, time_hit, time_iou, token_f1
from compare.core.timeline import chars_to_seconds, clock, render, seconds_to_chars, timelines_of
from compare.core.types import Example, Prediction, Span
from corpora.activitynet import build_activitynet_corpus, join_videos, timeline_entries

DATA = Path(os.environ.get("RAGVSLC_DATA", "/work/shared/data"))
needs_data = pytest.mark.skipif(not (DATA / "activitynet" / "caps_val_1.json").is_file(),
                                reason="ActivityNet files not in the data directory")

CAPS = {
    "v_a": {"duration": 10.0, "timestamps": [[2.0, 5.0], [4.0, 12.0]],
            "sentences": ["A dog runs.", " It jumps. "]},
    "v_b": {"duration": 20.5, "timestamps": [[1.0, 4.0]], "sentences": ["A man waves."]},
}


def test_join_offsets_each_video_by_where_it_starts() -> None:
    a, b = join_videos(CAPS, ["v_a", "v_b"])
    assert (a.start, a.end, b.start, b.end) == (0.0, 10.0, 10.0, 30.5)
    got = [(c.start, c.end, c.text) for c in a.captions]
    assert got == [(2.0, 5.0, "A dog runs."), (4.0, 10.0, "It jumps.")]  # end clamped to the video
    assert [(c.start, c.end, c.video) for c in b.captions] == [(11.0, 14.0, "v_b")]
    _, b2 = join_videos(CAPS, ["v_a", "v_b"], gap_s=5.0)
    assert b2.captions[0].start == 16.0
    tl = render(timeline_entries([a, b]), ranges=True)
    assert tl.text.splitlines() == [
        "[00:00:00-00:00:10] (clip) clip 1",
        "[00:00:02-00:00:05] (caption) A dog runs.",
        "[00:00:04-00:00:10] (caption) It jumps.",
        "[00:00:10-00:00:30] (clip) clip 2",
        "[00:00:11-00:00:14] (caption) A man waves.",
    ]
    wave = tl.lines[-1]
    assert chars_to_seconds(tl, Span("d", wave.char_start, wave.char_end)) == Span("d", 11.0, 14.0)


def _when(start: float, end: float) -> Example:
    return Example("w", ("d",), "At what time does this happen?", (f"{clock(start)}-{clock(end)}",),
                   evidence=(Span("d", start, end),), tags={"answer_format": "time"})


@pytest.mark.parametrize(
    ("reply", "times"),
    [
        ("00:02:31", [151.0]),
        ("It happens from 2:31 to 2:45.", [151.0, 165.0]),
        ("[00:02:31-00:02:45]", [151.0, 165.0]),
        ("151 s", [151.0]),
        ("between 151.5 and 165 seconds", [151.5, 165.0]),
        ("151-165 s", [151.0, 165.0]),
        ("around 2 minutes 31", []),  # not a form we read: scored 0, not guessed
        ("151", [151.0]),
        ("1:02:03.5", [3723.5]),
        ("The dog runs.", []),
    ],
)
def test_parse_times(reply: str, times: list[float]) -> None:
    assert parse_times(reply) == times


def test_time_metrics_score_hand_made_replies() -> None:
    ex = _when(151.2, 165.8)

    def pred(text: str) -> Prediction:
        return Prediction(text, None, 0)

    assert time_iou(ex, pred("00:02:31-00:02:45")) == pytest.approx((165 - 151.2) / (165.8 - 151))
    assert time_hit(ex, pred("00:02:31-00:02:45")) == 1.0
    assert time_hit(ex, pred("2:40")) == 1.0 and time_iou(ex, pred("2:40")) == 0.0  # an instant
    assert time_hit(ex, pred("00:02:31")) == 1.0  # the timeline shows floored seconds: 1 s slack
    assert time_hit(ex, pred("00:02:29")) == 0.0
    assert time_hit(ex, pred("00:03:30")) == 0.0
    assert time_iou(ex, pred("0:00:00-0:10:00")) == pytest.approx(14.6 / 600)
    assert time_hit(ex, pred("0:00:00-0:10:00")) == 0.0  # midpoint 300 s: not a hit
    assert time_hit(ex, pred("I do not know")) == 0.0 and time_iou(ex, pred("I do not know")) == 0.0
    assert time_iou(ex, Prediction("", None, 0, error="boom")) is None
    plain = Example("p", ("d",), "q", ("volcano",), evidence=(Span("d", 1, 2),))
    assert time_iou(plain, pred("00:00:01")) is None and time_hit(plain, pred("1 s")) is None
    assert {"time_iou", "time_hit", "evidence_recall_time"} <= set(METRICS)


@needs_data
def test_activitynet_corpus_offsets_questions_and_evidence() -> None:
    corpus = build_activitynet_corpus(n_videos=12, n_questions=5, seed=1, root=DATA)
    [doc] = corpus.documents.values()
    assert doc.modality == "video"
    videos = corpus.params["videos"]
    assert isinstance(videos, list) and len(videos) == 12
    assert videos[0][1] == 0.0 and all(a[2] == b[1] for a, b in itertools.pairwise(videos))
    tasks = [str(ex.tags["task"]) for ex in corpus.examples]
    assert tasks.count("anet-when") == 5 and tasks.count("anet-what") == 5 and tasks.count("anet-qa") >= 1
    for ex in corpus.examples:
        assert ex.tags["evidence_unit"] == "seconds"
        lo, hi = float(ex.tags["video_start_s"]), float(ex.tags["video_end_s"])
        assert [v for v in videos if v[0] == ex.tags["video_id"]] == [[ex.tags["video_id"], lo, hi]]
        for ev in ex.evidence:
            assert lo <= ev.start < ev.end <= hi + 1e-6
        if ex.tags["task"] == "anet-when":
            ev = ex.evidence[0]
            caption = ex.question.split('"')[1]
            assert f"[{clock(ev.start)}-{clock(ev.end)}] (caption) {caption}" in doc.text
            assert time_hit(ex, Prediction(ex.answers[0], None, 0)) == 1.0
            iou = time_iou(ex, Prediction(ex.answers[0], None, 0))
            assert iou is not None and iou > 0.8
        if ex.tags["task"] == "anet-what":
            at = float(ex.tags["at_s"])
            assert ex.evidence[0].start <= at <= ex.evidence[0].end
            assert f"What happens at {clock(at)}?" == ex.question
            assert token_f1(ex, Prediction(ex.answers[0], None, 0)) == 1.0
        if ex.tags["task"] == "anet-qa":
            assert ex.tags["qa_type"] != "yes_no"
            assert ex.question.startswith(f"In the clip from {clock(lo)} to {clock(hi)}: ")
            assert all(ex.answers[0].lower() in doc.text.lower() for _ in ex.evidence)
    again = build_activitynet_corpus(n_videos=12, n_questions=5, seed=1, root=DATA)
    assert again.examples == corpus.examples and again.params == corpus.params
    other = build_activitynet_corpus(n_videos=12, n_questions=5, seed=2, root=DATA)
    assert other.params["videos"] != videos


@needs_data
def test_activitynet_time_map_points_at_the_caption_line() -> None:
    corpus = build_activitynet_corpus(n_videos=6, n_questions=3, tasks=("when",), seed=0, root=DATA)
    [doc] = corpus.documents.values()
    [tl] = timelines_of(corpus).values()
    assert tl.text == doc.text
    for ex in corpus.examples:
        [ev] = ex.evidence
        caption = ex.question.split('"')[1]
        chars = seconds_to_chars(tl, Span(ev.doc_id, (ev.start + ev.end) / 2, (ev.start + ev.end) / 2))
        assert chars is not None and caption in doc.text[int(chars.start) : int(chars.end)]
        line = next(ln for ln in tl.lines if caption in doc.text[ln.char_start : ln.char_end])
        hit = Prediction("", None, 0, retrieved=(Span(ev.doc_id, line.char_start, line.char_end),))
        assert evidence_recall_time(ex, hit) == 1.0
        first = tl.lines[0]  # the first clip marker spans the first video only
        miss = Prediction("", None, 0, retrieved=(Span(ev.doc_id, first.char_start, first.char_end),))
        assert evidence_recall_time(ex, miss) == float(first.t_end > ev.start)


def test_video_specs_join_the_corpus_union_and_are_strict() -> None:
    from typing import Annotated

    from pydantic import BaseModel, Field, ValidationError

    from compare.run.spec import BabiCorpusSpec, JsonlCorpusSpec, LevalCorpusSpec, NeedleCorpusSpec
    from corpora.video_spec import ActivityNetCorpusSpec, VideoNeedleCorpusSpec, VideoQaCorpusSpec

    class Run(BaseModel):
        corpus: Annotated[
            NeedleCorpusSpec | LevalCorpusSpec | BabiCorpusSpec | JsonlCorpusSpec
            | VideoNeedleCorpusSpec | VideoQaCorpusSpec | ActivityNetCorpusSpec,
            Field(discriminator="kind"),
        ]

    run = Run.model_validate({"corpus": {"kind": "video_needle", "lengths_s": [30], "variant": "multi",
                                         "ingest": {"fps": 2, "asr": False}}})
    assert isinstance(run.corpus, VideoNeedleCorpusSpec) and run.corpus.ingest.settings().fps == 2.0
    assert isinstance(Run.model_validate({"corpus": {"kind": "activitynet"}}).corpus, ActivityNetCorpusSpec)
    q = Run.model_validate({"corpus": {"kind": "video_qa", "questions": "q.jsonl"}}).corpus
    assert isinstance(q, VideoQaCorpusSpec) and q.ingest.fps == 1.0
    for bad in ({"kind": "video_needle", "fps": 1}, {"kind": "video_needle", "depths": [1.5]},
                {"kind": "activitynet", "tasks": ["why"]}, {"kind": "video_qa"}):
        with pytest.raises(ValidationError):
            Run.model_validate({"corpus": bad})


@needs_data
def test_build_video_corpus_dispatches_activitynet() -> None:
    from corpora.video_spec import ActivityNetCorpusSpec, build_video_corpus

    corpus = build_video_corpus(ActivityNetCorpusSpec(n_videos=3, n_questions=2, tasks=["what"]), DATA)
    assert corpus.name == "activitynet" and len(corpus.examples) == 2
    assert corpus.params["n_videos"] == 3 and corpus.params["tasks"] == ["what"]
