"""Matrix (spectral) entropies of representations and kernel information measures.

``z`` is a batch of representations, ``(n_samples, n_features)``, as a NumPy array or a torch tensor
(detached; computed in float64 on the CPU). Results are floats, nats unless ``base`` says otherwise.

References
----------
.. [1] J. Kim, S. Kang, D. Hwang, J. Shin, W. Rhee, "VNE: an effective method for improving deep
       representation by manipulating eigenvalue distribution", CVPR 2023.
.. [2] Q. Garrido, R. Balestriero, L. Najman, Y. LeCun, "RankMe: assessing the downstream performance
       of pretrained self-supervised representations by their rank", ICML 2023.
.. [3] K. K. Agrawal, A. K. Mondal, A. Ghosh, B. Richards, "alpha-ReQ: assessing representation
       quality in self-supervised learning by measuring eigenspectrum decay", NeurIPS 2022.
.. [4] L. G. Sanchez Giraldo, M. Rao, J. C. Principe, "Measures of entropy from data using
       infinitely divisible kernels", IEEE Trans. Inf. Theory 61(1), 2015.
.. [5] R. Jenssen, J. C. Principe, D. Erdogmus, T. Eltoft, "The Cauchy-Schwarz divergence and Parzen
       windowing", J. Franklin Inst. 343, 2006.
.. [6] D. Liao, C. Liu, B. W. Christensen, A. Tong, G. Huguet, G. Wolf, M. Nickel, I. Adelstein,
       S. Krishnaswamy, "Assessing neural network representations during training using
       noise-resilient diffusion spectral entropy", ICML TAG-ML workshop / arXiv:2312.04823, 2023.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist, pdist

from entropykit._validate import check_int, check_positive, check_real

from ._samples import RandomState, check_base, check_samples, rng_of, to_base

__all__ = [
    "alpha_req",
    "cauchy_schwarz_divergence",
    "diffusion_spectral_entropy",
    "diffusion_spectral_mutual_info",
    "matrix_mutual_info",
    "matrix_renyi_entropy",
    "rankme",
    "von_neumann_entropy",
]


def _shannon(p: np.ndarray) -> float:
    q = p[p > 0]
    return float(-np.sum(q * np.log(q))) + 0.0


def von_neumann_entropy(z: Any, *, normalize_rows: bool = True, base: float = math.e) -> float:
    r"""Von Neumann entropy of the representations' auto-correlation, :math:`-\sum_i \lambda_i \log
    \lambda_i` with :math:`\lambda` the eigenvalues of :math:`C = Z^\top Z / n` divided by their sum
    (rows L2-normalised first when ``normalize_rows``, as in VNE [1]_, so that :math:`\mathrm{tr}\,C = 1`).
    Between 0 (rank one: collapse) and :math:`\log d` (isotropic). Nats (``base=2``: bits).

    >>> import numpy as np
    >>> round(von_neumann_entropy(np.eye(4)), 4), round(float(np.log(4)), 4)
    (1.3863, 1.3863)
    >>> round(von_neumann_entropy(np.ones((5, 3))), 9)  # every row the same direction
    0.0
    """
    a = check_samples(z, "z", min_samples=1)
    if normalize_rows:
        norm = np.linalg.norm(a, axis=1, keepdims=True)
        if (norm == 0).any():
            raise ValueError(f"z must have no all-zero row when normalize_rows=True, got row "
                             f"{int(np.flatnonzero(norm[:, 0] == 0)[0])}")
        a = a / norm
    lam = np.clip(np.linalg.eigvalsh(a.T @ a / a.shape[0]), 0, None)
    if lam.sum() == 0:
        raise ValueError("z must not be all zeros")
    return to_base(_shannon(lam / lam.sum()), check_base(base))


def rankme(z: Any, *, eps: float = 1e-7) -> float:
    r"""RankMe, the smooth effective rank of the representations: :math:`\exp(-\sum_k p_k \log p_k)`
    with :math:`p_k = \sigma_k / \lVert\sigma\rVert_1 + \epsilon` over the singular values of Z
    (``eps`` = 1e-7 as in the paper [2]_). Between 1 and :math:`\min(n, d)`.

    >>> import numpy as np
    >>> round(rankme(np.eye(6)), 3), round(rankme(np.ones((6, 4))), 3)
    (6.0, 1.0)
    """
    a = check_samples(z, "z", min_samples=1)
    eps = check_positive(eps, "eps", allow_zero=True)
    s = np.linalg.svd(a, compute_uv=False)
    if s.sum() == 0:
        raise ValueError("z must not be all zeros")
    p = s / s.sum() + eps
    return float(math.exp(-np.sum(p * np.log(p))))


def alpha_req(z: Any, *, fit_from: int = 1, fit_to: int | None = None) -> float:
    r"""alpha-ReQ: the exponent :math:`\alpha` of a power-law decay :math:`\lambda_i \propto i^{-\alpha}`
    of the eigenvalues of the representations' covariance, by least squares of :math:`\log\lambda_i`
    on :math:`\log i` over the ranks ``fit_from..fit_to`` (1-based, inclusive; default: every
    positive eigenvalue). Near 1 is the sweet spot reported for good representations [3]_; large
    alpha means collapse onto few directions, small alpha a flat (noisy) spectrum.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.standard_normal((4000, 32)) * np.arange(1, 33) ** -1.0  # variance ~ i^-2
    >>> round(alpha_req(z, fit_to=16), 1)
    2.0
    """
    a = check_samples(z, "z")
    a = a - a.mean(axis=0)
    lam = np.sort(np.linalg.eigvalsh(a.T @ a / (a.shape[0] - 1)))[::-1]
    lam = lam[lam > lam[0] * 1e-12] if lam[0] > 0 else lam[:0]
    hi = lam.size if fit_to is None else min(int(fit_to), lam.size)
    lo = int(fit_from)
    if lo < 1 or hi - lo + 1 < 2:
        raise ValueError(f"fit_from..fit_to must cover at least 2 positive eigenvalues, got {lo}..{hi} "
                         f"({lam.size} positive)")
    ranks = np.arange(lo, hi + 1)
    slope = np.polyfit(np.log(ranks), np.log(lam[lo - 1:hi]), 1)[0]
    return float(-slope)


def _gram(a: np.ndarray, sigma: float | None) -> np.ndarray:
    d2 = cdist(a, a, "sqeuclidean")
    if sigma is None:  # median heuristic
        sigma = float(np.sqrt(0.5 * np.median(pdist(a, "sqeuclidean")))) or 1.0
    k = np.exp(-d2 / (2 * sigma**2))
    return k / a.shape[0]  # trace 1 (unit diagonal kernel)


def _renyi(a: np.ndarray, alpha: float) -> float:
    lam = np.clip(np.linalg.eigvalsh(a), 0, None)
    lam = lam / lam.sum()
    if alpha == 1.0:
        return _shannon(lam)
    return float(math.log(np.sum(lam[lam > 0] ** alpha)) / (1 - alpha))


def matrix_renyi_entropy(
    x: Any, *, alpha: float = 2.0, sigma: float | None = None, base: float = math.e
) -> float:
    r"""Matrix-based Rényi alpha-entropy (Sanchez Giraldo et al. [4]_):
    :math:`S_\alpha(A) = \frac{1}{1-\alpha} \log \sum_i \lambda_i(A)^\alpha`, with A the Gaussian Gram
    matrix :math:`\kappa(x_i, x_j) = \exp(-\lVert x_i - x_j\rVert^2 / 2\sigma^2)` divided by n (trace 1);
    ``alpha=1`` gives the von Neumann entropy. ``sigma=None``: the median heuristic. Between 0 and
    :math:`\log n`; a functional of the sample, not a density estimate. Nats (``base=2``: bits).

    >>> import numpy as np
    >>> x = np.arange(8.0)[:, None] * 100  # far apart: A = I / n
    >>> round(matrix_renyi_entropy(x, sigma=1.0), 4), round(float(np.log(8)), 4)
    (2.0794, 2.0794)
    """
    a = check_samples(x, "x")
    alpha = check_positive(alpha, "alpha")
    sigma = None if sigma is None else check_positive(sigma, "sigma")
    return to_base(_renyi(_gram(a, sigma), alpha), check_base(base))


def matrix_mutual_info(
    x: Any, y: Any, *, alpha: float = 2.0, sigma_x: float | None = None, sigma_y: float | None = None,
    base: float = math.e,
) -> float:
    r"""Matrix-based Rényi mutual information :math:`S_\alpha(A) + S_\alpha(B) - S_\alpha\big(
    \frac{A \circ B}{\mathrm{tr}(A \circ B)}\big)` (Hadamard product for the joint), Sanchez Giraldo et
    al. [4]_. Non-negative; nats (``base=2``: bits).

    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((200, 2))
    >>> matrix_mutual_info(x, x) > matrix_mutual_info(x, np.random.default_rng(1).standard_normal((200, 2)))
    True
    """
    a, c = check_samples(x, "x"), check_samples(y, "y")
    if a.shape[0] != c.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {a.shape[0]} and {c.shape[0]}")
    alpha = check_positive(alpha, "alpha")
    ga = _gram(a, None if sigma_x is None else check_positive(sigma_x, "sigma_x"))
    gb = _gram(c, None if sigma_y is None else check_positive(sigma_y, "sigma_y"))
    joint = ga * gb
    joint = joint / np.trace(joint)
    return to_base(_renyi(ga, alpha) + _renyi(gb, alpha) - _renyi(joint, alpha), check_base(base))


def cauchy_schwarz_divergence(x: Any, y: Any, *, sigma: float = 1.0, base: float = math.e) -> float:
    r"""Cauchy-Schwarz divergence :math:`D_{CS}(p, q) = -\log \frac{(\int p q)^2}{\int p^2 \int q^2}`
    between Gaussian Parzen estimates of width ``sigma`` of the densities of ``x`` and ``y`` (Jenssen
    et al. [5]_): each integral is a mean of Gaussian kernels of width :math:`\sigma\sqrt2` over pairs
    (within a sample: distinct pairs only). Symmetric, 0 for equal samples, unchanged by a common
    shift. For :math:`N(\mu_1, s^2 I)` vs :math:`N(\mu_2, s^2 I)` it tends to
    :math:`\lVert\mu_1-\mu_2\rVert^2 / 2(s^2+\sigma^2)`. Nats (``base=2``: bits).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p, q = rng.normal(0, 1, (2000, 1)), rng.normal(2, 1, (2000, 1))
    >>> round(cauchy_schwarz_divergence(p, q, sigma=1.0), 1)  # truth 2^2 / (2 * 2) = 1
    1.0
    """
    a, c = check_samples(x, "x"), check_samples(y, "y")
    if a.shape[1] != c.shape[1]:
        raise ValueError(f"y must have the same number of features as x ({a.shape[1]}), got {c.shape[1]}")
    sigma = check_real(sigma, "sigma", 0.0, lo_open=True, finite=True)

    def mean_kernel(u: np.ndarray, v: np.ndarray | None) -> float:
        if v is None:
            return float(np.mean(np.exp(-pdist(u, "sqeuclidean") / (4 * sigma**2))))
        return float(np.mean(np.exp(-cdist(u, v, "sqeuclidean") / (4 * sigma**2))))

    pq, pp, qq = mean_kernel(a, c), mean_kernel(a, None), mean_kernel(c, None)
    if min(pq, pp, qq) == 0:
        raise ValueError(f"sigma must be large enough for the kernels to overlap, got {sigma}")
    return to_base(math.log(pp) + math.log(qq) - 2 * math.log(pq), check_base(base))


def _dse(a: np.ndarray, sigma: float, t: int) -> float:
    g = np.exp(-cdist(a, a, "sqeuclidean") / (2 * sigma**2))
    s = 1.0 / np.sqrt(g.sum(axis=1))
    lam = np.abs(np.linalg.eigvalsh(s[:, None] * g * s[None, :])) ** t  # = eig of D^-1 G
    return _shannon(lam / lam.sum())


def diffusion_spectral_entropy(z: Any, *, sigma: float = 10.0, t: int = 1, base: float = math.e) -> float:
    r"""Diffusion spectral entropy (DSE) of representations (Liao et al. [6]_): the Shannon entropy of
    the t-th powers of the eigenvalue magnitudes of the diffusion operator of the data graph,

    .. math:: S_D(P, t) = -\sum_i \alpha_i \log \alpha_i, \quad
              \alpha_i = \frac{|\lambda_i|^t}{\sum_j |\lambda_j|^t},

    with :math:`\lambda_i` the eigenvalues of :math:`P = D^{-1} G`,
    :math:`G_{ij} = \exp(-\lVert z_i - z_j\rVert^2 / 2\sigma^2)`, :math:`D = \mathrm{diag}(G\mathbf 1)`
    (computed from the symmetric :math:`D^{-1/2} G D^{-1/2}`, which has the same eigenvalues).
    Between 0 (one connected blob at large t) and :math:`\log n` (every point isolated); c tight,
    well-separated clusters give :math:`\log c`. ``sigma`` (default 10, the authors' code default) is
    in the units of ``z``; the diffusion time ``t`` damps small (noise) eigenvalues. Nats
    (``base=2``: bits; the authors report bits). Reference: Liao et al. (2023) [6]_.

    >>> import numpy as np
    >>> centres = np.repeat(np.eye(3) * 100, 10, axis=0)  # 3 tight clusters of 10 points
    >>> round(diffusion_spectral_entropy(centres, sigma=1.0), 4), round(float(np.log(3)), 4)
    (1.0986, 1.0986)
    """
    a = check_samples(z, "z")
    sigma = check_real(sigma, "sigma", 0.0, lo_open=True, finite=True)
    t = check_int(t, "t", 1)
    return to_base(_dse(a, sigma, t), check_base(base))


def diffusion_spectral_mutual_info(
    z: Any, labels: Any, *, sigma: float = 10.0, t: int = 1, n_repetitions: int = 5,
    random_state: RandomState = 0, base: float = math.e,
) -> float:
    r"""Diffusion spectral mutual information (DSMI) between representations ``z`` and discrete
    ``labels`` (Liao et al. [6]_): :math:`I_D(Z; Y) = S_D(Z) - \sum_y p(y) S_D(Z \mid Y = y)`,
    computed as the authors' code does, class by class against random subsets of the same size (so
    that both entropies see as many points):

    .. math:: I_D = \sum_y p(y) \big[\overline{S_D(Z^*_y)} - S_D(Z_{Y=y})\big],

    with :math:`Z^*_y` ``n_repetitions`` random subsets of :math:`|\{Y = y\}|` rows (seeded by
    ``random_state``) and :math:`S_D` the :func:`diffusion_spectral_entropy` with ``sigma`` and ``t``.
    Continuous references must be binned or clustered first. Not a Shannon mutual information: its
    scale is the spectral entropy's (at most :math:`\log n`). Nats (``base=2``: bits).

    >>> import numpy as np
    >>> y = np.repeat(np.arange(4), 40)
    >>> z = np.eye(4)[y] * 100  # the label fixes the cluster: DSMI = log 4 - 0
    >>> round(diffusion_spectral_mutual_info(z, y, sigma=1.0), 4), round(float(np.log(4)), 4)
    (1.3863, 1.3863)
    """
    a = check_samples(z, "z")
    lab = check_samples(labels, "labels")
    if a.shape[0] != lab.shape[0]:
        raise ValueError(f"z and labels must have the same number of samples, got {a.shape[0]} and "
                         f"{lab.shape[0]}")
    sigma = check_real(sigma, "sigma", 0.0, lo_open=True, finite=True)
    t = check_int(t, "t", 1)
    reps = check_int(n_repetitions, "n_repetitions", 1)
    rng = rng_of(random_state)
    n = a.shape[0]
    classes, inverse, counts = np.unique(lab, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    total = 0.0
    for c in range(classes.shape[0]):
        m = int(counts[c])
        cond = _dse(a[inverse == c], sigma, t)
        marg = float(np.mean([_dse(a[rng.choice(n, m, replace=False)], sigma, t) for _ in range(reps)]))
        total += m / n * (marg - cond)
    return to_base(total, check_base(base))
