"""The cross-entropy method: entropykit.optim vs pycma, evotorch's functional CEM and a plain CEM.

All in one process, float64, 5 seeds each:

1. Sphere (10-D and 30-D), ellipsoid (10-D, condition 1e6), Rosenbrock, Rastrigin and Ackley (10-D) to
   f <= 1e-8 within 200k evaluations (start 3 * ones with sigma 1, Rastrigin and Ackley sigma 2;
   Rosenbrock from 0, sigma 0.5): successes, median evaluations of the successful runs, median best f,
   median seconds per run. Contenders: ``plain`` (population 100, 10% elite, the ML refit around the
   new mean, no floor: the CEM of the issue's probe, written here), ``evotorch`` (functional
   ``cem``/``cem_ask``/``cem_tell``, same population and elite; its defaults, and with
   ``stdev_max_change=0.2``, the limiter its docs offer against collapse), ``ours-diag`` (defaults:
   the variance measured around the old mean), ``ours-full`` (full covariance, ``old_weight_var=0.5``,
   20% elite), ``ours-full, dynamic smoothing`` (Kroese, Porotsky & Rubinstein 2006: the ML refit,
   mean weight 0.8, covariance weight ``beta_t = 0.8 - 0.8 (1 - 1/t)^6``), ``ours-amalgam``
   (``amalgam_options(d)``: adaptive variance scaling and anticipated mean shift, Bosman et al.) and
   ``pycma`` (CMA-ES, its defaults). ``ours-diag``, ``ours-amalgam`` and ``pycma`` restart up to 9
   times with a doubled population after a collapse (IPOP); the others run once. The two smoothed
   full-covariance variants run on the 10-D sphere, ellipsoid and Rosenbrock only; two ablations of
   ``ours-amalgam`` (no variance scaling; no mean shift; no restarts) on Rosenbrock only.
2. ask/tell overhead per generation at population 1,000 and d = 100 (cheap objective), ours vs
   evotorch vs pycma, with peak extra memory.
3. Control with gymnasium (if installed): CartPole-v1 with a linear policy found by our CEM (return
   500 = solved), and Pendulum-v1 MPC with iCEM planning through a torch copy of the dynamics.
4. Rare events: P(Z > 5) (1-D) and P(sum of 10 N(0,1) > 15) by multilevel CEM importance sampling,
   per sample budget: mean estimate / truth, the spread of estimates over seeds vs the reported
   relative error; two-region events (P(|Z| >= 4.5), P(max(X1, X2) >= 4)) with one Gaussian vs a
   two-component mixture proposal; and 9 thresholds in one batched call vs a loop of 9 calls.

Usage: ``python benchmarks/optim.py`` (about 5-8 minutes on a shared 2-core machine) or ``--quick``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit.optim import (
    CEM,
    ICEM,
    amalgam_options,
    cem_ask,
    cem_init,
    cem_tell,
    dynamic_smoothing,
    minimize,
    rare_event_probabilities,
    rare_event_probability,
)


def sphere(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).sum(-1)


def ellipsoid(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    return (10 ** (6 * torch.arange(d, dtype=x.dtype) / (d - 1)) * x**2).sum(-1)


def rastrigin(x: torch.Tensor) -> torch.Tensor:
    return 10 * x.shape[-1] + (x**2 - 10 * torch.cos(2 * math.pi * x)).sum(-1)


def ackley(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    a = -20 * torch.exp(-0.2 * torch.sqrt((x**2).sum(-1) / d))
    return a - torch.exp(torch.cos(2 * math.pi * x).sum(-1) / d) + 20 + math.e


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


# name -> (f, dimension, start, sigma0)
PROBLEMS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int, float, float]] = {
    "sphere 10-D": (sphere, 10, 3.0, 1.0),
    "sphere 30-D": (sphere, 30, 3.0, 1.0),
    "ellipsoid 10-D": (ellipsoid, 10, 3.0, 1.0),
    "rosenbrock 10-D": (rosenbrock, 10, 0.0, 0.5),
    "rastrigin 10-D": (rastrigin, 10, 3.0, 2.0),
    "ackley 10-D": (ackley, 10, 3.0, 2.0),
}
RESTARTS = 9
# the two smoothed full-covariance variants run on the three problems that tell them apart (their
# failing runs use the whole 200k budget: slow on this machine)
VALLEY = ("sphere 10-D", "ellipsoid 10-D", "rosenbrock 10-D")
VALLEY_ONLY = ("ours-full", "ours-full, dynamic smoothing (KPR 2006)")
TARGET, BUDGET = 1e-8, 200_000


def run_plain(f: Callable, x0: torch.Tensor, s0: float, seed: int) -> tuple[int, float]:
    g = torch.Generator().manual_seed(seed)
    m, s = x0.clone(), torch.full_like(x0, s0)
    evals, best = 0, math.inf
    while evals < BUDGET and best > TARGET and float(s.max()) > 1e-12:
        x = m + s * torch.randn(100, x0.numel(), generator=g, dtype=x0.dtype)
        fx = f(x)
        evals += 100
        best = min(best, float(fx.min()))
        el = x[fx.argsort()[:10]]
        m, s = el.mean(0), el.std(0, unbiased=False)
    return evals, best


def run_evotorch(
    f: Callable, x0: torch.Tensor, s0: float, seed: int, max_change: float | None = None
) -> tuple[int, float]:
    from evotorch.algorithms.functional import cem
    from evotorch.algorithms.functional import cem_ask as e_ask
    from evotorch.algorithms.functional import cem_tell as e_tell

    torch.manual_seed(seed)  # evotorch samples from the global generator
    st = cem(
        center_init=x0.clone(), parenthood_ratio=0.1, objective_sense="min", stdev_init=s0,
        stdev_max_change=max_change,
    )
    evals, best = 0, math.inf
    while evals < BUDGET and best > TARGET and float(st.stdev.max()) > 1e-12:
        x = e_ask(st, popsize=100)
        fx = f(x)
        evals += 100
        best = min(best, float(fx.min()))
        st = e_tell(st, x, fx)
    return evals, best


def run_ours(f: Callable, x0: torch.Tensor, s0: float, seed: int, **opts: object) -> tuple[int, float]:
    r = minimize(
        f, x0, s0, generator=torch.Generator().manual_seed(seed), target=TARGET, max_evals=BUDGET, **opts
    )
    return r.evaluations, float(r.f)


def run_cma(f: Callable, x0: torch.Tensor, s0: float, seed: int) -> tuple[int, float]:
    import cma

    _, es = cma.fmin2(
        None, x0.numpy(), s0, {"seed": seed + 1, "ftarget": TARGET, "maxfevals": BUDGET, "verbose": -9},
        restarts=RESTARTS, incpopsize=2, parallel_objective=lambda xs: f(torch.tensor(np.array(xs))).tolist(),
    )
    return es.result.evaluations, float(es.result.fbest)


def have(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


# (problem, method) -> (solved, seeds, median evaluations of the solved runs)
SOLVED: dict[tuple[str, str], tuple[int, int, object]] = {}


def optimisation(seeds: int) -> str:
    runners: dict[str, Callable] = {
        "plain CEM": run_plain,
        "ours-diag (+IPOP)": lambda f, x0, s0, seed: run_ours(f, x0, s0, seed, restarts=RESTARTS),
        "ours-full": lambda f, x0, s0, seed: run_ours(
            f, x0, s0, seed, covariance="full", old_weight_var=0.5, elite=0.2
        ),
        "ours-full, dynamic smoothing (KPR 2006)": lambda f, x0, s0, seed: run_ours(
            f, x0, s0, seed, covariance="full", variance_center="new", old_weight_mean=0.2,
            old_weight_var=dynamic_smoothing(0.8, 6),
        ),
        "ours-amalgam (+IPOP)": lambda f, x0, s0, seed: run_ours(
            f, x0, s0, seed, restarts=RESTARTS, **amalgam_options(x0.numel())
        ),
        "ours-amalgam without the variance scaling": lambda f, x0, s0, seed: run_ours(
            f, x0, s0, seed, **{**amalgam_options(x0.numel()), "adaptive_scaling": False}
        ),
        "ours-amalgam without the mean shift": lambda f, x0, s0, seed: run_ours(
            f, x0, s0, seed, **{**amalgam_options(x0.numel()), "mean_shift": 0.0}
        ),
    }
    if have("evotorch.algorithms.functional"):
        runners["evotorch CEM"] = run_evotorch
        runners["evotorch CEM, stdev_max_change 0.2"] = lambda f, x0, s0, seed: run_evotorch(
            f, x0, s0, seed, 0.2
        )
    if have("cma"):
        runners["pycma (+IPOP)"] = run_cma
    rows = []
    for pname, (f, dim, start, s0) in PROBLEMS.items():
        x0 = torch.full((dim,), start, dtype=torch.float64)
        for name, run in runners.items():
            if (name in VALLEY_ONLY and pname not in VALLEY) or (
                "without" in name and not pname.startswith("rosenbrock")
            ):
                continue
            evs, fs, ts = [], [], []
            for seed in range(seeds):
                t = time.perf_counter()
                e, fb = run(f, x0, s0, seed)
                ts.append(time.perf_counter() - t)
                evs.append(e)
                fs.append(fb)
            ok = [e for e, fb in zip(evs, fs) if fb <= TARGET]
            med = statistics.median(ok) if ok else "-"
            SOLVED[(pname, name)] = (len(ok), seeds, med)
            rows.append(
                [
                    pname,
                    name,
                    f"{len(ok)}/{seeds}",
                    med,
                    f"{statistics.median(fs):.2e}",
                    statistics.median(ts),
                ]
            )
            print(rows[-1], flush=True)
    return markdown_table(
        ["problem", "method", "solved", "median evals (solved)", "median best f", "median s/run"], rows
    )


def overhead(gens: int) -> str:
    d, n = 100, 1000
    x0 = torch.zeros(d, dtype=torch.float64)
    rows = []

    def ours() -> None:
        g = torch.Generator().manual_seed(0)
        s = cem_init(x0, 1.0, popsize=n, elite=0.1)
        for _ in range(gens):
            x = cem_ask(s, g)
            s = cem_tell(s, x, sphere(x))

    def evo() -> None:
        from evotorch.algorithms.functional import cem
        from evotorch.algorithms.functional import cem_ask as e_ask
        from evotorch.algorithms.functional import cem_tell as e_tell

        st = cem(center_init=x0.clone(), parenthood_ratio=0.1, objective_sense="min", stdev_init=1.0)
        for _ in range(gens):
            x = e_ask(st, popsize=n)
            st = e_tell(st, x, sphere(x))

    def pycma() -> None:
        import cma

        es = cma.CMAEvolutionStrategy(np.zeros(d), 1.0, {"popsize": n, "seed": 1, "verbose": -9})
        for _ in range(gens):
            xs = es.ask()
            es.tell(xs, sphere(torch.tensor(np.array(xs))).tolist())

    contenders = [("ours (cem_ask/cem_tell)", ours)]
    if have("evotorch.algorithms.functional"):
        contenders.append(("evotorch cem_ask/cem_tell", evo))
    if have("cma"):
        contenders.append(("pycma ask/tell (CMA-ES)", pycma))
    # rounds interleave the torch contenders (a shared machine's load drifts); median per contender.
    # pycma runs after them, alone: its NumPy/BLAS threads keep spinning after a call and slowed
    # whichever contender came next by ~25% when it was in the rotation
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for _name, fn in contenders:
        fn()  # warm-up
    for _ in range(6):
        for name, fn in contenders:
            if not name.startswith("pycma"):
                times[name].append(timeit(fn, repeat=1, warmup=0))
    for name, fn in contenders:
        if name.startswith("pycma"):
            times[name] = [timeit(fn, repeat=3, warmup=0)]
    res = {}
    for name, fn in contenders:
        _, mb = peak_extra_mb(fn)
        res[name] = (statistics.median(times[name]) / gens * 1e3, mb)
    base = res["ours (cem_ask/cem_tell)"][0]
    for name, (ms, mb) in res.items():
        rows.append([name, ms, ms / base, mb])
        print(rows[-1], flush=True)
    return markdown_table(
        ["ask+tell, pop 1000, d 100", "ms / generation", "ratio to ours", "peak extra MB"], rows
    )


def control(seeds: int, steps: int) -> str:
    import gymnasium as gym

    from entropykit.optim.control import pendulum_cost, pendulum_state, run_mpc

    rows = []
    # CartPole: a linear policy a = 1{w . obs + b > 0}, 5 parameters, CEM maximises the return
    for seed in range(seeds):
        env = gym.make("CartPole-v1")

        def episode_return(p: np.ndarray, env=env, seed=seed) -> float:
            obs, _ = env.reset(seed=seed)
            total = 0.0
            for _ in range(500):
                obs, r, term, trunc, _ = env.step(int(float(np.dot(p[:4], obs) + p[4]) > 0))
                total += float(r)
                if term or trunc:
                    break
            return total

        t = time.perf_counter()
        es = CEM(
            np.zeros(5),
            1.0,
            generator=torch.Generator().manual_seed(seed),
            maximize=True,
            popsize=20,
            elite=0.2,
            target=500.0,
            max_iters=20,
        )
        while not es.stop():
            x = es.ask()
            es.tell(x, torch.tensor([episode_return(row.numpy()) for row in x], dtype=torch.float64))
        r = es.result
        rows.append(
            ["CartPole-v1, linear policy, CEM", seed, float(r.f), r.evaluations, time.perf_counter() - t]
        )
        print(rows[-1], flush=True)
    for seed in range(seeds):
        env = gym.make("Pendulum-v1")
        pl = ICEM(
            30,
            1,
            lower=-2.0,
            upper=2.0,
            popsize=100,
            elite=10,
            iterations=3,
            generator=torch.Generator().manual_seed(seed),
        )
        t = time.perf_counter()
        ret = run_mpc(
            env, pl, lambda o, p: pendulum_cost(pendulum_state(o).float(), p), steps=steps, seed=seed
        )
        rows.append(
            [
                "Pendulum-v1, iCEM MPC (H 30, pop 100, 3 it.)",
                seed,
                ret,
                pl.evaluations,
                time.perf_counter() - t,
            ]
        )
        print(rows[-1], flush=True)
    return markdown_table(["task", "seed", "return", "evaluations (episodes / plans)", "seconds"], rows)


def rare(seeds: int) -> str:
    from scipy.stats import norm

    rows = []
    for dim, c in [(1, 5.0), (10, 15.0)]:
        truth = norm.sf(c / math.sqrt(dim))
        for n in (500, 2000, 8000):
            est, rep, inside, evals = [], [], 0, []
            for seed in range(seeds):
                r = rare_event_probability(
                    lambda x: x.sum(-1), c, dim, n_samples=n, generator=torch.Generator().manual_seed(seed)
                )
                est.append(r.probability)
                rep.append(r.relative_error)
                inside += abs(r.probability - truth) <= 3 * r.std_error
                evals.append(r.evaluations)
            rows.append(
                [
                    f"P(sum of {dim} N(0,1) > {c:g}) = {truth:.3g}",
                    n,
                    statistics.median(evals),
                    statistics.mean(est) / truth,
                    statistics.pstdev(est) / truth,
                    statistics.mean(rep),
                    f"{inside}/{seeds}",
                ]
            )
            print(rows[-1], flush=True)
    return markdown_table(
        [
            "event",
            "samples / level",
            "median evaluations",
            "mean estimate / truth",
            "spread of estimates / truth",
            "mean reported rel. error",
            "truth within 3 SE",
        ],
        rows,
    )


def rare_regions(seeds: int) -> str:
    """Events made of two regions: one Gaussian proposal vs a two-component mixture, 2000 samples/level."""
    from scipy.stats import norm

    events = [
        ("P(|Z| >= 4.5), 1-D", lambda x: x[:, 0].abs(), 4.5, 1, 2 * norm.sf(4.5)),
        ("P(max(X1, X2) >= 4), 2-D", lambda x: x.max(-1).values, 4.0, 2, 1 - norm.cdf(4.0) ** 2),
    ]
    rows = []
    for name, score, c, dim, truth in events:
        for k in (1, 2):
            est, rep, inside, evals, secs = [], [], 0, [], []
            for seed in range(seeds):
                t = time.perf_counter()
                r = rare_event_probability(
                    score, c, dim, components=k, max_levels=20, generator=torch.Generator().manual_seed(seed)
                )
                secs.append(time.perf_counter() - t)
                est.append(r.probability)
                rep.append(r.relative_error)
                inside += abs(r.probability - truth) <= 3 * r.std_error
                evals.append(r.evaluations)
            rows.append(
                [
                    f"{name} = {truth:.3g}",
                    "one Gaussian" if k == 1 else "mixture, K = 2",
                    statistics.median(evals),
                    statistics.mean(est) / truth,
                    statistics.median(rep),
                    f"{inside}/{seeds}",
                    statistics.median(secs),
                ]
            )
            print(rows[-1], flush=True)
    return markdown_table(
        [
            "event",
            "proposal",
            "median evaluations",
            "mean estimate / truth",
            "median reported rel. error",
            "truth within 3 SE",
            "median s/run",
        ],
        rows,
    )


def rare_batch(seeds: int) -> str:
    """9 thresholds of P(sum of 10 N(0,1) >= c sqrt 10), c = 2..6: one batched call vs a loop of 9 calls."""
    from scipy.stats import norm

    c = torch.linspace(2.0, 6.0, 9, dtype=torch.float64)
    truth = torch.tensor(norm.sf(c.numpy()))
    rows = []
    for name in ("loop of 9 calls", "one batched call"):
        secs, worst, inside = [], [], 0
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            t = time.perf_counter()
            if name.startswith("loop"):
                rs = [
                    rare_event_probability(lambda x: x.sum(-1), float(v) * math.sqrt(10), 10, generator=g)
                    for v in c
                ]
                p = torch.tensor([r.probability for r in rs], dtype=torch.float64)
                se = torch.tensor([r.std_error for r in rs], dtype=torch.float64)
            else:
                rb = rare_event_probabilities(lambda x: x.sum(-1), c * math.sqrt(10), 10, generator=g)
                p, se = rb.probability, rb.std_error
            secs.append(time.perf_counter() - t)
            worst.append(float((p / truth - 1).abs().max()))
            inside += int(((p - truth).abs() <= 3 * se).sum())
        rows.append([name, statistics.median(secs), statistics.median(worst), f"{inside}/{9 * seeds}"])
        print(rows[-1], flush=True)
    base = rows[0][1]
    for r in rows:
        r.insert(2, base / r[1])
    return markdown_table(
        [
            "9 thresholds, 10-D, 2000 samples/level",
            "median s",
            "speed-up vs loop",
            "median worst |p/truth - 1|",
            "truths within 3 SE",
        ],
        rows,
    )


def _summary() -> str:
    def cell(p: str, m: str) -> str:
        if (p, m) not in SOLVED:
            return f"{m}: not run"
        k, n, med = SOLVED[(p, m)]
        return f"{m} {k}/{n}" + (f" (median {med:.0f} evaluations)" if k else "")

    out = []
    for p in ("rosenbrock 10-D", "rastrigin 10-D"):
        names = [m for (q, m) in SOLVED if q == p]
        out.append(f"{p}: " + "; ".join(cell(p, m) for m in names))
    return "solved at the same 200k budget, " + ". ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seeds = 2 if args.quick else 5
    torch.set_num_threads(1)
    load = os.getloadavg()
    t0 = time.perf_counter()
    parts = ["### 1. Optimisation to f <= 1e-8 within 200k evaluations (5 seeds)\n", optimisation(seeds)]
    parts += ["\n### 2. ask/tell overhead\n", overhead(3 if args.quick else 8)]
    if have("gymnasium"):
        parts += [
            "\n### 3. Control (gymnasium)\n",
            control(2 if args.quick else 3, 50 if args.quick else 200),
        ]
    parts += [
        "\n### 4. Rare events (multilevel CEM importance sampling)\n",
        rare(seeds if args.quick else 10),
        "\n#### Two-region events: one Gaussian vs a Gaussian-mixture proposal\n",
        rare_regions(seeds if args.quick else 10),
        "\n#### Many thresholds at once (`rare_event_probabilities`)\n",
        rare_batch(2 if args.quick else 5),
    ]
    wall = time.perf_counter() - t0
    load_end = os.getloadavg()
    notes = [
        f"shared machine: load average {load[0]:.1f} at start, {load_end[0]:.1f} at end (2 cores, up to 8 "
        "helpers): times are indicative; ratios are measured in one process; torch 1 thread",
        f"total wall time {wall:.0f} s",
        "reading the tables: the plain CEM refit (variance around the new elite mean) shrinks the "
        "variance faster than the mean travels and stalls far from the optimum (the issue's failure); "
        "ours measures the elites' spread around the mean they were sampled from (variance_center='old'), "
        "so the variance grows along the direction of progress and shrinks only near the optimum",
        "evotorch's functional CEM with its defaults (no stdev_max_change) is the plain refit; with "
        "stdev_max_change=0.2 its std can shrink by at most 20% per generation, which slows the collapse",
        "why CEM fails on Rosenbrock: truncation selection shrinks the refitted covariance by a roughly "
        "constant factor per generation, while the mean still has a long, bending valley to travel. "
        "Measuring the spread around the old mean (ours-diag, ours-full) keeps the variance along the "
        "current direction of travel, but the valley turns, the covariance lags it and the search creeps. "
        "Dynamic smoothing (KPR 2006) makes the shrinking polynomial instead of geometric, which delays "
        "the collapse but does not reverse it. AMaLGaM's adaptive variance scaling does: while the "
        "improving samples land more than one standard deviation from the mean (SDR > 1) the covariance "
        "is enlarged by 1/0.9 per generation, and the anticipated mean shift extrapolates the mean's "
        "step. Colored noise (iCEM) is for action sequences along a planning horizon and does not apply "
        "to these static functions",
        _summary(),
    ]
    body = "\n".join(f"- {x}" for x in notes) + "\n\n" + "\n".join(parts)
    print(body)
    cmd = "python benchmarks/optim.py" + "".join(f" {a}" for a in sys.argv[1:])
    if not args.quick:
        record("optim", "The cross-entropy method (entropykit.optim)", cmd, body)


if __name__ == "__main__":
    main()
