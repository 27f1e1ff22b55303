"""The KSG bias remedies: Gaussian-copula marginals and the Gaussian-surrogate bias correction
(``mutual_info_ksg(copula=True, gaussian_surrogates=m)``), against hand-made references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, rankdata

from entropykit import estimators as est
from entropykit.estimators import knn


def _gauss(dx: int, dy: int, off: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    s = np.full((dx + dy, dx + dy), off)
    np.fill_diagonal(s, 1.0)
    z = np.random.default_rng(seed).multivariate_normal(np.zeros(dx + dy), s, size=n)
    truth = 0.5 * math.log(np.linalg.det(s[:dx, :dx]) * np.linalg.det(s[dx:, dx:]) / np.linalg.det(s))
    return z[:, :dx], z[:, dx:], truth


def test_copula_equals_ksg_on_hand_made_normal_scores_and_is_invariant_to_monotone_maps() -> None:
    x, y, _ = _gauss(2, 1, 0.5, 400, 0)
    scores = [norm.ppf(rankdata(a, axis=0) / (len(a) + 1)) for a in (x, y)]
    got = est.mutual_info_ksg(x, y, copula=True)
    assert got == pytest.approx(est.mutual_info_ksg(*scores), abs=1e-12)
    warped = np.column_stack([np.exp(x[:, 0]), x[:, 1] ** 3])  # strictly increasing per coordinate
    assert est.mutual_info_ksg(warped, np.arcsinh(5 * y), copula=True) == pytest.approx(got, abs=1e-12)


def test_wishart_bias_of_the_gaussian_plugin_mi_matches_monte_carlo() -> None:
    """E[I_G(S)] - I for the sample covariance S of n Gaussian rows, by simulation (4 s.e.)."""
    dx, dy, n, reps = 3, 2, 40, 4000
    s = np.full((5, 5), 0.4)
    np.fill_diagonal(s, 1.0)
    truth = knn._gaussian_mi(s, dx)
    rng = np.random.default_rng(1)
    chol = np.linalg.cholesky(s)
    vals = np.array([knn._gaussian_mi(np.cov(rng.standard_normal((n, 5)) @ chol.T, rowvar=False), dx)
                     for _ in range(reps)])
    bias = 0.5 * (knn._log_det_bias(dx, n) + knn._log_det_bias(dy, n) - knn._log_det_bias(dx + dy, n))
    assert abs(vals.mean() - truth - bias) < 4 * vals.std() / math.sqrt(reps)
    assert bias == pytest.approx(dx * dy / (2 * n), rel=0.35)  # the large-n rule of thumb


def test_gaussian_surrogates_remove_most_of_the_high_dimensional_bias() -> None:
    x, y, truth = _gauss(8, 8, 0.5, 1500, 2)
    plain = est.mutual_info_ksg(x, y)
    corrected = est.mutual_info_ksg(x, y, gaussian_surrogates=2)
    assert plain < truth - 0.07  # KSG's known underestimate in 16 dimensions
    assert abs(corrected - truth) < 0.3 * abs(plain - truth)
    again = est.mutual_info_ksg(x, y, gaussian_surrogates=2)
    assert again == corrected  # seeded (random_state=0)
    other = est.mutual_info_ksg(x, y, gaussian_surrogates=2, random_state=5)
    assert other != corrected and abs(other - corrected) < 0.1


def test_gaussian_surrogates_on_independent_data_stay_near_zero_and_are_not_clipped() -> None:
    g = np.random.default_rng(4).standard_normal((800, 6))
    vals = [est.mutual_info_ksg(g[:, :3], g[:, 3:], gaussian_surrogates=1, random_state=s) for s in range(3)]
    assert all(abs(v) < 0.05 for v in vals)


def test_remedy_validation() -> None:
    x, y, _ = _gauss(2, 2, 0.5, 50, 0)
    with pytest.raises(ValueError, match="gaussian_surrogates must be"):
        est.mutual_info_ksg(x, y, gaussian_surrogates=-1)
    with pytest.raises(TypeError, match="copula must be a bool"):
        est.mutual_info_ksg(x, y, copula="yes")
    with pytest.raises(ValueError, match="non-singular joint sample covariance"):
        est.mutual_info_ksg(np.column_stack([x[:, 0], 2 * x[:, 0]]), y, gaussian_surrogates=1, jitter=0.0)
    with pytest.raises(ValueError, match="x must have no constant column"):
        est.mutual_info_ksg(np.column_stack([x[:, 0], np.ones(50)]), y, copula=True)
