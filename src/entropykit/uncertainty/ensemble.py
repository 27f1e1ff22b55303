"""Ensembles, MC dropout and early exits: total = aleatoric + epistemic, and the early-exit cascade.

For M predictive distributions p_1..p_M of one input (ensemble members, dropout masks, exits),

    total      H(p_bar),              p_bar = (1/M) sum_m p_m       (predictive entropy)
    aleatoric  (1/M) sum_m H(p_m)                                   (expected entropy)
    epistemic  (1/M) sum_m KL(p_m || p_bar) = I(y; m)               (mutual information, BALD)

and total = aleatoric + epistemic exactly (Houlsby et al. 2011, BALD; Depeweg et al. 2018;
Gal & Ghahramani 2016 for MC dropout). Each term is computed by its own formula (entropies and KL
divergences from :mod:`entropykit.measures`), so the identity is a check, not a definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from entropykit import measures
from entropykit._validate import check_int, check_positive, check_real, check_tensor
from entropykit.measures import check_distributions

__all__ = ["Cascade", "Decomposition", "decompose", "early_exit_cascade", "mc_dropout"]


class Decomposition(NamedTuple):
    """``total``, ``aleatoric``, ``epistemic`` with the inputs' shape without the member and class axes."""

    total: Tensor
    aleatoric: Tensor
    epistemic: Tensor


def decompose(logits: Tensor, *, dim: int = 0, base: float | None = None) -> Decomposition:
    """Split the predictive entropy of M members into aleatoric and epistemic parts.

    ``logits``: (..., M at ``dim``, ..., K), one distribution per member over the last axis
    (log-probabilities are valid logits). total = H(p_bar), aleatoric = mean_m H(p_m), epistemic =
    mean_m KL(p_m || p_bar) (the mutual information between the label and the member, BALD);
    total = aleatoric + epistemic up to rounding. Units: nats, or ``log base`` units. Computed in
    float64 for float64 input, float32 otherwise.

    >>> z = torch.tensor([[[4.0, 0.0]], [[0.0, 4.0]]])      # two members who disagree
    >>> d = decompose(z)
    >>> [round(float(x), 4) for x in d]
    [0.6931, 0.0901, 0.6031]
    """
    check_distributions(logits, "logits")
    if logits.dim() < 2:
        raise ValueError(f"logits must have a member axis and a class axis, got shape {tuple(logits.shape)}")
    d = dim if dim >= 0 else logits.dim() + dim
    if not 0 <= d < logits.dim() - 1:
        raise ValueError(
            f"dim must index a member axis other than the class axis, got {dim} "
            f"for shape {tuple(logits.shape)}"
        )
    z = logits.movedim(d, 0)
    m = z.shape[0]
    if m == 0:
        raise ValueError("logits must hold at least one member, got 0")
    lp = torch.log_softmax(z.double() if z.dtype == torch.float64 else z.float(), -1)
    log_mean = torch.logsumexp(lp, 0) - math.log(m)
    total = measures.entropy(log_mean, base=base)
    aleatoric = measures.entropy(lp, base=base).mean(0)
    epistemic = measures.kl_div(lp, log_mean.expand_as(lp), base=base).mean(0)
    return Decomposition(total, aleatoric, epistemic)


def mc_dropout(model: nn.Module, x: Any, n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``n`` stochastic forward passes of ``model(x)`` with only its dropout layers in training mode.

    Returns the stacked outputs (n, ...) (feed them to :func:`decompose`). BatchNorm and every
    other layer stay in their current mode; each layer's mode is restored afterwards. The dropout
    masks come from ``generator``: a seed drawn from it drives torch's RNG inside
    ``torch.random.fork_rng``, so the global random state is left untouched. No gradients.
    Source: Gal & Ghahramani 2016 (arXiv:1506.02142).

    >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    >>> out = mc_dropout(net.eval(), torch.randn(2, 4), 8, generator=torch.Generator().manual_seed(0))
    >>> out.shape, bool(out.std(0).max() > 0), net.training
    (torch.Size([8, 2, 3]), True, False)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_int(n, "n", 1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    drops = [mod for mod in model.modules() if isinstance(mod, nn.modules.dropout._DropoutNd)]
    if not drops:
        raise ValueError(
            f"model must contain dropout layers for MC dropout, got none in {type(model).__name__}"
        )
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    modes = [mod.training for mod in drops]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for mod in drops:
                mod.train()
            return torch.stack([model(x) for _ in range(n)])
    finally:
        for mod, mode in zip(drops, modes):
            mod.train(mode)


@dataclass(frozen=True)
class Cascade:
    """Result of :func:`early_exit_cascade`: the chosen ``exit`` per position (lead shape), the chosen
    exit's ``logits``, the windowed ``uncertainty`` that decided (at the chosen exit), the mean
    ``cost`` relative to always running the last exit, and ``compute_saved`` = 1 - cost."""

    exit: Tensor
    logits: Tensor
    uncertainty: Tensor
    cost: float
    compute_saved: float


def early_exit_cascade(
    exit_logits: Tensor,
    threshold: float,
    *,
    window: int = 1,
    costs: Any = None,
    uncertainty: Callable[[Tensor], Tensor] | None = None,
    base: float | None = None,
) -> Cascade:
    """Stop at the first exit whose windowed uncertainty is below ``threshold``.

    ``exit_logits``: (E, ..., V), the logits of E exits (shallow to deep) for the same positions;
    the last lead axis is time when ``window`` > 1. Per exit e the token uncertainty u_e (default:
    entropy, nats or ``log base`` units; or ``uncertainty(logits) -> (...)``) is averaged over the
    last ``window`` positions (:func:`entropykit.measures.rolling_mean`), and each position takes
    the first e with mean < ``threshold`` (else the last exit). ``costs`` (E,): the relative cost of
    running up to each exit (default (e + 1) / E, one block per exit); the cost is the mean of the
    chosen exits' costs over the last exit's. The offline simulation of entropy-based early exiting
    (Xin et al. 2020, DeeBERT; Schuster et al. 2022, CALM) with the window rule of window-based
    early-exit cascades.

    >>> confident, unsure = torch.tensor([5.0, 0.0, 0.0]), torch.zeros(3)
    >>> ex = torch.stack([torch.stack([confident, unsure]), torch.stack([confident, confident])])
    >>> c = early_exit_cascade(ex, 0.5)            # position 0 stops at exit 0, position 1 goes on
    >>> c.exit.tolist(), c.compute_saved
    ([0, 1], 0.25)
    """
    check_distributions(exit_logits, "exit_logits")
    if exit_logits.dim() < 2 or exit_logits.shape[0] == 0:
        raise ValueError(
            f"exit_logits must have shape (n_exits >= 1, ..., V), got {tuple(exit_logits.shape)}"
        )
    t = check_real(threshold, "threshold")
    w = check_int(window, "window", 1)
    e_count = exit_logits.shape[0]
    if costs is None:
        cost = torch.arange(1, e_count + 1, dtype=torch.float64) / e_count
    else:
        cost = torch.as_tensor(costs, dtype=torch.float64)
        if cost.shape != (e_count,) or not bool(torch.isfinite(cost).all()) or bool((cost <= 0).any()):
            raise ValueError(
                f"costs must hold {e_count} positive finite numbers (one per exit), got {costs!r}"
            )
    if uncertainty is None:
        u = measures.entropy(exit_logits, base=base)
    else:
        if not callable(uncertainty):
            raise TypeError(
                f"uncertainty must be a callable logits -> values, got {type(uncertainty).__name__}"
            )
        u = uncertainty(exit_logits)
        check_tensor(u, "uncertainty(exit_logits)")
        if u.shape != exit_logits.shape[:-1]:
            raise ValueError(
                f"uncertainty(exit_logits) must have shape {tuple(exit_logits.shape[:-1])}, "
                f"got {tuple(u.shape)}"
            )
    if w > 1:
        if exit_logits.dim() < 3:
            raise ValueError("window > 1 needs a time axis: exit_logits of shape (n_exits, ..., T, V)")
        u = measures.rolling_mean(u, w)
    below = u < t
    below[-1] = True
    chosen = below.long().argmax(0)  # the first exit below the threshold
    logits = exit_logits.gather(0, chosen[None, ..., None].expand(1, *exit_logits.shape[1:])).squeeze(0)
    picked_u = u.gather(0, chosen[None]).squeeze(0)
    mean_cost = float(cost[chosen].mean() / cost[-1])
    check_positive(mean_cost, "cost")
    return Cascade(chosen, logits, picked_u, mean_cost, 1.0 - mean_cost)
