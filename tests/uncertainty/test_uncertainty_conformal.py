"""Split conformal sets and conformal risk control: scores by hand, the finite-sample coverage bound
over many calibration splits, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import uncertainty as unc


def test_quantile_is_the_ceil_rank() -> None:
    s = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6])  # n = 9
    for alpha, rank in ((0.1, 9), (0.2, 8), (0.5, 5), (0.05, 10)):
        assert math.ceil((9 + 1) * (1 - alpha) - 1e-12) == rank
        want = math.inf if rank > 9 else float(torch.sort(s).values[rank - 1])
        assert unc.conformal_quantile(s, alpha) == want


def test_scores_by_hand() -> None:
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    y = torch.tensor([2])
    assert float(unc.conformal_scores(p, y, method="lac", probs=True)) == pytest.approx(0.85)
    assert float(unc.conformal_scores(p, y, method="aps", probs=True, randomized=False)) == pytest.approx(
        0.95
    )
    # rank(y) = 3, k_reg = 1, lam = 0.2: + 0.2 * 2
    raps = unc.conformal_scores(p, y, method="raps", probs=True, randomized=False, lam=0.2, k_reg=1)
    assert float(raps) == pytest.approx(0.95 + 0.4)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    aps = unc.conformal_scores(p, y, method="aps", probs=True, generator=g)
    assert float(aps) == pytest.approx(0.8 + float(u) * 0.15)


def test_sets_are_the_labels_whose_score_is_below_q() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, 6, generator=g, dtype=torch.float64)
    cp = unc.SplitConformal(alpha=0.2, method="raps", randomized=False, lam=0.1, k_reg=2).fit(
        z, torch.randint(0, 6, (50,), generator=g)
    )
    test = torch.randn(20, 6, generator=g, dtype=torch.float64)
    sets = cp.predict(test)
    for k in range(6):
        s = unc.conformal_scores(
            test, torch.full((20,), k), method="raps", randomized=False, lam=0.1, k_reg=2
        )
        assert torch.equal(sets[:, k], s <= cp.qhat)
    # APS without randomisation: every set is the top-k classes for some k (a prefix of the ranking)
    aps = unc.SplitConformal(alpha=0.2, method="aps", randomized=False).fit(z, z.argmax(-1)).predict(test)
    ranked = aps.gather(1, test.argsort(-1, descending=True))
    assert torch.equal(ranked, torch.arange(6) < ranked.sum(-1, keepdim=True))


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_coverage_over_many_splits_within_the_finite_sample_bound(method: str) -> None:
    """Marginal coverage over calibration splits is in [1 - alpha, 1 - alpha + 1/(n+1)] (continuous
    scores); the mean over S splits x m test points must sit there within 4 standard errors."""
    alpha, n, m, k, splits = 0.1, 99, 200, 8, 150
    g = torch.Generator().manual_seed(2024)
    w = torch.randn(k, 4, generator=g, dtype=torch.float64)
    covs = []
    for _ in range(splits):
        x = torch.randn(n + m, 4, generator=g, dtype=torch.float64)
        z = x @ w.T
        y = torch.distributions.Categorical(logits=z * 0.7).sample()  # a miscalibrated model
        cp = unc.SplitConformal(alpha=alpha, method=method, lam=0.05, k_reg=2).fit(z[:n], y[:n], generator=g)
        covs.append(unc.coverage(cp.predict(z[n:], generator=g), y[n:]))
    c = np.array(covs)
    lo, hi = 1 - alpha, math.ceil((n + 1) * (1 - alpha)) / (n + 1)  # = 1 - alpha exactly here (n = 99)
    hi = max(hi, 1 - alpha + 1 / (n + 1))
    se = c.std(ddof=1) / math.sqrt(splits)
    assert lo - 4 * se <= c.mean() <= hi + 4 * se
    # the per-split coverage is Beta-distributed: it fluctuates, and some splits are below 1 - alpha
    assert c.min() < 1 - alpha < c.max()


def test_risk_control_bounds_the_false_negative_rate() -> None:
    """Multi-label sets {k : p_k >= 1 - lambda}: FNR is non-increasing in lambda; CRC's lambda_hat
    keeps the expected test FNR <= alpha (mean over splits)."""
    alpha, n, k = 0.2, 100, 10
    lambdas = torch.linspace(0, 1, 101, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    test_fnr = []
    for _ in range(60):
        p = torch.rand(n + 100, k, generator=g, dtype=torch.float64)
        labels = torch.rand(n + 100, k, generator=g, dtype=torch.float64) < p  # P(label) = p_k
        labels[:, 0] = True  # at least one positive label per sample
        in_set = p[:, None, :] >= 1 - lambdas[None, :, None]  # (N, G, K)
        fnr = ((~in_set) & labels[:, None, :]).sum(-1) / labels.sum(-1, keepdim=True)
        lam = unc.risk_control(fnr[:n].double(), lambdas, alpha)
        j = int((lambdas == lam).nonzero()[0])
        test_fnr.append(float(fnr[n:, j].mean()))
    assert np.mean(test_fnr) <= alpha + 0.01
    assert np.mean(test_fnr) > alpha - 0.08  # not trivially conservative


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 50), st.floats(0.01, 0.99), st.integers(0, 2**31 - 1))
def test_quantile_property(n: int, alpha: float, seed: int) -> None:
    s = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = unc.conformal_quantile(s, alpha)
    covered = int((s <= q).sum())  # at least ceil((n+1)(1-alpha)) of n+1 with the test point
    if math.isinf(q):
        assert (n + 1) * (1 - alpha) > n - 1e-9
    else:
        assert covered >= math.ceil((n + 1) * (1 - alpha) - 1e-12)


def test_bad_input() -> None:
    z = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="alpha must be a number in"):
        unc.conformal_quantile([0.1, 0.2], 1.0)
    with pytest.raises(ValueError, match="scores must not be empty"):
        unc.conformal_quantile([], 0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        unc.conformal_scores(z, y, method="thr")
    with pytest.raises(ValueError, match="labels holds index 3"):
        unc.conformal_scores(z, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="sum to 1"):
        unc.conformal_scores(torch.full((5, 3), 0.5), y, probs=True)
    with pytest.raises(ValueError, match="must be fitted first"):
        unc.SplitConformal().predict(z)
    with pytest.raises(ValueError, match="non-increasing in lambda"):
        unc.risk_control(torch.tensor([[0.0, 1.0]]), [0.0, 1.0], 0.1)
    with pytest.raises(ValueError, match=r"losses must lie in \[0, bound"):
        unc.risk_control(torch.tensor([[2.0, 1.0]]), [0.0, 1.0], 0.1)
    with pytest.raises(ValueError, match="lambdas must be strictly increasing"):
        unc.risk_control(torch.tensor([[1.0, 0.0]]), [1.0, 0.0], 0.1)
    with pytest.raises(TypeError, match="sets must be a bool tensor"):
        unc.coverage(torch.ones(2, 2), torch.tensor([0, 1]))
