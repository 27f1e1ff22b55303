"""Split conformal prediction sets (LAC, APS, RAPS) and conformal risk control.

Split conformal: compute a non-conformity score s(x, y) on n held-out calibration pairs, take
q = the ceil((n + 1)(1 - alpha))-th smallest score (+inf when that exceeds n), and predict
C(x) = {y : s(x, y) <= q}. For exchangeable data, P(y in C(x)) >= 1 - alpha, and (for continuous
scores, no ties) <= 1 - alpha + 1/(n + 1) (Vovk et al. 2005; Lei et al. 2018).

Scores (p = softmax of the logits):

- ``lac``: s = 1 - p_y (least ambiguous set-valued classifier; Sadinle et al. 2019);
- ``aps``: s = sum of the probabilities ranked above y + u p_y, u ~ U(0, 1) (``randomized=False``:
  u = 1) (adaptive prediction sets; Romano et al. 2020);
- ``raps``: APS + lam (rank(y) - k_reg)^+ with rank 1 = the top class (Angelopoulos et al. 2021,
  arXiv:2009.14193).

Conformal risk control (Angelopoulos et al. 2022, arXiv:2208.02814): for losses L_i(lambda) in
[0, B], non-increasing in lambda, lambda_hat = the smallest lambda on the grid with
(n / (n + 1)) mean_i L_i(lambda) + B / (n + 1) <= alpha gives E[L_test(lambda_hat)] <= alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_choice, check_int, check_positive, check_real, check_tensor
from entropykit.uncertainty._common import class_log_probs, labels_for, vector

__all__ = [
    "CONFORMAL_SCORES",
    "SplitConformal",
    "conformal_quantile",
    "conformal_scores",
    "coverage",
    "risk_control",
]

CONFORMAL_SCORES = ("lac", "aps", "raps")


def conformal_quantile(scores: Any, alpha: float) -> float:
    """q = the ceil((n + 1)(1 - alpha))-th smallest of n calibration scores; +inf if that is > n.

    The finite-sample-corrected (1 - alpha) quantile: a new exchangeable score is <= q with
    probability >= 1 - alpha (Vovk et al. 2005).

    >>> conformal_quantile([0.1, 0.4, 0.2, 0.3], 0.2)  # ceil(5 * 0.8) = 4th smallest
    0.4
    >>> conformal_quantile([0.1, 0.4], 0.2)
    inf
    """
    s = vector(scores, "scores")
    a = check_real(alpha, "alpha", 0, 1, lo_open=True, hi_open=True)
    n = s.numel()
    k = math.ceil((n + 1) * (1 - a) - 1e-12)  # guard 0.8 * 5 = 4.000000000000001
    if k > n:
        return math.inf
    return float(torch.sort(s).values[k - 1])


def _rank_mass(p: Tensor) -> tuple[Tensor, Tensor]:
    """For every class: the probability mass ranked strictly above it and its 1-based rank
    (ties broken by class index, as a stable descending sort)."""
    order = torch.argsort(p, dim=-1, descending=True, stable=True)
    sp = p.gather(-1, order)
    above_sorted = sp.cumsum(-1) - sp
    rank_sorted = torch.arange(1, p.shape[-1] + 1, dtype=torch.float64).expand_as(p)
    above = torch.empty_like(p).scatter_(-1, order, above_sorted)
    rank = torch.empty_like(p).scatter_(-1, order, rank_sorted)
    return above, rank


def _all_scores(p: Tensor, method: str, u: Tensor | None, lam: float, k_reg: int) -> Tensor:
    """(N, K) score of every (sample, class) pair."""
    if method == "lac":
        return 1 - p
    above, rank = _rank_mass(p)
    s = above + (u[:, None] if u is not None else 1.0) * p
    if method == "raps":
        s = s + lam * (rank - k_reg).clamp(min=0)
    return s


def _uniforms(n: int, randomized: bool, generator: torch.Generator | None) -> Tensor | None:
    if not randomized:
        return None
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _params(method: Any, lam: Any, k_reg: Any) -> tuple[str, float, int]:
    check_choice(method, CONFORMAL_SCORES, "method")
    return method, check_positive(lam, "lam", allow_zero=True), check_int(k_reg, "k_reg", 0)


def conformal_scores(
    logits: Tensor,
    labels: Tensor,
    *,
    method: str = "lac",
    randomized: bool = True,
    lam: float = 0.01,
    k_reg: int = 5,
    probs: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Non-conformity score s(x_i, y_i) of each labelled pair (the calibration scores), float64 (N,).

    See the module docstring for the three scores. ``randomized`` (APS/RAPS): one uniform per
    sample from ``generator``. ``lam``, ``k_reg``: the RAPS penalty and the rank it starts after.

    >>> p = torch.tensor([[0.6, 0.3, 0.1]])
    >>> [round(float(conformal_scores(p, torch.tensor([1]), method=m, probs=True, randomized=False)), 6)
    ...  for m in ("lac", "aps")]
    [0.7, 0.9]
    """
    lp = class_log_probs(logits, "logits", probs=probs)
    y = labels_for(labels, lp.shape[0], lp.shape[1])
    m, lam_, k = _params(method, lam, k_reg)
    s = _all_scores(lp.exp(), m, _uniforms(lp.shape[0], randomized and m != "lac", generator), lam_, k)
    return s.gather(1, y[:, None]).squeeze(1)


@dataclass
class SplitConformal:
    """Split conformal prediction sets: ``fit`` on a calibration split, then ``predict`` sets.

    ``predict`` returns a bool mask (N, K): class k is in the set of sample i iff
    s(x_i, k) <= q (with APS/RAPS one uniform per test sample, shared by its classes). With
    ``alpha`` = 0.1, the sets contain the true label for at least 90% of exchangeable test samples
    on average over calibration splits.

    >>> g = torch.Generator().manual_seed(0)
    >>> cal = torch.randn(200, 5, generator=g) * 2
    >>> y = torch.distributions.Categorical(logits=cal).sample()
    >>> cp = SplitConformal(alpha=0.1, method="aps").fit(cal, y, generator=g)
    >>> sets = cp.predict(torch.randn(3, 5, generator=g) * 2, generator=g)
    >>> sets.shape, sets.dtype
    (torch.Size([3, 5]), torch.bool)
    """

    alpha: float = 0.1
    method: str = "lac"
    randomized: bool = True
    lam: float = 0.01
    k_reg: int = 5
    probs: bool = False
    qhat: float | None = field(default=None, init=False)
    n_calibration: int = field(default=0, init=False)

    def fit(
        self, logits: Tensor, labels: Tensor, *, generator: torch.Generator | None = None
    ) -> SplitConformal:
        """Compute q from the calibration split (see :func:`conformal_quantile`)."""
        check_real(self.alpha, "alpha", 0, 1, lo_open=True, hi_open=True)
        scores = conformal_scores(
            logits,
            labels,
            method=self.method,
            randomized=self.randomized,
            lam=self.lam,
            k_reg=self.k_reg,
            probs=self.probs,
            generator=generator,
        )
        self.qhat = conformal_quantile(scores, self.alpha)
        self.n_calibration = int(scores.numel())
        return self

    def predict(self, logits: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Prediction sets as a bool mask (N, K)."""
        if self.qhat is None:
            raise ValueError("SplitConformal must be fitted first: call fit(calibration_logits, labels)")
        lp = class_log_probs(logits, "logits", probs=self.probs)
        m, lam, k = _params(self.method, self.lam, self.k_reg)
        u = _uniforms(lp.shape[0], self.randomized and m != "lac", generator)
        return _all_scores(lp.exp(), m, u, lam, k) <= self.qhat


def coverage(sets: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose set contains the label: mean_i 1[y_i in C(x_i)].

    >>> coverage(torch.tensor([[True, False], [False, False]]), torch.tensor([0, 1]))
    0.5
    """
    check_tensor(sets, "sets")
    if sets.dtype != torch.bool or sets.dim() != 2:
        raise TypeError(
            f"sets must be a bool tensor (n_samples, n_classes), got {sets.dtype} {tuple(sets.shape)}"
        )
    y = labels_for(labels, sets.shape[0], sets.shape[1])
    return float(sets.gather(1, y[:, None]).double().mean())


def risk_control(losses: Tensor, lambdas: Any, alpha: float, *, bound: float = 1.0) -> float:
    """Conformal risk control: the smallest lambda with (n/(n+1)) R_n(lambda) + B/(n+1) <= alpha.

    ``losses`` (n, G): L_i(lambda_g) of each calibration sample on the grid ``lambdas`` (G,
    increasing); each in [0, ``bound``] and non-increasing in lambda (e.g. the false-negative rate
    of a set that grows with lambda). Returns lambda_hat; if no grid point qualifies, the largest
    lambda (the method then promises nothing: make the grid reach a loss of 0). Guarantee:
    E[L_test(lambda_hat)] <= alpha (Angelopoulos et al. 2022, arXiv:2208.02814, Theorem 1).

    >>> lam = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    >>> losses = (torch.tensor([[0.05], [0.35], [0.65], [0.95]]) > lam).double()  # miss if t > lam
    >>> risk_control(losses, lam, 0.5)  # (4/5) R + 1/5 <= 0.5  <=>  R <= 0.375: R(0.75) = 0.25
    0.75
    """
    check_tensor(losses, "losses", floating=True)
    lam = vector(lambdas, "lambdas")
    if losses.dim() != 2 or losses.shape[1] != lam.numel() or losses.shape[0] == 0:
        raise ValueError(
            f"losses must have shape (n_samples >= 1, len(lambdas)={lam.numel()}), got {tuple(losses.shape)}"
        )
    if bool((lam.diff() <= 0).any()):
        raise ValueError("lambdas must be strictly increasing")
    a = check_real(alpha, "alpha", 0, 1, lo_open=True, hi_open=True)
    b = check_positive(bound, "bound")
    x = losses.detach().double()
    if not bool(torch.isfinite(x).all()) or bool(((x < 0) | (x > b)).any()):
        raise ValueError(
            f"losses must lie in [0, bound={b}], got values in [{float(x.min())}, {float(x.max())}]"
        )
    if bool((x.diff(dim=1) > 1e-12).any()):
        raise ValueError("losses must be non-increasing in lambda (along each row)")
    n = x.shape[0]
    ok = (n / (n + 1)) * x.mean(0) + b / (n + 1) <= a
    idx = int(ok.nonzero()[0]) if bool(ok.any()) else lam.numel() - 1
    return float(lam[idx])
