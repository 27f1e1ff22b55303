"""Vocabulary-parallel fused losses: the LM head sharded over a ``torch.distributed`` process group.

Each rank holds the same hidden states ``h`` (N, D) and targets, and one contiguous slice of the
classifier, ``W[a:a+V_r]`` (V_r, D) (optional bias slice). Per chunk of tokens a rank forms only its
(chunk x V_r) logits -- the chunked fused path of :mod:`entropykit.ops.linear` -- and the softmax
statistics are assembled by all-reduces (Megatron-LM's ``vocab_parallel_cross_entropy``, Shoeybi et al.
2019): the row maximum (MAX), then in one SUM the shifted partition sum ``sum_j exp(z_j - m)``, the
target logit (from the rank that owns the target, 0 elsewhere) and the row sum of the logits (label
smoothing: the mean logit over the FULL vocabulary, not the local shard); ``linear_token_stats`` adds
``sum_j e^{z_j - m} (z_j - m)`` (entropy) and a third reduction for the varentropy. Unlike Megatron's
op: ``ignore_index`` rows are skipped, label smoothing and z-loss are exact, and no input is modified
in place.

Backward recomputes each chunk's local logits from the saved global ``lse`` (Cut Cross-Entropy style,
one extra matmul, no N x V storage): ``dz = r p - a [j = y] - g eps / V`` on the local shard gives the
local weight (and bias) gradient directly; the hidden-state gradient ``sum_r dz_r W_r`` is all-reduced,
so every rank's ``hidden.grad`` is the full gradient (the input is replicated). Memory per rank is
O(chunk x V_r) plus the local weight gradient: about 1/world of the single-process fused op.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from entropykit import measures
from entropykit._validate import check_class_index, check_int, check_positive, check_real, check_reduction
from entropykit.ops.linear import (
    _acc_dtype,
    _accumulate,
    _check_head,
    _check_options,
    _logits,
    _row_loss,
    _rowdot,
    _rows_per_chunk,
    _scatter_rows,
    _softcap_chain,
)

__all__ = ["parallel_linear_cross_entropy", "parallel_linear_token_stats"]

_ANY = 2**62  # a class count no target reaches: the type and shape check before the vocabulary is known
_LEAD = "the shape of hidden without its last axis"


def _dist() -> Any:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("group: torch.distributed is not initialised; call "
                           "torch.distributed.init_process_group (torchrun sets the environment) first")
    return dist


class _Layout:
    """Where this rank's shard sits in the vocabulary, agreed by every rank of the group."""

    def __init__(self, weight: Tensor, target: Tensor, n: int, group: Any, vocab_start: int | None,
                 vocab_size: int | None) -> None:
        dist = _dist()
        self.group = group
        self.dist = dist
        world = dist.get_world_size(group)
        local = int(weight.shape[0])
        if vocab_start is not None:
            check_int(vocab_start, "vocab_start", 0)
        # a cheap fingerprint of the targets: every rank must score the same tokens
        y = target.reshape(-1).long()
        tsum = int((y * (torch.arange(y.numel(), device=y.device) % 9973 + 1)).sum()) if y.numel() else 0
        info = torch.tensor([-1 if vocab_start is None else vocab_start, local, n, weight.shape[1], tsum],
                            dtype=torch.int64, device=weight.device)
        parts = [torch.empty_like(info) for _ in range(world)]
        dist.all_gather(parts, info, group=group)
        rows = torch.stack(parts).cpu().tolist()
        rank = dist.get_rank(group)
        sizes = [r[1] for r in rows]
        if len({r[2] for r in rows}) != 1 or len({r[3] for r in rows}) != 1:
            raise ValueError(f"hidden must have the same shape on every rank (N tokens, D), got (N, D) = "
                             f"{[(r[2], r[3]) for r in rows]} by rank")
        if len({r[4] for r in rows}) != 1:
            raise ValueError("target must be the same on every rank (the vocabulary is sharded, not the "
                             "tokens), got different targets")
        given = [r[0] for r in rows]
        if all(s < 0 for s in given):
            starts = [sum(sizes[:i]) for i in range(world)]  # contiguous shards in rank order
        elif any(s < 0 for s in given):
            raise ValueError(f"vocab_start must be given on every rank or on none, got {given} by rank "
                             "(-1 = not given)")
        else:
            starts = given
        spans = sorted(zip(starts, sizes))
        total = 0
        for a, v in spans:
            if a != total:
                raise ValueError(f"weight: the shards of the process group do not cover the vocabulary: "
                                 f"shards (start, rows) by rank {list(zip(starts, sizes))} leave "
                                 f"{'a gap' if a > total else 'an overlap'} at index {min(a, total)}")
            total += v
        if vocab_size is not None:
            check_int(vocab_size, "vocab_size", 1)
            if vocab_size != total:
                raise ValueError(f"vocab_size: the shards of the process group cover {total} entries "
                                 f"(rows by rank {sizes}), got vocab_size={vocab_size}")
        self.start = starts[rank]
        self.local = local
        self.vocab = total

    def all_reduce(self, x: Tensor, op: str) -> Tensor:
        self.dist.all_reduce(x, op=getattr(self.dist.ReduceOp, op), group=self.group)
        return x

    def owned(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(mask of targets in this shard, their local indices; 0 where not owned)."""
        mine = (y >= self.start) & (y < self.start + self.local)
        return mine, torch.where(mine, y - self.start, torch.zeros_like(y))


def _chunks(n: int, lay: _Layout, d_model: int, chunk_size: int | None, buffers: int) -> range:
    # every rank must run the same number of chunks (each one all-reduces): rows from the FULL vocabulary,
    # so each rank's (rows x V_r) buffer is about 1/world of the single-process chunk
    rows = _rows_per_chunk(n, lay.vocab, d_model, chunk_size, buffers)
    return range(0, n, rows)


# --------------------------------------------------------------------------------------------------
# cross-entropy
# --------------------------------------------------------------------------------------------------


class _ParallelCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, lay: _Layout, eps: float,
                zl: float, cap: float | None, chunk_size: int | None, ignore_index: int,
                reduction: str) -> Tensor:
        n, d_model = h.shape
        acc = _acc_dtype(h.dtype)
        wa, ba = w.to(acc), None if b is None else b.to(acc)
        valid = y != ignore_index
        idx = valid.nonzero().squeeze(1)
        yv = y[idx]
        count = int(idx.numel())
        lse = torch.empty(count, dtype=acc, device=h.device)
        loss = torch.empty(count, dtype=acc, device=h.device)
        step = _chunks(count, lay, d_model, chunk_size, 2 if cap is not None else 1).step
        buf = torch.empty(min(step, count), lay.local, dtype=acc, device=h.device)
        tbuf = torch.empty_like(buf) if cap is not None else None
        for s in range(0, count, step):
            e = min(count, s + step)
            c = e - s
            hc = h.index_select(0, idx[s:e]).to(acc)
            z = _logits(hc, wa, ba, buf[:c], cap, None if tbuf is None else tbuf[:c], 1.0, h.dtype)
            mine, loc = lay.owned(yv[s:e])
            m = lay.all_reduce(z.amax(1), "MAX")
            stats = torch.stack([
                torch.where(mine, z.gather(1, loc[:, None]).squeeze(1), torch.zeros_like(m)),
                z.sum(1) if eps else torch.zeros_like(m),
            ])
            z.sub_(m[:, None]).exp_()  # our own buffer
            stats = lay.all_reduce(torch.cat([stats, z.sum(1)[None]]), "SUM")
            zy, zsum, se = stats
            lse_c = se.log() + m
            loss[s:e] = _row_loss(lse_c, zy, zsum / lay.vocab if eps else None, eps, zl)
            lse[s:e] = lse_c
        if reduction == "none":
            out = _scatter_rows(loss, valid, n)
        else:
            out = loss.sum()
            if reduction == "mean" and count:
                out = out / count
        ctx.args = (lay, eps, zl, cap, chunk_size, reduction, count)
        ctx.save_for_backward(h, w, b, idx, yv, lse)
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor | None) -> tuple[Tensor | None, ...]:
        nones = (None,) * 8
        h, w, b, idx, yv, lse = ctx.saved_tensors
        lay, eps, zl, cap, chunk_size, reduction, count = ctx.args
        if grad_out is None:
            return None, None, None, *nones
        acc = _acc_dtype(h.dtype)
        n, d_model = h.shape
        if reduction == "none":
            g = grad_out.to(acc).reshape(-1)[idx]
        else:
            scale = 1.0 / count if reduction == "mean" and count else 1.0
            g = (grad_out.to(acc) * scale).expand(count)
        wa, ba = w.to(acc), None if b is None else b.to(acc)
        dh = torch.zeros(n, d_model, dtype=acc, device=h.device)
        dw = torch.zeros(lay.local, d_model, dtype=acc, device=h.device)
        db = torch.zeros(lay.local, dtype=acc, device=h.device) if b is not None else None
        step = _chunks(count, lay, d_model, chunk_size, 2 if cap is not None else 1).step
        buf = torch.empty(min(step, count), lay.local, dtype=acc, device=h.device)
        tbuf = torch.empty_like(buf) if cap is not None else None
        for s in range(0, count, step):
            e = min(count, s + step)
            c = e - s
            hc = h.index_select(0, idx[s:e]).to(acc)
            t = None if tbuf is None else tbuf[:c]
            z = _logits(hc, wa, ba, buf[:c], cap, t, 1.0, h.dtype)
            lse_c, gc = lse[s:e], g[s:e]
            # dloss/dz = r p - a onehot(y) - g eps / V, r = g (1 + 2 zl lse), a = g (1 - eps)
            z.sub_(lse_c[:, None]).exp_().mul_((gc * (1.0 + 2.0 * zl * lse_c))[:, None])
            mine, loc = lay.owned(yv[s:e])
            z.scatter_add_(1, loc[:, None], torch.where(mine, -(1.0 - eps) * gc, 0.0)[:, None])
            if eps:
                z.sub_((gc * (eps / lay.vocab))[:, None])
            if t is not None:
                _softcap_chain(z, t)
            dhc = torch.empty(c, d_model, dtype=acc, device=h.device)
            _accumulate(z, hc, wa, dhc, dw, db, None, h.dtype)
            dh.index_copy_(0, idx[s:e], dhc)
        lay.all_reduce(dh, "SUM")  # hidden is replicated: its gradient sums every shard's share
        return (dh.to(h.dtype), dw.to(w.dtype), None if db is None else db.to(w.dtype), *nones)


def parallel_linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    group: Any = None,
    vocab_start: int | None = None,
    vocab_size: int | None = None,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    r""":func:`entropykit.ops.linear_cross_entropy` with the head sharded along the vocabulary.

    Every rank of ``group`` (default: the world) passes the same ``hidden`` (..., D) and ``target``
    (...) and its own rows ``weight`` (V_r, D) = ``W[vocab_start : vocab_start + V_r]`` (default
    ``vocab_start``: contiguous shards in rank order; shard sizes may differ). With the full-vocabulary
    logits :math:`z = \mathrm{softcap}(hW^\top + b)` and :math:`\ell = \mathrm{lse}(z)` the per-token loss
    is the single-process one,

    .. math::
        L = (1-\varepsilon)(\ell - z_y) + \varepsilon(\ell - \tfrac1V\textstyle\sum_{j<V} z_j) + s\,\ell^2

    (nats; label smoothing over the FULL vocabulary V as ``F.cross_entropy``; PaLM z-loss s), computed
    from all-reduces of the per-shard max, partition sum, owner's target logit and logit sum (Megatron-LM,
    Shoeybi et al. 2019). The result is identical on every rank. Gradients: the local ``weight``/``bias``
    shard gets its own gradient; ``hidden`` gets the full gradient (all-reduced over the group).
    ``ignore_index`` targets contribute 0; ``"mean"`` averages over the others (0 if there are none).
    Shards that do not tile [0, V) (a gap, an overlap, or ``vocab_size`` given and different) raise
    ``ValueError`` on every rank; an uninitialised process group raises ``RuntimeError``.

    Launch with ``torchrun --nproc-per-node K script.py`` (each process calls
    ``torch.distributed.init_process_group()``), see the README section "Beyond one machine".

    Example (a process group of one: the whole vocabulary on rank 0):
        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> h, w = torch.randn(5, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
        >>> y = torch.tensor([1, 8, -100, 0, 3])
        >>> ref = torch.nn.functional.cross_entropy(h @ w.T, y, label_smoothing=0.1)
        >>> bool(torch.allclose(parallel_linear_cross_entropy(h, w, y, label_smoothing=0.1), ref))
        True
        >>> dist.destroy_process_group()
    """
    _check_head(hidden, weight, bias)
    check_reduction(reduction)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    zl = check_real(z_loss, "z_loss", 0.0, finite=True)
    cap = _check_options(softcap, chunk_size)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    lead = tuple(hidden.shape[:-1])
    check_class_index(target, lead, _ANY, ignore_index, lead_what=_LEAD)  # type and shape
    lay = _Layout(weight, target, h2.shape[0], group, vocab_start, vocab_size)
    target = check_class_index(target, lead, lay.vocab, ignore_index, lead_what=_LEAD)
    out = _ParallelCE.apply(h2, weight, bias, target.reshape(-1), lay, eps, zl, cap, chunk_size,
                            ignore_index, reduction)
    return out.view(target.shape) if reduction == "none" else out


# --------------------------------------------------------------------------------------------------
# token statistics
# --------------------------------------------------------------------------------------------------


class _ParallelStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: Tensor, w: Tensor, b: Tensor | None, y: Tensor, lay: _Layout,
                cap: float | None, temperature: float, chunk_size: int | None,
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n, d_model = h.shape
        acc = _acc_dtype(h.dtype)
        wa, ba = w.to(acc), None if b is None else b.to(acc)
        out = [torch.empty(n, dtype=acc, device=h.device) for _ in range(4)]  # lse, H, var, surprisal
        step = _chunks(n, lay, d_model, chunk_size, 3 if cap is not None else 2).step
        buf = torch.empty(min(step, n), lay.local, dtype=acc, device=h.device)
        pbuf = torch.empty_like(buf)
        tbuf = torch.empty_like(buf) if cap is not None else None
        for s in range(0, n, step):
            e = min(n, s + step)
            c = e - s
            z = _logits(h[s:e].to(acc), wa, ba, buf[:c], cap, None if tbuf is None else tbuf[:c],
                        temperature, h.dtype)
            m = lay.all_reduce(z.amax(1), "MAX")
            z.sub_(m[:, None])  # shifted logits: no cancellation against a large lse
            p = torch.exp(z, out=pbuf[:c])  # unnormalised e^{z - m}
            mine, loc = lay.owned(y[s:e])
            zy = torch.where(mine, z.gather(1, loc[:, None]).squeeze(1), torch.zeros_like(m))
            se, s1, zy = lay.all_reduce(torch.stack([p.sum(1), _rowdot(p, z), zy]), "SUM")
            lse0 = se.log()
            ent = lse0 - s1 / se  # H = lse - sum p z
            p.div_(se[:, None])
            z.sub_((lse0 - ent)[:, None]).square_()  # d^2, d = log p + H
            var = lay.all_reduce(_rowdot(p, z), "SUM")
            out[0][s:e], out[1][s:e], out[2][s:e], out[3][s:e] = lse0 + m, ent, var, lse0 - zy
        ctx.args = (lay, cap, temperature, chunk_size)
        ctx.save_for_backward(h, w, b, y, out[0], out[1], out[2])
        ctx.set_materialize_grads(False)
        return out[0], out[1], out[2], out[3]

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        h, w, b, y, lse, ent, var = ctx.saved_tensors
        lay, cap, temperature, chunk_size = ctx.args
        if all(g is None for g in grads):
            return (None,) * 8
        acc = _acc_dtype(h.dtype)
        g_lse, g_ent, g_var, g_sur = (None if g is None else g.to(acc) for g in grads)
        n, d_model = h.shape
        zero = torch.zeros(n, dtype=acc, device=h.device)
        # d/dz_j: lse -> p_j; H -> -p_j d_j; V -> p_j (d_j^2 + 2 d_j - V); s -> p_j - [j = y]
        const = sum((g for g in (g_lse, g_sur) if g is not None), zero)
        if g_var is not None:
            const = const - g_var * var
        lin = (zero if g_ent is None else -g_ent) + (0.0 if g_var is None else 2.0 * g_var)
        wa, ba = w.to(acc), None if b is None else b.to(acc)
        dh = torch.empty(n, d_model, dtype=acc, device=h.device)
        dw = torch.zeros(lay.local, d_model, dtype=acc, device=h.device)
        db = torch.zeros(lay.local, dtype=acc, device=h.device) if b is not None else None
        step = _chunks(n, lay, d_model, chunk_size, 3 if cap is not None else 2).step
        buf = torch.empty(min(step, n), lay.local, dtype=acc, device=h.device)
        pbuf = torch.empty_like(buf)
        tbuf = torch.empty_like(buf) if cap is not None else None
        for s in range(0, n, step):
            e = min(n, s + step)
            c = e - s
            hc = h[s:e].to(acc)
            t = None if tbuf is None else tbuf[:c]
            z = _logits(hc, wa, ba, buf[:c], cap, t, temperature, h.dtype)
            d = z.sub_(lse[s:e, None])  # log p
            p = torch.exp(d, out=pbuf[:c])
            d.add_(ent[s:e, None])  # d = log p + H
            if g_var is not None:
                dz = d.mul(g_var[s:e, None]).add_(lin[s:e, None]).mul_(d)
            else:
                dz = d.mul_(lin[s:e, None])
            dz.add_(const[s:e, None]).mul_(p)
            if g_sur is not None:
                mine, loc = lay.owned(y[s:e])
                dz.scatter_add_(1, loc[:, None], torch.where(mine, -g_sur[s:e], 0.0)[:, None])
            if temperature != 1.0:
                dz.div_(temperature)
            if t is not None:
                _softcap_chain(dz, t)
            _accumulate(dz, hc, wa, dh[s:e], dw, db, None, h.dtype)
        lay.all_reduce(dh, "SUM")
        return (dh.to(h.dtype), dw.to(w.dtype), None if db is None else db.to(w.dtype),
                None, None, None, None, None)


def parallel_linear_token_stats(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    group: Any = None,
    vocab_start: int | None = None,
    vocab_size: int | None = None,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> measures.TokenStats:
    r""":func:`entropykit.ops.linear_token_stats` with the head sharded along the vocabulary.

    The sharding contract of :func:`parallel_linear_cross_entropy`. Per token, over the FULL vocabulary
    with :math:`z = \mathrm{softcap}(hW^\top + b)/T`, :math:`p = e^{z - \ell}`: ``lse`` :math:`\ell`,
    ``entropy`` H = l - sum_j p_j z_j, ``varentropy`` sum_j p_j (log p_j + H)^2 and ``surprisal``
    l - z_y (nats), from all-reduces of the shard max, then (sum e^{z-m}, sum e^{z-m}(z-m), owner's
    z_y), then the shard sums of p (log p + H)^2. Identical on every rank; every field is
    differentiable (local weight shard: its own gradient; hidden: all-reduced full gradient).

    Example (a process group of one):
        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> h, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
        >>> y = torch.tensor([0, 5, 2, 2])
        >>> s, ref = parallel_linear_token_stats(h, w, y), measures.token_stats(h @ w.T, y)
        >>> all(bool(torch.allclose(s[k], ref[k])) for k in ("lse", "entropy", "varentropy", "surprisal"))
        True
        >>> dist.destroy_process_group()
    """
    _check_head(hidden, weight, bias)
    temp = check_positive(temperature, "temperature")
    cap = _check_options(softcap, chunk_size)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    check_class_index(target, tuple(hidden.shape[:-1]), _ANY, None, lead_what=_LEAD)
    lay = _Layout(weight, target, h2.shape[0], group, vocab_start, vocab_size)
    target = check_class_index(target, tuple(hidden.shape[:-1]), lay.vocab, None, lead_what=_LEAD)
    lead = target.shape
    lse, ent, var, sur = _ParallelStats.apply(h2, weight, bias, target.reshape(-1), lay, cap, temp,
                                              chunk_size)
    return measures.TokenStats(lse=lse.view(lead), entropy=ent.view(lead), varentropy=var.view(lead),
                               surprisal=sur.view(lead))
