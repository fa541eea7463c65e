"""How sure the verdict is: intervals and paired tests, thin wrappers over scipy and statsmodels.

Every function here takes plain numbers or arrays and returns plain numbers, so the verdict and
the decision (compare/analysis/verdict.py, compare/analysis/decision.py) state the rule once and
the tests can work each value out by hand. Conventions: 95% two-sided intervals (ALPHA), a
bootstrap is seeded (BOOTSTRAP_SEED) and its replicate count recorded (BOOTSTRAP_REPS), so the
same store always gives the same interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sst

ALPHA = 0.05  # two-sided: 95% intervals, a difference "detectable" at p < 0.05
POWER = 0.8  # the power at which "n questions would separate it" is stated
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 20260101
MIN_P95_ROWS = 20  # below this a p95 is the sample's maximum in all but name: shown as "max of n"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval (hi may be inf: the data do not bound it)."""

    value: float
    lo: float
    hi: float
    n: int
    method: str  # "wilson", "bootstrap", "order statistics", "max of n", ...

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi


@dataclass(frozen=True)
class Paired:
    """Pipeline a minus pipeline b over the same n questions."""

    diff: Interval  # mean(a) - mean(b), with the interval of the difference
    p: float  # two-sided p of "no difference"
    test: str  # "exact McNemar" (0/1 scores) or "paired bootstrap" (graded)
    n_needed: int | None  # questions that would detect a gap of this size at POWER; None: no gap seen
    a_better: int = 0  # 0/1 scores: questions only a got right (discordant pairs)
    b_better: int = 0

    @property
    def separated(self) -> bool:
        """A winner is named only when the interval of the difference excludes 0."""
        return self.diff.lo > 0 or self.diff.hi < 0


def is_binary(values: Sequence[float] | np.ndarray) -> bool:
    arr = np.asarray(values, dtype=float)
    return bool(np.isin(arr, (0.0, 1.0)).all())


def wilson(successes: int, n: int) -> Interval:
    """A 0/1 quality's 95% Wilson score interval (scipy's binomtest)."""
    if n <= 0:
        return Interval(math.nan, 0.0, 1.0, 0, "wilson")
    ci = sst.binomtest(int(successes), int(n)).proportion_ci(1 - ALPHA, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), int(n), "wilson")


def _rng() -> np.random.Generator:
    return np.random.default_rng(BOOTSTRAP_SEED)


def bootstrap_mean(values: Sequence[float] | np.ndarray) -> Interval:
    """A graded quality's mean with a percentile-bootstrap 95% interval (scipy.stats.bootstrap)."""
    arr = np.asarray(values, dtype=float)
    if len(arr) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "bootstrap")
    if len(arr) == 1 or np.ptp(arr) == 0:
        m = float(arr.mean())
        return Interval(m, m, m, len(arr), "bootstrap")
    res = sst.bootstrap((arr,), np.mean, confidence_level=1 - ALPHA, n_resamples=BOOTSTRAP_REPS,
                        method="percentile", random_state=_rng())
    ci = res.confidence_interval
    return Interval(float(arr.mean()), float(ci.low), float(ci.high), len(arr), "bootstrap")


def quality(values: Sequence[float] | np.ndarray) -> Interval:
    """Wilson for 0/1 scores, bootstrap for graded ones."""
    arr = np.asarray(values, dtype=float)
    return wilson(int(arr.sum()), len(arr)) if is_binary(arr) else bootstrap_mean(arr)


def mcnemar_n(a_better: int, b_better: int, n: int) -> int | None:
    """Questions needed for an exact-McNemar-sized test to detect the observed paired gap at POWER.

    statsmodels has no power function for paired proportions, so this is Connor's (1987) normal
    approximation, stated here: with psi the discordant share and delta the gap,
    n = (z_{1-a/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2."""
    if n <= 0 or a_better == b_better:
        return None
    psi, delta = (a_better + b_better) / n, (a_better - b_better) / n
    za, zb = sst.norm.ppf(1 - ALPHA / 2), sst.norm.ppf(POWER)
    return math.ceil((za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta**2, 0.0))) ** 2 / delta**2)


def paired_t_n(diffs: np.ndarray) -> int | None:
    """Questions needed for a paired test to detect the observed mean gap at POWER (graded
    scores): statsmodels' one-sample t-test power on the per-question differences."""
    sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    mean = float(np.mean(diffs)) if len(diffs) else 0.0
    if mean == 0 or sd == 0:
        return None
    from statsmodels.stats.power import TTestPower  # lazy: statsmodels is slow to import

    es = abs(mean) / sd
    with warnings.catch_warnings():  # a huge effect makes the solver give up (NaN): handled below
        warnings.simplefilter("ignore")
        n = float(TTestPower().solve_power(effect_size=es, alpha=ALPHA, power=POWER, alternative="two-sided"))
    if not math.isfinite(n):  # the normal approximation ((z_a + z_b) / es)^2, at least a pair of 2
        n = max(2.0, ((sst.norm.ppf(1 - ALPHA / 2) + sst.norm.ppf(POWER)) / es) ** 2)
    return math.ceil(n)


def mcnemar(a: np.ndarray, b: np.ndarray) -> Paired:
    """0/1 scores of two pipelines on the same questions: statsmodels' exact McNemar test (twice
    the smaller binomial tail of the discordant pairs) and, dual to it, the Clopper-Pearson
    interval of a's share of the discordant pairs turned into an interval of the difference
    (conditional on the discordant count): it excludes 0 exactly when p < ALPHA."""
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    n = len(a)
    ab = int(((a == 1) & (b == 0)).sum())
    ba = int(((a == 0) & (b == 1)).sum())
    both = int(((a == 1) & (b == 1)).sum())
    neither = n - ab - ba - both
    diff = (ab - ba) / n if n else math.nan
    if ab + ba == 0:
        return Paired(Interval(0.0, 0.0, 0.0, n, "exact McNemar"), 1.0, "exact McNemar", None, 0, 0)
    p = float(sm_mcnemar([[both, ab], [ba, neither]], exact=True).pvalue)
    ci = sst.binomtest(ab, ab + ba).proportion_ci(1 - ALPHA, method="exact")
    share = (ab + ba) / n
    lo, hi = share * (2 * float(ci.low) - 1), share * (2 * float(ci.high) - 1)
    return Paired(Interval(diff, lo, hi, n, "exact McNemar"), min(p, 1.0), "exact McNemar",
                  mcnemar_n(ab, ba, n), ab, ba)


def paired_bootstrap(a: np.ndarray, b: np.ndarray) -> Paired:
    """Graded scores on the same questions: a percentile bootstrap of the mean difference over
    questions (resampled in pairs), its two-sided p as twice the share of replicates on the other
    side of 0 (the bootstrap's own test, consistent with its interval)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n, mean = len(d), float(d.mean()) if len(d) else math.nan
    if n < 2:  # one question cannot show how the difference varies: unbounded, not a winner
        return Paired(Interval(mean, -math.inf, math.inf, n, "paired bootstrap"), 1.0, "paired bootstrap",
                      None)
    if np.ptp(d) <= 1e-12 * max(1.0, abs(mean)):  # no spread (up to float rounding)
        p = 1.0 if n == 0 or mean == 0 else 0.0
        return Paired(Interval(mean, mean, mean, n, "paired bootstrap"), p, "paired bootstrap", None)
    idx = _rng().integers(0, n, size=(BOOTSTRAP_REPS, n))
    reps = d[idx].mean(axis=1)
    lo, hi = np.quantile(reps, [ALPHA / 2, 1 - ALPHA / 2])
    p = min(1.0, 2 * min(float((reps <= 0).mean()), float((reps >= 0).mean())))
    return Paired(Interval(mean, float(lo), float(hi), n, "paired bootstrap"), p, "paired bootstrap",
                  paired_t_n(d))


def compare_paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> Paired:
    """a vs b on the same questions (equal length, same order): McNemar for 0/1, else bootstrap."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"paired scores need the same questions, got {len(x)} and {len(y)}")
    return mcnemar(x, y) if is_binary(x) and is_binary(y) else paired_bootstrap(x, y)


def quantile_interval(values: Sequence[float] | np.ndarray, q: float) -> Interval:
    """The q-quantile with a distribution-free 95% interval from order statistics: ranks r and s
    from Binomial(n, q) (scipy.stats.binom) so that x_(r) <= true quantile <= x_(s) with
    probability >= 95%; hi is inf where the sample has no order statistic high enough. A p95 from
    fewer than MIN_P95_ROWS rows is reported as the maximum of n, not as a p95."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    if q >= 0.95 and n < MIN_P95_ROWS:
        return Interval(float(x[-1]), math.nan, math.nan, n, "max of n")
    r = int(sst.binom.ppf(ALPHA / 2, n, q))  # 1-based rank of the lower bound (0: below the sample)
    s = int(sst.binom.ppf(1 - ALPHA / 2, n, q)) + 1  # 1-based rank of the upper bound
    lo = float(x[r - 1]) if r >= 1 else -math.inf
    hi = float(x[s - 1]) if s <= n else math.inf
    return Interval(float(np.quantile(x, q)), lo, hi, n, "order statistics")


def bootstrap_groups(n_groups: int, statistic: Callable[[np.ndarray], float]) -> np.ndarray:
    """BOOTSTRAP_REPS values of `statistic(indices)` over groups (documents) resampled with
    replacement: for statistics that are not a mean of independent rows (the break-even)."""
    idx = _rng().integers(0, n_groups, size=(BOOTSTRAP_REPS, n_groups))
    return np.array([statistic(i) for i in idx], dtype=float)
