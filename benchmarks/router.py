"""(h) Who should route several replicas: vLLM's router (four policies) or ragvslc's document affinity?

    .venv/bin/python -m benchmarks.router [--quick] [--docs N] [--questions N]

Two managed replicas, one CPU core each (mechanics, not speed: on this 2-core machine), each with
a KV cache that holds about one document (`--num-gpu-blocks-override`), started once with the
flags a router needs (compare/serving/replicas.py: chat rendering for cache_aware, a fingerprint
per replica). Then the same run (a QA set, several questions per document, interleaved in the
file; the runner's prefix schedule, long-context prompts) goes through each arm from emptied
caches: `client` (the run's own affinity over both URLs, compare/serving/pool.py) and a
vllm-router with `cache_aware`, `consistent_hash`, `round_robin` and `power_of_two` in front of
them (compare/serving/router.py). Both ways have the same requests in flight (one per replica).

Per arm: wall time, TTFT p50/p95 (rows), prefix-cache hit rate and prefilled tokens (each
replica's /metrics deltas, read from the replicas, not through the router), requests per replica
(the same deltas) and whether the answers equal the baseline's. Every ratio is against `client`,
measured in the same run. The verdict keeps `client` only where it beats the best router policy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from benchmarks.common import (
    BLOCK,
    Row,
    cache_blocks,
    computed_tokens,
    load_avg,
    print_table,
    ratio_row,
    reset_cache,
    scrape,
)
from compare.core.types import Corpus, Document, Example
from compare.serving import weights as models
from compare.serving.client import HttpBackend
from compare.serving.pool import Pool
from compare.serving.prometheus import metric_deltas

ROOT = Path(__file__).resolve().parent.parent

ARMS = ("client", "cache_aware", "consistent_hash", "round_robin", "power_of_two")
BASELINE = "client"
QUESTIONS = ("Who is mentioned first?", "What place is described?", "What happens at the end?",
             "Which object is named?", "Who speaks?")
RESULTS = ROOT / "benchmarks" / "results" / "router.json"


def say(msg: str) -> None:
    print(f"  {msg}", flush=True)


@contextlib.contextmanager
def two_replicas(window: int) -> Iterator[list[str]]:
    """Two managed vLLMs of the default model, a core each, in dev mode (/reset_prefix_cache),
    each KV cache about one `window`-token prompt, with the flags a router needs."""
    from compare.serving.replicas import behind_router, managed_replicas, replica_configs
    from compare.serving.server import ServerConfig

    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # ServerConfig.env() passes the environment on
    path = models.prepare(models.DEFAULT_MODEL)
    config = ServerConfig(model_path=str(path), served_name=models.DEFAULT_MODEL, max_model_len=window,
                          kv_cache_gib=1, extra_args=("--num-gpu-blocks-override", str(cache_blocks(window))))
    with managed_replicas(behind_router(replica_configs(config, 2)), say) as servers:
        for s in servers:
            cores = dict(s.config.env_extra).get("VLLM_CPU_OMP_THREADS_BIND")
            say(f"replica at {s.base_url} (cores {cores}) ready after {s.startup_s:.0f}s")
        yield [s.base_url for s in servers]


async def build_corpus(url: str, docs: int, questions: int, doc_tokens: int) -> Corpus:
    """`docs` book passages of `doc_tokens` tokens; questions interleaved as in a QA file sorted
    by question (q0 of every document, then q1, ...)."""
    from corpora.needle import book_text, prefix_with_tokens

    book = book_text("les_miserables", "BOOK FIRST—A JUST MAN", None)
    async with HttpBackend(url, models.DEFAULT_MODEL) as backend:
        documents = {
            f"doc{d}": Document(f"doc{d}", await prefix_with_tokens(book[30_000 + d * 40_000 :], doc_tokens,
                                                                     backend.tokenize))
            for d in range(docs)
        }
    examples = [Example(f"doc{d}-q{q}", (f"doc{d}",), QUESTIONS[q % len(QUESTIONS)], ("x",))
                for q in range(questions) for d in range(docs)]
    return Corpus("router-bench", documents, examples)


async def _run_arm(label: str, pool: Pool, corpus: Corpus, db: Path) -> dict[str, Any]:
    from compare.run.runner import run
    from compare.store.db import Store
    from pipelines.long_context import LongContextPipeline

    with Store(db) as store:
        t0 = time.perf_counter()
        res = await run(
            run_id=f"router-{label}", corpus=corpus, pipelines=[LongContextPipeline(max_tokens=16)],
            backend=pool.primary, store=store, metric_names=["contains"], schedule="prefix", pool=pool,
            concurrency=sum(1 for _ in pool.backends) * pool.concurrency,
            run_meta={"model": models.DEFAULT_MODEL, "base_url": "", "spec": {}, "corpus_params": {},
                      "server": {}},
        )
        wall = time.perf_counter() - t0
        rows = store.con.execute(
            "SELECT example_id, answer, ttft_ms, prompt_tokens, cached_tokens FROM predictions").fetchall()
    return {"wall_s": round(wall, 2), "errors": res.errors, "rows": rows}


def arm(label: str, urls: Sequence[str], corpus: Corpus, tmp: Path) -> dict[str, Any]:
    """One arm from emptied caches: the run, then what each replica did (its own /metrics)."""
    from compare.serving.router import ManagedRouter, RouterConfig, RouterPolicy

    print(f"  (h) {label}: {len(corpus.examples)} questions on {len(corpus.documents)} documents", flush=True)
    cold = all(reset_cache(u) for u in urls)
    before = [scrape(u) for u in urls]
    router_info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if label == "client":
            backends = [HttpBackend(u, models.DEFAULT_MODEL, timeout_s=1800) for u in urls]
            pool = Pool(backends, 1)  # one in flight per replica
            pool.plan(corpus.examples, corpus.documents)
        else:
            config = RouterConfig(tuple(urls), cast(RouterPolicy, label))
            router = stack.enter_context(ManagedRouter(config, progress=say))
            router_info = router.describe()
            pool = Pool([HttpBackend(router.base_url, models.DEFAULT_MODEL, timeout_s=1800)], len(urls))
        tmp.mkdir(parents=True, exist_ok=True)
        out = asyncio.run(_arm_with(pool, label, corpus, tmp / f"{label}.duckdb"))
    work = [metric_deltas(b, scrape(u)) for b, u in zip(before, urls, strict=True)]
    return _summary(label, out, work, cold, router_info)


async def _arm_with(pool: Pool, label: str, corpus: Corpus, db: Path) -> dict[str, Any]:
    try:
        return await _run_arm(label, pool, corpus, db)
    finally:  # the clients are this loop's: closed in it, not by the collector after it ended
        await asyncio.gather(*(b.aclose() for b in pool.backends))


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return float(s[min(len(s) - 1, round(q * (len(s) - 1)))]) if s else float("nan")


def _summary(label: str, out: dict[str, Any], work: Sequence[dict[str, float]], cold: bool,
             router: dict[str, Any]) -> dict[str, Any]:
    """One pass of one arm: its rows' TTFTs and answers, and what each replica did."""
    result = {
        "arm": label, "wall_s": out["wall_s"], "errors": out["errors"], "cold_start": cold,
        "ttft_ms": [float(r[2]) for r in out["rows"] if r[2] is not None],
        "hits": sum(w.get("vllm:prefix_cache_hits", 0.0) for w in work),
        "queries": sum(w.get("vllm:prefix_cache_queries", 0.0) for w in work),
        "prefilled_tokens": round(sum(computed_tokens(w) for w in work)),
        "requests_per_replica": [int(w.get("vllm:request_success", 0.0)) for w in work],
        "answers": {r[0]: r[1] for r in out["rows"]},
        **({"router": router} if router else {}),
    }
    hit = result["hits"] / result["queries"] if result["queries"] else float("nan")
    print(f"      {out['wall_s']:.1f}s, hit rate {hit:.2%}, prefilled {result['prefilled_tokens']} tokens, "
          f"TTFT p50 {_pct(result['ttft_ms'], 0.5):.0f} ms, requests per replica "
          f"{result['requests_per_replica']}", flush=True)
    return result


def combine(passes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An arm over its passes (run forward, then backward, so drift in the machine's load
    falls on every arm alike): mean wall time, TTFT percentiles over every row, hit rate over
    every cache query, requests per replica summed; answers must agree between passes."""
    first = passes[0]
    ttft = [t for p in passes for t in p["ttft_ms"]]
    queries = sum(p["queries"] for p in passes)
    per_replica = zip(*(p["requests_per_replica"] for p in passes), strict=True)
    return {
        "arm": first["arm"], "passes": len(passes),
        "wall_s": round(sum(p["wall_s"] for p in passes) / len(passes), 2),
        "walls_s": [p["wall_s"] for p in passes], "errors": sum(p["errors"] for p in passes),
        "cold_start": all(p["cold_start"] for p in passes),
        "ttft_p50_ms": round(_pct(ttft, 0.5), 1), "ttft_p95_ms": round(_pct(ttft, 0.95), 1),
        "hit_rate": round(sum(p["hits"] for p in passes) / queries, 4) if queries else float("nan"),
        "prefilled_tokens": round(sum(p["prefilled_tokens"] for p in passes) / len(passes)),
        "requests_per_replica": [sum(x) for x in per_replica],
        "answers": first["answers"],
        # greedy decoding, but a prefix read from the cache vs computed can flip a bf16 near-tie
        "answers_differing_between_passes": sum(
            any(p["answers"].get(k) != v for p in passes[1:]) for k, v in first["answers"].items()),
        **({"router": first["router"]} if "router" in first else {}),
    }


def rows_for(arms: Sequence[dict[str, Any]]) -> list[Row]:
    """Each router policy against `client`, measured in the same run: wall time, TTFT p50/p95
    (lower is better: ratio = the policy's / client's) and hit rate (higher is better)."""
    base = next(a for a in arms if a["arm"] == BASELINE)
    rows: list[Row] = []
    for a in arms:
        if a is base:
            continue
        same = sum(base["answers"].get(k) == v for k, v in a["answers"].items())
        details = {"requests_per_replica": a["requests_per_replica"],
                   "prefilled_tokens": a["prefilled_tokens"],
                   "baseline_prefilled_tokens": base["prefilled_tokens"],
                   "identical_answers": f"{same}/{len(base['answers'])}", "errors": a["errors"]}
        for what, key, unit, higher in (("wall time", "wall_s", "s", False),
                                        ("TTFT p50", "ttft_p50_ms", "ms", False),
                                        ("TTFT p95", "ttft_p95_ms", "ms", False),
                                        ("prefix-cache hit rate", "hit_rate", "fraction", True)):
            rows.append(ratio_row(
                "h_router", f"{a['arm']}: {what}", f"{BASELINE} affinity", base[key], a[key], unit,
                higher_is_better=higher, details=details if key == "wall_s" else None))
    return rows


def verdict(arms: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Keep `client` only if it beats the best router policy (by mean wall time, same answers)
    in every pass: one pass on a shared machine can go either way by a few percent."""
    base = next(a for a in arms if a["arm"] == BASELINE)
    routers = [a for a in arms if a["arm"] != BASELINE and not a["errors"]]
    best = min(routers, key=lambda a: a["wall_s"])
    factor = best["wall_s"] / base["wall_s"]
    per_pass = [round(r / c, 3) for r, c in zip(best["walls_s"], base["walls_s"], strict=True)]
    keep = all(x > 1.0 for x in per_pass)
    then = "keep it" if keep else "not in every pass: let the router route"
    return {"best_router_policy": best["arm"], "client_speedup_over_best_router": round(factor, 3),
            "per_pass": per_pass, "keep_client": keep,
            "text": (f"client affinity is {factor:.2f}x as fast as the best router policy ({best['arm']}); "
                     f"per pass {per_pass}: {then}")}


def fingerprint(url: str) -> str | None:
    """The system_fingerprint a replica puts in its responses (its name, behind a router)."""
    import httpx

    body = {"model": models.DEFAULT_MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    return resp.json().get("system_fingerprint") if resp.status_code == 200 else None


def bench_router(*, docs: int, questions: int, window: int, doc_tokens: int, repeat: int) -> dict[str, Any]:
    with two_replicas(window) as urls, tempfile.TemporaryDirectory() as tmp:
        names = {u: fingerprint(u) for u in urls}
        say(f"replicas name themselves in every response: {names}")
        corpus = asyncio.run(build_corpus(urls[0], docs, questions, doc_tokens))
        passes: dict[str, list[dict[str, Any]]] = {label: [] for label in ARMS}
        for p in range(repeat):
            for label in ARMS if p % 2 == 0 else ARMS[::-1]:
                passes[label].append(arm(label, urls, corpus, Path(tmp) / str(p)))
    arms = [combine(passes[label]) for label in ARMS]
    return {"arms": arms, "rows": [r.as_dict() for r in rows_for(arms)], "verdict": verdict(arms),
            "fingerprints": names,
            "settings": {"docs": docs, "questions_per_doc": questions, "window": window,
                         "doc_tokens": doc_tokens, "cache_tokens_per_replica": cache_blocks(window) * BLOCK,
                         "replicas": 2, "in_flight": 2, "passes": repeat}}


def _cpu() -> dict[str, Any]:
    from compare.serving.cpu import cpu_info

    return cpu_info().describe()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2k window, 4 documents x 3 questions")
    ap.add_argument("--docs", type=int)
    ap.add_argument("--questions", type=int)
    ap.add_argument("--repeat", type=int, default=2, help="passes over the arms, every other one backwards")
    args = ap.parse_args(argv)
    window = 2048 if args.quick else 4096
    docs = args.docs or (4 if args.quick else 6)
    questions = args.questions or (3 if args.quick else 4)
    load_before = load_avg()
    t0 = time.time()
    out = bench_router(docs=docs, questions=questions, window=window, doc_tokens=int(window * 0.83),
                       repeat=args.repeat)
    out |= {"cpu": _cpu(), "load_avg_before": load_before, "load_avg_after": load_avg(),
            "took_s": round(time.time() - t0, 1)}
    print_table([Row(**r) for r in out["rows"]])
    print(out["verdict"]["text"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
