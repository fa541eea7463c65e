"""Bring your own video: video file(s) + a small questions.jsonl with evidence in seconds.

questions.jsonl, one object per line (checked completely before anything is ingested):
    {"id": "q1", "video": "talk.mp4", "question": "...", "answers": ["..."],
     "evidence": [[151, 165], ["00:02:31", "00:02:45"]],   (seconds, or clock times)
     "tags": {"answer_format": "time"}}                     (optional; "time" -> time_iou/time_hit)
`video` is relative to the questions file's directory; it may be left out when the corpus is
built with `video=` (one video for every question). `id` defaults to the line number.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, StrictFloat, StrictInt

from compare.core.metrics import default_primary
from compare.core.timeline import video_tags
from compare.core.types import Corpus, Document, Example, Span
from corpora.jsonl import CorpusError, NonBlank, StrictRecord, read_jsonl
from corpora.records import declared_metric_problems
from corpora.video import Ingested, IngestSettings, Progress, VideoError, ingest, prefixed

_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})(\.\d+)?$")
Time = StrictFloat | StrictInt | Annotated[str, Field(pattern=_CLOCK.pattern)]


class VideoQuestion(StrictRecord):
    id: NonBlank | None = None
    video: NonBlank | None = None
    question: NonBlank
    answers: Annotated[list[NonBlank], Field(min_length=1)]
    evidence: list[tuple[Time, Time]] | None = None
    tags: dict[NonBlank, str | float] | None = None


def seconds(t: float | str) -> float:
    """151, 151.5, "2:31" or "00:02:31.5" as seconds."""
    if not isinstance(t, str):
        return float(t)
    m = _CLOCK.match(t.strip())
    if m is None:
        raise ValueError(f"not a time: {t!r}")
    h, mi, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + float(frac or 0)


def build_video_qa_corpus(
    questions: Path | str,
    *,
    video: Path | str | None = None,
    settings: IngestSettings | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> Corpus:
    """Ingest each named video once (cached) and attach its questions, evidence in seconds."""
    questions = Path(questions)
    settings = settings or IngestSettings()
    problems: list[str] = []
    rows = read_jsonl(questions, VideoQuestion, problems)
    if not rows and not problems:
        problems.append(f"{questions}: no questions")
    paths, ids = _check_rows(questions, rows, video, problems)
    doc_ids: dict[Path, str] = {}
    for path in paths.values():
        if path.resolve() not in doc_ids:
            stem = path.stem
            doc_ids[path.resolve()] = stem if stem not in doc_ids.values() else f"{stem}-{len(doc_ids)}"
    ingested: dict[str, Ingested] = {}
    for path, doc_id in doc_ids.items():
        ingested[doc_id] = ingest(path, settings, cache_dir=cache_dir, progress=prefixed(progress, doc_id))
    examples = []
    for (n, q), qid in zip(rows, ids, strict=True):
        doc_id = doc_ids[paths[n].resolve()]
        got = ingested[doc_id]
        evidence = tuple(Span(doc_id, seconds(a), seconds(b)) for a, b in q.evidence or ())
        late = [e for e in evidence if e.start >= got.duration_s + 1.0]
        if late:
            raise VideoError(f"{questions}:{n}: evidence starts after the end of {got.path} "
                             f"({got.duration_s:.1f} s)")
        tags: dict[str, str | float] = {"task": "video-qa", "video_s": round(got.duration_s, 3),
                                        **video_tags({doc_id: got.timeline}), **(q.tags or {})}
        tags.setdefault("primary_metric", default_primary(tags))
        examples.append(Example(id=qid, doc_ids=(doc_id,), question=q.question, answers=tuple(q.answers),
                                evidence=evidence, tags=tags))
    docs: dict[str, Document] = {d: g.document(d) for d, g in ingested.items()}
    params: dict[str, object] = {
        "builder": "video_qa", "questions": str(questions),
        "questions_sha256": hashlib.sha256(questions.read_bytes()).hexdigest(),
        "videos": {d: {"file": str(g.path), "sha256": g.sha256, "duration_s": round(g.duration_s, 3)}
                   for d, g in ingested.items()},
        "ingest": settings.describe(),
    }
    return Corpus(name=questions.stem, documents=docs, examples=examples, params=params)


def _check_rows(questions: Path, rows: list[tuple[int, VideoQuestion]], video: Path | str | None,
                problems: list[str]) -> tuple[dict[int, Path], list[str]]:
    """Each row's video path and question id; every problem is collected and raised together,
    before any video is ingested (minutes of OCR and ASR), so one fix-up pass fixes the file."""
    paths: dict[int, Path] = {}
    for n, q in rows:
        where = f"{questions}:{n}"
        if q.video is not None:
            path = questions.parent / q.video
        elif video is not None:
            path = Path(video)
        else:
            problems.append(f"{where}: no `video` (and no default video given)")
            continue
        if not path.is_file():
            problems.append(f"{where}: video {str(path)!r} not found")
        paths[n] = path
        for i, (a, b) in enumerate(q.evidence or ()):
            if not seconds(a) < seconds(b):
                problems.append(f"{where}: evidence[{i}] needs start < end, got [{a}, {b}]")
        problems += declared_metric_problems(where, q.tags)
    ids = [q.id or f"q{n}" for n, q in rows]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append(f"{questions}: duplicate question ids {dupes}")
    if problems:
        raise CorpusError(str(questions), problems)
    return paths, ids
