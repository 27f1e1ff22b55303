"""Entropy and mutual information of discrete samples, with the classic bias corrections.

A sample is a row: ``x`` of shape ``(n,)`` holds symbols, ``(n, d)`` holds d-tuples (each distinct
row is one symbol). Any hashable numeric labels work (they are only compared for equality).

References
----------
.. [1] G. A. Miller, "Note on the bias of information estimates", Information Theory in Psychology,
       1955 (Miller-Madow: plug-in + (K - 1) / 2N).
.. [2] P. Grassberger, "Entropy estimates from insufficient samplings", arXiv:physics/0307138, 2003.
.. [3] A. Chao, T.-J. Shen, "Nonparametric estimation of Shannon's index of diversity when there are
       unseen species in sample", Environ. Ecol. Stat. 10, 2003.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import digamma

from entropykit._validate import check_choice

from ._samples import check_base, check_same_n, check_samples, to_base

__all__ = ["DISCRETE_METHODS", "entropy_discrete", "mutual_info_discrete"]

DISCRETE_METHODS = ("plugin", "miller_madow", "grassberger", "chao_shen")


def _counts(a: np.ndarray) -> np.ndarray:
    _, c = np.unique(a, axis=0, return_counts=True)
    return c.astype(np.float64)


def _entropy_from_counts(c: np.ndarray, method: str) -> float:
    n = float(c.sum())
    p = c / n
    if method == "plugin":
        return float(-np.sum(p * np.log(p)))
    if method == "miller_madow":
        return float(-np.sum(p * np.log(p)) + (c.size - 1) / (2 * n))
    if method == "grassberger":
        g = digamma(c) + 0.5 * (-1.0) ** c * (digamma((c + 1) / 2) - digamma(c / 2))
        return float(math.log(n) - np.sum(c * g) / n)
    # chao_shen: coverage-adjusted probabilities, Horvitz-Thompson weights
    f1 = float(np.sum(c == 1))
    if f1 == n:
        f1 = n - 1
    pa = (1 - f1 / n) * p
    return float(-np.sum(pa * np.log(pa) / (1 - (1 - pa) ** n)))


def entropy_discrete(x: Any, *, method: str = "plugin", base: float = math.e) -> float:
    r"""Shannon entropy of discrete samples, :math:`H = -\sum_i \hat p_i \log \hat p_i` (``"plugin"``,
    :math:`\hat p_i = n_i / N`) or a bias-corrected variant:

    - ``"miller_madow"``: plug-in :math:`+ (K - 1) / 2N` with K the number of observed symbols [1]_;
    - ``"grassberger"``: :math:`\log N - \frac1N \sum_i n_i G(n_i)`,
      :math:`G(n) = \psi(n) + \tfrac12 (-1)^n (\psi(\tfrac{n+1}2) - \psi(\tfrac n2))` [2]_;
    - ``"chao_shen"``: coverage :math:`C = 1 - f_1/N` (:math:`f_1` singletons),
      :math:`p_i = C n_i / N`, :math:`H = -\sum_i p_i \log p_i / (1 - (1 - p_i)^N)` [3]_.

    Nats (``base=2``: bits).

    >>> import numpy as np
    >>> x = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> entropy_discrete(x, base=2), round(entropy_discrete(x, method="miller_madow", base=2), 4)
    (2.0, 2.2705)
    """
    a = check_samples(x, "x", min_samples=1)
    method = check_choice(method, DISCRETE_METHODS, "method")
    return to_base(_entropy_from_counts(_counts(a), method), check_base(base))


def mutual_info_discrete(x: Any, y: Any, *, method: str = "plugin", base: float = math.e) -> float:
    r"""Mutual information of discrete samples, :math:`I = H(X) + H(Y) - H(X, Y)`, each entropy by
    ``method`` (see :func:`entropy_discrete`). The plug-in value is the MI of the empirical joint
    distribution (non-negative); corrected variants may go below 0 and are not clipped. Nats.

    >>> import numpy as np
    >>> x = np.array([0, 0, 1, 1]); y = np.array([0, 0, 1, 1])
    >>> mutual_info_discrete(x, y, base=2), mutual_info_discrete(x, np.array([0, 1, 0, 1]))
    (1.0, 0.0)
    """
    a, c = check_samples(x, "x", min_samples=1), check_samples(y, "y", min_samples=1)
    check_same_n({"x": a, "y": c})
    method = check_choice(method, DISCRETE_METHODS, "method")
    hx = _entropy_from_counts(_counts(a), method)
    hy = _entropy_from_counts(_counts(c), method)
    hxy = _entropy_from_counts(_counts(np.hstack([a, c])), method)
    return to_base(hx + hy - hxy, check_base(base))
