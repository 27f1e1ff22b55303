"""The one validation dialect of entropykit, and the one reduction.

Every part checks its public arguments with these helpers, so every message has one shape::

    <name> must be <what is accepted>, got <the value or its type/shape/dtype>

``name`` is the argument's name as the caller wrote it (``target``, ``temperature``, ``texts[3]``);
the CLI maps parameter names to its option names (``--temperature``) before printing. ``TypeError``
for a wrong kind of object or dtype, ``ValueError`` for a wrong value, shape or range. The checks
return the normalised value (a ``float`` for a real number, an int64 tensor for class indices...), so
callers write ``t = check_real(t, "temperature", 0, lo_open=True)``.

``reduce`` is the one reduction (``"none" | "sum" | "mean"``) of ``measures`` and ``losses``, with
one rule for the mean of nothing (see its docstring).

Internal helpers trust their callers: only public functions validate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def _got(x: Any) -> str:
    """How a message shows a received value: tensors by shape and dtype, other objects by repr."""
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    text = repr(x)
    return text if len(text) <= 80 else f"{type(x).__name__} {text[:77]}..."


def check_tensor(x: Any, name: str, *, floating: bool = False, min_dim: int = 0) -> Tensor:
    """``x`` itself if it is a tensor (floating point when ``floating``, with at least ``min_dim``
    dimensions); TypeError/ValueError naming ``name`` otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    return x


def check_logits(x: Any, name: str = "logits") -> Tensor:
    """A floating-point tensor with a non-empty last (vocabulary/class) axis."""
    check_tensor(x, name, floating=True)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last (vocabulary) axis, got shape {tuple(x.shape)}")
    return x


def check_same_shape(a: Tensor, b: Tensor, a_name: str, b_name: str) -> None:
    """``a`` and ``b`` have one shape and live on one device."""
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(f"{a_name} and {b_name} must be on the same device, got {a.device} and {b.device}")


def check_class_index(
    target: Any, lead: tuple[int, ...], vocab: int, ignore_index: int | None, *, name: str = "target",
    lead_what: str = "the logits' leading shape", device: torch.device | None = None,
) -> Tensor:
    """``target`` as int64 class indices of shape ``lead`` (on ``device`` if given), each in
    ``[0, vocab)`` or equal to ``ignore_index`` (None: no index is ignored); TypeError/ValueError
    naming ``name`` otherwise."""
    if not isinstance(target, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {target.dtype}")
    if tuple(target.shape) != tuple(lead):
        raise ValueError(f"{name} must have {lead_what} {tuple(lead)}, got {tuple(target.shape)}")
    if device is not None and target.device != device:
        raise ValueError(f"{name} must be on the logits' device {device}, got {target.device}")
    bad = (target < 0) | (target >= vocab)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        raise ValueError(
            f"{name} holds index {int(target[bad].flatten()[0])}, outside [0, {vocab}) "
            f"(vocabulary size {vocab}; ignore_index={ignore_index})"
        )
    return target.long()


def check_mask(mask: Any, like: Tensor, name: str = "mask") -> Tensor:
    """A bool mask broadcastable to ``like`` (same device), returned expanded to its shape."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"{name} must be a bool tensor, got {got}")
    try:
        ok = torch.broadcast_shapes(mask.shape, like.shape) == like.shape
    except RuntimeError:
        ok = False
    if not ok or mask.device != like.device:
        raise ValueError(
            f"{name} must broadcast to shape {tuple(like.shape)} on {like.device}, "
            f"got shape {tuple(mask.shape)} on {mask.device}"
        )
    return mask.expand(like.shape)


def check_reduction(reduction: Any, name: str = "reduction") -> str:
    """One of ``"none"``, ``"mean"``, ``"sum"``."""
    return check_choice(reduction, REDUCTIONS, name)


def check_choice(value: Any, choices: Sequence[Any], name: str) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {_got(value)}")
    return value


def check_real(
    x: Any, name: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
    hi_open: bool = False, finite: bool = False,
) -> float:
    """``x`` as a float in the interval ``lo..hi`` (closed ends unless ``*_open``); never NaN; with
    ``finite``, never infinite. A one-element real tensor is accepted and read with ``.item()``."""
    if isinstance(x, Tensor) and x.numel() == 1 and not x.dtype.is_complex and x.dtype != torch.bool:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__} {_got(x)}")
    v = float(x)
    inside = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if math.isnan(v) or not inside or (finite and math.isinf(v)):
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        what = f"a {'finite ' if finite else ''}number in {lb}{lo}, {hi}{rb}"
        if lo == -math.inf and hi == math.inf:
            what = "a finite number" if finite else "a number (not NaN)"
        raise ValueError(f"{name} must be {what}, got {x!r}")
    return v


def check_positive(x: Any, name: str, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """A number > 0 (>= 0 with ``allow_zero``), finite unless ``allow_inf``."""
    v = check_real(x, name)
    if not (v >= 0 if allow_zero else v > 0) or (math.isinf(v) and not allow_inf):
        sign = "a non-negative" if allow_zero else "a positive"
        what = f"{sign} {'number (or inf)' if allow_inf else 'finite number'}"
        raise ValueError(f"{name} must be {what}, got {x!r}")
    return v


def check_bool(x: Any, name: str) -> bool:
    """A bool (``True``/``False``; not 0/1 or None)."""
    if not isinstance(x, bool):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__} {_got(x)}")
    return x


def check_int(x: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """An int (not a bool) in ``[lo, hi]`` (either end may be None: unbounded)."""
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {_got(x)}")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        rng = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an int {rng}, got {x}")
    return int(x)


def check_finite(x: Tensor, name: str) -> Tensor:
    """A tensor with no NaN and no +-inf; the message names the first bad flat index."""
    if not bool(torch.isfinite(x).all()):
        flat = x.reshape(-1)
        i = int((~torch.isfinite(flat)).nonzero()[0])
        raise ValueError(f"{name} must be finite, got {flat[i].item()} at flat index {i}")
    return x


def reduce(
    x: Tensor, reduction: str = "mean", mask: Tensor | None = None, weight: Tensor | None = None
) -> Tensor:
    """Reduce per-position values: ``"none"``, ``"sum"``, or ``"mean"`` over the positions that count.

    ``mask`` (bool, broadcastable to ``x``) marks the positions that count: masked-out positions
    become 0 with ``"none"`` and are left out of ``"sum"`` and ``"mean"``. ``"mean"`` divides the sum
    by the number of positions that count or, with ``weight`` (same shape as ``x``, the per-position
    weights already applied to ``x``, as in ``F.cross_entropy(weight=...)``), by the total weight of
    those positions -- whatever its sign, as PyTorch does.

    **The mean of nothing is 0.** When no position counts (or the weights sum to exactly 0), the
    mean is ``0 * sum(x)``: zero, with a zero gradient that keeps the autograd graph connected, so
    a fully masked batch adds nothing to a training loss instead of a NaN that poisons every
    parameter. (PyTorch's ``F.cross_entropy`` returns NaN there; count the positions yourself if
    you must tell "no data" from "zero".)

    >>> x = torch.tensor([1.0, 2.0, 6.0])
    >>> reduce(x, "mean"), reduce(x, "mean", torch.tensor([True, True, False]))
    (tensor(3.), tensor(1.5000))
    >>> reduce(x, "mean", torch.zeros(3, dtype=torch.bool))
    tensor(0.)
    """
    check_tensor(x, "x")
    check_reduction(reduction)
    if mask is not None:
        mask = check_mask(mask, x)
        x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if reduction == "none":
        return x
    total = x.sum()
    if reduction == "sum":
        return total
    if weight is not None:
        den = (weight if mask is None else torch.where(mask, weight, torch.zeros_like(weight))).sum()
        den = den.to(total.dtype)
        return total / den if bool(den != 0) else total * 0.0
    count = x.numel() if mask is None else int(mask.sum())
    return total / count if count else total * 0.0
