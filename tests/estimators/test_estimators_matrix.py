"""Matrix / spectral entropies and the Cauchy-Schwarz divergence against closed forms, SciPy and
naive float64 formulas; properties (rotation invariance, symmetry)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import logm

from entropykit import estimators as est


def test_von_neumann_entropy_matches_trace_formula() -> None:
    z = np.random.default_rng(0).standard_normal((50, 6)) @ np.diag([3.0, 2, 1, 1, 0.5, 0.1])
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    rho = u.T @ u / len(u)
    ref = float(-np.trace(rho @ logm(rho)).real)  # -tr(rho log rho), SciPy's matrix logarithm
    assert est.von_neumann_entropy(z) == pytest.approx(ref, abs=1e-9)
    assert est.von_neumann_entropy(torch.from_numpy(z), base=2) == pytest.approx(ref / math.log(2), abs=1e-9)


def test_rankme_matches_definition_and_bounds() -> None:
    z = np.random.default_rng(1).standard_normal((40, 10))
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert est.rankme(z) == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-12)
    low = z[:, :3] @ np.random.default_rng(2).standard_normal((3, 10))  # rank 3
    assert 1.0 <= est.rankme(low) <= 3.0 + 1e-6 < est.rankme(z) <= 10


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_a_power_law(alpha: float) -> None:
    lam = np.arange(1, 21, dtype=float) ** -alpha
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((20, 20)))[0]
    cov = q @ np.diag(lam) @ q.T
    z = np.random.default_rng(1).multivariate_normal(np.zeros(20), cov, size=20000)
    assert est.alpha_req(z, fit_to=10) == pytest.approx(alpha, abs=0.08)


def test_matrix_renyi_entropy_and_mutual_info() -> None:
    x = np.random.default_rng(0).standard_normal((60, 2))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    a = np.exp(-d2 / 2) / 60
    lam = np.linalg.eigvalsh(a)
    assert est.matrix_renyi_entropy(x, sigma=1.0) == pytest.approx(-math.log(np.sum(lam**2)), abs=1e-9)
    assert est.matrix_renyi_entropy(x, sigma=1.0, alpha=1.0) == pytest.approx(
        float(-np.sum(lam[lam > 1e-300] * np.log(lam[lam > 1e-300]))), abs=1e-6)
    y = np.random.default_rng(1).standard_normal((60, 2))
    mi = est.matrix_mutual_info
    assert mi(x, x) > mi(x, x + 0.5 * y) > mi(x, y)
    assert est.matrix_mutual_info(x, y) >= -1e-12


def test_cauchy_schwarz_divergence_gaussian_limit() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.normal(0, 1, (3000, 2)), rng.normal(0, 1, (3000, 2)) + np.array([1.0, 1.0])
    truth = 2.0 / (2 * (1 + 0.5**2))  # |mu1 - mu2|^2 / 2(s^2 + sigma^2)
    assert est.cauchy_schwarz_divergence(p, q, sigma=0.5) == pytest.approx(truth, abs=0.1)  # seeds: +-0.07


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), shift=st.floats(-5, 5))
def test_cs_divergence_properties(seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    p, q = rng.standard_normal((30, 2)), rng.standard_normal((25, 2)) + 0.3
    d = est.cauchy_schwarz_divergence(p, q)
    assert d == pytest.approx(est.cauchy_schwarz_divergence(q, p), abs=1e-9)
    assert d == pytest.approx(est.cauchy_schwarz_divergence(p + shift, q + shift), abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_spectral_measures_are_rotation_invariant(seed: int) -> None:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((30, 5)) * [2.0, 1.0, 1.0, 0.5, 0.1]
    q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    assert est.von_neumann_entropy(z @ q) == pytest.approx(est.von_neumann_entropy(z), abs=1e-9)
    assert est.rankme(z @ q) == pytest.approx(est.rankme(z), rel=1e-9)
    assert est.alpha_req(z @ q) == pytest.approx(est.alpha_req(z), abs=1e-6)
    assert est.matrix_renyi_entropy(z @ q, sigma=1.0) == pytest.approx(
        est.matrix_renyi_entropy(z, sigma=1.0), abs=1e-9)


def test_matrix_validation() -> None:
    with pytest.raises(ValueError, match="all-zero row"):
        est.von_neumann_entropy(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"fit_from\.\.fit_to"):
        est.alpha_req(np.random.default_rng(0).standard_normal((10, 3)), fit_from=3)
    with pytest.raises(ValueError, match="sigma must be"):
        est.cauchy_schwarz_divergence(np.zeros((3, 1)), np.ones((3, 1)), sigma=0)
    with pytest.raises(ValueError, match="same number of features"):
        est.cauchy_schwarz_divergence(np.zeros((3, 1)), np.ones((3, 2)))


# --------------------------------------------------------------------------- diffusion spectral entropy


def dse_reference(z: np.ndarray, sigma: float, t: int) -> float:
    """The definition read literally: eigenvalues of the non-symmetric P = D^-1 G (general solver)."""
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    g = np.exp(-d2 / (2 * sigma**2))
    p = g / g.sum(axis=1, keepdims=True)
    lam = np.abs(np.linalg.eigvals(p)) ** t
    q = lam / lam.sum()
    q = q[q > 0]
    return float(-(q * np.log(q)).sum())


@pytest.mark.parametrize(("sigma", "t"), [(0.5, 1), (1.0, 2), (2.0, 5)])
def test_dse_matches_the_literal_definition(sigma: float, t: int) -> None:
    z = np.random.default_rng(int(sigma * 10) + t).standard_normal((60, 3))
    assert est.diffusion_spectral_entropy(z, sigma=sigma, t=t) == pytest.approx(dse_reference(z, sigma, t),
                                                                               abs=1e-9)


def test_dse_known_answers() -> None:
    far = np.arange(12.0)[:, None] * 1000  # every point isolated: P = I
    assert est.diffusion_spectral_entropy(far, sigma=1.0) == pytest.approx(math.log(12), abs=1e-12)
    assert est.diffusion_spectral_entropy(far, sigma=1.0, base=2) == pytest.approx(math.log2(12), abs=1e-12)
    clusters = np.repeat(np.eye(5) * 100, [3, 7, 10, 2, 8], axis=0)  # 5 tight clusters of unequal sizes
    for t in (1, 3, 10):
        got = est.diffusion_spectral_entropy(clusters, sigma=1.0, t=t)
        assert got == pytest.approx(math.log(5), abs=1e-9)
    blob = np.random.default_rng(0).standard_normal((80, 2))  # one connected blob: large t -> 0
    values = [est.diffusion_spectral_entropy(blob, sigma=1.0, t=t) for t in (1, 4, 16, 256)]
    assert all(a > b for a, b in itertools.pairwise(values)) and values[-1] < 0.05


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 30), sigma=st.sampled_from([0.3, 1.0, 3.0]))
def test_dse_range_and_rigid_invariance(seed: int, n: int, sigma: float) -> None:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))
    h = est.diffusion_spectral_entropy(z, sigma=sigma)
    assert -1e-12 <= h <= math.log(n) + 1e-9
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    assert est.diffusion_spectral_entropy(z @ q + 5.0, sigma=sigma) == pytest.approx(h, abs=1e-8)


def test_dsmi_known_answers() -> None:
    y = np.repeat(np.arange(4), 40)
    z = np.eye(4)[y] * 100 + 1e-3 * np.random.default_rng(0).standard_normal((160, 4))
    # the label fixes the tight cluster: DSE(Z | y) = 0, a random 40-subset holds all 4 clusters
    assert est.diffusion_spectral_mutual_info(z, y, sigma=1.0) == pytest.approx(math.log(4), abs=1e-4)
    shuffled = np.random.default_rng(1).permutation(y)  # labels independent of the clusters
    assert abs(est.diffusion_spectral_mutual_info(z, shuffled, sigma=1.0)) < 0.05
    assert est.diffusion_spectral_mutual_info(z, y, sigma=1.0, base=2) == pytest.approx(2.0, abs=1e-4)
    with pytest.raises(ValueError, match="z and labels must have the same number of samples"):
        est.diffusion_spectral_mutual_info(z, y[:-1])
    with pytest.raises(ValueError, match="sigma"):
        est.diffusion_spectral_entropy(z, sigma=0.0)
    with pytest.raises(ValueError, match="t must be"):
        est.diffusion_spectral_entropy(z, t=0)
