"""Lossless compression with a language model: range coding of each token under the model's prediction.

Arithmetic/range coding a sequence with the next-token distributions ``p(x_t | x_<t)`` of a model
costs ``sum_t -log2 p(x_t | x_<t) + O(1)`` bits (Rissanen 1976; Witten, Neal & Cleary 1987), so the
compressed size *is* the model's cross-entropy of the data (in bits). Bellard's ``ts_zip``/``nncp``
and LLMZip (Valmeekam et al. 2023) use this with large models; here any ``LanguageModel`` works,
by default the bundled byte-level ByteGPT, which codes *any* bytes (text in any encoding, binary).

How it stays exact
------------------
The decoder must reproduce the encoder's probabilities bit for bit, in another process, with
another thread count, after a fresh import. Three measures make that so:

1. *Same computation on both sides.* Encoder and decoder run the identical incremental procedure
   (BOS prime, one KV-cached step per token, a fixed re-prime schedule) on identically shaped
   batches: chunks are coded in lockstep groups of ``group`` chunks, the group composition is a
   function of the container header only, and rows that have finished (or are stored) are fed the
   same padding on both sides. So every forward call sees the same input tensor in both processes.
2. *Pinned threads, recorded arithmetic.* The model runs with ``torch.set_num_threads(1)`` for
   the duration of the call (the caller's setting is restored afterwards; groups run in parallel
   in worker processes, one thread each), so a different thread count on the decoding side cannot
   change the floating-point reduction order of any kernel. The arithmetic (float32; bfloat16
   with packed oneDNN weights where the CPU multiplies bf16 in hardware; and with it, by default,
   an int8 KV cache read by the fused kernel of ``decode_attention``, whose results are the same
   on every CPU) is recorded in header flags, so the decoder repeats the encoder's choice.
3. *Integer logits and an exact float64 softmax.* Logits are rounded to the fixed-point grid
   ``k = round(32 * logit)``; each symbol's weight is ``r ** (max(k) - k)`` with ``r = exp(-1/32)``
   read from an exact table built by repeated IEEE multiplication (no libm), passed as float64 to
   ``constriction``'s ``Categorical(perfect=False)``, which normalises and quantises it to 24-bit
   fixed point in integer arithmetic. A tiny float noise in a logit changes nothing unless it
   crosses a grid boundary, and the per-chunk CRC-32 of the decoded bytes catches it if it does.

Chunks and context
------------------
Input is cut into chunks of ``chunk_size`` bytes (a cut never splits a UTF-8 character when it can
move back up to 3 bytes), each coded independently: the context resets at every chunk start, so
chunks can be decoded in parallel (lockstep batches here). Inside a chunk the model sees a window
of ``window`` tokens (prefix included); when the window is full it is re-primed with the prefix and
the last ``prime`` tokens, so every token but the first ``window`` of a chunk has at least
``prime`` tokens of context. A chunk whose coded form would not be smaller than the chunk itself is
*stored* (so random data grows by at most the per-chunk overhead).

The container format (magic, version, model identity, coding parameters, chunk records with
CRC-32s, a trailer with the original length and its SHA-256) is documented byte for byte in
``docs/container-format.md``.

Example:
    >>> from entropykit.lm import compress, decompress
    >>> blob = compress(b"hello, world")           # the bundled bytegpt-6l
    >>> blob[1:4], decompress(blob)
    (b'EKZ', b'hello, world')
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import multiprocessing
import os
import queue
import struct
import weakref
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from entropykit.models import ByteModel, LanguageModel, load_model, resolve_model
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
from entropykit.models.kernels import decode_attention
from entropykit.models.kernels.decode_attention import Int8KVCache

__all__ = [
    "ContainerError", "compress", "compress_stream", "container_info", "decompress", "decompress_stream",
    "resolve_precision",
]

MAGIC = b"\x89EKZ\r\n\x1a\n"
VERSION = 2  # 2: bf16 flag, compact chunk records (varint sizes)
FLAG_BF16 = 1  # header flag: the model arithmetic ran in bfloat16
FLAG_INT8_KV = 2  # header flag (with FLAG_BF16): int8 KV cache read by the fused decode-attention kernel
PRECISIONS = ("auto", "float32", "bfloat16", "int8kv")
LOGIT_SCALE = 32  # logits are rounded to multiples of 1/32 nat
EXP_STEP = float.fromhex("0x1.f03f56a88b5d8p-1")  # exp(-1/32), written exactly (no libm at run time)
MAX_GAP = 32 * 40  # weights below exp(-40) are floored; constriction gives every symbol >= 2^-24 anyway
DEFAULT_CHUNK_SIZE = 4096
DEFAULT_GROUP = 32
MAX_WINDOW = 512
PAD = 0  # token fed to rows that have no symbol at a step (identical on both sides)

_HEADER = struct.Struct("<8sBBHIIIH")  # magic, version, flags, logit scale, window, prime, chunk, group
_CRCS = struct.Struct("<II")  # a chunk record's raw CRC-32 and record CRC-32
_TRAILER = struct.Struct("<cQQ32sI")  # tag, n_chunks, original length, sha256, trailer crc
MODE_CODED, MODE_STORED = 0, 1
_TAGS = {b"C": MODE_CODED, b"S": MODE_STORED}  # chunk record tags; b"E" starts the trailer

Progress = Callable[[int, float], None]  # (raw bytes done, coded bits so far), cumulative


class ContainerError(ValueError):
    """A container that is damaged, truncated, of another version or made with another model."""


def _weight_table() -> np.ndarray:
    table = np.empty(MAX_GAP + 1, dtype=np.float64)
    w = 1.0
    for i in range(MAX_GAP + 1):  # repeated multiplication: bit-identical on every IEEE machine
        table[i] = w
        w *= EXP_STEP
    return table


_WEIGHTS = _weight_table()
_FAMILY: Any = None


def _family() -> Any:
    global _FAMILY
    if _FAMILY is None:
        import constriction

        _FAMILY = constriction.stream.model.Categorical(perfect=False)
    return _FAMILY


def quantized_probabilities(logits: np.ndarray) -> np.ndarray:
    """Unnormalised float64 weights ``exp(-(max(k) - k) / 32)`` of the grid logits ``k = round(32 l)``.

    Rows are the distributions handed to the range coder; the result depends only on the integer
    grid values, so it is identical wherever the float32 logits round to the same grid.
    """
    k = np.rint(np.asarray(logits, dtype=np.float32) * np.float32(LOGIT_SCALE)).astype(np.int64)
    gap = np.minimum(k.max(axis=-1, keepdims=True) - k, MAX_GAP)
    return _WEIGHTS[gap]


@contextmanager
def _pinned_threads(n: int = 1) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- the model side: identical incremental forward passes on both sides ---------------------------


class _Stepper:
    """Generic incremental forward through ``LanguageModel.forward`` and its opaque cache."""

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


def _ln(m: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    return m.weight, m.bias, float(m.eps)


_BF16_COPIES: weakref.WeakKeyDictionary[ByteGPT, ByteGPT] = weakref.WeakKeyDictionary()


@functools.cache
def native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): then the bf16 path
    is several times faster than fp32 at the small batches of incremental coding."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.backends.mkldnn.is_available()


def _bf16_copy(gpt: ByteGPT) -> ByteGPT:
    if gpt not in _BF16_COPIES:
        _BF16_COPIES[gpt] = copy.deepcopy(gpt).to(torch.bfloat16).eval()
    return _BF16_COPIES[gpt]


def _linear(
    weight: torch.Tensor, bias: torch.Tensor | None, batch: int, gelu: str | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> x W^T + b``, or ``gelu(x W^T + b)`` with ``gelu`` the approximation ('none' or
    'tanh'). bf16 weights are packed once for oneDNN (an unpacked bf16 matmul re-lays out the weight
    on every call, which dominates a one-token step) and the GELU runs inside the matmul, on its
    fp32 result (a separate bf16 GELU costs as much as the matmul)."""
    if weight.dtype != torch.bfloat16:
        if gelu is None:
            return lambda x: F.linear(x, weight, bias)
        return lambda x: F.gelu(F.linear(x, weight, bias), approximate=gelu)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch)
    if gelu is None:
        return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "gelu", [None], gelu)


class _ByteGPTStepper(_Stepper):
    """ByteGPT stepping with a preallocated KV cache (a concatenating cache copies the whole cache of
    every layer at every step) and functional calls on (B, C) rows (the module call overhead
    dominates a one-token step). ``prime`` (all positions at once, causal attention) and ``step``
    (one position against the cache) restate ByteGPT's forward pass functionally, with the same
    operations in the same order (tested against the module). With ``bf16`` a bfloat16 copy of
    the model does both (weights, activations and KV cache in bf16, fp32 accumulation in the
    matmuls, GELU fused into the first MLP matmul); with ``int8_kv`` as well, keys and values live
    in an int8 cache read by the fused kernel of ``decode_attention`` (half the bytes per step)."""

    def __init__(self, model: LanguageModel, batch: int, bf16: bool = False, int8_kv: bool = False) -> None:
        super().__init__(model)
        gpt: ByteGPT = model.module  # type: ignore[assignment]
        if bf16 or int8_kv:
            gpt = _bf16_copy(gpt)
        cfg = gpt.config
        self.gpt, self.heads = gpt, cfg.n_head
        dtype = gpt.wte.weight.dtype
        slots = -(-cfg.block_size // decode_attention.BLOCK) * decode_attention.BLOCK  # whole kernel blocks
        self.cache8 = Int8KVCache(cfg.n_layer, batch, cfg.n_head, slots) if int8_kv else None
        shape = (cfg.n_layer, batch, cfg.n_head, 0 if int8_kv else cfg.block_size, cfg.n_embd // cfg.n_head)
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

    @torch.inference_mode()
    def prime(self, ids: np.ndarray) -> np.ndarray:
        gpt, heads, cache8 = self.gpt, self.heads, self.cache8
        b, t = ids.shape
        x = F.embedding(torch.as_tensor(ids, dtype=torch.long), gpt.wte.weight) + gpt.wpe.weight[:t]
        c = x.shape[-1]
        x = x.reshape(b * t, c)  # rows of all positions: the packed matmuls take any row count
        for i, (ln1, qkv, proj, ln2, fc_gelu, out) in enumerate(self.layers):
            rows = qkv(F.layer_norm(x, (c,), *ln1)).split(c, dim=1)
            q, k, v = (y.view(b, t, heads, -1).transpose(1, 2) for y in rows)
            if cache8 is not None:
                cache8.store(i, 0, k, v)
            else:
                self.k[i, :, :, :t] = k
                self.v[i, :, :, :t] = v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + proj(y.transpose(1, 2).reshape(b * t, c))
            x = x + out(fc_gelu(F.layer_norm(x, (c,), *ln2)))
        self.length = t
        return self.head(F.layer_norm(x.view(b, t, c)[:, -1], (c,), *self.ln_f)).float().numpy()

    @torch.inference_mode()
    def step(self, ids: np.ndarray) -> np.ndarray:
        gpt, t, heads, cache8 = self.gpt, self.length, self.heads, self.cache8
        x = F.embedding(torch.as_tensor(ids, dtype=torch.long), gpt.wte.weight) + gpt.wpe.weight[t]
        b, c = x.shape
        for i, (ln1, qkv, proj, ln2, fc_gelu, out) in enumerate(self.layers):
            qkv_x = qkv(F.layer_norm(x, (c,), *ln1))
            if cache8 is not None:
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
        self.length = t + 1
        return self.head(F.layer_norm(x, (c,), *self.ln_f)).float().numpy()


def _is_bytegpt(model: LanguageModel) -> bool:
    """A bundled-style ByteGPT: the stepper, bf16 and int8kv arithmetic apply to it."""
    return isinstance(model, ByteModel) and isinstance(model.module, ByteGPT)


def _stepper(model: LanguageModel, batch: int, bf16: bool = False, int8_kv: bool = False) -> _Stepper:
    if _is_bytegpt(model):
        return _ByteGPTStepper(model, batch, bf16, int8_kv)
    return _Stepper(model)


@dataclass(frozen=True)
class _Params:
    window: int
    prime: int
    chunk_size: int
    group: int
    flags: int = 0  # the header's FLAG_* bits: the arithmetic

    @property
    def bf16(self) -> bool:
        return bool(self.flags & FLAG_BF16)

    @property
    def int8_kv(self) -> bool:
        return bool(self.flags & FLAG_INT8_KV)

    @property
    def precision(self) -> str:
        return "int8kv" if self.int8_kv else "bfloat16" if self.bf16 else "float32"


def _run_group(
    model: LanguageModel,
    params: _Params,
    tokens: np.ndarray,
    lengths: list[int],
    coders: list[Any],
    decode: bool,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Code one lockstep group of chunks; the ONE procedure both encoder and decoder run.

    ``tokens`` (B, n_max) holds each row's tokens (padding beyond ``lengths[b]``); when decoding,
    rows whose coder is not ``None`` are filled in place from their range decoder. Row ``b`` is
    coded by ``coders[b]`` (a RangeEncoder/RangeDecoder, or ``None`` for rows known to the decoder).
    """
    n_max = tokens.shape[1]
    if n_max == 0:
        return
    batch, family = tokens.shape[0], _family()
    prefix = np.tile(np.asarray(model.prefix_ids, dtype=np.int64), (batch, 1))
    stepper = _stepper(model, batch, params.bf16, params.int8_kv)
    if prefix.shape[1]:
        logits = stepper.prime(prefix)
    else:  # no BOS: the first token is coded with a uniform distribution
        logits = np.zeros((batch, model.vocab_size), dtype=np.float32)
    rows = [b for b in range(batch) if coders[b] is not None]
    # The encoder hands constriction up to `span` steps of a row at once (fewer Python calls);
    # the per-row distributions are the very arrays the decoder computes one step at a time.
    span = max(1, min(64, 2**24 // (batch * model.vocab_size)))
    pending = None if decode else np.empty((span, batch, model.vocab_size), dtype=np.float64)
    first = 0
    for i in range(n_max):
        probs = quantized_probabilities(logits)
        if pending is None:
            for b in rows:
                if i < lengths[b]:
                    tokens[b, i] = coders[b].decode(family, probs[b : b + 1])[0]
        else:
            pending[i - first] = probs
            if i - first + 1 == span or i == n_max - 1:
                for b in rows:
                    end = min(i + 1, lengths[b])
                    if end > first:
                        symbols = tokens[b, first:end].astype(np.int32)
                        coders[b].encode(symbols, family, np.ascontiguousarray(pending[: end - first, b]))
                first = i + 1
        if on_step is not None:
            on_step(i)
        if i == n_max - 1:
            break
        if stepper.length >= params.window:  # window full: restart from the prefix + last `prime` tokens
            logits = stepper.prime(np.concatenate([prefix, tokens[:, i + 1 - params.prime : i + 1]], axis=1))
        else:
            logits = stepper.step(tokens[:, i])


# --- tokens of a chunk -------------------------------------------------------------------------------


def _chunk_tokens(model: LanguageModel, raw: bytes) -> list[int] | None:
    """Token ids of a chunk if they reproduce it exactly (and are no more than its bytes), else None."""
    if type(model).encode is ByteModel.encode:  # tokens are the bytes (as scoring checks it)
        return list(raw)
    try:
        enc = model.encode(raw)
    except (ValueError, TypeError, UnicodeError):
        return None
    ids = [int(i) for i in enc.ids]
    if enc.lossy or len(ids) > len(raw) or model.decode(ids) != raw:
        return None
    return ids


def _cut(buf: bytes, start: int, size: int) -> int:
    """End of the chunk starting at ``start``: ``start + size`` (or the end of ``buf``), moved back by
    up to 3 bytes so as not to split a UTF-8 character (``buf`` holds look-ahead unless at EOF)."""
    end = start + size
    if end >= len(buf):
        return len(buf)
    back = end
    while back > start + 1 and end - back < 3 and (buf[back] & 0xC0) == 0x80:
        back -= 1
    return back if (buf[back] & 0xC0) != 0x80 else end


# --- container I/O -----------------------------------------------------------------------------------


def _params(
    model: LanguageModel, chunk_size: int, group: int, window: int | None, prime: int | None, precision: str
) -> _Params:
    for name, value in (("chunk_size", chunk_size), ("group", group)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not 1 <= chunk_size <= 2**30:
        raise ValueError(f"chunk_size: expected 1..2**30 bytes, got {chunk_size}")
    if not 1 <= group <= 4096:
        raise ValueError(f"group: expected 1..4096 chunks, got {group}")
    n_prefix = len(model.prefix_ids)
    w = min(MAX_WINDOW, model.max_context) if window is None else window
    if not n_prefix + 2 <= w <= model.max_context:
        raise ValueError(f"window: expected {n_prefix + 2}..{model.max_context} tokens, got {w}")
    k = (w - n_prefix) // 2 if prime is None else prime
    if not 1 <= k <= w - n_prefix - 1:
        raise ValueError(f"prime: expected 1..{w - n_prefix - 1} tokens, got {k}")
    flags = {"float32": 0, "bfloat16": FLAG_BF16, "int8kv": FLAG_BF16 | FLAG_INT8_KV}
    return _Params(w, k, chunk_size, group, flags[resolve_precision(model, precision)])


def resolve_precision(model: LanguageModel | str | None, precision: str = "auto") -> str:
    """The arithmetic ``compress`` uses for ``model`` with ``precision`` (see :func:`compress_stream`):
    ``"float32"``, ``"bfloat16"`` or ``"int8kv"``; ``"auto"`` resolved for this machine. Raises
    ValueError when the requested one cannot run here.

    Example:
        >>> resolve_precision(None, "float32")
        'float32'
    """
    lm = resolve_model(model)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    bytegpt = _is_bytegpt(lm)
    if precision in ("bfloat16", "int8kv") and not bytegpt:
        raise ValueError(f"precision: {precision!r} is available for the bundled ByteGPT models only")
    if precision == "int8kv" and (reason := _int8_kv_unavailable(lm)):
        raise ValueError(f"precision: 'int8kv' is not available here: {reason}")
    if precision == "auto":
        if not (bytegpt and native_bf16()):
            return "float32"
        return "bfloat16" if _int8_kv_unavailable(lm) else "int8kv"
    return precision


def _int8_kv_unavailable(model: LanguageModel) -> str:
    """Why the int8-KV kernel cannot run ``model`` ('' when it can)."""
    cfg: ByteGPTConfig = model.module.config  # type: ignore[attr-defined,assignment]
    head = cfg.n_embd // cfg.n_head
    if head != decode_attention.HEAD_DIM:
        return f"the kernel needs a head size of {decode_attention.HEAD_DIM}, the model has {head}"
    if cfg.block_size > decode_attention.MAX_LENGTH:
        return f"the kernel holds at most {decode_attention.MAX_LENGTH} tokens, the model {cfg.block_size}"
    return decode_attention.unavailable_reason()


def _header(identity: str, p: _Params) -> bytes:
    ident = identity.encode("utf-8")
    body = _HEADER.pack(MAGIC, VERSION, p.flags, LOGIT_SCALE, p.window, p.prime, p.chunk_size, p.group)
    body += bytes([len(ident)]) + ident
    return body + struct.pack("<I", zlib.crc32(body))


def _read_upto(src: BinaryIO, size: int) -> tuple[bytes, bool]:
    """Up to ``size`` bytes of ``src`` (reading until full or EOF); returns (bytes, reached EOF)."""
    parts: list[bytes] = []
    have = 0
    while have < size:
        part = src.read(size - have)
        if not part:
            return b"".join(parts), True
        parts.append(part)
        have += len(part)
    return b"".join(parts), False


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data, _ = _read_upto(src, n)
    if len(data) != n:
        raise ContainerError(f"truncated container: {what} is cut short ({len(data)} of {n} bytes)")
    return data


def _read_header(src: BinaryIO) -> tuple[str, _Params]:
    head, _ = _read_upto(src, _HEADER.size)
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise ContainerError("not an entropykit compressed file (bad magic number)")
    if len(head) < _HEADER.size:
        raise ContainerError("truncated container: the header is cut short")
    _, version, flags, scale, window, prime, chunk_size, group = _HEADER.unpack(head)
    if version != VERSION:
        raise ContainerError(
            f"unsupported container format version {version} (this entropykit reads version {VERSION})"
        )
    n = _read_exact(src, 1, "the header")
    ident = _read_exact(src, n[0], "the header")
    (crc,) = struct.unpack("<I", _read_exact(src, 4, "the header"))
    if zlib.crc32(head + n + ident) != crc:
        raise ContainerError("damaged container: header checksum mismatch")
    if flags not in (0, FLAG_BF16, FLAG_BF16 | FLAG_INT8_KV) or scale != LOGIT_SCALE or not (
        chunk_size and group and 0 < prime < window
    ):
        raise ContainerError("damaged container: invalid coding parameters in the header")
    try:
        identity = ident.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContainerError("damaged container: the model identity is not UTF-8") from exc
    return identity, _Params(window, prime, chunk_size, group, flags)


def _check_model(model: LanguageModel | str | None, identity: str, params: _Params) -> LanguageModel:
    if model is None:
        name = identity.rsplit("@", 1)[0]
        try:
            model = load_model(name)
        except (ValueError, OSError) as exc:
            raise ContainerError(
                f"this file was compressed with model {identity!r}, which could not be loaded ({exc}); "
                "pass the model (--model NAME_OR_PATH)"
            ) from exc
    lm = resolve_model(model)
    if lm.identity != identity:
        raise ContainerError(
            f"wrong model: this file was compressed with {identity!r} but the model given is "
            f"{lm.identity!r}; decompress with the same model (--model)"
        )
    if params.window > lm.max_context or params.prime > params.window - len(lm.prefix_ids) - 1:
        raise ContainerError("damaged container: window/prime do not fit the model's context")
    if params.flags and not _is_bytegpt(lm):
        raise ContainerError("damaged container: a precision flag is set for a model that has none")
    if params.int8_kv and (reason := _int8_kv_unavailable(lm)):
        raise ContainerError(
            f"this file was coded with the int8-KV attention kernel, which cannot run here: {reason}"
        )
    return lm


class _Meter:
    """Turns the progress of the groups in flight (keyed by their first chunk) into cumulative
    ``progress(done_bytes, coded_bits)``; only the calling process's main thread touches it."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress, self.bytes, self.bits = progress, 0, 0.0
        self.partial: dict[int, tuple[int, float]] = {}

    def group(
        self, key: int, lengths: list[int], n_bytes: int, bits: Callable[[float], float]
    ) -> Callable[[int], None]:
        steps, n_sym = max(lengths, default=0), max(1, sum(lengths))

        def tick(i: int) -> None:
            if self.progress is not None and (i % 256 == 255 or i == steps - 1):
                done = sum(min(i + 1, k) for k in lengths) / n_sym
                self.report(key, int(done * n_bytes), bits(done))

        return tick

    def report(self, key: int, done_bytes: int, bits: float) -> None:
        """Group ``key`` has coded ``done_bytes`` so far, costing ``bits``."""
        self.partial[key] = (done_bytes, bits)
        self._emit()

    def finish(self, key: int, n_bytes: int, bits: float) -> None:
        self.partial.pop(key, None)
        self.bytes += n_bytes
        self.bits += bits
        self._emit()

    def _emit(self) -> None:
        if self.progress is not None:
            extra = self.partial.values()
            self.progress(self.bytes + sum(b for b, _ in extra), self.bits + sum(c for _, c in extra))


def _encode_group(lm: LanguageModel, p: _Params, key: int, chunks: list[bytes], meter: _Meter) -> list[bytes]:
    """Code one group of chunks; returns each chunk's record (record header + payload)."""
    import constriction

    ids = [_chunk_tokens(lm, c) for c in chunks]
    lengths = [0 if t is None else len(t) for t in ids]
    tokens = np.full((len(chunks), max(lengths)), PAD, dtype=np.int64)
    for b, t in enumerate(ids):
        tokens[b, : lengths[b]] = t or []
    coders: list[Any] = [None if t is None else constriction.stream.queue.RangeEncoder() for t in ids]
    n_bytes = sum(map(len, chunks))
    tick = meter.group(key, lengths, n_bytes, lambda _: sum(c.num_bits() for c in coders if c))
    _run_group(lm, p, tokens, lengths, coders, decode=False, on_step=tick)
    records, bits = [], 0.0
    for raw, coder, n_sym in zip(chunks, coders, lengths):
        payload = b"" if coder is None else coder.get_compressed().astype("<u4").tobytes()
        if coder is not None and len(payload) < len(raw):
            head = b"C" + _varint(len(raw)) + _varint(n_sym) + _varint(len(payload))
        else:
            head, payload = b"S" + _varint(len(raw)) + _varint(n_sym), raw
        head += struct.pack("<I", zlib.crc32(raw))
        records.append(head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload)
        bits += 8.0 * len(payload)
    meter.finish(key, n_bytes, bits)
    return records


def _varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low first, high bit = more bytes follow."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_varint(src: BinaryIO, what: str) -> tuple[int, bytes]:
    """A LEB128 value below 2**32 and its bytes."""
    raw = bytearray()
    for _ in range(5):
        raw += _read_exact(src, 1, what)
        if not raw[-1] & 0x80:
            return sum((b & 0x7F) << (7 * i) for i, b in enumerate(raw)), bytes(raw)
    raise ContainerError(f"damaged container: over-long size field in {what}")


@dataclass(frozen=True)
class _Record:
    index: int
    mode: int
    raw_len: int
    n_symbols: int
    raw_crc: int
    payload: bytes


def _read_record(src: BinaryIO, p: _Params, index: int) -> _Record | bytes:
    """The next chunk record, or the trailer's bytes when the end tag comes."""
    tag = _read_exact(src, 1, "a chunk record")
    if tag == b"E":
        return tag + _read_exact(src, _TRAILER.size - 1, "the trailer")
    if tag not in _TAGS:
        raise ContainerError(f"damaged container: unexpected record tag {tag!r} at chunk {index}")
    mode, head = _TAGS[tag], bytearray(tag)
    raw_len, raw = _read_varint(src, "a chunk record")
    n_sym, raw_sym = _read_varint(src, "a chunk record")
    head += raw + raw_sym
    n_pay = raw_len
    if mode == MODE_CODED:
        n_pay, raw = _read_varint(src, "a chunk record")
        head += raw
    if not (0 < raw_len <= p.chunk_size and n_sym <= raw_len and n_pay <= raw_len):
        raise ContainerError(f"damaged container: invalid sizes in chunk {index}")
    if mode == MODE_CODED and n_pay % 4:
        raise ContainerError(f"damaged container: invalid payload size in chunk {index}")
    crcs = _read_exact(src, _CRCS.size, "a chunk record")
    head += crcs[:4]  # the record CRC covers the head up to and including the raw CRC
    raw_crc, crc = _CRCS.unpack(crcs)
    payload = _read_exact(src, n_pay, "a chunk payload")
    if zlib.crc32(payload, zlib.crc32(head)) != crc:
        raise ContainerError(f"damaged container: checksum mismatch in chunk {index}")
    return _Record(index, mode, raw_len, n_sym, raw_crc, payload)


def _decode_group(
    lm: LanguageModel, p: _Params, key: int, records: list[_Record], meter: _Meter
) -> list[bytes]:
    """Decode one group of chunk records into verified chunk bytes."""
    import constriction

    lengths = [r.n_symbols for r in records]
    tokens = np.full((len(records), max(lengths)), PAD, dtype=np.int64)
    coders: list[Any] = []
    for b, r in enumerate(records):
        if r.mode == MODE_CODED:
            words = np.frombuffer(r.payload, "<u4").astype(np.uint32)
            coders.append(constriction.stream.queue.RangeDecoder(words))
            continue
        coders.append(None)  # stored: its tokens are known, fed exactly as the encoder fed them
        if r.n_symbols:
            known = _chunk_tokens(lm, r.payload)
            if known is None or len(known) != r.n_symbols:
                raise ContainerError(f"damaged container: stored chunk {r.index} does not match its record")
            tokens[b, : r.n_symbols] = known
    n_bytes, bits = sum(r.raw_len for r in records), 8.0 * sum(len(r.payload) for r in records)
    try:
        tick = meter.group(key, lengths, n_bytes, lambda f: f * bits)
        _run_group(lm, p, tokens, lengths, coders, True, tick)
    except (ValueError, RuntimeError, IndexError, OverflowError) as exc:  # a decoder fed damaged data
        raise ContainerError(f"damaged container: range decoding failed ({exc})") from exc
    out = []
    for b, r in enumerate(records):
        raw = r.payload if r.mode == MODE_STORED else _detokenize(lm, tokens[b, : r.n_symbols])
        if len(raw) != r.raw_len or zlib.crc32(raw) != r.raw_crc:
            raise ContainerError(
                f"chunk {r.index} decoded to bytes that fail its checksum: the file is damaged, or the model "
                "computed different probabilities here than when compressing"
            )
        out.append(raw)
    meter.finish(key, n_bytes, bits)
    return out


# --- running groups: inline, or one worker process per core ------------------------------------------

_WORKER: dict[str, Any] = {}  # in a worker process: its model and progress queue


def _init_worker(lm: LanguageModel, ticks: Any) -> None:
    torch.set_num_threads(1)
    _WORKER.update(lm=lm, ticks=ticks)


def _in_worker(
    fn: Callable[..., list[bytes]], p: _Params, key: int, items: list[Any]
) -> tuple[list[bytes], int, float]:
    """``fn`` on one group in a worker; returns its result and its final (bytes, bits): the queued
    progress reports may arrive after the result."""
    ticks = _WORKER["ticks"]
    meter = _Meter(lambda done, bits: ticks.put((key, done, bits)))
    return fn(_WORKER["lm"], p, key, items, meter), meter.bytes, meter.bits


class _Groups:
    """Runs coding groups in order: inline when one worker suffices, else in worker *processes*, one
    core each (threads would serialise on the GIL between the many small ops of a step). Each worker
    pins one thread, as the inline path does, so the place a group runs never changes its bits."""

    def __init__(self, lm: LanguageModel, workers: int, meter: _Meter) -> None:
        self.lm, self.workers, self.meter = lm, workers, meter
        self.pool: ProcessPoolExecutor | None = None
        self.ticks: Any = None

    def run(
        self, fn: Callable[..., list[bytes]], p: _Params, groups: list[tuple[int, Any]]
    ) -> list[list[bytes]]:
        """``groups``: (key, items) per group; returns ``fn``'s records/chunks per group."""
        if self.workers == 1 or (len(groups) == 1 and self.pool is None):
            return [fn(self.lm, p, key, items, self.meter) for key, items in groups]
        if self.pool is None:
            # fork: the workers inherit the model (nothing to pickle, no re-import of the caller's
            # __main__ as spawn needs); each pins one thread before any torch work, as DataLoader's do
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.ticks = ctx.Queue()
            self.pool = ProcessPoolExecutor(self.workers, ctx, _init_worker, (self.lm, self.ticks))
        futures: dict[Future[tuple[list[bytes], int, float]], int] = {
            self.pool.submit(_in_worker, fn, p, key, items): key for key, items in groups
        }
        pending, finished = set(futures), set[int]()
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            self._drain(finished)
            for f in done:
                _, n_bytes, bits = f.result()  # raise a worker's error here, in order of completion
                finished.add(futures[f])  # reports still queued for it are stale
                self.meter.finish(futures[f], n_bytes, bits)
        return [f.result()[0] for f in futures]

    def _drain(self, finished: set[int]) -> None:
        while True:
            try:
                key, done, bits = self.ticks.get_nowait()
            except queue.Empty:
                return
            if key not in finished:
                self.meter.report(key, done, bits)

    def close(self, abort: bool = False) -> None:
        if self.pool is None:
            return
        if abort:  # an error or Ctrl-C: do not wait for groups still coding
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=not abort, cancel_futures=True)


@contextmanager
def _closing(groups: _Groups) -> Iterator[_Groups]:
    try:
        yield groups
    except BaseException:
        groups.close(abort=True)
        raise
    groups.close()


# --- public API --------------------------------------------------------------------------------------


def compress_stream(
    src: BinaryIO,
    dst: BinaryIO,
    model: LanguageModel | str | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    group: int | None = None,
    window: int | None = None,
    prime: int | None = None,
    precision: str = "auto",
    workers: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Compress the binary stream ``src`` into ``dst``; returns the number of bytes written.

    Cost: ``sum_t -log2 p(x_t | context) + O(1)`` bits per chunk (range coding; Rissanen 1976),
    i.e. the model's cross-entropy of the data in bits under the chunk/window policy of the module
    docstring, plus the container overhead (a header of ~60 bytes, a 53-byte trailer, ~15 bytes and
    a <= 4-byte coder flush per chunk). Memory is bounded by ``workers`` groups (``group *
    chunk_size`` bytes of input each), so inputs larger than memory work.

    ``model``: a ``LanguageModel``, a name for ``load_model`` or ``None`` (the bundled
    ``bytegpt-6l``). ``chunk_size``: bytes per independently decodable chunk. ``group``: chunks
    coded together in one lockstep batch (recorded in the container; default: up to 32, fewer for
    a small seekable input so that every worker gets a group). ``window``: tokens of context
    (default ``min(512, max_context)``), re-primed with the last ``prime`` tokens (default half the
    window). ``precision``: the arithmetic of the bundled ByteGPT models, ``"float32"``,
    ``"bfloat16"`` (weights, activations and KV cache in bf16 with fp32 accumulation; the coded
    size changes by well under 0.1%), ``"int8kv"`` (bf16 with the KV cache in int8, read by the
    fused C kernel of ``decode_attention``: 1.6-1.8x faster than ``"bfloat16"`` at the same coded
    size; needs a C compiler on first use and a head size of 32) or ``"auto"`` (``"int8kv"`` where
    the CPU multiplies bf16 in hardware and the kernel builds, else ``"bfloat16"`` there, else
    ``"float32"``); it is recorded in the container, so the decoder repeats it.
    Other models run as they are. ``workers``: groups coded at the same time in worker processes,
    one core each (default: the CPU count, at most 8); it changes the speed, never the
    probabilities of a given group.
    ``progress(done_bytes, coded_bits)`` is called as coding advances.

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> n = compress_stream(io.BytesIO(b"abc"), out)
        >>> n == len(out.getvalue()), decompress(out.getvalue())
        (True, b'abc')
    """
    lm = resolve_model(model)
    n_workers = _workers(workers)
    if group is None:  # enough groups to keep every worker busy, each a batch of up to 32 chunks
        remaining = _remaining(src)
        n_chunks_total = 1 if remaining is None else max(1, -(-remaining // max(1, chunk_size)))
        group = DEFAULT_GROUP if remaining is None else min(DEFAULT_GROUP, -(-n_chunks_total // n_workers))
    p = _params(lm, chunk_size, group, window, prime, precision)
    header = _header(lm.identity, p)
    dst.write(header)
    written, n_chunks, digest, meter = len(header), 0, hashlib.sha256(), _Meter(progress)
    carry, eof = b"", False
    groups = _Groups(lm, n_workers, meter)
    with _pinned_threads(), _closing(groups):
        while True:
            batch: list[tuple[int, list[bytes]]] = []  # (first chunk's index, chunks) per group
            for _ in range(n_workers):
                # 4 bytes of look-ahead beyond the group let the last cut see the byte after it
                more, eof = (b"", True) if eof else _read_upto(src, p.group * p.chunk_size + 4 - len(carry))
                buf, start = carry + more, 0
                chunks: list[bytes] = []
                while start < len(buf) and len(chunks) < p.group:
                    end = _cut(buf, start, p.chunk_size)
                    chunks.append(buf[start:end])
                    start = end
                carry = buf[start:]
                if not chunks:
                    break
                batch.append((n_chunks, chunks))
                n_chunks += len(chunks)
            if not batch:
                break
            coded = groups.run(_encode_group, p, batch)
            for (_, chunks), records in zip(batch, coded):
                for raw, record in zip(chunks, records):
                    dst.write(record)
                    digest.update(raw)
                    written += len(record)
    body = _TRAILER.pack(b"E", n_chunks, meter.bytes, digest.digest(), 0)[:-4]
    dst.write(body + struct.pack("<I", zlib.crc32(body)))
    return written + _TRAILER.size


def _workers(workers: int | None) -> int:
    if workers is None:
        return max(1, min(8, os.cpu_count() or 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive int or None, got {workers!r}")
    return workers


def _remaining(src: BinaryIO) -> int | None:
    """Bytes left in a seekable ``src`` (None for pipes)."""
    try:
        if not src.seekable():
            return None
        here = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(here)
        return end - here
    except (OSError, AttributeError, ValueError):
        return None


def decompress_stream(
    src: BinaryIO,
    dst: BinaryIO,
    model: LanguageModel | str | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Decompress a container from ``src`` into ``dst``; returns the number of bytes written.

    Inverse of :func:`compress_stream`. ``model=None`` loads the model named in the container;
    a model whose identity (name + weights hash) differs is refused. Every chunk is checked
    (record CRC-32 before decoding, CRC-32 of the decoded bytes after) before it is written, and the
    trailer's length and SHA-256 of the whole output at the end; any mismatch, truncation or
    trailing garbage raises ``ContainerError`` (a ``ValueError``). Chunks already verified may have
    been written to ``dst`` by then, so write to a temporary file and discard it on error (the CLI
    does). ``workers``: groups decoded at the same time (default: the CPU count, at most 8).
    ``progress(done_bytes, coded_bits)`` is called as decoding advances.

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> decompress_stream(io.BytesIO(compress(b"abc")), out), out.getvalue()
        (3, b'abc')
    """
    identity, p = _read_header(src)
    lm = _check_model(model, identity, p)
    n_workers = _workers(workers)
    n_chunks, digest, meter = 0, hashlib.sha256(), _Meter(progress)
    trailer: bytes | None = None
    groups = _Groups(lm, n_workers, meter)
    with _pinned_threads(), _closing(groups):
        while trailer is None:
            batch: list[tuple[int, list[_Record]]] = []
            while trailer is None and len(batch) < n_workers:
                records: list[_Record] = []
                while len(records) < p.group:
                    item = _read_record(src, p, n_chunks)
                    if isinstance(item, bytes):
                        trailer = item
                        break
                    records.append(item)
                    n_chunks += 1
                if records:
                    batch.append((records[0].index, records))
            for chunks in groups.run(_decode_group, p, batch) if batch else []:
                for raw in chunks:
                    dst.write(raw)
                    digest.update(raw)
    assert trailer is not None
    _, t_chunks, t_len, t_sha, t_crc = _TRAILER.unpack(trailer)
    if zlib.crc32(trailer[:-4]) != t_crc:
        raise ContainerError("damaged container: trailer checksum mismatch")
    if t_chunks != n_chunks or t_len != meter.bytes:
        raise ContainerError(
            f"damaged container: the trailer promises {t_len} bytes in {t_chunks} chunks, found "
            f"{meter.bytes} in {n_chunks}"
        )
    if t_sha != digest.digest():
        raise ContainerError("damaged container: SHA-256 of the output does not match the original")
    if _read_upto(src, 1)[0]:
        raise ContainerError("damaged container: unexpected data after the end of the container")
    return meter.bytes


def original_length(src: BinaryIO) -> int | None:
    """The original length a seekable container's trailer states (None if unknown); the stream is
    left at its start. For progress bars: nothing here is verified."""
    try:
        if not src.seekable():
            return None
        end = src.seek(0, os.SEEK_END)
        tail = b""
        if end >= _TRAILER.size:
            src.seek(end - _TRAILER.size)
            tail = src.read(_TRAILER.size)
        src.seek(0)
    except OSError:
        return None
    return int(_TRAILER.unpack(tail)[2]) if tail[:1] == b"E" else None


def container_info(src: BinaryIO) -> dict[str, Any]:
    """What a container's header records: ``model`` (identity), ``precision``, ``window``,
    ``prime``, ``chunk_size``, ``group``, and ``original_length`` from the trailer (None when
    ``src`` cannot seek). A seekable ``src`` is left at its start. Raises ContainerError for a
    damaged, truncated or foreign header; the chunks are not checked (``decompress`` does that).

    Example:
        >>> import io
        >>> info = container_info(io.BytesIO(compress(b"abc", precision="float32")))
        >>> info["precision"], info["original_length"], info["model"].split("@")[0]
        ('float32', 3, 'bytegpt-6l')
    """
    identity, p = _read_header(src)
    return {
        "model": identity, "precision": p.precision, "window": p.window, "prime": p.prime,
        "chunk_size": p.chunk_size, "group": p.group, "original_length": original_length(src),
    }


def _detokenize(model: LanguageModel, ids: np.ndarray) -> bytes:
    try:
        return model.decode([int(i) for i in ids])
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        raise ContainerError(f"damaged container: decoded tokens are invalid ({exc})") from exc


def compress(data: bytes, model: LanguageModel | str | None = None, **options: Any) -> bytes:
    """Compress ``data`` losslessly with a language model; returns the container bytes.

    The size is the model's cross-entropy of ``data`` in bits (``sum_t -log2 p(x_t | x_<t)``,
    range coding; Rissanen 1976, Witten et al. 1987) plus a small constant per chunk; see
    :func:`compress_stream` for ``model`` and the ``options`` (``chunk_size``, ``group``,
    ``window``, ``prime``, ``progress``).

    Example:
        >>> blob = compress(b"any bytes \\x00\\xff")
        >>> decompress(blob) == b"any bytes \\x00\\xff"
        True
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    out = io.BytesIO()
    compress_stream(io.BytesIO(bytes(data)), out, model, **options)
    return out.getvalue()


def decompress(blob: bytes, model: LanguageModel | str | None = None, **options: Any) -> bytes:
    """Recover the exact original bytes from a container made by :func:`compress`.

    ``model=None`` loads the model named in the container (and checks its weights hash). A damaged,
    truncated or foreign file, another format version or a wrong model raises ``ContainerError``
    (a ``ValueError``) -- never wrong output. ``options``: ``progress``.

    Example:
        >>> decompress(compress(b""))
        b''
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"blob: expected bytes, got {type(blob).__name__}")
    out = io.BytesIO()
    decompress_stream(io.BytesIO(bytes(blob)), out, model, **options)
    return out.getvalue()
