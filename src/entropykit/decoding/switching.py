"""Entropy-adaptive two-model decoding: a small model writes while it is confident, a large model
takes over while the small model's rolling entropy is high.

After "Entropy Adaptive Decoding" (Simonds, 2025). At every step the small model gives its
next-token distribution; ``H_t = -sum p log2 p`` (bits) and its rolling mean over the last
``window`` steps ``R_t`` decide who produces the token:

- small -> large when ``R_t > threshold``;
- large -> small when ``R_t < threshold - hysteresis`` (the hysteresis band avoids flapping).

Both models keep their own KV cache (:class:`~entropykit.decoding.generate.ContextStream`): the
small model sees every token; the large model catches up on the tokens it missed in one forward
call when it takes over. Caches that would outgrow a model's context re-prime on its tail.

Cost accounting (reported in :class:`SwitchOutput`):

- ``large_fraction``: share of generated tokens produced by the large model;
- ``pass_cost_saved = 1 - (n_small_calls P_small + n_large_calls P_large) / (n P_large)``: forward
  *passes* weighted by parameter count P, the cost model of memory-bound decoding where a pass costs
  about one read of the weights whatever its few tokens (the paper's accounting; the catch-up is
  part of the large model's first call of each turn);
- ``flop_saved = 1 - (tokens_small P_small + tokens_large P_large) / (n P_large)``: token FLOPs
  (~2 P per token), where the large model's catch-up counts in full;
- ``seconds`` and ``forward_seconds`` (wall clock), to compare with a large-only run.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from entropykit import measures
from entropykit._validate import check_int, check_real
from entropykit.decoding.generate import (
    ContextStream,
    Multinomial,
    Sampler,
    _as_ids,
    _as_processor,
    _stop_ids,
    as_language_model,
)

__all__ = ["EntropySwitch", "SwitchOutput"]


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.module.parameters())


@dataclass
class SwitchOutput:
    """Result of :meth:`EntropySwitch.generate` (see the module docstring for the cost fields)."""

    sequence: Tensor  # (1, T + n)
    new_tokens: list[int]
    source: list[int]  # 0 = small model, 1 = large model, per generated token
    entropy_bits: list[float]  # small model's entropy at each step
    rolling_entropy_bits: list[float]
    large_fraction: float
    pass_cost_saved: float
    flop_saved: float
    small_calls: int
    large_calls: int
    small_tokens_processed: int
    large_tokens_processed: int
    seconds: float
    forward_seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "new_tokens": len(self.new_tokens),
            "large_fraction": self.large_fraction,
            "pass_cost_saved": self.pass_cost_saved,
            "flop_saved": self.flop_saved,
            "small_calls": self.small_calls,
            "large_calls": self.large_calls,
            "small_tokens_processed": self.small_tokens_processed,
            "large_tokens_processed": self.large_tokens_processed,
            "seconds": self.seconds,
            "forward_seconds": self.forward_seconds,
        }


class EntropySwitch:
    """Entropy-switched decoding between ``small`` and ``large`` models (same tokenizer/vocabulary).

    ``window`` (tokens) for the rolling mean, ``threshold`` and ``hysteresis`` in bits (see module
    docstring). ``processors``/``sampler`` are applied to whichever model produces the token.

    >>> from entropykit.models import load_model
    >>> small, large = load_model("bytegpt-small"), load_model("bytegpt-6l")
    >>> sw = EntropySwitch(small, large, threshold=2.0, hysteresis=0.5)
    >>> out = sw.generate("The ", max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    >>> len(out.source), 0.0 <= out.large_fraction <= 1.0
    (8, True)
    """

    def __init__(
        self,
        small: Any,
        large: Any,
        *,
        window: int = 5,
        threshold: float,
        hysteresis: float = 0.5,
        processors: Any = None,
        sampler: Sampler | None = None,
    ) -> None:
        self.small, self.large = as_language_model(small), as_language_model(large)
        if self.small.vocab_size != self.large.vocab_size:
            raise ValueError(
                f"large must have small's vocabulary size {self.small.vocab_size}, "
                f"got {self.large.vocab_size}"
            )
        self.window = check_int(window, "window", 1)
        self.threshold = check_real(threshold, "threshold (bits)", finite=True)
        self.hysteresis = check_real(hysteresis, "hysteresis (bits)", 0.0, finite=True)
        self.processors = _as_processor(processors)
        self.sampler: Sampler = sampler if sampler is not None else Multinomial()
        self.p_small, self.p_large = _params(self.small), _params(self.large)

    def generate(
        self,
        input_ids: Any,
        *,
        max_new_tokens: int,
        stop: int | list[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> SwitchOutput:
        """Generate one sequence (batch of 1: the two models' turns differ between sequences)."""
        t_start = time.perf_counter()
        ids = _as_ids(self.small, input_ids)
        if ids.shape[0] != 1:
            raise ValueError(
                f"input_ids must be one sequence (EntropySwitch generates one at a time), got a batch of "
                f"{ids.shape[0]}"
            )
        check_int(max_new_tokens, "max_new_tokens", 0)
        stops = set(_stop_ids(stop))
        small, large = ContextStream(self.small, ids), ContextStream(self.large, ids)
        recent: deque[float] = deque(maxlen=self.window)
        use_large = False
        new: list[int] = []
        source: list[int] = []
        ents: list[float] = []
        rolls: list[float] = []
        for _ in range(max_new_tokens):
            logits = small.next_logits()
            h = float(measures.entropy(logits, base=2)[0])
            recent.append(h)
            roll = sum(recent) / len(recent)
            if not use_large and roll > self.threshold:
                use_large = True
            elif use_large and roll < self.threshold - self.hysteresis:
                use_large = False
            if use_large:
                logits = large.next_logits()
            scores = self.processors(small.seq, logits) if self.processors is not None else logits
            token = self.sampler(small.seq, scores, generator).tokens[:1].long()
            small.append(token)
            large.append(token)
            new.append(int(token[0]))
            source.append(int(use_large))
            ents.append(h)
            rolls.append(roll)
            if int(token[0]) in stops:
                break
        n = max(len(new), 1)
        t0 = ids.shape[1]
        # Passes: the prompt prefill counts as one pass in both runs (a large-only run makes n passes).
        pass_cost = small.calls * self.p_small + large.calls * self.p_large
        # Token FLOPs beyond the prompt (a large-only run feeds n - 1 generated tokens).
        flop_cost = (small.tokens_processed - t0) * self.p_small
        flop_cost += max(large.tokens_processed - t0, 0) * self.p_large
        flop_base = max(n - 1, 1) * self.p_large
        return SwitchOutput(
            sequence=small.seq,
            new_tokens=new,
            source=source,
            entropy_bits=ents,
            rolling_entropy_bits=rolls,
            large_fraction=sum(source) / n,
            pass_cost_saved=1.0 - pass_cost / (n * self.p_large),
            flop_saved=1.0 - flop_cost / flop_base,
            small_calls=small.calls,
            large_calls=large.calls,
            small_tokens_processed=small.tokens_processed,
            large_tokens_processed=large.tokens_processed,
            seconds=time.perf_counter() - t_start,
            forward_seconds=small.forward_seconds + large.forward_seconds,
        )
