"""Policy losses and aggregation against float64 transcriptions of verl and TRL; micro-batch invariance
of the covariance selection; KL-Cov on-policy; bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rl_references import (
    trl_aggregate,
    trl_per_token_loss,
    verl_agg,
    verl_clip_cov,
    verl_gspo,
    verl_kl_cov,
    verl_vanilla,
)

from entropykit import rl

MODES = rl.LOSS_AGG_MODES
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def batch(b=6, t=9, seed=0, spread=0.3, empty_row=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = lp + torch.randn(b, t, generator=g, dtype=torch.float64) * spread
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t).clone()
    lens = torch.randint(1, t + 1, (b,), generator=g)
    if empty_row:
        lens[1] = 0
    mask = torch.arange(t)[None, :] < lens[:, None]
    return old.to(dtype), lp.to(dtype).requires_grad_(), adv.to(dtype), mask


def grad(loss, x):
    (gx,) = torch.autograd.grad(loss, x)
    return gx


# -------------------------------------------------------------------------------------------------
# aggregation
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_agg_loss_matches_hand_sums_with_empty_sequence(mode):
    x = torch.tensor([[1.0, 2.0, 3.0], [9.0, 9.0, 9.0], [4.0, 5.0, 0.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 1, 0]])
    hand = {  # written out by hand
        "token-mean": (1 + 2 + 3 + 4 + 5) / 5,
        "seq-mean-token-sum": (6 + 0 + 9) / 3,
        "seq-mean-token-mean": (2 + 0 + 4.5) / 3,
        "seq-mean-token-sum-norm": 15 / 3,
    }[mode]
    assert float(rl.agg_loss(x, m, mode)) == pytest.approx(hand, abs=1e-12)
    assert float(rl.agg_loss(x, m, mode)) == pytest.approx(float(verl_agg(x, m.bool(), mode)), abs=1e-7)


def test_agg_loss_empty_mask_is_zero_with_graph():
    x = torch.randn(2, 3, requires_grad=True)
    out = rl.agg_loss(x, torch.zeros(2, 3, dtype=torch.bool))
    assert float(out.detach()) == 0.0
    out.backward()
    assert x.grad is not None and bool((x.grad == 0).all())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("splits", [2, 3])
def test_normalizer_makes_micro_batches_add_up(mode, splits):
    _old, lp, _adv, mask = batch(b=6)
    full = rl.agg_loss(lp, mask, mode)
    norm = {"token-mean": float(mask.sum()), "seq-mean-token-sum-norm": float(mask.shape[-1])}.get(
        mode, float(mask.shape[0]))
    parts = sum(rl.agg_loss(l, m, mode, normalizer=norm)
                for l, m in zip(lp.chunk(splits), mask.chunk(splits)))
    assert float(parts.detach()) == pytest.approx(float(full.detach()), abs=1e-12)


# -------------------------------------------------------------------------------------------------
# losses vs verl / TRL
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("lo", "hi", "c"), [(0.2, 0.2, 3.0), (0.2, 0.28, 3.0), (0.1, 0.3, 1.5)])
def test_vanilla_matches_verl(mode, lo, hi, c):
    old, lp, adv, mask = batch(spread=0.4)
    ours, m = rl.ppo_loss(old, lp, adv, mask, mode, clip_ratio_low=lo, clip_ratio_high=hi, clip_ratio_c=c)
    ref, clipfrac, kl, lower = verl_vanilla(old, lp, adv, mask, mode, lo, hi, c)
    assert float(ours) == pytest.approx(float(ref), abs=1e-7)
    assert torch.allclose(grad(ours, lp), grad(ref, lp), atol=1e-9)
    assert m["pg_clipfrac"] == pytest.approx(float(clipfrac), abs=1e-7)
    assert m["ppo_kl"] == pytest.approx(float(kl), abs=1e-7)
    assert m["pg_clipfrac_lower"] == pytest.approx(float(lower), abs=1e-7)
    assert 0 < m["pg_clipfrac"] < 1  # the case exercises clipping


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("hi", [0.2, 0.28])
def test_vanilla_without_dual_clip_matches_trl(loss_type, hi):
    old, lp, adv, mask = batch(spread=0.4, empty_row=False)
    a = adv[:, :1]
    ref = trl_aggregate(loss_type, trl_per_token_loss("grpo", lp, old, a, 0.2, hi), mask, mask.shape[-1])
    mode = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm"}
    ours, _ = rl.ppo_loss(old, lp, a[:, 0], mask, mode[loss_type], clip_ratio_high=hi, clip_ratio_c=None)
    if loss_type == "dr_grpo":  # verl's -norm mode divides by T only; TRL's dr_grpo also by B
        ours = ours / mask.shape[0]
    assert float(ours) == pytest.approx(float(ref), rel=1e-7, abs=1e-9)
    assert torch.allclose(grad(ours, lp), grad(ref, lp), rtol=1e-7, atol=1e-10)


def test_cispo_matches_trl():
    old, lp, adv, mask = batch(spread=0.8, empty_row=False)
    eps_high = 1.5
    ref = trl_aggregate("bnpo", trl_per_token_loss("cispo", lp, old, adv[:, :1], eps_high=eps_high), mask, 9)
    ours, m = rl.cispo_loss(old, lp, adv, mask, "token-mean", clip_ratio_high=eps_high - 1.0)
    assert float(ours) == pytest.approx(float(ref), rel=1e-7, abs=1e-9)
    assert torch.allclose(grad(ours, lp), grad(ref, lp), rtol=1e-7, atol=1e-10)
    assert m["pg_clipfrac"] > 0


@pytest.mark.parametrize(("lo", "hi"), [(3e-4, 4e-4), (0.2, 0.2)])
def test_gspo_matches_verl(lo, hi):
    old, lp, adv, mask = batch(spread=0.01)
    ours, _ = rl.gspo_loss(old, lp, adv, mask, clip_ratio_low=lo, clip_ratio_high=hi)
    ref = verl_gspo(old, lp, adv, mask, lo, hi)
    assert float(ours) == pytest.approx(float(ref), rel=1e-7, abs=1e-9)
    assert torch.allclose(grad(ours, lp), grad(ref, lp), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ratio", [0.05, 0.2])
def test_kl_cov_matches_verl(mode, ratio):
    old, lp, adv, mask = batch(spread=0.3)
    ours, m = rl.kl_cov_loss(old, lp, adv, mask, mode, kl_cov_ratio=ratio, ppo_kl_coef=0.7)
    ref = verl_kl_cov(old, lp, adv, mask, mode, ratio, 0.7)
    assert float(ours) == pytest.approx(float(ref), rel=1e-7, abs=1e-9)
    assert torch.allclose(grad(ours, lp), grad(ref, lp), rtol=1e-7, atol=1e-10)
    assert m["n_selected"] == max(1, int(ratio * int(mask.sum())))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cov_matches_verl_with_same_rng(mode, seed):
    old, lp, adv, mask = batch(b=8, t=12, spread=0.2, seed=seed)
    adv = adv * 4  # so that some covariances fall in (1, 5)
    torch.manual_seed(123)
    ours, m = rl.clip_cov_loss(old, lp, adv, mask, mode, clip_cov_ratio=0.1)
    torch.manual_seed(123)
    ref, sel = verl_clip_cov(old, lp, adv, mask, mode, ratio_sel=0.1)
    assert m["n_selected"] == float(sel.sum()) > 0
    assert float(ours) == pytest.approx(float(ref), rel=1e-7, abs=1e-9)
    assert torch.allclose(grad(ours, lp), grad(ref, lp), rtol=1e-7, atol=1e-10)


def test_clip_cov_selected_tokens_get_no_gradient():
    old, lp, adv, mask = batch(b=8, t=12, spread=0.0)
    adv = adv * 4
    sel = rl.cov_selection(old, adv, mask, mode="band", ratio=0.3, generator=torch.Generator().manual_seed(0))
    assert sel.any() and not (sel & ~mask).any()
    loss, _ = rl.clip_cov_loss(old, lp, adv, mask, selected=sel)
    g = grad(loss, lp)
    assert bool((g[sel] == 0).all())
    assert bool((g[mask & ~sel] != 0).all())  # on-policy nothing is PPO-clipped
    assert bool((g[~mask] == 0).all())


# -------------------------------------------------------------------------------------------------
# batch-level selection: micro-batch invariance
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["clip_cov", "kl_cov"])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_selection_and_loss_invariant_to_micro_batch_split(method, mode):
    old, lp, adv, mask = batch(b=8, t=10, spread=0.1, seed=3)
    adv = adv * 4
    sel_mode = "band" if method == "clip_cov" else "top"
    gen = torch.Generator().manual_seed(1)
    sel = rl.cov_selection(old, adv, mask, mode=sel_mode, ratio=0.1, generator=gen)
    norm = float(mask.sum()) if mode == "token-mean" else float(mask.shape[0])
    results = []
    for splits in (1, 2, 4):
        total = 0.0
        for idx in torch.arange(8).chunk(splits):
            loss, _ = rl.policy_loss(method, old[idx], lp[idx], adv[idx], mask[idx], mode,
                                     selected=sel[idx], normalizer=norm)
            total = total + loss
        results.append((float(total), grad(total, lp)))
    for val, g in results[1:]:
        assert val == pytest.approx(results[0][0], abs=1e-12)
        assert torch.allclose(g, results[0][1], atol=1e-12)
    # the per-call (verl) selection differs between splits: k and the means are per micro-batch
    chunks = torch.arange(8).chunk(4)
    per_call = torch.cat([rl.cov_selection(old[i], adv[i], mask[i], ratio=0.02) for i in chunks])
    whole = rl.cov_selection(old, adv, mask, ratio=0.02)
    assert int(per_call.sum()) == 4 and int(whole.sum()) == 1


def test_cov_selection_with_global_statistics_equals_whole_batch():
    """The data-parallel recipe: global means and N, then each shard selects against the global k-th value."""
    old, _, adv, mask = batch(b=8, t=10, seed=5)
    whole = rl.cov_selection(old, adv, mask, mode="top", ratio=0.1)
    a_mean = float(adv[mask].mean())
    l_mean = float(old[mask].mean())
    n = int(mask.sum())
    k = max(1, int(0.1 * n))
    shards = [(old[i], adv[i], mask[i]) for i in torch.arange(8).chunk(2)]
    glob = [((a - a_mean) * (o - l_mean))[m] for o, a, m in shards]
    kth = torch.topk(torch.cat(glob), k).values[-1]
    parts = [m & ((a - a_mean) * (o - l_mean) >= kth) for o, a, m in shards]
    assert torch.equal(torch.cat(parts), whole)
    local = [rl.cov_selection(o, a, m, mode="top", ratio=0.1, means=(a_mean, l_mean), num_valid=n)
             for o, a, m in shards]
    assert all(int(x.sum()) == k for x in local)  # each shard picks its own top k: gather to merge


# -------------------------------------------------------------------------------------------------
# KL-Cov on-policy
# -------------------------------------------------------------------------------------------------


def test_kl_cov_abs_penalty_is_trivial_on_policy_and_cov_penalty_is_not():
    _, lp, adv, mask = batch(b=6, t=8, seed=4, empty_row=False)
    old = lp.detach().clone()
    pg, _ = rl.gpg_loss(old, lp, adv, mask)
    plain = grad(rl.ppo_loss(old, lp, adv, mask, clip_ratio=1e9, clip_ratio_c=None)[0], lp)
    abs_loss, m = rl.kl_cov_loss(old, lp, adv, mask, kl_cov_ratio=0.2, ppo_kl_coef=1.0)
    assert m["n_selected"] > 0
    assert torch.allclose(grad(abs_loss, lp), plain, atol=1e-12)  # the |.| penalty does nothing
    cov_loss, _ = rl.kl_cov_loss(old, lp, adv, mask, kl_cov_ratio=0.2, ppo_kl_coef=0.5, penalty="cov")
    g = grad(cov_loss, lp)
    sel = rl.cov_selection(old, adv, mask, ratio=0.2)
    a_mean = adv[mask].mean()
    n = mask.sum()
    expected = plain + torch.where(sel, 0.5 * (adv - a_mean), torch.zeros_like(adv)) / n
    assert torch.allclose(g, expected, atol=1e-12)
    assert not torch.allclose(g, plain)
    assert torch.allclose(grad(pg, lp), plain, atol=1e-12)  # on-policy PG == REINFORCE gradient


# -------------------------------------------------------------------------------------------------
# properties
# -------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 7), st.integers(0, 10_000),
       st.sampled_from(["vanilla", "clip_cov", "kl_cov", "gspo", "cispo", "gpg"]), st.sampled_from(MODES))
def test_gradient_only_on_valid_tokens(b, t, seed, method, mode):
    g = torch.Generator().manual_seed(seed)
    lp = (-torch.rand(b, t, generator=g, dtype=torch.float64) * 2).requires_grad_()
    old = lp.detach() + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.6
    params = {"clip_cov_ratio": 0.5} if method == "clip_cov" else {}
    loss, metrics = rl.policy_loss(method, old, lp, adv, mask, mode, **params)
    assert torch.isfinite(loss)
    gl = grad(loss, lp)
    assert bool((gl[~mask] == 0).all())
    assert all(isinstance(v, float) for v in metrics.values())


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(2, 6), st.integers(0, 10_000), st.floats(0.01, 1.0))
def test_top_selection_is_the_largest_covariances(b, t, seed, ratio):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    adv = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.7
    sel = rl.cov_selection(lp, adv, mask, ratio=ratio)
    n = int(mask.sum())
    assert int(sel.sum()) == (max(1, int(ratio * n)) if n else 0)
    assert not (sel & ~mask).any()
    cov = rl.token_covariance(lp, adv, mask)
    if sel.any() and (mask & ~sel).any():
        assert float(cov[sel].min()) >= float(cov[mask & ~sel].max())


# -------------------------------------------------------------------------------------------------
# bad input
# -------------------------------------------------------------------------------------------------


def test_bad_input_names_the_argument():
    old, lp, adv, mask = batch()
    with pytest.raises(ValueError, match="old_log_prob"):
        rl.ppo_loss(old[:, :3], lp, adv, mask)
    with pytest.raises(ValueError, match="advantages"):
        rl.ppo_loss(old, lp, adv[:, :2], mask)
    bad = adv.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="advantages must be finite"):
        rl.ppo_loss(old, lp, bad, mask)
    with pytest.raises(ValueError, match="response_mask"):
        rl.ppo_loss(old, lp, adv, mask[:, :3])
    with pytest.raises(ValueError, match="response_mask"):
        rl.ppo_loss(old, lp, adv, mask.double() * 2)
    with pytest.raises(ValueError, match="loss_agg_mode"):
        rl.ppo_loss(old, lp, adv, mask, "token-sum")
    for ratio in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="kl_cov_ratio"):
            rl.kl_cov_loss(old, lp, adv, mask, kl_cov_ratio=ratio)
        with pytest.raises(ValueError, match="clip_cov_ratio"):
            rl.clip_cov_loss(old, lp, adv, mask, clip_cov_ratio=ratio)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        rl.ppo_loss(old, lp, adv, mask, clip_ratio_c=1.0)
    with pytest.raises(TypeError, match="log_prob"):
        rl.ppo_loss(old, lp.detach().long(), adv, mask)
    with pytest.raises(ValueError, match="method"):
        rl.policy_loss("grpo++", old, lp, adv, mask)
    with pytest.raises(TypeError, match="unexpected parameter"):
        rl.policy_loss("vanilla", old, lp, adv, mask, kl_cov_ratio=0.1)


def test_per_sequence_advantages_broadcast():
    old, lp, adv, mask = batch()
    full, _ = rl.ppo_loss(old, lp, adv, mask)
    for a in (adv[:, 0], adv[:, :1]):
        assert float(rl.ppo_loss(old, lp, a, mask)[0]) == float(full)


def test_empty_mask_gives_zero_loss_and_no_selection():
    old, lp, adv, mask = batch()
    none = torch.zeros_like(mask)
    for method in rl.METHODS:
        extra = {"proxy_log_prob": torch.zeros_like(lp)} if method == "lp_reg" else {}
        loss, m = rl.policy_loss(method, old, lp, adv, none, **extra)
        assert float(loss) == 0.0
        assert m.get("n_selected", 0.0) == 0.0
