"""Attention entropy without the T x T attention matrix: streamed over key blocks, custom autograd.

For one head and one query with scaled scores ``s_j = scale * <q, k_j> + bias_j`` over the keys it may
attend to, the attention distribution is ``p = softmax(s)`` and its entropy (nats) is

    H = -sum_j p_j log p_j = lse(s) - sum_j p_j s_j = log l - c / l,

with, relative to the running maximum ``m`` of the scores seen so far, ``l = sum_j exp(s_j - m)`` and
``c = sum_j exp(s_j - m) (s_j - m)`` (<= 0). Both are accumulated block by block over the keys with
the online-softmax rescaling of FlashAttention (Dao et al., 2022): when the maximum grows from ``m``
to ``m'``, ``l <- a l`` and ``c <- a (c + l (m - m'))`` with ``a = exp(m - m')``. Keeping ``c``
relative to ``m`` avoids the cancellation of ``lse - E[s]`` when the scores are large.

Gradient: ``dH/ds_j = -p_j (s_j - E_p[s])``; backward recomputes each block's scores from the saved
``(m, l, c)`` (no block is stored), so forward and backward hold O(B H block_q block_k) extra memory
however long the sequence is. Queries are processed in blocks too; with a causal mask, key blocks
entirely in a query block's future are skipped.

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: ``attn_mask`` bool (True = may
attend) or float (added to the scores), broadcastable to (B, H, Tq, Tk); ``is_causal`` lets query ``i``
see keys ``j <= i + (Tk - Tq)`` (the queries are the last Tq positions, as with a KV cache). A query
that may attend to no key has no attention distribution: its entropy is reported as 0 and
``attention_entropy(..., return_valid=True)`` says which queries had one.

Sources: the entropy-collapse diagnostic of Zhai et al., "Stabilizing Transformer Training by
Preventing Attention Entropy Collapse" (ICML 2023); online softmax: Milakov & Gimelshein (2018),
FlashAttention (Dao et al., 2022).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_int, check_positive, check_tensor

__all__ = ["attention_entropy"]

_NEG_INF = float("-inf")


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(a + size, n)


def _mask_block(mask: Tensor | None, q0: int, q1: int, k0: int, k1: int) -> Tensor | None:
    """The (…, q0:q1, k0:k1) block of a mask broadcastable to (B, H, Tq, Tk) (size-1 axes kept)."""
    if mask is None:
        return None
    rows = slice(None) if mask.shape[-2] == 1 else slice(q0, q1)
    cols = slice(None) if mask.shape[-1] == 1 else slice(k0, k1)
    return mask[..., rows, cols]


def _scores(
    q: Tensor,
    k: Tensor,
    scale: float,
    mask: Tensor | None,
    causal_offset: int | None,
    q0: int,
    q1: int,
    k0: int,
    k1: int,
    dtype: torch.dtype,
) -> Tensor:
    """Scaled, masked scores (B, H, q1-q0, k1-k0) in ``dtype``; -inf where a key may not be attended."""
    s = torch.matmul(q[:, :, q0:q1].to(dtype), k[:, :, k0:k1].to(dtype).transpose(-1, -2)) * scale
    blk = _mask_block(mask, q0, q1, k0, k1)
    if blk is not None:
        s = s.masked_fill(~blk, _NEG_INF) if blk.dtype == torch.bool else s + blk.to(dtype)
    if causal_offset is not None:
        qi = torch.arange(q0, q1, device=s.device)[:, None] + causal_offset
        kj = torch.arange(k0, k1, device=s.device)[None, :]
        s = s.masked_fill(kj > qi, _NEG_INF)
    return s


def _key_end(q1: int, tk: int, causal_offset: int | None) -> int:
    """One past the last key any query in [.., q1) may see (all keys without a causal mask)."""
    return tk if causal_offset is None else max(0, min(tk, q1 + causal_offset))


def _forward_stats(
    q: Tensor,
    k: Tensor,
    scale: float,
    mask: Tensor | None,
    causal_offset: int | None,
    block: int,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per query: running max m, l = sum exp(s - m), c = sum exp(s - m)(s - m), each (B, H, Tq)."""
    b, h, tq, _ = q.shape
    tk = k.shape[2]
    m = q.new_full((b, h, tq), _NEG_INF, dtype=dtype)
    l = q.new_zeros((b, h, tq), dtype=dtype)
    c = q.new_zeros((b, h, tq), dtype=dtype)
    for q0, q1 in _blocks(tq, block):
        mq, lq, cq = m[:, :, q0:q1], l[:, :, q0:q1], c[:, :, q0:q1]
        for k0, k1 in _blocks(_key_end(q1, tk, causal_offset), block):
            s = _scores(q, k, scale, mask, causal_offset, q0, q1, k0, k1, dtype)
            m_new = torch.maximum(mq, s.amax(-1))
            seen = m_new > _NEG_INF  # rows with at least one attendable key so far
            m_safe = torch.where(seen, m_new, torch.zeros_like(m_new))
            alpha = torch.where(seen, torch.exp(mq - m_safe), torch.zeros_like(m_new))
            shift = torch.where(lq > 0, mq - m_safe, torch.zeros_like(m_new))  # (m - m') where l > 0
            rel = s - m_safe[..., None]  # <= 0, -inf where masked
            e = torch.exp(rel)
            rel_e = torch.where(e > 0, rel * e, torch.zeros_like(e))  # 0 * (-inf) -> 0
            cq.copy_(alpha * (cq + lq * shift) + rel_e.sum(-1))
            lq.copy_(alpha * lq + e.sum(-1))
            mq.copy_(m_new)
    return m, l, c


class _AttentionEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: Tensor,
        k: Tensor,
        mask: Tensor | None,
        causal_offset: int | None,
        scale: float,
        block: int,
    ) -> tuple[Tensor, Tensor]:
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        m, l, c = _forward_stats(q, k, scale, mask, causal_offset, block, dtype)
        valid = l > 0
        l_safe = torch.where(valid, l, torch.ones_like(l))
        ent = torch.where(valid, torch.log(l_safe) - c / l_safe, torch.zeros_like(l))
        # Saved per query: lse = m + log l and the mean score E_p[s] = m + c / l (backward needs both).
        lse = torch.where(valid, m + torch.log(l_safe), torch.zeros_like(l))
        mean = torch.where(valid, m + c / l_safe, torch.zeros_like(l))
        ctx.save_for_backward(q, k, mask, lse, mean, valid)
        ctx.causal_offset, ctx.scale, ctx.block, ctx.dtype = causal_offset, scale, block, dtype
        ctx.mark_non_differentiable(valid)
        return ent, valid

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _grad_valid: Any) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, mask, lse, mean, valid = ctx.saved_tensors
        dtype, scale, off, block = ctx.dtype, ctx.scale, ctx.causal_offset, ctx.block
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dq = torch.zeros(q.shape, dtype=dtype, device=q.device) if need_q else None
        dk = torch.zeros(k.shape, dtype=dtype, device=k.device) if need_k else None
        g = torch.where(valid, grad.to(dtype), torch.zeros_like(lse))
        tq, tk = q.shape[2], k.shape[2]
        for q0, q1 in _blocks(tq, block):
            lse_b, mean_b, g_b = lse[:, :, q0:q1, None], mean[:, :, q0:q1, None], g[:, :, q0:q1, None]
            for k0, k1 in _blocks(_key_end(q1, tk, off), block):
                s = _scores(q, k, scale, mask, off, q0, q1, k0, k1, dtype)
                p = torch.exp(s - lse_b)  # 0 where masked
                centred = torch.where(p > 0, s - mean_b, torch.zeros_like(s))
                ds = -g_b * p * centred * scale  # dH/d(q.k) for this block
                if dq is not None:
                    dq[:, :, q0:q1] += torch.matmul(ds, k[:, :, k0:k1].to(dtype))
                if dk is not None:
                    dk[:, :, k0:k1] += torch.matmul(ds.transpose(-1, -2), q[:, :, q0:q1].to(dtype))
        return (
            None if dq is None else dq.to(q.dtype),
            None if dk is None else dk.to(k.dtype),
            None,
            None,
            None,
            None,
        )


_FUSED = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _fused(
    q: Tensor, k: Tensor, mask: Tensor | None, offset: int | None, scale: float
) -> tuple[Tensor, Tensor]:
    """H = lse - E_p[s] with one fused attention call whose values are the keys (see ``method``)."""
    tq, tk = q.shape[2], k.shape[2]
    bias = None  # the kernel takes a float mask of the query's dtype (bool masks become 0 / -inf)
    if mask is not None:
        bias = (
            mask
            if mask.dtype != torch.bool
            else torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, _NEG_INF)
        )
        bias = bias.to(q.dtype)
    causal_here = offset is not None and tq == tk and bias is None  # the kernel's causal mask is top-left
    if offset is not None and not causal_here:
        tri = torch.zeros(tq, tk, dtype=q.dtype).masked_fill(
            torch.ones(tq, tk, dtype=torch.bool).tril(offset).logical_not(), _NEG_INF
        )
        bias = tri if bias is None else bias + tri
    if bias is not None:
        bias = bias.expand(q.shape[0], q.shape[1], tq, tk)
    assert _FUSED is not None
    o, lse = _FUSED(q, k, k, 0.0, causal_here, attn_mask=bias, scale=scale)
    mean = scale * (q.float() * o.float()).sum(-1)  # E_p[scale * q.k]
    if bias is not None and mask is not None and mask.dtype != torch.bool:
        # a float mask adds to the scores: E_p[s] also holds E_p[mask], one (Tq x Tk) pass
        p = torch.exp(
            scale * (q.float() @ k.float().transpose(-1, -2)) + bias.float() - lse.float()[..., None]
        )
        mean = mean + (p * torch.nan_to_num(bias.float(), neginf=0.0)).sum(-1)
    lse = lse.float()
    if bias is None:  # causal over equal lengths: every query sees itself
        valid = torch.ones(lse.shape, dtype=torch.bool, device=lse.device)
    else:  # the kernel reports lse = 0 for a query with no key: tell those from the mask
        valid = (bias > _NEG_INF).any(-1)
    ent = torch.where(valid, lse - mean, torch.zeros_like(lse))
    return ent, valid


def attention_entropy(
    q: Tensor,
    k: Tensor,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    block_size: int = 256,
    base: float | None = None,
    return_valid: bool = False,
    method: str = "blocked",
) -> Tensor | tuple[Tensor, Tensor]:
    """Entropy of every query's attention distribution, never building the Tq x Tk matrix.

    ``H[b, h, i] = -sum_j p_ij log p_ij`` with ``p_i = softmax_j(scale * q_i . k_j + mask_ij)``
    (see the module docstring for the streamed form and its gradient), in nats (``base=2``: bits).

    Args:
        q: queries (B, H, Tq, D), floating point (bf16/fp16 are upcast per block to float32).
        k: keys (B, Hk, Tk, D); ``Hk`` may divide ``H`` (grouped-query attention: each key head
            serves ``H // Hk`` consecutive query heads, as in Llama).
        attn_mask: as in ``F.scaled_dot_product_attention``: bool (True = may attend) or float
            (added to the scores), broadcastable to (B, H, Tq, Tk).
        is_causal: query i sees keys ``j <= i + Tk - Tq``.
        scale: score scale (default ``1 / sqrt(D)``).
        block_size: queries and keys per block; peak extra memory is about
            ``3 * B * H * block_size**2`` floats.
        base: logarithm base of the result (None: nats).
        return_valid: also return the bool (B, H, Tq) tensor of queries that had a key to attend
            (the others get entropy 0).
        method: ``"blocked"`` (default): the exact streamed computation above. ``"fused"``: one call
            of PyTorch's fused CPU attention kernel with the keys as values, which returns the
            log-partition ``lse`` and ``o = sum_j p_j k_j``, so ``H = lse - scale * q . o``
            (+ the mean of the float mask under p, when one is given) -- several times faster,
            accurate to about 1e-6 of ``lse`` in float32 (the subtraction cancels when
            ``H << lse``); forward only: when autograd needs a gradient, off the CPU, for float64
            inputs or without the kernel, ``"blocked"`` runs instead.

    Returns:
        (B, H, Tq) float32 (float64 for float64 inputs), differentiable in ``q`` and ``k``.

    Source: Zhai et al. (2023), "Stabilizing Transformer Training by Preventing Attention Entropy
    Collapse", which tracks exactly this quantity per head.

    >>> q = torch.zeros(1, 1, 3, 4); k = torch.zeros(1, 1, 3, 4)   # equal scores
    >>> attention_entropy(q, k, is_causal=True)                       # log 1, log 2, log 3
    tensor([[[0.0000, 0.6931, 1.0986]]])
    """
    check_tensor(q, "q", floating=True)
    check_tensor(k, "k", floating=True)
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must have shape (B, H, T, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    b, h, tq, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or k.shape[1] == 0 or h % k.shape[1]:
        raise ValueError(
            f"k must have shape (B, Hk, Tk, D) with B={b}, D={d} and Hk dividing H={h}, got {tuple(k.shape)}"
        )
    if k.device != q.device:
        raise ValueError(f"k must be on q's device {q.device}, got {k.device}")
    block = check_int(block_size, "block_size", lo=1)
    sc = 1.0 / math.sqrt(d) if scale is None else check_positive(scale, "scale")
    log_base = 1.0 if base is None else math.log(check_positive(base, "base"))
    if base is not None and log_base == 0.0:
        raise ValueError(f"base must be a positive number other than 1, got {base!r}")
    if k.shape[1] != h:  # grouped-query attention: one key head per group of query heads
        k = k.repeat_interleave(h // k.shape[1], dim=1)
    tk = k.shape[2]
    mask = None
    if attn_mask is not None:
        check_tensor(attn_mask, "attn_mask")
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise TypeError(f"attn_mask must be a bool or floating-point tensor, got dtype {attn_mask.dtype}")
        try:
            torch.broadcast_shapes(attn_mask.shape, (b, h, tq, tk))
        except RuntimeError:
            raise ValueError(
                f"attn_mask must broadcast to (B, H, Tq, Tk) = {(b, h, tq, tk)}, got {tuple(attn_mask.shape)}"
            ) from None
        if attn_mask.device != q.device:
            raise ValueError(f"attn_mask must be on q's device {q.device}, got {attn_mask.device}")
        mask = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
    offset = (tk - tq) if is_causal else None
    if method not in ("blocked", "fused"):
        raise ValueError(f"method must be one of 'blocked', 'fused', got {method!r}")
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    cpu_kernel = _FUSED is not None and q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16)
    if method == "fused" and cpu_kernel and not needs_grad:
        ent, valid = _fused(q, k, mask, offset, sc)
    else:
        ent, valid = _AttentionEntropy.apply(q, k, mask, offset, sc, block)
    if log_base != 1.0:
        ent = ent / log_base
    return (ent, valid) if return_valid else ent
