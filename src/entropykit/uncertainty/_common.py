"""Argument checks shared by the uncertainty modules (in the one dialect of ``entropykit._validate``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from entropykit._validate import check_class_index, check_finite, check_logits, check_tensor
from entropykit.measures import check_distributions

PROB_TOL = 1e-4  # how far a row of given probabilities may sum from 1 (float32 softmax rounding)


def vector(x: Any, name: str, *, allow_empty: bool = False) -> Tensor:
    """``x`` (a tensor, NumPy array or sequence of numbers; booleans read as 0/1) as a finite float64
    1-D tensor."""
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a 1-D array of numbers, got {type(x).__name__}") from None
    if t.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if not allow_empty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got 0 values")
    return check_finite(t, name)


def same_length(a: Tensor, b: Tensor, a_name: str, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same length, got {a.shape[0]} and {b.shape[0]}"
        )


def _check_shape(x: Any, name: str) -> None:
    check_logits(x, name)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (n_samples, n_classes), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")


def _check_probs(p: Tensor, name: str) -> Tensor:
    """Row sums (float64) of probabilities that pass the checks. Two passes on the fast path (the
    minimum and the row sums: NaN and inf show up in both); the slow diagnosis only on failure."""
    low = p.amin()
    s = p.sum(-1).double()
    ok_sum = (s - 1).abs() <= PROB_TOL
    if bool(low >= 0) and bool(ok_sum.all()):
        return s
    if not bool(torch.isfinite(p).all()):
        check_finite(p, name)
    if bool((p < 0).any()):
        i = int((p < 0).any(-1).nonzero()[0])
        raise ValueError(f"{name} must hold probabilities >= 0, got a negative entry in row {i}")
    i = int((~ok_sum).nonzero()[0])
    raise ValueError(
        f"{name} must hold probabilities that sum to 1 over the last axis, got row {i} "
        f"summing to {float(s[i]):.6g}"
    )


def top_label(x: Any, name: str, *, probs: bool) -> tuple[Tensor, Tensor]:
    """(confidence max_k p_k as float64 (N,), argmax (N,)) without a float64 copy of the (N, K) input:
    the max and log-sum-exp are taken in the input's precision (float32 or higher), the per-row
    results upcast."""
    _check_shape(x, name)
    x = x.detach()
    if probs:
        s = _check_probs(x, name)
        conf, pred = x.max(-1)
        return conf.double() / s, pred
    check_distributions(x, name)
    z = x if x.dtype in (torch.float32, torch.float64) else x.float()
    top, pred = z.max(-1)
    lse = torch.logsumexp(z, -1)
    return torch.exp(top.double() - lse.double()), pred


def class_log_probs(x: Any, name: str, *, probs: bool) -> Tensor:
    """(N, K) float64 log-probabilities from logits (default) or from probabilities (``probs=True``).

    Logits: no NaN or +inf, at least one finite entry per row (-inf = a class with probability 0).
    Probabilities: finite, >= 0, and each row sums to 1 within :data:`PROB_TOL`.
    """
    _check_shape(x, name)
    if not probs:
        check_distributions(x, name)
        return torch.log_softmax(x.detach().double(), -1)
    s = _check_probs(x.detach(), name)
    return torch.log(x.detach().double() / s.unsqueeze(-1))


def labels_for(labels: Any, n: int, k: int, name: str = "labels") -> Tensor:
    """Class indices (N,) in [0, K)."""
    check_tensor(labels, name)
    return check_class_index(labels, (n,), k, None, name=name, lead_what="length (the number of samples)")
