"""Causal float32 attention of a piece of queries over a key/value cache: a C kernel, compiled on first use.

A sliding KV cache (``entropykit.models.bytegpt.SlidingCache``) feeds a text in pieces: the ``t``
queries of a piece attend to the ``n`` cached keys and causally to the piece's own. PyTorch's CPU
``scaled_dot_product_attention`` takes that shape only with a mask (its ``is_causal`` aligns the
diagonal to the top left), so it computes and discards the masked scores, and at a head size of 32
its per-score work is heavy. This kernel (``piece_attention.c``) computes only the scores a query
sees, in register tiles that share each load of keys and values over 4-8 queries, with one
exponential per score: 1.3-2.0x the scores per second of ``scaled_dot_product_attention`` at the
bundled model's shapes, 2.0x at a sliding cache's default piece (``benchmarks/piece_attention.py``).
The tiles follow the instruction set the compiler targets (``-march=native``): 16-lane vectors and
4 x 64-key score tiles with AVX-512, 8-lane vectors and 4 x 16-key tiles otherwise (AVX2's 16
registers), so that the accumulators stay in registers on both.

Formula (per head ``h``; query ``i < t`` of the piece sees keys ``j <= n + i``; head size ``d = 32``)::

    s_ij = q_i . k_j / sqrt(d)
    out_i = sum_j softmax_j(s_ij) v_j

computed as ``2^(s_ij c - max_j(s_ij) c)``, ``c = log2(e) / sqrt(d)``, with one rounding in the
exponent and a degree-7 polynomial for ``2^f`` on ``|f| <= 1/2`` (truncation error < 6e-9 relative,
no libm), in float32 with float32 sums: the same function as
``F.scaled_dot_product_attention`` with the end-aligned causal mask, equal to it within float32
rounding (tests: against a float64 reference; at the bundled model's shapes as close to it as
SDPA). Source: Vaswani et al. 2017, eq. 1. Each head is computed whole by one thread, so the result
does not depend on the thread count.

Example:
    >>> import torch
    >>> from entropykit.models.kernels import piece_attention
    >>> q, k = torch.zeros(2, 3, 32), torch.zeros(2, 5, 32)
    >>> v = torch.arange(5.0)[None, :, None].expand(2, 5, 32).contiguous()
    >>> if piece_attention.available():  # query i sees keys 0 .. 2 + i: equal weights
    ...     out = piece_attention.attend(q, k, v, n=2)
    ... else:
    ...     out = torch.tensor([1.0, 1.5, 2.0])[:, None, None].expand(3, 2, 32)
    >>> out[:, 0, 0].tolist()
    [1.0, 1.5, 2.0]
"""

from __future__ import annotations

import ctypes
import functools
import math
from pathlib import Path

import torch

from entropykit._validate import check_int
from entropykit.models.kernels._build import compile_library, loaded

__all__ = ["HEAD_DIM", "MAX_KEYS", "attend", "attend_rope", "available", "unavailable_reason"]

HEAD_DIM = 32  # the kernel's head size (both bundled ByteGPTs)
MAX_KEYS = 16384  # longest key range (n + t)

_SOURCE = Path(__file__).with_name("piece_attention.c")
_FLAGS = ("-O3", "-fopenmp")
_P, _I, _L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long


@functools.cache
def _build(march: str = "native") -> tuple[ctypes.CDLL | None, str]:
    """Compile once per (source, compiler, flags, CPU) and load; (library, '') or (None, why not).
    ``march`` is the target (``-march=``): the tests build a baseline one for the portable C path."""
    lib, reason = compile_library(_SOURCE, (*_FLAGS, f"-march={march}"))
    if lib is None:
        return None, reason
    lib.ek_piece_attention.argtypes = [_I, _I, _I, _P, _L, _L, _P, _L, _L, _P, _L, _L, _P, _L, _L,
                                       ctypes.c_float, _I]
    lib.ek_piece_attention_rope.argtypes = [_I, _I, _I, _P, _P, _P, _L, _L, _P, _P, _P, _L, _L, _P, _L, _L,
                                            _P, _L, _L, ctypes.c_float, _I]
    lib.ek_piece_attention.restype = lib.ek_piece_attention_rope.restype = _I
    return lib, ""


def available() -> bool:
    """True when the kernel is compiled (or compiles now) and loads on this machine."""
    return _build()[0] is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True)."""
    return _build()[1]


def _check(name: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a float32 tensor, got {got}")
    if tuple(x.shape) != shape or x.stride(-1) != 1 or x.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor of shape {shape} with unit last stride, got shape "
                         f"{tuple(x.shape)}, strides {x.stride()}, device {x.device}")


def _library(march: str) -> ctypes.CDLL:
    return loaded(_build(march), "piece-attention")


def _piece(n: int, h: int, t: int, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None,
           grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Check the cache and output arguments shared by :func:`attend` and :func:`attend_rope`."""
    check_int(n, "n", 0)
    if t < 1 or n + t > MAX_KEYS:
        raise ValueError(f"n + t must be in 1..{MAX_KEYS} with t >= 1, got n={n}, t={t}")
    _check("k", k, (h, n + t, HEAD_DIM))
    _check("v", v, (h, n + t, HEAD_DIM))
    if out is None:
        out = torch.empty(t, h, HEAD_DIM)
    _check("out", out, (t, h, HEAD_DIM))
    if torch.is_grad_enabled() and any(x.requires_grad for x in (*grads, k, v)):
        raise ValueError("the inputs must not require grad: the kernel has no backward pass")
    return out


def _done(status: int) -> None:
    if status:
        raise MemoryError("the piece-attention kernel could not allocate its scratch memory")


def _threads(threads: int | None) -> int:
    return max(1, torch.get_num_threads() if threads is None else int(threads))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: int, *, out: torch.Tensor | None = None,
           threads: int | None = None, march: str = "native") -> torch.Tensor:
    """Attention of the piece's queries ``q`` (h, t, 32) over keys and values ``k``, ``v`` (h, n + t, 32):
    ``n`` cached entries, then the piece's own, query ``i`` seeing keys ``0..n + i`` (scale
    ``1/sqrt(32)``). Returns ``out`` (t, h, 32), token-major (the layout the output projection reads;
    any tensor of that shape with unit last stride, e.g. a view of a (t, h * 32) buffer), allocated
    when not given. ``threads`` defaults to ``torch.get_num_threads()``. Float32 on the CPU, no
    autograd (use ``F.scaled_dot_product_attention`` to train). RuntimeError when the kernel
    cannot be built here (see :func:`unavailable_reason`); ``march`` (``-march=``, default the
    build machine) picks another build, e.g. ``"x86-64"`` for the portable C path."""
    lib = _library(march)
    if not isinstance(q, torch.Tensor) or q.dim() != 3:
        raise ValueError(f"q must be a tensor of shape (heads, t, {HEAD_DIM}), got "
                         f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}")
    h, t = q.shape[0], q.shape[1]
    _check("q", q, (h, t, HEAD_DIM))
    out = _piece(n, h, t, k, v, out, (q,))
    _done(lib.ek_piece_attention(
        h, t, n, q.data_ptr(), q.stride(0), q.stride(1), k.data_ptr(), k.stride(0), k.stride(1),
        v.data_ptr(), v.stride(0), v.stride(1), out.data_ptr(), out.stride(1), out.stride(0),
        1.0 / math.sqrt(HEAD_DIM), _threads(threads)))
    return out


def attend_rope(
    qkv: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor], k: torch.Tensor, v: torch.Tensor, n: int, *,
    out: torch.Tensor | None = None, threads: int | None = None, march: str = "native",
) -> torch.Tensor:
    """:func:`attend` from the piece's unrotated projections ``qkv`` (t, 3, h, 32) (queries, keys,
    values; e.g. the qkv linear layer's output viewed so) and rotary ``tables`` = (cos, sin), each
    (t, 32) (``entropykit.models.bytegpt.rope``): the piece's keys are rotated
    (``bytegpt.apply_rope``'s arithmetic, bit for bit) into slots ``n..n + t - 1`` of the cache ``k``
    and its values copied into those of ``v`` (both (h, n + t, 32), written in place), the queries
    rotated as they are read; then the attention of :func:`attend`. One pass instead of a rotation,
    two cache stores and a transpose."""
    lib = _library(march)
    if not isinstance(qkv, torch.Tensor) or qkv.dim() != 4 or qkv.shape[1] != 3:
        raise ValueError(f"qkv must be a tensor of shape (t, 3, heads, {HEAD_DIM}), got "
                         f"{tuple(qkv.shape) if isinstance(qkv, torch.Tensor) else type(qkv).__name__}")
    t, _, h, _ = qkv.shape
    _check("qkv", qkv, (t, 3, h, HEAD_DIM))
    for name, x in zip(("tables[0]", "tables[1]"), tables, strict=True):
        _check(name, x, (t, HEAD_DIM))
        if not x.is_contiguous():
            raise ValueError(f"{name} must be contiguous, got strides {x.stride()}")
    out = _piece(n, h, t, k, v, out, (qkv,))
    cos, sin = tables
    _done(lib.ek_piece_attention_rope(
        h, t, n, qkv[:, 0].data_ptr(), qkv[:, 1].data_ptr(), qkv[:, 2].data_ptr(), qkv.stride(2),
        qkv.stride(0), cos.data_ptr(), sin.data_ptr(), k.data_ptr(), k.stride(0), k.stride(1), v.data_ptr(),
        v.stride(0), v.stride(1), out.data_ptr(), out.stride(1), out.stride(0), 1.0 / math.sqrt(HEAD_DIM),
        _threads(threads)))
    return out
