"""Tests for entropykit.losses: every loss against a hand-written float64 formula and, where one
exists, a library implementation (torch, scipy, and transcriptions of torchvision / TRL code)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import losses as L
from entropykit import measures as M
from entropykit.ops import linear_distill
from references import trl_generalized_jsd_loss

IGN = -100


def data(n=13, c=7, seed=0, ignore=True, dtype=torch.float64, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    if ignore:
        y[::4] = IGN
    return z, y


def hand_mean(per_row, y):
    """Mean over non-ignored rows of a python list of per-row float64 values."""
    vals = [v for v, t in zip(per_row, y.tolist()) if t != IGN]
    return sum(vals) / len(vals)


def softmax_np(row):
    r = np.asarray(row, dtype=np.float64)
    e = np.exp(r - r.max())
    return e / e.sum()


# --- cross-entropy family ----------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls", [0.0, 0.15])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(reduction, ls, weighted):
    z, y = data()
    w = torch.rand(7, dtype=torch.float64) + 0.5 if weighted else None
    got = L.cross_entropy(z, y, weight=w, label_smoothing=ls, reduction=reduction)
    ref = F.cross_entropy(z, y, weight=w, label_smoothing=ls, reduction=reduction)
    torch.testing.assert_close(got, ref)
    # hand formula, mean case
    if reduction == "mean":
        ww = w.tolist() if w is not None else [1.0] * 7
        num = den = 0.0
        for row, t in zip(z.tolist(), y.tolist()):
            if t == IGN:
                continue
            lp = np.log(softmax_np(row))
            num += (1 - ls) * ww[t] * -lp[t] + ls / 7 * sum(-ww[j] * lp[j] for j in range(7))
            den += ww[t]
        assert got.item() == pytest.approx(num / den, rel=1e-12)


def test_cross_entropy_negative_weight_sum_mean_is_torchs():
    # issue 12, item 5a: the weighted mean divides by the total weight whatever its sign, as torch does
    z = torch.tensor([[1.0, 2.0, 0.5], [0.3, 0.1, 2.0]])
    y = torch.tensor([0, 2])
    w = torch.tensor([-1.0, 0.5, 0.2])
    ref = F.cross_entropy(z, y, weight=w)
    assert ref.item() == pytest.approx(1.7587, abs=1e-4)
    torch.testing.assert_close(L.cross_entropy(z, y, weight=w), ref)
    torch.testing.assert_close(L.cross_entropy(z, y, weight=w, label_smoothing=0.2),
                               F.cross_entropy(z, y, weight=w, label_smoothing=0.2))


def test_cross_entropy_all_ignored_is_zero_and_grad_finite():
    z, y = data()
    y[:] = IGN
    z.requires_grad_()
    out = L.cross_entropy(z, y, label_smoothing=0.1)
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(z.grad).all() and (z.grad == 0).all()


def test_z_loss():
    z, y = data()
    hand = [math.log(sum(math.exp(v) for v in row)) ** 2 for row in z.tolist()]
    assert L.z_loss(z).item() == pytest.approx(sum(hand) / len(hand), rel=1e-12)
    assert L.z_loss(z, y).item() == pytest.approx(hand_mean(hand, y), rel=1e-12)


@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_poly1(ls):
    z, y = data(seed=1)
    eps = 2.0
    per = []
    for row, t in zip(z.tolist(), y.tolist()):
        p = softmax_np(row)
        q = np.full(7, ls / 7) + (np.eye(7)[t] * (1 - ls) if t != IGN else 0)
        per.append(float(-(q * np.log(p)).sum() + eps * (1 - (q * p).sum())))
    got = L.poly1_cross_entropy(z, y, epsilon=eps, label_smoothing=ls)
    assert got.item() == pytest.approx(hand_mean(per, y), rel=1e-12)
    # epsilon = 0 is torch's (smoothed) cross-entropy
    torch.testing.assert_close(L.poly1_cross_entropy(z, y, epsilon=0.0, label_smoothing=ls),
                               F.cross_entropy(z, y, label_smoothing=ls))


def test_focal_softmax():
    z, y = data(seed=2)
    alpha = torch.linspace(0.2, 1.0, 7, dtype=torch.float64)
    per = []
    for row, t in zip(z.tolist(), y.tolist()):
        pt = softmax_np(row)[t] if t != IGN else 1.0
        per.append(-alpha[t].item() * (1 - pt) ** 2.5 * math.log(pt) if t != IGN else 0.0)
    got = L.focal_loss(z, y, gamma=2.5, alpha=alpha)
    assert got.item() == pytest.approx(hand_mean(per, y), rel=1e-12)
    torch.testing.assert_close(L.focal_loss(z, y, gamma=0.0), F.cross_entropy(z, y))


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    """Transcribed verbatim from torchvision.ops.focal_loss.sigmoid_focal_loss (torchvision 0.20;
    torchvision is not installable here)."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "none":
        pass
    elif reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_sigmoid_focal_vs_torchvision(reduction, alpha):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    t = (torch.rand(6, 5, generator=g) < 0.3).double()
    got = L.sigmoid_focal_loss(z, t, alpha=alpha, gamma=2.0, reduction=reduction)
    torch.testing.assert_close(got, torchvision_sigmoid_focal_loss(z, t, alpha, 2.0, reduction))
    # hand formula for one element
    x, tt = z[0, 0].item(), t[0, 0].item()
    p = 1 / (1 + math.exp(-x))
    bce = -(tt * math.log(p) + (1 - tt) * math.log(1 - p))
    pt = p * tt + (1 - p) * (1 - tt)
    at = (alpha * tt + (1 - alpha) * (1 - tt)) if alpha >= 0 else 1.0
    full = L.sigmoid_focal_loss(z, t, alpha=alpha)
    assert full[0, 0].item() == pytest.approx(at * (1 - pt) ** 2 * bce, rel=1e-12)


def test_squentropy():
    z, y = data(seed=4)
    per = []
    for row, t in zip(z.tolist(), y.tolist()):
        if t == IGN:
            per.append(0.0)
            continue
        ce = -math.log(softmax_np(row)[t])
        per.append(ce + sum(row[j] ** 2 for j in range(7) if j != t) / 6)
    assert L.squentropy(z, y).item() == pytest.approx(hand_mean(per, y), rel=1e-12)


def test_generalized_ce():
    z, y = data(seed=5)
    q = 0.7
    per = [(1 - softmax_np(r)[t] ** q) / q if t != IGN else 0.0 for r, t in zip(z.tolist(), y.tolist())]
    assert L.generalized_cross_entropy(z, y, q=q).item() == pytest.approx(hand_mean(per, y), rel=1e-12)
    # q -> 0 approaches cross-entropy
    assert L.generalized_cross_entropy(z, y, q=1e-6).item() == pytest.approx(F.cross_entropy(z, y).item(),
                                                                             rel=1e-4)


def test_symmetric_ce_vs_paper_code():
    z, y = data(seed=6, ignore=False)
    # SCE reference implementation (Wang et al. 2019, github.com/HanxunH/SCELoss-Reproduce, loss.py):
    ce = F.cross_entropy(z, y)
    pred = torch.clamp(F.softmax(z, dim=1), min=1e-7, max=1.0)
    label_one_hot = torch.clamp(F.one_hot(y, 7).double(), min=1e-4, max=1.0)
    rce = -1 * torch.sum(pred * torch.log(label_one_hot), dim=1)
    ref = 0.1 * ce + 1.0 * rce.mean()
    got = L.symmetric_cross_entropy(z, y, alpha=0.1, beta=1.0, log_zero=math.log(1e-4))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


def test_logit_clip():
    z, y = data(seed=7, ignore=False, scale=5.0)
    tau = 3.0
    clipped = L.logit_clip(z, tau)
    for row, out in zip(z.tolist(), clipped.tolist()):
        n = math.sqrt(sum(v * v for v in row))
        expect = [v * tau / n for v in row] if n > tau else row
        assert out == pytest.approx(expect, rel=1e-12)
    small = z / 100
    torch.testing.assert_close(L.logit_clip(small, tau), small)
    torch.testing.assert_close(L.logit_clip_cross_entropy(z, y, max_norm=tau), F.cross_entropy(clipped, y))


@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (0.3, 0.7)])
def test_tversky_and_dice(alpha, beta):
    z, y = data(n=30, c=4, seed=8)
    s = 1.0
    p = [softmax_np(r) for r, t in zip(z.tolist(), y.tolist()) if t != IGN]
    ys = [t for t in y.tolist() if t != IGN]
    per_class = []
    for c in range(4):
        tp = sum(pi[c] for pi, t in zip(p, ys) if t == c)
        fp = sum(pi[c] for pi, t in zip(p, ys) if t != c)
        fn = sum(1 - pi[c] for pi, t in zip(p, ys) if t == c)
        per_class.append(1 - (tp + s) / (tp + alpha * fp + beta * fn + s))
    got = L.tversky_loss(z, y, alpha=alpha, beta=beta, smooth=s, reduction="none")
    assert got.tolist() == pytest.approx(per_class, rel=1e-12)
    if alpha == beta == 0.5:
        dice = L.soft_dice_loss(z, y, smooth=s)
        assert dice.item() == pytest.approx(float(np.mean(per_class)), rel=1e-12)
    # probability targets equal to the one-hot labels give the same result
    keep = y != IGN
    onehot = F.one_hot(y[keep], 4).double()
    torch.testing.assert_close(L.tversky_loss(z[keep], onehot, alpha=alpha, beta=beta, reduction="none"), got)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_ordinal_wasserstein_vs_scipy(p):
    z, y = data(n=9, c=6, seed=9)
    got = L.ordinal_wasserstein_loss(z, y, p=p, reduction="none")
    for row, t, g in zip(z.tolist(), y.tolist(), got.tolist()):
        if t == IGN:
            assert g == 0.0
            continue
        probs = softmax_np(row)
        if p == 1.0:
            ref = scipy.stats.wasserstein_distance(np.arange(6), [t], u_weights=probs)
        else:
            cdf = np.cumsum(probs)
            ref = float(((cdf - (np.arange(6) >= t)) ** 2)[:-1].sum())
        assert g == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_hl_gauss():
    y = torch.tensor([0.1, 0.5, 0.93, -2.0, 3.0], dtype=torch.float64)
    vmin, vmax, k, sigma = -1.0, 2.0, 12, 0.2
    q = L.hl_gauss_target(y, vmin, vmax, k, sigma)
    edges = np.linspace(vmin, vmax, k + 1)
    for yi, qi in zip(y.tolist(), q.tolist()):
        cdf = scipy.stats.norm.cdf(edges, loc=yi, scale=sigma)
        sf = scipy.stats.norm.sf(edges, loc=yi, scale=sigma)  # accurate upper tail
        mass = np.where(edges[:-1] > yi, sf[:-1] - sf[1:], np.diff(cdf))
        ref = mass / mass.sum()
        assert qi == pytest.approx(ref.tolist(), rel=1e-9, abs=1e-15)
    assert torch.allclose(q.sum(-1), torch.ones(5, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, k, generator=g, dtype=torch.float64)
    got = L.hl_gauss_loss(z, y, vmin=vmin, vmax=vmax, sigma=sigma, reduction="none")
    torch.testing.assert_close(got, F.cross_entropy(z, q, reduction="none"))
    # decoding the target histogram recovers y away from the edges
    decoded = L.hl_gauss_mean(q.log()[:3], vmin=vmin, vmax=vmax)
    assert decoded.tolist() == pytest.approx(y[:3].tolist(), abs=1e-3)
    far = L.hl_gauss_target(torch.tensor([-1e6, 1e6]), vmin, vmax, k, sigma)
    assert far[0, 0] == 1 and far[1, -1] == 1
    head = L.HLGaussLoss(vmin=vmin, vmax=vmax, sigma=sigma)
    torch.testing.assert_close(head(z, y), got.mean())
    torch.testing.assert_close(head.predict(z), L.hl_gauss_mean(z, vmin=vmin, vmax=vmax))


# --- distillation -------------------------------------------------------------------------------------


def distillm_skewed_forward_kl(logits, teacher_logits, mask, lam=0.1):
    """Transcribed from DistiLLM (github.com/jongwooko/distillm, distillm/losses.py, skewed_forward_kl);
    it returns the cross-entropy -sum p_T log m, so the teacher entropy is added back in the test."""
    teacher_probs = F.softmax(teacher_logits, dim=-1, dtype=torch.float64)
    student_probs = F.softmax(logits, dim=-1, dtype=torch.float64)
    mixed_probs = lam * teacher_probs + (1 - lam) * student_probs
    mixed_logprobs = torch.log(mixed_probs)
    inf_mask = torch.isinf(logits)
    prod_probs = torch.masked_fill(teacher_probs * mixed_logprobs, inf_mask, 0)
    x = torch.sum(prod_probs, dim=-1).view(-1)
    return -torch.sum(x * mask.view(-1), dim=0) / torch.sum(mask.view(-1), dim=0)


def distillm_skewed_reverse_kl(logits, teacher_logits, mask, lam=0.1):
    """Transcribed from DistiLLM (distillm/losses.py, skewed_reverse_kl)."""
    teacher_probs = F.softmax(teacher_logits, dim=-1, dtype=torch.float64)
    student_probs = F.softmax(logits, dim=-1, dtype=torch.float64)
    mixed_probs = (1 - lam) * teacher_probs + lam * student_probs
    student_logprobs = F.log_softmax(logits, dim=-1, dtype=torch.float64)
    mixed_logprobs = torch.log(mixed_probs)
    inf_mask = torch.isinf(logits)
    prod_probs = torch.masked_fill(student_probs * mixed_logprobs, inf_mask, 0)
    prod_probs -= torch.masked_fill(student_probs * student_logprobs, inf_mask, 0)
    x = torch.sum(prod_probs, dim=-1).view(-1)
    return -torch.sum(x * mask.view(-1), dim=0) / torch.sum(mask.view(-1), dim=0)


#: canonical name -> the earlier name the hand formulas below use (the aliases, inverted)
HAND = {v: k for k, v in M.DIVERGENCE_ALIASES.items()}


def hand_div(s_row, t_row, kind, beta):
    kind = HAND.get(kind, kind)
    ps, pt = softmax_np(s_row), softmax_np(t_row)
    kl = lambda a, b: float((a * (np.log(a) - np.log(b))).sum())  # noqa: E731
    if kind == "forward_kl":
        return kl(pt, ps)
    if kind == "reverse_kl":
        return kl(ps, pt)
    if kind == "jsd":
        m = beta * pt + (1 - beta) * ps
        return beta * kl(pt, m) + (1 - beta) * kl(ps, m)
    if kind == "skew_kl":
        return kl(pt, beta * pt + (1 - beta) * ps)
    if kind == "skew_rkl":
        return kl(ps, (1 - beta) * pt + beta * ps)
    return 0.5 * float(np.abs(ps - pt).sum())


@pytest.mark.parametrize("kind", L.DIVERGENCES)
def test_distill_hand_formula_and_linear_version(kind):
    g = torch.Generator().manual_seed(11)
    hs, ws = torch.randn(2, 6, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g,
                                                                                 dtype=torch.float64)
    ht, wt = torch.randn(2, 6, 3, generator=g, dtype=torch.float64), torch.randn(9, 3, generator=g,
                                                                                 dtype=torch.float64)
    y = torch.randint(0, 9, (2, 6), generator=g)
    y[0, ::3] = IGN
    beta, temp = 0.3, 1.6
    zs, zt = hs @ ws.T, ht @ wt.T
    got = L.distill_loss(zs, zt, divergence=kind, beta=beta, temperature=temp, target=y)
    per = [hand_div(a, b, kind, beta) for a, b in zip((zs / temp).reshape(-1, 9).tolist(),
                                                     (zt / temp).reshape(-1, 9).tolist())]
    assert got.item() == pytest.approx(hand_mean(per, y.reshape(-1)), rel=1e-10)
    # the chunked linear version agrees, values and gradients
    hs1, ws1 = hs.clone().requires_grad_(), ws.clone().requires_grad_()
    hs2, ws2 = hs.clone().requires_grad_(), ws.clone().requires_grad_()
    a = linear_distill(hs1, ws1, ht, wt, divergence=kind, beta=beta, temperature=temp, target=y, chunk_size=4)
    b = L.distill_loss(hs2 @ ws2.T, zt, divergence=kind, beta=beta, temperature=temp, target=y)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(hs1.grad, hs2.grad)
    torch.testing.assert_close(ws1.grad, ws2.grad)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_distill_jsd_vs_trl(beta):
    zs, y = data(n=10, c=11, seed=12)
    zt, _ = data(n=10, c=11, seed=13)
    zs, zt, y = zs.view(2, 5, 11), zt.view(2, 5, 11), y.view(2, 5)
    got = L.distill_loss(zs, zt, divergence="jsd", beta=beta, temperature=2.0, target=y)
    torch.testing.assert_close(got, trl_generalized_jsd_loss(zs, zt, y, beta, 2.0))


def test_distill_skew_vs_distillm():
    zs, y = data(n=10, c=11, seed=14, ignore=False)
    zt, _ = data(n=10, c=11, seed=15)
    mask = torch.ones(10, dtype=torch.float64)
    mask[::3] = 0
    y[::3] = IGN
    pt = torch.softmax(zt, -1)
    h_t = -(pt * pt.log()).sum(-1)
    h_t_mean = (h_t * mask).sum() / mask.sum()
    got = L.distill_loss(zs, zt, divergence="skew_kl", beta=0.1, target=y)
    torch.testing.assert_close(got, distillm_skewed_forward_kl(zs, zt, mask, 0.1) - h_t_mean)
    got = L.distill_loss(zs, zt, divergence="skew_rkl", beta=0.1, target=y)
    torch.testing.assert_close(got, distillm_skewed_reverse_kl(zs, zt, mask, 0.1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), beta=st.floats(0.01, 0.99), kind=st.sampled_from(L.DIVERGENCES))
def test_distill_properties(seed, beta, kind):
    zs, _ = data(n=4, c=6, seed=seed, ignore=False, scale=4.0)
    zt, _ = data(n=4, c=6, seed=seed + 1, ignore=False, scale=4.0)
    d = L.distill_loss(zs, zt, divergence=kind, beta=beta, reduction="none")
    assert (d >= -1e-12).all()
    assert L.distill_loss(zs, zs, divergence=kind, beta=beta).abs().item() < 1e-12
    if kind == "js_div":
        assert (d <= math.log(2) + 1e-12).all()
    if kind == "tv_distance":
        assert (d <= 1 + 1e-12).all()


def test_distill_names_are_the_measures_registry_and_aliases_agree():
    assert L.DIVERGENCES == M.DISTILL_DIVERGENCES
    assert set(M.DIVERGENCE_ALIASES.values()) <= set(L.DIVERGENCES)
    zs, y = data(n=8, c=6, seed=21)
    zt, _ = data(n=8, c=6, seed=22)
    for old, new in M.DIVERGENCE_ALIASES.items():
        a = L.distill_loss(zs, zt, divergence=old, beta=0.3, target=y)
        b = L.distill_loss(zs, zt, divergence=new, beta=0.3, target=y)
        assert torch.equal(a, b), old
    # each canonical name is the measures function itself (teacher first; reverse_ swaps)
    ls, lt = zs / 1.5, zt / 1.5
    valid = y != IGN
    for name in L.DIVERGENCES:
        div, rev = M.resolve_divergence(name)
        p, q = (ls, lt) if rev else (lt, ls)
        kw = {div.param: 0.3} if div.param else {}
        ref = div.fn(p[valid], q[valid], reduction="mean", **kw)
        got = L.distill_loss(zs, zt, divergence=name, beta=0.3, temperature=1.5, target=y)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", L.DIVERGENCES)
def test_distill_nan_inf_and_masked_rows_follow_the_measures_rule(kind):
    zs, y = data(n=4, c=5, seed=23, ignore=False)
    zt, _ = data(n=4, c=5, seed=24)
    bad = zs.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"student_logits must .*NaN.*row 1"):
        L.distill_loss(bad, zt, divergence=kind)
    bad = zt.clone()
    bad[2, 0] = math.inf
    with pytest.raises(ValueError, match=r"teacher_logits must .*\+inf.*row 2"):
        L.distill_loss(zs, bad, divergence=kind)
    bad[2] = -math.inf  # a fully masked row defines no distribution
    with pytest.raises(ValueError, match=r"teacher_logits must .*all -inf.*row 2"):
        L.distill_loss(zs, bad, divergence=kind)
    # ... unless its position is ignored: then it is never looked at
    y[2] = IGN
    keep = torch.tensor([True, True, False, True])
    got = L.distill_loss(zs, bad, divergence=kind, beta=0.4, target=y)
    torch.testing.assert_close(got, L.distill_loss(zs[keep], zt[keep], divergence=kind, beta=0.4))
    # masked (-inf) teacher entries are classes with p_T = 0 (0 log 0 = 0): every divergence stays
    # finite except KL(p_S || p_T), which is +inf where the student keeps mass the teacher masks
    zm = zt.clone()
    zm[:, 0] = -math.inf
    got = L.distill_loss(zs, zm, divergence=kind, beta=0.4)
    assert (got.item() == math.inf) if kind == "reverse_kl_div" else bool(torch.isfinite(got))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.0, 5.0))
def test_loss_properties(seed, gamma):
    z, y = data(n=6, c=5, seed=seed, ignore=False, scale=3.0)
    ce = L.cross_entropy(z, y, reduction="none")
    # focal <= CE; GCE <= 1/q; poly-1 >= CE; SCE(alpha=1, beta=0) = CE
    assert (L.focal_loss(z, y, gamma=gamma, reduction="none") <= ce + 1e-12).all()
    assert (L.generalized_cross_entropy(z, y, q=0.5, reduction="none") <= 2.0 + 1e-12).all()
    assert (L.poly1_cross_entropy(z, y, reduction="none") >= ce - 1e-12).all()
    torch.testing.assert_close(L.symmetric_cross_entropy(z, y, alpha=1.0, beta=0.0, reduction="none"), ce)
    w1 = L.ordinal_wasserstein_loss(z, y, reduction="none")
    assert ((w1 >= 0) & (w1 <= 4 + 1e-12)).all()


# --- modules --------------------------------------------------------------------------------------------


def test_modules_match_functions():
    z, y = data(seed=16)
    w = torch.rand(7, dtype=torch.float64)
    pairs = [
        (L.CrossEntropy(weight=w, label_smoothing=0.1), L.cross_entropy(z, y, weight=w, label_smoothing=0.1)),
        (L.ZLoss(), L.z_loss(z, y)),
        (L.PolyLoss(epsilon=0.5), L.poly1_cross_entropy(z, y, epsilon=0.5)),
        (L.FocalLoss(gamma=1.0, alpha=w), L.focal_loss(z, y, gamma=1.0, alpha=w)),
        (L.Squentropy(), L.squentropy(z, y)),
        (L.GeneralizedCrossEntropy(q=0.3), L.generalized_cross_entropy(z, y, q=0.3)),
        (L.SymmetricCrossEntropy(), L.symmetric_cross_entropy(z, y)),
        (L.LogitClipCrossEntropy(max_norm=2.0), L.logit_clip_cross_entropy(z, y, max_norm=2.0)),
        (L.TverskyLoss(alpha=0.2, beta=0.8), L.tversky_loss(z, y, alpha=0.2, beta=0.8)),
        (L.SoftDiceLoss(), L.soft_dice_loss(z, y)),
        (L.OrdinalWassersteinLoss(), L.ordinal_wasserstein_loss(z, y)),
    ]
    for module, ref in pairs:
        torch.testing.assert_close(module(z, y), ref)
    t = torch.rand(13, 7, dtype=torch.float64)
    torch.testing.assert_close(L.SigmoidFocalLoss(reduction="mean")(z, t), L.sigmoid_focal_loss(z, t,
                                                                                                 reduction="mean"))
    zt, _ = data(seed=17)
    dist = L.DistillationLoss(divergence="jsd", beta=0.2, temperature=2.0)
    torch.testing.assert_close(dist(z, zt, y), L.distill_loss(z, zt, divergence="jsd", beta=0.2,
                                                              temperature=2.0, target=y))
    # tensor options are buffers: they follow .to()
    m = L.CrossEntropy(weight=w.float())
    assert m.to(torch.float64).weight.dtype == torch.float64
    assert "label_smoothing" in repr(L.CrossEntropy(label_smoothing=0.1))


def test_linear_cross_entropy_module_is_drop_in():
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 40, bias=True)
    head = L.LinearCrossEntropy(12, 40, bias=True, label_smoothing=0.1)
    with torch.no_grad():
        head.weight.copy_(lin.weight)
        head.bias.copy_(lin.bias)
    h = torch.randn(3, 7, 12, requires_grad=True)
    h2 = h.detach().clone().requires_grad_()
    y = torch.randint(0, 40, (3, 7))
    y[0, :2] = IGN
    ref = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(lin(h2).view(-1, 40), y.view(-1))
    got = head(h, y)
    torch.testing.assert_close(got, ref)
    got.backward()
    ref.backward()
    torch.testing.assert_close(h.grad, h2.grad)
    torch.testing.assert_close(head.weight.grad, lin.weight.grad)
    torch.testing.assert_close(head.bias.grad, lin.bias.grad)
    # tied head: weight passed per call, no parameters of its own
    tied = L.LinearCrossEntropy(shift=True)
    assert not list(tied.parameters())
    emb = torch.randn(40, 12)
    shifted = F.cross_entropy((h @ emb.T)[:, :-1].reshape(-1, 40), y[:, 1:].reshape(-1))
    torch.testing.assert_close(tied(h, y, weight=emb), shifted)
    with pytest.raises(ValueError, match="weight"):
        tied(h, y)


def test_validation():
    z, y = data()
    with pytest.raises(TypeError, match="target"):
        L.cross_entropy(z, y.double())
    with pytest.raises(ValueError, match="target"):
        L.cross_entropy(z, torch.full_like(y, 7))
    with pytest.raises(ValueError, match="reduction"):
        L.focal_loss(z, y, reduction="batchmean")
    with pytest.raises(ValueError, match="label_smoothing"):
        L.cross_entropy(z, y, label_smoothing=-0.1)
    with pytest.raises(ValueError, match="weight"):
        L.cross_entropy(z, y, weight=torch.ones(3))
    with pytest.raises(ValueError, match="q"):
        L.generalized_cross_entropy(z, y, q=0.0)
    with pytest.raises(ValueError, match="max_norm"):
        L.logit_clip(z, 0.0)
    with pytest.raises(ValueError, match="vmax"):
        L.hl_gauss_target(torch.zeros(2), 1.0, 0.0, 4)
    with pytest.raises(ValueError, match=r"divergence must be one of .*'kl_div'.*got 'kl'"):
        L.distill_loss(z, z, divergence="kl")
    with pytest.raises(ValueError, match=r"student_logits and teacher_logits must have the same shape, "
                                         r"got \(13, 7\) and \(13, 3\)"):
        L.distill_loss(z, z[:, :3])
    with pytest.raises(TypeError, match="logits"):
        L.squentropy(y, y)
