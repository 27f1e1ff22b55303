"""``LinearCrossEntropy``: a drop-in for ``lm_head`` + ``CrossEntropyLoss`` that never forms the logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entropykit.ops.linear import linear_cross_entropy

__all__ = ["LinearCrossEntropy"]


class LinearCrossEntropy(nn.Module):
    r"""Linear head (V x D weight, optional bias) fused with cross-entropy.

    ``loss = LinearCrossEntropy(D, V)(hidden, target)`` equals
    ``CrossEntropyLoss()(nn.Linear(D, V)(hidden).view(-1, V), target.view(-1))`` but goes through
    :func:`entropykit.ops.linear_cross_entropy`, so the (tokens x V) logits are never materialised.
    For a head tied to an embedding, pass the embedding matrix per call: ``forward(hidden, target,
    weight=model.wte.weight)`` (then the module holds no parameters of its own: ``in_features=None``).
    ``logits(hidden)`` gives the logits for decoding. Options (``ignore_index``, ``reduction``,
    ``label_smoothing``, ``z_loss``, ``softcap``, ``shift``) are forwarded to the function.

    Example:
        >>> head = LinearCrossEntropy(8, 50)
        >>> h, y = torch.randn(2, 5, 8), torch.randint(0, 50, (2, 5))
        >>> ref = torch.nn.functional.cross_entropy(head.logits(h).view(-1, 50), y.view(-1))
        >>> bool(torch.allclose(head(h, y), ref, atol=1e-6))
        True
    """

    def __init__(self, in_features: int | None = None, num_classes: int | None = None, *, bias: bool = False,
                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 z_loss: float = 0.0, softcap: float | None = None, shift: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.ignore_index, self.reduction, self.shift = ignore_index, reduction, shift
        self.label_smoothing, self.z_loss, self.softcap = label_smoothing, z_loss, softcap
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        if in_features is not None:
            if num_classes is None or num_classes < 1 or in_features < 1:
                raise ValueError(f"in_features and num_classes must be positive ints, got {in_features!r}, "
                                 f"{num_classes!r}")
            self.weight = nn.Parameter(torch.empty(num_classes, in_features, device=device, dtype=dtype))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation
            if bias:
                bound = 1 / math.sqrt(in_features)
                b = torch.empty(num_classes, device=device, dtype=dtype).uniform_(-bound, bound)
                self.bias = nn.Parameter(b)

    def _head(self, weight: Tensor | None) -> Tensor:
        w = weight if weight is not None else self.weight
        if w is None:
            raise ValueError("weight must be given when the module was built without in_features (tied head)")
        return w

    def forward(self, hidden: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        out = linear_cross_entropy(hidden, self._head(weight), target, bias=self.bias,
                                   ignore_index=self.ignore_index, reduction=self.reduction,
                                   label_smoothing=self.label_smoothing, z_loss=self.z_loss,
                                   softcap=self.softcap, shift=self.shift)
        assert isinstance(out, Tensor)
        return out

    def logits(self, hidden: Tensor, weight: Tensor | None = None) -> Tensor:
        """The full logits ``hidden @ W.T + b`` (soft-capped if configured), e.g. for decoding."""
        z = F.linear(hidden, self._head(weight), self.bias)
        cap = self.softcap
        return z if cap is None else cap * torch.tanh(z / cap)

    def extra_repr(self) -> str:
        w = self.weight
        shape = "tied" if w is None else f"in_features={w.shape[1]}, num_classes={w.shape[0]}"
        return (f"{shape}, ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}, z_loss={self.z_loss}, softcap={self.softcap}, "
                f"shift={self.shift}")
