"""Categorical CEM for discrete design spaces: ``d`` independent choices among ``K`` classes.

The search distribution is a product of categoricals ``p[j, c]`` (Rubinstein 1999, the
combinatorial CEM; de Boer et al. 2005, section 3)::

    x_1..x_n ~ prod_j Cat(p[j, :])                 (ask: (*B, n, d) int64 class indices)
    E = the k samples of lowest f (NaN/inf never elites)
    p'[j, c] = mean_{x in E} 1{x_j = c}
    p <- a p + (1 - a) p'                          a = ``old_weight`` (the weight of the OLD value)
    p <- max(p, prob_min), renormalised            (a floor keeps every class reachable)

Leading dimensions of ``probs`` batch independent problems, as in the Gaussian CEM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_bool, check_int, check_positive, check_real
from entropykit.optim.gaussian import _as_tensor, _elite_count

__all__ = ["CategoricalState", "categorical_ask", "categorical_init", "categorical_tell"]


@dataclass(frozen=True)
class CategoricalState:
    """Class probabilities ``probs`` ``(*B, d, K)`` and the update's settings; ``best_x``
    ``(*B, d)``/``best_f`` ``(*B,)`` are the best finite sample seen (``f`` in the caller's sign)."""

    probs: Tensor
    popsize: int
    n_elites: int
    maximize: bool
    old_weight: float
    prob_min: float
    best_x: Tensor
    best_f: Tensor
    iteration: int = 0
    evaluations: int = 0
    nonfinite: int = 0


def categorical_init(
    probs: Any,
    *,
    popsize: int = 100,
    elite: float | int = 0.1,
    maximize: bool = False,
    old_weight: float = 0.0,
    prob_min: float = 0.0,
) -> CategoricalState:
    """A categorical CEM state from starting class probabilities ``probs`` ``(*B, d, K)`` (rows are
    normalised; ``torch.full((d, K), 1 / K)`` is the uniform start). ``elite``: fraction or count.

    >>> s = categorical_init(torch.full((3, 4), 0.25), popsize=10, elite=0.2)
    >>> s.n_elites, tuple(s.probs.shape)
    (2, (3, 4))
    """
    p = _as_tensor(probs, "probs")
    if p.dim() < 2 or p.shape[-1] < 2 or p.shape[-2] < 1:
        raise ValueError(f"probs must have shape (*B, d, K) with d >= 1 and K >= 2, got {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not bool((p.sum(-1) > 0).all()):
        raise ValueError("probs must be finite, non-negative, with a positive sum in every row")
    p = p / p.sum(-1, keepdim=True)
    popsize = check_int(popsize, "popsize", 1)
    k = _elite_count(elite, popsize)
    check_bool(maximize, "maximize")
    a = check_real(old_weight, "old_weight", 0, 1, hi_open=True)
    pmin = check_positive(prob_min, "prob_min", allow_zero=True)
    if pmin * p.shape[-1] > 1:
        raise ValueError(f"prob_min must be <= 1 / K = {1 / p.shape[-1]}, got {pmin}")
    batch = p.shape[:-2]
    return CategoricalState(
        probs=p, popsize=popsize, n_elites=k, maximize=maximize, old_weight=a, prob_min=pmin,
        best_x=p.argmax(-1), best_f=p.new_full(batch, -math.inf if maximize else math.inf),
    )


def categorical_ask(
    state: CategoricalState, generator: torch.Generator | None = None, popsize: int | None = None
) -> Tensor:
    """Sample ``(*B, popsize, d)`` int64 class indices from the state's categoricals.

    >>> s = categorical_init(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), popsize=3)
    >>> categorical_ask(s, torch.Generator().manual_seed(0)).tolist()
    [[1, 0], [1, 0], [1, 0]]
    """
    if not isinstance(state, CategoricalState):
        raise TypeError(f"state must be a CategoricalState, got {type(state).__name__}")
    n = state.popsize if popsize is None else check_int(popsize, "popsize", 1)
    p = state.probs
    flat = p.reshape(-1, p.shape[-1])
    idx = torch.multinomial(flat, n, replacement=True, generator=generator)  # (rows, n)
    idx = idx.reshape(*p.shape[:-1], n)  # (*B, d, n)
    return idx.transpose(-1, -2).contiguous()


def categorical_tell(state: CategoricalState, x: Any, f: Any) -> CategoricalState:
    """Refit the class probabilities to the elites of ``(x, f)``; return the new state.

    >>> s = categorical_init(torch.full((1, 3), 1 / 3), popsize=4, elite=2)
    >>> x = torch.tensor([[0], [1], [2], [2]])
    >>> categorical_tell(s, x, torch.tensor([3.0, 2.0, 0.0, 1.0])).probs.tolist()
    [[0.0, 0.0, 1.0]]
    """
    if not isinstance(state, CategoricalState):
        raise TypeError(f"state must be a CategoricalState, got {type(state).__name__}")
    p = state.probs
    b, d, kk = p.shape[:-2], p.shape[-2], p.shape[-1]
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x must hold integer class indices, got dtype {x.dtype}")
    if x.dim() != len(b) + 2 or tuple(x.shape[:-2]) != tuple(b) or x.shape[-1] != d or x.shape[-2] == 0:
        raise ValueError(f"x must have shape (*{tuple(b)}, n, {d}) with n >= 1, got {tuple(x.shape)}")
    if bool(((x < 0) | (x >= kk)).any()):
        raise ValueError(f"x must hold class indices in [0, {kk}), got {int(x.min())}..{int(x.max())}")
    ft = _as_tensor(f, "f", p.dtype, p.device)
    if tuple(ft.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"f must have shape {tuple(x.shape[:-1])}, got {tuple(ft.shape)}")
    x = x.long().to(p.device)
    loss = -ft if state.maximize else ft
    finite = torch.isfinite(loss)
    loss = torch.where(finite, loss, torch.full_like(loss, math.inf))
    k = min(state.n_elites, x.shape[-2])
    order = torch.sort(loss, dim=-1, stable=True).indices[..., :k]
    el = torch.gather(loss, -1, order)
    ex = torch.gather(x, -2, order.unsqueeze(-1).expand(*order.shape, d))
    valid = torch.isfinite(el)
    count = valid.sum(-1, keepdim=True)
    w = valid.to(p.dtype) / count.clamp(min=1).to(p.dtype)
    onehot = torch.nn.functional.one_hot(ex, kk).to(p.dtype)  # (*B, k, d, K)
    p_new = torch.einsum("...k,...kdc->...dc", w, onehot)
    has = (count > 0).squeeze(-1)[..., None, None]
    a = state.old_weight
    probs = torch.where(has, a * p + (1 - a) * p_new, p)
    if state.prob_min > 0:
        probs = probs.clamp(min=state.prob_min)
        probs = probs / probs.sum(-1, keepdim=True)
    gen_best, gi = loss.min(-1)
    cur = -state.best_f if state.maximize else state.best_f
    better = gen_best < cur
    gx = torch.gather(x, -2, gi[..., None, None].expand(*gi.shape, 1, d)).squeeze(-2)
    best = torch.where(better, gen_best, cur)
    return replace(
        state, probs=probs, best_x=torch.where(better.unsqueeze(-1), gx, state.best_x),
        best_f=-best if state.maximize else best, iteration=state.iteration + 1,
        evaluations=state.evaluations + x.shape[-2], nonfinite=state.nonfinite + int((~finite).sum()),
    )
