"""Entropy controls for policy-gradient fine-tuning, as composable pieces.

- :func:`exact_quantile` / :func:`high_entropy_mask`: the "80/20" forking-token mask (Wang et al. 2025,
  "Beyond the 80/20 Rule"), with an exact quantile by selection (no 2^24-element limit).
- :func:`entropy_bonus`, :class:`AdaptiveEntropyCoef` (Skywork-OR1, TRL ``use_adaptive_entropy``).
- :class:`EntroPIC` and :func:`entropic_weights`: a PI controller on the entropy error that re-weights
  positive vs negative samples (EntroPIC, Yang et al. 2025).
- :func:`low_prob_protection`: keep penalised low-probability tokens from being pushed further down
  (a gradient-masking simplification of Lp-Reg); :func:`lp_reg_proxy_log_prob`: Lp-Reg's filtered,
  renormalised proxy distribution (its loss is :func:`entropykit.rl.lp_reg_loss`).
- :func:`clamped_entropy` (AEnt, top-k renormalised entropy), :func:`window_entropy_flags` (ARES-style
  high window-entropy tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from entropykit._validate import (
    check_choice,
    check_int,
    check_logits,
    check_positive,
    check_real,
    check_tensor,
)
from entropykit.measures import rolling_mean
from entropykit.rl._common import LOSS_AGG_MODES, agg, as_advantages, as_float, as_mask

__all__ = [
    "AdaptiveEntropyCoef",
    "EntroPIC",
    "clamped_entropy",
    "entropic_weights",
    "entropy_bonus",
    "exact_quantile",
    "high_entropy_mask",
    "low_prob_protection",
    "lp_reg_proxy_log_prob",
    "window_entropy_flags",
]

_TORCH_QUANTILE_MAX = 2**24


def exact_quantile(x: Tensor, q: float) -> Tensor:
    r"""The q-quantile of the values of ``x`` with linear interpolation, like ``torch.quantile``.

    With the sorted values :math:`x_{(0)} \le \dots \le x_{(n-1)}`, :math:`\rho = q (n - 1)`,
    :math:`i = \lfloor\rho\rfloor`: :math:`Q = \mathrm{lerp}(x_{(i)}, x_{(i+1)}, \rho - i)`. Computed
    by selection (one ``kthvalue`` and one masked min), O(n), with no size limit:
    ``torch.quantile`` refuses more than 2^24 elements (pytorch#64947), which a batch of 16k tokens x
    1k sequences already exceeds. Below that size the result equals ``torch.quantile`` bit for bit
    (the same rank arithmetic in the input dtype and ``torch.lerp``). NaN raises.

    >>> x = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0])
    >>> exact_quantile(x, 0.3), torch.quantile(x, 0.3)
    (tensor(1.4000), tensor(1.4000))
    """
    check_tensor(x, "x", floating=True)
    qv = check_real(q, "q", 0.0, 1.0)
    v = x.reshape(-1)
    n = v.numel()
    if n == 0:
        raise ValueError("x must have at least one element, got an empty tensor")
    if bool(torch.isnan(v).any()):
        raise ValueError("x must not contain NaN")
    if n == 1:
        return v[0].clone()
    rank_dtype = v.dtype if n <= _TORCH_QUANTILE_MAX else torch.float64
    rank = torch.tensor(qv, dtype=rank_dtype) * (n - 1)
    i = int(rank.long())
    w = (rank - i).to(v.dtype)
    lo = torch.kthvalue(v, i + 1).values  # selection: O(n), any size
    if i + 1 >= n:
        return lo
    # the (i+2)-th smallest: lo again if it occurs more than once at or below rank i + 1, else the
    # smallest value above lo
    if int((v <= lo).sum()) >= i + 2:
        hi = lo
    else:
        hi = torch.where(v > lo, v, torch.full((), math.inf, dtype=v.dtype, device=v.device)).min()
    return torch.lerp(lo, hi, w.to(v.device))


def high_entropy_mask(entropy: Tensor, response_mask: Tensor, rho: float = 0.2) -> Tensor:
    r"""The "forking tokens": the valid tokens whose entropy is in the top ``rho`` fraction.

    :math:`\tau = Q_{1-\rho}(\{H_t : m_t\})` (:func:`exact_quantile`, linear interpolation) and the mask
    is :math:`m_t \wedge (H_t \ge \tau)`, exactly TRL's ``get_high_entropy_mask`` with
    ``top_entropy_quantile = rho`` (so about rho N tokens, more with ties), but with no size limit. No
    valid token gives an all-False mask. Train the policy loss only on this mask (Wang et al. 2025,
    "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective RLVR", rho = 0.2). For data
    parallelism, call it on the all-gathered entropies of the valid tokens (as TRL does).

    >>> h = torch.tensor([[0.1, 2.0, 0.3, 1.5, 0.0]])
    >>> high_entropy_mask(h, torch.ones(1, 5, dtype=torch.bool), rho=0.4)
    tensor([[False,  True, False,  True, False]])
    """
    h = as_float(entropy, "entropy").detach()
    mask = as_mask(response_mask, h)
    r = check_real(rho, "rho", 0.0, 1.0, lo_open=True)
    vals = h[mask]
    if vals.numel() == 0:
        return torch.zeros_like(mask)
    tau = exact_quantile(vals, 1.0 - r)
    return mask & (h >= tau)


def entropy_bonus(
    entropy: Tensor, response_mask: Tensor, coef: float, loss_agg_mode: str = "token-mean",
) -> Tensor:
    r"""The term to *add* to a policy loss for an entropy bonus: :math:`-c\,\mathrm{agg}(H)`.

    Aggregated over ``response_mask`` with :func:`entropykit.rl.agg_loss`'s modes (verl's
    ``entropy_coeff`` term; TRL uses the token mean). Gradients flow into ``entropy``.

    >>> h = torch.tensor([[1.0, 3.0]], requires_grad=True)
    >>> entropy_bonus(h, torch.ones(1, 2), 0.1)
    tensor(-0.2000, grad_fn=<MulBackward0>)
    """
    h = as_float(entropy, "entropy")
    mask = as_mask(response_mask, h)
    c = check_real(coef, "coef", finite=True)
    check_choice(loss_agg_mode, LOSS_AGG_MODES, "loss_agg_mode")
    return -c * agg(h, mask, loss_agg_mode)


@dataclass
class AdaptiveEntropyCoef:
    r"""Adaptive entropy coefficient (Skywork-OR1, He et al. 2025; TRL ``use_adaptive_entropy``).

    After each optimizer step, with the step's token-mean entropy H:
    :math:`c \leftarrow \mathrm{clamp}(c + \delta, c_{min}, c_{max})` if :math:`H \le H^*`, else
    :math:`\mathrm{clamp}(c - \delta, ...)`. The coefficient *applied* to the bonus is c while the last
    measured entropy is at or below the target and 0 above it (before the first update: 0), as in
    TRL. Defaults: TRL's (target 0.2 nats, delta 0.005, clamp [0, 1]).

    >>> ctl = AdaptiveEntropyCoef(coef=0.0, target=0.5, delta=0.01)
    >>> ctl.applied, ctl.update(0.3), ctl.update(0.3), round(ctl.applied, 4)
    (0.0, 0.01, 0.02, 0.02)
    """

    coef: float = 0.0
    target: float = 0.2
    delta: float = 0.005
    coef_min: float = 0.0
    coef_max: float = 1.0
    last_entropy: float = math.inf

    def __post_init__(self) -> None:
        self.coef_min = check_real(self.coef_min, "coef_min", finite=True)
        self.coef_max = check_real(self.coef_max, "coef_max", self.coef_min, math.inf, finite=True)
        self.coef = check_real(self.coef, "coef", self.coef_min, self.coef_max)
        self.target = check_real(self.target, "target", finite=True)
        self.delta = check_positive(self.delta, "delta", allow_zero=True)

    @property
    def applied(self) -> float:
        """The coefficient to use in the next step's loss."""
        return self.coef if self.last_entropy <= self.target else 0.0

    def update(self, entropy: float | Tensor) -> float:
        """Record the step's entropy (nats) and return the new coefficient."""
        h = check_real(entropy, "entropy", finite=True)
        step = self.delta if h <= self.target else -self.delta
        self.coef = min(max(self.coef + step, self.coef_min), self.coef_max)
        self.last_entropy = h
        return self.coef


@dataclass
class EntroPIC:
    r"""A proportional-integral controller on policy entropy (EntroPIC, Yang et al. 2025).

    Error :math:`e_t = H_t - H^*`; integral :math:`I_t = I_{t-1} + e_t` (clamped to
    ``±integral_limit``); output :math:`\alpha_t = \mathrm{clamp}(-(K_p e_t + K_i I_t), -L, L)`.
    Anti-windup by conditional integration: while the output is saturated and the error pushes it
    further into saturation, the integral is not updated. :math:`\alpha > 0` (entropy below target)
    means "raise entropy": :func:`entropic_weights` then down-weights positive-advantage tokens
    (which sharpen the policy) and up-weights negative ones. The paper's gains are not public:
    ``kp``, ``ki``, ``limit`` are yours to tune (tests: tracking on a synthetic plant).

    >>> pic = EntroPIC(target=1.0, kp=0.5, ki=0.1)
    >>> round(pic.update(0.6), 4), round(pic.update(0.8), 4)   # -(0.5 e + 0.1 I)
    (0.24, 0.16)
    """

    target: float
    kp: float = 1.0
    ki: float = 0.1
    limit: float = 1.0
    integral_limit: float = math.inf
    integral: float = 0.0
    alpha: float = 0.0
    history: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.target = check_real(self.target, "target", finite=True)
        self.kp = check_positive(self.kp, "kp", allow_zero=True)
        self.ki = check_positive(self.ki, "ki", allow_zero=True)
        self.limit = check_positive(self.limit, "limit")
        self.integral_limit = check_positive(self.integral_limit, "integral_limit", allow_zero=True,
                                             allow_inf=True)

    def update(self, entropy: float | Tensor) -> float:
        """Feed the step's entropy (nats); return the new coefficient alpha in [-limit, limit]."""
        e = check_real(entropy, "entropy", finite=True) - self.target
        trial = min(max(self.integral + e, -self.integral_limit), self.integral_limit)
        raw = -(self.kp * e + self.ki * trial)
        saturated = abs(raw) > self.limit
        if not (saturated and math.copysign(1.0, raw) == math.copysign(1.0, -e)):
            self.integral = trial
        raw = -(self.kp * e + self.ki * self.integral)
        self.alpha = min(max(raw, -self.limit), self.limit)
        self.history.append(self.alpha)
        return self.alpha

    def reset(self) -> None:
        self.integral = 0.0
        self.alpha = 0.0
        self.history.clear()


def entropic_weights(
    advantages: Tensor, alpha: float, *, log_prob: Tensor | None = None, prob_threshold: float = 0.0,
) -> Tensor:
    r"""Per-token loss weights from an :class:`EntroPIC` output :math:`\alpha`.

    :math:`w_t = 1 - \alpha` where :math:`A_t > 0`, :math:`1 + \alpha` where :math:`A_t < 0`, 1 at 0;
    with ``log_prob`` and ``prob_threshold`` > 0, only tokens with :math:`\pi_t >` threshold are
    re-weighted (the confident tokens that move entropy most). Multiply the per-token policy loss by
    it (or scale the advantages: the PG loss is linear in A). Weights are >= 0 when
    :math:`|\alpha| \le 1`.

    >>> entropic_weights(torch.tensor([[1.0, -1.0, 0.0]]), 0.25)
    tensor([[0.7500, 1.2500, 1.0000]])
    """
    a = as_float(advantages, "advantages").detach()
    al = check_real(alpha, "alpha", finite=True)
    w = torch.ones_like(a)
    w = torch.where(a > 0, w - al, torch.where(a < 0, w + al, w))
    if log_prob is not None:
        lp = as_advantages(log_prob, a)  # same shape check
        th = check_real(prob_threshold, "prob_threshold", 0.0, 1.0)
        w = torch.where(lp.detach().exp() > th, w, torch.ones_like(w))
    return w


def clamped_entropy(logits: Tensor, k: int, *, temperature: float = 1.0) -> Tensor:
    r"""AEnt's clamped entropy: the entropy of softmax renormalised over the top-``k`` logits.

    :math:`\tilde H = -\sum_{j \in \mathrm{top}_k(z)} \tilde p_j \log \tilde p_j`,
    :math:`\tilde p = \mathrm{softmax}(z_{\mathrm{top}_k} / T)` (nats, <= log k). A bonus on it cannot
    spread mass onto the long tail of the vocabulary, the failure mode of plain entropy bonuses on
    large vocabularies (Shen et al. 2025, "On Entropy Control in LLM-RL Algorithms"). Differentiable
    (through the kept logits); use :class:`AdaptiveEntropyCoef` to tune its coefficient.

    >>> z = torch.tensor([[3.0, 3.0, -50.0, -50.0]])
    >>> round(float(clamped_entropy(z, 2)), 4)   # log 2
    0.6931
    """
    check_logits(logits)
    kk = check_int(k, "k", 1, logits.shape[-1])
    t = check_positive(temperature, "temperature")
    z = logits.float() if logits.dtype not in (torch.float32, torch.float64) else logits
    top = torch.topk(z, kk, dim=-1).values / t
    lp = torch.log_softmax(top, -1)
    return -(lp.exp() * lp).sum(-1)


def window_entropy_flags(
    entropy: Tensor, response_mask: Tensor, window: int = 8, threshold: float | None = None,
    quantile: float = 0.9,
) -> Tensor:
    r"""ARES-style high window-entropy (HWE) tokens: where the causal window mean of entropy is high.

    :math:`\bar H_t = \mathrm{mean}(H_{t-w+1..t})` over valid tokens
    (:func:`entropykit.measures.rolling_mean` along the last axis); flag :math:`m_t \wedge
    (\bar H_t > \tau)` with :math:`\tau` = ``threshold``, or the ``quantile`` of :math:`\bar H` over
    valid tokens when ``threshold`` is None. ARES branches exploration (or re-weights rewards) at
    these positions.

    >>> h = torch.tensor([[0.1, 0.1, 2.0, 2.0, 0.1]])
    >>> window_entropy_flags(h, torch.ones(1, 5), window=2, threshold=1.0)
    tensor([[False, False,  True,  True,  True]])
    """
    h = as_float(entropy, "entropy").detach()
    mask = as_mask(response_mask, h)
    w = check_int(window, "window", 1)
    hw = rolling_mean(h, w, mask=mask)
    if threshold is None:
        vals = hw[mask]
        if vals.numel() == 0:
            return torch.zeros_like(mask)
        tau = float(exact_quantile(vals, check_real(quantile, "quantile", 0.0, 1.0)))
    else:
        tau = check_real(threshold, "threshold")
    return mask & (hw > tau)


def low_prob_protection(
    log_prob: Tensor, advantages: Tensor, response_mask: Tensor, *, rho: float = 0.01,
    min_prob: float = 0.0,
) -> Tensor:
    r"""Loss weights that stop penalised low-probability tokens from being pushed further down.

    Exploration in RL fine-tuning lives in rare but meaningful tokens ("reasoning sparks"); negative
    advantages keep pushing them toward zero, and their disappearance precedes entropy collapse (Huang
    et al. 2025, "Low-probability Tokens Sustain Exploration in RLVR", Lp-Reg). This is the simple,
    gradient-masking form of that protection (Lp-Reg's proxy-distribution KL is
    :func:`entropykit.rl.lp_reg_loss` with :func:`lp_reg_proxy_log_prob`): weight 0 for valid
    tokens with :math:`A_t < 0` whose probability lies in the lowest ``rho`` quantile of the batch's
    valid tokens and above ``min_prob`` (below it: presumed noise, left to be suppressed); 1
    elsewhere. Pass it as ``weights=`` to a policy loss.

    >>> lp = torch.log(torch.tensor([[0.9, 0.01, 0.02, 0.5]]))
    >>> low_prob_protection(lp, torch.tensor([[-1.0, -1.0, 1.0, -1.0]]), torch.ones(1, 4), rho=0.5)
    tensor([[1., 0., 1., 1.]])
    """
    lp = as_float(log_prob, "log_prob").detach()
    mask = as_mask(response_mask, lp)
    a = as_advantages(advantages, lp)
    r = check_real(rho, "rho", 0.0, 1.0, lo_open=True)
    floor = check_real(min_prob, "min_prob", 0.0, 1.0)
    w = torch.ones_like(lp)
    vals = lp[mask]
    if vals.numel() == 0:
        return w
    tau = exact_quantile(vals, r)
    protect = mask & (a < 0) & (lp <= tau) & (lp.exp() > floor)
    return torch.where(protect, torch.zeros_like(w), w)


LP_REG_FILTERS = ("min_p", "fixed")


def lp_reg_proxy_log_prob(
    logits: Tensor, target: Tensor, *, min_p: float = 0.02, mode: str = "min_p", temperature: float = 1.0,
) -> Tensor:
    r"""Lp-Reg's proxy distribution, evaluated at the sampled tokens: :math:`\log\pi_{proxy}(y_t)`.

    With :math:`p = \mathrm{softmax}(z)` (before the temperature, as the authors' code filters), the
    presumed noise tokens are dropped and the rest renormalised (Huang et al. 2025, "Low-probability
    Tokens Sustain Exploration in RLVR", Lp-Reg):

    .. math:: \pi_{proxy}(o) = \frac{\pi(o)\,[p_o \ge \tau]}{\sum_{o'} \pi(o')\,[p_{o'} \ge \tau]}

    with :math:`\tau = \kappa \max_o p_o` (``mode="min_p"``) or :math:`\tau = \kappa` (``"fixed"``),
    :math:`\pi = \mathrm{softmax}(z / T)`, :math:`\kappa` = ``min_p``; the most probable token is
    always kept (with ``"fixed"``, a flat row could otherwise lose every token; the authors' code then
    falls back to the uniform distribution). Filtered tokens get :math:`-\infty`. Kept tokens get
    :math:`\log\pi(y) - \log Z \ge \log\pi(y)`: the proxy amplifies the surviving low-probability
    tokens ("reasoning sparks"), which :func:`entropykit.rl.lp_reg_loss` then protects. Compute it from
    the logits the batch was sampled with (detached). Nats.

    >>> z = torch.log(torch.tensor([[0.6, 0.3, 0.09, 0.01]]))
    >>> lp_reg_proxy_log_prob(z, torch.tensor([2]), min_p=0.1).exp()   # drops 0.01 (< 0.1 * 0.6)
    tensor([0.0909])
    """
    check_logits(logits)
    if not isinstance(target, Tensor) or target.is_floating_point() or tuple(target.shape) != tuple(
            logits.shape[:-1]):
        raise ValueError(f"target must be integer token ids of shape {tuple(logits.shape[:-1])}, got "
                         f"{getattr(target, 'shape', type(target).__name__)}")
    kappa = check_real(min_p, "min_p", 0.0, 1.0)
    check_choice(mode, LP_REG_FILTERS, "mode")
    t = check_positive(temperature, "temperature")
    z = (logits.float() if logits.dtype not in (torch.float32, torch.float64) else logits).detach()
    logp = torch.log_softmax(z, -1)
    thr = math.log(kappa) if kappa > 0 else -math.inf
    top = logp.amax(-1, keepdim=True)
    keep = (logp >= top + thr) if mode == "min_p" else (logp >= thr) | (logp == top)
    zt = torch.where(keep, z / t, torch.full((), -math.inf, dtype=z.dtype, device=z.device))
    out = torch.log_softmax(zt, -1).gather(-1, target.long().clamp(0, z.shape[-1] - 1)[..., None])[..., 0]
    return out
