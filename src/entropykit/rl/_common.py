"""Validation, masked reductions and the loss aggregation shared by the ``rl`` modules.

Shapes follow verl: per-token tensors are ``(batch, response_length)`` (any shape works as long as
the last axis is the token axis), ``response_mask`` marks the tokens that count (bool, or 0/1 numbers
as verl and TRL pass them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_finite, check_tensor

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def as_float(x: Any, name: str) -> Tensor:
    """A finite floating tensor, upcast to float32 (float64 stays float64)."""
    check_tensor(x, name, floating=True, min_dim=1)
    check_finite(x.detach(), name)
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def as_mask(mask: Any, like: Tensor, name: str = "response_mask") -> Tensor:
    """``mask`` (bool or 0/1 numbers, the shape of ``like``) as a bool tensor."""
    check_tensor(mask, name)
    if tuple(mask.shape) != tuple(like.shape):
        raise ValueError(f"{name} must have shape {tuple(like.shape)}, got {tuple(mask.shape)}")
    if mask.device != like.device:
        raise ValueError(f"{name} must be on {like.device}, got {mask.device}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must be a bool tensor or hold only 0 and 1, got dtype {mask.dtype}")
    return mask != 0


def same_shape(x: Tensor, name: str, like: Tensor, like_name: str) -> None:
    if tuple(x.shape) != tuple(like.shape):
        raise ValueError(
            f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(x.shape)}"
        )


def as_advantages(advantages: Any, like: Tensor) -> Tensor:
    """Per-token advantages: the shape of ``like``, or one value per sequence ((B,) or (B, 1))."""
    a = as_float(advantages, "advantages")
    if tuple(a.shape) == tuple(like.shape):
        return a
    if like.dim() >= 2 and tuple(a.shape) in (tuple(like.shape[:-1]), (*like.shape[:-1], 1)):
        return a.reshape(*like.shape[:-1], 1).expand(like.shape)
    raise ValueError(f"advantages must have shape {tuple(like.shape)} (per token) or "
                     f"{tuple(like.shape[:-1])} (per sequence), got {tuple(a.shape)}")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over ``mask``; 0 (with a connected graph) when the mask is empty."""
    total = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    n = int(mask.sum())
    return total / n if n else total * 0.0


def agg(loss_mat: Tensor, mask: Tensor, mode: str, normalizer: float | None = None) -> Tensor:
    """The four aggregations of verl's ``agg_loss`` (internal: arguments trusted)."""
    x = torch.where(mask, loss_mat, torch.zeros((), dtype=loss_mat.dtype, device=loss_mat.device))
    if mode == "token-mean":
        den = float(mask.sum()) if normalizer is None else normalizer
        return x.sum() / den if den else x.sum() * 0.0
    if mode == "seq-mean-token-sum-norm":
        return x.sum() / (loss_mat.shape[-1] if normalizer is None else normalizer)
    seq = x.sum(-1)
    if mode == "seq-mean-token-mean":
        seq = seq / mask.sum(-1).clamp(min=1).to(seq.dtype)
    n = seq.numel() if normalizer is None else normalizer
    return seq.sum() / n if n else seq.sum() * 0.0
