"""Scaling-law fits: recovery of synthetic laws, robustness, bootstrap intervals, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from entropykit.lm.scaling import SCALING_LAWS, fit_chinchilla, fit_power_law


@pytest.mark.parametrize("seed", range(3))
def test_power_law_recovers_synthetic_parameters_within_5_percent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    E, A, alpha = 1.7, 400.0, 0.34
    x = np.geomspace(1e5, 1e9, 12)
    y = (E + A * x**-alpha) * np.exp(rng.normal(0, 0.002, x.size))
    f = fit_power_law(x, y, bootstrap=50, seed=seed)
    assert f.params["E"] == pytest.approx(E, rel=0.05)
    assert f.params["alpha"] == pytest.approx(alpha, rel=0.05)
    assert f.params["A"] == pytest.approx(A, rel=0.30)  # A trades off with alpha: looser
    lo, hi = f.intervals["E"]
    assert lo <= f.params["E"] <= hi


def test_fit_minimises_the_huber_objective_against_a_generic_optimiser() -> None:
    rng = np.random.default_rng(5)
    x = np.geomspace(1e4, 1e8, 9)
    y = (2.0 + 30 * x**-0.25) * np.exp(rng.normal(0, 0.01, x.size))
    f = fit_power_law(x, y, bootstrap=0)

    def huber_obj(t: np.ndarray) -> float:
        r = np.logaddexp(t[0] - t[2] * np.log(x), t[1]) - np.log(y)
        d = 1e-3
        return float(np.where(np.abs(r) <= d, 0.5 * r**2, d * (np.abs(r) - 0.5 * d)).sum())

    ours = huber_obj(np.array([np.log(f.params["A"]), np.log(f.params["E"]), f.params["alpha"]]))
    best = min(optimize.minimize(huber_obj, s, method="Nelder-Mead",
                                 options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000}).fun
               for s in ([3.0, 0.5, 0.2], [1.0, 0.0, 0.5], [5.0, 0.7, 0.3]))
    assert ours <= best * (1 + 1e-6) + 1e-12


def test_huber_resists_one_outlier() -> None:
    x = np.geomspace(1e5, 1e9, 10)
    y = 1.7 + 400.0 * x**-0.34
    y[3] *= 1.3
    f = fit_power_law(x, y, bootstrap=0)
    assert f.params["E"] == pytest.approx(1.7, rel=0.02)
    assert f.params["alpha"] == pytest.approx(0.34, rel=0.05)


def test_extrapolation_interval_covers_the_held_out_point() -> None:
    rng = np.random.default_rng(2)
    x = np.geomspace(1e4, 1e7, 7)
    y = (1.2 + 25 * x**-0.3) * np.exp(rng.normal(0, 0.003, x.size))
    f = fit_power_law(x[:-1], y[:-1], bootstrap=200, seed=1)
    lo, hi = f.predict_interval(x[-1])
    assert lo[0] <= 1.2 + 25 * x[-1] ** -0.3 <= hi[0]
    assert f.predict([x[-1]])[0] == pytest.approx(1.2 + 25 * x[-1] ** -0.3, rel=0.02)


def test_chinchilla_recovers_parameters() -> None:
    rng = np.random.default_rng(0)
    N = np.repeat(np.geomspace(1e6, 1e9, 5), 4)
    D = np.tile(np.geomspace(1e8, 1e11, 4), 5)
    y = (1.69 + 406.4 * N**-0.34 + 410.7 * D**-0.28) * np.exp(rng.normal(0, 0.001, N.size))
    f = fit_chinchilla(N, D, y, bootstrap=0)
    assert f.params["E"] == pytest.approx(1.69, rel=0.05)
    assert f.params["alpha"] == pytest.approx(0.34, rel=0.05)
    assert f.params["beta"] == pytest.approx(0.28, rel=0.05)
    np.testing.assert_allclose(f.predict(N, D), y, rtol=0.01)


def test_plot_and_registry() -> None:
    assert set(SCALING_LAWS) == {"power", "chinchilla"}
    pytest.importorskip("matplotlib")
    x = np.geomspace(10, 1e4, 5)
    f = fit_power_law(x, 1 + 3 * x**-0.5, bootstrap=10)
    assert f.plot_png(extrapolate_to=1e5)[:4] == b"\x89PNG"
    assert f.to_dict()["runs"] == 5


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="x must be positive"):
        fit_power_law([1, 0, 3, 4], [3, 2, 1, 1])
    with pytest.raises(ValueError, match="loss must be positive"):
        fit_power_law([1, 2, 3, 4], [3, 2, -1, 1])
    with pytest.raises(ValueError, match="at least 4 runs"):
        fit_power_law([1, 2, 3], [3, 2, 1])
    with pytest.raises(ValueError, match="x must have 4 values"):
        fit_power_law([1, 2, 3], [3, 2, 1, 1])
    with pytest.raises(ValueError, match="n_tokens must be positive"):
        fit_chinchilla(np.ones(6), [1, 2, 3, 4, 5, np.nan], np.ones(6))
    with pytest.raises(ValueError, match="level must be"):
        fit_power_law([1, 2, 3, 4], [3, 2, 1, 1], level=1.0)
