"""Entropy control for policy-gradient fine-tuning of language models (``entropykit.rl``).

Functional core, verl's shapes and names (``old_log_prob, log_prob, advantages, response_mask,
loss_agg_mode -> (loss, metrics)``), so each loss drops into verl's policy-loss registry or a TRL
``GRPOTrainer`` subclass (see ``README.md``, "Reinforcement fine-tuning"):

- token statistics: :func:`token_logprob_entropy` (logits), :func:`entropykit.ops.linear_token_stats`
  (hidden states), :func:`agg_loss` (verl's four aggregation modes), :func:`token_covariance`;
- advantages: :func:`grpo_advantages` (GRPO, Dr. GRPO), :func:`rloo_advantages`, :func:`qae_advantages`,
  :func:`empg_advantages`;
- policy losses (:data:`METHODS`): PPO/GRPO with clip-higher and dual clip, GPG, Clip-Cov, KL-Cov (with a
  batch-level selection, :func:`cov_selection`), GSPO, CISPO, Lp-Reg (:func:`lp_reg_loss` with the proxy of
  :func:`lp_reg_proxy_log_prob`);
- entropy controls: :func:`entropy_bonus`, :class:`AdaptiveEntropyCoef`, :class:`EntroPIC` +
  :func:`entropic_weights`, :func:`high_entropy_mask` (exact quantile, any size), :func:`clamped_entropy`
  (AEnt), :func:`window_entropy_flags` (ARES), :func:`low_prob_protection` (Lp-Reg's masking simplification);
- :func:`fit_entropy_performance` (R = -a e^H + b with confidence intervals);
- :func:`fused_policy_loss`: all of it from hidden states without the N x V logits;
- :func:`verl_policy_loss`: any of :data:`METHODS` in verl's registry signature; :class:`EntropyControl`
  (a loss + entropy-control recipe with its controllers) and :func:`trl_grpo_trainer` (TRL's
  ``GRPOTrainer`` with that recipe as its loss).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from entropykit._registry import Method
from entropykit._validate import check_choice
from entropykit.rl.advantages import empg_advantages, grpo_advantages, qae_advantages, rloo_advantages
from entropykit.rl.entropy import (
    AdaptiveEntropyCoef,
    EntroPIC,
    clamped_entropy,
    entropic_weights,
    entropy_bonus,
    exact_quantile,
    high_entropy_mask,
    low_prob_protection,
    lp_reg_proxy_log_prob,
    window_entropy_flags,
)
from entropykit.rl.fit import EntropyPerformanceFit, fit_entropy_performance
from entropykit.rl.fused import fused_policy_loss
from entropykit.rl.interop import EntropyControl, trl_grpo_trainer, verl_policy_loss
from entropykit.rl.losses import (
    cispo_loss,
    clip_cov_loss,
    cov_selection,
    gpg_loss,
    gspo_loss,
    kl_cov_loss,
    lp_reg_loss,
    lp_reg_selection,
    ppo_loss,
)
from entropykit.rl.stats import (
    LOSS_AGG_MODES,
    agg_loss,
    covariance_stats,
    token_covariance,
    token_logprob_entropy,
)

__all__ = [
    "ADVANTAGES",
    "LOSS_AGG_MODES",
    "METHODS",
    "AdaptiveEntropyCoef",
    "EntroPIC",
    "EntropyControl",
    "EntropyPerformanceFit",
    "Method",
    "agg_loss",
    "cispo_loss",
    "clamped_entropy",
    "clip_cov_loss",
    "cov_selection",
    "covariance_stats",
    "empg_advantages",
    "entropic_weights",
    "entropy_bonus",
    "exact_quantile",
    "fit_entropy_performance",
    "fused_policy_loss",
    "gpg_loss",
    "grpo_advantages",
    "gspo_loss",
    "high_entropy_mask",
    "kl_cov_loss",
    "low_prob_protection",
    "lp_reg_loss",
    "lp_reg_proxy_log_prob",
    "lp_reg_selection",
    "policy_loss",
    "ppo_loss",
    "qae_advantages",
    "rloo_advantages",
    "token_covariance",
    "token_logprob_entropy",
    "trl_grpo_trainer",
    "verl_policy_loss",
    "window_entropy_flags",
]


_CLIP = {"clip_ratio": 0.2, "clip_ratio_low": None, "clip_ratio_high": None}

#: Policy losses by verl's registry names (``actor.policy_loss.loss_mode``).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("vanilla", ppo_loss, "Schulman et al. 2017 (PPO); DAPO clip-higher; Ye et al. 2020 dual clip",
               {**_CLIP, "clip_ratio_c": 3.0}, "PPO/GRPO clipped surrogate"),
        Method("gpg", gpg_loss, "Chu et al. 2025 (GPG); REINFORCE", {}, "-A log pi"),
        Method("clip_cov", clip_cov_loss, "Cui et al. 2025, The Entropy Mechanism of RL for Reasoning LMs",
               {**_CLIP, "clip_cov_ratio": 2e-4, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0, "selected": None,
                "generator": None}, "PPO clip + detach random tokens with covariance in (lb, ub)"),
        Method("kl_cov", kl_cov_loss, "Cui et al. 2025, The Entropy Mechanism of RL for Reasoning LMs",
               {"kl_cov_ratio": 2e-4, "ppo_kl_coef": 1.0, "penalty": "abs", "selected": None},
               "PG + penalty on the top-covariance tokens"),
        Method("gspo", gspo_loss, "Zheng et al. 2025 (GSPO)",
               {"clip_ratio": 3e-4, "clip_ratio_low": None, "clip_ratio_high": None},
               "PPO clip on the length-normalised sequence ratio"),
        Method("cispo", cispo_loss, "MiniMax-M1 2025 (CISPO)",
               {"clip_ratio_low": 1.0, "clip_ratio_high": 4.0},
               "REINFORCE weighted by the clipped, detached ratio"),
        Method("lp_reg", lp_reg_loss, "Huang et al. 2025, Low-probability Tokens Sustain Exploration in RLVR",
               {**_CLIP, "proxy_log_prob": None, "lp_reg_ratio": 0.01, "lp_reg_coef": 1.0,
                "kl_type": "low_var_kl", "selected": None},
               "PPO clip + KL toward a min-p filtered proxy on rare tokens of negative samples"),
    )
}

#: Advantage estimators by name (verl's ``adv_estimator`` names where they exist).
ADVANTAGES: dict[str, Method] = {
    m.name: m
    for m in (
        Method("grpo", grpo_advantages, "Shao et al. 2024 (DeepSeekMath); Liu et al. 2025 (Dr. GRPO)",
               {"norm_by_std": True, "eps": 1e-6}, "(r - group mean) / (group std + eps)"),
        Method("rloo", rloo_advantages, "Ahmadian et al. 2024 (RLOO)", {}, "leave-one-out baseline"),
        Method("qae", qae_advantages, "Wu et al. 2025 (QAE)", {"k": 0.4, "norm_by_std": False, "eps": 1e-6},
               "r - group K-quantile"),
    )
}


def policy_loss(
    method: str, old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
    loss_agg_mode: str = "token-mean", **params: Any,
) -> tuple[Tensor, dict[str, float]]:
    """Call the policy loss registered as ``method`` in :data:`METHODS` (verl's names).

    >>> import torch
    >>> lp = torch.tensor([[-1.0, -2.0]])
    >>> loss, m = policy_loss("vanilla", lp, lp, torch.tensor([1.0]), torch.ones(1, 2), clip_ratio_high=0.28)
    >>> float(loss), sorted(m)
    (-1.0, ['pg_clipfrac', 'pg_clipfrac_lower', 'ppo_kl'])
    """
    check_choice(method, tuple(METHODS), "method")
    entry = METHODS[method]
    unknown = sorted(set(params) - set(entry.params) - {"normalizer", "weights"})
    if unknown:
        raise TypeError(f"{method}: unexpected parameter(s) {', '.join(unknown)} "
                        f"(accepted: {', '.join([*entry.params, 'normalizer', 'weights'])})")
    out: tuple[Tensor, dict[str, float]] = entry.fn(old_log_prob, log_prob, advantages, response_mask,
                                                    loss_agg_mode, **params)
    return out
