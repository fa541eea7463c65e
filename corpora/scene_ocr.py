"""Scene-text OCR of video frames: PP-OCRv4 text detection + recognition (rapidocr-onnxruntime).

Why not tesseract: it is a page OCR. On colour bars, film or a caption band over a busy frame
it finds nothing or fragments (issue #19: `ET WO` for a legible `SECRET WORD PELICAN`). PP-OCR's
detector finds text boxes on any background and its recogniser reads each box; the ONNX models
ship inside the rapidocr-onnxruntime wheel (offline) and run on onnxruntime's CPU build.

Spaces: the recogniser (a Chinese + English model) often glues English words together
(`SECRETWORDPELICAN`). Boxes on one line are joined with a space, and inside a box the glued
runs are split where two signals agree: the recogniser's character positions (its CTC columns)
leave more room between two characters than their glyphs need (expected distance between two
character centres = the mean of their advance widths in DejaVu Sans, scaled by the box's median
ratio of measured to expected, so it does not depend on the text's size), and the split is a
likely one under wordninja's English word frequencies. No library does this for rapidocr: its
`return_word_box` groups characters on a fixed column gap, which splits every letter of large
text and none of small text, and wordninja alone splits `lighthouse` as readily as `secretword`.

Batching: detection runs per frame (one image per ONNX call); the crops of a whole batch of
frames go through the recogniser together, in width-sorted batches of `rec_batch_num`.
Detection sees the frame at its own size up to `det_side` pixels on its longer side (the
library's default instead upscales a 640x360 frame to 1308x736: 10x slower here, and no better).

White text without a box or outline over bright content (sky, a lit wall, white stripes) is
where the detector loses words: its text map fades where the glyphs barely differ from what is
behind them, so a caption comes back as `The secret word` or `cret word volcano`. On those
frames, lower detector thresholds (0.2 for pixels, 0.3 for boxes), the slow box score or a
larger unclip ratio (2.0) bring none of it back; a second view of the frame does: the same
frame through a steep gamma (`BRIGHT_GAMMA`), which keeps pure white white and pushes merely
bright content down towards grey, so white glyphs stand out again. The detector runs on both
views and its two text maps are joined (pixel-wise max) before the boxes are drawn, so a
caption half found in each view is one box. Each box is recognised in both views and the more
confident reading is kept (the gamma view misreads dark text on mid-grey, the plain view white
on bright). Both models run twice: 1.9x the OCR time of the frame alone (84 vs 44 ms a frame,
the benchmark's 740 frames at 1 fps in one run, interleaved).
"""

from __future__ import annotations

import functools
import importlib.metadata
import itertools
import math
import re
import statistics
import string
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from compare.core.extras import missing_extra_message, needs_extra
from corpora.ocr import OcrError, model_digest

Image = NDArray[np.uint8]  # BGR (h, w, 3) or gray (h, w)
THREADS = 1  # one core per ONNX session: the machine is shared with a CPU vLLM
# DejaVu Sans advance widths (1/100 em) of '!'..'~'; characters outside get AVG_WIDTH.
_ADVANCE = dict(zip(
    "".join(chr(c) for c in range(33, 127)),
    (40, 46, 84, 64, 95, 78, 27, 39, 39, 50, 84, 32, 36, 32, 34, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 34,
     34, 84, 84, 84, 53, 100, 68, 69, 70, 77, 63, 58, 77, 75, 29, 29, 66, 56, 86, 75, 79, 60, 79, 69, 63, 61,
     73, 68, 99, 69, 61, 69, 39, 34, 39, 84, 50, 50, 61, 63, 55, 63, 62, 35, 63, 63, 28, 28, 58, 28, 97, 63,
     61, 63, 63, 41, 52, 39, 63, 59, 82, 59, 59, 52, 64, 34, 64, 84),
    strict=True,
))
POSTPROCESS = 2  # version of the views, line and space rules below: recorded, so part of cache keys
# (1: the frame alone; 2: + the gamma view, a lone letter costs more, 0 read as O inside words).
SPACE_WIDTH = 32
AVG_WIDTH = 60
# Where the recogniser dropped spaces, a run of characters is split by `segment`: word costs plus
# GAP_WEIGHT x (gap evidence - SPACE_SHARE) per cut. Measured on 75 lines drawn in 5 fonts at
# 16-40 px over testsrc: 69/75 read word for word (69/75 letter for letter; the other 6 are
# misread letters), against 40/75 with the recogniser's own spaces and 56/75 with gaps alone.
SPACE_SHARE = 0.45
GAP_WEIGHT = 12.0  # cost per space of gap evidence, against word costs of 2.5 ("the") to 14 (rare)
NUMBER_COST = 6.0  # a run of digits is one token ("2024", not "20 24")
UNKNOWN_COST = 4.0  # + 2 per character: a word the model does not know (a name, a misread)
SINGLE_LETTER_COST = 12.0  # a letter alone, other than `a` and `I`: as costly as a rare word
MAX_WORD = 24
PAD = 16
# 255 stays 255, 230 -> 169, 200 -> 96, 128 -> 16: white glyphs over bright content stand apart.
# 120-needle benchmark, 1 fps: exact recall 0.90 (frame alone), 0.94 (+ this view), 0.958 (+ POSTPROCESS 2).
BRIGHT_GAMMA = 4.0
_PUNCT = string.punctuation


def _package_dir() -> Path:
    with needs_extra("video", "scene-text OCR", OcrError):
        import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent


@functools.lru_cache(maxsize=1)
def rapidocr_description() -> dict[str, object]:
    """Engine, versions and the model files (with their sha256): recorded with every timeline."""
    try:
        version = importlib.metadata.version("rapidocr-onnxruntime")
    except importlib.metadata.PackageNotFoundError as exc:
        raise OcrError(missing_extra_message("video", "scene-text OCR", "rapidocr_onnxruntime")) from exc
    models = {}
    for path in sorted((_package_dir() / "models").glob("*.onnx")):
        if "_cls_" in path.name:
            continue  # the angle classifier is not used (video text is upright)
        models[path.name] = model_digest(path)
    return {
        "engine": f"rapidocr-onnxruntime {version} (onnxruntime {importlib.metadata.version('onnxruntime')}, "
                  f"ragvslc lines+spaces {POSTPROCESS})",
        "models": models,
    }


@functools.lru_cache(maxsize=2)
def _engine(det_side: int) -> Any:
    with needs_extra("video", "scene-text OCR", OcrError):
        from rapidocr_onnxruntime import RapidOCR
    return RapidOCR(
        det_limit_type="max", det_limit_side_len=det_side, det_intra_op_num_threads=THREADS,
        rec_intra_op_num_threads=THREADS, cls_intra_op_num_threads=THREADS,
        det_inter_op_num_threads=1, rec_inter_op_num_threads=1, cls_inter_op_num_threads=1,
    )


def _width(ch: str) -> int:
    return _ADVANCE.get(ch, AVG_WIDTH)


def gap_evidence(chars: Sequence[str], cols: Sequence[int]) -> list[float]:
    """Per gap between characters j and j+1: the room beyond what the two glyphs need, in spaces
    (about 1 at a word gap, about 0 inside a word; CTC columns make it +-0.6 noisy)."""
    pairs = [
        (cols[j + 1] - cols[j]) / ((_width(chars[j]) + _width(chars[j + 1])) / 2)
        for j in range(len(chars) - 1) if chars[j] != " " and chars[j + 1] != " "
    ]
    if len(pairs) < 3:
        return [0.0] * max(len(chars) - 1, 0)
    scale = statistics.median(pairs)  # columns per 1/100 em
    return [
        (cols[j + 1] - cols[j] - scale * (_width(chars[j]) + _width(chars[j + 1])) / 2)
        / (scale * SPACE_WIDTH)
        for j in range(len(chars) - 1)
    ]


def _word_cost(token: str) -> float:
    """-log P(token) under wordninja's Zipf model of English Wikipedia unigrams."""
    costs = _wordcosts()
    low = token.lower()
    if len(low) == 1 and low.isalpha() and low not in "ai":
        # wordninja's unigrams count the `s` of `it's` and the `t` of `don't` as words; on
        # screen a lone letter is rare (`Plan B`), and a glued word cut into one is common
        return SINGLE_LETTER_COST
    if low in costs:
        return costs[low]
    if low.isdigit():
        return NUMBER_COST
    core = low.strip(_PUNCT)
    if core and core != low and (core in costs or core.isdigit()):
        return costs.get(core, NUMBER_COST) + len(low) - len(core)
    return UNKNOWN_COST + 2.0 * len(token)


@functools.lru_cache(maxsize=1)
def _wordcosts() -> dict[str, float]:
    with needs_extra("video", "scene-text OCR", OcrError):
        import wordninja

    return wordninja.DEFAULT_LANGUAGE_MODEL._wordcost  # type: ignore[no-any-return]


def segment(run: str, evidence: Sequence[float]) -> str:
    """A glued run of characters split into words: the cheapest split under word frequencies
    (wordninja's model) plus what the gaps say (`GAP_WEIGHT` per space of evidence for or against
    a cut). Neither alone is enough: the gaps are coarse (1 CTC column is a third of a space) and
    word frequencies split `lighthouse` as happily as `secretword`; together they agree."""
    n = len(run)
    if n < 2:
        return run
    best = [0.0] + [math.inf] * n
    back = [0] * (n + 1)
    for i in range(1, n + 1):
        for k in range(1, min(i, MAX_WORD) + 1):
            start = i - k
            cut = GAP_WEIGHT * (SPACE_SHARE - evidence[start - 1]) if start > 0 else 0.0
            c = best[start] + cut + _word_cost(run[start:i])
            if c < best[i]:
                best[i], back[i] = c, start
    words: list[str] = []
    i = n
    while i > 0:
        words.append(run[back[i]:i])
        i = back[i]
    return " ".join(reversed(words))


def spaced(chars: Sequence[str], cols: Sequence[int]) -> str:
    """The recognised characters with the spaces the recogniser dropped put back."""
    evidence = gap_evidence(chars, cols)
    out: list[str] = []
    run_ev: list[float]
    run, run_ev = "", []  # the current glued run and the gap evidence inside it
    for j, ch in enumerate(chars):
        if ch == " ":
            out.append(segment(run, run_ev))
            run, run_ev = "", []
            continue
        if run:
            run_ev.append(evidence[j - 1])
        run += ch
    out.append(segment(run, run_ev))
    return " ".join(w for w in out if w)


def _is_cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\ufaff"


def _lines(boxes: Sequence[NDArray[np.float32]], texts: Sequence[str]) -> list[str]:
    """Boxes on one row (overlapping in height by half the smaller one) and close enough side by
    side (a gap under 1.5 line heights) as one line each, rows top to bottom."""
    items = [(float(b[:, 1].min()), float(b[:, 1].max()), float(b[:, 0].min()), float(b[:, 0].max()), t)
             for b, t in zip(boxes, texts, strict=True)]
    rows: list[list[tuple[float, float, float, float, str]]] = []
    for it in sorted(items, key=lambda i: (i[0] + i[1]) / 2):
        for row in rows:
            top, bottom = min(r[0] for r in row), max(r[1] for r in row)
            if min(bottom, it[1]) - max(top, it[0]) >= 0.5 * min(bottom - top, it[1] - it[0]):
                row.append(it)
                break
        else:
            rows.append([it])
    out = []
    for row in rows:
        row.sort(key=lambda r: r[2])
        words = [row[0][4]]
        for prev, it in itertools.pairwise(row):
            if it[2] - prev[3] < 1.5 * min(it[1] - it[0], prev[1] - prev[0]):
                words.append(it[4])
            else:
                out.append(" ".join(words))
                words = [it[4]]
        out.append(" ".join(words))
    return out


def _o_for_zero(text: str) -> str:
    """`KANGARO0` -> `KANGAROO`: the recogniser confuses O and 0 (one glyph in many fonts); a 0
    in a run of letters with no other digit (`1080p`, `H2O` stay) is an O, in the run's case."""

    def fix(m: re.Match[str]) -> str:
        run = m.group()
        letters = run.replace("0", "")
        if not letters.isalpha() or len(letters) < 2:
            return run
        return run.replace("0", "o" if letters.islower() else "O")

    return re.sub(r"[A-Za-z0-9]*0[A-Za-z0-9]*", fix, text)


def _keep(text: str, lang: str) -> str:
    """A box's text without other scripts' look-alikes (stripes read as CJK by the ch+en model)."""
    if lang == "eng":
        text = "".join(ch for ch in text if not _is_cjk(ch))
        text = _o_for_zero(text)
    return " ".join(text.split())


@functools.lru_cache(maxsize=1)
def _bright_lut() -> Image:
    return np.round(255.0 * (np.arange(256) / 255.0) ** BRIGHT_GAMMA).astype(np.uint8)


def _detect(eng: Any, img: Image, bright: Image) -> NDArray[np.float32]:
    """Text boxes from the detector's text maps of both views, joined before boxes are drawn
    (rapidocr's own `text_det`, with the max of two maps in place of one)."""
    det = eng.text_det
    prepare = det.get_preprocess(max(img.shape[:2]))
    text_map = np.maximum(det.infer(prepare(img))[0], det.infer(prepare(bright))[0])
    boxes, _ = det.postprocess_op(text_map, img.shape[:2])
    if len(boxes) == 0:
        return np.zeros((0, 4, 2), dtype=np.float32)
    return np.asarray(det.filter_tag_det_res(boxes, img.shape[:2]), dtype=np.float32).reshape(-1, 4, 2)


def scene_ocr_frames(
    frames: Sequence[Image],
    *,
    min_score: float = 0.6,
    det_side: int = 960,
    lang: str = "eng",
    timings: MutableMapping[str, float] | None = None,
) -> list[list[str]]:
    """The text lines of each frame, top to bottom (an empty list when nothing legible).

    A box is kept when the recogniser's mean character confidence is at least `min_score`; a
    line needs two letters or digits (a lone glyph on a busy frame is noise, as with tesseract).
    """
    if not frames:
        return []
    with needs_extra("video", "scene-text OCR", OcrError):
        import cv2

    eng = _engine(det_side)
    lut = _bright_lut()
    t0 = time.perf_counter()
    crops: list[Image] = []
    bright_crops: list[Image] = []
    owners: list[tuple[int, NDArray[np.float32]]] = []
    for i, frame in enumerate(frames):
        rgb = np.repeat(frame[:, :, None], 3, axis=2) if frame.ndim == 2 else frame
        # text touching the frame's edge (drawtext's default x=0:y=0) is misread unless it has
        # room around it. On 19 frames with a needle in the top-left corner, read whole: 7 as
        # they are, 18 with a 16 px black border, 13 with the edge repeated, 17 with 32 px black.
        img = np.asarray(cv2.copyMakeBorder(np.ascontiguousarray(rgb), PAD, PAD, PAD, PAD,
                                            cv2.BORDER_CONSTANT, value=(0, 0, 0)), dtype=np.uint8)
        bright = np.asarray(cv2.LUT(img, lut), dtype=np.uint8)
        boxes = _detect(eng, img, bright)
        if len(boxes) == 0:
            continue
        boxes = eng.sorted_boxes(boxes)
        crops += eng.get_crop_img_list(img, boxes)
        bright_crops += eng.get_crop_img_list(bright, boxes)
        owners += [(i, np.asarray(b, dtype=np.float32)) for b in boxes]
    t1 = time.perf_counter()
    both, _ = eng.text_rec(crops + bright_crops, True) if crops else ([], 0.0)
    recognised = [a if float(a[1]) >= float(b[1]) else b for a, b in zip(both[:len(crops)], both[len(crops):],
                                                                          strict=True)]
    t2 = time.perf_counter()
    if timings is not None:
        timings["ocr_det_s"] = timings.get("ocr_det_s", 0.0) + t1 - t0
        timings["ocr_rec_s"] = timings.get("ocr_rec_s", 0.0) + t2 - t1
        timings["ocr_boxes"] = timings.get("ocr_boxes", 0.0) + len(crops)
    per_frame: list[tuple[list[NDArray[np.float32]], list[str]]] = [([], []) for _ in frames]
    for (i, box), (text, score, info) in zip(owners, recognised, strict=True):
        if not text or float(score) < min_score:
            continue
        chars = [c for word in info[1] for c in word]
        cols = [c for word in info[2] for c in word]
        kept = _keep(spaced(chars, cols) if len(chars) == len(cols) else text, lang)
        if kept:
            per_frame[i][0].append(box)
            per_frame[i][1].append(kept)
    return [[ln for ln in _lines(bs, ts) if sum(ch.isalnum() for ch in ln) >= 2] for bs, ts in per_frame]
