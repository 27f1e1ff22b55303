"""Entropix-style adaptive sampling: the decoding rule is chosen per token from the entropy and
varentropy of the next-token distribution.

After xjdr's entropix (2024, github.com/xjdr-alt/entropix, ``sampler.py``). With ``H`` the entropy
(bits) and ``V`` the varentropy ``sum p (log2 p + H)^2`` (bits²) of the raw logits, each row takes
one branch (checked in this order):

=========  =========================================  ==============================================
branch     condition                                  action
=========  =========================================  ==============================================
argmax     H < argmax_entropy and V < argmax_varent.  take the most likely token
clarify    H > clarify_entropy and V < clarify_var.   emit ``clarify_token`` (if set and not just
                                                      emitted), else sample at ``T * clarify_scale``
explore    H < explore_entropy and V > explore_var.   sample at ``T * explore_scale``, top-k raised
                                                      by ``explore_top_k_scale``
resample   H > resample_entropy and V > resample_v.   sample at ``max(resample_temperature, T)``,
                                                      top-p lowered by ``resample_top_p_drop``
adaptive   otherwise                                  ``T' = T (1 + adaptive_scale (H + V))``,
                                                      ``min_p' = clip(min_p (1 - 0.5 (H + V)), .01, .5)``;
                                                      draw ``n_samples`` and keep the most likely
=========  =========================================  ==============================================

Temperatures of the non-resample branches are capped at ``max_temperature``. Entropix's attention
statistics (attention entropy, agreement, interaction strength) are not available through the
model adapter, so their terms are dropped; its per-sample "confidence" then is constant within a
row, and the best sample is the one with the highest log-probability under the model. The default
thresholds are entropix's first release (0.1 / 3 / 5); a later release used 0.3 / 1.2 / 2.5.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entropykit import measures
from entropykit.decoding.generate import SamplerStep, _kept, check_sampler_scores, sample_from_logits
from entropykit.decoding.mirostat import SamplerProcessor

__all__ = ["BRANCHES", "EntropixSampler"]

BRANCHES = ("argmax", "clarify", "explore", "resample", "adaptive")


class EntropixSampler:
    """Adaptive sampler driven by entropy (bits) and varentropy (bits²); see the module docstring.

    ``last_branch`` holds the branch index per row (into ``BRANCHES``), ``last_entropy_bits`` and
    ``last_varentropy_bits2`` the statistics that chose it.

    >>> s = EntropixSampler()
    >>> step = s(None, torch.tensor([[10.0, 0.0, 0.0]]), torch.Generator().manual_seed(0))
    >>> BRANCHES[int(s.last_branch[0])], step.tokens
    ('argmax', tensor([0]))
    """

    def __init__(
        self,
        *,
        temperature: float = 0.666,
        top_p: float = 0.90,
        top_k: int = 27,
        min_p: float = 0.0,
        argmax_entropy: float = 0.1,
        argmax_varentropy: float = 0.1,
        clarify_entropy: float = 3.0,
        clarify_varentropy: float = 0.1,
        clarify_token: int | None = None,
        clarify_scale: float = 1.3,
        explore_entropy: float = 5.0,
        explore_varentropy: float = 5.0,
        explore_scale: float = 1.2,
        explore_top_k_scale: float = 1.5,
        resample_entropy: float = 5.0,
        resample_varentropy: float = 5.0,
        resample_temperature: float = 2.0,
        resample_top_p_drop: float = 0.2,
        adaptive_scale: float = 0.3,
        n_samples: int = 5,
        max_temperature: float = 1.5,
    ) -> None:
        positives = {
            "temperature": temperature,
            "clarify_scale": clarify_scale,
            "explore_scale": explore_scale,
            "explore_top_k_scale": explore_top_k_scale,
            "resample_temperature": resample_temperature,
            "max_temperature": max_temperature,
        }
        non_negative = {
            "argmax_entropy": argmax_entropy,
            "argmax_varentropy": argmax_varentropy,
            "clarify_entropy": clarify_entropy,
            "clarify_varentropy": clarify_varentropy,
            "explore_entropy": explore_entropy,
            "explore_varentropy": explore_varentropy,
            "resample_entropy": resample_entropy,
            "resample_varentropy": resample_varentropy,
            "resample_top_p_drop": resample_top_p_drop,
            "adaptive_scale": adaptive_scale,
            "min_p": min_p,
        }
        for name, value in {**positives, **non_negative}.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
            if value < 0 or (name in positives and value == 0):
                raise ValueError(
                    f"{name}: expected a {'positive' if name in positives else 'non-negative'} number, "
                    f"got {value!r}"
                )
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p: expected a value in (0, 1], got {top_p!r}")
        if min_p > 1:
            raise ValueError(f"min_p: expected a value in [0, 1], got {min_p!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k: expected an integer >= 1, got {top_k!r}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples: expected an integer >= 1, got {n_samples!r}")
        if clarify_token is not None and (not isinstance(clarify_token, int) or clarify_token < 0):
            raise ValueError(f"clarify_token: expected a token id >= 0 or None, got {clarify_token!r}")
        self.temperature, self.top_p, self.top_k, self.min_p = (
            float(temperature),
            float(top_p),
            top_k,
            float(min_p),
        )
        self.argmax_entropy, self.argmax_varentropy = argmax_entropy, argmax_varentropy
        self.clarify_entropy, self.clarify_varentropy = clarify_entropy, clarify_varentropy
        self.clarify_token, self.clarify_scale = clarify_token, clarify_scale
        self.explore_entropy, self.explore_varentropy = explore_entropy, explore_varentropy
        self.explore_scale, self.explore_top_k_scale = explore_scale, explore_top_k_scale
        self.resample_entropy, self.resample_varentropy = resample_entropy, resample_varentropy
        self.resample_temperature, self.resample_top_p_drop = resample_temperature, resample_top_p_drop
        self.adaptive_scale, self.n_samples, self.max_temperature = adaptive_scale, n_samples, max_temperature
        self.last_branch: Tensor | None = None
        self.last_entropy_bits: Tensor | None = None
        self.last_varentropy_bits2: Tensor | None = None

    def branch(self, h: Tensor, v: Tensor, previous: Tensor | None) -> Tensor:
        """Branch index per row from entropy ``h`` (bits) and varentropy ``v`` (bits²)."""
        out = torch.full(h.shape, BRANCHES.index("adaptive"), dtype=torch.long)
        conds = [
            ("argmax", (h < self.argmax_entropy) & (v < self.argmax_varentropy)),
            ("clarify", (h > self.clarify_entropy) & (v < self.clarify_varentropy)),
            ("explore", (h < self.explore_entropy) & (v > self.explore_varentropy)),
            ("resample", (h > self.resample_entropy) & (v > self.resample_varentropy)),
        ]
        for name, cond in reversed(conds):  # earlier rules win
            out = torch.where(cond, BRANCHES.index(name), out)
        return out

    def __call__(
        self, input_ids: Tensor | None, scores: Tensor, generator: torch.Generator | None = None
    ) -> SamplerStep:
        check_sampler_scores(scores)
        b = scores.shape[0]
        x = scores.double()
        st = measures.token_stats(x, base=2)  # entropy and varentropy in one pass
        h, var = st.entropy, st.varentropy
        prev = (
            input_ids[:, -1]
            if isinstance(input_ids, Tensor) and input_ids.dim() == 2 and input_ids.shape[1]
            else None
        )
        br = self.branch(h, var, prev)
        t0, cap = self.temperature, self.max_temperature
        temp = torch.full((b,), t0, dtype=torch.float64)
        top_k = torch.full((b,), self.top_k, dtype=torch.long)
        top_p = torch.full((b,), self.top_p, dtype=torch.float64)
        min_p = torch.full((b,), self.min_p, dtype=torch.float64)
        u = h + var
        temp = torch.where(br == 1, min(cap, t0 * self.clarify_scale), temp)
        temp = torch.where(br == 2, min(cap, t0 * self.explore_scale), temp)
        top_k = torch.where(br == 2, max(5, int(self.top_k * self.explore_top_k_scale)), top_k)
        temp = torch.where(br == 3, max(self.resample_temperature, t0), temp)
        top_p = torch.where(br == 3, max(0.5, self.top_p - self.resample_top_p_drop), top_p)
        temp = torch.where(br == 4, (t0 * (1 + self.adaptive_scale * u)).clamp(max=cap), temp)
        min_p = torch.where(br == 4, (self.min_p * (1 - 0.5 * u)).clamp(0.01, 0.5), min_p)

        filtered = _filter(x / temp[:, None], top_k, top_p, min_p)
        tokens = sample_from_logits(filtered, generator)
        if bool((br == 4).any()):  # adaptive rows: the most likely of n_samples draws
            draws = [tokens] + [sample_from_logits(filtered, generator) for _ in range(self.n_samples - 1)]
            cand = torch.stack(draws, 1)  # (B, n)
            logp = torch.log_softmax(x, dim=-1)
            best = cand.gather(1, logp.gather(1, cand).argmax(1, keepdim=True)).squeeze(1)
            tokens = torch.where(br == 4, best, tokens)
        tokens = torch.where(br == 0, x.argmax(-1), tokens)
        kept = _kept(filtered)
        kept = torch.where(br == 0, 1, kept)
        temp_out = torch.where(br == 0, 0.0, temp)
        if self.clarify_token is not None:
            fresh = torch.ones(b, dtype=torch.bool) if prev is None else prev != self.clarify_token
            emit = (br == 1) & fresh
            tokens = torch.where(emit, torch.tensor(self.clarify_token), tokens)
            kept = torch.where(emit, 1, kept)
            temp_out = torch.where(emit, 0.0, temp_out)
        self.last_branch, self.last_entropy_bits, self.last_varentropy_bits2 = br, h.float(), var.float()
        return SamplerStep(tokens, kept, temp_out.float())

    def as_logits_processor(self, generator: torch.Generator | None = None) -> SamplerProcessor:
        """This sampler for ``transformers``' ``model.generate(logits_processor=...)``; see
        :class:`entropykit.decoding.mirostat.SamplerProcessor`."""
        return SamplerProcessor(self, generator)

    def __repr__(self) -> str:
        return f"EntropixSampler(temperature={self.temperature}, top_p={self.top_p}, top_k={self.top_k})"


def _filter(z: Tensor, top_k: Tensor, top_p: Tensor, min_p: Tensor) -> Tensor:
    """Per-row top-k, top-p (keeps the token that crosses p) and min-p on logits ``z`` (B, V)."""
    sz, order = torch.sort(z, dim=-1, descending=True)
    p = torch.softmax(sz, dim=-1)
    rank = torch.arange(z.shape[-1]).expand_as(sz)
    before = p.cumsum(-1) - p
    keep = (rank < top_k[:, None]) & (before < top_p[:, None]) & (p >= min_p[:, None] * p[:, :1])
    keep[:, 0] = True
    keep_orig = torch.empty_like(keep).scatter_(-1, order, keep)
    return z.masked_fill(~keep_orig, float("-inf"))
