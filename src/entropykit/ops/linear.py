"""Fused linear -> softmax statistics that never materialise the N x V logits.

A language-model head maps hidden states ``h`` (N, D) through a classifier ``W`` (V, D) (optional
bias ``b``) to logits ``z = h W^T + b``. With V in the tens or hundreds of thousands the logits (and
their gradient) dominate training memory. The functions here walk over *token chunks*: each chunk's
logits (rows x V: max(64 MB, half the size of the fp32 weight gradient), see ``_rows_per_chunk``)
are formed once, reduced to per-token statistics in place, and turned into gradient contributions
immediately, so the peak extra memory is one or two chunks plus the gradients themselves. Ignored
tokens are skipped by index (no copy of ``h``).

Cost model (what the benchmark checks): one chunk needs three matmuls -- ``z = h_c W^T``,
``dh_c = dz W`` and ``dW += dz^T h_c`` -- which is the lower bound ``6 N D V`` FLOP of *any*
exact forward + backward. For ``reduction="mean"|"sum"`` the gradients are formed during the forward
(Liger-Kernel style, "fused linear cross entropy") and scaled by the upstream gradient in backward;
outputs whose upstream gradient is a vector (``reduction="none"``, token statistics) recompute the
logits in backward instead (Cut Cross-Entropy style, Wijmans et al. 2025, arXiv:2411.09009), costing
one extra matmul.

Small problems (a byte or character vocabulary, or few tokens): when every row's logits fit one chunk,
the cross-entropy takes a single-chunk pass (``_ce_whole``) that forms the logits of all rows in one
buffer, runs each statistic and the logit gradient as one pass over it (few large ops: each op of a
multi-threaded pass has a fixed cost, which dominated when the pass worked in cache-sized blocks), and
then runs ``dh = dz W`` and ``dW = dz^T h`` as one matmul each, the mean/sum row weight folded into
their ``alpha``; for bf16 inputs both are native bf16 matmuls on the bf16 ``dz`` (fp32 accumulation,
one rounding of the output, as the returned gradients are bf16 anyway), the fp32 copy of ``h`` for the
logits is made in two or so row blocks and freed, the fp32 logits are freed before the two matmuls,
and no fp32 ``dW`` is formed. On ByteGPT's head (8192 x 257) that is fewer passes over the logits than
``F.cross_entropy`` on ``F.linear`` logits (its log-softmax, the nll gradient and the log-softmax
backward each read or write the whole buffer) and half its peak memory. With
``logits_dtype=torch.bfloat16`` the pass forms the logits by one native bf16 matmul (rounded to bf16,
as autocast's ``F.linear``) and upcasts them into the same fp32 buffer; the rest is unchanged.

Precision: statistics are accumulated in float32 (float64 for float64 inputs). bfloat16 inputs are
multiplied with bf16 products and fp32 accumulation *and fp32 outputs* (oneDNN's bf16 math mode on the
upcast operands: exact products of bf16 numbers, fp32 sums), so the logits are never rounded to bf16,
and ``dW`` is accumulated over chunks in fp32. The backward matmuls multiply the logit gradient as
bf16 (the math mode rounds its fp32 operands to bf16 anyway), so the single-chunk pass's native bf16
``dW`` (fp32 accumulation, output rounded to bf16 once) is the fp32 ``dW`` rounded to the bf16
gradient, up to summation order. float16 inputs use plain fp32 matmuls. The opt-in
``linear_cross_entropy(..., logits_dtype=torch.bfloat16)`` instead uses native bf16 matmuls (bf16
outputs, as ``F.linear`` and Cut Cross-Entropy do): the logits are rounded to bf16, everything after
the matmul is fp32.

Exactness: the default is exact. ``grad_filter`` enables CCE's gradient filtering (vocabulary blocks
whose softmax gradient is below ``eps`` in every row of a chunk are skipped in backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from entropykit import measures
from entropykit._validate import (
    check_bool,
    check_choice,
    check_class_index,
    check_finite,
    check_int,
    check_positive,
    check_real,
    check_reduction,
    check_tensor,
)

__all__ = ["linear_cross_entropy", "linear_distill", "linear_token_stats"]

_CHUNK_BYTES = 64 * 2**20  # minimum size of one chunk of fp32 logits
_MAX_CHUNK_BYTES = 512 * 2**20  # cap of the (V D / 2)-sized chunk budget
_SUB_BYTES = 4 * 2**20  # logits_dtype=bf16: cache-sized fp32 sub-blocks of the bf16 chunk
_WHOLE_H_BYTES = 2 * 2**20  # _ce_whole, bf16/fp16 inputs: row blocks of the fp32 copy of h (see
_WHOLE_MIN_ROWS = 256  # _h_block_rows) of at least these many bytes and rows
_ADD_BLOCK = 4096  # vocabulary rows per block when adding a bf16 dW chunk into the fp32 dW
_FILTER_BLOCK = 1024  # vocabulary block size for gradient filtering
_softmax_out = torch.ops.aten._softmax.out  # in-place row softmax (one cached pass per row)
_log_softmax_out = torch.ops.aten._log_softmax.out


# --------------------------------------------------------------------------------------------------
# validation and small helpers
# --------------------------------------------------------------------------------------------------


def _check_head(hidden: Tensor, weight: Tensor, bias: Tensor | None, hname: str = "hidden",
                wname: str = "weight") -> None:
    check_tensor(hidden, hname, floating=True, min_dim=1)
    check_tensor(weight, wname, floating=True)
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] < 1:
        raise ValueError(f"{wname} must have shape (V >= 1, D={hidden.shape[-1]}) to match {hname}, "
                         f"got {tuple(weight.shape)}")
    if bias is not None:
        check_tensor(bias, "bias", floating=True)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for x, name in ((weight, wname), (bias, "bias")):
        if x is not None and x.dtype != hidden.dtype:
            raise TypeError(f"{name} must have {hname}'s dtype {hidden.dtype}, got {x.dtype}")
        if x is not None and x.device != hidden.device:
            raise ValueError(f"{name} must be on {hname}'s device {hidden.device}, got {x.device}")


def _check_target(target: Tensor, lead: torch.Size, vocab: int, ignore_index: int | None) -> None:
    check_class_index(target, tuple(lead), vocab, ignore_index,
                      lead_what="the shape of hidden without its last axis")


def _check_options(softcap: float | None, chunk_size: int | None) -> float | None:
    """The options every function here shares; returns the soft cap as a float (or None)."""
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", 1)
    return None if softcap is None else check_positive(softcap, "softcap")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows_per_chunk(n: int, vocab: int, d_model: int, chunk_size: int | None, buffers: int = 1,
                    elem_bytes: int = 4) -> int:
    """Token rows per chunk (>= 1), balanced so that every chunk has about the same size.

    The (rows x V) buffers (fp32 unless ``elem_bytes`` says otherwise) get
    ``max(_CHUNK_BYTES, min(V D * 4 / 2, _MAX_CHUNK_BYTES))`` bytes:
    at least 64 MB, and up to half the size of the fp32 weight gradient (which is allocated anyway).
    A large vocabulary with a wide head then still gets a few hundred rows per chunk, so each of the
    three matmuls streams the weight once per hundreds of tokens (high arithmetic intensity).
    """
    if chunk_size is not None:
        return max(1, min(n, chunk_size))
    budget = max(_CHUNK_BYTES, min(vocab * d_model * 2, _MAX_CHUNK_BYTES))
    rows = max(8, budget // (elem_bytes * vocab * buffers))
    if n <= rows:
        return max(1, n)
    return -(-n // -(-n // rows))  # ceil(n / number of chunks)


@contextmanager
def _matmul_mode(dtype: torch.dtype) -> Iterator[None]:
    """bf16 inputs: let oneDNN multiply the fp32-upcast operands as bf16 with fp32 accumulation.

    The upcast operands are exact bf16 values, so products are exact and only the summation order
    differs from an fp32 matmul; outputs stay fp32 (the logits are never rounded to bf16).
    """
    mk = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    if dtype != torch.bfloat16 or mk is None or not hasattr(mk, "fp32_precision"):
        yield
        return
    old = mk.fp32_precision
    mk.fp32_precision = "bf16"
    try:
        yield
    finally:
        mk.fp32_precision = old


def _logits(hc: Tensor, w: Tensor, b: Tensor | None, out: Tensor, softcap: float | None,
            tanh_out: Tensor | None, temperature: float, mode: torch.dtype) -> Tensor:
    """z = softcap(hc w^T + b) / temperature written into ``out``; tanh(.) kept in ``tanh_out``."""
    with _matmul_mode(mode):
        if b is None:
            torch.mm(hc, w.t(), out=out)
        else:
            torch.addmm(b, hc, w.t(), out=out)
    if softcap is not None:
        assert tanh_out is not None
        _softcap(out, softcap, tanh_out)
    if temperature != 1.0:
        out.div_(temperature)
    return out


def _softcap(z: Tensor, cap: float, t: Tensor) -> None:
    """z <- cap tanh(z / cap) in place; tanh(z / cap) kept in ``t`` for the backward chain."""
    torch.div(z, cap, out=t).tanh_()
    torch.mul(t, cap, out=z)


def _kept_spans(keep: Tensor, v: int) -> list[tuple[int, int]]:
    """Vocabulary spans [b0, b1) of the blocks of ``_FILTER_BLOCK`` entries that ``keep`` marks."""
    return [(k * _FILTER_BLOCK, min((k + 1) * _FILTER_BLOCK, v)) for k in keep.nonzero().flatten().tolist()]


def _softcap_chain(dz: Tensor, t: Tensor) -> None:
    """dz <- dz * (1 - t^2): derivative of s*tanh(z/s); ``t`` is overwritten."""
    t.square_().neg_().add_(1.0)
    dz.mul_(t)


def _accumulate(dz: Tensor, hc: Tensor, w: Tensor, dh: Tensor | None, dw: Tensor | None,
                db: Tensor | None, keep: Tensor | None, mode: torch.dtype) -> None:
    """dh = dz w ; dw += dz^T hc ; db += sum_rows dz -- over all vocabulary, or kept blocks only.
    A None output is not wanted (its input needs no gradient) and costs nothing."""
    if db is not None:
        db.add_(dz.sum(0))
    with _matmul_mode(mode):
        if keep is None:
            if dh is not None:
                torch.mm(dz, w, out=dh)
            if dw is not None:
                dw.addmm_(dz.t(), hc)
            return
        if dh is not None:
            dh.zero_()
        for s, e in _kept_spans(keep, w.shape[0]):
            if dh is not None:
                dh.addmm_(dz[:, s:e], w[s:e])
            if dw is not None:
                dw[s:e].addmm_(dz[:, s:e].t(), hc)


def _row_loss(lse: Tensor, zy: Tensor, zmean: Tensor | None, eps: float, zl: float) -> Tensor:
    """Per-row loss ``(1 - eps)(lse - z_y) + eps (lse - mean z) + zl lse^2`` (nats)."""
    out = lse - zy
    if eps:
        assert zmean is not None
        out = (1.0 - eps) * out + eps * (lse - zmean)
    if zl:
        out = out + zl * lse.square()
    return out


def _dense_logit_grad(z: Tensor, y: Tensor, g: Tensor, lse: Tensor, eps: float, zl: float,
                      t: Tensor | None) -> None:
    """In place, softmax rows ``z = p`` -> ``dloss/dz = r p - a onehot(y) - b`` with
    ``r = g (1 + 2 zl lse)``, ``a = g (1 - eps)``, ``b = g eps / V``, then through the softcap."""
    z.mul_((g * (1.0 + 2.0 * zl * lse) if zl else g)[:, None])
    z.scatter_add_(1, y[:, None], (g * -(1.0 - eps))[:, None])
    if eps:
        z.sub_((g * (eps / z.shape[1]))[:, None])
    if t is not None:
        _softcap_chain(z, t)


def _softmax_stats(z: Tensor, y: Tensor, hc: Tensor, logits: Callable[[Tensor], Tensor], eps: float,
                   zl: float, tiny: float) -> tuple[Tensor, Tensor]:
    """Row loss and lse of the logits ``z`` (c, V) of the rows ``hc``; ``z`` is overwritten with p.

    lse = z_y - log p_y is exact in log space unless p_y underflows (below ``tiny``); those rare rows
    get a logsumexp of their logits, recomputed by ``logits(rows of hc)`` (fresh tensors).
    """
    v = z.shape[1]
    zy = z.gather(1, y[:, None]).squeeze(1)
    zmean = z.sum(1) / v if eps else None
    _softmax_out(z, 1, False, out=z)  # z now holds p (one cached pass per row)
    py = z.gather(1, y[:, None]).squeeze(1)
    lse = zy - py.log()
    bad = py < tiny
    if bool(bad.any()):
        lse[bad] = torch.logsumexp(logits(hc[bad]), 1)
    return _row_loss(lse, zy, zmean, eps, zl), lse


def _filter_blocks(p: Tensor, y: Tensor | None, eps: float) -> Tensor:
    """CCE filter: keep vocabulary blocks where some row's softmax reaches eps (or a target lies)."""
    v = p.shape[1]
    nb = -(-v // _FILTER_BLOCK)
    colmax = p.amax(0)
    pad = colmax.new_zeros(nb * _FILTER_BLOCK - v)
    keep = torch.cat([colmax, pad]).view(nb, _FILTER_BLOCK).amax(1) >= eps
    if y is not None:
        keep[torch.div(y, _FILTER_BLOCK, rounding_mode="floor")] = True
    return keep


# --------------------------------------------------------------------------------------------------
# cross-entropy pass
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CEConfig:
    label_smoothing: float
    z_loss: float
    softcap: float | None
    filter_eps: float | None
    chunk_size: int | None
    native: bool = False  # logits_dtype=bfloat16: native bf16 matmuls (bf16 logits), see the docstring


def _ce_pass(h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, cfg: _CEConfig, g: Tensor | None,
             need_h: bool = True, need_w: bool = True, w_low: Tensor | None = None,
             idx: Tensor | None = None,
             ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Per-row CE loss and lse over the rows ``idx`` of ``h`` (all rows if None), targets ``y`` (valid).

    ``w``/``b`` are in the accumulation dtype. ``w_low`` (bf16 inputs): the bf16 weight, for the
    native dh matmul. With row weights ``g`` (one per selected row) also return ``dh`` with the shape
    of ``h`` (zero rows outside ``idx``), ``dW`` (V, D) and ``db`` (V,), all in the accumulation dtype.
    """
    n = y.shape[0]
    d_model = h.shape[1]
    v = w.shape[0]
    acc = _acc_dtype(h.dtype)
    dev = h.device
    eps, zl, cap = cfg.label_smoothing, cfg.z_loss, cfg.softcap
    rows = _rows_per_chunk(n, v, d_model, cfg.chunk_size, 2 if cap is not None else 1)
    loss = torch.empty(n, dtype=acc, device=dev)
    lse = torch.empty(n, dtype=acc, device=dev)
    want = g is not None
    dense = cap is not None or cfg.filter_eps is not None or zl != 0.0  # else: fewer (c, V) passes
    tiny = torch.finfo(acc).tiny * 1e8
    onehot = torch.full((rows, 1), -(1.0 - eps), dtype=acc, device=dev)
    dh = None
    if want and need_h:
        dh = (torch.empty if idx is None else torch.zeros)(h.shape, dtype=acc, device=dev)
    dw = torch.zeros(v, d_model, dtype=acc, device=dev) if want and need_w else None
    db = torch.zeros(v, dtype=acc, device=dev) if want and b is not None else None
    hsum = torch.zeros(d_model, dtype=acc, device=dev) if want and eps and not dense else None
    wsum = w.sum(0, dtype=acc) if want and eps and not dense else None
    buf = torch.empty(rows, v, dtype=acc, device=dev)
    tbuf = torch.empty(rows, v, dtype=acc, device=dev) if cap is not None else None
    lowdh = want and need_h and not dense and w_low is not None  # dh = bf16(dz) @ W natively
    lowbuf = torch.empty(rows, v, dtype=torch.bfloat16, device=dev) if lowdh else None

    def logits(hc: Tensor, out: Tensor, t: Tensor | None) -> Tensor:
        return _logits(hc, w, b, out, cap, t, 1.0, h.dtype)

    def fresh(hb: Tensor) -> Tensor:
        return logits(hb, hb.new_empty(hb.shape[0], v), None if cap is None else hb.new_empty(hb.shape[0], v))

    for s in range(0, n, rows):
        e = min(n, s + rows)
        c = e - s
        hrows = h[s:e] if idx is None else h.index_select(0, idx[s:e])
        hc = hrows.to(acc)
        yc = y[s:e]
        t = tbuf[:c] if tbuf is not None else None
        z = logits(hc, buf[:c], t)
        loss[s:e], lse_c = _softmax_stats(z, yc, hc, fresh, eps, zl, tiny)
        lse[s:e] = lse_c
        if not want:
            continue
        assert g is not None
        # dloss/dz = r p - a onehot(y) - bb, with r = g (1 + 2 zl lse), a = g (1 - eps), bb = g eps / V
        gc = g[s:e]
        dhc = None
        if dh is not None:
            dhc = dh[s:e] if idx is None else torch.empty(c, d_model, dtype=acc, device=dev)
        if dense:
            keep = _filter_blocks(z, yc, cfg.filter_eps) if cfg.filter_eps is not None else None
            _dense_logit_grad(z, yc, gc, lse_c, eps, zl, t)
            _accumulate(z, hc, w, dhc, dw, db, keep, h.dtype)
        else:
            # without z-loss r = g is a row scale: fold it into the (c, D) operands, not the (c, V) block
            z.scatter_add_(1, yc[:, None], onehot[:c])  # z = p - (1 - eps) onehot(y)
            if dhc is not None and lowbuf is not None and w_low is not None:
                dhc.copy_(torch.mm(lowbuf[:c].copy_(z), w_low))  # dz rounds to bf16 either way
            with _matmul_mode(h.dtype):
                if dhc is not None and lowbuf is None:
                    torch.mm(z, w, out=dhc)
                if dw is not None:
                    dw.addmm_(z.t(), hc * gc[:, None])
            if dhc is not None:
                dhc.mul_(gc[:, None])
            if db is not None:
                db.addmv_(z.t(), gc)
            if eps:
                assert hsum is not None and wsum is not None
                bb = gc * (eps / v)
                if dhc is not None:
                    dhc.sub_(bb[:, None] * wsum)
                hsum.add_(bb @ hc)
                if db is not None:
                    db.sub_(bb.sum())
        if dhc is not None and idx is not None:
            assert dh is not None
            dh.index_copy_(0, idx[s:e], dhc)
    if hsum is not None and dw is not None:
        dw.sub_(hsum)
    return loss, lse, dh, dw, db


def _ce_pass_native(h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, cfg: _CEConfig, g: Tensor | None,
                    need_h: bool, need_w: bool, idx: Tensor | None = None,
                    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """``_ce_pass`` for ``logits_dtype=torch.bfloat16`` (``w``, ``b`` and ``h`` stay bf16).

    Each chunk's logits live in a bf16 (rows x V) buffer, so a chunk holds twice the rows of the exact
    mode's fp32 buffer for the same bytes (longer matmuls: the weight gradient's inner dimension is the
    row count). The buffer is processed in cache-sized fp32 sub-blocks (upcast, softmax statistics,
    logit gradient), which write the bf16 logit gradient back in place for the two backward matmuls.
    """
    n = y.shape[0]
    d_model = h.shape[1]
    v = w.shape[0]
    acc = torch.float32
    dev = h.device
    eps, zl, cap = cfg.label_smoothing, cfg.z_loss, cfg.softcap
    rows = _rows_per_chunk(n, v, d_model, cfg.chunk_size, 1, elem_bytes=2)
    sub = max(1, min(rows, _SUB_BYTES // (4 * v)))
    loss = torch.empty(n, dtype=acc, device=dev)
    lse = torch.empty(n, dtype=acc, device=dev)
    want = g is not None
    dense = cap is not None or cfg.filter_eps is not None or zl != 0.0
    tiny = torch.finfo(acc).tiny * 1e8
    onehot = torch.full((sub, 1), -(1.0 - eps), dtype=acc, device=dev)
    dh = None
    if want and need_h:
        dh = (torch.empty if idx is None else torch.zeros)(h.shape, dtype=acc, device=dev)
    # dW: the first chunk's product is written (not added), so no zero fill unless blocks are filtered
    dw_fresh = cfg.filter_eps is None and n > 0
    dw = None
    if want and need_w:
        dw = (torch.empty if dw_fresh else torch.zeros)(v, d_model, dtype=acc, device=dev)
    db = torch.zeros(v, dtype=acc, device=dev) if want and b is not None else None
    smooth = want and eps != 0.0 and not dense
    hsum = torch.zeros(d_model, dtype=acc, device=dev) if smooth else None
    wsum = w.sum(0, dtype=acc) if smooth else None
    low = torch.empty(rows, v, dtype=w.dtype, device=dev)
    buf = torch.empty(sub, v, dtype=acc, device=dev)
    tbuf = torch.empty(sub, v, dtype=acc, device=dev) if cap is not None else None
    dw_low = torch.empty(v, d_model, dtype=w.dtype, device=dev) if dw is not None else None
    tmp = torch.empty(min(v, _ADD_BLOCK), d_model, dtype=acc, device=dev) if dw is not None else None

    def capped(z: Tensor, t: Tensor | None) -> None:
        if cap is not None:
            assert t is not None
            _softcap(z, cap, t)

    for s in range(0, n, rows):
        e = min(n, s + rows)
        c = e - s
        hc = h[s:e] if idx is None else h.index_select(0, idx[s:e])
        zlow = _native_logits(hc, w, b, low[:c])  # bf16 logits of the whole chunk
        keep: Tensor | None = None
        for a in range(0, c, sub):
            a2 = min(c, a + sub)
            k = a2 - a
            z = buf[:k].copy_(zlow[a:a2])
            t = tbuf[:k] if tbuf is not None else None
            capped(z, t)
            yc = y[s + a:s + a2]
            zy = z.gather(1, yc[:, None]).squeeze(1)
            zmean = z.sum(1) / v if eps else None
            _softmax_out(z, 1, False, out=z)
            py = z.gather(1, yc[:, None]).squeeze(1)
            lse_c = zy - py.log()
            bad = py < tiny
            if bool(bad.any()):  # p_y underflowed: lse from the chunk's own bf16 logits, still in zlow
                lse_c[bad] = torch.logsumexp(_upcast_logits(zlow[a:a2][bad], cap), 1)
            loss[s + a:s + a2] = _row_loss(lse_c, zy, zmean, eps, zl)
            lse[s + a:s + a2] = lse_c
            if not want:
                continue
            assert g is not None
            gc = g[s + a:s + a2]
            if dense:  # z <- r p - a onehot(y) - bb (row weights folded in), see _ce_pass
                if cfg.filter_eps is not None:
                    kb = _filter_blocks(z, yc, cfg.filter_eps)
                    keep = kb if keep is None else keep | kb
                _dense_logit_grad(z, yc, gc, lse_c, eps, zl, t)
                if db is not None:
                    db.add_(z.sum(0))
            else:  # z <- p - (1 - eps) onehot(y); the row weights g go into the (c, D) operands
                z.scatter_add_(1, yc[:, None], onehot[:k])
                if db is not None:
                    db.addmv_(z.t(), gc)
                if smooth:
                    assert hsum is not None
                    bb = gc * (eps / v)
                    hsum.add_(bb @ hc[a:a2].float())
                    if db is not None:
                        db.sub_(bb.sum())
            zlow[a:a2].copy_(z)  # the logit gradient, rounded to bf16 once
        if not want:
            continue
        assert g is not None
        gch = g[s:e]
        row_scale = None if dense else gch
        if dh is not None:
            if keep is None:
                dhc = torch.mm(zlow, w).float()
            else:
                dhc = torch.zeros(c, d_model, dtype=acc, device=dev)
                for b0, b1 in _kept_spans(keep, v):
                    dhc.add_(torch.mm(zlow[:, b0:b1], w[b0:b1]))
            if row_scale is not None:
                dhc.mul_(row_scale[:, None])
            if smooth:
                assert wsum is not None
                dhc.sub_((gch * (eps / v))[:, None] * wsum)
            if idx is None:
                dh[s:e] = dhc
            else:
                dh.index_copy_(0, idx[s:e], dhc)
        if dw is not None:
            assert dw_low is not None and tmp is not None
            alpha, hs = 1.0, hc
            if row_scale is not None:
                if bool((row_scale == row_scale[0]).all()):  # mean / sum: one scale, applied in fp32
                    alpha = float(row_scale[0])
                else:
                    hs = (hc.float() * row_scale[:, None]).to(hc.dtype)
            if keep is None:
                torch.mm(zlow.t(), hs, out=dw_low)
                spans = [(b0, min(v, b0 + _ADD_BLOCK)) for b0 in range(0, v, _ADD_BLOCK)]
            else:
                spans = _kept_spans(keep, v)
                for b0, b1 in spans:
                    torch.mm(zlow[:, b0:b1].t(), hs, out=dw_low[b0:b1])
            for b0, b1 in spans:  # a mixed-dtype add_ is ~3x slower than copy + add via a small buffer
                part = tmp[: b1 - b0].copy_(dw_low[b0:b1])
                if dw_fresh and s == 0:
                    torch.mul(part, alpha, out=dw[b0:b1])
                else:
                    dw[b0:b1].add_(part, alpha=alpha)
    if hsum is not None and dw is not None:
        dw.sub_(hsum)
    return loss, lse, dh, dw, db


def _whole_fits(n: int, v: int, d_model: int, cfg: _CEConfig) -> bool:
    """True when ``_ce_whole`` takes the pass: the default (or given) chunking would form every row's
    fp32 logits in one chunk anyway (a small vocabulary, or few tokens), no gradient filter; either
    logits mode (exact, or ``cfg.native``: bf16 logits upcast into the same fp32 buffer)."""
    if cfg.filter_eps is not None:
        return False
    return _rows_per_chunk(n, v, d_model, cfg.chunk_size, 2 if cfg.softcap is not None else 1) >= n


def _h_block_rows(n: int, v: int, d_model: int) -> int:
    """``_ce_whole``, bf16/fp16 inputs: rows per block of the fp32 copy of ``h`` (balanced blocks).

    A block gets up to the size of the (rows x V) bf16 logit-gradient buffer (or ``_WHOLE_H_BYTES``,
    with at least ``_WHOLE_MIN_ROWS`` rows), so it never raises the pass's peak above the fp32 logits
    plus that buffer; on a byte vocabulary that is two blocks of 4096 rows for 8192 tokens."""
    budget = max(_WHOLE_H_BYTES, 2 * n * v)
    rows = max(_WHOLE_MIN_ROWS, budget // (4 * max(1, d_model)))
    return n if n <= rows else -(-n // -(-n // rows))


def _ce_whole(h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, cfg: _CEConfig, g: Tensor | float | None,
              need_h: bool, need_w: bool, idx: Tensor | None = None,
              ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """``_ce_pass`` when all rows' logits fit one chunk (``_whole_fits``): the logits of all rows in one
    buffer, one pass of each statistic and of the logit gradient over it, then one matmul each for
    ``dh`` and ``dW``. With ``cfg.native`` (``logits_dtype=torch.bfloat16``) the buffer holds the fp32
    copy of the bf16 logits of one native matmul (``_native_logits``), kept until the logit gradient
    overwrites them, and rows whose ``p_y`` underflows get their lse from those bf16 logits, as in
    ``_ce_pass_native``; all else as below.

    ``w``/``b`` are in the input dtype; ``g`` is a row weight per row, or one float for all rows
    (``mean``/``sum``: the ``alpha`` of the two matmuls, not a (rows x V) pass). The logits are formed
    in fp32 (exactly as ``_ce_pass`` does), from fp32 copies of ``h`` made in row blocks
    (``_h_block_rows``; bf16/fp16 inputs, none for fp32/fp64). Each elementwise step runs once
    over the whole (rows x V) buffer: on a byte vocabulary the buffer is a few MB, and one big pass is
    cheaper than many cache-sized ones (each op of a multi-threaded pass has a fixed cost). For bf16
    inputs the logit gradient is then rounded to a bf16 (rows x V) buffer (the rounding ``_ce_pass``
    applies before its backward matmuls) and the fp32 logits are freed, so ``dh = dz W`` and
    ``dW = dz^T h`` are native bf16 matmuls with fp32 accumulation and one rounding of the output -- no
    fp32 copy of ``h`` or ``W`` for them, and no fp32 ``dW`` to round afterwards. Other dtypes keep the
    fp32 (float64) logit gradient as the operand. Returns ``dh``/``dW``/``db`` in the input dtype for
    bf16, else in the accumulation dtype.
    """
    n = y.shape[0]
    v = w.shape[0]
    d_model = h.shape[1]
    acc = _acc_dtype(h.dtype)
    dev = h.device
    low = h.dtype == torch.bfloat16
    eps, zl, cap = cfg.label_smoothing, cfg.z_loss, cfg.softcap
    native = cfg.native  # bf16 inputs only (checked at the boundary)
    wa = w if native else w.to(acc)
    ba = None if b is None else (b if native else b.to(acc))
    hv = h if idx is None else h.index_select(0, idx)  # the scored rows, input dtype
    zlow = None
    if native:  # one native bf16 matmul (logits rounded to bf16), upcast once into the fp32 buffer
        zlow = _native_logits(hv, w, b)
        z = zlow.float()  # zlow is kept: it takes the bf16 logit gradient below (no new buffer)
    else:
        z = torch.empty(n, v, dtype=acc, device=dev)
        blk = n if h.dtype == acc else _h_block_rows(n, v, d_model)
        with _matmul_mode(h.dtype):
            for s in range(0, n, max(1, blk)):
                e = min(n, s + blk)
                hc = hv[s:e].to(acc)
                if ba is None:
                    torch.mm(hc, wa.t(), out=z[s:e])
                else:
                    torch.addmm(ba, hc, wa.t(), out=z[s:e])
                del hc  # before the next block's copy is made
    t = None
    if cap is not None:
        t = torch.empty_like(z)
        _softcap(z, cap, t)

    def fresh(hb: Tensor) -> Tensor:  # logits of some rows of hv (rows whose p_y underflowed)
        if native:  # hb: those rows of zlow, the pass's own bf16 logits (still there)
            return _upcast_logits(hb, cap)
        hb = hb.to(acc)
        tb = None if cap is None else hb.new_empty(hb.shape[0], v)
        return _logits(hb, wa, ba, hb.new_empty(hb.shape[0], v), cap, tb, 1.0, h.dtype)

    tiny = torch.finfo(acc).tiny * 1e8
    loss, lse = _softmax_stats(z, y, hv if zlow is None else zlow, fresh, eps, zl, tiny)
    if g is None:
        return loss, lse, None, None, None
    dense = cap is not None or zl != 0.0 or eps != 0.0  # the general form r p - a onehot(y) - bb
    scale = 1.0
    if dense:
        gv = g if isinstance(g, Tensor) else z.new_full((n,), g)
        _dense_logit_grad(z, y, gv, lse, eps, zl, t)
    else:
        z.scatter_add_(1, y[:, None], z.new_full((n, 1), -1.0))  # z = p - onehot(y)
        if isinstance(g, Tensor):
            z.mul_(g[:, None])
        else:
            scale = g
    del t
    db = None
    if b is not None:
        db = z.sum(0)
        if scale != 1.0:
            db.mul_(scale)
    if zlow is not None:  # native: the bf16 logit gradient into the bf16 logits' buffer
        dz = zlow.copy_(z)
    else:
        dz = z.to(h.dtype) if low else z
    del z  # bf16: the fp32 logits go before the matmuls' outputs are made
    dh = _scaled_mm(dz, w if low else wa, scale) if need_h else None
    if dh is not None and idx is not None:
        dh = dh.new_zeros(h.shape).index_copy_(0, idx, dh)
    dw = _scaled_mm(dz.t(), hv if low else hv.to(acc), scale) if need_w else None
    return loss, lse, dh, dw, db


def _native_logits(h: Tensor, w: Tensor, b: Tensor | None, out: Tensor | None = None) -> Tensor:
    """The bf16 logits ``bf16(h w^T + b)`` of one native bf16 matmul (fp32 accumulation inside, output
    rounded to bf16; into ``out`` when given): ``logits_dtype=torch.bfloat16``'s logits, as autocast's
    ``F.linear`` forms them."""
    return torch.mm(h, w.t(), out=out) if b is None else torch.addmm(b, h, w.t(), out=out)


def _upcast_logits(zlow: Tensor, cap: float | None) -> Tensor:
    """Rows of a pass's own bf16 logits in fp32, soft-capped like the pass's (the logits of rows
    whose ``p_y`` underflowed, for their lse)."""
    z = zlow.float()
    if cap is not None:
        _softcap(z, cap, torch.empty_like(z))
    return z


def _scaled_mm(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """alpha (a @ b) in a's dtype, alpha applied inside the matmul (before its output is rounded);
    operands of one dtype, so bf16 ones take a native bf16 matmul (fp32 accumulation)."""
    out = a.new_empty(a.shape[0], b.shape[1])
    if a.shape[1] == 0:  # nothing to sum (every row ignored)
        return out.zero_()
    return torch.addmm(out, a, b, beta=0.0, alpha=alpha, out=out)


def _run_ce(h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, valid: Tensor | None, cfg: _CEConfig,
            g: Tensor | float | None, need_h: bool, need_w: bool
            ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """One CE pass (forward, or recomputed in backward) over the rows ``valid`` selects (None = all):
    the bf16-logits pass when ``cfg.native``, else the exact pass on accumulation-dtype operands (a
    bf16 weight also goes along as is, for the native dh matmul). ``g``: the row weights, or one float
    shared by all rows (``mean``/``sum``)."""
    idx = None if valid is None else valid.nonzero().squeeze(1)
    yv = y if valid is None else y[valid]
    if _whole_fits(yv.shape[0], w.shape[0], h.shape[1], cfg):
        return _ce_whole(h, w, b, yv, cfg, g, need_h, need_w, idx)
    acc = _acc_dtype(h.dtype)
    if g is not None and not isinstance(g, Tensor):
        g = torch.full((yv.shape[0],), g, dtype=acc, device=h.device)
    if cfg.native:
        return _ce_pass_native(h, w, b, yv, cfg, g, need_h, need_w, idx)
    return _ce_pass(h, w.to(acc), None if b is None else b.to(acc), yv, cfg, g, need_h, need_w,
                    w if w.dtype == torch.bfloat16 else None, idx)


def _scatter_rows(x: Tensor, valid: Tensor | None, n: int) -> Tensor:
    if valid is None:
        return x
    out = x.new_zeros((n, *x.shape[1:]))
    out[valid] = x
    return out


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, cfg: _CEConfig,
                ignore_index: int, reduction: str, grad_mode: bool) -> tuple[Tensor, Tensor]:
        n = h.shape[0]
        mask = y != ignore_index
        all_valid = bool(mask.all())
        valid = None if all_valid else mask
        count = n if valid is None else int(valid.sum())
        # needs_input_grad is True even under torch.no_grad(): the caller's grad mode decides
        need = grad_mode and any(ctx.needs_input_grad[:3])
        precompute = need and reduction != "none"
        g = None
        if precompute:  # one row weight for all rows
            g = 1.0 / count if reduction == "mean" and count else 1.0
        need_h, need_w = need and bool(ctx.needs_input_grad[0]), need and bool(ctx.needs_input_grad[1])
        loss_v, lse_v, dh, dw, db = _run_ce(h, w, b, y, valid, cfg, g, need_h, need_w)
        loss_rows = _scatter_rows(loss_v, valid, n)
        lse = _scatter_rows(lse_v, valid, n)
        if reduction == "none":
            out = loss_rows
        else:
            out = loss_v.sum()
            if reduction == "mean" and count:
                out = out / count
        ctx.reduction = reduction
        ctx.cfg = cfg
        ctx.precompute = precompute
        ctx.has_bias = b is not None
        ctx.mark_non_differentiable(lse)
        if precompute:
            ctx.save_for_backward(None if dh is None else dh.to(h.dtype),
                                  None if dw is None else dw.to(w.dtype),
                                  None if db is None else db.to(w.dtype))
        elif need:
            ctx.save_for_backward(h, w, b, y, mask)
        return out, lse

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, _grad_lse: Tensor | None) -> tuple[Tensor | None, ...]:
        nones = (None, None, None, None, None)
        if ctx.precompute:
            dh, dw, db = ctx.saved_tensors
            if not bool(grad_out == 1):
                dh, dw, db = (None if x is None else (x.to(grad_out.dtype) * grad_out).to(x.dtype)
                              for x in (dh, dw, db))
            return dh, dw, db, *nones
        h, w, b, y, mask = ctx.saved_tensors
        valid = None if bool(mask.all()) else mask
        g = grad_out.to(_acc_dtype(h.dtype))
        g = g if valid is None else g[valid]
        _, _, dh, dw, db = _run_ce(h, w, b, y, valid, ctx.cfg, g, bool(ctx.needs_input_grad[0]),
                                   bool(ctx.needs_input_grad[1]))
        return (None if dh is None else dh.to(h.dtype), None if dw is None else dw.to(w.dtype),
                None if db is None else db.to(w.dtype), *nones)


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    shift: bool = False,
    return_lse: bool = False,
    grad_filter: bool | float = False,
    chunk_size: int | None = None,
    logits_dtype: torch.dtype | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Cross-entropy of ``hidden @ weight.T + bias`` against ``target`` without the N x V logits.

    Per token with logits :math:`z = \mathrm{softcap}(h W^\top + b)`, :math:`\ell = \mathrm{lse}(z)`:

    .. math::
        L = (1-\varepsilon)(\ell - z_y) + \varepsilon(\ell - \tfrac1V\textstyle\sum_j z_j) + s\,\ell^2

    (label smoothing :math:`\varepsilon` as in ``torch.nn.functional.cross_entropy``, Szegedy et al.
    2016; z-loss :math:`s` from PaLM, Chowdhery et al. 2022; ``softcap(z) = c tanh(z / c)`` from Gemma 2).
    Units: nats. Equal to ``F.cross_entropy(F.linear(hidden, weight, bias), target, ...)`` up to
    rounding, but memory stays O(chunk x V) (Cut Cross-Entropy, Wijmans et al. 2025; Liger-Kernel).

    Args:
        hidden: (..., D) hidden states (float16/bfloat16/float32/float64).
        weight: (V, D) classifier (e.g. a tied embedding matrix); same dtype as ``hidden``.
        target: (...) class indices; ``ignore_index`` entries contribute 0 loss and 0 gradient.
        bias: optional (V,) bias.
        reduction: ``"mean"`` (over non-ignored tokens; 0 when every token is ignored), ``"sum"`` or
            ``"none"`` (shape of ``target``).
        label_smoothing: epsilon in [0, 1].
        z_loss: coefficient of ``lse^2`` (>= 0).
        softcap: logit soft-capping constant ``c > 0`` or None.
        shift: causal-LM convenience; position t is scored against ``target[..., t + 1]`` and the last
            position is ignored (output shapes are unchanged).
        return_lse: also return the per-token ``lse`` (float32; 0 at ignored positions; not
            differentiable -- use ``z_loss`` for gradients through lse).
        grad_filter: False (exact, default); True or a float eps: skip vocabulary blocks whose
            softmax is below eps (default ``finfo(dtype).eps / 32``) in every row of a chunk (CCE).
        chunk_size: tokens per chunk (default: logits buffers of max(64 MB, min(V D * 2 bytes, 512 MB)),
            i.e. up to half the size of the fp32 weight gradient; fp32 buffers in the exact mode, bf16
            buffers -- twice the rows -- with ``logits_dtype=torch.bfloat16``). When all tokens fit
            one chunk (e.g. a 257-byte vocabulary), one pass forms every token's logit gradient and
            runs each backward matmul once (see the module docstring); never more memory than that.
        logits_dtype: precision of the three matmuls. ``None`` (default) or ``torch.float32``: exact
            mode -- logits in float32 (float64 for float64 inputs); for bfloat16 inputs the products of
            the bf16 values are exact and summed in fp32 (the logits are never rounded to bf16).
            ``torch.bfloat16`` (opt-in, bfloat16 inputs only): the fast mode of ``F.linear`` / Cut
            Cross-Entropy -- each chunk's logits come from a native bf16 matmul (fp32 accumulation
            inside the matmul, output *rounded to bf16*); they are upcast in cache-sized blocks and
            lse, softmax and the loss are computed in fp32. The logit gradient ``softmax - onehot`` is
            rounded to bf16 once for the two backward matmuls (bf16 outputs); ``dweight`` is summed
            over chunks in fp32 (each chunk's bf16 product is added in fp32). The loss is the CE of the
            rounded logits ``bf16(hidden @ weight.T + bias)`` computed in fp32: each logit carries a
            relative error up to 2^-9, so a token's loss is off by at most max|z| * 2^-8 nats (much
            less on average; the benchmark reports both modes against float64). About 1.25-1.3x
            faster than the exact mode on a CPU with AMX (native bf16 matmuls), and 1.28x on
            ByteGPT's head on a CPU with AVX-512 BF16 but no AMX (``benchmarks/training.py``).

    Returns:
        The loss (float32; float64 for float64 inputs), and the lse tensor if ``return_lse``.

    Example:
        >>> h, w = torch.randn(6, 4, dtype=torch.float64), torch.randn(11, 4, dtype=torch.float64)
        >>> y = torch.tensor([1, 0, 10, -100, 3, 3])
        >>> ref = torch.nn.functional.cross_entropy(h @ w.T, y)
        >>> bool(torch.allclose(linear_cross_entropy(h, w, y), ref))
        True
    """
    _check_head(hidden, weight, bias)
    _check_target(target, hidden.shape[:-1], weight.shape[0], ignore_index)
    check_reduction(reduction)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    zl = check_real(z_loss, "z_loss", 0.0, finite=True)
    cap = _check_options(softcap, chunk_size)
    check_bool(shift, "shift")
    if isinstance(grad_filter, bool):
        filter_eps = torch.finfo(hidden.dtype).eps / 32 if grad_filter else None
    else:
        filter_eps = check_positive(grad_filter, "grad_filter (a bool or a positive float)")
    check_choice(logits_dtype, (None, torch.float32, torch.bfloat16), "logits_dtype")
    native = logits_dtype == torch.bfloat16
    if native and hidden.dtype != torch.bfloat16:
        raise ValueError(f"hidden must be bfloat16 with logits_dtype=torch.bfloat16, got {hidden.dtype}")
    if logits_dtype == torch.float32 and hidden.dtype == torch.float64:
        raise ValueError("logits_dtype must be None for float64 hidden (torch.float32 would round it), "
                         "got torch.float32")
    if shift:
        if target.dim() < 1:
            raise ValueError("target must have a sequence axis with shift=True, got a 0-d target")
        pad = torch.full_like(target[..., :1], ignore_index)
        target = torch.cat([target[..., 1:], pad], dim=-1)
    lead = target.shape
    cfg = _CEConfig(eps, zl, cap, filter_eps, chunk_size, native)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    out, lse = _LinearCE.apply(h2, weight, bias, target.reshape(-1), cfg, ignore_index, reduction,
                               torch.is_grad_enabled())
    if reduction == "none":
        out = out.view(lead)
    return (out, lse.view(lead)) if return_lse else out


# --------------------------------------------------------------------------------------------------
# token statistics: the fields of measures.token_stats, from the head
# --------------------------------------------------------------------------------------------------


def _stats_pass(h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, softcap: float | None,
                temperature: float, chunk_size: int | None,
                grads: tuple[Tensor | None, ...] | None = None, var: Tensor | None = None,
                ) -> tuple[Tensor | None, ...]:
    """Forward (``grads`` None): (lse, entropy, varentropy, surprisal), the fields of
    ``measures.TokenStats``. Backward, with ``grads`` = their upstream gradients (None: unused) and the
    forward's ``var``: (dh, dW, db or None)."""
    n, d_model = h.shape
    v = w.shape[0]
    acc = w.dtype
    backward = grads is not None
    g_lse, g_ent, g_var, g_sur = grads if grads is not None else (None,) * 4
    rows = _rows_per_chunk(n, v, d_model, chunk_size, (3 if softcap is not None else 2) + (g_var is not None))
    buf = torch.empty(rows, v, dtype=acc, device=h.device)
    pbuf = torch.empty(rows, v, dtype=acc, device=h.device)
    tbuf = torch.empty(rows, v, dtype=acc, device=h.device) if softcap is not None else None
    vbuf = torch.empty(rows, v, dtype=acc, device=h.device) if g_var is not None else None
    zero = torch.zeros(n, dtype=acc, device=h.device)
    if backward:
        dh = torch.empty(n, d_model, dtype=acc, device=h.device)
        dw = torch.zeros(v, d_model, dtype=acc, device=h.device)
        db = torch.zeros(v, dtype=acc, device=h.device) if b is not None else None
        # d/dz_j: lse -> p_j; H -> -p_j d_j; V -> p_j (d_j^2 + 2 d_j - V); s -> p_j - [j = y];
        # with d_j = log p_j + H (as measures.token_stats' backward)
        const = sum((g for g in (g_lse, g_sur) if g is not None), zero)
        if g_var is not None:
            assert var is not None
            const = const - g_var * var
        lin = (zero if g_ent is None else -g_ent) + (0.0 if g_var is None else 2.0 * g_var)
    else:
        out = [torch.empty(n, dtype=acc, device=h.device) for _ in range(4)]
    for s in range(0, n, rows):
        e = min(n, s + rows)
        c = e - s
        hc = h[s:e].to(acc)
        yc = y[s:e]
        t = tbuf[:c] if tbuf is not None else None
        z = _logits(hc, w, b, buf[:c], softcap, t, temperature, h.dtype)
        m, am = z.max(1)
        z.sub_(m[:, None])  # shifted logits: entropy without cancellation against a large lse
        p = pbuf[:c]
        _softmax_out(z, 1, False, out=p)
        lse0 = -p.gather(1, am[:, None]).squeeze(1).log()  # lse - m, from p at the argmax (>= 1/V)
        h_c = lse0 - _rowdot(p, z)  # H = lse - sum p z
        if not backward:
            out[0][s:e] = lse0 + m
            out[1][s:e] = h_c
            out[3][s:e] = lse0 - z.gather(1, yc[:, None]).squeeze(1)
            z.sub_((lse0 - h_c)[:, None]).square_()  # d^2, d = log p + H: centred, no cancellation
            out[2][s:e] = _rowdot(p, z)
            continue
        d = z.sub_((lse0 - h_c)[:, None])
        if g_var is not None:
            assert vbuf is not None
            dz = torch.mul(d, g_var[s:e, None], out=vbuf[:c]).add_(lin[s:e, None]).mul_(d)
        else:
            dz = d.mul_(lin[s:e, None])
        dz.add_(const[s:e, None]).mul_(p)
        if g_sur is not None:
            dz.scatter_add_(1, yc[:, None], -g_sur[s:e, None])
        if temperature != 1.0:
            dz.div_(temperature)
        if t is not None:
            _softcap_chain(dz, t)
        _accumulate(dz, hc, w, dh[s:e], dw, db, None, h.dtype)
    if backward:
        return dh, dw, db
    return tuple(out)


class _TokenStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, softcap: float | None,
                temperature: float, chunk_size: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        acc = _acc_dtype(h.dtype)
        wa = w.to(acc)
        ba = b.to(acc) if b is not None else None
        lse, ent, var, sur = _stats_pass(h, wa, ba, y, softcap, temperature, chunk_size)
        assert lse is not None and ent is not None and var is not None and sur is not None
        ctx.args = (softcap, temperature, chunk_size)
        ctx.save_for_backward(h, w, b, y, var)
        ctx.set_materialize_grads(False)
        return lse, ent, var, sur

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        h, w, b, y, var = ctx.saved_tensors
        acc = _acc_dtype(h.dtype)
        gs = tuple(None if g is None else g.to(acc) for g in grads)
        if all(g is None for g in gs):
            return (None,) * 7
        wa = w.to(acc)
        ba = b.to(acc) if b is not None else None
        softcap, temperature, chunk_size = ctx.args
        dh, dw, db = _stats_pass(h, wa, ba, y, softcap, temperature, chunk_size, gs, var)
        assert dh is not None and dw is not None
        return (dh.to(h.dtype), dw.to(w.dtype), None if db is None else db.to(w.dtype),
                None, None, None, None)


def linear_token_stats(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> measures.TokenStats:
    r"""Per-token ``lse``, ``entropy``, ``varentropy`` and ``surprisal`` of ``softcap(h W^T + b) / T``.

    The fields of :func:`entropykit.measures.token_stats`, with the same names and meaning, computed
    from the head without the N x V logits: with :math:`z = \mathrm{softcap}(hW^\top + b)/T`,
    :math:`\ell = \mathrm{lse}(z)`, :math:`p = e^{z-\ell}`: ``lse`` = l (logit units),
    ``entropy`` H = l - sum_j p_j z_j, ``varentropy`` sum_j p_j (log p_j + H)^2 and ``surprisal``
    s = -log p_y = l - z_y (nats). ``-surprisal`` is the log-probability verl's fused kernel returns
    for RL (policy loss from log-probs plus an entropy bonus). Every field is differentiable with
    respect to ``hidden``, ``weight`` and ``bias`` (dl/dz = p, ds/dz = p - onehot(y),
    dH/dz = -p (log p + H), dV/dz = p (d^2 + 2 d - V) with d = log p + H); the backward recomputes
    the logits chunk by chunk, so memory stays O(chunk x V). ``target`` has no ``ignore_index`` here:
    every position is scored.

    Args:
        hidden: (..., D); weight: (V, D); target: (...) indices in [0, V).
        temperature: T > 0 (applied after the soft cap, as samplers do).
        softcap: logit soft-capping constant or None.

    Returns:
        ``measures.TokenStats`` of float32 (float64 for float64 inputs) tensors shaped like ``target``
        (also readable as ``stats["entropy"]``).

    Example:
        >>> h, w = torch.randn(5, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
        >>> y = torch.tensor([0, 6, 2, 2, 1])
        >>> s, ref = linear_token_stats(h, w, y), measures.token_stats(h @ w.T, y)
        >>> all(bool(torch.allclose(s[k], ref[k])) for k in ("lse", "entropy", "varentropy", "surprisal"))
        True
    """
    _check_head(hidden, weight, bias)
    _check_target(target, hidden.shape[:-1], weight.shape[0], None)
    temp = check_positive(temperature, "temperature")
    cap = _check_options(softcap, chunk_size)
    lead = target.shape
    h2 = hidden.reshape(-1, hidden.shape[-1])
    lse, ent, var, sur = _TokenStats.apply(h2, weight, bias, target.reshape(-1), cap, temp, chunk_size)
    return measures.TokenStats(lse=lse.view(lead), entropy=ent.view(lead), varentropy=var.view(lead),
                               surprisal=sur.view(lead))


# --------------------------------------------------------------------------------------------------
# distillation between two heads
# --------------------------------------------------------------------------------------------------


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """sum_j a_ij b_ij without a (c, V) temporary."""
    return torch.bmm(a[:, None, :], b[:, :, None]).view(a.shape[0])


#: (measures function name, reversed) -> the fused kernel below; the names are measures.DIVERGENCES'
_KERNELS = {
    ("kl_div", False): "kl_div",  # KL(T || S)
    ("kl_div", True): "reverse_kl_div",  # KL(S || T)
    ("js_div", False): "js_div",
    ("js_div", True): "js_div",  # with 1 - beta
    ("skew_kl", False): "skew_kl",  # KL(T || beta T + (1-beta) S)
    ("skew_kl", True): "reverse_skew_kl",  # KL(S || beta S + (1-beta) T)
    ("tv_distance", False): "tv_distance",
    ("tv_distance", True): "tv_distance",  # symmetric
}


def _to_mix_(r: Tensor, log_w: float, log_1mw: float) -> Tensor:
    """In place, r = log b - log a  ->  log a - log m with m = w a + (1 - w) b, i.e.
    -logaddexp(log w, log(1 - w) + r): from the difference, as ``measures`` forms it (no digits of a
    large |log a| are lost to adding log w first, which biases float32 sums)."""
    r.add_(log_1mw)
    torch.logaddexp(r, r.new_full((), log_w), out=r)
    return r.neg_()


def _divergence_chunk(ls: Tensor, lt: Tensor, ps: Tensor, pt: Tensor, kind: str,
                      beta: float) -> tuple[Tensor, Tensor]:
    """Per-row divergence and its gradient w.r.t. the (temperature-scaled) student logits.

    The fused (loss, gradient) forms of the ``entropykit.measures`` definitions (tests check them
    against those). ``ls``/``lt`` are student/teacher log-probs, ``ps``/``pt`` probs; all four buffers
    may be overwritten. For a loss D(p_S) the logit gradient is p_S (g - <p_S, g>), g = dD/dp_S.
    """
    lb, l1b = _log(beta), (math.log1p(-beta) if beta < 1.0 else -math.inf)  # log beta, log(1 - beta)
    if kind == "kl_div":  # KL(T || S)
        loss = _rowdot(pt, lt.sub_(ls))
        return loss, ps.sub_(pt)
    if kind == "reverse_kl_div":  # KL(S || T)
        diff = ls.sub_(lt)
        loss = _rowdot(ps, diff)
        return loss, diff.sub_(loss[:, None]).mul_(ps)
    if kind == "js_div":  # beta KL(T||M) + (1-beta) KL(S||M), M = beta T + (1-beta) S
        r = lt.sub_(ls)  # log T - log S
        ds = _to_mix_(ls.copy_(r), l1b, lb)  # log S - log M
        dt = _to_mix_(r.neg_(), lb, l1b)  # log T - log M
        kl_s = _rowdot(ps, ds)
        loss = beta * _rowdot(pt, dt) + (1.0 - beta) * kl_s
        return loss, ds.sub_(kl_s[:, None]).mul_(ps).mul_(1.0 - beta)
    if kind == "skew_kl":  # KL(T || beta T + (1-beta) S)
        dt = _to_mix_(ls.sub_(lt), lb, l1b)  # log T - log M
        loss = _rowdot(pt, dt)
        gsc = dt.exp_().mul_(-(1.0 - beta))  # dD/dp_S = -(1-beta) p_T / M
    elif kind == "reverse_skew_kl":  # KL(S || beta S + (1-beta) T)
        diff = _to_mix_(lt.sub_(ls), lb, l1b)  # log S - log M
        loss = _rowdot(ps, diff)
        ratio = diff.exp().mul_(beta)
        gsc = diff.add_(1.0).sub_(ratio)  # dD/dp_S = log(S/M) + 1 - beta S/M
    else:  # tv_distance: 1/2 sum |p_S - p_T|
        diff = torch.sub(ps, pt)
        loss = 0.5 * diff.abs().sum(1)
        gsc = diff.sign_().mul_(0.5)
    inner = _rowdot(ps, gsc)
    return loss, gsc.sub_(inner[:, None]).mul_(ps)


class _LinearDistill(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hs: Tensor, ws: Tensor, ht: Tensor, wt: Tensor, kind: str, beta: float,
                temperature: float, chunk_size: int | None, reduction: str, grad_mode: bool) -> Tensor:
        n, d_model = hs.shape
        v = ws.shape[0]
        acc = _acc_dtype(hs.dtype)
        want = grad_mode and any(ctx.needs_input_grad[:2])
        wsa, wta = ws.to(acc), wt.to(acc)
        rows = _rows_per_chunk(n, v, d_model, chunk_size, 4)
        bufs = [torch.empty(rows, v, dtype=acc, device=hs.device) for _ in range(4)]
        total = torch.zeros((), dtype=acc, device=hs.device)
        scale = 1.0 / n if reduction == "mean" and n else 1.0
        dh = torch.empty(n, d_model, dtype=acc, device=hs.device) if want else None
        dw = torch.zeros(v, d_model, dtype=acc, device=hs.device) if want else None
        for s in range(0, n, rows):
            e = min(n, s + rows)
            c = e - s
            hc = hs[s:e].to(acc)
            ls = _logits(hc, wsa, None, bufs[0][:c], None, None, temperature, hs.dtype)
            lt = _logits(ht[s:e].to(acc), wta, None, bufs[1][:c], None, None, temperature, hs.dtype)
            _log_softmax_out(ls, 1, False, out=ls)
            _log_softmax_out(lt, 1, False, out=lt)
            ps = torch.exp(ls, out=bufs[2][:c])
            pt = torch.exp(lt, out=bufs[3][:c])
            loss, grad = _divergence_chunk(ls, lt, ps, pt, kind, beta)
            total += loss.sum()
            if want:
                assert dh is not None and dw is not None
                grad.mul_(scale / temperature)
                _accumulate(grad, hc, wsa, dh[s:e], dw, None, None, hs.dtype)
        ctx.want = want
        if want:
            assert dh is not None and dw is not None
            ctx.save_for_backward(dh.to(hs.dtype), dw.to(ws.dtype))
        return total * scale

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        rest = (None,) * 8
        if not ctx.want:
            return None, None, *rest
        dh, dw = ctx.saved_tensors
        if not bool(grad_out == 1):
            dh = (dh.to(grad_out.dtype) * grad_out).to(dh.dtype)
            dw = (dw.to(grad_out.dtype) * grad_out).to(dw.dtype)
        return dh, dw, *rest


def linear_distill(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    *,
    divergence: str = "kl_div",
    beta: float = 0.5,
    temperature: float = 1.0,
    target: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    r"""Token-level distillation loss between two linear heads, chunked (no N x V on either side).

    With :math:`p_S = \mathrm{softmax}(h_S W_S^\top / T)`, :math:`p_T = \mathrm{softmax}(h_T W_T^\top/T)`
    (nats, no :math:`T^2` factor, as TRL's GKD trainer and DistiLLM):

    ``divergence`` is one of ``entropykit.measures.DISTILL_DIVERGENCES`` -- the names and definitions
    of ``measures.DIVERGENCES`` applied as D(p_T, p_S), ``reverse_`` swapping the arguments -- as in
    ``entropykit.losses.distill_loss`` (the earlier names in brackets are accepted aliases):

    - ``"kl_div"`` (``"forward_kl"``): KL(p_T || p_S);
    - ``"reverse_kl_div"`` (``"reverse_kl"``): KL(p_S || p_T);
    - ``"js_div"`` (``"jsd"``): generalised JSD (TRL ``generalized_jsd_loss``), M = beta p_T + (1-beta) p_S,
      beta KL(p_T||M) + (1-beta) KL(p_S||M); beta=0 -> forward KL, beta=1 -> reverse KL;
    - ``"skew_kl"``: KL(p_T || beta p_T + (1-beta) p_S) (DistiLLM SKL, lambda = beta);
    - ``"reverse_skew_kl"`` (``"skew_rkl"``): KL(p_S || beta p_S + (1-beta) p_T) (DistiLLM SRKL);
    - ``"tv_distance"`` (``"tvd"``): total variation 1/2 sum |p_S - p_T|.

    NaN / inf follow the rule of ``entropykit.measures``: the logits come from the hidden states and
    weights, so those must be finite (``ValueError`` naming the argument otherwise); every row of
    finite logits is then a distribution.

    Gradients flow to ``student_hidden`` and ``student_weight`` only (the teacher is a constant).
    ``reduction="mean"`` averages over tokens whose ``target`` is not ``ignore_index`` (all tokens
    when ``target`` is None), 0 if none; ``"sum"`` sums.

    Example:
        >>> hs, ws = torch.randn(4, 3, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64)
        >>> ht, wt = torch.randn(4, 5, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64)
        >>> ref = torch.nn.functional.kl_div(torch.log_softmax(hs @ ws.T, -1),
        ...     torch.log_softmax(ht @ wt.T, -1), log_target=True, reduction="sum") / 4
        >>> bool(torch.allclose(linear_distill(hs, ws, ht, wt), ref))
        True
    """
    _check_head(student_hidden, student_weight, None, "student_hidden", "student_weight")
    _check_head(teacher_hidden, teacher_weight, None, "teacher_hidden", "teacher_weight")
    if teacher_weight.shape[0] != student_weight.shape[0]:
        raise ValueError(f"teacher_weight must have student_weight's {student_weight.shape[0]} rows (one "
                         f"vocabulary), got {teacher_weight.shape[0]}")
    if teacher_hidden.shape[:-1] != student_hidden.shape[:-1]:
        raise ValueError(f"teacher_hidden must have student_hidden's leading shape "
                         f"{tuple(student_hidden.shape[:-1])}, got {tuple(teacher_hidden.shape[:-1])}")
    if teacher_hidden.dtype != student_hidden.dtype:
        raise TypeError(f"teacher_hidden must have student_hidden's dtype {student_hidden.dtype}, "
                        f"got {teacher_hidden.dtype}")
    div, rev = measures.resolve_divergence(divergence)
    b = check_real(beta, "beta", 0.0, 1.0)
    temp = check_positive(temperature, "temperature")
    check_choice(reduction, ("mean", "sum"), "reduction")
    _check_options(None, chunk_size)
    # the divergence rule of entropykit.measures: NaN / inf logits raise. Logits of finite hidden
    # states and weights are finite (so no row is all -inf either): check the inputs, not V-wide rows.
    for x, name in ((student_hidden, "student_hidden"), (student_weight, "student_weight"),
                    (teacher_hidden, "teacher_hidden"), (teacher_weight, "teacher_weight")):
        check_finite(x.detach(), name)
    kind = _KERNELS[div.fn.__name__, rev]
    if kind == "js_div":
        if rev:  # js_div(S, T, beta) = js_div(T, S, 1 - beta)
            b = 1.0 - b
        if b in (0.0, 1.0):  # TRL: the end points are the plain KLs
            kind = "kl_div" if b == 0.0 else "reverse_kl_div"
    d_s, d_t = student_hidden.shape[-1], teacher_hidden.shape[-1]
    hs, ht = student_hidden.reshape(-1, d_s), teacher_hidden.reshape(-1, d_t)
    if target is not None:
        _check_target(target, student_hidden.shape[:-1], student_weight.shape[0], ignore_index)
        keep = target.reshape(-1) != ignore_index
        if not bool(keep.all()):
            hs, ht = hs[keep], ht[keep]
    return _LinearDistill.apply(hs, student_weight, ht.detach(), teacher_weight.detach(), kind,
                                b, temp, chunk_size, reduction,
                                torch.is_grad_enabled())
