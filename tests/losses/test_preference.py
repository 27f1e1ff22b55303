"""losses.preference against float64 transcriptions of each paper's formula (plain ``math``), gradcheck,
the sequence log-prob helpers against naive loops, and the errors of bad input / bad combinations."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.losses import (
    LOSS_TYPES,
    PREFERENCE_LOSSES,
    ORPOLoss,
    PreferenceLoss,
    SimPOLoss,
    f_divergence_score,
    ld_sequence_logprobs,
    orpo_loss,
    preference_loss,
    sequence_logprobs,
    sequence_logprobs_from_hidden,
    simpo_loss,
    token_logprobs,
    wpo_weights,
    wpo_weights_from_hidden,
)


def lsig(x: float) -> float:  # log sigmoid, float64 math
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sig(x: float) -> float:
    return math.exp(lsig(x))


def score(u: float, div: str, a: float = 0.5) -> float:
    """f'(e^u) of the f-DPO paper (Wang et al. 2024, Table 1), with TRL's constants."""
    t = math.exp(u)
    if div == "reverse_kl":
        return math.log(t)
    if div == "forward_kl":
        return 1 - 1 / t
    if div == "js_divergence":
        return math.log(2 * t / (t + 1))
    return (t ** (a - 1) - 1) / (a - 1)


def naive(lt: str, pc: float, pr: float, rc: float, rr: float, *, beta: float = 0.1, eps: float = 0.0,
          div: str = "reverse_kl", a: float = 0.5, halpha: float = 1.0, tau: float = 0.05, nc: float = 1.0,
          nr: float = 1.0) -> float:
    """Per-pair loss, transcribed from each paper (batch-independent losses)."""
    uw, ul = pc - rc, pr - rr
    sw, sl = score(uw, div, a), score(ul, div, a)
    d = sw - sl
    if lt == "sigmoid":  # DPO Eq. 7; cDPO (Mitchell 2023)
        return -(1 - eps) * lsig(beta * d) - eps * lsig(-beta * d)
    if lt == "hinge":  # SLiC
        return max(0.0, 1 - beta * d)
    if lt == "ipo":  # IPO Eq. 17, length-averaged
        return (sw / nc - sl / nr - 1 / (2 * beta)) ** 2
    if lt == "sigmoid_norm":
        return -lsig(beta * (sw / nc - sl / nr))
    if lt == "exo_pair":  # EXO Eq. 16: KL(q || [1-eps, eps])
        x = beta * d  # q = sigma(x), 1 - q = sigma(-x)
        return sig(x) * (lsig(x) - math.log(1 - eps)) + sig(-x) * (lsig(-x) - math.log(eps))
    if lt == "nca_pair":
        return -lsig(beta * uw) - 0.5 * lsig(-beta * uw) - 0.5 * lsig(-beta * ul)
    if lt == "robust":  # rDPO Eq. 8
        return ((1 - eps) * -lsig(beta * d) - eps * -lsig(-beta * d)) / (1 - 2 * eps)
    if lt == "bco_pair":
        return -lsig(beta * uw) - lsig(-beta * ul)
    if lt == "sppo_hard":  # SPPO Eq. 4.7 with P = 1 / 0 and eta = 1 / beta
        return (uw - 1 / (2 * beta)) ** 2 + (ul + 1 / (2 * beta)) ** 2
    if lt == "apo_zero":
        return 1 - sig(beta * uw) + sig(beta * ul)
    if lt == "apo_down":
        return sig(beta * uw) + 1 - sig(beta * (uw - ul))
    if lt == "discopop":  # DiscoPOP Eq. 5 (log-ratio modulated loss)
        x = beta * d
        m = sig(x / tau)
        return (1 - m) * -lsig(x) + m * math.exp(-x)
    if lt == "hdpo":  # H-DPO Eq. 11
        return -lsig(halpha * beta * (pc - pr) - beta * (rc - rr))
    raise AssertionError(lt)


CASES = [(-5.0, -7.0, -5.5, -6.5), (-12.0, -3.0, -11.0, -4.0), (-1.0, -1.0, -1.0, -1.0),
         (-0.3, -9.0, -2.0, -2.0)]
PAIRWISE = [t for t in LOSS_TYPES if t not in ("aot", "aot_unpaired", "sft")]


def _opts(lt: str) -> dict[str, Any]:
    return {"label_smoothing": {"exo_pair": 1e-3, "robust": 0.2}.get(lt, 0.0)}


@pytest.mark.parametrize("lt", PAIRWISE)
def test_each_loss_matches_its_formula(lt: str) -> None:
    cols = [torch.tensor(c, dtype=torch.float64) for c in zip(*CASES)]
    nc, nr = torch.tensor([3.0, 5.0, 1.0, 2.0]), torch.tensor([4.0, 1.0, 1.0, 7.0])
    extra = {"hdpo_alpha": 0.6} if lt == "hdpo" else {}
    for beta in (0.1, 0.7):
        out = preference_loss(*cols, loss_type=lt, beta=beta, chosen_lengths=nc, rejected_lengths=nr,
                              reduction="none", **_opts(lt), **extra)
        for i, case in enumerate(CASES):
            want = naive(lt, *case, beta=beta, eps=_opts(lt)["label_smoothing"], nc=float(nc[i]),
                         nr=float(nr[i]), halpha=extra.get("hdpo_alpha", 1.0))
            assert math.isclose(float(out.loss[i]), want, rel_tol=1e-12, abs_tol=1e-12), (beta, case)
        pc, pr, rc, rr = cols
        assert torch.allclose(out.chosen_rewards, beta * (pc - rc))
        assert torch.allclose(out.margins, beta * ((pc - rc) - (pr - rr)))


@pytest.mark.parametrize("div", ["forward_kl", "js_divergence", "alpha_divergence"])
@pytest.mark.parametrize("lt", ["sigmoid", "hinge", "ipo", "robust", "discopop", "exo_pair", "sigmoid_norm"])
def test_f_dpo_matches_formula(div: str, lt: str) -> None:
    cols = [torch.tensor(c, dtype=torch.float64) for c in zip(*CASES)]
    n = torch.tensor([2.0, 3.0, 1.0, 5.0])
    for a in ((0.5, 0.3, 2.0) if div == "alpha_divergence" else (0.5,)):
        out = preference_loss(*cols, loss_type=lt, beta=0.4, f_divergence=div, f_alpha=a, chosen_lengths=n,
                              rejected_lengths=n, reduction="none", **_opts(lt))
        for i, case in enumerate(CASES):
            want = naive(lt, *case, beta=0.4, eps=_opts(lt)["label_smoothing"], div=div, a=a,
                         nc=float(n[i]), nr=float(n[i]))
            assert math.isclose(float(out.loss[i]), want, rel_tol=1e-10, abs_tol=1e-12)


def test_alpha_divergence_limits_and_clamp() -> None:
    u = torch.linspace(-3, 3, 7, dtype=torch.float64)
    assert torch.equal(f_divergence_score(u, "alpha_divergence", 1.0), u)
    near = f_divergence_score(u, "alpha_divergence", 1.0 + 1e-4)
    assert torch.allclose(near, u, atol=1e-3)  # (t^(a-1) - 1)/(a-1) -> log t
    big = f_divergence_score(torch.tensor([-1e4], dtype=torch.float64), "alpha_divergence", 0.5)
    assert math.isclose(float(big), (math.exp(80.0) - 1) / -0.5)  # exponent clamped at 80


def test_aot_sorts_over_the_batch() -> None:
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=g, dtype=torch.float64) for _ in range(4))
    out = preference_loss(pc, pr, rc, rr, loss_type="aot", beta=0.5, label_smoothing=0.1, reduction="none")
    d = sorted((pc - pr).tolist())
    e = sorted((rc - rr).tolist())
    want = [-(0.9) * lsig(0.5 * (x - y)) - 0.1 * lsig(-0.5 * (x - y)) for x, y in zip(d, e)]
    assert torch.allclose(out.loss, torch.tensor(want, dtype=torch.float64))
    out = preference_loss(pc, pr, rc, rr, loss_type="aot_unpaired", beta=0.5, reduction="none")
    uw, ul = sorted((pc - rc).tolist()), sorted((pr - rr).tolist())
    assert torch.allclose(out.loss, torch.tensor([-lsig(0.5 * (x - y)) for x, y in zip(uw, ul)],
                                                 dtype=torch.float64))


def test_sft_is_the_batch_token_mean_nll() -> None:
    pc, pr = torch.tensor([-6.0, -2.0]), torch.tensor([-1.0, -1.0])
    out = preference_loss(pc, pr, pc, pr, loss_type="sft", chosen_lengths=torch.tensor([3, 1]),
                          rejected_lengths=torch.tensor([1, 1]))
    assert math.isclose(float(out.loss), 8.0 / 4.0, rel_tol=1e-6)


def test_weights_and_loss_weights() -> None:
    cols = [torch.tensor(c, dtype=torch.float64) for c in zip(*CASES)]
    w = torch.tensor([0.5, 1.0, 0.0, 2.0], dtype=torch.float64)
    a = preference_loss(*cols, reduction="none").loss
    assert torch.allclose(preference_loss(*cols, weights=w, reduction="none").loss, a * w)
    b = preference_loss(*cols, loss_type="bco_pair", reduction="none").loss
    mix = preference_loss(*cols, loss_type=["sigmoid", "bco_pair"], loss_weights=[0.25, 2.0])
    assert torch.isclose(mix.loss, (0.25 * a + 2.0 * b).mean())
    assert torch.isclose(preference_loss(*cols, reduction="sum").loss, a.sum())


def test_hdpo_alpha_one_is_dpo_and_alpha_sharpens_gradient() -> None:
    cols = [torch.tensor(c, dtype=torch.float64) for c in zip(*CASES)]
    assert torch.allclose(preference_loss(*cols, loss_type="hdpo").loss, preference_loss(*cols).loss)


def test_simpo_and_orpo_formulas() -> None:
    c = torch.tensor([-0.7, -2.0, -0.01], dtype=torch.float64)
    r = torch.tensor([-1.1, -0.5, -3.0], dtype=torch.float64)
    out = simpo_loss(c, r, beta=2.5, gamma=1.0, label_smoothing=0.1, reduction="none")
    for i in range(3):
        x = 2.5 * (float(c[i]) - float(r[i])) - 1.0
        assert math.isclose(float(out.loss[i]), -0.9 * lsig(x) - 0.1 * lsig(-x), rel_tol=1e-12)
    out = orpo_loss(c, r, beta=0.2, reduction="none")
    for i in range(3):
        pw, pl = math.exp(float(c[i])), math.exp(float(r[i]))
        lor = math.log(pw / (1 - pw)) - math.log(pl / (1 - pl))  # ORPO Eqs. 4, 7
        assert math.isclose(float(out.loss[i]), -float(c[i]) - 0.2 * lsig(lor), rel_tol=1e-10)
    assert torch.allclose(out.chosen_rewards, 0.2 * c)


@pytest.mark.parametrize("lt", [*PAIRWISE, "aot", "aot_unpaired"])
def test_gradcheck(lt: str) -> None:
    g = torch.Generator().manual_seed(1)
    xs = [(-3 * torch.rand(4, generator=g, dtype=torch.float64)).requires_grad_(True) for _ in range(4)]
    n = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    opts = _opts(lt) if lt not in ("aot", "aot_unpaired") else {"label_smoothing": 0.1}
    extra = {"hdpo_alpha": 0.5} if lt == "hdpo" else {}
    div = "js_divergence" if lt in ("sigmoid", "ipo", "robust") else "reverse_kl"

    def f(*a: torch.Tensor) -> torch.Tensor:
        return preference_loss(*a, loss_type=lt, beta=0.7, chosen_lengths=n, rejected_lengths=n,
                               f_divergence=div, **opts, **extra).loss

    assert torch.autograd.gradcheck(f, xs)
    c, r = (-(torch.rand(3, generator=g, dtype=torch.float64) + 0.1)).requires_grad_(True), \
        (-(torch.rand(3, generator=g, dtype=torch.float64) + 0.1)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: simpo_loss(a, b).loss, (c, r))
    assert torch.autograd.gradcheck(lambda a, b: orpo_loss(a, b).loss, (c, r))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-30, -0.01), min_size=4, max_size=4), st.floats(0.01, 5.0))
def test_dpo_properties(v: list[float], beta: float) -> None:
    pc, pr, rc, rr = (torch.tensor([x], dtype=torch.float64) for x in v)
    out = preference_loss(pc, pr, rc, rr, beta=beta)
    # DPO = -log sigmoid(margin): positive, and swapping chosen/rejected gives -log sigmoid(-margin)
    swapped = preference_loss(pr, pc, rr, rc, beta=beta)
    assert math.isclose(math.exp(-float(out.loss)) + math.exp(-float(swapped.loss)), 1.0, rel_tol=1e-9)
    assert math.isclose(float(out.margins), -float(swapped.margins), abs_tol=1e-12)
    # a shift of the reference by a constant per prompt cancels
    shifted = preference_loss(pc, pr, rc + 3.0, rr + 3.0, beta=beta)
    assert math.isclose(float(shifted.loss), float(out.loss), rel_tol=1e-9, abs_tol=1e-12)


# ---------------------------------------------------------------------------- sequence log-probs


def test_sequence_logprobs_from_logits_and_hidden() -> None:
    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 9, (3, 6), generator=g)
    y[0, 4:] = -100
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, :2] = False
    z = h @ w.T
    naive_sum = torch.zeros(3, dtype=torch.float64)
    naive_n = [0, 0, 0]
    for i in range(3):
        for t in range(6):
            if y[i, t] != -100 and mask[i, t]:
                naive_sum[i] += z[i, t, y[i, t]] - torch.logsumexp(z[i, t], 0)
                naive_n[i] += 1
    a = sequence_logprobs(z, y, mask=mask)
    b = sequence_logprobs_from_hidden(h, w, y, mask=mask)
    assert torch.allclose(a, naive_sum) and torch.allclose(b, naive_sum)
    avg = sequence_logprobs_from_hidden(h, w, y, mask=mask, average=True)
    assert torch.allclose(avg, naive_sum / torch.tensor(naive_n, dtype=torch.float64))
    ga = torch.autograd.grad(a.sum(), (h, w))
    gb = torch.autograd.grad(b.sum(), (h, w))
    assert all(torch.allclose(x, y_) for x, y_ in zip(ga, gb))
    tok = token_logprobs(z, y, mask=mask)
    assert tok[0, 4:].eq(0).all() and tok[1, :2].eq(0).all()


def test_sequence_logprobs_from_hidden_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1, 5, -100], [0, 0, 2]])
    assert torch.autograd.gradcheck(lambda a, b: sequence_logprobs_from_hidden(a, b, y, average=True), (h, w))


def test_wpo_weights_formula() -> None:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 6, (2, 4), generator=g)
    y[1, 3] = -100
    w = wpo_weights(z, y)
    assert not w.requires_grad
    for i in range(2):
        terms = []
        for t in range(4):
            if y[i, t] == -100:
                continue
            p = torch.softmax(z[i, t].detach(), 0)
            terms.append(math.log(float(p[y[i, t]])) - math.log(float((p * p).sum())))
        assert math.isclose(float(w[i]), math.exp(sum(terms) / len(terms)), rel_tol=1e-12)
    h = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    wt = torch.randn(6, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(6, generator=g, dtype=torch.float64)
    assert torch.allclose(wpo_weights_from_hidden(h, wt, y, bias=bias, chunk_size=3),
                          wpo_weights(h @ wt.T + bias, y))


def test_ld_sequence_logprobs_transcription() -> None:
    g = torch.Generator().manual_seed(5)
    tc, tr = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    mc = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    mr = torch.tensor([[0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    for alpha in (0.0, 0.3, 1.0):
        c, r = ld_sequence_logprobs(tc, tr, mc, mr, alpha)
        for i in range(3):
            vals_c, vals_r = tc[i][mc[i]].tolist(), tr[i][mr[i]].tolist()
            k = min(len(vals_c), len(vals_r))
            assert math.isclose(float(c[i]), sum(vals_c[:k]) + alpha * sum(vals_c[k:]), abs_tol=1e-5)
            assert math.isclose(float(r[i]), sum(vals_r[:k]) + alpha * sum(vals_r[k:]), abs_tol=1e-5)


# ---------------------------------------------------------------------------- modules and registry


def test_modules_and_registry() -> None:
    cols = [torch.tensor(c, dtype=torch.float64) for c in zip(*CASES)]
    m = PreferenceLoss("robust", beta=0.3, label_smoothing=0.1)
    assert torch.equal(m(*cols).loss, preference_loss(*cols, loss_type="robust", beta=0.3,
                                                      label_smoothing=0.1).loss)
    assert "robust" in repr(m)
    c, r = cols[0], cols[1]
    assert torch.equal(SimPOLoss(beta=1.0)(c, r).loss, simpo_loss(c, r, beta=1.0).loss)
    assert torch.equal(ORPOLoss(beta=0.5)(c, r).loss, orpo_loss(c, r, beta=0.5).loss)
    assert set(LOSS_TYPES) <= set(PREFERENCE_LOSSES)
    assert {"f_dpo_forward_kl", "f_dpo_js_divergence", "f_dpo_alpha_divergence", "simpo", "orpo"} <= \
        set(PREFERENCE_LOSSES)
    n = torch.ones(4)
    for name, meth in PREFERENCE_LOSSES.items():
        if name in ("simpo", "orpo"):
            out = meth.fn(c, r, **meth.params)
        else:
            out = meth.fn(*cols, chosen_lengths=n, rejected_lengths=n, **meth.params)
        assert torch.isfinite(out.loss), name
        assert meth.reference


# ---------------------------------------------------------------------------- errors


def _x(n: int = 3, v: float = -1.0) -> torch.Tensor:
    return torch.full((n,), v)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"beta": 0.0}, "beta"),
    ({"beta": -1.0}, "beta"),
    ({"beta": float("nan")}, "beta"),
    ({"loss_type": "dpo"}, "loss_type"),
    ({"loss_type": "bco_pair", "f_divergence": "forward_kl"}, "f-divergence"),
    ({"loss_type": "hdpo", "f_divergence": "js_divergence"}, "f-divergence"),
    ({"f_divergence": "kl"}, "f_divergence"),
    ({"loss_type": "hinge", "label_smoothing": 0.1}, "label_smoothing"),
    ({"loss_type": "exo_pair"}, "label_smoothing"),
    ({"loss_type": "robust", "label_smoothing": 0.5}, "label_smoothing"),
    ({"hdpo_alpha": 0.5}, "hdpo_alpha"),
    ({"loss_type": "hdpo", "hdpo_alpha": 0.0}, "hdpo_alpha"),
    ({"loss_type": "ipo"}, "chosen_lengths"),
    ({"loss_type": "aot", "weights": torch.ones(3)}, "weights"),
    ({"weights": -torch.ones(3)}, "weights"),
    ({"loss_type": ["sigmoid", "hinge"], "loss_weights": [1.0]}, "loss_weights"),
    ({"loss_type": []}, "loss_type"),
    ({"reduction": "avg"}, "reduction"),
])
def test_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        preference_loss(_x(), _x(), _x(), _x(), **kwargs)


def test_bad_tensors() -> None:
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        preference_loss(_x(), _x(), _x(), _x(4))
    with pytest.raises(ValueError, match="policy_rejected_logps must be finite"):
        preference_loss(_x(), torch.tensor([-1.0, float("nan"), -1.0]), _x(), _x())
    with pytest.raises(TypeError, match="policy_chosen_logps"):
        preference_loss([-1.0], _x(), _x(), _x())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ref_chosen_logps"):
        preference_loss(_x(), _x(), torch.ones(3, dtype=torch.long), _x())
    with pytest.raises(ValueError, match="batch axis"):
        preference_loss(torch.tensor(-1.0), torch.tensor(-1.0), torch.tensor(-1.0), torch.tensor(-1.0))
    with pytest.raises(ValueError, match="chosen_lengths"):
        preference_loss(_x(), _x(), _x(), _x(), loss_type="ipo", chosen_lengths=torch.ones(2),
                        rejected_lengths=torch.ones(3))
    with pytest.raises(ValueError, match="rejected_logps"):
        simpo_loss(_x(), _x(2))
    with pytest.raises(ValueError, match="ORPO"):
        orpo_loss(_x(v=0.0), _x())
    with pytest.raises(ValueError, match="beta"):
        PreferenceLoss(beta=0)
    with pytest.raises(ValueError, match="alpha"):
        ld_sequence_logprobs(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool),
                             torch.ones(1, 2, dtype=torch.bool), 1.5)
    with pytest.raises(TypeError, match="mask"):
        sequence_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="target"):
        sequence_logprobs(torch.zeros(1, 2, 3), torch.full((1, 2), 5))
