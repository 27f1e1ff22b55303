"""Sparse-logit KD (Anshumann et al. 2025): the sampled estimator is unbiased, top-k is not."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.losses import SparseKDLoss, sample_teacher, sparse_kd_loss, topk_teacher

D = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dense(ids: torch.Tensor, w: torch.Tensor, v: int) -> torch.Tensor:
    return torch.zeros(*ids.shape[:-1], v, dtype=w.dtype).scatter_add_(-1, ids.long(), w)


def test_full_support_equals_full_kd_loss_and_gradient() -> None:
    g = _gen(0)
    zs = torch.randn(4, 6, dtype=D, generator=g, requires_grad=True)
    zt = torch.randn(4, 6, dtype=D, generator=g)
    pt = torch.softmax(zt, -1)
    ids = torch.arange(6).expand(4, 6)
    loss = sparse_kd_loss(zs, ids, pt)
    ce = -(pt * torch.log_softmax(zs, -1)).sum(-1).mean()
    assert float(loss.detach()) == pytest.approx(float(ce.detach()), rel=1e-12)
    (gs,) = torch.autograd.grad(loss, zs)
    zs2 = zs.detach().clone().requires_grad_(True)
    kl = torch.nn.functional.kl_div(torch.log_softmax(zs2, -1), pt, reduction="batchmean")
    (gk,) = torch.autograd.grad(kl, zs2)
    assert torch.allclose(gs, gk)


def test_naive_float64_transcription_with_duplicates_and_temperature() -> None:
    g = _gen(1)
    z = torch.randn(3, 5, dtype=D, generator=g)
    ids = torch.tensor([[0, 0, 4], [1, 2, 3], [4, 4, 4]])
    w = torch.rand(3, 3, dtype=D, generator=g)
    expected = 0.0
    for i in range(3):
        lse = math.log(sum(math.exp(float(z[i, j]) / 2.0) for j in range(5)))
        expected += -sum(float(w[i, k]) * (float(z[i, ids[i, k]]) / 2.0 - lse) for k in range(3))
    assert float(sparse_kd_loss(z, ids, w, temperature=2.0, reduction="sum")) == pytest.approx(expected)


def test_gradcheck_mask_and_module() -> None:
    g = _gen(2)
    z = torch.randn(3, 4, dtype=D, generator=g, requires_grad=True)
    ids = torch.randint(0, 4, (3, 2), generator=g)
    w = torch.rand(3, 2, dtype=D, generator=g)
    y = torch.tensor([0, -100, 3])
    assert torch.autograd.gradcheck(lambda x: sparse_kd_loss(x, ids, w, target=y), (z,))
    per = sparse_kd_loss(z, ids, w, target=y, reduction="none")
    assert float(per[1].detach()) == 0.0
    assert torch.allclose(sparse_kd_loss(z, ids, w, target=y), per.sum() / 2)
    assert torch.allclose(SparseKDLoss(temperature=1.0)(z, (ids, w), labels=y), per.sum() / 2)


def test_sampled_weights_are_unbiased_for_any_proposal_temperature() -> None:
    g = _gen(3)
    zt = torch.randn(1, 8, dtype=D, generator=g) * 1.5
    p = torch.softmax(zt, -1)[0]
    m = 20000
    for t in (1.0, 2.0):
        ids, w = sample_teacher(zt.expand(m, 8), 4, generator=g, proposal_temperature=t)
        mean = _dense(ids, w, 8).mean(0)
        se = _dense(ids, w, 8).std(0) / math.sqrt(m)
        assert bool(((mean - p).abs() <= 5 * se + 1e-12).all()), (t, mean, p)


def test_expected_gradient_sampled_equals_full_kd_topk_is_biased() -> None:
    """Average the student-logit gradient over many cached draws: sampling -> p_S - p_T; top-k is off."""
    g = _gen(4)
    v, m, k = 10, 20000, 3
    zs = torch.randn(1, v, dtype=D, generator=g)
    zt = torch.randn(1, v, dtype=D, generator=g) * 1.2
    full = torch.softmax(zs, -1) - torch.softmax(zt, -1)  # grad of KL(p_T || p_S) w.r.t. z_S
    rows = zs.expand(m, v).clone().requires_grad_(True)
    ids, w = sample_teacher(zt.expand(m, v), k, generator=g)
    sparse_kd_loss(rows, ids, w, reduction="sum").backward()
    grads = rows.grad
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(m)
    assert bool(((mean - full[0]).abs() <= 5 * se + 1e-12).all())
    # top-k (renormalised or not) has a deterministic gradient far from full KD's
    for normalize in (True, False):
        r = zs.clone().requires_grad_(True)
        ti, tw = topk_teacher(zt, k, normalize=normalize)
        sparse_kd_loss(r, ti, tw, reduction="sum").backward()
        bias = (r.grad[0] - full[0]).abs().max()
        assert float(bias) > 20 * float(se.max()), (normalize, float(bias), float(se.max()))


def test_vocab_mismatch_and_bad_weights_raise() -> None:
    z = torch.randn(2, 5)
    with pytest.raises(ValueError, match="vocabularies differ"):
        sparse_kd_loss(z, torch.tensor([[0, 5], [1, 2]]), torch.ones(2, 2))
    with pytest.raises(ValueError, match="teacher_weights"):
        sparse_kd_loss(z, torch.tensor([[0, 1], [1, 2]]), torch.tensor([[1.0, -0.5], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="teacher_weights"):
        sparse_kd_loss(z, torch.tensor([[0, 1], [1, 2]]), torch.tensor([[math.nan, 0.5], [1.0, 0.0]]))
    with pytest.raises(TypeError, match="teacher_ids"):
        sparse_kd_loss(z, torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="teacher_ids"):
        sparse_kd_loss(z, torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2))
    with pytest.raises(ValueError, match="k"):
        topk_teacher(z, 6)


def test_neg_inf_teacher_and_student_entries() -> None:
    zt = torch.tensor([[0.0, 1.0, -math.inf, 2.0]])
    ids, w = sample_teacher(zt, 16, generator=_gen(5))
    assert float(w[ids == 2].sum()) == 0.0
    zs = torch.tensor([[0.5, 0.0, -math.inf, 1.0]])  # -inf where the teacher has no mass
    assert torch.isfinite(sparse_kd_loss(zs, ids, w))
    ti, tw = topk_teacher(zt, 2)
    assert torch.isfinite(sparse_kd_loss(zs, ti, tw))
    # a student that rules out a token the teacher keeps pays an infinite cross-entropy
    assert float(sparse_kd_loss(torch.tensor([[0.5, -math.inf, 0.0, 1.0]]), ti, tw)) == math.inf


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 16), st.integers(0, 2**31 - 1))
def test_property_sample_weights(v: int, k: int, seed: int) -> None:
    """T=1: weights are counts / K (multiples of 1/K summing to 1), non-zero ids are distinct."""
    g = _gen(seed)
    zt = torch.randn(3, v, dtype=D, generator=g)
    ids, w = sample_teacher(zt, k, generator=g)
    assert ids.shape == (3, k) and bool((w >= 0).all())
    assert torch.allclose(w.sum(-1), torch.ones(3, dtype=D))
    assert torch.allclose(w * k, (w * k).round())
    for r in range(3):
        nz = ids[r][w[r] > 0].tolist()
        assert len(nz) == len(set(nz))
