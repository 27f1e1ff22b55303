"""How good is an uncertainty score? Rejection curves, PRR, AUROC and AUPRC of errors.

Conventions: ``uncertainty`` is higher for answers the estimator trusts less; ``quality`` is higher
for better answers (1/0 correctness, or a score in [0, 1]); ``errors`` is True for wrong answers.
Ties in the uncertainty are counted in expectation over a random order (the value an estimator with
ties earns on average), not by the index order an ``argsort`` happens to give.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from entropykit.uncertainty._common import same_length, vector

__all__ = ["auprc", "auroc", "prr", "rejection_curve"]


def _kept_sums(u: Tensor, q: Tensor) -> Tensor:
    """S_k = expected sum of quality over the k most certain (k = 1..n), ties averaged."""
    order = torch.argsort(u, stable=True)
    us, qs = u[order], q[order]
    csum = torch.cat([qs.new_zeros(1), qs.cumsum(0)])
    n = u.numel()
    out = torch.empty(n, dtype=torch.float64)
    start = 0
    while start < n:  # tie groups: expected cumulative sum grows linearly through the group
        end = start + 1
        while end < n and us[end] == us[start]:
            end += 1
        mean = (csum[end] - csum[start]) / (end - start)
        j = torch.arange(1, end - start + 1, dtype=torch.float64)
        out[start:end] = csum[start] + j * mean
        start = end
    return out


def rejection_curve(uncertainty: Any, quality: Any) -> tuple[Tensor, Tensor]:
    """The prediction-rejection curve: (rejected fraction r, mean quality of the kept answers).

    Reject the most uncertain answers first; at r = j/n (j = 0..n-1) the n - j most certain are
    kept and the curve is their mean quality. An estimator that ranks errors last rises fastest.
    Source: Malinin et al. 2017 / 2021 (prediction-rejection ratio); lm-polygraph (Fadeeva et al.
    2023) ``PredictionRejectionArea``.

    >>> r, m = rejection_curve([0.1, 0.9, 0.5], [1.0, 0.0, 1.0])
    >>> r.tolist(), m.tolist()
    ([0.0, 0.3333333333333333, 0.6666666666666666], [0.6666666666666666, 1.0, 1.0])
    """
    u = vector(uncertainty, "uncertainty")
    q = vector(quality, "quality")
    same_length(u, q, "uncertainty", "quality")
    n = u.numel()
    sums = _kept_sums(u, q)
    kept = torch.arange(n, 0, -1, dtype=torch.float64)
    return (n - kept) / n, sums.flip(0) / kept


def prr(uncertainty: Any, quality: Any) -> float:
    """Prediction-rejection ratio PRR = (AUC_u - AUC_random) / (AUC_oracle - AUC_random).

    AUC_x = (1/n) sum_{k=1..n} (mean quality of the k answers x trusts most) -- the area under
    the rejection curve; the oracle ranks by quality itself, random keeps the overall mean
    quality at every fraction. 1 = errors ranked perfectly last, 0 = no better than random,
    negative = worse. Unit-free. Source: Malinin et al. 2021 (arXiv:2002.07650); lm-polygraph's
    ``PredictionRejectionArea`` normalised by its oracle and random (Vashurin et al. 2024). Raises
    ValueError when every answer has the same quality (the oracle cannot beat random).

    >>> prr([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0])  # errors are the two most uncertain: perfect
    1.0
    >>> round(prr([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]), 12)
    -1.0
    """
    u = vector(uncertainty, "uncertainty")
    q = vector(quality, "quality")
    same_length(u, q, "uncertainty", "quality")
    n = u.numel()
    k = torch.arange(1, n + 1, dtype=torch.float64)
    area = float((_kept_sums(u, q) / k).mean())
    oracle = float((_kept_sums(-q, q) / k).mean())
    random = float(q.mean())
    if oracle - random <= 1e-15 * max(1.0, abs(random)):
        raise ValueError(
            "quality must vary across answers (all equal: the oracle cannot beat random), "
            f"got every value equal to {float(q[0])}"
        )
    return (area - random) / (oracle - random)


def _errors(errors: Any, n: int) -> Tensor:
    e = vector(errors, "errors")
    if e.numel() != n:
        raise ValueError(f"uncertainty and errors must have the same length, got {n} and {e.numel()}")
    if bool(((e != 0) & (e != 1)).any()):
        raise ValueError("errors must be 0/1 or booleans (True = a wrong answer), got other values")
    if bool(e.all()) or not bool(e.any()):
        raise ValueError(f"errors must hold both wrong and right answers, got {int(e.sum())} of {n} wrong")
    return e


def auroc(uncertainty: Any, errors: Any) -> float:
    """Area under the ROC curve of ``uncertainty`` as a detector of ``errors`` (True = wrong).

    The probability that a random wrong answer is more uncertain than a random right one, ties
    counting 1/2 (the Mann-Whitney U statistic / (n_wrong n_right), from mid-ranks). 0.5 =
    chance. Equal to ``sklearn.metrics.roc_auc_score(errors, uncertainty)``.

    >>> auroc([0.9, 0.1, 0.5, 0.5], [1, 0, 1, 0])
    0.875
    """
    u = vector(uncertainty, "uncertainty")
    e = _errors(errors, u.numel())
    from scipy.stats import rankdata

    ranks = torch.as_tensor(rankdata(u.numpy()))
    n1 = float(e.sum())
    n0 = u.numel() - n1
    return float(((ranks * e).sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auprc(uncertainty: Any, errors: Any) -> float:
    """Area under the precision-recall curve of errors, as average precision.

    AP = sum_t (R_t - R_{t-1}) P_t over the distinct uncertainty thresholds t, high to low
    (flag every answer with uncertainty >= t); the step-wise area of
    ``sklearn.metrics.average_precision_score(errors, uncertainty)``. The base rate (fraction of
    errors) is what random earns.

    >>> auprc([0.9, 0.1, 0.5, 0.4], [1, 0, 1, 0])
    1.0
    """
    u = vector(uncertainty, "uncertainty")
    e = _errors(errors, u.numel())
    order = np.argsort(-u.numpy(), kind="stable")
    us, es = u.numpy()[order], e.numpy()[order]
    last = np.r_[np.flatnonzero(np.diff(us) != 0), us.size - 1]  # end of each threshold group
    tp = np.cumsum(es)[last]
    flagged = last + 1.0
    recall = tp / es.sum()
    precision = tp / flagged
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
