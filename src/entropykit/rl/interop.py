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

**TRL.** :func:`trl_grpo_trainer` returns ``EntropyControlGRPOTrainer``, a subclass of TRL's
``GRPOTrainer`` whose ``_compute_loss`` (where TRL computes ``per_token_logps`` and ``entropies``) builds
the loss from an :class:`EntropyControl`: any policy loss of :data:`entropykit.rl.METHODS`, the
high-entropy mask (no 2^24 limit), a fixed bonus, the adaptive coefficient and the EntroPIC controller
(re-weighting or a signed bonus), updated once per optimizer step from the entropy of the whole
accumulation window (all-reduced across processes). TRL's generation, rewards, advantages, reference
KL (``beta``), vLLM importance weights and logging stay TRL's. :class:`EntropyControl` itself is
framework-free (``loss`` on per-token tensors, ``update`` per step), for any other trainer loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_choice, check_real
from entropykit.rl._common import LOSS_AGG_MODES, agg, as_advantages, as_float, as_mask, masked_mean
from entropykit.rl.entropy import AdaptiveEntropyCoef, EntroPIC, entropic_weights, high_entropy_mask

__all__ = ["EntropyControl", "trl_grpo_trainer", "verl_policy_loss"]

PIC_MODES = ("weights", "bonus")


@dataclass
class EntropyControl:
    r"""One recipe of entropy control around a policy loss, with the controllers' state across steps.

    ``loss(old_log_prob, log_prob, entropy, advantages, response_mask)`` returns

    .. math:: L = \mathrm{policy\_loss}_{method}(\log\pi_{old}, \log\pi, A, m;\; w \cdot M_\rho \cdot w_{PIC})
              - c\,\frac{\sum_t m_t M_{\rho,t} H_t}{\sum_t m_t M_{\rho,t}}

    with :math:`M_\rho` = :func:`entropykit.rl.high_entropy_mask` (``top_entropy_quantile``; all ones at
    1), :math:`w_{PIC}` = :func:`entropykit.rl.entropic_weights` of the EntroPIC output when
    ``pic_mode="weights"``, and :math:`c` = ``entropy_coef`` + the adaptive coefficient's applied value
    + ``pic_scale`` :math:`\alpha` when ``pic_mode="bonus"`` (a signed coefficient: a penalty above the
    target). The bonus is a token mean over the kept tokens whatever ``loss_agg_mode`` (TRL's
    convention). ``update(entropy)`` (nats; once per optimizer step) advances ``adaptive`` and ``pic``.

    >>> ctl = EntropyControl(method="vanilla", entropy_coef=0.1)
    >>> lp = torch.tensor([[-1.0, -2.0]]); h = torch.tensor([[0.5, 1.5]])
    >>> loss, m = ctl.loss(lp, lp, h, torch.tensor([1.0]), torch.ones(1, 2))
    >>> round(float(loss), 4), m["entropy_coef"]    # -1 (on-policy PG) - 0.1 * 1.0
    (-1.1, 0.1)
    """

    method: str = "vanilla"
    params: dict[str, Any] = field(default_factory=dict)
    loss_agg_mode: str = "token-mean"
    entropy_coef: float = 0.0
    top_entropy_quantile: float = 1.0
    adaptive: AdaptiveEntropyCoef | None = None
    pic: EntroPIC | None = None
    pic_mode: str = "weights"
    pic_scale: float = 0.05

    def __post_init__(self) -> None:
        from entropykit.rl import METHODS

        check_choice(self.method, tuple(METHODS), "method")
        check_choice(self.loss_agg_mode, LOSS_AGG_MODES, "loss_agg_mode")
        check_choice(self.pic_mode, PIC_MODES, "pic_mode")
        self.entropy_coef = check_real(self.entropy_coef, "entropy_coef", finite=True)
        self.top_entropy_quantile = check_real(self.top_entropy_quantile, "top_entropy_quantile", 0.0, 1.0,
                                               lo_open=True)
        self.pic_scale = check_real(self.pic_scale, "pic_scale", finite=True)
        unknown = sorted(set(self.params) - set(METHODS[self.method].params) - {"normalizer"})
        if unknown:
            raise TypeError(f"{self.method}: unexpected parameter(s) {', '.join(unknown)}")

    @property
    def coefficient(self) -> float:
        """The entropy coefficient the next ``loss`` call applies."""
        c = self.entropy_coef
        if self.adaptive is not None:
            c += self.adaptive.applied
        if self.pic is not None and self.pic_mode == "bonus":
            c += self.pic_scale * self.pic.alpha
        return c

    def loss(self, old_log_prob: Tensor, log_prob: Tensor, entropy: Tensor, advantages: Tensor,
             response_mask: Tensor, *, weights: Tensor | None = None, normalizer: float | None = None,
             **params: Any) -> tuple[Tensor, dict[str, float]]:
        """The controlled loss and its metrics (the policy loss's plus ``entropy``, ``entropy_coef``,
        ``entropy_mask_frac``); ``params`` override ``self.params`` for this call (e.g. ``selected``)."""
        from entropykit.rl import policy_loss

        lp = as_float(log_prob, "log_prob")
        ent = as_float(entropy, "entropy")
        mask = as_mask(response_mask, lp)
        if tuple(ent.shape) != tuple(lp.shape):
            raise ValueError(f"entropy must have the shape of log_prob {tuple(lp.shape)}, "
                             f"got {tuple(ent.shape)}")
        w = None if weights is None else as_float(weights, "weights").detach()
        keep = mask
        if self.top_entropy_quantile < 1.0:
            keep = high_entropy_mask(ent.detach(), mask, self.top_entropy_quantile)
            kw = keep.to(lp.dtype)
            w = kw if w is None else w * kw
        if self.pic is not None and self.pic_mode == "weights":
            pw = entropic_weights(as_advantages(advantages, lp), self.pic.alpha).to(lp.dtype)
            w = pw if w is None else w * pw
        loss, metrics = policy_loss(self.method, old_log_prob, log_prob, advantages, mask, self.loss_agg_mode,
                                    weights=w, normalizer=normalizer, **{**self.params, **params})
        c = self.coefficient
        if c != 0.0:
            loss = loss - c * agg(ent, keep, "token-mean")
        metrics = {**metrics, "entropy": float(masked_mean(ent.detach(), mask)), "entropy_coef": c,
                   "entropy_mask_frac": float(keep.sum()) / max(1, int(mask.sum()))}
        return loss, metrics

    def update(self, entropy: float | Tensor) -> None:
        """Feed the step's entropy (nats, token mean over the step's valid tokens) to the controllers."""
        h = check_real(entropy, "entropy", finite=True)
        if self.adaptive is not None:
            self.adaptive.update(h)
        if self.pic is not None:
            self.pic.update(h)


_MM_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
            "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


@functools.cache
def trl_grpo_trainer() -> type:
    """``EntropyControlGRPOTrainer``: TRL's ``GRPOTrainer`` with its loss built by an :class:`EntropyControl`.

    Construct it like ``GRPOTrainer`` plus ``entropy_control=EntropyControl(...)``; TRL's own entropy
    options (``top_entropy_quantile``, ``entropy_coef``, ``use_adaptive_entropy``) and ``loss_type`` are
    then unused: the control's ``method``/``loss_agg_mode`` decide the loss. The loss is divided by the
    gradient-accumulation steps in training (as TRL does for ``"grpo"``/``"bnpo"``); ``beta`` > 0 adds
    TRL's k3 reference KL (token mean); with vLLM importance-sampling correction on, its ratios weight
    the per-token loss. Clip-Cov / KL-Cov select within each micro-batch here (pass ``selected`` through
    a subclass for a batch-level selection, see :func:`entropykit.rl.cov_selection`). Raises ImportError
    without TRL (``pip install entropykit[rl]``).

    ::

        Trainer = rl.trl_grpo_trainer()
        ctl = rl.EntropyControl("kl_cov", {"kl_cov_ratio": 2e-3, "penalty": "cov"},
                                adaptive=rl.AdaptiveEntropyCoef(target=0.5, delta=0.002))
        trainer = Trainer(model=..., reward_funcs=..., args=trl.GRPOConfig(...), train_dataset=...,
                          entropy_control=ctl)
    """
    import trl

    class EntropyControlGRPOTrainer(trl.GRPOTrainer):  # type: ignore[misc]
        def __init__(self, *args: Any, entropy_control: EntropyControl | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.entropy_control = entropy_control if entropy_control is not None else EntropyControl()
            self._ek_window: Tensor | None = None

        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Tensor:
            prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
            completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
            input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
            attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
            mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
            extra = {k: inputs[k] for k in _MM_KEYS if inputs.get(k) is not None}
            out = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True, **extra)
            log_prob, entropy = out[0], out[1]
            old = inputs.get("old_per_token_logps")
            old = log_prob.detach() if old is None else old
            weights = None
            if getattr(self, "use_vllm", False) and getattr(self, "vllm_importance_sampling_correction",
                                                            False):
                weights = inputs["importance_sampling_ratio"]
            ctl: EntropyControl = self.entropy_control
            loss, metrics = ctl.loss(old, log_prob, entropy, inputs["advantages"], mask, weights=weights)
            mode = "train" if model.training else "eval"
            m = mask.bool()
            if self.beta != 0.0:
                ref = inputs["ref_per_token_logps"]
                kl = torch.exp(ref - log_prob) - (ref - log_prob) - 1
                loss = loss + self.beta * agg(kl, m, "token-mean")
                self._metrics[mode]["kl"].append(float(masked_mean(kl.detach(), m)))
            if mode == "train":
                loss = loss / self.current_gradient_accumulation_steps
                stats = torch.stack([(entropy.detach() * mask).sum(), mask.sum()]).float()
                self._ek_window = stats if self._ek_window is None else self._ek_window + stats
                if self.accelerator.sync_gradients:
                    tot = self.accelerator.reduce(self._ek_window, reduction="sum")
                    ctl.update(float(tot[0] / tot[1].clamp(min=1.0)))
                    self._ek_window = None
            for key in ("entropy", "entropy_coef", "entropy_mask_frac", "pg_clipfrac", "ppo_kl"):
                if key in metrics:
                    self._metrics[mode][key].append(metrics[key])
            return loss

    EntropyControlGRPOTrainer.__qualname__ = "EntropyControlGRPOTrainer"
    return EntropyControlGRPOTrainer


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
