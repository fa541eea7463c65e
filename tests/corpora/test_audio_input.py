"""An audio file (.wav, .mp3, .flac) is a video without frames: speech only, same timeline.

Real media: the JFK recording in <data>/speech (FLAC), converted by ffmpeg to WAV and MP3.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compare.core.timeline import Word, speech_lines
from corpora.asr import AsrSettings, transcribe
from corpora.video import IngestSettings, VideoError, ingest
from corpora.video_qa import build_video_qa_corpus
from corpora.video_spec import VideoIngestSpec
from main import app

DATA = Path(os.environ.get("RAGVSLC_DATA", "/work/shared/data"))
JFK = DATA / "speech" / "jfk.flac"


def test_speech_lines_start_when_their_words_are_said() -> None:
    """A 12 s segment becomes lines that start at their first word: at sentence ends, pauses
    and the length cap."""
    words = [Word(0.0, 0.4, "And"), Word(0.5, 0.9, "so."), Word(3.0, 3.4, "Ask"), Word(3.5, 3.9, "not"),
             Word(5.0, 5.5, "what"), Word(9.0, 9.4, "your"), Word(9.5, 10.0, "country")]
    lines = speech_lines(words, max_s=6.0, gap_s=0.8)
    assert [(e.start, e.text) for e in lines] == [(0.0, "And so."), (3.0, "Ask not"), (5.0, "what"),
                                                  (9.0, "your country")]
    assert all(e.source == "speech" and e.end >= e.start for e in lines)
    capped = speech_lines([Word(float(i), i + 0.5, f"w{i}") for i in range(10)], max_s=3.0, gap_s=0.8)
    assert [e.start for e in capped] == [0.0, 3.0, 6.0, 9.0]  # no line runs past 3 s


def test_audio_without_asr_is_a_clear_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match=r"jfk\.flac: an audio file has only speech to read, and ASR is off"):
        ingest(JFK, IngestSettings(asr=False), cache_dir=tmp_path)
    out = CliRunner().invoke(app, ["video", "ingest", str(JFK), "--no-asr"],
                             env={"RAGVSLC_HOME": str(tmp_path)})
    assert out.exit_code == 2 and "ASR is off" in out.output
    bad = CliRunner().invoke(app, ["video", "ingest", str(JFK), "--asr-model", "huge"],
                             env={"RAGVSLC_HOME": str(tmp_path)})
    assert bad.exit_code == 2 and "asr model must be one of" in bad.output


@pytest.mark.slow
def test_audio_files_are_ingested_as_speech_only_timelines(tmp_path: Path) -> None:
    """FLAC through the CLI, the QA corpus over it (a cache hit), and MP3: two ASR runs."""
    out = CliRunner().invoke(app, ["video", "ingest", str(JFK)], env={"RAGVSLC_HOME": str(tmp_path)})
    assert out.exit_code == 0, out.output
    assert "audio only" in out.output and "(speech)" in out.output and "(screen)" not in out.output
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text(json.dumps({"video": str(JFK), "question": "What should you ask?",
                                 "answers": ["what you can do for your country"],
                                 "evidence": [[7.5, 11.0]]}) + "\n")
    corpus = build_video_qa_corpus(qfile, cache_dir=tmp_path / "timelines")
    [doc] = corpus.documents.values()
    assert corpus.examples[0].tags["evidence_unit"] == "seconds"
    assert corpus.params["videos"]["jfk"]["duration_s"] == pytest.approx(11.0, abs=0.2)  # type: ignore[index]
    got = ingest(JFK, cache_dir=tmp_path / "timelines")
    assert got.cache_hit and got.timeline.text == doc.text and got.audio_only
    assert got.stats["has_audio"] == 1.0 and got.stats["frames_decoded"] == 0
    lines = got.timeline.text.splitlines()
    assert lines and all("(speech)" in ln for ln in lines)
    said = " ".join(e.text for e in got.entries).lower()
    assert "ask not what your country can do for you" in said
    # word times: lines of at most ~6 s (whisper's own segment here is ~8 s), each starting when
    # its first word is said: the closing "ask what you can do" begins at ~8 s
    assert len(got.entries) >= 3 and all(e.end - e.start <= 6.5 for e in got.entries), got.timeline.text
    last = next(e for e in got.entries if e.text.lower().startswith("ask what"))
    assert 7.0 <= last.start <= 9.5, got.timeline.text
    assert "words" in str(got.settings["asr_model"])
    mp3 = tmp_path / "talk.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(JFK), str(mp3)], check=True)
    again = ingest(mp3, cache_dir=tmp_path / "timelines")
    heard = " ".join(e.text for e in again.entries).lower()
    assert again.audio_only and "your country can do for you" in heard


def test_asr_settings_record_every_knob_and_refuse_bad_ones() -> None:
    """The default is the benchmark's choice (tiny.en, beam 5) everywhere a video is ingested
    from; VAD off and the second decode are knobs of their own, recorded (so cache keys move)."""
    plain = AsrSettings().describe()
    assert plain.endswith("int8, vad, beam 5, words)") and "tiny.en" in plain and "redecode" not in plain
    assert IngestSettings().asr_settings() == AsrSettings() == VideoIngestSpec().settings().asr_settings()
    assert ", no vad, beam 5" in AsrSettings(vad=False).describe()
    assert AsrSettings(redecode_below=-0.5).describe().endswith(", redecode < -0.5)")
    with pytest.raises(ValueError, match="redecode_below must be in"):
        AsrSettings(redecode_below=0.5)


@pytest.mark.slow
def test_second_decode_of_doubtful_windows_keeps_the_words_and_their_times() -> None:
    """Every segment re-decoded (threshold 0): the speech and word times are still the JFK line."""
    again = transcribe(JFK, settings=AsrSettings(redecode_below=0.0))
    said = " ".join(s.text for s in again).lower()
    assert "ask not what your country can do for you" in said, said
    starts = [w.start for s in again for w in s.words]
    assert starts == sorted(starts) and starts[0] >= 0.0 and starts[-1] <= 11.5
