"""dfs.stats: every interval against scipy.stats or its closed form, and the bootstrap's coverage on a known law."""
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from dfs import stats as S


def test_mean_se_is_s_over_root_n():
    m, se = S.mean_se([1.0, 2.0, 3.0, 6.0])
    assert m == 3.0 and se == pytest.approx(sps.sem([1.0, 2.0, 3.0, 6.0]))
    assert se == pytest.approx(math.sqrt(14 / 3) / 2)             # s² = (4 + 1 + 0 + 9)/3, n = 4
    assert S.mean_se(torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)) == (m, se)   # tensors too
    with pytest.raises(ValueError, match="at least 2"):
        S.mean_se([1.0])


def test_variance_se_is_the_normal_closed_form_for_normal_data():
    x = np.random.default_rng(1).normal(0.0, 2.0, 20_000)
    s2, se = S.variance_se(x)
    assert s2 == pytest.approx(np.var(x, ddof=1))
    assert se == pytest.approx(math.sqrt(2 / (len(x) - 1)) * s2, rel=0.05)       # 2σ⁴/(n − 1) for a normal law
    # and the spread of s² over many small samples of a skewed law (exponential: μ₄ = 9, σ⁴ = 1)
    rng = np.random.default_rng(2)
    draws = np.array([np.var(rng.exponential(1.0, 200), ddof=1) for _ in range(4000)])
    assert draws.std() == pytest.approx(math.sqrt((9 - 197 / 199) / 200), rel=0.1)
    assert np.mean([S.variance_se(rng.exponential(1.0, 200))[1] for _ in range(200)]) == pytest.approx(draws.std(),
                                                                                                     rel=0.25)
    with pytest.raises(ValueError, match="at least 4"):
        S.variance_se([1.0, 2.0, 3.0])


def test_prediction_interval_covers_one_new_draw_as_often_as_it_says():
    v = [1.0, 2.0, 3.0]                                             # s = 1, n = 3: 2 ± t_{2, .975} · √(4/3)
    m, lo, hi = S.prediction_interval(v)
    assert (m, lo, hi) == pytest.approx((2.0, 2 - 4.302652729911275 * math.sqrt(4 / 3), 2 + 4.302652729911275 * math.sqrt(4 / 3)))
    rng = np.random.default_rng(3)                                  # 5 draws, then a 6th: inside 95 % of the time
    hits = [lo <= x[5] <= hi for x in rng.normal(0, 1, (4000, 6)) for _, lo, hi in [S.prediction_interval(x[:5])]]
    assert np.mean(hits) == pytest.approx(0.95, abs=0.015)
    with pytest.raises(ValueError, match="at least 2"):
        S.prediction_interval([1.0])


def test_paired_difference_cancels_what_the_pairs_share():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 5, 400)                                # large item-to-item variation, common to a and b
    a, b = shared - 0.1 + rng.normal(0, 0.1, 400), shared + rng.normal(0, 0.1, 400)
    d, se = S.paired_difference(a, b)
    t = sps.ttest_rel(a, b)
    assert d == pytest.approx(np.mean(a - b)) and d / se == pytest.approx(t.statistic)   # the paired t statistic
    assert se < 0.01 and abs(d + 0.1) < 4 * se
    with pytest.raises(ValueError, match="same length"):
        S.paired_difference(a, b[:10])


@pytest.mark.parametrize("level", [0.5, 0.95, 0.99])
def test_mean_interval_is_students_t(level):
    v = [1.0, 2.0, 3.0, 7.5]
    m, lo, hi = S.mean_interval(v, level)
    ref = sps.t.interval(level, len(v) - 1, loc=np.mean(v), scale=sps.sem(v))
    assert m == np.mean(v) and (lo, hi) == pytest.approx(ref)
    m, lo, hi = S.mean_interval([1.0, 2.0, 3.0])                  # s = 1, n = 3: 2 ± t_{2, .975}/√3
    assert (lo, hi) == pytest.approx((2 - 4.302652729911275 / math.sqrt(3), 2 + 4.302652729911275 / math.sqrt(3)))
    assert S.mean_interval([8, 8, 8]) == (8.0, 8.0, 8.0)          # no spread: exact
    with pytest.raises(ValueError, match="at least 2"):
        S.mean_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        S.mean_interval(v, 1.0)


def test_welch_interval_is_scipys_welch_t():
    a, b = [3.0, 5.0, 4.0, 6.0], [1.0, 1.5, 3.0]
    d, lo, hi = S.welch_interval(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(np.mean(a) - np.mean(b)) and (lo, hi) == pytest.approx((ci.low, ci.high))
    d, lo, hi = S.welch_interval([8, 8, 8], [1.0, 2.0, 3.0])       # one side constant: ν = n_b − 1 (Satterthwaite)
    assert (lo, hi) == pytest.approx(sps.t.interval(0.95, 2, loc=6.0, scale=1 / math.sqrt(3)))
    assert S.welch_interval([8, 8], [2, 2]) == (6.0, 6.0, 6.0)
    with pytest.raises(ValueError, match="at least 2"):
        S.welch_interval([1.0], [1.0, 2.0])


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (93, 100), (200, 200), (1, 1)])
def test_wilson_interval_matches_scipy_and_the_closed_form(k, n):
    ref = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert S.wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)
    z, p = 1.959963984540054, k / n                               # Wilson 1927 by hand
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert S.wilson_interval(k, n) == pytest.approx((max(0, centre - half), min(1, centre + half)), abs=1e-12)
    lo, hi = S.wilson_interval(k, n, level=0.5)
    assert S.wilson_interval(k, n)[0] <= lo <= hi <= S.wilson_interval(k, n)[1]
    with pytest.raises(ValueError, match="0 ≤ k ≤ n"):
        S.wilson_interval(n + 1, n)


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    x = np.random.default_rng(0).normal(2.0, 1.0, 400)
    lo, hi = S.bootstrap_interval(x, n_boot=4000, seed=1)
    assert lo < x.mean() < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * x.std() / math.sqrt(len(x)), rel=0.1)   # ≈ mean ± 1.96 s.e.
    assert S.bootstrap_interval([3.0, 3.0, None, 3.0]) == (3.0, 3.0)   # constant values; None dropped
    assert S.bootstrap_interval(x, seed=5) == S.bootstrap_interval(list(x), seed=5)       # a function of the seed
    with pytest.raises(ValueError, match="no values"):
        S.bootstrap_interval([None])


def test_bootstrap_interval_covers_the_true_mean_about_as_often_as_it_says():
    # 400 samples of 50 exponential(1) values: the 90 % interval should contain the true mean 1 in ≈ 90 % of them
    # (the percentile bootstrap under-covers a little for a skewed law at n = 50; 6 binomial s.d. ≈ 0.09 around 0.9)
    rng = np.random.default_rng(0)
    hits = [lo <= 1.0 <= hi for lo, hi in (S.bootstrap_interval(rng.exponential(1.0, 50), n_boot=500, level=0.9,
                                                                 seed=i) for i in range(400))]
    assert 0.82 <= np.mean(hits) <= 0.96


def test_bootstrap_interval_of_another_statistic_resamples_rows():
    rows = np.array([[4.0, 10.0], [6.0, 10.0]])                   # ratio of column means: 0.4, 0.5 or 0.6 per resample
    lo, hi = S.bootstrap_interval(rows, n_boot=2000, statistic=lambda r: r[..., 0].mean(1) / r[..., 1].mean(1))
    assert (lo, hi) == (pytest.approx(0.4), pytest.approx(0.6))
    with pytest.raises(ValueError, match="one value per resample"):
        S.bootstrap_interval(rows, statistic=lambda r: r.mean(1))
