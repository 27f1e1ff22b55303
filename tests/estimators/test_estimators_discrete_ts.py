"""Discrete entropies against SciPy and the papers' recursions; permutation entropy and statistical
complexity against ordpy (exact) and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import digamma
from scipy.stats import entropy as scipy_entropy

from entropykit import estimators as est


def _grassberger_recursion(n: int) -> float:
    """Grassberger (2003), eq. (35): G_1 = -gamma - ln 2, G_2 = 2 - gamma - ln 2,
    G_{2m+1} = G_{2m}, G_{2m+2} = G_{2m} + 2/(2m+1)."""
    g = {1: -np.euler_gamma - math.log(2), 2: 2 - np.euler_gamma - math.log(2)}
    for m in range(3, n + 1):
        g[m] = g[m - 1] if m % 2 else g[m - 2] + 2 / (m - 1)
    return g[n]


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(0, 6), min_size=1, max_size=60))
def test_discrete_entropies_match_references(labels: list[int]) -> None:
    x = np.array(labels)
    counts = np.unique(x, return_counts=True)[1].astype(float)
    n = counts.sum()
    plug = scipy_entropy(counts)
    assert est.entropy_discrete(x) == pytest.approx(plug, abs=1e-12)
    assert est.entropy_discrete(x, method="miller_madow") == pytest.approx(plug + (counts.size - 1) / (2 * n))
    gr = math.log(n) - sum(c * _grassberger_recursion(int(c)) for c in counts) / n
    assert est.entropy_discrete(x, method="grassberger") == pytest.approx(gr, abs=1e-10)
    # Chao-Shen, written out per symbol
    f1 = min(float(np.sum(counts == 1)), n - 1)
    cs = 0.0
    for c in counts:
        pa = (1 - f1 / n) * c / n
        cs -= pa * math.log(pa) / (1 - (1 - pa) ** n)
    assert est.entropy_discrete(x, method="chao_shen") == pytest.approx(cs, abs=1e-10)
    assert est.entropy_discrete(x, base=2) == pytest.approx(plug / math.log(2), abs=1e-12)


def test_grassberger_g_matches_digamma_form() -> None:
    for n in range(1, 30):
        g = digamma(n) + 0.5 * (-1) ** n * (digamma((n + 1) / 2) - digamma(n / 2))
        assert g == pytest.approx(_grassberger_recursion(n), abs=1e-12)


def test_bias_corrections_approach_truth_from_few_samples() -> None:
    rng = np.random.default_rng(0)
    truth = math.log(50)
    runs = {m: [] for m in ("plugin", "miller_madow", "grassberger", "chao_shen")}
    for _ in range(50):
        x = rng.integers(0, 50, 60)
        for m in runs:
            runs[m].append(est.entropy_discrete(x, method=m))
    err = {m: abs(np.mean(v) - truth) for m, v in runs.items()}
    assert err["plugin"] > max(err["miller_madow"], err["grassberger"], err["chao_shen"])


def test_discrete_mutual_info_of_a_known_joint() -> None:
    # joint p(x, y) realised exactly by counts: MI equals the distribution's (dit's) value
    table = np.array([[4, 1], [1, 4]])
    xs = np.repeat([0, 0, 1, 1], table.ravel())
    ys = np.repeat([0, 1, 0, 1], table.ravel())
    p = table / table.sum()
    truth = float(np.sum(p * np.log(p / np.outer(p.sum(1), p.sum(0)))))
    assert est.mutual_info_discrete(xs, ys) == pytest.approx(truth, abs=1e-12)
    assert est.mutual_info_discrete(np.c_[xs, ys], xs) == pytest.approx(scipy_entropy(p.sum(1)), abs=1e-12)
    r = est.permutation_test(est.mutual_info_discrete, xs, ys, n_permutations=50)
    assert r.estimate == pytest.approx(truth) and r.null_mean < truth


@pytest.mark.parametrize(("order", "delay", "weighted"), [(3, 1, False), (4, 2, False), (5, 1, True)])
def test_permutation_entropy_matches_ordpy(order: int, delay: int, weighted: bool) -> None:
    ordpy = pytest.importorskip("ordpy")
    x = np.cumsum(np.random.default_rng(order).standard_normal(800))  # a random walk
    if weighted:
        ref = ordpy.weighted_permutation_entropy(x, dx=order, taux=delay)
    else:
        ref = ordpy.permutation_entropy(x, dx=order, taux=delay)
    ours = est.permutation_entropy(x, order=order, delay=delay, weighted=weighted)
    assert ours == pytest.approx(ref, abs=1e-12)
    h, c = ordpy.complexity_entropy(x, dx=order, taux=delay)
    assert est.statistical_complexity(x, order=order, delay=delay) == pytest.approx((h, c), abs=1e-12)


def test_permutation_entropy_closed_forms() -> None:
    assert est.permutation_entropy(np.arange(50.0)) == 0.0
    assert est.statistical_complexity(np.arange(50.0)) == (0.0, 0.0)
    # period-2 alternation, order 2: patterns (0,1) and (1,0) equally often -> H = log 2 (normalised 1)
    x = np.tile([0.0, 1.0], 50)
    assert est.permutation_entropy(x, order=2, normalize=False, base=2) == pytest.approx(1.0, abs=1e-3)
    # logistic map at r = 4 (chaos): order-3 pattern (2,1,0) is forbidden -> H <= log 5 / log 6
    z = np.empty(5000)
    z[0] = 0.1234
    for t in range(1, z.size):
        z[t] = 4 * z[t - 1] * (1 - z[t - 1])
    h, c = est.statistical_complexity(z, order=3)
    assert h <= math.log(5) / math.log(6) + 1e-12 and c > 0.1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), shift=st.floats(-100, 100), scale=st.floats(0.01, 100))
def test_permutation_entropy_increasing_map_invariance(seed: int, shift: float, scale: float) -> None:
    x = np.random.default_rng(seed).standard_normal(200)
    a = est.permutation_entropy(x, order=4)
    assert est.permutation_entropy(np.exp(x / 4) * scale + shift, order=4) == pytest.approx(a, abs=1e-12)
