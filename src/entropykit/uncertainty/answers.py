"""One record per answer, and every estimator as ``fn(answer, **params) -> float`` (the registry's form).

:class:`Answer` holds what the estimators read: the per-token statistics of the answer being
judged (``tokens``: usually the greedy answer, from the same pass that produced it) and, for the
sample-based estimators, M sampled answers (``samples``), with the equivalence and similarity that
define meaning. :data:`entropykit.uncertainty.METHODS` maps each estimator's name to a function of an
``Answer``; :func:`estimate` runs several on one answer (clusters and the similarity matrix are
computed once per answer and shared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from entropykit.uncertainty import sampling, sequence
from entropykit.uncertainty.sampling import Samples
from entropykit.uncertainty.sequence import Tokens

__all__ = ["Answer", "from_samples", "single_generation"]


@dataclass
class Answer:
    """``tokens`` (:class:`Tokens` of one answer, 1-D) and/or ``samples`` (:class:`Samples`);
    ``equivalence`` and ``similarity`` as in :mod:`entropykit.uncertainty.sampling`."""

    tokens: Tokens | None = None
    samples: Samples | None = None
    equivalence: Any = "exact"
    similarity: Any = "rouge_l"
    _clusters: Tensor | None = field(default=None, init=False, repr=False)
    _matrix: Tensor | None = field(default=None, init=False, repr=False)

    def need_tokens(self, name: str) -> Tokens:
        if self.tokens is None:
            raise ValueError(f"{name} needs the answer's per-token statistics: Answer(tokens=Tokens(...))")
        if self.tokens.log_probs.dim() != 1:
            raise ValueError(
                f"{name}: Answer.tokens must be one answer (1-D), got shape "
                f"{tuple(self.tokens.log_probs.shape)}"
            )
        return self.tokens

    def need_samples(self, name: str) -> Samples:
        if self.samples is None:
            raise ValueError(f"{name} needs sampled answers: Answer(samples=Samples(...))")
        return self.samples

    def clusters(self, name: str = "clusters") -> Tensor:
        if self._clusters is None:
            self._clusters = sampling.cluster(self.need_samples(name), self.equivalence)
        return self._clusters

    def matrix(self, name: str = "similarity") -> Tensor:
        if self._matrix is None:
            self._matrix = sampling.similarity_matrix(self.need_samples(name), self.similarity)
        return self._matrix


def _single(fn: Any, name: str) -> Any:
    def run(answer: Answer, span: Tensor | None = None) -> float:
        return float(fn(answer.need_tokens(name), span=span))

    run.__name__ = name
    run.__doc__ = f"``{fn.__module__}.{fn.__name__}`` of ``answer.tokens`` (optionally over a ``span``)."
    return run


single_generation = {
    name: _single(getattr(sequence, name), name)
    for name in (
        "max_sequence_probability",
        "perplexity",
        "mean_surprisal",
        "max_surprisal",
        "mean_token_entropy",
        "max_token_entropy",
    )
}


def _pe(a: Answer, length_normalised: bool = False) -> float:
    return sampling.predictive_entropy(
        a.need_samples("predictive_entropy"), length_normalised=length_normalised
    )


def _pe_norm(a: Answer) -> float:
    return sampling.predictive_entropy(
        a.need_samples("predictive_entropy_normalised"), length_normalised=True
    )


def _se(a: Answer, length_normalised: bool = False) -> float:
    s = a.need_samples("semantic_entropy")
    return sampling.semantic_entropy(s, clusters=a.clusters(), length_normalised=length_normalised)


def _dse(a: Answer) -> float:
    s = a.need_samples("discrete_semantic_entropy")
    return sampling.discrete_semantic_entropy(s, clusters=a.clusters())


def _nss(a: Answer) -> float:
    return sampling.num_semantic_sets(a.need_samples("num_semantic_sets"), clusters=a.clusters())


def _lex(a: Answer, unit: str = "word") -> float:
    return sampling.lexical_similarity(a.need_samples("lexical_similarity"), unit=unit)


def _eig(a: Answer) -> float:
    return sampling.eigval_laplacian(a.matrix())


def _deg(a: Answer) -> float:
    return sampling.degree(a.matrix())


def _ecc(a: Answer, threshold: float = 0.9) -> float:
    return sampling.eccentricity(a.matrix(), threshold=threshold)


def _snne(a: Answer, tau: float = 1.0) -> float:
    return sampling.snne(a.matrix(), tau=tau)


def _wsnne(a: Answer, tau: float = 1.0) -> float:
    s = a.need_samples("wsnne")
    return sampling.snne(a.matrix(), tau=tau, log_probs=s.log_probs / s.lengths.double())


from_samples = {
    "predictive_entropy": _pe,
    "predictive_entropy_normalised": _pe_norm,
    "semantic_entropy": _se,
    "discrete_semantic_entropy": _dse,
    "num_semantic_sets": _nss,
    "lexical_similarity": _lex,
    "eigval_laplacian": _eig,
    "degree": _deg,
    "eccentricity": _ecc,
    "snne": _snne,
    "wsnne": _wsnne,
}
