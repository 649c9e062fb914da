"""Uncertainty of measured numbers: the one place dfs computes intervals and standard errors.

Plain functions over numbers (lists, numpy arrays or CPU tensors), at the bottom layer (numpy and scipy only):

* :func:`mean_se`: a mean and its standard error s/√n, and :func:`paired_difference`, the same for the
  differences of paired values (two models on the same held-out digits, two swaps on the same pairs);
* :func:`variance_se`: a sample variance and its standard error (is a variance what a formula predicts?);
* :func:`mean_interval`: Student's t interval of a mean over a few independent values (seeds, folds);
* :func:`prediction_interval`: where one more draw of a noisy measurement should fall (a noise floor measured on a
  few fresh data sets, against which one measured value is read);
* :func:`welch_interval`: Welch's t interval of a difference of two means (unpaired, unequal variances);
* :func:`wilson_interval`: Wilson's score interval of a proportion k/n (classifier accuracy);
* :func:`bootstrap_interval`: the percentile bootstrap interval of a statistic of n items (pairs, digits).

Each docstring names its formula and source; ``tests/test_stats.py`` checks each against scipy or a closed form.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as _scipy_stats


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _values(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"need a 1-D sequence of numbers, got shape {v.shape}")
    return v


def mean_se(values) -> tuple[float, float]:
    """(mean, standard error) of n ≥ 2 values: x̄ and s/√n, s² = Σ(x − x̄)²/(n − 1) (the unbiased sample variance)."""
    v = _values(values)
    if len(v) < 2:
        raise ValueError(f"a standard error needs at least 2 values, got {len(v)}")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def paired_difference(a, b) -> tuple[float, float]:
    """(mean, standard error) of the paired differences d_i = a_i − b_i (:func:`mean_se` of d): what two measurements
    on the same items (the same held-out digits, the same face pairs) differ by, with the item-to-item variation
    they share cancelled. Read Δ beyond ±2 s.e. as a difference (the normal approximation of the paired t test)."""
    a, b = _values(a), _values(b)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"need two paired 1-D sequences of the same length ≥ 2; got {a.shape}, {b.shape}")
    return mean_se(a - b)


def variance_se(values) -> tuple[float, float]:
    """(s², standard error of s²) of n ≥ 4 values: s² = Σ(x − x̄)²/(n − 1) and the plug-in standard error
    √((m₄ − s⁴ (n − 3)/(n − 1)) / n), m₄ = Σ(x − x̄)⁴/n, from Var(s²) = (μ₄ − σ⁴ (n − 3)/(n − 1))/n (the variance of the
    sample variance, e.g. Kendall & Stuart, *The Advanced Theory of Statistics* vol. 1, §10.5; for normal data it is
    2σ⁴/(n − 1))."""
    v = _values(values)
    n = len(v)
    if n < 4:
        raise ValueError(f"a standard error of a variance needs at least 4 values, got {n}")
    s2 = float(v.var(ddof=1))
    m4 = float(((v - v.mean()) ** 4).mean())
    return s2, math.sqrt(max(m4 - s2 * s2 * (n - 3) / (n - 1), 0.0) / n)


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of n ≥ 2 independent values (seeds, folds):
    x̄ ± t_{n−1, (1+level)/2} · s/√n, s with n − 1 degrees of freedom (Student 1908; scipy.stats.t.interval).
    Values that are all equal give the exact (x̄, x̄, x̄)."""
    _check_level(level)
    v = _values(values)
    if len(v) < 2:
        raise ValueError(f"an interval of the mean needs at least 2 values, got {len(v)}")
    m = float(v.mean())
    if np.all(v == v[0]):
        return m, m, m
    h = float(_scipy_stats.t.ppf((1 + level) / 2, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - h, m + h


def prediction_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the normal-theory prediction interval for one new draw from the law of n ≥ 2 independent
    draws: x̄ ± t_{n−1, (1+level)/2} · s · √(1 + 1/n) (Hahn & Meeker 1991, *Statistical Intervals*, ch. 4). E.g. the
    distance a fresh data set has to a held-out one, measured on a few fresh sets: a sampler's single distance
    outside this interval is farther from (or closer to) the data than sampling noise explains."""
    _check_level(level)
    v = _values(values)
    if len(v) < 2:
        raise ValueError(f"a prediction interval needs at least 2 values, got {len(v)}")
    m = float(v.mean())
    h = float(_scipy_stats.t.ppf((1 + level) / 2, len(v) - 1)) * float(v.std(ddof=1)) * math.sqrt(1 + 1 / len(v))
    return m, m - h, m + h


def welch_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """(x̄_a − x̄_b, low, high): Welch's t interval of a difference of two means with unequal variances (Welch 1947):
    Δ ± t_{ν, (1+level)/2} · se, se² = s_a²/n_a + s_b²/n_b, ν = se⁴ / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))
    (Welch–Satterthwaite; scipy.stats.ttest_ind(equal_var=False).confidence_interval). Exact (Δ, Δ, Δ) when neither
    sample varies."""
    _check_level(level)
    a, b = _values(a), _values(b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's interval needs at least 2 values on each side, got {len(a)} and {len(b)}")
    d = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    dof = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    h = float(_scipy_stats.t.ppf((1 + level) / 2, dof)) * se
    return d, d - h, d + h


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """(low, high): Wilson's score interval of a proportion k/n (Wilson 1927; Agresti & Coull 1998, eq. 2):
    (p̂ + z²/2n ± z √(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n), z the (1 + level)/2 normal quantile. Unlike p̂ ± z·s.e.
    it stays inside [0, 1] and is not zero-width at k = 0 or k = n."""
    if not (0 <= k <= n and n > 0):
        raise ValueError(f"need 0 ≤ k ≤ n and n > 0, got k={k}, n={n}")
    _check_level(level)
    z, p = float(_scipy_stats.norm.ppf((1 + level) / 2)), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_interval(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                       statistic=None) -> tuple[float, float]:
    """(low, high): the percentile bootstrap interval (Efron & Tibshirani 1993, §13.3) of a statistic of n items:
    draw ``n_boot`` resamples of the n items with replacement (numpy's ``default_rng(seed)``), compute the statistic
    of each, and take the (1 − level)/2 and (1 + level)/2 quantiles (linear interpolation) of the n_boot values.

    ``values``: the items, numbers (``None`` ones are dropped first, e.g. a pair where no face was found) or rows of
    an array (n, …). ``statistic``: maps the resampled items (n_boot, n, …) to (n_boot,) values; default the mean
    over the items. E.g. a ratio of means over rows: ``lambda r: r[..., 0].mean(1) / r[..., 1].mean(1)``."""
    if not hasattr(values, "shape"):
        values = [x for x in values if x is not None]
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0 or len(v) == 0:
        raise ValueError("no values to bootstrap")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"level must be in (0, 1) and n_boot >= 1, got {level}, {n_boot}")
    idx = np.random.default_rng(seed).integers(0, len(v), (n_boot, len(v)))
    boot = v[idx].mean(1) if statistic is None else np.asarray(statistic(v[idx]), dtype=np.float64)
    if boot.shape != (n_boot,):
        raise ValueError(f"statistic must give one value per resample, shape ({n_boot},); got {boot.shape}")
    a = (1 - level) / 2
    return float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))
