"""Autoregressive generation over the entropykit model adapter, with per-step information statistics.

``generate(model, input_ids, processors=..., sampler=..., max_new_tokens=...)`` runs the model one
token at a time with its KV cache, applies logits processors (the Hugging Face ``LogitsProcessor``
protocol), lets a sampler choose the token, and records for every step the entropy and varentropy
of the model's raw next-token distribution, the surprisal of the chosen token under it (bits), the
size of the kept set and the temperature used.

Samplers implement ``sampler(input_ids[B, T], scores[B, V], generator) -> SamplerStep``; this module
has :class:`Multinomial` (sample the processed distribution) and :class:`Greedy`; ``mirostat`` and
``adaptive`` add stateful ones.

Long sequences: a model's cache holds at most ``max_context`` tokens (ByteGPT's absolute positions
stop at 512). When a sequence outgrows it, :class:`ContextStream` re-primes the model on the model's
prefix (BOS) plus the last ``3/4 * max_context`` tokens, then continues with the cache: the
``entropykit.models.stream.Reprime`` schedule, the one window rule of scoring, detection and the codec.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from entropykit._validate import check_int
from entropykit.decoding.processors import Chain
from entropykit.models import LanguageModel
from entropykit.models.adapters import hf_forward
from entropykit.models.stream import Reprime

__all__ = [
    "ContextStream",
    "GenerateOutput",
    "Greedy",
    "Multinomial",
    "Sampler",
    "SamplerStep",
    "StepStats",
    "as_language_model",
    "generate",
    "sample_from_logits",
]

LN2 = math.log(2.0)
REPRIME_FRACTION = 0.75  # share of the context kept when re-priming: long enough for quality, and
# leaves a quarter of the context for cached steps before the next re-prime


@dataclass
class SamplerStep:
    """What a sampler chose for each row: ``tokens[B]``, kept-set size ``kept[B]``, ``temperature[B]``."""

    tokens: Tensor
    kept: Tensor
    temperature: Tensor


class Sampler(Protocol):
    def __call__(
        self, input_ids: Tensor, scores: Tensor, generator: torch.Generator | None = None
    ) -> SamplerStep: ...


def check_sampler_scores(scores: Tensor) -> None:
    """The samplers' argument check: ``scores`` must be a float tensor (batch, vocab); the one check
    of the processors (:func:`entropykit.decoding.processors.check_scores`)."""
    from entropykit.decoding.processors import check_scores  # the module is imported above already

    check_scores(scores)


def sample_from_logits(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row from ``softmax(logits)`` by inverse CDF with one uniform per row.

    One ``torch.rand(B)`` draw per call, so row ``b`` uses the ``b``-th uniform whatever the other
    rows hold (rows never interact), and a fixed generator gives reproducible tokens. Tokens with
    probability 0 (``-inf`` logits) are never drawn.

    >>> sample_from_logits(torch.tensor([[0.0, float("-inf")]]))
    tensor([0])
    """
    probs = torch.softmax(logits.double(), dim=-1)
    cdf = probs.cumsum(-1)
    u = torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64, device=logits.device)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
    return idx.clamp_(max=logits.shape[-1] - 1)


def _kept(scores: Tensor) -> Tensor:
    return (scores > float("-inf")).sum(-1)


class Multinomial:
    """Sample from the (processed) distribution: ``x ~ softmax(scores)``."""

    def __call__(
        self, input_ids: Tensor, scores: Tensor, generator: torch.Generator | None = None
    ) -> SamplerStep:
        return SamplerStep(sample_from_logits(scores, generator), _kept(scores), torch.ones(scores.shape[0]))

    def __repr__(self) -> str:
        return "Multinomial()"


class Greedy:
    """Take the most likely token (lowest index among ties); kept-set size 1, temperature 0."""

    def __call__(
        self, input_ids: Tensor, scores: Tensor, generator: torch.Generator | None = None
    ) -> SamplerStep:
        b = scores.shape[0]
        return SamplerStep(scores.argmax(-1), torch.ones(b, dtype=torch.long), torch.zeros(b))

    def __repr__(self) -> str:
        return "Greedy()"


# --- models ----------------------------------------------------------------------------------------
class _ModuleLM(LanguageModel):
    """A bare Hugging Face causal LM module (no tokenizer) behind the forward part of the protocol."""

    supports_cache = True

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()
        cfg = module.config  # type: ignore[union-attr]
        self.name = getattr(cfg, "name_or_path", "") or type(module).__name__
        ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.max_context = int(ctx or 2**31 - 1)
        self.vocab_size = int(module.get_output_embeddings().weight.shape[0])  # type: ignore[operator]
        self.prefix_ids = []

    def encode(self, data: str | bytes) -> Any:
        raise TypeError(
            "this model has no tokenizer: pass token ids, or load it with entropykit.lm.load_model"
        )

    def decode(self, ids: list[int]) -> bytes:
        raise TypeError("this model has no tokenizer")

    def forward(self, input_ids: Tensor, past: Any = None) -> tuple[Tensor, Any]:
        return hf_forward(self.module, input_ids, past)


def as_language_model(model: Any) -> LanguageModel:
    """Return ``model`` if it is a ``LanguageModel``; wrap a bare Hugging Face causal-LM module."""
    if isinstance(model, LanguageModel):
        return model
    if isinstance(model, nn.Module) and hasattr(model, "config") and hasattr(model, "get_output_embeddings"):
        return _ModuleLM(model)
    raise TypeError(
        "model must be an entropykit LanguageModel (entropykit.lm.load_model) or a Hugging Face causal "
        f"LM, got {type(model).__name__}"
    )


class ContextStream:
    """A growing batch of sequences fed to a model incrementally, with its KV cache.

    ``append(tokens)`` records tokens without running the model; ``next_logits()`` feeds every token
    not yet seen (one forward call, however many) and returns the next-token logits (B, V). When the
    cache would exceed ``max_context`` the model is re-primed on its prefix plus the last
    ``REPRIME_FRACTION * max_context`` tokens (``schedule``: a ``models.stream.Reprime`` with
    ``window = max_context``; a sequence that does not start with the prefix is streamed without
    one). Counts ``calls``, ``tokens_processed`` and ``forward_seconds``.
    """

    def __init__(self, model: LanguageModel, input_ids: Tensor) -> None:
        self.model = model
        self.seq = input_ids
        self.past: Any = None
        self.cached = 0  # tokens held by the cache
        self.fed = 0  # tokens of seq already given to the model
        self.calls = 0
        self.tokens_processed = 0
        self.forward_seconds = 0.0
        self.last_logits: Tensor | None = None
        pre = list(model.prefix_ids)
        starts = (
            len(pre) > 0
            and input_ids.shape[1] >= len(pre)
            and bool((input_ids[:, : len(pre)] == torch.tensor(pre)).all())
        )
        self.prefix = input_ids[:, : len(pre)] if starts else input_ids[:, :0]
        n_prefix, ctx = self.prefix.shape[1], model.max_context
        prime = min(max(1, int(ctx * REPRIME_FRACTION) - n_prefix), ctx - n_prefix)
        self.schedule = Reprime(window=ctx, prime=prime, n_prefix=n_prefix)

    def append(self, tokens: Tensor) -> None:
        self.seq = torch.cat([self.seq, tokens.reshape(self.seq.shape[0], -1).to(self.seq.dtype)], dim=1)

    def next_logits(self) -> Tensor:
        new = self.seq.shape[1] - self.fed
        if new == 0 and self.last_logits is not None:
            return self.last_logits
        p = self.prefix.shape[1]  # positions below are text positions: seq = prefix + text
        cached = self.cached if self.model.supports_cache and self.past is not None else 0
        f = self.schedule.feed(cached, max(self.fed - p, 0), self.seq.shape[1] - p)
        if f.restart:  # a fresh start: the prefix + the whole text, or + its last `prime` tokens
            feed, past = torch.cat([self.prefix, self.seq[:, p + f.start : p + f.end]], dim=1), None
        else:
            feed, past = self.seq[:, p + f.start : p + f.end], self.past
        t0 = time.perf_counter()
        logits, present = self.model.forward(feed, past)
        self.forward_seconds += time.perf_counter() - t0
        self.calls += 1
        self.tokens_processed += feed.shape[0] * feed.shape[1]
        self.cached = (self.cached if past is not None else 0) + feed.shape[1]
        self.past = present if self.model.supports_cache else None
        self.fed = self.seq.shape[1]
        self.last_logits = logits[:, -1, :]
        return self.last_logits


# --- generate --------------------------------------------------------------------------------------
@dataclass
class StepStats:
    """Per-step statistics, each (B, steps); NaN / -1 after a row has stopped.

    ``entropy_bits`` and ``varentropy_bits2`` (bits²) of the model's raw next-token distribution,
    ``surprisal_bits`` of the chosen token under it, ``kept`` (size of the set the token was drawn
    from), ``temperature`` (product of the processors' and the sampler's temperatures; 1 if none).
    """

    entropy_bits: Tensor
    varentropy_bits2: Tensor
    surprisal_bits: Tensor
    kept: Tensor
    temperature: Tensor

    def row(self, b: int) -> list[dict[str, float]]:
        """The steps of row ``b`` as a list of dicts (stopped steps dropped)."""
        out = []
        for t in range(self.entropy_bits.shape[1]):
            if int(self.kept[b, t]) < 0:
                break
            out.append(
                {
                    "entropy_bits": float(self.entropy_bits[b, t]),
                    "varentropy_bits2": float(self.varentropy_bits2[b, t]),
                    "surprisal_bits": float(self.surprisal_bits[b, t]),
                    "kept": int(self.kept[b, t]),
                    "temperature": float(self.temperature[b, t]),
                }
            )
        return out


@dataclass
class GenerateOutput:
    """``sequences`` (B, T + steps; stopped rows padded with their stop token), ``new_tokens`` per
    row (stop token included), ``stats`` (None when ``return_stats=False``) and timings."""

    sequences: Tensor
    new_tokens: list[list[int]]
    stats: StepStats | None
    steps: int
    forward_seconds: float
    total_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _as_processor(processors: Any) -> Callable[[Tensor, Tensor], Tensor] | None:
    if processors is None:
        return None
    if isinstance(processors, (list, tuple)):
        return Chain(processors) if processors else None
    if not callable(processors):
        raise TypeError(f"processors must be a callable, a list of callables or None, got {processors!r}")
    return processors  # type: ignore[no-any-return]


def _as_ids(model: LanguageModel, input_ids: Any) -> Tensor:
    if isinstance(input_ids, (str, bytes)):
        ids = list(model.prefix_ids) + model.encode(input_ids).ids
        t = torch.tensor([ids], dtype=torch.long)
    elif isinstance(input_ids, Tensor):
        t = input_ids.long()
        t = t.unsqueeze(0) if t.dim() == 1 else t
    elif isinstance(input_ids, Sequence):
        t = torch.tensor([list(input_ids)], dtype=torch.long)
    else:
        raise TypeError(
            f"input_ids must be a LongTensor (B, T), a list of ids or a str, got {type(input_ids).__name__}"
        )
    if t.dim() != 2 or t.shape[1] < 1 or t.shape[0] < 1:
        raise ValueError(f"input_ids must have shape (batch, length >= 1), got {tuple(t.shape)}")
    if int(t.min()) < 0 or int(t.max()) >= model.vocab_size:
        raise ValueError(
            f"input_ids must hold token ids in [0, {model.vocab_size}), got [{int(t.min())}, {int(t.max())}]"
        )
    return t


def _stop_ids(stop: Any) -> list[int]:
    if stop is None:
        return []
    if isinstance(stop, int) and not isinstance(stop, bool):
        return [stop]
    if isinstance(stop, Sequence) and all(isinstance(s, int) and not isinstance(s, bool) for s in stop):
        return list(stop)
    raise TypeError(f"stop must be a token id, a list of token ids or None, got {stop!r}")


def step_statistics(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(entropy, varentropy, surprisal) of ``tokens`` under raw logits (B, V), in bits (bits²).

    The fields of the one definition, :func:`entropykit.measures.token_stats` ``(..., base=2)``,
    returned as a tuple in that order; :class:`StepStats` keeps them as ``entropy_bits``,
    ``varentropy_bits2`` and ``surprisal_bits`` (the house's unit-in-the-name rule). Only
    ``StepStats`` has ``kept`` and ``temperature`` (they describe the sampler, not the distribution).
    """
    from entropykit import measures  # local: this function is the module's only use of it

    st = measures.token_stats(logits.float(), tokens, base=2)
    assert st.surprisal is not None
    return st.entropy, st.varentropy, st.surprisal


def generate(
    model: Any,
    input_ids: Any,
    *,
    processors: Any = None,
    sampler: Sampler | None = None,
    max_new_tokens: int,
    stop: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    return_stats: bool = True,
) -> GenerateOutput:
    """Generate up to ``max_new_tokens`` tokens per row, with per-step entropy statistics.

    ``model``: an entropykit ``LanguageModel`` (``entropykit.lm.load_model(...)``) or a Hugging Face
    causal-LM module. ``input_ids``: LongTensor (B, T) of equal-length rows, a list of ids, or a
    ``str`` (encoded with the model's prefix, e.g. BOS). ``processors``: one callable
    ``(input_ids, scores) -> scores``, a list (applied in order) or None. ``sampler``: chooses the
    token from the processed scores (default :class:`Multinomial`). ``stop``: token id(s); a row
    stops after emitting one. ``generator``: the only randomness used (reproducible outputs).

    Statistics (``return_stats``), per row and step: entropy H = -sum p log2 p and varentropy
    sum p (log2 p + H)^2 of the model's raw distribution, surprisal -log2 p(x) of the chosen token
    under it, kept-set size and temperature (see :class:`StepStats`).

    >>> from entropykit.models import load_model
    >>> out = generate(load_model("bytegpt-small"), "Hello", max_new_tokens=4,
    ...                generator=torch.Generator().manual_seed(0))
    >>> out.stats.entropy_bits.shape
    torch.Size([1, 4])
    """
    t_start = time.perf_counter()
    lm = as_language_model(model)
    ids = _as_ids(lm, input_ids)
    check_int(max_new_tokens, "max_new_tokens", 0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    proc = _as_processor(processors)
    samp: Sampler = sampler if sampler is not None else Multinomial()
    if not callable(samp):
        raise TypeError(f"sampler must be a callable sampler or None, got {sampler!r}")
    stops = _stop_ids(stop)
    stop_t = torch.tensor(stops, dtype=torch.long)

    b = ids.shape[0]
    stream = ContextStream(lm, ids)
    finished = torch.zeros(b, dtype=torch.bool)
    pad = torch.full((b,), stops[0] if stops else 0, dtype=torch.long)
    new: list[list[int]] = [[] for _ in range(b)]
    rec: dict[str, list[Tensor]] = {k: [] for k in ("h", "v", "s", "kept", "t")}
    steps = 0
    for _ in range(max_new_tokens):
        logits = stream.next_logits()
        if bool(torch.isnan(logits).any()):
            raise ValueError("model returned NaN logits")
        scores = proc(stream.seq, logits) if proc is not None else logits
        choice = samp(stream.seq, scores, generator)
        tokens = torch.where(finished, pad, choice.tokens.long())
        if return_stats:
            temp = choice.temperature.float()
            t_proc = getattr(proc, "last_temperature", None)
            if isinstance(t_proc, Tensor):
                temp = temp * t_proc.float()
            h, v, s = step_statistics(logits, tokens)
            nan = torch.full_like(h, math.nan)
            rec["h"].append(torch.where(finished, nan, h))
            rec["v"].append(torch.where(finished, nan, v))
            rec["s"].append(torch.where(finished, nan, s))
            rec["kept"].append(torch.where(finished, -1, choice.kept.long()))
            rec["t"].append(torch.where(finished, nan, temp))
        for i, (done, tok) in enumerate(zip(finished.tolist(), tokens.tolist())):
            if not done:
                new[i].append(tok)
        stream.append(tokens)
        steps += 1
        if stops:
            finished |= torch.isin(tokens, stop_t)
            if bool(finished.all()):
                break
    stats = None
    if return_stats:

        def cat(key: str, dtype: torch.dtype) -> Tensor:
            return torch.stack(rec[key], 1) if rec[key] else torch.zeros(b, 0, dtype=dtype)

        stats = StepStats(
            cat("h", torch.float32),
            cat("v", torch.float32),
            cat("s", torch.float32),
            cat("kept", torch.long),
            cat("t", torch.float32),
        )
    return GenerateOutput(
        stream.seq,
        new,
        stats,
        steps,
        stream.forward_seconds,
        time.perf_counter() - t_start,
        {"calls": stream.calls, "tokens_processed": stream.tokens_processed},
    )
