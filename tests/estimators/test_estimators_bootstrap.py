"""Resampling intervals: coverage of known truths over seeds (small), BCa against SciPy's
``scipy.stats.bootstrap``, the duplicate-row failure of the plain bootstrap for kNN estimators,
and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.stats import entropy as scipy_entropy

from entropykit import estimators as est


def gaussian_pair(n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed).standard_normal((2, n))
    return g[0], rho * g[0] + math.sqrt(1 - rho**2) * g[1]


def test_half_sampling_covers_the_gaussian_mutual_information() -> None:
    rho, seeds = 0.6, 20
    truth = -0.5 * math.log(1 - rho**2)
    hits, widths = 0, []
    for s in range(seeds):
        r = est.bootstrap(est.mutual_info_ksg, *gaussian_pair(200, rho, s), n_resamples=40, resample="half",
                          random_state=s)
        hits += r.low <= truth <= r.high
        widths.append(r.high - r.low)
        assert r.estimate == est.mutual_info_ksg(*gaussian_pair(200, rho, s))
    # nominal 95 %: with 20 seeds, >= 16 hits fails with probability < 2 % at true coverage 0.95
    assert hits >= 16, hits
    assert 0.1 < np.mean(widths) < 0.5  # the std of KSG at n = 200 is ~0.06: width ~ 4 std


def test_plain_bootstrap_duplicates_inflate_knn_mutual_information() -> None:
    x, y = gaussian_pair(200, 0.6, 0)
    r = est.bootstrap(est.mutual_info_ksg, x, y, n_resamples=10, resample="bootstrap")
    assert r.distribution.mean() > r.estimate + 0.2  # why resample="half" exists


@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_bootstrap_covers_a_discrete_entropy(method: str) -> None:
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    truth, seeds, hits = scipy_entropy(p), 20, 0
    for s in range(seeds):
        x = np.random.default_rng(s).choice(6, 300, p=p)
        r = est.bootstrap(est.entropy_discrete, x, n_resamples=100, interval=method, random_state=s)
        hits += r.low <= truth <= r.high
    assert hits >= 16, hits  # nominal 19 of 20


def test_bca_matches_scipy() -> None:
    x = np.random.default_rng(3).exponential(2.0, 60)  # skewed: BCa differs from the percentile

    def mean(a: np.ndarray) -> float:
        return float(a.mean())

    b = 20_000  # Monte Carlo error of a 2.5 % quantile: ~0.02 standard errors
    ours = est.bootstrap(mean, x, n_resamples=b, interval="bca", random_state=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=b, method="BCa", random_state=2).confidence_interval
    pct = est.bootstrap(mean, x, n_resamples=b, interval="percentile", random_state=1)
    se = ours.std
    assert ours.low == pytest.approx(ref.low, abs=0.1 * se)
    assert ours.high == pytest.approx(ref.high, abs=0.1 * se)
    assert ours.high - pct.high > 0.05 * se  # BCa shifts right for a right-skewed mean
    assert ours.std == pytest.approx(x.std(ddof=1) / math.sqrt(60), rel=0.1)


def test_unpaired_resampling_and_keyword_passthrough() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.normal(0, 1, 300), rng.normal(1, 1, 500)  # KL = 0.5
    r = est.bootstrap(est.kl_divergence_knn, p, q, paired=False, resample="half", n_resamples=20, k=3)
    assert r.estimate == est.kl_divergence_knn(p, q, k=3)
    assert r.low < r.estimate < r.high
    with pytest.raises(ValueError, match="same number of samples"):
        est.bootstrap(est.kl_divergence_knn, p, q)


def test_bootstrap_validation() -> None:
    x = np.arange(10.0)
    with pytest.raises(TypeError, match="estimator must be callable"):
        est.bootstrap(3, x)
    with pytest.raises(ValueError, match="samples must hold at least one"):
        est.bootstrap(est.entropy_discrete)
    with pytest.raises(ValueError, match="interval must be 'percentile' or 'basic' with resample='half'"):
        est.bootstrap(est.entropy_discrete, x, interval="bca", resample="half")
    with pytest.raises(ValueError, match="confidence"):
        est.bootstrap(est.entropy_discrete, x, confidence=1.0)
    with pytest.raises(ValueError, match="interval must be one of"):
        est.bootstrap(est.entropy_discrete, x, interval="studentized")
    with pytest.raises(ValueError, match="finite values"):
        est.bootstrap(lambda a: float("nan"), x)
    a = est.bootstrap(est.entropy_discrete, x, random_state=4)
    assert np.array_equal(a.distribution, est.bootstrap(est.entropy_discrete, x, random_state=4).distribution)
