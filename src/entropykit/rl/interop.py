"""Adapters: our policy losses in verl's policy-loss registry shape, and in a TRL ``GRPOTrainer``.

**verl.** verl looks losses up by name in ``POLICY_LOSS_REGISTRY`` (``actor.policy_loss.loss_mode``),
calling ``fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
rollout_is_weights) -> (loss, metrics)``::

    from verl.trainer.ppo.core_algos import register_policy_loss
    from entropykit import rl
    register_policy_loss("ek_kl_cov")(rl.verl_policy_loss("kl_cov", kl_cov_ratio=2e-3, penalty="cov"))

Our losses already use verl's argument names and aggregation modes. For a batch-level (not
per-micro-batch) Clip-Cov / KL-Cov selection, compute ``rl.cov_selection`` on the mini-batch
before verl splits it and pass the slices as ``selected`` (verl's actor would need to carry the mask
with the batch; see :func:`entropykit.rl.cov_selection` for the data-parallel recipe).

**TRL.** Override ``GRPOTrainer._compute_loss`` (TRL >= 0.20 computes ``per_token_logps`` and
``entropies`` there) and build the loss from our pieces; the example in the README ("Reinforcement
fine-tuning") keeps TRL's generation, rewards and logging and swaps the loss for KL-Cov with an
EntroPIC weighting. The entropy mask and bonus of TRL's own options equal
:func:`entropykit.rl.high_entropy_mask` and :func:`entropykit.rl.entropy_bonus` (tested against TRL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from entropykit._validate import check_choice

__all__ = ["verl_policy_loss"]


def verl_policy_loss(method: str, **params: Any) -> Callable[..., tuple[Tensor, dict[str, float]]]:
    """A policy loss of :data:`entropykit.rl.METHODS` with verl's registry signature.

    The returned ``fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
    config=None, rollout_is_weights=None)`` ignores ``config`` (the parameters are fixed here, by
    name, as in :data:`METHODS`) and multiplies the per-token loss by ``rollout_is_weights`` when
    given (verl's truncated importance-sampling correction). Returns ``(loss, metrics)``.

    >>> import torch
    >>> fn = verl_policy_loss("vanilla", clip_ratio_high=0.28)
    >>> lp = torch.tensor([[-1.0, -2.0]])
    >>> loss, metrics = fn(lp, lp, torch.ones(1, 2), torch.ones(1, 2), "token-mean", None, None)
    >>> float(loss)
    -1.0
    """
    from entropykit.rl import METHODS, policy_loss

    check_choice(method, tuple(METHODS), "method")
    unknown = sorted(set(params) - set(METHODS[method].params) - {"normalizer"})
    if unknown:
        raise TypeError(f"{method}: unexpected parameter(s) {', '.join(unknown)}")

    def fn(old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
           loss_agg_mode: str = "token-mean", config: Any = None,
           rollout_is_weights: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        return policy_loss(method, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                           weights=rollout_is_weights, **params)

    fn.__name__ = f"entropykit_{method}"
    return fn
