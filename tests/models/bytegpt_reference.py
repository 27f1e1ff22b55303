"""An independent float64 NumPy ByteGPT forward pass (tests only): learned or rotary positions, and
an explicit per-query key set, so the sliding-cache scorer has a reference that shares no code with it.

Rotary positions are written as complex multiplication (RoFormer, Su et al. 2021, eq. 34 in complex
form): pairs ``(x_i, x_{i + d/2})`` are the complex numbers ``x_i + j x_{i + d/2}``, multiplied by
``exp(j m theta_i)`` with ``theta_i = base^(-2i/d)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BOS = 256


def rotate(x: np.ndarray, positions: np.ndarray, base: float = 10000.0) -> np.ndarray:
    """Rotate the last axis of ``x`` (..., T, d) at ``positions`` (T,), complex form, float64."""
    d = x.shape[-1]
    theta = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    z = x[..., : d // 2] + 1j * x[..., d // 2 :]
    z = z * np.exp(1j * positions[:, None].astype(np.float64) * theta[None])
    return np.concatenate([z.real, z.imag], axis=-1)


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def forward(
    model: torch.nn.Module,
    tokens: list[int],
    allowed: np.ndarray | None = None,
    sink_at: np.ndarray | None = None,
) -> np.ndarray:
    """Logits (T, 257) of ``tokens`` (input position q at absolute position q), float64.

    ``allowed`` (T, T) bool: which keys query q attends to (default causal). ``sink_at`` (T,) int:
    for a query with ``sink_at[q] >= 0``, one more key/value, token 0's (the BOS, whose states never
    depend on anything else), rotated to position ``sink_at[q]`` (rotary models only).
    """
    cfg = model.config
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    t, c, nh = len(tokens), cfg.n_embd, cfg.n_head
    hd = c // nh
    pos = np.arange(t)
    rope = cfg.positions == "rope"
    x = sd["wte.weight"][tokens]
    if not rope:
        x = x + sd["wpe.weight"][:t]
    if allowed is None:
        allowed = np.tril(np.ones((t, t), dtype=bool))
    for i in range(cfg.n_layer):
        p = f"blocks.{i}."
        h = _ln(x, sd[p + "ln1.weight"], sd[p + "ln1.bias"])
        qkv = h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = (qkv[:, j * c : (j + 1) * c].reshape(t, nh, hd).transpose(1, 0, 2) for j in range(3))
        k0 = k[:, :1]  # token 0's key before rotation (its rotation at position 0 is the identity)
        if rope:
            q, k = rotate(q, pos, cfg.rope_base), rotate(k, pos, cfg.rope_base)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.where(allowed[None], s, -np.inf)
        vv = np.broadcast_to(v[:, None], (nh, t, t, hd))
        if sink_at is not None:
            has = sink_at >= 0
            ks = np.stack([rotate(k0[:, :, None], np.array([max(a, 0)]), cfg.rope_base)[:, 0, 0]
                           for a in sink_at], axis=1)  # (nh, T, hd): the sink key of each query
            extra = np.where(has[None], (q * ks).sum(-1) / math.sqrt(hd), -np.inf)
            s = np.concatenate([extra[:, :, None], s], axis=2)
            vv = np.concatenate([np.broadcast_to(v[:, None, :1], (nh, t, 1, hd)), vv], axis=2)
        w = np.exp(s - s.max(-1, keepdims=True))
        w = w / w.sum(-1, keepdims=True)
        y = np.einsum("hqk,hqkd->hqd", w, vv).transpose(1, 0, 2).reshape(t, c)
        x = x + y @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = _ln(x, sd[p + "ln2.weight"], sd[p + "ln2.bias"])
        h = _gelu(h @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"])
        x = x + h @ sd[p + "mlp.2.weight"].T + sd[p + "mlp.2.bias"]
    return _ln(x, sd["ln_f.weight"], sd["ln_f.bias"]) @ sd["wte.weight"].T


def sliding_reference(model: torch.nn.Module, text: list[int], ctx: int, sink: bool, piece: int = 0
                      ) -> np.ndarray:
    """Surprisal (bits) of every token of ``text`` as the sliding-cache scorer defines it, written as
    one masked forward pass: inputs ``BOS + text[:-1]`` in pieces of ``piece`` (default ``ctx // 2``); a
    query of a piece ``[a, b)`` with ``b <= ctx`` sees every earlier input, one of a later piece the last
    ``ctx - piece - 1`` inputs before ``a`` (plus the BOS sink at position ``lo - 1``) or, without the
    sink, the last ``ctx - piece``."""
    tokens = [BOS, *text[:-1]]
    t = len(tokens)
    piece = piece or ctx // 2
    keep = ctx - piece
    allowed = np.zeros((t, t), dtype=bool)
    sink_at = np.full(t, -1)
    for a in range(0, t, piece):
        b = min(a + piece, t)
        lo = 0 if b <= ctx else a - (keep - 1 if sink else keep)
        for q in range(a, b):
            allowed[q, lo : q + 1] = True
            if sink and lo > 0:
                sink_at[q] = lo - 1
    logits = forward(model, tokens, allowed, sink_at if sink else None)
    lse = logits.max(-1) + np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1))
    return (lse - logits[np.arange(t), text]) / math.log(2)


def ring_reference(model: torch.nn.Module, tokens: list[int], window: int) -> np.ndarray:
    """Logits (T, 257) of ``BOS + tokens`` under the codec's ring-cache rule (``ByteGPTStepper(...,
    ring=window)``, container flag ``slide``), as one masked float64 forward: position ``p < window``
    sees everything before it; a later one the last ``window - 1`` positions (itself included) and the
    BOS sink rotated to ``p - window + 1``."""
    t = len(tokens) + 1
    allowed = np.zeros((t, t), dtype=bool)
    sink_at = np.full(t, -1)
    for p in range(t):
        lo = 0 if p < window else p - window + 2
        allowed[p, lo : p + 1] = True
        if p >= window:
            sink_at[p] = p - window + 1
    return forward(model, [BOS, *tokens], allowed, sink_at)
