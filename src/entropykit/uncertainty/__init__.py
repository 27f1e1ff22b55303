"""Uncertainty and calibration: is the model sure, and is it right to be?

One exact core for three questions:

- **How uncertain is an LM's answer?** From one generation's per-token statistics
  (:mod:`~entropykit.uncertainty.sequence`: the same numbers scoring and generation already
  compute, no second forward pass) and from several sampled answers
  (:mod:`~entropykit.uncertainty.sampling`: predictive and semantic entropy, lexical similarity,
  the spectral family, SNNE). :data:`METHODS` names every estimator as ``fn(Answer) -> float``.
- **Where does a classifier's uncertainty come from?** Ensembles, MC dropout and early exits:
  total = aleatoric + epistemic, and the early-exit cascade (:mod:`~entropykit.uncertainty.ensemble`).
- **Are the probabilities right?** ECE/MCE/classwise ECE/Brier/NLL, temperature and vector
  scaling (:mod:`~entropykit.uncertainty.calibration`); conformal sets with a coverage guarantee
  and conformal risk control (:mod:`~entropykit.uncertainty.conformal`); and how well an
  uncertainty ranks errors: PRR, AUROC, AUPRC, rejection curves
  (:mod:`~entropykit.uncertainty.evaluation`); PNG figures (:mod:`~entropykit.uncertainty.plots`).

Every estimator is "higher = less certain", in nats where it has a unit.

>>> import torch
>>> from entropykit import uncertainty as unc
>>> tokens = unc.Tokens.from_logits(torch.randn(5, 20), torch.tensor([1, 2, 3, 4, 5]))
>>> samples = unc.Samples(["Paris", "paris", "Rome"], torch.tensor([-0.4, -0.6, -2.0]), torch.ones(3))
>>> scores = unc.estimate(unc.Answer(tokens, samples))
>>> len(scores) == len(unc.METHODS), round(scores["discrete_semantic_entropy"], 4)
(True, 0.6365)
"""

from __future__ import annotations

from typing import Any

from entropykit._registry import Method, registry
from entropykit._validate import check_choice
from entropykit.uncertainty import calibration, conformal, ensemble, evaluation, sampling, sequence
from entropykit.uncertainty.answers import Answer, from_samples, single_generation
from entropykit.uncertainty.calibration import (
    ReliabilityBins,
    VectorScaling,
    brier,
    classwise_ece,
    confidence_ece,
    ece,
    fit_temperature,
    fit_vector_scaling,
    mce,
    nll,
    reliability_bins,
)
from entropykit.uncertainty.conformal import (
    SplitConformal,
    conformal_quantile,
    conformal_scores,
    coverage,
    risk_control,
)
from entropykit.uncertainty.ensemble import Cascade, Decomposition, decompose, early_exit_cascade, mc_dropout
from entropykit.uncertainty.evaluation import auprc, auroc, prr, rejection_curve
from entropykit.uncertainty.sampling import (
    NLI,
    Samples,
    cluster,
    collect,
    degree,
    discrete_semantic_entropy,
    eccentricity,
    eigval_laplacian,
    jaccard,
    lexical_similarity,
    normalize_answer,
    num_semantic_sets,
    predictive_entropy,
    rouge_l,
    semantic_entropy,
    similarity_matrix,
    snne,
)
from entropykit.uncertainty.sequence import (
    Tokens,
    max_sequence_probability,
    max_surprisal,
    max_token_entropy,
    mean_surprisal,
    mean_token_entropy,
    perplexity,
)

__all__ = [
    "METHODS",
    "NLI",
    "Answer",
    "Cascade",
    "Decomposition",
    "Method",
    "ReliabilityBins",
    "Samples",
    "SplitConformal",
    "Tokens",
    "VectorScaling",
    "auprc",
    "auroc",
    "brier",
    "calibration",
    "classwise_ece",
    "cluster",
    "collect",
    "confidence_ece",
    "conformal",
    "conformal_quantile",
    "conformal_scores",
    "coverage",
    "decompose",
    "degree",
    "discrete_semantic_entropy",
    "early_exit_cascade",
    "eccentricity",
    "ece",
    "eigval_laplacian",
    "ensemble",
    "estimate",
    "evaluation",
    "fit_temperature",
    "fit_vector_scaling",
    "jaccard",
    "lexical_similarity",
    "max_sequence_probability",
    "max_surprisal",
    "max_token_entropy",
    "mc_dropout",
    "mce",
    "mean_surprisal",
    "mean_token_entropy",
    "nll",
    "normalize_answer",
    "num_semantic_sets",
    "perplexity",
    "predictive_entropy",
    "prr",
    "rejection_curve",
    "reliability_bins",
    "risk_control",
    "rouge_l",
    "sampling",
    "semantic_entropy",
    "sequence",
    "similarity_matrix",
    "snne",
]

_KL = "Kuhn et al. 2023, arXiv:2302.09664"
_LIN = "Lin et al. 2023, arXiv:2305.19187"
_SUMMARY: dict[str, tuple[str, dict[str, Any], str]] = {
    "max_sequence_probability": (
        "lm-polygraph (Fadeeva et al. 2023, arXiv:2311.07383)",
        {},
        "-log p(answer) = -sum_t log p(y_t)",
    ),
    "perplexity": ("lm-polygraph (Fadeeva et al. 2023)", {}, "exp(-mean_t log p(y_t))"),
    "mean_surprisal": ("--", {}, "-mean_t log p(y_t) (log perplexity; same ranking as perplexity)"),
    "max_surprisal": ("--", {}, "-min_t log p(y_t): the least likely token"),
    "mean_token_entropy": ("Malinin & Gales 2021, arXiv:2002.07650", {}, "mean next-token entropy"),
    "max_token_entropy": ("--", {}, "largest next-token entropy"),
    "predictive_entropy": (_KL, {"length_normalised": False}, "-(1/M) sum_m log p(s_m)"),
    "predictive_entropy_normalised": (_KL, {}, "-(1/M) sum_m log p(s_m) / len(s_m)"),
    "semantic_entropy": (_KL, {"length_normalised": False}, "entropy of the meaning clusters' probability"),
    "discrete_semantic_entropy": (
        "Farquhar et al. 2024, Nature 630",
        {},
        "entropy of the meaning clusters' frequencies",
    ),
    "num_semantic_sets": (_LIN, {}, "number of meaning clusters"),
    "lexical_similarity": (
        "Fomicheva et al. 2020, arXiv:2005.10608",
        {"unit": "word"},
        "1 - mean pairwise ROUGE-L",
    ),
    "eigval_laplacian": (_LIN, {}, "sum max(0, 1 - eigenvalues of the normalised Laplacian)"),
    "degree": (_LIN, {}, "1 - mean similarity"),
    "eccentricity": (_LIN, {"threshold": 0.9}, "spread of the spectral embeddings"),
    "snne": (
        "Nguyen et al. 2025, arXiv:2506.00245",
        {"tau": 1.0},
        "-(1/M) sum_i log sum_j exp(sim_ij / tau)",
    ),
    "wsnne": ("Nguyen et al. 2025, arXiv:2506.00245", {"tau": 1.0}, "SNNE weighted by sample probabilities"),
}

METHODS: dict[str, Method] = registry(
    *(
        Method(
            name,
            fn,
            _SUMMARY[name][0],
            _SUMMARY[name][1],
            ("[one generation] " if name in single_generation else "[samples] ") + _SUMMARY[name][2],
        )
        for name, fn in {**single_generation, **from_samples}.items()
    )
)
"""Every answer-level estimator: ``METHODS[name].fn(answer: Answer, **params) -> float``.
The summary starts with what it reads: ``[one generation]`` (``answer.tokens``) or ``[samples]``."""


def estimate(answer: Answer, methods: Any = None, **params: dict[str, Any]) -> dict[str, float]:
    """Run ``methods`` (names; default: every method whose input ``answer`` has) on one answer.

    ``params``: per-method keyword arguments, e.g. ``snne={"tau": 0.5}``. Clusters and the
    similarity matrix are computed once and shared.
    """
    if not isinstance(answer, Answer):
        raise TypeError(f"answer must be an uncertainty.Answer, got {type(answer).__name__}")
    if methods is None:
        names = [
            n
            for n in METHODS
            if (n in single_generation and answer.tokens is not None)
            or (n in from_samples and answer.samples is not None)
        ]
    elif isinstance(methods, str):
        names = [methods]
    else:
        names = list(methods)
    for n in names:
        check_choice(n, tuple(METHODS), "methods")
    for n in params:
        check_choice(n, tuple(METHODS), "params")
    return {n: float(METHODS[n].fn(answer, **params.get(n, {}))) for n in names}
