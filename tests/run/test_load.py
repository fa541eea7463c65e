"""`ragvslc load` (issue 28): open-loop traffic per pipeline, every request a stored, scored row.

Arrival plans are checked on their own; the send timing, saturation, Ctrl-C and resume against a
scripted vLLM-shaped server on loopback (a fake below the client: its answers are instant or
slow on purpose, so timing is the generator's own); and one short sweep of long context and RAG
against the real vLLM (RAGVSLC_TEST_BASE_URL: two short documents, two short steps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from compare.analysis.load import step_metrics
from compare.core.types import Example
from compare.run.arrivals import Point, offsets, popularity, requests
from compare.run.load import load_run_id, run_load, with_traffic
from compare.run.load_spec import LoadSpec
from compare.run.spec import SpecError, validate_spec
from compare.serving import weights as models
from compare.store.db import Store
from tests.fixtures.interruptible import popen
from tests.fixtures.sse_server import DONE, VllmRoutes, serve, sse_chunk, sse_usage

ROOT = Path(__file__).resolve().parents[2]
DOCS = {
    "harbour": "The harbour town of Wendmere kept its records in a stone tower by the quay. The secret code "
               "of the tower is 7361. The keeper of the tower was a patient woman named Ilse Marrow.",
    "orchard": "The orchard behind the mill grew pears and quinces. The miller's dog was called Bramble. "
               "Every spring the blossom fell into the mill race and floated down to the river.",
}
QUESTIONS = [("q1", "harbour", "What is the secret code of the tower?", "7361"),
             ("q2", "harbour", "Who kept the tower?", "Ilse Marrow"),
             ("q3", "orchard", "What was the miller's dog called?", "Bramble"),
             ("q4", "orchard", "What fruit grew in the orchard?", "pears")]


def _corpus(tmp: Path) -> Path:
    d = tmp / "corpus"
    d.mkdir(exist_ok=True)
    (d / "documents.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    (d / "questions.jsonl").write_text("".join(
        json.dumps({"id": i, "doc_ids": [doc], "question": q, "answers": [a]}) + "\n"
        for i, doc, q, a in QUESTIONS))
    return d


def _spec(
    tmp: Path, base_url: str, load: dict[str, Any], pipelines: list[dict[str, Any]] | None = None,
) -> Any:
    return validate_spec({
        "corpus": {"kind": "jsonl", "path": str(_corpus(tmp))},
        "pipelines": pipelines or [{"kind": "long_context", "max_tokens": 4}],
        "server": {"base_url": base_url, "model": models.DEFAULT_MODEL, "max_model_len": 4096},
        "metrics": ["headline", "contains", "request_ok"], "load": load,
    })


# -- arrival plans -------------------------------------------------------------------------


def test_offsets_follow_vllm_bench_serve() -> None:
    load = LoadSpec(rates=[2.0], requests=400, seed=7)
    due = offsets(400, Point(rate=2.0), load)
    assert due[-1] == pytest.approx(400 / 2.0) and np.all(np.diff(due) >= 0)  # normalised: n / rate
    gaps = np.diff(due)
    assert gaps.mean() == pytest.approx(0.5, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.15)  # exponential gaps: CV 1
    steady = offsets(10, Point(rate=5.0), LoadSpec(arrival="constant"))
    assert np.allclose(np.diff(steady), 0.2) and steady[0] == pytest.approx(0.2)
    bursty = np.diff(offsets(400, Point(rate=2.0), LoadSpec(arrival="gamma", burstiness=0.25, seed=7)))
    assert bursty.std() / bursty.mean() > 1.5  # shape 1/4: CV 2
    assert np.array_equal(offsets(5, Point(concurrency=3), load), np.zeros(5))  # closed loop: all due now


def test_every_step_asks_the_same_questions_zipf_first_documents_most() -> None:
    exs = [Example(f"q{d}{i}", (f"d{d}",), "?", ("a",)) for d in range(4) for i in range(2)]
    load = LoadSpec(requests=300, zipf=1.2, seed=3)
    slow, fast = requests(exs, Point(rate=1.0), load), requests(exs, Point(rate=8.0), load)
    assert [a.question_id for a in slow] == [a.question_id for a in fast]
    assert slow[-1].offset_s == pytest.approx(300.0) and fast[-1].offset_s == pytest.approx(37.5)
    assert len({a.example.id for a in slow}) == 300  # each request its own row
    per_doc = [sum(a.example.doc_ids == (f"d{d}",) for a in slow) for d in range(4)]
    assert per_doc == sorted(per_doc, reverse=True) and per_doc[0] > 2 * per_doc[3]
    assert popularity(4, 0.0) == pytest.approx([0.25] * 4)
    d0 = [a.question_id for a in slow if a.example.doc_ids == ("d0",)]
    assert d0[:4] == ["q00", "q01", "q00", "q01"]  # a document's questions in turn
    capped = requests(exs, Point(rate=1.0), LoadSpec(requests=50, questions_per_doc=1))
    assert {a.question_id for a in capped} <= {f"q{d}0" for d in range(4)}


def test_load_run_id_covers_the_traffic_not_the_step_list_and_keeps_the_idle_id() -> None:
    base = {"corpus": {"kind": "needle", "lengths": [400]}, "load": {"rates": [1.0]}}
    spec = validate_spec(base)
    assert spec.run_id() == validate_spec({"corpus": base["corpus"]}).run_id()  # idle run keeps its id
    more_rates = validate_spec({**base, "load": {"rates": [1.0, 2.0], "slo_ttft_ms": 500}})
    assert load_run_id(more_rates) == load_run_id(spec)  # a new rate extends the same sweep
    for change in ({"zipf": 0.5}, {"seed": 1}, {"requests": 4}, {"arrival": "constant"}):
        assert load_run_id(validate_spec({**base, "load": {"rates": [1.0], **change}})) != load_run_id(spec)


def test_bad_traffic_is_one_clear_line() -> None:
    spec = validate_spec({"corpus": {"kind": "needle", "lengths": [400]}})
    with pytest.raises(SpecError, match="no load steps"):
        with_traffic(spec)
    with pytest.raises(SpecError, match=r"load\.rates\.rates\.0: Input should be greater than 0"):
        with_traffic(spec, rates=[0.0])
    with pytest.raises(SpecError, match="slo_e2e_ms"):
        with_traffic(spec, rates=[1.0], slo_e2e_ms=-3.0)
    with pytest.raises(SpecError, match="burstiness applies"):
        with_traffic(spec, rates=[1.0], burstiness=2.0)


@pytest.mark.parametrize("args, says", [
    (["--rates", "0.5,0"], "--rates: every value must be > 0 (got 0)"),
    (["--rates", "1", "--slo-ttft-ms", "-5"], "--slo-ttft-ms: an SLO must be > 0 ms (got -5)"),
])
def test_cli_refuses_a_zero_rate_and_a_negative_slo(tmp_path: Path, args: list[str], says: str) -> None:
    from main import app

    (tmp_path / "s.toml").write_text('[corpus]\nkind = "needle"\nlengths = [400]\n')
    got = CliRunner().invoke(
        app, ["load", "--spec", str(tmp_path / "s.toml"), "--db", str(tmp_path / "x.duckdb"), *args])
    assert got.exit_code == 2
    lines = [ln for ln in got.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], got.output
    assert not (tmp_path / "x.duckdb").exists()  # refused before anything was opened


# -- a scripted vLLM-shaped server -----------------------------------------------------------


class Scripted:
    """Counts chats; each chat answers after `delay_s` ("7361 Bramble", 3 tokens, usage)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.chats = 0
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        box = self

        class Handler(VllmRoutes):
            owned_by = "vllm"

            def get_extra(self) -> bool:
                if self.path != "/metrics":
                    return False
                with box.lock:
                    n = box.chats
                text = (f"vllm:prefix_cache_queries_total{{model_name=\"m\"}} {100.0 * n}\n"
                        f"vllm:prefix_cache_hits_total{{model_name=\"m\"}} {50.0 * n}\n").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
                return True

            def chat(self, body: dict[str, Any]) -> None:
                with box.lock:
                    box.chats += 1
                time.sleep(box.delay_s)
                self.stream((sse_chunk("7361"), sse_chunk(" Bramble"), sse_chunk(" ok", "stop"),
                             sse_usage(60, 16, 3), DONE))

        return Handler


@pytest.fixture
def fast_server() -> Iterator[tuple[str, Scripted]]:
    box = Scripted()  # instant answers: what is timed is the generator (open loop: the next test)
    with serve(box.handler()) as url:
        yield url, box


async def test_a_50_per_second_schedule_is_kept_and_each_send_lag_recorded(
    tmp_path: Path, fast_server: tuple[str, Scripted],
) -> None:
    url, box = fast_server
    # The cheapest real request (the question alone, one streamed chat): the generator is timed,
    # not the client's prompt building; the backlog cap is lifted so a slow store cannot stop it.
    spec = _spec(tmp_path, url, {"rates": [50.0], "arrival": "constant", "requests": 50, "max_backlog": 1000},
                 [{"kind": "python", "factory": "tests.fixtures.load_pipeline:make_pipeline"}])
    with Store(tmp_path / "r.duckdb") as store:
        res = await run_load(spec, store, url, {"managed": False})
        rows = store.con.execute("SELECT scheduled_ms, sent_ms, queue_ms, error FROM predictions "
                                 "WHERE run_id = ? ORDER BY scheduled_ms", [res.run_id]).fetchall()
    assert [s.status for s in res.steps] == ["done"] and res.steps[0].answered == 50
    assert len(rows) == 50 and all(r[3] is None for r in rows) and box.chats >= 50  # all reached the server
    assert [round(r[0]) for r in rows] == [20 * (i + 1) for i in range(50)]  # constant: every 20 ms
    # Each row says how late it went out: its real send time minus its due time, never negative.
    # How small that lag stays is a speed figure, not a test's (on a shared 2-core machine the
    # median ranged from 2 to 300 ms with the load around it): benchmarks measure it.
    for scheduled, sent, queue, _ in rows:
        assert sent >= scheduled - 1.0 and queue == pytest.approx(sent - scheduled, abs=1.0)


async def test_an_over_saturated_step_stops_early_and_higher_rates_are_skipped(tmp_path: Path) -> None:
    box = Scripted(delay_s=0.4)
    with serve(box.handler()) as url:
        spec = _spec(tmp_path, url, {"rates": [40.0, 80.0], "concurrency": [2], "arrival": "constant",
                                     "requests": 8, "max_backlog": 4})
        db = tmp_path / "s.duckdb"
        with Store(db) as store:
            res = await run_load(spec, store, url, {"managed": False})
    by = {s.step: s for s in res.steps}
    assert by["rate=40"].status == "saturated" and by["rate=40"].sent == 4 and by["rate=40"].answered < 8
    assert "max_backlog 4" in (by["rate=40"].note or "")
    assert by["rate=80"].status == "skipped" and by["rate=80"].sent == 0
    assert by["concurrency=2"].status == "done" and by["concurrency=2"].answered == 8  # a closed loop cannot
    with duckdb.connect(str(db), read_only=True) as con:
        got = {r["step"]: r for r in step_metrics(con, res.run_id, {"ttft": 1000.0})}
        waits = [r[0] for r in con.execute(
            "SELECT queue_ms FROM predictions WHERE load_step = 'concurrency=2' ORDER BY sent_ms").fetchall()]
    assert got["rate=40"]["steady"] is False and got["rate=40"]["goodput_rps"] is None
    assert got["rate=80"]["goodput_rps"] is None
    closed = got["concurrency=2"]
    assert closed["goodput_rps"] == pytest.approx(closed["good"] / closed["duration_s"])
    assert 0 < closed["goodput_rps"] <= 2 / 0.4  # two slots, 0.4 s a request: at most 5/s
    assert got["concurrency=2"]["hit_rate"] == pytest.approx(0.5)  # from the /metrics deltas
    assert waits[:2] == pytest.approx([0.0, 0.0], abs=5.0) and waits[-1] > 1000.0  # slots, then a queue


def _cli(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAGVSLC_BASE_URL": ""}
    return popen([sys.executable, str(ROOT / "main.py"), "load", *args], cwd=ROOT, env=env)


def test_ctrl_c_keeps_rows_marks_the_step_incomplete_and_the_same_command_resumes(tmp_path: Path) -> None:
    box = Scripted(delay_s=0.05)
    with serve(box.handler()) as url:
        (tmp_path / "s.toml").write_text(
            f'metrics = ["headline", "contains"]\n[corpus]\nkind = "jsonl"\npath = "{_corpus(tmp_path)}"\n'
            f'[server]\nbase_url = "{url}"\nmodel = "{models.DEFAULT_MODEL}"\n'
            '[[pipelines]]\nkind = "long_context"\nmax_tokens = 4\n'
            '[load]\narrival = "constant"\nrequests = 12\n')
        db = tmp_path / "c.duckdb"
        args = ["--spec", str(tmp_path / "s.toml"), "--db", str(db), "--rates", "4", "--json"]
        proc = _cli(args)
        deadline = time.monotonic() + 60
        while box.chats < 6 and time.monotonic() < deadline and proc.poll() is None:  # the probe + 5 rows
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "marked incomplete" in err or "marked incomplete" in _
        with duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True) as con:
            step = con.execute("SELECT status, sent, sessions FROM load_steps").fetchone()
            kept = con.execute("SELECT count(*), count(sent_ms) FROM predictions").fetchone()
            run = con.execute("SELECT status FROM runs").fetchone()
        assert step is not None and step[0] == "incomplete" and 3 <= step[1] < 12
        assert kept == (step[1], step[1])  # every stored row counted, and stamped with its timing
        assert run == ("interrupted",)
        again = _cli(args)
        out, err = again.communicate(timeout=120)
        table = _cli(args[:-1])  # done: the table again, its empty quality_idle said in words
        table_out, table_err = table.communicate(timeout=120)
    assert again.returncode == 0, err
    assert table.returncode == 0 and "quality_idle is empty: the spec's idle run" in table_out + table_err
    data = json.loads(out)
    assert set(data) == {"run_id", "idle_run_id", "db", "slos", "probes", "steps", "verdict"}
    (only,) = data["steps"]
    (claim,) = data["verdict"]  # one pipeline: its attainment, no winner
    assert claim["at"] == "4 requests/s" and claim["winner"] is None and "12/12" in claim["line"]
    assert (only["status"], only["sent"], only["answered"]) == ("done", 12, 12)
    assert only["goodput_rps"] is not None and only["hit_rate"] == pytest.approx(0.5)
    with duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True) as con:
        assert con.execute("SELECT sessions FROM load_steps").fetchone() == (2,)
        kept = con.execute("SELECT count(*), count(DISTINCT example_id) FROM predictions").fetchone()
        assert kept == (12, 12)


# -- the real vLLM ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_long_context_and_rag_under_two_rates_on_the_real_server(
    tmp_path: Path, server_url: str,
) -> None:
    spec = _spec(tmp_path, server_url, {"rates": [1.0, 2.0], "requests": 3, "zipf": 1.0, "seed": 1,
                                        "slo_ttft_ms": 60_000},
                 [{"kind": "long_context", "max_tokens": 6},
                  {"kind": "rag", "chunk_size": 40, "chunk_overlap": 0, "top_k": 2, "max_tokens": 6}])
    db = tmp_path / "real.duckdb"
    with Store(db) as store:
        res = await run_load(spec, store, server_url, {"managed": False})
    assert [(s.pipeline, s.step, s.status, s.answered) for s in res.steps] == [
        ("long_context", "rate=1", "done", 3), ("long_context", "rate=2", "done", 3),
        ("rag", "rate=1", "done", 3), ("rag", "rate=2", "done", 3)]
    with duckdb.connect(str(db), read_only=True) as con:
        steps = step_metrics(con, res.run_id, {"ttft": 60_000.0})
        first = con.execute(
            "SELECT load_step, min_by(cached_tokens, sent_ms), min_by(context_tokens, sent_ms) "
            "FROM predictions WHERE pipeline = 'long_context' GROUP BY load_step").fetchall()
        scored = con.execute("SELECT count(*) FROM scores WHERE run_id = ? AND metric = 'headline'",
                             [res.run_id]).fetchone()
    assert scored == (12,)  # every request scored like any other row
    for s in steps:
        assert s["goodput_rps"] is not None and s["goodput_rps"] > 0 and s["ttft_p50_ms"] > 0
        assert s["hit_rate"] is not None and s["quality"] is not None
    # Each step starts cold: its first long-context request shares no cache with the step before.
    assert all(cached < ctx for _, cached, ctx in first), first
