"""Uncertainty of one generated answer from its per-token statistics (no second forward pass).

An answer y = (y_1..y_T) comes with, per token, log p(y_t | x, y_<t) and the entropy H_t of the
model's next-token distribution: exactly what :func:`entropykit.measures.token_stats` (``-surprisal``
and ``entropy``), ``entropykit score`` (``surprisal_bits``, ``entropy_bits``) and the generation
loop (``StepStats``) already compute. :class:`Tokens` holds them (nats) with a mask; the estimators
reduce them over the masked positions:

==========================  ===================================================  ==================
estimator                   formula (higher = less certain)                      source
==========================  ===================================================  ==================
max_sequence_probability    -sum_t log p(y_t)  (-log of the sequence probability)  lm-polygraph MSP
perplexity                  exp(-mean_t log p(y_t))                                lm-polygraph
mean_surprisal              -mean_t log p(y_t)  (log perplexity)                   --
max_surprisal               -min_t log p(y_t)   (the least likely token)           --
mean_token_entropy          mean_t H_t                                             Malinin & Gales 2021
max_token_entropy           max_t H_t                                              --
==========================  ===================================================  ==================

Claim-conditioned variants: pass a ``span`` mask (the tokens of one claim, the answer span after
a prompt) and every estimator reduces over those tokens only (the token-level basis of
claim-level uncertainty, Fadeeva et al. 2024). An empty span raises ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from entropykit import measures
from entropykit._validate import check_mask, check_tensor

__all__ = [
    "Tokens",
    "max_sequence_probability",
    "max_surprisal",
    "max_token_entropy",
    "mean_surprisal",
    "mean_token_entropy",
    "perplexity",
]

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Tokens:
    """Per-token ``log_probs`` (log p of the generated token) and ``entropy`` (of the model's
    distribution at that step), both nats, shape (..., T); ``mask`` (bool, same shape) marks the
    tokens of the answer (padding and prompt False)."""

    log_probs: Tensor
    entropy: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        check_tensor(self.log_probs, "log_probs", floating=True, min_dim=1)
        check_tensor(self.entropy, "entropy", floating=True, min_dim=1)
        if self.entropy.shape != self.log_probs.shape:
            raise ValueError(
                f"entropy must have the shape of log_probs {tuple(self.log_probs.shape)}, "
                f"got {tuple(self.entropy.shape)}"
            )
        check_mask(self.mask, self.log_probs)
        inside_lp = torch.where(self.mask, self.log_probs, 0.0)
        inside_h = torch.where(self.mask, self.entropy, 0.0)
        if bool(torch.isnan(inside_lp).any()) or bool((inside_lp > 1e-6).any()):
            raise ValueError("log_probs must be <= 0 and not NaN at the answer's tokens")
        if not bool(torch.isfinite(inside_h).all()) or bool((inside_h < -1e-6).any()):
            raise ValueError("entropy must be finite and >= 0 at the answer's tokens")

    @classmethod
    def from_logits(cls, logits: Tensor, tokens: Tensor, *, mask: Tensor | None = None) -> Tokens:
        """From the logits that predicted each token (..., T, V) and the tokens (..., T): one call
        of :func:`entropykit.measures.token_stats`.

        >>> t = Tokens.from_logits(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]))
        >>> round(float(max_sequence_probability(t)), 4)  # 3 log 4
        4.1589
        """
        st = measures.token_stats(logits, tokens)
        assert st.surprisal is not None
        m = torch.ones_like(tokens, dtype=torch.bool) if mask is None else check_mask(mask, tokens)
        return cls(-st.surprisal, st.entropy, m)

    @classmethod
    def from_bits(cls, surprisal_bits: Any, entropy_bits: Any, *, mask: Tensor | None = None) -> Tokens:
        """From per-token surprisal and entropy in bits: the arrays of ``entropykit.lm.score``'s
        result (``surprisal_bits``, ``entropy_bits``) or a generation's ``StepStats`` (NaN after a
        row stopped: those steps are masked out).

        >>> t = Tokens.from_bits([1.0, float("nan")], [2.0, float("nan")])
        >>> t.mask.tolist(), round(float(t.log_probs[0]), 4)
        ([True, False], -0.6931)
        """
        s = torch.as_tensor(surprisal_bits, dtype=torch.float64)
        h = torch.as_tensor(entropy_bits, dtype=torch.float64)
        if s.dim() == 0 or s.shape != h.shape:
            raise ValueError(
                f"surprisal_bits and entropy_bits must be arrays of one shape, got "
                f"{tuple(s.shape)} and {tuple(h.shape)}"
            )
        valid = ~(torch.isnan(s) | torch.isnan(h))
        m = valid if mask is None else check_mask(mask, s) & valid
        return cls(torch.where(valid, -s * LN2, 0.0), torch.where(valid, h * LN2, 0.0), m)

    def span(self, span: Tensor) -> Tokens:
        """The same tokens restricted to ``span`` (bool, broadcastable): the claim-conditioned view."""
        return Tokens(self.log_probs, self.entropy, self.mask & check_mask(span, self.log_probs, "span"))


def _as_tokens(tokens: Any, span: Tensor | None) -> Tokens:
    if not isinstance(tokens, Tokens):
        raise TypeError(f"tokens must be an uncertainty.Tokens, got {type(tokens).__name__}")
    t = tokens if span is None else tokens.span(span)
    if bool((t.mask.sum(-1) == 0).any()):
        raise ValueError(
            "tokens must have at least one token in the answer (mask/span) of every row, got an empty one"
        )
    return t


def _sum(x: Tensor, m: Tensor) -> Tensor:
    return torch.where(m, x, 0.0).sum(-1)


def _mean(x: Tensor, m: Tensor) -> Tensor:
    return _sum(x, m) / m.sum(-1)


def _max(x: Tensor, m: Tensor) -> Tensor:
    return torch.where(m, x, -math.inf).amax(-1)


def max_sequence_probability(tokens: Tokens, *, span: Tensor | None = None) -> Tensor:
    """-log p(y | x) = -sum_t log p(y_t | x, y_<t): the negative log of the answer's probability
    (lm-polygraph ``MaximumSequenceProbability``; Fadeeva et al. 2023). Nats, shape (...).

    >>> t = Tokens(torch.tensor([-0.5, -1.5]), torch.zeros(2), torch.tensor([True, True]))
    >>> max_sequence_probability(t)
    tensor(2.)
    """
    t = _as_tokens(tokens, span)
    return -_sum(t.log_probs, t.mask)


def mean_surprisal(tokens: Tokens, *, span: Tensor | None = None) -> Tensor:
    """-mean_t log p(y_t): the length-normalised negative log-likelihood (log perplexity), nats.

    >>> mean_surprisal(Tokens(torch.tensor([-0.5, -1.5]), torch.zeros(2), torch.tensor([True, True])))
    tensor(1.)
    """
    t = _as_tokens(tokens, span)
    return -_mean(t.log_probs, t.mask)


def perplexity(tokens: Tokens, *, span: Tensor | None = None) -> Tensor:
    """exp(-mean_t log p(y_t)): the answer's perplexity (unit-free, >= 1).

    >>> perplexity(Tokens(torch.tensor([-0.5, -1.5]), torch.zeros(2), torch.tensor([True, True])))
    tensor(2.7183)
    """
    return torch.exp(mean_surprisal(tokens, span=span))


def max_surprisal(tokens: Tokens, *, span: Tensor | None = None) -> Tensor:
    """-min_t log p(y_t): the surprisal of the answer's least likely token, nats.

    >>> max_surprisal(Tokens(torch.tensor([-0.5, -1.5]), torch.zeros(2), torch.tensor([True, True])))
    tensor(1.5000)
    """
    t = _as_tokens(tokens, span)
    return _max(-t.log_probs, t.mask)


def mean_token_entropy(tokens: Tokens, *, span: Tensor | None = None) -> Tensor:
    """mean_t H_t: the model's mean next-token entropy along the answer, nats
    (lm-polygraph ``MeanTokenEntropy``; Malinin & Gales 2021, arXiv:2002.07650).

    >>> mean_token_entropy(Tokens(torch.zeros(2), torch.tensor([1.0, 3.0]), torch.tensor([True, False])))
    tensor(1.)
    """
    t = _as_tokens(tokens, span)
    return _mean(t.entropy, t.mask)


def max_token_entropy(tokens: Tokens, *, span: Tensor | None = None) -> Tensor:
    """max_t H_t: the model's largest next-token entropy along the answer, nats.

    >>> max_token_entropy(Tokens(torch.zeros(2), torch.tensor([1.0, 3.0]), torch.tensor([True, True])))
    tensor(3.)
    """
    t = _as_tokens(tokens, span)
    return _max(t.entropy, t.mask)
