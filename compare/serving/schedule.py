"""Prefix-sharing schedule: which request goes when, so the server's prefix cache does the work.

A long-context prompt starts with its document, so two prompts over documents that share a
prefix can share that prefix's prefill (vLLM's automatic prefix caching). The saving is only
realised if the request that computes the shared prefix has *prefilled* it before the next one
starts: siblings sent at the same moment each compute the prefix themselves, and siblings sent
far apart may find it evicted. So the plan orders and gates:

- Requests are grouped by document key (the texts of an example's documents, as the long-context
  prompt lays them out): every pipeline finishes a document before the next one starts, so a
  partial run still compares the pipelines on the same documents. Within a document the prompts
  that start with it (long context) go first, then the other pipelines' (RAG): measured with a
  KV cache of about one document, a RAG prompt between two of its long-context questions evicted
  the document's tail and cost 19% more prefill (15,476 vs 12,532 tokens, 3 documents x 3
  questions, identical answers); with a larger cache the two orders are the same.
- Keys are sorted lexicographically, which puts keys with long common prefixes next to each
  other (a depth-first walk of their prefix trie); runs of neighbours sharing at least
  `min_shared_chars` form a family (a needle grid is one family: every length's haystack starts
  at the same page of the book).
- Families go biggest first (their leaders are the long poles others wait for).
- Inside a family the key whose shared prefix reaches deepest goes first (its leader: for a
  needle grid the document whose needle sits deepest into the longest shared haystack), so once
  it has run every other member finds its whole shared prefix cached.
- `after[i]` names the request whose prefill (its first token, or its end if it fails) request
  `i` waits for before it takes a concurrency slot: the leader of its key (same document, later
  question) or the earliest request with the longest prefix in common. With concurrency 1 the
  order alone does it; with more, gating stops siblings from prefilling the same prefix in
  parallel, while unrelated requests (other families, RAG prompts that do not start with the
  document) fill the slots.

For a serial run with a cache larger than the grid the order does not change the total prefill
(each trie node is computed once, whatever the order); it matters when the cache holds only a
few documents (long documents on a GPU) and whenever requests run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Generic, Literal, TypeVar

from compare.core.protocols import SharesPrefix
from compare.core.types import Document, Example

Schedule = Literal["prefix", "given"]
T = TypeVar("T")

MIN_SHARED_CHARS = 2000  # ~500 tokens: below this, waiting for a leader costs more than it saves
MIN_SHARED_FRACTION = 0.25  # ... and the shared part must be a real share of the follower's prompt


def common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix, by bisection over C-speed slice comparisons."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class Plan(Generic[T]):
    """Requests in the order to start them; `after[i]`: index of the request `i` waits for."""

    items: tuple[T, ...]
    after: tuple[int | None, ...]
    families: int = 0

    def __post_init__(self) -> None:
        if len(self.items) != len(self.after):
            raise ValueError("one `after` entry per item")
        for i, w in enumerate(self.after):
            if w is not None and not 0 <= w < i:
                raise ValueError(f"item {i} waits for {w}: must be an earlier item")


def _families(keys: Sequence[str], min_shared: int) -> list[list[tuple[str, int]]]:
    """Sorted keys cut into runs of neighbours sharing >= min_shared chars, with each key's
    depth: the longest prefix it shares with any other key (its neighbours, once sorted)."""
    ordered = sorted(keys)
    adj = [common_prefix_len(a, b) for a, b in pairwise(ordered)]
    families: list[list[tuple[str, int]]] = []
    for i, key in enumerate(ordered):
        left = adj[i - 1] if i > 0 else 0
        right = adj[i] if i < len(adj) else 0
        if i == 0 or left < min_shared:
            families.append([])
        families[-1].append((key, max(left, right)))
    return families


def plan(
    items: Sequence[T],
    *,
    key: Callable[[T], str],
    group: Callable[[T], Hashable],
    shares_prefix: Callable[[T], bool],
    kind: Schedule = "prefix",
    min_shared_chars: int = MIN_SHARED_CHARS,
    min_shared_fraction: float = MIN_SHARED_FRACTION,
) -> Plan[T]:
    """Order `items` for prefix reuse (pure: same input, same plan).

    key: the shareable prompt prefix text of an item (its documents); group: items that must
    stay adjacent (an example's pipelines); shares_prefix: whether the item's prompt really
    starts with `key` (long context yes, RAG no: it is ordered along but never gated).
    """
    if kind == "given":
        return Plan(tuple(items), (None,) * len(items))
    if kind != "prefix":
        raise ValueError(f"unknown schedule {kind!r}: 'prefix' or 'given'")
    groups: dict[Hashable, list[T]] = {}
    for it in items:
        groups.setdefault(group(it), []).append(it)
    by_key: dict[str, list[list[T]]] = {}
    for members in groups.values():
        by_key.setdefault(key(members[0]), []).append(members)

    out: list[T] = []
    after: list[int | None] = []
    placed: list[tuple[str, int]] = []  # (key, index of its first prefix-sharing item)
    fams = _families(list(by_key), min_shared_chars)
    # The biggest family first: its leader is the long pole its followers wait for.
    fams.sort(key=lambda f: -sum(len(k) * len(by_key[k]) for k, _ in f))
    for fam in fams:
        placed.clear()  # families share less than min_shared_chars: never wait across them
        # Deepest shared prefix first; a key asked more than once shares all of itself.
        fam.sort(key=lambda kd: -(len(kd[0]) if len(by_key[kd[0]]) > 1 else kd[1]))
        for k, _ in fam:
            leader: int | None = None
            parent = _parent(k, placed, min_shared_chars, min_shared_fraction)
            # The document's prompts that start with it first, then its other pipelines' (RAG):
            # a short prompt between two of the document's questions can evict its tail.
            flat = [it for members in by_key[k] for it in members]
            for it in [it for it in flat if shares_prefix(it)]:
                after.append(leader if leader is not None else parent)
                if leader is None:
                    leader = len(out)
                    placed.append((k, leader))
                out.append(it)
            for it in [it for it in flat if not shares_prefix(it)]:
                after.append(None)
                out.append(it)
    return Plan(tuple(out), tuple(after), families=len(fams))


def _parent(k: str, placed: Sequence[tuple[str, int]], min_chars: int, min_frac: float) -> int | None:
    """The earliest placed leader sharing the longest prefix with k, if the share is worth a wait."""
    best, best_len = None, 0
    for other, idx in placed:
        n = common_prefix_len(k, other)
        if n > best_len:
            best, best_len = idx, n
    if best_len >= min_chars and best_len >= min_frac * len(k):
        return best
    return None


# The runner's todo entries: (example, pipeline, params hash).
Todo = tuple[Example, Any, str]


def plan_run(
    todo: Sequence[Todo], documents: Mapping[str, Document], kind: Schedule = "prefix"
) -> Plan[Todo]:
    """The runner's hook: the key is the long-context prompt's document text, and a pipeline
    that lays documents out first (a `SharesPrefix`: it has `context_for`) is the one whose
    prefill is shared."""

    def key(t: Todo) -> str:
        return "\n\n".join(documents[d].text for d in t[0].doc_ids if d in documents)

    return plan(
        todo, key=key, group=lambda t: t[0].id,
        shares_prefix=lambda t: isinstance(t[1], SharesPrefix), kind=kind,
    )


class Dispatcher:
    """Concurrency slots handed out in plan order to requests whose leader has been prefilled.

    A plain semaphore is not enough: a follower that waited for its leader would queue behind
    every request already waiting, so a document's later questions would run after all the
    other documents' first ones (evicting it from a small cache). Here every request registers
    at once; a free slot goes to the earliest request in the plan whose `after` is done. A
    request that fails still counts as done, so a failed leader never blocks its followers. A
follower may start once its leader has its first token (`prefilled`), not only when it ends.
    """

    def __init__(self, after: Sequence[int | None], slots: int) -> None:
        if slots < 1:
            raise ValueError(f"need at least one slot, got {slots}")
        self.after = list(after)
        self.free = slots
        self._done = [False] * len(self.after)
        self._ready: list[int] = []  # heap of waiting requests whose leader is done
        self._blocked: dict[int, list[int]] = {}  # leader -> its waiting followers
        self._waiting: dict[int, asyncio.Future[None]] = {}

    def _eligible(self, i: int) -> bool:
        w = self.after[i]
        return w is None or self._done[w]

    def prefilled(self, i: int) -> None:
        """Request i's prompt is in the cache (first token, or it ended): its followers may go.

        Releasing followers at the leader's first token rather than its last lets their prefill
        overlap the leader's decode; the shared blocks are already cached by then."""
        if self._done[i]:
            return
        self._done[i] = True
        for j in self._blocked.pop(i, []):
            heapq.heappush(self._ready, j)
        self._grant()

    def _grant(self) -> None:
        while self.free > 0 and self._ready:
            i = heapq.heappop(self._ready)
            fut = self._waiting.pop(i, None)
            if fut is not None and not fut.done():
                self.free -= 1
                fut.set_result(None)

    def _release(self) -> None:
        self.free += 1
        self._grant()

    @contextlib.asynccontextmanager
    async def turn(self, i: int) -> AsyncIterator[None]:
        if self.free > 0 and self._eligible(i) and not (self._ready and self._ready[0] < i):
            self.free -= 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting[i] = fut
            if self._eligible(i):
                heapq.heappush(self._ready, i)
            else:
                self._blocked.setdefault(self.after[i], []).append(i)  # type: ignore[arg-type]
            try:
                await fut
            except asyncio.CancelledError:
                self._waiting.pop(i, None)
                if fut.done() and not fut.cancelled():
                    self._release()  # granted a slot just as we were cancelled: hand it on
                raise
        try:
            yield
        finally:
            self.prefilled(i)  # a failed leader never blocks its followers
            self._release()
