"""Sparse-logit knowledge distillation: the teacher's distribution stored as K (token, weight) pairs.

Anshumann et al., "Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs", ACL 2025
(arXiv:2503.16870). Caching a teacher's top-K probabilities is biased: the student is pulled towards
a truncated (renormalised) teacher and its tail is never trained. *Random sampling* KD draws K tokens
from a proposal q (the teacher at ``proposal_temperature``) and keeps importance weights
w_i = (c_i / K) p_i / q_i (c_i: how often token i was drawn), an unbiased estimate of the teacher
probability p_i: E[w_i] = p_i. The student's sparse cross-entropy

    L = -sum_k w_k log p_S(i_k)

then has the logit gradient (sum_k w_k) p_S - w, whose expectation is p_S - p_T: the gradient of full
KD, KL(p_T || p_S). With ``proposal_temperature = 1`` the weights are counts / K and sum to 1 exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropykit._validate import check_int, check_positive, check_reduction, check_tensor, reduce
from entropykit.losses._common import FunctionalLoss, class_target, float_logits

__all__ = ["SPARSE_KD_METHODS", "SparseKDLoss", "check_sparse_targets", "sample_teacher", "sparse_kd_loss",
           "topk_teacher"]

#: How a teacher distribution is sparsified: importance sampling (unbiased) or top-k (the biased baseline).
SPARSE_KD_METHODS = ("sample", "topk")


@torch.no_grad()
def sample_teacher(teacher_logits: Tensor, k: int, *, generator: torch.Generator | None = None,
                   proposal_temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    r"""K importance samples of the teacher distribution: (ids, weights), each (..., K).

    Draws K tokens with replacement from q = softmax(z_T / t) (t = ``proposal_temperature``) and
    returns the distinct drawn tokens with weights :math:`w_i = (c_i / K)\, p_i / q_i`
    (p = softmax(z_T)): an unbiased estimate of p, E[w_i] = p_i for every token (Anshumann et al. 2025,
    random-sampling KD). Slots beyond the distinct tokens hold weight 0 (their ids are arbitrary valid
    tokens). Uses ``generator`` for the draws.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> ids, w = sample_teacher(torch.randn(3, 10), 8, generator=g)
        >>> ids.shape, bool(torch.allclose(w.sum(-1), torch.ones(3)))
        (torch.Size([3, 8]), True)
    """
    zt = float_logits(teacher_logits, "teacher_logits")
    kk = check_int(k, "k", 1)
    t = check_positive(proposal_temperature, "proposal_temperature")
    v = zt.shape[-1]
    lead = zt.shape[:-1]
    z2 = zt.reshape(-1, v)
    logp = torch.log_softmax(z2, -1)
    logq = logp if t == 1.0 else torch.log_softmax(z2 / t, -1)
    draws = torch.multinomial(logq.exp(), kk, replacement=True, generator=generator)  # (N, K)
    counts = torch.zeros_like(z2).scatter_add_(1, draws, torch.ones_like(draws, dtype=z2.dtype))
    kslots = min(kk, v)
    c, ids = counts.topk(kslots, dim=1)  # distinct drawn tokens first (count > 0)
    ratio = (logp.gather(1, ids) - logq.gather(1, ids)).exp()
    w = torch.where(c > 0, c / kk * ratio, 0.0)
    if kslots < kk:  # more slots than vocabulary: pad with weight-0 slots
        pad = kk - kslots
        ids = torch.cat([ids, ids[:, :1].expand(-1, pad)], 1)
        w = torch.cat([w, w.new_zeros(w.shape[0], pad)], 1)
    return ids.reshape(*lead, kk), w.reshape(*lead, kk)


@torch.no_grad()
def topk_teacher(teacher_logits: Tensor, k: int, *, normalize: bool = True) -> tuple[Tensor, Tensor]:
    """The top-k baseline: the K most probable teacher tokens and their probabilities, (..., K) each,
    renormalised to sum to 1 when ``normalize`` (the common practice; biased either way, see the
    module docstring).

    Example:
        >>> ids, w = topk_teacher(torch.tensor([[0.0, 2.0, 1.0]]), 2)
        >>> ids.tolist(), bool(torch.allclose(w.sum(), torch.tensor(1.0)))
        ([[1, 2]], True)
    """
    zt = float_logits(teacher_logits, "teacher_logits")
    kk = check_int(k, "k", 1, zt.shape[-1])
    lp, ids = torch.log_softmax(zt, -1).topk(kk, dim=-1)
    w = torch.softmax(lp, -1) if normalize else lp.exp()
    return ids, w


def check_sparse_targets(ids: Tensor, weights: Tensor, lead: tuple[int, ...], vocab_size: int,
                         ids_name: str = "teacher_ids", weights_name: str = "teacher_weights") -> None:
    """Validate sparse teacher targets against a student with ``vocab_size`` classes and leading shape
    ``lead``: ids (..., K) integer in [0, V), weights (..., K) finite and >= 0.

    >>> check_sparse_targets(torch.tensor([[0, 300]]), torch.ones(1, 2), (1,), 257)
    Traceback (most recent call last):
    ...
    ValueError: teacher_ids must be token ids of the student's vocabulary [0, 257), got 300: the teacher \
and student vocabularies differ
    """
    check_tensor(ids, ids_name)
    check_tensor(weights, weights_name, floating=True)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise TypeError(f"{ids_name} must be an integer tensor, got {ids.dtype}")
    if ids.dim() != len(lead) + 1 or tuple(ids.shape[:-1]) != tuple(lead):
        raise ValueError(f"{ids_name} must have shape {(*lead, 'K')} (the logits' shape without the class "
                         f"axis, then K), got {tuple(ids.shape)}")
    if weights.shape != ids.shape:
        raise ValueError(f"{weights_name} must have the shape of {ids_name} {tuple(ids.shape)}, "
                         f"got {tuple(weights.shape)}")
    if ids.shape[-1] < 1:
        raise ValueError(f"{ids_name} must have K >= 1 slots on the last axis, got {tuple(ids.shape)}")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = hi if hi >= vocab_size else lo
            raise ValueError(f"{ids_name} must be token ids of the student's vocabulary [0, {vocab_size}), "
                             f"got {bad}: the teacher and student vocabularies differ")
        wd = weights.detach()
        if not bool(torch.isfinite(wd).all()) or bool((wd < 0).any()):
            raise ValueError(f"{weights_name} must be finite and >= 0, got min {float(wd.min())}, "
                             f"max {float(wd.max())}")


def sparse_kd_loss(student_logits: Tensor, teacher_ids: Tensor, teacher_weights: Tensor, *,
                   temperature: float = 1.0, target: Tensor | None = None, ignore_index: int = -100,
                   reduction: str = "mean") -> Tensor:
    r"""Distillation from sparse teacher targets: :math:`L = -\sum_k w_k \log p_S(i_k)`, p_S = softmax(z/T).

    ``teacher_ids`` / ``teacher_weights`` (..., K) come from :func:`sample_teacher` (unbiased:
    E[grad] = grad of KL(p_T || p_S)), :func:`topk_teacher` (biased baseline) or a
    :class:`~entropykit.losses.teacher_cache.TeacherCache`. Weight-0 slots contribute nothing.
    The loss equals KL(p_T || p_S) + H(p_T) in expectation (a cross-entropy; the teacher-entropy
    constant does not change the gradient). Ids outside the student's vocabulary raise ``ValueError``
    (mismatched vocabularies). ``target`` / ``ignore_index`` mask positions as in ``distill_loss``.
    Units: nats.

    Example:
        >>> z, t = torch.randn(4, 6), torch.randn(4, 6)
        >>> ids = torch.arange(6).expand(4, 6)
        >>> full = -(torch.softmax(t, -1) * torch.log_softmax(z, -1)).sum(-1).mean()
        >>> bool(torch.allclose(sparse_kd_loss(z, ids, torch.softmax(t, -1)), full))
        True
    """
    z = float_logits(student_logits, "student_logits")
    check_sparse_targets(teacher_ids, teacher_weights, tuple(z.shape[:-1]), z.shape[-1])
    temp = check_positive(temperature, "temperature")
    check_reduction(reduction)
    valid = None
    if target is not None:
        valid = class_target(target, z, ignore_index) != ignore_index
    w = teacher_weights.detach().to(z.dtype)
    lp = torch.log_softmax(z / temp, -1).gather(-1, teacher_ids.long())
    per = -torch.where(w > 0, w * lp, 0.0).sum(-1)
    return reduce(per, reduction, valid)


class SparseKDLoss(FunctionalLoss):
    """Module form of :func:`sparse_kd_loss`: ``SparseKDLoss()(student_logits, (ids, weights))``."""

    fn = staticmethod(sparse_kd_loss)

    def forward(self, input: Tensor, target: tuple[Tensor, Tensor],  # type: ignore[override]
                labels: Tensor | None = None) -> Tensor:
        ids, w = target
        return sparse_kd_loss(input, ids, w, target=labels, **self.options())
