"""A teacher cache for sparse-logit distillation: run a teacher over a token stream once, keep K
(token, weight) pairs per position, read them back for the student's loss.

Storage per position: K token ids (uint16 when the vocabulary has <= 65536 entries, else int32) and K
weights (float32, or float16 with ``weight_dtype=torch.float16``) -- 6 bytes per slot for a byte-level
model, against 4 V bytes for full float32 logits (1028 bytes for V = 257). Files are written atomically
(``entropykit._io``: a reader sees the old file or the complete new one) and loaded with
``torch.load(weights_only=True)``. A cache refuses a student with another vocabulary size.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from entropykit import _io
from entropykit._validate import check_choice, check_int, check_positive, check_tensor
from entropykit.losses.sparse_kd import SPARSE_KD_METHODS, sample_teacher, topk_teacher

__all__ = ["TeacherCache", "build_teacher_cache"]

_FORMAT = "entropykit.teacher_cache/1"


class _Teacher(Protocol):
    vocab_size: int
    max_context: int

    def forward(self, input_ids: Tensor, past: Any = None) -> tuple[Tensor, Any]: ...


@dataclass
class TeacherCache:
    """Sparse teacher targets for positions 0..N-1 of a token stream: ``ids`` / ``weights`` (N, K).

    Row r is the teacher's next-token distribution after token r, given the tokens of r's window
    (windows of ``window`` tokens cut from the stream without overlap; the student must see the same
    windows). ``method`` is ``"sample"`` (unbiased importance weights) or ``"topk"``.
    """

    ids: Tensor
    weights: Tensor
    vocab_size: int
    method: str
    window: int
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_tensor(self.ids, "ids")
        check_tensor(self.weights, "weights", floating=True)
        if self.ids.dim() != 2 or self.weights.shape != self.ids.shape:
            raise ValueError(f"ids and weights must both have shape (N, K), got {tuple(self.ids.shape)} "
                             f"and {tuple(self.weights.shape)}")
        check_int(self.vocab_size, "vocab_size", 1)
        check_choice(self.method, SPARSE_KD_METHODS, "method")
        check_int(self.window, "window", 1)

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def k(self) -> int:
        """Slots per position."""
        return self.ids.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored pairs (ids + weights)."""
        ids, w = self.ids, self.weights
        return ids.numel() * ids.element_size() + w.numel() * w.element_size()

    def check_vocab(self, vocab_size: int, name: str = "student vocab_size") -> None:
        """Raise ``ValueError`` unless the student has the teacher's vocabulary size."""
        if int(vocab_size) != self.vocab_size:
            raise ValueError(f"{name} must equal the teacher cache's vocabulary size {self.vocab_size}, got "
                             f"{vocab_size}: the teacher and student vocabularies differ")

    def targets(self, start: int, stop: int, *, vocab_size: int) -> tuple[Tensor, Tensor]:
        """Rows [start, stop) as (int64 ids, float32 weights) for :func:`sparse_kd_loss`, after checking
        that the student's ``vocab_size`` is the teacher's."""
        self.check_vocab(vocab_size)
        n = len(self)
        s = check_int(start, "start", 0, n)
        e = check_int(stop, "stop", s, n)
        return self.ids[s:e].long(), self.weights[s:e].float()

    def save(self, path: str | os.PathLike[str], *, force: bool = True) -> None:
        """Write the cache to ``path`` atomically (``entropykit._io.atomic_write``)."""
        buf = io.BytesIO()
        torch.save({"format": _FORMAT, "ids": self.ids.contiguous(), "weights": self.weights.contiguous(),
                    "vocab_size": self.vocab_size, "method": self.method, "window": self.window,
                    "meta": dict(self.meta)}, buf)
        _io.atomic_write(path, buf.getvalue(), force=force)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, vocab_size: int | None = None) -> TeacherCache:
        """Read a cache written by :meth:`save`; with ``vocab_size`` also check the student's vocabulary."""
        try:
            obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # torch.load raises UnpicklingError, RuntimeError, EOFError, ...
            raise ValueError(f"path must be a teacher cache written by TeacherCache.save, got {path!s} "
                             f"({type(exc).__name__})") from None
        if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
            raise ValueError(f"path must be a teacher cache ({_FORMAT}), got {path!s}")
        cache = cls(obj["ids"], obj["weights"], int(obj["vocab_size"]), str(obj["method"]),
                    int(obj["window"]), dict(obj.get("meta", {})))
        if vocab_size is not None:
            cache.check_vocab(vocab_size)
        return cache


@torch.no_grad()
def build_teacher_cache(model: _Teacher, tokens: Tensor, *, k: int, method: str = "sample",
                        window: int | None = None, proposal_temperature: float = 1.0,
                        generator: torch.Generator | None = None, batch_size: int = 8,
                        weight_dtype: torch.dtype = torch.float32) -> TeacherCache:
    """Run ``model`` (an ``entropykit.models.LanguageModel``: ``forward(ids) -> (logits, past)``) over
    the 1-D ``tokens`` in non-overlapping windows of ``window`` tokens (default: its ``max_context``)
    and keep K pairs per position: :func:`~entropykit.losses.sparse_kd.sample_teacher` (``"sample"``,
    draws from ``generator``) or :func:`~entropykit.losses.sparse_kd.topk_teacher` (``"topk"``,
    renormalised).

    Example:
        >>> class Uniform:
        ...     vocab_size, max_context = 5, 4
        ...     def forward(self, ids, past=None):
        ...         return torch.zeros(*ids.shape, 5), None
        >>> c = build_teacher_cache(Uniform(), torch.arange(10) % 5, k=3, method="topk")
        >>> len(c), c.k, c.vocab_size
        (10, 3, 5)
    """
    check_tensor(tokens, "tokens")
    if tokens.dim() != 1 or tokens.dtype.is_floating_point:
        raise ValueError(f"tokens must be a 1-D integer tensor, got {tokens.dtype} of shape "
                         f"{tuple(tokens.shape)}")
    kk = check_int(k, "k", 1)
    check_choice(method, SPARSE_KD_METHODS, "method")
    w_len = check_int(window if window is not None else model.max_context, "window", 1, model.max_context)
    bs = check_int(batch_size, "batch_size", 1)
    check_positive(proposal_temperature, "proposal_temperature")
    check_choice(weight_dtype, (torch.float32, torch.float16, torch.bfloat16), "weight_dtype")
    v = int(model.vocab_size)
    if method == "topk":
        check_int(kk, "k", 1, v)
    n = tokens.shape[0]
    id_dtype = torch.uint16 if v <= 65536 else torch.int32
    ids = torch.empty(n, kk, dtype=id_dtype)
    ws = torch.empty(n, kk, dtype=weight_dtype)
    starts = list(range(0, n, w_len))
    full = [s for s in starts if s + w_len <= n]
    rest = [s for s in starts if s + w_len > n]
    groups = [full[i:i + bs] for i in range(0, len(full), bs)] + [[s] for s in rest]
    for group in groups:
        e = min(n, group[0] + w_len)
        length = e - group[0]
        x = torch.stack([tokens[s:s + length] for s in group]).long()
        logits, _ = model.forward(x)
        if logits.shape[-1] != v:
            raise ValueError(f"model must return logits over its vocab_size {v}, got {logits.shape[-1]}")
        if method == "sample":
            i, w = sample_teacher(logits, kk, generator=generator, proposal_temperature=proposal_temperature)
        else:
            i, w = topk_teacher(logits, kk)
        for j, s in enumerate(group):
            ids[s:s + length] = i[j].to(id_dtype)
            ws[s:s + length] = w[j].to(weight_dtype)
    meta = {"model": str(getattr(model, "name", type(model).__name__)), "k": str(kk),
            "proposal_temperature": str(float(proposal_temperature)), "tokens": str(n)}
    return TeacherCache(ids, ws, v, method, w_len, meta)
