"""The cross-entropy method (CEM) for optimisation, planning and rare events.

=================  =====================  ==============================================================
method             entry points           what
=================  =====================  ==============================================================
cem                ``cem_init/ask/tell``,  Gaussian CEM (diagonal or full covariance), batched over
                   ``CEM``, ``minimize``   leading dimensions; NaN-safe elites, smoothing (fixed or
                                          dynamic), std floor, noise schedule, bounds, elite memory,
                                          IPOP restarts
amalgam            ``amalgam_options``    CEM + adaptive variance scaling + anticipated mean shift
                                          (AMaLGaM): the variant that solves Rosenbrock
categorical_cem    ``categorical_init/    product-of-categoricals CEM for discrete design spaces
                   ask/tell``
icem               ``ICEM``,              iCEM planner for MPC: coloured noise along the horizon,
                   ``colored_noise``      decaying population, elite carry-over, shift
rare_event         ``rare_event_          multilevel CEM importance sampling of P(S(X) >= gamma),
                   probability(ies)``     batched over problems; Gaussian or Gaussian-mixture proposals
=================  =====================  ==============================================================

Conventions: objectives are minimised unless ``maximize=True``; an objective maps a population
``(*B, n, d)`` to values ``(*B, n)``, every leading dimension being an independent problem;
NaN/inf objective values are never elites and are counted (``nonfinite``); smoothing weights are
named for the value they weigh (``old_weight_*`` = the weight of the OLD value, like mbrl-lib's
``alpha``); randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

from entropykit._registry import Method
from entropykit.optim.categorical import (
    CategoricalState,
    categorical_ask,
    categorical_init,
    categorical_tell,
)
from entropykit.optim.gaussian import (
    CEM,
    CEMState,
    OptimizeResult,
    amalgam_options,
    cem_ask,
    cem_init,
    cem_tell,
    dynamic_smoothing,
    linear_noise,
    minimize,
)
from entropykit.optim.icem import ICEM, colored_noise
from entropykit.optim.rare import (
    RareEventBatch,
    RareEventResult,
    rare_event_probabilities,
    rare_event_probability,
)

__all__ = [
    "CEM",
    "ICEM",
    "METHODS",
    "CEMState",
    "CategoricalState",
    "Method",
    "OptimizeResult",
    "RareEventBatch",
    "RareEventResult",
    "amalgam_options",
    "categorical_ask",
    "categorical_init",
    "categorical_tell",
    "cem_ask",
    "cem_init",
    "cem_tell",
    "colored_noise",
    "dynamic_smoothing",
    "linear_noise",
    "minimize",
    "rare_event_probabilities",
    "rare_event_probability",
]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "cem",
            minimize,
            "Rubinstein 1999; de Boer et al. 2005 (tutorial); Szita & Lőrincz 2006 (noise)",
            {"popsize": 100, "elite": 0.1, "covariance": "diag", "variance_center": "old",
             "old_weight_mean": 0.0, "old_weight_var": 0.0, "std_min": 0.0, "noise": 0.0},
            "Gaussian CEM: minimize(f, x0, std0) or the cem_init/cem_ask/cem_tell core",
        ),
        Method(
            "amalgam",
            minimize,
            "Bosman, Grahl & Thierens 2008/2013 (AMaLGaM); Kroese, Porotsky & Rubinstein 2006 (smoothing)",
            {"covariance": "full", "variance_center": "new", "adaptive_scaling": True, "mean_shift": 2.0,
             "keep_elites": 1, "settings": "amalgam_options(d)"},
            "full-covariance CEM with adaptive variance scaling and anticipated mean shift: "
            "minimize(f, x0, std0, **amalgam_options(d)); solves Rosenbrock where plain CEM stalls",
        ),
        Method(
            "categorical_cem",
            categorical_init,
            "Rubinstein 1999 (combinatorial CEM); de Boer et al. 2005",
            {"popsize": 100, "elite": 0.1, "old_weight": 0.0, "prob_min": 0.0},
            "class probabilities refitted to the elites",
        ),
        Method(
            "icem",
            ICEM,
            "Pinneri et al. 2020 (CoRL), sample-efficient CEM for real-time planning",
            {"popsize": 100, "elite": 10, "iterations": 3, "beta": 2.0, "decay": 1.25, "keep_elites": 0.3},
            "MPC planner over action sequences",
        ),
        Method(
            "rare_event",
            rare_event_probability,
            "Rubinstein 1997; de Boer et al. 2005, algorithm 2.1",
            {"n_samples": 2000, "rho": 0.1, "adapt_std": False, "components": 1},
            "P(S(X) >= gamma) by multilevel CEM importance sampling (rare_event_probabilities: a batch)",
        ),
    )
}
