"""What the LLM judge's stored verdicts say beside token F1, and how far to believe them: its
accuracy on controls built from the corpus (the asking is compare/run/judge.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd

JUDGE_METRIC = "judge"  # the verdicts' metric name in `scores`
# A judge is believed (its verdicts may enter the headline, the verdict and a recommendation's
# ranking) only when it rules right on at least this share of its controls. 90%: a judge that
# calls one in ten known-wrong replies correct moves a mean by more than pipelines differ.
JUDGE_TRUST = 0.90
JUDGE_FIX = ("judge with a stronger model (`ragvslc judge --model NAME`, another installed model "
             "than the one that wrote the answers), or use token_f1")


def agreement(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], f1_at: float = 0.5) -> pd.DataFrame:
    """Per pipeline: rows with both a verdict and a token F1, their means, the share where the
    two agree (F1 >= `f1_at` counted as correct) and their correlation (NULL when either is
    constant). Empty without judge scores."""
    return con.execute(
        """
        WITH pair AS (
            SELECT j.run_id, j.pipeline, j.params_hash, j.value AS judge, f.value AS f1
            FROM scores j JOIN scores f USING (run_id, example_id, pipeline, params_hash)
            WHERE j.metric = $judge AND f.metric = 'token_f1' AND list_contains($runs, j.run_id)
                AND j.value IS NOT NULL AND f.value IS NOT NULL
        )
        SELECT run_id, pipeline, params_hash, count(*) AS n, avg(judge) AS judge_mean,
            avg(f1) AS token_f1_mean, avg(((f1 >= $at) = (judge >= 0.5))::INTEGER) AS agreement,
            corr(judge, f1) AS correlation
        FROM pair GROUP BY ALL ORDER BY ALL
        """,
        {"judge": JUDGE_METRIC, "runs": list(run_ids), "at": f1_at},
    ).df()


def judges(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[tuple[str, str, int]]:
    """(judge model, prompt hash, verdicts) stored for these runs; [] for a store without the table."""
    has = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'judgements'").fetchone()
    if not has or not has[0]:
        return []
    rows = con.execute(
        "SELECT judge_model, prompt_hash, count(*) FROM judgements WHERE list_contains(?, run_id) "
        "GROUP BY ALL ORDER BY ALL", [list(run_ids)]
    ).fetchall()
    return [(str(m), str(h), int(n)) for m, h, n in rows]


@dataclass(frozen=True)
class ControlAccuracy:
    """One judge's record on its controls over some runs."""

    judge_model: str
    prompt_hash: str
    n: int
    correct: int
    by_control: dict[str, tuple[int, int]]  # control kind -> (correct, n)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def trusted(self) -> bool:
        return self.n > 0 and self.accuracy >= JUDGE_TRUST

    def words(self) -> str:
        """"control accuracy 87% (26 of 30)", with the kinds it got wrong."""
        wrong = ", ".join(f"{k} {n - c}/{n} wrong" for k, (c, n) in sorted(self.by_control.items()) if c < n)
        return (f"control accuracy {self.accuracy:.0%} ({self.correct} of {self.n})"
                + (f"; {wrong}" if wrong else ""))

    def short(self) -> str:
        """What a judge column's header says of it: "controls 25% of 60, kept out"."""
        if not self.n:
            return "no controls, kept out"
        return f"controls {self.accuracy:.0%} of {self.n}" + ("" if self.trusted else ", kept out")

    def note(self) -> str:
        """The one line a reader needs: the judge, its controls, and whether it is believed."""
        who = f"judge {self.judge_model} (prompt {self.prompt_hash})"
        if self.trusted:
            return f"{who}: {self.words()}, at or above {JUDGE_TRUST:.0%}: its verdicts are used"
        why = "no controls were asked" if not self.n else self.words()
        return (f"{who}: {why}, below {JUDGE_TRUST:.0%}: shown, but kept out of the headline, the "
                f"verdict and recommendations; fix: {JUDGE_FIX}")


def _has(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                      [table]).fetchone()
    return bool(row and row[0])


def control_accuracy(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[ControlAccuracy]:
    """Per judge (model, prompt hash): its controls in these runs, an unparsed reply counted as
    wrong; [] for a store without controls. Judges of these runs without any control get n = 0."""
    out: dict[tuple[str, str], dict[str, tuple[int, int]]] = {
        (m, h): {} for m, h, _ in judges(con, run_ids)}
    if _has(con, "judge_controls"):
        rows = con.execute(
            "SELECT judge_model, prompt_hash, control, count(*) FILTER (WHERE verdict = expected), count(*) "
            "FROM judge_controls WHERE list_contains(?, run_id) GROUP BY ALL ORDER BY ALL",
            [list(run_ids)]).fetchall()
        for m, h, kind, c, n in rows:
            out.setdefault((str(m), str(h)), {})[str(kind)] = (int(c), int(n))
    return [ControlAccuracy(m, h, sum(n for _, n in k.values()), sum(c for c, _ in k.values()), k)
            for (m, h), k in sorted(out.items())]


def score_judge(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> ControlAccuracy | None:
    """The judge whose verdicts the `judge` column of these runs holds (the one that ruled
    last), with its control record; None when no judge ruled."""
    if not _has(con, "judgements"):
        return None
    row = con.execute(
        "SELECT judge_model, prompt_hash FROM judgements WHERE list_contains(?, run_id) "
        "ORDER BY judged_at DESC, judge_model, prompt_hash LIMIT 1", [list(run_ids)]).fetchone()
    if row is None:
        return None
    return next(a for a in control_accuracy(con, run_ids) if (a.judge_model, a.prompt_hash) == row)


def scored_by_run(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, ControlAccuracy]:
    """Per run, its scoring judge's control record (runs no judge ruled on are left out): scored
    once, for the column header, the table's column and the notes alike."""
    return {run: got for run in run_ids if (got := score_judge(con, [run])) is not None}


def controls_by_run(scored: Mapping[str, ControlAccuracy]) -> dict[str, str]:
    """Per run, its judge's control record in a few words (ControlAccuracy.short)."""
    return {run: got.short() for run, got in scored.items()}


def judge_header(controls: Mapping[str, str]) -> str | None:
    """The `judge` column's header with its judge's control record (`controls_by_run`) beside it,
    so a number is never read without it: "judge (controls 25% of 60, kept out)"; runs whose
    records differ point to the notes. None when no judge ruled."""
    records = set(controls.values())
    if len(records) > 1:
        return "judge (judges differ by run: see the judge notes)"
    return f"judge ({records.pop()})" if records else None


def judge_notes(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[str]:
    """One line per run's scoring judge: shown beside every judge column, and a caveat of the
    verdict (a judge below JUDGE_TRUST is kept out of it)."""
    return notes_of(scored_by_run(con, run_ids), len(run_ids) > 1)


def notes_of(scored: Mapping[str, ControlAccuracy], per_run: bool) -> list[str]:
    """`judge_notes` from records already scored; `per_run`: each line names its run."""
    return list(dict.fromkeys(f"{run}: {got.note()}" if per_run else got.note()
                              for run, got in scored.items()))
