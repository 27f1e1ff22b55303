"""Advantages against verl's estimators transcribed as loops; QAE's binary-reward rule; EMPG; the
entropy-performance fit against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rl_references import verl_grpo_adv, verl_rloo_adv

from entropykit import rl


def rewards_and_groups(seed, n=24):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 3, (n,), generator=g).double() + torch.rand(n, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 6, (n,), generator=g)
    ids[0] = 99  # a group of one
    return r, ids


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", [True, False])
def test_grpo_matches_verl(seed, norm):
    r, ids = rewards_and_groups(seed)
    ours = rl.grpo_advantages(r, ids, norm_by_std=norm)
    ref = verl_grpo_adv(r, ids.tolist(), norm=norm)
    assert torch.allclose(ours, ref, atol=1e-12)


def test_grpo_contiguous_groups_equal_ids():
    r, _ = rewards_and_groups(3)
    ids = torch.arange(24) // 4
    assert torch.equal(rl.grpo_advantages(r, 4), rl.grpo_advantages(r, ids))
    with pytest.raises(ValueError, match="groups"):
        rl.grpo_advantages(r, 5)


@pytest.mark.parametrize("seed", [0, 1])
def test_rloo_matches_verl_and_leave_one_out(seed):
    r, ids = rewards_and_groups(seed)
    ours = rl.rloo_advantages(r, ids)
    assert torch.allclose(ours, verl_rloo_adv(r, ids.tolist()), atol=1e-12)
    for i in range(len(r)):
        others = [float(r[j]) for j in range(len(r)) if ids[j] == ids[i] and j != i]
        if others:
            assert float(ours[i]) == pytest.approx(float(r[i]) - sum(others) / len(others), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 16), st.floats(0.05, 0.95), st.integers(0, 10_000))
def test_qae_binary_rule(group, k, seed):
    g = torch.Generator().manual_seed(seed)
    r = (torch.rand(group, generator=g) < torch.rand((), generator=g)).double()
    a = rl.qae_advantages(r, group, k=k)
    p = float(r.mean())
    # lower K-quantile of binary rewards: 0 iff the failure share 1 - p reaches K
    baseline = 0.0 if (1 - p) >= k - 1e-12 else 1.0
    assert torch.equal(a, r - baseline)
    if baseline == 0.0:
        assert bool((a[r == 0] == 0).all())
    else:
        assert bool((a[r == 1] == 0).all())


def test_qae_general_quantile_matches_numpy_inverted_cdf():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(40, generator=g, dtype=torch.float64)
    for k in (0.1, 0.25, 0.5, 0.9):
        a = rl.qae_advantages(r, 8, k=k)
        for grp in range(5):
            vals = r[grp * 8:(grp + 1) * 8].numpy()
            q = np.quantile(vals, k, method="inverted_cdf")
            assert torch.allclose(a[grp * 8:(grp + 1) * 8], torch.from_numpy(vals - q), atol=1e-12)


def test_empg_self_calibrated_and_bonus():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(4, 6, generator=g, dtype=torch.float64) * 3
    a = torch.randn(4, 1, generator=g, dtype=torch.float64).expand(4, 6)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2, 4:] = False
    out = rl.empg_advantages(a, h, mask, k=2.0)
    hn = (h - h[mask].min()) / (h[mask].max() - h[mask].min() + 1e-8)
    gg = torch.exp(-2.0 * hn)
    gg = gg / gg[mask].mean()
    assert torch.allclose(out[mask], (gg * a)[mask], atol=1e-12)
    assert float(gg[mask].mean()) == pytest.approx(1.0)
    assert bool((out[~mask] == 0).all())
    bonus = rl.empg_advantages(a, h, mask, k=2.0, zeta=0.1, k_future=1.0) - out
    assert float(bonus[0, 2]) == pytest.approx(0.1 * math.exp(-float(hn[0, 3])))
    assert float(bonus[0, 5]) == 0.0 and float(bonus[2, 3]) == 0.0  # no next valid step


def test_advantages_bad_input():
    with pytest.raises(ValueError, match="rewards must be finite"):
        rl.grpo_advantages(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="rewards"):
        rl.grpo_advantages(torch.ones(2, 2), 2)
    with pytest.raises(ValueError, match="k"):
        rl.qae_advantages(torch.ones(4), 2, k=1.0)
    with pytest.raises(TypeError, match="groups"):
        rl.rloo_advantages(torch.ones(4), torch.ones(4))


# -------------------------------------------------------------------------------------------------
# entropy-performance fit
# -------------------------------------------------------------------------------------------------


def test_fit_matches_scipy_linregress_and_recovers_law():
    from scipy import stats

    g = np.random.default_rng(0)
    h = np.linspace(1.5, 0.05, 60)
    r = -0.25 * np.exp(h) + 0.95 + g.normal(0, 0.01, h.size)
    f = rl.fit_entropy_performance(h, r)
    lr = stats.linregress(np.exp(h), r)
    assert f.a == pytest.approx(-lr.slope, rel=1e-10)
    assert f.b == pytest.approx(lr.intercept, rel=1e-10)
    t = stats.t.ppf(0.975, h.size - 2)
    assert f.a_ci[1] - f.a == pytest.approx(t * lr.stderr, rel=1e-8)
    assert f.b_ci[1] - f.b == pytest.approx(t * lr.intercept_stderr, rel=1e-8)
    assert f.a_ci[0] < 0.25 < f.a_ci[1] and f.b_ci[0] < 0.95 < f.b_ci[1]
    assert f.ceiling_ci[0] < 0.70 < f.ceiling_ci[1]
    assert f.r2 > 0.95
    assert np.allclose(f.predict(h), -f.a * np.exp(h) + f.b)
    with pytest.raises(ValueError, match="entropy"):
        rl.fit_entropy_performance([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])
