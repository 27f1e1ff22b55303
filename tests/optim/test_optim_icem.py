"""iCEM: coloured noise (variance, spectrum), the planner's shift/elite rules, Pendulum vs gymnasium."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entropykit.optim import ICEM, colored_noise
from entropykit.optim.control import pendulum_cost, pendulum_state


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("t", [2, 15, 32])
def test_colored_noise_has_unit_variance(beta: float, t: int) -> None:
    e = colored_noise(beta, (20_000, t), torch.Generator().manual_seed(0), torch.float64)
    assert abs(float(e.pow(2).mean()) - 1.0) < 0.03


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_colored_noise_power_spectrum_slope(beta: float) -> None:
    # periodogram via NumPy (independent of torch.fft): log power vs log frequency has slope -beta
    t = 64
    e = colored_noise(beta, (4000, t), torch.Generator().manual_seed(1), torch.float64).numpy()
    power = (np.abs(np.fft.rfft(e, axis=-1)) ** 2).mean(0)
    nu = np.fft.rfftfreq(t)
    slope = np.polyfit(np.log(nu[1:-1]), np.log(power[1:-1]), 1)[0]
    assert abs(slope + beta) < 0.1


def test_colored_noise_bad_input() -> None:
    with pytest.raises(ValueError, match="beta must be"):
        colored_noise(-1.0, (3, 4))
    with pytest.raises(ValueError, match="shape must be"):
        colored_noise(1.0, (3, 0))


def _tracking(target: torch.Tensor):
    return lambda u: (u - target).pow(2).sum((-1, -2))


def test_planner_tracks_a_reference_batched_and_nan_costs_never_win() -> None:
    h = 8
    targets = torch.stack([torch.linspace(-0.8, 0.8, h), torch.linspace(0.5, -0.5, h)]).unsqueeze(-1)
    # white noise here: the spectral method's noise is periodic in time, so a ramp (a jump at the wrap)
    # is hard for red noise
    pl = ICEM(
        h,
        1,
        lower=-1.0,
        upper=1.0,
        batch_shape=(2,),
        iterations=10,
        beta=0.0,
        generator=torch.Generator().manual_seed(0),
    )

    def cost(u: torch.Tensor) -> torch.Tensor:
        c = (u - targets.unsqueeze(1)).pow(2).sum((-1, -2))
        return torch.where(u[..., 0, 0] > 0.95, torch.full_like(c, float("nan")), c)  # a broken region

    plan = pl.plan(cost)
    assert plan.shape == (2, h, 1)
    assert float((plan - targets).abs().max()) < 0.2
    assert bool((plan[..., 0, 0] <= 0.95).all()) and bool(torch.isfinite(pl.last_cost).all())


def test_shift_moves_the_mean_and_carries_elites_to_be_evaluated_again() -> None:
    h, a = 5, 2
    pl = ICEM(
        h,
        a,
        lower=-1.0,
        upper=1.0,
        popsize=20,
        elite=4,
        keep_elites=2,
        iterations=2,
        generator=torch.Generator().manual_seed(0),
    )
    target = torch.full((h, a), 0.5)
    pl.plan(_tracking(target))
    m = pl.state.mean.reshape(h, a).clone()
    kept = pl.state.elite_x.reshape(-1, h, a).clone()
    pl.shift()
    shifted = pl.state.mean.reshape(h, a)
    assert torch.equal(shifted[:-1], m[1:]) and torch.equal(shifted[-1], torch.zeros(a))
    assert pl.state.elite_x.shape[-2] == 0 and pl.state.iteration == 0  # no stale costs survive the shift
    seen: list[torch.Tensor] = []

    def spy(u: torch.Tensor) -> torch.Tensor:
        seen.append(u.clone())
        return _tracking(target)(u)

    pl.plan(spy)
    first = seen[0]
    assert first.shape[0] == 20 + 2  # the new samples plus the carried elites, all evaluated now
    torch.testing.assert_close(first[-2:, :-1], kept[:, 1:])
    assert seen[1].shape[0] == max(int(20 / 1.25), 8)  # the population decays by gamma = 1.25
    pl.reset()
    assert pl._carry is None and torch.equal(pl.state.mean, torch.zeros(h * a))


def test_act_returns_the_first_action_and_bad_input() -> None:
    pl = ICEM(3, 2, lower=[-1.0, -2.0], upper=[1.0, 2.0], generator=torch.Generator().manual_seed(0))
    act = pl.act(_tracking(torch.tensor([0.3, -1.5]).expand(3, 2)))
    assert act.shape == (2,) and abs(float(act[1]) + 1.5) < 0.3
    with pytest.raises(ValueError, match="lower must be < upper"):
        ICEM(3, 1, lower=1.0, upper=1.0)
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        ICEM(0, 1, lower=-1.0, upper=1.0)
    with pytest.raises(ValueError, match=r"cost\(x\) must have shape"):
        ICEM(3, 1, lower=-1.0, upper=1.0).plan(lambda u: u.sum(-1))


def test_pendulum_cost_matches_gymnasium_step() -> None:
    gym = pytest.importorskip("gymnasium")
    env = gym.make("Pendulum-v1").unwrapped
    obs, _ = env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-2.5, 2.5, size=12)  # includes clipped torques
    total = 0.0
    state = pendulum_state(obs)
    for u in actions:
        _, r, *_ = env.step(np.array([u], dtype=np.float32))
        total -= float(r)
    ours = pendulum_cost(state, torch.tensor(actions, dtype=torch.float64).reshape(1, 12, 1))
    assert float(ours) == pytest.approx(total, rel=1e-4)
    assert math.isfinite(total)


class _Integrator:
    """A gymnasium-style 1-D integrator: x <- x + u, reward -(x^2); episode of 10 steps."""

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        self.x, self.t = 2.0, 0
        return np.array([self.x]), {}

    def step(self, u: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x += float(np.clip(u[0], -1, 1))
        self.t += 1
        return np.array([self.x]), -(self.x**2), False, self.t >= 10, {}


def test_run_mpc_drives_an_integrator_to_the_origin_and_resets_the_planner() -> None:
    from entropykit.optim.control import run_mpc

    def cost(obs: np.ndarray, plans: torch.Tensor) -> torch.Tensor:
        x = float(obs[0]) + plans[..., 0].cumsum(-1)
        return x.pow(2).sum(-1)

    pl = ICEM(4, 1, lower=-1.0, upper=1.0, popsize=30, elite=5, generator=torch.Generator().manual_seed(0))
    total = run_mpc(_Integrator(), pl, cost, steps=50)
    assert -1.3 < total <= -1.0  # optimum: x 1, 0, 0, ... gives -1
