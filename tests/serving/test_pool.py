"""Replica pool: pure routing tests, then two real vLLM servers with affinity read from /metrics."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from compare.core.types import Document, Example
from compare.serving.client import HttpBackend
from compare.serving.pool import Pool, Ring, assign, doc_key, split_urls, workload
from tests.fixtures.book import book_corpus_dir


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
    pool = Pool([HttpBackend("http://127.0.0.1:1", "m"), HttpBackend("http://127.0.0.1:2", "m")], 2)
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


@pytest.mark.slow
def test_two_managed_replicas_keep_each_document_on_one_replica(tmp_path: Path) -> None:
    """`replicas = 2`: two real vLLM servers started by the run, each on its own CPU core; every
    question of a document goes to one of them, and its second question finds the first's cache."""
    from compare.run.execute import execute
    from compare.run.spec import validate_spec

    spec = validate_spec({
        "corpus": {"kind": "jsonl", "path": str(book_corpus_dir(tmp_path))},
        "pipelines": [{"kind": "long_context", "max_tokens": 4}],
        "server": {"replicas": 2, "max_model_len": 2048, "kv_cache_gib": 1, "router": "client"},
        "concurrency": 2,
    })
    db = tmp_path / "pool.duckdb"
    said: list[str] = []
    res = execute(spec, db, say=said.append)
    assert res.done == 12 and res.errors == 0

    with duckdb.connect(str(db), read_only=True) as con:
        server, base = con.execute("SELECT server, base_url FROM runs").fetchone() or ("{}", "")
        rows = con.execute(
            "SELECT example_id, cached_tokens, prompt_tokens, replica FROM predictions ORDER BY example_id"
        ).fetchall()
        stats = dict(con.execute("SELECT name, value FROM server_stats").fetchall())
    info = json.loads(server)
    urls = info["replicas"]
    assert len(urls) == 2 and base == ",".join(urls)
    # Each managed server was bound to its own core(s), and that is recorded with the run.
    binds = [s["env"]["VLLM_CPU_OMP_THREADS_BIND"] for s in info["servers"]]
    assert len(binds) == 2 and not set(binds[0].split(",")) & set(binds[1].split(","))
    affinity = info["affinity"]
    assert set(affinity) == {f"d{d}" for d in range(6)}
    per_replica = Counter(affinity.values())
    assert len(per_replica) == 2  # both replicas used

    # Both servers are the run's own: each served exactly its documents' questions (2 each), and
    # every row names the replica its document is mapped to.
    for i, url in enumerate(urls):
        assert stats[f"replica{i}/vllm:request_success"] == 2 * per_replica[url]
    assert stats["vllm:request_success"] == 12
    assert all(rep == affinity[ex_id.split("-")[0]] for ex_id, _, _, rep in rows)

    # Affinity is what makes the second question warm: it found its document in that cache.
    by_doc: dict[str, list[tuple[int, int]]] = {}
    for ex_id, cached, prompt, _ in rows:
        by_doc.setdefault(ex_id.split("-")[0], []).append((cached or 0, prompt))
    for doc, preds in by_doc.items():
        assert max(c for c, _ in preds) >= 0.5 * preds[0][1], doc


def test_replica_bindings_split_cores_or_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from compare.serving.replicas import bindings, devices_per_replica
    from compare.serving.server import ServerError

    assert devices_per_replica([]) == 1
    assert devices_per_replica(["--tensor-parallel-size", "2", "-pp=2"]) == 4
    with pytest.raises(ServerError, match="whole number"):
        devices_per_replica(["-tp", "two"])
    cpu = bindings(2, cpu=True)
    cores = [set(dict(b)["VLLM_CPU_OMP_THREADS_BIND"].split(",")) for b in cpu]
    assert len(cores) == 2 and not cores[0] & cores[1] and all(cores)
    with pytest.raises(ServerError, match="CPU cores"):
        bindings(10_000, cpu=True)
    # GPUs: whatever is visible is split into disjoint groups of tp x pp devices.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    gpus = [dict(b)["CUDA_VISIBLE_DEVICES"] for b in bindings(2, cpu=False, extra_args=["-tp", "2"])]
    assert gpus == ["0,1", "2,3"]
    with pytest.raises(ServerError, match="need 8 GPUs; 4 visible"):
        bindings(4, cpu=False, extra_args=["-tp", "2"])


def test_replicas_are_for_managed_servers_only() -> None:
    from compare.run.spec import SpecError, validate_spec

    with pytest.raises(SpecError, match="replicas"):
        validate_spec({"server": {"replicas": 2, "base_url": "http://a:8000"}})
    a, b = validate_spec({}), validate_spec({"server": {"replicas": 3}})
    assert a.run_id() == b.run_id()  # where the servers live is not what the run measures
