"""Detection scores as pure functions of a text's per-token statistics (``TokenStats``).

Conventions: every score is a float in nats-based units and **higher means more likely a training
member** (membership scores) or **more likely machine-generated** (machine-text scores). Notation per
scored position t of a text of n positions: l_t = log q(x_t) under the scoring model, mu_t and
sigma_t^2 = mean and variance of log q_t(v) under the expectation distribution p_t (p = q unless a
second model is given), r_t = range of log q_t over p_t's support.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from entropykit._io import atomic_write
from entropykit._validate import check_positive, check_real
from entropykit.detect.stats import TokenStats

if TYPE_CHECKING:
    from entropykit.models import LanguageModel

__all__ = [
    "FrequencyTable",
    "binoculars",
    "dc_pdd",
    "entropy_gap",
    "entropy_gap_pvalue",
    "fast_detect_gpt",
    "log_ppl_gap",
    "loss",
    "min_k",
    "min_k_plus_plus",
    "reference",
    "zlib_ratio",
]

FORMAT = "entropykit-token-frequencies"


def _k_count(k: float, n: int) -> int:
    k = check_real(k, "k", 0, 1, lo_open=True)
    return max(1, math.floor(k * n + 1e-9))


def _need_ref(s: TokenStats, method: str) -> np.ndarray:
    if s.ref_logprob is None:
        raise ValueError(f"s must hold statistics computed with a reference model for {method}, got none")
    return s.ref_logprob


# --- membership (higher = member) ----------------------------------------------------------------
def loss(s: TokenStats) -> float:
    """Negative mean NLL: (1/n) sum_t log q(x_t) (nats/token). Yeom et al. 2018 (LOSS attack).

    >>> import torch
    >>> round(loss(TokenStats.from_logits(torch.zeros(3, 4), [0, 1, 2])), 4)  # -log 4
    -1.3863
    """
    return float(np.mean(s.logprob))


def reference(s: TokenStats) -> float:
    """Calibrated loss: (1/n) sum_t [log q(x_t) - log p_ref(x_t)] = loss(ref) - loss(target), so a
    text the target model finds easier than the reference model scores high. Carlini et al. 2021.
    """
    return float(np.mean(s.logprob) - np.mean(_need_ref(s, "reference")))


def zlib_ratio(s: TokenStats) -> float:
    """-(mean NLL in nats/token) / len(zlib.compress(text bytes)) (zlib default level 6).
    Carlini et al. 2021 ("zlib entropy" ratio), negated so that higher = member.
    """
    return float(np.mean(s.logprob)) / len(zlib.compress(s.data))


def min_k(s: TokenStats, k: float = 0.2) -> float:
    """Min-K% Prob: mean of the m = max(1, floor(k n)) lowest log q(x_t). Shi et al. 2024.
    With k = 1 it is the mean log-prob (``loss``).
    """
    m = _k_count(k, len(s))
    return float(np.mean(np.sort(s.logprob)[:m]))


def min_k_plus_plus(s: TokenStats, k: float = 0.2) -> float:
    """Min-K%++: z_t = (log q(x_t) - mu_t) / sigma_t with mu_t = sum_v q log q and
    sigma_t^2 = sum_v q (log q)^2 - mu_t^2 (the model's own next-token distribution); score = mean of
    the m = max(1, floor(k n)) lowest z_t. Zhang et al. 2024 ("Min-K%++"). A position with
    sigma_t = 0 (a one-point distribution, so log q(x_t) = mu_t) gets z_t = 0.
    """
    m = _k_count(k, len(s))
    sigma = np.sqrt(s.variance)
    z = np.divide(s.logprob - s.expected, sigma, out=np.zeros_like(sigma), where=sigma > 0)
    return float(np.mean(np.sort(z)[:m]))


@dataclass(frozen=True)
class FrequencyTable:
    """Token counts c_v of a reference corpus; f(v) = (1 + c_v) / (sum_u c_u + V) (Laplace).

    Built with ``FrequencyTable.from_texts(texts, model)``; ``save(path)`` / ``load(path)`` keep it in
    a small JSON file (sparse counts plus the vocabulary size it was counted under).

    >>> t = FrequencyTable(np.array([3, 1, 0]))
    >>> [round(float(x), 4) for x in t.probabilities()]
    [0.5714, 0.2857, 0.1429]
    """

    counts: np.ndarray
    source: str = ""
    _probs: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = np.asarray(self.counts)
        if c.ndim != 1 or c.size == 0 or not np.issubdtype(c.dtype, np.integer) or (c < 0).any():
            raise ValueError(f"counts must be a non-empty 1-D array of non-negative integers, got {c!r}")
        object.__setattr__(self, "counts", c.astype(np.int64))
        object.__setattr__(self, "_probs", (1.0 + c) / (c.sum() + c.size))

    @property
    def vocab_size(self) -> int:
        return int(self.counts.size)

    def probabilities(self) -> np.ndarray:
        """Laplace-smoothed token frequencies f (float64, sums to 1)."""
        return self._probs

    @classmethod
    def from_texts(cls, texts: Iterable[str | bytes], model: LanguageModel | None = None) -> FrequencyTable:
        """Count the tokens of ``texts`` under ``model``'s tokenizer (default: the bundled model)."""
        from entropykit.models import resolve_model

        lm = resolve_model(model)
        counts = np.zeros(lm.vocab_size, dtype=np.int64)
        for i, text in enumerate(texts):
            if not isinstance(text, (str, bytes)):
                raise TypeError(f"texts[{i}] must be str or bytes, got {type(text).__name__}")
            ids = np.asarray(lm.encode(text).ids, dtype=np.int64)
            counts += np.bincount(ids, minlength=lm.vocab_size)[: lm.vocab_size]
        return cls(counts, source=lm.name)

    def save(self, path: str | Path) -> Path:
        nz = np.flatnonzero(self.counts)
        doc = {
            "format": FORMAT,
            "version": 1,
            "vocab_size": self.vocab_size,
            "source": self.source,
            "counts": {str(int(i)): int(self.counts[i]) for i in nz},
        }
        return atomic_write(path, json.dumps(doc) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FrequencyTable:
        try:
            doc = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"path must name a {FORMAT} file, got {str(path)!r}: not JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
            raise ValueError(f"path must name a {FORMAT} file (version 1), got {str(path)!r}: other content")
        counts = np.zeros(int(doc["vocab_size"]), dtype=np.int64)
        for key, value in doc["counts"].items():
            counts[int(key)] = int(value)
        return cls(counts, source=str(doc.get("source", "")))


def dc_pdd(s: TokenStats, frequencies: FrequencyTable, a: float = 0.01) -> float:
    """DC-PDD: over the first occurrence of each token id in the text,
    alpha_t = min(q(x_t) * log(1 / f(x_t)), a); score = mean(alpha_t). Zhang et al. 2024
    ("Pretraining Data Detection for LLMs: A Divergence-based Calibration Method"); f from
    ``FrequencyTable`` (Laplace smoothed). Higher = member.
    """
    if not isinstance(frequencies, FrequencyTable):
        raise TypeError(f"frequencies must be a FrequencyTable, got {type(frequencies).__name__}")
    a = check_positive(a, "a")
    if int(s.ids.max()) >= frequencies.vocab_size:
        raise ValueError(
            f"frequencies must count every token id of the text (up to {int(s.ids.max())}), "
            f"got a table of {frequencies.vocab_size} tokens"
        )
    _, first = np.unique(s.ids, return_index=True)
    f = frequencies.probabilities()[s.ids[first]]
    alpha = np.minimum(np.exp(s.logprob[first]) * -np.log(f), a)
    return float(np.mean(alpha))


# --- machine text (higher = machine) -------------------------------------------------------------
def binoculars(s: TokenStats) -> float:
    """-B with B = log-ppl_M(x) / x-ppl = [-(1/n) sum_t log q(x_t)] / [-(1/n) sum_t mu_t], q = the
    performer (scoring model), mu_t = sum_v p_obs(v) log q(v) with p_obs the observer (reference):
    the reference implementation's ``ppl / x_ppl``. Hans et al. 2024 ("Spotting LLMs with
    Binoculars"). Machine text has low B, hence the sign.
    """
    _need_ref(s, "binoculars")
    return -float(np.mean(s.logprob) / np.mean(s.expected))


def fast_detect_gpt(s: TokenStats) -> float:
    """Analytic Fast-DetectGPT: D = (sum_t log q(x_t) - sum_t mu_t) / sqrt(sum_t sigma_t^2), with mu_t,
    sigma_t^2 the mean/variance of log q_t(v) under the sampling model p (= q unless a reference is
    given). Bao et al. 2024. Machine text sits above its expectation: D high.
    """
    return float((np.sum(s.logprob) - np.sum(s.expected)) / math.sqrt(max(float(np.sum(s.variance)), 1e-300)))


def log_ppl_gap(s: TokenStats) -> float:
    """Signed gap (1/n) sum_t (mu_t - log q(x_t)) = log-perplexity - mean entropy H(q_t) (p = q), or
    log-perplexity - mean cross-entropy CE(p_t, q_t) with a second model p (nats/token). Its
    expectation is 0 for text sampled from p; positive = more surprising than the model expects.
    """
    return float(np.mean(s.expected - s.logprob))


def entropy_gap(s: TokenStats) -> float:
    """-|log-perplexity - mean entropy| = -|(1/n) sum_t (mu_t - log q(x_t))| (nats/token; p = q, or the
    mean cross-entropy CE(p_t, q_t) with a second model p). The zero-shot test's statistic: for text
    sampled from p the gap concentrates at 0 (its deviation shrinks like 1/sqrt(n)); human text
    deviates in either direction (more surprising than the model expects, or, for an underconfident
    model, less), hence the absolute value. Higher (closer to 0) = machine. Cf. Radvand et al. 2025
    (zero-shot statistical tests with finite-sample concentration); ``log_ppl_gap`` is the signed gap.
    """
    return -abs(log_ppl_gap(s))


def entropy_gap_pvalue(s: TokenStats) -> float:
    """Two-sided p-value of H0 "x was sampled from p" by the Azuma-Hoeffding inequality.

    Under H0 the increments d_t = mu_t - log q(x_t) are martingale differences lying in a predictable
    interval of length r_t (the range of log q_t over p_t's support), so for S = sum_t d_t,
    P(|S| >= s) <= 2 exp(-2 s^2 / sum_t r_t^2). Returns min(1, 2 exp(-2 S^2 / sum_t r_t^2)): small =
    reject "sampled from the model" (human-written). Finite-sample and distribution-free, hence
    conservative: r_t spans the whole range of log q (cf. Radvand et al. 2025).
    """
    total = float(np.sum(s.expected - s.logprob))
    denom = float(np.sum(s.logprob_range**2))
    if denom <= 0:
        return 1.0
    return float(min(1.0, 2.0 * math.exp(-2.0 * total * total / denom)))
