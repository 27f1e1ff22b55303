"""ByteGPT's SlidingCache: the concatenated-cache forward it replaces, the float64 masked reference with
a window smaller than the context, bfloat16 buffers, and its argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bytegpt_reference import forward as reference_forward
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bytegpt_rope import rope_model

from entropykit.models import bytegpt
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig, SlidingCache, apply_rope, rope

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def concatenated(m: ByteGPT, x: torch.Tensor, piece: int, sink: bool, window: int) -> torch.Tensor:
    """The path SlidingCache replaced: ``ByteGPT.forward`` with a cache of concatenated tensors, cut by
    slicing (and the sink key re-rotated) before each piece that would overflow ``window``."""
    keep, head = window - piece, m.config.n_embd // m.config.n_head
    past, sink_kv, out = None, [], []
    for a in range(0, len(x), piece):
        b = min(a + piece, len(x))
        if past is not None and past[0][0].shape[2] + (b - a) > window:
            if sink:
                tables = rope(torch.tensor([a - keep]), head, m.config.rope_base)  # lo - 1, lo = a - keep + 1
                past = [
                    (torch.cat([apply_rope(k0, tables), k[:, :, -(keep - 1) :]], dim=2),
                     torch.cat([v0, v[:, :, -(keep - 1) :]], dim=2))
                    for (k0, v0), (k, v) in zip(sink_kv, past)
                ]
            else:
                past = [(k[:, :, -keep:], v[:, :, -keep:]) for k, v in past]
        logits, past = m(x[a:b][None], past, start=a)
        if a == 0:
            sink_kv = [(k[:, :, :1].clone(), v[:, :, :1].clone()) for k, v in past]
        out.append(logits[0])
    return torch.cat(out)


def inputs(n: int, seed: int) -> torch.Tensor:
    """BOS and ``n`` random bytes."""
    text = torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.cat([torch.tensor([BOS]), text])


def fed(m: ByteGPT, x: torch.Tensor, piece: int, sink: bool, window: int | None = None) -> torch.Tensor:
    cache = SlidingCache(m, piece, sink, window)
    return torch.cat([cache.feed(x[a : a + piece]) for a in range(0, len(x), piece)])


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 70),
    piece=st.integers(1, 14),
    sink=st.booleans(),
    window=st.sampled_from([16, 12, 9]),
    seed=st.integers(0, 3),
    query_block=st.sampled_from([1, 2, 3, 5, 256]),
)
def test_sliding_cache_computes_what_the_concatenated_cache_did(
    n: int, piece: int, sink: bool, window: int, seed: int, query_block: int
) -> None:
    """Also in query blocks smaller than the piece (``QUERY_BLOCK``: each block reads only the keys
    up to its last query), which the default of 256 takes only for pieces longer than 256."""
    piece = min(piece, window - 2)
    m = rope_model(block_size=16, n_embd=32, n_head=2, seed=seed)
    x = inputs(n, n)
    default = bytegpt.QUERY_BLOCK
    bytegpt.QUERY_BLOCK = query_block
    try:
        with torch.inference_mode():
            got, want = fed(m, x, piece, sink, window), concatenated(m, x, piece, sink, window)
    finally:
        bytegpt.QUERY_BLOCK = default
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("sink", [True, False])
@pytest.mark.parametrize("query_block", [2, 256])
def test_window_below_the_context_matches_the_masked_float64_reference(
    sink: bool, query_block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bytegpt, "QUERY_BLOCK", query_block)
    m = rope_model(block_size=32, n_embd=32, n_head=2)
    tokens = [BOS, *np.random.default_rng(5).integers(0, 256, 59).tolist()]
    window, piece = 12, 5
    with torch.inference_mode():
        got = fed(m, torch.tensor(tokens), piece, sink, window).double().numpy()
    t = len(tokens)
    allowed, sink_at = np.zeros((t, t), dtype=bool), np.full(t, -1)
    keep = window - piece
    for a in range(0, t, piece):  # the cache rule written out: which earlier inputs each query sees
        b = min(a + piece, t)
        lo = 0 if b <= window else a - (keep - 1 if sink else keep)
        for q in range(a, b):
            allowed[q, lo : q + 1] = True
            sink_at[q] = lo - 1 if sink and lo > 0 else -1
    want = reference_forward(m, tokens, allowed, sink_at if sink else None)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_one_piece_is_the_plain_forward_and_bfloat16_buffers_follow_autocast() -> None:
    m = rope_model(block_size=32, n_embd=32, n_head=2)
    x = inputs(20, 0)
    with torch.inference_mode():
        torch.testing.assert_close(SlidingCache(m, 21).feed(x), m(x[None])[0][0], atol=1e-5, rtol=1e-5)
        cache = SlidingCache(m, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = torch.cat([cache.feed(x[a : a + 8]) for a in range(0, 21, 8)]).float()
        assert cache._buffers[0].dtype == torch.bfloat16
        full = fed(m, x, 8, True)
    assert float((low.softmax(-1) - full.softmax(-1)).abs().max()) < 0.05


def test_arguments_are_checked() -> None:
    m = rope_model(block_size=16, n_embd=32, n_head=2)
    learned = ByteGPT(ByteGPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="rotary positions"):
        SlidingCache(learned, 4)
    with pytest.raises(ValueError, match="piece must be an int in \\[1, 14\\], got 15"):
        SlidingCache(m, 15)  # no room left for the sink and one kept token
    SlidingCache(m, 15, sink=False)
    with pytest.raises(ValueError, match="window must be an int in \\[2, 16\\], got 17"):
        SlidingCache(m, 4, window=17)
    with pytest.raises(ValueError, match="piece must be an int in \\[1, 6\\], got 7"):
        SlidingCache(m, 7, window=8)
    with pytest.raises(ValueError, match=r"idx must hold 1\.\.4 tokens"):
        SlidingCache(m, 4).feed(torch.zeros(5, dtype=torch.long))
