"""Argument checks shared by the measures, the losses and the fused linear ops."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


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
