"""Model-predictive control with iCEM: a batched Pendulum model and an episode loop for gymnasium.

``pendulum_cost(state, plans)`` rolls plans through a torch copy of gymnasium's ``Pendulum-v1``
dynamics (g = 10, m = l = 1, dt = 0.05, |u| <= 2, |theta'| <= 8)::

    theta'_{t+1} = clip(theta'_t + (3 g / (2 l) sin theta_t + 3 / (m l^2) u_t) dt, -8, 8)
    theta_{t+1}  = theta_t + theta'_{t+1} dt
    cost_t       = normalize(theta_t)^2 + 0.1 theta'_t^2 + 0.001 u_t^2     (reward = -cost)

and ``run_mpc(env, planner, cost)`` plays one episode of any gymnasium-style environment
(``reset(seed=...)`` / ``step(action)``), planning every step with ``planner.act``. gymnasium
itself is optional (the ``[optim]`` extra): this module never imports it; the caller passes an env.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from entropykit._validate import check_int

__all__ = ["pendulum_cost", "pendulum_state", "run_mpc"]


def pendulum_state(obs: Any) -> Tensor:
    """``(theta, theta')`` from a Pendulum observation ``(cos theta, sin theta, theta')``.

    >>> pendulum_state([1.0, 0.0, 0.5]).tolist()
    [0.0, 0.5]
    """
    o = torch.as_tensor(np.asarray(obs, dtype=np.float64))
    if o.shape[-1] != 3:
        raise ValueError(f"obs must end in (cos, sin, angular velocity), got shape {tuple(o.shape)}")
    return torch.stack([torch.atan2(o[..., 1], o[..., 0]), o[..., 2]], dim=-1)


def pendulum_cost(state: Tensor, plans: Tensor, *, discount: float = 1.0) -> Tensor:
    """Total Pendulum-v1 cost of each plan from ``state`` ``(*B, 2)``: plans ``(*B, n, H, 1)`` -> ``(*B, n)``.

    >>> s = torch.tensor([math.pi, 0.0])              # hanging down
    >>> c = pendulum_cost(s, torch.zeros(1, 3, 1))
    >>> round(float(c), 4) == round(3 * math.pi**2, 4)    # stays down: pi^2 per step
    True
    """
    th = state[..., 0].unsqueeze(-1).expand(plans.shape[:-2]).to(plans.dtype)
    thd = state[..., 1].unsqueeze(-1).expand(plans.shape[:-2]).to(plans.dtype)
    total = torch.zeros_like(th)
    w = 1.0
    for t in range(plans.shape[-2]):
        u = plans[..., t, 0].clamp(-2.0, 2.0)
        norm = torch.remainder(th + math.pi, 2 * math.pi) - math.pi
        total = total + w * (norm**2 + 0.1 * thd**2 + 0.001 * u**2)
        thd = (thd + (3 * 10.0 / 2 * torch.sin(th) + 3.0 * u) * 0.05).clamp(-8.0, 8.0)
        th = th + thd * 0.05
        w *= discount
    return total


def run_mpc(
    env: Any,
    planner: Any,
    cost: Callable[[Any, Tensor], Tensor],
    *,
    steps: int = 200,
    seed: int | None = None,
) -> float:
    """Play one episode: every step ``planner.act(lambda plans: cost(obs, plans))`` picks the action.

    ``env`` follows the gymnasium API; ``planner`` is an ``ICEM`` (``reset()`` is called first, so no
    elite from an earlier episode survives); returns the episode's total reward.

    >>> from entropykit.optim import ICEM
    >>> class Env:  # a 1-D integrator: x <- x + u, reward -x^2
    ...     def reset(self, seed=None):
    ...         self.x = 1.0
    ...         return [self.x], {}
    ...     def step(self, u):
    ...         self.x += float(u[0])
    ...         return [self.x], -self.x**2, False, False, {}
    >>> planner = ICEM(3, 1, lower=-1.0, upper=1.0, generator=torch.Generator().manual_seed(0))
    >>> cost = lambda obs, u: (obs[0] + u[..., 0].cumsum(-1)).pow(2).sum(-1)
    >>> run_mpc(Env(), planner, cost, steps=5) > -0.05
    True
    """
    steps = check_int(steps, "steps", 1)
    obs, _ = env.reset(seed=seed)
    planner.reset()
    total = 0.0
    for _ in range(steps):
        o = obs
        action = planner.act(lambda plans, o=o: cost(o, plans))
        obs, reward, terminated, truncated, _ = env.step(action.detach().cpu().numpy().astype(np.float32))
        total += float(reward)
        if terminated or truncated:
            break
    return total
