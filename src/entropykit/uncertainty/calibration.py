"""Calibration of predicted probabilities: ECE / MCE (equal-width or equal-mass bins), classwise ECE,
Brier score, NLL, reliability-diagram bins, and temperature / vector scaling fitted by NLL.

Inputs are logits (N, K) by default (``probs=True``: the rows are probabilities, checked to sum to
1) with class labels (N,); for answer-level calibration of a language model (one confidence per
answer and whether it was right) use :func:`confidence_ece`. Everything is computed in float64.

Bins (equal width): bin b = [b/B, (b+1)/B) for b < B - 1 and the last bin [(B-1)/B, 1] closed, so a
confidence of exactly 1 falls in the last bin (Guo et al. 2017; netcal). torchmetrics >= 1.0 puts
a confidence of exactly 1.0 in an extra bin of its own; otherwise the two agree to rounding.
Equal-mass bins: the answers sorted by confidence are cut into B runs of sizes differing by at most
one (``numpy.array_split``), adaptive ECE (Nixon et al. 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from entropykit._validate import check_choice, check_int
from entropykit.uncertainty._common import class_log_probs, labels_for, same_length, top_label, vector

__all__ = [
    "BINNINGS",
    "NORMS",
    "ReliabilityBins",
    "VectorScaling",
    "brier",
    "classwise_ece",
    "confidence_ece",
    "ece",
    "fit_temperature",
    "fit_vector_scaling",
    "mce",
    "nll",
    "reliability_bins",
]

BINNINGS = ("width", "mass")
NORMS = ("l1", "l2", "max")


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin mean confidence, accuracy and count (empty bins: count 0, confidence and accuracy 0),
    with the bin edges (B + 1 values; for equal-mass bins the smallest confidence of each bin)."""

    edges: Tensor
    confidence: Tensor
    accuracy: Tensor
    count: Tensor


def _bins(conf: Tensor, correct: Tensor, n_bins: int, binning: str) -> ReliabilityBins:
    conf = conf.contiguous()
    n = conf.numel()
    if binning == "width":
        edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
        idx = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    else:
        order = torch.argsort(conf, stable=True)
        idx = torch.empty(n, dtype=torch.long)
        sizes = [n // n_bins + (1 if b < n % n_bins else 0) for b in range(n_bins)]
        idx[order] = torch.repeat_interleave(torch.arange(n_bins), torch.tensor(sizes))
        sorted_conf = conf[order]
        starts = torch.tensor([sum(sizes[:b]) for b in range(n_bins)])
        lo = torch.where(torch.tensor(sizes) > 0, sorted_conf[starts.clamp(max=n - 1)], 1.0)
        edges = torch.cat([lo, torch.ones(1, dtype=torch.float64)])
    count = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, idx, torch.ones_like(conf))
    csum = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, idx, conf)
    asum = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, idx, correct)
    safe = count.clamp(min=1)
    return ReliabilityBins(edges, csum / safe, asum / safe, count)


def _error(b: ReliabilityBins, norm: str) -> float:
    gap = (b.accuracy - b.confidence).abs()
    w = b.count / b.count.sum()
    if norm == "l1":
        return float((w * gap).sum())
    if norm == "l2":
        return math.sqrt(float((w * gap**2).sum()))
    return float(gap[b.count > 0].max())


def _check_bins(n_bins: Any, binning: Any, norm: Any | None = None) -> None:
    check_int(n_bins, "n_bins", 1)
    check_choice(binning, BINNINGS, "binning")
    if norm is not None:
        check_choice(norm, NORMS, "norm")


def _confidence(confidence: Any, correct: Any) -> tuple[Tensor, Tensor]:
    c = vector(confidence, "confidence")
    if bool(((c < 0) | (c > 1)).any()):
        i = int(((c < 0) | (c > 1)).nonzero()[0])
        raise ValueError(f"confidence must hold probabilities in [0, 1], got {float(c[i])} at index {i}")
    a = vector(correct, "correct")
    same_length(c, a, "confidence", "correct")
    if bool(((a != 0) & (a != 1)).any()):
        raise ValueError("correct must be 0/1 or booleans (True = a right answer), got other values")
    return c, a


def confidence_ece(
    confidence: Any, correct: Any, *, n_bins: int = 15, binning: str = "width", norm: str = "l1"
) -> float:
    """Calibration error of one confidence per answer against whether the answer was right.

    ECE = sum_b |B_b|/n |acc(B_b) - conf(B_b)| (``norm="l1"``); ``"l2"``: the root of the
    count-weighted mean squared gap (RMSCE); ``"max"``: the largest gap over non-empty bins (MCE).
    Unit: probability. This is the answer-level calibration of an LM on a task with known answers
    (confidence = p(answer), or a sample agreement rate). Source: Naeini et al. 2015 (ECE, MCE);
    Guo et al. 2017 (arXiv:1706.04599); Nixon et al. 2019 (equal-mass bins, arXiv:1904.01685).

    >>> confidence_ece([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1], n_bins=10)  # |0.5-0.9|/2 + |1-0.6|/2
    0.4
    """
    _check_bins(n_bins, binning, norm)
    c, a = _confidence(confidence, correct)
    return _error(_bins(c, a, n_bins, binning), norm)


def _top_label(logits: Any, labels: Any, probs: bool) -> tuple[Tensor, Tensor]:
    conf, pred = top_label(logits, "logits", probs=probs)
    y = labels_for(labels, logits.shape[0], logits.shape[1])
    return conf, (pred == y).double()


def ece(
    logits: Tensor,
    labels: Tensor,
    *,
    n_bins: int = 15,
    binning: str = "width",
    norm: str = "l1",
    probs: bool = False,
) -> float:
    """Top-label expected calibration error of a classifier: confidence = max_k p_k, correct =
    [argmax_k p_k == label] (ties: the lowest index), then :func:`confidence_ece`.

    ECE = sum_b |B_b|/n |acc(B_b) - conf(B_b)| with ``n_bins`` equal-width (default 15, as
    torchmetrics) or equal-mass bins; ``norm="max"`` is the MCE, ``"l2"`` the RMSCE. Unit:
    probability. Same value as ``torchmetrics.functional.calibration_error(p, y, "multiclass",
    num_classes=K)`` (see the module docstring for confidence exactly 1). Source: Guo et al. 2017.

    >>> logits = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    >>> round(ece(logits, torch.tensor([0, 1, 1]), n_bins=5), 4)
    0.3914
    """
    _check_bins(n_bins, binning, norm)
    conf, correct = _top_label(logits, labels, probs)
    return _error(_bins(conf, correct, n_bins, binning), norm)


def mce(
    logits: Tensor, labels: Tensor, *, n_bins: int = 15, binning: str = "width", probs: bool = False
) -> float:
    """Maximum calibration error max_b |acc(B_b) - conf(B_b)| over non-empty bins (Naeini et al. 2015);
    :func:`ece` with ``norm="max"``.

    >>> mce(torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1, 1]), n_bins=5) > 0.45
    True
    """
    return ece(logits, labels, n_bins=n_bins, binning=binning, norm="max", probs=probs)


def reliability_bins(
    logits: Tensor, labels: Tensor, *, n_bins: int = 15, binning: str = "width", probs: bool = False
) -> ReliabilityBins:
    """The bins behind :func:`ece` (for a reliability diagram, ``uncertainty.plots``).

    >>> b = reliability_bins(torch.tensor([[3.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), n_bins=2)
    >>> b.count.tolist(), b.accuracy.tolist()
    ([0.0, 2.0], [0.0, 0.5])
    """
    _check_bins(n_bins, binning)
    conf, correct = _top_label(logits, labels, probs)
    return _bins(conf, correct, n_bins, binning)


def classwise_ece(
    logits: Tensor, labels: Tensor, *, n_bins: int = 15, binning: str = "width", probs: bool = False
) -> float:
    """Classwise ECE = (1/K) sum_k sum_b |B_kb|/n |mean 1[y = k] - mean p_k| over bins of p_k.

    Every class's probability is calibrated, not only the top one's (Kull et al. 2019,
    arXiv:1910.12656, "classwise-ECE"). Unit: probability.

    >>> round(classwise_ece(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]), n_bins=4), 4)
    0.5
    """
    _check_bins(n_bins, binning)
    lp = class_log_probs(logits, "logits", probs=probs)
    y = labels_for(labels, lp.shape[0], lp.shape[1])
    p = lp.exp()
    onehot = F.one_hot(y, lp.shape[1]).double()
    errs = [_error(_bins(p[:, k], onehot[:, k], n_bins, binning), "l1") for k in range(lp.shape[1])]
    return sum(errs) / len(errs)


def brier(logits: Tensor, labels: Tensor, *, probs: bool = False) -> float:
    """Multi-class Brier score (1/n) sum_i sum_k (p_ik - 1[y_i = k])^2, in [0, 2] (Brier 1950).

    >>> brier(torch.tensor([[0.0, 0.0]]), torch.tensor([0]))
    0.5
    """
    lp = class_log_probs(logits, "logits", probs=probs)
    y = labels_for(labels, lp.shape[0], lp.shape[1])
    return float(((lp.exp() - F.one_hot(y, lp.shape[1]).double()) ** 2).sum(-1).mean())


def nll(logits: Tensor, labels: Tensor, *, probs: bool = False) -> float:
    """Negative log-likelihood (1/n) sum_i -log p_{i, y_i}, in nats (the cross-entropy).

    >>> round(nll(torch.tensor([[0.0, 0.0]]), torch.tensor([0])), 4)
    0.6931
    """
    lp = class_log_probs(logits, "logits", probs=probs)
    y = labels_for(labels, lp.shape[0], lp.shape[1])
    return float(-lp.gather(1, y[:, None]).mean())


def _lbfgs(params: list[Tensor], loss_fn: Any, max_iter: int) -> None:
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss  # type: ignore[no-any-return]

    opt.step(closure)


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 200) -> float:
    """Temperature scaling: T = argmin_T NLL(softmax(z / T), y) on a held-out split.

    Fitted on log T (so T > 0) by L-BFGS with a strong-Wolfe line search, in float64; the NLL is
    convex in 1/T, so the optimum is unique. Apply as ``logits / T``: the argmax (accuracy) is
    unchanged, over-confident models get T > 1. Source: Guo et al. 2017 (arXiv:1706.04599).

    >>> g = torch.Generator().manual_seed(0)
    >>> z = torch.randn(500, 4, generator=g) * 3
    >>> y = torch.distributions.Categorical(logits=z / 3).sample()  # the truth is T = 3
    >>> 2.0 < fit_temperature(z, y) < 4.5
    True
    """
    lp = class_log_probs(logits, "logits", probs=False)
    y = labels_for(labels, lp.shape[0], lp.shape[1])
    check_int(max_iter, "max_iter", 1)
    z = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _lbfgs([log_t], lambda: F.cross_entropy(z / log_t.exp(), y), max_iter)
    return float(log_t.detach().exp())


@dataclass(frozen=True)
class VectorScaling:
    """Per-class affine calibration map z -> weight * z + bias (``weight``, ``bias``: (K,))."""

    weight: Tensor
    bias: Tensor

    def __call__(self, logits: Tensor) -> Tensor:
        return logits * self.weight.to(logits.dtype) + self.bias.to(logits.dtype)


def fit_vector_scaling(logits: Tensor, labels: Tensor, *, max_iter: int = 500) -> VectorScaling:
    """Vector scaling: per-class weight w and bias b minimising NLL(softmax(w * z + b), y).

    The diagonal special case of matrix (Platt) scaling, fitted by L-BFGS in float64 from w = 1,
    b = 0 (Guo et al. 2017, Sec. 4.2). Unlike temperature scaling it can change the argmax.

    >>> z = torch.randn(200, 3, generator=torch.Generator().manual_seed(1))
    >>> vs = fit_vector_scaling(z, z.argmax(-1))
    >>> vs(z).shape, nll(vs(z), z.argmax(-1)) < nll(z, z.argmax(-1))
    (torch.Size([200, 3]), True)
    """
    lp = class_log_probs(logits, "logits", probs=False)
    y = labels_for(labels, lp.shape[0], lp.shape[1])
    check_int(max_iter, "max_iter", 1)
    z = logits.detach().double()
    if not bool(torch.isfinite(z).all()):
        raise ValueError(
            "logits must be finite for vector scaling (a -inf entry times a weight is undefined)"
        )
    w = torch.ones(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    _lbfgs([w, b], lambda: F.cross_entropy(z * w + b, y), max_iter)
    return VectorScaling(w.detach(), b.detach())
