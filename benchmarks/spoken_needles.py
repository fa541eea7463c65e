"""(h) Spoken-needle recall: unusual word pairs spoken into real background audio, found by ASR.

Each needle is a seeded pair of unusual words ("bramble kestrel") in a carrier sentence ("The
code name is bramble kestrel."), spoken by espeak-ng in one of several voices and speeds, and
mixed at a random time into a long stretch of real background audio: music (the Big Buck Bunny
and Chaplin soundtracks in <data>/video), babble (three overlapping streams of the LibriVox and
JFK recordings in <data>/speech) and fire/crackle noise (fire.mp4; cityCC0.mpg, the street clip,
has no audio track). The speech is scaled so that its RMS over the sentence is 20, 10 or 5 dB
above the background's RMS over the same samples. Every level reuses the same needles, voices,
times and background, so the levels differ only in loudness.

A needle is recalled when the transcript's words said within 2 s of the sentence hold the two
words in order (case, punctuation and hyphens aside). WER is the word edit distance between the
needle's two words and the closest run of 1-4 transcript words there, over 2. Timestamp error is
|when the transcript says the first needle word began - when it truly began| (word times; a
setting without word times can only say when its segment began). Compute is the seconds
`transcribe` takes per audio minute, every setting measured in the same run (ratios are against
the run's first setting; by default `tiny-b1-words`, the ingest default).

    .venv/bin/python -m benchmarks.spoken_needles [--quick] [--needles 100] [--levels 20,10,5]
    .venv/bin/python -m benchmarks.spoken_table RESULTS.json...   # the README's tables
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import re
import statistics
import subprocess
import tempfile
import time
import wave
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Row, load_avg, ratio_row, write_results
from corpora.asr import AsrSettings, transcribe
from corpora.books import data_dir

ROOT = Path(__file__).resolve().parent.parent
SR = 16000
FIRST = ("bramble", "cinnamon", "juniper", "velvet", "saffron", "tundra", "walnut", "indigo",
         "marble", "copper", "lantern", "thistle", "nutmeg", "quartz", "lavender", "gravel",
         "meadow", "harbor", "cobalt", "maple", "pepper", "orchid", "granite", "willow")
SECOND = ("kestrel", "zeppelin", "satellite", "glacier", "trombone", "canyon", "compass",
          "pelican", "volcano", "accordion", "meteor", "caravan", "lobster", "cathedral",
          "hamster", "windmill", "galaxy", "parrot", "tractor", "igloo", "banjo", "cactus",
          "dolphin", "pyramid")
CARRIER = "The code name is"
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en-029")
SPEEDS = (140, 175)
BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "music": ("video/big_buck_bunny_0_30.webm", "video/chaplin.mp4"),
    "babble": ("speech/jfk.flac", "speech/sense_and_sensibility_01_austen_64kb-0870.wav",
               "speech/sense_and_sensibility_01_austen_64kb-0880.wav",
               "speech/sense_and_sensibility_01_austen_64kb-0890.wav",
               "speech/sense_and_sensibility_01_austen_64kb-0920.wav",
               "speech/sense_and_sensibility_01_austen_64kb-0930.wav"),
    "noise": ("video/fire.mp4",),
}
PER_FILE = 5  # needles per audio file
SLOT_S = 12.0  # one needle per slot of the file, at a random time inside it
# name -> settings; the first setting of a run is the baseline its ratios are against.
# Every setting names its beam (the ingest default moved from 1 to 5 by these numbers);
# "default" is the ingest default before word times (kept to read old result files).
_PROMPT = "Code names are pairs of unusual words."
SETTINGS: dict[str, AsrSettings] = {
    "default": AsrSettings(beam_size=1, word_timestamps=False),
    "tiny-b1-words": AsrSettings(beam_size=1),
    "tiny-b5": AsrSettings(beam_size=5),
    "tiny-b5-vad35": AsrSettings(beam_size=5, vad_threshold=0.35),
    "tiny-b5-nofallback": AsrSettings(beam_size=5, temperature_fallback=False),
    "tiny-b5-prompt": AsrSettings(beam_size=5, initial_prompt=_PROMPT),
    "tiny-b1-novad": AsrSettings(beam_size=1, vad=False),
    "tiny-b1-nofallback": AsrSettings(beam_size=1, temperature_fallback=False),
    "tiny-b1-prompt": AsrSettings(beam_size=1, initial_prompt=_PROMPT),
    "tiny-b1-redecode": AsrSettings(beam_size=1, redecode_below=-0.5),
    "base-b1": AsrSettings(model="base", beam_size=1),
    "base-b5": AsrSettings(model="base", beam_size=5),
    "base-b5-novad": AsrSettings(model="base", beam_size=5, vad=False),
    "base-b5-vad35": AsrSettings(model="base", beam_size=5, vad_threshold=0.35),
    "base-b5-nofallback": AsrSettings(model="base", beam_size=5, temperature_fallback=False),
    "base-b5-prompt": AsrSettings(model="base", beam_size=5, initial_prompt=_PROMPT),
    "base-b5-redecode": AsrSettings(model="base", beam_size=5, redecode_below=-0.5),
}


@dataclass(frozen=True)
class Needle:
    first: str
    second: str
    voice: str
    speed: int
    background: str
    start_s: float = 0.0  # when the sentence starts in its file
    word_s: float = 0.0  # when the first needle word starts
    end_s: float = 0.0

    @property
    def phrase(self) -> str:
        return f"{self.first} {self.second}"


def _decode(path: Path) -> np.ndarray:
    """Any media file's sound as 16 kHz mono float32 (ffmpeg)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(SR),
                          "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32).copy()


@functools.lru_cache(maxsize=16)
def _source(path: Path) -> np.ndarray:
    """A background file decoded once per run (every audio file of its kind loops it)."""
    return _decode(path)


def _trim(x: np.ndarray) -> np.ndarray:
    """Without leading and trailing silence (below 2% of the peak)."""
    loud = np.flatnonzero(np.abs(x) > 0.02 * float(np.abs(x).max()))
    return x[loud[0]: loud[-1] + 1] if loud.size else x


def speak(text: str, voice: str, speed: int, work: Path) -> np.ndarray:
    out = work / f"say-{abs(hash((text, voice, speed)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True)
    return _trim(_decode(out))


def background(kind: str, root: Path, seconds: float, rng: random.Random) -> np.ndarray:
    """`seconds` of one kind of background: its files looped from a random offset; babble is
    three such streams of different speakers summed."""
    n = int(seconds * SR)
    srcs = [_source(root / f) for f in BACKGROUNDS[kind]]
    streams = 3 if kind == "babble" else 1
    out = np.zeros(n, dtype=np.float32)
    for _ in range(streams):
        order = rng.sample(srcs, len(srcs))
        loop = np.concatenate(order)
        start = rng.randrange(len(loop))
        reps = n // len(loop) + 2
        out += np.tile(loop, reps)[start: start + n]
    return out / (float(np.sqrt(np.mean(out ** 2))) + 1e-9) * 0.05


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-12


def plan(n: int, seed: int) -> list[Needle]:
    """n needles, each a distinct word pair; voices, speeds and backgrounds in turn."""
    rng = random.Random(seed)
    pairs = rng.sample([(a, b) for a in FIRST for b in SECOND], n)
    kinds = list(BACKGROUNDS)
    return [Needle(a, b, VOICES[i % len(VOICES)], SPEEDS[(i // len(VOICES)) % len(SPEEDS)],
                   kinds[(i // PER_FILE) % len(kinds)]) for i, (a, b) in enumerate(pairs)]


def render(needles: list[Needle], levels: tuple[float, ...], seed: int, work: Path,
           ) -> tuple[list[tuple[Path, float, list[Needle]]], float]:
    """The files (path, level, needles placed in it) and seconds of audio per level; a kept
    folder's files are reused when they were rendered from the same plan."""
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "manifest.json"
    key = {"needles": [asdict(n) for n in needles], "seed": seed}
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        kept = [(Path(p), float(lv), [Needle(**n) for n in ns]) for p, lv, ns in data["files"]]
        if data["key"] == key and {_level(x) for x in levels} <= {_level(lv) for _, lv, _ in kept}:
            return [f for f in kept if f[1] in levels and f[0].is_file()], data["s"]
    root = data_dir(None)
    rng = random.Random(seed + 1)
    files: list[tuple[Path, float, list[Needle]]] = []
    seconds = PER_FILE * SLOT_S
    for f in range(0, len(needles), PER_FILE):
        group = needles[f: f + PER_FILE]
        bg = background(group[0].background, root, seconds, rng)
        placed: list[tuple[Needle, np.ndarray]] = []
        for i, n in enumerate(group):
            speech = speak(f"{CARRIER} {n.phrase}.", n.voice, n.speed, work)
            prefix = len(speak(CARRIER, n.voice, n.speed, work)) / SR
            start = round(i * SLOT_S + rng.uniform(1.0, SLOT_S - 1.0 - len(speech) / SR), 2)
            # the carrier's own length is where the first needle word begins (espeak says the
            # carrier the same way alone and in the sentence, give or take the junction)
            placed.append((replace(n, start_s=start, word_s=round(start + prefix, 3),
                                   end_s=round(start + len(speech) / SR, 3)), speech))
        for level in levels:
            path = work / f"file{f // PER_FILE:03d}-{_level(level)}.wav"
            write_wav(path, mix_in(bg, [(n.start_s, speech) for n, speech in placed], level))
            files.append((path, level, [n for n, _ in placed]))
    rows = [[str(p), lv, [asdict(n) for n in ns]] for p, lv, ns in files]
    manifest.write_text(json.dumps({"key": key, "files": rows, "s": seconds}))
    return files, seconds


def mix_in(bg: np.ndarray, speech: list[tuple[float, np.ndarray]], level_db: float) -> np.ndarray:
    """The background with each (start s, speech) added so that the speech's RMS is `level_db`
    above the background's RMS over the same samples (inf: the speech alone, no background)."""
    mix = bg.copy() if np.isfinite(level_db) else np.zeros_like(bg)
    for start_s, x in speech:
        a = int(start_s * SR)
        gain = (_rms(bg[a: a + len(x)]) * 10 ** (level_db / 20) / _rms(x)
                if np.isfinite(level_db) else 0.3 / float(np.abs(x).max()))
        mix[a: a + len(x)] += gain * x[: len(mix) - a]
    return mix * min(1.0, 0.95 / float(np.abs(mix).max()))


def write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((x * 32767).astype(np.int16).tobytes())


def _level(db: float) -> str:
    return f"{db:g}dB" if np.isfinite(db) else "clean"


def _tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _edits(a: list[str], b: list[str]) -> int:
    # word-level Levenshtein on lists of at most a few words: no library needed for 4x2 cells
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def score(n: Needle, words: list[tuple[float, float, str]]) -> dict[str, Any]:
    """Recall, WER and timestamp error of one needle against (start, end, word) transcript words."""
    near = [(a, tok) for a, b, w in words if n.start_s - 2.0 <= b and a <= n.end_s + 2.0
            for tok in _tokens(w)]
    toks = [tok for _, tok in near]
    want = [n.first, n.second]
    hit = next((i for i in range(len(toks) - 1) if toks[i: i + 2] == want), None)
    wer = min([_edits(toks[i: i + k], want) for i in range(len(toks)) for k in range(1, 5)] or [2]) / 2
    return {"exact": hit is not None, "wer": wer,
            "ts_err": abs(near[hit][0] - n.word_s) if hit is not None else None,
            "heard": "" if hit is not None else " ".join(toks)}


def _words(segments: list[Any]) -> list[tuple[float, float, str]]:
    out: list[tuple[float, float, str]] = []
    for s in segments:
        if s.words:
            out += [(w.start, w.end, w.text) for w in s.words]
        else:  # no word times: every word spans its whole segment (all the timeline can say)
            out += [(s.start, s.end, w) for w in s.text.split()]
    return out


def bench_spoken(n_needles: int = 100, levels: tuple[float, ...] = (np.inf, 20.0, 10.0, 5.0),
                 settings: tuple[str, ...] = ("tiny-b1-words", "tiny-b5", "base-b5"), seed: int = 0,
                 threads: int = 1, keep: Path | None = None, files_per_level: int | None = None,
                 partial: Path | None = None) -> tuple[list[Row], dict[str, Any]]:
    """`files_per_level`: only the first so many files of each level (5 needles each, the
    backgrounds in turn): a cheaper look at a slow model over the same audio. Level by level,
    every setting in turn (so a stopped run still compares its settings on the levels it did);
    `partial` gets the numbers so far after each cell."""
    needles = plan(n_needles, seed)
    per: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    meta = {"levels": list(levels), "n_needles": n_needles, "files_per_level": files_per_level,
            "seed": seed, "threads": threads, "voices": list(VOICES), "speeds": list(SPEEDS),
            "backgrounds": BACKGROUNDS}
    with tempfile.TemporaryDirectory(prefix="ragvslc-bench-speech-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        files, file_s = render(needles, levels, seed, work)
        if files_per_level is not None:
            files = [f for lv in levels for f in [g for g in files if g[1] == lv][:files_per_level]]
        for name in settings:
            transcribe(files[0][0], settings=SETTINGS[name], threads=threads)  # loads the model: not timed
        for level in levels:
            for name in settings:
                key = f"{name}@{_level(level)}"
                per[key] = _cell(name, level, [f for f in files if f[1] == level], file_s, threads, records)
                print(f"  {key}: {json.dumps(per[key])}", flush=True)
                if partial is not None:
                    partial.write_text(json.dumps({"raw": {"settings": per, "needles": records, **meta}},
                                                  default=str))
    rows = []
    base = settings[0]
    for name in settings[1:]:
        for level in levels:
            new, old = per[f"{name}@{_level(level)}"], per[f"{base}@{_level(level)}"]
            rows.append(ratio_row("h", f"spoken needle recall, {name} @{_level(level)}",
                                  f"{base} {old['recall_exact']:.3f}", old["recall_exact"],
                                  new["recall_exact"], "recall", higher_is_better=True,
                                  goal_text=">= 0.95 at 10 dB" if level == 10 else ""))
            rows[-1].met = new["recall_exact"] >= 0.95 if level == 10 else None
            rows.append(ratio_row("h", f"ASR s per audio minute, {name} @{_level(level)}", base,
                                  old["asr_s_per_audio_min"], new["asr_s_per_audio_min"], "s/min",
                                  higher_is_better=False))
    return rows, {"settings": per, "needles": records, **meta}


def _cell(name: str, level: float, files: list[tuple[Path, float, list[Needle]]], file_s: float,
          threads: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One setting over one level's files: recall, WER, timestamp error, ASR seconds per minute."""
    s = SETTINGS[name]
    hits, wers, errs, asr_s = 0, [], [], 0.0
    by: dict[str, list[int]] = {}
    for path, _lv, placed in files:
        t0 = time.perf_counter()
        segs = transcribe(path, settings=s, threads=threads)
        asr_s += time.perf_counter() - t0
        words = _words(segs)
        for n in placed:
            r = score(n, words)
            hits += r["exact"]
            wers.append(r["wer"])
            if r["ts_err"] is not None:
                errs.append(r["ts_err"])
            for dim in ("voice", "speed", "background"):
                by.setdefault(f"{dim}={getattr(n, dim)}", []).append(int(r["exact"]))
            records.append({"setting": name, "level_db": level, **asdict(n), **r})
    total = len(wers)
    return {
        "setting": name, "level_db": level, "asr": s.describe(), "needles": total, "hits": hits,
        "recall_exact": round(hits / total, 3), "wer": round(statistics.mean(wers), 3),
        "ts_err_median_s": round(statistics.median(errs), 2) if errs else None,
        "ts_err_p90_s": round(float(np.percentile(errs, 90)), 2) if errs else None,
        "asr_s_per_audio_min": round(asr_s / (len(files) * file_s / 60), 1),
        "by": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by.items())},
        "load_avg_1m": load_avg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 needles at 10 dB, tiny-b1-words vs tiny-b5")
    ap.add_argument("--needles", type=int, default=30)
    ap.add_argument("--levels", default="inf,20,10,5",
                    help="speech-to-background dB (inf: the speech alone, the voices' own ceiling)")
    ap.add_argument("--settings", default="tiny-b1-words,tiny-b5,base-b5",
                    help=f"comma-separated, from {','.join(SETTINGS)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--files", type=int, help="only the first N files (5 needles each) per level")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep the rendered audio here (reused by the next run)")
    ap.add_argument("--render-only", action="store_true", help="with --keep: render the audio, no ASR")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "spoken_needles.json")
    args = ap.parse_args(argv)
    names = tuple(args.settings.split(","))
    unknown = [s for s in names if s not in SETTINGS]
    if unknown or args.needles < 1 or args.needles > len(FIRST) * len(SECOND):
        ap.error(f"unknown settings {unknown}" if unknown else "--needles must be in 1..576")
    levels = tuple(float(x) for x in args.levels.split(","))
    kw: dict[str, Any] = {"n_needles": args.needles, "levels": levels,
                          "settings": names, "seed": args.seed, "threads": args.threads, "keep": args.keep,
                          "files_per_level": args.files}
    if args.quick:
        kw |= {"n_needles": 10, "levels": (10.0,), "settings": ("tiny-b1-words", "tiny-b5")}
    if args.render_only and args.keep:
        files, _ = render(plan(kw["n_needles"], args.seed), kw["levels"], args.seed, args.keep)
        print(f"rendered {len(files)} files into {args.keep}")
        return 0
    t0 = time.perf_counter()
    partial = args.out.with_name(args.out.stem + ".partial.json")
    rows, raw = bench_spoken(**kw, partial=partial)
    write_results(args.out, rows, raw, t0)
    partial.unlink(missing_ok=True)
    for k, v in raw["settings"].items():
        print(f"  {k}: recall {v['recall_exact']}, wer {v['wer']}, ts err {v['ts_err_median_s']} s, "
              f"{v['asr_s_per_audio_min']} s/min; {v['by']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
