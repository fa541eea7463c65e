"""Video needle-in-a-haystack from real clips: a grid of video lengths x needle depths.

The Gemini 1.5 protocol with exact ground truth: the real clips in <data>/video are
normalised (size, frame rate, mono audio; silent audio for clips without any) and looped to
the target length; a needle sentence ("The secret word for the red door is volcano.") is
drawn on screen with ffmpeg drawtext for a few seconds and/or spoken by espeak-ng and mixed
into the soundtrack. Each insertion's exact start and end (seconds) is the example's
evidence. Each video is then ingested like any other (frames -> OCR, audio -> ASR), so the
pipelines see only the timeline a real video would give them.

Variants: single (one needle per video; modalities screen, speech or both at once) and multi
(k needles spread through one video, alternating modalities, one question asking for all of
them, scored by `contains_all`). Rendered videos are cached by every input that shapes them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import subprocess
import uuid
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from compare.core.metrics import default_primary
from compare.core.timeline import video_tags
from compare.core.types import Corpus, Document, Example, Span
from corpora.books import data_dir
from corpora.video import Ingested, IngestSettings, Progress, file_sha256, ingest, prefixed
from corpora.video import default_cache_dir as timeline_cache_dir

Modality = Literal["screen", "speech", "both"]
Variant = Literal["single", "multi"]
CLIPS = (
    "big_buck_bunny_0_30.webm", "chaplin.mp4", "bikes.mp4", "cityCC0.mpg", "smpte.mp4",
    "fire.mp4", "bigbuckbunny.mp4",
)
# Keys and values that espeak-ng says and tiny.en hears back verbatim over the clips' own
# sound at background_volume 0.3 (checked one by one: "Lisbon", "the library", "the old
# bridge", "butterfly" came back as other words, which would test the ASR, not the pipeline).
KEYS = (
    "the red door", "the green box", "the blue car", "the yellow house", "the kitchen", "the office",
    "the north tower", "the silver boat", "the front desk", "the train station",
)
WORDS = (
    "pineapple", "lighthouse", "volcano", "saxophone", "penguin", "umbrella", "telescope", "marathon",
    "dinosaur", "chocolate", "helicopter", "waterfall", "pyramid", "kangaroo",
)
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
RENDER_FORMAT = 1


class NeedleVideoError(RuntimeError):
    """A tool is missing or failed; the message says which and how to install it."""


@dataclass(frozen=True)
class Render:
    """How haystack videos are made (part of every rendered video's cache key)."""

    width: int = 640
    height: int = 360
    fps: int = 25
    sample_rate: int = 16000
    screen_seconds: float = 3.0  # how long on-screen text stays up
    background_volume: float = 0.3  # the clips' own sound (at 0.5 music garbles tiny.en)
    duck_volume: float = 0.1  # ... and while a needle is spoken, as a voice-over would
    speech_rate: int = 150  # espeak-ng words per minute


@dataclass(frozen=True)
class VideoNeedle:
    key: str
    value: str
    modality: Modality
    start_s: float = 0.0
    end_s: float = 0.0

    @property
    def sentence(self) -> str:
        return f"The secret word for {self.key} is {self.value}."


def _run(cmd: Sequence[str], what: str) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise NeedleVideoError(f"{what}: {cmd[0]} is not installed (apt-get install {cmd[0]})") from exc
    if proc.returncode != 0:
        raise NeedleVideoError(f"{what}: {cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict[str, str]:
    """ffmpeg and espeak-ng versions, after checking drawtext and the font are usable."""
    for exe, pkg in (("ffmpeg", "ffmpeg"), ("ffprobe", "ffmpeg"), ("espeak-ng", "espeak-ng")):
        if shutil.which(exe) is None:
            raise NeedleVideoError(f"{exe} is not installed (Debian: apt-get install {pkg})")
    if " drawtext " not in _run(["ffmpeg", "-hide_banner", "-filters"], "checking drawtext"):
        raise NeedleVideoError("this ffmpeg has no drawtext filter (Debian's ffmpeg package has it)")
    if not FONT.is_file():
        raise NeedleVideoError(f"font {FONT} not found (Debian: apt-get install fonts-dejavu-core)")
    return {
        "ffmpeg": _run(["ffmpeg", "-version"], "ffmpeg").splitlines()[0],
        "espeak-ng": _run(["espeak-ng", "--version"], "espeak-ng").split(" Data at:")[0].strip(),
    }


def probe(path: Path) -> tuple[float, bool]:
    """Duration (s) of a media file and whether it has an audio stream."""
    out = _run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type", "-of", "json",
         str(path)], f"reading {path}",
    )
    data = json.loads(out)
    kinds = {s.get("codec_type") for s in data.get("streams", [])}
    return float(data["format"]["duration"]), "audio" in kinds


def _atomic(target: Path, make: Callable[[Path], object]) -> Path:
    """Build a file through a temporary name so an interrupted build never looks finished."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{target.name}")
    try:
        make(tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def normalize_clip(src: Path, work: Path, r: Render) -> tuple[Path, float]:
    """The clip at the haystack's size/rate with mono PCM audio (silence if it has none)."""
    duration, has_audio = probe(src)
    key = hashlib.sha256(f"{file_sha256(src)}{asdict(r)}{RENDER_FORMAT}".encode()).hexdigest()[:16]
    out = work / "clips" / f"{src.stem}-{key}.mkv"
    w, h, sr = r.width, r.height, r.sample_rate
    video = (f"[0:v]scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,"
             f"setsar=1,fps={r.fps},format=yuv420p[v]")
    audio = (f"[0:a]aresample={sr},aformat=sample_fmts=s16:channel_layouts=mono,apad,atrim=0:{duration}[a]"
             if has_audio else f"anullsrc=r={sr}:cl=mono,atrim=0:{duration},aformat=sample_fmts=s16[a]")
    _atomic(out, lambda tmp: _run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-filter_complex", f"{video};{audio}",
         "-map", "[v]", "-map", "[a]", "-t", f"{duration}", "-c:v", "libx264", "-preset", "ultrafast",
         "-crf", "18", "-c:a", "pcm_s16le", "-f", "matroska", str(tmp)], f"normalising {src}",
    ))
    return out, probe(out)[0]


def speak(sentence: str, work: Path, r: Render) -> tuple[Path, float]:
    """espeak-ng's reading of a sentence as a wav, and its duration."""
    key = hashlib.sha256(f"{sentence}|{r.speech_rate}".encode()).hexdigest()[:16]
    out = work / "speech" / f"{key}.wav"
    _atomic(out, lambda tmp: _run(
        ["espeak-ng", "-s", str(r.speech_rate), "-w", str(tmp), sentence], "espeak-ng"))
    with wave.open(str(out)) as w:
        return out, w.getnframes() / w.getframerate()


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "'\\''") + "'"


def render_video(
    out: Path, clips: Sequence[Path], seconds: float, needles: Sequence[VideoNeedle], work: Path, r: Render
) -> None:
    """Loop the clips to `seconds`, draw/mix the needles at their times, encode to `out`."""
    parts: list[tuple[Path, float]] = [normalize_clip(c, work, r) for c in clips]
    playlist: list[Path] = []
    total = 0.0
    while total < seconds:
        for path, dur in parts:
            if total >= seconds:
                break
            playlist.append(path)
            total += dur
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file {_quote(str(p.resolve()))}\n" for p in playlist))
    inputs = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    graph, mixes, v = [], ["[bg]"], "[0:v]"
    for i, n in enumerate(needles):
        if n.modality in ("screen", "both"):
            textfile = work / "text" / f"{hashlib.sha256(n.sentence.encode()).hexdigest()[:16]}.txt"
            textfile.parent.mkdir(parents=True, exist_ok=True)
            textfile.write_text(n.sentence)
            end = n.start_s + r.screen_seconds
            graph.append(
                f"{v}drawtext=fontfile={_quote(str(FONT))}:textfile={_quote(str(textfile))}:"
                f"fontsize={max(r.height // 15, 12)}:fontcolor=white:box=1:boxcolor=black@0.9:"
                f"boxborderw={max(r.height // 22, 8)}:x=(w-text_w)/2:y=h-text_h-{r.height // 12}:"
                f"enable='between(t,{n.start_s:.3f},{end:.3f})'[v{i}]"
            )
            v = f"[v{i}]"
        if n.modality in ("speech", "both"):
            wav, _ = speak(n.sentence, work, r)
            inputs += ["-i", str(wav)]
            k = len(mixes)
            ms = round(n.start_s * 1000)
            graph.append(f"[{k}:a]aresample={r.sample_rate},aformat=channel_layouts=mono,"
                         f"adelay={ms}:all=1[s{k}]")
            mixes.append(f"[s{k}]")
    graph.append(f"{v}null[v]")
    spoken = [f"between(t,{n.start_s:.3f},{n.end_s:.3f})" for n in needles if n.modality != "screen"]
    level = (f"'if({'+'.join(spoken)},{r.duck_volume},{r.background_volume})':eval=frame"
             if spoken else f"{r.background_volume}")
    graph.append(f"[0:a]volume={level}[bg]")
    graph.append(f"{''.join(mixes)}amix=inputs={len(mixes)}:duration=first:normalize=0[a]"
                 if len(mixes) > 1 else "[bg]anull[a]")
    script = out.with_suffix(".graph")
    script.write_text(";\n".join(graph))
    try:
        _run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex_script", str(script),
              "-map", "[v]", "-map", "[a]", "-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast",
              "-crf", "20", "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", "-f", "mp4", str(out)],
             f"rendering {out.name}")
    finally:
        listing.unlink(missing_ok=True)
        script.unlink(missing_ok=True)


def place(needles: Sequence[VideoNeedle], depths: Sequence[float], seconds: float, work: Path,
          r: Render) -> list[VideoNeedle]:
    """Each needle's exact [start, end] at its depth (0..1) so that it ends inside the video."""
    out = []
    for n, depth in zip(needles, depths, strict=True):
        length = r.screen_seconds if n.modality == "screen" else speak(n.sentence, work, r)[1]
        if n.modality == "both":
            length = max(length, r.screen_seconds)
        if length + 1.0 > seconds:
            raise ValueError(f"a {seconds:g} s video is too short for a {length:.1f} s needle")
        start = round(depth * (seconds - length), 2)
        out.append(VideoNeedle(n.key, n.value, n.modality, start, round(start + length, 3)))
    return out


def build_video_needle_corpus(
    *,
    lengths_s: Sequence[float] = (30.0, 60.0),
    depths: Sequence[float] = (0.1, 0.5, 0.9),
    modalities: Sequence[Modality] = ("screen", "speech"),
    variant: Variant = "single",
    n_needles: int | None = None,
    seed: int = 0,
    clips: Sequence[str] = CLIPS,
    root: Path | None = None,
    cache_dir: Path | None = None,
    settings: IngestSettings | None = None,
    render: Render | None = None,
    progress: Progress | None = None,
) -> Corpus:
    """One video and one question per (length, depth, modality); multi: one per length."""
    r, settings = render or Render(), settings or IngestSettings()
    versions = tool_versions()
    k = _check(variant, n_needles, depths, modalities)
    src_dir = data_dir(root) / "video"
    sources = [src_dir / c for c in clips]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"video clips not found: {missing}; set --data-dir or RAGVSLC_DATA")
    base = cache_dir if cache_dir is not None else timeline_cache_dir().parent
    work, rendered = base / "video_work", base / "video_needles"
    rng = random.Random(seed)
    clip_ids = [(c, file_sha256(p)) for c, p in zip(clips, sources, strict=True)]
    docs: dict[str, Document] = {}
    examples: list[Example] = []
    for seconds in lengths_s:
        for doc_id, needles, ds in _cells(rng, seconds, variant, depths, modalities, k):
            placed = place(needles, ds, seconds, work, r)
            key = hashlib.sha256(json.dumps(
                [RENDER_FORMAT, clip_ids, asdict(r), seconds, [asdict(n) for n in placed], versions],
                sort_keys=True).encode()).hexdigest()[:20]
            video = rendered / f"{doc_id}-{key}.mp4"
            if progress is not None:
                progress(f"{doc_id}: render", 0.0, seconds)
            _atomic(video, functools.partial(
                render_video, clips=sources, seconds=seconds, needles=placed, work=work, r=r))
            got = ingest(video, settings, cache_dir=base / "timelines", progress=prefixed(progress, doc_id))
            docs[doc_id] = got.document(doc_id)
            examples.append(_example(doc_id, got, placed, ds, seconds, variant))
    params: dict[str, object] = {
        "builder": "video_needle", "lengths_s": list(lengths_s), "depths": list(depths),
        "modalities": list(modalities), "variant": variant, "n_needles": k, "seed": seed,
        "clips": list(clips), "render": asdict(r), "tools": versions, "ingest": settings.describe(),
    }
    name = "video-needle" if variant == "single" else "video-needle-multi"
    return Corpus(name=name, documents=docs, examples=examples, params=params)


def _check(variant: Variant, n_needles: int | None, depths: Sequence[float],
           modalities: Sequence[Modality]) -> int:
    """The needle count, after refusing a grid that cannot be rendered (before any ffmpeg work)."""
    k = (4 if n_needles is None else n_needles) if variant == "multi" else 1
    if variant == "multi" and not 2 <= k <= len(KEYS):
        raise ValueError(f"multi needs n_needles between 2 and {len(KEYS)} (got {k})")
    if variant == "single" and n_needles not in (None, 1):
        raise ValueError(f"variant 'single' plants exactly one needle (got n_needles={n_needles})")
    if any(not 0.0 <= d <= 1.0 for d in depths):
        raise ValueError(f"depths must be within 0..1, got {list(depths)}")
    if not modalities or any(m not in ("screen", "speech", "both") for m in modalities):
        raise ValueError(f"modalities must be screen, speech or both, got {list(modalities)}")
    return k


def _cells(rng: random.Random, seconds: float, variant: Variant, depths: Sequence[float],
           modalities: Sequence[Modality], k: int) -> list[tuple[str, list[VideoNeedle], list[float]]]:
    """One length's videos as (doc id, needles, depths); drawn before any is rendered, so the
    seed alone decides them."""
    cells: list[tuple[str, list[VideoNeedle], list[float]]] = []
    if variant == "single":
        for depth in depths:
            for m in modalities:
                n = VideoNeedle(rng.choice(KEYS), rng.choice(WORDS), m)
                cells.append((f"vneedle-{seconds:g}s-{m}-{round(depth * 100):03d}", [n], [depth]))
    else:
        keys, words = rng.sample(KEYS, k), rng.sample(WORDS, k)
        ns = [VideoNeedle(kk, ww, modalities[i % len(modalities)]) for i, (kk, ww) in
              enumerate(zip(keys, words, strict=True))]
        cells.append((f"vneedle-multi-{seconds:g}s", ns, [(i + 0.5) / k for i in range(k)]))
    return cells


def _example(doc_id: str, got: Ingested, placed: list[VideoNeedle], depths: list[float],
             seconds: float, variant: Variant) -> Example:
    tags: dict[str, str | float] = {
        "task": "video-needle" if variant == "single" else "video-needle-multi",
        "length_s": float(seconds), "video_s": round(got.duration_s, 3),
        "depth": float(depths[0]) if variant == "single" else 0.5,
        "modality": "+".join(sorted({n.modality for n in placed})),
        "needle_start_s": placed[0].start_s, "doc_chars": float(len(got.timeline.text)),
        **video_tags({doc_id: got.timeline}),
    }
    if variant == "single":
        question = f"What is the secret word for {placed[0].key}?"
    else:
        listed = ", ".join(n.key for n in placed[:-1]) + f" and {placed[-1].key}"
        question = f"What are the secret words for {listed}? Give each word."
        tags |= {"answer_format": "all", "n_needles": float(len(placed)),
                 "needles": json.dumps([asdict(n) for n in placed])}
    tags["primary_metric"] = default_primary(tags)  # contains; multi: contains_all
    return Example(
        id=doc_id, doc_ids=(doc_id,), question=question, answers=tuple(n.value for n in placed),
        evidence=tuple(Span(doc_id, n.start_s, n.end_s) for n in placed), tags=tags,
    )
