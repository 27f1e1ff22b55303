"""Training objectives from the papers, on logits: MixCE, EMO, PLD, AnyLoss and the edit-invariant
sequence loss (EISL). Sparse-logit distillation lives in :mod:`entropykit.losses.sparse_kd`.

Conventions of ``entropykit.losses``: nats, classes on the last axis, ``ignore_index`` / ``reduction``
as in PyTorch (``mean`` over the positions that count, 0 when none, see ``_validate.reduce``); inputs
are upcast to float32 (float64 stays float64); ``-inf`` logits (masked vocabulary entries) work.
Fused forms that never build the N x V logits: ``entropykit.ops.linear_mixce`` and
``entropykit.ops.linear_sparse_kd``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from entropykit._validate import (
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_real,
    check_reduction,
    check_same_shape,
    check_tensor,
    reduce,
)
from entropykit.losses._common import FunctionalLoss, class_target, float_logits

__all__ = [
    "ANYLOSS_METRICS",
    "EMO_MODES",
    "AnyLoss",
    "EISLoss",
    "EMOLoss",
    "MixCELoss",
    "PLDLoss",
    "anyloss",
    "eisl_loss",
    "emo_loss",
    "mixce_loss",
    "pld_loss",
]


def _nll(z: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Per-position -log softmax(z)[y] (0 at ignored positions) and the mask of counted positions."""
    y = class_target(target, z, ignore_index)
    valid = y != ignore_index
    safe = torch.where(valid, y, torch.zeros_like(y))
    nll = -torch.log_softmax(z, -1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, nll, torch.zeros_like(nll)), valid


# --------------------------------------------------------------------------------------------------
# MixCE
# --------------------------------------------------------------------------------------------------


def mixce_loss(logits: Tensor, target: Tensor, *, mixing: float = 0.5, ignore_index: int = -100,
               reduction: str = "mean") -> Tensor:
    r"""MixCE: a mixture of forward and reverse cross-entropy, in the paper's token-level approximation.

    MixCE = eta CE(P, Q) + (1 - eta) CE(Q, P) for data P and model Q; the reverse term's gradient is
    approximated by self-reinforcement on the data token (Zhang et al., "MixCE: Training
    Autoregressive Language Models by Mixing Forward and Reverse Cross-Entropies", ACL 2023, eq. 7 and
    the authors' code ``bloomberg/MixCE-acl2023``, ``gpt2.py``). Per token with q = softmax(z)_y:

    .. math:: L = \bigl(\eta + (1-\eta)\,\mathrm{sg}[q]\bigr)\,(-\log q)

    where sg is stop-gradient (the weight is a constant, as ``torch.no_grad()`` in the paper's code).
    ``mixing`` = eta in [0, 1]; eta = 1 is plain cross-entropy. Units: nats (weighted).

    Example:
        >>> z, y = torch.randn(4, 7), torch.tensor([1, 0, 6, -100])
        >>> ce = torch.nn.functional.cross_entropy(z, y)
        >>> bool(torch.allclose(mixce_loss(z, y, mixing=1.0), ce))
        True
    """
    z = float_logits(logits)
    eta = check_real(mixing, "mixing", 0.0, 1.0)
    check_reduction(reduction)
    nll, valid = _nll(z, target, ignore_index)
    w = eta + (1.0 - eta) * torch.exp(-nll.detach())
    return reduce(w * nll, reduction, valid)


class MixCELoss(FunctionalLoss):
    """Module form of :func:`mixce_loss`: ``MixCELoss(mixing=0.5)(logits, target)``."""

    fn = staticmethod(mixce_loss)


# --------------------------------------------------------------------------------------------------
# EMO
# --------------------------------------------------------------------------------------------------

#: How :func:`emo_loss` combines the EMO term with MLE: the paper code's ``mode=1`` ("mle"),
#: ``mode=2`` ("emo"), or the EMO term alone ("none").
EMO_MODES = ("mle", "emo", "none")


def emo_loss(logits: Tensor, target: Tensor, *, cost_embedding: Tensor | None = None,
             cost: Tensor | None = None, mode: str = "mle", ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    r"""EMO: earth mover's distance between the model's next-token distribution and the data token.

    For a one-hot data distribution at y, the earth mover's distance to Q = softmax(z) with a
    transport cost C is :math:`\mathrm{EMD} = \sum_i Q_i\, C(i, y)` (every unit of mass moves to y).
    Ren et al., "EMO: Earth Mover Distance Optimization for Auto-regressive Language Modeling",
    ICLR 2024, use C(i, j) = 1 - cos(e_i, e_j) over a (frozen) token embedding and train the upper
    bound of the independent coupling, sum_ij Q_i P_j C(i, j) = 1 - (sum_i Q_i e_i)^T (sum_j P_j e_j)
    for unit vectors (their DEMD, code ``DRSY/EMO``, ``emo.py``); it needs no V x V matrix and is tight
    for a one-hot P:

    .. math:: \mathrm{EMO} = 1 - \hat e_y^\top \sum_i Q_i \hat e_i, \qquad \hat e = e / \|e\|_2

    Pass ``cost_embedding`` (V, d) for that form, or a full ``cost`` matrix (V, V), ``cost[i, j]`` =
    cost of moving mass from token i to token j (exactly one of the two; both are constants).
    ``mode`` combines EMO with the MLE term m = -log Q_y as the paper's code does: ``"mle"``
    (``mode=1``): 0.5 (min(sg(m / (EMO + 1e-10)), 3) EMO + m); ``"emo"`` (``mode=2``):
    sg(EMO / (m + 1e-10)) m + EMO; ``"none"``: EMO alone. Units: cost units (nats for the MLE part).

    Example:
        >>> z, y, e = torch.randn(3, 6), torch.tensor([0, 5, 2]), torch.randn(6, 4)
        >>> c = 1 - torch.nn.functional.normalize(e, dim=1) @ torch.nn.functional.normalize(e, dim=1).T
        >>> a = emo_loss(z, y, cost_embedding=e, mode="none")
        >>> bool(torch.allclose(a, emo_loss(z, y, cost=c, mode="none"), atol=1e-6))
        True
    """
    z = float_logits(logits)
    check_choice(mode, EMO_MODES, "mode")
    check_reduction(reduction)
    if (cost_embedding is None) == (cost is None):
        raise ValueError("exactly one of cost_embedding and cost must be given, got "
                         f"{'both' if cost is not None else 'neither'}")
    v = z.shape[-1]
    nll, valid = _nll(z, target, ignore_index)
    y = torch.where(valid, class_target(target, z, ignore_index), 0)
    p = torch.softmax(z, -1)
    if cost_embedding is not None:
        check_tensor(cost_embedding, "cost_embedding", floating=True)
        if cost_embedding.dim() != 2 or cost_embedding.shape[0] != v:
            raise ValueError(f"cost_embedding must have shape (V={v}, d), got {tuple(cost_embedding.shape)}")
        check_finite(cost_embedding.detach(), "cost_embedding")
        e = F.normalize(cost_embedding.detach().to(z.dtype), dim=1)
        emo = 1.0 - ((p @ e) * e[y]).sum(-1)
    else:
        assert cost is not None
        check_tensor(cost, "cost", floating=True)
        if cost.shape != (v, v):
            raise ValueError(f"cost must have shape (V, V) = ({v}, {v}), got {tuple(cost.shape)}")
        check_finite(cost.detach(), "cost")
        ct = cost.detach().to(z.dtype).t()  # ct[j, i] = cost[i, j]
        emo = (torch.where(p > 0, p * ct[y], 0.0)).sum(-1)
    if mode == "mle":
        ratio = torch.clamp((nll / (emo + 1e-10)).detach(), max=3.0)
        loss = 0.5 * (ratio * emo + nll)
    elif mode == "emo":
        loss = (emo / (nll + 1e-10)).detach() * nll + emo
    else:
        loss = emo
    return reduce(loss, reduction, valid)


class EMOLoss(FunctionalLoss):
    """Module form of :func:`emo_loss`; the cost embedding (or matrix) is a buffer:
    ``EMOLoss(cost_embedding=model.wte.weight.detach().clone())(logits, target)``."""

    fn = staticmethod(emo_loss)


# --------------------------------------------------------------------------------------------------
# PLD
# --------------------------------------------------------------------------------------------------


def pld_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None, *,
             temperature: float = 1.0, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    r"""Plackett-Luce distillation: the teacher's confidence-weighted list-wise ranking loss.

    Bassam, Zhu and Bian, "PLD: A Choice-Theoretic List-Wise Knowledge Distillation", NeurIPS 2025
    (arXiv:2506.12542). The "teacher-optimal" permutation pi puts the true label first (when
    ``target`` is given; else the teacher's top class) and the other classes in descending teacher
    logit; with student scores s = z_S / T and teacher weights alpha = softmax(z_T / T):

    .. math:: L = \sum_{k=1}^{V} \alpha_{\pi_k}\Bigl(\log\sum_{j\ge k} e^{s_{\pi_j}} - s_{\pi_k}\Bigr)

    (weighted ListMLE / Plackett-Luce negative log-likelihood; a rank of zero teacher weight adds 0).
    Convex and shift-invariant in s; the teacher side is detached. Units: nats.

    Example:
        >>> s, t = torch.randn(2, 3), torch.randn(2, 3)
        >>> float(pld_loss(s, t)) > 0
        True
    """
    zs = float_logits(student_logits, "student_logits")
    zt = float_logits(teacher_logits, "teacher_logits").detach().to(zs.dtype)
    check_same_shape(zs, zt, "student_logits", "teacher_logits")
    temp = check_positive(temperature, "temperature")
    check_reduction(reduction)
    key = zt.clone()
    valid = None
    if target is not None:
        y = class_target(target, zs, ignore_index)
        valid = y != ignore_index
        key.scatter_(-1, torch.where(valid, y, 0).unsqueeze(-1),
                     torch.where(valid, math.inf, key.gather(-1, torch.where(valid, y, 0).unsqueeze(-1))
                                 .squeeze(-1)).unsqueeze(-1))
    order = torch.argsort(key, dim=-1, descending=True, stable=True)
    s = (zs / temp).gather(-1, order)
    alpha = torch.softmax(zt / temp, -1).gather(-1, order)
    tail = torch.logcumsumexp(s.flip(-1), -1).flip(-1)  # log sum_{j >= k} exp(s_j)
    term = torch.where(alpha > 0, alpha * (tail - s), 0.0)
    return reduce(term.sum(-1), reduction, valid)


class PLDLoss(FunctionalLoss):
    """Module form of :func:`pld_loss`: ``PLDLoss(temperature=1.0)(student_logits, teacher_logits)``;
    pass ``labels=`` at call time for the true-label-first permutation."""

    fn = staticmethod(pld_loss)

    def forward(self, input: Tensor, target: Tensor, labels: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return pld_loss(input, target, labels, **self.options())


# --------------------------------------------------------------------------------------------------
# AnyLoss
# --------------------------------------------------------------------------------------------------

#: The confusion-matrix metrics :func:`anyloss` turns into losses (loss = 1 - metric).
ANYLOSS_METRICS = ("accuracy", "f_beta", "balanced_accuracy")


def anyloss(logits: Tensor, target: Tensor, *, metric: str = "f_beta", beta: float = 1.0,
            amplify: float = 73.0, mask: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    r"""AnyLoss: a confusion-matrix metric made differentiable, as a loss 1 - metric (binary task).

    Han, Moniz and Chawla, "AnyLoss: Transforming Classification Metrics into Loss Functions",
    KDD 2024. With p = sigmoid(logits) and the approximation function
    :math:`A(p) = 1 / (1 + e^{-L (p - 1/2)})` (L = ``amplify``, the paper's 73), the soft confusion
    matrix over the batch (labels y in {0, 1}) is TP = sum y A, FN = sum y (1 - A),
    FP = sum (1 - y) A, TN = sum (1 - y)(1 - A), and

    - ``"f_beta"``: F_beta = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP);
    - ``"balanced_accuracy"``: (TP / (TP + FN) + TN / (TN + FP)) / 2;
    - ``"accuracy"``: (TP + TN) / (TP + TN + FP + FN).

    ``eps`` (ours) is added to each denominator so a batch without positives is defined. A batch-level
    loss (a scalar, no ``reduction``); ``mask`` (bool, like ``logits``) leaves positions out.

    Example:
        >>> z, y = torch.tensor([4.0, -3.0, 2.0, -5.0]), torch.tensor([1, 0, 1, 0])
        >>> float(anyloss(z, y)) < 0.01
        True
    """
    z = float_logits(logits)
    check_choice(metric, ANYLOSS_METRICS, "metric")
    b2 = check_positive(beta, "beta") ** 2
    amp = check_positive(amplify, "amplify")
    e = check_real(eps, "eps", 0.0, finite=True)
    check_tensor(target, "target")
    if target.shape != z.shape:
        raise ValueError(f"target must have the shape of logits {tuple(z.shape)}, got {tuple(target.shape)}")
    if target.dtype == torch.bool:
        target = target.to(z.dtype)
    yt = target.to(z.dtype)
    if not bool(((yt == 0) | (yt == 1)).all()):
        raise ValueError("target must hold binary labels 0 / 1, got other values")
    a = torch.sigmoid(amp * (torch.sigmoid(z) - 0.5))
    if mask is not None:
        from entropykit._validate import check_mask

        m = check_mask(mask, z).to(z.dtype)
        a, yt, neg = a * m, yt * m, (1.0 - yt) * m
    else:
        neg = 1.0 - yt
    tp, fn = (yt * a).sum(), (yt * (1.0 - a)).sum()
    fp, tn = (neg * a).sum(), (neg * (1.0 - a)).sum()
    if metric == "f_beta":
        score = (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp + e)
    elif metric == "balanced_accuracy":
        score = 0.5 * (tp / (tp + fn + e) + tn / (tn + fp + e))
    else:
        score = (tp + tn) / (tp + tn + fp + fn + e)
    return 1.0 - score


class AnyLoss(FunctionalLoss):
    """Module form of :func:`anyloss`: ``AnyLoss(metric="balanced_accuracy")(logits, labels)``."""

    fn = staticmethod(anyloss)


# --------------------------------------------------------------------------------------------------
# edit-invariant sequence loss
# --------------------------------------------------------------------------------------------------


def eisl_loss(logits: Tensor, target: Tensor, *, ngrams: Sequence[int] = (1, 2, 3, 4),
              ngram_weights: Sequence[float] | None = None, tau: float = 1.0,
              generator: torch.Generator | None = None, floor: float = -20.0,
              ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    r"""Edit-invariant sequence loss (EISL): n-gram matching by convolution, robust to shifted targets.

    Liu et al., "Don't Take It Literally: An Edit-Invariant Sequence Loss for Text Generation",
    NAACL 2022 (code ``guangyliu/EISL``, ``batch_log_bleulosscnn_ae``). With output log-probs
    l_i = max(log softmax(z_i), floor) at output positions i < T (floor = -20 in the paper's code) and
    target tokens y_j (j < T'), c_{ij} = l_i[y_j] (0 where y_j is ``ignore_index``), the n-gram score
    of output n-gram i against target n-gram j is the diagonal convolution

    .. math:: g^{(n)}_{ij} = \frac1n\sum_{k=0}^{n-1} c_{i+k,\,j+k},

    each target n-gram is matched softly over output positions with w = softmax_i(g_{:j} / tau)
    (Gumbel-softmax with noise from ``generator`` as in the paper's code; plain softmax when
    ``generator`` is None), and the sequence loss is

    .. math:: L = -\sum_n \omega_n \frac{1}{T'-n+1} \sum_j \sum_i w_{ij}\, g^{(n)}_{ij}

    (n = T uses its single alignment; n > T or n > T' is skipped). ``ngram_weights`` omega default to
    1 / len(ngrams). Shapes: logits (B, T, V), target (B, T'); ``reduction`` over sequences. Units:
    nats per token.

    Example:
        >>> z, y = torch.randn(2, 5, 9), torch.randint(0, 9, (2, 5))
        >>> nll = -torch.log_softmax(z, -1).gather(-1, y[..., None]).squeeze(-1).mean(1)
        >>> bool(torch.allclose(eisl_loss(z, y, ngrams=[5]), nll.mean()))
        True
    """
    z = float_logits(logits)
    if z.dim() != 3:
        raise ValueError(f"logits must have shape (B, T, V), got {tuple(z.shape)}")
    check_tensor(target, "target")
    if target.dim() != 2 or target.shape[0] != z.shape[0]:
        raise ValueError(f"target must have shape (B={z.shape[0]}, T'), got {tuple(target.shape)}")
    y = class_target(target, z[:, :1, :].expand(-1, target.shape[1], -1), ignore_index)
    ns = [check_int(n, "ngrams", 1) for n in ngrams]
    if not ns:
        raise ValueError("ngrams must name at least one n-gram size, got an empty sequence")
    if ngram_weights is None:
        ws = [1.0 / len(ns)] * len(ns)
    else:
        ws = [check_real(w, "ngram_weights", finite=True) for w in ngram_weights]
        if len(ws) != len(ns):
            raise ValueError(f"ngram_weights must have one weight per n-gram size ({len(ns)}), got {len(ws)}")
    t = check_positive(tau, "tau")
    fl = check_real(floor, "floor", finite=True)
    check_reduction(reduction)
    b, t_out, _ = z.shape
    t_tgt = y.shape[1]
    valid = y != ignore_index
    lp = torch.clamp(torch.log_softmax(z, -1), min=fl)
    idx = torch.where(valid, y, 0).unsqueeze(1).expand(-1, t_out, -1)  # (B, T, T')
    c = torch.where(valid.unsqueeze(1), lp.gather(2, idx), 0.0)
    total = z.new_zeros(b)
    for n, w in zip(ns, ws, strict=True):
        if n > t_out or n > t_tgt:
            continue
        g = c.unfold(1, n, 1).unfold(2, n, 1)  # (B, T-n+1, T'-n+1, n, n)
        g = g.diagonal(dim1=-2, dim2=-1).sum(-1) / n
        if n < t_out:
            logits_w = g
            if generator is not None:
                u = torch.rand(g.shape, dtype=g.dtype, device=g.device, generator=generator)
                logits_w = g - torch.log(-torch.log(u.clamp_min(1e-20)))
            a = torch.softmax(logits_w / t, dim=1)
            term = (g * a).sum(1).mean(1)
        else:
            term = g.sum(1).mean(1)
        total = total + w * term
    return reduce(-total, reduction)


class EISLoss(FunctionalLoss):
    """Module form of :func:`eisl_loss`: ``EISLoss(ngrams=(1, 2, 3, 4))(logits, target)``."""

    fn = staticmethod(eisl_loss)
