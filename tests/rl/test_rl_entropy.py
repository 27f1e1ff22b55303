"""Entropy controls: the exact quantile and the forking-token mask (vs torch.quantile and TRL, beyond
2^24), adaptive coefficient (vs TRL's rule), EntroPIC on a synthetic plant, AEnt, HWE flags."""

from __future__ import annotations

import math
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rl_references import TrlAdaptiveEntropy

from entropykit import rl

# -------------------------------------------------------------------------------------------------
# exact quantile / high-entropy mask
# -------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.floats(0.0, 1.0), st.integers(0, 10_000), st.booleans(),
       st.sampled_from([torch.float32, torch.float64]))
def test_exact_quantile_equals_torch_quantile(n, q, seed, ties, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    if ties:
        x = torch.round(x * 2) / 2
    assert torch.equal(rl.exact_quantile(x, q), torch.quantile(x, q))


def test_high_entropy_mask_beyond_torch_quantile_limit():
    """2^25 tokens holding each integer 0..2^24-1 twice (sorted value at rank i: floor(i / 2)).

    rho = 0.2: rank 0.8 (n - 1) = 26843544.8 lies between two copies of 13421772, so the threshold is
    13421772 and the mask keeps n - 2 * 13421772 = 6710888 tokens. torch.quantile refuses this size.
    """
    n = 2**25
    perm = (torch.arange(n) * 2654435761) % n  # an odd multiplier permutes Z / 2^25
    x = (perm // 2).to(torch.float32)
    with pytest.raises(RuntimeError):
        torch.quantile(x, 0.8)
    mask = rl.high_entropy_mask(x.view(2**12, 2**13), torch.ones(2**12, 2**13, dtype=torch.bool), 0.2)
    assert int(mask.sum()) == n - 2 * 13421772


def _trl_mask(entropies, mask, threshold):
    trl = pytest.importorskip("trl")
    accel = types.SimpleNamespace(pad_across_processes=lambda t, dim=0, pad_index=0: t, gather=lambda t: t)
    fake = types.SimpleNamespace(accelerator=accel)
    return trl.GRPOTrainer.get_high_entropy_mask(fake, entropies, mask, threshold)


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.05, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_high_entropy_mask_equals_trl(rho, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(7, 33, generator=g) * 3
    h[0, :5] = 1.0  # ties
    mask = (torch.rand(7, 33, generator=g) < 0.8).long()
    ours = rl.high_entropy_mask(h, mask, rho)
    ref = _trl_mask(h, mask, 1 - rho)
    assert torch.equal(ours, ref)


def test_high_entropy_mask_empty_and_bad_input():
    h = torch.rand(2, 3)
    assert not rl.high_entropy_mask(h, torch.zeros(2, 3, dtype=torch.bool)).any()
    for bad in (0.0, 1.2, float("nan")):
        with pytest.raises(ValueError, match="rho"):
            rl.high_entropy_mask(h, torch.ones(2, 3, dtype=torch.bool), bad)
    with pytest.raises(ValueError, match="entropy must be finite"):
        rl.high_entropy_mask(torch.tensor([[float("nan")]]), torch.ones(1, 1, dtype=torch.bool))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.integers(0, 10_000), st.floats(0.01, 1.0))
def test_high_entropy_mask_properties(b, t, seed, rho):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.7
    sel = rl.high_entropy_mask(h, mask, rho)
    n = int(mask.sum())
    assert not (sel & ~mask).any()
    if n:
        assert int(sel.sum()) >= min(n, math.floor(rho * (n - 1)) + 1) - 1
        assert int(sel.sum()) >= 1
        rest = mask & ~sel
        if rest.any():
            assert float(h[sel].min()) > float(h[rest].max())


# -------------------------------------------------------------------------------------------------
# adaptive coefficient, bonus
# -------------------------------------------------------------------------------------------------


def test_adaptive_coefficient_follows_trl_rule():
    ours = rl.AdaptiveEntropyCoef(coef=0.01, target=0.2, delta=0.005, coef_min=0.0, coef_max=0.02)
    ref = TrlAdaptiveEntropy(0.01, 0.2, 0.005, 0.0, 0.02)
    seq = [0.5, 0.3, 0.19, 0.1, 0.05, 0.2, 0.2, 0.21, 0.15, 0.9, 0.0]
    for h in seq:
        assert ours.applied == ref.apply_coef()
        ours.update(h)
        ref.step(h)
        assert ours.coef == ref.coef
    with pytest.raises(ValueError, match="entropy"):
        ours.update(float("nan"))
    with pytest.raises(ValueError, match="coef"):
        rl.AdaptiveEntropyCoef(coef=2.0)


def test_entropy_bonus_is_minus_coef_times_mean():
    h = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], requires_grad=True)
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = rl.entropy_bonus(h, m, 0.5)
    assert float(out.detach()) == pytest.approx(-0.5 * 10 / 4)
    out.backward()
    assert torch.allclose(h.grad, -0.5 * m.float() / 4)


# -------------------------------------------------------------------------------------------------
# EntroPIC
# -------------------------------------------------------------------------------------------------


def test_entropic_tracks_target_on_synthetic_plant():
    """Plant: entropy decays by a drift each step (collapse) and rises with the control alpha."""
    g = torch.Generator().manual_seed(0)
    pic = rl.EntroPIC(target=1.0, kp=0.5, ki=0.05, limit=1.0)
    h, hs = 2.0, []
    for _ in range(400):
        alpha = pic.update(h)
        h = h - 0.03 + 0.08 * alpha + 0.01 * float(torch.randn((), generator=g))
        hs.append(h)
    tail = torch.tensor(hs[-100:])
    assert abs(float(tail.mean()) - 1.0) < 0.05  # the integral removes the drift's offset
    assert float((tail - 1.0).abs().max()) < 0.1
    # P only: a steady-state offset (why the I term is there)
    p_only = rl.EntroPIC(target=1.0, kp=0.5, ki=0.0)
    h = 2.0
    for _ in range(400):
        h = h - 0.03 + 0.08 * p_only.update(h)
    assert h < 0.5


def test_entropic_anti_windup():
    pic = rl.EntroPIC(target=1.0, kp=1.0, ki=0.5, limit=0.5)
    for _ in range(50):
        pic.update(0.0)  # far below target: saturated at +limit
    assert pic.alpha == 0.5
    assert abs(pic.integral) < 2.0  # integration stopped once saturated
    pic.update(1.5)  # above target: leaves saturation at once (no wound-up integral to unwind)
    assert pic.alpha < 0.0


def test_entropic_weights():
    a = torch.tensor([[2.0, -1.0, 0.0, 3.0]])
    lp = torch.log(torch.tensor([[0.9, 0.9, 0.5, 0.1]]))
    w = rl.entropic_weights(a, 0.3, log_prob=lp, prob_threshold=0.5)
    assert torch.allclose(w, torch.tensor([[0.7, 1.3, 1.0, 1.0]]))


# -------------------------------------------------------------------------------------------------
# AEnt, HWE
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 10])
def test_clamped_entropy_matches_naive(k):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 5, 10, generator=g, dtype=torch.float64, requires_grad=True)
    ours = rl.clamped_entropy(z, k, temperature=0.7)
    ref = []
    for row in z.detach().reshape(-1, 10):
        top = sorted(row.tolist(), reverse=True)[:k]
        p = torch.softmax(torch.tensor(top, dtype=torch.float64) / 0.7, 0)
        ref.append(float(-(p * p.log()).sum()))
    assert torch.allclose(ours.reshape(-1), torch.tensor(ref, dtype=torch.float64), atol=1e-12)
    ours.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert bool((rl.clamped_entropy(z, k) <= math.log(k) + 1e-12).all())


def test_window_entropy_flags_match_loop():
    g = torch.Generator().manual_seed(1)
    h = torch.rand(3, 20, generator=g, dtype=torch.float64) * 2
    mask = torch.rand(3, 20, generator=g) < 0.8
    flags = rl.window_entropy_flags(h, mask, window=4, threshold=1.0)
    for b in range(3):
        for t in range(20):
            vals = [float(h[b, s]) for s in range(max(0, t - 3), t + 1) if mask[b, s]]
            mean = sum(vals) / len(vals) if vals else 0.0
            assert bool(flags[b, t]) == (bool(mask[b, t]) and mean > 1.0)
    q = rl.window_entropy_flags(h, mask, window=4, quantile=0.5)
    assert 0 < int(q.sum()) <= int(mask.sum())


def test_low_prob_protection_masks_only_penalised_rare_tokens():
    g = torch.Generator().manual_seed(0)
    lp = torch.log(torch.rand(6, 10, generator=g, dtype=torch.float64).clamp_min(1e-4))
    adv = torch.randn(6, 10, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 10, generator=g) < 0.8
    w = rl.low_prob_protection(lp, adv, mask, rho=0.2, min_prob=0.01)
    tau = torch.quantile(lp[mask], 0.2)
    expect = mask & (adv < 0) & (lp <= tau) & (lp.exp() > 0.01)
    assert torch.equal(w == 0, expect)
    assert expect.any()
    old = lp.clone()
    lpg = lp.clone().requires_grad_()
    loss, _ = rl.ppo_loss(old, lpg, adv, mask, weights=w)
    (gr,) = torch.autograd.grad(loss, lpg)
    assert bool((gr[expect] == 0).all()) and bool((gr[mask & ~expect] != 0).all())
