"""Cache survival (issue 28 item 4): the prefix-cache hit rate a workload should get from a KV
cache of C blocks, by replaying its requests through the engine's eviction rule.

What vLLM (v1, 0.3x: vllm/v1/core/block_pool.py, kv_cache_manager.py) does, and so what this
replays: a prompt is cut into blocks of B tokens (128 on the CPU backend unless `--block-size`
says otherwise); only full blocks are hashed, each hash chained on the one before it and on the
request's cache salt, so a block matches only behind the same prefix (here: the same document,
since a load step salts per document, and for the blocks after the shared part the same
question). A request reuses the longest run of cached blocks from its start, at most
(prompt - 1) // B of them (the last prompt token is always recomputed for its logits); the
server's `prefix_cache_hits / prefix_cache_queries` is those hit tokens over prompt tokens.
Blocks of a finished request go back to the free queue, hashed ones at the tail in reverse
order (its last block is evicted first), and a new block is taken from the head: LRU over
free blocks. One block of the pool is vLLM's null block, never used for data.

The model serves requests one after another (each finishes before the next starts), which is
the engine's order at a rate it keeps up with. Under queueing, requests in flight pin their
blocks and the measured rate falls below this prediction; the report holds the two side by
side per step rather than hiding that.

`cachetools.LRUCache` is the LRU structure (touch on access, evict the least recent on insert);
the rest is vLLM's block bookkeeping, which no cache library knows, so it is written here.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache
from scipy import stats

CPU_BLOCK_SIZE = 128  # vLLM's CPU backend default (vllm/platforms/cpu.py)
RESERVED_BLOCKS = 1  # vLLM's null block


@dataclass(frozen=True)
class Request:
    """One request as the cache sees it.

    `shared_tokens`: the leading tokens every request of `doc` has in common (the template head
    and the document, for long context; 0 when only a repeated question shares its prompt, as
    with retrieval). Requests with the same doc and question share their whole prompt."""

    doc: str
    prompt_tokens: int
    shared_tokens: int = 0
    question: str = ""
    output_tokens: int = 0


@dataclass(frozen=True)
class Prediction:
    """Predicted hits: `hit_tokens` over `query_tokens` prompt tokens, per request too."""

    hit_tokens: int
    query_tokens: int
    per_request: tuple[int, ...]
    blocks: int
    block_size: int

    @property
    def hit_rate(self) -> float | None:
        return self.hit_tokens / self.query_tokens if self.query_tokens else None


def predict(requests: Iterable[Request], blocks: int, block_size: int = CPU_BLOCK_SIZE) -> Prediction:
    """Replay `requests` in order through a pool of `blocks` KV blocks of `block_size` tokens."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1 (got {block_size})")
    if blocks < 0:
        raise ValueError(f"blocks must be >= 0 (got {blocks})")
    usable = blocks - RESERVED_BLOCKS
    cache: LRUCache[Hashable, None] | None = LRUCache(maxsize=usable) if usable >= 1 else None
    scratch = itertools.count()  # never-matching keys for blocks that are not full
    hits: list[int] = []
    queries = 0
    for r in requests:
        queries += r.prompt_tokens
        if cache is None:
            hits.append(0)
            continue
        keys = _block_keys(r, block_size)
        hit = 0
        for k in keys[: max(r.prompt_tokens - 1, 0) // block_size]:
            if k not in cache:
                break
            hit += 1
        hits.append(hit * block_size)
        # The request holds all its blocks at once: hit ones are touched, new ones evict the
        # least recently freed. The partial last block holds data but has no hash.
        partial = _kv_tokens(r) % block_size != 0
        own = [*keys, ("partial", next(scratch))] if partial else keys
        for k in own:
            cache[k] = None
        # Freed in reverse order: the request's first block ends up the most recently used.
        for k in reversed(keys):
            if k in cache:
                cache[k] = None
        if partial:
            cache.pop(own[-1], None)
    return Prediction(sum(hits), queries, tuple(hits), blocks, block_size)


def _kv_tokens(r: Request) -> int:
    """Tokens whose KV the request computed: its prompt and every output token but the last
    (the last is sampled, never fed back), so a prompt one short of a block boundary answered
    with one token leaves that block partial and uncached, as vLLM does."""
    return r.prompt_tokens + max(r.output_tokens - 1, 0)


def _block_keys(r: Request, block_size: int) -> list[Hashable]:
    """One key per full block (prompt and output): a document's while inside the shared
    prefix, then the (document, question)'s: a block's hash covers all the tokens before it."""
    full = _kv_tokens(r) // block_size
    shared = min(r.shared_tokens, r.prompt_tokens) // block_size
    return [(r.doc, i) if i < shared else (r.doc, r.question, i) for i in range(full)]


@dataclass(frozen=True)
class Workload:
    """A workload as `[load]` describes it: documents (corpus order = popularity rank) with
    their shared token lengths, a Zipf exponent, questions per document asked in turn."""

    doc_tokens: Mapping[str, int]
    zipf: float = 1.0
    questions_per_doc: int = 1
    question_tokens: int = 32  # the prompt after the shared part
    output_tokens: int = 32
    requests: int = 64
    seed: int = 0


def workload_requests(w: Workload) -> list[Request]:
    """The request sequence the workload draws (documents by popularity, questions in turn),
    drawn as compare/run/arrivals.py draws it, so a given seed predicts that very step."""
    docs = list(w.doc_tokens)
    if not docs:
        raise ValueError("a workload needs at least one document")
    p = popularity(len(docs), w.zipf)
    drawn = np.random.default_rng([w.seed, 0]).choice(len(docs), size=w.requests, p=p)
    asked = [0] * len(docs)
    out = []
    for d in drawn:
        q = asked[d] % max(w.questions_per_doc, 1)
        asked[d] += 1
        doc = docs[int(d)]
        shared = w.doc_tokens[doc]
        out.append(Request(doc, shared + w.question_tokens, shared, f"q{q}", w.output_tokens))
    return out


def popularity(n_docs: int, exponent: float) -> np.ndarray:
    """P(document of rank r): bounded Zipf (scipy.stats.zipfian), 0 uniform; the same law as
    compare/run/arrivals.py (which this layer may not import)."""
    if exponent == 0:
        return np.full(n_docs, 1.0 / n_docs)
    pmf = stats.zipfian.pmf(np.arange(1, n_docs + 1), exponent, n_docs)
    return np.asarray(pmf / pmf.sum())


def expected_hit_rate(w: Workload, blocks: int, block_size: int = CPU_BLOCK_SIZE, draws: int = 20) -> float:
    """The hit rate averaged over `draws` seeds (token-weighted): what a workload gets in
    expectation rather than in one step's draw."""
    hit = query = 0
    for s in range(draws):
        pred = predict(workload_requests(Workload(**{**w.__dict__, "seed": w.seed + s})), blocks, block_size)
        hit += pred.hit_tokens
        query += pred.query_tokens
    return hit / query if query else 0.0


def blocks_from_args(args: Sequence[str]) -> tuple[int | None, int]:
    """(KV blocks, block size) from a recorded vLLM command line: blocks only when it bounded
    them (`--num-gpu-blocks-override`), the block size from `--block-size` or the CPU default."""
    blocks: int | None = None
    size = CPU_BLOCK_SIZE
    for flag, value in zip(args, [*args[1:], ""], strict=True):
        for name, raw in ((flag, value), *((tuple(flag.split("=", 1)),) if "=" in flag else ())):
            if name == "--num-gpu-blocks-override" and raw.isdigit():
                blocks = int(raw)
            elif name == "--block-size" and raw.isdigit():
                size = int(raw)
    return blocks, size
