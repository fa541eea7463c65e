"""The spoken-needle benchmark's tables in markdown (README and docs/guide.md), from its result files.

Several result files may be joined (a slow model measured in a run of its own) only when they
measured the same needles: same seed, same number of needles, same files per level. Every cell
says its n, and the seconds of ASR per audio minute come with the load average of the run that
measured them (the machine is shared: compare seconds within one file, not across files).

    .venv/bin/python -m benchmarks.spoken_table benchmarks/results/spoken_needles_*.json [--long]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from benchmarks.spoken_needles import PER_FILE, SETTINGS, VOICES

LEVELS = ("clean", "20dB", "10dB", "5dB")


def label(name: str) -> str:
    """A setting as a reader says it ("base, beam 5, no fallback"), from its AsrSettings."""
    s = SETTINGS[name]
    out = f"{s.model}, {'greedy' if s.beam_size == 1 else f'beam {s.beam_size}'}"
    out += "" if s.word_timestamps else ", no word times"
    out += "" if s.vad else ", no VAD"
    out += "" if s.vad_threshold == 0.5 else f", VAD {s.vad_threshold:g}"
    out += "" if s.temperature_fallback else ", no fallback"
    out += ", prompt" if s.initial_prompt else ""
    out += f", 2nd decode < {s.redecode_below:g}" if s.redecode_below is not None else ""
    return out


def load(paths: list[Path]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Cells by "setting@level" from every file (a later file's cell replaces an earlier one;
    each keeps its per-needle hits). Files must come from the same plan (seed, needles); a file
    that measured more of the plan's files than another is cut to the needles all of them
    measured, its cells recounted from its per-needle records (its seconds stay its own)."""
    raws = [(path, json.loads(path.read_text())["raw"]) for path in paths]
    plans = {(raw.get("seed"), raw.get("n_needles")) for _, raw in raws}
    if len(plans) > 1:
        raise ValueError(f"the files come from different plans (seed, needles): {sorted(plans, key=str)}")
    [(seed, n_needles)] = plans
    widths = [raw.get("files_per_level") or n_needles for _, raw in raws]
    files = min(widths)
    cells: dict[str, dict[str, Any]] = {}
    for path, raw in raws:
        for key, cell in raw["settings"].items():
            recs = [r for r in raw["needles"] if r["setting"] == cell["setting"]
                    and r["level_db"] == cell["level_db"]]
            cells[key] = {**cell, "file": path.name}
            if (raw.get("files_per_level") or n_needles) > files:
                cells[key] = _recount(cells[key], recs[: files * PER_FILE])
            cells[key]["said"] = {(r["first"], r["second"]): bool(r["exact"])
                                  for r in recs[: files * PER_FILE]}
    return cells, {"seed": seed, "n_needles": n_needles, "files_per_level": files}


def _recount(cell: dict[str, Any], recs: list[dict[str, Any]]) -> dict[str, Any]:
    """A cell's numbers over fewer needles (the first files of its level, in plan order)."""
    errs = sorted(r["ts_err"] for r in recs if r["ts_err"] is not None)
    by: dict[str, list[int]] = {}
    for r in recs:
        for dim in ("voice", "speed", "background"):
            by.setdefault(f"{dim}={r[dim]}", []).append(int(r["exact"]))
    hits = sum(int(r["exact"]) for r in recs)
    return {**cell, "needles": len(recs), "hits": hits, "recall_exact": round(hits / len(recs), 3),
            "wer": round(statistics.mean(r["wer"] for r in recs), 3),
            "ts_err_median_s": round(statistics.median(errs), 2) if errs else None,
            "ts_err_p90_s": round(float(np.percentile(errs, 90)), 2) if errs else None,
            "by": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by.items())},
            "file": f"{cell['file']} (first {len(recs)} of {cell['needles']} needles; s/min over all)"}


def _hits(cell: dict[str, Any]) -> int:
    return int(cell.get("hits", round(cell["recall_exact"] * cell["needles"])))


def _level(cell: dict[str, Any]) -> str:
    db = float(cell["level_db"])
    return "clean" if math.isinf(db) else f"{db:g}dB"


def tables(cells: dict[str, dict[str, Any]], *, long: bool = False, ref: str = "tiny-b1-words") -> str:
    """Rows in SETTINGS order; `ref` (the ingest default) is the one the paired counts are against."""
    have = {c["setting"] for c in cells.values()}
    names = sorted(have, key=lambda n: (n != ref, list(SETTINGS).index(n)))
    at = {(c["setting"], _level(c)): c for c in cells.values()}
    levels = [lv for lv in LEVELS if any((n, lv) in at for n in names)]
    out = ["| ASR (faster-whisper, int8) | " + " | ".join(f"recall {lv}" for lv in levels)
           + " | s ASR per audio min (" + " / ".join(levels) + ") |",
           "|---" * (len(levels) + 2) + "|"]
    for n in names:
        row = [label(n)]
        for lv in levels:
            c = at.get((n, lv))
            row.append(f"{c['recall_exact']:.2f} ({_hits(c)}/{c['needles']})" if c else "—")
        secs = [f"{at[(n, lv)]['asr_s_per_audio_min']:g}" if (n, lv) in at else "—" for lv in levels]
        out.append("| " + " | ".join(row) + " | " + " / ".join(secs) + " |")
    common = [lv for lv in levels if all((n, lv) in at for n in names)]  # the same needles for every row
    pooled = " + ".join(common) or "no level every row has"
    out += ["", f"By voice, exact recall (hits/n, {pooled} pooled):", "",
            "| ASR | " + " | ".join(VOICES) + " |", "|---" * (len(VOICES) + 1) + "|"]
    for n in names:
        row = [label(n)]
        for v in VOICES:
            got = [at[(n, lv)]["by"].get(f"voice={v}", "0/0").split("/") for lv in common]
            row.append(f"{sum(int(h) for h, _ in got)}/{sum(int(t) for _, t in got)}")
        out.append("| " + " | ".join(row) + " |")
    if long:
        ref = names[0]  # `ref` when it was measured, else the first setting
        out += ["", f"Per setting and level; the interval is Wilson's 95 %; \"vs first\" counts the needles "
                f"only this setting found / only {label(ref)} found, with the exact McNemar p on those "
                "same needles.", "",
                "| ASR | level | recall [95 % CI] | vs first | by voice (" + ", ".join(VOICES) + ") | "
                "needle WER | timestamp error median / p90 s | s ASR per audio min | load (1 min) | file |",
                "|---" * 10 + "|"]
        for n in names:
            for lv in levels:
                c = at.get((n, lv))
                if c is None:
                    continue
                lo, hi = proportion_confint(_hits(c), c["needles"], alpha=0.05, method="wilson")
                voices = " ".join(c["by"].get(f"voice={v}", "0/0") for v in VOICES)
                out.append(f"| {label(n)} | {lv} | {c['recall_exact']:.2f} ({_hits(c)}/{c['needles']}) "
                           f"[{lo:.2f}, {hi:.2f}] | {_paired(c, at.get((ref, lv))) if n != ref else '—'} | "
                           f"{voices} | {c['wer']:.2f} | {c['ts_err_median_s']} / {c['ts_err_p90_s']} | "
                           f"{c['asr_s_per_audio_min']:g} | {c['load_avg_1m']} | {c['file']} |")
    return "\n".join(out)


def _paired(c: dict[str, Any], ref: dict[str, Any] | None) -> str:
    """Needles only `c` found / only `ref` found, and the exact McNemar p (statsmodels)."""
    if ref is None:
        return "—"
    both = sorted(set(c["said"]) & set(ref["said"]))
    mine = sum(c["said"][k] and not ref["said"][k] for k in both)
    theirs = sum(ref["said"][k] and not c["said"][k] for k in both)
    table = [[0, mine], [theirs, 0]]  # only the discordant cells enter the exact test
    return f"+{mine} / -{theirs}, p {mcnemar(table, exact=True).pvalue:.2g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--long", action="store_true", help="also a row per setting and level (the guide's)")
    ap.add_argument("--settings", help="only these (comma-separated)")
    ap.add_argument("--ref", default="tiny-b1-words", help="the setting paired counts are against")
    args = ap.parse_args(argv)
    try:
        cells, meta = load(args.results)
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unknown = sorted({c["setting"] for c in cells.values()} - set(SETTINGS))
    if unknown:
        print(f"error: settings unknown to this version of the benchmark: {unknown}", file=sys.stderr)
        return 2
    print(f"needles: seed {meta['seed']}, plan of {meta['n_needles']}, "
          f"first {meta['files_per_level'] or 'all'} files (5 needles each) per level\n")
    if args.settings:
        keep = set(args.settings.split(","))
        cells = {k: c for k, c in cells.items() if c["setting"] in keep}
    print(tables(cells, long=args.long, ref=args.ref))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
