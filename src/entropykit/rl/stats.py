"""Token statistics for policy-gradient fine-tuning: log-probs, entropies, their aggregation, and the
covariance between log-probabilities and advantages that drives entropy change."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_choice, check_class_index, check_logits, check_positive
from entropykit.measures import token_stats
from entropykit.rl._common import LOSS_AGG_MODES, agg, as_advantages, as_float, as_mask, masked_mean

__all__ = ["LOSS_AGG_MODES", "agg_loss", "covariance_stats", "token_covariance", "token_logprob_entropy"]


def agg_loss(
    loss_mat: Tensor, response_mask: Tensor, loss_agg_mode: str = "token-mean", *,
    normalizer: float | None = None,
) -> Tensor:
    r"""Aggregate a (B, T) per-token loss to a scalar, as verl's ``agg_loss``.

    With mask :math:`m` and :math:`L_i = \sum_t m_{it} x_{it}`:

    - ``"token-mean"``: :math:`\sum_i L_i / \sum_{it} m_{it}` (TRL ``bnpo``; DAPO);
    - ``"seq-mean-token-sum"``: :math:`\frac1B \sum_i L_i`;
    - ``"seq-mean-token-mean"``: :math:`\frac1B \sum_i L_i / \max(1, \sum_t m_{it})` (GRPO; TRL ``grpo``);
    - ``"seq-mean-token-sum-norm"``: :math:`\sum_i L_i / T` with T the padded length (verl's Dr. GRPO
      form; TRL's ``dr_grpo`` further divides by B).

    Empty sequences count as 0 in the sequence means (TRL's ``clamp(min=1)``; verl gives NaN);
    the token mean of no token is 0. ``normalizer`` replaces the denominator (total tokens for
    ``token-mean``, number of sequences for the ``seq-mean`` modes, T for ``-norm``): pass the value of
    the *whole* batch and the micro-batch losses add up to the full-batch loss (gradient accumulation
    without the per-micro-batch bias). Source: verl ``core_algos.agg_loss``; Dr. GRPO (Liu et al. 2025).

    >>> x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    >>> m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    >>> [round(float(agg_loss(x, m, mode)), 4) for mode in LOSS_AGG_MODES]
    [2.5, 5.0, 3.0, 3.3333]
    """
    x = as_float(loss_mat, "loss_mat")
    mask = as_mask(response_mask, x)
    check_choice(loss_agg_mode, LOSS_AGG_MODES, "loss_agg_mode")
    if normalizer is not None:
        normalizer = check_positive(normalizer, "normalizer", allow_zero=True)
    return agg(x, mask, loss_agg_mode, normalizer)


def token_logprob_entropy(
    logits: Tensor, target: Tensor, *, temperature: float = 1.0, ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    r"""Per-token log-probability :math:`\log \pi(y_t)` and entropy :math:`H_t` of ``softmax(z / T)``.

    :math:`H = \mathrm{lse}(z/T) - \sum_j p_j z_j / T` (nats), computed by
    :func:`entropykit.measures.token_stats` in chunks (no second (N, V) buffer); both outputs are
    differentiable. Positions whose target is ``ignore_index`` get log-prob 0. For hidden states and
    an LM head use :func:`entropykit.ops.linear_token_stats` (no N x V logits at all) or
    :func:`entropykit.rl.fused_policy_loss`.

    >>> z = torch.tensor([[2.0, 0.0, 0.0]])
    >>> lp, h = token_logprob_entropy(z, torch.tensor([0]))
    >>> bool(torch.allclose(lp, torch.log_softmax(z, -1)[:, 0])), round(float(h), 4)
    (True, 0.6656)
    """
    check_logits(logits)
    t = check_positive(temperature, "temperature")
    check_class_index(target, tuple(logits.shape[:-1]), logits.shape[-1], ignore_index)
    z = logits if t == 1.0 else logits / t
    st = token_stats(z, target, ignore_index=ignore_index)
    assert st.surprisal is not None
    return -st.surprisal, st.entropy


def token_covariance(log_prob: Tensor, advantages: Tensor, response_mask: Tensor) -> Tensor:
    r"""Per-token covariance terms :math:`c_t = (A_t - \bar A)(\log\pi_t - \overline{\log\pi})`.

    Means over the valid tokens (``response_mask``); invalid tokens get 0; detached. Their mean is the
    batch covariance Cov(log pi, A), which drives the entropy change of a softmax policy under policy
    gradient (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs", Eq. 5): tokens with a
    large positive :math:`c_t` (confident and rewarded, or unlikely and penalised) lower entropy.

    >>> lp = torch.tensor([[-0.1, -2.0]]); a = torch.tensor([[1.0, -1.0]])
    >>> token_covariance(lp, a, torch.ones(1, 2, dtype=torch.bool))
    tensor([[0.9500, 0.9500]])
    """
    lp = as_float(log_prob, "log_prob").detach()
    mask = as_mask(response_mask, lp)
    a = as_advantages(advantages, lp).detach()
    return _cov(lp, a, mask)


def _cov(lp: Tensor, a: Tensor, mask: Tensor, means: tuple[Tensor, Tensor] | None = None) -> Tensor:
    a_mean, lp_mean = means if means is not None else (masked_mean(a, mask), masked_mean(lp, mask))
    c = (a - a_mean) * (lp - lp_mean)
    return torch.where(mask, c, torch.zeros((), dtype=c.dtype, device=c.device))


def covariance_stats(log_prob: Tensor, advantages: Tensor, response_mask: Tensor) -> dict[str, Any]:
    """Summary of :func:`token_covariance` over the valid tokens: mean (the batch covariance), max,
    min, and the fraction of positive terms (detached floats; zeros when no token is valid).

    >>> s = covariance_stats(torch.tensor([[-0.1, -2.0]]), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2))
    >>> round(s["cov_mean"], 4), s["cov_pos_frac"]
    (0.95, 1.0)
    """
    c = token_covariance(log_prob, advantages, response_mask)
    mask = as_mask(response_mask, c)
    v = c[mask]
    if v.numel() == 0:
        return {"cov_mean": 0.0, "cov_max": 0.0, "cov_min": 0.0, "cov_pos_frac": 0.0}
    return {"cov_mean": float(v.mean()), "cov_max": float(v.max()), "cov_min": float(v.min()),
            "cov_pos_frac": float((v > 0).double().mean())}
