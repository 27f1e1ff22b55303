"""losses.alignment: the tilt, best-of-N exact law (brute-force enumeration, Monte Carlo), the KL bound,
BoN vs tilt, and the tabular optimum that DPO / H-DPO reach with exact Bradley-Terry preferences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.losses import (
    best_of_n,
    best_of_n_kl,
    best_of_n_kl_bound,
    bon_vs_tilt,
    f_regularised_policy,
    policy_kl,
    preference_loss,
    tilt_at_kl,
    tilted_policy,
)


def _dist(k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)


def test_tilt_formula_and_optimality() -> None:
    p = _dist(6, 0)
    r = torch.tensor([0.3, -1.0, 2.0, 0.0, 0.5, 1.5], dtype=torch.float64)
    beta = 0.7
    t = tilted_policy(p, r, beta)
    z = sum(float(p[i]) * math.exp(float(r[i]) / beta) for i in range(6))
    assert torch.allclose(t, torch.tensor([float(p[i]) * math.exp(float(r[i]) / beta) / z for i in range(6)],
                                          dtype=torch.float64))

    def objective(q: torch.Tensor) -> float:
        return float((q * r).sum() - beta * policy_kl(q, p))

    best = objective(t)
    assert math.isclose(best, beta * math.log(z), rel_tol=1e-12)  # max = beta log Z
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        q = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64) * 2, 0)
        assert objective(q) <= best + 1e-12
    assert torch.allclose(tilted_policy(p, r, math.inf), p)


def _brute_bon(p: list[float], r: list[float], n: int) -> list[float]:
    """Enumerate all K^N draws; the winner is uniform among the drawn responses of maximal reward."""
    k = len(p)
    out = [0.0] * k
    for draw in itertools.product(range(k), repeat=n):
        w = math.prod(p[i] for i in draw)
        top = max(r[i] for i in draw)
        winners = [i for i in draw if r[i] == top]
        for i in winners:
            out[i] += w / len(winners)
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_best_of_n_equals_enumeration_with_ties(n: int) -> None:
    p = [0.1, 0.25, 0.05, 0.3, 0.2, 0.1]
    r = [1.0, 0.0, 1.0, 2.0, 0.0, -1.0]  # two tie groups
    got = best_of_n(torch.tensor(p, dtype=torch.float64), torch.tensor(r, dtype=torch.float64), n)
    assert torch.allclose(got, torch.tensor(_brute_bon(p, r, n), dtype=torch.float64), atol=1e-14)
    assert math.isclose(float(got.sum()), 1.0, rel_tol=1e-14)


def test_best_of_n_without_ties_is_cdf_difference_and_batched() -> None:
    p = torch.stack([_dist(7, 2), _dist(7, 3)])
    r = torch.stack([torch.randperm(7, generator=torch.Generator().manual_seed(s)).double() for s in (4, 5)])
    got = best_of_n(p, r, 5)
    for b in range(2):
        for i in range(7):
            f = float(p[b][r[b] <= r[b, i]].sum())
            f_ = float(p[b][r[b] < r[b, i]].sum())
            assert math.isclose(float(got[b, i]), f ** 5 - f_ ** 5, rel_tol=1e-12, abs_tol=1e-15)
    assert torch.allclose(got.sum(-1), torch.ones(2, dtype=torch.float64))


def test_best_of_n_matches_monte_carlo() -> None:
    p = torch.tensor([0.05, 0.3, 0.15, 0.2, 0.3], dtype=torch.float64)
    r = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0], dtype=torch.float64)
    n, m = 4, 200_000
    g = torch.Generator().manual_seed(6)
    draws = torch.multinomial(p, m * n, replacement=True, generator=g).view(m, n)
    # winner: the first drawn response of maximal reward (any response-blind tie rule gives the same law)
    rd = r[draws]
    first = (rd == rd.max(1, keepdim=True).values).float().argmax(1)
    win = draws[torch.arange(m), first]
    freq = torch.bincount(win, minlength=5).double() / m
    exact = best_of_n(p, r, n)
    se = (exact * (1 - exact) / m).sqrt()
    assert bool(((freq - exact).abs() <= 5 * se + 1e-12).all()), (freq, exact)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(0, 10_000), st.booleans())
def test_kl_bound_holds(k: int, seed: int, ties: bool) -> None:
    p = _dist(k, seed)
    g = torch.Generator().manual_seed(seed + 1)
    r = torch.randint(0, max(1, k // 3), (k,), generator=g).double() if ties else torch.randn(k, generator=g,
                                                                                             dtype=torch.float64)
    for n in (1, 2, 3, 5, 8, 16, 64, 1000):
        kl = float(best_of_n_kl(p, r, n))
        assert -1e-12 <= kl <= best_of_n_kl_bound(n) + 1e-12, (n, kl)


def test_kl_bound_is_approached_by_a_fine_uniform_grid() -> None:
    p = torch.full((20000,), 1 / 20000, dtype=torch.float64)
    r = torch.arange(20000, dtype=torch.float64)
    for n in (1, 2, 4, 16):
        kl = float(best_of_n_kl(p, r, n))
        assert kl <= best_of_n_kl_bound(n) and best_of_n_kl_bound(n) - kl < 1e-3
    assert best_of_n_kl_bound(1) == 0.0 and math.isclose(best_of_n_kl_bound(2), math.log(2) - 0.5)


def test_tilt_at_kl_and_bon_vs_tilt() -> None:
    p = _dist(50, 7)
    r = torch.randn(50, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for n in (2, 4, 16, 64):
        c = bon_vs_tilt(p, r, n)
        assert math.isclose(float(policy_kl(tilted_policy(p, r, c.beta), p)), c.kl, rel_tol=1e-8)
        assert c.kl <= c.kl_bound
        assert c.tilt_reward >= c.bon_reward - 1e-12  # the tilt is the KL-constrained reward maximiser
        assert c.bon_reward > float((p * r).sum())
    with pytest.raises(ValueError, match="kl must be <"):
        tilt_at_kl(p, r, 100.0)
    assert tilt_at_kl(p, r, 0.0) == math.inf


def test_alignment_bad_input() -> None:
    with pytest.raises(ValueError, match="probs must be non-negative and sum to 1"):
        best_of_n(torch.tensor([0.5, 0.6]), torch.zeros(2), 2)
    with pytest.raises(ValueError, match="reward"):
        best_of_n(torch.tensor([0.5, 0.5]), torch.zeros(3), 2)
    with pytest.raises(ValueError, match="n must be"):
        best_of_n(torch.tensor([0.5, 0.5]), torch.zeros(2), 0)
    with pytest.raises(ValueError, match="beta"):
        tilted_policy(torch.tensor([0.5, 0.5]), torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="reward must be finite"):
        tilted_policy(torch.tensor([0.5, 0.5]), torch.tensor([0.0, float("nan")]), 1.0)


# ------------------------------------------------------------------- the tabular optimum of DPO


def _population_fit(loss_type: str, p: torch.Tensor, r: torch.Tensor, beta: float,
                    **kw: float) -> torch.Tensor:
    """Minimise the exact population loss: pairs (i, j) ~ p x p, i preferred w.p. sigma(r_i - r_j)."""
    k = p.shape[0]
    i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    i, j = i.flatten(), j.flatten()
    pair_w = (p[i] * p[j]) * torch.sigmoid(r[i] - r[j])  # weight of "i chosen over j"
    logp_ref = p.log()
    theta = logp_ref.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=200, tolerance_grad=1e-11, tolerance_change=1e-14,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        lp = torch.log_softmax(theta, 0)
        out = preference_loss(lp[i], lp[j], logp_ref[i], logp_ref[j], loss_type=loss_type, beta=beta,
                              reduction="none", **kw)
        loss = (out.loss * pair_w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(theta.detach(), 0)


def test_dpo_population_optimum_is_the_tilt() -> None:
    k, beta = 12, 0.5
    p = _dist(k, 9)
    r = torch.randn(k, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    pi = _population_fit("sigmoid", p, r, beta)
    target = tilted_policy(p, r, beta)
    assert float(policy_kl(pi, target)) < 1e-3
    assert float(policy_kl(pi, target)) < 1e-8  # in fact exact up to the optimiser


def test_hdpo_population_optimum_is_the_sharpened_tilt() -> None:
    k, beta = 10, 0.5
    p = _dist(k, 11)
    r = torch.randn(k, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    for alpha in (0.5, 0.8, 1.5):
        pi = _population_fit("hdpo", p, r, beta, hdpo_alpha=alpha)
        target = torch.softmax(torch.log(tilted_policy(p, r, beta)) / alpha, 0)  # (p e^{r/beta})^{1/alpha}
        assert float(policy_kl(pi, target)) < 1e-6, alpha


@pytest.mark.parametrize(("div", "alpha"), [("forward_kl", 0.5), ("js_divergence", 0.5),
                                            ("alpha_divergence", 0.5), ("alpha_divergence", 0.2)])
def test_f_dpo_population_optimum_is_the_f_regularised_policy(div: str, alpha: float) -> None:
    k, beta = 10, 0.7
    p = _dist(k, 13)
    r = torch.randn(k, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    pi = _population_fit("sigmoid", p, r, beta, f_divergence=div, f_alpha=alpha)  # type: ignore[arg-type]
    target = f_regularised_policy(p, r, beta, div, alpha)
    assert float(policy_kl(pi, target)) < 1e-6
    # and it is the maximiser of E[r] - beta D_f(pi || p) among perturbations
    def objective(q: torch.Tensor) -> float:
        t = q / p
        if div == "forward_kl":  # f(t) = -log t
            f = -t.log()
        elif div == "js_divergence":  # f(t) = t log t - (t + 1) log((t + 1) / 2)
            f = t * t.log() - (t + 1) * ((t + 1) / 2).log()
        else:  # f(t) = (t^alpha - alpha t - (1 - alpha)) / (alpha (alpha - 1))
            f = (t ** alpha - alpha * t - (1 - alpha)) / (alpha * (alpha - 1))
        return float((q * r).sum() - beta * (p * f).sum())

    best = objective(target)
    g = torch.Generator().manual_seed(15)
    for _ in range(30):
        q = torch.softmax(target.log() + 0.1 * torch.randn(k, generator=g, dtype=torch.float64), 0)
        assert objective(q) <= best + 1e-12
