"""Knowledge distillation on logits: the divergences of ``entropykit.measures``, teacher vs student.

All take ``student_logits`` and ``teacher_logits`` of the same shape (..., V), divide both by the
``temperature`` (no T^2 factor, as TRL's GKD trainer and DistiLLM), compute a per-position divergence
in nats with the registered function of :data:`entropykit.measures.DIVERGENCES` (the one definition;
NaN / +inf logits and all ``-inf`` rows raise ``ValueError`` as there) and average it over positions
whose ``target`` is not ``ignore_index`` (all positions when ``target`` is None). The teacher side is
detached. For heads too large to materialise the logits, use ``entropykit.ops.linear_distill`` (same
names, same definitions, chunked).
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropykit import measures
from entropykit._validate import check_real, check_reduction, check_same_shape, reduce
from entropykit.losses._common import FunctionalLoss, class_target, float_logits

__all__ = ["DIVERGENCES", "DistillationLoss", "distill_loss"]

#: The names :func:`distill_loss` accepts: ``measures.DISTILL_DIVERGENCES`` (earlier names such as
#: ``"jsd"``, ``"forward_kl"`` are aliases, see ``measures.DIVERGENCE_ALIASES``).
DIVERGENCES = measures.DISTILL_DIVERGENCES


def distill_loss(student_logits: Tensor, teacher_logits: Tensor, *, divergence: str = "kl_div",
                 beta: float = 0.5, temperature: float = 1.0, target: Tensor | None = None,
                 ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    r"""Distillation divergence between teacher p_T and student p_S = softmax(logits / T).

    ``divergence`` names a function of :data:`entropykit.measures.DIVERGENCES`, applied as
    D(p_T, p_S); a ``reverse_`` name swaps the arguments, D(p_S, p_T):

    - ``"kl_div"`` (alias ``"forward_kl"``): KL(p_T || p_S) (Hinton et al. 2015, without T^2);
    - ``"reverse_kl_div"`` (alias ``"reverse_kl"``): KL(p_S || p_T) (MiniLLM, Gu et al. 2024);
    - ``"js_div"`` (alias ``"jsd"``): generalised JSD of TRL's GKD trainer (Agarwal et al. 2024):
      M = beta p_T + (1-beta) p_S, beta KL(p_T||M) + (1-beta) KL(p_S||M); beta=0 and beta=1 are
      forward and reverse KL, as TRL defines them;
    - ``"skew_kl"``: KL(p_T || beta p_T + (1-beta) p_S) (DistiLLM SKL, Ko et al. 2024, lambda = beta;
      DistiLLM's code drops the constant teacher entropy, which does not change the gradient);
    - ``"reverse_skew_kl"`` (alias ``"skew_rkl"``): KL(p_S || beta p_S + (1-beta) p_T) (DistiLLM SRKL);
    - ``"tv_distance"`` (alias ``"tvd"``): 1/2 sum |p_S - p_T|.

    ``beta`` in [0, 1] is the divergence's parameter (``js_div``'s beta, ``skew_kl``'s lam).
    Units: nats (TV: probability). ``reduction="mean"`` averages over non-ignored positions (0 if
    none, the rule of ``entropykit._validate.reduce``), like TRL's ``batchmean`` with labels.

    Example:
        >>> s, t = torch.randn(3, 5), torch.randn(3, 5)
        >>> ref = torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1),
        ...                                  log_target=True, reduction="batchmean")
        >>> bool(torch.allclose(distill_loss(s, t), ref))
        True
    """
    zs = float_logits(student_logits, "student_logits")
    zt = float_logits(teacher_logits, "teacher_logits").detach().to(zs.dtype)
    check_same_shape(zs, zt, "student_logits", "teacher_logits")
    div, rev = measures.resolve_divergence(divergence)
    b = check_real(beta, "beta", 0.0, 1.0)
    temp = check_real(temperature, "temperature", 0.0, lo_open=True)
    check_reduction(reduction)
    valid = None
    if target is not None:
        valid = class_target(target, zs, ignore_index) != ignore_index
    measures.check_distributions(zs, "student_logits", valid)
    measures.check_distributions(zt, "teacher_logits", valid)
    p, q = (zs / temp, zt / temp) if rev else (zt / temp, zs / temp)
    kwargs = {div.param: b} if div.param is not None else {}
    if valid is None:
        return reduce(div.fn(p, q, reduction="none", **kwargs), reduction)
    # ignored positions are never looked at (their logits may be anything, as in ops.linear_distill)
    d = div.fn(p[valid], q[valid], reduction="none", **kwargs)
    return reduce(torch.zeros(valid.shape, dtype=d.dtype, device=d.device).masked_scatter(valid, d),
                  reduction, valid)


class DistillationLoss(FunctionalLoss):
    """Module form of :func:`distill_loss`: ``DistillationLoss(divergence="jsd", beta=0.5,
    temperature=2.0)(student_logits, teacher_logits)``; pass ``target=`` at call time to mask."""

    fn = staticmethod(distill_loss)

    def forward(self, input: Tensor, target: Tensor, labels: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return distill_loss(input, target, target=labels, **self.options())
