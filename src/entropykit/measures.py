"""Exact information measures over the last axis of logits.

Conventions shared by every function here:

* **Input.** A distribution lives on the *last* axis; any leading shape is allowed. Inputs are
  *logits* z (unnormalised log-probabilities); p = softmax(z) is formed stably inside. To pass
  probabilities p, pass ``torch.log(p)`` (zero probabilities become ``-inf``, which is fine).
* **Masked entries.** ``-inf`` logits are masked vocabulary entries (p = 0) and 0 log 0 = 0
  everywhere, also in divergences: terms with p = 0 vanish; a q = 0 (``-inf``) entry where p > 0
  makes KL(p || q) (and chi^2, skew/alpha divergences of order > 1) ``+inf``, as it should.
  A row whose logits are all ``-inf`` has no distribution: ``ValueError``. NaN or ``+inf``
  logits raise ``ValueError`` too (they are detected per chunk, without an extra full-size buffer).
  This is *the* rule of every divergence in entropykit, also in ``losses.distill_loss`` (which
  computes through :data:`DIVERGENCES`) and ``ops.linear_distill`` (whose logits come from finite
  hidden states and weights, checked up front: NaN / inf there raises ``ValueError``). Positions
  left out by ``ignore_index`` are never looked at, so a fully masked row there is no error.
* **Units.** Natural logarithms (nats) by default; ``base=2`` gives bits (the value in nats divided
  by ln 2; varentropy, a variance, by (ln 2)^2).
* **Precision.** float16 / bfloat16 / float32 inputs are computed in float32, float64 inputs in
  float64; results have that dtype (they are not cast back to half precision).
* **Memory.** The leading positions (rows) are processed in chunks so that the temporary buffers
  of one call stay within :data:`CHUNK_BYTES` (64 MiB by default; at least one row is processed at
  a time). An (N, 262144) input therefore needs at most 64 MiB of scratch memory whatever N is,
  besides the per-row outputs (and, under autograd, the gradient of the input itself). Inputs are
  never copied: leading axes that cannot be merged without a copy (``logits[:, :-1]``) are
  processed slice by slice. Autograd works through the chunked path: the fused entropy /
  varentropy / surprisal / cross-entropy kernel (:func:`token_stats`) has its own backward that
  recomputes one chunk at a time (with ``create_graph=True`` it falls back to a differentiable,
  unchunked backward, so higher-order gradients are right too); the other measures recompute
  their chunks with :mod:`torch.utils.checkpoint`.
* **Reductions.** ``reduction="none" | "mean" | "sum"``: per-distribution measures default to
  ``"none"``, :func:`cross_entropy` to ``"mean"`` like :func:`torch.nn.functional.cross_entropy`;
  ``"mean"`` averages over unmasked / non-ignored positions only; **the mean of nothing is 0**
  (zero gradient, graph kept), in ``measures`` and ``losses`` alike: :func:`reduce` is
  ``entropykit._validate.reduce``, re-exported here.
* **Divergences.** One set of names, :data:`DIVERGENCES` (``kl_div``, ``js_div``, ``skew_kl``,
  ``tv_distance``, ``hellinger``, ``chi2_div``, ``alpha_div``), used by ``losses`` and ``ops``;
  distillation adds the ``reverse_`` prefix and accepts the earlier names as aliases
  (:data:`DIVERGENCE_ALIASES`, :func:`resolve_divergence`).
* **Validation.** Bad input raises ``TypeError`` / ``ValueError`` naming the argument and the
  value received.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx
from torch.utils.checkpoint import checkpoint

from entropykit._validate import (
    check_class_index,
    check_int,
    check_logits,
    check_mask,
    check_positive,
    check_real,
    check_reduction,
    check_same_shape,
    check_tensor,
    reduce,
)

__all__ = [
    "DISTILL_DIVERGENCES",
    "DIVERGENCES",
    "DIVERGENCE_ALIASES",
    "Divergence",
    "TokenStats",
    "alpha_div",
    "check_distributions",
    "chi2_div",
    "cross_entropy",
    "entropy",
    "hellinger",
    "js_div",
    "kl_div",
    "normalized_entropy",
    "reduce",
    "renyi_entropy",
    "resolve_divergence",
    "rolling_mean",
    "skew_kl",
    "surprisal",
    "token_rank",
    "token_stats",
    "tsallis_entropy",
    "tv_distance",
    "varentropy",
]

#: Scratch-memory budget of one call, in bytes: rows are processed in chunks whose temporary
#: buffers fit in it (at least one row per chunk). Module-level so that it can be tuned.
CHUNK_BYTES = 64 * 2**20
#: On CPU, each scratch buffer is further limited to this cache-friendly size (the kernels make
#: several passes over each chunk; tuned on a 2 MiB-L2 Xeon, see benchmarks/measures.py).
CPU_CHUNK_BYTES = 1 * 2**20

# Shifted logits (z - max) below this are clamped to it: their exp() is exactly 0 in float32 and
# float64 alike (any entry with p > 0 has z - max >= -745), and 0 * _FLOOR = 0 instead of
# 0 * -inf = nan. Squares stay finite (1e8).
_FLOOR = -1.0e4


# ----------------------------------------------------------------------------------------------
# validation (public boundary)
# ----------------------------------------------------------------------------------------------


def _check_pair(p: Any, q: Any, p_name: str = "p_logits", q_name: str = "q_logits") -> None:
    check_logits(p, p_name)
    check_logits(q, q_name)
    check_same_shape(p, q, p_name, q_name)


def _log_base(base: Any) -> float:
    """ln(base) (1.0 for nats); validates ``base``."""
    if base is None:
        return 1.0
    b = check_real(base, "base")
    if not (b > 0 and b != 1 and math.isfinite(b)):
        raise ValueError(f"base must be a positive finite number other than 1 (None: nats), got {base!r}")
    return math.log(b)


def _index_target(target: Any, logits: Tensor, ignore_index: int) -> Tensor:
    return check_class_index(target, tuple(logits.shape[:-1]), logits.shape[-1], ignore_index,
                             device=logits.device)


def _check_rows(m: Tensor, name: str, offset: int) -> None:
    """Validate per-row maxima of logits: no NaN, no +inf, not all -inf."""
    if bool(torch.isfinite(m).all()):
        return
    flat = m.reshape(-1)
    what = "have no NaN or +inf and a finite entry in every row (an all -inf row defines no distribution)"
    for bad, got in ((torch.isnan(flat), "NaN"), (flat == math.inf, "+inf"), (flat == -math.inf, "all -inf")):
        if bool(bad.any()):
            row = offset + int(bad.nonzero()[0])
            raise ValueError(f"{name} must {what}, got {got} in row {row} of the flattened leading axes")


def check_distributions(logits: Any, name: str = "logits", mask: Tensor | None = None) -> Tensor:
    """``logits`` if it is a floating-point tensor whose rows (last axis) are distributions: no NaN,
    no ``+inf``, at least one finite entry (``-inf`` entries are masked classes). Rows where the bool
    ``mask`` (the leading shape) is False are not looked at. ValueError names ``name`` and the row.

    The rule of every measure here, for callers that must name their own arguments (distillation).

    >>> check_distributions(torch.tensor([[0.0, -math.inf]])).shape
    torch.Size([1, 2])
    """
    check_logits(logits, name)
    with torch.no_grad():
        m = logits.amax(-1)
        if mask is not None:
            m = torch.where(mask, m, torch.zeros((), dtype=m.dtype, device=m.device))
    _check_rows(m, name, 0)
    return logits


# ----------------------------------------------------------------------------------------------
# chunking machinery
# ----------------------------------------------------------------------------------------------


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _step(n_rows: int, width: int, dtype: torch.dtype, buffers: int, device: torch.device) -> int:
    """Rows per chunk so that ``buffers`` scratch tensors of (rows, width) fit in the budget.

    On CPU each buffer is also kept cache-sized (CPU_CHUNK_BYTES): the kernels stream over their
    scratch buffers several times, which is several times faster from L2 than from DRAM.
    """
    row = max(1, width * (8 if dtype == torch.float64 else 4))
    rows = CHUNK_BYTES // (buffers * row)
    if device.type == "cpu":
        rows = min(rows, CPU_CHUNK_BYTES // row)
    return max(1, min(n_rows, rows))


def _by_rows(fn: Callable[..., tuple[Tensor, ...]], lead: torch.Size, *xs: Tensor) -> tuple[Tensor, ...]:
    """Apply ``fn`` to row views of ``xs`` and give its per-row results the leading shape ``lead``.

    Each x has shape ``lead + (k,)`` (viewed as (N, k)) or ``lead`` (viewed as (N,)). Leading axes
    that cannot be merged without a copy (e.g. ``logits[:, :-1]``) are split along the first axis
    instead, so no full-size copy of the input is ever made.
    """
    try:
        flat = [x.view(-1) if x.dim() == len(lead) else x.view(-1, x.shape[-1]) for x in xs]
    except RuntimeError:
        parts = [_by_rows(fn, lead[1:], *sub) for sub in zip(*(x.unbind(0) for x in xs))]
        return tuple(torch.stack(col) for col in zip(*parts))
    return tuple(o.reshape(lead) for o in fn(*flat))


def _map_rows(kernel: Callable[..., Tensor], *mats: Tensor, buffers: int) -> Tensor:
    """Apply ``kernel(offset, *row_chunks) -> (rows,)`` over row chunks of 2-D tensors.

    Under autograd each chunk is wrapped in a non-reentrant checkpoint, so only the inputs are kept
    and the chunk's intermediates are recomputed during backward (bounded memory both ways).
    """
    n, v = mats[0].shape
    dt = _compute_dtype(mats[0].dtype)
    if n == 0:
        return kernel(0, *mats)
    step = _step(n, v, dt, buffers, mats[0].device)
    grad = torch.is_grad_enabled() and any(m.requires_grad for m in mats)
    outs = []
    for i in range(0, n, step):
        chunk = [m[i : i + step] for m in mats]
        if grad and step < n:
            outs.append(checkpoint(kernel, i, *chunk, use_reentrant=False))
        else:
            outs.append(kernel(i, *chunk))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _rowwise(kernel: Callable[..., Tensor], *xs: Tensor, buffers: int) -> Tensor:
    """:func:`_map_rows` over tensors of shape (..., V), result of their leading shape."""
    return _by_rows(lambda *flat: (_map_rows(kernel, *flat, buffers=buffers),), xs[0].shape[:-1], *xs)[0]


def _log_softmax(z: Tensor, name: str, offset: int) -> Tensor:
    """Validated log-softmax in the compute dtype."""
    z = z.to(_compute_dtype(z.dtype))
    _check_rows(z.detach().amax(-1), name, offset)
    return torch.log_softmax(z, -1)


def _finite(lp: Tensor) -> Tensor:
    return lp > -math.inf


def _const(value: float, like: Tensor) -> Tensor:
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _where0(cond: Tensor, x: Tensor) -> Tensor:
    return torch.where(cond, x, _const(0, x))


def _plog_ratio(lp: Tensor, lr: Tensor) -> Tensor:
    """sum_j p_j (log p_j - log r_j) per row: 0 where p = 0, +inf where p > 0 = r."""
    fp, fr = _finite(lp), _finite(lr)
    both = fp & fr
    diff = _where0(both, lp) - _where0(both, lr)  # safe: finite everywhere, so gradients stay finite
    terms = torch.exp(_where0(fp, lp)) * diff
    terms = torch.where(fp & ~fr, _const(math.inf, lp), terms)
    return terms.sum(-1)


def _p_expm1(fp: Tensor, lp0: Tensor, x: Tensor) -> Tensor:
    """p (e^x - 1) with p = e^lp0 where ``fp``, else 0; accurate for small |x| (expm1)."""
    small = x.abs() < 1
    p = torch.exp(lp0)
    near = p * torch.expm1(_where0(small, x))
    far = torch.exp(lp0 + _where0(~small, x)) - p
    return _where0(fp, torch.where(small, near, far))


def _pow_minus(lp: Tensor, t: float) -> Tensor:
    """p^(1+t) - p elementwise (t > -1), accurate for small |t| (expm1), 0 where p = 0."""
    fp = _finite(lp)
    lp0 = _where0(fp, lp)
    return _p_expm1(fp, lp0, lp0 * t)


def _p_log_to_mix(la: Tensor, lb: Tensor, log_w: float, log_1mw: float) -> Tensor:
    """sum_j a_j (log a_j - log m_j) per row, m = w a + (1 - w) b, 0 < w < 1; 0 where a = 0.

    ``log_w`` = log w and ``log_1mw`` = log(1 - w), both given by the caller (for w = 1 - b, 1 - w
    is b exactly, which a float subtraction would lose for a tiny b).

    log a - log m = -log(w + (1 - w) b / a) = -logaddexp(log w, log(1 - w) + (log b - log a)) is
    formed from the difference log b - log a: adding log w to log a first (the plain log-space
    mixture) rounds away digits of a large |log a| and biases float32 sums (~2e-6 relative at
    V = 3200); this form is as accurate as float32 allows. Finite everywhere a > 0 (<= -log w).
    """
    fa, fb = _finite(la), _finite(lb)
    both = fa & fb
    r = _where0(both, lb) - _where0(both, la)  # finite where both are, so gradients stay finite
    r = torch.where(fa & ~fb, _const(-math.inf, la), r)
    d = -torch.logaddexp(_const(log_w, r), r + log_1mw)
    return _where0(fa, torch.exp(_where0(fa, la)) * d).sum(-1)


# ----------------------------------------------------------------------------------------------
# fused entropy / varentropy / surprisal kernel (one exp per element)
# ----------------------------------------------------------------------------------------------


class _Scratch:
    """Full-size scratch buffers of one call, allocated once and reused by every chunk."""

    def __init__(self, step: int, v: int, dtype: torch.dtype, device: torch.device, count: int) -> None:
        self.bufs = [torch.empty(step, v, dtype=dtype, device=device) for _ in range(count)]
        self.masked = False  # a chunk had -inf entries: clamp up front in the following ones

    def take(self, rows: int) -> list[Tensor]:
        return [b[:rows] for b in self.bufs]


def _stats_chunk(
    z: Tensor, y: Tensor | None, need_var: bool, need_smooth: bool, offset: int, scratch: _Scratch
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """max, log S (lse = max + log S), H, varentropy, surprisal, lse - mean(z) of a (rows, V) chunk.

    One exp per element and nine streaming passes over the chunk, in two scratch buffers:
    u = z - max, e = exp(u), S = sum e, w = e u, mu = sum w / S = E_p[u] (so H = log S - mu),
    then d = u - mu and S V = sum w d (= sum e d^2 because sum e d = 0; no cancellation).
    """
    u, w = scratch.take(len(z))
    m = z.amax(-1, keepdim=True).to(u.dtype)
    _check_rows(m, "logits", offset)
    torch.sub(z, m, out=u)  # upcasts half precision on the fly
    neg_umean = -u.mean(-1) if need_smooth else None  # -inf entries make it +inf, as they should
    for _attempt in range(2):
        if scratch.masked:
            u.clamp_(min=_FLOOR)  # 0 * _FLOOR = 0 where 0 * -inf would be NaN
        torch.exp(u, out=w)
        s = w.sum(-1, keepdim=True)
        w.mul_(u)
        mean_u = w.sum(-1, keepdim=True)
        if scratch.masked or not bool(torch.isnan(mean_u).any()):
            break
        scratch.masked = True  # NaN = 0 * -inf: this chunk has masked entries; redo it clamped
    mean_u.div_(s)  # E_p[z - max]
    log_s = s.log_()
    ent = (log_s - mean_u).clamp_(min=0.0)  # H = lse - E_p[z]
    var = None
    if need_var:
        u.sub_(mean_u)
        var = w.mul_(u).sum(-1).div_(torch.exp(log_s).view(-1)).clamp_(min=0.0)
    sur = None
    if y is not None:  # (max - z_y) + log S, not lse - z_y: no rounding of a large lse
        sur = (m - z.gather(-1, y.view(-1, 1)).to(m.dtype)).add_(log_s).view(-1)
    smooth = None if neg_umean is None else neg_umean.add_(log_s.view(-1))
    return m.view(-1), log_s.view(-1), ent.view(-1), var, sur, smooth


class _TokenStatsFn(torch.autograd.Function):
    """(lse, H, varentropy, surprisal, lse - mean z) of (N, V) logits, chunked forward and backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, z: Tensor, y: Tensor | None, need_var: bool, need_smooth: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        n, v = z.shape
        dt = _compute_dtype(z.dtype)
        shift, log_s, ent, var, sur, smooth = (torch.zeros(n, dtype=dt, device=z.device) for _ in range(6))
        step = _step(n, v, dt, 2, z.device)
        scratch = _Scratch(min(step, n), v, dt, z.device, 2)
        for i in range(0, n, step):
            yi = None if y is None else y[i : i + step]
            out = _stats_chunk(z[i : i + step], yi, need_var, need_smooth, i, scratch)
            for dst, src in zip((shift, log_s, ent, var, sur, smooth), out):
                if src is not None:
                    dst[i : i + step] = src
        ctx.save_for_backward(z, y, shift, log_s, ent, var)  # type: ignore[arg-type]
        ctx.smooth = need_smooth  # type: ignore[attr-defined]
        ctx.set_materialize_grads(False)  # type: ignore[attr-defined]
        return shift + log_s, ent, var, sur, smooth

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: FunctionCtx,
        g_lse: Tensor | None,
        g_ent: Tensor | None,
        g_var: Tensor | None,
        g_sur: Tensor | None,
        g_smooth: Tensor | None,
    ) -> tuple[Tensor | None, None, None, None]:
        z, y, shift, log_s, ent, var = ctx.saved_tensors  # type: ignore[attr-defined]
        if not ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            return None, None, None, None
        if torch.is_grad_enabled():  # create_graph=True: a differentiable (unchunked) backward
            return _stats_vjp(z, y, (g_lse, g_ent, g_var, g_sur, g_smooth)), None, None, None
        n, v = z.shape
        dt = ent.dtype
        zero = torch.zeros(n, dtype=dt, device=z.device)
        g_lse, g_ent, g_sur, g_smooth = (zero if g is None else g for g in (g_lse, g_ent, g_sur, g_smooth))
        if y is None:
            g_sur = zero
        # d/dz_j: lse -> p_j; H -> -p_j d_j; V -> p_j (d_j^2 + 2 d_j - V); s -> p_j - [j = y];
        # lse - mean z -> p_j - 1/V; with d_j = log p_j + H.
        base = (g_lse + g_sur + g_smooth).view(-1, 1)
        lin = (-g_ent).view(-1, 1)
        quad = None
        if g_var is not None:
            base = base - (g_var * var).view(-1, 1)
            lin = lin + 2 * g_var.view(-1, 1)
            quad = g_var.view(-1, 1)
        direct = z.dtype == dt  # write straight into the gradient
        grad = torch.empty_like(z, memory_format=torch.contiguous_format)
        step = _step(n, v, dt, 2 if direct else 3, z.device)
        scratch = _Scratch(min(step, n), v, dt, z.device, 2 if direct else 3)
        for i in range(0, n, step):
            sl = slice(i, i + step)
            rows = len(z[sl])
            bufs = scratch.take(rows)
            u, p = bufs[0], bufs[1]
            c = grad[sl] if direct else bufs[2]
            torch.sub(z[sl], shift[sl].view(-1, 1), out=u).sub_(log_s[sl].view(-1, 1))  # log p, exactly
            torch.exp(u, out=p)
            u.add_(ent[sl].view(-1, 1)).clamp_(min=_FLOOR)  # d; p = 0 below the floor, keep d^2 finite
            if quad is None:
                torch.mul(u, lin[sl], out=c)
            else:
                torch.mul(u, quad[sl], out=c).add_(lin[sl]).mul_(u)
            c.add_(base[sl]).mul_(p)
            if y is not None:
                c.scatter_add_(-1, y[sl].view(-1, 1), -g_sur[sl].view(-1, 1))
            if ctx.smooth:  # type: ignore[attr-defined]
                c.sub_((g_smooth[sl] / v).view(-1, 1))
            if not direct:
                grad[sl] = c
        return grad, None, None, None


def _stats_vjp(z: Tensor, y: Tensor | None, grads: tuple[Tensor | None, ...]) -> Tensor:
    """Vector-Jacobian product of the fused statistics through plain autograd (for higher order)."""
    with torch.enable_grad():
        zc = z.to(_compute_dtype(z.dtype))
        lp = torch.log_softmax(zc, -1)
        fin = _finite(lp)
        p = torch.exp(lp)
        lp0 = _where0(fin, lp)
        ent = -(p * lp0).sum(-1)
        d = _where0(fin, lp0 + ent.unsqueeze(-1))
        outs = [torch.logsumexp(zc, -1), ent, (p * d * d).sum(-1)]
        outs.append(zc.new_zeros(len(zc)) if y is None else -lp.gather(-1, y.view(-1, 1)).view(-1))
        outs.append(outs[0] - zc.mean(-1))
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
        if not pairs:
            return torch.zeros_like(z)
        (grad,) = torch.autograd.grad([o for o, _ in pairs], z, [g for _, g in pairs], create_graph=True)
    return grad


@dataclass(frozen=True)
class TokenStats:
    """Result of :func:`token_stats`; fields also readable as ``stats["entropy"]``."""

    lse: Tensor
    entropy: Tensor
    varentropy: Tensor
    surprisal: Tensor | None

    def __getitem__(self, key: str) -> Tensor | None:
        if key not in ("lse", "entropy", "varentropy", "surprisal"):
            raise KeyError(key)
        return getattr(self, key)  # type: ignore[no-any-return]


def _fused(
    logits: Tensor, target: Tensor | None, *, need_var: bool = False, need_smooth: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    def fn(z: Tensor, *y: Tensor) -> tuple[Tensor, ...]:
        return _TokenStatsFn.apply(z, y[0] if y else None, need_var, need_smooth)  # type: ignore[no-any-return]

    xs = (logits,) if target is None else (logits, target)
    return _by_rows(fn, logits.shape[:-1], *xs)  # type: ignore[return-value]


def _ignored(target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(valid mask, target with ignored positions replaced by class 0)."""
    valid = target != ignore_index
    return valid, torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))


def token_stats(
    logits: Tensor, target: Tensor | None = None, *, base: float | None = None, ignore_index: int = -100
) -> TokenStats:
    """Log-partition, entropy, varentropy and surprisal of every position in one fused pass.

    The fast path for scoring and decoding, which usually want all of these at once: one chunked
    pass over the logits with a single ``exp`` per element computes, per distribution
    p = softmax(z) over the last axis,

    * ``lse = log sum_j exp(z_j)`` (the log-partition function; in logit units, never rescaled),
    * ``entropy`` H = lse - sum_j p_j z_j (Shannon 1948),
    * ``varentropy`` V = sum_j p_j (log p_j + H)^2, the variance of the surprisal
      (Kontoyiannis & Verdú 2013),
    * ``surprisal`` s = -log p_y = lse - z_y of ``target`` (``None`` without a target; 0 at
      positions where ``target == ignore_index``).

    Per chunk: u = z - max, e = exp(u), S = sum e, H = log S - sum(e u) / S, and V from the
    centred deviations u - E_p[u] (no cancellation); s = (max - z_y) + log S, so large logits
    lose no digits. Units: nats, or ``log base`` units with ``base`` (varentropy in squared
    units). All outputs have the logits' leading shape and are differentiable (also twice) with
    a chunked backward. Memory: two chunk-sized scratch buffers within :data:`CHUNK_BYTES`,
    whatever the size of the logits.

    >>> st = token_stats(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([1]), base=2)
    >>> [round(float(x), 4) for x in (st.entropy, st.varentropy, st.surprisal)]
    [1.2009, 0.8833, 2.0307]
    >>> round(float(st["lse"]), 4)
    2.4076
    """
    check_logits(logits)
    scale = _log_base(base)
    valid = y = None
    if target is not None:
        t = _index_target(target, logits, ignore_index)
        valid, y = _ignored(t, ignore_index)
    lse, ent, var, sur, _ = _fused(logits, y, need_var=True)
    surprisal_ = None if valid is None else _where0(valid, sur) / scale
    return TokenStats(lse=lse, entropy=ent / scale, varentropy=var / scale**2, surprisal=surprisal_)


# ----------------------------------------------------------------------------------------------
# entropies of one distribution
# ----------------------------------------------------------------------------------------------


def entropy(logits: Tensor, *, base: float | None = None, reduction: str = "none") -> Tensor:
    """Shannon entropy H(p) = -sum_j p_j log p_j of p = softmax(logits) over the last axis.

    Computed as H = logsumexp(z) - sum_j p_j z_j in one chunked pass (Shannon 1948).
    Units: nats (``base=None``) or ``log base`` units (``base=2``: bits). ``-inf`` logits are
    excluded entries (0 log 0 = 0), so 0 <= H <= log(number of finite logits).

    >>> round(float(entropy(torch.zeros(4), base=2)), 4)  # uniform over 4 outcomes: 2 bits
    2.0
    >>> entropy(torch.tensor([[0.0, -math.inf], [0.0, 0.0]]))
    tensor([0.0000, 0.6931])
    """
    check_logits(logits)
    scale = _log_base(base)
    check_reduction(reduction)
    _, ent, _, _, _ = _fused(logits, None)
    return reduce(ent / scale, reduction)


def varentropy(logits: Tensor, *, base: float | None = None, reduction: str = "none") -> Tensor:
    """Varentropy V(p) = sum_j p_j (log p_j + H(p))^2: the variance of the surprisal -log p_j.

    Also known as the varentropy or information variance (Kontoyiannis & Verdú 2013; the
    second-order term in Strassen 1962's expansion). Computed in centred form (two passes over a
    chunk, no cancellation). Units: nats^2, or (log base)^2 units with ``base`` (bits^2 for 2).
    V >= 0, with V = 0 exactly for uniform distributions over their support.

    >>> round(float(varentropy(torch.tensor([2.0, 1.0, 0.0]))), 4)
    0.4244
    >>> float(varentropy(torch.zeros(5)))
    0.0
    """
    check_logits(logits)
    scale = _log_base(base)
    check_reduction(reduction)
    _, _, var, _, _ = _fused(logits, None, need_var=True)
    return reduce(var / scale**2, reduction)


def _finite_count(logits: Tensor) -> Tensor:
    with torch.no_grad():
        return _rowwise(lambda off, z: torch.isfinite(z).sum(-1), logits, buffers=1)


def normalized_entropy(logits: Tensor, *, reduction: str = "none") -> Tensor:
    """Normalised entropy H(p) / log K in [0, 1], K = number of finite logits of the row.

    Unit-free (the base cancels); 1 for a uniform distribution over the finite entries, 0 for
    a point mass (also when K = 1, where 0/0 is defined as 0). Often called efficiency or
    Pielou's evenness (Pielou 1966) of Shannon's entropy.

    >>> normalized_entropy(torch.tensor([[0.0, 0.0, -math.inf], [5.0, 0.0, 0.0]]))
    tensor([1.0000, 0.0727])
    """
    check_logits(logits)
    check_reduction(reduction)
    ent = entropy(logits)
    k = _finite_count(logits)
    denom = torch.log(k.clamp(min=2).to(ent.dtype))
    return reduce(_where0(k > 1, ent / denom), reduction)


def renyi_entropy(
    logits: Tensor, alpha: float, *, base: float | None = None, reduction: str = "none"
) -> Tensor:
    """Rényi entropy of order alpha: H_alpha(p) = log(sum_j p_j^alpha) / (1 - alpha) (Rényi 1961).

    ``alpha`` must be > 0 (the alpha -> 0 limit, Hartley's entropy, is the log of the number of
    finite logits); ``alpha == 1`` is Shannon's entropy exactly and ``alpha = math.inf`` the
    min-entropy -log max_j p_j. Near 1 the value is computed as
    log1p(sum_j (p_j^alpha - p_j)) / (1 - alpha) with ``expm1``, so it tends to Shannon's entropy
    smoothly instead of cancelling. Non-increasing in alpha. Units: nats or ``log base`` units.

    >>> z = torch.tensor([2.0, 1.0, 0.0])
    >>> [round(float(renyi_entropy(z, a)), 4) for a in (0.5, 1, 2, math.inf)]
    [0.9529, 0.8324, 0.6723, 0.4076]
    """
    check_logits(logits)
    a = check_positive(alpha, "alpha", allow_inf=True)
    scale = _log_base(base)
    check_reduction(reduction)
    if a == 1.0:
        return entropy(logits, base=base, reduction=reduction)

    def kernel(off: int, z: Tensor) -> Tensor:
        lp = _log_softmax(z, "logits", off)
        if math.isinf(a):
            return -lp.amax(-1)
        # sum p^a - 1 accurately (near a = 1), or log sum p^a directly when that sum is small.
        excess = _pow_minus(lp, a - 1).sum(-1)
        direct = torch.logsumexp(a * lp, -1)
        near = torch.log1p(_where0(excess > -0.5, excess))
        return torch.where(excess > -0.5, near, direct) / (1 - a)

    out = _rowwise(kernel, logits, buffers=8)
    return reduce(out / scale, reduction)


def tsallis_entropy(logits: Tensor, q: float, *, reduction: str = "none") -> Tensor:
    """Tsallis entropy S_q(p) = (1 - sum_j p_j^q) / (q - 1) (Tsallis 1988), ``q`` > 0.

    ``q == 1`` is Shannon's entropy in nats exactly; near 1 the value is computed as
    -sum_j p_j expm1((q - 1) log p_j) / (q - 1), which tends to it without cancellation.
    Dimensionless (it equals nats in the limit q -> 1); ``q = 2`` is the Gini impurity
    1 - sum_j p_j^2.

    >>> z = torch.tensor([2.0, 1.0, 0.0])
    >>> [round(float(tsallis_entropy(z, q)), 4) for q in (0.5, 1, 2)]
    [1.2207, 0.8324, 0.4895]
    """
    check_logits(logits)
    qq = check_positive(q, "q")
    check_reduction(reduction)
    if qq == 1.0:
        return entropy(logits, reduction=reduction)

    def kernel(off: int, z: Tensor) -> Tensor:
        lp = _log_softmax(z, "logits", off)
        return -_pow_minus(lp, qq - 1).sum(-1) / (qq - 1)

    out = _rowwise(kernel, logits, buffers=8)
    return reduce(out, reduction)


# ----------------------------------------------------------------------------------------------
# the realised token
# ----------------------------------------------------------------------------------------------


def surprisal(
    logits: Tensor,
    target: Tensor,
    *,
    base: float | None = None,
    ignore_index: int = -100,
    reduction: str = "none",
) -> Tensor:
    """Surprisal (self-information) of the realised token: s = -log p_y = logsumexp(z) - z_y.

    ``target`` holds class indices with the logits' leading shape; positions equal to
    ``ignore_index`` give 0 (and are left out of ``"mean"``). A target whose logit is ``-inf``
    has infinite surprisal. Units: nats or ``log base`` units (bits for 2) (Shannon 1948).
    Same as ``cross_entropy(logits, target, reduction="none")`` without label smoothing.

    >>> surprisal(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1]), base=2)
    tensor([1.0000, 3.0685])
    """
    check_logits(logits)
    scale = _log_base(base)
    check_reduction(reduction)
    t = _index_target(target, logits, ignore_index)
    valid, y = _ignored(t, ignore_index)
    _, _, _, sur, _ = _fused(logits, y)
    return reduce(_where0(valid, sur) / scale, reduction, valid)


def token_rank(logits: Tensor, target: Tensor, *, ignore_index: int = -100) -> Tensor:
    """Rank of the realised token among the logits: 1 + number of strictly larger logits.

    1 means the target is the argmax (ties count in the target's favour). Returns int64 with
    the target's shape; positions with ``target == ignore_index`` get 0. Not differentiable.

    >>> token_rank(torch.tensor([[0.1, 0.5, 0.2], [3.0, 1.0, 2.0]]), torch.tensor([0, 0]))
    tensor([3, 1])
    """
    check_logits(logits)
    t = _index_target(target, logits, ignore_index)
    valid, y = _ignored(t, ignore_index)

    def kernel(off: int, z: Tensor, yc: Tensor) -> Tensor:
        _check_rows(z.amax(-1), "logits", off)
        return (z > z.gather(-1, yc.view(-1, 1))).sum(-1) + 1

    with torch.no_grad():
        return _where0(valid, _rowwise(kernel, logits, y, buffers=1))


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    base: float | None = None,
) -> Tensor:
    """Cross-entropy H(q, p) = -sum_j q_j log p_j of the model p = softmax(logits) against q.

    ``target`` is either class indices (integer, the logits' leading shape; q = one-hot, so
    H = logsumexp(z) - z_y) or a probability tensor q of the logits' shape (not log-probabilities).
    With ``label_smoothing`` eps the target becomes (1 - eps) q + eps / V (Szegedy et al. 2016),
    exactly as :func:`torch.nn.functional.cross_entropy` with the class axis last: for indices,
    loss = (1 - eps) (lse - z_y) + eps (lse - mean_j z_j). Smoothing puts mass on masked (``-inf``)
    entries, so it makes the loss ``+inf`` there, like torch. ``ignore_index`` (indices only)
    positions give 0 and are left out of ``"mean"``, which averages over the remaining positions
    (0 if none remain: the mean of nothing, see :func:`reduce`). H(q, p) = H(q) + KL(q || p).
    Units: nats or ``log base`` units.
    Index targets use the fused chunked kernel (memory-bounded forward and backward).

    >>> z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    >>> cross_entropy(z, torch.tensor([0, -100]))
    tensor(0.4076)
    >>> cross_entropy(z, torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]), reduction="none")
    tensor([0.9076, 1.0986])
    """
    check_logits(logits)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    check_reduction(reduction)
    scale = _log_base(base)
    check_tensor(target, "target")
    if not target.is_floating_point():
        t = _index_target(target, logits, ignore_index)
        valid, y = _ignored(t, ignore_index)
        _, _, _, sur, smooth = _fused(logits, y, need_smooth=eps > 0)
        loss = sur if eps == 0 else (1 - eps) * sur + eps * smooth
        return reduce(_where0(valid, loss) / scale, reduction, valid)
    check_same_shape(target, logits, "a probability target", "logits")
    v = logits.shape[-1]

    def kernel(off: int, z: Tensor, q: Tensor) -> Tensor:
        lp = _log_softmax(z, "logits", off)
        q = q.to(lp.dtype)
        if not bool((q >= 0).all()):
            bad = q[~(q >= 0)][0]
            raise ValueError(f"target probabilities must be >= 0 and not NaN, got {float(bad)}")
        if eps:
            q = (1 - eps) * q + eps / v
        pos, fin = q > 0, _finite(lp)
        terms = q * _where0(pos & fin, lp)
        terms = torch.where(pos & ~fin, _const(-math.inf, lp), terms)
        return -terms.sum(-1)

    out = _rowwise(kernel, logits, target, buffers=8)
    return reduce(out / scale, reduction)


# ----------------------------------------------------------------------------------------------
# divergences between two logit tensors
# ----------------------------------------------------------------------------------------------


def _pair_measure(
    kernel: Callable[[Tensor, Tensor], Tensor], p_logits: Tensor, q_logits: Tensor, buffers: int = 8
) -> Tensor:
    def rows(off: int, zp: Tensor, zq: Tensor) -> Tensor:
        return kernel(_log_softmax(zp, "p_logits", off), _log_softmax(zq, "q_logits", off))

    return _rowwise(rows, p_logits, q_logits, buffers=buffers)


def kl_div(
    p_logits: Tensor, q_logits: Tensor, *, base: float | None = None, reduction: str = "none"
) -> Tensor:
    """Kullback–Leibler divergence KL(p || q) = sum_j p_j (log p_j - log q_j) (Kullback & Leibler 1951).

    p = softmax(p_logits), q = softmax(q_logits) over the last axis; note the argument order is
    the mathematical one (unlike :func:`torch.nn.functional.kl_div`, which takes ``(log q, p)``).
    Terms with p_j = 0 vanish; p_j > 0 = q_j gives ``+inf``. KL >= 0 with equality iff p = q.
    Units: nats or ``log base`` units.

    >>> p, q = torch.tensor([2.0, 1.0, 0.0]), torch.zeros(3)
    >>> round(float(kl_div(p, q)), 4), float(kl_div(p, p))
    (0.2662, 0.0)
    """
    _check_pair(p_logits, q_logits)
    scale = _log_base(base)
    check_reduction(reduction)
    return reduce(_pair_measure(_plog_ratio, p_logits, q_logits) / scale, reduction)


def js_div(
    p_logits: Tensor,
    q_logits: Tensor,
    *,
    beta: float = 0.5,
    base: float | None = None,
    reduction: str = "none",
) -> Tensor:
    """Generalised Jensen–Shannon divergence with mixture weight ``beta`` in [0, 1].

    With p = softmax(p_logits) the **teacher** and q = softmax(q_logits) the **student** (the
    convention of TRL's GKD trainer, Agarwal et al. 2024, "On-policy distillation of language
    models"), m = beta p + (1 - beta) q and

        JSD_beta(p, q) = beta KL(p || m) + (1 - beta) KL(q || m).

    ``beta = 0.5`` is the classic Jensen–Shannon divergence (Lin 1991), symmetric and <= ln 2.
    As in TRL, the end points are defined as the KL divergences they interpolate:
    ``beta = 0`` gives the forward KL(p || q) (= :func:`kl_div` ``(p_logits, q_logits)``) and
    ``beta = 1`` the reverse KL(q || p). Each term log p - log m = -log(beta + (1 - beta) q / p) is
    formed from the difference log q - log p (logaddexp), so float32 results are as accurate as
    the float32 log-probabilities allow (no digits of log p are lost to adding log beta).
    Units: nats or ``log base`` units.

    >>> p, q = torch.tensor([5.0, 0.0]), torch.tensor([0.0, 5.0])
    >>> round(float(js_div(p, q)), 4), round(float(js_div(p, q, beta=0.0)), 4)
    (0.653, 4.9331)
    """
    _check_pair(p_logits, q_logits)
    b = check_real(beta, "beta", 0.0, 1.0)
    scale = _log_base(base)
    check_reduction(reduction)
    if b == 0.0:
        return kl_div(p_logits, q_logits, base=base, reduction=reduction)
    if b == 1.0:
        return kl_div(q_logits, p_logits, base=base, reduction=reduction)

    def kernel(lp: Tensor, lq: Tensor) -> Tensor:
        lb, l1b = math.log(b), math.log1p(-b)
        return b * _p_log_to_mix(lp, lq, lb, l1b) + (1 - b) * _p_log_to_mix(lq, lp, l1b, lb)

    return reduce(_pair_measure(kernel, p_logits, q_logits, buffers=12) / scale, reduction)


def skew_kl(
    p_logits: Tensor, q_logits: Tensor, *, lam: float, base: float | None = None, reduction: str = "none"
) -> Tensor:
    """Skew KL divergence KL(p || lam p + (1 - lam) q), ``lam`` in [0, 1] (DistiLLM, Ko et al. 2024).

    p = softmax(p_logits) is the **teacher**, q = softmax(q_logits) the **student**; DistiLLM
    uses lam = 0.1. ``lam = 0`` is KL(p || q) and ``lam = 1`` gives 0; for lam > 0 the value is
    finite (<= -log lam) even where q = 0, which is the point of skewing. The skew reverse KL of
    DistiLLM is ``skew_kl(q_logits, p_logits, lam=lam)``. Units: nats or ``log base`` units.

    >>> p, q = torch.tensor([5.0, 0.0]), torch.tensor([0.0, 5.0])
    >>> round(float(skew_kl(p, q, lam=0.1)), 4), round(float(skew_kl(p, q, lam=0.0)), 4)
    (2.1959, 4.9331)
    """
    _check_pair(p_logits, q_logits)
    lm_w = check_real(lam, "lam", 0.0, 1.0)
    scale = _log_base(base)
    check_reduction(reduction)
    if lm_w == 0.0:
        return kl_div(p_logits, q_logits, base=base, reduction=reduction)

    def kernel(lp: Tensor, lq: Tensor) -> Tensor:
        if lm_w == 1.0:
            return _plog_ratio(lp, lp)
        return _p_log_to_mix(lp, lq, math.log(lm_w), math.log1p(-lm_w))

    return reduce(_pair_measure(kernel, p_logits, q_logits, buffers=10) / scale, reduction)


def tv_distance(p_logits: Tensor, q_logits: Tensor, *, reduction: str = "none") -> Tensor:
    """Total variation distance TV(p, q) = 1/2 sum_j |p_j - q_j| in [0, 1].

    p = softmax(p_logits), q = softmax(q_logits). Unit-free; symmetric; a metric. Pinsker:
    TV <= sqrt(KL / 2) (KL in nats).

    >>> round(float(tv_distance(torch.tensor([0.0, -math.inf]), torch.tensor([0.0, 0.0]))), 4)
    0.5
    """
    _check_pair(p_logits, q_logits)
    check_reduction(reduction)

    def kernel(lp: Tensor, lq: Tensor) -> Tensor:
        return 0.5 * (torch.exp(lp) - torch.exp(lq)).abs().sum(-1)

    return reduce(_pair_measure(kernel, p_logits, q_logits, buffers=6), reduction)


def hellinger(
    p_logits: Tensor, q_logits: Tensor, *, squared: bool = False, reduction: str = "none"
) -> Tensor:
    """Hellinger distance H(p, q) = sqrt(1/2 sum_j (sqrt p_j - sqrt q_j)^2) in [0, 1] (Hellinger 1909).

    ``squared=True`` returns H^2 = 1 - sum_j sqrt(p_j q_j) (computed in the difference form above,
    which does not cancel for close distributions). Unit-free, symmetric, a metric. The distance
    (not its square) has an infinite derivative at p = q; use ``squared=True`` as a loss.

    >>> p, q = torch.tensor([0.0, -math.inf]), torch.tensor([-math.inf, 0.0])
    >>> float(hellinger(p, q)), float(hellinger(p, p))
    (1.0, 0.0)
    """
    _check_pair(p_logits, q_logits)
    check_reduction(reduction)

    def kernel(lp: Tensor, lq: Tensor) -> Tensor:
        h2 = 0.5 * (torch.exp(0.5 * lp) - torch.exp(0.5 * lq)).square().sum(-1)
        return h2.clamp(max=1.0) if squared else h2.clamp(max=1.0).sqrt()

    return reduce(_pair_measure(kernel, p_logits, q_logits, buffers=6), reduction)


def chi2_div(p_logits: Tensor, q_logits: Tensor, *, reduction: str = "none") -> Tensor:
    """Pearson chi-square divergence chi^2(p || q) = sum_j (p_j - q_j)^2 / q_j (Pearson 1900).

    p = softmax(p_logits), q = softmax(q_logits). Entries with p_j = q_j = 0 vanish; p_j > 0 = q_j
    gives ``+inf``. Unit-free; >= 0, 0 iff p = q; an f-divergence with f(t) = (t - 1)^2 and
    the alpha-divergence of order 2 times two; KL <= log(1 + chi^2).

    >>> round(float(chi2_div(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))), 4)
    0.2136
    """
    _check_pair(p_logits, q_logits)
    check_reduction(reduction)

    def kernel(lp: Tensor, lq: Tensor) -> Tensor:
        fp, fq = _finite(lp), _finite(lq)
        lp0, lq0 = _where0(fp, lp), _where0(fq, lq)
        x = lp0 - lq0
        small = fp & fq & (x.abs() < 1)
        # (p - q) / sqrt(q): via expm1 when p ~ q (no cancellation), as a difference otherwise.
        near = torch.expm1(_where0(small, x)) * torch.exp(0.5 * lq0)
        far = _where0(fp, torch.exp(lp0 - 0.5 * lq0)) - torch.exp(0.5 * lq0)
        r = torch.where(small, near, far)
        terms = _where0(fq, r.square())
        terms = torch.where(fp & ~fq, _const(math.inf, lp), terms)
        return terms.sum(-1)

    return reduce(_pair_measure(kernel, p_logits, q_logits, buffers=12), reduction)


def alpha_div(p_logits: Tensor, q_logits: Tensor, alpha: float, *, reduction: str = "none") -> Tensor:
    """Amari alpha-divergence D_alpha(p || q) = (1 - sum_j p_j^alpha q_j^(1-alpha)) / (alpha (1 - alpha)).

    The alpha-family of Amari (1985; this parametrisation as in Amari 2009 / Cichocki & Amari
    2010), ``alpha`` > 0: alpha -> 1 gives KL(p || q) (returned exactly for ``alpha == 1``),
    alpha -> 0 gives KL(q || p), alpha = 1/2 gives 4 (1 - sum sqrt(p q)) = 4 H^2 (squared
    Hellinger) and alpha = 2 gives chi^2(p || q) / 2. It is computed as
    -sum_j p_j expm1((1 - alpha)(log q_j - log p_j)) / (alpha (1 - alpha)), accurate near 1.
    For alpha > 1 a zero q_j where p_j > 0 gives ``+inf``. Units: nats-like (equals nats at 1).

    >>> p, q = torch.tensor([2.0, 1.0, 0.0]), torch.zeros(3)
    >>> [round(float(alpha_div(p, q, a)), 4) for a in (0.5, 1, 2)]
    [0.281, 0.2662, 0.2658]
    """
    _check_pair(p_logits, q_logits)
    a = check_positive(alpha, "alpha")
    check_reduction(reduction)
    if a == 1.0:
        return kl_div(p_logits, q_logits, reduction=reduction)

    def kernel(lp: Tensor, lq: Tensor) -> Tensor:
        fp = _finite(lp)
        lp0 = _where0(fp, lp)
        x = _where0(fp, (1 - a) * (lq - lp0))  # -inf where q = 0 (a < 1), +inf (a > 1)
        terms = _p_expm1(fp, lp0, x)  # p^a q^(1-a) - p
        return -terms.sum(-1) / (a * (1 - a))

    return reduce(_pair_measure(kernel, p_logits, q_logits, buffers=12), reduction)


# ----------------------------------------------------------------------------------------------
# the divergence registry: one set of names for measures, losses.distill_loss and ops.linear_distill
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Divergence:
    """A registered divergence D(p, q) between ``softmax(p_logits)`` and ``softmax(q_logits)``."""

    fn: Callable[..., Tensor]  # fn(p_logits, q_logits, [param=value,] reduction=...)
    param: str | None  # keyword of its shape parameter (``beta``, ``lam``, ``alpha``), if any
    reference: str


#: name -> :class:`Divergence`: the one set of divergence names of entropykit.
DIVERGENCES: dict[str, Divergence] = {
    "kl_div": Divergence(kl_div, None, "Kullback & Leibler 1951"),
    "js_div": Divergence(js_div, "beta", "Lin 1991; generalised as in TRL GKD, Agarwal et al. 2024"),
    "skew_kl": Divergence(skew_kl, "lam", "DistiLLM, Ko et al. 2024"),
    "tv_distance": Divergence(tv_distance, None, "total variation"),
    "hellinger": Divergence(hellinger, None, "Hellinger 1909"),
    "chi2_div": Divergence(chi2_div, None, "Pearson 1900"),
    "alpha_div": Divergence(alpha_div, "alpha", "Amari 1985"),
}

#: The divergences of distillation (``losses.distill_loss``, ``ops.linear_distill``), computed as
#: D(teacher, student); the ``reverse_`` prefix swaps the arguments: D(student, teacher).
DISTILL_DIVERGENCES = ("kl_div", "reverse_kl_div", "js_div", "skew_kl", "reverse_skew_kl", "tv_distance")

#: Earlier distillation names (TRL / DistiLLM vocabulary), still accepted; users' configs use them.
DIVERGENCE_ALIASES = {
    "forward_kl": "kl_div",
    "reverse_kl": "reverse_kl_div",
    "jsd": "js_div",
    "skew_rkl": "reverse_skew_kl",
    "tvd": "tv_distance",
}


def resolve_divergence(
    name: Any, supported: tuple[str, ...] = DISTILL_DIVERGENCES, argname: str = "divergence"
) -> tuple[Divergence, bool]:
    """(registry entry, reversed) of a divergence name among ``supported`` (aliases accepted).

    ``reversed`` is True for a ``reverse_`` name: the caller computes D(q, p) instead of D(p, q).

    >>> d, rev = resolve_divergence("skew_rkl")
    >>> d.fn is skew_kl, d.param, rev
    (True, 'lam', True)
    """
    canonical = DIVERGENCE_ALIASES.get(name, name) if isinstance(name, str) else name
    if canonical not in supported:
        raise ValueError(
            f"{argname} must be one of {', '.join(map(repr, supported))} (or an alias: "
            f"{', '.join(map(repr, DIVERGENCE_ALIASES))}), got {name!r}"
        )
    rev = canonical.startswith("reverse_")
    return DIVERGENCES[canonical.removeprefix("reverse_")], rev


# ----------------------------------------------------------------------------------------------
# sequences of per-token values
# ----------------------------------------------------------------------------------------------


def rolling_mean(x: Tensor, window: int, *, mask: Tensor | None = None) -> Tensor:
    """Causal moving average along the last axis: out_t = mean(x_{t-window+1}, ..., x_t).

    The window is shorter at the start (out_0 = x_0). Applied to per-token entropies this is the
    window-entropy signal (ARES's "high window-entropy" tokens are those whose window mean
    exceeds a threshold). With a bool ``mask`` (broadcastable to ``x``) only unmasked entries
    count, in numerator and denominator; a window with no unmasked entry gives 0. A NaN or
    infinite value affects only the windows that contain it. Output dtype: float64 for float64
    input, float32 otherwise. Differentiable. Cost O(T * window), memory O(T).

    >>> rolling_mean(torch.tensor([1.0, 2.0, 3.0, 4.0]), 2)
    tensor([1.0000, 1.5000, 2.5000, 3.5000])
    >>> rolling_mean(torch.tensor([1.0, 9.0, 3.0]), 2, mask=torch.tensor([True, False, True]))
    tensor([1., 1., 3.])
    """
    check_tensor(x, "x", min_dim=1)
    if x.dtype.is_complex:
        raise TypeError(f"x must be a real tensor, got dtype {x.dtype}")
    check_int(window, "window", 1)
    xf = x.to(_compute_dtype(x.dtype))
    if mask is not None:
        mask = check_mask(mask, x)
        xf = _where0(mask, xf)
    if x.shape[-1] == 0:
        return xf.clone()
    w = min(window, x.shape[-1])

    def window_sum(v: Tensor) -> Tensor:
        padded = torch.nn.functional.pad(v, (w - 1, 0))
        return padded.unfold(-1, w, 1).sum(-1)

    total = window_sum(xf)
    if mask is None:
        count = torch.clamp(torch.arange(1, x.shape[-1] + 1, device=x.device), max=w).to(xf.dtype)
        return total / count
    count = window_sum(mask.to(xf.dtype))
    return _where0(count > 0, total / count.clamp(min=1))
