"""The cache-survival model (compare/analysis/cache_model.py): a sequence worked by hand, and
the properties any LRU prefix cache has, checked by hypothesis over random workloads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from compare.analysis.cache_model import (
    Request,
    Workload,
    blocks_from_args,
    expected_hit_rate,
    predict,
    workload_requests,
)


def test_a_sequence_worked_by_hand() -> None:
    """Block size 4, a pool of 4 blocks (3 usable: one is vLLM's null block). Documents A and B
    each share 8 tokens (2 full blocks), each prompt is 10 tokens, no output.

    1. A q0: nothing cached, hit 0. Holds A0 A1 + a partial block; freed: LRU order A1, A0.
    2. A q1: A0 A1 cached; at most (10-1)//4 = 2 blocks: hit 8. LRU after: A1, A0.
    3. B q0: hit 0. B0, B1 and the partial need 3 blocks: A1, A0 and the free slot go.
       After: B1, B0 (A is gone).
    4. A q0: hit 0 (evicted). A0 A1 + partial evict B1, B0. After: A1, A0.
    5. A q0: hit 8.
    Hits 0 + 8 + 0 + 0 + 8 = 16 of 50 prompt tokens: 0.32.
    With a pool of 6 (5 usable) both documents fit: step 4 hits 8 as well: 24 / 50 = 0.48."""
    reqs = [Request("A", 10, 8, "q0"), Request("A", 10, 8, "q1"), Request("B", 10, 8, "q0"),
            Request("A", 10, 8, "q0"), Request("A", 10, 8, "q0")]
    small = predict(reqs, blocks=4, block_size=4)
    assert small.per_request == (0, 8, 0, 0, 8)
    assert small.hit_rate == 16 / 50
    assert predict(reqs, blocks=6, block_size=4).per_request == (0, 8, 0, 8, 8)


def test_the_last_prompt_token_is_always_recomputed() -> None:
    """A 8-token prompt asked twice (block 4): the second may reuse only (8-1)//4 = 1 block."""
    reqs = [Request("A", 8, 8, "q"), Request("A", 8, 8, "q")]
    assert predict(reqs, blocks=10, block_size=4).per_request == (0, 4)


def test_the_same_question_shares_past_the_document() -> None:
    """Retrieval-like: nothing shared but a repeated question, whose whole prompt matches."""
    reqs = [Request("A", 13, 0, "q0"), Request("A", 13, 0, "q1"), Request("A", 13, 0, "q0")]
    assert predict(reqs, blocks=20, block_size=4).per_request == (0, 0, 12)


def test_output_blocks_take_room() -> None:
    """Output tokens fill blocks that push a document out. Pool of 7 (6 usable), block 4: A
    leaves 2 cached blocks; B with 9 output tokens (17 tokens of KV: 4 full blocks + a partial) takes
    5, so one of A's goes: its LAST block, since vLLM frees a request's blocks tail first. A
    then reuses only its first block (4 tokens). Without output B takes 3 and A keeps both (8)."""
    a, b_short = Request("A", 9, 8, "q"), Request("B", 9, 8, "q")
    b_long = Request("B", 9, 8, "q", output_tokens=9)  # 9 + 9 - 1 = 17 tokens of KV
    assert predict([a, b_long, a], blocks=7, block_size=4).per_request == (0, 0, 4)
    assert predict([a, b_short, a], blocks=7, block_size=4).per_request == (0, 0, 8)


def test_the_last_sampled_token_has_no_kv() -> None:
    """The rule the first measured run caught (benchmarks/cache_survival.py, 3 of 48 requests
    off before it): a 7-token prompt answered with one token leaves 7 tokens of KV (the sampled
    token is never fed back), so with block 4 it caches 1 block and its second block stays partial.
    Pool 5 (4 usable): A, B, C cache one block each and A survives (hit 4). Counting the output
    token as KV would cache 2 blocks each and push A out."""
    reqs = [Request(d, 7, 7, "q", output_tokens=1) for d in "ABCA"]
    assert predict(reqs, blocks=5, block_size=4).per_request == (0, 0, 0, 4)


def test_recorded_args_give_the_pool() -> None:
    assert blocks_from_args(["--model", "m", "--num-gpu-blocks-override", "17"]) == (17, 128)
    assert blocks_from_args(["--num-gpu-blocks-override=9", "--block-size", "16"]) == (9, 16)
    assert blocks_from_args(["--model", "m"]) == (None, 128)


def test_workload_draws_popular_documents_more_and_hits_grow_with_the_cache() -> None:
    w = Workload({f"d{i}": 300 for i in range(6)}, zipf=1.2, questions_per_doc=2, requests=200)
    reqs = workload_requests(w)
    counts = [sum(r.doc == f"d{i}" for r in reqs) for i in range(6)]
    assert counts[0] > counts[5]
    small, big = expected_hit_rate(w, blocks=6, draws=3), expected_hit_rate(w, blocks=40, draws=3)
    assert 0 <= small < big <= 1


requests_st = st.lists(
    st.builds(
        Request,
        doc=st.sampled_from("ABCDE"),
        prompt_tokens=st.integers(1, 60),
        shared_tokens=st.integers(0, 60),
        question=st.sampled_from(["q0", "q1", "q2"]),
        output_tokens=st.integers(0, 20),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(reqs=requests_st, blocks=st.integers(0, 40), size=st.sampled_from([1, 4, 16]))
def test_hit_rate_is_a_share_of_prompt_tokens(reqs: list[Request], blocks: int, size: int) -> None:
    pred = predict(reqs, blocks, size)
    assert pred.query_tokens == sum(r.prompt_tokens for r in reqs)
    for r, hit in zip(reqs, pred.per_request, strict=True):
        assert 0 <= hit < max(r.prompt_tokens, 1) and hit % size == 0
    if pred.hit_rate is not None:
        assert 0.0 <= pred.hit_rate <= 1.0


@settings(max_examples=150, deadline=None)
@given(reqs=requests_st, blocks=st.integers(0, 40), more=st.integers(1, 20), size=st.sampled_from([1, 4, 16]))
def test_a_bigger_cache_never_hits_less(reqs: list[Request], blocks: int, more: int, size: int) -> None:
    """LRU is a stack algorithm: a bigger cache holds what a smaller one would, and more."""
    assert predict(reqs, blocks + more, size).hit_tokens >= predict(reqs, blocks, size).hit_tokens


@settings(max_examples=50, deadline=None)
@given(reqs=requests_st, size=st.sampled_from([1, 4, 16]))
def test_no_hits_without_a_usable_block_and_none_on_first_sight(reqs: list[Request], size: int) -> None:
    for blocks in (0, 1):  # one block is the null block: nothing can be cached
        assert predict(reqs, blocks, size).hit_tokens == 0
    seen: set[str] = set()
    for r, hit in zip(reqs, predict(reqs, 1000, size).per_request, strict=True):
        if r.doc not in seen:
            assert hit == 0  # a document's first request finds nothing of it
        seen.add(r.doc)
