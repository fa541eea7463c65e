"""(g) On-screen needle recall: scene-text OCR (rapidocr) vs tesseract on real-looking frames.

Needles are drawn with ffmpeg drawtext over moving, colourful content: the real clips in
<data>/video (looped, scaled to 640x360) and lavfi test patterns (testsrc, testsrc2, smptebars),
in several fonts, sizes (20-44 px), positions (bottom centre, the top-left corner drawtext uses
by default, centre, top right), styles (on a black box, white with a black outline, plain white)
and durations (1, 2, 3 s, and one frame that lands on a sampling instant: a needle only a single
sampled frame sees). Each video is ingested like any other (`corpora.video.ingest`, no ASR, a
fresh cache) per OCR engine and sampling rate.

A needle is recalled when a `(screen)` line of the timeline that overlaps its time holds its
exact words (case and punctuation aside, spaces kept); `letters` also counts lines that hold
its letters with the spaces wrong, `word` lines that hold the secret word. OCR seconds per
video minute is the engine's own time (`ocr_s`) over the video's length, measured in the same
run for both engines (ratio = tesseract / rapidocr seconds).

    .venv/bin/python -m benchmarks.video_ocr [--quick] [--fps 1,2]
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Row, load_avg, ratio_row, write_results
from corpora.books import data_dir
from corpora.video import IngestSettings, ingest
from corpora.video_needle import CLIPS, KEYS, WORDS

ROOT = Path(__file__).resolve().parent.parent

FONTS = {
    "dejavu-sans-bold": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "dejavu-serif": "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "liberation-sans": "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "dejavu-mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
}
POSITIONS = {
    "bottom": "x=(w-text_w)/2:y=h-text_h-30",
    "top-left": "x=0:y=0",
    "centre": "x=(w-text_w)/2:y=(h-text_h)/2",
    "top-right": "x=w-text_w-16:y=16",
}
STYLES = {
    "box": ":fontcolor=white:box=1:boxcolor=black@0.85:boxborderw=8",
    "outline": ":fontcolor=white:borderw=2:bordercolor=black",
    "plain": ":fontcolor=white",
}
PATTERNS = ("testsrc", "testsrc2", "smptebars")
SIZES = (20, 28, 44)
DURATIONS: tuple[float | str, ...] = (1.0, 2.0, 3.0, "frame")
SLOT_S = 6.0  # one needle per slot, so needles never overlap
PLAN = 2  # version of plan(): names the kept videos


@dataclass(frozen=True)
class Needle:
    text: str
    word: str
    start: float
    end: float
    font: str
    size: int
    position: str
    style: str
    duration: str


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _text(rng: random.Random, size: int) -> tuple[str, str]:
    """A needle that fits a 640 px frame at this size: the corpus sentence, or a short caption."""
    key, word = rng.choice(KEYS), rng.choice(WORDS)
    if size <= 20:
        return f"The secret word for {key} is {word}.", word
    if size <= 28:
        return rng.choice([f"Secret word: {word}", f"{key} is {word}".upper()]), word
    return f"SECRET WORD {word.upper()}", word


def _fitting(text: str, font: str, size: int) -> int:
    """The largest size up to `size` at which the text fits the frame with a margin (a caption
    that runs off the frame's edge cannot be read whole by any OCR)."""
    from PIL import ImageFont

    while size > 12 and ImageFont.truetype(FONTS[font], size).getlength(text) > 640 - 2 * 24:
        size -= 2
    return size


def plan(n_slots: int, rng: random.Random) -> list[Needle]:
    """One needle per slot, every font/size/position/style/duration combination drawn in turn."""
    out = []
    for i in range(n_slots):
        size = SIZES[i % len(SIZES)]  # 3 sizes x 4 durations: every pair within 12 slots
        dur = DURATIONS[i % len(DURATIONS)]
        text, word = _text(rng, size)
        font = rng.choice(list(FONTS))
        size = _fitting(text, font, size)
        slot = 1.0 + i * SLOT_S
        if dur == "frame":  # exactly the 25 fps frame at an integer second: one sample at 1 or 2 fps
            start, end = round(slot) + 1.0, round(slot) + 1.0 + 0.02
        else:
            start = round(slot + rng.uniform(0.0, 1.5), 2)
            end = start + float(dur)
        out.append(Needle(text, word, start, end, font, size,
                          rng.choice(list(POSITIONS)), rng.choice(list(STYLES)),
                          dur if isinstance(dur, str) else f"{dur:g}s"))
    return out


def render(out: Path, background: str, seconds: float, needles: list[Needle], work: Path) -> None:
    """The background looped to `seconds` at 640x360, 25 fps, with every needle drawn on it."""
    if background in PATTERNS:
        inputs = ["-f", "lavfi", "-i", f"{background}=s=640x360:r=25:d={seconds}"]
        chain = "[0:v]format=yuv420p"
    else:
        inputs = ["-stream_loop", "-1", "-i", str(data_dir(None) / "video" / background)]
        chain = ("[0:v]scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:(oh-ih)/2,"
                 "setsar=1,fps=25,format=yuv420p")
    for i, n in enumerate(needles):
        textfile = work / f"needle-{i}.txt"
        textfile.write_text(n.text)
        window = (f"between(t,{n.start - 0.001:.3f},{n.end - 0.001:.3f})" if n.duration == "frame"
                  else f"between(t,{n.start:.3f},{n.end:.3f})")
        chain += (f",drawtext=fontfile={FONTS[n.font]}:textfile={textfile}:fontsize={n.size}"
                  f"{STYLES[n.style]}:{POSITIONS[n.position]}:enable='{window}'")
    script = work / "graph.txt"
    script.write_text(chain + "[v]")
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex_script", str(script),
                    "-map", "[v]", "-t", f"{seconds}", "-an", "-c:v", "libx264", "-preset", "ultrafast",
                    "-crf", "20", str(out)], check=True)


def recalled(needle: Needle, lines: list[tuple[float, float, str]]) -> dict[str, Any]:
    seen = [t for s, e, t in lines if s <= needle.end + 0.5 and needle.start - 0.5 <= e]
    near = [_norm(t) for t in seen]
    want = _norm(needle.text)
    hit = any(f" {want} " in f" {t} " for t in near)
    return {
        "exact": hit,
        "letters": any(want.replace(" ", "") in t.replace(" ", "") for t in near),
        "word": any(f" {needle.word} " in f" {t} " for t in near),
        "seen": [] if hit else seen[:6],  # what the timeline said instead, for the misses
    }


def bench_video_ocr(
    backgrounds: tuple[str, ...] = (*CLIPS, *PATTERNS), slots: int = 12, fps: tuple[float, ...] = (1.0, 2.0),
    engines: tuple[str, ...] = ("rapidocr", "tesseract"), seed: int = 0, keep: Path | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """`keep`: a folder for the videos and timelines, reused by the next run (default: a
    temporary one, so OCR time is always measured)."""
    rng = random.Random(seed)
    seconds = 1.0 + slots * SLOT_S + 1.0
    per: dict[str, dict[str, Any]] = {}
    needles_all: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ragvslc-bench-ocr-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        videos = []
        for bg in backgrounds:
            needles = plan(slots, rng)
            video = work / f"{Path(bg).stem}-{PLAN}-{seed}-{slots}.mp4"
            if not video.is_file():
                render(video, bg, seconds, needles, work)
            videos.append((bg, video, needles))
        for f in fps:
            for engine in engines:
                key = f"{engine}@{f:g}fps"
                hits: dict[str, int] = {"exact": 0, "letters": 0, "word": 0}
                ocr_s = video_s = 0.0
                frames = 0.0
                t0 = time.perf_counter()
                for bg, video, needles in videos:
                    settings = IngestSettings(fps=f, ocr_engine=engine, asr=False)  # type: ignore[arg-type]
                    got = ingest(video, settings, cache_dir=work / f"cache-{key}")
                    ocr_s += got.stats["ocr_s"]
                    video_s += got.duration_s
                    frames += got.stats["frames_ocr"]
                    lines = [(e.start, e.end, e.text) for e in got.entries if e.source == "screen"]
                    for n in needles:
                        r = recalled(n, lines)
                        for k in hits:
                            hits[k] += bool(r[k])
                        needles_all.append({"engine": key, "background": bg, **asdict(n), **r})
                total = sum(len(n) for _, _, n in videos)
                per[key] = {
                    "needles": total, **{f"recall_{k}": round(v / total, 3) for k, v in hits.items()},
                    "ocr_s": round(ocr_s, 1), "ocr_s_per_video_min": round(ocr_s / (video_s / 60), 1),
                    "frames_ocr": frames, "wall_s": round(time.perf_counter() - t0, 1),
                    "load_avg_1m": load_avg(),
                }
                print(f"  {key}: {per[key]}", flush=True)
    rows = []
    for f in fps:
        new, old = per.get(f"rapidocr@{f:g}fps"), per.get(f"tesseract@{f:g}fps")
        if new is None or old is None:
            continue
        rows.append(ratio_row(
            "g", f"needle recall, rapidocr @{f:g} fps", f"tesseract {old['recall_exact']:.3f}",
            old["recall_exact"], new["recall_exact"], "recall", higher_is_better=True,
            goal_text=">= 0.95 recall", details={"rapidocr": new, "tesseract": old},
        ))
        rows[-1].met = new["recall_exact"] >= 0.95
        rows.append(ratio_row(
            "g", f"OCR s per video minute, rapidocr @{f:g} fps", "tesseract", old["ocr_s_per_video_min"],
            new["ocr_s_per_video_min"], "s/min", higher_is_better=False,
        ))
    by_kind: dict[str, list[int]] = {}  # exact hits per engine and needle property
    for rec in needles_all:
        for dim in ("duration", "style", "position", "size", "font"):
            by_kind.setdefault(f"{rec['engine']} {dim}={rec[dim]}", []).append(int(rec["exact"]))
    breakdown = {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by_kind.items())}
    return rows, {"engines": per, "breakdown": breakdown, "needles": needles_all,
                  "backgrounds": list(backgrounds), "slots": slots, "video_s": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 backgrounds, 4 needles each")
    ap.add_argument("--fps", default="1,2", help="sampling rates (1 is the ingest default)")
    ap.add_argument("--engines", default="rapidocr,tesseract")
    ap.add_argument("--keep", type=Path, help="keep videos and timelines here (reused next run)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "video_ocr.json")
    args = ap.parse_args(argv)
    kw: dict[str, Any] = {"fps": tuple(float(x) for x in args.fps.split(",")),
                          "engines": tuple(args.engines.split(",")), "keep": args.keep}
    if args.quick:
        kw |= {"backgrounds": ("chaplin.mp4", "bikes.mp4", "testsrc"), "slots": 4}
    t0 = time.perf_counter()
    rows, raw = bench_video_ocr(**kw)
    write_results(args.out, rows, raw, t0)
    for k, v in raw["breakdown"].items():
        print(f"  {k}: {v}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
