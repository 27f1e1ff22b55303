"""What the loss modules share besides ``entropykit._validate`` (the one validation dialect and
``reduce``): logits in the compute dtype, class targets, and the nn.Module wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from entropykit._validate import check_class_index, check_logits


def float_logits(x: Any, name: str = "logits") -> Tensor:
    """``x`` checked by :func:`entropykit._validate.check_logits`, in the losses' compute dtype
    (float32; float64 stays float64)."""
    check_logits(x, name)
    return x.double() if x.dtype == torch.float64 else x.float()


def class_target(target: Any, logits: Tensor, ignore_index: int | None, name: str = "target") -> Tensor:
    """``target`` checked by :func:`entropykit._validate.check_class_index` against ``logits``."""
    return check_class_index(target, tuple(logits.shape[:-1]), logits.shape[-1], ignore_index, name=name,
                             lead_what="the logits' shape without the class axis")


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
