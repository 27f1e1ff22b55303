"""iCEM: the improved cross-entropy method for planning action sequences (model-predictive control).

Pinneri et al. (2020), "Sample-efficient cross-entropy method for real-time planning" (CoRL).
An action plan is ``(H, a)`` (horizon ``H``, action dimension ``a``); the search distribution is a
diagonal Gaussian over plans. Compared to plain CEM, per planning step:

- **coloured noise** along the horizon: ``x = m + std * eps``, ``eps`` with power spectrum
  ``|F(eps)(nu)|^2 ~ 1 / nu^beta`` in time (``colored_noise``; beta 0 = white, 2 = red/Brownian-like);
- **decaying population**: iteration i samples ``max(popsize * gamma^(-i), 2 k)`` plans;
- **elite memory**: a fraction of the elites is kept for the next iteration (``keep_elites``);
- **shift**: after acting, the mean and the kept elites move one step forward in time (the new last
  step is the initial mean); the shifted elites enter the next step's first population **as fresh
  samples, evaluated again**, never with their stale costs (the old costs were for the previous
  state: mbrl-lib issue #186), and ``reset()`` forgets everything at an episode's start.

The CEM update (with ``variance_center``, smoothing named by the old value's weight, std floor) is
``entropykit.optim.gaussian.cem_tell`` on the flattened plans, so the NaN rules hold here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_int, check_positive, check_real
from entropykit.optim.gaussian import CEMState, _as_tensor, cem_init, cem_tell

__all__ = ["ICEM", "colored_noise"]


def colored_noise(
    beta: float,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gaussian noise with power spectrum ``~ 1 / nu^beta`` along the last axis, unit variance.

    The spectral method of Timmer & König (1995), as the ``colorednoise`` package's
    ``powerlaw_psd_gaussian`` (used by iCEM): scale the rfft frequencies ``nu >= 1/T`` by
    ``nu^(-beta/2)``, draw complex Gaussian coefficients, inverse FFT, divide by the exact std
    (including the DC term, which colorednoise leaves out of its normalisation). Like every
    spectral method the noise is periodic along the last axis (its two ends are correlated).

    >>> e = colored_noise(2.0, (4000, 16), torch.Generator().manual_seed(0))
    >>> abs(float(e.std()) - 1) < 0.05, float(torch.corrcoef(e[:, :2].T)[0, 1]) > 0.5
    (True, True)
    """
    beta = check_real(beta, "beta", 0.0, finite=True)
    if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    t = shape[-1]
    if t == 1:
        return torch.randn(shape, generator=generator, dtype=dtype)
    nu = torch.fft.rfftfreq(t, dtype=torch.float64)
    nu = nu.clamp(min=1.0 / t)
    scale = nu ** (-beta / 2.0)
    # exact variance of each output sample: 4 s_k^2 / T^2 per interior frequency, 2 s^2 / T^2 for
    # the (real) DC and Nyquist terms; colorednoise omits DC and halves Nyquist, so its output
    # runs 5-15% above unit variance for T <= 100
    s2 = scale**2
    var = 4 * float(s2[1:].sum()) + 2 * float(s2[0])
    if t % 2 == 0:
        var -= 2 * float(s2[-1])
    sigma = math.sqrt(var) / t
    sr = torch.randn((*shape[:-1], nu.numel()), generator=generator, dtype=torch.float64) * scale
    si = torch.randn((*shape[:-1], nu.numel()), generator=generator, dtype=torch.float64) * scale
    if t % 2 == 0:
        si[..., -1] = 0
        sr[..., -1] *= math.sqrt(2)
    si[..., 0] = 0
    sr[..., 0] *= math.sqrt(2)
    y = torch.fft.irfft(torch.complex(sr, si), n=t) / sigma
    return y.to(dtype)


class ICEM:
    """An iCEM planner for batched MPC: ``plan(cost)`` -> plans ``(*B, H, a)``; ``act`` -> first actions.

    ``cost(plans)`` maps ``(*B, n, H, a)`` to total costs ``(*B, n)`` (lower is better; NaN/inf
    never elites). ``lower``/``upper`` bound the actions (numbers or ``(a,)``); the initial mean is
    their midpoint and the initial std ``std_init`` times their half-range (0.5 as iCEM). Defaults
    follow Pinneri et al.: ``popsize=100``, ``elite=10``, ``iterations=3``, ``beta=2.0``,
    ``decay=1.25``, ``keep_elites=0.3``, ``old_weight_mean=old_weight_var=0.1`` (their momentum
    alpha: the old value's weight).

    >>> g = torch.Generator().manual_seed(0)
    >>> planner = ICEM(horizon=5, action_dim=1, lower=-1.0, upper=1.0, generator=g)
    >>> target = torch.linspace(-0.5, 0.5, 5).unsqueeze(-1)
    >>> plan = planner.plan(lambda u: ((u - target) ** 2).sum((-1, -2)))
    >>> plan.shape, bool((plan - target).abs().max() < 0.2)
    (torch.Size([5, 1]), True)
    """

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        *,
        lower: Any,
        upper: Any,
        batch_shape: tuple[int, ...] = (),
        popsize: int = 100,
        elite: int | float = 10,
        iterations: int = 3,
        beta: float = 2.0,
        decay: float = 1.25,
        keep_elites: int | float = 0.3,
        std_init: float = 0.5,
        std_min: float = 1e-3,
        old_weight_mean: float = 0.1,
        old_weight_var: float = 0.1,
        variance_center: str = "new",
        execute: str = "best",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.horizon = check_int(horizon, "horizon", 1)
        self.action_dim = check_int(action_dim, "action_dim", 1)
        self.lower = torch.broadcast_to(_as_tensor(lower, "lower", dtype), (self.action_dim,))
        self.upper = torch.broadcast_to(_as_tensor(upper, "upper", dtype), (self.action_dim,))
        width = self.upper - self.lower
        if not bool((width > 0).all()) or not bool(torch.isfinite(width).all()):
            raise ValueError(
                f"lower must be < upper (both finite), got {self.lower.tolist()} and {self.upper.tolist()}"
            )
        self.batch_shape = tuple(batch_shape)
        self.iterations = check_int(iterations, "iterations", 1)
        self.beta = check_real(beta, "beta", 0.0, finite=True)
        self.decay = check_real(decay, "decay", 1.0, finite=True)
        self.std_init = check_positive(std_init, "std_init")
        if execute not in ("best", "mean"):
            raise ValueError(f"execute must be one of 'best', 'mean', got {execute!r}")
        self.execute = execute
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator
        self.dtype = dtype
        self._options: dict[str, Any] = {
            "popsize": popsize, "elite": elite, "keep_elites": keep_elites, "std_min": std_min,
            "old_weight_mean": old_weight_mean, "old_weight_var": old_weight_var,
            "variance_center": variance_center,
        }
        self.state: CEMState = self._fresh(None)
        self._carry: Tensor | None = None  # shifted elites: fresh samples for the next plan
        self.last_cost: Tensor | None = None
        self.evaluations = 0  # plans evaluated (per problem), over every plan() call

    def _fresh(self, mean: Tensor | None) -> CEMState:
        mid = (self.lower + self.upper) / 2
        half = (self.upper - self.lower) / 2
        if mean is None:
            mean = mid.repeat(self.horizon).expand(*self.batch_shape, self.horizon * self.action_dim)
        std = (self.std_init * half).repeat(self.horizon)
        return cem_init(
            mean.clone(), std, lower=self.lower.repeat(self.horizon), upper=self.upper.repeat(self.horizon),
            **self._options,
        )

    def reset(self) -> None:
        """Forget the plan and the kept elites (call at the start of an episode)."""
        self.state = self._fresh(None)
        self._carry = None

    def _sample(self, n: int) -> Tensor:
        h, a = self.horizon, self.action_dim
        eps = colored_noise(self.beta, (*self.batch_shape, n, a, h), self.generator, self.dtype)
        eps = eps.transpose(-1, -2)
        m = self.state.mean.reshape(*self.batch_shape, 1, h, a)
        s = self.state.std.reshape(*self.batch_shape, 1, h, a)
        return torch.maximum(torch.minimum(m + s * eps, self.upper), self.lower)

    def plan(self, cost: Callable[[Tensor], Any]) -> Tensor:
        """Run ``iterations`` iCEM iterations from the current (shifted) state; return the plan
        ``(*B, H, a)`` to execute (the best sample of the last iteration, or the mean)."""
        h, a = self.horizon, self.action_dim
        best_x, best_f = None, None
        for i in range(self.iterations):
            n = max(int(self.state.popsize * self.decay ** (-i)), 2 * self.state.n_elites)
            x = self._sample(n)
            if i == 0 and self._carry is not None:
                x = torch.cat([x, self._carry], dim=-3)
            f = _as_tensor(cost(x), "cost(x)", self.dtype)
            self.evaluations += x.shape[-3]
            if tuple(f.shape) != tuple(x.shape[:-2]):
                raise ValueError(f"cost(x) must have shape {tuple(x.shape[:-2])}, got {tuple(f.shape)}")
            self.state = cem_tell(self.state, x.reshape(*x.shape[:-2], h * a), f)
            loss = torch.where(torch.isfinite(f), f, torch.full_like(f, math.inf))
            it_f, it_i = loss.min(-1)
            it_x = torch.gather(x, -3, it_i[..., None, None, None].expand(*it_i.shape, 1, h, a)).squeeze(-3)
            if best_x is None or best_f is None:
                best_x, best_f = it_x, it_f
            else:
                better = it_f < best_f
                best_x = torch.where(better[..., None, None], it_x, best_x)
                best_f = torch.where(better, it_f, best_f)
        assert best_x is not None
        self.last_cost = best_f
        if self.execute == "mean":
            return self.state.mean.reshape(*self.batch_shape, h, a)
        return best_x

    def shift(self) -> None:
        """Move the plan one step forward in time for the next control step: the mean's last step
        becomes the initial mean, the std resets, the kept elites shift and will be re-evaluated."""
        h, a = self.horizon, self.action_dim
        mid = ((self.lower + self.upper) / 2).expand(*self.batch_shape, 1, a)
        m = self.state.mean.reshape(*self.batch_shape, h, a)
        mean = torch.cat([m[..., 1:, :], mid], dim=-2).reshape(*self.batch_shape, h * a)
        ex = self.state.elite_x
        carry = None
        if ex.shape[-2] > 0:
            e = ex.reshape(*ex.shape[:-1], h, a)
            tail = mid.unsqueeze(-3).expand(*e.shape[:-2], 1, a)
            carry = torch.cat([e[..., 1:, :], tail], dim=-2)
        self.state = self._fresh(mean)
        self._carry = carry

    def act(self, cost: Callable[[Tensor], Any]) -> Tensor:
        """``plan(cost)``, then ``shift()``; return the first action ``(*B, a)`` of the plan."""
        p = self.plan(cost)
        self.shift()
        return p[..., 0, :]

