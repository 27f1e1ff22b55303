"""The one rule for feeding a long token sequence to a causal LM with a bounded context.

Pure index arithmetic (no torch): every part that runs a model over more tokens than it holds --
scoring (``lm.score``), detection (``detect.token_statistics``), generation's re-prime
(``decoding.generate.ContextStream``) and the codec -- asks this module which tokens to feed.

**The BOS rule.** Every window starts with the model's prefix (``prefix_ids``, its BOS token), as
the models were trained (each ByteGPT training window began with BOS): a window's input is always
``prefix + ids[a:b]``, never a bare slice of the text.

Notation: ``ids`` are the text's tokens (prefix excluded), ``n = len(ids)``, ``P`` the number of
prefix tokens, ``C`` the window (the most tokens the model sees at once, prefix included, at most
its ``max_context``) and ``W = C - P`` the text tokens a window holds.

**Strided evaluation windows** (:func:`windows`, batch scoring): window ``k`` scores the targets
``ids[s:e]`` from the input ``prefix + ids[a:e-1]`` (the last target is never an input: its logit
row would be unused), with ``a = k * stride``, ``e = min(n, W + 1 + k * stride)`` and
``s = e_{k-1}`` (``s = 0`` for the first window, or 1 when ``P = 0``: nothing predicts a first
token without a prefix). Every target is scored exactly once; the first window scores all of its
targets with whatever history they have, every later target has at least ``W + 1 - stride`` text
tokens of history (plus the prefix). This is the strided loop of the transformers perplexity guide
with the prefix prepended to each window. A window's position depends only on ``k``, never on
``n``: scoring a longer text never changes the numbers of the tokens a shorter one had.

**Re-prime schedule** (:class:`Reprime`, incremental decoding with a KV cache): the cache holds at
most ``window`` tokens; when the next token would not fit, the model restarts from
``prefix + ids[-prime:]`` (the last ``prime`` tokens, the newest included) and continues with the
cache. It evaluates exactly the windows of ``windows(n, window, P, stride=window - P + 1 - prime)``
(its ``Reprime.stride``): the cached stream is the cheap way (one token per step) to compute the
same numbers. The codec's chunk schedule (``compress(..., window=w, prime=k)``: a window of ``w``
tokens including the prefix, re-primed with the prefix and the last ``k`` tokens) is
``Reprime(window=w, prime=k, n_prefix=P)``; its coding loop, after coding token ``i``, is::

    f = schedule.feed(cached=stepper.length, fed=i, end=i + 1)
    logits = (stepper.prime(prefix + ids[f.start:f.end]) if f.restart  # window full: re-prime
              else stepper.step(ids[i]))                                 # room left: one cached step

Generation uses ``Reprime(max_context, prime=max(1, int(0.75 * max_context) - P), P)``.

>>> [tuple(w) for w in windows(10, 5, 1, stride=2)]  # (start, first, end): input BOS + ids[start:end-1]
[(0, 0, 5), (2, 5, 7), (4, 7, 9), (6, 9, 10)]
>>> s = Reprime(window=5, prime=2, n_prefix=1)
>>> s.feed(cached=5, fed=4, end=5)  # the cache is full: restart from BOS + ids[3:5]
Feed(start=3, end=5, restart=True)
>>> s.stride
3
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from entropykit._validate import check_int

__all__ = [
    "BATCH_LOGIT_BYTES", "BATCH_TOKENS", "Feed", "Reprime", "Window", "batch_windows", "default_stride",
    "n_windows", "windows",
]

# Windows per batched forward pass (scoring, detection): about BATCH_TOKENS tokens a pass, and at most
# BATCH_LOGIT_BYTES of float32 logits (large vocabularies). Measured on 2 cores (Intel Xeon with AMX,
# `benchmarks/scoring.py --batches`, RESULTS section scoring_batches; two runs 2026-12-02): 8 windows
# of 1024 tokens take 1.02-1.31x the time of 1 window a pass, 2 windows of 1024 0.88-1.02x; 4 windows
# of 512 0.79-0.94x and 2 of 512 0.84-0.95x. Before, scoring took 1024 tokens a pass and detection
# 8 windows whatever their size (and whatever the vocabulary).
BATCH_TOKENS = 2048
BATCH_LOGIT_BYTES = 1 << 26


class Window(NamedTuple):
    """Targets ``ids[first:end]`` scored from the input ``prefix + ids[start:end-1]``."""

    start: int  # a: first text token of the input (after the prefix)
    first: int  # s: first target scored by this window
    end: int  # e: one past the last target

    def n_inputs(self, n_prefix: int) -> int:
        """Length of the input ``prefix + ids[start:end-1]``."""
        return n_prefix + self.end - 1 - self.start

    def rows(self, n_prefix: int) -> slice:
        """The input positions whose next-token logits predict ``ids[first:end]``."""
        return slice(n_prefix + self.first - self.start - 1, n_prefix + self.end - self.start - 1)


def _width(context: int, n_prefix: int) -> int:
    check_int(context, "context", 1)
    check_int(n_prefix, "n_prefix", 0)
    if context - n_prefix < 1:
        raise ValueError(f"context must be > n_prefix = {n_prefix} (room for a text token), got {context}")
    return context - n_prefix


def default_stride(context: int, n_prefix: int) -> int:
    """The default stride, ``max(1, (W + 1) // 2)`` with ``W = context - n_prefix``: every later target
    keeps at least half of a window's text tokens as history (``C // 2`` for a one-token BOS).

    >>> default_stride(512, 1)
    256
    """
    return max(1, (_width(context, n_prefix) + 1) // 2)


def batch_windows(context: int, vocab_size: int) -> int:
    """Default windows per batched forward pass for a model of ``context`` tokens and ``vocab_size``
    logits a position: ``max(1, min(BATCH_TOKENS, BATCH_LOGIT_BYTES / (4 vocab_size)) // context)``.

    >>> batch_windows(1024, 257), batch_windows(512, 257), batch_windows(1024, 50257)
    (2, 4, 1)
    """
    check_int(context, "context", 1)
    check_int(vocab_size, "vocab_size", 1)
    return max(1, min(BATCH_TOKENS, BATCH_LOGIT_BYTES // (4 * vocab_size)) // context)


def _first(n_prefix: int) -> int:
    return 0 if n_prefix else 1


def _check(n: int, context: int, n_prefix: int, stride: int | None) -> tuple[int, int]:
    check_int(n, "n", 0)
    width = _width(context, n_prefix)
    step = default_stride(context, n_prefix) if stride is None else check_int(stride, "stride", 1, width)
    return width, step


def windows(n: int, context: int, n_prefix: int, stride: int | None = None) -> Iterator[Window]:
    """The strided evaluation windows over ``n`` text tokens (see the module docstring).

    ``context``: tokens per input, prefix included (``C``, at most the model's ``max_context``);
    ``n_prefix``: the prefix (BOS) tokens each input starts with; ``stride``: targets per later
    window, in ``[1, context - n_prefix]`` (default :func:`default_stride`). Window ``k`` has
    ``start = k * stride``, ``end = min(n, W + 1 + k * stride)`` with ``W = context - n_prefix``.
    Nothing is yielded when there is nothing to score (``n = 0``, or ``n = 1`` without a prefix).
    Source: Hugging Face, "Perplexity of fixed-length models" (strided evaluation), with the prefix
    prepended to every window.

    >>> [tuple(w) for w in windows(7, 4, 0, stride=2)]  # no BOS: the first token is not scored
    [(0, 1, 5), (2, 5, 7)]
    """
    width, step = _check(n, context, n_prefix, stride)
    s, e, k = _first(n_prefix), min(n, width + 1), 0
    while s < e:
        yield Window(k * step, s, e)
        k += 1
        s, e = e, min(n, width + 1 + k * step)


def n_windows(n: int, context: int, n_prefix: int, stride: int | None = None) -> int:
    """How many windows :func:`windows` yields (without iterating them).

    >>> n_windows(10, 5, 1, stride=2)
    4
    """
    width, step = _check(n, context, n_prefix, stride)
    if n <= _first(n_prefix):
        return 0
    return 1 if n <= width + 1 else 1 + -(-(n - width - 1) // step)


class Feed(NamedTuple):
    """What to feed next: ``ids[start:end]`` after the cache, or, when ``restart``, a fresh cache
    primed with ``prefix + ids[start:end]``."""

    start: int
    end: int
    restart: bool


@dataclass(frozen=True)
class Reprime:
    """The incremental re-prime schedule of a KV-cached stream (see the module docstring).

    ``window``: the most tokens the cache may hold, prefix included (at most ``max_context``);
    ``prime``: text tokens kept when re-priming, in ``[1, window - n_prefix]``; ``n_prefix``: prefix
    (BOS) tokens that start every (re-)primed input.

    >>> s = Reprime(window=4, prime=1, n_prefix=1)
    >>> s.feed(cached=0, fed=0, end=2)  # a fresh stream: the whole text fits, feed BOS + ids[0:2]
    Feed(start=0, end=2, restart=True)
    >>> s.feed(cached=3, fed=2, end=3)  # one more token fits the cache
    Feed(start=2, end=3, restart=False)
    """

    window: int
    prime: int
    n_prefix: int

    def __post_init__(self) -> None:
        width = _width(self.window, self.n_prefix)
        check_int(self.prime, "prime", 1, width)

    @property
    def stride(self) -> int:
        """The stride of the :func:`windows` this schedule evaluates: ``window - n_prefix + 1 - prime``."""
        return self.window - self.n_prefix + 1 - self.prime

    def feed(self, cached: int, fed: int, end: int) -> Feed:
        """Which tokens give the next-token logits after ``ids[end-1]``.

        ``cached``: tokens the model's cache holds now, prefix included (0: no cache, or a model that
        keeps none); ``fed``: text tokens already given to the model (the cache ends with
        ``ids[fed-1]``); ``end``: text tokens known now. Rules, in order: the new tokens
        ``ids[fed:end]`` fit the cache -> feed them; the whole text fits a window -> restart from
        ``prefix + ids[0:end]``; else re-prime from ``prefix + ids[end-prime:end]``.
        """
        if cached > 0 and cached + end - fed <= self.window:
            return Feed(fed, end, False)
        if self.n_prefix + end <= self.window:
            return Feed(0, end, True)
        return Feed(end - self.prime, end, True)
