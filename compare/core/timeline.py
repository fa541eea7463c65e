"""A video as text: timestamped lines, with every line's time span kept beside its characters.

Long context reads the whole timeline; RAG retrieves character spans of it. Gold evidence for
video is in seconds, so a retrieved character span is scored by mapping it back to the time
span of the lines it touches (`chars_to_seconds`); `seconds_to_chars` goes the other way.

The mapping travels with each example as a compact JSON tag (`TIME_MAP_TAG`: per document, a
list of `[char_start, char_end, t_start, t_end]` rows) so that metrics stay pure functions of
(example, prediction) and `score` can recompute them from the store alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from compare.core.types import Corpus, Span

Source = Literal["screen", "speech", "caption", "clip"]
TIME_MAP_TAG = "time_map"
EVIDENCE_UNIT_TAG = "evidence_unit"  # "seconds" on every video example


@dataclass(frozen=True)
class Entry:
    """One thing seen or heard: on-screen text, a speech segment, a caption, a clip marker."""

    start: float
    end: float
    source: Source
    text: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end)) or self.end < self.start:
            raise ValueError(f"bad time span [{self.start}, {self.end}] for {self.text!r}")


@dataclass(frozen=True)
class Word:
    """One recognised word and when it was said (faster-whisper's word timestamps)."""

    start: float
    end: float
    text: str


SENTENCE_END = (".", "?", "!")


def speech_lines(words: Sequence[Word], *, max_s: float = 6.0, gap_s: float = 0.8) -> list[Entry]:
    """Words as speech lines that start when their first word is said: a line ends at a
    sentence end, before a pause of `gap_s`, or before it would run past `max_s`. So a
    "when was X said" question reads a stamp within a line's few seconds of X, not the start
    of a 30 s whisper segment, and a retrieved line maps to those few seconds."""
    out: list[Entry] = []
    cur: list[Word] = []
    for w in words:
        if cur and (w.start - cur[-1].end > gap_s or w.end - cur[0].start > max_s):
            out.append(_speech(cur))
            cur = []
        cur.append(w)
        if w.text.endswith(SENTENCE_END):
            out.append(_speech(cur))
            cur = []
    if cur:
        out.append(_speech(cur))
    return out


def _speech(words: Sequence[Word]) -> Entry:
    start = words[0].start
    return Entry(start, max(words[-1].end, start), "speech", " ".join(w.text for w in words))


@dataclass(frozen=True)
class Line:
    """A rendered line: characters [char_start, char_end) of the text, seconds [t_start, t_end]."""

    char_start: int
    char_end: int
    t_start: float
    t_end: float


@dataclass(frozen=True)
class Timeline:
    text: str
    lines: tuple[Line, ...]

    def rows(self) -> list[list[float]]:
        """The compact mapping stored in example tags."""
        return [[ln.char_start, ln.char_end, round(ln.t_start, 3), round(ln.t_end, 3)] for ln in self.lines]

    @classmethod
    def from_rows(cls, text: str, rows: Iterable[Sequence[float]]) -> Timeline:
        return cls(text, tuple(Line(int(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows))


def clock(seconds: float) -> str:
    """00:02:31 (hours always shown, seconds floored: a line says when it starts)."""
    s = max(int(seconds), 0)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render(entries: Iterable[Entry], *, ranges: bool = False) -> Timeline:
    """`[00:02:31] (screen) text` lines in time order (`[start-end]` with ranges=True)."""
    order = {"clip": 0, "caption": 1, "screen": 2, "speech": 3}
    parts: list[str] = []
    lines: list[Line] = []
    pos = 0
    for e in sorted(entries, key=lambda e: (e.start, order[e.source], e.end)):
        text = " ".join(e.text.split())
        stamp = f"[{clock(e.start)}-{clock(e.end)}]" if ranges else f"[{clock(e.start)}]"
        line = f"{stamp} ({e.source}) {text}"
        if parts:
            pos += 1  # the newline before this line
        lines.append(Line(pos, pos + len(line), e.start, e.end))
        parts.append(line)
        pos += len(line)
    return Timeline("\n".join(parts), tuple(lines))


def _touching(timeline: Timeline, start: float, end: float) -> list[Line]:
    """Lines whose characters overlap [start, end) (a zero-width span touches its line)."""
    if end <= start:
        return [ln for ln in timeline.lines if ln.char_start <= start < max(ln.char_end, ln.char_start + 1)]
    return [ln for ln in timeline.lines if ln.char_start < end and start < ln.char_end]


def chars_to_seconds(timeline: Timeline, span: Span) -> Span | None:
    """The time covered by the lines a character span touches; None if it touches none."""
    hit = _touching(timeline, span.start, span.end)
    if not hit:
        return None
    return Span(span.doc_id, min(ln.t_start for ln in hit), max(ln.t_end for ln in hit))


def seconds_to_chars(timeline: Timeline, span: Span) -> Span | None:
    """The characters of the lines whose time span overlaps (or, for an instant, contains) it."""
    if span.end > span.start:
        hit = [ln for ln in timeline.lines if ln.t_start < span.end and span.start < ln.t_end]
    else:
        hit = [ln for ln in timeline.lines if ln.t_start <= span.start <= ln.t_end]
    if not hit:
        return None
    return Span(span.doc_id, min(ln.char_start for ln in hit), max(ln.char_end for ln in hit))


def time_map_tag(timelines: Mapping[str, Timeline]) -> str:
    """The example tag that lets a metric map retrieved character spans to seconds."""
    return json.dumps({doc_id: tl.rows() for doc_id, tl in timelines.items()}, separators=(",", ":"))


def retrieved_seconds(tag: str, retrieved: Iterable[Span]) -> list[Span]:
    """Retrieved character spans as time spans, using an example's time-map tag."""
    maps = {d: Timeline.from_rows("", rows) for d, rows in json.loads(tag).items()}
    out = []
    for r in retrieved:
        tl = maps.get(r.doc_id)
        mapped = chars_to_seconds(tl, r) if tl is not None else None
        if mapped is not None:
            out.append(mapped)
    return out


def video_tags(timelines: Mapping[str, Timeline]) -> dict[str, str | float]:
    """Tags every video example carries: evidence is in seconds; how to map chars to seconds."""
    return {EVIDENCE_UNIT_TAG: "seconds", TIME_MAP_TAG: time_map_tag(timelines)}


def timelines_of(corpus: Corpus) -> dict[str, Timeline]:
    """Each video document's timeline, rebuilt from its text and an example's time-map tag."""
    out: dict[str, Timeline] = {}
    for ex in corpus.examples:
        tag = ex.tags.get(TIME_MAP_TAG)
        if isinstance(tag, str):
            for doc_id, rows in json.loads(tag).items():
                out.setdefault(doc_id, Timeline.from_rows(corpus.documents[doc_id].text, rows))
    return out
