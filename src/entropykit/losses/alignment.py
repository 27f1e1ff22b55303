"""Exact alignment policies on a discrete response space: the KL-regularised optimum (tilt) and best-of-N.

A base (reference) distribution p over responses y (the last axis) and a reward r(y):

- :func:`tilted_policy`: pi*_beta(y) ∝ p(y) exp(r(y) / beta), the maximiser of E_pi[r] - beta KL(pi || p)
  (the optimum DPO's loss is minimised at, Rafailov et al. 2023, Eq. 4);
- :func:`best_of_n` / :func:`best_of_n_kl`: the exact distribution of the best of N i.i.d. draws from p
  ranked by r, ties included, and its KL to p; :func:`best_of_n_kl_bound`: log N - (N - 1) / N
  (Beirami et al. 2024, arXiv:2401.01879);
- :func:`tilt_at_kl` and :func:`bon_vs_tilt`: the tilt with the same KL as best-of-N and the two expected
  rewards side by side ("Asymptotics of language model alignment", Yang et al. 2024, arXiv:2404.01730:
  BoN is asymptotically equivalent to the tilt; at matched KL the tilt's reward is never lower).

Everything is computed in float64; KL in nats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from entropykit._validate import (
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_real,
    check_same_shape,
    check_tensor,
)

__all__ = ["BonVsTilt", "best_of_n", "best_of_n_kl", "best_of_n_kl_bound", "bon_vs_tilt",
           "f_regularised_policy", "policy_kl", "tilt_at_kl", "tilted_policy"]


def _probs(probs: Tensor, name: str = "probs") -> Tensor:
    check_tensor(probs, name, floating=True, min_dim=1)
    check_finite(probs, name)
    p = probs.double()
    if bool((p < 0).any()) or not bool(torch.allclose(p.sum(-1), torch.ones((), dtype=p.dtype), atol=1e-6)):
        raise ValueError(f"{name} must be non-negative and sum to 1 over the last axis, got sums "
                         f"{p.sum(-1).flatten()[:4].tolist()}")
    return p / p.sum(-1, keepdim=True)


def _reward(reward: Tensor, like: Tensor) -> Tensor:
    check_tensor(reward, "reward", floating=True, min_dim=1)
    check_same_shape(reward, like, "reward", "probs")
    check_finite(reward, "reward")
    return reward.double()


def policy_kl(q: Tensor, p: Tensor) -> Tensor:
    r"""KL(q || p) = sum_y q log(q / p) over the last axis (nats; 0 log 0 = 0, +inf where q > 0 = p).

    Example:
        >>> policy_kl(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])).item() == math.log(2)
        True
    """
    q, p = q.double(), p.double()
    terms = torch.where(q > 0, q * (q.log() - p.log()), torch.zeros((), dtype=q.dtype))
    return terms.sum(-1)


def tilted_policy(probs: Tensor, reward: Tensor, beta: float) -> Tensor:
    r"""The KL-regularised optimum :math:`\pi^*(y) = p(y) e^{r(y)/\beta} / Z` (float64 probabilities).

    It maximises :math:`E_\pi[r] - \beta\,\mathrm{KL}(\pi \| p)` (Korbak et al. 2022; Rafailov et al.
    2023, Eq. 4). beta > 0 (beta = inf returns p).

    Example:
        >>> tilted_policy(torch.tensor([0.5, 0.5]), torch.tensor([0.0, math.log(3.0)]), 1.0)
        tensor([0.2500, 0.7500], dtype=torch.float64)
    """
    p = _probs(probs)
    r = _reward(reward, p)
    b = check_positive(beta, "beta", allow_inf=True)
    return torch.softmax(p.log() + r / b, -1)


def _score_inverse(v: Tensor, divergence: str, alpha: float) -> Tensor:
    """u = s^{-1}(v) for the f-DPO scores of ``losses.preference.f_divergence_score``."""
    if divergence == "reverse_kl":
        return v
    if divergence == "forward_kl":  # s = 1 - e^{-u}
        return -torch.log1p(-v)
    if divergence == "js_divergence":  # s = log 2 + log sigmoid(u)
        return v - math.log(2) - torch.log1p(-torch.exp(v) / 2)
    return torch.log1p((alpha - 1) * v) / (alpha - 1)  # s = (e^{(alpha - 1) u} - 1) / (alpha - 1)


def f_regularised_policy(probs: Tensor, reward: Tensor, beta: float, divergence: str = "reverse_kl",
                         alpha: float = 0.5) -> Tensor:
    r"""The optimum of :math:`E_\pi[r] - \beta D_f(\pi \| p)`: :math:`\beta f'(\pi(y)/p(y)) = r(y) + c`.

    With the f-DPO score s(u) = f'(e^u) (:func:`entropykit.losses.f_divergence_score`, the same
    ``divergence`` names and ``alpha``), :math:`\pi(y) = p(y)\exp(s^{-1}((r(y) + c)/\beta))`, the
    constant c found by bisection so that pi sums to 1 (Wang et al. 2024, arXiv:2309.16240, Thm. 1). It is
    the minimiser of the f-DPO sigmoid loss under Bradley-Terry preferences sigma(r_w - r_l);
    ``reverse_kl`` is :func:`tilted_policy`. 1-D ``probs`` (float64 result).

    Example:
        >>> p, r = torch.full((3,), 1 / 3), torch.tensor([0.0, 0.5, 1.0])
        >>> q = f_regularised_policy(p, r, 1.0, "forward_kl")
        >>> round(q.sum().item(), 12), bool(q[2] > q[1] > q[0])
        (1.0, True)
    """
    from entropykit.losses.preference import F_DIVERGENCES

    check_choice(divergence, F_DIVERGENCES, "divergence")
    a = check_real(alpha, "alpha", finite=True)
    if divergence == "reverse_kl" or (divergence == "alpha_divergence" and abs(a - 1.0) < 1e-6):
        return tilted_policy(probs, reward, beta)
    p = _probs(probs)
    if p.dim() != 1:
        raise ValueError(f"probs must be 1-D, got shape {tuple(p.shape)}")
    r = _reward(reward, p)
    b = check_positive(beta, "beta")
    vhi = {"forward_kl": 1.0, "js_divergence": math.log(2)}.get(divergence,
                                                                1 / (1 - a) if a < 1 else math.inf)
    vlo = -1 / (a - 1) if divergence == "alpha_divergence" and a > 1 else -math.inf
    logp = p.log()

    def log_mass(c: float) -> float:
        return float(torch.logsumexp(logp + _score_inverse((r + c) / b, divergence, a), 0))

    hi = b * vhi - float(r.max()) if math.isfinite(vhi) else None
    lo = b * vlo - float(r.min()) if math.isfinite(vlo) else None
    if lo is None:
        assert hi is not None
        lo = hi - 1.0
        while log_mass(lo) > 0:
            lo = hi - 2 * (hi - lo)
    if hi is None:
        hi = lo + 1.0
        while log_mass(hi) < 0:
            hi = lo + 2 * (hi - lo)
    elif not log_mass(lo + (1 - 1e-12) * (hi - lo)) > 0:  # pragma: no cover - the mass diverges at hi
        raise ValueError("no normalising constant: the optimum leaves the support")
    if math.isfinite(vlo) and log_mass(lo + 1e-12 * (hi - lo)) > 0:
        raise ValueError(f"alpha = {a} > 1: the optimum puts zero mass on some responses (not supported)")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if log_mass(mid) > 0:
            hi = mid
        else:
            lo = mid
    c = 0.5 * (lo + hi)
    out = torch.exp(logp + _score_inverse((r + c) / b, divergence, a))
    return out / out.sum()


def best_of_n(probs: Tensor, reward: Tensor, n: int) -> Tensor:
    r"""Exact distribution of best-of-N: draw N responses i.i.d. from p, keep the one of highest reward.

    With :math:`F(y) = P_p(r(Y) \le r(y))`, :math:`F(y^-) = P_p(r(Y) < r(y))` and the level mass
    :math:`m(y) = F(y) - F(y^-)`, a tie among the best is broken uniformly (any rule blind to the
    response gives the same law), so

    .. math:: \pi_N(y) = \frac{p(y)}{m(y)}\,\big(F(y)^N - F(y^-)^N\big)

    which is :math:`F(y)^N - F(y^-)^N` without ties (Beirami et al. 2024, Lemma 1). Float64; batched
    over leading axes.

    Example:
        >>> best_of_n(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), 2)
        tensor([0.2500, 0.7500], dtype=torch.float64)
    """
    p = _probs(probs)
    r = _reward(reward, p)
    k = check_int(n, "n", 1)
    rs, order = torch.sort(r, -1)
    cum = torch.cat([torch.zeros_like(p[..., :1]), p.gather(-1, order).cumsum(-1)], -1).clamp(max=1.0)
    hi = cum.gather(-1, torch.searchsorted(rs.contiguous(), r.contiguous(), right=True))
    lo = cum.gather(-1, torch.searchsorted(rs.contiguous(), r.contiguous(), right=False))
    mass = hi - lo
    level = hi.pow(k) - lo.pow(k)
    out = torch.where(p > 0, p * level / mass.clamp(min=torch.finfo(p.dtype).tiny), torch.zeros_like(p))
    return out / out.sum(-1, keepdim=True)


def best_of_n_kl(probs: Tensor, reward: Tensor, n: int) -> Tensor:
    r"""Exact KL(pi_N || p) of best-of-N to its base (nats), from :func:`best_of_n`.

    Without ties it is at most :func:`best_of_n_kl_bound` (n) = log N - (N - 1)/N.

    Example:
        >>> p = torch.full((1000,), 1e-3)
        >>> best_of_n_kl(p, torch.arange(1000.0), 4).item() <= best_of_n_kl_bound(4)
        True
    """
    p = _probs(probs)
    return policy_kl(best_of_n(p, reward, n), p)


def best_of_n_kl_bound(n: int) -> float:
    r"""log N - (N - 1)/N (nats): KL(best-of-N || base) for a continuous reward distribution, and an upper
    bound on it for a discrete one (Beirami et al. 2024, arXiv:2401.01879, Thm. 1).

    Example:
        >>> best_of_n_kl_bound(1)
        0.0
    """
    k = check_int(n, "n", 1)
    return math.log(k) - (k - 1) / k


def tilt_at_kl(probs: Tensor, reward: Tensor, kl: float, *, tol: float = 1e-12) -> float:
    r"""The beta whose tilt :math:`p e^{r/\beta}/Z` has KL(tilt || p) = ``kl`` (bisection on 1/beta).

    KL(tilt || p) grows monotonically from 0 (beta = inf) to -log p(argmax r) (beta -> 0); ``kl`` must
    lie in [0, that). 1-D ``probs``. Returns inf for ``kl`` = 0.

    Example:
        >>> p, r = torch.full((4,), 0.25), torch.arange(4.0)
        >>> b = tilt_at_kl(p, r, 0.1)
        >>> round(policy_kl(tilted_policy(p, r, b), p).item(), 9)
        0.1
    """
    p = _probs(probs)
    if p.dim() != 1:
        raise ValueError(f"probs must be 1-D, got shape {tuple(p.shape)}")
    r = _reward(reward, p)
    target = check_positive(kl, "kl", allow_zero=True)
    if target == 0:
        return math.inf
    top = r[p > 0].max()
    kl_max = float(-p[(r == top) & (p > 0)].sum().log())
    if not target < kl_max:
        raise ValueError(f"kl must be < {kl_max:.6g} (the KL of the argmax-reward policy), got {kl}")

    def kl_at(lam: float) -> float:
        return float(policy_kl(torch.softmax(p.log() + lam * r, -1), p))

    lo, hi = 0.0, 1.0
    while kl_at(hi) < target:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            raise ValueError(f"kl = {kl} is not reached by any finite beta")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if kl_at(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= tol * hi:
            break
    return 1.0 / (0.5 * (lo + hi))


class BonVsTilt(NamedTuple):
    """:func:`bon_vs_tilt`: best-of-N and the tilt at the same KL to the base (nats, reward units)."""

    n: int
    kl: float  # KL(best-of-N || p) = KL(tilt || p)
    kl_bound: float  # log N - (N - 1) / N
    beta: float  # the matched tilt's beta
    bon_reward: float  # E_{best-of-N}[r]
    tilt_reward: float  # E_{tilt}[r] (>= bon_reward: the tilt is the KL-constrained optimum)
    kl_bon_to_tilt: float  # KL(best-of-N || tilt)


def bon_vs_tilt(probs: Tensor, reward: Tensor, n: int) -> BonVsTilt:
    r"""Best-of-N against the KL-regularised optimum at matched KL (Yang et al. 2024, arXiv:2404.01730).

    The tilt maximises E[r] at any fixed KL to p, so ``tilt_reward >= bon_reward``; the paper shows the
    two policies are asymptotically equivalent (KL between them -> 0 relative to the KL to p).

    Example:
        >>> c = bon_vs_tilt(torch.full((100,), 0.01), torch.linspace(0, 1, 100), 8)
        >>> c.tilt_reward >= c.bon_reward and c.kl <= c.kl_bound
        True
    """
    p = _probs(probs)
    if p.dim() != 1:
        raise ValueError(f"probs must be 1-D, got shape {tuple(p.shape)}")
    r = _reward(reward, p)
    k = check_int(n, "n", 1)
    q = best_of_n(p, r, k)
    kl = float(policy_kl(q, p))
    beta = tilt_at_kl(p, r, kl)
    t = tilted_policy(p, r, beta)
    return BonVsTilt(k, kl, best_of_n_kl_bound(k), beta, float((q * r).sum()), float((t * r).sum()),
                     float(policy_kl(q, t)))
