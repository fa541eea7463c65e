"""Temporal QA on real human annotations: many ActivityNet videos as one long timeline.

The videos themselves are not available, but their timestamped human captions are
(ActivityNet Captions, val_1). Joining many videos' captions back to back, each video's
times offset by where it starts, gives a long "video" whose timeline is exactly what a
perfect captioner would produce; which video occupies which span is recorded. Questions:
- when: 'At what time does this happen: "<caption>"?' gold = the caption's [start, end],
  scored by `time_iou` / `time_hit` (captions that occur twice in the timeline are skipped);
- what: "What happens at <time>?" gold = every caption covering that time, scored by token F1;
- qa: ActivityNet-QA questions (not yes/no) whose answer appears in that video's captions,
  scoped to the clip's time range; evidence = the captions that contain the answer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from compare.core.metrics import default_primary, normalize
from compare.core.timeline import Entry, clock, render, video_tags
from compare.core.types import Corpus, Document, Example, Span
from corpora.books import data_dir

Task = Literal["when", "what", "qa"]
QA_TYPES = ("motion", "spatial", "temporal", "yes_no", "color", "object", "location", "number", "other")


@dataclass(frozen=True)
class Caption:
    start: float  # seconds in the joined timeline
    end: float
    text: str
    video: str


@dataclass(frozen=True)
class Placed:
    video: str
    start: float
    end: float
    captions: tuple[Caption, ...]


@functools.lru_cache(maxsize=2)
def _load(root: Path) -> tuple[dict[str, dict[str, object]], dict[str, list[dict[str, object]]], str]:
    """Captions by video id, QA items by video id ("v_" prefixed), and the captions' sha256."""
    base = root / "activitynet"
    files = [base / n for n in ("caps_val_1.json", "qa_val_q.json", "qa_val_a.json")]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"ActivityNet files not found: {missing}; set --data-dir or RAGVSLC_DATA")
    raw = files[0].read_bytes()
    caps = json.loads(raw)
    answers = {a["question_id"]: a for a in json.loads(files[2].read_bytes())}
    qa: dict[str, list[dict[str, object]]] = {}
    for q in json.loads(files[1].read_bytes()):
        a = answers.get(q["question_id"])
        if a is not None:
            qa.setdefault("v_" + q["video_name"], []).append({**q, **a})
    return caps, qa, hashlib.sha256(raw).hexdigest()


def join_videos(caps: dict[str, dict[str, object]], ids: Sequence[str], gap_s: float = 0.0) -> list[Placed]:
    """Each video's captions offset by where the video starts in the joined timeline."""
    out, offset = [], 0.0
    for vid in ids:
        rec = caps[vid]
        duration = float(rec["duration"])  # type: ignore[arg-type]
        captions = []
        for (s, e), text in zip(rec["timestamps"], rec["sentences"], strict=True):  # type: ignore[call-overload]
            s, e = sorted((min(max(float(s), 0.0), duration), min(max(float(e), 0.0), duration)))
            if e > s and text.strip():
                text = " ".join(text.split())
                captions.append(Caption(round(offset + s, 3), round(offset + e, 3), text, vid))
        out.append(Placed(vid, offset, round(offset + duration, 3), tuple(captions)))
        offset = round(offset + duration + gap_s, 3)
    return out


def timeline_entries(placed: Sequence[Placed]) -> list[Entry]:
    entries = []
    for i, p in enumerate(placed, start=1):
        entries.append(Entry(p.start, p.end, "clip", f"clip {i}"))
        entries += [Entry(c.start, c.end, "caption", c.text) for c in p.captions]
    return entries


def _contains(haystack: str, needle: str) -> bool:
    return f" {needle} " in f" {haystack} "


@dataclass
class _Questions:
    """The examples of one joined timeline; the tags every question shares are set here once."""

    doc_id: str
    placed: Sequence[Placed]
    doc_chars: float
    base_tags: dict[str, str | float]
    examples: list[Example] = field(default_factory=list)

    def add(self, task: str, i: int, question: str, answers: Sequence[str], evidence: Sequence[Caption],
            p: Placed, **tags: str | float) -> None:
        doc_id = self.doc_id
        self.examples.append(Example(
            id=f"{doc_id}-{task}-{i:03d}", doc_ids=(doc_id,), question=question, answers=tuple(answers),
            evidence=tuple(Span(doc_id, c.start, c.end) for c in evidence),
            tags={**self.base_tags, "task": f"anet-{task}", "video_id": p.video, "video_start_s": p.start,
                  "video_end_s": p.end, "video_s": self.placed[-1].end, "doc_chars": self.doc_chars,
                  "primary_metric": default_primary(tags), **tags},
        ))


def build_activitynet_corpus(
    *,
    n_videos: int = 20,
    n_questions: int = 10,
    tasks: Sequence[Task] = ("when", "what", "qa"),
    seed: int = 0,
    gap_s: float = 0.0,
    root: Path | None = None,
) -> Corpus:
    """One joined timeline of `n_videos` videos and up to `n_questions` questions per task."""
    if n_videos < 1 or n_questions < 1:
        raise ValueError("n_videos and n_questions must be >= 1")
    if not tasks or any(t not in ("when", "what", "qa") for t in tasks):
        raise ValueError(f"tasks must be among when, what, qa; got {list(tasks)}")
    caps, qa, sha = _load(data_dir(root))
    pool = sorted(v for v in qa if v in caps and caps[v].get("sentences"))
    if n_videos > len(pool):
        raise ValueError(f"n_videos={n_videos} but only {len(pool)} videos have captions and QA")
    rng = random.Random(seed)
    placed = join_videos(caps, rng.sample(pool, n_videos), gap_s)
    timeline = render(timeline_entries(placed), ranges=True)
    doc_id = f"anet-{n_videos}v-s{seed}"
    asked = _Questions(doc_id, placed, float(len(timeline.text)), video_tags({doc_id: timeline}))
    # The tasks draw from one rng in this order, so a seed gives the same questions as before.
    if "when" in tasks:
        _ask_when(asked, rng, n_questions)
    if "what" in tasks:
        _ask_what(asked, rng, n_questions)
    if "qa" in tasks:
        _ask_qa(asked, rng, n_questions, qa)
    params: dict[str, object] = {
        "builder": "activitynet", "n_videos": n_videos, "n_questions": n_questions, "tasks": list(tasks),
        "seed": seed, "gap_s": gap_s, "captions_sha256": sha,
        "videos": [[p.video, round(p.start, 3), round(p.end, 3)] for p in placed],
    }
    doc = Document(id=doc_id, text=timeline.text, modality="video")
    return Corpus(name="activitynet", documents={doc_id: doc}, examples=asked.examples, params=params)


def _captions(placed: Sequence[Placed]) -> list[Caption]:
    return [c for p in placed for c in p.captions]


def _ask_when(asked: _Questions, rng: random.Random, n: int) -> None:
    """A caption that occurs twice in the timeline has two right answers: only unique ones are asked."""
    captions = _captions(asked.placed)
    seen: dict[str, int] = {}
    for c in captions:
        seen[normalize(c.text)] = seen.get(normalize(c.text), 0) + 1
    where = {p.video: p for p in asked.placed}
    unique = [c for c in captions if seen[normalize(c.text)] == 1]
    for i, c in enumerate(rng.sample(unique, min(n, len(unique)))):
        asked.add("when", i,
                  f'At what time does this happen: "{c.text}"? Answer with the start and end time '
                  "as HH:MM:SS-HH:MM:SS.",
                  [f"{clock(c.start)}-{clock(c.end)}"], [c], where[c.video], answer_format="time")


def _ask_what(asked: _Questions, rng: random.Random, n: int) -> None:
    """Every caption covering the asked time is a right answer: captions overlap."""
    captions = _captions(asked.placed)
    where = {p.video: p for p in asked.placed}
    for i, c in enumerate(rng.sample(captions, min(n, len(captions)))):
        t = float(int((c.start + c.end) / 2))
        t = min(max(t, c.start), c.end)
        covering = [c] + [o for o in captions if o is not c and o.start <= t <= o.end]
        asked.add("what", i, f"What happens at {clock(t)}?", [o.text for o in covering], [c],
                  where[c.video], at_s=t, primary_metric="token_f1")  # gold: a caption sentence


def _ask_qa(asked: _Questions, rng: random.Random, n: int, qa: dict[str, list[dict[str, object]]]) -> None:
    """Only questions the captions can answer: the timeline is all a model sees of the video."""
    found = []
    for p in asked.placed:
        said = [normalize(c.text) for c in p.captions]
        for item in qa[p.video]:
            answer, qtype = str(item["answer"]), int(item["type"])  # type: ignore[call-overload]
            norm = normalize(answer)
            if QA_TYPES[qtype] == "yes_no" or not norm:
                continue
            hits = [c for c, s in zip(p.captions, said, strict=True) if _contains(s, norm)]
            if hits:
                found.append((p, item, hits, qtype))
    for i, (p, item, hits, qtype) in enumerate(rng.sample(found, min(n, len(found)))):
        question = str(item["question"]).strip().rstrip("?")
        asked.add("qa", i, f"In the clip from {clock(p.start)} to {clock(p.end)}: {question}?",
                  [str(item["answer"])], hits, p, qa_type=QA_TYPES[qtype],
                  question_id=str(item["question_id"]))
