"""Regularisers that shape attention entropy: sigmaReparam, entropy floors/targets, AEM.

- **sigmaReparam** (Zhai et al., "Stabilizing Transformer Training by Preventing Attention Entropy
  Collapse", ICML 2023): every linear layer's weight is used as ``W_hat = (gamma / sigma(W)) W``,
  with ``sigma(W)`` the spectral norm estimated by one power iteration per forward (the singular
  vector ``u`` carried across steps, initialised by an SVD) and ``gamma`` a learnable scalar
  initialised to ``sigma(W_0)`` so the network starts unchanged. The gradient flows through
  ``sigma = v^T W u`` with ``u, v`` held constant, as in the authors' code (apple/ml-sigma-reparam).
  Here it is a ``torch.nn.utils.parametrize`` parametrisation, so existing ``nn.Linear`` layers keep
  their weights and state-dict keys gain ``parametrizations.weight``; ``stats_only=True`` only tracks
  ``sigma`` (for monitoring).
- **Entropy floor / target** on the per-head attention entropy ``H`` (from
  ``entropykit.monitors.attach(model, differentiable=True).entropies()`` or
  ``entropykit.ops.attention_entropy``): ``mean relu(floor - H)^2`` or
  ``mean relu(|H - target| - tolerance)^2`` -- the tolerance-band form of entropy-guided attention
  (Jha & Reagen, "Entropy-Guided Attention for Private LLMs", 2025), which keeps heads away from
  both collapse and uniformity.
- **AEM** (Zhang et al., "Attention Entropy Maximization for Multiple Instance Learning", 2025):
  the attention over a bag's instances ``a = softmax(s)`` gets the term ``-H(a)`` added to the loss
  (weight lambda set by the caller), discouraging attention that concentrates on a few instances.

All entropies are in nats unless the caller's ``H`` is in another unit (the penalties are unit-blind).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from entropykit import measures
from entropykit._validate import check_real, check_reduction, check_tensor, reduce

__all__ = [
    "SigmaReparam",
    "aem_loss",
    "attention_entropy_penalty",
    "remove_sigma_reparam",
    "sigma_reparam",
    "spectral_norms",
]


class SigmaReparam(nn.Module):
    """The sigmaReparam parametrisation ``W -> (gamma / sigma(W)) W`` of a 2-D weight (see module doc).

    Buffers: ``u`` (right singular vector estimate), ``spectral_norm`` (the last ``sigma`` seen in
    training). Parameter: ``gamma`` (absent with ``stats_only``).
    """

    def __init__(self, weight: Tensor, *, stats_only: bool = False, eps: float = 1e-12) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"weight must be a 2-D matrix, got shape {tuple(weight.shape)}")
        with torch.no_grad():
            w = weight if weight.dtype == torch.float64 else weight.float()
            _, s, vh = torch.linalg.svd(w, full_matrices=False)
        self.register_buffer("u", vh[0].to(weight.dtype).clone())
        self.register_buffer("spectral_norm", s[:1].to(weight.dtype).clone())
        self.stats_only = stats_only
        self.eps = eps
        self.gamma = None if stats_only else nn.Parameter(s[:1].to(weight.dtype).clone())

    def forward(self, weight: Tensor) -> Tensor:
        u0: Tensor = self.u  # type: ignore[assignment]
        with torch.no_grad():
            v = F.normalize(weight @ u0, dim=0, eps=self.eps)
            u = F.normalize(weight.t() @ v, dim=0, eps=self.eps)
            if self.training:
                u0.copy_(u)
        sigma = torch.dot(v, weight @ u)  # differentiable in W, u and v held constant
        if self.training:
            self.get_buffer("spectral_norm").copy_(sigma.detach().reshape(1))
        if self.gamma is None:
            return weight
        return weight * (self.gamma / sigma)


def sigma_reparam(
    model: nn.Module,
    *,
    include: Callable[[str, nn.Linear], bool] | None = None,
    stats_only: bool = False,
) -> list[str]:
    """Put sigmaReparam on every ``nn.Linear`` of ``model`` (those ``include(name, module)`` accepts);
    returns the names of the converted layers. The model computes the same outputs right after the
    call (``gamma`` starts at the SVD spectral norm; a power-iteration estimate can differ from it by
    a few ulps).

    >>> lin = nn.Linear(4, 3)
    >>> sigma_reparam(nn.Sequential(lin))
    ['0']
    >>> bool(torch.allclose(lin.weight, lin.parametrizations.weight.original, atol=1e-5))
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    done = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or (include is not None and not include(name, module)):
            continue
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"model: layer {name!r} already has a parametrisation on its weight")
        parametrize.register_parametrization(
            module, "weight", SigmaReparam(module.weight, stats_only=stats_only)
        )
        done.append(name)
    if not done:
        raise ValueError(
            f"model must contain an nn.Linear layer to reparameterise, got none in {type(model).__name__}"
        )
    return done


def remove_sigma_reparam(model: nn.Module) -> list[str]:
    """Remove sigmaReparam from every layer that has it, keeping the effective weight
    ``(gamma / sigma) W``; returns the names of the layers changed."""
    done = []
    for name, module in list(model.named_modules()):
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, SigmaReparam)
            for p in module.parametrizations.weight  # type: ignore[union-attr,attr-defined]
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            done.append(name)
    return done


def spectral_norms(model: nn.Module) -> dict[str, float]:
    """Layer name -> the last spectral-norm estimate ``sigma(W)`` of every sigmaReparam layer."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:  # type: ignore[union-attr,attr-defined]
                if isinstance(p, SigmaReparam):
                    out[name] = float(p.get_buffer("spectral_norm"))
    return out


def _entropies(entropy: Tensor | Mapping[str, Tensor]) -> Tensor:
    if isinstance(entropy, Mapping):
        if not entropy:
            raise ValueError("entropy must hold at least one layer's entropies, got an empty mapping")
        return torch.cat(
            [check_tensor(v, f"entropy[{k!r}]", floating=True).reshape(-1) for k, v in entropy.items()]
        )
    return check_tensor(entropy, "entropy", floating=True)


def attention_entropy_penalty(
    entropy: Tensor | Mapping[str, Tensor],
    *,
    floor: float | None = None,
    target: float | None = None,
    tolerance: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Penalty on attention entropies ``H`` (per head, any shape, or the dict of
    ``AttentionMonitor.entropies()``), exactly one of:

    - ``floor``: ``relu(floor - H)^2`` -- only entropy *collapse* below the floor is penalised;
    - ``target``: ``relu(|H - target| - tolerance)^2`` -- a band around the target (entropy-guided
      attention, Jha & Reagen 2025).

    Reduced over all heads with ``reduction`` ("mean", "sum", "none"). Units follow ``H``.

    >>> attention_entropy_penalty(torch.tensor([0.5, 2.0]), floor=1.0)
    tensor(0.1250)
    """
    h = _entropies(entropy)
    check_reduction(reduction)
    if (floor is None) == (target is None):
        raise ValueError(
            f"exactly one of floor and target must be given, got floor={floor!r}, target={target!r}"
        )
    if floor is not None:
        f = check_real(floor, "floor", finite=True)
        pen = F.relu(f - h).square()
    else:
        t = check_real(target, "target", finite=True)
        tol = check_real(tolerance, "tolerance", 0.0, finite=True)
        pen = F.relu((h - t).abs() - tol).square()
    return reduce(pen, reduction)


def aem_loss(scores: Tensor, mask: Tensor | None = None, *, reduction: str = "mean") -> Tensor:
    """AEM's term ``-H(softmax(scores))`` over the last axis (a bag's instances), in nats.

    ``scores``: attention logits (..., N); ``mask`` (bool, same shape, True = a real instance) drops
    padding instances. Add ``lambda * aem_loss(scores)`` to the task loss to maximise attention
    entropy (Zhang et al., 2025). A bag with one instance contributes 0.

    >>> aem_loss(torch.zeros(1, 4))          # uniform attention over 4 instances: -log 4
    tensor(-1.3863)
    """
    check_tensor(scores, "scores", floating=True)
    check_reduction(reduction)
    if mask is not None:
        check_tensor(mask, "mask")
        if mask.dtype != torch.bool or mask.shape != scores.shape:
            raise ValueError(
                f"mask must be a bool tensor of the scores' shape {tuple(scores.shape)}, "
                f"got dtype {mask.dtype} and shape {tuple(mask.shape)}"
            )
        if not bool(mask.any(-1).all()):
            raise ValueError("mask must keep at least one instance in every bag, got a bag with none")
        scores = scores.masked_fill(~mask, -math.inf)
    return reduce(-measures.entropy(scores), reduction)
