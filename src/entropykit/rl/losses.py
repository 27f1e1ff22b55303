"""Policy losses with verl's signature, including the covariance-based entropy controls.

Every loss is ``fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
**params) -> (loss, metrics)``: per-token tensors of shape (B, T) (``advantages`` may be per sequence,
(B,) or (B, 1)), ``response_mask`` bool or 0/1, ``metrics`` a dict of detached scalars (``pg_clipfrac``,
``pg_clipfrac_lower``, ``ppo_kl``, ...). ``normalizer`` (every loss) replaces the aggregation's
denominator by the whole batch's (see :func:`entropykit.rl.agg_loss`), so micro-batch losses add up
to the batch loss. ``weights`` (every loss; detached) multiplies the per-token loss before aggregation,
which keeps the denominator: a 0/1 high-entropy mask as TRL applies ``top_entropy_quantile``, or
:func:`entropykit.rl.entropic_weights`. ``selected`` (Clip-Cov, KL-Cov) takes the token selection
made once for the whole batch by :func:`cov_selection`, so it does not depend on the micro-batch split.

Sources: PPO (Schulman et al. 2017), clip-higher (DAPO, Yu et al. 2025), dual clip (Ye et al. 2020),
Clip-Cov and KL-Cov (Cui et al. 2025), GSPO (Zheng et al. 2025), CISPO (MiniMax-M1, 2025); the
formulas as in verl's ``core_algos`` and TRL's ``GRPOTrainer``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_choice, check_positive, check_real, check_tensor
from entropykit.rl._common import (
    LOSS_AGG_MODES,
    agg,
    as_advantages,
    as_float,
    as_mask,
    masked_mean,
    same_shape,
)
from entropykit.rl.stats import _cov

__all__ = [
    "cispo_loss",
    "clip_cov_loss",
    "cov_selection",
    "gpg_loss",
    "gspo_loss",
    "kl_cov_loss",
    "lp_reg_loss",
    "lp_reg_selection",
    "ppo_loss",
]

Metrics = dict[str, float]


def _inputs(old_log_prob: Any, log_prob: Any, advantages: Any, response_mask: Any, loss_agg_mode: Any,
            normalizer: Any, weights: Any = None) -> tuple[Tensor, Tensor, Tensor, Tensor, float | None]:
    lp = as_float(log_prob, "log_prob")
    old = as_float(old_log_prob, "old_log_prob")
    same_shape(old, "old_log_prob", lp, "log_prob")
    a = as_advantages(advantages, lp)
    mask = as_mask(response_mask, lp)
    check_choice(loss_agg_mode, LOSS_AGG_MODES, "loss_agg_mode")
    if normalizer is not None:
        normalizer = check_positive(normalizer, "normalizer", allow_zero=True)
    if weights is not None:
        w = as_float(weights, "weights")
        same_shape(w, "weights", lp, "log_prob")
    return old.to(lp.dtype), lp, a.to(lp.dtype), mask, normalizer


def _agg(loss_mat: Tensor, mask: Tensor, mode: str, norm: float | None, weights: Tensor | None) -> Tensor:
    if weights is not None:
        loss_mat = loss_mat * weights.detach().to(loss_mat.dtype)
    return agg(loss_mat, mask, mode, norm)


def _clip_range(eps: Any, low: Any, high: Any) -> tuple[float, float]:
    e = check_positive(eps, "clip_ratio", allow_zero=True)
    lo = e if low is None else check_positive(low, "clip_ratio_low", allow_zero=True)
    hi = e if high is None else check_positive(high, "clip_ratio_high", allow_zero=True)
    return lo, hi


def _ratio_param(x: Any, name: str) -> float:
    """A selection ratio in (0, 1]."""
    return check_real(x, name, 0.0, 1.0, lo_open=True)


def _f(x: Tensor) -> float:
    return float(x.detach())


def ppo_loss(
    old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
    loss_agg_mode: str = "token-mean", *, clip_ratio: float = 0.2, clip_ratio_low: float | None = None,
    clip_ratio_high: float | None = None, clip_ratio_c: float | None = 3.0, normalizer: float | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    r"""PPO/GRPO clipped surrogate with asymmetric clipping (clip-higher) and dual clip (verl "vanilla").

    :math:`r = \exp(\mathrm{clamp}(\log\pi - \log\pi_{old}, -20, 20))`,
    :math:`\ell = \max(-A r, -A\,\mathrm{clip}(r, 1-\epsilon_{lo}, 1+\epsilon_{hi}))`, and for
    :math:`A < 0` the dual clip :math:`\ell \leftarrow \min(\ell, -A c)` (``clip_ratio_c`` = c > 1;
    None turns it off). ``clip_ratio_low``/``_high`` default to ``clip_ratio``. Metrics: ``pg_clipfrac``
    (fraction of tokens where the clipped term is larger), ``pg_clipfrac_lower`` (dual-clipped), ``ppo_kl``
    (mean of :math:`\log\pi_{old} - \log\pi`). Units: advantage units per token.

    >>> lp = torch.log(torch.tensor([[0.5, 0.2]])); old = torch.log(torch.tensor([[0.25, 0.2]]))
    >>> loss, m = ppo_loss(old, lp, torch.tensor([[1.0, 1.0]]), torch.ones(1, 2))
    >>> round(float(loss), 4), m["pg_clipfrac"]   # (-1.2 - 1.0) / 2: the first ratio 2 is clipped to 1.2
    (-1.1, 0.5)
    """
    old, lp, a, mask, norm = _inputs(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                                     normalizer, weights)
    lo, hi = _clip_range(clip_ratio, clip_ratio_low, clip_ratio_high)
    if clip_ratio_c is not None:
        c = check_real(clip_ratio_c, "clip_ratio_c", 1.0, math.inf, lo_open=True)
    log_ratio = torch.clamp(lp - old, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    pg1 = -a * ratio
    pg2 = -a * torch.clamp(ratio, 1.0 - lo, 1.0 + hi)
    clipped = torch.maximum(pg1, pg2)
    metrics = {"pg_clipfrac": _f(masked_mean((pg2 > pg1).to(lp.dtype), mask)),
               "ppo_kl": _f(masked_mean(-log_ratio, mask)), "pg_clipfrac_lower": 0.0}
    if clip_ratio_c is not None:
        pg3 = -a * c
        dual = torch.minimum(pg3, clipped)
        metrics["pg_clipfrac_lower"] = _f(masked_mean(((clipped > pg3) & (a < 0)).to(lp.dtype), mask))
        clipped = torch.where(a < 0, dual, clipped)
    return _agg(clipped, mask, loss_agg_mode, norm, weights), metrics


def gpg_loss(
    old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
    loss_agg_mode: str = "token-mean", *, normalizer: float | None = None, weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    r"""Plain policy gradient :math:`\ell = -A \log\pi` (REINFORCE; verl "gpg", GPG, Chu et al. 2025).

    ``old_log_prob`` is accepted for the common signature and only used for the ``ppo_kl`` metric.

    >>> ones = torch.ones(1, 2)
    >>> loss, _ = gpg_loss(torch.zeros(1, 2), torch.tensor([[-1.0, -3.0]]), ones, ones)
    >>> float(loss)
    2.0
    """
    old, lp, a, mask, norm = _inputs(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                                     normalizer, weights)
    metrics = {"pg_clipfrac": 0.0, "ppo_kl": _f(masked_mean(old - lp, mask)), "pg_clipfrac_lower": 0.0}
    return _agg(-a * lp, mask, loss_agg_mode, norm, weights), metrics


def cov_selection(
    log_prob: Tensor, advantages: Tensor, response_mask: Tensor, *, mode: str = "top", ratio: float = 2e-4,
    lb: float = 1.0, ub: float = 5.0, exclude: Tensor | None = None, generator: torch.Generator | None = None,
    means: tuple[float, float] | None = None, num_valid: int | None = None, distributed: bool = False,
    group: Any = None,
) -> Tensor:
    r"""The tokens Clip-Cov / KL-Cov act on, chosen over the whole batch (a bool mask like ``log_prob``).

    With :math:`c_t = (A_t - \bar A)(\log\pi_t - \overline{\log\pi})` over the valid tokens (N of them)
    and :math:`k = \max(1, \lfloor \mathrm{ratio} \cdot N \rfloor)`:

    - ``mode="top"`` (KL-Cov): the k tokens with the largest :math:`c_t`;
    - ``mode="band"`` (Clip-Cov): k tokens drawn uniformly (``generator``) among those with
      ``lb < c_t < ub`` and not in ``exclude`` (verl excludes tokens already clipped by PPO).

    **Call it once per batch, before the micro-batch backward passes**, on the log-probs the batch was
    sampled with (``old_log_prob``; on-policy they equal the current ones), and pass slices of the mask
    as ``selected=`` to :func:`clip_cov_loss` / :func:`kl_cov_loss`: the selection is then the same
    whatever the micro-batch split. verl and the authors' code select inside each micro-batch call
    (PRIME-RL/Entropy-Mechanism-of-RL issues #14, #20), so k and the means change with the split.

    Data parallel: ``distributed=True`` (with ``torch.distributed`` initialised; ``group`` = the
    data-parallel process group, default the world) makes the selection global across ranks, each rank
    passing its own shard: the means and N come from one all-reduce of (sum A, sum log pi, count);
    ``"top"`` all-gathers each rank's local top-k covariances (k is small: ratio 2e-4..2e-3) and keeps
    the local tokens at or above the global k-th largest (ties at the threshold may add tokens);
    ``"band"`` all-gathers the candidate counts and draws the k candidates from the concatenation
    (rank 0's tokens first) with ``generator``, which must be seeded alike on every rank. The result
    equals the whole-batch selection on the rank-major concatenated batch (tested with gloo, 2
    processes). Without torch.distributed: pass the global ``means`` (A mean, log-prob mean) and
    ``num_valid`` yourself.

    >>> lp = torch.tensor([[-0.1, -2.0, -1.0, -0.5]]); a = torch.tensor([[1.0, -1.0, 0.0, 1.0]])
    >>> cov_selection(lp, a, torch.ones(1, 4, dtype=torch.bool), ratio=0.5)
    tensor([[ True,  True, False, False]])
    """
    lp = as_float(log_prob, "log_prob").detach()
    mask = as_mask(response_mask, lp)
    a = as_advantages(advantages, lp).detach().to(lp.dtype)
    check_choice(mode, ("top", "band"), "mode")
    r = _ratio_param(ratio, "ratio")
    m = None
    if means is not None:
        m = (torch.tensor(float(means[0]), dtype=lp.dtype, device=lp.device),
             torch.tensor(float(means[1]), dtype=lp.dtype, device=lp.device))
    if distributed:
        return _select_distributed(lp, a, mask, mode, r, lb, ub, exclude, generator, group)
    n = int(mask.sum()) if num_valid is None else num_valid
    cov = _cov(lp, a, mask, m)
    return _select(cov, mask, mode, r, n, lb, ub, exclude, generator)


def _select_distributed(lp: Tensor, a: Tensor, mask: Tensor, mode: str, ratio: float, lb: float, ub: float,
                        exclude: Tensor | None, generator: torch.Generator | None, group: Any) -> Tensor:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed must be False unless torch.distributed is initialised")
    zero = torch.zeros((), dtype=lp.dtype, device=lp.device)
    sums = torch.stack([torch.where(mask, a, zero).sum(), torch.where(mask, lp, zero).sum(),
                        mask.sum().to(lp.dtype)])
    dist.all_reduce(sums, group=group)
    n = int(sums[2])
    out = torch.zeros_like(mask)
    if n == 0:
        return out
    cov = _cov(lp, a, mask, (sums[0] / n, sums[1] / n))
    k = max(1, int(ratio * n))
    world = dist.get_world_size(group)
    flat = out.view(-1)
    if mode == "top":
        vals = cov[mask]
        local = torch.full((k,), -math.inf, dtype=lp.dtype, device=lp.device)
        top = torch.topk(vals, min(k, vals.numel())).values
        local[: top.numel()] = top
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local, group=group)
        kth = torch.topk(torch.cat(gathered), k).values[-1]
        return mask & (cov >= kth)
    cand = mask & (cov > lb) & (cov < ub)
    if exclude is not None:
        cand &= ~exclude
    idx = cand.reshape(-1).nonzero().squeeze(1)
    count = torch.tensor([idx.numel()], dtype=torch.int64, device=lp.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    sizes = [int(c) for c in counts]
    rank = dist.get_rank(group)
    offset, total = sum(sizes[:rank]), sum(sizes)
    if total:
        chosen = torch.randperm(total, generator=generator, device="cpu")[:k].to(idx.device)
        mine = chosen[(chosen >= offset) & (chosen < offset + idx.numel())] - offset
        flat[idx[mine]] = True
    return out


def _select(cov: Tensor, mask: Tensor, mode: str, ratio: float, n_valid: int, lb: float, ub: float,
            exclude: Tensor | None, generator: torch.Generator | None) -> Tensor:
    out = torch.zeros_like(mask)
    if n_valid == 0:
        return out
    k = max(1, int(ratio * n_valid))
    flat = out.view(-1)
    if mode == "top":
        idx = mask.reshape(-1).nonzero().squeeze(1)
        vals = cov.reshape(-1)[idx]
        top = torch.topk(vals, min(k, vals.numel()), largest=True).indices
        flat[idx[top]] = True
        return out
    cand = mask & (cov > lb) & (cov < ub)
    if exclude is not None:
        cand &= ~exclude
    idx = cand.reshape(-1).nonzero().squeeze(1)
    if idx.numel():
        perm = torch.randperm(idx.numel(), generator=generator, device="cpu").to(idx.device)
        flat[idx[perm[:k]]] = True
    return out


def _check_selected(selected: Any, like: Tensor) -> Tensor:
    return as_mask(selected, like, "selected")


def clip_cov_loss(
    old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
    loss_agg_mode: str = "token-mean", *, clip_ratio: float = 0.2, clip_ratio_low: float | None = None,
    clip_ratio_high: float | None = None, clip_cov_ratio: float = 2e-4, clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0, selected: Tensor | None = None, generator: torch.Generator | None = None,
    normalizer: float | None = None, weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    r"""Clip-Cov (Cui et al. 2025): PPO clipping, plus a few high-covariance tokens with no gradient.

    :math:`\ell_t = \max(-A r, -A\,\mathrm{clip}(r, 1-\epsilon_{lo}, 1+\epsilon_{hi})) \cdot
    (1 - s_t)` where :math:`s_t` marks ``max(1, int(clip_cov_ratio * N))`` tokens drawn at random among
    the valid, not PPO-clipped tokens with ``clip_cov_lb < c_t < clip_cov_ub`` (see
    :func:`cov_selection`). Without ``selected`` the draw is made from this call's tensors (verl's
    behaviour, per micro-batch); pass ``selected=cov_selection(old_log_prob, A, mask, mode="band", ...)``
    computed on the whole batch for a split-invariant selection. Metrics: ``pg_clipfrac`` = fraction of
    tokens detached (verl's convention), ``n_selected``, covariance mean/max.

    >>> lp = torch.tensor([[-0.1, -3.0, -1.0, -0.5]]); a = torch.tensor([[2.0, -2.0, 0.0, 1.0]])
    >>> loss, m = clip_cov_loss(lp, lp, a, torch.ones(1, 4), clip_cov_ratio=0.25)
    >>> m["n_selected"], round(float(loss), 4)  # token 0 (c = 1.84) or 1 (c = 4.16) is drawn
    (1.0, ...)
    """
    old, lp, a, mask, norm = _inputs(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                                     normalizer, weights)
    lo, hi = _clip_range(clip_ratio, clip_ratio_low, clip_ratio_high)
    r_sel = _ratio_param(clip_cov_ratio, "clip_cov_ratio")
    lb = check_real(clip_cov_lb, "clip_cov_lb")
    ub = check_real(clip_cov_ub, "clip_cov_ub")
    log_ratio = lp - old
    ratio = torch.exp(log_ratio)
    pg1 = -a * ratio
    pg2 = -a * torch.clamp(ratio, 1.0 - lo, 1.0 + hi)
    cov = _cov(lp.detach(), a, mask)
    if selected is None:
        sel = _select(cov, mask, "band", r_sel, int(mask.sum()), lb, ub, (pg2 > pg1) & mask, generator)
    else:
        sel = _check_selected(selected, lp) & mask
    corr = (~sel).to(lp.dtype)
    loss = _agg(torch.maximum(pg1, pg2) * corr, mask, loss_agg_mode, norm, weights)
    metrics = {"pg_clipfrac": _f(masked_mean(sel.to(lp.dtype), mask)),
               "ppo_kl": _f(masked_mean(-log_ratio, mask)),
               "pg_clipfrac_lower": 0.0, "n_selected": float(sel.sum()), **_cov_metrics(cov, mask)}
    return loss, metrics


def _cov_metrics(cov: Tensor, mask: Tensor) -> Metrics:
    v = cov[mask]
    if v.numel() == 0:
        return {"cov_mean": 0.0, "cov_max": 0.0}
    return {"cov_mean": float(v.mean()), "cov_max": float(v.max())}


KL_COV_PENALTIES = ("abs", "cov")


def kl_cov_loss(
    old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
    loss_agg_mode: str = "token-mean", *, kl_cov_ratio: float = 2e-4, ppo_kl_coef: float = 1.0,
    penalty: str = "abs", selected: Tensor | None = None, normalizer: float | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    r"""KL-Cov (Cui et al. 2025): unclipped policy gradient plus a penalty on the top-covariance tokens.

    :math:`\ell_t = -A_t r_t + s_t\, k\, P_t` with :math:`s_t` marking the
    ``max(1, int(kl_cov_ratio * N))`` valid tokens of largest covariance :math:`c_t` (see
    :func:`cov_selection`) and k = ``ppo_kl_coef`` (1 in verl's code and the authors' scripts, 0.1 in
    verl's YAML). The penalty :math:`P_t`:

    - ``"abs"`` (the paper, verl): :math:`|\log\pi_t - \log\pi_{old,t}|`. **On-policy (old == current,
      one update per batch) it is 0 with gradient 0** (the subgradient of |x| at 0), so KL-Cov then
      reduces to plain policy gradient (PRIME-RL/Entropy-Mechanism-of-RL #1).
    - ``"cov"``: the token's own covariance term
      :math:`(A_t - \bar A)(\log\pi_t - \overline{\log\pi})` (means detached), whose gradient
      :math:`(A_t - \bar A)\nabla\log\pi_t` is non-zero on-policy: it penalises the covariance that
      drives entropy down, shrinking the selected tokens' effective advantage from :math:`A_t` to
      :math:`A_t - k (A_t - \bar A)` (k = 1 removes their centred signal).

    Metrics: ``ppo_kl`` (mean :math:`|\log\pi - \log\pi_{old}|`, verl's ``ppo_kl_abs``), ``n_selected``,
    covariance mean/max.

    >>> lp = torch.tensor([[-0.1, -3.0, -1.0, -0.5]]); a = torch.tensor([[2.0, -2.0, 0.0, 1.0]])
    >>> loss, m = kl_cov_loss(lp - 0.1, lp, a, torch.ones(1, 4), kl_cov_ratio=0.25)
    >>> m["n_selected"]   # token 1: c = (-2 - 0.25)(-3 + 1.15) = 4.16
    1.0
    """
    old, lp, a, mask, norm = _inputs(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                                     normalizer, weights)
    r_sel = _ratio_param(kl_cov_ratio, "kl_cov_ratio")
    coef = check_positive(ppo_kl_coef, "ppo_kl_coef", allow_zero=True)
    check_choice(penalty, KL_COV_PENALTIES, "penalty")
    log_ratio = lp - old
    ratio = torch.exp(log_ratio)
    pg = -a * ratio
    cov = _cov(lp.detach(), a, mask)
    if selected is None:
        sel = _select(cov, mask, "top", r_sel, int(mask.sum()), 0.0, 0.0, None, None)
    else:
        sel = _check_selected(selected, lp) & mask
    if penalty == "abs":
        pen = log_ratio.abs()
    else:
        a_mean = masked_mean(a, mask).detach()
        lp_mean = masked_mean(lp.detach(), mask)
        pen = (a - a_mean) * (lp - lp_mean)
    pg = torch.where(sel, pg + coef * pen, pg)
    loss = _agg(pg, mask, loss_agg_mode, norm, weights)
    metrics = {"pg_clipfrac": 0.0, "ppo_kl": _f(masked_mean(log_ratio.abs(), mask)), "pg_clipfrac_lower": 0.0,
               "n_selected": float(sel.sum()), **_cov_metrics(cov, mask)}
    return loss, metrics


def gspo_loss(
    old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
    loss_agg_mode: str = "seq-mean-token-mean", *, clip_ratio: float = 3e-4,
    clip_ratio_low: float | None = None, clip_ratio_high: float | None = None,
    normalizer: float | None = None, weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    r"""GSPO (Zheng et al. 2025): PPO clipping on the length-normalised *sequence* ratio.

    :math:`\log s_i = \frac{1}{|y_i|}\sum_t (\log\pi_{it} - \log\pi_{old,it})`; per token
    :math:`\log s_{it} = \mathrm{sg}(\log s_i) + \log\pi_{it} - \mathrm{sg}(\log\pi_{it})` (clamped at 10),
    :math:`\ell = \max(-A s_{it}, -A\,\mathrm{clip}(s_{it}, 1-\epsilon_{lo}, 1+\epsilon_{hi}))`. verl
    always aggregates GSPO with ``"seq-mean-token-mean"``; here ``loss_agg_mode`` defaults to it.
    Default clip 3e-4 (the paper's 3e-4 / 4e-4 range).

    >>> lp = torch.tensor([[-1.0, -2.0]])
    >>> loss, m = gspo_loss(lp, lp, torch.ones(1, 2), torch.ones(1, 2))
    >>> float(loss), m["pg_clipfrac"]
    (-1.0, 0.0)
    """
    old, lp, a, mask, norm = _inputs(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                                     normalizer, weights)
    lo, hi = _clip_range(clip_ratio, clip_ratio_low, clip_ratio_high)
    log_ratio = lp - old
    m = mask.to(lp.dtype)
    seq = (log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1)
    log_s = torch.clamp(lp - lp.detach() + seq.detach().unsqueeze(-1), max=10.0)
    s = torch.exp(log_s)
    pg1 = -a * s
    pg2 = -a * torch.clamp(s, 1.0 - lo, 1.0 + hi)
    loss = _agg(torch.maximum(pg1, pg2), mask, loss_agg_mode, norm, weights)
    metrics = {"pg_clipfrac": _f(masked_mean((pg2 > pg1).to(lp.dtype), mask)),
               "ppo_kl": _f(masked_mean(-log_ratio, mask)), "pg_clipfrac_lower": 0.0}
    return loss, metrics


def cispo_loss(
    old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
    loss_agg_mode: str = "token-mean", *, clip_ratio_low: float = 1.0, clip_ratio_high: float = 4.0,
    normalizer: float | None = None, weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    r"""CISPO (MiniMax-M1, 2025): REINFORCE weighted by the clipped, detached importance ratio.

    :math:`\ell = -\mathrm{sg}(\mathrm{clip}(r, 1-\epsilon_{lo}, 1+\epsilon_{hi}))\, A \log\pi`: every
    token keeps a gradient (no token is dropped by clipping, unlike PPO). TRL's ``loss_type="cispo"``
    clamps at ``max=epsilon_high`` only: ``clip_ratio_high = epsilon_high - 1`` with the default
    ``clip_ratio_low=1`` (no lower bound) gives the same loss.

    >>> lp = torch.tensor([[-1.0, -2.0]])
    >>> float(cispo_loss(lp, lp, torch.ones(1, 2), torch.ones(1, 2))[0])
    1.5
    """
    old, lp, a, mask, norm = _inputs(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                                     normalizer, weights)
    lo = check_positive(clip_ratio_low, "clip_ratio_low", allow_zero=True)
    hi = check_positive(clip_ratio_high, "clip_ratio_high", allow_zero=True)
    log_ratio = lp - old
    ratio = torch.exp(log_ratio).detach()
    w = torch.clamp(ratio, 1.0 - lo, 1.0 + hi)
    loss = _agg(-w * a * lp, mask, loss_agg_mode, norm, weights)
    metrics = {"pg_clipfrac": _f(masked_mean((w != ratio).to(lp.dtype), mask)),
               "ppo_kl": _f(masked_mean(-log_ratio, mask)), "pg_clipfrac_lower": 0.0}
    return loss, metrics


KL_ESTIMATORS = ("low_var_kl", "kl", "abs", "mse")


def _kl_estimate(lp: Tensor, ref: Tensor, kind: str) -> Tensor:
    """verl's ``kl_penalty`` per-token estimators of KL(pi || ref) at the sampled token, clamped to +-10."""
    if kind == "kl":
        k = lp - ref
    elif kind == "abs":
        k = (lp - ref).abs()
    elif kind == "mse":
        k = 0.5 * (lp - ref).square()
    else:  # k3 (Schulman 2020): r - log r - 1 with r = ref / pi
        d = ref - lp
        k = torch.exp(d) - d - 1.0
    return torch.clamp(k, -10.0, 10.0)


def lp_reg_selection(log_prob: Tensor, advantages: Tensor, response_mask: Tensor, proxy_log_prob: Tensor,
                     *, ratio: float = 0.01) -> Tensor:
    r"""The tokens Lp-Reg regularises: low-probability tokens of negative-advantage samples that the
    proxy keeps.

    Among the valid tokens with :math:`A_t < 0` (N^- of them), the :math:`k = \max(1, \lfloor
    \mathrm{ratio} \cdot N^-\rfloor)` of lowest :math:`\log\pi_t` (detached), restricted to those with
    :math:`\log\pi_t < \log\pi_{proxy,t}` (the proxy did not filter them and amplifies them). A bool
    mask like ``log_prob``. As with :func:`cov_selection`, call it on the whole batch and pass it as
    ``selected`` to make the loss independent of the micro-batch split.

    >>> lp = torch.log(torch.tensor([[0.5, 0.05, 0.01, 0.3]]))
    >>> proxy = torch.log(torch.tensor([[0.6, 0.06, float("nan"), 0.4]])).nan_to_num(-float("inf"))
    >>> lp_reg_selection(lp, torch.tensor([[-1.0, -1.0, -1.0, 1.0]]), torch.ones(1, 4), proxy, ratio=0.7)
    tensor([[False,  True, False, False]])
    """
    lp = as_float(log_prob, "log_prob").detach()
    mask = as_mask(response_mask, lp)
    a = as_advantages(advantages, lp).detach()
    proxy = _proxy(proxy_log_prob, lp)
    r = _ratio_param(ratio, "ratio")
    neg = mask & (a < 0)
    out = torch.zeros_like(mask)
    idx = neg.reshape(-1).nonzero().squeeze(1)
    if idx.numel() == 0:
        return out
    k = max(1, int(r * idx.numel()))
    low = torch.topk(lp.reshape(-1)[idx], k, largest=False).indices
    out.view(-1)[idx[low]] = True
    return out & (lp < proxy)


def _proxy(proxy_log_prob: Any, like: Tensor) -> Tensor:
    check_tensor(proxy_log_prob, "proxy_log_prob", floating=True, min_dim=1)
    same_shape(proxy_log_prob, "proxy_log_prob", like, "log_prob")
    p = proxy_log_prob.detach().to(like.dtype)
    if bool(torch.isnan(p).any()) or bool((p == math.inf).any()):
        raise ValueError("proxy_log_prob must hold log-probabilities (<= 0, -inf allowed), got NaN or +inf")
    return p


def lp_reg_loss(
    old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
    loss_agg_mode: str = "token-mean", *, proxy_log_prob: Tensor | None = None, lp_reg_ratio: float = 0.01,
    lp_reg_coef: float = 1.0, kl_type: str = "low_var_kl", clip_ratio: float = 0.2,
    clip_ratio_low: float | None = None, clip_ratio_high: float | None = None, selected: Tensor | None = None,
    normalizer: float | None = None, weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    r"""Lp-Reg (Huang et al. 2025): PPO clipping plus a KL pull toward a filtered proxy distribution on the
    low-probability tokens of negative samples.

    :math:`\ell_t = \max(-A r, -A\,\mathrm{clip}(r, 1-\epsilon_{lo}, 1+\epsilon_{hi}))` except on the
    selected tokens :math:`s_t` (:func:`lp_reg_selection`: valid, :math:`A_t < 0`, among the
    ``lp_reg_ratio`` lowest-probability such tokens, and :math:`\pi_t < \pi_{proxy,t}`), where

    .. math:: \ell_t = -A_t r_t + \beta\, \hat D(\log\pi_t, \log\pi_{proxy,t})

    (unclipped, as in the authors' verl code), :math:`\beta` = ``lp_reg_coef`` and :math:`\hat D` the
    per-token KL estimate ``kl_type`` (verl's ``kl_penalty``, clamped to +-10): ``"low_var_kl"`` (k3,
    :math:`e^{d} - d - 1` with :math:`d = \log\pi_{proxy} - \log\pi`, the authors' default), ``"kl"``,
    ``"abs"``, ``"mse"``. Its gradient raises :math:`\log\pi_t` toward the proxy's value (``"kl"``, the
    plain difference, is the exception: its per-token gradient is +1 and does not protect), so the
    penalised rare tokens that survive the proxy's noise filter are not pushed to zero; tokens the proxy
    filtered out (:math:`-\infty`) stay unprotected. ``proxy_log_prob`` comes from
    :func:`entropykit.rl.lp_reg_proxy_log_prob` on the sampling-time logits (required). The authors'
    code also has a positive-sample branch, off by default there, omitted here. Metrics: the PPO ones
    plus ``n_selected`` and ``lp_reg_kl`` (mean estimate over the selected tokens).

    >>> lp = torch.log(torch.tensor([[0.5, 0.05, 0.3]]))
    >>> proxy = torch.log(torch.tensor([[0.55, 0.1, 0.35]]))
    >>> a = torch.tensor([[-1.0, -1.0, 1.0]])
    >>> loss, m = lp_reg_loss(lp, lp, a, torch.ones(1, 3), proxy_log_prob=proxy, lp_reg_ratio=0.5)
    >>> m["n_selected"], round(m["lp_reg_kl"], 4)   # token 1: e^{log 2} - log 2 - 1
    (1.0, 0.3069)
    """
    old, lp, a, mask, norm = _inputs(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                                     normalizer, weights)
    if proxy_log_prob is None:
        raise ValueError("proxy_log_prob must be given (rl.lp_reg_proxy_log_prob of the sampling logits), "
                         "got None")
    proxy = _proxy(proxy_log_prob, lp)
    lo, hi = _clip_range(clip_ratio, clip_ratio_low, clip_ratio_high)
    r_sel = _ratio_param(lp_reg_ratio, "lp_reg_ratio")
    beta = check_positive(lp_reg_coef, "lp_reg_coef", allow_zero=True)
    check_choice(kl_type, KL_ESTIMATORS, "kl_type")
    log_ratio = torch.clamp(lp - old, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    pg1 = -a * ratio
    pg2 = -a * torch.clamp(ratio, 1.0 - lo, 1.0 + hi)
    clipped = torch.maximum(pg1, pg2)
    if selected is None:
        sel = lp_reg_selection(lp, a, mask, proxy, ratio=r_sel)
    else:
        sel = _check_selected(selected, lp) & mask & (lp.detach() < proxy)
    safe_proxy = torch.where(sel, proxy, lp.detach())  # no inf arithmetic off the selection
    kl = _kl_estimate(lp, safe_proxy, kl_type)
    loss_mat = torch.where(sel, pg1 + beta * kl, clipped)
    metrics = {"pg_clipfrac": _f(masked_mean((pg2 > pg1).to(lp.dtype), mask)),
               "ppo_kl": _f(masked_mean(-log_ratio, mask)), "pg_clipfrac_lower": 0.0,
               "n_selected": float(sel.sum()),
               "lp_reg_kl": _f(kl[sel].mean()) if bool(sel.any()) else 0.0}
    return _agg(loss_mat, mask, loss_agg_mode, norm, weights), metrics
