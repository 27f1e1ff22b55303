"""Lp-Reg in its proxy-KL form: the min-p proxy and the loss against a float64 transcription of the
authors' verl code (CarlanLark/Lp-Reg-dev), gradients, the registry and fused paths, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rl_references import lp_reg_min_p_log_prob, lp_reg_reference

from entropykit import rl


def _batch(seed, b=4, t=9, v=12):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 2.5
    y = torch.multinomial(torch.softmax(z, -1).reshape(-1, v), 1, generator=g).reshape(b, t)  # sampled
    mask = torch.rand(b, t, generator=g) < 0.85
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t).contiguous()
    lp0 = torch.log_softmax(z, -1).gather(-1, y[..., None])[..., 0]
    old = lp0 + 0.1 * torch.randn(b, t, generator=g, dtype=torch.float64)
    return z, y, mask, adv, old, lp0


@pytest.mark.parametrize("mode", ["min_p", "fixed"])
@pytest.mark.parametrize(("min_p", "temp"), [(0.02, 1.0), (0.1, 0.7), (0.3, 1.3)])
def test_proxy_matches_authors_min_p(mode, min_p, temp):
    z, y, *_ = _batch(0)
    ours = rl.lp_reg_proxy_log_prob(z, y, min_p=min_p, mode=mode, temperature=temp)
    ref = lp_reg_min_p_log_prob(z, y, min_p, "minp" if mode == "min_p" else "fixed", temp)
    kept = ref > -1000  # the reference writes -1e4 where we write -inf
    if mode == "fixed":  # rows whose every token is filtered: the reference falls back to uniform, we
        flat = torch.softmax(z, -1).amax(-1) < min_p  # keep the argmax
        top = z.argmax(-1) == y
        assert bool(torch.isneginf(ours[flat & ~top]).all()) and bool((ours[flat & top] == 0).all())
        kept &= ~flat
        ref = torch.where(flat, torch.full_like(ref, -1e4), ref)
    assert bool(kept.any()) and bool((~kept).any())
    assert torch.allclose(ours[kept], ref[kept], atol=1e-12, rtol=0)
    assert bool(torch.isneginf(ours[~kept]).all())
    # the proxy amplifies every kept token (T = 1): log pi_proxy >= log pi
    if temp == 1.0:
        lp = torch.log_softmax(z, -1).gather(-1, y[..., None])[..., 0]
        assert bool((ours[kept] >= lp[kept] - 1e-12).all())


@pytest.mark.parametrize("kind", ["low_var_kl", "kl", "abs", "mse"])
@pytest.mark.parametrize("agg", rl.LOSS_AGG_MODES)
@pytest.mark.parametrize("seed", [1, 2])
def test_lp_reg_loss_matches_authors_code(kind, agg, seed):
    z, y, mask, adv, old, lp0 = _batch(seed)
    proxy = rl.lp_reg_proxy_log_prob(z, y, min_p=0.02)
    lp = lp0.clone().requires_grad_()
    loss, m = rl.lp_reg_loss(old, lp, adv, mask, agg, proxy_log_prob=proxy, lp_reg_ratio=0.4, lp_reg_coef=0.7,
                             kl_type=kind, clip_ratio_high=0.28)
    lp_ref = lp0.clone().requires_grad_()
    ref, n = lp_reg_reference(old, lp_ref, proxy.nan_to_num(neginf=-1e4), adv, mask, agg, hi=0.28,
                              neg_ratio=0.4, coef=0.7, kind=kind)
    assert n >= 1 and m["n_selected"] == n
    assert float(loss) == pytest.approx(float(ref), rel=1e-8)  # the reference's mean adds 1e-8 to N
    (g,) = torch.autograd.grad(loss, lp)
    (gr,) = torch.autograd.grad(ref, lp_ref)
    assert torch.allclose(g, gr, atol=1e-12, rtol=1e-8)


def test_lp_reg_through_registry_and_fused_path():
    z, y, mask, adv, old, lp0 = _batch(3)
    proxy = rl.lp_reg_proxy_log_prob(z, y, min_p=0.02)
    a, b = rl.policy_loss("lp_reg", old, lp0, adv, mask, proxy_log_prob=proxy, lp_reg_ratio=0.4)
    c, d = rl.lp_reg_loss(old, lp0, adv, mask, proxy_log_prob=proxy, lp_reg_ratio=0.4)
    assert float(a) == float(c) and b == d
    g = torch.Generator().manual_seed(4)
    h = torch.randn(4, 9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    logits = h.detach() @ w.detach().T
    proxy = rl.lp_reg_proxy_log_prob(logits, y, min_p=0.01)
    old = torch.log_softmax(logits, -1).gather(-1, y[..., None])[..., 0]
    loss, m = rl.fused_policy_loss(h, w, y, old, adv, mask, method="lp_reg", proxy_log_prob=proxy,
                                   lp_reg_ratio=0.4, chunk_size=5)
    (gh,) = torch.autograd.grad(loss, h)
    h2 = h.detach().clone().requires_grad_()
    lp = torch.log_softmax(h2 @ w.detach().T, -1).gather(-1, y[..., None])[..., 0]
    ref, _ = rl.lp_reg_loss(old, lp, adv, mask, proxy_log_prob=proxy, lp_reg_ratio=0.4)
    (rh,) = torch.autograd.grad(ref, h2)
    assert m["n_selected"] >= 1 and float(loss) == pytest.approx(float(ref), abs=1e-12)
    assert torch.allclose(gh, rh, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ratio=st.floats(0.05, 1.0),
       kind=st.sampled_from(["low_var_kl", "abs", "mse"]))
def test_lp_reg_gradient_protects_only_selected_tokens(seed, ratio, kind):
    """Off the selection the gradient equals PPO's; on it the KL term pushes log pi up (toward the proxy),
    strictly unless the estimate is clamped at 10. (k1 = log pi - log proxy has gradient +1 per token: it
    does not protect; the docstring says so.)"""
    z, y, mask, adv, old, lp0 = _batch(seed)
    proxy = rl.lp_reg_proxy_log_prob(z, y, min_p=0.05)
    lp = lp0.clone().requires_grad_()
    loss, _ = rl.lp_reg_loss(old, lp, adv, mask, proxy_log_prob=proxy, lp_reg_ratio=ratio, kl_type=kind)
    (g,) = torch.autograd.grad(loss, lp)
    sel = rl.lp_reg_selection(lp0, adv, mask, proxy, ratio=ratio)
    lp2 = lp0.clone().requires_grad_()
    base, _ = rl.ppo_loss(old, lp2, adv, mask, clip_ratio_c=None)
    (gb,) = torch.autograd.grad(base, lp2)
    unclipped = -adv * torch.exp(lp0 - old) / mask.sum()  # d/dlp of -A r / N
    assert torch.allclose(g[~sel], gb[~sel], atol=1e-12)
    d = (proxy - lp0)[sel]
    est = {"low_var_kl": d.exp() - d - 1, "abs": d, "mse": 0.5 * d**2}[kind]
    strict = est < 10
    assert bool((g[sel][strict] < unclipped[sel][strict]).all())  # descent raises log pi more than PG
    assert torch.allclose(g[sel][~strict], unclipped[sel][~strict], atol=1e-12)
    assert bool((adv[sel] < 0).all()) and bool((lp0[sel] < proxy[sel]).all()) and bool(mask[sel].all())


def test_lp_reg_selection_is_the_lowest_negative_tokens():
    lp = torch.log(torch.tensor([[0.5, 0.05, 0.01, 0.3, 0.02]]))
    adv = torch.tensor([[-1.0, -1.0, -1.0, 1.0, -1.0]])
    proxy = torch.zeros_like(lp)  # everything kept and amplified
    sel = rl.lp_reg_selection(lp, adv, torch.ones(1, 5), proxy, ratio=0.5)  # k = int(0.5 * 4) = 2
    assert sel.tolist() == [[False, False, True, False, True]]
    proxy[0, 2] = -math.inf  # the proxy filtered token 2: not protected
    sel = rl.lp_reg_selection(lp, adv, torch.ones(1, 5), proxy, ratio=0.5)
    assert sel.tolist() == [[False, False, False, False, True]]


def test_lp_reg_bad_input():
    lp = torch.log(torch.tensor([[0.5, 0.05]]))
    adv, mask = torch.tensor([[-1.0, -1.0]]), torch.ones(1, 2)
    with pytest.raises(ValueError, match="proxy_log_prob"):
        rl.lp_reg_loss(lp, lp, adv, mask)
    with pytest.raises(ValueError, match="proxy_log_prob"):
        rl.lp_reg_loss(lp, lp, adv, mask, proxy_log_prob=torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="proxy_log_prob"):
        rl.lp_reg_loss(lp, lp, adv, mask, proxy_log_prob=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="kl_type"):
        rl.lp_reg_loss(lp, lp, adv, mask, proxy_log_prob=torch.zeros(1, 2), kl_type="full")
    with pytest.raises(ValueError, match="lp_reg_ratio"):
        rl.lp_reg_loss(lp, lp, adv, mask, proxy_log_prob=torch.zeros(1, 2), lp_reg_ratio=0.0)
    with pytest.raises(ValueError, match="min_p"):
        rl.lp_reg_proxy_log_prob(torch.zeros(2, 3), torch.tensor([0, 1]), min_p=1.5)
    with pytest.raises(ValueError, match="mode"):
        rl.lp_reg_proxy_log_prob(torch.zeros(2, 3), torch.tensor([0, 1]), mode="top_k")
    with pytest.raises(ValueError, match="target"):
        rl.lp_reg_proxy_log_prob(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
