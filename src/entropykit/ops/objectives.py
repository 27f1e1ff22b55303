"""Fused (hidden states -> loss) forms of two objectives of ``entropykit.losses``, without the N x V logits.

Both are built on the chunked kernels of :mod:`entropykit.ops.linear`, so memory stays O(chunk x V)
plus O(N x D):

- :func:`linear_mixce` -- MixCE (Zhang et al., ACL 2023) = a per-token reweighting of cross-entropy
  by the constant eta + (1 - eta) p_y, so it is ``linear_cross_entropy(reduction="none")`` (whose
  backward recomputes the logits chunk by chunk) times that weight;
- :func:`linear_sparse_kd` -- sparse-logit KD (Anshumann et al., ACL 2025) from cached (ids, weights):
  ``-sum_k w_k log p(i_k) = (sum_k w_k) lse(z) - sum_k w_k z_{i_k}``; lse comes from
  ``linear_token_stats`` (chunked, differentiable) and the gathered logits from one sparse (N x V,
  K nonzeros a row) times dense (V x D) product, never a dense N x V block.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropykit._validate import (
    check_class_index,
    check_int,
    check_positive,
    check_real,
    check_reduction,
    check_tensor,
    reduce,
)
from entropykit.ops.linear import _check_head, linear_cross_entropy, linear_token_stats

__all__ = ["linear_mixce", "linear_sparse_kd"]


def linear_mixce(hidden: Tensor, weight: Tensor, target: Tensor, *, mixing: float = 0.5,
                 bias: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                 chunk_size: int | None = None) -> Tensor:
    r"""MixCE of ``hidden @ weight.T + bias`` against ``target`` without the N x V logits.

    Per token, with q = softmax(z)_y and sg = stop-gradient (Zhang et al., ACL 2023; see
    ``entropykit.losses.mixce_loss``, which this equals up to rounding):

    .. math:: L = \bigl(\eta + (1-\eta)\,\mathrm{sg}[q]\bigr)\,(-\log q)

    Args: as ``linear_cross_entropy``; ``mixing`` = eta in [0, 1] (1 = cross-entropy).

    Example:
        >>> h, w = torch.randn(6, 4, dtype=torch.float64), torch.randn(11, 4, dtype=torch.float64)
        >>> y = torch.tensor([1, 0, 10, -100, 3, 3])
        >>> z = h @ w.T
        >>> nll = torch.nn.functional.cross_entropy(z, y, reduction="none")
        >>> ref = ((0.3 + 0.7 * torch.exp(-nll)) * nll).sum() / 5
        >>> bool(torch.allclose(linear_mixce(h, w, y, mixing=0.3), ref))
        True
    """
    eta = check_real(mixing, "mixing", 0.0, 1.0)
    check_reduction(reduction)
    nll = linear_cross_entropy(hidden, weight, target, bias=bias, ignore_index=ignore_index,
                               reduction="none", chunk_size=chunk_size)
    assert isinstance(nll, Tensor)
    valid = target != ignore_index
    w = eta + (1.0 - eta) * torch.exp(-nll.detach())
    return reduce(w * nll, reduction, valid)


def linear_sparse_kd(hidden: Tensor, weight: Tensor, teacher_ids: Tensor, teacher_weights: Tensor, *,
                     bias: Tensor | None = None, temperature: float = 1.0, target: Tensor | None = None,
                     ignore_index: int = -100, reduction: str = "mean",
                     chunk_size: int | None = None) -> Tensor:
    r"""Sparse-logit KD :math:`-\sum_k w_k \log p_S(i_k)`, p_S = softmax((h W^T + b) / T), from the head.

    Equals ``entropykit.losses.sparse_kd_loss(F.linear(hidden, weight, bias), ...)`` up to rounding
    (Anshumann et al., "Sparse Logit Sampling", ACL 2025); ``teacher_ids`` / ``teacher_weights``
    (..., K) as there (ids outside [0, V) raise: mismatched vocabularies). Gradients flow to
    ``hidden``, ``weight`` and ``bias``. ``reduction`` ``"mean"`` averages over positions whose
    ``target`` is not ``ignore_index`` (all when ``target`` is None).

    Example:
        >>> h, w = torch.randn(5, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
        >>> ids, tw = torch.randint(0, 7, (5, 2)), torch.rand(5, 2, dtype=torch.float64)
        >>> ref = -(tw * torch.log_softmax(h @ w.T, -1).gather(1, ids)).sum(1).mean()
        >>> bool(torch.allclose(linear_sparse_kd(h, w, ids, tw), ref))
        True
    """
    _check_head(hidden, weight, bias)
    v, d = weight.shape
    lead = tuple(hidden.shape[:-1])
    check_tensor(teacher_ids, "teacher_ids")
    check_tensor(teacher_weights, "teacher_weights", floating=True)
    if teacher_ids.dtype.is_floating_point or teacher_ids.dtype == torch.bool:
        raise TypeError(f"teacher_ids must be an integer tensor, got {teacher_ids.dtype}")
    if tuple(teacher_ids.shape[:-1]) != lead or teacher_ids.dim() != len(lead) + 1:
        raise ValueError(f"teacher_ids must have shape {(*lead, 'K')}, got {tuple(teacher_ids.shape)}")
    if teacher_weights.shape != teacher_ids.shape:
        raise ValueError(f"teacher_weights must have the shape of teacher_ids {tuple(teacher_ids.shape)}, "
                         f"got {tuple(teacher_weights.shape)}")
    if teacher_ids.shape[-1] < 1:
        raise ValueError(f"teacher_ids must have K >= 1 slots on the last axis, "
                         f"got {tuple(teacher_ids.shape)}")
    if teacher_ids.numel():
        lo, hi = int(teacher_ids.min()), int(teacher_ids.max())
        if lo < 0 or hi >= v:
            raise ValueError(f"teacher_ids must be token ids of the student's vocabulary [0, {v}), got "
                             f"{hi if hi >= v else lo}: the teacher and student vocabularies differ")
        tw = teacher_weights.detach()
        if not bool(torch.isfinite(tw).all()) or bool((tw < 0).any()):
            raise ValueError("teacher_weights must be finite and >= 0")
    temp = check_positive(temperature, "temperature")
    check_reduction(reduction)
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", 1)
    k = teacher_ids.shape[-1]
    h2 = hidden.reshape(-1, d)
    ids2 = teacher_ids.reshape(-1, k).long()
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    w2 = teacher_weights.reshape(-1, k).detach().to(acc)
    n = h2.shape[0]
    valid = None
    if target is not None:
        y = check_class_index(target, lead, v, ignore_index,
                              lead_what="the shape of hidden without its last axis")
        valid = (y != ignore_index).reshape(-1)
        if not bool(valid.all()):
            h2, ids2, w2 = h2[valid], ids2[valid], w2[valid]
    m = h2.shape[0]
    lse = linear_token_stats(h2, weight, ids2[:, 0],
                             bias=bias, temperature=temp, chunk_size=chunk_size).lse
    # sum_k w_k z_{i_k} = <h, sum_k w_k W[i_k]> + sum_k w_k b[i_k]: a sparse (m x V) @ dense (V x D) product
    rows = torch.arange(m, device=h2.device).repeat_interleave(k)
    s = torch.sparse_coo_tensor(torch.stack([rows, ids2.reshape(-1)]), w2.reshape(-1), (m, v),
                                check_invariants=False).coalesce()
    u = torch.sparse.mm(s, weight.to(acc))
    zw = (h2.to(acc) * u).sum(-1)
    if bias is not None:
        zw = zw + (w2 * bias.to(acc)[ids2]).sum(-1)
    per = w2.sum(-1) * lse - zw / temp
    if valid is not None:
        per = torch.zeros(n, dtype=per.dtype, device=per.device).masked_scatter(valid, per)
        return reduce(per.view(lead), reduction, valid.view(lead))
    return reduce(per.view(lead), reduction)
