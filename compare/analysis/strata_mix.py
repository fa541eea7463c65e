"""Quality at the user's own mix of question kinds (issue 30 item 5).

A run's pooled quality weighs each kind of question by how often the corpus asked it; a user
whose questions are, say, 70 % local look-ups and 30 % counting needs the same per-stratum
scores weighed by their own shares. The estimate is the share-weighted mean of each stratum's
mean score; its 95 % interval is a stratified bootstrap (each stratum's questions resampled on
their own, as its share is fixed by the workload, not sampled): scipy.stats.bootstrap with one
sample per stratum does exactly that; 0/1 scores use a Jeffreys posterior per stratum instead,
so a small stratum answered all right still carries its uncertainty. Two pipelines are compared
on the questions both answered, by the same weighting of their per-question differences; a
winner is named only when that interval excludes 0. A stratum the workload weighs but the run
has no question of makes the mix unanswerable from this run: said, never filled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy import stats as sst

from compare.analysis import summary
from compare.analysis.decision import scores_wide
from compare.analysis.stats import ALPHA, BOOTSTRAP_REPS, BOOTSTRAP_SEED, Interval
from compare.analysis.strata import run_strata


@dataclass(frozen=True)
class MixVerdict:
    """One run's pipelines at the workload's mix."""

    run_id: str
    shares: dict[str, float]  # the workload's shares, normalised over the strata it names
    n: dict[str, int]  # the run's questions per stratum of the mix
    quality: dict[str, Interval]  # per pipeline label: the weighted quality and its interval
    winner: str | None
    diff: Interval | None  # best minus runner-up at the mix
    line: str


def weighted(groups: Sequence[np.ndarray], shares: Sequence[float],
             categories: tuple[float, ...] = (0.0, 1.0)) -> Interval:
    """sum(share_s x mean_s) with its 95 % interval. Scores that take only the `categories`' values
    (0/1 for a score; -1/0/1 for a paired difference of two) get each stratum's category shares
    from a Jeffreys Dirichlet posterior (scipy.stats.dirichlet), summed by share: a stratum of 6
    questions all right still leaves room for a wrong one, where a bootstrap would give a
    zero-width interval. Graded scores get a stratified bootstrap (scipy.stats.bootstrap, one
    sample per stratum)."""
    w = np.asarray(shares, dtype=float)
    value = float(sum(wi * float(np.mean(g)) for wi, g in zip(w, groups, strict=True)))
    n = sum(len(g) for g in groups)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    cats = categories
    if np.isin(np.concatenate(groups), cats).all():  # the scores' own scale
        alphas = [[float(np.sum(g == c)) + 0.5 for c in cats] for g in groups]
        draws = sum(wi * sst.dirichlet.rvs(a, size=BOOTSTRAP_REPS, random_state=rng) @ np.asarray(cats)
                    for wi, a in zip(w, alphas, strict=True))
        lo, hi = np.quantile(draws, [ALPHA / 2, 1 - ALPHA / 2])
        return Interval(value, min(float(lo), value), max(float(hi), value), n, "Jeffreys, by stratum")

    def stat(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum([wi * np.mean(x, axis=axis) for wi, x in zip(w, samples, strict=True)], axis=0)

    if any(len(g) < 2 for g in groups):
        return Interval(value, -np.inf if value < 0 else 0.0, np.inf, n, "too few to resample")
    res = sst.bootstrap(tuple(groups), stat, n_resamples=BOOTSTRAP_REPS, confidence_level=1 - ALPHA,
                        method="percentile", random_state=rng)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(value, min(lo, value), max(hi, value), n, "stratified bootstrap")


def mix_verdict(con: duckdb.DuckDBPyConnection, run_id: str, mix: Mapping[str, float]) -> MixVerdict | None:
    """The run's pipelines weighed by `mix` (stratum -> share; shares are normalised); None when
    the run has no scored questions."""
    labels = summary.pipeline_labels(con, [run_id])[["pipeline", "params_hash", "label"]]
    metric = summary.headline_metric(con, [run_id])
    wide = scores_wide(con, run_id, metric, labels) if metric else pd.DataFrame()
    if wide.empty:
        return None
    total = sum(v for v in mix.values() if v > 0)
    shares = {k: v / total for k, v in mix.items() if v > 0}
    strata = run_strata(con, run_id).set_index("example_id")["stratum"]
    of = {s: [e for e in wide.index if strata.get(e) == s] for s in shares}
    n = {s: len(ids) for s, ids in of.items()}
    missing = [s for s, k in n.items() if k == 0]
    mix_words = ", ".join(f"{s} {shares[s]:.0%}" for s in shares)
    if missing:
        return MixVerdict(run_id, shares, n, {}, None, None,
                          f"At your mix ({mix_words}): not answerable from run {run_id}: no question of "
                          f"stratum {', '.join(missing)} (n per stratum: "
                          + ", ".join(f"{s} {k}" for s, k in n.items()) + ")")
    quality: dict[str, Interval] = {}
    for label in wide.columns:
        groups = [wide.loc[of[s], label].dropna().to_numpy(float) for s in shares]
        if all(len(g) for g in groups):
            quality[str(label)] = weighted(groups, list(shares.values()))
    ranked = sorted(quality, key=lambda k: -quality[k].value)
    winner, diff = None, None
    if len(ranked) >= 2:
        a, b = ranked[0], ranked[1]
        both = wide[[a, b]].dropna()
        groups = [(both.loc[both.index.isin(of[s]), a] - both.loc[both.index.isin(of[s]), b]).to_numpy(float)
                  for s in shares]
        if all(len(g) for g in groups):
            diff = weighted(groups, list(shares.values()), (-1.0, 0.0, 1.0))
            winner = a if diff.lo > 0 else None
    each = "; ".join(f"{k} {q.value:.3f} [{q.lo:.3f}, {q.hi:.3f}]" for k, q in
                     ((k, quality[k]) for k in ranked))
    counts = ", ".join(f"{s} n = {k}" for s, k in n.items())
    if diff is None:
        verdict = "nothing to compare"
    elif winner:
        verdict = f"{winner} is better at your mix by {diff.value:.3f} [{diff.lo:.3f}, {diff.hi:.3f}]"
    else:
        verdict = (f"no detectable difference at your mix ({ranked[0]} - {ranked[1]} = {diff.value:.3f} "
                   f"[{diff.lo:.3f}, {diff.hi:.3f}])")
    line = f"At your mix ({mix_words}; {counts}): {each}; {verdict} (quality by {metric}, run {run_id})"
    return MixVerdict(run_id, shares, n, quality, winner, diff, line)
