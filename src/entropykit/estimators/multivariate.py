r"""Higher-order information of several variables: total correlation, dual total correlation,
O-information and S-information (Rosas et al. 2019).

``x`` is ``(n_samples, n_variables)``: each column is one (scalar) variable. Entropies come from a
Gaussian model (``method="gaussian"``: :math:`\tfrac12 \log\det(2\pi e\,\Sigma)`, optionally on a
Gaussian copula of the data: each column replaced by the normal scores of its ranks, as in Ince et
al.'s GCMI, which makes the measures invariant under increasing maps of each variable) or, with
``method="knn"``, from KSG estimates of the total correlations (Kraskov et al.'s multi-information
:math:`\psi(k) + (m-1)\psi(N) - \langle\sum_i \psi(n_i + 1)\rangle`, whose biases largely cancel,
unlike differences of kNN entropies of different dimensions) through
:math:`\Omega = (2-n)\,TC(X) + \sum_i TC(X_{-i})`.

References
----------
.. [1] F. E. Rosas, P. A. M. Mediano, M. Gastpar, H. J. Jensen, "Quantifying high-order
       interdependencies via multivariate extensions of the mutual information", Phys. Rev. E 100,
       032305, 2019.
.. [2] R. A. A. Ince et al., "A statistical framework for neuroimaging data analysis based on mutual
       information estimated via a Gaussian copula", Hum. Brain Mapp. 38, 2017.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import digamma, ndtri
from scipy.stats import rankdata

from entropykit._validate import check_choice, check_int

from . import _neighbors as _nb
from ._samples import RandomState, check_base, check_samples, prepare, rng_of, standardize, to_base

__all__ = ["HigherOrderInfo", "o_information"]


@dataclass(frozen=True)
class HigherOrderInfo:
    """Total correlation (TC), dual total correlation (DTC), O-information (TC - DTC; > 0: redundancy
    dominates, < 0: synergy dominates) and S-information (TC + DTC), in the requested unit."""

    tc: float
    dtc: float
    o_information: float
    s_information: float


def _gauss_h(cov: np.ndarray) -> float:
    d = cov.shape[0]
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        raise ValueError("x must have a non-singular covariance (some variables are linear combinations)")
    return 0.5 * (d * math.log(2 * math.pi * math.e) + logdet)


def o_information(
    x: Any, *, method: str = "gaussian", copula: bool = True, k: int = 3, base: float = math.e,
    random_state: RandomState = 0,
) -> HigherOrderInfo:
    r"""O-information and its relatives for the n columns of ``x``:

    .. math:: TC = \sum_i H(X_i) - H(X), \quad DTC = \sum_i H(X_{-i}) - (n-1) H(X),

    :math:`\Omega = TC - DTC = (n-2)H(X) + \sum_i [H(X_i) - H(X_{-i})]`, :math:`S = TC + DTC`. For
    three variables :math:`\Omega` is the co-information :math:`I(X_1;X_2) - I(X_1;X_2|X_3)`. Entropies by
    ``method`` (see the module docstring; ``k`` and ``random_state`` for ``"knn"``). Nats
    (``base=2``: bits). Reference: Rosas et al. (2019) [1]_.

    >>> import numpy as np
    >>> g = np.random.default_rng(0).standard_normal((5000, 3))
    >>> copies = np.c_[g[:, 0], g[:, 0] + 0.3 * g[:, 1], g[:, 0] + 0.3 * g[:, 2]]  # redundancy
    >>> o_information(copies).o_information > 0
    True
    >>> o_information(np.c_[g[:, 0], g[:, 1], g[:, 0] + g[:, 1]]).o_information < 0  # synergy
    True
    """
    a = check_samples(x, "x")
    n_vars = a.shape[1]
    if n_vars < 3:
        raise ValueError(f"x must have at least 3 variables (columns), got {n_vars}")
    method = check_choice(method, ("gaussian", "knn"), "method")
    b = check_base(base)
    a, _ = standardize(a, "x")
    if method == "gaussian":
        if copula:
            a = ndtri(rankdata(a, axis=0) / (a.shape[0] + 1))
        cov = np.cov(a, rowvar=False)

        def h(cols: list[int]) -> float:
            return _gauss_h(cov[np.ix_(cols, cols)])
    else:
        k = check_int(k, "k", 1, a.shape[0] - 1)
        cols_ = prepare({f"x[:, {j}]": a[:, j:j + 1] for j in range(n_vars)}, standardize_=False,
                        jitter=1e-10, rng=rng_of(random_state))

        def tc_knn(cols: list[int]) -> float:
            parts = [cols_[j] for j in cols]
            _, counts, _ = _nb.ksg_counts(parts, [(i,) for i in range(len(cols))], k, "lt", neighbors="auto")
            m, n = len(cols), a.shape[0]
            return float(digamma(k) + (m - 1) * digamma(n) - np.mean(sum(digamma(c + 1) for c in counts)))

        every = list(range(n_vars))
        tc = tc_knn(every)
        omega = (2 - n_vars) * tc + sum(tc_knn([j for j in every if j != i]) for i in every)
        return HigherOrderInfo(*(to_base(v, b) for v in (tc, tc - omega, omega, 2 * tc - omega)))

    every = list(range(n_vars))
    h_all = h(every)
    h_one = [h([i]) for i in every]
    h_rest = [h([j for j in every if j != i]) for i in every]
    tc = sum(h_one) - h_all
    dtc = sum(h_rest) - (n_vars - 1) * h_all
    return HigherOrderInfo(*(to_base(v, b) for v in (tc, dtc, tc - dtc, tc + dtc)))
