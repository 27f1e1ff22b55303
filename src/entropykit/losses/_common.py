"""Validation, reduction and the nn.Module wrapper shared by the loss modules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from entropykit._validate import check_class_index

REDUCTIONS = ("none", "mean", "sum")


def check_logits(x: Any, name: str = "logits") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (..., C) with C >= 1, got {tuple(x.shape)}")
    return x.double() if x.dtype == torch.float64 else x.float()


def check_index(target: Any, logits: Tensor, ignore_index: int | None, name: str = "target") -> Tensor:
    return check_class_index(target, tuple(logits.shape[:-1]), logits.shape[-1], ignore_index, name=name,
                             lead_what="the logits' shape without the class axis")


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return str(reduction)


def check_real(x: Any, name: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
               hi_open: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__} {x!r}")
    v = float(x)
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if math.isnan(v) or not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {x!r}")
    return v


def reduce(x: Tensor, reduction: str, valid: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
    """Reduce per-position losses; ``mean`` divides by the number (or total ``weight``) of valid
    positions and is 0 (not NaN) when there are none."""
    if valid is not None:
        x = torch.where(valid, x, torch.zeros_like(x))
    if reduction == "none":
        return x
    if reduction == "sum":
        return x.sum()
    if weight is not None:
        den = weight.sum()
    else:
        den = torch.tensor(x.numel() if valid is None else int(valid.sum()), dtype=x.dtype, device=x.device)
    return x.sum() / den.clamp(min=torch.finfo(x.dtype).tiny) if bool(den > 0) else x.sum() * 0.0


class FunctionalLoss(nn.Module):
    """``nn.Module`` form of a functional loss: ``Module(**options)(input, target)``.

    Tensor options (class weights, bin supports) are registered as buffers so ``.to(device)`` moves them.
    """

    fn: Callable[..., Tensor]

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._names = list(options)
        self._plain = {}
        for k, v in options.items():
            if isinstance(v, Tensor):
                self.register_buffer(k, v)
            else:
                self._plain[k] = v
        type(self).fn  # noqa: B018 -- subclasses must define it

    def options(self) -> dict[str, Any]:
        return {k: (getattr(self, k) if k not in self._plain else self._plain[k]) for k in self._names}

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return type(self).fn(input, target, **self.options())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._plain.items())
