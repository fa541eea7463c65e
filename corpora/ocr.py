"""On-screen text with Debian's tesseract CLI: exact words, spaces kept, noise dropped.

The `ocr_engine = "tesseract"` option of video ingest. Tesseract is a page OCR: it reads slides
and clean frames, but text over colourful, moving content (captions, signs, burned-in subtitles)
it mostly misses, which is why scene-text OCR (corpora/scene_ocr.py) is the default.

Frames are OCR'd in batches through ONE tesseract process (a list file of images), which
amortises its ~0.3 s model load: starting tesseract per frame costs several times more than
recognising the frame. Natural images make tesseract "read" texture as text ("i ——— ae a", a
stray "7" before a caption); those words come with low confidence. Words below `min_conf` are
dropped, and a line is kept only if at least half its words survive and it still holds two
letters or digits: real on-screen text reads at 90+, texture at 0-60.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

Gray = NDArray[np.uint8]


class OcrError(RuntimeError):
    pass


def _tesseract() -> str:
    exe = shutil.which("tesseract")
    if exe is None:
        raise OcrError("tesseract is not installed (Debian: apt-get install tesseract-ocr)")
    return exe


def model_digest(path: Path) -> str:
    """A model file's short sha256, as recorded with timelines (another model reads other text)."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def tesseract_version() -> str:
    """`tesseract 5.3.0`: recorded with every timeline (a different OCR gives a different text)."""
    exe = _tesseract()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else "tesseract (unknown version)"


@functools.lru_cache(maxsize=4)
def tesseract_model(lang: str) -> dict[str, str]:
    """The traineddata file tesseract reads for `lang`, with its sha256 (recorded with timelines)."""
    exe = _tesseract()
    out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, check=False)
    m = re.search(r'languages in "([^"]+)"', out.stdout + out.stderr)
    path = Path(m.group(1)) / f"{lang}.traineddata" if m else None
    if path is None or not path.is_file():
        return {f"{lang}.traineddata": "not found"}
    return {path.name: model_digest(path)}


def write_pgm(path: Path, image: Gray) -> None:
    """A grayscale frame as binary PGM: no encoder needed, leptonica reads it directly."""
    h, w = image.shape
    with path.open("wb") as f:
        f.write(f"P5 {w} {h} 255\n".encode())
        f.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())


def parse_tsv(tsv: str, n_pages: int, min_conf: float) -> list[str]:
    """Per page (1-based page_num in the TSV), the kept lines joined by newlines."""
    words: dict[tuple[int, int, int, int], list[tuple[float, str]]] = defaultdict(list)
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        text = cols[11].strip()
        if not text:
            continue
        page, block, par, line_no = (int(c) for c in cols[1:5])
        words[(page, block, par, line_no)].append((float(cols[10]), text))
    pages: list[list[str]] = [[] for _ in range(n_pages)]
    for (page, *_), ws in sorted(words.items()):
        kept = [t for c, t in ws if c >= min_conf]
        joined = " ".join(kept)
        if 2 * len(kept) >= len(ws) and sum(ch.isalnum() for ch in joined) >= 2 and 1 <= page <= n_pages:
            pages[page - 1].append(joined)
    return ["\n".join(p) for p in pages]


def ocr_frames(
    frames: Sequence[Gray], *, lang: str = "eng", min_conf: float = 60.0, psm: int = 3
) -> list[str]:
    """The text of each frame (empty string when nothing legible), one tesseract process."""
    if not frames:
        return []
    exe = _tesseract()
    with tempfile.TemporaryDirectory(prefix="ragvslc-ocr-") as tmp:
        paths = []
        for i, frame in enumerate(frames):
            p = Path(tmp) / f"{i:05d}.pgm"
            write_pgm(p, frame)
            paths.append(str(p))
        listing = Path(tmp) / "frames.txt"
        listing.write_text("\n".join(paths) + "\n")
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # one core: the machine is shared
        proc = subprocess.run(
            [exe, str(listing), "stdout", "-l", lang, "--psm", str(psm), "tsv"],
            capture_output=True, text=True, env=env, check=False,
        )
    if proc.returncode != 0:
        raise OcrError(f"tesseract failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return parse_tsv(proc.stdout, len(frames), min_conf)
