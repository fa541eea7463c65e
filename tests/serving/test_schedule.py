"""The prefix-sharing schedule: a pure function, pinned on small hand-made corpora."""

from __future__ import annotations

import asyncio
import random

import pytest

from compare.core.types import Document, Example
from compare.serving.schedule import Dispatcher, Plan, common_prefix_len, plan, plan_run

BOOK = "".join(f"Sentence {i} of the book goes here. " for i in range(400))  # ~14k chars


def needle_doc(length: int, depth: float, tag: str) -> str:
    """A needle grid document: the book's first `length` chars with a needle at `depth`."""
    hay = BOOK[:length]
    pos = int(length * depth)
    return hay[:pos] + f"NEEDLE {tag}. " + hay[pos:]


def test_common_prefix_len() -> None:
    assert common_prefix_len("", "abc") == 0
    assert common_prefix_len("abc", "abc") == 3
    assert common_prefix_len("abcd", "abc") == 3
    assert common_prefix_len("abxd", "abyd") == 2
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("ab") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("ab") for _ in range(rng.randint(0, 30)))
        want = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        assert common_prefix_len(a, b) == want


Item = tuple[str, str, str]  # (example id, pipeline, document key)


def _plan(items: list[Item], **kw: object) -> Plan[Item]:
    return plan(
        items, key=lambda t: t[2], group=lambda t: t[0], shares_prefix=lambda t: t[1] == "lc",
        **kw,  # type: ignore[arg-type]
    )


def test_same_document_questions_run_back_to_back_first_cold_rest_wait() -> None:
    a, b = "A" * 5000, "B" * 5000
    items = [(f"{d}{q}", p, doc) for q in range(3) for d, doc in (("a", a), ("b", b)) for p in ("lc", "rag")]
    p = _plan(items)
    got = [(t[0], t[1]) for t in p.items]
    # A document's long-context questions back to back, then its RAG questions, then the next one.
    assert got == [("a0", "lc"), ("a1", "lc"), ("a2", "lc"), ("a0", "rag"), ("a1", "rag"), ("a2", "rag"),
                   ("b0", "lc"), ("b1", "lc"), ("b2", "lc"), ("b0", "rag"), ("b1", "rag"), ("b2", "rag")]
    # The first long-context request of a document is cold; the later ones wait for it.
    assert p.after == (None, 0, 0, None, None, None, None, 6, 6, None, None, None)
    assert p.families == 2


def test_given_keeps_order_and_never_waits() -> None:
    items = [("x", "lc", "Z" * 3000), ("y", "lc", "Z" * 3000)]
    p = _plan(items, kind="given")
    assert p.items == tuple(items) and p.after == (None, None)
    with pytest.raises(ValueError):
        _plan(items, kind="fastest")


def test_needle_grid_deepest_shared_prefix_leads_and_all_others_wait_for_it() -> None:
    lengths, depths = (3000, 6000, 12000), (0.1, 0.5, 0.9)
    items = [(f"{n}-{d}", "lc", needle_doc(n, d, f"{n}-{d}")) for d in depths for n in lengths]
    random.Random(1).shuffle(items)
    p = _plan(items)
    assert sorted(p.items) == sorted(items)
    # Needles at 10% leave too little shared haystack to join: they are families of their own.
    assert p.families == 5
    leader = p.items[0]
    # The leader's needle is the second deepest (12000 x 0.5): every other document's haystack
    # before its needle is a prefix of the leader's haystack before its needle.
    assert leader[0] in ("12000-0.5", "12000-0.9")
    pos = {t[0]: t[2].index("NEEDLE") for t in items}
    for i, (t, w) in enumerate(zip(p.items, p.after, strict=True)):
        if i == 0:
            assert w is None
            continue
        shared = min(pos[t[0]], pos[leader[0]])
        if shared >= 2000 and shared >= 0.25 * len(t[2]):
            assert w == 0, t[0]  # waits for the leader only: the others then run in parallel
        else:
            assert w is None, t[0]  # too little shared to be worth waiting for


def test_unrelated_documents_never_wait_and_families_split_on_small_overlap() -> None:
    common = "Chapter one. " * 50  # 650 chars: below the 2000-char threshold
    items = [(str(i), "lc", common + f"Document {i} " * 400) for i in range(4)]
    p = _plan(items)
    assert p.after == (None,) * 4 and p.families == 4
    # A lower threshold joins them into one family and gates on the shared part.
    p2 = _plan(items, min_shared_chars=500, min_shared_fraction=0.0)
    assert p2.families == 1 and p2.after[1:] == (0, 0, 0)


def test_sorted_keys_put_long_common_prefixes_next_to_each_other() -> None:
    x1, x2 = "X" * 3000 + "one" * 10, "X" * 3000 + "two" * 10
    y1 = "Y" * 3000 + "three" * 10
    items = [("x1", "lc", x1), ("y1", "lc", y1), ("x2", "lc", x2)]
    p = _plan(items)
    assert [t[0] for t in p.items][:2] in (["x1", "x2"], ["x2", "x1"])
    assert p.after == (None, 0, None)


def test_plan_rejects_a_wait_on_a_later_item() -> None:
    with pytest.raises(ValueError):
        Plan(("a", "b"), (1, None))


def test_plan_run_uses_documents_and_gates_only_long_context() -> None:
    class LC:
        name = "long_context"

        def context_for(self, ex: Example) -> str:  # the marker the hook looks for
            return ""

    class Rag:
        name = "rag"

    doc = Document("d", "The same long document. " * 200)
    exs = [Example(f"q{i}", ("d",), f"question {i}?", ("a",)) for i in range(3)]
    lc, rag = LC(), Rag()
    todo = [(ex, pipe, "h") for ex in exs for pipe in (lc, rag)]
    p = plan_run(todo, {"d": doc})
    assert [(t[0].id, t[1].name) for t in p.items] == [
        ("q0", "long_context"), ("q1", "long_context"), ("q2", "long_context"),
        ("q0", "rag"), ("q1", "rag"), ("q2", "rag"),
    ]
    assert p.after == (None, 0, 0, None, None, None)


async def _run_dispatched(after: list[int | None], slots: int, fail: set[int] = frozenset(),  # type: ignore[assignment]
                          dur: float = 0.01) -> list[int]:
    """Start every request at once (as the runner does); return the order they got a slot."""
    d = Dispatcher(after, slots)
    started: list[int] = []

    async def req(i: int) -> None:
        async with d.turn(i):
            started.append(i)
            await asyncio.sleep(dur)
            if i in fail:
                raise RuntimeError("failed request")

    await asyncio.gather(*(req(i) for i in range(len(after))), return_exceptions=True)
    return started


async def test_dispatcher_gives_a_freed_slot_to_the_earliest_ready_request() -> None:
    # Plan: doc A leader 0, followers 1, 2; doc B leader 3, follower 4; a RAG request 5.
    after: list[int | None] = [None, 0, 0, None, 3, None]
    # One slot: exactly the plan order (a semaphore would run 3 and 5 before the followers).
    assert await _run_dispatched(after, 1) == [0, 1, 2, 3, 4, 5]
    # Two slots: A's leader and B's leader first, then the followers before the RAG request.
    order = await _run_dispatched(after, 2)
    assert order[:2] == [0, 3] and order.index(1) < order.index(5) and order.index(4) < order.index(5)


async def test_dispatcher_releases_followers_after_a_failed_leader() -> None:
    assert await _run_dispatched([None, 0, 0], 2, fail={0}) == [0, 1, 2]


async def test_dispatcher_hands_on_the_slot_of_a_cancelled_waiter() -> None:
    d = Dispatcher([None, None, None], 1)
    started: list[int] = []

    async def req(i: int) -> None:
        async with d.turn(i):
            started.append(i)
            await asyncio.sleep(0.02)

    tasks = [asyncio.ensure_future(req(i)) for i in range(3)]
    await asyncio.sleep(0.005)
    tasks[1].cancel()  # waiting for the slot held by 0
    await asyncio.gather(*tasks, return_exceptions=True)
    assert started == [0, 2] and d.free == 1
    with pytest.raises(ValueError):
        Dispatcher([None], 0)


async def test_dispatcher_starts_followers_at_the_leaders_first_token() -> None:
    # The leader's prompt is cached once it has its first token: a follower with a free slot
    # starts then (its prefill overlapping the leader's decode), not when the leader ends.
    d = Dispatcher([None, 0], 2)
    events: list[str] = []
    first_token = asyncio.Event()

    async def leader() -> None:
        async with d.turn(0):
            events.append("leader start")
            await asyncio.sleep(0.01)
            d.prefilled(0)
            first_token.set()
            await asyncio.sleep(0.05)  # decoding
            events.append("leader end")

    async def follower() -> None:
        async with d.turn(1):
            events.append("follower start")

    await asyncio.gather(leader(), follower())
    assert events == ["leader start", "follower start", "leader end"]
    # Without the signal the follower waits for the end (the failure path relies on it too).
    assert await _run_dispatched([None, 0], 2) == [0, 1]
