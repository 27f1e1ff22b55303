"""Mutual information from samples: entropykit.estimators vs. a plain KSG, infomeasure, scikit-learn.

bmi's task families regenerated in NumPy with known truth (Czyż et al., "Beyond normal", 2023):
bivariate and multivariate normals (dense: every off-diagonal correlation 0.5; pairs: x_i, y_i
correlated 0.5), Student-t (heavy tails; truth = Gaussian MI + the Arellano-Valle et al. 2013
correction) and invertible per-variable maps (half-cube, asinh, normal CDF) that keep the MI.
N = 5,000 samples per task, several seeds. Contenders, all on the same standardised, jittered
arrays (jitter 1e-10 relative, seeded, as scikit-learn and ours add it):

* ours: ``mutual_info_ksg`` (KSG type 1, k = 3; ``neighbors="auto"``: the numba strip-and-sweep
  max-norm search for the joint k-th neighbours and every marginal count), single-threaded unless
  marked; also type 2, the k-ensemble (k = 1, 2, 3), LNC where it applies and the CCA projection;
* plain KSG: the formula written out with SciPy's cKDTree (joint k-NN query, marginal ball counts),
  NPEET's / the issue's probe algorithm;
* infomeasure's KSG (type 1, k = 3, noise off: it gets our jittered arrays);
* scikit-learn ``mutual_info_regression`` (1-D pairs only; it clips at 0).

Two parts. ``--part bias`` (accuracy only, any machine): KSG and every remedy for its
high-dimensional bias over 10 seeds on every task: (a) the full-rank CCA rotation (``cca_dims=d``),
(b) Gaussian-copula marginals (``copula=True``), (c) extrapolation in 1/N from disjoint subsamples
of N, N/2, N/4 (Holmes & Nemenman 2019, here in the benchmark), (d) the Gaussian-surrogate bias
correction (``gaussian_surrogates=2``); bias, sd, RMSE and both against plain KSG's. ``--part timing``
(needs an idle machine) reports mean estimate, bias, RMSE and std over seeds, median wall and CPU
seconds per estimate, the ratios of those times to ours (CPU time is the steadier measure on a
shared machine: every contender is single-threaded unless marked), peak extra resident memory
(seed 0) and the largest |difference| from our type-1 estimate. Usage:
``python benchmarks/estimators.py [--part timing|bias|all] [--seeds 3] [--bias-seeds 10] [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln, ndtr
from scipy.stats import differential_entropy

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, peak_extra_mb, record
from entropykit import estimators as est

Task = tuple[str, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]], float]


def _gauss_mi(s: np.ndarray, dx: int) -> float:
    return 0.5 * math.log(np.linalg.det(s[:dx, :dx]) * np.linalg.det(s[dx:, dx:]) / np.linalg.det(s))


def _dense(dx: int, dy: int, off: float) -> np.ndarray:
    s = np.full((dx + dy, dx + dy), off)
    np.fill_diagonal(s, 1.0)
    return s


def _pairs(d: int, rho: float) -> np.ndarray:
    s = np.eye(2 * d)
    for i in range(d):
        s[i, d + i] = s[d + i, i] = rho
    return s


def _student_correction(df: float, m: int, n: int) -> float:
    def h(k: int) -> float:  # entropy of a standard Student-t(0, I_k, df) minus (k/2) log(df pi)
        a = 0.5 * (df + k)
        return float(gammaln(df / 2) - gammaln(a) + a * (digamma(a) - digamma(df / 2)))

    return h(m) + h(n) - h(m + n)


def normal_task(
    name: str, s: np.ndarray, dx: int, f: Callable[[np.ndarray], np.ndarray] | None = None
) -> Task:
    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        z = rng.multivariate_normal(np.zeros(len(s)), s, size=n)
        if f is not None:
            z = f(z)
        return z[:, :dx], z[:, dx:]

    return name, draw, _gauss_mi(s, dx)


def student_task(name: str, s: np.ndarray, dx: int, df: float,
                 f: Callable[[np.ndarray], np.ndarray] | None = None) -> Task:
    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        z = rng.multivariate_normal(np.zeros(len(s)), s, size=n) / np.sqrt(rng.chisquare(df, n) / df)[:, None]
        if f is not None:
            z = f(z)
        return z[:, :dx], z[:, dx:]

    return name, draw, _gauss_mi(s, dx) + _student_correction(df, dx, len(s) - dx)


def half_cube(z: np.ndarray) -> np.ndarray:
    return np.abs(z) ** 1.5 * np.sign(z)


TASKS: list[Task] = [
    normal_task("normal 1x1 (rho 0.75)", _dense(1, 1, 0.75), 1),
    normal_task("half-cube normal 1x1", _dense(1, 1, 0.75), 1, half_cube),
    student_task("Student-t 1x1 (df 2, rho 0.5)", _dense(1, 1, 0.5), 1, 2.0),
    student_task("asinh Student-t 1x1 (df 1, rho 0.5)", _dense(1, 1, 0.5), 1, 1.0, np.arcsinh),
    normal_task("normal-CDF dense 2x2", _dense(2, 2, 0.5), 2, ndtr),
    normal_task("dense 5x5", _dense(5, 5, 0.5), 5),
    normal_task("pairs 16x16 (rho 0.5)", _pairs(16, 0.5), 16),
    normal_task("dense 25x25", _dense(25, 25, 0.5), 25),
]


def prepare(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardise and jitter exactly as scikit-learn and entropykit do (so every contender sees the
    same numbers)."""
    rng = np.random.default_rng(seed)
    out = []
    for a in (x, y):
        a = (a - a.mean(0)) / a.std(0)
        a = a + 1e-10 * np.maximum(1.0, np.mean(np.abs(a), axis=0)) * rng.standard_normal(a.shape)
        out.append(a)
    return out[0], out[1]


def plain_ksg(x: np.ndarray, y: np.ndarray, k: int = 3) -> float:
    """KSG type 1 written out plainly: cKDTree k-NN in the joint space (max-norm), ball counts strictly
    inside the k-th distance in each marginal, psi(k) + psi(N) - <psi(n_x + 1) + psi(n_y + 1)>."""
    n = len(x)
    xy = np.hstack([x, y])
    eps = cKDTree(xy).query(xy, k + 1, p=np.inf)[0][:, k]
    r = np.nextafter(eps, 0)
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True) - 1
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True) - 1
    return float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1)))


def extrapolated(x: np.ndarray, y: np.ndarray, s: int) -> tuple[float, float]:
    """Holmes & Nemenman (2019): KSG on r disjoint subsamples of N/r rows (r = 1, 2, 4), the mean per
    r fitted by weighted least squares as I(N) = I_inf + a r/N, read at r/N = 0. Weights: the
    variance of each mean, from the spread across the r subsamples (r = 4; scaled as 1/size, the
    estimator's variance law, for r = 1 and 2). Returns (I_inf, its standard error)."""
    rng = np.random.default_rng(s)
    n, xs, ys = len(x), [], []
    spread = 0.0
    for r in (1, 2, 4):
        perm = rng.permutation(n)
        vals = [est.mutual_info_ksg(x[part], y[part], random_state=s) for part in np.array_split(perm, r)]
        xs.append(r / n)
        ys.append(float(np.mean(vals)))
        if r == 4:
            spread = float(np.var(vals, ddof=1))  # variance of one estimate at N/4
    var_mean = np.array([spread / 4, spread / 2 / 2, spread / 4])  # var(one at N/r) / r
    w = 1 / var_mean
    design = np.column_stack([np.ones(3), xs])
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    coef = cov @ design.T @ (w * np.array(ys))
    return float(coef[0]), float(math.sqrt(cov[0, 0]))


def remedies(dx: int, dy: int) -> dict[str, Callable[[np.ndarray, np.ndarray, int], float]]:
    """KSG and every bias remedy, for the accuracy table (10 seeds on every task)."""
    c: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
        "plain KSG1 k=3 (ours)": lambda x, y, s: est.mutual_info_ksg(x, y, random_state=s),
        "KSG2 k=3": lambda x, y, s: est.mutual_info_ksg(x, y, variant=2, random_state=s),
        "ensemble k=1,2,3": lambda x, y, s: est.mutual_info_ksg(x, y, k=[1, 2, 3], random_state=s),
    }
    if dx + dy <= 4:
        c["k=4 + LNC (0.25)"] = lambda x, y, s: est.mutual_info_ksg(x, y, k=4, lnc_alpha=0.25, random_state=s)
    if min(dx, dy) >= 2:
        c["CCA m=1 (Gaussian-only truncation)"] = lambda x, y, s: est.mutual_info_ksg(
            x, y, cca_dims=1, random_state=s)
    if dx == dy >= 2:
        c["(a) full-rank CCA rotation"] = lambda x, y, s: est.mutual_info_ksg(x, y, cca_dims=dx,
                                                                            random_state=s)
    c["(b) Gaussian copula"] = lambda x, y, s: est.mutual_info_ksg(x, y, copula=True, random_state=s)
    c["(c) 1/N extrapolation"] = lambda x, y, s: extrapolated(x, y, s)[0]
    c["(d) Gaussian surrogates m=2"] = lambda x, y, s: est.mutual_info_ksg(x, y, gaussian_surrogates=2,
                                                                             random_state=s)
    c["(b)+(d) copula + surrogates m=2"] = lambda x, y, s: est.mutual_info_ksg(
        x, y, copula=True, gaussian_surrogates=2, random_state=s)
    return c


def run_bias(n: int, seeds: int) -> tuple[str, str]:
    """Bias, sd and RMSE over seeds of KSG and every remedy on every task; the extrapolation's mean
    error bar as a note."""
    rows: list[list[object]] = []
    notes = []
    for name, draw, truth in TASKS:
        data = [draw(np.random.default_rng(1000 + s), n) for s in range(seeds)]
        dx, dy = data[0][0].shape[1], data[0][1].shape[1]
        base_bias = base_sd = float("nan")
        for label, fn in remedies(dx, dy).items():
            vals, cpus = [], []
            for s, (x, y) in enumerate(data):
                c0 = time.process_time()
                vals.append(fn(x, y, s))
                cpus.append(time.process_time() - c0)
            a = np.array(vals)
            bias, sd = float(a.mean() - truth), float(a.std(ddof=1))
            if label.startswith("plain"):
                base_bias, base_sd = bias, sd
            rows.append([name, truth, label, seeds, float(a.mean()), bias, sd,
                         float(np.sqrt(np.mean((a - truth) ** 2))), abs(bias) / abs(base_bias), sd / base_sd,
                         statistics.median(cpus)])
            print(" | ".join(str(round(c, 4) if isinstance(c, float) else c) for c in rows[-1]), flush=True)
        bars = [extrapolated(x, y, s)[1] for s, (x, y) in enumerate(data[:2])] if dx + dy <= 10 else []
        if bars:
            notes.append(f"{name}: extrapolation error bar {np.mean(bars):.3g} (seeds 0-1)")
    header = ["task", "true MI", "estimator", "seeds", "mean", "bias", "sd", "RMSE", "|bias| / plain's",
              "sd / plain's", "CPU s"]
    return markdown_table(header, rows), "; ".join(notes)


def contenders(dx: int, dy: int) -> dict[str, Callable[[np.ndarray, np.ndarray, int], float]]:
    c: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
        "ours KSG1 k=3": lambda x, y, s: est.mutual_info_ksg(x, y, random_state=s),
    }
    if dx + dy >= 8:
        c["ours KSG1 k=3, 2 threads"] = lambda x, y, s: est.mutual_info_ksg(x, y, random_state=s, workers=2)
    c["ours KSG2 k=3"] = lambda x, y, s: est.mutual_info_ksg(x, y, variant=2, random_state=s)
    c["ours ensemble k=1,2,3"] = lambda x, y, s: est.mutual_info_ksg(x, y, k=[1, 2, 3], random_state=s)
    if min(dx, dy) >= 2:
        c["ours KSG1 k=3 on CCA m=1"] = lambda x, y, s: est.mutual_info_ksg(x, y, cca_dims=1, random_state=s)
    if dx + dy <= 4:
        c["ours KSG1 k=4 + LNC (0.25)"] = lambda x, y, s: est.mutual_info_ksg(x, y, k=4, lnc_alpha=0.25,
                                                                             random_state=s)

    def plain(x: np.ndarray, y: np.ndarray, s: int) -> float:
        return plain_ksg(*prepare(x, y, s))

    c["plain KSG (cKDTree)"] = plain
    try:
        import infomeasure as im

        def info(x: np.ndarray, y: np.ndarray, s: int) -> float:
            a, b = prepare(x, y, s)
            return float(im.mutual_information(a, b, approach="ksg", k=3, noise_level=0, base="e"))

        c["infomeasure KSG"] = info
    except ImportError:
        pass
    if dx == dy == 1:
        try:
            from sklearn.feature_selection import mutual_info_regression

            c["scikit-learn"] = lambda x, y, s: float(
                mutual_info_regression(x, y[:, 0], n_neighbors=3, random_state=s)[0])
        except ImportError:
            pass
    return c


SLOW = ("plain KSG (cKDTree)", "infomeasure KSG")


def run(n: int, seeds: int) -> tuple[str, list[list[object]]]:
    rows: list[list[object]] = []
    for name, draw, truth in TASKS:
        data = [draw(np.random.default_rng(1000 + s), n) for s in range(seeds)]
        dx, dy = data[0][0].shape[1], data[0][1].shape[1]
        ref: list[float] = []
        ref_time = ref_cpu = float("nan")
        for label, fn in contenders(dx, dy).items():
            # the slow tree baselines in high dimension: seed 0 only (they take tens of seconds)
            use = data[:1] if (label in SLOW and dx + dy >= 20) else data
            vals, times, cpus, mem = [], [], [], float("nan")
            for s, (x, y) in enumerate(use):

                def timed(
                    x: np.ndarray = x, y: np.ndarray = y, s: int = s, fn: Callable[..., float] = fn
                ) -> tuple[float, float, float]:
                    t0, c0 = time.perf_counter(), time.process_time()
                    v = fn(x, y, s)
                    return v, time.perf_counter() - t0, time.process_time() - c0

                if s == 0:
                    (v, dt, dc), mem = peak_extra_mb(timed)
                else:
                    v, dt, dc = timed()
                times.append(dt)
                cpus.append(dc)
                vals.append(v)
            if label == "ours KSG1 k=3":
                ref, ref_time, ref_cpu = vals, statistics.median(times), statistics.median(cpus)
            a = np.array(vals)
            diff = max(abs(v - r) for v, r in zip(vals, ref))
            t, c = statistics.median(times), statistics.median(cpus)
            rows.append([name, truth, label, len(use), float(a.mean()), float(a.mean() - truth),
                         float(np.sqrt(np.mean((a - truth) ** 2))), float(a.std()), t, t / ref_time, c,
                         c / ref_cpu, mem, f"{diff:.1e}"])
            print(" | ".join(str(round(c, 4) if isinstance(c, float) else c) for c in rows[-1]), flush=True)
    header = ["task", "true MI", "estimator", "seeds", "mean", "bias", "RMSE", "std", "s/estimate",
              "time vs ours", "CPU s", "CPU vs ours", "peak MB", "max |diff| vs ours"]
    return markdown_table(header, rows), rows


def entropy_rows(n: int) -> str:
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    cases = [("normal 1-D", rng.standard_normal(n), 0.5 * math.log(2 * math.pi * math.e)),
             ("exponential 1-D (scale 2)", rng.exponential(2.0, n), 1 + math.log(2.0))]
    cov = _dense(10, 0, 0.5)
    cases.append(("dense normal 10-D", rng.multivariate_normal(np.zeros(10), cov, size=n),
                  0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov))))
    for name, x, truth in cases:
        fns: dict[str, Callable[[], float]] = {"ours entropy_knn k=3": lambda x=x: est.entropy_knn(x)}
        if x.ndim == 1:
            fns["scipy differential_entropy"] = lambda x=x: float(differential_entropy(x))
        for label, fn in fns.items():
            t0 = time.perf_counter()
            v = fn()
            rows.append([name, truth, label, v, v - truth, time.perf_counter() - t0])
    return markdown_table(["sample", "true H", "estimator", "estimate", "error", "s"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("timing", "bias", "all"), default="all",
                    help="timing: the speed table (needs an idle machine); bias: KSG and its remedies over "
                         "--bias-seeds seeds on every task (accuracy only)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--bias-seeds", type=int, default=10)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="N = 1000, 1 seed (2 for bias), no RESULTS.md entry")
    args = ap.parse_args()
    n, seeds, bias_seeds = (1000, 1, 2) if args.quick else (args.n, args.seeds, args.bias_seeds)
    t0 = time.perf_counter()
    warm = np.random.default_rng(0).standard_normal((200, 4))  # numba: compile or load the disk cache
    est.mutual_info_ksg(warm[:, :2], warm[:, 2:])
    est.entropy_knn(warm)
    compile_s = time.perf_counter() - t0
    if args.part in ("bias", "all"):
        t0 = time.perf_counter()
        table, notes = run_bias(n, bias_seeds)
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        body = (
            f"N = {n}, {bias_seeds} seeds per task (data seeds 1000 + s, estimator seed s), k = 3. Accuracy "
            f"only (`uptime`: {load}; CPU seconds are indicative). Remedies for the high-dimensional "
            f"bias: (a) full-rank CCA rotation (`cca_dims=d`), (b) Gaussian-copula marginals "
            f"(`copula=True`), (c) extrapolation in 1/N from N, N/2, N/4 (Holmes & Nemenman 2019; "
            f"benchmark code), (d) the Gaussian-surrogate bias correction (`gaussian_surrogates=2`). "
            f"Goal: |bias| / plain's <= 0.5 on dense 25x25 with sd / plain's <= 2. {notes}. "
            f"Total {time.perf_counter() - t0:.0f} s.\n\n{table}\n"
        )
        if not args.quick:
            cmd = "python benchmarks/estimators.py --part bias" + (
                f" --bias-seeds {bias_seeds}" if bias_seeds != 10 else "")
            record("estimators-bias", "KSG bias remedies over 10 seeds (entropykit.estimators)", cmd, body)
    if args.part in ("timing", "all"):
        t0 = time.perf_counter()
        table, _ = run(n, seeds)
        ent = entropy_rows(n)
        print(ent)
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        total = time.perf_counter() - t0
        if args.quick:
            return
        body = (
            f"N = {n}, {seeds} seeds (the slow tree baselines on tasks of joint dimension >= 20: seed 0 "
            f"only), k = 3. `uptime` at the end: {load}; the ratios are measured in one process; CPU "
            f"seconds are steadier than wall seconds on a shared machine. Numba compile/cache load "
            f"before the run: {compile_s:.1f} s (once per process). Total {total:.0f} s.\n\n{table}\n\n"
            f"Differential entropy (N = {n}, seed 0):\n\n{ent}\n"
        )
        cmd = "python benchmarks/estimators.py --part timing" + (f" --seeds {seeds}" if seeds != 3 else "")
        record("estimators", "Information estimators from samples (entropykit.estimators)", cmd, body)


if __name__ == "__main__":
    main()
