"""Gaussian cross-entropy method (CEM): a functional ask/tell core, a thin optimizer, ``minimize``.

One generation of CEM (Rubinstein 1999; de Boer et al. 2005, "A tutorial on the cross-entropy
method") with a Gaussian search distribution ``N(m, C)`` (``C`` diagonal or full), written for
minimisation of ``f`` (maximisation ranks ``-f``)::

    x_1..x_n ~ N(m, C)                                     (ask; bounds clip or reflect the samples)
    E = the k samples of lowest f; NaN/inf values are never in E       (tell)
    m' = mean_{x in E} x
    C' = mean_{x in E} (x - c)(x - c)^T,   c = m'  (``variance_center="new"``, the ML refit)
                                           c = m   (``"old"``: the rank-mu estimate of CMA-ES)
    m <- a_m m + (1 - a_m) m'          a_m = ``old_weight_mean``  (the weight of the OLD value,
    C <- a_C C + (1 - a_C) C' + z_t I  a_C = ``old_weight_var``    as mbrl-lib's ``alpha``)
    std = sqrt(diag C) clamped to [std_min, std_max]   (full C: eigenvalues clamped to std^2 bounds)

``a_m``/``a_C`` may be schedules ``t -> weight``: ``dynamic_smoothing(beta, q)`` is the dynamic
smoothing of Kroese, Porotsky & Rubinstein (2006, "The cross-entropy method for continuous
multi-extremal optimization"), new weight ``beta_t = beta - beta (1 - 1/t)^q`` (t = 1, 2, ...), which
slows the covariance's shrinking from geometric to polynomial.

**Adaptive variance scaling** (``adaptive_scaling=True``; Bosman, Grahl & Thierens 2008/2013,
AMaLGaM) samples from ``N(m, c C)`` with a per-problem multiplier ``c``: when a generation improves
on the best so far, ``c <- max(c, 1)``, and ``c <- c / 0.9`` if the improving samples' mean lies more
than one standard deviation from ``m`` along some principal axis of ``C`` (the standard-deviation
ratio, SDR > 1: the distribution is being outrun); after ``avs_patience`` generations without an
improvement ``c <- 0.9 c``. The **anticipated mean shift** (``mean_shift = delta``) moves the first
``k // 2`` samples of each population by ``c * delta * s``, ``s <- a_s s + (1 - a_s)(m_new - m_old)``
the smoothed mean step (``old_weight_shift = a_s``). ``amalgam_options(d)`` returns AMaLGaM-Full's
parameter-free settings; with them CEM solves the 10-D Rosenbrock function, where the plain and the
smoothed refits stall in the curved valley (``benchmarks/optim.py``).

``z_t`` is the added-noise schedule (Szita & Lőrincz 2006, "Learning Tetris using the noisy
cross-entropy method": ``z_t = max(5 - t / 10, 0)``; ``linear_noise(5, 0.1)``). The covariance is
the maximum-likelihood estimate (divide by the number of elites), so a single elite gives a zero
variance (then the floor), never NaN. Every leading dimension of ``mean`` is a batch of independent
problems (model-predictive control plans many at once): ``x`` has shape ``(*B, n, d)`` and ``f``
``(*B, n)``.

``variance_center="old"`` measures the elites' spread around the mean they were sampled from: when
the elites lie on one side (the mean is still travelling), the variance along that direction grows
instead of collapsing, which is why it is the default (Hansen 2016, "The CMA evolution strategy: a
tutorial", section 3.2; the plain ML refit's early collapse is the failure the issue measured).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from entropykit._validate import check_bool, check_choice, check_int, check_positive, check_real

__all__ = [
    "CEM",
    "CEMState",
    "OptimizeResult",
    "amalgam_options",
    "cem_ask",
    "cem_init",
    "cem_tell",
    "dynamic_smoothing",
    "linear_noise",
    "minimize",
]

NoiseSchedule = float | Callable[[int], float]
Weight = float | Callable[[int], float]
_AVS_UP, _AVS_DOWN, _SDR, _TOL_SCALE = 1 / 0.9, 0.9, 1.0, 1e-10


def linear_noise(start: float, slope: float) -> Callable[[int], float]:
    """The noisy-CEM schedule ``z_t = max(start - slope * t, 0)`` (variance added at iteration t).

    Szita & Lőrincz (2006) use ``start=5, slope=0.1``.

    >>> z = linear_noise(5.0, 0.1)
    >>> z(0), z(10), z(100)
    (5.0, 4.0, 0.0)
    """
    a = check_positive(start, "start", allow_zero=True)
    b = check_positive(slope, "slope", allow_zero=True)
    return lambda t: max(a - b * t, 0.0)


def dynamic_smoothing(beta: float = 0.8, q: float = 6.0) -> Callable[[int], float]:
    """Kroese, Porotsky & Rubinstein's (2006) dynamic smoothing as an OLD-value weight schedule.

    At iteration ``t`` (0-based; the paper's ``t + 1``) the new estimate gets the weight
    ``beta_t = beta - beta (1 - 1/(t + 1))^q`` and the old value ``1 - beta_t``: ``beta`` at the
    first update, then ``~ beta q / t``, so the variance shrinks polynomially instead of
    geometrically. The paper suggests ``beta`` in [0.8, 0.99] and ``q`` in [5, 10]. Pass it as
    ``old_weight_var`` (or ``old_weight_mean``); note that ``old_weight_var`` smooths the variance
    (the covariance matrix), where the paper smooths the standard deviation.

    >>> w = dynamic_smoothing(0.8, 6)
    >>> round(w(0), 3), round(w(1), 4), w(1000) > 0.99
    (0.2, 0.2125, True)
    """
    b = check_real(beta, "beta", 0, 1, lo_open=True)
    qq = check_positive(q, "q")
    return lambda t: 1.0 - (b - b * (1.0 - 1.0 / (t + 1)) ** qq)


def amalgam_options(dim: int) -> dict[str, Any]:
    """AMaLGaM-Full's parameter-free settings (Bosman, Grahl & Thierens 2013) as ``cem_init`` options.

    Population ``n = 17 + 3 d^1.5``, elite fraction ``tau = 0.35`` (``k = tau n``), full covariance
    refitted around the new mean, covariance weight ``eta_C = 1 - exp(-1.1 k^1.2 d^-1.6)`` (the old
    value's weight ``1 - eta_C``), adaptive variance scaling, anticipated mean shift ``delta = 2``
    with ``eta_s = 1 - exp(-1.2 k^0.31 d^-0.5)``, and one elite kept (elitism).

    >>> o = amalgam_options(10)
    >>> o["popsize"], o["elite"], o["covariance"], round(o["old_weight_var"], 3)
    (111, 0.35, 'full', 0.114)
    """
    d = check_int(dim, "dim", 1)
    n = int(17 + 3 * d**1.5)
    k = int(0.35 * n)
    return {
        "popsize": n,
        "elite": 0.35,
        "covariance": "full",
        "variance_center": "new",
        "old_weight_var": math.exp(-1.1 * k**1.2 * d**-1.6),
        "adaptive_scaling": True,
        "mean_shift": 2.0,
        "old_weight_shift": math.exp(-1.2 * k**0.31 * d**-0.5),
        "keep_elites": 1,
    }


def _weight(w: Weight, t: int, name: str) -> float:
    """The smoothing weight at iteration ``t``: the number, or the schedule's value checked in [0, 1)."""
    if not callable(w):
        return w
    v = w(t)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"{name} schedule must return a number in [0, 1), got {v!r} at iteration {t}")
    return float(v)



def _elite_count(elite: Any, popsize: int) -> int:
    """The number of elites: ``elite`` as a count (int in [1, popsize]) or a fraction (float in
    (0, 1], rounded, at least 1) of ``popsize``; shared by the Gaussian and categorical CEM."""
    if isinstance(elite, bool) or not isinstance(elite, (int, float)):
        raise TypeError(f"elite must be a fraction (float) or a count (int), got {type(elite).__name__}")
    if isinstance(elite, int):
        n = check_int(elite, "elite", 1)
        if n > popsize:
            raise ValueError(f"elite must be <= popsize ({popsize}), got {n} elites")
        return n
    return max(1, round(check_real(elite, "elite", 0, 1, lo_open=True) * popsize))

def _as_tensor(x: Any, name: str, dtype: torch.dtype | None = None, device: Any = None) -> Tensor:
    """A tensor from a tensor, NumPy array, sequence or number; TypeError naming ``name`` otherwise."""
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple, int, float, np.floating, np.integer)) and not isinstance(
        x, bool
    ):
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be numeric (tensor, array or numbers), got {x!r}") from exc
    else:
        raise TypeError(f"{name} must be a tensor, array or number, got {type(x).__name__}")
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype in _INTS):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if dtype is not None:
        t = t.to(dtype=dtype, device=device)
    elif not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


@dataclass(frozen=True)
class CEMState:
    """The state of a (batched) Gaussian CEM run: the search distribution plus its settings.

    ``mean`` has shape ``(*B, d)``; ``cov`` holds the variances ``(*B, d)`` (``covariance="diag"``)
    or the covariance matrices ``(*B, d, d)`` (``"full"``); ``scale`` is the matching sampling factor
    (the standard deviations, or ``A`` with ``A A^T = cov``). ``elite_x``/``elite_f`` are the elites
    carried to the next ``cem_tell`` (``keep_elites`` of them; ``elite_f`` in minimisation sign).
    ``best_x``/``best_f`` are the best finite sample seen per problem (``f`` in the caller's sign);
    ``evaluations`` counts the objective values told per problem, ``nonfinite`` the NaN/inf values
    told (over the whole batch). ``var_scale`` (``(*B,)``) is the adaptive-variance multiplier
    ``c`` (sampling from ``N(m, c C)``; 1 without ``adaptive_scaling``), ``stall`` the generations
    without improvement, ``shift`` (``(*B, d)``) the smoothed mean step of the anticipated mean shift.
    Never mutated: ``cem_tell`` returns a new state.
    """

    mean: Tensor
    cov: Tensor
    scale: Tensor
    covariance: str
    popsize: int
    n_elites: int
    maximize: bool
    old_weight_mean: Weight
    old_weight_var: Weight
    std_min: float
    std_max: float
    noise: NoiseSchedule
    lower: Tensor | None
    upper: Tensor | None
    bounds_mode: str
    variance_center: str
    keep_elites: int
    elite_x: Tensor
    elite_f: Tensor
    best_x: Tensor
    best_f: Tensor
    adaptive_scaling: bool
    avs_patience: int
    var_scale: Tensor
    stall: Tensor
    mean_shift: float
    old_weight_shift: float
    n_shift: int
    shift: Tensor
    iteration: int = 0
    evaluations: int = 0
    nonfinite: int = 0
    std0: Tensor | None = field(default=None, repr=False)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape[:-1])

    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def std(self) -> Tensor:
        """Per-coordinate sampling standard deviations ``sqrt(c diag C)``, shape ``(*B, d)``."""
        if self.covariance == "diag":
            s = self.scale
        else:
            s = torch.diagonal(self.cov, dim1=-2, dim2=-1).clamp(min=0).sqrt()
        return s if not self.adaptive_scaling else s * self.var_scale.sqrt().unsqueeze(-1)


def _bounds(
    lower: Any, upper: Any, d: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    lo = None if lower is None else _as_tensor(lower, "lower", dtype, device)
    hi = None if upper is None else _as_tensor(upper, "upper", dtype, device)
    for t, name in ((lo, "lower"), (hi, "upper")):
        if t is not None:
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, d)):
                raise ValueError(
                    f"{name} must be a number or a vector of length {d}, got shape {tuple(t.shape)}"
                )
            if bool(torch.isnan(t).any()):
                raise ValueError(f"{name} must not be NaN, got {t.tolist()}")
    if lo is not None and hi is not None and not bool((lo < hi).all()):
        raise ValueError(f"lower must be < upper everywhere, got lower={lo.tolist()} and upper={hi.tolist()}")
    return lo, hi


def _apply_bounds(x: Tensor, lo: Tensor | None, hi: Tensor | None, mode: str) -> Tensor:
    if lo is None and hi is None:
        return x
    if mode == "reflect" and lo is not None and hi is not None and bool(torch.isfinite(hi - lo).all()):
        w = hi - lo
        y = torch.remainder(x - lo, 2 * w)
        return lo + (w - (y - w).abs())
    if mode == "reflect":  # one-sided: mirror at the finite bound
        if lo is not None:
            x = torch.where(x < lo, 2 * lo - x, x)
        if hi is not None:
            x = torch.where(x > hi, 2 * hi - x, x)
    return x.clamp(min=lo, max=hi)


def _factor(cov: Tensor, std_min: float, std_max: float) -> tuple[Tensor, Tensor]:
    """Full covariance: clamp its eigenvalues to [std_min^2, std_max^2]; return (cov, A), A A^T = cov."""
    sym = 0.5 * (cov + cov.transpose(-1, -2))
    lam, vec = torch.linalg.eigh(sym)
    lam = lam.clamp(min=max(std_min, 0.0) ** 2, max=std_max**2)
    a = vec * lam.sqrt().unsqueeze(-2)
    return (vec * lam.unsqueeze(-2)) @ vec.transpose(-1, -2), a


def cem_init(
    mean: Any,
    std: Any = 1.0,
    *,
    popsize: int = 100,
    elite: float | int = 0.1,
    covariance: str = "diag",
    maximize: bool = False,
    old_weight_mean: Weight = 0.0,
    old_weight_var: Weight = 0.0,
    std_min: float = 0.0,
    std_max: float = math.inf,
    noise: NoiseSchedule = 0.0,
    lower: Any = None,
    upper: Any = None,
    bounds_mode: str = "clip",
    variance_center: str = "old",
    keep_elites: int | float = 0,
    adaptive_scaling: bool = False,
    avs_patience: int | None = None,
    mean_shift: float = 0.0,
    old_weight_shift: float = 0.0,
) -> CEMState:
    """A fresh CEM state: search distribution ``N(mean, diag(std^2))`` and the update's settings.

    ``mean`` (tensor, array or list) has shape ``(*B, d)``: every leading dimension is a batch of
    independent problems. ``std`` is a positive number, a ``(d,)`` vector or a ``(*B, d)`` tensor.
    ``elite`` is a fraction of ``popsize`` (float in (0, 1]) or a count (int >= 1); ``keep_elites``
    likewise a fraction of the elites or a count, carried into the next ``cem_tell`` (elite memory,
    as iCEM). ``old_weight_mean``/``old_weight_var`` are the smoothing weights **of the old value**
    (0 = no smoothing), numbers or schedules ``t -> weight`` (``dynamic_smoothing``). ``noise`` is
    a variance added at each iteration (a number or a schedule
    ``t -> z_t``, see ``linear_noise``). ``lower``/``upper`` bound the samples (``bounds_mode``
    ``"clip"`` or ``"reflect"``). ``variance_center``: ``"old"`` (the spread around the sampling
    mean, default) or ``"new"`` (the plain ML refit around the elites' mean).
    ``adaptive_scaling`` turns on AMaLGaM's variance multiplier (``avs_patience`` generations
    without improvement before it shrinks; default ``25 + d``), ``mean_shift`` (delta, 0 = off) and
    ``old_weight_shift`` the anticipated mean shift; ``amalgam_options(d)`` gives the paper's
    settings. The module docstring has the update equations. With
    ``covariance="full"`` smooth the covariance (``old_weight_var=0.5``, ``elite=0.2``): the
    unsmoothed full estimate around the old mean overshoots and diverged on the 10-D ellipsoid,
    while the diagonal one needs no smoothing (``benchmarks/optim.py``).

    >>> s = cem_init(torch.zeros(3), 0.5, popsize=20, elite=0.25)
    >>> s.n_elites, s.std.tolist(), s.batch_shape
    (5, [0.5, 0.5, 0.5], ())
    """
    m = _as_tensor(mean, "mean")
    if m.dim() < 1 or m.shape[-1] == 0:
        raise ValueError(f"mean must have shape (*B, d) with d >= 1, got shape {tuple(m.shape)}")
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"mean must be finite, got {m.flatten()[~torch.isfinite(m.flatten())][0].item()}")
    d = m.shape[-1]
    s = _as_tensor(std, "std", m.dtype, m.device)
    if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ValueError(f"std must be positive and finite, got {s.flatten()[:8].tolist()}")
    try:
        s = torch.broadcast_to(s, m.shape).clone()
    except RuntimeError:
        raise ValueError(
            f"std must broadcast to mean's shape {tuple(m.shape)}, got shape {tuple(s.shape)}"
        ) from None
    popsize = check_int(popsize, "popsize", 1)
    n_elites = _elite_count(elite, popsize)
    covariance = check_choice(covariance, ("diag", "full"), "covariance")
    check_bool(maximize, "maximize")
    a_m = old_weight_mean if callable(old_weight_mean) else check_real(
        old_weight_mean, "old_weight_mean", 0, 1, hi_open=True
    )
    a_v = old_weight_var if callable(old_weight_var) else check_real(
        old_weight_var, "old_weight_var", 0, 1, hi_open=True
    )
    check_bool(adaptive_scaling, "adaptive_scaling")
    patience = 25 + d if avs_patience is None else check_int(avs_patience, "avs_patience", 1)
    delta = check_positive(mean_shift, "mean_shift", allow_zero=True)
    a_s = check_real(old_weight_shift, "old_weight_shift", 0, 1, hi_open=True)
    std_min = check_positive(std_min, "std_min", allow_zero=True)
    std_max = check_positive(std_max, "std_max", allow_inf=True)
    if std_max < std_min:
        raise ValueError(f"std_max must be >= std_min ({std_min}), got {std_max}")
    if not callable(noise):
        noise = check_positive(noise, "noise", allow_zero=True)
    bounds_mode = check_choice(bounds_mode, ("clip", "reflect"), "bounds_mode")
    variance_center = check_choice(variance_center, ("old", "new"), "variance_center")
    if isinstance(keep_elites, bool) or not isinstance(keep_elites, (int, float)):
        raise TypeError(
            f"keep_elites must be a fraction (float) or a count (int), got {type(keep_elites).__name__}"
        )
    if isinstance(keep_elites, int):
        keep = check_int(keep_elites, "keep_elites", 0, n_elites)
    else:
        keep = round(check_real(keep_elites, "keep_elites", 0, 1) * n_elites)
    lo, hi = _bounds(lower, upper, d, m.dtype, m.device)
    if lo is not None or hi is not None:
        m = _apply_bounds(m, lo, hi, "clip")
    s = s.clamp(min=std_min, max=std_max)
    batch = m.shape[:-1]
    if covariance == "diag":
        cov, scale = s**2, s
    else:
        cov = torch.diag_embed(s**2)
        scale = torch.diag_embed(s)
    return CEMState(
        mean=m, cov=cov, scale=scale, covariance=covariance, popsize=popsize, n_elites=n_elites,
        maximize=maximize, old_weight_mean=a_m, old_weight_var=a_v, std_min=std_min, std_max=std_max,
        noise=noise, lower=lo, upper=hi, bounds_mode=bounds_mode, variance_center=variance_center,
        keep_elites=keep, elite_x=m.new_zeros((*batch, 0, d)), elite_f=m.new_zeros((*batch, 0)),
        best_x=m.clone(), best_f=m.new_full(batch, -math.inf if maximize else math.inf),
        adaptive_scaling=adaptive_scaling, avs_patience=patience, var_scale=m.new_ones(batch),
        stall=torch.zeros(batch, dtype=torch.long, device=m.device), mean_shift=delta, old_weight_shift=a_s,
        n_shift=n_elites // 2 if delta > 0 else 0, shift=torch.zeros_like(m), std0=s,
    )


def cem_ask(state: CEMState, generator: torch.Generator | None = None, popsize: int | None = None) -> Tensor:
    """Sample a population ``x`` of shape ``(*B, popsize, d)`` from the state's Gaussian.

    ``x = m + A z`` with ``z ~ N(0, I)`` drawn from ``generator`` (``A = diag(std)`` or the full
    factor; times ``sqrt(c)`` with adaptive scaling), the first ``k // 2`` moved by the anticipated
    mean shift ``c * delta * s`` when ``mean_shift > 0``, then clipped or reflected into the bounds.
    ``popsize`` overrides the state's.

    >>> s = cem_init(torch.zeros(2, 3), popsize=8)   # two problems of dimension 3
    >>> cem_ask(s, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 8, 3])
    """
    if not isinstance(state, CEMState):
        raise TypeError(f"state must be a CEMState (from cem_init), got {type(state).__name__}")
    n = state.popsize if popsize is None else check_int(popsize, "popsize", 1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    m = state.mean
    z = torch.randn((*m.shape[:-1], n, m.shape[-1]), generator=generator, dtype=m.dtype, device=m.device)
    if state.adaptive_scaling:
        z.mul_(state.var_scale.sqrt()[..., None, None])
    if state.covariance == "diag":
        x = z.mul_(state.scale.unsqueeze(-2)).add_(m.unsqueeze(-2))
    else:
        x = m.unsqueeze(-2) + z @ state.scale.transpose(-1, -2)
    j = min(state.n_shift, n)
    if j > 0 and state.iteration > 0:
        step = state.mean_shift * state.var_scale.unsqueeze(-1) * state.shift
        x[..., :j, :] += step.unsqueeze(-2)
    return _apply_bounds(x, state.lower, state.upper, state.bounds_mode)


def _check_told(state: CEMState, x: Any, f: Any) -> tuple[Tensor, Tensor]:
    m = state.mean
    xt = _as_tensor(x, "x", m.dtype, m.device)
    ft = _as_tensor(f, "f", m.dtype, m.device)
    b, d = state.batch_shape, state.dim
    if xt.dim() != len(b) + 2 or tuple(xt.shape[:-2]) != b or xt.shape[-1] != d or xt.shape[-2] == 0:
        raise ValueError(f"x must have shape (*{b}, n, {d}) with n >= 1, got shape {tuple(xt.shape)}")
    if tuple(ft.shape) != tuple(xt.shape[:-1]):
        raise ValueError(
            f"f must have shape {tuple(xt.shape[:-1])} (one value per row of x), got {tuple(ft.shape)}"
        )
    return xt, ft


def cem_tell(state: CEMState, x: Any, f: Any) -> CEMState:
    """Refit the search distribution to the elites of ``(x, f)``; return the new state.

    ``x`` is ``(*B, n, d)`` (normally from ``cem_ask``), ``f`` its objective values ``(*B, n)``
    (tensor or NumPy). NaN and +-inf values are ranked last and never become elites; a problem
    with fewer finite values than elites refits on the finite ones only, and one with none keeps
    its distribution. The elites kept from the previous tell (``keep_elites``) compete with ``x``.
    Ties are broken by position (stable sort), so the update depends on the ranks of ``f`` only.

    >>> s = cem_init(torch.zeros(1), 1.0, popsize=4, elite=2, variance_center="new")
    >>> x = torch.tensor([[-1.0], [0.5], [2.0], [3.0]])
    >>> s = cem_tell(s, x, (x[:, 0] - 1.0) ** 2)    # elites: 0.5 and 2.0
    >>> s.mean.tolist(), s.std.tolist()
    ([1.25], [0.75])
    """
    if not isinstance(state, CEMState):
        raise TypeError(f"state must be a CEMState (from cem_init), got {type(state).__name__}")
    xt, ft = _check_told(state, x, f)
    loss = -ft if state.maximize else ft
    finite = torch.isfinite(loss)
    n_bad = int((~finite).sum())
    loss = torch.where(finite, loss, torch.full_like(loss, math.inf))
    # best finite sample of this generation
    gen_best, gen_idx = loss.min(dim=-1)
    cur_best = -state.best_f if state.maximize else state.best_f
    better = gen_best < cur_best
    gx = torch.gather(xt, -2, gen_idx[..., None, None].expand(*gen_idx.shape, 1, state.dim)).squeeze(-2)
    best_x = torch.where(better.unsqueeze(-1), gx, state.best_x)
    best_loss = torch.where(better, gen_best, cur_best)
    # elite memory competes with the new population
    all_x, all_l = xt, loss
    if state.elite_x.shape[-2] > 0:
        all_x = torch.cat([xt, state.elite_x], dim=-2)
        all_l = torch.cat([loss, state.elite_f], dim=-1)
    k = min(state.n_elites, all_l.shape[-1])
    order = torch.sort(all_l, dim=-1, stable=True).indices[..., :k]
    el = torch.gather(all_l, -1, order)
    ex = torch.gather(all_x, -2, order.unsqueeze(-1).expand(*order.shape, state.dim))
    valid = torch.isfinite(el)
    if not bool(torch.isfinite(ex[valid]).all()):  # checked on the elites only: one pass over k rows
        raise ValueError("x must be finite (the population cem_ask returned), got NaN or inf entries")
    count = valid.sum(-1, keepdim=True)
    w = valid.to(xt.dtype) / count.clamp(min=1).to(xt.dtype)  # (*B, k)
    has = (count > 0).squeeze(-1)
    m_old = state.mean
    m_new = (w.unsqueeze(-2) @ ex).squeeze(-2)
    center = m_old if state.variance_center == "old" else m_new
    diff = ex - center.unsqueeze(-2)
    a_m = _weight(state.old_weight_mean, state.iteration, "old_weight_mean")
    a_v = _weight(state.old_weight_var, state.iteration, "old_weight_var")
    z = float(state.noise(state.iteration)) if callable(state.noise) else float(state.noise)
    mean = torch.where(has.unsqueeze(-1), a_m * m_old + (1 - a_m) * m_new, m_old)
    if state.covariance == "diag":
        v_new = (w.unsqueeze(-2) @ (diff * diff)).squeeze(-2)
        var = torch.where(has.unsqueeze(-1), a_v * state.cov + (1 - a_v) * v_new, state.cov) + z
        std = var.clamp(min=0).sqrt().clamp(min=state.std_min, max=state.std_max)
        cov, scale = std**2, std
    else:
        c_new = (diff * w.unsqueeze(-1)).transpose(-1, -2) @ diff
        c = torch.where(has[..., None, None], a_v * state.cov + (1 - a_v) * c_new, state.cov)
        c = c + z * torch.eye(state.dim, dtype=c.dtype, device=c.device)
        cov, scale = _factor(c, state.std_min, state.std_max)
    if state.lower is not None or state.upper is not None:
        mean = _apply_bounds(mean, state.lower, state.upper, "clip")
    var_scale, stall, shift = state.var_scale, state.stall, state.shift
    if state.adaptive_scaling:
        var_scale, stall = _avs(state, xt, loss, cur_best)
    if state.mean_shift > 0:
        a_s = state.old_weight_shift
        shift = torch.where(has.unsqueeze(-1), a_s * shift + (1 - a_s) * (mean - m_old), shift)
    n_keep = min(state.keep_elites, k)
    return replace(
        state, mean=mean, cov=cov, scale=scale, var_scale=var_scale, stall=stall, shift=shift,
        elite_x=ex[..., :n_keep, :], elite_f=el[..., :n_keep],
        best_x=best_x, best_f=-best_loss if state.maximize else best_loss, iteration=state.iteration + 1,
        evaluations=state.evaluations + xt.shape[-2], nonfinite=state.nonfinite + n_bad,
    )


def _avs(state: CEMState, x: Tensor, loss: Tensor, prev_best: Tensor) -> tuple[Tensor, Tensor]:
    """AMaLGaM's adaptive variance scaling: the new multiplier ``c`` and stall count per problem."""
    imp = loss < prev_best.unsqueeze(-1)  # finite improvements on the best so far (loss is inf if bad)
    n_imp = imp.sum(-1)
    any_imp = n_imp > 0
    x_imp = (imp.to(x.dtype).unsqueeze(-1) * x).sum(-2) / n_imp.clamp(min=1).unsqueeze(-1).to(x.dtype)
    v = x_imp - state.mean
    if state.covariance == "diag":
        u = v / state.scale.clamp(min=torch.finfo(v.dtype).tiny)
        sdr = u.abs().amax(-1)
    else:  # the standardised distance along the principal axes: A^{-1} v with A A^T = C
        u, info = torch.linalg.solve_ex(state.scale, v.unsqueeze(-1))
        sdr = torch.where(info == 0, u.squeeze(-1).abs().amax(-1), torch.zeros_like(info, dtype=v.dtype))
    c, nis, patience = state.var_scale, state.stall, state.avs_patience
    c_imp = torch.where(c < 1, torch.ones_like(c), c)
    c_imp = torch.where(sdr > _SDR, c_imp * _AVS_UP, c_imp)
    nis_no = torch.where(c <= 1, nis + 1, nis)
    c_no = torch.where((c > 1) | (nis_no >= patience), c * _AVS_DOWN, c)
    c_no = torch.where((c_no < 1) & (nis_no < patience), torch.ones_like(c), c_no)
    return torch.where(any_imp, c_imp, c_no), torch.where(any_imp, torch.zeros_like(nis), nis_no)


@dataclass
class OptimizeResult:
    """What ``minimize`` and ``CEM.result`` return.

    ``x``/``f``: best finite sample per problem (``(*B, d)``, ``(*B,)``); ``mean``/``std``: the
    final search distribution; ``evaluations`` per problem, ``iterations``, ``restarts``;
    ``nonfinite``: NaN/inf values told; ``success``: per problem, the target reached (None without
    a target); ``stop``: the reasons the run ended; ``history``: one dict per iteration
    (``best_f``, ``std_max``, ``evaluations``, ``popsize``); ``seconds``: wall-clock time.
    ``stop`` may hold ``tol_scale`` (adaptive scaling: every ``c`` below 1e-10, AMaLGaM's end).
    """

    x: Tensor
    f: Tensor
    mean: Tensor
    std: Tensor
    evaluations: int
    iterations: int
    restarts: int = 0
    nonfinite: int = 0
    success: Tensor | None = None
    stop: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class CEM:
    """pycma-style ask/tell around the functional core: ``ask()``, ``tell(x, f)``, ``stop()``, ``result``.

    Holds the ``CEMState`` (``self.state``), the ``generator`` and the stopping rules: ``max_evals``
    (objective values per problem), ``max_iters``, ``target`` (stop when every problem's best is at
    or below it; at or above when maximising) and ``tol_std`` (stop when every std is below it: the
    distribution collapsed). Other keyword arguments go to ``cem_init``.

    >>> es = CEM(torch.full((4,), 2.0), 1.0, generator=torch.Generator().manual_seed(0), target=1e-6)
    >>> while not es.stop():
    ...     x = es.ask()
    ...     es.tell(x, (x**2).sum(-1))
    >>> bool(es.result.f <= 1e-6), es.stop()
    (True, {'target': 1e-06})
    """

    def __init__(
        self,
        x0: Any,
        std0: Any = 1.0,
        *,
        generator: torch.Generator | None = None,
        max_evals: int | None = None,
        max_iters: int | None = None,
        target: float | None = None,
        tol_std: float = 1e-12,
        **options: Any,
    ) -> None:
        self.state = cem_init(x0, std0, **options)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator
        self.max_evals = None if max_evals is None else check_int(max_evals, "max_evals", 1)
        self.max_iters = None if max_iters is None else check_int(max_iters, "max_iters", 1)
        self.target = None if target is None else check_real(target, "target", finite=True)
        self.tol_std = check_positive(tol_std, "tol_std", allow_zero=True)
        self.history: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()

    def ask(self, popsize: int | None = None) -> Tensor:
        """A population ``(*B, popsize, d)`` from the current distribution."""
        return cem_ask(self.state, self.generator, popsize)

    def tell(self, x: Any, f: Any) -> None:
        """Update with the population and its objective values (``(*B, n)``)."""
        self.state = cem_tell(self.state, x, f)
        s = self.state
        self.history.append(
            {
                "best_f": s.best_f.clone(),
                "std_max": float(s.std.max()),
                "evaluations": s.evaluations,
                "popsize": int(torch.as_tensor(f).shape[-1]),
            }
        )

    def reached(self) -> Tensor | None:
        """Per problem, whether the target is reached (None without a target)."""
        if self.target is None:
            return None
        b = self.state.best_f
        return b >= self.target if self.state.maximize else b <= self.target

    def stop(self) -> dict[str, Any]:
        """The stopping rules that hold now (empty: go on), as pycma's ``es.stop()``."""
        s, out = self.state, {}
        r = self.reached()
        if r is not None and bool(r.all()):
            out["target"] = self.target
        if self.max_evals is not None and s.evaluations >= self.max_evals:
            out["max_evals"] = self.max_evals
        if self.max_iters is not None and s.iteration >= self.max_iters:
            out["max_iters"] = self.max_iters
        if s.iteration > 0 and float(s.std.max()) <= self.tol_std:
            out["tol_std"] = self.tol_std
        if s.adaptive_scaling and bool((s.var_scale < _TOL_SCALE).all()):
            out["tol_scale"] = _TOL_SCALE
        return out

    @property
    def result(self) -> OptimizeResult:
        s = self.state
        return OptimizeResult(
            x=s.best_x, f=s.best_f, mean=s.mean, std=s.std, evaluations=s.evaluations, iterations=s.iteration,
            nonfinite=s.nonfinite, success=self.reached(), stop=self.stop(), history=self.history,
            seconds=time.perf_counter() - self._t0,
        )


def _evaluate(f: Callable[..., Any], x: Tensor, vectorized: bool) -> Tensor:
    if vectorized:
        out = f(x)
    else:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.stack([torch.as_tensor(f(row), dtype=x.dtype).reshape(()) for row in flat])
        out = out.reshape(x.shape[:-1])
    return _as_tensor(out, "f(x)", x.dtype, x.device)


def minimize(
    f: Callable[..., Any],
    x0: Any,
    std0: Any = 1.0,
    *,
    generator: torch.Generator | None = None,
    max_evals: int = 100_000,
    max_iters: int | None = None,
    target: float | None = None,
    tol_std: float = 1e-12,
    restarts: int = 0,
    restart_popsize_factor: float = 2.0,
    vectorized: bool = True,
    **options: Any,
) -> OptimizeResult:
    """Minimise (or, with ``maximize=True``, maximise) ``f`` by Gaussian CEM from ``N(x0, std0^2 I)``.

    ``f`` maps a population ``(*B, n, d)`` to values ``(*B, n)`` (``vectorized=False``: one row
    ``(d,)`` to a number). Stops on ``target``, ``max_evals`` (per problem, over all restarts),
    ``max_iters`` or collapse (``tol_std``; ``tol_scale`` with adaptive scaling); after a collapse
    without the target, up to ``restarts`` new runs start from ``x0`` with the population multiplied
    by ``restart_popsize_factor`` (the IPOP rule of Auger & Hansen 2005), keeping the best point found.
    ``options`` go to ``cem_init`` (``popsize``, ``elite``, ``covariance``, ...). With a batch of
    problems a restart restarts all of them (each keeps its best point) once every one has collapsed.

    >>> g = torch.Generator().manual_seed(1)
    >>> r = minimize(lambda x: ((x - 3.0) ** 2).sum(-1), torch.zeros(5), 2.0, generator=g, target=1e-10)
    >>> r.success.item(), r.x.sub(3).abs().max().item() < 1e-4, r.evaluations < 10_000
    (True, True, True)
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    restarts = check_int(restarts, "restarts", 0)
    factor = check_real(restart_popsize_factor, "restart_popsize_factor", 1.0, finite=True)
    t0 = time.perf_counter()
    es = CEM(
        x0, std0, generator=generator, max_evals=max_evals, max_iters=max_iters, target=target,
        tol_std=tol_std, **options,
    )
    history: list[dict[str, Any]] = []
    used, done_restarts, nonfinite = 0, 0, 0
    best: tuple[Tensor, Tensor] | None = None
    while True:
        while not es.stop():
            x = es.ask()
            es.tell(x, _evaluate(f, x, vectorized))
            if used + es.state.evaluations >= max_evals:
                break
        history += es.history
        s = es.state
        if best is None:
            best = (s.best_x, s.best_f)
        else:
            lb, lo = (-s.best_f, -best[1]) if s.maximize else (s.best_f, best[1])
            b = lb < lo
            best = (torch.where(b.unsqueeze(-1), s.best_x, best[0]), torch.where(b, s.best_f, best[1]))
        used += s.evaluations
        nonfinite += s.nonfinite
        reasons = es.stop()
        if used >= max_evals:
            reasons["max_evals"] = max_evals
        collapsed = "tol_std" in reasons or "tol_scale" in reasons
        if not collapsed or "target" in reasons or done_restarts >= restarts or used >= max_evals:
            break
        done_restarts += 1
        options["popsize"] = round(s.popsize * factor)
        if isinstance(options.get("elite"), int):
            options["elite"] = round(options["elite"] * factor)
        es = CEM(
            x0, std0, generator=generator, max_evals=max_evals - used, max_iters=max_iters, target=target,
            tol_std=tol_std, **options,
        )
    success = None
    if target is not None:
        success = best[1] >= target if s.maximize else best[1] <= target
    return OptimizeResult(
        x=best[0], f=best[1], mean=s.mean, std=s.std, evaluations=used, iterations=len(history),
        restarts=done_restarts, nonfinite=nonfinite, success=success,
        stop=reasons, history=history, seconds=time.perf_counter() - t0,
    )

