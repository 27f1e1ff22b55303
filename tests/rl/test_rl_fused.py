"""The fused path (hidden states + LM head) against the logits path: loss and gradients, fp64/fp32/bf16,
with the entropy bonus and the high-entropy mask; token statistics from logits."""

from __future__ import annotations

import pytest
import torch

from entropykit import rl

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def setup(dtype, b=3, t=7, d=16, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, t, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = (torch.randn(v, d, generator=g, dtype=torch.float64) / 2).to(dtype).requires_grad_()
    y = torch.randint(0, v, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 4:] = False
    y[~mask] = -100  # padding ids the fused path must ignore
    with torch.no_grad():
        lp0 = torch.log_softmax(h.double() @ w.double().T, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    old = (lp0 + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.2).float()
    adv = torch.randn(b, generator=g)
    return h, w, y, old, adv, mask


def logits_path(h, w, y, old, adv, mask, method, coef, rho, temperature, **params):
    """Naive reference: full float64 logits, log_softmax, entropy, then the same loss pieces."""
    z = (h.double() @ w.double().T) / temperature
    logp = torch.log_softmax(z, -1)
    lp = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0]
    ent = -(logp.exp() * logp).sum(-1)
    keep = rl.high_entropy_mask(ent, mask, rho) if rho < 1 else mask
    weights = keep.double() if rho < 1 else None
    loss, _ = rl.policy_loss(method, old.double(), lp, adv.double(), mask, weights=weights, **params)
    if coef:
        loss = loss - coef * (ent * keep).sum() / keep.sum()
    return loss


DTYPES = [(torch.float64, 1e-10), (torch.float32, 2e-5), (torch.bfloat16, 2e-2)]


@pytest.mark.parametrize(("dtype", "tol"), DTYPES)
@pytest.mark.parametrize(("method", "coef", "rho", "params"), [
    ("vanilla", 0.0, 1.0, {}),
    ("vanilla", 0.01, 0.4, {"clip_ratio_high": 0.28}),
    ("kl_cov", 0.0, 1.0, {"kl_cov_ratio": 0.2}),
    ("cispo", 0.05, 1.0, {}),
])
def test_fused_matches_logits_path(dtype, tol, method, coef, rho, params):
    h, w, y, old, adv, mask = setup(dtype)
    loss, m = rl.fused_policy_loss(h, w, y, old, adv, mask, method=method, entropy_coef=coef,
                                   top_entropy_quantile=rho, temperature=0.9, chunk_size=5, **params)
    gh, gw = torch.autograd.grad(loss, (h, w))
    h2, w2 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = logits_path(h2, w2, y, old, adv, mask, method, coef, rho, 0.9, **params)
    rh, rw = torch.autograd.grad(ref, (h2, w2))
    scale = max(1.0, float(ref.abs()))
    assert float(loss) == pytest.approx(float(ref), abs=tol * scale)
    assert torch.allclose(gh.double(), rh, atol=tol * 10, rtol=tol * 10)
    assert torch.allclose(gw.double(), rw, atol=tol * 10, rtol=tol * 10)
    assert 0 < m["entropy"] and (m["entropy_mask_frac"] < 1.0) == (rho < 1.0)


def test_token_logprob_entropy_matches_naive():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 30, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 30, (2, 5), generator=g)
    y[0, 0] = -100
    lp, h = rl.token_logprob_entropy(z, y, temperature=1.3)
    logp = torch.log_softmax(z / 1.3, -1)
    assert torch.allclose(h, -(logp.exp() * logp).sum(-1), atol=1e-12)
    ref = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0]
    assert torch.allclose(lp[y != -100], ref[y != -100], atol=1e-12)
    assert float(lp[0, 0]) == 0.0
    (gz,) = torch.autograd.grad((lp + h).sum(), z)
    (rz,) = torch.autograd.grad((torch.where(y != -100, ref, 0) + -(logp.exp() * logp).sum(-1)).sum(), z)
    assert torch.allclose(gz, rz, atol=1e-10)


def test_fused_bad_input():
    h, w, y, old, adv, mask = setup(torch.float32)
    with pytest.raises(ValueError, match="target"):
        rl.fused_policy_loss(h, w, y[:, :3], old, adv, mask)
    with pytest.raises(ValueError, match="method"):
        rl.fused_policy_loss(h, w, y, old, adv, mask, method="nope")
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        rl.fused_policy_loss(h, w, y, old, adv, mask, top_entropy_quantile=0.0)
    bad = adv.clone()
    bad[0] = float("inf")
    with pytest.raises(ValueError, match="advantages"):
        rl.fused_policy_loss(h, w, y, old, bad, mask)


def test_verl_adapter_signature_and_weights():
    *_, old, adv, mask = setup(torch.float64)
    lp = old + 0.1
    fn = rl.verl_policy_loss("vanilla", clip_ratio_high=0.28)
    a = adv[:, None].double().expand_as(lp)
    loss, metrics = fn(old, lp, a, mask, "token-mean", None, None)
    ref, _ = rl.ppo_loss(old, lp, a, mask, clip_ratio_high=0.28)
    assert float(loss) == float(ref) and "pg_clipfrac" in metrics
    isw = torch.full_like(lp, 0.5)
    half, _ = fn(old, lp, a, mask, "token-mean", None, isw)
    assert float(half) == pytest.approx(0.5 * float(ref))
    with pytest.raises(TypeError, match="unexpected"):
        rl.verl_policy_loss("vanilla", kl_cov_ratio=0.1)


def test_fused_rejects_unknown_loss_parameter():
    h, w, y, old, adv, mask = setup(torch.float32)
    with pytest.raises(TypeError, match="unexpected parameter"):
        rl.fused_policy_loss(h, w, y, old, adv, mask, method="vanilla", kl_cov_ratio=0.1)


def _logits_ref(h, w, b, y, old, adv, mask, method, mode, coef, rho, weights, **params):
    z = h.double() @ w.double().T + (0 if b is None else b.double())
    logp = torch.log_softmax(z, -1)
    lp = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0]
    ent = -(logp.exp() * logp).sum(-1)
    keep = rl.high_entropy_mask(ent, mask, rho) if rho < 1 else mask
    wt = None if weights is None else weights.double()
    if rho < 1:
        wt = keep.double() if wt is None else wt * keep.double()
    loss, _ = rl.policy_loss(method, old.double(), lp, adv.double(), mask, mode, weights=wt, **params)
    if coef:
        loss = loss - coef * (ent * keep).sum() / keep.sum()
    return loss


@pytest.mark.parametrize("mode", rl.LOSS_AGG_MODES)
@pytest.mark.parametrize(("method", "rho"), [("vanilla", 1.0), ("gpg", 1.0), ("cispo", 1.0), ("vanilla", 0.3),
                                             ("gspo", 1.0)])
def test_fused_agg_modes_weights_bias_against_float64(mode, method, rho):
    """Both gradient paths (formed in the forward for separable methods without the mask; row-sparse
    recompute otherwise) against float64 autograd through the full logits, with a bias, weights,
    a normalizer and an empty sequence."""
    h, w, y, old, adv, mask = setup(torch.float64, b=4, t=6, d=8, v=23, seed=3)
    mask[2] = False
    b = torch.randn(23, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    wts = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = {"normalizer": 17.0} if mode == "token-mean" and method != "gspo" else {}
    loss, _ = rl.fused_policy_loss(h, w, y, old, adv, mask, method=method, loss_agg_mode=mode, bias=b,
                                   entropy_coef=0.03, top_entropy_quantile=rho, weights=wts, chunk_size=7,
                                   **params)
    grads = torch.autograd.grad(loss, (h, w, b))
    h2, w2, b2 = (x.detach().clone().requires_grad_() for x in (h, w, b))
    ref = _logits_ref(h2, w2, b2, y, old, adv, mask, method, mode, 0.03, rho, wts, **params)
    refs = torch.autograd.grad(ref, (h2, w2, b2))
    assert float(loss) == pytest.approx(float(ref), abs=1e-10)
    for g, r in zip(grads, refs, strict=True):
        assert torch.allclose(g, r, atol=1e-10, rtol=1e-8)
    assert bool((grads[0][2] == 0).all())  # the empty sequence gets no gradient


def test_fused_masked_backward_touches_only_kept_rows():
    """With the entropy mask and no other gradient source, rows outside the mask get exactly 0."""
    h, w, y, old, adv, mask = setup(torch.float64, b=3, t=10, d=6, v=17, seed=5)
    loss, m = rl.fused_policy_loss(h, w, y, old, adv, mask, entropy_coef=0.1, top_entropy_quantile=0.25)
    (gh,) = torch.autograd.grad(loss, h)
    with torch.no_grad():
        logp = torch.log_softmax(h @ w.T, -1)
        keep = rl.high_entropy_mask(-(logp.exp() * logp).sum(-1), mask, 0.25)
    nonzero = gh.abs().sum(-1) != 0
    assert bool((nonzero <= keep).all()) and int(nonzero.sum()) > 0
    assert m["entropy_mask_frac"] == pytest.approx(float(keep.sum()) / float(mask.sum()))


def test_fused_without_grad_and_empty_mask():
    h, w, y, old, adv, mask = setup(torch.float32)
    with torch.no_grad():
        loss, _ = rl.fused_policy_loss(h, w, y, old, adv, mask, entropy_coef=0.1)
    assert loss.grad_fn is None and torch.isfinite(loss)
    empty = torch.zeros_like(mask)
    loss, m = rl.fused_policy_loss(h, w, y, old, adv, empty, entropy_coef=0.1)
    gh, gw = torch.autograd.grad(loss, (h, w))
    assert float(loss) == 0.0 and float(gh.abs().sum()) == 0.0 and float(gw.abs().sum()) == 0.0
    assert m["entropy_mask_frac"] == 0.0


def test_fused_head_shape_errors():
    h, w, y, old, adv, mask = setup(torch.float32)
    with pytest.raises(ValueError, match="weight"):
        rl.fused_policy_loss(h, w[:, :3], y, old, adv, mask)
    with pytest.raises(ValueError, match="bias"):
        rl.fused_policy_loss(h, w, y, old, adv, mask, bias=torch.zeros(3))
    with pytest.raises(TypeError, match="weight"):
        rl.fused_policy_loss(h, w.double(), y, old, adv, mask)
    bad = y.clone()
    bad[0, 0] = 10_000
    with pytest.raises(ValueError, match="target"):
        rl.fused_policy_loss(h, w, bad, old, adv, mask)
    with pytest.raises(ValueError, match="temperature"):
        rl.fused_policy_loss(h, w, y, old, adv, mask, temperature=0.0)
