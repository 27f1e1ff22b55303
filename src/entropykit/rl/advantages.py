"""Outcome advantages for group-sampled responses (GRPO, Dr. GRPO, RLOO, QAE) and EMPG modulation.

Rewards are one scalar per response, shape (B,); ``groups`` says which prompt each response answers:
an int G (contiguous groups of G responses, TRL's layout) or a (B,) integer tensor of group ids
(verl's ``index``). Results have shape (B,): broadcast them over the tokens of each response (the
policy losses accept per-sequence advantages directly).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_int, check_positive, check_real, check_tensor
from entropykit.rl._common import as_float, as_mask, masked_mean, same_shape

__all__ = ["empg_advantages", "grpo_advantages", "qae_advantages", "rloo_advantages"]


def _rewards(rewards: Any) -> Tensor:
    r = as_float(rewards, "rewards")
    if r.dim() != 1:
        raise ValueError(f"rewards must have shape (B,), one scalar per response, got {tuple(r.shape)}")
    return r


def _groups(groups: Any, n: int, device: torch.device) -> tuple[Tensor, int]:
    """(group index in [0, G) per response, number of groups)."""
    if isinstance(groups, int) and not isinstance(groups, bool):
        g = check_int(groups, "groups", 1)
        if n % g:
            raise ValueError(f"groups (group size) must divide the number of rewards {n}, got {g}")
        return torch.arange(n, device=device) // g, n // g
    check_tensor(groups, "groups")
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise TypeError(f"groups must be an int group size or an integer tensor of group ids, got dtype "
                        f"{groups.dtype}")
    if tuple(groups.shape) != (n,):
        raise ValueError(f"groups must have shape ({n},), one id per reward, got {tuple(groups.shape)}")
    _, inv = torch.unique(groups.to(device), return_inverse=True)
    return inv, int(inv.max()) + 1 if n else 0


def _group_mean_std(r: Tensor, gi: Tensor, ng: int) -> tuple[Tensor, Tensor, Tensor]:
    count = torch.zeros(ng, dtype=r.dtype, device=r.device).index_add_(0, gi, torch.ones_like(r))
    mean = torch.zeros(ng, dtype=r.dtype, device=r.device).index_add_(0, gi, r) / count
    dev2 = torch.zeros(ng, dtype=r.dtype, device=r.device).index_add_(0, gi, (r - mean[gi]) ** 2)
    std = (dev2 / (count - 1).clamp(min=1)).sqrt()
    return mean, std, count


def grpo_advantages(rewards: Tensor, groups: int | Tensor, *, norm_by_std: bool = True,
                    eps: float = 1e-6) -> Tensor:
    r"""GRPO group-normalised advantages :math:`A_i = (r_i - \bar r_g) / (s_g + \epsilon)`.

    :math:`\bar r_g`, :math:`s_g`: mean and (unbiased) standard deviation of the rewards of response
    i's group. ``norm_by_std=False`` gives Dr. GRPO's :math:`A_i = r_i - \bar r_g` (Liu et al. 2025).
    A group of one response gets mean 0 and std 1 (verl's rule). Sources: DeepSeekMath (Shao et al.
    2024); verl ``compute_grpo_outcome_advantage`` (eps 1e-6; TRL uses 1e-4).

    >>> grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
    tensor([ 0.7071, -0.7071, -0.7071,  0.7071])
    """
    r = _rewards(rewards)
    e = check_positive(eps, "eps", allow_zero=True)
    gi, ng = _groups(groups, r.numel(), r.device)
    mean, std, count = _group_mean_std(r, gi, ng)
    single = count == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    a = r - mean[gi]
    return a / (std[gi] + e) if norm_by_std else a


def rloo_advantages(rewards: Tensor, groups: int | Tensor) -> Tensor:
    r"""RLOO leave-one-out advantages :math:`A_i = r_i - \frac{1}{n-1}\sum_{j \ne i} r_j
    = \frac{n}{n-1}(r_i - \bar r_g)` (Ahmadian et al. 2024; verl ``compute_rloo_outcome_advantage``).

    A group of one response keeps its raw reward (verl's rule: there is no baseline).

    >>> rloo_advantages(torch.tensor([1.0, 0.0, 0.0]), 3)
    tensor([ 1.0000, -0.5000, -0.5000])
    """
    r = _rewards(rewards)
    gi, ng = _groups(groups, r.numel(), r.device)
    mean, _, count = _group_mean_std(r, gi, ng)
    n = count[gi]
    return torch.where(n > 1, (r - mean[gi]) * n / (n - 1).clamp(min=1), r)


def qae_advantages(rewards: Tensor, groups: int | Tensor, k: float = 0.4, *, norm_by_std: bool = False,
                   eps: float = 1e-6) -> Tensor:
    r"""Quantile advantages (QAE): :math:`A_i = r_i - Q_K(\{r_j\}_{j \in g})`.

    :math:`Q_K` is the lower K-quantile of the group's rewards, :math:`\inf\{x : F(x) \ge K\}` (the
    :math:`\lceil K n\rceil`-th smallest). With binary rewards and success rate p: if
    :math:`p \le 1 - K` the baseline is 0 and only the successes get signal (+1); otherwise it is 1
    and only the failures do (-1). Most responses get zero advantage, which caps the
    entropy-collapsing push of easy prompts (Wu et al. 2025, "Quantile Advantage Estimation for
    Entropy-Safe Reasoning"). ``norm_by_std`` divides by the group std + ``eps`` as GRPO does.
    ``k`` in (0, 1); 0.4 is a starting point, not a universal value.

    >>> qae_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]), 4, k=0.4)
    tensor([ 1.,  0.,  0.,  0.,  0.,  0.,  0., -1.])
    """
    r = _rewards(rewards)
    kk = check_real(k, "k", 0.0, 1.0, lo_open=True, hi_open=True)
    e = check_positive(eps, "eps", allow_zero=True)
    gi, ng = _groups(groups, r.numel(), r.device)
    base = torch.empty(ng, dtype=r.dtype, device=r.device)
    order = torch.argsort(gi, stable=True)
    counts = torch.bincount(gi, minlength=ng).tolist()
    start = 0
    for g, c in enumerate(counts):
        vals = torch.sort(r[order[start:start + c]]).values
        j = max(0, min(c - 1, math.ceil(kk * c - 1e-9 * c) - 1))
        base[g] = vals[j]
        start += c
    a = r - base[gi]
    if norm_by_std:
        _, std, _ = _group_mean_std(r, gi, ng)
        a = a / (std[gi] + e)
    return a


def empg_advantages(
    advantages: Tensor, entropy: Tensor, response_mask: Tensor, *, k: float = 1.0, zeta: float = 0.0,
    k_future: float = 1.0,
) -> Tensor:
    r"""Entropy-modulated advantages (EMPG, Wang et al. 2025, "Harnessing Uncertainty: Entropy-Modulated
    Policy Gradients for Long-Horizon LLM Agents"), self-calibrating form.

    With step entropies normalised over the valid steps of the batch,
    :math:`\hat H_t = (H_t - \min H) / (\max H - \min H + 10^{-8})`:
    :math:`g_t = e^{-k \hat H_t} / \mathrm{mean}_{valid}(e^{-k \hat H})` (mean 1: the batch's overall
    step size is unchanged; confident steps get larger updates, uncertain ones smaller), and
    :math:`A'_t = g_t A_t + \zeta\, e^{-k_f \hat H_{t+1}}` (the future-clarity bonus, 0 after the last
    step; ``zeta=0`` turns it off). A "step" is one position on the last axis (a token, or an agent
    step if you pass step-level entropies). Detached.

    >>> a = torch.tensor([[1.0, 1.0]]); h = torch.tensor([[0.0, 2.0]])
    >>> empg_advantages(a, h, torch.ones(1, 2), k=1.0)   # e^0 and e^-1, over their mean
    tensor([[1.4621, 0.5379]])
    """
    h = as_float(entropy, "entropy").detach()
    adv = as_float(advantages, "advantages").detach()
    same_shape(adv, "advantages", h, "entropy")
    mask = as_mask(response_mask, h)
    kk = check_positive(k, "k", allow_zero=True)
    z = check_real(zeta, "zeta", finite=True)
    kf = check_positive(k_future, "k_future", allow_zero=True)
    vals = h[mask]
    if vals.numel() == 0:
        return torch.where(mask, adv, torch.zeros_like(adv))
    lo, hi = vals.min(), vals.max()
    hn = (h - lo) / (hi - lo + 1e-8)
    g = torch.exp(-kk * hn)
    g = g / masked_mean(g, mask)
    out = g * adv
    if z != 0.0:
        nxt = torch.zeros_like(hn)
        nxt[..., :-1] = torch.exp(-kf * hn[..., 1:])
        valid_next = torch.zeros_like(mask)
        valid_next[..., :-1] = mask[..., 1:]
        out = out + z * torch.where(valid_next, nxt, torch.zeros_like(nxt))
    return torch.where(mask, out, torch.zeros_like(out))
