"""Information estimators from samples: entropy, mutual information and divergences.

NumPy arrays or torch tensors in (``(n_samples,)`` or ``(n_samples, n_features)``), Python floats out,
nats by default (``base=2`` for bits), scikit-learn-style validation (one module, ``_samples``).
``METHODS`` names every estimator with its function, what it estimates, its parameters and its
reference, so benchmarks and the CLI enumerate them from one place.

>>> import numpy as np
>>> from entropykit import estimators
>>> sorted(estimators.METHODS)[:3]
['alpha_req', 'bootstrap', 'cauchy_schwarz_divergence']
>>> z = np.random.default_rng(0).standard_normal((1000, 2))
>>> estimators.METHODS["mutual_info_ksg"].fn(z[:, 0], z[:, 0] + z[:, 1]) > 0.25  # truth log(2)/2
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .discrete import entropy_counts, entropy_discrete, mutual_info_discrete
from .knn import (
    PermutationResult,
    conditional_mutual_info,
    entropy_knn,
    kl_divergence_knn,
    mutual_info_ksg,
    mutual_info_mixed,
    permutation_test,
    transfer_entropy,
)
from .matrix import (
    alpha_req,
    cauchy_schwarz_divergence,
    diffusion_spectral_entropy,
    diffusion_spectral_mutual_info,
    matrix_mutual_info,
    matrix_renyi_entropy,
    rankme,
    von_neumann_entropy,
)
from .multivariate import HigherOrderInfo, o_information
from .neural import BOUNDS, NeuralMIResult, mi_bound, neural_mutual_info
from .resampling import BootstrapResult, bootstrap
from .timeseries import permutation_entropy, statistical_complexity

__all__ = [
    "BOUNDS",
    "METHODS",
    "BootstrapResult",
    "HigherOrderInfo",
    "Method",
    "NeuralMIResult",
    "PermutationResult",
    "alpha_req",
    "bootstrap",
    "cauchy_schwarz_divergence",
    "conditional_mutual_info",
    "diffusion_spectral_entropy",
    "diffusion_spectral_mutual_info",
    "entropy_counts",
    "entropy_discrete",
    "entropy_knn",
    "kl_divergence_knn",
    "matrix_mutual_info",
    "matrix_renyi_entropy",
    "mi_bound",
    "mutual_info_discrete",
    "mutual_info_ksg",
    "mutual_info_mixed",
    "neural_mutual_info",
    "o_information",
    "permutation_entropy",
    "permutation_test",
    "rankme",
    "statistical_complexity",
    "transfer_entropy",
    "von_neumann_entropy",
]


@dataclass(frozen=True)
class Method:
    """An estimator: its function, the quantity it estimates, its inputs and tunable parameters."""

    name: str
    quantity: Literal["entropy", "mutual_info", "conditional_mutual_info", "divergence",
                      "transfer_entropy", "complexity", "spectrum", "higher_order",
                      "interval", "significance"]
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)  # name -> default
    reference: str = ""


_COMMON = {"base": "e", "standardize": True, "jitter": 1e-10, "random_state": 0, "neighbors": "auto",
           "workers": 1}

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("entropy_knn", "entropy", entropy_knn, ("x",), {"k": 3, "metric": "chebyshev", **_COMMON},
               "Kozachenko & Leonenko 1987"),
        Method("mutual_info_ksg", "mutual_info", mutual_info_ksg, ("x", "y"),
               {"k": 3, "variant": 1, "lnc_alpha": None, "cca_dims": None, "copula": False,
                "gaussian_surrogates": 0, **_COMMON},
               "Kraskov, Stögbauer & Grassberger 2004; LNC: Gao, Ver Steeg & Galstyan 2015; "
               "CCA projection: Gowri et al. 2024 (linear case)"),
        Method("mutual_info_mixed", "mutual_info", mutual_info_mixed, ("x", "y"),
               {"k": 3, **{**_COMMON, "jitter": 0.0}}, "Gao, Kannan, Oh & Viswanath 2017"),
        Method("conditional_mutual_info", "conditional_mutual_info", conditional_mutual_info,
               ("x", "y", "z"), {"k": 3, **_COMMON}, "Frenzel & Pompe 2007"),
        Method("kl_divergence_knn", "divergence", kl_divergence_knn, ("x", "y"),
               {"k": 1, "metric": "euclidean", **_COMMON}, "Wang, Kulkarni & Verdú 2009"),
        Method("transfer_entropy", "transfer_entropy", transfer_entropy, ("source", "target"),
               {"k": 3, "lag": 1, "source_history": 1, "target_history": 1, "delay": 1, **_COMMON},
               "Schreiber 2000 (kNN form: Frenzel & Pompe 2007)"),
        Method("entropy_discrete", "entropy", entropy_discrete, ("x",),
               {"method": "plugin", "alphabet_size": None, "base": "e"},
               "plug-in; Miller 1955; Grassberger 2003; Chao & Shen 2003; NSB: Nemenman et al. 2002"),
        Method("entropy_counts", "entropy", entropy_counts, ("counts",),
               {"method": "plugin", "alphabet_size": None, "base": "e"},
               "as entropy_discrete, from a vector of counts (ndd's interface)"),
        Method("mutual_info_discrete", "mutual_info", mutual_info_discrete, ("x", "y"),
               {"method": "plugin", "base": "e"}, "plug-in / bias-corrected entropies, I = H(X)+H(Y)-H(X,Y)"),
        Method("permutation_entropy", "entropy", permutation_entropy, ("x",),
               {"order": 3, "delay": 1, "weighted": False, "normalize": True, "base": "e"},
               "Bandt & Pompe 2002; weighted: Fadlallah et al. 2013"),
        Method("statistical_complexity", "complexity", statistical_complexity, ("x",),
               {"order": 3, "delay": 1, "weighted": False},
               "Rosso et al. 2007 (Jensen-Shannon complexity-entropy plane)"),
        Method("von_neumann_entropy", "entropy", von_neumann_entropy, ("z",),
               {"normalize_rows": True, "base": "e"}, "Kim et al. 2023 (VNE)"),
        Method("rankme", "spectrum", rankme, ("z",), {"eps": 1e-7}, "Garrido et al. 2023"),
        Method("alpha_req", "spectrum", alpha_req, ("z",), {"fit_from": 1, "fit_to": None},
               "Agrawal et al. 2022"),
        Method("diffusion_spectral_entropy", "entropy", diffusion_spectral_entropy, ("z",),
               {"sigma": 10.0, "t": 1, "base": "e"}, "Liao et al. 2023 (DSE)"),
        Method("diffusion_spectral_mutual_info", "mutual_info", diffusion_spectral_mutual_info,
               ("z", "labels"), {"sigma": 10.0, "t": 1, "n_repetitions": 5, "random_state": 0, "base": "e"},
               "Liao et al. 2023 (DSMI, discrete labels)"),
        Method("matrix_renyi_entropy", "entropy", matrix_renyi_entropy, ("x",),
               {"alpha": 2.0, "sigma": None, "base": "e"}, "Sanchez Giraldo, Rao & Principe 2015"),
        Method("matrix_mutual_info", "mutual_info", matrix_mutual_info, ("x", "y"),
               {"alpha": 2.0, "sigma_x": None, "sigma_y": None, "base": "e"},
               "Sanchez Giraldo, Rao & Principe 2015"),
        Method("neural_mutual_info", "mutual_info", neural_mutual_info, ("x", "y"),
               {"bound": "smile", "critic": "separable", "hidden": 64, "embed": 32, "layers": 2,
                "batch_size": 128, "steps": 2000, "lr": 5e-4, "clip": 5.0, "ema": 0.9, "validation": 0.2,
                "eval_every": 50, "patience": 5, "generator": None, "threads": 1},
               "MINE: Belghazi et al. 2018; NWJ 2010; InfoNCE: van den Oord et al. 2018; "
               "SMILE: Song & Ermon 2020"),
        Method("o_information", "higher_order", o_information, ("x",),
               {"method": "gaussian", "copula": True, "k": 3, "base": "e", "random_state": 0},
               "Rosas et al. 2019; Gaussian copula: Ince et al. 2017"),
        Method("bootstrap", "interval", bootstrap, ("estimator", "samples"),
               {"n_resamples": 200, "confidence": 0.95, "interval": "percentile", "resample": "bootstrap",
                "paired": True, "jackknife_groups": None, "random_state": 0},
               "Efron & Tibshirani 1993 (percentile, basic, BCa); half-sampling: Shao & Tu 1995"),
        Method("permutation_test", "significance", permutation_test, ("estimator", "x", "y"),
               {"n_permutations": 100, "random_state": 0}, "permutation null (Kraskov et al. 2004, Sec. IV)"),
        Method("cauchy_schwarz_divergence", "divergence", cauchy_schwarz_divergence, ("x", "y"),
               {"sigma": 1.0, "base": "e"}, "Jenssen et al. 2006 (Parzen windows)"),
    )
}
