"""Intervals and paired tests (compare/analysis/stats.py; issue 24 items 1 and 2), values worked
out by hand in the comments; invariants by hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compare.analysis import stats
from tests.fixtures.paired import discordant


def test_mcnemar_n200_062_vs_059_is_no_detectable_difference() -> None:
    # 18 questions only a got right, 12 only b: p = 2 P(X <= 12), X ~ Bin(30, 1/2) = 2 x 0.18080 = 0.3616.
    a, b = discordant(200, 106, 18, 12)
    assert (np.mean(a), np.mean(b)) == (0.62, 0.59)
    t = stats.compare_paired(a, b)
    assert t.test == "exact McNemar" and (t.a_better, t.b_better) == (18, 12)
    assert t.p == pytest.approx(0.3616, abs=1e-4)
    assert t.diff.value == pytest.approx(0.03) and not t.separated and t.diff.lo < 0 < t.diff.hi
    # Connor (1987): psi = 30/200 = 0.15, delta = 0.03;
    # (1.95996 sqrt(0.15) + 0.84162 sqrt(0.15 - 0.0009))^2 / 0.0009 = (0.75909 + 0.32498)^2 / 0.0009 = 1305.8
    assert t.n_needed == 1306


def test_mcnemar_n20_one_answer_apart_names_no_winner() -> None:
    # 0.75 vs 0.70 at n = 20 is one question: 1 vs 0 discordant, p = 2 x P(X <= 0 | 1, 1/2) = 1.
    a, b = discordant(20, 14, 1, 0)
    t = stats.compare_paired(a, b)
    assert (np.mean(a), np.mean(b)) == (0.75, 0.70)
    assert t.p == 1.0 and not t.separated


def test_mcnemar_n10000_0015_gap_is_a_winner() -> None:
    # 400 vs 250 discordant of 10,000: gap 0.015; z = (400 - 325) / sqrt(650/4) = 5.88, p ~ 4e-9.
    a, b = discordant(10_000, 6000, 400, 250)
    t = stats.compare_paired(a, b)
    assert t.diff.value == pytest.approx(0.015) and t.separated and t.diff.lo > 0
    assert t.p < 1e-6


def test_wilson_interval_by_hand() -> None:
    # 15/20, z = 1.96: centre (0.75 + 1.9208/20) / 1.19207 = 0.70973,
    # half 1.96 sqrt(0.75 x 0.25 / 20 + 3.8415/1600) / 1.19207 = 0.17843 -> [0.5313, 0.8882]
    w = stats.wilson(15, 20)
    assert (w.value, w.n) == (0.75, 20)
    assert (w.lo, w.hi) == pytest.approx((0.5313, 0.8882), abs=1e-4)


def test_quantile_intervals_from_order_statistics_and_max_of_n() -> None:
    x = np.arange(1.0, 21.0)  # 1..20
    # p50: Bin(20, 0.5) has cdf(5) = 0.021 < 0.025 <= cdf(6) = 0.058 -> lower rank 6;
    # cdf(13) = 0.942 < 0.975 <= cdf(14) = 0.979 -> upper rank 14 + 1 = 15: [x_6, x_15] = [6, 15]
    m = stats.quantile_interval(x, 0.5)
    assert (m.value, m.lo, m.hi, m.method) == (10.5, 6.0, 15.0, "order statistics")
    # p95 of 19 rows is their maximum in all but name
    assert stats.quantile_interval(x[:19], 0.95) .method == "max of n"
    assert stats.quantile_interval(x[:19], 0.95).value == 19.0
    # p95 of 1..100: Bin(100, 0.95) cdf(89) = 0.011 < 0.025 <= cdf(90) = 0.028 -> x_90;
    # cdf(98) = 0.963 < 0.975 <= cdf(99) = 0.994 -> x_100
    big = stats.quantile_interval(np.arange(1.0, 101.0), 0.95)
    assert (big.lo, big.hi) == (90.0, 100.0)
    # p95 of 20 rows: the upper rank would be 21 > n: not bounded by the sample
    assert math.isinf(stats.quantile_interval(x, 0.95).hi)


def test_graded_scores_use_a_seeded_paired_bootstrap() -> None:
    a = np.linspace(0.2, 0.9, 50)
    b = a - 0.1  # every question 0.1 better: the difference is exactly 0.1, no spread
    t = stats.compare_paired(a, b)
    assert t.test == "paired bootstrap" and t.diff.value == pytest.approx(0.1) and t.separated
    noisy = stats.compare_paired(a, a[::-1])  # same mean, shuffled: no difference
    assert noisy.diff.value == pytest.approx(0.0, abs=1e-12) and not noisy.separated
    assert stats.compare_paired(a, a[::-1]) == noisy  # seeded: the same interval every time


scores = st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=60)
graded = st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=40)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_swapping_pipelines_flips_the_sign_and_keeps_p(data: st.DataObject) -> None:
    a = data.draw(st.one_of(scores, graded))
    b = data.draw(st.lists(st.sampled_from([0.0, 1.0]) if stats.is_binary(a) else st.floats(0, 1),
                           min_size=len(a), max_size=len(a)))
    ab, ba = stats.compare_paired(a, b), stats.compare_paired(b, a)
    assert ab.diff.value == pytest.approx(-ba.diff.value, abs=1e-12)
    assert ab.diff.lo <= ab.diff.value + 1e-12 and ab.diff.value <= ab.diff.hi + 1e-12
    if ab.test == "exact McNemar":
        assert ab.p == pytest.approx(ba.p) and ab.separated == ba.separated
        assert (ab.diff.lo, ab.diff.hi) == pytest.approx((-ba.diff.hi, -ba.diff.lo))


@settings(max_examples=40, deadline=None)
@given(scores)
def test_quality_interval_contains_its_estimate(values: list[float]) -> None:
    q = stats.quality(values)
    assert q.lo <= q.value <= q.hi and q.n == len(values)
