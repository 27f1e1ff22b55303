"""Auditing texts by token statistics: membership inference and machine-text detection.

One entry point, ``score_texts(texts, method, model=None, **params) -> np.ndarray`` (float64, one
score per text). Convention: **higher = more likely a training member** for the membership methods,
**higher = more likely machine-generated** for the machine-text methods.

=================  ========== ============ =======================================================
method             kind       reference    score (per text; l_t = log q(x_t), n scored positions)
=================  ========== ============ =======================================================
loss               membership  --          mean_t l_t
reference          membership  required    mean_t l_t - mean_t log p_ref(x_t)
zlib               membership  --          mean_t l_t / len(zlib(text))
min_k              membership  --          mean of the lowest floor(k n) l_t            (k=0.2)
min_k_plus_plus    membership  --          mean of the lowest floor(k n) (l_t - mu_t) / sigma_t
dc_pdd             membership  --          mean over first occurrences of min(q(x_t) log 1/f(x_t), a)
binoculars         machine     required    -(mean_t -l_t) / (mean_t CE(p_obs,t, q_t))
fast_detect_gpt    machine     optional    (sum_t l_t - sum_t mu_t) / sqrt(sum_t sigma_t^2)
entropy_gap        machine     optional    -|mean_t (mu_t - l_t)|  (-|log-perplexity - mean entropy|)
=================  ========== ============ =======================================================

mu_t and sigma_t^2 are the mean and variance of log q_t(v) over v ~ p_t, where q is the scoring
model's next-token distribution and p = q unless a reference model is given (for binoculars, p is
the observer's, so -mu_t = CE(p_obs,t, q_t)); f is a token-frequency table (``FrequencyTable``).
Scores are in nats-based units; machine-text scores assume nothing about a threshold: calibrate one
on held-out negatives with ``calibrate(neg_scores, fpr)``.

Texts are streamed through the model in windows of ``max_context`` and batched
(``entropykit.detect.stats``); the per-method formulas, papers and conventions are in
``entropykit.detect.scores``; evaluation (AUC, TPR@FPR, calibration) in
``entropykit.detect.evaluation``; machine passages for evaluations in ``entropykit.detect.passages``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from entropykit._validate import check_choice, check_int
from entropykit.detect import scores as _s
from entropykit.detect.evaluation import DEFAULT_FPRS, calibrate, evaluate, roc_curve
from entropykit.detect.passages import generate_passages
from entropykit.detect.scores import FrequencyTable, entropy_gap_pvalue
from entropykit.detect.stats import TokenStats, token_statistics
from entropykit.models import LanguageModel, resolve_model

__all__ = [
    "DEFAULT_FPRS",
    "METHODS",
    "FrequencyTable",
    "Method",
    "TokenStats",
    "calibrate",
    "entropy_gap_test",
    "evaluate",
    "generate_passages",
    "roc_curve",
    "score_stats",
    "score_texts",
    "token_statistics",
]


@dataclass(frozen=True)
class Method:
    """A detection method: its score function over ``TokenStats`` and what it needs."""

    name: str
    kind: Literal["membership", "machine"]
    reference: Literal["none", "optional", "required"]
    fn: Callable[..., float]
    params: dict[str, Any] = field(default_factory=dict)  # name -> default (None = required)
    summary: str = ""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("loss", "membership", "none", _s.loss, summary="mean token log-prob"),
        Method(
            "reference",
            "membership",
            "required",
            _s.reference,
            summary="mean log-prob minus the reference model's",
        ),
        Method("zlib", "membership", "none", _s.zlib_ratio, summary="mean log-prob / zlib-compressed bytes"),
        Method("min_k", "membership", "none", _s.min_k, {"k": 0.2}, "mean of the lowest k log-probs"),
        Method(
            "min_k_plus_plus",
            "membership",
            "none",
            _s.min_k_plus_plus,
            {"k": 0.2},
            "mean of the lowest k standardised log-probs",
        ),
        Method(
            "dc_pdd",
            "membership",
            "none",
            _s.dc_pdd,
            {"frequencies": None, "a": 0.01},
            "frequency-calibrated token probabilities",
        ),
        Method(
            "binoculars",
            "machine",
            "required",
            _s.binoculars,
            summary="-(log-perplexity / cross-perplexity), observer = reference",
        ),
        Method(
            "fast_detect_gpt",
            "machine",
            "optional",
            _s.fast_detect_gpt,
            summary="analytic sampling discrepancy, sampling model = reference (default: same)",
        ),
        Method(
            "entropy_gap",
            "machine",
            "optional",
            _s.entropy_gap,
            summary="-|log-perplexity - mean entropy| (nats/token)",
        ),
    )
}


def _method(name: str) -> Method:
    return METHODS[check_choice(name, list(METHODS), "method")]


def _params(method: Method, params: dict[str, Any], vocab_size: int | None) -> dict[str, Any]:
    unknown = sorted(set(params) - set(method.params))
    if unknown:
        allowed = ", ".join(method.params) or "none"
        raise TypeError(
            f"params must be among ({allowed}) for {method.name}, "
            f"got unexpected parameter(s) {', '.join(unknown)}"
        )
    out = {k: params.get(k, v) for k, v in method.params.items()}
    if method.name == "dc_pdd":
        freq = out["frequencies"]
        if freq is None:
            raise ValueError(
                "frequencies must be a FrequencyTable or the path of a saved table (dc_pdd needs "
                "frequencies=FrequencyTable.from_texts(reference_corpus, model)), got None"
            )
        if isinstance(freq, (str, Path)):
            out["frequencies"] = freq = FrequencyTable.load(freq)
        if isinstance(freq, FrequencyTable) and vocab_size is not None and freq.vocab_size != vocab_size:
            raise ValueError(
                f"frequencies must count the model's {vocab_size} token ids, got a table of {freq.vocab_size}"
            )
    return out


def _texts(texts: Sequence[str | bytes]) -> list[str | bytes]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"texts must be a sequence of str/bytes, got a single {type(texts).__name__}")
    return list(texts)


def score_stats(stats: Sequence[TokenStats], method: str, **params: Any) -> np.ndarray:
    """Scores of precomputed ``TokenStats`` (from ``token_statistics``) by ``method``."""
    m = _method(method)
    kw = _params(m, params, None)
    return np.array([m.fn(s, **kw) for s in stats], dtype=np.float64)


def score_texts(
    texts: Sequence[str | bytes],
    method: str,
    model: LanguageModel | str | Path | None = None,
    *,
    reference: LanguageModel | str | Path | None = None,
    batch_size: int | None = None,
    stride: int | None = None,
    progress: bool | None = None,
    slide: bool = False,
    **params: Any,
) -> np.ndarray:
    """Score each text by ``method`` (see the module table); returns a float64 array, one per text.

    ``model``: the scoring (target / performer) model, a ``LanguageModel`` or a name for
    ``load_model`` (``None`` = the bundled default). ``reference``: the second model where the method
    takes one (``reference``: the reference model; ``binoculars``: the observer; ``fast_detect_gpt``
    and ``entropy_gap``: the sampling model p); it must share the tokenizer. ``params``: ``k`` for
    min_k / min_k_plus_plus, ``frequencies`` (a ``FrequencyTable`` or its file) and ``a`` for
    dc_pdd. Texts are batched ``batch_size`` windows at a time (default: about 2048 tokens a pass);
    long texts are streamed in windows of the model's context advanced by ``stride`` tokens, or with
    ``slide=True`` (ByteGPTs with rotary positions) through a sliding KV cache, every token computed
    once (``token_statistics``). A text
    of fewer than 2 tokens raises ``ValueError``.

    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> from entropykit.models import ByteModel
    >>> m = ByteModel(ByteGPT(ByteGPTConfig(block_size=32, n_layer=1, n_head=1, n_embd=8)))
    >>> s = score_texts(["hello world", "abc"], "min_k", m, k=1.0)
    >>> bool(np.allclose(s, score_texts(["hello world", "abc"], "loss", m)))
    True
    """
    m = _method(method)
    items = _texts(texts)
    lm = resolve_model(model, "model")
    ref_got = getattr(reference, "name", reference)
    if m.reference == "none" and reference is not None:
        raise TypeError(f"reference must be None for {method} (it takes no reference model), got {ref_got}")
    if m.reference == "required" and reference is None:
        raise ValueError(f"reference must be a model for {method} (it needs a reference model), got None")
    ref = None if reference is None else resolve_model(reference, "reference")
    kw = _params(m, params, lm.vocab_size)
    if batch_size is not None:
        check_int(batch_size, "batch_size", 1)
    if not items:
        return np.zeros(0, dtype=np.float64)
    stats = token_statistics(items, lm, ref, batch_size=batch_size, stride=stride, progress=progress,
                             slide=slide)
    return np.array([m.fn(s, **kw) for s in stats], dtype=np.float64)


def entropy_gap_test(
    texts: Sequence[str | bytes],
    model: LanguageModel | str | Path | None = None,
    *,
    reference: LanguageModel | str | Path | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    slide: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The zero-shot test of "x was sampled from the model": (signed gap, p-value) per text.

    The gap is ``detect_scores.log_ppl_gap``: log-perplexity - mean entropy (or - mean cross-entropy
    with a ``reference`` p), nats/token, ~0 for text sampled from the model; the p-value is the
    two-sided Azuma-Hoeffding bound ``detect_scores.entropy_gap_pvalue`` (small = not sampled from
    the model, i.e. human). ``score_texts(..., "entropy_gap")`` is -|gap|. ``slide``: as in
    ``score_texts``.
    """
    items = _texts(texts)
    lm = resolve_model(model, "model")
    ref = None if reference is None else resolve_model(reference, "reference")
    if not items:
        return np.zeros(0), np.zeros(0)
    stats = token_statistics(items, lm, ref, batch_size=batch_size, progress=progress, slide=slide)
    return np.array([_s.log_ppl_gap(s) for s in stats]), np.array([entropy_gap_pvalue(s) for s in stats])
