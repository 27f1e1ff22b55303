"""Gaussian CEM: one step against a hand-written float64 NumPy step, properties, convergence, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.optim import CEM, METHODS, cem_ask, cem_init, cem_tell, linear_noise, minimize

SETTINGS = settings(max_examples=25, deadline=None)


def ref_step(
    mean: np.ndarray,
    cov: np.ndarray,
    x: np.ndarray,
    f: np.ndarray,
    k: int,
    *,
    maximize: bool = False,
    center: str = "old",
    a_m: float = 0.0,
    a_v: float = 0.0,
    z: float = 0.0,
    std_min: float = 0.0,
    std_max: float = math.inf,
    full: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One CEM update written out with loops in float64 (the module docstring's equations)."""
    loss = [(-v if maximize else v) for v in f]
    finite = [i for i in range(len(loss)) if math.isfinite(loss[i])]
    finite.sort(key=lambda i: (loss[i], i))
    elites = finite[:k]
    if not elites:
        return mean.copy(), cov.copy()
    d = len(mean)
    m_new = np.zeros(d)
    for i in elites:
        m_new += x[i] / len(elites)
    c = mean if center == "old" else m_new
    if full:
        c_new = np.zeros((d, d))
        for i in elites:
            c_new += np.outer(x[i] - c, x[i] - c) / len(elites)
        cv = a_v * cov + (1 - a_v) * c_new + z * np.eye(d)
        lam, vec = np.linalg.eigh((cv + cv.T) / 2)
        lam = np.clip(lam, std_min**2, std_max**2)
        cv = vec @ np.diag(lam) @ vec.T
    else:
        v_new = np.zeros(d)
        for i in elites:
            v_new += (x[i] - c) ** 2 / len(elites)
        cv = np.clip(np.sqrt(a_v * cov + (1 - a_v) * v_new + z), std_min, std_max) ** 2
    return a_m * mean + (1 - a_m) * m_new, cv


def _pop(seed: int, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, (x**2).sum(1) + rng.normal(size=n)


@pytest.mark.parametrize("center", ["old", "new"])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_one_step_matches_float64_reference(center: str, full: bool, maximize: bool) -> None:
    d, n, k = 3, 12, 4
    x, f = _pop(0, n, d)
    f[2] = np.nan
    f[5] = -np.inf if not maximize else np.inf  # the "best" value, but not finite: never an elite
    mean, std = np.array([0.3, -0.2, 0.1]), np.array([1.0, 0.5, 1.4])
    opts = dict(old_weight_mean=0.3, old_weight_var=0.6, noise=0.01, std_min=0.05, std_max=1.5)
    s = cem_init(
        torch.tensor(mean),
        torch.tensor(std),
        popsize=n,
        elite=k,
        maximize=maximize,
        covariance="full" if full else "diag",
        variance_center=center,
        **opts,
    )
    s2 = cem_tell(s, torch.tensor(x), torch.tensor(f))
    cov0 = np.diag(std**2) if full else std**2
    m_ref, c_ref = ref_step(
        mean,
        cov0,
        x,
        f,
        k,
        maximize=maximize,
        center=center,
        a_m=0.3,
        a_v=0.6,
        z=0.01,
        std_min=0.05,
        std_max=1.5,
        full=full,
    )
    np.testing.assert_allclose(s2.mean.numpy(), m_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s2.cov.numpy(), c_ref, rtol=1e-10, atol=1e-12)
    a = s2.scale.numpy()
    np.testing.assert_allclose(a @ a.T if full else a**2, c_ref, rtol=1e-10, atol=1e-12)
    assert s2.nonfinite == 2 and s2.evaluations == n and s2.iteration == 1


def test_noise_schedule_and_smoothing_convention() -> None:
    # old_weight_mean is the weight of the OLD mean: 0.9 moves the mean 10% toward the elites
    s = cem_init(
        torch.zeros(1, dtype=torch.float64),
        1.0,
        popsize=2,
        elite=1,
        old_weight_mean=0.9,
        noise=linear_noise(0.5, 0.25),
    )
    x = torch.tensor([[2.0], [5.0]], dtype=torch.float64)
    s = cem_tell(s, x, torch.tensor([0.0, 1.0]))
    assert s.mean.item() == pytest.approx(0.2)
    assert s.cov.item() == pytest.approx(4.0 + 0.5)  # old-mean spread (2 - 0)^2 plus z_0 = 0.5
    s = cem_tell(s, x, torch.tensor([0.0, 1.0]))
    assert s.cov.item() == pytest.approx((2.0 - 0.2) ** 2 + 0.25)  # z_1 = 0.25


def test_single_elite_gives_zero_variance_not_nan_then_the_floor() -> None:
    s = cem_init(torch.zeros(4), 1.0, popsize=5, elite=1, variance_center="new")
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    s1 = cem_tell(s, x, x.pow(2).sum(-1))
    assert torch.equal(s1.std, torch.zeros(4))
    s2 = cem_tell(
        cem_init(torch.zeros(4), 1.0, popsize=5, elite=1, variance_center="new", std_min=0.1),
        x,
        x.pow(2).sum(-1),
    )
    assert torch.equal(s2.std, torch.full((4,), 0.1))


def test_nan_values_are_never_elites_and_all_nan_keeps_the_distribution() -> None:
    g = torch.Generator().manual_seed(3)
    s = cem_init(torch.zeros(2, 3), 1.0, popsize=10, elite=3)
    x = cem_ask(s, g)
    f = x.pow(2).sum(-1)
    bad = f.clone()
    best = f.argsort(-1)[:, :2]
    bad.scatter_(-1, best, float("nan"))
    s_bad = cem_tell(s, x, bad)
    keep = torch.ones_like(f, dtype=torch.bool).scatter(-1, best, False)
    s_ref = cem_tell(s, x[keep].reshape(2, 8, 3), f[keep].reshape(2, 8))
    torch.testing.assert_close(s_bad.mean, s_ref.mean)
    torch.testing.assert_close(s_bad.cov, s_ref.cov)
    assert s_bad.nonfinite == 4
    s_nan = cem_tell(s, x, torch.full_like(f, float("nan")))
    assert torch.equal(s_nan.mean, s.mean) and torch.equal(s_nan.cov, s.cov) and s_nan.nonfinite == 20
    assert torch.isinf(s_nan.best_f).all()


def test_fewer_finite_than_elites_refits_on_the_finite_ones() -> None:
    s = cem_init(torch.zeros(1, dtype=torch.float64), 1.0, popsize=4, elite=3, variance_center="new")
    x = torch.tensor([[1.0], [3.0], [7.0], [9.0]], dtype=torch.float64)
    s = cem_tell(s, x, torch.tensor([0.0, float("nan"), 1.0, float("inf")]))
    assert s.mean.item() == pytest.approx(4.0) and s.std.item() == pytest.approx(3.0)


def test_elite_memory_competes_with_the_next_population() -> None:
    s = cem_init(
        torch.zeros(1, dtype=torch.float64), 1.0, popsize=3, elite=2, keep_elites=1, variance_center="new"
    )
    s = cem_tell(s, torch.tensor([[0.5], [4.0], [6.0]], dtype=torch.float64), torch.tensor([0.1, 5.0, 6.0]))
    assert s.elite_x.tolist() == [[0.5]]
    s = cem_tell(s, torch.tensor([[2.0], [3.0], [8.0]], dtype=torch.float64), torch.tensor([1.0, 2.0, 9.0]))
    assert s.mean.item() == pytest.approx((0.5 + 2.0) / 2)  # the kept elite (f 0.1) beats the new ones
    assert s.evaluations == 6  # kept elites are not counted again


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    b = draw(st.integers(1, 3))
    n = draw(st.integers(2, 12))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(1, n))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    f = torch.randn(b, n, generator=g, dtype=torch.float64)
    return torch.randn(b, d, generator=g, dtype=torch.float64), x, f, k


@SETTINGS
@given(problems(), st.sampled_from(["diag", "full"]), st.sampled_from(["old", "new"]))
def test_rank_based_update_is_invariant_to_monotone_transforms(
    p: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int], covariance: str, center: str
) -> None:
    mean, x, f, k = p
    s = cem_init(mean, 0.7, popsize=x.shape[1], elite=k, covariance=covariance, variance_center=center)
    a = cem_tell(s, x, f)
    for g in (lambda v: 3 * v + 2, torch.exp, torch.atan, lambda v: v**3):
        b = cem_tell(s, x, g(f))
        assert torch.equal(a.mean, b.mean) and torch.equal(a.cov, b.cov)


@SETTINGS
@given(problems(), st.sampled_from(["diag", "full"]), st.booleans())
def test_batch_equals_a_loop_over_problems(
    p: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int], covariance: str, maximize: bool
) -> None:
    mean, x, f, k = p
    f = f.clone()
    f[0, 0] = float("nan")
    opts = dict(popsize=x.shape[1], elite=k, covariance=covariance, maximize=maximize, old_weight_var=0.2)
    batch = cem_tell(cem_init(mean, 0.5, **opts), x, f)
    for i in range(mean.shape[0]):
        one = cem_tell(cem_init(mean[i], 0.5, **opts), x[i], f[i])
        torch.testing.assert_close(batch.mean[i], one.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(batch.cov[i], one.cov, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(batch.best_f[i], one.best_f)


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.sampled_from(["clip", "reflect"]), st.sampled_from(["diag", "full"]))
def test_bounds_and_std_floor_hold(seed: int, mode: str, covariance: str) -> None:
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([1.0, 0.5, 5.0])
    s = cem_init(
        torch.tensor([0.0, 0.2, 3.0]),
        3.0,
        popsize=20,
        elite=2,
        lower=lo,
        upper=hi,
        bounds_mode=mode,
        std_min=0.05,
        covariance=covariance,
    )
    for _ in range(3):
        x = cem_ask(s, g)
        assert bool((x >= lo).all()) and bool((x <= hi).all())
        s = cem_tell(s, x, (x - 0.3).pow(2).sum(-1))
        assert bool((s.std >= 0.05 - 1e-6).all())


def test_reflect_matches_a_numpy_fold() -> None:
    s = cem_init(torch.zeros(1, dtype=torch.float64), 1.0, lower=-1.0, upper=2.0, bounds_mode="reflect")
    raw = torch.linspace(-10, 10, 201, dtype=torch.float64)
    from entropykit.optim.gaussian import _apply_bounds

    got = _apply_bounds(raw.unsqueeze(-1), s.lower, s.upper, "reflect").squeeze(-1).numpy()
    ref = []
    for v in raw.numpy():
        while v < -1 or v > 2:
            v = -2 - v if v < -1 else 4 - v
        ref.append(v)
    np.testing.assert_allclose(got, ref, atol=1e-12)


def _sphere(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).sum(-1)


@pytest.mark.parametrize("seed", range(5))
def test_sphere_10d_solved_within_20k_evaluations(seed: int) -> None:
    r = minimize(
        _sphere,
        torch.full((10,), 3.0, dtype=torch.float64),
        1.0,
        generator=torch.Generator().manual_seed(seed),
        target=1e-8,
        max_evals=20_000,
    )
    assert bool(r.success) and r.evaluations <= 20_000 and float(r.f) <= 1e-8
    assert r.stop == {"target": 1e-8}


def test_ellipsoid_diag_and_rotated_ellipsoid_full() -> None:
    d = 6
    w = 10 ** (4 * torch.arange(d, dtype=torch.float64) / (d - 1))
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    r_diag = minimize(
        lambda x: (w * x**2).sum(-1),
        torch.ones(d, dtype=torch.float64),
        1.0,
        generator=torch.Generator().manual_seed(0),
        target=1e-8,
        max_evals=30_000,
    )
    assert bool(r_diag.success)
    rot = lambda x: (w * (x @ q) ** 2).sum(-1)  # noqa: E731
    r_full = minimize(
        rot,
        torch.ones(d, dtype=torch.float64),
        1.0,
        generator=torch.Generator().manual_seed(0),
        target=1e-8,
        max_evals=30_000,
        covariance="full",
        old_weight_var=0.5,
        elite=0.2,
    )
    assert bool(r_full.success)


def test_batched_minimize_solves_every_problem_and_maximize_mirrors_minimize() -> None:
    centres = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-4.0, 0.0]], dtype=torch.float64)
    f = lambda x: (x - centres.unsqueeze(-2)).pow(2).sum(-1)  # noqa: E731
    r = minimize(
        f,
        torch.zeros(3, 2, dtype=torch.float64),
        2.0,
        generator=torch.Generator().manual_seed(0),
        target=1e-10,
        popsize=40,
    )
    assert r.success.tolist() == [True, True, True]
    torch.testing.assert_close(r.x, centres, atol=1e-4, rtol=0)
    r_max = minimize(
        lambda x: -f(x),
        torch.zeros(3, 2, dtype=torch.float64),
        2.0,
        maximize=True,
        generator=torch.Generator().manual_seed(0),
        target=-1e-10,
        popsize=40,
    )
    torch.testing.assert_close(r_max.x, r.x) and torch.testing.assert_close(r_max.f, -r.f)


def test_seeded_runs_repeat_and_global_rng_is_untouched() -> None:
    before = torch.random.get_rng_state()
    runs = [
        minimize(_sphere, torch.ones(4), 1.0, generator=torch.Generator().manual_seed(7), max_evals=2000)
        for _ in range(2)
    ]
    assert torch.equal(runs[0].x, runs[1].x) and torch.equal(runs[0].f, runs[1].f)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_restarts_double_the_population_after_a_collapse() -> None:
    # the plain ML refit (variance_center="new") with few elites collapses early on the sphere
    r = minimize(
        _sphere,
        torch.full((10,), 3.0, dtype=torch.float64),
        1.0,
        generator=torch.Generator().manual_seed(0),
        target=1e-8,
        max_evals=60_000,
        popsize=20,
        elite=0.25,
        variance_center="new",
        restarts=3,
        tol_std=1e-6,
    )
    pops = sorted({h["popsize"] for h in r.history})
    assert r.restarts >= 1 and pops[:2] == [20, 40]
    assert r.evaluations <= 60_000


def test_numpy_in_nonvectorized_and_stop_rules() -> None:
    r = minimize(
        lambda v: float(np.sum(np.asarray(v) ** 2)),
        np.ones(3),
        1.0,
        vectorized=False,
        max_evals=500,
        generator=torch.Generator().manual_seed(0),
        popsize=50,
    )
    assert r.evaluations == 500 and "max_evals" in r.stop and float(r.f) < 1.0
    es = CEM(np.zeros(2), 1.0, max_iters=3, generator=torch.Generator().manual_seed(0), popsize=10)
    while not es.stop():
        x = es.ask()
        es.tell(x.numpy(), (x**2).sum(-1).numpy())
    assert es.stop() == {"max_iters": 3} and es.result.iterations == 3 and len(es.result.history) == 3


def test_nonfinite_objective_counted_in_minimize() -> None:
    f = lambda x: torch.where(x[..., 0] > 0, torch.full_like(x[..., 0], float("nan")), _sphere(x))  # noqa: E731
    r = minimize(
        f, torch.zeros(2), 1.0, generator=torch.Generator().manual_seed(0), max_evals=1000, popsize=50
    )
    assert r.nonfinite > 0 and math.isfinite(float(r.f)) and float(r.x[0]) <= 0


def test_registry_lists_the_methods() -> None:
    assert set(METHODS) == {"cem", "amalgam", "categorical_cem", "icem", "rare_event"}
    assert all(callable(m.fn) and m.reference for m in METHODS.values())


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"popsize": 5, "elite": 6}, ValueError, "elite must be <= popsize"),
        ({"elite": 0.0}, ValueError, "elite must be"),
        ({"elite": "10%"}, TypeError, "elite must be"),
        ({"std": 0.0}, ValueError, "std must be positive"),
        ({"std": -1.0}, ValueError, "std must be positive"),
        ({"std": float("nan")}, ValueError, "std must be positive"),
        ({"mean": torch.tensor([0.0, float("nan")])}, ValueError, "mean must be finite"),
        ({"mean": torch.tensor([1.0, float("inf")])}, ValueError, "mean must be finite"),
        ({"mean": torch.zeros(0)}, ValueError, "mean must have shape"),
        ({"mean": "abc"}, TypeError, "mean must be"),
        ({"covariance": "dense"}, ValueError, "covariance must be one of"),
        ({"old_weight_mean": 1.0}, ValueError, "old_weight_mean must be"),
        ({"std_min": 2.0, "std_max": 1.0}, ValueError, "std_max must be >= std_min"),
        ({"lower": 1.0, "upper": 0.0}, ValueError, "lower must be < upper"),
        ({"bounds_mode": "wrap"}, ValueError, "bounds_mode must be one of"),
        ({"popsize": 0}, ValueError, "popsize must be an int >= 1"),
        ({"maximize": 1}, TypeError, "maximize must be a bool"),
    ],
)
def test_bad_input_to_init(kwargs: dict, exc: type, match: str) -> None:
    args = {"mean": torch.zeros(2), "std": 1.0, **kwargs}
    with pytest.raises(exc, match=match):
        cem_init(args.pop("mean"), args.pop("std"), **args)


def test_bad_input_to_ask_and_tell() -> None:
    s = cem_init(torch.zeros(2, 3), 1.0, popsize=4, elite=2)
    x = cem_ask(s, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"x must have shape"):
        cem_tell(s, x[0], x[0].sum(-1))
    with pytest.raises(ValueError, match=r"f must have shape"):
        cem_tell(s, x, x.sum(-1)[:, :3])
    with pytest.raises(ValueError, match="x must be finite"):
        cem_tell(s, x.clone().fill_(float("nan")), x.sum(-1))
    with pytest.raises(TypeError, match="state must be a CEMState"):
        cem_ask("state")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        cem_ask(s, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="f must be callable"):
        minimize(3, torch.zeros(2))  # type: ignore[arg-type]
