"""Fused MixCE and sparse-logit KD equal the logits path (loss and grads) and keep no N x V tensor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from entropykit.losses import mixce_loss, sample_teacher, sparse_kd_loss
from entropykit.ops import linear_mixce, linear_sparse_kd

D = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _head(n: int, d: int, v: int, seed: int, dtype: torch.dtype = D, bias: bool = True):
    g = _gen(seed)
    h = torch.randn(n, d, dtype=dtype, generator=g, requires_grad=True)
    w = torch.randn(v, d, dtype=dtype, generator=g).mul_(0.5).requires_grad_(True)
    b = torch.randn(v, dtype=dtype, generator=g).requires_grad_(True) if bias else None
    return h, w, b


def _grads(loss: torch.Tensor, *xs: torch.Tensor | None) -> list[torch.Tensor]:
    ts = [x for x in xs if x is not None]
    return list(torch.autograd.grad(loss, ts))


def _saved_bytes(fn) -> int:
    """Bytes the autograd graph keeps for backward while building ``fn()``'s graph."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if t.is_sparse:  # indices + values, not the dense shape
            total += t._nnz() * (t.sparse_dim() * 8 + t.element_size())
        else:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return total


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_linear_mixce_equals_logits_path(reduction: str, eta: float) -> None:
    h, w, b = _head(13, 5, 17, 0)
    y = torch.randint(0, 17, (13,), generator=_gen(1))
    y[[2, 7]] = -100
    fused = linear_mixce(h, w, y, mixing=eta, bias=b, reduction=reduction, chunk_size=4)
    ref = mixce_loss(F.linear(h, w, b), y, mixing=eta, reduction=reduction)
    assert torch.allclose(fused, ref, rtol=1e-10, atol=1e-12)
    gf = _grads(fused.sum(), h, w, b)
    gr = _grads(ref.sum(), h, w, b)
    for a, c in zip(gf, gr, strict=True):
        assert torch.allclose(a, c, rtol=1e-9, atol=1e-12)


def test_linear_mixce_float32_batched_and_errors() -> None:
    h, w, _ = _head(2 * 6, 8, 33, 2, torch.float32, bias=False)
    h3 = h.detach().view(2, 6, 8).requires_grad_(True)
    y = torch.randint(0, 33, (2, 6), generator=_gen(3))
    fused = linear_mixce(h3, w, y, mixing=0.3)
    ref = mixce_loss(h3 @ w.T, y, mixing=0.3)
    assert torch.allclose(fused, ref, rtol=1e-5)
    with pytest.raises(ValueError, match="mixing"):
        linear_mixce(h3, w, y, mixing=1.2)
    with pytest.raises(ValueError, match="target"):
        linear_mixce(h3, w, y + 40)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_linear_sparse_kd_equals_logits_path(reduction: str, temperature: float) -> None:
    h, w, b = _head(11, 6, 19, 4)
    g = _gen(5)
    ids, tw = sample_teacher(torch.randn(11, 19, dtype=D, generator=g), 5, generator=g,
                             proposal_temperature=1.5)
    ids[0, :2] = 3  # a duplicated id within a row sums
    y = torch.randint(0, 19, (11,), generator=g)
    y[4] = -100
    fused = linear_sparse_kd(h, w, ids, tw, bias=b, temperature=temperature, target=y,
                             reduction=reduction, chunk_size=3)
    ref = sparse_kd_loss(F.linear(h, w, b), ids, tw, temperature=temperature, target=y, reduction=reduction)
    assert torch.allclose(fused, ref, rtol=1e-10, atol=1e-12)
    gf = _grads(fused.sum(), h, w, b)
    gr = _grads(ref.sum(), h, w, b)
    for a, c in zip(gf, gr, strict=True):
        assert torch.allclose(a, c, rtol=1e-9, atol=1e-12)


def test_linear_sparse_kd_gradcheck_and_errors() -> None:
    h, w, b = _head(4, 3, 7, 6)
    ids = torch.randint(0, 7, (4, 2), generator=_gen(7))
    tw = torch.rand(4, 2, dtype=D, generator=_gen(8))
    assert torch.autograd.gradcheck(lambda a, c, e: linear_sparse_kd(a, c, ids, tw, bias=e), (h, w, b))
    with pytest.raises(ValueError, match="vocabularies differ"):
        linear_sparse_kd(h, w, ids + 7, tw)
    with pytest.raises(ValueError, match="teacher_weights"):
        linear_sparse_kd(h, w, ids, -tw)
    with pytest.raises(ValueError, match="teacher_ids"):
        linear_sparse_kd(h, w, ids[:3], tw[:3])


def test_fused_paths_keep_no_logits_for_backward() -> None:
    """The logits path saves >= N x V values for backward; the fused paths save O(N D + V D)."""
    n, d, v = 64, 8, 512
    h, w, _ = _head(n, d, v, 9, torch.float32, bias=False)
    y = torch.randint(0, v, (n,), generator=_gen(10))
    ids, tw = sample_teacher(torch.randn(n, v, generator=_gen(11)), 8, generator=_gen(12))
    logits_bytes = n * v * 4
    ref_m = _saved_bytes(lambda: mixce_loss(h @ w.T, y, mixing=0.5))
    ref_s = _saved_bytes(lambda: sparse_kd_loss(h @ w.T, ids, tw))
    fused_m = _saved_bytes(lambda: linear_mixce(h, w, y, mixing=0.5))
    fused_s = _saved_bytes(lambda: linear_sparse_kd(h, w, ids, tw))
    assert ref_m >= logits_bytes and ref_s >= logits_bytes
    assert fused_m < logits_bytes / 2 and fused_s < logits_bytes / 2, (fused_m, fused_s, logits_bytes)


def test_all_ignored_rows_give_zero_loss_and_grad_and_k_zero_raises() -> None:
    h, w, _ = _head(4, 3, 7, 13, bias=False)
    ids = torch.randint(0, 7, (4, 2), generator=_gen(14))
    tw = torch.rand(4, 2, dtype=D, generator=_gen(15))
    y = torch.full((4,), -100)
    for loss in (linear_sparse_kd(h, w, ids, tw, target=y), linear_mixce(h, w, y)):
        (gh,) = torch.autograd.grad(loss, h)
        assert float(loss.detach()) == 0.0 and float(gh.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="K >= 1"):
        linear_sparse_kd(h, w, ids[:, :0], tw[:, :0])
    with pytest.raises(ValueError, match="K >= 1"):
        sparse_kd_loss(h @ w.T, ids[:, :0], tw[:, :0])
