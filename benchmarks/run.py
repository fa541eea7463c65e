"""ragvslc speed benchmarks: one entry point, every number a ratio against a same-run baseline.

    .venv/bin/python -m benchmarks.run [--quick | --full] [--base-url URL] [--only a,b,c,d,e]

(a) overhead: long-context pipeline request vs a bare `openai` streamed call (goal <= 1.05x)
(b) concurrency: QA-set throughput at 1, 2, 4 requests in flight (goal >= 1.5x at 4)
(c) RAG index: build_index vs raw encode, cached rerun vs cold build (goals >= 0.9x, >= 20x)
(d) needle grid: prefix schedule vs naive serial order, same answers (goal >= 1.8x), first with
    a cache that holds the whole grid, then (d2) with one that holds ~one document; each
    prints the ceiling of prefix reuse on its grid (prompt tokens / fewest prefilled tokens)
(e) bounded cache: a QA set (several questions per document, interleaved) under that cache
(f) CPU roofline: engine prefill FLOP/s over the core's matmul FLOP/s per dtype (goal >= 0.7),
    all cores vs vLLM's own binding (also with MiniLM beside), auto dtype vs forced bf16, and
    an emulated AVX2-only CPU (benchmarks/cpu_roofline.py); starts its own servers
(g) video OCR: on-screen needle recall of scene-text OCR (rapidocr) vs tesseract over the real
    clips and test patterns, and OCR seconds per video minute (benchmarks/video_ocr.py; no server)
(h) load sender: `ragvslc load`'s send lag against a bare asyncio loop on the same schedule, at
    1-50 requests/s, to a scripted server (goal p50 < 5 ms at 50/s; benchmarks/load_sender.py)
(i) vs vllm bench serve: our generator and `vllm bench serve` on one server, same prompts, rate
    and count: achieved rate (goal within 2 %), TTFT p50 (within 10 %), send lag
    (benchmarks/vs_vllm_bench.py; uses --base-url or the managed server)
(j) cache survival: measured prefix-cache hit rate under a bounded KV pool vs the cache model's
    prediction (goal within 5 points; benchmarks/cache_survival.py; starts its own small servers)

Without --base-url a managed vLLM with a 16k window is started for (a), (b), (d) (in dev mode,
so each arm can empty the prefix cache); (e) always starts its own small-cache server. The
table is printed and everything measured goes to benchmarks/results/<name>.json.
Default sizes take ~15 minutes on a shared 2-core machine; --quick ~6, --full ~40.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import Row, load_avg, print_table, server

ROOT = Path(__file__).resolve().parent.parent

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "a": {"doc_tokens": 1000, "repeats": 6, "rows": 4},
        "b": {"docs": 1, "questions": 6, "levels": [1, 2, 4]},
        "c": {"chars": 20_000, "repeats": 1},
        "d": {"lengths": [1000, 2000], "depths": [0.1, 0.5, 0.9], "concurrency": 2, "serial_prefix": False},
        "d2": {"lengths": [800, 1600], "depths": [0.1, 0.3, 0.5, 0.7, 0.9], "concurrency": 2},
        "e": {"docs": 2, "questions": 2},
        "f": {"lengths": (1024,), "repeats": 1},
        "g": {"backgrounds": ("chaplin.mp4", "bikes.mp4", "testsrc"), "slots": 4, "fps": (1.0,)},
        "h": {"rates": [10.0, 50.0], "seconds": 2.0},
        "i": {"rate": 0.2, "requests": 6, "prompt_words": 120, "rounds": 1},
        "j": {"argv": ["--pools", "8", "--zipfs", "1.0", "--requests", "8"]},
    },
    "default": {
        "a": {"doc_tokens": 2000, "repeats": 10, "rows": 8},
        "b": {"docs": 2, "questions": 6, "levels": [1, 2, 4]},
        "c": {"chars": 40_000, "repeats": 2},
        "d": {"lengths": [1000, 2000], "depths": [0.1, 0.5, 0.9], "concurrency": 2, "serial_prefix": True},
        "d2": {"lengths": [800, 1600], "depths": [round(0.1 * i, 1) for i in range(11)], "concurrency": 4},
        "e": {"docs": 3, "questions": 3},
        "f": {"lengths": (1024, 2048), "repeats": 2},
        "g": {"slots": 12, "fps": (1.0, 2.0)},
        "h": {"rates": [1.0, 10.0, 50.0], "seconds": 3.0},
        "i": {"rate": 0.3, "requests": 10, "prompt_words": 200, "rounds": 1},
        "j": {"argv": ["--pools", "8,16", "--zipfs", "0.6,1.4"]},
    },
    "full": {
        "a": {"doc_tokens": 4000, "repeats": 20, "rows": 12},
        "b": {"docs": 2, "questions": 12, "levels": [1, 2, 4]},
        "c": {"chars": 100_000, "repeats": 3},
        "d": {"lengths": [2000, 4000, 8000], "depths": [0.1, 0.5, 0.9], "concurrency": 4,
              "serial_prefix": True},
        "d2": {"lengths": [400, 800, 1200, 1600], "depths": [round(0.05 * i, 2) for i in range(21)],
               "concurrency": 4},
        "e": {"docs": 4, "questions": 4},
        "f": {"lengths": (1024, 2048, 4096 - 256), "repeats": 3},
        "g": {"slots": 24, "fps": (1.0, 2.0)},
        "h": {"rates": [1.0, 10.0, 50.0, 200.0], "seconds": 5.0},
        "i": {"rate": 0.3, "requests": 16, "prompt_words": 200, "rounds": 2},
        "j": {"argv": ["--pools", "8,12,16", "--zipfs", "0.6,1.0,1.4", "--requests", "24"]},
    },
}


def _guarded(
    name: str, fn: Callable[[], tuple[list[Row], Any]], out: dict[str, Any], rows: list[Row]
) -> None:
    """A failing benchmark is recorded with its traceback; the others still run."""
    t0 = time.perf_counter()
    print(f"[{name}] ...", flush=True)
    try:
        got, raw = fn()
    except Exception as exc:
        out[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
        return
    rows.extend(got)
    out[name] = {"seconds": round(time.perf_counter() - t0, 1), "load_avg_1m": load_avg(),
                 "rows": [r.as_dict() for r in got], "raw": raw}
    print(f"[{name}] done in {time.perf_counter() - t0:.0f}s (load average {load_avg()})", flush=True)


def _cache_survival(argv: list[str], out_dir: Path) -> tuple[list[Row], Any]:
    """benchmarks/cache_survival.py as it runs alone (its own file), one row per arm: the
    predicted hit rate against the measured one, within 5 points."""
    from benchmarks.cache_survival import GOAL_POINTS
    from benchmarks.cache_survival import main as cache_main

    out = out_dir / "cache_survival.json"
    cache_main([*argv, "--out", str(out)])
    got = json.loads(out.read_text())
    rows = [Row("cache_survival", f"hit rate, pool {a['pool_blocks']} blocks, zipf {a['zipf']:g}",
                "measured (server /metrics)", a["measured"], a["predicted"], "hit rate",
                round(a["predicted"] / a["measured"], 3) if a["measured"] else float("nan"),
                f"within {GOAL_POINTS:g} points", bool(a["within_goal"]),
                {"diff_points": a["diff_points"]}) for a in got["arms"]]
    return rows, {k: v for k, v in got.items() if k != "arms"} | {"arms": [
        {k: v for k, v in a.items() if k not in ("sent", "predicted_per_request")} for a in got["arms"]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (~6 minutes)")
    size.add_argument("--full", action="store_true", help="larger sizes (~40 minutes)")
    ap.add_argument("--base-url", help="use a running server for (a), (b), (d) instead of a managed one")
    ap.add_argument("--only", default="a,b,c,d,e,h", help="benchmarks to run, e.g. a,d")
    ap.add_argument("--name", help="result file name (default: the size)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    preset = "quick" if args.quick else "full" if args.full else "default"
    sizes = SIZES[preset]
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    rows: list[Row] = []
    results: dict[str, Any] = {
        "preset": preset, "sizes": {k: v for k, v in sizes.items() if k[0] in only},
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "python": platform.python_version(), "load_avg_1m_start": load_avg(), "base_url": args.base_url,
    }
    t0 = time.perf_counter()

    if "g" in only:  # no server needed either
        from benchmarks.video_ocr import bench_video_ocr

        _guarded("g_video_ocr", lambda: bench_video_ocr(**sizes["g"]), results, rows)
    if "c" in only:  # no server needed: run it before one is started
        from benchmarks.index_build import bench_index

        _guarded("c_index", lambda: bench_index(**sizes["c"]), results, rows)
    if only & {"a", "b", "d"}:
        with server(args.base_url) as url:
            results["server_url"] = url
            if "a" in only:
                from benchmarks.overhead import bench_overhead

                _guarded("a_overhead", lambda: (bench_overhead(url, **sizes["a"]), None), results, rows)
            if "b" in only:
                from benchmarks.concurrency import bench_concurrency

                _guarded("b_concurrency", lambda: bench_concurrency(url, **sizes["b"]), results, rows)
            if "d" in only:
                from benchmarks.needle_grid import bench_needle_grid

                _guarded("d_needle_grid", lambda: bench_needle_grid(url, **sizes["d"]), results, rows)
    if "d" in only:
        from benchmarks.needle_grid import bench_needle_grid_bounded

        _guarded("d2_needle_grid_bounded", lambda: bench_needle_grid_bounded(**sizes["d2"]), results, rows)
    if "f" in only:
        from benchmarks.cpu_roofline import bench_cpu_roofline

        _guarded("f_cpu_roofline", lambda: bench_cpu_roofline(**sizes["f"]), results, rows)
    if "e" in only:
        from benchmarks.bounded_cache import bench_bounded

        _guarded("e_bounded_cache", lambda: bench_bounded(**sizes["e"]), results, rows)
    if "h" in only:  # a scripted server of its own
        from benchmarks.load_sender import bench_load_sender

        _guarded("h_load_sender", lambda: bench_load_sender(**sizes["h"]), results, rows)
    if "i" in only:
        from benchmarks.vs_vllm_bench import bench_lag_vs_vllm, bench_vs_vllm_bench

        with server(args.base_url) as url:
            _guarded("i_vs_vllm_bench", lambda: bench_vs_vllm_bench(url, **sizes["i"]), results, rows)
        _guarded("i2_lag_vs_vllm_bench", lambda: bench_lag_vs_vllm(50.0, 150), results, rows)
    if "j" in only:  # its own bounded servers, one at a time
        _guarded("j_cache_survival", lambda: _cache_survival(sizes["j"]["argv"], args.out_dir), results, rows)

    results["total_s"] = round(time.perf_counter() - t0, 1)
    results["load_avg_1m_end"] = load_avg()
    results["table"] = [r.as_dict() for r in rows]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{args.name or preset}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print()
    print(f"ragvslc benchmarks ({preset}), {results['total_s']:.0f}s, load average "
          f"{results['load_avg_1m_start']} -> {results['load_avg_1m_end']} on {os.cpu_count()} CPUs")
    print("ratio = value / baseline (time: < 1 is faster; rates: > 1 is better), except grid/cache "
          "time rows: ratio = baseline time / time (speed-up)")
    print_table(rows)
    print(f"\nwritten to {out}")
    return 0 if not any(isinstance(v, dict) and "error" in v for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
