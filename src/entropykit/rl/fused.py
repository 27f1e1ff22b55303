"""The fused path: policy loss + entropy control from hidden states and the LM head, no N x V logits."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_choice, check_real, check_tensor
from entropykit.ops import linear_token_stats
from entropykit.rl._common import LOSS_AGG_MODES, agg, as_mask, masked_mean
from entropykit.rl.entropy import high_entropy_mask

__all__ = ["fused_policy_loss"]


def fused_policy_loss(
    hidden: Tensor, weight: Tensor, target: Tensor, old_log_prob: Tensor, advantages: Tensor,
    response_mask: Tensor, *, method: str = "vanilla", loss_agg_mode: str = "token-mean",
    bias: Tensor | None = None, temperature: float = 1.0, entropy_coef: float = 0.0,
    top_entropy_quantile: float = 1.0, weights: Tensor | None = None, chunk_size: int | None = None,
    **params: Any,
) -> tuple[Tensor, dict[str, float]]:
    r"""A policy loss of :data:`entropykit.rl.METHODS` computed from hidden states, with the entropy
    bonus and the high-entropy token mask, never building the (B T) x V logits.

    :func:`entropykit.ops.linear_token_stats` gives :math:`\log\pi_t` and :math:`H_t` of
    ``softmax((h W^T + b) / temperature)`` chunk by chunk (its backward recomputes each chunk's
    logits), then

    .. math:: L = \mathrm{policy\_loss}(\log\pi_{old}, \log\pi, A, m; w \cdot M_\rho)
              - c\,\frac{\sum_t m_t M_{\rho,t} H_t}{\sum_t m_t M_{\rho,t}}

    with :math:`M_\rho` = :func:`entropykit.rl.high_entropy_mask` (top ``top_entropy_quantile`` of the
    valid tokens by entropy; 1 everywhere at 1.0) applied as TRL does (it multiplies the per-token loss,
    the denominator keeps all valid tokens), :math:`w` = ``weights`` (e.g. EntroPIC), c =
    ``entropy_coef`` (TRL: the bonus is the token mean over the tokens the mask keeps). TRL's Liger
    fused path raises on both the bonus and the mask; here they are the same code as the logits path.
    Gradients reach ``hidden``, ``weight`` and ``bias``. Peak extra memory: one chunk of logits (see
    ``ops.linear_token_stats``) instead of the logits, their softmax and their gradient.

    Args:
        hidden: (B, T, D) hidden states of the response positions (already shifted: row t predicts
            ``target[:, t]``); weight: (V, D); target: (B, T) token ids (any value where the mask is 0).
        old_log_prob, advantages, response_mask: as for the policy losses; ``**params`` go to the loss.

    Returns:
        (loss, metrics) with the loss's metrics plus ``entropy`` (token mean over valid tokens, nats)
        and ``entropy_mask_frac``.

    >>> torch.manual_seed(0) and None
    >>> h, w = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(11, 4, dtype=torch.float64)
    >>> y, mask = torch.randint(0, 11, (2, 3)), torch.ones(2, 3, dtype=torch.bool)
    >>> old = torch.log_softmax(h @ w.T, -1).gather(-1, y[..., None])[..., 0]
    >>> loss, m = fused_policy_loss(h, w, y, old, torch.tensor([1.0, -1.0]), mask, entropy_coef=0.01)
    >>> ref = -0.01 * m["entropy"]          # on-policy: ratio 1, the advantages cancel
    >>> bool(abs(float(loss) - ref) < 1e-12)
    True
    """
    from entropykit.rl import METHODS, policy_loss  # the registry lives in the package

    check_tensor(hidden, "hidden", floating=True, min_dim=2)
    check_tensor(target, "target")
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"target must have the shape of hidden without its last axis "
                         f"{tuple(hidden.shape[:-1])}, got {tuple(target.shape)}")
    mask = as_mask(response_mask, target)
    check_choice(method, tuple(METHODS), "method")
    check_choice(loss_agg_mode, LOSS_AGG_MODES, "loss_agg_mode")
    c = check_real(entropy_coef, "entropy_coef", finite=True)
    rho = check_real(top_entropy_quantile, "top_entropy_quantile", 0.0, 1.0, lo_open=True)
    y = torch.where(mask, target, torch.zeros((), dtype=target.dtype, device=target.device))
    st = linear_token_stats(hidden, weight, y, bias=bias, temperature=temperature, chunk_size=chunk_size)
    assert st.surprisal is not None  # a target was given
    log_prob, ent = -st.surprisal, st.entropy
    keep = mask
    w = weights
    if rho < 1.0:
        keep = high_entropy_mask(ent, mask, rho)
        ew = keep.to(log_prob.dtype)
        w = ew if w is None else w * ew
    loss, metrics = policy_loss(method, old_log_prob, log_prob, advantages, mask, loss_agg_mode, weights=w,
                                **params)
    if c != 0.0:
        loss = loss - c * agg(ent, keep, "token-mean")
    metrics = {**metrics, "entropy": float(masked_mean(ent.detach(), mask)),
               "entropy_mask_frac": float(keep.sum()) / max(1, int(mask.sum()))}
    return loss, metrics
