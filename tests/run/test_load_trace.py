"""Trace replay (issue 28 item 1): a timestamped JSONL replayed as a load step.

Parsing and mapping are checked on their own; the replay's timing and records against the
scripted vLLM-shaped server of tests/run/test_load.py (instant answers: what is timed is the
generator); bad traces through the CLI (one line naming file and line, exit 2, nothing opened).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from compare.core.types import Example
from compare.run.arrivals import Point, requests
from compare.run.load import load_run_id, run_load, with_traffic
from compare.run.load_spec import LoadSpec
from compare.run.spec import SpecError
from compare.run.trace import TraceError, read_trace
from compare.store.db import Store
from tests.fixtures.sse_server import serve
from tests.run.test_load import Scripted, _spec

EXAMPLES = [Example(f"q{d}{i}", (f"d{d}",), "?", ("a",)) for d in range(3) for i in range(2)]


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_mooncake_lines_replay_at_their_ms_offsets_sharing_documents_by_first_hash(tmp_path: Path) -> None:
    # Mooncake's shape: timestamp in ms (absolute), lengths and block hashes, no document.
    trace = _write(tmp_path / "m.jsonl", [
        {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]},
        {"timestamp": 27000, "input_length": 6472, "output_length": 26, "hash_ids": [9, 10]},
        {"timestamp": 30535, "input_length": 6472, "output_length": 12, "hash_ids": [46, 99]},
        "",
        {"timestamp": 32000, "hash_ids": [7]},
        {"timestamp": 32500, "hash_ids": [8]},
    ])
    load = LoadSpec(trace=str(trace))
    got = requests(EXAMPLES, Point(trace_scale=1.0), load)
    # Sorted by time, offsets from the earliest, in seconds.
    assert [round(a.offset_s, 3) for a in got] == [0.0, 0.482, 3.535, 5.0, 5.5]
    docs = [a.example.doc_ids[0] for a in got]
    # First hashes 9, 46, 46, 7, 8 -> documents 0, 1, 1, 2, 0 (the fourth distinct wraps round).
    assert docs == ["d0", "d1", "d1", "d2", "d0"]
    assert [a.question_id for a in got][1:3] == ["q10", "q11"]  # a document's questions in turn
    assert got[1].example.tags["trace_input_length"] == 6955.0 and got[1].example.tags["trace_line"] == 1.0
    assert got[0].example.id == "q00@trace#0" and got[0].example.tags["load_step"] == "trace"
    fast = requests(EXAMPLES, Point(trace_scale=0.5), load)  # twice as fast, its own step
    assert [round(a.offset_s, 4) for a in fast] == [0.0, 0.241, 1.7675, 2.5, 2.75]
    assert fast[0].example.id == "q00@trace*0.5#0"


def test_seconds_doc_ids_indexes_and_the_workload_cap(tmp_path: Path) -> None:
    trace = _write(tmp_path / "s.jsonl", [
        {"timestamp_s": 10.0, "doc_id": "d2"}, {"offset_s": 10.25, "doc_index": 2},
        {"timestamp_ms": 10500, "doc_id": "d2"}])
    got = requests(EXAMPLES, Point(trace_scale=1.0), LoadSpec(trace=str(trace), questions_per_doc=1))
    assert [round(a.offset_s, 3) for a in got] == [0.0, 0.25, 0.5]
    assert [a.question_id for a in got] == ["q20", "q20", "q20"]  # capped at the first question


@pytest.mark.parametrize("line, says", [
    ("{not json", "m.jsonl:2: not JSON"),
    ('{"doc_id": "d0"}', "m.jsonl:2: no time field (one of timestamp, timestamp_ms, timestamp_s, offset_s"),
    ('{"timestamp": "soon", "doc_id": "d0"}', "m.jsonl:2: timestamp must be a finite number"),
    ('{"timestamp": 5}', "m.jsonl:2: no document: give doc_id, doc_index or a non-empty hash_ids"),
    ('{"timestamp": 5, "doc_index": -1}', "m.jsonl:2: doc_index must be an integer >= 0"),
    ('{"timestamp": 5, "doc_id": "d0", "output_length": 2.5}', "m.jsonl:2: output_length must be an integer"),
    ("[1, 2]", "m.jsonl:2: a line must be a JSON object"),
])
def test_a_malformed_line_names_file_and_line(tmp_path: Path, line: str, says: str) -> None:
    trace = _write(tmp_path / "m.jsonl", [{"timestamp": 0, "doc_id": "d0"}, line])
    with pytest.raises(TraceError) as err:
        read_trace(trace)
    assert str(err.value).startswith(f"{tmp_path}/{says}"), err.value


def test_an_unknown_document_names_the_line(tmp_path: Path) -> None:
    trace = _write(tmp_path / "t.jsonl", [{"timestamp": 0, "doc_id": "d0"}, {"timestamp": 9, "doc_index": 3}])
    with pytest.raises(TraceError, match=r"t\.jsonl:2: doc_index 3 is out of range \(the corpus has 3"):
        requests(EXAMPLES, Point(trace_scale=1.0), LoadSpec(trace=str(trace)))
    _write(trace, [{"timestamp": 0, "doc_id": "nope"}])
    with pytest.raises(TraceError, match=r"t\.jsonl:1: doc_id 'nope' is not a document"):
        requests(EXAMPLES, Point(trace_scale=1.0), LoadSpec(trace=str(trace)))


def test_the_run_id_covers_the_trace_content_not_its_path_or_speed(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", [{"timestamp": 0, "doc_id": "d0"}, {"timestamp": 500, "doc_id": "d0"}])
    b = _write(tmp_path / "b.jsonl", [{"timestamp": 0, "doc_id": "d0"}, {"timestamp": 500, "doc_id": "d0"}])
    c = _write(tmp_path / "c.jsonl", [{"timestamp": 0, "doc_id": "d0"}, {"timestamp": 600, "doc_id": "d0"}])
    base = _spec(tmp_path, "http://127.0.0.1:9", {"rates": [1.0]})

    def rid(**load: Any) -> str:
        return load_run_id(with_traffic(base, **load))

    assert rid(trace=str(a)) == rid(trace=str(b)) == rid(trace=str(a), trace_time_scale=0.5)
    assert rid(trace=str(a)) != rid(trace=str(c)) and rid(trace=str(a)) != rid()
    assert rid() == load_run_id(base)  # a spec without a trace keeps its id
    with pytest.raises(SpecError, match=r"c\.jsonl:1: no time field"):
        _write(c, [{"doc_id": "d0"}])
        with_traffic(base, trace=str(c))


def test_a_spec_written_before_the_new_knobs_keeps_its_load_run_id() -> None:
    from compare.run.spec import validate_spec

    spec = validate_spec({"corpus": {"kind": "needle", "lengths": [400]},
                          "load": {"rates": [1.0, 2.0], "zipf": 0.5, "questions_per_doc": 2}})
    assert load_run_id(spec) == "load-757855d3527e"  # what the code before trace/auto/workload gave


def test_cli_refuses_a_malformed_trace_with_one_line(tmp_path: Path) -> None:
    from main import app

    (tmp_path / "s.toml").write_text('[corpus]\nkind = "needle"\nlengths = [400]\n')
    _write(tmp_path / "t.jsonl", [{"timestamp": 0, "doc_index": 0}, '{"timestamp": 1, "doc_index": 0'])
    got = CliRunner().invoke(app, ["load", "--spec", str(tmp_path / "s.toml"),
                                   "--db", str(tmp_path / "x.duckdb"), "--trace", str(tmp_path / "t.jsonl")])
    assert got.exit_code == 2, got.output
    lines = [ln for ln in got.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{tmp_path}/t.jsonl:2: not JSON" in lines[0], got.output
    assert not (tmp_path / "x.duckdb").exists()


async def test_a_trace_is_replayed_on_schedule_and_recorded_with_its_sha256(tmp_path: Path) -> None:
    box = Scripted()
    trace = _write(tmp_path / "t.jsonl", [
        {"timestamp": 1000, "doc_id": "harbour"}, {"timestamp": 1100, "doc_id": "orchard"},
        {"timestamp": 1400, "doc_index": 0, "output_length": 3}, {"timestamp": 1500, "hash_ids": [5]}])
    with serve(box.handler()) as url:
        spec = with_traffic(_spec(tmp_path, url, {"trace": str(trace), "trace_time_scale": 2.0}))
        db = tmp_path / "t.duckdb"
        with Store(db) as store:
            res = await run_load(spec, store, url, {"managed": False})
    assert [(s.step, s.status, s.sent, s.answered) for s in res.steps] == [("trace*2", "done", 4, 4)]
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT p.scheduled_ms, p.sent_ms, e.doc_ids FROM predictions p JOIN examples e "
                           "USING (run_id, example_id) ORDER BY scheduled_ms").fetchall()
        rec = con.execute("SELECT requests, rate, load FROM load_steps").fetchone()
    assert [round(r[0]) for r in rows] == [0, 200, 800, 1000]  # offsets x 2, the first at once
    assert [json.loads(r[2]) for r in rows] == [["harbour"], ["orchard"], ["harbour"], ["harbour"]]
    assert all(sent >= due - 1.0 for due, sent, _ in rows)
    assert rec is not None and rec[0] == 4 and rec[1] is None
    recorded = json.loads(rec[2])
    import hashlib
    assert recorded["trace"] == str(trace) and recorded["trace_time_scale"] == 2.0
    assert recorded["trace_sha256"] == hashlib.sha256(trace.read_bytes()).hexdigest()
    assert recorded["trace_requests"] == 4 and recorded["offered_rps"] == pytest.approx(4 / 1.0)
