"""Cache survival (issue 28 item 4): the prefix-cache hit rate a bounded KV cache measures,
held against the one compare/analysis/cache_model.py predicts for the same requests.

    .venv/bin/python -m benchmarks.cache_survival [--requests 16] [--pools 8,16] [--zipfs 0.6,1.4]

A managed vLLM (one at a time) per pool size, bounded with `--num-gpu-blocks-override` (the CPU
backend honours it; VLLM_CPU_KVCACHE_SPACE takes whole GiB only, far too coarse for a cache of a
few documents); short real documents (a few hundred tokens of a public-domain book, so a pool of
8 or 16 blocks of 128 tokens holds only some of them). For each popularity, the same request
sequence a `[load]` step with that Zipf exponent draws (cache_model.workload_requests) is sent
one request after another, each document's requests with its own cache salt as a load step sends
them; the hit rate is the server's /metrics delta (prefix_cache_hits / prefix_cache_queries).

The model is given what it would know of a workload: each request's prompt and output length
(read from the response's usage), and each document's shared prefix (the longest common token
prefix of two of its prompts, from the server's /tokenize with the chat template). Not given the
measured hits. The goal (issue 28): within 5 points at two cache sizes.

Writes benchmarks/results/cache_survival.json. Timings are not the point here; the hit rates do
not depend on the machine's load, only on the order of requests. On the shared 2-core EPYC at a
load average of ~18, a server start took ~7.5 min and an arm of 16 requests ~6 min: run one pool
(`--pools 8`) at a time when the machine is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import load_avg, reset_cache, scrape
from compare.analysis.cache_model import CPU_BLOCK_SIZE, Request, Workload, predict, workload_requests
from compare.serving import weights as models
from compare.serving.prometheus import metric_deltas

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 768  # vLLM refuses a pool smaller than one max_model_len prompt: 6 blocks of 128
QUESTIONS = ("Who is mentioned first?", "What place is described?", "What happens at the end?")
GOAL_POINTS = 5.0
STARTUP_S = 1200.0  # the machine is shared: a start took > 420 s (ManagedServer's default) at load 16


@contextlib.contextmanager
def bounded(pool: int) -> Iterator[str]:
    """A managed vLLM in dev mode (/reset_prefix_cache) whose KV pool is `pool` blocks."""
    from compare.serving.server import ManagedServer, ServerConfig

    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # ServerConfig.env() passes the environment on
    path = models.prepare(models.DEFAULT_MODEL)
    config = ServerConfig(model_path=str(path), served_name=models.DEFAULT_MODEL,
                          max_model_len=WINDOW, kv_cache_gib=1,
                          extra_args=("--num-gpu-blocks-override", str(pool)))
    say = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    with ManagedServer(config, progress=say, startup_timeout_s=STARTUP_S) as srv:
        say(f"vLLM ({pool} KV blocks) ready at {srv.base_url} after {srv.startup_s:.0f}s")
        yield srv.base_url


def _messages(doc: str, question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Document:\n{doc}\n\nQuestion: {question}\nAnswer briefly."}]


async def _documents(url: str, n: int, doc_tokens: int) -> list[str]:
    from corpora.needle import book_text, prefix_with_tokens

    book = book_text("les_miserables", "BOOK FIRST—A JUST MAN", None)
    async with httpx.AsyncClient(timeout=120) as http:

        async def count(text: str) -> int:
            resp = await http.post(f"{url}/tokenize", json={"model": models.DEFAULT_MODEL, "prompt": text})
            resp.raise_for_status()
            return int(resp.json()["count"])

        return [await prefix_with_tokens(book[20_000 + d * 30_000 :], doc_tokens, count) for d in range(n)]


def _tokens(http: httpx.Client, url: str, messages: list[dict[str, str]]) -> list[int]:
    resp = http.post(f"{url}/tokenize", json={"model": models.DEFAULT_MODEL, "messages": messages,
                                              "add_generation_prompt": True})
    resp.raise_for_status()
    return [int(t) for t in resp.json()["tokens"]]


def _shared(http: httpx.Client, url: str, doc: str) -> int:
    """The tokens every question on `doc` has in common: the longest common prefix of two."""
    a, b = (_tokens(http, url, _messages(doc, q)) for q in QUESTIONS[:2])
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _arm(url: str, docs: Sequence[str], shared: Sequence[int], pool: int, zipf: float,
         args: argparse.Namespace) -> dict[str, Any]:
    """One (pool, popularity): send the drawn sequence, read /metrics, predict, compare."""
    names = [f"doc{i}" for i in range(len(docs))]
    order = workload_requests(Workload(dict.fromkeys(names, 0), zipf=zipf, questions_per_doc=args.questions,
                                       requests=args.requests, seed=args.seed))
    cold = reset_cache(url)
    salt = f"pool{pool}-zipf{zipf:g}-{time.time_ns()}"  # cold whether or not the reset is allowed
    before = scrape(url)
    sent: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with httpx.Client(timeout=600) as http:
        for r in order:
            d = names.index(r.doc)
            question = QUESTIONS[int(r.question[1:])]
            body = {"model": models.DEFAULT_MODEL, "messages": _messages(docs[d], question),
                    "max_tokens": args.max_tokens, "temperature": 0.0, "cache_salt": f"{salt}-{r.doc}"}
            resp = http.post(f"{url}/v1/chat/completions", json=body)
            resp.raise_for_status()
            usage = resp.json()["usage"]
            details = usage.get("prompt_tokens_details") or {}
            sent.append({"doc": r.doc, "question": r.question, "prompt_tokens": usage["prompt_tokens"],
                         "cached_tokens": details.get("cached_tokens") or 0,
                         "output_tokens": usage["completion_tokens"]})
    wall = time.perf_counter() - t0
    delta = metric_deltas(before, scrape(url))
    queries, hits = delta.get("vllm:prefix_cache_queries", 0.0), delta.get("vllm:prefix_cache_hits", 0.0)
    measured = hits / queries if queries else float("nan")
    model_in = [Request(s["doc"], s["prompt_tokens"], shared[names.index(s["doc"])], s["question"],
                        s["output_tokens"]) for s in sent]
    pred = predict(model_in, blocks=pool, block_size=CPU_BLOCK_SIZE)
    predicted = pred.hit_rate or 0.0
    per_request_agree = sum(p == s["cached_tokens"] for p, s in zip(pred.per_request, sent, strict=True))
    return {"pool_blocks": pool, "zipf": zipf, "requests": len(sent), "measured": round(measured, 4),
            "predicted": round(predicted, 4), "diff_points": round(100 * (predicted - measured), 2),
            "within_goal": abs(100 * (predicted - measured)) <= GOAL_POINTS,
            "per_request_agree": f"{per_request_agree}/{len(sent)}", "cold_start": cold,
            "server_queries": queries, "server_hits": hits, "wall_s": round(wall, 1), "sent": sent,
            "predicted_per_request": list(pred.per_request)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=16, help="requests per (pool, popularity)")
    ap.add_argument("--pools", default="8,16", help="KV pool sizes in blocks (one server each)")
    ap.add_argument("--zipfs", default="0.6,1.4", help="Zipf popularity exponents")
    ap.add_argument("--docs", type=int, default=6)
    ap.add_argument("--doc-tokens", type=int, default=360)
    ap.add_argument("--questions", type=int, default=2, help="questions per document, asked in turn")
    # One: the hit rate is the prefill's; decode is what a loaded 2-core CPU is slowest at.
    ap.add_argument("--max-tokens", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-url", help="a running server (checks the plumbing only: its pool is not bounded)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cache_survival.json")
    args = ap.parse_args(argv)
    pools = [int(x) for x in args.pools.split(",")]
    zipfs = [float(x) for x in args.zipfs.split(",")]
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "bench": "cache_survival", "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg_1m_start": load_avg(), "block_size": CPU_BLOCK_SIZE,
        "settings": vars(args) | {"out": str(args.out)},
        "arms": [],
    }
    docs: list[str] = []
    shared: list[int] = []
    for pool in pools:
        up = contextlib.nullcontext(args.base_url.rstrip("/")) if args.base_url else bounded(pool)
        with up as url:
            if not docs:
                docs = asyncio.run(_documents(url, args.docs, args.doc_tokens))
                with httpx.Client(timeout=120) as http:
                    shared = [_shared(http, url, d) for d in docs]
                results["shared_tokens"] = shared
            for zipf in zipfs:
                arm = _arm(url, docs, shared, pool, zipf, args)
                results["arms"].append(arm)
                print(f"  pool {pool} blocks, zipf {zipf:g}: measured {arm['measured']:.3f}, predicted "
                      f"{arm['predicted']:.3f} ({arm['diff_points']:+.1f} points; per request "
                      f"{arm['per_request_agree']}), {arm['wall_s']:.0f}s", flush=True)
    results["total_s"] = round(time.perf_counter() - t0, 1)
    results["load_avg_1m_end"] = load_avg()
    results["met"] = all(a["within_goal"] for a in results["arms"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(f"{'pool':>5} {'zipf':>5} {'measured':>9} {'predicted':>10} {'diff (pts)':>11}")
    for a in results["arms"]:
        print(f"{a['pool_blocks']:>5} {a['zipf']:>5g} {a['measured']:>9.3f} {a['predicted']:>10.3f} "
              f"{a['diff_points']:>+11.1f}")
    print(f"goal: within {GOAL_POINTS:g} points at every arm: {'met' if results['met'] else 'NOT met'}; "
          f"{results['total_s']:.0f}s, load average {results['load_avg_1m_start']} -> "
          f"{results['load_avg_1m_end']}; "
          f"written to {args.out}")
    return 0 if results["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
