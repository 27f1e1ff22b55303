"""Knowledge distillation on logits: forward/reverse KL, generalised JSD, skew KL/RKL, TVD.

All take ``student_logits`` and ``teacher_logits`` of the same shape (..., V), divide both by the
``temperature`` (no T^2 factor, as TRL's GKD trainer and DistiLLM), compute a per-position divergence
in nats and average it over positions whose ``target`` is not ``ignore_index`` (all positions when
``target`` is None). The teacher side is detached. For heads too large to materialise the logits, use
``entropykit.ops.linear_distill`` (same definitions, chunked).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entropykit.losses._common import (
    FunctionalLoss,
    check_index,
    check_logits,
    check_real,
    check_reduction,
    reduce,
)
from entropykit.ops.linear import DIVERGENCES

__all__ = ["DIVERGENCES", "DistillationLoss", "distill_loss"]



def _kl(lp: Tensor, lq: Tensor) -> Tensor:
    """KL(p || q) from log-probs; 0 log 0 = 0."""
    p = lp.exp()
    return torch.where(p > 0, p * (lp - lq), torch.zeros_like(p)).sum(-1)


def _log_mix(la: Tensor, lb: Tensor, wa: float) -> Tensor:
    """log(wa a + (1 - wa) b) in log space."""
    if wa <= 0.0:
        return lb
    if wa >= 1.0:
        return la
    return torch.logaddexp(la + math.log(wa), lb + math.log1p(-wa))


def distill_loss(student_logits: Tensor, teacher_logits: Tensor, *, divergence: str = "forward_kl",
                 beta: float = 0.5, temperature: float = 1.0, target: Tensor | None = None,
                 ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    r"""Distillation divergence between teacher p_T and student p_S = softmax(logits / T).

    - ``"forward_kl"``: KL(p_T || p_S) (Hinton et al. 2015, without the T^2 factor);
    - ``"reverse_kl"``: KL(p_S || p_T) (MiniLLM, Gu et al. 2024);
    - ``"jsd"``: generalised JSD of TRL's GKD trainer (Agarwal et al. 2024):
      M = beta p_T + (1-beta) p_S, beta KL(p_T||M) + (1-beta) KL(p_S||M); beta=0 and beta=1 are
      forward and reverse KL, as TRL defines them;
    - ``"skew_kl"``: KL(p_T || beta p_T + (1-beta) p_S) (DistiLLM SKL, Ko et al. 2024, lambda = beta;
      DistiLLM's code drops the constant teacher entropy, which does not change the gradient);
    - ``"skew_rkl"``: KL(p_S || (1-beta) p_T + beta p_S) (DistiLLM SRKL);
    - ``"tvd"``: 1/2 sum |p_S - p_T|.

    Units: nats (TVD: probability). ``reduction="mean"`` averages over non-ignored positions (0 if
    none), like TRL's ``batchmean`` with labels.

    Example:
        >>> s, t = torch.randn(3, 5), torch.randn(3, 5)
        >>> ref = torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1),
        ...                                  log_target=True, reduction="batchmean")
        >>> bool(torch.allclose(distill_loss(s, t), ref))
        True
    """
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach().to(zs.dtype)
    if zs.shape != zt.shape:
        raise ValueError(f"student_logits and teacher_logits must have the same shape, got "
                         f"{tuple(zs.shape)} and {tuple(zt.shape)}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    b = check_real(beta, "beta", 0.0, 1.0)
    temp = check_real(temperature, "temperature", 0.0, lo_open=True)
    check_reduction(reduction)
    valid = None
    if target is not None:
        valid = check_index(target, zs, ignore_index) != ignore_index
    ls, lt = torch.log_softmax(zs / temp, -1), torch.log_softmax(zt / temp, -1)
    if divergence == "forward_kl" or (divergence == "jsd" and b == 0.0):
        d = _kl(lt, ls)
    elif divergence == "reverse_kl" or (divergence == "jsd" and b == 1.0):
        d = _kl(ls, lt)
    elif divergence == "jsd":
        lm = _log_mix(lt, ls, b)
        d = b * _kl(lt, lm) + (1.0 - b) * _kl(ls, lm)
    elif divergence == "skew_kl":
        if b == 0.0:
            raise ValueError("beta must be > 0 for divergence='skew_kl' (beta=0 makes the mixture p_S alone)")
        d = _kl(lt, _log_mix(lt, ls, b))
    elif divergence == "skew_rkl":
        d = _kl(ls, _log_mix(ls, lt, b))
    else:
        d = 0.5 * (ls.exp() - lt.exp()).abs().sum(-1)
    return reduce(d, reduction, valid)


class DistillationLoss(FunctionalLoss):
    """Module form of :func:`distill_loss`: ``DistillationLoss(divergence="jsd", beta=0.5,
    temperature=2.0)(student_logits, teacher_logits)``; pass ``target=`` at call time to mask."""

    fn = staticmethod(distill_loss)

    def forward(self, input: Tensor, target: Tensor, labels: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return distill_loss(input, target, target=labels, **self.options())
