"""ops.attention_entropy against eager attention (float64), its gradient against autograd, properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.ops import attention_entropy


def eager_entropy(q, k, mask=None, causal=False, scale=None):
    """Entropy of softmax(q k^T * scale + mask) in float64, built the plain way (the full T x T)."""
    q, k = q.double(), k.double()
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = q @ k.transpose(-1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    allowed = torch.ones_like(s, dtype=torch.bool)
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            s = s + mask.double()
    if causal:
        tq, tk = s.shape[-2:]
        allowed = allowed & torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
    s = s.masked_fill(~allowed, -1e300)
    has_key = allowed.any(-1)
    s = torch.where(has_key[..., None], s, torch.zeros_like(s))
    lp = torch.log_softmax(s, -1)
    h = -torch.where(allowed, lp.exp() * lp, torch.zeros_like(lp)).sum(-1)
    return torch.where(has_key, h, torch.zeros_like(h)), has_key


CASES = [  # B, H, Hk, Tq, Tk, D, causal, block
    (2, 3, 3, 7, 7, 5, True, 3),
    (2, 4, 2, 5, 11, 8, True, 4),  # grouped-query keys, queries are the last 5 of 11 positions
    (1, 2, 1, 33, 33, 16, False, 8),
    (2, 2, 2, 1, 9, 4, True, 2),  # one new query over a cache
    (1, 1, 1, 13, 13, 3, True, 64),  # one block holds everything
    (2, 2, 2, 6, 6, 4, False, 1),  # one key per block
]


def _inputs(b, h, hk, tq, tk, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, h, tq, d, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    k = (torch.randn(b, hk, tk, d, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    return q, k


def _masks(b, h, tq, tk, seed=1):
    g = torch.Generator().manual_seed(seed)
    padding = torch.ones(b, 1, 1, tk, dtype=torch.bool)
    padding[-1, ..., : tk // 3] = False  # left padding of the last row
    return [
        None,
        padding,
        torch.rand(b, 1, tq, tk, generator=g) > 0.4,
        torch.randn(b, h, tq, tk, generator=g),  # additive float bias
    ]


@pytest.mark.parametrize("case", CASES)
def test_matches_eager_float32_and_its_gradient(case) -> None:
    b, h, hk, tq, tk, d, causal, block = case
    q, k = _inputs(b, h, hk, tq, tk, d)
    for mask in _masks(b, h, tq, tk):
        ent, valid = attention_entropy(
            q, k, attn_mask=mask, is_causal=causal, block_size=block, return_valid=True
        )
        ref, has_key = eager_entropy(q, k, mask, causal)
        assert ent.dtype == torch.float32 and ent.shape == (b, h, tq)
        torch.testing.assert_close(ent.double(), ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(valid, has_key)
        g = torch.randn(ent.shape, generator=torch.Generator().manual_seed(2))
        dq, dk = torch.autograd.grad((ent * g).sum(), (q, k))
        rq, rk = torch.autograd.grad((ref * g.double()).sum(), (q, k))
        torch.testing.assert_close(dq.double(), rq.double(), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(dk.double(), rk.double(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_float64_is_exact(case) -> None:
    b, h, hk, tq, tk, d, causal, block = case
    q, k = _inputs(b, h, hk, tq, tk, d, dtype=torch.float64)
    mask = _masks(b, h, tq, tk)[1]
    ent = attention_entropy(q, k, attn_mask=mask, is_causal=causal, block_size=block)
    ref, _ = eager_entropy(q, k, mask, causal)
    torch.testing.assert_close(ent, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck(causal: bool) -> None:
    q, k = _inputs(1, 2, 1, 3, 5, 2, dtype=torch.float64)
    mask = _masks(1, 2, 3, 5)[2]
    assert torch.autograd.gradcheck(
        lambda a, c: attention_entropy(a, c, attn_mask=mask, is_causal=causal, block_size=2), (q, k)
    )


@pytest.mark.parametrize("case", CASES)
def test_fused_method_matches_eager(case) -> None:
    b, h, hk, tq, tk, d, causal, _ = case
    q, k = _inputs(b, h, hk, tq, tk, d)
    with torch.no_grad():
        for mask in _masks(b, h, tq, tk):
            ent, valid = attention_entropy(
                q, k, attn_mask=mask, is_causal=causal, method="fused", return_valid=True
            )
            ref, has_key = eager_entropy(q, k, mask, causal)
            torch.testing.assert_close(ent.double(), ref, atol=2e-5, rtol=1e-5)
            assert torch.equal(valid, has_key)


def test_fused_method_with_autograd_is_the_exact_path() -> None:
    q, k = _inputs(1, 2, 2, 6, 6, 4)
    fused = attention_entropy(q, k, is_causal=True, method="fused")  # q requires grad: blocked runs
    blocked = attention_entropy(q, k, is_causal=True)
    assert torch.equal(fused, blocked) and fused.requires_grad
    with pytest.raises(ValueError, match="method must be one of 'blocked', 'fused', got 'eager'"):
        attention_entropy(q, k, method="eager")


def test_large_scores_keep_precision() -> None:
    """Scores of order 1e3 (peaked attention): H stays exact because c is kept relative to the max."""
    q, k = _inputs(1, 2, 2, 9, 9, 4, dtype=torch.float32)
    q = (q.detach() * 60).requires_grad_()
    ent = attention_entropy(q, k, is_causal=True, block_size=2)
    ref, _ = eager_entropy(q, k, None, True)
    torch.testing.assert_close(ent.double(), ref, atol=1e-5, rtol=1e-4)
    assert bool((ent >= 0).all())


def test_rows_without_keys_are_zero_with_zero_gradient() -> None:
    q, k = _inputs(1, 1, 1, 4, 4, 3)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 2, :] = False
    ent, valid = attention_entropy(q, k, attn_mask=mask, return_valid=True)
    assert valid.tolist() == [[[True, True, False, True]]]
    assert ent[0, 0, 2].item() == 0.0
    (dq,) = torch.autograd.grad(ent.sum(), (q,))
    assert torch.equal(dq[0, 0, 2], torch.zeros(3))


def test_base_bf16_and_scale() -> None:
    q, k = _inputs(1, 2, 2, 5, 5, 4)
    nats = attention_entropy(q, k, is_causal=True)
    torch.testing.assert_close(attention_entropy(q, k, is_causal=True, base=2), nats / math.log(2))
    scaled = attention_entropy(q, k, scale=0.3)
    torch.testing.assert_close(scaled.double(), eager_entropy(q, k, scale=0.3)[0], atol=1e-5, rtol=1e-5)
    hb = attention_entropy(q.detach().bfloat16(), k.detach().bfloat16(), is_causal=True)
    ref, _ = eager_entropy(q.detach().bfloat16(), k.detach().bfloat16(), None, True)
    assert hb.dtype == torch.float32
    torch.testing.assert_close(hb.double(), ref, atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 3),
    tq=st.integers(1, 9),
    extra=st.integers(0, 4),
    d=st.integers(1, 6),
    causal=st.booleans(),
    block=st.integers(1, 10),
    seed=st.integers(0, 10_000),
)
def test_property_equals_eager_and_is_bounded(b, h, tq, extra, d, causal, block, seed) -> None:
    tk = tq + extra
    q, k = _inputs(b, h, h, tq, tk, d, seed=seed)
    mask = torch.rand(b, 1, tq, tk, generator=torch.Generator().manual_seed(seed)) > 0.3
    ent, valid = attention_entropy(
        q, k, attn_mask=mask, is_causal=causal, block_size=block, return_valid=True
    )
    ref, has_key = eager_entropy(q, k, mask, causal)
    torch.testing.assert_close(ent.double(), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(valid, has_key)
    # 0 <= H <= log(number of keys a query may attend to)
    allowed = mask.expand(b, h, tq, tk)
    if causal:
        allowed = allowed & torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
    n = allowed.sum(-1).clamp(min=1).double()
    assert bool((ent.double() >= -1e-6).all()) and bool((ent.double() <= n.log() + 1e-5).all())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"q": torch.zeros(2, 3, 4)}, ValueError, "q and k must have shape"),
        ({"k": torch.zeros(1, 3, 5, 4)}, ValueError, "Hk dividing H=2"),
        ({"q": torch.zeros(1, 2, 5, 4, dtype=torch.long)}, TypeError, "q must be a floating-point"),
        ({"attn_mask": torch.ones(3, 5, dtype=torch.bool)}, ValueError, "attn_mask must broadcast"),
        ({"attn_mask": torch.ones(5, 5, dtype=torch.long)}, TypeError, "attn_mask must be a bool or float"),
        ({"block_size": 0}, ValueError, "block_size must be an int >= 1, got 0"),
        ({"scale": -1.0}, ValueError, "scale must be a positive"),
        ({"base": 1}, ValueError, "base must be a positive number other than 1"),
    ],
)
def test_bad_input(kwargs, error, match) -> None:
    args = {"q": torch.zeros(1, 2, 5, 4), "k": torch.zeros(1, 2, 5, 4)} | kwargs
    with pytest.raises(error, match=match):
        attention_entropy(args.pop("q"), args.pop("k"), **args)
