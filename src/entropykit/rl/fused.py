"""The fused path: policy loss + entropy control from hidden states and the LM head, no N x V logits.

Two ways to get the gradients without the logits, chosen per call (both exact, first order):

- **eager** (Liger-style): when the per-token loss is separable -- methods ``vanilla``, ``gpg``,
  ``cispo``, no high-entropy mask -- the gradient of the loss with respect to each token's
  log-probability and entropy is known as soon as that token's chunk of logits is, so the forward
  pass forms dz for the chunk at once and accumulates dL/dh and dL/dW; the backward is a scale. Three
  N x V x D matmuls in all, like the logits path (one forward, two backward).
- **row-sparse backward**: otherwise (a high-entropy mask, Clip-Cov / KL-Cov / GSPO whose loss
  needs every token first) the forward computes only log-probabilities and entropies, and the
  backward recomputes the logits **only for the rows whose gradient is non-zero**: with the top-rho
  entropy mask (and the bonus restricted to it, as TRL does) that is about rho N rows, so the cost is
  1 + 3 rho matmul passes (1.6 at rho = 0.2) instead of the logits path's 3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_choice, check_class_index, check_int, check_real, check_tensor
from entropykit.rl._common import LOSS_AGG_MODES, agg, as_advantages, as_float, as_mask, masked_mean
from entropykit.rl.entropy import high_entropy_mask

__all__ = ["fused_policy_loss"]

#: Methods whose per-token loss depends only on that token's inputs: gradients formed in the forward.
SEPARABLE = ("vanilla", "gpg", "cispo")
_CHUNK_ELEMS = 2**24  # elements of one (rows x V) buffer: 64 MB in float32

GradFn = Callable[[int, int, Tensor, Tensor], tuple[Tensor, Tensor]]


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows(n: int, v: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, min(n, chunk_size))
    return max(1, min(n, _CHUNK_ELEMS // max(1, v)))


def _head_pass(h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, temperature: float, rows: int,
               grad: GradFn | None = None) -> tuple[Tensor | None, ...]:
    r"""Chunk by chunk over the rows of ``h`` (n, D): :math:`z = (h W^\top + b) / T`, the target's
    log-probability and the entropy. With ``grad(s, e, lp_c, H_c) -> (g_lp, g_H)`` (the upstream
    gradients of rows s:e) also dL/dh, dL/dW, dL/db from
    :math:`\partial L/\partial z_j = p_j(-g_H(\log p_j + H) - g_{lp}) + g_{lp}[j = y]`, divided by T.
    ``w``/``b`` are already in the accumulation dtype."""
    n, d = h.shape
    v = w.shape[0]
    acc = w.dtype
    zbuf = torch.empty(min(rows, n), v, dtype=acc, device=h.device)
    pbuf = torch.empty_like(zbuf)
    lp = torch.empty(n, dtype=acc, device=h.device)
    ent = torch.empty(n, dtype=acc, device=h.device)
    if grad is not None:
        dh = torch.empty(n, d, dtype=acc, device=h.device)
        dw = torch.zeros(v, d, dtype=acc, device=h.device)
        db = torch.zeros(v, dtype=acc, device=h.device) if b is not None else None
    for s in range(0, n, rows):
        e = min(n, s + rows)
        c = e - s
        hc = h[s:e].to(acc)
        z = zbuf[:c]
        if b is None:
            torch.mm(hc, w.t(), out=z)
        else:
            torch.addmm(b, hc, w.t(), out=z)
        if temperature != 1.0:
            z.div_(temperature)
        z.sub_(z.amax(1, keepdim=True))
        p = torch.exp(z, out=pbuf[:c])
        total = p.sum(1, keepdim=True)
        p.div_(total)
        logp = z.sub_(total.log_())  # z now holds log p
        yc = y[s:e, None]
        lp[s:e] = logp.gather(1, yc)[:, 0]
        hrow = -torch.bmm(p[:, None, :], logp[:, :, None]).view(c)
        ent[s:e] = hrow
        if grad is None:
            continue
        g_lp, g_h = grad(s, e, lp[s:e], hrow)
        dz = logp.add_(hrow[:, None]).mul_(-g_h[:, None]).sub_(g_lp[:, None]).mul_(p)
        dz.scatter_add_(1, yc, g_lp[:, None])
        if temperature != 1.0:
            dz.div_(temperature)
        torch.mm(dz, w, out=dh[s:e])
        dw.addmm_(dz.t(), hc)
        if db is not None:
            db.add_(dz.sum(0))
    if grad is None:
        return lp, ent
    return lp, ent, dh, dw, db


class _HeadStats(torch.autograd.Function):
    """(log pi(y), H) per row; the backward recomputes the logits only for rows with a gradient."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, temperature: float,
                rows: int) -> tuple[Tensor, Tensor]:
        acc = _acc(h.dtype)
        lp, ent = _head_pass(h, w.to(acc), None if b is None else b.to(acc), y, temperature, rows)
        assert lp is not None and ent is not None
        ctx.save_for_backward(h, w, b, y)
        ctx.args = (temperature, rows)
        ctx.set_materialize_grads(False)
        return lp, ent

    @staticmethod
    def backward(ctx: Any, g_lp: Tensor | None, g_ent: Tensor | None) -> tuple[Tensor | None, ...]:
        h, w, b, y = ctx.saved_tensors
        temperature, rows = ctx.args
        acc = _acc(h.dtype)
        zero = torch.zeros(h.shape[0], dtype=acc, device=h.device)
        gl = zero if g_lp is None else g_lp.to(acc)
        ge = zero if g_ent is None else g_ent.to(acc)
        idx = ((gl != 0) | (ge != 0)).nonzero().squeeze(1)
        dh = torch.zeros(h.shape, dtype=acc, device=h.device)
        wa = w.to(acc)
        ba = None if b is None else b.to(acc)
        dw: Tensor | None = torch.zeros_like(wa)
        db: Tensor | None = None if ba is None else torch.zeros_like(ba)
        if idx.numel():
            g1, g2 = gl[idx], ge[idx]
            _, _, dh_rows, dw, db = _head_pass(h[idx], wa, ba, y[idx], temperature, rows,
                                               lambda s, e, *_: (g1[s:e], g2[s:e]))
            assert dh_rows is not None and dw is not None
            dh[idx] = dh_rows
        assert dw is not None
        return (dh.to(h.dtype), dw.to(w.dtype), None if b is None or db is None else db.to(b.dtype),
                None, None, None)


class _Precomputed(torch.autograd.Function):
    """A scalar whose gradients with respect to (h, w, b) were formed in the forward: backward scales."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, h: Tensor, w: Tensor, b: Tensor | None, dh: Tensor, dw: Tensor,
                db: Tensor | None) -> Tensor:
        ctx.save_for_backward(dh, dw, db)
        ctx.dtypes = (h.dtype, w.dtype, None if b is None else b.dtype)
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        dh, dw, db = ctx.saved_tensors
        th, tw, tb = ctx.dtypes
        gh = (dh * g.to(dh.dtype)).to(th)
        gw = (dw * g.to(dw.dtype)).to(tw)
        gb = None if db is None or tb is None else (db * g.to(db.dtype)).to(tb)
        return None, gh, gw, gb, None, None, None


def _token_scale(mask: Tensor, mode: str, normalizer: float | None) -> Tensor:
    """Per-token c_t with agg(x, mask, mode, normalizer) = sum_t m_t c_t x_t (see ``agg``)."""
    m = mask.to(torch.float64)
    if mode == "token-mean":
        den = float(m.sum()) if normalizer is None else normalizer
        c = torch.full_like(m, 1.0 / den if den else 0.0)
    elif mode == "seq-mean-token-sum-norm":
        den = mask.shape[-1] if normalizer is None else normalizer
        c = torch.full_like(m, 1.0 / den if den else 0.0)
    else:
        nseq = m[..., 0].numel() if normalizer is None else normalizer
        c = torch.full_like(m, 1.0 / nseq if nseq else 0.0)
        if mode == "seq-mean-token-mean":
            c = c / m.sum(-1, keepdim=True).clamp(min=1)
    return c * m


def fused_policy_loss(
    hidden: Tensor, weight: Tensor, target: Tensor, old_log_prob: Tensor, advantages: Tensor,
    response_mask: Tensor, *, method: str = "vanilla", loss_agg_mode: str = "token-mean",
    bias: Tensor | None = None, temperature: float = 1.0, entropy_coef: float = 0.0,
    top_entropy_quantile: float = 1.0, weights: Tensor | None = None, chunk_size: int | None = None,
    **params: Any,
) -> tuple[Tensor, dict[str, float]]:
    r"""A policy loss of :data:`entropykit.rl.METHODS` computed from hidden states, with the entropy
    bonus and the high-entropy token mask, never building the (B T) x V logits.

    :math:`\log\pi_t` and :math:`H_t` of ``softmax((h W^T + b) / temperature)`` come chunk by chunk
    (a few hundred rows of logits at a time), then

    .. math:: L = \mathrm{policy\_loss}(\log\pi_{old}, \log\pi, A, m; w \cdot M_\rho)
              - c\,\frac{\sum_t m_t M_{\rho,t} H_t}{\sum_t m_t M_{\rho,t}}

    with :math:`M_\rho` = :func:`entropykit.rl.high_entropy_mask` (top ``top_entropy_quantile`` of the
    valid tokens by entropy; 1 everywhere at 1.0) applied as TRL does (it multiplies the per-token loss,
    the denominator keeps all valid tokens), :math:`w` = ``weights`` (e.g. EntroPIC), c =
    ``entropy_coef`` (TRL: the bonus is the token mean over the tokens the mask keeps). TRL's Liger
    fused path raises on both the bonus and the mask; here they are the same code as the logits path.

    Gradients reach ``hidden``, ``weight`` and ``bias`` (first order; no double backward). Separable
    methods (``vanilla``, ``gpg``, ``cispo``) without the mask get them in the forward, chunk by chunk
    (Liger's trick: the backward only scales); every other case recomputes, in the backward, the logits
    of the rows whose gradient is non-zero only (about ``top_entropy_quantile`` of them with the mask).
    Peak extra memory: two chunks of logits (64 MB each by default) plus dL/dh and dL/dW.

    Args:
        hidden: (B, T, D) hidden states of the response positions (already shifted: row t predicts
            ``target[:, t]``); weight: (V, D); bias: (V,) or None; target: (B, T) token ids (any value
            where the mask is 0).
        old_log_prob, advantages, response_mask: as for the policy losses; ``**params`` go to the loss.
        chunk_size: rows of logits per chunk (default: 2^24 / V).

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
    check_tensor(weight, "weight", floating=True)
    d = hidden.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != d or weight.shape[0] < 1:
        raise ValueError(f"weight must have shape (V >= 1, D={d}) to match hidden, got {tuple(weight.shape)}")
    if bias is not None:
        check_tensor(bias, "bias", floating=True)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for x, name in ((weight, "weight"), (bias, "bias")):
        if x is not None and (x.dtype != hidden.dtype or x.device != hidden.device):
            raise TypeError(f"{name} must have hidden's dtype and device ({hidden.dtype}, {hidden.device}), "
                            f"got ({x.dtype}, {x.device})")
    check_tensor(target, "target")
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"target must have the shape of hidden without its last axis "
                         f"{tuple(hidden.shape[:-1])}, got {tuple(target.shape)}")
    mask = as_mask(response_mask, target)
    check_choice(method, tuple(METHODS), "method")
    check_choice(loss_agg_mode, LOSS_AGG_MODES, "loss_agg_mode")
    c = check_real(entropy_coef, "entropy_coef", finite=True)
    rho = check_real(top_entropy_quantile, "top_entropy_quantile", 0.0, 1.0, lo_open=True)
    t = check_real(temperature, "temperature", 0.0, float("inf"), lo_open=True, finite=True)
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", 1)
    y = torch.where(mask, target, torch.zeros((), dtype=target.dtype, device=target.device))
    y = check_class_index(y, tuple(target.shape), weight.shape[0], None)
    n = y.numel()
    h2, y2 = hidden.reshape(n, d), y.reshape(n)
    rows = _rows(n, weight.shape[0], chunk_size)
    needs_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (hidden, weight, bias))
    if needs_grad and rho == 1.0 and method in SEPARABLE:
        return _eager(h2, hidden, weight, bias, y2, t, rows, old_log_prob, advantages, mask, method,
                      loss_agg_mode, c, weights, params)
    lp, ent = _HeadStats.apply(h2, weight, bias, y2, t, rows)
    log_prob, ent = lp.view(target.shape), ent.view(target.shape)
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


def _eager(h2: Tensor, hidden: Tensor, weight: Tensor, bias: Tensor | None, y2: Tensor, t: float, rows: int,
           old_log_prob: Tensor, advantages: Tensor, mask: Tensor, method: str, mode: str, c: float,
           weights: Tensor | None, params: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    """The separable, unmasked case: gradients formed chunk by chunk in the forward."""
    from entropykit.rl import policy_loss

    shape = mask.shape
    acc = _acc(hidden.dtype)
    old = as_float(old_log_prob, "old_log_prob").detach()
    if tuple(old.shape) != tuple(shape):
        raise ValueError(f"old_log_prob must have shape {tuple(shape)}, got {tuple(old.shape)}")
    adv = as_advantages(advantages, torch.empty(shape, dtype=acc, device=mask.device)).detach()
    scale = _token_scale(mask, mode, params.get("normalizer"))
    if weights is not None:
        wt = as_float(weights, "weights").detach()
        if tuple(wt.shape) != tuple(shape):
            raise ValueError(f"weights must have shape {tuple(shape)}, got {tuple(wt.shape)}")
        scale = scale * wt.to(scale.dtype)
    n = mask.numel()
    old_f, adv_f = old.reshape(n).to(acc), adv.reshape(n).to(acc)
    mask_f, scale_f = mask.reshape(n), scale.reshape(n).to(acc)
    count = int(mask.sum())
    g_ent_f = torch.where(mask_f, torch.full((), -c / count if count else 0.0, dtype=acc, device=mask.device),
                          torch.zeros((), dtype=acc, device=mask.device))
    chunk_params = {k: v for k, v in params.items() if k != "normalizer"}

    def grad(s: int, e: int, lp_c: Tensor, ent_c: Tensor) -> tuple[Tensor, Tensor]:
        leaf = lp_c.detach().clone().requires_grad_()
        with torch.enable_grad():
            part, _ = policy_loss(method, old_f[None, s:e], leaf[None], adv_f[None, s:e], mask_f[None, s:e],
                                  "token-mean", normalizer=1.0, weights=scale_f[None, s:e], **chunk_params)
            (g,) = torch.autograd.grad(part, leaf, allow_unused=True)
        return (torch.zeros_like(lp_c) if g is None else g.to(acc)), g_ent_f[s:e]

    wa = weight.detach().to(acc)
    ba = None if bias is None else bias.detach().to(acc)
    with torch.no_grad():
        lp, ent, dh, dw, db = _head_pass(h2.detach(), wa, ba, y2, t, rows, grad)
        assert lp is not None and ent is not None and dh is not None and dw is not None
        log_prob, ent = lp.view(shape), ent.view(shape)
        value, metrics = policy_loss(method, old_log_prob, log_prob, advantages, mask, mode, weights=weights,
                                     **params)
        if c != 0.0:
            value = value - c * agg(ent, mask, "token-mean")
    loss = _Precomputed.apply(value, hidden, weight, bias, dh.view(hidden.shape), dw, db)
    metrics = {**metrics, "entropy": float(masked_mean(ent, mask)),
               "entropy_mask_frac": 1.0 if count else 0.0}
    return loss, metrics
