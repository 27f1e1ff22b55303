"""Divergence-regularised preference losses (DPO and its family) with TRL's names and conventions.

Inputs are *sequence* log-probabilities log pi(y | x), summed over the completion's tokens (or
length-averaged where a loss says so), of the policy and a frozen reference for the chosen (w) and
rejected (l) completion of each pair; :func:`sequence_logprobs` (from logits) and
:func:`sequence_logprobs_from_hidden` (from hidden states without the N x V logits, via
``entropykit.ops.linear_cross_entropy``) compute them, :func:`ld_sequence_logprobs` the
length-desensitised form (LD-DPO) and :func:`wpo_weights` the WPO pair weights.

:func:`preference_loss` is the one implementation of TRL 1.16's ``DPOTrainer`` losses (``loss_type``
names, ``beta``, ``label_smoothing``, ``f_divergence_type`` scores, ``loss_weights``, ``use_weighting``,
``ld_alpha``), plus H-DPO; :func:`simpo_loss` and :func:`orpo_loss` are the reference-free ones of TRL's
CPO and ORPO trainers. Each returns :class:`PreferenceOutput`: the loss and the per-pair chosen /
rejected rewards, margins and accuracies TRL logs (``rewards/chosen`` ... as ``beta * log-ratio``).
All quantities are in nats; losses are computed in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entropykit._registry import Method, registry
from entropykit._validate import (
    check_choice,
    check_finite,
    check_int,
    check_mask,
    check_positive,
    check_real,
    check_reduction,
    check_same_shape,
    check_tensor,
    reduce,
)
from entropykit.losses._common import class_target, float_logits
from entropykit.ops import linear_cross_entropy

__all__ = [
    "F_DIVERGENCES",
    "LOSS_TYPES",
    "PREFERENCE_LOSSES",
    "ORPOLoss",
    "PreferenceLoss",
    "PreferenceOutput",
    "SimPOLoss",
    "f_divergence_score",
    "ld_sequence_logprobs",
    "orpo_loss",
    "preference_loss",
    "sequence_logprobs",
    "sequence_logprobs_from_hidden",
    "simpo_loss",
    "token_logprobs",
    "trl_dpo_trainer",
    "wpo_weights",
    "wpo_weights_from_hidden",
]

#: TRL's ``f_divergence_type`` values (f-DPO, Wang et al. 2024, arXiv:2309.16240).
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")

#: The ``loss_type`` values of :func:`preference_loss`: TRL 1.16's DPOTrainer losses plus ``"hdpo"``.
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm", "hdpo")

# TRL's rule (DPOTrainer.__init__, after #6441): the f-DPO reparameterisation leaves beta log Z(x), which
# cancels only in the chosen - rejected score difference; other losses have no f-divergence form.
_F_OK = frozenset({"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"})
_SMOOTHED = frozenset({"sigmoid", "robust", "exo_pair", "aot", "aot_unpaired"})  # use label_smoothing
_NEED_LENGTHS = frozenset({"ipo", "sigmoid_norm", "sft"})
_ALPHA_CLAMP = 80.0  # TRL's clamp of (alpha - 1) u before exp (float32 / bfloat16)


class PreferenceOutput(NamedTuple):
    """A preference loss and what TRL logs per pair (no gradient): ``chosen_rewards`` and
    ``rejected_rewards`` (beta times the policy/reference log-ratio; beta times the policy log-prob for
    the reference-free losses), ``margins`` = chosen - rejected, ``accuracies`` = 1.0 where chosen >
    rejected."""

    loss: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    margins: Tensor
    accuracies: Tensor


# --------------------------------------------------------------------------------------------------
# sequence log-probabilities
# --------------------------------------------------------------------------------------------------


def _valid(target: Tensor, mask: Tensor | None, ignore_index: int | None) -> Tensor:
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    if mask is not None:
        valid = valid & check_mask(mask, target)
    return valid


def token_logprobs(logits: Tensor, target: Tensor, *, mask: Tensor | None = None,
                   ignore_index: int | None = -100) -> Tensor:
    r"""Per-token log-probabilities log p(y_t) = z_{t, y_t} - lse(z_t) (nats), 0 at masked positions.

    ``logits[..., t, :]`` scores ``target[..., t]`` (already aligned: for a causal LM pass
    ``logits[:, :-1]`` and ``input_ids[:, 1:]``). A position counts when ``target != ignore_index``
    and ``mask`` (bool, broadcastable to ``target``) is True there. Source: TRL's
    ``selective_log_softmax`` / ``get_batch_logps``.

    Example:
        >>> z = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
        >>> token_logprobs(z, torch.tensor([[0, -100]]))
        tensor([[-0.6931,  0.0000]])
    """
    z = float_logits(logits)
    y = class_target(target, z, ignore_index)
    valid = _valid(y, mask, ignore_index)
    lp = torch.log_softmax(z, -1).gather(-1, torch.where(valid, y, 0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, lp, torch.zeros((), dtype=lp.dtype))


def _seq_reduce(tok: Tensor, valid: Tensor, average: bool) -> Tensor:
    total = tok.sum(-1)
    if not average:
        return total
    return total / valid.sum(-1).clamp(min=1).to(total.dtype)


def sequence_logprobs(logits: Tensor, target: Tensor, *, mask: Tensor | None = None,
                      ignore_index: int | None = -100, average: bool = False) -> Tensor:
    r"""Sequence log-probability sum_t log p(y_t) over the valid positions of the last token axis
    (``average=True``: divided by their number, clamped to >= 1, as TRL's IPO/SimPO/ORPO length
    normalisation). Nats; shape ``target.shape[:-1]``; the inputs of :func:`preference_loss`.

    Example:
        >>> z = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> sequence_logprobs(z, torch.tensor([[1, 2, -100]]))
        tensor([-2.7726])
        >>> sequence_logprobs(z, torch.tensor([[1, 2, -100]]), average=True)
        tensor([-1.3863])
    """
    tok = token_logprobs(logits, target, mask=mask, ignore_index=ignore_index)
    check_tensor(target, "target", min_dim=1)
    return _seq_reduce(tok, _valid(target, mask, ignore_index), average)


def sequence_logprobs_from_hidden(hidden: Tensor, weight: Tensor, target: Tensor, *,
                                  bias: Tensor | None = None, mask: Tensor | None = None,
                                  ignore_index: int = -100, average: bool = False,
                                  chunk_size: int | None = None) -> Tensor:
    r""":func:`sequence_logprobs` of the logits ``hidden @ weight.T + bias`` without forming them.

    Per-token log p(y_t) = -CE_t from ``entropykit.ops.linear_cross_entropy(reduction="none")``
    (chunked over tokens, logits recomputed in backward: memory O(chunk x V)); differentiable in
    ``hidden``, ``weight`` and ``bias``. hidden (..., T, D), weight (V, D), target (..., T).

    Example:
        >>> h, w = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
        >>> y = torch.randint(0, 7, (2, 5))
        >>> bool(torch.allclose(sequence_logprobs_from_hidden(h, w, y), sequence_logprobs(h @ w.T, y)))
        True
    """
    check_tensor(target, "target", min_dim=1)
    check_tensor(hidden, "hidden", floating=True, min_dim=2)
    if mask is not None:
        target = torch.where(check_mask(mask, target), target, ignore_index)
    ce = linear_cross_entropy(hidden, weight, target, bias=bias, ignore_index=ignore_index, reduction="none",
                              chunk_size=chunk_size)
    assert isinstance(ce, Tensor)
    return _seq_reduce(-ce, target != ignore_index, average)


def ld_sequence_logprobs(chosen_token_logps: Tensor, rejected_token_logps: Tensor, chosen_mask: Tensor,
                         rejected_mask: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    r"""Length-desensitised sequence log-probs (LD-DPO, Liu et al. 2024, arXiv:2409.06411; TRL
    ``ld_alpha``): with l = min(|y_w|, |y_l|) the shared length of a pair,

    .. math:: \log\pi_{LD}(y) = \sum_{k \le l} \log\pi(y_k) + \alpha \sum_{k > l} \log\pi(y_k)

    where k counts the completion tokens (``mask`` True) of each sequence in order. alpha = 1 is the
    plain sum; alpha = 0 drops the longer completion's tail. Apply it to the policy and the reference
    alike. Token log-probs (B, T) as :func:`token_logprobs` returns them; masks bool (B, T).

    Example:
        >>> c, r = torch.tensor([[-1.0, -1.0, -1.0]]), torch.tensor([[-2.0, 0.0, 0.0]])
        >>> m_c, m_r = torch.tensor([[True, True, True]]), torch.tensor([[True, False, False]])
        >>> ld_sequence_logprobs(c, r, m_c, m_r, 0.5)
        (tensor([-2.]), tensor([-2.]))
    """
    check_tensor(chosen_token_logps, "chosen_token_logps", floating=True, min_dim=1)
    check_tensor(rejected_token_logps, "rejected_token_logps", floating=True, min_dim=1)
    mc = check_mask(chosen_mask, chosen_token_logps, "chosen_mask")
    mr = check_mask(rejected_mask, rejected_token_logps, "rejected_mask")
    if chosen_token_logps.shape[:-1] != rejected_token_logps.shape[:-1]:
        raise ValueError(f"rejected_token_logps must have the batch shape "
                         f"{tuple(chosen_token_logps.shape[:-1])} of chosen_token_logps, "
                         f"got {tuple(rejected_token_logps.shape[:-1])}")
    a = check_real(alpha, "alpha", 0.0, 1.0)
    shared = torch.minimum(mc.sum(-1), mr.sum(-1)).unsqueeze(-1)

    def one(tok: Tensor, m: Tensor) -> Tensor:
        pos = m.cumsum(-1)
        tok = torch.where(m, tok, torch.zeros((), dtype=tok.dtype))
        head = torch.where(pos <= shared, tok, torch.zeros((), dtype=tok.dtype)).sum(-1)
        return head + a * (tok.sum(-1) - head)

    return one(chosen_token_logps, mc), one(rejected_token_logps, mr)


def _wpo_from_stats(lp: Tensor, log_sum_sq: Tensor, valid: Tensor) -> Tensor:
    aligned = torch.where(valid, lp - log_sum_sq, torch.zeros((), dtype=lp.dtype))
    return torch.exp(aligned.sum(-1) / valid.sum(-1).clamp(min=1).to(lp.dtype))


def wpo_weights(logits: Tensor, target: Tensor, *, mask: Tensor | None = None,
                ignore_index: int | None = -100) -> Tensor:
    r"""WPO sequence weights (Zhou et al. 2024, arXiv:2406.11827, Eq. 2; TRL ``use_weighting``), no gradient:

    .. math:: w(y) = \exp\Big(\frac1{|y|}\sum_t \big[\log\pi(y_t) - \log\textstyle\sum_v \pi(v)^2\big]\Big),
        \quad \log\sum_v\pi(v)^2 = \mathrm{lse}(2z) - 2\,\mathrm{lse}(z)

    (the "aligned" probability of each token under the policy's own sampling). Pass
    ``weights = w(chosen) * w(rejected)`` to :func:`preference_loss`.

    Example:
        >>> z = torch.zeros(1, 2, 4)  # uniform: pi(y) = sum_v pi(v)^2 = 1/4, so w = 1
        >>> wpo_weights(z, torch.tensor([[0, 3]]))
        tensor([1.])
    """
    with torch.no_grad():
        z = float_logits(logits)
        lp = token_logprobs(z, target, mask=mask, ignore_index=ignore_index)
        lss = torch.logsumexp(2 * z, -1) - 2 * torch.logsumexp(z, -1)
        return _wpo_from_stats(lp, lss, _valid(target, mask, ignore_index))


def wpo_weights_from_hidden(hidden: Tensor, weight: Tensor, target: Tensor, *, bias: Tensor | None = None,
                            mask: Tensor | None = None, ignore_index: int = -100,
                            chunk_size: int = 1024) -> Tensor:
    r""":func:`wpo_weights` of ``hidden @ weight.T + bias`` with logits formed ``chunk_size`` tokens at a
    time (no gradient, so nothing is kept). hidden (..., T, D), weight (V, D), target (..., T).

    Example:
        >>> h, w = torch.randn(2, 5, 3), torch.randn(7, 3)
        >>> y = torch.randint(0, 7, (2, 5))
        >>> bool(torch.allclose(wpo_weights_from_hidden(h, w, y, chunk_size=3), wpo_weights(h @ w.T, y)))
        True
    """
    check_tensor(hidden, "hidden", floating=True, min_dim=2)
    check_tensor(weight, "weight", floating=True)
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must have shape (V, {hidden.shape[-1]}), got {tuple(weight.shape)}")
    check_int(chunk_size, "chunk_size", 1)
    check_tensor(target, "target", min_dim=1)
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"target must have shape {tuple(hidden.shape[:-1])}, got {tuple(target.shape)}")
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        h = hidden.reshape(-1, hidden.shape[-1])
        y = target.reshape(-1)
        valid = _valid(y, None if mask is None else check_mask(mask, target).reshape(-1), ignore_index)
        if bool(((y < 0) | (y >= weight.shape[0]))[valid].any()):
            raise ValueError(f"target must hold indices in [0, {weight.shape[0]}) or ignore_index")
        lp = torch.zeros(y.shape, dtype=acc)
        lss = torch.zeros(y.shape, dtype=acc)
        w = weight.to(acc)
        b = None if bias is None else bias.to(acc)
        for s in range(0, h.shape[0], chunk_size):
            z = F.linear(h[s:s + chunk_size].to(acc), w, b)
            lse = torch.logsumexp(z, -1)
            yc = torch.where(valid[s:s + chunk_size], y[s:s + chunk_size], 0)
            lp[s:s + chunk_size] = z.gather(-1, yc[:, None]).squeeze(-1) - lse
            lss[s:s + chunk_size] = torch.logsumexp(2 * z, -1) - 2 * lse
        shape = target.shape
        return _wpo_from_stats(lp.view(shape), lss.view(shape), valid.view(shape))


# --------------------------------------------------------------------------------------------------
# pairwise losses
# --------------------------------------------------------------------------------------------------


def f_divergence_score(logratio: Tensor, divergence: str = "reverse_kl", alpha: float = 0.5) -> Tensor:
    r"""f-DPO score s(u) = f'(pi / pi_ref) of the log-ratio u = log pi - log pi_ref (TRL's forms).

    ``reverse_kl``: u; ``forward_kl``: 1 - e^{-u}; ``js_divergence``: log 2 + log sigmoid(u);
    ``alpha_divergence``: (e^{(alpha-1) u} - 1) / (alpha - 1) with the exponent clamped to <= 80 (u
    itself when |alpha - 1| < 1e-6). f-DPO (Wang et al. 2024, arXiv:2309.16240) replaces u by s(u) in
    the Bradley-Terry logit: beta (s(u_w) - s(u_l)).

    Example:
        >>> u = torch.tensor([0.0, 1.0])
        >>> f_divergence_score(u, "forward_kl")
        tensor([0.0000, 0.6321])
    """
    check_choice(divergence, F_DIVERGENCES, "f_divergence")
    if divergence == "reverse_kl":
        return logratio
    if divergence == "forward_kl":
        return 1 - torch.exp(-logratio)
    if divergence == "js_divergence":
        return math.log(2) + F.logsigmoid(logratio)
    a = check_real(alpha, "f_alpha", finite=True)
    if abs(a - 1.0) < 1e-6:
        return logratio
    t = torch.clamp((a - 1.0) * logratio, max=_ALPHA_CLAMP)
    return (torch.exp(t) - 1.0) / (a - 1.0)


def _logps(x: Any, name: str, like: Tensor | None = None) -> Tensor:
    check_tensor(x, name, floating=True)
    if like is not None:
        check_same_shape(x, like, name, "policy_chosen_logps")
    check_finite(x, name)
    return x.double() if x.dtype == torch.float64 else x.float()


def _lengths(x: Any, name: str, like: Tensor) -> Tensor:
    check_tensor(x, name)
    check_same_shape(x, like, name, "policy_chosen_logps")
    if x.dtype == torch.bool or bool((x < 0).any()):
        raise ValueError(f"{name} must hold non-negative token counts, got {x}")
    return x.to(like.dtype).clamp(min=1.0)


def _output(loss: Tensor, chosen: Tensor, rejected: Tensor, beta: float) -> PreferenceOutput:
    cr, rr = beta * chosen.detach(), beta * rejected.detach()
    return PreferenceOutput(loss, cr, rr, cr - rr, (cr > rr).to(cr.dtype))


def _smoothed(x: Tensor, eps: float) -> Tensor:
    return -(1 - eps) * F.logsigmoid(x) - eps * F.logsigmoid(-x)


def _check_combination(types: Sequence[str], *, f_divergence: str, label_smoothing: float, hdpo_alpha: float,
                       weights: Tensor | None, lengths: bool) -> None:
    for t in types:
        check_choice(t, LOSS_TYPES, "loss_type")
    if len(set(types)) != len(types):
        raise ValueError(f"loss_type must not repeat a loss, got {list(types)}")
    bad = [t for t in types if t not in _F_OK]
    if f_divergence != "reverse_kl" and bad:
        raise ValueError(f"loss_type {bad[0]!r} has no f-divergence form (f_divergence={f_divergence!r} is "
                         f"defined only for {sorted(_F_OK)}): the beta log Z(x) term cancels only in the "
                         "chosen - rejected score difference")
    if label_smoothing and not set(types) & _SMOOTHED:
        raise ValueError(f"label_smoothing must be 0 for loss_type {list(types)} (it is used only by "
                         f"{sorted(_SMOOTHED)}), got {label_smoothing}")
    if "exo_pair" in types and label_smoothing == 0:
        raise ValueError("label_smoothing must be > 0 for loss_type 'exo_pair' (the EXO paper uses 1e-3), "
                         "got 0.0")
    if "robust" in types and not label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5) for loss_type 'robust', got {label_smoothing}")
    if hdpo_alpha != 1.0 and "hdpo" not in types:
        raise ValueError(f"hdpo_alpha must be 1.0 unless loss_type includes 'hdpo', got {hdpo_alpha}")
    if weights is not None and set(types) & {"aot", "aot_unpaired"}:
        raise ValueError("weights (WPO) must be None for loss_type 'aot'/'aot_unpaired': they sort the "
                         "batch, which misaligns per-pair weights")
    need = [t for t in types if t in _NEED_LENGTHS]
    if need and not lengths:
        raise ValueError(f"chosen_lengths and rejected_lengths must be given for loss_type {need[0]!r} "
                         "(completion token counts for its length normalisation), got None")


def preference_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    loss_type: str | Sequence[str] = "sigmoid",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    f_divergence: str = "reverse_kl",
    f_alpha: float = 0.5,
    hdpo_alpha: float = 1.0,
    discopop_tau: float = 0.05,
    loss_weights: Sequence[float] | None = None,
    weights: Tensor | None = None,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    reduction: str = "mean",
) -> PreferenceOutput:
    r"""A DPO-family preference loss over (policy, reference) x (chosen, rejected) sequence log-probs.

    With log-ratios :math:`u_w = \log\pi(y_w) - \log\pi_{ref}(y_w)`, :math:`u_l` likewise, the
    f-divergence scores :math:`s = ` :func:`f_divergence_score` (``f_divergence``, ``f_alpha``),
    :math:`\Delta = s(u_w) - s(u_l)`, :math:`\varepsilon` = ``label_smoothing``, :math:`\sigma` the
    logistic function and :math:`\bar s = s / |y|` (``*_lengths``), per pair (TRL 1.16 ``DPOTrainer``):

    - ``sigmoid`` (DPO, Rafailov et al. 2023): :math:`-(1-\varepsilon)\log\sigma(\beta\Delta)
      - \varepsilon\log\sigma(-\beta\Delta)` (eps > 0: conservative DPO, cDPO, as TRL <= 0.x and
      CPOTrainer; TRL 1.16 ignores label_smoothing here);
    - ``hinge`` (SLiC): relu(1 - beta Delta);  ``ipo`` (Azar et al. 2023): :math:`(\bar s_w - \bar s_l -
      1/(2\beta))^2`;  ``sigmoid_norm``: :math:`-\log\sigma(\beta(\bar s_w - \bar s_l))`;
    - ``robust`` (rDPO, Chowdhury et al. 2024): :math:`[-(1-\varepsilon)\log\sigma(\beta\Delta) +
      \varepsilon\log\sigma(-\beta\Delta)] / (1-2\varepsilon)` (unbiased under label noise eps;
      unbounded below on pairs whose flipped share is under eps / (1 - eps): no finite minimiser there);
    - ``exo_pair`` (EXO, Ji et al. 2024): KL([q, 1-q] || [1-eps, eps]) with q = sigma(beta Delta);
    - ``nca_pair`` (Chen et al. 2024): -log sigma(beta u_w) - (log sigma(-beta u_w) + log sigma(-beta u_l))
      / 2;
    - ``bco_pair``: -log sigma(beta u_w) - log sigma(-beta u_l);  ``sppo_hard``: (u_w - 1/(2 beta))^2 +
      (u_l + 1/(2 beta))^2;
    - ``aot`` / ``aot_unpaired`` (Melnyk et al. 2024): cDPO on the batch-sorted log-ratio differences /
      the separately sorted u_w and u_l;
    - ``apo_zero`` / ``apo_down`` (D'Oosterlinck et al. 2024, Eqs. 7, 8): 1 - sigma(beta u_w) +
      sigma(beta u_l) / sigma(beta u_w) + 1 - sigma(beta (u_w - u_l));
    - ``discopop`` (Chan Lu et al. 2024): with x = beta Delta, m = sigma(x / tau):
      -(1 - m) log sigma(x) + m e^{-x};
    - ``sft``: the chosen token-mean NLL of the batch, -sum(logp_w) / sum(|y_w|), broadcast to every pair;
    - ``hdpo`` (H-DPO, Omura et al. 2024, arXiv:2411.07595): :math:`-\log\sigma(\alpha\beta(\log\pi(y_w) -
      \log\pi(y_l)) - \beta(\log\pi_{ref}(y_w) - \log\pi_{ref}(y_l)))`, alpha = ``hdpo_alpha``; alpha < 1
      sharpens (optimum :math:`\pi \propto (\pi_{ref} e^{r/\beta})^{1/\alpha}`), alpha = 1 is DPO.

    ``loss_type`` may be a list, combined as sum_k ``loss_weights[k]`` * loss_k (TRL's MPO-style mix).
    ``weights`` (per pair, detached) multiplies each pair's loss: WPO's w(y_w) w(y_l) from
    :func:`wpo_weights`. For LD-DPO pass :func:`ld_sequence_logprobs` as the four inputs.
    Rewards: beta u_w, beta u_l (TRL's ``rewards/*``). Units: nats.

    Bad combinations raise ValueError: an f-divergence other than reverse KL with a loss that has no
    f-form, label_smoothing with a loss that ignores it (or 0 for ``exo_pair``, >= 0.5 for ``robust``),
    ``hdpo_alpha`` without ``hdpo``, WPO weights with ``aot*``, missing lengths for ``ipo``,
    ``sigmoid_norm`` and ``sft``.

    Example:
        >>> pc, pr = torch.tensor([-5.0, -7.0]), torch.tensor([-6.0, -6.0])
        >>> rc, rr = torch.tensor([-5.5, -6.5]), torch.tensor([-5.5, -6.5])
        >>> out = preference_loss(pc, pr, rc, rr, beta=0.5)
        >>> ref = -torch.nn.functional.logsigmoid(0.5 * ((pc - rc) - (pr - rr))).mean()
        >>> bool(torch.isclose(out.loss, ref)), out.margins
        (True, tensor([ 0.5000, -0.5000]))
    """
    pc = _logps(policy_chosen_logps, "policy_chosen_logps")
    if pc.dim() < 1:
        raise ValueError(f"policy_chosen_logps must have a batch axis, got shape {tuple(pc.shape)}")
    pr = _logps(policy_rejected_logps, "policy_rejected_logps", pc)
    rc = _logps(ref_chosen_logps, "ref_chosen_logps", pc).to(pc.dtype)
    rr = _logps(ref_rejected_logps, "ref_rejected_logps", pc).to(pc.dtype)
    pr = pr.to(pc.dtype)
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    if not types:
        raise ValueError("loss_type must name at least one loss, got []")
    if loss_weights is None:
        lw = [1.0] * len(types)
    else:
        lw = [check_real(x, "loss_weights", finite=True) for x in loss_weights]
        if len(lw) != len(types):
            raise ValueError(f"loss_weights must have one weight per loss_type ({len(types)}), got {len(lw)}")
    b = check_positive(beta, "beta")
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    check_choice(f_divergence, F_DIVERGENCES, "f_divergence")
    fa = check_real(f_alpha, "f_alpha", finite=True)
    ha = check_positive(hdpo_alpha, "hdpo_alpha")
    tau = check_positive(discopop_tau, "discopop_tau")
    check_reduction(reduction)
    w = None
    if weights is not None:
        w = _logps(weights, "weights", pc).to(pc.dtype).detach()
        if bool((w < 0).any()):
            raise ValueError(f"weights must be non-negative, got {w}")
    has_len = chosen_lengths is not None and rejected_lengths is not None
    _check_combination(types, f_divergence=f_divergence, label_smoothing=eps, hdpo_alpha=ha, weights=w,
                       lengths=has_len)
    lc = _lengths(chosen_lengths, "chosen_lengths", pc) if has_len else None
    lr = _lengths(rejected_lengths, "rejected_lengths", pc) if has_len else None

    uw, ul = pc - rc, pr - rr
    sw, sl = f_divergence_score(uw, f_divergence, fa), f_divergence_score(ul, f_divergence, fa)
    d = sw - sl
    total: Tensor | None = None
    for t, wt in zip(types, lw):
        if t == "sigmoid":
            per = _smoothed(b * d, eps)
        elif t == "hinge":
            per = torch.relu(1 - b * d)
        elif t in ("ipo", "sigmoid_norm"):
            assert lc is not None and lr is not None
            dn = sw / lc - sl / lr
            per = (dn - 1 / (2 * b)) ** 2 if t == "ipo" else -F.logsigmoid(b * dn)
        elif t == "exo_pair":
            x = b * d
            per = (torch.sigmoid(x) * (F.logsigmoid(x) - math.log1p(-eps))
                   + torch.sigmoid(-x) * (F.logsigmoid(-x) - math.log(eps)))
        elif t == "nca_pair":
            per = -F.logsigmoid(b * uw) - 0.5 * F.logsigmoid(-b * uw) - 0.5 * F.logsigmoid(-b * ul)
        elif t == "robust":
            per = (-(1 - eps) * F.logsigmoid(b * d) + eps * F.logsigmoid(-b * d)) / (1 - 2 * eps)
        elif t == "bco_pair":
            per = -F.logsigmoid(b * uw) - F.logsigmoid(-b * ul)
        elif t == "sppo_hard":
            per = (uw - 0.5 / b) ** 2 + (ul + 0.5 / b) ** 2
        elif t == "aot":
            delta = torch.sort(pc - pr, dim=0).values - torch.sort(rc - rr, dim=0).values
            per = _smoothed(b * delta, eps)
        elif t == "aot_unpaired":
            per = _smoothed(b * (torch.sort(uw, dim=0).values - torch.sort(ul, dim=0).values), eps)
        elif t == "apo_zero":
            per = 1 - torch.sigmoid(b * uw) + torch.sigmoid(b * ul)
        elif t == "apo_down":
            per = torch.sigmoid(b * uw) + 1 - torch.sigmoid(b * (uw - ul))
        elif t == "discopop":
            x = b * d
            # m e^{-x} as exp(log sigma(x / tau) - x): TRL's e^{-x} * m is inf * 0 = NaN for x << 0
            per = -F.logsigmoid(x) * torch.sigmoid(-x / tau) + torch.exp(F.logsigmoid(x / tau) - x)
        elif t == "sft":
            assert lc is not None
            per = (-pc.sum() / lc.sum()).expand(pc.shape)
        else:  # hdpo
            per = -F.logsigmoid(ha * b * (pc - pr) - b * (rc - rr))
        if w is not None:
            per = per * w
        total = wt * per if total is None else total + wt * per
    assert total is not None
    return _output(reduce(total, reduction), uw, ul, b)


def _free_inputs(chosen: Any, rejected: Any) -> tuple[Tensor, Tensor]:
    c = _logps(chosen, "chosen_logps")
    if c.dim() < 1:
        raise ValueError(f"chosen_logps must have a batch axis, got shape {tuple(c.shape)}")
    r = _logps(rejected, "rejected_logps")
    check_same_shape(r, c, "rejected_logps", "chosen_logps")
    return c, r.to(c.dtype)


def simpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, *, beta: float = 2.0, gamma: float = 0.5,
               label_smoothing: float = 0.0, reduction: str = "mean") -> PreferenceOutput:
    r"""SimPO (Meng et al. 2024, arXiv:2405.14734), reference-free, on *length-averaged* log-probs
    (``sequence_logprobs(..., average=True)``), TRL ``CPOTrainer(loss_type="simpo")``:

    .. math:: x = \beta(\bar\ell_w - \bar\ell_l) - \gamma,\quad
        L = -(1-\varepsilon)\log\sigma(x) - \varepsilon\log\sigma(-x)

    (TRL's ``simpo_gamma`` = gamma, the target margin in reward units; SimPO's paper uses beta 2-2.5,
    gamma/beta 0.5-1.6). Rewards: beta times the averaged log-probs. Units: nats.

    Example:
        >>> out = simpo_loss(torch.tensor([-1.0]), torch.tensor([-1.5]), beta=2.0, gamma=0.5)
        >>> round(out.loss.item(), 4)  # -log sigmoid(2 * 0.5 - 0.5)
        0.4741
    """
    c, r = _free_inputs(chosen_logps, rejected_logps)
    b = check_positive(beta, "beta")
    g = check_real(gamma, "gamma", finite=True)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    check_reduction(reduction)
    return _output(reduce(_smoothed(b * (c - r) - g, eps), reduction), c, r, b)


def orpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, *, beta: float = 0.1, nll: Tensor | None = None,
              reduction: str = "mean") -> PreferenceOutput:
    r"""ORPO (Hong et al. 2024, arXiv:2403.07691), reference-free, on *length-averaged* log-probs,
    TRL ``ORPOTrainer.odds_ratio_loss``:

    .. math:: \log\mathrm{odds}(y) = \bar\ell - \log(1 - e^{\bar\ell}),\quad
        L = \mathrm{NLL} - \beta \log\sigma(\log\mathrm{odds}(y_w) - \log\mathrm{odds}(y_l))

    ``nll`` is the SFT term; by default each pair's -mean log-prob of the chosen completion
    (``-chosen_logps``); pass TRL's (the chosen tokens' mean NLL over the whole batch) to match
    it exactly. log(1 - e^x) is computed stably (log1mexp). Rewards: beta times the averaged
    log-probs. Units: nats.

    Example:
        >>> out = orpo_loss(torch.tensor([-0.5]), torch.tensor([-1.0]), beta=0.1, nll=torch.tensor(0.0))
        >>> round(out.loss.item(), 4)
        0.032
    """
    c, r = _free_inputs(chosen_logps, rejected_logps)
    b = check_positive(beta, "beta")
    check_reduction(reduction)
    if bool((c >= 0).any()) or bool((r >= 0).any()):
        raise ValueError("chosen_logps and rejected_logps must be < 0 for ORPO (log-odds of probability 1 "
                         "are infinite)")

    def log1mexp(x: Tensor) -> Tensor:  # log(1 - e^x), x < 0 (Maechler 2012)
        return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))

    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    if nll is None:
        sft = -c
    else:
        sft = _logps(nll, "nll").to(c.dtype)
    per = sft - b * F.logsigmoid(log_odds)
    return _output(reduce(per, reduction), c, r, b)


# --------------------------------------------------------------------------------------------------
# nn.Module wrappers and the registry
# --------------------------------------------------------------------------------------------------


class PreferenceLoss(nn.Module):
    """``nn.Module`` form of :func:`preference_loss`: options at construction, the four sequence log-prob
    tensors (and optional ``weights``, ``chosen_lengths``, ``rejected_lengths``) at call.

    Example:
        >>> loss = PreferenceLoss("hdpo", beta=0.5, hdpo_alpha=0.8)
        >>> x = torch.tensor([-1.0])
        >>> loss(x, x - 1, x, x).loss.shape
        torch.Size([])
    """

    def __init__(self, loss_type: str | Sequence[str] = "sigmoid", **options: Any) -> None:
        super().__init__()
        self.loss_type = loss_type
        self.options = options
        x = torch.zeros(1)  # validate the combination now, not at the first batch
        n = torch.ones(1)
        preference_loss(x, x, x, x, loss_type=loss_type, chosen_lengths=n, rejected_lengths=n,
                        weights=None, **options)

    def forward(self, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
                ref_rejected_logps: Tensor, **batch: Any) -> PreferenceOutput:
        return preference_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                               ref_rejected_logps, loss_type=self.loss_type, **self.options, **batch)

    def extra_repr(self) -> str:
        return ", ".join([f"loss_type={self.loss_type!r}"] + [f"{k}={v!r}" for k, v in self.options.items()])


class SimPOLoss(nn.Module):
    """``nn.Module`` form of :func:`simpo_loss` (length-averaged chosen / rejected log-probs at call).

    Example:
        >>> SimPOLoss(beta=2.0)(torch.tensor([-1.0]), torch.tensor([-2.0])).accuracies
        tensor([1.])
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options
        simpo_loss(torch.zeros(1), torch.zeros(1), **options)

    def forward(self, chosen_logps: Tensor, rejected_logps: Tensor) -> PreferenceOutput:
        return simpo_loss(chosen_logps, rejected_logps, **self.options)


class ORPOLoss(nn.Module):
    """``nn.Module`` form of :func:`orpo_loss` (length-averaged chosen / rejected log-probs at call).

    Example:
        >>> ORPOLoss(beta=0.1)(torch.tensor([-1.0]), torch.tensor([-2.0])).margins
        tensor([0.1000])
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options
        orpo_loss(torch.full((1,), -1.0), torch.full((1,), -1.0), **options)

    def forward(self, chosen_logps: Tensor, rejected_logps: Tensor,
                nll: Tensor | None = None) -> PreferenceOutput:
        return orpo_loss(chosen_logps, rejected_logps, nll=nll, **self.options)


_REFS = {
    "sigmoid": ("Rafailov et al. 2023, DPO, arXiv:2305.18290 (label_smoothing: cDPO)", {"beta": 0.1}),
    "hinge": ("Zhao et al. 2023, SLiC-HF, arXiv:2305.10425", {"beta": 0.1}),
    "ipo": ("Azar et al. 2023, IPO, arXiv:2310.12036 (TRL's length-averaged form)", {"beta": 0.1}),
    "exo_pair": ("Ji et al. 2024, EXO, arXiv:2402.00856, Eq. 16", {"beta": 0.1, "label_smoothing": 1e-3}),
    "nca_pair": ("Chen et al. 2024, NCA, arXiv:2402.05369", {"beta": 0.1}),
    "robust": ("Chowdhury et al. 2024, rDPO, arXiv:2403.00409", {"beta": 0.1, "label_smoothing": 0.0}),
    "bco_pair": ("Jung et al. 2024, BCO, arXiv:2404.04656 (paired form, no running mean)", {"beta": 0.1}),
    "sppo_hard": ("Wu et al. 2024, SPPO, arXiv:2405.00675 (hard labels)", {"beta": 0.1}),
    "aot": ("Melnyk et al. 2024, AOT, arXiv:2406.05882 (paired)", {"beta": 0.1}),
    "aot_unpaired": ("Melnyk et al. 2024, AOT, arXiv:2406.05882 (unpaired)", {"beta": 0.1}),
    "apo_zero": ("D'Oosterlinck et al. 2024, APO, arXiv:2408.06266, Eq. 7", {"beta": 0.1}),
    "apo_down": ("D'Oosterlinck et al. 2024, APO, arXiv:2408.06266, Eq. 8", {"beta": 0.1}),
    "discopop": ("Chan Lu et al. 2024, DiscoPOP, arXiv:2406.08414, Eq. 5",
                 {"beta": 0.1, "discopop_tau": 0.05}),
    "sft": ("supervised NLL of the chosen completions (TRL's 'sft' loss_type)", {}),
    "sigmoid_norm": ("TRL's length-normalised DPO", {"beta": 0.1}),
    "hdpo": ("Omura et al. 2024, H-DPO, arXiv:2411.07595", {"beta": 0.1, "hdpo_alpha": 1.0}),
}

#: Every preference loss: the DPO family through :func:`preference_loss` (``fn(pc, pr, rc, rr, **params)``),
#: f-DPO by divergence (``"f_dpo_<divergence>"``: the sigmoid loss with that score) and the
#: reference-free ``simpo`` / ``orpo`` (``fn(chosen_logps, rejected_logps, **params)``, averaged log-probs).
PREFERENCE_LOSSES: dict[str, Method] = registry(
    *(Method(name, partial(preference_loss, loss_type=name), ref, params, f"TRL DPOTrainer loss_type={name!r}"
             if name != "hdpo" else "entropy-controllable DPO (not in TRL)")
      for name, (ref, params) in _REFS.items()),
    *(Method(f"f_dpo_{div}", partial(preference_loss, loss_type="sigmoid", f_divergence=div),
             "Wang et al. 2024, f-DPO, arXiv:2309.16240",
             {"beta": 0.1, **({"f_alpha": 0.5} if div == "alpha_divergence" else {})},
             f"DPO with the {div} score (TRL f_divergence_type={div!r})")
      for div in F_DIVERGENCES),
    Method("simpo", simpo_loss, "Meng et al. 2024, SimPO, arXiv:2405.14734", {"beta": 2.0, "gamma": 0.5},
           "reference-free, length-averaged (TRL CPOTrainer loss_type='simpo')"),
    Method("orpo", orpo_loss, "Hong et al. 2024, ORPO, arXiv:2403.07691", {"beta": 0.1},
           "reference-free odds ratio + NLL (TRL ORPOTrainer)"),
)


# --------------------------------------------------------------------------------------------------
# TRL adapter
# --------------------------------------------------------------------------------------------------

_TRAINER_CACHE: dict[type, type] = {}


def trl_dpo_trainer(base: type | None = None) -> type:
    """A subclass of TRL's ``DPOTrainer`` (or of ``base``, itself a DPOTrainer subclass) whose loss is
    :func:`preference_loss` -- so ``loss_type="hdpo"`` and the combination checks work inside TRL.

    Usage (TRL >= 1.16, ``pip install entropykit[rl]``)::

        Trainer = trl_dpo_trainer()
        trainer = Trainer(model=model, args=DPOConfig(beta=0.1, ...), train_dataset=ds,
                          processing_class=tok, loss_options={"loss_type": "hdpo", "hdpo_alpha": 0.8})
        trainer.train()

    The options default to the ``DPOConfig``'s own (``loss_type``, ``loss_weights``, ``beta``,
    ``label_smoothing``, ``f_divergence_type`` -> ``f_divergence``, ``f_alpha_divergence_coef`` ->
    ``f_alpha``, ``discopop_tau``, ``ld_alpha`` and ``use_weighting`` -> WPO weights from the fused
    head's ``log_sum_sq_probs``); ``loss_options`` overrides any of them and adds ``hdpo_alpha``.
    The override is ``_compute_loss``: one policy forward through TRL's fused LM head
    (``fused_lm_head=True``, per-token log-probs without the logits), the reference log-probs from the
    batch (``precompute_ref_log_probs``) or ``compute_ref_log_probs``, then :func:`preference_loss`;
    it logs ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins`` and
    ``logps/*`` like TRL (not TRL's entropy / logits / token-accuracy metrics, nor the MoE aux loss).
    Raises ImportError without TRL.

    Example:
        >>> import importlib.util
        >>> importlib.util.find_spec("trl") is None or trl_dpo_trainer().__name__ == "EntropyKitDPOTrainer"
        True
    """
    import trl

    major, minor = (int(x) for x in trl.__version__.split(".")[:2])
    if (major, minor) < (1, 16):
        raise ImportError(f"trl_dpo_trainer needs TRL >= 1.16 (its fused-LM-head DPOTrainer), "
                          f"got {trl.__version__}")
    cls = trl.DPOTrainer if base is None else base
    if not (isinstance(cls, type) and issubclass(cls, trl.DPOTrainer)):
        raise TypeError(f"base must be a subclass of trl.DPOTrainer, got {cls!r}")
    if cls in _TRAINER_CACHE:
        return _TRAINER_CACHE[cls]

    def __init__(self: Any, *args: Any, loss_options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        cls.__init__(self, *args, **kwargs)
        self.loss_options = _trainer_options(self, loss_options)

    sub = type(f"EntropyKit{cls.__name__}", (cls,),
               {"__init__": __init__, "_compute_loss": _trainer_compute_loss, "__module__": __name__,
                "__doc__": f"{cls.__name__} with entropykit.losses.preference_loss as its loss."})
    _TRAINER_CACHE[cls] = sub
    return sub


def _trainer_options(trainer: Any, overrides: dict[str, Any] | None) -> dict[str, Any]:
    args = trainer.args
    opts: dict[str, Any] = {
        "loss_type": list(trainer.loss_types), "loss_weights": list(trainer.loss_weights),
        "beta": trainer.beta,
        "label_smoothing": trainer.label_smoothing, "f_divergence": trainer.f_divergence_type,
        "f_alpha": trainer.f_alpha_divergence_coef, "discopop_tau": getattr(args, "discopop_tau", 0.05),
    }
    for k, v in (overrides or {}).items():
        if k in ("weights", "chosen_lengths", "rejected_lengths", "reduction"):
            raise ValueError(f"loss_options must not set {k!r}: the trainer computes it from the batch")
        opts[k] = v
    if overrides and "loss_type" in overrides and "loss_weights" not in overrides:
        opts["loss_weights"] = None
    x = torch.zeros(1)  # fail at construction, not at the first step
    preference_loss(x, x, x, x, chosen_lengths=torch.ones(1), rejected_lengths=torch.ones(1), **opts)
    return opts


def _trainer_compute_loss(self: Any, model: Any, inputs: dict[str, Any], return_outputs: bool = False) -> Any:
    """``DPOTrainer._compute_loss`` with :func:`preference_loss` (see :func:`trl_dpo_trainer`)."""
    mode = "train" if self.model.training else "eval"
    skip = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
    kwargs = {k: v for k, v in inputs.items() if k not in skip}
    kwargs["use_cache"] = False
    completion_mask = inputs["completion_mask"]
    labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
    outputs = model(**kwargs, labels=labels, fused_lm_head=True)
    shift = completion_mask[..., 1:].bool()
    seq_len = shift.shape[1]
    tok = outputs.log_probs[:, -seq_len:]
    tok = torch.where(shift, tok, torch.zeros((), dtype=tok.dtype, device=tok.device))
    if self.ld_alpha is None:
        chosen, rejected = tok.sum(1).chunk(2, dim=0)
    else:
        tc, tr = tok.chunk(2, dim=0)
        mc, mr = shift.chunk(2, dim=0)
        chosen, rejected = ld_sequence_logprobs(tc, tr, mc, mr, self.ld_alpha)
    if self.precompute_ref_logps:
        ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
    else:
        ref_model = self.ref_model if self.ref_model is not None else self.model
        ref_chosen, ref_rejected = self.compute_ref_log_probs(ref_model, inputs)
    lengths = completion_mask.sum(1)
    weights = None
    if self.use_weighting:
        with torch.no_grad():
            lss = outputs.log_sum_sq_probs[:, -seq_len:]
            w = _wpo_from_stats(tok.detach(), lss, shift)
            wc, wr = w.chunk(2, dim=0)
            weights = wc * wr
    out = preference_loss(chosen, rejected, ref_chosen.to(chosen.dtype), ref_rejected.to(chosen.dtype),
                          weights=weights, chosen_lengths=lengths.chunk(2)[0],
                          rejected_lengths=lengths.chunk(2)[1],
                          **self.loss_options)
    gather = self.accelerator.gather
    metrics = self._metrics[mode]
    metrics["rewards/chosen"].append(gather(out.chosen_rewards).mean().item())
    metrics["rewards/rejected"].append(gather(out.rejected_rewards).mean().item())
    metrics["rewards/accuracies"].append(gather(out.accuracies).mean().item())
    metrics["rewards/margins"].append(gather(out.margins).mean().item())
    metrics["logps/chosen"].append(gather(chosen.detach()).mean().item())
    metrics["logps/rejected"].append(gather(rejected.detach()).mean().item())
    return (out.loss, outputs) if return_outputs else out.loss
