"""Ordinal-pattern (permutation) entropy and the Jensen-Shannon statistical complexity of a series.

A series ``x`` of shape ``(T,)`` is embedded in vectors ``(x_t, x_{t+tau}, ..., x_{t+(D-1)tau})``
(``order`` D, ``delay`` tau); each vector's ordinal pattern is the permutation that sorts it (ties
keep their order of appearance, as ``argsort(kind="stable")`` does; ordpy's convention).

References
----------
.. [1] C. Bandt, B. Pompe, "Permutation entropy: a natural complexity measure for time series",
       Phys. Rev. Lett. 88, 174102, 2002.
.. [2] B. Fadlallah, B. Chen, A. Keil, J. Príncipe, "Weighted-permutation entropy", Phys. Rev. E 87,
       022911, 2013.
.. [3] O. A. Rosso, H. A. Larrondo, M. T. Martin, A. Plastino, M. A. Fuentes, "Distinguishing noise
       from chaos", Phys. Rev. Lett. 99, 154102, 2007 (the complexity-entropy plane; PECCARY uses it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from entropykit._validate import check_int

from ._samples import check_base, check_samples, to_base

__all__ = ["ordinal_distribution", "permutation_entropy", "statistical_complexity"]


def ordinal_distribution(x: Any, *, order: int = 3, delay: int = 1, weighted: bool = False) -> np.ndarray:
    """Probabilities of the ``order!`` ordinal patterns of ``x`` (lexicographic order of the
    permutations; weighted by each vector's variance when ``weighted``).

    >>> ordinal_distribution([1.0, 2.0, 3.0, 4.0], order=2).tolist()
    [1.0, 0.0]
    """
    a = check_samples(x, "x", min_samples=1)
    if a.shape[1] != 1:
        raise ValueError(f"x must be a one-dimensional series, got shape {a.shape}")
    v = a[:, 0]
    order = check_int(order, "order", 2, 8)
    delay = check_int(delay, "delay", 1)
    m = v.size - (order - 1) * delay
    if m < 1:
        span = (order - 1) * delay
        raise ValueError(f"x must have more than (order - 1) * delay = {span} samples, got {v.size}")
    emb = np.stack([v[i * delay:i * delay + m] for i in range(order)], axis=1)
    perm = np.argsort(emb, axis=1, kind="stable")
    # rank of each permutation in lexicographic order (Lehmer code)
    code = np.zeros(m, dtype=np.int64)
    for i in range(order):
        smaller_later = (perm[:, i + 1:] < perm[:, i:i + 1]).sum(axis=1)
        code += smaller_later * math.factorial(order - 1 - i)
    w = emb.var(axis=1) if weighted else np.ones(m)
    hist = np.bincount(code, weights=w, minlength=math.factorial(order))
    total = hist.sum()
    if total == 0:
        raise ValueError("x must vary within some window when weighted=True, got all-constant windows")
    return hist / total


def _shannon(p: np.ndarray) -> float:
    q = p[p > 0]
    return float(-np.sum(q * np.log(q))) + 0.0  # no -0.0


def permutation_entropy(
    x: Any, *, order: int = 3, delay: int = 1, weighted: bool = False, normalize: bool = True,
    base: float = math.e,
) -> float:
    r"""Permutation entropy :math:`H = -\sum_\pi p(\pi) \log p(\pi)` over the ordinal patterns of
    ``x``; with ``normalize`` divided by :math:`\log D!` (in [0, 1], unit-free: ``base`` is then
    ignored), else in nats (``base=2``: bits). ``weighted``: patterns weighted by the variance of
    their vectors (weighted PE [2]_). Reference: Bandt and Pompe (2002) [1]_; ordpy.

    >>> import numpy as np
    >>> permutation_entropy(np.arange(100.0))  # monotone: one pattern
    0.0
    >>> round(permutation_entropy(np.random.default_rng(0).standard_normal(20000)), 3)  # white noise
    1.0
    """
    p = ordinal_distribution(x, order=order, delay=delay, weighted=weighted)
    h = _shannon(p)
    if normalize:
        return h / math.log(p.size)
    return to_base(h, check_base(base))


def statistical_complexity(
    x: Any, *, order: int = 3, delay: int = 1, weighted: bool = False
) -> tuple[float, float]:
    r"""The complexity-entropy plane: ``(H, C)`` with H the normalised permutation entropy and
    :math:`C = Q_0\, \mathrm{JS}(P, U)\, H` the Jensen-Shannon statistical complexity, where U is the
    uniform distribution over the :math:`N = D!` patterns,
    :math:`\mathrm{JS}(P, U) = S(\tfrac{P+U}2) - \tfrac12 S(P) - \tfrac12 S(U)` and
    :math:`Q_0 = -2 / \big(\tfrac{N+1}{N}\log(N+1) - 2\log(2N) + \log N\big)` normalises JS to [0, 1].
    Noise sits at (1, 0), regular signals at (0, 0), chaos in between with high C. Reference: Rosso et
    al. (2007) [3]_; ordpy's ``complexity_entropy``; PECCARY.

    >>> import numpy as np
    >>> h, c = statistical_complexity(np.random.default_rng(0).standard_normal(20000))
    >>> round(h, 2), round(c, 2)
    (1.0, 0.0)
    """
    p = ordinal_distribution(x, order=order, delay=delay, weighted=weighted)
    n = p.size
    u = np.full(n, 1.0 / n)
    h = _shannon(p) / math.log(n)
    js = _shannon((p + u) / 2) - _shannon(p) / 2 - _shannon(u) / 2
    q0 = -2.0 / ((n + 1) / n * math.log(n + 1) - 2 * math.log(2 * n) + math.log(n))
    return float(h), float(q0 * js * h)
