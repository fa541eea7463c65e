"""An L-Eval run in several strata (issue 30): a run holds one subset, so its label gives every
question one stratum (tpo: `whole`); the retrieval probe measured per question splits it.

The store (run "lv", 12 TOEFL-listening questions, tags as corpora/leval.py writes them, no spans,
long context vs RAG k=4 through tests/fixtures/paired.py's requests) and what `ragvslc
context-need` stored for its corpus (content hash "tpo-key"), worked by hand:
- q00-q05: the probe's RAG answered right at k = 1 -> `local` (source probe). RAG right on all 6,
  long context on none: 6 discordant, all RAG's: exact McNemar p = 2 x 0.5^6 = 0.03125 -> RAG.
- q06-q07: right first at k = 2 -> `multi_hop` (2 questions: too few to decide).
- q08-q10: right at no k tried -> `whole` (probe); q11: never probed -> `whole` from the subset's
  label. Long context right on all 4, RAG on none: 4 < 6 questions -> too few.
Before this rule the subset's `whole` beat every measurement: all 12 `whole`, one stratum, no
per-stratum verdict at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from compare.analysis.strata import assign, run_strata
from compare.analysis.verdict import stratum_verdicts
from compare.core.types import Example
from compare.store.context_need import write_needs
from compare.store.db import Store
from compare.store.rows import now
from tests.fixtures import paired
from tests.fixtures.cost import LC, LC_LABEL, RAG, RAG_LABEL, SHEET
from tests.fixtures.store import store_fixtures

TAGS = {"task": "tpo", "answer_format": "letter", "primary_metric": "choice_accuracy"}
PROBED: dict[int, int | None] = {**{i: 1 for i in range(6)}, 6: 2, 7: 2, 8: None, 9: None, 10: None}
LC_RIGHT = [0.0] * 6 + [1.0, 0.0] + [1.0] * 4
RAG_RIGHT = [1.0] * 6 + [1.0, 1.0] + [0.0] * 4


def _fill(db: Path) -> None:
    exs = [Example(f"q{i:02d}", (f"d{i // 6}",), f"question {i}?\nA. x\nB. y", ("A",), (), dict(TAGS))
           for i in range(12)]
    with Store(db) as s:
        s.start_run("lv", corpus="leval-tpo", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={"content_sha256": "tpo-key"}, server={})
        s.add_examples("lv", exs)
        for i, ex in enumerate(exs):
            paired._add(s, "lv", ex.id, LC, paired.lc_pred(i % 6 == 0), 2 * i, LC_RIGHT[i])
            paired._add(s, "lv", ex.id, RAG, paired.rag_pred(), 2 * i + 1, RAG_RIGHT[i])
        s.finish_run("lv", "done")
        write_needs(s.con, [
            {"corpus_key": "tpo-key", "example_id": f"q{i:02d}", "source": "probe",
             "context_need": None if k is None else float(k), "stratum": "unused here",
             "chunk_tokens": 200, "ks": json.dumps([1, 2, 4, 8]), "requests": 4 if k is None else k,
             "model": "m", "measured_at": now()} for i, k in PROBED.items()])


db, con = store_fixtures(_fill, "strata_leval")


def test_the_probe_beats_an_l_eval_subset_label_but_not_a_question_s_own_tag() -> None:
    from compare.analysis.strata import Need

    local = assign(TAGS, Need("probe", 1))
    assert (local.stratum, local.source, local.label) == ("local", "probe", "whole")
    assert assign(TAGS, Need("probe", None)).stratum == "whole"  # right at no k: the label was right
    assert (assign(TAGS, None).stratum, assign(TAGS, None).source) == ("whole", "label")  # not probed
    own = assign({**TAGS, "stratum": "whole"}, Need("probe", 1))  # a question's own tag still wins
    assert (own.stratum, own.source) == ("whole", "label")
    assert assign({"task": "babi-qa7"}, Need("probe", 1)).stratum == "aggregation"  # a kind of question


def test_an_l_eval_run_falls_in_several_strata_by_the_probe(con: duckdb.DuckDBPyConnection) -> None:
    st = run_strata(con, "lv").set_index("example_id")
    assert st["stratum"].value_counts().to_dict() == {"local": 6, "whole": 4, "multi_hop": 2}
    assert st["source"].value_counts().to_dict() == {"probe": 11, "label": 1}
    assert (st.loc["q06", "stratum"], st.loc["q06", "context_need"]) == ("multi_hop", 2)
    assert st.loc["q11", "source"] == "label"  # never probed: the subset's label


def test_per_stratum_verdict_of_an_l_eval_run(con: duckdb.DuckDBPyConnection) -> None:
    local, multi, whole = stratum_verdicts(con, "lv", q=10, sheet=SHEET)
    assert (local.stratum, local.n, local.sources, local.too_few) == ("local", 6, {"probe": 6}, False)
    assert (local.decision.choice, local.decision.decided_by) == (RAG_LABEL, "quality")
    assert local.decision.paired is not None and local.decision.paired.p == 2 * 0.5**6
    assert (multi.stratum, multi.n, multi.too_few) == ("multi_hop", 2, True)
    assert (whole.stratum, whole.n, whole.sources, whole.too_few) == (
        "whole", 4, {"probe": 3, "label": 1}, True)
    lc = next(f for f in whole.decision.pipelines if f.label == LC_LABEL)
    assert lc.quality is not None and (lc.quality.value, lc.quality.n) == (1.0, 4)


def test_recommend_s_mix_weighs_each_stratum_by_the_workload_s_share(con: duckdb.DuckDBPyConnection) -> None:
    """Issue 30 item 5 on the same store: local (q00-q05) RAG 6/6, long context 0/6; multi_hop
    (q06-q07) RAG 2/2, long context 1/2; whole (q08-q11) long context 4/4, RAG 0/4."""
    from compare.analysis.strata_mix import mix_verdict

    even = mix_verdict(con, "lv", {"local": 1.0, "whole": 1.0})  # shares normalised: 0.5 each
    assert even is not None and even.n == {"local": 6, "whole": 4}
    assert even.quality[RAG_LABEL].value == 0.5 == even.quality[LC_LABEL].value  # 0.5 x 1 + 0.5 x 0
    assert even.winner is None and even.diff is not None and even.diff.lo < 0 < even.diff.hi
    local = mix_verdict(con, "lv", {"local": 0.8, "whole": 0.2})
    assert local is not None and local.winner == RAG_LABEL
    assert local.diff is not None and local.diff.value == pytest.approx(0.6)  # 0.8 x 1 - 0.2 x 1
    # all 6 right is not certainty: the interval stays below the point where a stratum is perfect
    assert local.quality[RAG_LABEL].hi < 1.0 and local.quality[RAG_LABEL].lo < 0.8
    assert "n = 6" in local.line and "local 80%" in local.line
    # a kind the run never asked cannot be weighed in
    none = mix_verdict(con, "lv", {"local": 0.5, "aggregation": 0.5})
    assert none is not None and none.winner is None and not none.quality
    assert "not answerable" in none.line and "aggregation" in none.line


def test_a_workload_states_its_mix_of_kinds_or_gets_one_clear_error(tmp_path: Path) -> None:
    from compare.analysis.workload import WorkloadError, load_workload

    base = ('name = "w"\nquestions_per_doc = 3\nrequests_per_s = 0.1\nquality_floor = 0.5\n'
            '[documents]\ntokens = [3000]\n[latency]\np95_ms = 30000\n')
    good = tmp_path / "good.toml"
    good.write_text(base + "[strata_mix]\nlocal = 0.7\naggregation = 0.3\n")
    assert load_workload(good).strata_mix == {"local": 0.7, "aggregation": 0.3}
    for bad, says in (("local = 0.0\n", "positive share"), ("gossip = 1.0\n", "gossip")):
        path = tmp_path / "bad.toml"
        path.write_text(base + "[strata_mix]\n" + bad)
        with pytest.raises(WorkloadError, match=says):
            load_workload(path)


def test_a_tie_on_every_question_leaves_room_both_ways() -> None:
    """Paired differences all 0 (both right on 6 questions) are -1/0/1 data: the interval of the
    difference spans 0 on both sides, not [0, x] as if they were 0/1 scores."""
    import numpy as np

    from compare.analysis.strata_mix import weighted

    diff = weighted([np.zeros(6)], [1.0], (-1.0, 0.0, 1.0))
    assert diff.value == 0.0 and diff.lo < -0.05 and diff.hi > 0.05
    right = weighted([np.ones(6)], [1.0])
    assert right.value == 1.0 and 0.5 < right.lo < 0.9 and right.hi == 1.0
