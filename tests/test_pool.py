"""Replica pool: pure routing tests, then two real vLLM servers with affinity read from /metrics."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from compare import models
from compare.backend import Backend
from compare.pool import Pool, Ring, assign, doc_key, split_urls, workload
from compare.types import Document, Example


def test_ring_walk_visits_each_replica_once_and_is_stable() -> None:
    ring = Ring(3)
    for key in ("a", "b", "doc-17"):
        order = ring.walk(key)
        assert sorted(order) == [0, 1, 2]
        assert Ring(3).walk(key) == order  # sha256, not hash(): same in every process


def test_assign_balances_and_keeps_keys_in_place_when_a_replica_is_added() -> None:
    weights = {f"doc-{i}": 1000.0 + 37 * (i % 5) for i in range(60)}
    two = assign(weights, 2)
    loads = Counter[int]()
    for k, r in two.items():
        loads[r] += int(weights[k])
    total = sum(weights.values())
    assert set(two.values()) == {0, 1}
    assert max(loads.values()) <= 1.25 * total / 2 + max(weights.values())
    three = assign(weights, 3)
    moved = sum(two[k] != three[k] for k in weights)
    assert moved < 0.6 * len(weights)  # consistent hashing: most documents stay where they were
    assert assign(dict(reversed(list(weights.items()))), 2) == two  # corpus order does not matter


def test_one_heavy_document_still_gets_a_replica() -> None:
    out = assign({"huge": 1e6, "a": 10.0, "b": 10.0}, 2)
    assert out["a"] != out["huge"] or out["b"] != out["huge"]


def test_lane_affinity_by_documents_and_workload() -> None:
    docs = {"d1": Document("d1", "x" * 5000), "d2": Document("d2", "y" * 100)}
    exs = [Example(f"q{i}", (d,), "?", ("a",)) for i, d in enumerate(["d1", "d2", "d1", "d1"])]
    w = workload(exs, docs)
    assert w == {"d1": 5000 + 3 * 1000, "d2": 100 + 1000}
    pool = Pool([Backend("http://127.0.0.1:1", "m"), Backend("http://127.0.0.1:2", "m")], 2)
    route = pool.plan(exs, docs)
    assert set(route) == {"d1", "d2"}
    lanes = pool.lanes(exs, [None, None, 0, 0])
    assert lanes[0].index == lanes[2].index == lanes[3].index
    d = lanes[0].dispatcher
    assert lanes[2].dispatcher is d and d.free == 2  # per-replica slots
    assert d.after == [None, None, 0, 0]  # same replica: q2, q3 wait for q0
    assert lanes[1].dispatcher is not d or lanes[1].index == lanes[0].index
    # A leader on another replica warms nothing here: no wait across replicas.
    cross = pool.lanes([exs[1], exs[0]], [None, 0])
    if cross[0].index != cross[1].index:
        assert cross[1].dispatcher.after == [None, None]
    unplanned = Example("q9", ("d3",), "?", ("a",))
    assert pool.replica_of(unplanned) == pool.replica_of(unplanned)
    info = pool.describe()
    assert info["replicas"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert info["affinity"][doc_key(exs[0])] == lanes[0].name


def test_split_urls() -> None:
    assert split_urls(None) == []
    assert split_urls("http://a:1/") == ["http://a:1"]
    assert split_urls(["http://a:1,http://b:2", " http://c:3 "]) == ["http://a:1", "http://b:2", "http://c:3"]
    with pytest.raises(ValueError):
        Pool.connect(["http://a:1", "http://a:1"], "m")


# --- two real servers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_server(model_path: Path) -> Iterator[str]:
    from compare.serve import ManagedServer, ServerConfig

    config = ServerConfig(
        model_path=str(model_path), served_name=models.DEFAULT_MODEL, max_model_len=2048, kv_cache_gib=1
    )
    with ManagedServer(config, progress=lambda m: None) as server:
        yield server.base_url


def _corpus_dir(tmp: Path, n_docs: int = 6, questions: int = 2) -> Path:
    from corpora.needle import book_text

    book = book_text("les_miserables", "BOOK FIRST—A JUST MAN", None)
    with (tmp / "documents.jsonl").open("w") as f:
        for d in range(n_docs):
            start = 20_000 + d * 3_000
            f.write(json.dumps({"id": f"d{d}", "text": book[start : start + 1_600]}) + "\n")
    with (tmp / "questions.jsonl").open("w") as f:
        for d in range(n_docs):
            for q in range(questions):
                row = {"id": f"d{d}-q{q}", "doc_ids": [f"d{d}"],
                       "question": f"Who is named in sentence {q + 1}?", "answers": ["x"]}
                f.write(json.dumps(row) + "\n")
    return tmp


@pytest.mark.slow
async def test_two_replicas_keep_each_document_on_one_replica(
    server_url: str, second_server: str, tmp_path: Path
) -> None:
    from compare.app import execute_async
    from compare.spec import validate_spec
    from compare.store import Store

    urls = [server_url, second_server]
    spec = validate_spec({
        "corpus": {"kind": "jsonl", "path": str(_corpus_dir(tmp_path))},
        "pipelines": [{"kind": "long_context", "max_tokens": 4}],
        "concurrency": 2,
    })
    backends = [Backend(u, models.DEFAULT_MODEL) for u in urls]
    before = [await b.metrics() for b in backends]
    db = tmp_path / "pool.duckdb"
    with Store(db) as store:
        res = await execute_async(spec, store, urls, {"managed": False})
    after = [await b.metrics() for b in backends]
    for b in backends:
        await b.aclose()
    assert res.done == 12 and res.errors == 0

    with duckdb.connect(str(db), read_only=True) as con:
        server, base = con.execute("SELECT server, base_url FROM runs").fetchone() or ("{}", "")
        rows = con.execute(
            "SELECT example_id, cached_tokens, prompt_tokens FROM predictions ORDER BY example_id"
        ).fetchall()
        stats = dict(con.execute("SELECT name, value FROM server_stats").fetchall())
    info = json.loads(server)
    assert info["replicas"] == [u.rstrip("/") for u in urls] and base == ",".join(info["replicas"])
    affinity = info["affinity"]
    assert set(affinity) == {f"d{d}" for d in range(6)}
    per_replica = Counter(affinity.values())
    assert len(per_replica) == 2  # both replicas used

    # Each server served exactly the questions of the documents routed to it (2 per document):
    # the second server is ours alone, so its count is exact; the session one may be shared.
    done = [a.get("vllm:request_success", 0) - b.get("vllm:request_success", 0)
            for a, b in zip(after, before, strict=True)]
    assert done[1] == 2 * per_replica[info["replicas"][1]]
    assert done[0] >= 2 * per_replica[info["replicas"][0]]
    assert stats["replica1/vllm:request_success"] == done[1]
    assert stats["vllm:request_success"] >= 12

    # Affinity is what makes the second question warm: it found its document in that cache.
    by_doc: dict[str, list[tuple[int, int]]] = {}
    for ex_id, cached, prompt in rows:
        by_doc.setdefault(ex_id.split("-")[0], []).append((cached or 0, prompt))
    for doc, preds in by_doc.items():
        assert max(c for c, _ in preds) >= 0.5 * preds[0][1], doc
