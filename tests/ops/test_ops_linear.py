"""Tests for entropykit.ops.linear: fused linear cross-entropy, token statistics, distillation.

Pattern (Cut Cross-Entropy's tests): ground truth = naive formula in float64; reference = the same
naive formula in the input dtype; ours must satisfy max|ours - gt| <= max|ref - gt| + tol, for the
loss and for the gradients of hidden, weight and bias.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import measures as M
from entropykit.ops import linear_cross_entropy, linear_distill, linear_token_stats
from references import trl_generalized_jsd_loss

IGN = -100


def make(n_lead: tuple[int, ...], d: int, v: int, dtype: torch.dtype, *, seed: int = 0,
         ignore_frac: float = 0.2, scale: float = 1.0, bias: bool = False):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(*n_lead, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    w = (torch.randn(v, d, generator=g, dtype=torch.float64) / math.sqrt(d) * 2).to(dtype)
    b = (torch.randn(v, generator=g, dtype=torch.float64) * 0.5).to(dtype) if bias else None
    y = torch.randint(0, v, n_lead, generator=g)
    y[torch.rand(n_lead, generator=g) < ignore_frac] = IGN
    return h, w, b, y


def naive_ce(h, w, y, b=None, *, reduction="mean", ls=0.0, zl=0.0, cap=None, shift=False):
    """Textbook CE on materialised logits, computed in the dtype of the inputs."""
    return naive_ce_logits(F.linear(h, w, b), y, reduction=reduction, ls=ls, zl=zl, cap=cap, shift=shift)


def run(fn, h, w, b, upstream):
    h = h.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    b = b.detach().clone().requires_grad_() if b is not None else None
    out = fn(h, w, b)
    (out.double() * upstream).sum().backward() if out.dim() else (out * 1.0).backward()
    grads = [h.grad, w.grad] + ([b.grad] if b is not None else [])
    return [out.detach().double()] + [x.double() for x in grads]


def assert_three_way(ours, ref, gt, rtol):
    for name, o, r, t in zip(["loss", "dhidden", "dweight", "dbias"], ours, ref, gt):
        assert torch.isfinite(o).all(), name
        err_o = (o - t).abs().max().item()
        err_r = (r - t).abs().max().item()
        tol = rtol * max(t.abs().max().item(), 1e-3)
        assert err_o <= err_r + tol, f"{name}: ours err {err_o:.3g} > ref err {err_r:.3g} + {tol:.3g}"


CONFIGS = {
    "plain": {},
    "bias": {"bias": True},
    "smooth": {"ls": 0.1},
    "zloss": {"zl": 1e-3},
    "softcap": {"cap": 3.0},
    "shift": {"shift": True},
    "all": {"bias": True, "ls": 0.2, "zl": 1e-2, "cap": 5.0, "shift": True},
}


THREE_WAY = [(c, r, torch.float32) for c in CONFIGS for r in ("mean", "sum", "none")] + [
    (c, r, torch.bfloat16) for c in ("plain", "softcap", "all") for r in ("mean", "none")]


@pytest.mark.parametrize("config,reduction,dtype", THREE_WAY)
def test_three_way(config, reduction, dtype):
    opts = dict(CONFIGS[config])
    has_bias = opts.pop("bias", False)
    h, w, b, y = make((3, 41), 29, 1003, dtype, seed=hash(config) % 1000, bias=has_bias)
    upstream = torch.rand(y.shape, dtype=torch.float64) if reduction == "none" else 1.0
    kw = {"ls": "label_smoothing", "zl": "z_loss", "cap": "softcap", "shift": "shift"}

    def ours(h_, w_, b_):
        return linear_cross_entropy(h_, w_, y, bias=b_, reduction=reduction, chunk_size=16,
                                    **{kw[k]: val for k, val in opts.items()})

    def naive(h_, w_, b_):
        return naive_ce(h_, w_, y, b_, reduction=reduction, **opts)

    gt = run(naive, h.double(), w.double(), b.double() if b is not None else None, upstream)
    ref = run(naive, h, w, b, upstream)
    got = run(ours, h, w, b, upstream)
    assert_three_way(got, ref, gt, 1e-5 if dtype == torch.float32 else 4e-3)


def test_matches_torch_float64_with_smoothing_and_bias():
    h, w, b, y = make((57,), 13, 301, torch.float64, bias=True)
    for ls in (0.0, 0.3):
        ref = run(lambda h_, w_, b_, e=ls: F.cross_entropy(F.linear(h_, w_, b_), y, label_smoothing=e),
                  h, w, b, 1.0)
        got = run(lambda h_, w_, b_, e=ls: linear_cross_entropy(h_, w_, y, bias=b_, label_smoothing=e,
                                                                chunk_size=10), h, w, b, 1.0)
        for o, r in zip(got, ref):
            torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)


def test_grad_output_scaling_and_lse():
    h, w, _, y = make((20,), 8, 50, torch.float64)
    hh = h.clone().requires_grad_()
    loss, lse = linear_cross_entropy(hh, w, y, return_lse=True)
    (3.5 * loss).backward()
    hr = h.clone().requires_grad_()
    (3.5 * F.cross_entropy(hr @ w.T, y)).backward()
    torch.testing.assert_close(hh.grad, hr.grad)
    valid = y != IGN
    torch.testing.assert_close(lse[valid], torch.logsumexp(h @ w.T, -1)[valid])
    assert (lse[~valid] == 0).all()
    assert not lse.requires_grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [None, 4])  # the single-chunk pass / the chunked pass
@pytest.mark.parametrize("opts", [{"z_loss": 0.1, "label_smoothing": 0.1}, {}])
def test_all_ignored(reduction, dtype, chunk, opts):
    h, w, b, y = make((2, 9), 7, 33, dtype, bias=True, ignore_frac=1.1)
    h.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    out = linear_cross_entropy(h, w, y, bias=b, reduction=reduction, chunk_size=chunk, **opts)
    assert torch.isfinite(out).all() and (out == 0).all()
    out.sum().backward()
    for g in (h.grad, w.grad, b.grad):
        assert g is not None and torch.isfinite(g).all() and (g == 0).all()


@pytest.mark.parametrize("opts", [
    {},
    {"bias": True, "label_smoothing": 0.2, "z_loss": 0.05, "softcap": 2.0},
    {"reduction": "none", "softcap": 1.5, "bias": True},
    {"reduction": "sum", "shift": True, "label_smoothing": 0.1},
])
def test_gradcheck(opts):
    opts = dict(opts)
    h, w, b, y = make((2, 4), 3, 7, torch.float64, bias=opts.pop("bias", False), seed=3)
    inputs = [h.requires_grad_(), w.requires_grad_()] + ([b.requires_grad_()] if b is not None else [])

    def f(*args):
        return linear_cross_entropy(args[0], args[1], y, bias=args[2] if len(args) > 2 else None,
                                    chunk_size=3, **opts)

    assert torch.autograd.gradcheck(f, inputs)


def test_chunk_size_invariance():
    h, w, b, y = make((37,), 6, 70, torch.float64, bias=True)
    outs = [linear_cross_entropy(h, w, y, bias=b, reduction="none", chunk_size=c) for c in (1, 5, 37, None)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-12, atol=1e-12)


def test_grad_filter():
    h, w, _, y = make((64,), 16, 5000, torch.float32, scale=4.0)
    y[y == IGN] = 0
    exact = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y), h, w, None, 1.0)
    filt = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, grad_filter=True), h, w, None, 1.0)
    for e, f in zip(exact, filt):
        torch.testing.assert_close(f, e, rtol=1e-5, atol=1e-7)
    # with a huge eps only the blocks holding a target survive: dW outside them must be exactly 0
    coarse = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, grad_filter=1.0), h, w, None, 1.0)
    dw = coarse[2]
    blocks = set((y // 1024).tolist())
    for blk in range(-(-5000 // 1024)):
        rows = dw[blk * 1024:(blk + 1) * 1024]
        assert bool((rows == 0).all()) == (blk not in blocks)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 20), v=st.integers(1, 40), d=st.integers(1, 9), seed=st.integers(0, 99),
       ls=st.sampled_from([0.0, 0.25]))
def test_property_matches_naive(n, v, d, seed, ls):
    h, w, b, y = make((n,), d, v, torch.float64, seed=seed, bias=True)
    got = linear_cross_entropy(h, w, y, bias=b, reduction="none", label_smoothing=ls, chunk_size=4)
    torch.testing.assert_close(got, naive_ce(h, w, y, b, reduction="none", ls=ls))
    assert (got >= 0).all()


def test_validation():
    h, w, _, y = make((4,), 3, 5, torch.float32)
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(h, w[:, :2], y)
    with pytest.raises(TypeError, match="weight"):
        linear_cross_entropy(h, w.double(), y)
    with pytest.raises(ValueError, match="target"):
        linear_cross_entropy(h, w, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(TypeError, match="target"):
        linear_cross_entropy(h, w, y.float())
    with pytest.raises(ValueError, match="target"):
        linear_cross_entropy(h, w, y[:3])
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, y, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_cross_entropy(h, w, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match="softcap"):
        linear_cross_entropy(h, w, y, softcap=0.0)
    with pytest.raises(ValueError, match="bias"):
        linear_cross_entropy(h, w, y, bias=torch.zeros(4))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        linear_token_stats(h, w, y.clamp(min=0), temperature=0.0)
    with pytest.raises(ValueError, match="divergence"):
        linear_distill(h, w, h, w, divergence="kl")


# --------------------------------------------------------------------------------------------------
# token statistics
# --------------------------------------------------------------------------------------------------


def naive_stats(h, w, y, b=None, temperature=1.0, cap=None):
    z = F.linear(h, w, b)
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    z = z / temperature
    lp = torch.log_softmax(z, -1)
    ent = -(lp.exp() * lp).sum(-1)
    return {"surprisal": -lp.gather(-1, y[..., None]).squeeze(-1), "entropy": ent,
            "varentropy": (lp.exp() * (lp + ent[..., None]) ** 2).sum(-1), "lse": torch.logsumexp(z, -1)}


STATS = ("lse", "entropy", "varentropy", "surprisal")  # the fields of measures.TokenStats


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("opts", [{}, {"temperature": 0.7, "cap": 4.0, "bias": True}])
def test_token_stats_three_way(dtype, opts):
    opts = dict(opts)
    h, w, b, y = make((2, 33), 19, 517, dtype, bias=opts.pop("bias", False), ignore_frac=0.0, seed=5)
    g = torch.Generator().manual_seed(1)
    u = {k: torch.randn(y.shape, generator=g, dtype=torch.float64) for k in STATS}
    temperature, cap = opts.get("temperature", 1.0), opts.get("cap")

    def pack(stats):
        return sum(stats[k].double() * u[k] for k in STATS)

    def ours(h_, w_, b_):
        return pack(linear_token_stats(h_, w_, y, bias=b_, temperature=temperature, softcap=cap,
                                       chunk_size=8))

    def naive(h_, w_, b_):
        return pack(naive_stats(h_, w_, y, b_, temperature, cap))

    ones = torch.ones(y.shape, dtype=torch.float64)
    gt = run(naive, h.double(), w.double(), b.double() if b is not None else None, ones)
    ref = run(naive, h, w, b, ones)
    got = run(ours, h, w, b, ones)
    assert_three_way(got, ref, gt, 1e-5 if dtype == torch.float32 else 4e-3)
    s = linear_token_stats(h, w, y, bias=b, temperature=temperature, softcap=cap)
    n = naive_stats(h.double(), w.double(), y, b.double() if b is not None else None, temperature, cap)
    for k in STATS:
        err = (s[k].double() - n[k]).abs().max().item()
        assert err <= (2e-5 if dtype == torch.float32 else 2e-2) * max(1.0, n[k].abs().max().item()), k


def test_token_stats_gradcheck_and_single_output():
    h, w, b, y = make((2, 3), 3, 7, torch.float64, bias=True, ignore_frac=0.0)
    inputs = (h.requires_grad_(), w.requires_grad_(), b.requires_grad_())

    def f(h_, w_, b_):
        s = linear_token_stats(h_, w_, y, bias=b_, temperature=1.3, softcap=2.5, chunk_size=4)
        return s.lse, s.entropy, s.varentropy, s.surprisal

    assert torch.autograd.gradcheck(f, inputs)
    # one field used alone (e.g. the entropy bonus alone): one-sided backward paths
    for key in STATS:
        ours = run(lambda h_, w_, b_, k=key: linear_token_stats(h_, w_, y, bias=b_)[k], h, w, b,
                   torch.ones(y.shape, dtype=torch.float64))
        ref = run(lambda h_, w_, b_, k=key: naive_stats(h_, w_, y, b_)[k], h, w, b,
                  torch.ones(y.shape, dtype=torch.float64))
        for o, r in zip(ours, ref):
            torch.testing.assert_close(o, r)


def test_token_stats_large_logits_entropy():
    # entropy from shifted logits: no cancellation when the lse is large
    h = torch.tensor([[100.0, 0.0], [0.0, 1000.0]])
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = linear_token_stats(h, w, torch.tensor([0, 2]))
    torch.testing.assert_close(s["entropy"], torch.tensor([math.log(2), 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(s["lse"], torch.tensor([100 + math.log(2), 1000.0]))


# --------------------------------------------------------------------------------------------------
# distillation
# --------------------------------------------------------------------------------------------------


def naive_div(zs, zt, kind, beta):
    """Float64 hand-written formulas (reference file: measures-and-linear-ce.md, DistiLLM)."""
    ls, lt = torch.log_softmax(zs, -1), torch.log_softmax(zt, -1)
    ps, pt = ls.exp(), lt.exp()
    if kind == "forward_kl":
        return (pt * (lt - ls)).sum(-1)
    if kind == "reverse_kl":
        return (ps * (ls - lt)).sum(-1)
    if kind == "skew_kl":
        return (pt * (lt - torch.log(beta * pt + (1 - beta) * ps))).sum(-1)
    if kind == "skew_rkl":
        return (ps * (ls - torch.log((1 - beta) * pt + beta * ps))).sum(-1)
    if kind == "tvd":
        return 0.5 * (ps - pt).abs().sum(-1)
    m = beta * pt + (1 - beta) * ps
    return beta * (pt * (lt - m.log())).sum(-1) + (1 - beta) * (ps * (ls - m.log())).sum(-1)


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.1),
                                       ("jsd", 0.0), ("jsd", 1.0), ("skew_kl", 0.1), ("skew_rkl", 0.1),
                                       ("tvd", 0.5)])
def test_distill_against_naive(kind, beta):
    hs, ws, _, y = make((2, 23), 11, 301, torch.float64, seed=7)
    ht, wt, _, _ = make((2, 23), 6, 301, torch.float64, seed=8)
    temperature = 1.7
    hs.requires_grad_()
    ws.requires_grad_()
    got = linear_distill(hs, ws, ht, wt, divergence=kind, beta=beta, temperature=temperature, target=y,
                         chunk_size=7)
    got.backward()
    hr, wr = hs.detach().clone().requires_grad_(), ws.detach().clone().requires_grad_()
    zs, zt = (hr @ wr.T) / temperature, (ht @ wt.T) / temperature
    mask = y != IGN
    real = {"forward_kl": 0.0, "reverse_kl": 1.0}.get(kind, beta)
    per = naive_div(zs, zt, kind, beta)
    if kind == "jsd" and beta in (0.0, 1.0):  # TRL's end points are the plain KLs
        per = naive_div(zs, zt, "forward_kl" if beta == 0.0 else "reverse_kl", beta)
    ref = per[mask].sum() / mask.sum()
    ref.backward()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(hs.grad, hr.grad)
    torch.testing.assert_close(ws.grad, wr.grad)
    if kind in ("jsd", "forward_kl", "reverse_kl"):
        trl = trl_generalized_jsd_loss((hs @ ws.T).detach(), ht @ wt.T, y, real, temperature)
        torch.testing.assert_close(got.detach(), trl)


def test_distill_bf16_and_identity():
    hs, ws, _, y = make((40,), 16, 257, torch.bfloat16, seed=2)
    for kind in ("forward_kl", "jsd", "tvd", "skew_kl"):
        # teacher == student: every divergence is 0 with zero gradient
        hs_ = hs.clone().requires_grad_()
        out = linear_distill(hs_, ws, hs, ws, divergence=kind, beta=0.3)
        out.backward()
        assert abs(out.item()) < 1e-5 and hs_.grad.abs().max().item() < 1e-4
    ht, wt, _, _ = make((40,), 8, 257, torch.bfloat16, seed=3)
    got = linear_distill(hs, ws, ht, wt, divergence="jsd", target=y)
    ref = trl_generalized_jsd_loss((hs.double() @ ws.double().T), ht.double() @ wt.double().T, y)
    assert abs(got.item() - ref.item()) < 1e-4 * max(1.0, ref.item())
    assert got.item() <= math.log(2) + 1e-6


@pytest.mark.parametrize("chunk", [None, 1])
def test_underflowing_target_probability(chunk):
    # p_y = exp(-300) underflows in float32: lse must come from the fallback, not from log(0)
    h = torch.tensor([[1.0], [1.0]])
    w = torch.tensor([[150.0], [-150.0], [0.0]])
    y = torch.tensor([1, 0])
    got = linear_cross_entropy(h, w, y, reduction="none", chunk_size=chunk)
    ref = naive_ce(h.double(), w.double(), y, reduction="none")
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-4)
    assert got[0].item() == pytest.approx(300.0, rel=1e-6)
    # the bf16-logits mode takes the same fallback from its own bf16 logits (exact here)
    native = linear_cross_entropy(h.bfloat16(), w.bfloat16(), y, reduction="none", chunk_size=chunk,
                                  logits_dtype=torch.bfloat16)  # None: the single-chunk pass
    torch.testing.assert_close(native.double(), ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("which", ["hidden", "weight"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_partial_requires_grad(which, chunk):
    h, w, b, y = make((15,), 6, 40, torch.float64, bias=True)
    hh, ww = h.clone().requires_grad_(which == "hidden"), w.clone().requires_grad_(which == "weight")
    linear_cross_entropy(hh, ww, y, bias=b, label_smoothing=0.1, chunk_size=chunk).backward()
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    naive_ce(h2, w2, y, b, ls=0.1).backward()
    if which == "hidden":
        assert ww.grad is None
        torch.testing.assert_close(hh.grad, h2.grad)
    else:
        assert hh.grad is None
        torch.testing.assert_close(ww.grad, w2.grad)


def test_no_grad_mode_matches():
    h, w, b, y = make((9,), 5, 30, torch.float64, bias=True)
    h.requires_grad_()
    with torch.no_grad():
        out = linear_cross_entropy(h, w, y, bias=b)
        d = linear_distill(h, w, h.detach(), w, divergence="jsd")
    assert not out.requires_grad and not d.requires_grad
    torch.testing.assert_close(out, naive_ce(h.detach(), w, y, b))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 12), v=st.integers(1, 30), d=st.integers(1, 6), seed=st.integers(0, 99),
       temperature=st.floats(0.2, 3.0))
def test_token_stats_properties(n, v, d, seed, temperature):
    h, w, _, y = make((n,), d, v, torch.float64, seed=seed, ignore_frac=0.0, scale=3.0)
    s = linear_token_stats(h, w, y, bias=None, temperature=temperature, chunk_size=5)
    assert (s["entropy"] >= -1e-12).all() and (s["entropy"] <= math.log(v) + 1e-12).all()
    assert (s.surprisal >= -1e-12).all() and (s.varentropy >= 0).all()
    # cross-entropy of the target = surprisal (temperature 1 path through the CE op)
    ce = linear_cross_entropy(h / temperature, w, y, reduction="none")
    torch.testing.assert_close(ce, s.surprisal)
    # the one definition: the same fields, names and values as measures.token_stats
    ref = M.token_stats(F.linear(h, w) / temperature, y)
    for k in STATS:
        torch.testing.assert_close(s[k], ref[k], rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# logits_dtype=torch.bfloat16: native bf16 matmuls (logits rounded to bf16), statistics in fp32
# --------------------------------------------------------------------------------------------------


def ce_on_bf16_logits(h, w, y, b=None, *, reduction="mean", ls=0.0, zl=0.0, cap=None, shift=False):
    """float64 CE of the bf16-rounded logits bf16(h W^T + b); gradients flow as if z = h W^T + b
    (the rounding is a constant offset): the exact answer the bf16 logits mode approximates."""
    z = F.linear(h.double(), w.double(), None if b is None else b.double())
    zr = F.linear(h.detach().bfloat16(), w.detach().bfloat16(),
                  None if b is None else b.detach().bfloat16()).double()
    z = z + (zr - z).detach()
    return naive_ce_logits(z, y, reduction=reduction, ls=ls, zl=zl, cap=cap, shift=shift)


def naive_ce_logits(z, y, *, reduction, ls, zl, cap, shift):
    if shift:
        y = torch.cat([y[..., 1:], torch.full_like(y[..., :1], IGN)], -1)
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    z = z.reshape(-1, z.shape[-1])
    yy = y.reshape(-1)
    valid = yy != IGN
    lse = torch.logsumexp(z, -1)
    zy = z.gather(1, torch.where(valid, yy, 0)[:, None]).squeeze(1)
    loss = (1 - ls) * (lse - zy) + ls * (lse - z.mean(-1)) + zl * lse**2
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss.view(y.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1)


BF16_LOGITS = [(c, r) for c in ("plain", "bias", "smooth", "softcap", "all") for r in ("mean", "none")]


@pytest.mark.parametrize("config,reduction", BF16_LOGITS)
@pytest.mark.parametrize("d", [29, 771])  # odd narrow and wide heads
@pytest.mark.parametrize("chunk", [16, None])  # None: all rows fit one chunk -> the single-chunk pass
def test_bf16_logits_three_way(config, reduction, d, chunk):
    """float64 ground truth / bf16 naive reference / ours with logits_dtype=bf16: loss and the
    gradients wrt hidden, weight, bias are at least as accurate as the all-bf16 naive path."""
    opts = dict(CONFIGS[config])
    has_bias = opts.pop("bias", False)
    h, w, b, y = make((3, 41), d, 1003, torch.bfloat16, seed=7 + len(config), bias=has_bias)
    upstream = torch.rand(y.shape, dtype=torch.float64) if reduction == "none" else 1.0
    kw = {"ls": "label_smoothing", "zl": "z_loss", "cap": "softcap", "shift": "shift"}

    def ours(h_, w_, b_):
        return linear_cross_entropy(h_, w_, y, bias=b_, reduction=reduction, chunk_size=chunk,
                                    logits_dtype=torch.bfloat16, **{kw[k]: val for k, val in opts.items()})

    def naive(h_, w_, b_):
        return naive_ce(h_, w_, y, b_, reduction=reduction, **opts)

    gt = run(naive, h.double(), w.double(), b.double() if b is not None else None, upstream)
    ref = run(naive, h, w, b, upstream)
    got = run(ours, h, w, b, upstream)
    assert_three_way(got, ref, gt, 4e-3)


@pytest.mark.parametrize("d", [29, 771])
@pytest.mark.parametrize("chunk", [13, None])  # None: the single-chunk pass (97 x 2001 logits fit one)
def test_bf16_logits_semantics(d, chunk):
    """The mode computes CE of the *bf16-rounded* logits in fp32: its loss matches the float64 CE of
    bf16(h W^T + b) to fp32 precision, and differs from the exact mode by the rounding."""
    h, w, b, y = make((97,), d, 2001, torch.bfloat16, seed=11, bias=True, scale=3.0)
    for reduction in ("none", "mean"):
        got = run(lambda h_, w_, b_, r=reduction: linear_cross_entropy(
            h_, w_, y, bias=b_, reduction=r, chunk_size=chunk, logits_dtype=torch.bfloat16), h, w, b, 1.0)
        want = run(lambda h_, w_, b_, r=reduction: ce_on_bf16_logits(h_, w_, y, b_, reduction=r),
                   h, w, b, 1.0)
        torch.testing.assert_close(got[0], want[0], rtol=2e-6, atol=2e-5)
        for o, t in zip(got[1:], want[1:]):  # dz rounds to bf16 once; dW sums in fp32 over chunks
            scale = t.abs().max().item()
            assert (o - t).abs().max().item() <= 1e-2 * scale
    exact = linear_cross_entropy(h, w, y, bias=b, reduction="none", chunk_size=chunk)
    fast = linear_cross_entropy(h, w, y, bias=b, reduction="none", chunk_size=chunk,
                                logits_dtype=torch.bfloat16)
    assert (exact - fast).abs().max().item() > 1e-4  # the logits really were rounded


def test_bf16_logits_all_ignored_and_filter():
    h, w, b, y = make((2, 9), 7, 33, torch.bfloat16, bias=True, ignore_frac=1.1)
    h.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    out = linear_cross_entropy(h, w, y, bias=b, z_loss=0.1, logits_dtype=torch.bfloat16)
    assert out.item() == 0.0
    out.backward()
    for g in (h.grad, w.grad, b.grad):
        assert g is not None and (g == 0).all()
    # gradient filtering composes with the mode: a tiny eps keeps everything -> same as unfiltered
    h, w, _, y = make((64,), 16, 3000, torch.bfloat16, scale=2.0)
    base = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, logits_dtype=torch.bfloat16),
               h, w, None, 1.0)
    filt = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, logits_dtype=torch.bfloat16,
                                                       grad_filter=1e-30), h, w, None, 1.0)
    for o, t in zip(filt, base):  # filtered dh sums per-block bf16 products: compare at bf16 scale
        assert (o - t).abs().max().item() <= 1e-2 * t.abs().max().item()


def test_logits_dtype_validation():
    h, w, _, y = make((4,), 3, 5, torch.float32)
    with pytest.raises(ValueError, match="logits_dtype"):
        linear_cross_entropy(h, w, y, logits_dtype=torch.bfloat16)  # fp32 inputs are not downcast
    with pytest.raises(ValueError, match="logits_dtype"):
        linear_cross_entropy(h, w, y, logits_dtype=torch.float16)
    with pytest.raises(ValueError, match="logits_dtype"):
        linear_cross_entropy(h.double(), w.double(), y, logits_dtype=torch.float32)
    torch.testing.assert_close(linear_cross_entropy(h, w, y, logits_dtype=torch.float32),
                               linear_cross_entropy(h, w, y))


def test_default_chunking_balanced_and_ignored_rows():
    """Default chunking (budget up to V D * 2 bytes, balanced chunks) and ignored rows that are skipped
    without copying: same loss and grads as one chunk per row, grads of ignored rows exactly 0."""
    from entropykit.ops.linear import _rows_per_chunk

    assert _rows_per_chunk(4096, 128256, 1024, None) == 512  # V D * 2 bytes = 262 MB -> 512 rows
    assert _rows_per_chunk(1000, 128256, 1024, None) == 500  # balanced: 2 chunks of 500, not 511 + 489
    assert _rows_per_chunk(16384, 50257, 256, None) * 4 * 50257 <= 64 * 2**20 + 4 * 50257
    h, w, b, y = make((301,), 9, 4000, torch.float64, bias=True, ignore_frac=0.3)
    a = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, bias=b_, label_smoothing=0.1), h, w, b, 1.0)
    c = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, bias=b_, label_smoothing=0.1, chunk_size=1),
            h, w, b, 1.0)
    for x, z in zip(a, c):
        torch.testing.assert_close(x, z, rtol=1e-12, atol=1e-14)
    assert (a[1][y == IGN] == 0).all()


@pytest.mark.parametrize("opts", [{"label_smoothing": 0.1}, {"softcap": 4.0, "z_loss": 1e-3},
                                  {"reduction": "none"}])
def test_bf16_logits_sub_blocks(opts):
    """Default chunking with a large V: one bf16 chunk is processed in several cache-sized fp32
    sub-blocks (V = 20011 -> 26 rows each), with bias and ignored rows."""
    from entropykit.ops.linear import _SUB_BYTES

    v = 20011
    assert _SUB_BYTES // (4 * v) < 150
    h, w, b, y = make((150,), 24, v, torch.bfloat16, seed=5, bias=True, scale=2.0)
    red = opts.get("reduction", "mean")
    kw = {k: val for k, val in opts.items() if k != "reduction"}
    got = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, bias=b_, reduction=red,
                                                      logits_dtype=torch.bfloat16, **kw), h, w, b, 1.0)
    want = run(lambda h_, w_, b_: ce_on_bf16_logits(h_, w_, y, b_, reduction=red,
                                                    ls=kw.get("label_smoothing", 0.0),
                                                    zl=kw.get("z_loss", 0.0), cap=kw.get("softcap")),
               h, w, b, 1.0)
    torch.testing.assert_close(got[0], want[0], rtol=2e-6, atol=2e-5)
    for o, t in zip(got[1:], want[1:]):
        assert (o - t).abs().max().item() <= 1e-2 * t.abs().max().item()


# --------------------------------------------------------------------------------------------------
# issue 12: one rule each (names, NaN/inf, float32 accuracy, shift)
# --------------------------------------------------------------------------------------------------


def test_shift_must_be_a_bool():
    h, w, _, y = make((2, 5), 3, 7, torch.float64, seed=3)
    for bad in (2, 1, 0.0, "yes", None):
        with pytest.raises(TypeError, match=rf"shift must be a bool, got {type(bad).__name__} {bad!r}"):
            linear_cross_entropy(h, w, y, shift=bad)  # type: ignore[arg-type]
    # shift=True is still the causal-LM shift (position t scored against target t + 1)
    ref = naive_ce(h[:, :-1], w, y[:, 1:])
    torch.testing.assert_close(linear_cross_entropy(h, w, y, shift=True), ref)


@pytest.mark.parametrize("name", M.DISTILL_DIVERGENCES)
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_distill_names_and_definitions_are_the_measures_registry(name, beta):
    hs, ws, _, y = make((2, 9), 5, 31, torch.float64, seed=11)
    ht, wt, _, _ = make((2, 9), 4, 31, torch.float64, seed=12)
    temperature = 1.3
    div, rev = M.resolve_divergence(name)
    zs, zt = (hs @ ws.T) / temperature, (ht @ wt.T) / temperature
    p, q = (zs, zt) if rev else (zt, zs)
    keep = y != IGN
    kw = {div.param: beta} if div.param else {}
    ref = div.fn(p[keep], q[keep], reduction="mean", **kw)
    got = linear_distill(hs, ws, ht, wt, divergence=name, beta=beta, temperature=temperature, target=y,
                         chunk_size=5)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    for old, new in M.DIVERGENCE_ALIASES.items():  # the earlier names are aliases
        if new == name:
            again = linear_distill(hs, ws, ht, wt, divergence=old, beta=beta, temperature=temperature,
                                   target=y, chunk_size=5)
            assert torch.equal(again, got)


def test_distill_nan_inf_rule():
    hs, ws, _, _ = make((6,), 4, 11, torch.float32, seed=13)
    for arg in range(4):
        xs = [hs.clone(), ws.clone(), hs.clone(), ws.clone()]
        xs[arg].view(-1)[3] = (math.nan, math.inf, -math.inf, math.nan)[arg]
        name = ("student_hidden", "student_weight", "teacher_hidden", "teacher_weight")[arg]
        with pytest.raises(ValueError, match=rf"{name} must be finite, got (nan|inf|-inf) at flat index 3"):
            linear_distill(*xs, divergence="js_div")
    with pytest.raises(ValueError, match=r"divergence must be one of .*'js_div'.*got 'jsd2'"):
        linear_distill(hs, ws, hs, ws, divergence="jsd2")
    with pytest.raises(ValueError, match=r"beta must be a number in \[0.0, 1.0\], got 1.5"):
        linear_distill(hs, ws, hs, ws, divergence="js_div", beta=1.5)


@pytest.mark.parametrize("beta", [0.1, 0.9])
def test_float32_generalised_jsd_as_close_as_a_plain_formula(beta):
    # issue 12, item 5b: the float32 generalised JSD must be at least as close to float64 as a plain
    # float32 formula -- the log-space mixture (log p + log beta) was ~2e-6 relative off at V = 3200
    g = torch.Generator().manual_seed(0)
    hs, ws = torch.randn(128, 16, generator=g), torch.randn(3200, 16, generator=g) / 4  # logits ~ N(0, 1)
    ht, wt = torch.randn(128, 16, generator=g), torch.randn(3200, 16, generator=g) / 4

    def plain(zs, zt):  # the mixture in probability space
        ls, lt = torch.log_softmax(zs, -1), torch.log_softmax(zt, -1)
        lm = torch.log(beta * lt.exp() + (1 - beta) * ls.exp())
        return (beta * (lt.exp() * (lt - lm)).sum(-1) + (1 - beta) * (ls.exp() * (ls - lm)).sum(-1)).mean()

    exact = plain(hs.double() @ ws.double().T, ht.double() @ wt.double().T).item()
    ref_err = abs(plain(hs @ ws.T, ht @ wt.T).item() - exact)  # ~2.7e-7 relative (the old kernel: 2e-6)
    ours = linear_distill(hs, ws, ht, wt, divergence="js_div", beta=beta).item()
    assert abs(ours - exact) <= ref_err


# --------------------------------------------------------------------------------------------------
# the single-chunk pass (_ce_whole): every row's logits in one chunk, e.g. a byte vocabulary
# --------------------------------------------------------------------------------------------------


def test_single_chunk_pass_is_taken_when_all_rows_fit():
    from entropykit.ops.linear import _CEConfig, _whole_fits

    plain = _CEConfig(0.0, 0.0, None, None, None)
    assert _whole_fits(4096, 257, 256, plain)  # ByteGPT's head: 4096 x 257 fp32 logits, 4 MB
    assert _whole_fits(512, 32000, 512, plain)  # few tokens: the one default chunk holds them all
    assert not _whole_fits(4096, 128256, 1024, plain)  # a large vocabulary is chunked
    assert not _whole_fits(4096, 257, 256, _CEConfig(0.0, 0.0, None, None, 1000))  # chunk_size < N
    assert not _whole_fits(4096, 257, 256, _CEConfig(0.0, 0.0, None, 1e-9, None))  # grad_filter
    assert _whole_fits(4096, 257, 256, _CEConfig(0.0, 0.0, None, None, None, True))  # bf16 logits too
    assert not _whole_fits(4096, 257, 256, _CEConfig(0.0, 0.0, None, 1e-9, None, True))


@pytest.mark.parametrize("config,reduction,dtype", THREE_WAY)
def test_single_chunk_three_way(config, reduction, dtype):
    """As test_three_way, through the single-chunk pass (default chunking): at least as accurate as
    the naive path in the input dtype, against float64 ground truth."""
    opts = dict(CONFIGS[config])
    has_bias = opts.pop("bias", False)
    h, w, b, y = make((3, 41), 29, 257, dtype, seed=hash(config) % 1000 + 1, bias=has_bias)
    upstream = torch.rand(y.shape, dtype=torch.float64) if reduction == "none" else 1.0
    kw = {"ls": "label_smoothing", "zl": "z_loss", "cap": "softcap", "shift": "shift"}

    def ours(h_, w_, b_):
        return linear_cross_entropy(h_, w_, y, bias=b_, reduction=reduction,
                                    **{kw[k]: val for k, val in opts.items()})

    def naive(h_, w_, b_):
        return naive_ce(h_, w_, y, b_, reduction=reduction, **opts)

    gt = run(naive, h.double(), w.double(), b.double() if b is not None else None, upstream)
    ref = run(naive, h, w, b, upstream)
    got = run(ours, h, w, b, upstream)
    assert_three_way(got, ref, gt, 1e-5 if dtype == torch.float32 else 4e-3)


@pytest.mark.parametrize("opts", [
    {},
    {"bias": True, "label_smoothing": 0.2, "z_loss": 0.05, "softcap": 2.0},
    {"reduction": "none", "softcap": 1.5, "bias": True},
    {"reduction": "sum", "shift": True, "label_smoothing": 0.1},
    {"reduction": "mean", "z_loss": 0.02},
])
def test_single_chunk_gradcheck(opts):
    opts = dict(opts)
    h, w, b, y = make((2, 5), 3, 7, torch.float64, bias=opts.pop("bias", False), seed=4)
    inputs = [h.requires_grad_(), w.requires_grad_()] + ([b.requires_grad_()] if b is not None else [])

    def f(*args):
        return linear_cross_entropy(args[0], args[1], y, bias=args[2] if len(args) > 2 else None, **opts)

    assert torch.autograd.gradcheck(f, inputs)


def _single_vs_chunked(dtype, **opts):
    h, w, b, y = make((150,), 24, 61, dtype, seed=11, bias=True, scale=2.0, ignore_frac=0.25)
    red = opts.pop("reduction", "mean")
    up = torch.rand(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) \
        if red == "none" else 1.0
    one = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, bias=b_, reduction=red, **opts),
              h, w, b, up)
    chunked = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, bias=b_, reduction=red, chunk_size=7,
                                                          **opts), h, w, b, up)
    return one, chunked, y


@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1}, {"softcap": 4.0, "z_loss": 1e-3},
                                  {"reduction": "none"}, {"reduction": "sum", "label_smoothing": 0.3}])
def test_single_chunk_equals_chunked_float64(opts):
    """The two passes compute the same function: float64 agreement to rounding, ignored rows' dh = 0."""
    one, chunked, y = _single_vs_chunked(torch.float64, **dict(opts))
    for a, c in zip(one, chunked):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)
    assert (one[1][y == IGN] == 0).all()


@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1}, {"softcap": 4.0, "z_loss": 1e-3},
                                  {"reduction": "none"}])
def test_single_chunk_bf16_sub_blocks(monkeypatch, opts):
    """bf16: the fp32 copy of h made in several row blocks (forced small) gives the loss of the
    one-block pass to fp32 rounding, and both agree with the chunked pass (same precision contract:
    fp32 logits of exact bf16 products; backward matmuls on the bf16 logit gradient)."""
    import entropykit.ops.linear as L

    whole, chunked, y = _single_vs_chunked(torch.bfloat16, **dict(opts))
    monkeypatch.setattr(L, "_h_block_rows", lambda n, v, d: 15)  # 150 rows -> 10 blocks of 15
    blocks, _, _ = _single_vs_chunked(torch.bfloat16, **dict(opts))
    torch.testing.assert_close(blocks[0], whole[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(whole[0], chunked[0], rtol=1e-6, atol=1e-6)
    for a, b_, c in zip(blocks[1:], whole[1:], chunked[1:]):
        scale = c.abs().max().item()
        assert (a - b_).abs().max().item() <= 2**-7 * scale
        assert (b_ - c).abs().max().item() <= 2**-7 * scale
    assert (whole[1][y == IGN] == 0).all() and (blocks[1][y == IGN] == 0).all()


def test_single_chunk_h_blocks_never_exceed_the_gradient_buffer():
    """The fp32 copies of h (bf16 inputs) come in balanced blocks no larger than the bf16 (rows x V)
    logit-gradient buffer (or the 2 MB / 256-row minimum), covering all rows."""
    from entropykit.ops.linear import _WHOLE_H_BYTES, _WHOLE_MIN_ROWS, _h_block_rows

    assert _h_block_rows(8192, 257, 256) == 4096  # ByteGPT 8 x 1024: two blocks
    for n, v, d in [(8192, 257, 256), (100, 257, 256), (5000, 50, 1024), (70000, 257, 768), (1, 3, 1)]:
        rows = _h_block_rows(n, v, d)
        assert 1 <= rows <= n
        assert rows * 4 * d <= max(2 * n * v, _WHOLE_H_BYTES, _WHOLE_MIN_ROWS * 4 * d)
        blocks = -(-n // rows)
        assert rows == n or blocks * rows - n < blocks  # balanced: the last block is nearly full


def test_single_chunk_bf16_logits_are_not_rounded():
    """The precision contract: bf16 inputs get fp32 logits of the exact products (not bf16-rounded
    logits): with |z| ~ 30 the per-token loss matches the float64 CE of the same bf16 values to fp32
    rounding, far closer than the CE of bf16-rounded logits."""
    h, w, _, y = make((64,), 32, 257, torch.bfloat16, seed=2, scale=8.0, ignore_frac=0.0)
    got = linear_cross_entropy(h, w, y, reduction="none").double()
    exact = F.cross_entropy(h.double() @ w.double().T, y, reduction="none")
    rounded = F.cross_entropy((h @ w.T).double(), y, reduction="none")
    err = (got - exact).abs().max().item()
    assert err <= 1e-5 * exact.abs().max().item()
    assert err * 100 < (rounded - exact).abs().max().item()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 30), v=st.integers(1, 40), d=st.integers(1, 9), seed=st.integers(0, 99),
       ls=st.sampled_from([0.0, 0.25]), zl=st.sampled_from([0.0, 0.01]),
       cap=st.sampled_from([None, 2.0]), bias=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_single_chunk_property_matches_naive(n, v, d, seed, ls, zl, cap, bias, reduction):
    """float64, random shapes and options: loss and gradients equal the naive autograd ones."""
    h, w, b, y = make((n,), d, v, torch.float64, seed=seed, bias=bias, ignore_frac=0.3)
    up = torch.rand(y.shape, dtype=torch.float64) if reduction == "none" else 1.0
    got = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y, bias=b_, reduction=reduction,
                                                      label_smoothing=ls, z_loss=zl, softcap=cap),
              h, w, b, up)
    want = run(lambda h_, w_, b_: naive_ce(h_, w_, y, b_, reduction=reduction, ls=ls, zl=zl, cap=cap),
               h, w, b, up)
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
    if reduction == "none":
        assert (got[0] >= 0).all() and (got[0][y == IGN] == 0).all()


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 40), v=st.integers(2, 60), d=st.integers(1, 12), seed=st.integers(0, 99),
       grad_out=st.floats(0.1, 10.0))
def test_single_chunk_property_bf16_scale_and_bounds(n, v, d, seed, grad_out):
    """bf16: the mean loss lies in [0, max token loss], and an upstream scale c gives c times the
    gradients of c = 1 (the saved gradients are scaled in backward, not recomputed)."""
    h, w, _, y = make((n,), d, v, torch.bfloat16, seed=seed, ignore_frac=0.0)
    per = linear_cross_entropy(h, w, y, reduction="none")
    a = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y), h, w, None, 1.0)
    c = run(lambda h_, w_, b_: linear_cross_entropy(h_, w_, y) * grad_out, h, w, None, 1.0)
    assert (per >= 0).all() and 0 <= a[0].item() <= per.max().item() * (1 + 1e-6)
    for x, z in zip(a[1:], c[1:]):
        assert (z - x * grad_out).abs().max().item() <= 2**-7 * (x * grad_out).abs().max().item() + 1e-30


@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1}, {"softcap": 4.0, "z_loss": 1e-3},
                                  {"reduction": "none"}, {"reduction": "sum", "label_smoothing": 0.3}])
def test_single_chunk_bf16_logits_equals_chunked(opts):
    """logits_dtype=bf16 through the single-chunk pass (one native matmul, one fp32 buffer) and
    through the chunked pass (bf16 chunk buffers, fp32 sub-blocks) compute the same function: the
    same bf16-rounded logits, so losses agree to fp32 rounding; gradients (bf16 outputs, dW summed
    in bf16 once vs in fp32 over chunks) to bf16 resolution; ignored rows get dh = 0."""
    whole, chunked, y = _single_vs_chunked(torch.bfloat16, logits_dtype=torch.bfloat16, **dict(opts))
    torch.testing.assert_close(whole[0], chunked[0], rtol=1e-6, atol=1e-6)
    for a, c in zip(whole[1:], chunked[1:]):
        assert (a - c).abs().max().item() <= 2**-7 * c.abs().max().item()
    assert (whole[1][y == IGN] == 0).all()
    # and it is not the exact mode: the rounding of the logits shows in the loss
    exact, _, _ = _single_vs_chunked(torch.bfloat16, **dict(opts))
    assert (exact[0] - whole[0]).abs().max().item() > 0.0
