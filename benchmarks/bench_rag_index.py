"""RAG index build speed: cached rerun vs cold build, and build throughput vs raw `encode`.

Goals from issue 3: a cached rerun at least 20x faster than a cold build, and index building
at least 0.9x the throughput of calling sentence-transformers `encode` directly on the same
chunks (chunking, bookkeeping and FAISS must not cost more than 10%). Also reports embedding
throughput across batch sizes and thread counts. Ratios are printed against the baseline and
written to a JSON file; the machine's load average is recorded because a shared 2-core box
makes absolute seconds noisy (ratios from interleaved runs much less so).

    .venv/bin/python -m benchmarks.bench_rag_index [--chars 100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks.index_build import time_builds
from compare.core.types import Document
from corpora.books import data_dir, load_book
from pipelines.chunking import chunk_document
from pipelines.embedder import embed_texts, embedder_tokenizer, load_embedder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rag_index.json"))
    args = ap.parse_args()

    text = load_book("les_miserables", data_dir())
    doc = Document("lm", text[200_000 : 200_000 + args.chars])
    model = load_embedder()
    tok = embedder_tokenizer(model)
    chunks = chunk_document(doc, 200, 20, tok)
    texts = [c.text for c in chunks]
    n_tokens = sum(len(tok(t)) for t in texts)
    embed_texts(model, texts[:8])  # warm-up: first call pays lazy initialisation

    cold, cached, direct = time_builds(doc, texts, model, args.repeats)

    sweep = []
    for threads in (1, 2):
        for batch in (8, 32, 64):
            t0 = time.perf_counter()
            embed_texts(model, texts, batch_size=batch, threads=threads)
            s = time.perf_counter() - t0
            sweep.append({"threads": threads, "batch_size": batch, "s": round(s, 2),
                          "chunks_per_s": round(len(texts) / s, 1), "tokens_per_s": round(n_tokens / s)})

    med = statistics.median
    result = {
        "chars": args.chars,
        "n_chunks": len(texts),
        "embedder_tokens": n_tokens,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "cold_build_s": [round(x, 2) for x in cold],
        "cached_rerun_s": [round(x, 4) for x in cached],
        "direct_encode_s": [round(x, 2) for x in direct],
        "cached_speedup": round(med(cold) / med(cached), 1),
        "build_vs_encode_throughput": round(med(direct) / med(cold), 3),
        "build_chunks_per_s": round(len(texts) / med(cold), 1),
        "encode_sweep": sweep,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{len(texts)} chunks ({n_tokens} word pieces) from {args.chars} characters; "
          f"load average {result['load_avg_1m']} on {result['cpus']} CPUs")
    print(f"cold build {med(cold):.2f}s, cached rerun {med(cached) * 1000:.1f}ms: "
          f"{result['cached_speedup']}x faster (goal >= 20x)")
    print(f"direct encode {med(direct):.2f}s: build throughput = "
          f"{result['build_vs_encode_throughput']:.2f}x encode's (goal >= 0.9)")
    for row in sweep:
        print(f"  threads={row['threads']} batch={row['batch_size']:>2}: {row['chunks_per_s']} chunks/s, "
              f"{row['tokens_per_s']} tokens/s")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
