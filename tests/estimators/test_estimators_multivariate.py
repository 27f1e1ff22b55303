"""O-information against closed forms of the Gaussian (from the population covariance, via SciPy's
multivariate normal entropy) and its known signs (redundancy > 0, synergy < 0)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from entropykit import estimators as est


def population(cov: np.ndarray) -> tuple[float, float]:
    n = cov.shape[0]

    def h(cols: list[int]) -> float:
        return float(multivariate_normal(np.zeros(len(cols)), cov[np.ix_(cols, cols)]).entropy())

    every = list(range(n))
    tc = sum(h([i]) for i in every) - h(every)
    dtc = sum(h([j for j in every if j != i]) for i in every) - (n - 1) * h(every)
    return tc, dtc


COV = np.array([[1.0, 0.6, 0.5, 0.2], [0.6, 1.0, 0.4, 0.1], [0.5, 0.4, 1.0, 0.3], [0.2, 0.1, 0.3, 1.0]])


@pytest.mark.parametrize("copula", [False, True])
def test_gaussian_o_information_matches_population(copula: bool) -> None:
    x = np.random.default_rng(0).multivariate_normal(np.zeros(4), COV, size=20000)
    tc, dtc = population(COV)
    r = est.o_information(x, copula=copula)
    assert r.tc == pytest.approx(tc, abs=0.02) and r.dtc == pytest.approx(dtc, abs=0.02)
    assert r.o_information == pytest.approx(tc - dtc, abs=0.02)
    assert r.s_information == pytest.approx(r.tc + r.dtc, abs=1e-12)


def test_knn_o_information_near_the_population_value() -> None:
    x = np.random.default_rng(1).multivariate_normal(np.zeros(4), COV, size=4000)
    tc, dtc = population(COV)  # TC 0.428, O-information 0.092
    k = est.o_information(x, method="knn")
    assert k.o_information == pytest.approx(tc - dtc, abs=0.05)
    assert k.tc == pytest.approx(tc, abs=0.04)
    assert k.s_information == pytest.approx(k.tc + k.dtc, abs=1e-12)


def test_three_variables_o_information_is_co_information() -> None:
    x = np.random.default_rng(2).multivariate_normal(np.zeros(3), COV[:3, :3], size=100)
    cov = np.cov(x, rowvar=False)

    def h(c: list[int]) -> float:
        return 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov[np.ix_(c, c)]))

    i12 = h([0]) + h([1]) - h([0, 1])
    i12_3 = h([0, 2]) + h([1, 2]) - h([2]) - h([0, 1, 2])
    assert est.o_information(x, copula=False).o_information == pytest.approx(i12 - i12_3, abs=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_copula_o_information_ignores_increasing_maps_and_column_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(4), COV, size=300)
    r = est.o_information(x)
    warped = np.c_[np.exp(x[:, 0]), x[:, 1] ** 3, np.arctan(x[:, 2]), x[:, 3]]
    assert est.o_information(warped).o_information == pytest.approx(r.o_information, abs=1e-9)
    for perm in itertools.islice(itertools.permutations(range(4)), 3):
        assert est.o_information(x[:, list(perm)]).o_information == pytest.approx(r.o_information, abs=1e-9)


def test_o_information_validation() -> None:
    with pytest.raises(ValueError, match="at least 3 variables"):
        est.o_information(np.zeros((10, 2)))
    x = np.random.default_rng(0).standard_normal((50, 2))
    with pytest.raises(ValueError, match="non-singular"):
        est.o_information(np.c_[x, x[:, 0] + x[:, 1]], copula=False)
