"""One-token attention over an 8-bit KV cache: a small fused C kernel, compiled on first use.

Incremental decoding with a small model is bound by reading the KV cache: at every step each row
reads all its cached keys and values. Storing them as int8 (plus a float32 scale per vector) cuts
those bytes to 0.56x of bfloat16, and the fused kernel (``decode_attention.c``) reads them once, in
cache-line order: 0.26-0.58x the time of ``torch``'s ``scaled_dot_product_attention`` for a one-token
query at the bundled model's shapes (``benchmarks/decode_attention.py``).

Formula (per row ``b``, head ``h``, head size ``d = 32``; cached slots ``j = 0..T``; ``Q(x)`` is
absmax int8 quantisation of a vector, ``Q(x) = round(127 x / max|x|)`` with scale ``max|x| / 127``)::

    K_j, sk_j = Q(k_j);  V_j, sv_j = Q(v_j);  Qq, sq = Q(q)           (int8 + one float scale each)
    s_j = (Qq . K_j) sq sk_j / sqrt(d)                                  (exact int32 dot product)
    p_j = exp(s_j - max s),  w_j = round(W p_j sv_j / max_i p_i sv_i)   (int16 weights, W = 32767)
    out = (sum_j w_j V_j) (max_i p_i sv_i / W) / sum_j p_j             (exact int32, then float32)

rounded to bfloat16 at the end (``W`` shrinks past 516 slots so the int32 sums cannot overflow).
Each quantised vector is within 1/254 of its largest entry; on the bundled models the coded size
of ``entropykit compress`` is the same as with a bf16 cache to four significant digits.

Determinism: the dot products are integer arithmetic (exact in any order); the float parts are
written with GCC vector extensions and compiled with ``-ffp-contract=off`` and no fast-math, so
every lane does the same IEEE single-precision operations in the same order whatever the vector
width; ``exp`` is its own polynomial (no libm). The AVX-512 VNNI path and the portable C path
give identical bits (tested), so the output is a function of the inputs alone: the same on every
machine, thread count and process, which is what range coding needs.

Example:
    >>> import torch
    >>> from entropykit.models.kernels.decode_attention import Int8KVCache, available
    >>> if available():
    ...     cache = Int8KVCache(layers=1, batch=1, heads=1, length=64)
    ...     k = v = torch.ones(1, 1, 3, 32, dtype=torch.bfloat16)
    ...     cache.store(0, 0, k, v)
    ...     out = cache.attend(0, 2, torch.ones(1, 32, dtype=torch.bfloat16))
    ...     print(out.float().unique().tolist())
    ... else:
    ...     print([1.0])
    [1.0]
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

import torch

from entropykit.models.kernels._build import compile_library, loaded

__all__ = ["HEAD_DIM", "Int8KVCache", "available", "unavailable_reason"]

HEAD_DIM = 32  # the kernel's head size (both bundled ByteGPTs)
BLOCK = 64  # cache slots per score block; the cache length must be a multiple
MAX_LENGTH = 8192  # the kernel's score buffer

_SOURCE = Path(__file__).with_name("decode_attention.c")
# -ffp-contract=off: no fused multiply-add, so results do not depend on the instruction set.
_FLAGS = ("-O3", "-ffp-contract=off")
_P, _I, _L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long


@functools.cache
def _build(march: str = "native") -> tuple[ctypes.CDLL | None, str]:
    """Compile once per (source, compiler, flags, CPU) into the cache directory and load it;
    returns (library, '') or (None, why not). ``march`` is the target (``-march=``); the tests
    build a baseline one to check that the portable C path gives the same bits as the AVX-512 one."""
    lib, reason = compile_library(_SOURCE, (*_FLAGS, f"-march={march}"))
    if lib is None:
        return None, reason
    lib.ek_store_kv.argtypes = [_I, _I, _I, _I, _I, _P, _P, _L, _L, _L, _P, _P, _P, _P]
    lib.ek_store_kv.restype = None
    for fn in (lib.ek_attend, lib.ek_step):
        fn.argtypes = [_I, _I, _I, _I, _P, _L, _P, _P, _P, _P, _P]
        fn.restype = None
    lib.ek_step_rope.argtypes = [_I, _I, _I, _I, _I, _P, _L, _P, _P, _P, _P, _L, _P, _P, _P, _P, _P, _P, _P]
    lib.ek_step_rope.restype = None
    lib.ek_steps_rope.argtypes = [_I, _I, _I, _I, _L, _I, _P, _L, _L, _P, _P, _P, _P, _L, _P, _P, _P, _P, _P,
                                  _P, _P]
    lib.ek_steps_rope.restype = None
    return lib, ""


def available() -> bool:
    """True when the kernel is compiled (or compiles now) and loads on this machine."""
    return _build()[0] is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True)."""
    return _build()[1]


def _library(march: str = "native") -> ctypes.CDLL:
    return loaded(_build(march), "int8-KV decode-attention")


def _check_bf16(name: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    if x.dtype != torch.bfloat16:
        raise TypeError(f"{name}: expected a bfloat16 tensor, got {x.dtype}")
    if tuple(x.shape) != shape or x.stride(-1) != 1:
        raise ValueError(f"{name}: expected shape {shape} with unit last stride, got {tuple(x.shape)}")


def _check_table(name: str, t: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """Rotary cos or sin values: ``HEAD_DIM`` contiguous float32, or ``(rows, HEAD_DIM)`` of them."""
    ok = t.numel() == HEAD_DIM if rows is None else tuple(t.shape) == (rows, HEAD_DIM)
    if t.dtype != torch.float32 or not ok or not t.is_contiguous():
        want = f"{HEAD_DIM}" if rows is None else f"({rows}, {HEAD_DIM})"
        raise ValueError(f"{name}: expected {want} contiguous float32 values, got {t.dtype} {tuple(t.shape)}")
    return t


class Int8KVCache:
    """Per-layer int8 key/value cache of ``batch`` rows, ``heads`` heads and ``length`` slots,
    with the kernel's two operations: :meth:`store` (quantise new keys and values into slots) and
    :meth:`attend` (one query per row and head over slots ``0..T``), and their fused forms:
    :meth:`step` (store then attend), :meth:`step_rope` (a rotary model's step over a ring cache
    with an attention sink) and :meth:`steps_rope` (``P`` of those steps in one pass over each row's
    cache: the encoder's look-ahead)."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, *, march: str = "native") -> None:
        for name, value in (("layers", layers), ("batch", batch), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        ok = isinstance(length, int) and not isinstance(length, bool) and 0 < length <= MAX_LENGTH
        if not ok or length % BLOCK:
            raise ValueError(f"length: expected a multiple of {BLOCK} up to {MAX_LENGTH}, got {length!r}")
        self.lib = _library(march)
        self.batch, self.heads, self.length = batch, heads, length
        # layouts for the kernel's integer dot products (see decode_attention.c): keys + 128 as uint8
        # in blocks of BLOCK slots by channel quads, values with two slots of a channel adjacent
        shape = (layers, batch, heads, length // BLOCK, HEAD_DIM // 4, BLOCK, 4)
        self.k = torch.zeros(shape, dtype=torch.uint8)
        self.v = torch.zeros(layers, batch, heads, length // 2, HEAD_DIM, 2, dtype=torch.int8)
        self.k_scale = torch.zeros(layers, batch, heads, length)
        self.v_scale = torch.zeros(layers, batch, heads, length)
        # the kernel's per-layer cache arguments, taken once (indexing per call costs on the hot path)
        caches = (self.k, self.k_scale, self.v, self.v_scale)
        self._layers = [tuple(t[i].data_ptr() for t in caches) for i in range(layers)]

    def store(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Quantise ``k``, ``v`` (batch, heads, n, 32) bf16 (any strides but a unit last one) into
        slots ``start .. start + n - 1`` of ``layer``."""
        n = k.shape[2]
        shape = (self.batch, self.heads, n, HEAD_DIM)
        _check_bf16("k", k, shape)
        _check_bf16("v", v, shape)
        if k.stride() != v.stride():
            raise ValueError("k, v: expected equal strides")
        if not 0 <= start <= self.length - n:
            raise ValueError(f"start: slots {start}..{start + n - 1} do not fit {self.length}")
        self.lib.ek_store_kv(
            self.batch, self.heads, self.length, start, n, k.data_ptr(), v.data_ptr(),
            k.stride(0), k.stride(1), k.stride(2), *self._layers[layer],
        )

    def attend(self, layer: int, last: int, q: torch.Tensor) -> torch.Tensor:
        """``softmax(q k / sqrt(32)) v`` over slots ``0..last`` for q (batch, heads * 32) bf16 (row
        stride free, unit last stride); returns (batch, heads * 32) bf16."""
        return self._query(self.lib.ek_attend, layer, "last", last, "q", q, 1)

    def step(self, layer: int, position: int, qkv: torch.Tensor) -> torch.Tensor:
        """One decoding step: store the keys and values of ``qkv`` (batch, 3 * heads * 32) bf16, rows
        ``q | k | v``, in slot ``position``, then :meth:`attend` with its queries over slots
        ``0..position``. The same bits as ``store`` followed by ``attend``, in one pass."""
        return self._query(self.lib.ek_step, layer, "position", position, "qkv", qkv, 3)

    def step_rope(
        self,
        layer: int,
        slot: int,
        last: int,
        qkv: torch.Tensor,
        tables: tuple[torch.Tensor, torch.Tensor],
        sink: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One step of a rotary model over a sliding (ring) cache: rotate the queries and keys of
        ``qkv`` (batch, 3 * heads * 32) bf16 by ``tables`` (cos, sin: float32, 32 contiguous values
        each, the token's absolute position), store the keys and values in ``slot``; with ``sink =
        (k, v, cos, sin)`` (k, v: (batch, heads * 32) bf16, unrotated BOS keys and values) store the
        sink rotated by its (cos, sin) in slot 0; then attend over slots ``0..last``. Rotation as
        ``entropykit.models.bytegpt.apply_rope`` computes it (float32, rounded to bf16)."""
        shape = (self.batch, 3 * self.heads * HEAD_DIM)
        _check_bf16("qkv", qkv, shape)
        if not 0 <= last < self.length or not 0 <= slot <= last:
            raise ValueError(f"slot, last: expected 0 <= slot <= last < {self.length}, got {slot}, {last}")
        cos, sin = (_check_table(name, t) for name, t in zip(("cos", "sin"), tables))
        sk: int | None = None
        sv = scos = ssin = sk
        stride = 0
        if sink is not None:
            k, v = self._check_sink(sink[0], sink[1])
            c2, s2 = _check_table("sink cos", sink[2]), _check_table("sink sin", sink[3])
            sk, sv, scos, ssin, stride = k.data_ptr(), v.data_ptr(), c2.data_ptr(), s2.data_ptr(), k.stride(0)
        return self.step_rope_unchecked(layer, slot, last, qkv, cos.data_ptr(), sin.data_ptr(),
                                        (sk, sv, stride, scos, ssin))

    def step_rope_unchecked(
        self, layer: int, slot: int, last: int, qkv: torch.Tensor, cos: int, sin: int, sink: tuple[Any, ...]
    ) -> torch.Tensor:
        """:meth:`step_rope` without its checks, on raw pointers (``sink``: ``(k, v, row stride, cos,
        sin)`` pointers, or NULL pointers and 0): the stepper's hot path, whose shapes are fixed at
        construction."""
        out = torch.empty(self.batch, self.heads * HEAD_DIM, dtype=torch.bfloat16)
        self.lib.ek_step_rope(
            self.batch, self.heads, self.length, slot, last, qkv.data_ptr(), qkv.stride(0), cos, sin, *sink,
            *self._layers[layer], out.data_ptr(),
        )
        return out

    def steps_rope(
        self,
        layer: int,
        window: int,
        start: int,
        qkv: torch.Tensor,
        tables: tuple[torch.Tensor, torch.Tensor],
        sink: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """``P`` consecutive :meth:`step_rope` steps of a ring of ``window`` slots, for the tokens at
        positions ``start .. start + P - 1`` (``start >= 1``; position ``p`` goes to slot ``1 + (p - 1)
        % (window - 1)``, attends over slots ``0..min(p, window - 1)``, and once ``p >= window`` the
        sink is re-rotated to position ``p - window + 1``): the same bits as those ``P`` calls, with
        each row-and-head's cache read once for all of them. ``qkv``: (P, batch, 3 * heads * 32) bf16;
        ``tables``: (cos, sin) of the positions, (P, 32) float32; ``sink``: (k, v, cos, sin) with k, v
        (batch, heads * 32) bf16 (unrotated BOS keys and values) and cos, sin (P, 32) float32, the
        tables of the sink positions (rows of steps with ``p < window`` are not read). Returns (P, batch,
        heads * 32) bf16."""
        n = qkv.shape[0]
        _check_bf16("qkv", qkv, (n, self.batch, 3 * self.heads * HEAD_DIM))
        if not 3 <= window <= self.length:
            raise ValueError(f"window: expected 3..{self.length}, got {window}")
        if start < 1:
            raise ValueError(f"start: expected a position >= 1 (0 is the BOS prime), got {start}")
        k, v = self._check_sink(sink[0], sink[1])
        for name, t in zip(("cos", "sin", "sink cos", "sink sin"), (*tables, sink[2], sink[3])):
            _check_table(name, t, n)
        out = torch.empty(n, self.batch, self.heads * HEAD_DIM, dtype=torch.bfloat16)
        self.lib.ek_steps_rope(
            self.batch, self.heads, self.length, window, start, n, qkv.data_ptr(), qkv.stride(0),
            qkv.stride(1), *(t.data_ptr() for t in tables), k.data_ptr(), v.data_ptr(), k.stride(0),
            *(t.data_ptr() for t in sink[2:]), *self._layers[layer], out.data_ptr(),
        )
        return out

    def _check_sink(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sink's unrotated BOS keys and values: (batch, heads * 32) bf16 of equal strides."""
        _check_bf16("sink k", k, (self.batch, self.heads * HEAD_DIM))
        _check_bf16("sink v", v, (self.batch, self.heads * HEAD_DIM))
        if k.stride() != v.stride():
            raise ValueError("sink k, v: expected equal strides")
        return k, v

    def _query(
        self, kernel: Any, layer: int, slot_name: str, last: int, name: str, x: torch.Tensor, parts: int
    ) -> torch.Tensor:
        """``kernel`` (ek_attend or ek_step) on ``x``: (batch, ``parts`` * heads * 32) bf16 rows."""
        _check_bf16(name, x, (self.batch, parts * self.heads * HEAD_DIM))
        if not 0 <= last < self.length:
            raise ValueError(f"{slot_name}: expected 0..{self.length - 1}, got {last}")
        out = torch.empty(self.batch, self.heads * HEAD_DIM, dtype=torch.bfloat16)
        kernel(self.batch, self.heads, self.length, last, x.data_ptr(), x.stride(0), *self._layers[layer],
               out.data_ptr())
        return out
