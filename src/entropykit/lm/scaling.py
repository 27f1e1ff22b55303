"""Scaling-law fits: loss as a power law plus a constant, with bootstrap intervals.

Two forms (Kaplan et al. 2020; Henighan et al. 2020; Hoffmann et al. 2022, "Chinchilla"):

- ``"power"``: ``L(x) = E + A x^(-alpha)`` in one variable ``x`` (parameters, data or compute);
  ``E`` is the irreducible loss.
- ``"chinchilla"``: ``L(N, D) = E + A N^(-alpha) + B D^(-beta)`` in parameters N and tokens D.

Fitting follows Hoffmann et al. (Sec. 3.3, Appendix D.2): the parameters are ``a = log A``,
``b = log B``, ``e = log E`` and the model is ``log L = LSE(a - alpha log N, b - beta log D, e)``;
the objective is the Huber loss (``delta = 1e-3``) of ``log L_fit - log L_obs`` summed over runs,
robust to an outlying run, minimised from a grid of starting points (we use SciPy's trust-region
least squares with ``loss="huber"``, which minimises exactly that sum). Intervals: the runs are
resampled with replacement and refitted (nonparametric bootstrap); a parameter's or a prediction's
interval is the percentile interval of the refits. Units: whatever the losses are in (nats or bits
per token); ``x`` must be positive.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from entropykit._registry import Method, registry
from entropykit._validate import check_int, check_real

__all__ = ["SCALING_LAWS", "ScalingFit", "fit_chinchilla", "fit_power_law"]

HUBER_DELTA = 1e-3  # Hoffmann et al.


def _positive(x: Any, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {a.shape}")
    if n is not None and a.size != n:
        raise ValueError(f"{name} must have {n} values (one per run), got {a.size}")
    if not np.isfinite(a).all() or (a <= 0).any():
        bad = a[~(np.isfinite(a) & (a > 0))][0]
        raise ValueError(f"{name} must be positive and finite, got {bad!r}")
    return a


def _predict_log(kind: str, theta: np.ndarray, cols: tuple[np.ndarray, ...]) -> np.ndarray:
    """log L for parameters theta: power (a, e, alpha); chinchilla (a, b, e, alpha, beta)."""
    if kind == "power":
        a, e, alpha = theta
        return np.logaddexp(a - alpha * np.log(cols[0]), e)
    a, b, e, alpha, beta = theta
    return logsumexp(np.stack([a - alpha * np.log(cols[0]), b - beta * np.log(cols[1]),
                               np.full(cols[0].shape, e)]), axis=0)


def _starts(kind: str, loss: np.ndarray, cols: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    lmin = float(loss.min())
    out = []
    for frac, alpha in itertools.product((0.1, 0.5, 0.9), (0.1, 0.3, 0.6, 1.0)):
        e = np.log(frac * lmin)
        rest = np.log(np.maximum(np.median(loss) - frac * lmin, 1e-6 * lmin))
        a = rest + alpha * np.log(np.median(cols[0]))
        if kind == "power":
            out.append(np.array([a, e, alpha]))
        else:
            b = rest + alpha * np.log(np.median(cols[1]))
            out.append(np.array([a - np.log(2), b - np.log(2), e, alpha, alpha]))
    return out


def _fit_once(kind: str, loss: np.ndarray, cols: tuple[np.ndarray, ...], starts: list[np.ndarray],
              delta: float) -> tuple[np.ndarray, float]:
    k = len(starts[0])
    lo = np.full(k, -np.inf)
    hi = np.full(k, np.inf)
    lo[-1 if kind == "power" else -2:] = 0.0  # exponents >= 0
    hi[-1 if kind == "power" else -2:] = 5.0
    target = np.log(loss)

    def resid(theta: np.ndarray) -> np.ndarray:
        return _predict_log(kind, theta, cols) - target

    def jac(theta: np.ndarray) -> np.ndarray:
        # d log L / d(term's log) = that term's share of L (softmax weights of the LSE)
        logl = _predict_log(kind, theta, cols)
        lx = np.log(cols[0])
        if kind == "power":
            w = np.exp(theta[0] - theta[2] * lx - logl)
            return np.stack([w, 1.0 - w, -w * lx], axis=1)
        ld = np.log(cols[1])
        wa = np.exp(theta[0] - theta[3] * lx - logl)
        wb = np.exp(theta[1] - theta[4] * ld - logl)
        return np.stack([wa, wb, 1.0 - wa - wb, -wa * lx, -wb * ld], axis=1)

    best, best_cost = starts[0], np.inf
    for s0 in starts:
        s0 = np.clip(s0, lo + 1e-9, hi - 1e-9)
        r = optimize.least_squares(resid, s0, jac=jac, bounds=(lo, hi), loss="huber", f_scale=delta,
                                   x_scale="jac", max_nfev=5000, ftol=1e-14, xtol=1e-14, gtol=1e-14)
        if r.cost < best_cost:
            best, best_cost = r.x, float(r.cost)
    return best, best_cost


@dataclass
class ScalingFit:
    """A fitted law: ``params`` (E, A, alpha[, B, beta]), percentile ``intervals`` from ``boot`` (one
    row of parameters per bootstrap refit), and the data it was fitted on."""

    kind: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    boot: np.ndarray = field(repr=False)
    x: tuple[np.ndarray, ...] = field(repr=False)
    loss: np.ndarray = field(repr=False)
    level: float = 0.95
    theta: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def _cols(self, x: Any, d: Any = None) -> tuple[np.ndarray, ...]:
        xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
        cols: tuple[np.ndarray, ...] = (_positive(xs, "x"),)
        if self.kind == "chinchilla":
            if d is None:
                raise ValueError("d must be given for a chinchilla fit (tokens)")
            cols = (cols[0], _positive(np.broadcast_to(np.asarray(d, np.float64), xs.shape), "d"))
        return cols

    def predict(self, x: Any, d: Any = None) -> np.ndarray:
        """The fitted loss at ``x`` (and ``d`` tokens for the chinchilla form)."""
        return np.exp(_predict_log(self.kind, self.theta, self._cols(x, d)))

    def predict_interval(self, x: Any, d: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval (at ``level``) of the bootstrap refits' predictions at ``x``."""
        cols = self._cols(x, d)
        preds = np.exp(np.stack([_predict_log(self.kind, t, cols) for t in self.boot]))
        q = (1 - self.level) / 2
        return np.quantile(preds, q, axis=0), np.quantile(preds, 1 - q, axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params, "level": self.level,
                "intervals": {k: list(v) for k, v in self.intervals.items()}, "runs": int(self.loss.size),
                "bootstrap": int(self.boot.shape[0])}

    def plot_png(self, path: str | Path | None = None, *, extrapolate_to: float | None = None,
                 force: bool = True) -> bytes:
        """Loss against x (log axis) with the fit and its bootstrap band, extended to
        ``extrapolate_to`` (PNG bytes; one-variable fits only; needs the ``[plot]`` extra)."""
        if self.kind != "power":
            raise ValueError(f"plot_png draws one-variable fits, got kind={self.kind!r}")
        from entropykit.lm._plot import new_figure, save_png

        x = self.x[0]
        top = max(float(x.max()), extrapolate_to or 0.0)
        grid = np.geomspace(float(x.min()), top, 200)
        lo, hi = self.predict_interval(grid)
        fig = new_figure(5.5, 3.6)
        ax = fig.add_subplot(1, 1, 1)
        ax.fill_between(grid, lo, hi, color="#2f69d0", alpha=0.2, lw=0, label=f"{self.level:.0%} bootstrap")
        ax.plot(grid, self.predict(grid), color="#2f69d0",
                label=f"E + A x^-a: E={self.params['E']:.3g}, a={self.params['alpha']:.3g}")
        ax.scatter(x, self.loss, color="#c0281b", zorder=3, s=18, label="runs")
        ax.set_xscale("log")
        ax.set_xlabel("x")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        return save_png(fig, path, force=force)


def _names(kind: str) -> tuple[str, ...]:
    return ("A", "E", "alpha") if kind == "power" else ("A", "B", "E", "alpha", "beta")


def _to_params(kind: str, theta: np.ndarray) -> dict[str, float]:
    if kind == "power":
        return {"E": float(np.exp(theta[1])), "A": float(np.exp(theta[0])), "alpha": float(theta[2])}
    return {"E": float(np.exp(theta[2])), "A": float(np.exp(theta[0])), "alpha": float(theta[3]),
            "B": float(np.exp(theta[1])), "beta": float(theta[4])}


def _fit(kind: str, cols: tuple[np.ndarray, ...], loss: np.ndarray, bootstrap: int, level: float,
         delta: float, seed: int) -> ScalingFit:
    theta, _ = _fit_once(kind, loss, cols, _starts(kind, loss, cols), delta)
    rng = np.random.default_rng(seed)
    n = loss.size
    boot = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n, n)
        if np.unique(cols[0][idx]).size < 2:  # a resample of one point cannot fix a curve
            continue
        t, _ = _fit_once(kind, loss[idx], tuple(c[idx] for c in cols), [theta], delta)
        boot.append(t)
    boots = np.array(boot) if boot else theta[None, :]
    params = [_to_params(kind, t) for t in boots]
    q = (1 - level) / 2
    intervals = {}
    for k in _to_params(kind, theta):
        vals = [p[k] for p in params]
        intervals[k] = (float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q)))
    return ScalingFit(kind, _to_params(kind, theta), intervals, boots, cols, loss, level, theta)


def _common(
    loss: Any, n_min: int, bootstrap: int, level: float, delta: float
) -> tuple[np.ndarray, int, float, float]:
    y = _positive(loss, "loss")
    if y.size < n_min:
        raise ValueError(f"loss must have at least {n_min} runs for this law, got {y.size}")
    return (y, check_int(bootstrap, "bootstrap", 0),
            check_real(level, "level", 0, 1, lo_open=True, hi_open=True),
            check_real(delta, "huber_delta", 0, lo_open=True, finite=True))


def fit_power_law(
    x: Any, loss: Any, *, bootstrap: int = 200, level: float = 0.95, huber_delta: float = HUBER_DELTA,
    seed: int = 0,
) -> ScalingFit:
    """Fit ``L(x) = E + A x^(-alpha)`` by Huber loss on log L (Hoffmann et al. 2022), with bootstrap
    percentile intervals over ``bootstrap`` resamples of the runs.

    ``x``: positive sizes (parameters, tokens or FLOPs), ``loss``: positive losses, at least 4 runs.
    Sources: Kaplan et al. (2020); Hoffmann et al. (2022), Appendix D.2.

    >>> x = np.geomspace(1e5, 1e8, 8)
    >>> f = fit_power_law(x, 1.7 + 400.0 * x ** -0.34, bootstrap=0)
    >>> {k: round(v, 3) for k, v in f.params.items()}
    {'E': 1.7, 'A': 400.0, 'alpha': 0.34}
    """
    y, b, lv, d = _common(loss, 4, bootstrap, level, huber_delta)
    return _fit("power", (_positive(x, "x", y.size),), y, b, lv, d, seed)


def fit_chinchilla(
    n_params: Any, n_tokens: Any, loss: Any, *, bootstrap: int = 200, level: float = 0.95,
    huber_delta: float = HUBER_DELTA, seed: int = 0,
) -> ScalingFit:
    """Fit ``L(N, D) = E + A N^(-alpha) + B D^(-beta)`` (Hoffmann et al. 2022, Eq. 2 and App. D.2),
    at least 6 runs; ``predict(N, D)``.

    >>> N = np.repeat(np.geomspace(1e6, 1e8, 4), 3); D = np.tile(np.geomspace(1e8, 1e10, 3), 4)
    >>> f = fit_chinchilla(N, D, 1.69 + 406.4 * N ** -0.34 + 410.7 * D ** -0.28, bootstrap=0)
    >>> round(f.params["E"], 2), round(f.params["alpha"], 2), round(f.params["beta"], 2)
    (1.69, 0.34, 0.28)
    """
    y, b, lv, d = _common(loss, 6, bootstrap, level, huber_delta)
    cols = (_positive(n_params, "n_params", y.size), _positive(n_tokens, "n_tokens", y.size))
    return _fit("chinchilla", cols,
                y, b, lv, d, seed)


_LawFn = Callable[..., ScalingFit]

SCALING_LAWS: dict[str, Method] = registry(
    Method("power", fit_power_law, "Kaplan et al. 2020; Hoffmann et al. 2022 (Huber on log loss)",
           {"bootstrap": 200, "huber_delta": HUBER_DELTA}, "L(x) = E + A x^-alpha"),
    Method("chinchilla", fit_chinchilla, "Hoffmann et al. 2022, Eq. 2",
           {"bootstrap": 200, "huber_delta": HUBER_DELTA}, "L(N, D) = E + A N^-alpha + B D^-beta"),
)

Kind = Literal["power", "chinchilla"]
