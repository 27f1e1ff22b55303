"""entropykit.models.stream: the strided windows against the transformers guide's loop (with the
prefix prepended to each window), coverage and context properties, and the re-prime schedule
simulated token by token against the windows it claims to evaluate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.models.stream import (
    BATCH_LOGIT_BYTES,
    BATCH_TOKENS,
    Feed,
    Reprime,
    Window,
    batch_windows,
    default_stride,
    n_windows,
    windows,
)


def transformers_loop(n: int, context: int, n_prefix: int, stride: int) -> list[tuple[int, int, int]]:
    """The loop of "Perplexity of fixed-length models": windows ids[begin:end] of W + 1 tokens start
    every ``stride``; each scores the targets the previous one did not reach. With the prefix
    prepended the window's input is prefix + ids[begin:end-1] (the last token's logits are unused)."""
    width = context - n_prefix
    out, prev_end = [], 0 if n_prefix else 1
    for begin in range(0, n, stride):
        end = min(begin + width + 1, n)
        if end > prev_end:
            out.append((begin, prev_end, end))
        prev_end = end
        if end == n:
            break
    return out


sizes = st.tuples(st.integers(0, 80), st.integers(1, 14), st.integers(0, 2))


@settings(max_examples=80, deadline=None)
@given(sizes, st.data())
def test_windows_are_the_transformers_loop_with_a_prefix(
    size: tuple[int, int, int], data: st.DataObject
) -> None:
    n, ctx, p = size
    if ctx <= p:
        with pytest.raises(ValueError, match="context"):
            list(windows(n, ctx, p))
        return
    width = ctx - p
    stride = data.draw(st.integers(1, width))
    got = list(windows(n, ctx, p, stride))
    assert [tuple(w) for w in got] == transformers_loop(n, ctx, p, stride)
    assert n_windows(n, ctx, p, stride) == len(got)
    # every target once, in order; inputs within the context; later targets keep W + 1 - stride history
    assert [t for w in got for t in range(w.first, w.end)] == list(range(0 if p else 1, n))
    for k, w in enumerate(got):
        assert w.start == k * stride and w.first < w.end
        assert w.start < w.first or (k == 0 and p > 0 and w.first == 0)
        assert w.n_inputs(p) <= ctx
        rows = w.rows(p)
        assert rows.stop - rows.start == w.end - w.first and rows.start >= 0 and rows.stop <= w.n_inputs(p)
        if k:
            assert w.first - w.start >= width + 1 - stride


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(2, 12), st.integers(0, 2), st.data())
def test_a_tokens_window_does_not_depend_on_the_text_length(
    n: int, extra: int, ctx: int, p: int, data: st.DataObject
) -> None:
    if ctx <= p:
        return
    stride = data.draw(st.integers(1, ctx - p))
    short, long = windows(n, ctx, p, stride), windows(n + extra, ctx, p, stride)
    where_short = {t: w.start for w in short for t in range(w.first, w.end)}
    where_long = {t: w.start for w in long for t in range(w.first, w.end)}
    assert all(where_long[t] == a for t, a in where_short.items())


def simulate(schedule: Reprime, n: int) -> dict[int, list[int]]:
    """Feed a text one token at a time as a KV-cached decoder does; return, for each target t, the
    text positions in the cache when ids[t] is predicted (the prefix is implicit)."""
    cache: list[int] = []
    cached = fed = 0
    seen = {}
    for t in range(0 if schedule.n_prefix else 1, n):
        f = schedule.feed(cached, fed, t)
        assert isinstance(f, Feed) and 0 <= f.start <= f.end == t
        if f.restart:
            cache, cached = list(range(f.start, f.end)), schedule.n_prefix + f.end - f.start
        else:
            assert f.start == fed
            cache += range(f.start, f.end)
            cached += f.end - f.start
        assert cached == schedule.n_prefix + len(cache) <= schedule.window
        fed = t
        seen[t] = list(cache)
    return seen


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 70), st.integers(2, 14), st.integers(0, 2), st.data())
def test_reprime_schedule_evaluates_the_strided_windows(
    n: int, window: int, p: int, data: st.DataObject
) -> None:
    if window <= p:
        with pytest.raises(ValueError, match="context"):
            Reprime(window, 1, p)
        return
    prime = data.draw(st.integers(1, window - p))
    sched = Reprime(window, prime, p)
    seen = simulate(sched, n)
    want = {
        t: list(range(w.start, t)) for w in windows(n, window, p, sched.stride) for t in range(w.first, w.end)
    }
    assert seen == want


def test_reprime_restarts_with_the_prefix_and_the_last_prime_tokens() -> None:
    s = Reprime(window=8, prime=3, n_prefix=1)
    assert s.feed(0, 0, 0) == Feed(0, 0, True)  # a fresh stream: prime on BOS alone
    assert s.feed(1, 0, 1) == Feed(0, 1, False)
    assert s.feed(8, 7, 8) == Feed(5, 8, True)  # full: BOS + ids[5:8] (the newest token included)
    assert s.feed(0, 4, 12) == Feed(9, 12, True)  # no cache (a cache-less model) and too long
    assert s.feed(0, 4, 6) == Feed(0, 6, True)  # no cache but the text fits: the whole text
    assert s.stride == 8 - 1 + 1 - 3


def test_batch_windows_takes_about_batch_tokens_within_the_logit_budget() -> None:
    assert BATCH_TOKENS == 2048 and BATCH_LOGIT_BYTES == 1 << 26
    assert [batch_windows(c, 257) for c in (16, 512, 1024, 2048, 4096)] == [128, 4, 2, 1, 1]
    rows = BATCH_LOGIT_BYTES // (4 * 50257)  # 333 rows of GPT-2's logits fit the budget
    assert batch_windows(64, 50257) == rows // 64 == 5 and batch_windows(1024, 50257) == 1
    with pytest.raises(ValueError, match="context must be an int >= 1, got 0"):
        batch_windows(0, 257)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        batch_windows(16, 2.0)  # type: ignore[arg-type]


def test_default_stride_and_errors() -> None:
    assert default_stride(512, 1) == 256 and default_stride(512, 0) == 256 and default_stride(2, 1) == 1
    assert list(windows(0, 4, 1)) == [] and list(windows(1, 4, 0)) == [] and n_windows(1, 4, 0) == 0
    assert list(windows(1, 4, 1)) == [Window(0, 0, 1)]
    with pytest.raises(ValueError, match=r"stride must be an int in \[1, 3\], got 4"):
        list(windows(10, 4, 1, 4))
    with pytest.raises(ValueError, match="stride must be an int in"):
        n_windows(10, 4, 1, 0)
    with pytest.raises(TypeError, match="stride must be an int"):
        list(windows(10, 4, 1, 2.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        list(windows(-1, 4, 1))
    with pytest.raises(ValueError, match="context must be > n_prefix = 1"):
        list(windows(5, 1, 1))
    with pytest.raises(ValueError, match=r"prime must be an int in \[1, 3\], got 4"):
        Reprime(4, 4, 1)
    with pytest.raises(TypeError, match="prime"):
        Reprime(4, True, 1)


@pytest.mark.parametrize("prime", [1, 6, 15])
def test_kv_cached_reprime_stream_equals_strided_scoring(prime: int) -> None:
    """A tiny ByteGPT driven one token at a time through its KV cache by ``Reprime`` (the codec's and
    generation's loop) gives the surprisals ``lm.score`` computes with ``stride = Reprime.stride``."""
    import numpy as np
    import torch

    from entropykit.lm import score
    from entropykit.models import ByteModel
    from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig

    torch.manual_seed(0)
    lm = ByteModel(ByteGPT(ByteGPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=16)), "tiny")
    ids = list(b"a text of sixty-odd bytes, long enough for several windows.")
    sched = Reprime(lm.max_context, prime, len(lm.prefix_ids))
    bos = torch.tensor([lm.prefix_ids])
    surprisal, past, cached = [], None, 0
    for t in range(len(ids)):
        f = sched.feed(cached, max(t - 1, 0), t)
        if f.restart:
            logits, past = lm.forward(torch.cat([bos, torch.tensor([ids[f.start : f.end]])], 1).long())
            cached = 1 + f.end - f.start
        else:
            logits, past = lm.forward(torch.tensor([ids[f.start : f.end]]), past)
            cached += f.end - f.start
        lp = torch.log_softmax(logits[0, -1].double(), -1)
        surprisal.append(-float(lp[ids[t]]) / np.log(2))
    r = score(bytes(ids), lm, stride=sched.stride)
    np.testing.assert_allclose(r.surprisal_bits, surprisal, rtol=1e-5, atol=1e-5)
