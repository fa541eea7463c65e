"""Scene-text OCR (rapidocr, real PP-OCRv4 models) and what the timeline makes of it.

The clip test is the issue's own reproduction: ffmpeg testsrc colour bars with a caption on a
black band from 8 to 11 s, which tesseract read as `ET WO`. The pure tests feed the space and
line rules hand-made recogniser output whose right answer is known by construction.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from corpora.scene_ocr import _ADVANCE, SPACE_WIDTH, _keep, _lines, scene_ocr_frames, segment, spaced
from corpora.video import IngestSettings, _Sampler, ingest
from corpora.video_spec import VideoIngestSpec, ingest_report

CAPTION = "SECRET WORD PELICAN"


def _columns(words: list[str], per_unit: float = 0.08, gap: float = 1.0) -> tuple[list[str], list[int]]:
    """Glued characters and the CTC column of each centre, laid out with DejaVu Sans advances
    and `gap` spaces between words: what the recogniser reports for text it reads without spaces."""
    chars, cols, x = [], [], 0.0
    for w, word in enumerate(words):
        if w:
            x += gap * SPACE_WIDTH
        for ch in word:
            adv = _ADVANCE[ch]
            chars.append(ch)
            cols.append(round((x + adv / 2) * per_unit))
            x += adv
    return chars, cols


def test_dropped_spaces_come_back_where_the_gaps_and_the_words_agree() -> None:
    assert spaced(*_columns(["SECRET", "WORD", "PELICAN"])) == CAPTION
    assert spaced(*_columns(["The", "secret", "word", "is", "volcano."], per_unit=0.2)) == \
        "The secret word is volcano."
    # one word that word frequencies alone would cut in two: no gap, no cut
    assert spaced(*_columns(["lighthouse"])) == "lighthouse"
    assert spaced(*_columns(["waterfall"], per_unit=0.2)) == "waterfall"
    # words the model does not know are cut where the gap is, and only there
    assert spaced(*_columns(["Zyxq", "Vbnk"], per_unit=0.2)) == "Zyxq Vbnk"
    # spaces the recogniser did emit are kept; a run of digits stays one number
    chars, cols = _columns(["at", "2024"], per_unit=0.2)
    assert spaced([*chars[:2], " ", *chars[2:]], [*cols[:2], cols[2] - 1, *cols[2:]]) == "at 2024"


def test_a_lone_letter_needs_a_clear_gap_and_a_zero_among_letters_is_an_o() -> None:
    # CTC noise of a third of a space past a word gap's worth: not enough to cut off one letter
    # (wordninja counts the `s` of `it's` as a word), while a real gap still cuts `Plan B`
    assert segment("This", [1.3, 0.0, 0.0]) == "This"
    assert segment("IS", [1.3]) == "IS"
    assert segment("PlanB", [0.0, 0.0, 0.0, 1.3]) == "Plan B"
    assert _keep("SECRET WORD-KANGARO0", "eng") == "SECRET WORD-KANGAROO"
    assert _keep("b00k at 10:00, 1080p H2O A0", "eng") == "book at 10:00, 1080p H2O A0"


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def test_boxes_side_by_side_are_one_line_and_far_or_lower_boxes_are_not() -> None:
    boxes = [_box(200, 102, 300, 130), _box(40, 100, 180, 130), _box(310, 98, 380, 128),  # one row
             _box(560, 100, 620, 128),  # same row, far to the right: a logo, its own line
             _box(40, 200, 200, 230)]  # the next row
    texts = ["WORD", "SECRET", "PELICAN", "CNN", "below"]
    assert _lines(boxes, texts) == [CAPTION, "CNN", "below"]


def test_each_line_is_followed_on_its_own_across_samples() -> None:
    """A caption that stays up while a clock beside it ticks is one entry, not one per tick;
    a skipped near-duplicate frame (None) keeps the previous frame's lines."""
    sampler = _Sampler(IngestSettings())
    sampler.times = [0.0, 1.0, 2.0, 3.0, 4.0]
    sampler.texts = [("CAPTION", "10:01"), None, ("CAPTION", "10:03"), (), ("CAPTION",)]
    got = [(e.start, e.end, e.text) for e in sampler.entries(5.0)]
    assert sorted(got) == [(0.0, 2.0, "10:01"), (0.0, 3.0, "CAPTION"), (2.0, 3.0, "10:03"),
                           (4.0, 5.0, "CAPTION")]


def test_engine_is_a_setting_and_part_of_what_is_recorded() -> None:
    assert VideoIngestSpec().settings().ocr_engine == "rapidocr"
    assert VideoIngestSpec(ocr_engine="tesseract").settings().ocr_engine == "tesseract"
    with pytest.raises(ValueError, match="ocr_engine"):
        IngestSettings(ocr_engine="easyocr")  # type: ignore[arg-type]
    new, old = IngestSettings().describe(), IngestSettings(ocr_engine="tesseract").describe()
    assert str(new["ocr_version"]).startswith("rapidocr-onnxruntime 1.")
    models = new["ocr_models"]
    assert isinstance(models, dict)
    assert set(models) == {"ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx"}
    assert all(str(v).startswith("sha256:") for v in models.values())
    assert str(old["ocr_version"]).startswith("tesseract ")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=s=640x360:d=20:r=25", "-vf",
         f"drawtext=text='{CAPTION}':fontsize=44:fontcolor=white:box=1:boxcolor=black:"
         "enable='between(t,8,11)'", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         str(out)],
        check=True,
    )
    return out


@pytest.mark.slow
def test_caption_over_colour_bars_is_read_with_its_spaces_at_its_time(clip: Path, tmp_path: Path) -> None:
    got = ingest(clip, cache_dir=tmp_path)
    screen = [e for e in got.entries if e.source == "screen"]
    hits = [e for e in screen if e.text == CAPTION]
    assert hits, f"no line reads {CAPTION!r}:\n{got.timeline.text}"
    assert all(8.0 <= e.start <= 11.0 and e.end <= 12.0 for e in hits)
    assert f"] (screen) {CAPTION}" in got.timeline.text
    assert not [e for e in screen if "PELICAN" in e.text and not 8.0 <= e.start <= 11.0]
    s = got.stats
    assert s["frames_sampled"] == 20 and s["frames_ocr"] + s["frames_skipped"] == 20 and s["ocr_batches"] >= 1
    assert s["ocr_s"] > 0 and s["ocr_det_s"] > 0 and s["ocr_rec_s"] > 0
    report = ingest_report(got)
    assert "OCR rapidocr: rapidocr-onnxruntime" in report and "ch_PP-OCRv4_rec_infer.onnx sha256:" in report
    assert "skipped as near-duplicates" in report and "detect " in report
    # tesseract is still there, and its timeline is a different cache entry
    tess = ingest(clip, IngestSettings(ocr_engine="tesseract"), cache_dir=tmp_path)
    assert not tess.cache_hit and str(tess.settings["ocr_version"]).startswith("tesseract")
    again = ingest(clip, cache_dir=tmp_path)
    assert again.cache_hit and again.timeline.text == got.timeline.text


@pytest.mark.slow
def test_a_still_frame_is_read_once_and_skipped_after(tmp_path: Path) -> None:
    """A static slide: one OCR, every later sample a near-duplicate that keeps its text."""
    still = tmp_path / "slide.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0x224466:s=640x360:d=6:r=25", "-vf",
         "drawtext=text='Quarterly results':fontsize=40:fontcolor=white:x=60:y=150",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(still)],
        check=True,
    )
    got = ingest(still, IngestSettings(asr=False), cache_dir=tmp_path)
    assert got.stats["frames_ocr"] == 1 and got.stats["frames_skipped"] == 5
    [line] = [e for e in got.entries if e.source == "screen"]
    assert line.text == "Quarterly results" and line.start == 0.0 and line.end == pytest.approx(6.0, abs=0.1)


@pytest.mark.slow
def test_white_text_over_bright_texture_is_read_whole(tmp_path: Path) -> None:
    """Plain white captions over bright, busy content (ffmpeg's `life` cells in light greys),
    the style the benchmark's misses had: the frame alone (POSTPROCESS 1) read 82/96 words and
    3/12 captions exactly (the detector loses glyphs that barely differ from what is behind
    them); with the gamma view, 92/96 and 8/12."""
    import cv2

    text = "The secret word for the red door is chocolate"
    frames = []
    for seed in (1, 2, 3, 4):
        for size, y in ((22, 60), (24, 160), (26, 260)):
            out = tmp_path / f"life-{seed}-{size}.png"
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                 f"life=s=640x360:mold=10:r=25:ratio=0.5:seed={seed}:death_color=#909090:life_color=#D0D0D0",
                 "-vf", "drawtext=fontfile=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf:"
                 f"text='{text}':fontsize={size}:fontcolor=white:x=(w-text_w)/2:y={y}",
                 "-frames:v", "1", str(out)],
                check=True,
            )
            frames.append(cv2.imread(str(out)))
    want = text.lower().split()
    words = exact = 0
    for lines in scene_ocr_frames(frames):
        got = re.findall(r"[a-z]+", " ".join(lines).lower())
        words += sum(w in got for w in set(want))
        exact += " ".join(want) in " ".join(got)
    assert words >= 0.9 * len(frames) * len(set(want)) and exact >= 5, (words, exact)
