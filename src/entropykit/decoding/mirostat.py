"""Mirostat: sampling that steers the observed surprise to a target ``tau`` (bits) by feedback.

Basu et al. (2021), "Mirostat: A Neural Text Decoding Algorithm that Directly Controls Perplexity";
the update rules follow llama.cpp. Each batch row has its own truncation level ``mu`` (bits),
starting at ``2 tau`` and persisting across calls until :meth:`Mirostat.reset`.

- v2: keep tokens with surprise ``-log2 p_i <= mu`` (at least the most likely), renormalise, sample
  ``x``; observed surprise ``s = -log2 q(x)`` under the truncated, renormalised ``q``;
  ``mu <- mu - eta (s - tau)``.
- v1: estimate the Zipf exponent from the ``m`` most likely tokens,
  ``s_hat = sum t_i b_i / sum t_i^2`` with ``t_i = ln((i+2)/(i+1))``, ``b_i = ln(p_i / p_{i+1})``;
  ``eps = s_hat - 1``; ``k = ((eps 2^mu) / (1 - N^-eps))^(1/s_hat)`` (N = vocabulary size); top-k
  (``k >= 1``), sample, same surprise and update.

Since ``mu_n = mu_0 - eta * sum_t (s_t - tau)``, the running mean of the observed surprise is
``tau + (mu_0 - mu_n) / (eta n)``: it converges to ``tau`` whenever ``mu`` stays bounded, i.e. when
``tau`` is reachable (below the entropy of the full distribution).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from entropykit.decoding.generate import LN2, SamplerStep, check_sampler_scores, sample_from_logits

__all__ = ["Mirostat", "SamplerProcessor"]


class SamplerProcessor:
    """A sampler as a Hugging Face ``LogitsProcessor``: ``(input_ids, scores) -> scores``.

    ``model.generate`` calls its processors with two arguments and then picks the token itself, so the
    wrapped sampler (``Mirostat``, ``EntropixSampler``: they choose the token and update their state)
    runs on the scores and returns them with every entry but its chosen token set to ``-inf``;
    ``generate``'s greedy or sampling step then takes that token. Make one with
    ``sampler.as_logits_processor(generator)``; put it last in the ``LogitsProcessorList`` (processors
    after it see one finite entry). ``generator`` is the randomness the sampler draws with.

    >>> proc = Mirostat(tau=3.0).as_logits_processor(torch.Generator().manual_seed(0))
    >>> out = proc(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[2.0, 1.0, 0.0]]))
    >>> int((out > float("-inf")).sum())
    1
    """

    def __init__(self, sampler: Any, generator: torch.Generator | None = None) -> None:
        if not callable(sampler):
            raise TypeError(f"sampler: expected a callable sampler, got {type(sampler).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        self.sampler, self.generator = sampler, generator

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        step = self.sampler(input_ids, scores, self.generator)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, step.tokens.long().to(scores.device)[:, None], 0.0)

    def __repr__(self) -> str:
        return f"SamplerProcessor({self.sampler!r})"


class Mirostat:
    """Mirostat v1/v2 sampler (see the module docstring); state ``mu`` (bits) per batch row.

    ``Mirostat(version=2, tau=5.0, eta=0.1, m=100)``; ``tau`` target surprise in bits, ``eta`` the
    learning rate, ``m`` the number of top tokens used by v1's Zipf estimate. Call it as a sampler:
    ``step = mirostat(input_ids, scores, generator)``; ``mu`` and ``last_surprise`` (bits, per row)
    are readable; ``reset()`` forgets the state (a new batch may then have another size).

    >>> s = Mirostat(tau=3.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> step = s(None, torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]])), g)
    >>> s.mu.shape, step.kept
    (torch.Size([1]), tensor([4]))
    """

    def __init__(self, version: int = 2, tau: float = 5.0, eta: float = 0.1, m: int = 100) -> None:
        if version not in (1, 2) or isinstance(version, bool):
            raise ValueError(f"version: expected 1 or 2, got {version!r}")
        for name, value in (("tau", tau), ("eta", eta)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise ValueError(f"m: expected an integer >= 2, got {m!r}")
        self.version, self.tau, self.eta, self.m = version, float(tau), float(eta), m
        self.mu: Tensor | None = None
        self.last_surprise: Tensor | None = None

    def reset(self) -> None:
        """Forget ``mu`` (every row restarts at ``2 tau``)."""
        self.mu = None
        self.last_surprise = None

    def as_logits_processor(self, generator: torch.Generator | None = None) -> SamplerProcessor:
        """This sampler for ``transformers``' ``model.generate(logits_processor=...)``; see
        :class:`SamplerProcessor`. The state (``mu``) is this object's: ``reset()`` between prompts."""
        return SamplerProcessor(self, generator)

    def __repr__(self) -> str:
        return f"Mirostat(version={self.version}, tau={self.tau}, eta={self.eta}, m={self.m})"

    def __call__(
        self, input_ids: Tensor | None, scores: Tensor, generator: torch.Generator | None = None
    ) -> SamplerStep:
        check_sampler_scores(scores)
        b, v = scores.shape
        if self.mu is None:
            self.mu = torch.full((b,), 2.0 * self.tau, dtype=torch.float64, device=scores.device)
        elif self.mu.shape[0] != b:
            raise ValueError(
                f"scores: batch of {b} rows but this Mirostat holds state for {self.mu.shape[0]} rows; "
                "call reset()"
            )
        logp = torch.log_softmax(scores.double(), dim=-1)
        if self.version == 2:
            keep = -logp / LN2 <= self.mu[:, None]
            keep |= logp == logp.amax(-1, keepdim=True)  # at least the most likely token
        else:
            keep = self._top_k_mask(logp, v)
        keep &= logp > float("-inf")
        trunc = torch.log_softmax(logp.masked_fill(~keep, float("-inf")), dim=-1)
        tokens = sample_from_logits(trunc, generator)
        surprise = -trunc.gather(-1, tokens[:, None]).squeeze(-1) / LN2
        self.mu = self.mu - self.eta * (surprise - self.tau)
        self.last_surprise = surprise
        return SamplerStep(tokens, keep.sum(-1), torch.ones(b))

    def _top_k_mask(self, logp: Tensor, v: int) -> Tensor:
        assert self.mu is not None
        m = min(self.m, v)
        lp, order = torch.sort(logp, dim=-1, descending=True)
        top = lp[:, :m]
        i = torch.arange(m - 1, dtype=torch.float64, device=logp.device)
        t = torch.log((i + 2) / (i + 1))
        bi = top[:, :-1] - top[:, 1:]
        ok = torch.isfinite(bi)  # pairs that reach zero-probability tokens carry no information
        num = torch.where(ok, t * bi, torch.zeros_like(bi)).sum(-1)
        den = torch.where(ok, t * t, torch.zeros_like(bi)).sum(-1)
        s_hat = torch.where(den > 0, num / den.clamp(min=1e-300), torch.ones_like(num)).clamp(min=1e-3)
        eps = s_hat - 1
        two_mu = torch.exp2(self.mu)
        small = eps.abs() < 1e-6  # limit eps -> 0 of eps / (1 - N^-eps) is 1 / ln N
        ratio = torch.where(
            small,
            two_mu / math.log(v) if v > 1 else two_mu,
            eps * two_mu / torch.where(small, torch.ones_like(eps), 1 - float(v) ** (-eps)),
        )
        k = (
            torch.pow(ratio.clamp(min=0), 1 / s_hat)
            .nan_to_num(nan=1.0, posinf=float(v))
            .clamp(1, v)
            .floor()
            .long()
        )
        rank = torch.arange(v, device=logp.device).expand_as(order)
        keep_sorted = rank < k[:, None]
        return torch.empty_like(keep_sorted).scatter_(-1, order, keep_sorted)
