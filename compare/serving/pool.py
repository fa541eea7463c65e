"""Several OpenAI-compatible endpoints (vLLM replicas) used as one, with cache affinity.

A replica's prefix cache is its own: a document's second question is only cheap on the replica
that prefilled the first. So requests are routed by document, never round-robin: every
question on one document goes to the same replica (consistent hashing on the example's
doc_ids), while documents are spread so that no replica gets much more than its share of
the work (consistent hashing with bounded loads, Mirrokni et al. 2018). The mapping is a pure
function of the corpus and the replica list, so a resumed run sends each document where its
cache already is, and adding a replica moves only the documents that must move.

Each replica has its own concurrency limit (the run's `concurrency` is per replica), so one
slow replica cannot starve the other; its slots go to requests in the schedule's order. A single
endpoint is the one-replica case of the same code, which is how the runner always talks to
servers.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from compare.core.endpoints import DEFAULT_KEY_ENV, Endpoint, TokenParam
from compare.core.errors import BackendError
from compare.core.secrets import HeaderValue
from compare.core.types import Document, Example
from compare.serving import capabilities as capability
from compare.serving.client import HttpBackend
from compare.serving.schedule import Dispatcher
from compare.serving.tokenizers import LocalTokenizer

VNODES = 64  # points per replica on the ring: enough for an even split of the key space
SLACK = 1.25  # a replica may take up to 25% more than its share before documents spill over
PER_QUESTION_CHARS = 1000  # a warm question's cost (question prefill + decode) in document chars


def _point(label: str) -> int:
    """A stable position on the ring (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big")


def doc_key(example: Example) -> str:
    """What affinity is keyed on: the example's documents (their prompt prefix)."""
    return "\x1f".join(example.doc_ids)


class Ring:
    """Consistent-hash ring over replica indices."""

    def __init__(self, n: int, vnodes: int = VNODES) -> None:
        if n < 1:
            raise ValueError("a ring needs at least one replica")
        self.n = n
        pts = sorted((_point(f"replica-{r}#{v}"), r) for r in range(n) for v in range(vnodes))
        self._points = [p for p, _ in pts]
        self._owners = [r for _, r in pts]

    def walk(self, key: str) -> list[int]:
        """Replicas in ring order from the key's position, each once."""
        start = bisect.bisect(self._points, _point(key))
        seen: list[int] = []
        for i in range(len(self._points)):
            r = self._owners[(start + i) % len(self._points)]
            if r not in seen:
                seen.append(r)
                if len(seen) == self.n:
                    break
        return seen


def assign(weights: Mapping[str, float], n: int, *, slack: float = SLACK) -> dict[str, int]:
    """Each key to a replica: its ring owner unless that one is full, then the next on the ring.

    Full means over `slack` x the mean load (or the heaviest single key, which must fit
    somewhere). Keys are placed heaviest first (ties by key), so the result does not depend on
    corpus order and the big documents, placed first, sit on their ring owners.
    """
    ring = Ring(n)
    total = sum(weights.values())
    cap = max(slack * total / n, max(weights.values(), default=0.0))
    load = [0.0] * n
    out: dict[str, int] = {}
    for key in sorted(weights, key=lambda k: (-weights[k], k)):
        w = weights[key]
        order = ring.walk(key)
        r = next((r for r in order if load[r] + w <= cap + 1e-9), min(order, key=lambda r: load[r]))
        out[key] = r
        load[r] += w
    return out


def workload(examples: Sequence[Example], documents: Mapping[str, Document]) -> dict[str, float]:
    """Estimated work per document key: one cold prefill of its text plus each question."""
    out: dict[str, float] = {}
    for ex in examples:
        k = doc_key(ex)
        if k not in out:
            out[k] = float(sum(len(documents[d].text) for d in ex.doc_ids if d in documents))
        out[k] += PER_QUESTION_CHARS
    return out


@dataclass(frozen=True)
class Lane:
    """Where one request goes: a replica's client and that replica's slots (in plan order)."""

    index: int
    backend: HttpBackend
    dispatcher: Dispatcher

    @property
    def name(self) -> str:
        return self.backend.base_url

    def turn(self, i: int) -> AbstractAsyncContextManager[None]:
        """Wait for request i's leader and a free slot on this replica; release on exit."""
        return self.dispatcher.turn(i)


@dataclass(frozen=True)
class Access:
    """How every replica of a pool is reached (see compare.core.endpoints.Endpoint)."""

    api_key_env: str = DEFAULT_KEY_ENV
    headers: Mapping[str, str | HeaderValue] = field(default_factory=dict, repr=False)  # values secret
    token_param: TokenParam = "auto"
    tokenizer: LocalTokenizer | None = None
    declared_max_model_len: int | None = None


class Pool:
    """Replicas of one model; `lane(example)` is the replica and slots for that example."""

    def __init__(self, backends: Sequence[HttpBackend], concurrency: int = 1, *, owned: bool = False,
                 stats: Sequence[HttpBackend] = ()) -> None:
        if not backends:
            raise ValueError("a pool needs at least one backend")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.backends = list(backends)
        # Where the counters are read: the replicas themselves when a router fronts them (the
        # router's own /metrics are not the engines' counters); else the backends.
        self.stats = list(stats)
        self.concurrency = concurrency
        self._ring = Ring(len(self.backends))
        self.route: dict[str, int] = {}
        self._owned = owned

    @classmethod
    def connect(
        cls, urls: Sequence[str], model: str, *, concurrency: int = 1, timeout_s: float = 600.0,
        access: Access | None = None, stats_urls: Sequence[str] = (),
    ) -> Pool:
        """Clients for each URL (closed with the pool), all reached the same way (`access`);
        `stats_urls`: the replicas behind a router, whose own /metrics are the run's counters."""
        if len(set(urls)) != len(urls):
            raise ValueError(f"the same base URL is listed twice: {list(urls)}")
        a = access or Access()

        def client(u: str, timeout: float) -> HttpBackend:
            return HttpBackend(Endpoint(u, a.api_key_env, a.headers, a.token_param), model, timeout_s=timeout,
                               tokenizer=a.tokenizer, declared_max_model_len=a.declared_max_model_len)

        return cls([client(u, timeout_s) for u in urls], concurrency, owned=True,
                   stats=[client(u, 30.0) for u in stats_urls])

    async def discover(self, *, chat: bool = True) -> dict[str, Any]:
        """Each replica's capabilities (they serve one model the same way: the first's are the
        run's; a replica that differs is named). `chat`: also the one-chat probe of request
        fields (a liveness check skips it)."""
        caps = await asyncio.gather(*(b.discover(chat=chat) for b in self.backends))
        first = caps[0]["vllm"]
        differ = [b.base_url for b, c in zip(self.backends, caps, strict=True) if c["vllm"] != first]
        spent = [c["probe_chat_usage"] for c in caps if c.get("probe_chat_usage")]  # each replica's chat
        return {**caps[0], **({"differing_replicas": differ} if differ else {}),
                **({"probe_chat_usage": capability.total_usage(spent)} if len(spent) > 1 else {})}

    def __len__(self) -> int:
        return len(self.backends)

    @property
    def primary(self) -> HttpBackend:
        """The replica used for work that is not a question (tokenizing while building a corpus)."""
        return self.backends[0]

    def plan(self, examples: Sequence[Example], documents: Mapping[str, Document]) -> dict[str, int]:
        """Fix every document's replica up front (balanced by estimated work)."""
        if len(self.backends) > 1:
            self.route = assign(workload(examples, documents), len(self.backends))
        return self.route

    def replica_of(self, example: Example) -> int:
        if len(self.backends) == 1:
            return 0
        key = doc_key(example)
        r = self.route.get(key)
        if r is None:  # not planned: plain consistent hashing, remembered for the next question
            r = self.route[key] = self._ring.walk(key)[0]
        return r

    def lanes(self, examples: Sequence[Example], after: Sequence[int | None]) -> list[Lane]:
        """Each request's lane, for requests in plan order with the plan's `after`.

        `concurrency` slots per replica; a request waits for its leader only when both run on
        the same replica (another replica's prefix cache would not help it)."""
        idx = [self.replica_of(ex) for ex in examples]
        local = [a if a is not None and idx[a] == idx[i] else None for i, a in enumerate(after)]
        dispatchers = [Dispatcher(local, self.concurrency) for _ in self.backends]
        return [Lane(r, self.backends[r], dispatchers[r]) for r in idx]

    def describe(self) -> dict[str, Any]:
        """What the run records: the replicas and which one served each document key."""
        if len(self.backends) == 1:
            return {}
        urls = [b.base_url for b in self.backends]
        return {
            "replicas": urls,
            "per_replica_concurrency": self.concurrency,
            "affinity": {k: urls[r] for k, r in sorted(self.route.items())},
        }

    async def metrics(self) -> dict[str, float]:
        """Counters summed over replicas, plus each replica's own as `replica<i>/<name>`."""
        sources = self.stats or self.backends
        per = await asyncio.gather(*(b.metrics() for b in sources))
        if len(per) == 1:
            return per[0]
        out: dict[str, float] = {}
        for i, m in enumerate(per):
            for k, v in m.items():
                out[k] = out.get(k, 0.0) + v
                out[f"replica{i}/{k}"] = v
        return out

    async def health(self) -> bool:
        """All replicas answer: a dead one must stop the run rather than fail its documents."""
        return all(await asyncio.gather(*(b.health() for b in self.backends)))

    async def aclose(self) -> None:
        if self._owned:
            await asyncio.gather(*(b.aclose() for b in [*self.backends, *self.stats]))

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def health_of(urls: Sequence[str], access: Access) -> list[bool]:
    """Which replicas still answer, each reached as the run reaches it (its key and headers)
    and asked what it offers first: a hosted endpoint has no /health, and without the key
    every check would read 401, i.e. down."""
    async def one(url: str) -> bool:
        async with Pool.connect([url], "health-check", timeout_s=30.0, access=access) as pool:
            try:
                await pool.discover(chat=False)
            except BackendError:
                return False
            return await pool.primary.health()

    return list(await asyncio.gather(*(one(u) for u in urls)))


def split_urls(values: str | Sequence[str] | None) -> list[str]:
    """Base URLs from a spec (string or list) or repeated/comma-separated CLI options."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [u.strip().rstrip("/") for item in items for u in item.split(",") if u.strip()]
