"""Video -> timestamped timeline: what is seen (OCR of sampled frames) and heard (speech).

Frames are decoded with PyAV and sampled at `fps` and/or on scene cuts; a sampled frame
nearly identical to the last OCR'd one is not OCR'd again (it keeps that frame's text), and the
rest are OCR'd in batches: scene-text OCR (PP-OCRv4 via rapidocr-onnxruntime, corpora/scene_ocr.py)
by default, tesseract (corpora/ocr.py) on request. Each text line is followed on its own: the
consecutive samples that show the same line become one `(screen)` line spanning their times, so a
caption that stays up while a clock beside it ticks is one line, not one per tick.
Speech comes from faster-whisper (a model from PyPI, VAD on), split into lines by word times so
each speech line starts when its first word is said. An audio file (.wav, .mp3, .flac, or any
file with sound and no picture) is a video without frames: speech only. The timeline is cached
on disk by the file's sha256 plus every setting that changes its text (fps, scene threshold, OCR
engine and version, ASR model, decoding settings and versions), so a second ingest is free.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compare.core.extras import needs_extra
from compare.core.timeline import Entry, Timeline, render, speech_lines
from compare.core.types import Document
from corpora.asr import AsrModel, AsrSettings, transcribe
from corpora.ocr import Gray, ocr_frames, tesseract_model, tesseract_version
from corpora.scene_ocr import Image, rapidocr_description, scene_ocr_frames

# stage ("decode+ocr" | "asr"), seconds of media done, seconds in total
Progress = Callable[[str, float, float], None]
CACHE_FORMAT = 3  # 3: speech lines by word times; 2: screen lines followed one by one
OcrEngine = Literal["rapidocr", "tesseract"]
OCR_ENGINES: tuple[OcrEngine, ...] = ("rapidocr", "tesseract")
_THUMB = (64, 36)


class VideoError(ValueError):
    """A video that cannot be ingested; the message names the file."""


@dataclass(frozen=True)
class IngestSettings:
    """Everything that changes a timeline's text: part of the cache key and the corpus params."""

    fps: float | None = 1.0  # frames sampled per second; None: scene cuts only
    # a cut (and the first frame) is also sampled: mean |diff| (0-255) of consecutive frames'
    # 64x36 gray thumbnails above this (on the real clips: cuts 33-64, p95 of frames 7.4)
    scene_threshold: float | None = None
    # a sampled frame with fewer than this share of pixels changed (by > 32 gray levels) since
    # the last OCR'd frame is a near-duplicate: it keeps that frame's text, no OCR
    dedup_threshold: float = 0.0005
    ocr: bool = True
    ocr_engine: OcrEngine = "rapidocr"  # scene text; "tesseract" reads clean page-like frames only
    ocr_lang: str = "eng"
    ocr_min_conf: float = 60.0  # tesseract: word confidence 0-100
    ocr_min_score: float = 0.6  # rapidocr: a box's mean character confidence 0-1
    ocr_det_side: int = 960  # rapidocr: detection sees the frame at most this long (never upscaled)
    ocr_max_width: int = 1280
    ocr_psm: int = 3  # tesseract page segmentation: 3 is 5-8x faster and cleaner than 6 or 11
    asr: bool = True
    asr_beam_size: int = AsrSettings.beam_size  # the benchmark's choice (corpora/asr.py)
    asr_model: AsrModel = "tiny.en"
    asr_word_times: bool = True  # speech lines split by word times (False: whisper's segments)

    def __post_init__(self) -> None:
        if self.fps is None and self.scene_threshold is None and self.ocr:
            raise ValueError("OCR needs frames: set fps and/or scene_threshold")
        if self.fps is not None and not 0 < self.fps <= 30:
            raise ValueError(f"fps must be in (0, 30], got {self.fps}")
        if self.ocr_engine not in OCR_ENGINES:
            raise ValueError(f"ocr_engine must be one of {OCR_ENGINES}, got {self.ocr_engine!r}")
        self.asr_settings()  # a bad model name or beam size is refused here, before any decoding

    def describe(self) -> dict[str, object]:
        """The settings plus the engines that ran, as recorded with every result."""
        out: dict[str, object] = asdict(self)
        out["ocr_version"], out["ocr_models"] = None, None
        if self.ocr and self.ocr_engine == "tesseract":
            out["ocr_version"] = tesseract_version()
            out["ocr_models"] = tesseract_model(self.ocr_lang)
        elif self.ocr:
            desc = rapidocr_description()
            out["ocr_version"], out["ocr_models"] = desc["engine"], desc["models"]
        out["asr_model"] = self.asr_settings().describe() if self.asr else None
        return out

    def asr_settings(self) -> AsrSettings:
        return AsrSettings(model=self.asr_model, beam_size=self.asr_beam_size,
                           word_timestamps=self.asr_word_times)


@dataclass(frozen=True)
class Ingested:
    path: Path
    sha256: str
    duration_s: float
    entries: tuple[Entry, ...]
    timeline: Timeline
    settings: dict[str, object]
    stats: dict[str, float] = field(default_factory=dict)  # timings and frame counts
    cache_hit: bool = False

    @property
    def audio_only(self) -> bool:
        return bool(self.stats.get("audio_only"))

    def document(self, doc_id: str) -> Document:
        return Document(id=doc_id, text=self.timeline.text, modality="video", media_path=self.path)


def prefixed(progress: Progress | None, prefix: str) -> Progress | None:
    """The same callback with every stage named after one video."""
    if progress is None:
        return None
    report = progress
    return lambda stage, done, total: report(f"{prefix}: {stage}", done, total)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    home = os.environ.get("RAGVSLC_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "ragvslc") / "timelines"


def _open(path: Path) -> Any:
    with needs_extra("video", "video ingest", VideoError):
        import av

    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"{path}: cannot read video: {exc}") from exc
    if not container.streams.video and not container.streams.audio:
        container.close()
        raise VideoError(f"{path}: neither a video nor an audio stream")
    return container


@dataclass
class _Sampler:
    """Decode, pick frames (fps grid, scene cuts), OCR the new-looking ones in batches."""

    settings: IngestSettings
    batch: int = 24
    times: list[float] = field(default_factory=list)
    # a sample's text lines; None: same as the previous OCR'd frame (a near-duplicate, skipped)
    texts: list[tuple[str, ...] | None] = field(default_factory=list)
    pending: list[tuple[int, Image]] = field(default_factory=list)
    stats: dict[str, float] = field(
        default_factory=lambda: {"frames_decoded": 0, "frames_sampled": 0, "frames_ocr": 0,
                                 "frames_skipped": 0, "scene_cuts": 0, "ocr_s": 0.0, "ocr_batches": 0}
    )

    def flush(self) -> None:
        if not self.pending:
            return
        t0 = time.perf_counter()
        s = self.settings
        images = [g for _, g in self.pending]
        if s.ocr_engine == "tesseract":
            lines = [text.splitlines() for text in
                     ocr_frames(images, lang=s.ocr_lang, min_conf=s.ocr_min_conf, psm=s.ocr_psm)]
        else:
            lines = scene_ocr_frames(images, min_score=s.ocr_min_score, det_side=s.ocr_det_side,
                                     lang=s.ocr_lang, timings=self.stats)
        self.stats["ocr_s"] += time.perf_counter() - t0
        for (i, _), found in zip(self.pending, lines, strict=True):
            self.texts[i] = tuple(dict.fromkeys(" ".join(ln.split()) for ln in found if ln.strip()))
        self.stats["frames_ocr"] += len(self.pending)
        self.stats["ocr_batches"] += 1
        self.pending = []

    def run(self, container: Any, duration: float, progress: Progress | None) -> None:
        s = self.settings
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = 1
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        next_t = 0.0
        prev = last_ocr = None
        last_report = -10.0
        for frame in container.decode(stream):
            t = max((frame.time if frame.time is not None else 0.0) - t0, 0.0)
            self.stats["frames_decoded"] += 1
            if progress is not None and t - last_report >= 5.0:
                progress("decode+ocr", t, duration)
                last_report = t
            take = False
            if s.fps is not None and t >= next_t - 1e-3:
                take, next_t = True, (math.floor(t * s.fps + 1e-6) + 1) / s.fps
            if s.scene_threshold is not None:  # every frame's thumbnail, only when cuts matter
                thumb = frame.reformat(width=_THUMB[0], height=_THUMB[1], format="gray").to_ndarray()
                thumb = thumb.astype(np.int16)
                if prev is None:
                    take = True
                elif float(np.abs(thumb - prev).mean()) > s.scene_threshold:
                    take = True
                    self.stats["scene_cuts"] += 1
                prev = thumb
            if not take:
                continue
            self.stats["frames_sampled"] += 1
            self.times.append(t)
            if not s.ocr:
                self.texts.append(())
                continue
            w = min(frame.width, s.ocr_max_width)
            h = max(round(frame.height * w / frame.width / 2) * 2, 2)
            gray = frame.reformat(width=w, height=h, format="gray").to_ndarray()
            if last_ocr is not None and _changed(gray, last_ocr) < s.dedup_threshold:
                self.texts.append(None)
                self.stats["frames_skipped"] += 1
            else:
                last_ocr = gray
                self.texts.append(())
                # scene text is read in colour (red on green is one gray); tesseract reads gray
                image = gray if s.ocr_engine == "tesseract" else frame.reformat(
                    width=w, height=h, format="bgr24").to_ndarray()
                self.pending.append((len(self.texts) - 1, image))
                if len(self.pending) >= self.batch:
                    self.flush()
        self.flush()

    def entries(self, duration: float) -> list[Entry]:
        """Each text line's runs of consecutive samples showing it, one entry per run (from the
        first sample showing it to the first sample that no longer does)."""
        resolved: list[tuple[str, ...]] = []
        for text in self.texts:
            resolved.append(resolved[-1] if text is None and resolved else text or ())
        out: list[Entry] = []
        open_at: dict[str, int] = {}  # line -> index of the sample where its current run began
        for i, lines in enumerate([*resolved, ()]):
            now = set(lines)
            for line in [ln for ln in open_at if ln not in now]:
                start = open_at.pop(line)
                end = self.times[i] if i < len(self.times) else max(duration, self.times[-1])
                out.append(Entry(self.times[start], end, "screen", line))
            for line in lines:
                open_at.setdefault(line, i)
        return sorted(out, key=lambda e: e.start)


def _changed(a: Gray, b: Gray) -> float:
    """Share of pixels that differ by more than 32 gray levels (codec noise stays below)."""
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)) > 32).mean())


def _duration(container: Any) -> float:
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    stream = (container.streams.video or container.streams.audio)[0]
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    return 0.0


def _analyse(path: Path, settings: IngestSettings, progress: Progress | None) -> Ingested:
    with needs_extra("video", "video ingest", VideoError):
        import av

    container = _open(path)
    try:
        duration = _duration(container)
        has_audio = bool(container.streams.audio)
        audio_only = not container.streams.video
        sampler = _Sampler(settings)
        t0 = time.perf_counter()
        try:
            if not audio_only and (settings.ocr or settings.scene_threshold is not None):
                sampler.run(container, duration, progress)
        except av.FFmpegError as exc:
            raise VideoError(f"{path}: cannot decode video: {exc}") from exc
        stats = dict(sampler.stats)
        stats["decode_s"] = time.perf_counter() - t0 - stats["ocr_s"]
    finally:
        container.close()
    if sampler.times:
        duration = max(duration, sampler.times[-1])
    entries = sampler.entries(duration) if settings.ocr and sampler.times else []
    stats["asr_s"] = 0.0
    stats["has_audio"] = float(has_audio)
    stats["audio_only"] = float(audio_only)
    if audio_only and not settings.asr:
        raise VideoError(f"{path}: an audio file has only speech to read, and ASR is off")
    if settings.asr and has_audio:
        t0 = time.perf_counter()
        report = (lambda done: progress("asr", done, duration)) if progress else None
        try:
            segments = transcribe(path, settings=settings.asr_settings(), progress=report)
        except (av.FFmpegError, RuntimeError, ValueError) as exc:
            raise VideoError(f"{path}: cannot transcribe audio: {exc}") from exc
        stats["asr_s"] = time.perf_counter() - t0
        for seg in segments:
            if settings.asr_word_times and seg.words:
                entries += speech_lines(seg.words)
            else:
                entries.append(Entry(seg.start, max(seg.end, seg.start), "speech", seg.text))
    stats["speech_lines"] = float(sum(e.source == "speech" for e in entries))
    stats["screen_lines"] = float(sum(e.source == "screen" for e in entries))
    return Ingested(
        path=path, sha256="", duration_s=duration, entries=tuple(entries),
        timeline=render(entries), settings=settings.describe(), stats=stats,
    )


def ingest(
    path: Path | str,
    settings: IngestSettings | None = None,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> Ingested:
    """The timeline of one video, from the cache when this file and these settings were seen."""
    path = Path(path)
    settings = settings or IngestSettings()
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    digest = file_sha256(path)
    described = settings.describe()
    key_blob = json.dumps({"format": CACHE_FORMAT, "sha256": digest, "settings": described}, sort_keys=True)
    key = hashlib.sha256(key_blob.encode()).hexdigest()[:32]
    root = cache_dir if cache_dir is not None else default_cache_dir()
    entry_path = root / f"{key}.json"
    if entry_path.is_file():
        data = json.loads(entry_path.read_text(encoding="utf-8"))
        entries = tuple(Entry(e[0], e[1], e[2], e[3]) for e in data["entries"])
        return Ingested(
            path=path, sha256=digest, duration_s=data["duration_s"], entries=entries,
            timeline=render(entries), settings=described, stats=data["stats"], cache_hit=True,
        )
    result = _analyse(path, settings, progress)
    root.mkdir(parents=True, exist_ok=True)
    blob = {
        "file": str(path), "sha256": digest, "settings": described, "duration_s": result.duration_s,
        "stats": result.stats, "entries": [[e.start, e.end, e.source, e.text] for e in result.entries],
    }
    tmp = entry_path.with_name(f"{entry_path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(blob, ensure_ascii=False), encoding="utf-8")
    tmp.replace(entry_path)
    return Ingested(
        path=path, sha256=digest, duration_s=result.duration_s, entries=result.entries,
        timeline=result.timeline, settings=described, stats=result.stats,
    )
