"""NSB entropy against a float64 reference written independently (trapezoid rule on a fine grid of
log beta, vectorised over the grid), ndd's documented values, and its limits."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import digamma, polygamma
from scipy.stats import entropy as scipy_entropy

from entropykit import estimators as est


def nsb_reference(counts: list[int], k: int) -> float:
    """Posterior mean entropy under the NSB prior, integrated over u = log(beta) in [-60, 25] by the
    trapezoid rule on 50,001 points (the integrand is smooth and vanishes at both ends); the
    evidence from its product form, log Gamma(x + m) - log Gamma(x) = sum_{j < m} log(x + j)."""
    c = np.array([x for x in counts if x > 0], dtype=float)
    n, k0 = c.sum(), k - c.size
    u = np.linspace(-60, 25, 50_001)
    b = np.exp(u)
    log_ev = -np.log(k * b[:, None] + np.arange(n)).sum(axis=1)
    for ci in c:
        log_ev += np.log(b[:, None] + np.arange(ci)).sum(axis=1)
    logw = u + np.log(k * polygamma(1, k * b + 1) - polygamma(1, b + 1)) + log_ev
    w = np.exp(logw - logw.max())
    a = n + k * b
    bb = b[:, None]
    h = digamma(a + 1) - (((c + bb) * digamma(c + bb + 1)).sum(axis=1) + k0 * b * digamma(b + 1)) / a
    return float(np.trapezoid(w * h, u) / np.trapezoid(w, u))


@pytest.mark.parametrize(("counts", "k"), [
    ([4, 12, 4, 5, 3, 1, 5, 1, 2, 2, 2, 2, 11, 3, 4, 12, 12, 1, 2], 100),
    ([7, 3, 5, 8, 9, 1, 3, 3, 1, 0, 2, 5, 2, 11, 4, 23, 5, 0, 8, 0], 20),
    ([1, 1, 1, 1, 1, 1, 1, 1], 1000),  # no coincidences, strongly undersampled
    ([60, 1], 2),
    ([3], 7),
    ([20, 20, 20, 20], 4),  # near-uniform: the posterior on beta sits at large beta
])
def test_nsb_matches_float64_reference(counts: list[int], k: int) -> None:
    got = est.entropy_counts(counts, method="nsb", alphabet_size=k)
    assert got == pytest.approx(nsb_reference(counts, k), rel=1e-9, abs=1e-10)


def test_nsb_matches_ndd_documented_values() -> None:
    # ndd's README (1.x): ndd.entropy(counts, k=20) for the old example (20 bins incl. 3 zeros)
    old = [7, 3, 5, 8, 9, 1, 3, 3, 1, 0, 2, 5, 2, 11, 4, 23, 5, 0, 8, 0]
    got = est.entropy_counts(old, method="nsb", alphabet_size=20)
    assert got == pytest.approx(2.623634344902917, abs=1e-9)
    # ndd.entropy(counts, k=100) = 2.8060922529931225 and 2.8400090835681375; a 30-digit mpmath
    # integration gives 2.806096916544 for the first: ndd's quadrature is off by ~5e-6 at K = 100
    new = [4, 12, 4, 5, 3, 1, 5, 1, 2, 2, 2, 2, 11, 3, 4, 12, 12, 1, 2]
    assert est.entropy_counts(new, method="nsb", alphabet_size=100) == pytest.approx(2.8060922529931225,
                                                                                   abs=1e-5)
    assert est.entropy_counts(new, method="nsb", alphabet_size=100) == pytest.approx(2.806096916544, abs=2e-9)
    assert est.entropy_counts([12, *new], method="nsb", alphabet_size=100) == pytest.approx(
        2.8400090835681375, abs=1e-5)


@settings(max_examples=15, deadline=None)
@given(counts=st.lists(st.integers(0, 30), min_size=2, max_size=12).filter(lambda c: sum(c) > 0),
       extra=st.integers(0, 40))
def test_nsb_is_within_its_prior_range_and_samples_agree_with_counts(counts: list[int], extra: int) -> None:
    k = sum(1 for c in counts if c > 0) + extra
    h = est.entropy_counts(counts, method="nsb", alphabet_size=max(k, 1))
    assert 0.0 <= h <= math.log(max(k, 1)) + 1e-12
    x = np.repeat(np.arange(len(counts)), counts)
    assert est.entropy_discrete(x, method="nsb", alphabet_size=max(k, 1)) == h


def test_nsb_approaches_the_plugin_value_with_many_samples() -> None:
    counts = np.array([4000, 3000, 2000, 1000])
    h = est.entropy_counts(counts, method="nsb", alphabet_size=4)
    assert h == pytest.approx(scipy_entropy(counts), abs=2e-4)


def test_nsb_is_less_biased_than_plugin_when_undersampled() -> None:
    rng = np.random.default_rng(0)
    k, truth = 200, math.log(200)
    plug, nsb = [], []
    for _ in range(10):
        x = rng.integers(0, k, 60)  # 60 samples of a 200-symbol uniform
        plug.append(est.entropy_discrete(x))
        nsb.append(est.entropy_discrete(x, method="nsb", alphabet_size=k))
    assert abs(np.mean(nsb) - truth) < 0.25 * abs(np.mean(plug) - truth)


def test_entropy_counts_validation() -> None:
    with pytest.raises(ValueError, match="counts must be a 1-D vector of non-negative integers"):
        est.entropy_counts([1, -1])
    with pytest.raises(ValueError, match="counts must be a 1-D vector"):
        est.entropy_counts([0, 0])
    with pytest.raises(ValueError, match="alphabet_size"):
        est.entropy_counts([1, 2, 3], method="nsb", alphabet_size=2)  # fewer than observed
    assert est.entropy_counts([5, 5], base=2) == pytest.approx(1.0)


def test_nsb_mutual_information_of_a_well_sampled_joint() -> None:
    rng = np.random.default_rng(2)
    p = np.array([[0.3, 0.1], [0.1, 0.5]])
    cells = rng.choice(4, 20_000, p=p.ravel())
    x, y = cells // 2, cells % 2
    truth = float(np.sum(p * np.log(p / np.outer(p.sum(1), p.sum(0)))))
    nsb = est.mutual_info_discrete(x, y, method="nsb")
    assert nsb == pytest.approx(est.mutual_info_discrete(x, y), abs=2e-3)
    assert nsb == pytest.approx(truth, abs=0.02)


# --------------------------------------------------------------------------- posterior standard deviation


def dirichlet_h_moments_naive(alpha: np.ndarray) -> tuple[float, float]:
    """E[H] and E[H^2] under Dir(alpha), term by term over the full K x K matrix of ordered bin pairs
    (no pair-sum shortcut): E[p_i log p_i p_j log p_j] for i != j and E[p_i^2 log^2 p_i] from the
    moments of log p under the Dirichlet tilted by p_i p_j or p_i^2."""
    a = alpha.sum()
    m1 = digamma(a + 1) - np.sum(alpha * digamma(alpha + 1)) / a
    g = digamma(alpha + 1) - digamma(a + 2)
    pair = np.outer(alpha, alpha) * (np.outer(g, g) - polygamma(1, a + 2))
    diag = alpha * (alpha + 1) * ((digamma(alpha + 2) - digamma(a + 2)) ** 2 + polygamma(1, alpha + 2)
                                  - polygamma(1, a + 2))
    np.fill_diagonal(pair, diag)
    return float(m1), float(pair.sum() / (a * (a + 1)))


def nsb_std_quad(counts: list[int], k: int) -> tuple[float, float]:
    """NSB mean and standard deviation by SciPy quadrature over log(beta) of the mixture of the exact
    Dirichlet moments (E[H^2] - E[H]^2), on fixed breakpoints."""
    from scipy.integrate import quad

    c = np.array(list(counts) + [0] * (k - len(counts)), dtype=float)
    n = c.sum()

    def log_w(u: float) -> float:  # evidence, product form: log G(x + m) - log G(x) = sum_j log(x + j)
        b = math.exp(u)
        ev = -np.log(k * b + np.arange(n)).sum() + sum(np.log(b + np.arange(ci)).sum() for ci in c)
        return float(u + np.log(k * polygamma(1, k * b + 1) - polygamma(1, b + 1)) + ev)

    grid = np.linspace(-30, 20, 2001)
    top = max(log_w(u) for u in grid)
    pts = list(np.linspace(-30, 20, 11))

    def integral(f: object) -> float:
        return sum(quad(lambda u: math.exp(log_w(u) - top) * f(u), lo, hi, epsabs=1e-15, epsrel=1e-12)[0]
                   for lo, hi in itertools.pairwise(pts))

    z = integral(lambda u: 1.0)
    e1 = integral(lambda u: dirichlet_h_moments_naive(c + math.exp(u))[0]) / z
    e2 = integral(lambda u: dirichlet_h_moments_naive(c + math.exp(u))[1]) / z
    return e1, math.sqrt(e2 - e1**2)


@pytest.mark.parametrize(("counts", "k"), [([5, 2, 1, 1], 6), ([3, 0, 1], 3), ([1, 1, 1], 12),
                                           ([7, 3, 5, 8, 9, 1, 3, 3, 1, 0, 2, 5, 2, 11, 4, 23, 5, 0, 8], 20),
                                           ([40, 30, 20, 10], 4)])
def test_nsb_std_matches_quadrature_of_exact_dirichlet_moments(counts: list[int], k: int) -> None:
    mean, std = est.entropy_counts(counts, method="nsb", alphabet_size=k, return_std=True)
    ref_mean, ref_std = nsb_std_quad([c for c in counts if c > 0], k)
    assert mean == pytest.approx(ref_mean, rel=1e-9)
    assert std == pytest.approx(ref_std, rel=1e-7)


def test_nsb_std_matches_monte_carlo_samples_from_the_posterior() -> None:
    """Draw beta from its NSB posterior (on a fine grid of log beta), then p ~ Dir(n + beta), and
    take the spread of H(p): the posterior standard deviation by simulation (5 standard errors)."""
    from scipy.special import gammaln

    counts = np.array([7, 3, 5, 8, 9, 1, 3, 3, 1, 0, 2, 5, 2, 11, 4, 23, 5, 0, 8, 0], dtype=float)
    k, m = counts.size, 60_000
    u = np.linspace(-15, 10, 20_001)
    b = np.exp(u)
    logw = (u + np.log(k * polygamma(1, k * b + 1) - polygamma(1, b + 1)) + gammaln(k * b)
            - gammaln(counts.sum() + k * b) + (gammaln(counts[:, None] + b) - gammaln(b)).sum(axis=0))
    w = np.exp(logw - logw.max())
    rng = np.random.default_rng(0)
    beta = rng.choice(b, size=m, p=w / w.sum())
    g = rng.standard_gamma(counts[None, :] + beta[:, None])
    p = g / g.sum(axis=1, keepdims=True)
    h = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=1)
    mean, std = est.entropy_counts(counts, method="nsb", alphabet_size=k, return_std=True)
    se_std = h.std() * math.sqrt((scipy_kurtosis(h) + 2) / (4 * m))  # s.e. of a sample sd
    assert abs(mean - h.mean()) < 5 * h.std() / math.sqrt(m)
    assert abs(std - h.std()) < 5 * se_std


def scipy_kurtosis(h: np.ndarray) -> float:
    from scipy.stats import kurtosis

    return float(kurtosis(h))  # excess kurtosis


def test_nsb_std_matches_ndd_documented_values() -> None:
    # ndd's tests/run_example.py: (2.8060922529931225, 0.11945501149743358) and, with a 12 prepended,
    # (2.8400090835681375, 0.10884840411906187); ndd's quadrature is the coarser one at K = 100
    new = [4, 12, 4, 5, 3, 1, 5, 1, 2, 2, 2, 2, 11, 3, 4, 12, 12, 1, 2]
    _, std = est.entropy_counts(new, method="nsb", alphabet_size=100, return_std=True)
    assert std == pytest.approx(0.11945501149743358, abs=5e-5)
    _, std = est.entropy_counts([12, *new], method="nsb", alphabet_size=100, return_std=True)
    assert std == pytest.approx(0.10884840411906187, abs=5e-5)


@settings(max_examples=6, deadline=None)
@given(counts=st.lists(st.integers(0, 20), min_size=2, max_size=8).filter(lambda c: sum(c) > 0),
       extra=st.integers(0, 20))
def test_nsb_std_properties(counts: list[int], extra: int) -> None:
    k = max(sum(1 for c in counts if c > 0) + extra, 1)
    mean, std = est.entropy_counts(counts, method="nsb", alphabet_size=k, return_std=True)
    assert mean == est.entropy_counts(counts, method="nsb", alphabet_size=k)
    assert 0.0 <= std <= math.log(max(k, 2))  # H lives in [0, log K]
    mean2, std2 = est.entropy_counts(counts, method="nsb", alphabet_size=k, return_std=True, base=2)
    assert (mean2, std2) == pytest.approx((mean / math.log(2), std / math.log(2)), rel=1e-12)
    x = np.repeat(np.arange(len(counts)), counts)
    assert est.entropy_discrete(x, method="nsb", alphabet_size=k, return_std=True) == (mean, std)


def test_nsb_std_shrinks_with_data_and_is_nsb_only() -> None:
    p = np.array([0.4, 0.3, 0.2, 0.1])
    stds = [est.entropy_counts(np.round(p * n), method="nsb", alphabet_size=4, return_std=True)[1]
            for n in (20, 200, 2000)]
    assert stds[0] > stds[1] > stds[2] > 0
    # the Bayesian spread approaches the delta-method sd of the plug-in: sqrt(Var[-log p] / N)
    var = float(np.sum(p * np.log(p) ** 2) - np.sum(p * np.log(p)) ** 2)
    assert stds[2] == pytest.approx(math.sqrt(var / 2000), rel=0.05)
    with pytest.raises(ValueError, match="return_std must be False unless method='nsb'"):
        est.entropy_counts([1, 2, 3], method="plugin", return_std=True)
