"""The entropy-performance law R = -a exp(H) + b, fitted with confidence intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from entropykit._validate import check_real

__all__ = ["EntropyPerformanceFit", "fit_entropy_performance"]


@dataclass(frozen=True)
class EntropyPerformanceFit:
    """Result of :func:`fit_entropy_performance` (confidence intervals as (low, high))."""

    a: float
    b: float
    a_ci: tuple[float, float]
    b_ci: tuple[float, float]
    ceiling: float  # predicted reward at H = 0: b - a
    ceiling_ci: tuple[float, float]
    r2: float
    n: int

    def predict(self, entropy: Any) -> np.ndarray:
        """R(H) = -a exp(H) + b."""
        return -self.a * np.exp(np.asarray(entropy, dtype=np.float64)) + self.b


def fit_entropy_performance(entropy: Any, reward: Any, *, confidence: float = 0.95) -> EntropyPerformanceFit:
    r"""Fit :math:`R = -a e^{H} + b` to (entropy, reward) pairs of a training run.

    The law of Cui et al. 2025 ("The Entropy Mechanism of RL for Reasoning LMs"): performance is bought
    with entropy, and the ceiling at exhausted entropy (H = 0) is :math:`b - a`. The model is linear in
    :math:`x = e^H`, so it is fitted by ordinary least squares with exact Student-t intervals for a, b
    and the ceiling (the mean response at x = 1). Entropy in nats; reward in its own units. Needs at
    least 3 points with distinct entropies.

    >>> h = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.1])
    >>> f = fit_entropy_performance(h, -0.3 * np.exp(h) + 0.9)
    >>> round(f.a, 6), round(f.b, 6), round(f.ceiling, 6)
    (0.3, 0.9, 0.6)
    """
    from scipy import stats

    h = np.asarray(entropy, dtype=np.float64).reshape(-1)
    r = np.asarray(reward, dtype=np.float64).reshape(-1)
    if h.shape != r.shape:
        raise ValueError(f"entropy and reward must have the same number of values, got {h.size} and {r.size}")
    if h.size < 3:
        raise ValueError(f"entropy must hold at least 3 points, got {h.size}")
    if not (np.isfinite(h).all() and np.isfinite(r).all()):
        raise ValueError("entropy and reward must be finite")
    conf = check_real(confidence, "confidence", 0.0, 1.0, lo_open=True, hi_open=True)
    x = np.exp(h)
    n = x.size
    xm = x.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx <= 0.0:
        raise ValueError("entropy must take at least two distinct values")
    slope = float(((x - xm) * (r - r.mean())).sum() / sxx)
    icpt = float(r.mean() - slope * xm)
    resid = r - (icpt + slope * x)
    sse = float((resid**2).sum())
    sst = float(((r - r.mean()) ** 2).sum())
    s2 = sse / (n - 2)
    t = float(stats.t.ppf(0.5 + conf / 2, n - 2))
    se_slope = math.sqrt(s2 / sxx)
    se_icpt = math.sqrt(s2 * (1.0 / n + xm**2 / sxx))
    se_ceil = math.sqrt(s2 * (1.0 / n + (1.0 - xm) ** 2 / sxx))
    a = -slope
    ceiling = icpt + slope
    return EntropyPerformanceFit(
        a=a, b=icpt, a_ci=(a - t * se_slope, a + t * se_slope), b_ci=(icpt - t * se_icpt, icpt + t * se_icpt),
        ceiling=ceiling, ceiling_ci=(ceiling - t * se_ceil, ceiling + t * se_ceil),
        r2=1.0 - sse / sst if sst > 0 else 1.0, n=n,
    )
