"""Evaluating a detection score: ROC-AUC, TPR at a fixed FPR, threshold calibration, ROC curve.

Convention: a text is flagged (predicted positive: member / machine) when its score is strictly
above the threshold; higher scores = more likely positive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from entropykit._validate import check_real

__all__ = ["DEFAULT_FPRS", "calibrate", "evaluate", "roc_curve"]

DEFAULT_FPRS = (0.01, 0.001)


def _scores(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of scores, got shape {a.shape}")
    if not np.isfinite(a).all():
        i = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{name} must be finite scores (no NaN or inf), got {a[i]} at index {i}")
    return a


def calibrate(neg_scores: Sequence[float] | np.ndarray, fpr: float) -> float:
    """Smallest threshold tau with #(neg > tau) <= floor(fpr * n_neg): the (m+1)-th largest held-out
    negative score, m = floor(fpr * n). Flagging ``score > tau`` then has an empirical FPR <= ``fpr``
    on these negatives (a fresh sample's FPR is ``fpr`` up to sampling error ~ sqrt(fpr / n)).
    ``fpr >= 1`` gives -inf (flag everything).

    >>> calibrate([0.1, 0.5, 0.3, 0.9], 0.25)   # one false positive allowed -> tau = 2nd largest
    0.5
    """
    neg = _scores(neg_scores, "neg_scores")
    fpr = check_real(fpr, "fpr", 0, 1)
    m = math.floor(fpr * neg.size + 1e-9)
    if m >= neg.size:
        return -math.inf
    return float(np.sort(neg)[::-1][m])


def roc_curve(
    pos_scores: Sequence[float] | np.ndarray, neg_scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): flagging ``score >= thr`` for each distinct score, from (0, 0) to
    (1, 1). The trapezoid area under it equals ``evaluate(...)["auc"]`` (ties count one half).
    """
    pos, neg = _scores(pos_scores, "pos_scores"), _scores(neg_scores, "neg_scores")
    thr = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = np.searchsorted(np.sort(-pos), -thr, side="right") / pos.size
    fpr = np.searchsorted(np.sort(-neg), -thr, side="right") / neg.size
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thr]


def evaluate(
    pos_scores: Sequence[float] | np.ndarray,
    neg_scores: Sequence[float] | np.ndarray,
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> dict[str, object]:
    """ROC-AUC and TPR at fixed FPRs of a score separating positives from negatives.

    AUC = P(s_pos > s_neg) + P(s_pos = s_neg) / 2 (Mann-Whitney U / (n_pos n_neg), from mid-ranks).
    TPR@FPR = fraction of positives with score > ``calibrate(neg_scores, fpr)``; with n_neg
    negatives, FPRs below 1/n_neg are read at zero false positives.
    Returns ``{"auc", "tpr_at_fpr": {fpr: tpr}, "n_pos", "n_neg"}``.

    >>> r = evaluate([3.0, 2.0, 0.5], [1.0, 0.0, 0.6])
    >>> round(r["auc"], 4), round(r["tpr_at_fpr"][0.01], 4)
    (0.7778, 0.6667)
    """
    pos, neg = _scores(pos_scores, "pos_scores"), _scores(neg_scores, "neg_scores")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    tpr = {float(f): float(np.mean(pos > calibrate(neg, f))) for f in fprs}
    return {
        "auc": float(u / (pos.size * neg.size)),
        "tpr_at_fpr": tpr,
        "n_pos": int(pos.size),
        "n_neg": int(neg.size),
    }
