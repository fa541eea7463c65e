"""The automatic sweep (issue 28 item 2) and the question mix from a workload file (item 3).

The sweep runs against the scripted vLLM-shaped server of tests/run/test_load.py: each answer
takes 0.2 s on purpose, so a probe at concurrency 4 can answer at most 20 requests/s and the
rates derived from it are known to within the machine's overhead.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from compare.run.arrivals import Point, requests
from compare.run.load import load_run_id, run_load, with_traffic
from compare.run.spec import SpecError, load_spec
from compare.run.sweep import auto_rates
from compare.serving import weights as models
from compare.store.db import Store
from tests.fixtures.sse_server import serve
from tests.run.test_load import Scripted, _corpus, _spec


def test_rates_are_spread_evenly_up_to_the_probe_throughput() -> None:
    assert auto_rates(3.0, 3) == [1.0, 2.0, 3.0]
    assert auto_rates(0.1234, 2) == [0.0617, 0.123]  # 3 significant digits: short, stable labels
    assert auto_rates(5.0, 1) == [5.0]
    with pytest.raises(ValueError, match="the saturation probe measured no throughput"):
        auto_rates(0.0, 3)


def test_auto_is_accepted_and_a_word_that_is_not_is_one_error(tmp_path: Path) -> None:
    base = _spec(tmp_path, "http://127.0.0.1:9", {})
    auto = with_traffic(base, rates="auto")
    assert auto.load is not None and auto.load.auto and auto.load.rate_list == []
    assert load_run_id(auto) == load_run_id(with_traffic(base, rates=[1.0]))  # the step list is not the id
    with pytest.raises(SpecError, match=r"load\.rates\.auto: Input should be 'auto'"):
        with_traffic(base, rates="fast")


async def test_a_probe_then_rates_up_to_its_throughput_recorded_per_step_and_resumed(tmp_path: Path) -> None:
    box = Scripted(delay_s=0.2)
    with serve(box.handler()) as url:
        spec = with_traffic(_spec(tmp_path, url, {"rates": "auto", "probe_concurrency": 4, "auto_rates": 3,
                                                  "arrival": "constant", "requests": 8}))
        db = tmp_path / "a.duckdb"
        with Store(db) as store:
            res = await run_load(spec, store, url, {"managed": False})
        chats = box.chats
        with Store(db) as store:  # the same command again: every step final, nothing sent
            again = await run_load(spec, store, url, {"managed": False})
        assert box.chats - chats <= 1  # at most the capability probe's chat
    (probe,) = res.probes.values()
    assert 0 < probe["probe_rps"] <= 4 / 0.2 and probe["probe_concurrency"] == 4
    assert probe["rates"] == auto_rates(probe["probe_rps"], 3) and len(probe["rates"]) == 3
    labels = ["probe", *(f"rate={r:g}" for r in probe["rates"])]
    assert [(s.step, s.status, s.answered) for s in res.steps] == [(lb, "done", 8) for lb in labels]
    assert again.probes == res.probes and [s.step for s in again.steps] == labels
    with duckdb.connect(str(db), read_only=True) as con:
        recs = dict(con.execute("SELECT step, load FROM load_steps").fetchall())
        measured = con.execute(
            "SELECT (SELECT count(*) FROM predictions WHERE load_step = 'probe' AND error IS NULL) "
            "/ duration_s, concurrency FROM load_steps WHERE step = 'probe'").fetchone()
    assert measured is not None and measured[0] == pytest.approx(probe["probe_rps"], rel=1e-4)
    assert measured[1] == 4  # the probe is a closed loop at its concurrency
    for lb in labels[1:]:  # each rate step says where its rate came from
        assert json.loads(recs[lb])["auto"] == probe


def test_cli_auto_prints_the_probe_and_reports_it_in_json(tmp_path: Path) -> None:
    from main import app

    box = Scripted(delay_s=0.05)
    with serve(box.handler()) as url:
        (tmp_path / "s.toml").write_text(
            f'metrics = ["headline"]\n[corpus]\nkind = "jsonl"\npath = "{_corpus(tmp_path)}"\n'
            f'[server]\nbase_url = "{url}"\nmodel = "{models.DEFAULT_MODEL}"\n'
            '[[pipelines]]\nkind = "long_context"\nmax_tokens = 4\n'
            '[load]\narrival = "constant"\nrequests = 4\nauto_rates = 2\nprobe_concurrency = 2\n')
        args = ["load", "--spec", str(tmp_path / "s.toml"), "--db", str(tmp_path / "c.duckdb"),
                "--rates", "auto"]
        got = CliRunner().invoke(app, [*args, "--json"])
        text = CliRunner().invoke(app, args)
    assert got.exit_code == 0, got.output
    data = json.loads(got.stdout[got.stdout.index("{"):])
    probe = data["probes"]["long_context"]
    assert [s["step"] for s in data["steps"]] == ["probe", *(f"rate={r:g}" for r in probe["rates"])]
    assert text.exit_code == 0 and "long_context: saturation probe" in text.output
    assert f"-> rates {', '.join(f'{r:g}' for r in probe['rates'])}" in text.output


def _workload(path: Path, qpd: int) -> Path:
    path.write_text("documents = { tokens = [400] }\n" f"questions_per_doc = {qpd}\nrequests_per_s = 1\n"
                    "quality_floor = 0.5\nlatency = { p95_ms = 5000 }\n")
    return path


def test_the_question_mix_follows_the_workload_and_is_recorded(tmp_path: Path) -> None:
    wl = _workload(tmp_path / "wl.toml", 1)
    spec_file = tmp_path / "s.toml"
    spec_file.write_text(f'[corpus]\nkind = "jsonl"\npath = "{_corpus(tmp_path)}"\n'
                         '[load]\nrates = [1.0]\nrequests = 20\nworkload = "wl.toml"\n')  # relative to spec
    spec = with_traffic(load_spec(spec_file), str(spec_file))
    assert spec.load is not None and spec.load.questions_per_doc == 1 and spec.load.workload == str(wl)
    assert spec.load.recorded()["questions_per_doc"] == 1 and spec.load.recorded()["workload"] == str(wl)
    from compare.core.types import Example
    exs = [Example(f"q{d}{i}", (f"d{d}",), "?", ("a",)) for d in range(2) for i in range(3)]
    asked = {a.question_id for a in requests(exs, Point(rate=1.0), spec.load)}
    assert asked <= {"q00", "q10"}  # one question per document, as the workload says
    w3 = _workload(tmp_path / "w3.toml", 3)
    three = with_traffic(load_spec(spec_file), str(spec_file), workload=str(w3))
    assert load_run_id(three) != load_run_id(spec)  # the mix it gave is in the id (not the path)
    with pytest.raises(SpecError, match=r"questions_per_doc = 2 but the workload .*wl\.toml says 1"):
        with_traffic(load_spec(spec_file), str(spec_file), questions_per_doc=2)
    with pytest.raises(SpecError, match=r"\[load\] workload: .*nope\.toml: cannot read workload"):
        with_traffic(load_spec(spec_file), str(spec_file), workload=str(tmp_path / "nope.toml"))
