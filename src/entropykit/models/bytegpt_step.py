"""Incremental forward passes in lockstep batches: ByteGPT's fast step, and the generic one.

A *stepper* holds a batch of ``B`` sequences and their KV cache: ``prime(ids)`` forgets the cache
and runs ``ids`` (B, T) at once, ``step(ids)`` feeds one more token per row (B,); both return the
next-token float32 logits of the last position (B, V) as NumPy. The computation is exactly
ByteGPT's forward pass (``entropykit.models.bytegpt``: pre-norm blocks of causal attention and a
GELU MLP, tied head), restated functionally for speed:

- a preallocated KV cache (a concatenating cache copies every layer's cache at every step) and
  functional calls on (B, C) rows (module-call overhead dominates a one-token step);
- ``precision="bfloat16"``: a bf16 copy of the model (weights, activations and KV cache in bf16,
  fp32 accumulation), its weights packed once for oneDNN and the GELU fused into the first MLP
  matmul (a separate bf16 GELU costs as much as the matmul);
- ``precision="int8kv"``: bf16 with keys and values in the int8 cache of the fused C kernel
  ``entropykit.models.kernels.decode_attention`` (half the bytes read per step).

Rotary models (``ByteGPTConfig(positions="rope")``) rotate the queries and keys with the same
:func:`~entropykit.models.bytegpt.apply_rope` as the forward pass before they meet the cache (the
int8 cache stores rotated keys; a step is then ``store`` + ``attend`` instead of the fused
``step``, the same kernel arithmetic).

Every other ``LanguageModel`` steps through its own ``forward`` and opaque cache (:class:`Stepper`).
A stepper's results for one row do not depend on the other rows of the batch, and with one intra-op
thread they are a function of the inputs alone: the range coder of ``entropykit.codec`` relies on it.

Example:
    >>> import numpy as np
    >>> from entropykit.models import load_model
    >>> from entropykit.models.bytegpt import BOS
    >>> lm = load_model("bytegpt-6l")
    >>> s = stepper(lm, batch=2, precision="float32")
    >>> first = s.prime(np.full((2, 1), BOS))          # logits of the first byte, (2, 257)
    >>> nxt = s.step(np.array([ord("a"), ord("b")]))   # after one more byte per row
    >>> first.shape, nxt.shape, s.length, step_precisions(lm)[0]
    ((2, 257), (2, 257), 2, 'float32')
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from entropykit._validate import check_int
from entropykit.models.adapters import ByteModel, LanguageModel
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig, apply_rope, rope
from entropykit.models.kernels import decode_attention
from entropykit.models.kernels.decode_attention import Int8KVCache
from entropykit.precision import Precision

__all__ = [
    "ByteGPTStepper", "Stepper", "int8kv_unavailable", "is_bytegpt", "is_rotary_bytegpt", "slide_piece",
    "step_precisions", "stepper",
]


class Stepper:
    """Generic incremental forward through ``LanguageModel.forward`` and its opaque cache (float32,
    the model's own arithmetic); ``length`` is the number of tokens in the cache."""

    def __init__(self, model: LanguageModel) -> None:
        self.model, self.length = model, 0
        self.past: Any = None

    def prime(self, ids: np.ndarray) -> np.ndarray:
        """Forget the cache, run ``ids`` (B, T) and return the last position's logits (B, V)."""
        logits, self.past = self.model.forward(torch.as_tensor(ids, dtype=torch.long))
        self.length = ids.shape[1]
        return logits[:, -1].numpy()

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Feed one token per row (B,) and return the next logits (B, V)."""
        if self.length == 0:
            return self.prime(ids[:, None])
        logits, self.past = self.model.forward(torch.as_tensor(ids[:, None], dtype=torch.long), self.past)
        self.length += 1
        return logits[:, -1].numpy()

    def steps(self, ids: np.ndarray) -> np.ndarray:
        """Feed ``P`` tokens a row, ``ids`` (B, P); the logits after each, (P, B, V): ``P`` steps."""
        return np.stack([self.step(ids[:, i]) for i in range(ids.shape[1])])


def _ln(m: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    return m.weight, m.bias, float(m.eps)


_BF16_COPIES: weakref.WeakKeyDictionary[ByteGPT, ByteGPT] = weakref.WeakKeyDictionary()


def _bf16_copy(gpt: ByteGPT) -> ByteGPT:
    """A bfloat16 copy of ``gpt``, made once per model object."""
    if gpt not in _BF16_COPIES:
        _BF16_COPIES[gpt] = copy.deepcopy(gpt).to(torch.bfloat16).eval()
    return _BF16_COPIES[gpt]


def _linear(
    weight: torch.Tensor, bias: torch.Tensor | None, batch: int, gelu: str | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> x W^T + b``, or ``gelu(x W^T + b)`` with ``gelu`` the approximation ('none' or
    'tanh'). bf16 weights are packed once for oneDNN (an unpacked bf16 matmul re-lays out the weight
    on every call, which dominates a one-token step) and the GELU runs inside the matmul, on its
    fp32 result."""
    if weight.dtype != torch.bfloat16:
        if gelu is None:
            return lambda x: F.linear(x, weight, bias)
        return lambda x: F.gelu(F.linear(x, weight, bias), approximate=gelu)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch)
    if gelu is None:
        return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "gelu", [None], gelu)


class ByteGPTStepper(Stepper):
    """ByteGPT's fast step (see the module docstring) for a batch of ``batch`` rows. ``prime`` (all
    positions at once, causal attention) and ``step`` (one position against the cache) run the same
    operations in the same order as ``ByteGPT.forward`` (tested against it). ``precision``:
    ``"float32"``, ``"bfloat16"`` or ``"int8kv"`` (resolve ``"auto"`` with
    :func:`entropykit.precision.resolve` over :func:`step_precisions` first)."""

    def __init__(
        self, model: LanguageModel, batch: int, precision: Precision = "float32", ring: int | None = None
    ) -> None:
        if precision not in ("float32", "bfloat16", "int8kv"):
            raise ValueError(f"precision must be 'float32', 'bfloat16' or 'int8kv', got {precision!r}")
        super().__init__(model)
        gpt: ByteGPT = model.module  # type: ignore[assignment]
        int8_kv = precision == "int8kv"
        if precision != "float32":
            gpt = _bf16_copy(gpt)
        cfg = gpt.config
        self.gpt, self.heads = gpt, cfg.n_head
        self.ring, self.position = ring, 0
        if ring is not None:
            if gpt.wpe is not None:
                raise ValueError("ring: a sliding cache needs a rotary ByteGPT (positions='rope')")
            check_int(ring, "ring", 3, cfg.block_size)
        dtype = gpt.wte.weight.dtype
        width = cfg.block_size if ring is None else ring
        slots = -(-width // decode_attention.BLOCK) * decode_attention.BLOCK  # whole kernel blocks
        self.cache8 = Int8KVCache(cfg.n_layer, batch, cfg.n_head, slots) if int8_kv else None
        shape = (cfg.n_layer, batch, cfg.n_head, 0 if int8_kv else width, cfg.n_embd // cfg.n_head)
        self.sink: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: BOS keys, values (B, C)
        self.k = torch.zeros(shape, dtype=dtype)
        self.v = torch.zeros(shape, dtype=dtype)
        blocks: list[Any] = list(gpt.blocks)

        def lin(m: Any) -> Callable[[torch.Tensor], torch.Tensor]:
            return _linear(m.weight, m.bias, batch)

        self.layers = [
            (_ln(b.ln1), lin(b.attn.qkv), lin(b.attn.proj), _ln(b.ln2),
             _linear(b.mlp[0].weight, b.mlp[0].bias, batch, str(b.mlp[1].approximate)), lin(b.mlp[2]))
            for b in blocks
        ]
        self.ln_f = _ln(gpt.ln_f)
        self.head = _linear(gpt.wte.weight, None, batch)
        self.tables = None
        if gpt.wpe is None:  # rotary positions: the tables of every cache slot, computed once
            self.tables = rope(torch.arange(cfg.block_size), cfg.n_embd // cfg.n_head, cfg.rope_base)

    def _rope_rows(self, *positions: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Rotary (cos, sin) rows of absolute ``positions``; the table grows by doubling (a sliding
        cache's positions run past the context)."""
        assert self.tables is not None
        n = self.tables[0].shape[0]
        if max(positions) >= n:
            while n <= max(positions):
                n *= 2
            cfg = self.gpt.config
            self.tables = rope(torch.arange(n), cfg.n_embd // cfg.n_head, cfg.rope_base)
        return [(self.tables[0][p], self.tables[1][p]) for p in positions]

    def _embed(self, ids: np.ndarray, positions: slice | int) -> torch.Tensor:
        x = F.embedding(torch.as_tensor(ids, dtype=torch.long), self.gpt.wte.weight)
        return x if self.gpt.wpe is None else x + self.gpt.wpe.weight[positions]

    @torch.inference_mode()
    def prime(self, ids: np.ndarray) -> np.ndarray:
        heads, cache8 = self.heads, self.cache8
        b, t = ids.shape
        if self.ring is not None and t != 1:
            raise ValueError(f"ids: a sliding cache is primed with one (BOS) token a row, got {t}")
        x = self._embed(ids, slice(0, t))
        c = x.shape[-1]
        tables = None if self.tables is None else (self.tables[0][:t], self.tables[1][:t])
        x = x.reshape(b * t, c)  # rows of all positions: the packed matmuls take any row count
        for i, (ln1, qkv, proj, ln2, fc_gelu, out) in enumerate(self.layers):
            rows = qkv(F.layer_norm(x, (c,), *ln1)).split(c, dim=1)
            q, k, v = (y.view(b, t, heads, -1).transpose(1, 2) for y in rows)
            if tables is not None:
                # rotated keys and values in fresh row-major buffers (equal strides, as the int8 cache
                # wants; .contiguous() may keep odd strides of size-1 dimensions)
                dense = torch.contiguous_format
                q = apply_rope(q, tables)
                k = torch.empty_like(k, memory_format=dense).copy_(apply_rope(k, tables))
                v = torch.empty_like(v, memory_format=dense).copy_(v)
            if cache8 is not None:
                cache8.store(i, 0, k, v)
            else:
                self.k[i, :, :, :t] = k
                self.v[i, :, :, :t] = v
            if self.ring is not None:  # the sink: BOS at position 0 (a rotation by 0 is exact: unrotated)
                self.sink.append((k[:, :, 0].reshape(b, c).clone(), v[:, :, 0].reshape(b, c).clone()))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + proj(y.transpose(1, 2).reshape(b * t, c))
            x = x + out(fc_gelu(F.layer_norm(x, (c,), *ln2)))
        self.length = self.position = t
        return self.head(F.layer_norm(x.view(b, t, c)[:, -1], (c,), *self.ln_f)).float().numpy()

    @torch.inference_mode()
    def _step_ring(self, ids: np.ndarray) -> np.ndarray:
        """One token a row through the sliding cache: position ``p`` goes to slot ``1 + (p - 1) %
        (W - 1)`` (slot 0: the sink), attends over ``min(p, W - 1) + 1`` slots; once the ring has
        wrapped (``p >= W``) the sink is the BOS key re-rotated to sit just before the oldest kept
        token (position ``p - W + 1``), so the cache always looks like a BOS-started window."""
        assert self.ring is not None
        p, w, heads, cache8 = self.position, self.ring, self.heads, self.cache8
        if p < 1:
            raise ValueError("a sliding cache is primed with BOS before its first step")
        slot, last = 1 + (p - 1) % (w - 1), min(p, w - 1)
        wrapped = p >= w
        (cos, sin), (scos, ssin) = self._rope_rows(p, p - w + 1 if wrapped else 0)
        x = F.embedding(torch.as_tensor(ids, dtype=torch.long), self.gpt.wte.weight)
        b, c = x.shape
        null = (None, None, 0, None, None)
        for i, (ln1, qkv, proj, ln2, fc_gelu, out) in enumerate(self.layers):
            qkv_x = qkv(torch.layer_norm(x, (c,), *ln1))
            sink_k, sink_v = self.sink[i]
            if cache8 is not None:  # shapes fixed at construction: the kernel's unchecked entry
                sink = (sink_k.data_ptr(), sink_v.data_ptr(), sink_k.stride(0), scos.data_ptr(),
                        ssin.data_ptr()) if wrapped else null
                y = cache8.step_rope_unchecked(i, slot, last, qkv_x, cos.data_ptr(), sin.data_ptr(), sink)
            else:
                q, k, v = (z.view(b, heads, 1, -1) for z in qkv_x.split(c, dim=1))
                q, k = apply_rope(q, (cos, sin)), apply_rope(k, (cos, sin))
                self.k[i, :, :, slot : slot + 1] = k
                self.v[i, :, :, slot : slot + 1] = v
                if wrapped:
                    self.k[i, :, :, 0:1] = apply_rope(sink_k.view(b, heads, 1, -1), (scos, ssin))
                y = F.scaled_dot_product_attention(
                    q, self.k[i, :, :, : last + 1], self.v[i, :, :, : last + 1]
                ).reshape(b, c)
            x = x + proj(y)
            x = x + out(fc_gelu(torch.layer_norm(x, (c,), *ln2)))
        self.position, self.length = p + 1, min(p + 1, w)
        return self.head(torch.layer_norm(x, (c,), *self.ln_f)).float().numpy()

    @torch.inference_mode()
    def steps(self, ids: np.ndarray) -> np.ndarray:
        """Feed ``P`` tokens a row, ``ids`` (B, P), and return the logits after each, (P, B, V): the
        same bits as ``P`` calls of :meth:`step`. For the int8-KV ring cache the steps run layer by
        layer: per layer, the ``P`` tokens' matmuls one token at a time (the very calls :meth:`step`
        makes: a oneDNN matmul's bits may change with its row count), then one kernel call for all
        ``P`` steps, which reads each row-and-head's cache once instead of once a step. The encoder,
        which knows every token in advance, takes this path; the decoder feeds ``P = 1``."""
        b, n = ids.shape
        cache8, w, p0 = self.cache8, self.ring, self.position
        if cache8 is None or w is None or n == 1:
            return super().steps(ids)
        if p0 < 1:
            raise ValueError("a sliding cache is primed with BOS before its first step")
        positions = range(p0, p0 + n)
        rows = self._rope_rows(*positions, *(max(0, p - w + 1) for p in positions))
        cos, sin = (torch.stack([r[j] for r in rows[:n]]) for j in (0, 1))
        scos, ssin = (torch.stack([r[j] for r in rows[n:]]) for j in (0, 1))
        wte = self.gpt.wte.weight
        xs = [F.embedding(torch.as_tensor(ids[:, i], dtype=torch.long), wte) for i in range(n)]
        c = wte.shape[1]
        qkv_x = torch.empty(n, b, 3 * c, dtype=wte.dtype)
        for i, (ln1, qkv, proj, ln2, fc_gelu, out) in enumerate(self.layers):
            for j in range(n):
                qkv_x[j] = qkv(torch.layer_norm(xs[j], (c,), *ln1))
            y = cache8.steps_rope(i, w, p0, qkv_x, (cos, sin), (*self.sink[i], scos, ssin))
            for j in range(n):
                x = xs[j] + proj(y[j])
                xs[j] = x + out(fc_gelu(torch.layer_norm(x, (c,), *ln2)))
        self.position, self.length = p0 + n, min(p0 + n, w)
        return np.stack([self.head(torch.layer_norm(x, (c,), *self.ln_f)).float().numpy() for x in xs])

    @torch.inference_mode()
    def step(self, ids: np.ndarray) -> np.ndarray:
        if self.ring is not None:
            return self._step_ring(ids)
        t, heads, cache8 = self.length, self.heads, self.cache8
        x = self._embed(ids, t)
        b, c = x.shape
        tables = None if self.tables is None else (self.tables[0][t : t + 1], self.tables[1][t : t + 1])
        for i, (ln1, qkv, proj, ln2, fc_gelu, out) in enumerate(self.layers):
            qkv_x = qkv(F.layer_norm(x, (c,), *ln1))
            if tables is not None:  # rotate q and k (as the forward pass does), then attend
                q, k, v = (z.view(b, heads, 1, -1) for z in qkv_x.split(c, dim=1))
                q, k = apply_rope(q, tables), apply_rope(k, tables)
                if cache8 is not None:
                    k = torch.empty_like(k, memory_format=torch.contiguous_format).copy_(k)
                    cache8.store(i, t, k, torch.empty_like(k).copy_(v))
                    y = cache8.attend(i, t, q.reshape(b, c))
                else:
                    self.k[i, :, :, t : t + 1] = k
                    self.v[i, :, :, t : t + 1] = v
                    y = F.scaled_dot_product_attention(
                        q, self.k[i, :, :, : t + 1], self.v[i, :, :, : t + 1]
                    ).reshape(b, c)
            elif cache8 is not None:
                y = cache8.step(i, t, qkv_x)
            else:
                q, k, v = qkv_x.split(c, dim=1)
                self.k[i, :, :, t] = k.view(b, heads, -1)
                self.v[i, :, :, t] = v.view(b, heads, -1)
                y = F.scaled_dot_product_attention(
                    q.view(b, heads, 1, -1), self.k[i, :, :, : t + 1], self.v[i, :, :, : t + 1]
                ).reshape(b, c)
            x = x + proj(y)
            x = x + out(fc_gelu(F.layer_norm(x, (c,), *ln2)))
        self.length = self.position = t + 1
        return self.head(F.layer_norm(x, (c,), *self.ln_f)).float().numpy()


def is_bytegpt(model: LanguageModel) -> bool:
    """True for a ByteGPT behind ``ByteModel`` (the bundled models): the fast step, ``"bfloat16"``
    and ``"int8kv"`` apply to it.

    >>> from entropykit.models import load_model
    >>> is_bytegpt(load_model("bytegpt-6l"))
    True
    """
    return isinstance(model, ByteModel) and isinstance(model.module, ByteGPT)


def is_rotary_bytegpt(model: LanguageModel) -> bool:
    """True for a bundled-kind ByteGPT with rotary positions: the models whose KV cache can slide
    (``lm.score(slide=True)``, the codec's ``slide``, ``ByteGPTStepper(..., ring=W)``).

    >>> from entropykit.models import load_model
    >>> is_rotary_bytegpt(load_model("bytegpt-6l")), is_rotary_bytegpt(load_model("bytegpt-general"))
    (False, True)
    """
    return is_bytegpt(model) and getattr(model.module, "wpe", 0) is None


def slide_piece(models: dict[str, LanguageModel | None], stride: int | None, window: int) -> int:
    """The checks of every ``slide=True`` option that scores a text (``lm.score``, detection): each
    named model (None: absent) is a ByteGPT with rotary positions, else ``ValueError`` naming it; the
    piece ``stride`` (default ``window // 2``) leaves a ``window``-token cache room for the BOS sink and
    one kept token (1 .. window - 2). Returns the piece.

    >>> from entropykit.models import load_model
    >>> slide_piece({"model": load_model("bytegpt-general")}, None, 1024)
    512
    """
    for name, m in models.items():
        if m is not None and not is_rotary_bytegpt(m):
            raise ValueError(
                f"slide: True needs a ByteGPT with rotary positions (positions='rope'), got {name} "
                f"{m.name!r}: learned absolute positions cannot slide a KV cache"
            )
    return check_int(max(1, window // 2) if stride is None else stride, "stride", 1, max(1, window - 2))


def int8kv_unavailable(model: LanguageModel) -> str:
    """Why ``precision="int8kv"`` cannot run ``model`` here ('' when it can): not a ByteGPT, a head
    size other than the kernel's, a context longer than its buffer, or no kernel (no C compiler).

    >>> from entropykit.models import load_model
    >>> isinstance(int8kv_unavailable(load_model("bytegpt-6l")), str)
    True
    """
    if not is_bytegpt(model):
        return "the int8-KV kernel runs the bundled ByteGPT models only"
    cfg: ByteGPTConfig = model.module.config  # type: ignore[assignment]
    head = cfg.n_embd // cfg.n_head
    if head != decode_attention.HEAD_DIM:
        return f"the kernel needs a head size of {decode_attention.HEAD_DIM}, the model has {head}"
    if cfg.block_size > decode_attention.MAX_LENGTH:
        return f"the kernel holds at most {decode_attention.MAX_LENGTH} tokens, the model {cfg.block_size}"
    return decode_attention.unavailable_reason()


def step_precisions(model: LanguageModel) -> tuple[Precision, ...]:
    """The concrete precisions :func:`stepper` runs ``model`` with on this machine: ``"float32"``
    always; ``"bfloat16"`` for a ByteGPT; ``"int8kv"`` for a ByteGPT whose shapes the kernel takes,
    where the kernel builds. The ``supported`` argument of :func:`entropykit.precision.resolve`.

    >>> from entropykit.models import load_model
    >>> step_precisions(load_model("bytegpt-6l"))[:2]
    ('float32', 'bfloat16')
    """
    if not is_bytegpt(model):
        return ("float32",)
    return ("float32", "bfloat16") if int8kv_unavailable(model) else ("float32", "bfloat16", "int8kv")


def stepper(
    model: LanguageModel, batch: int, precision: Precision = "float32", ring: int | None = None
) -> Stepper:
    """A stepper for ``batch`` rows: :class:`ByteGPTStepper` for a ByteGPT, else the generic
    :class:`Stepper` (float32 only). ``precision`` is a concrete one of :func:`step_precisions`.

    >>> from entropykit.models import load_model
    >>> type(stepper(load_model("bytegpt-6l"), 1)).__name__
    'ByteGPTStepper'
    """
    if is_bytegpt(model):
        return ByteGPTStepper(model, batch, precision, ring)
    if ring is not None:
        raise ValueError(f"ring: a sliding cache needs a rotary ByteGPT, got {model.name}")
    if precision != "float32":
        raise ValueError(f"precision must be 'float32' for {model.name}, got {precision!r}")
    return Stepper(model)
