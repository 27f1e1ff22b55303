"""The float32 piece-attention kernel: against a float64 reference of the formula (at the bundled
model's shapes as close to it as ``F.scaled_dot_product_attention`` is), the end-aligned causal
rule, extreme scores, strided inputs, the fused rotation bit for bit against ``apply_rope``,
thread-count independence, the portable C path, argument checks, and a missing compiler
(SlidingCache then falls back to SDPA)."""

from __future__ import annotations

import math
import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bytegpt_rope import rope_model

from entropykit.models.bytegpt import BOS, SlidingCache, apply_rope, rope
from entropykit.models.kernels import piece_attention
from entropykit.models.kernels.piece_attention import HEAD_DIM, attend, attend_rope

pytestmark = pytest.mark.skipif(
    not piece_attention.available(), reason=f"kernel unavailable: {piece_attention.unavailable_reason()}"
)


def rand(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: int) -> np.ndarray:
    """float64 softmax(q k^T / sqrt(d)) v, query i seeing keys 0..n + i, as (t, h, d)."""
    q64, k64, v64 = (x.double().numpy() for x in (q, k, v))
    t, length = q.shape[1], k.shape[1]
    s = np.einsum("htc,hjc->htj", q64, k64) / math.sqrt(HEAD_DIM)
    allowed = np.arange(length)[None, :] <= n + np.arange(t)[:, None]
    s = np.where(allowed[None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("htj,hjc->thc", p, v64)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: int) -> np.ndarray:
    t = q.shape[1]
    mask = torch.ones(t, n + t, dtype=torch.bool).tril(diagonal=n)
    return (
        F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)[0].transpose(0, 1).numpy()
    )


@settings(max_examples=40, deadline=None)
@given(
    heads=st.integers(1, 5),
    t=st.integers(1, 40),
    n=st.integers(0, 90),
    scale=st.sampled_from([0.1, 1.0, 4.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_the_float64_formula(
    heads: int, t: int, n: int, scale: float, seed: int
) -> None:
    """Every shape class: t below, at and past a block of 8 queries, key counts off the 16/64 grid.
    Within float32 rounding of the formula (scores of up to ~100 included: each score's dot product
    is one chain of 32 fused multiply-adds, so its error, scaled into the exponent, dominates)."""
    q, k, v = (
        rand((heads, t, HEAD_DIM), seed, scale),
        rand((heads, n + t, HEAD_DIM), seed + 1, scale),
        rand((heads, n + t, HEAD_DIM), seed + 2),
    )
    want = reference(q, k, v, n)
    got = attend(q, k, v, n).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("t", "n"), [(512, 512), (1024, 0), (256, 768), (7, 1000)])
def test_the_bundled_models_shapes(t: int, n: int) -> None:
    q, k, v = (
        rand((8, t, HEAD_DIM), 1, 2.0),
        rand((8, n + t, HEAD_DIM), 2, 2.0),
        rand((8, n + t, HEAD_DIM), 3),
    )
    want = reference(q, k, v, n)
    got = attend(q, k, v, n).numpy()
    assert np.abs(got - want).max() <= 2 * np.abs(sdpa(q, k, v, n) - want).max() + 2e-6


def test_extreme_scores_underflow_to_zero_weights() -> None:
    """Score gaps far past exp's float32 range: the dominant key takes all the weight, the others
    exactly none (no NaN, no 2^-126 floor leaking in); a constant row gives equal weights."""
    q = torch.zeros(2, 3, HEAD_DIM)
    k = torch.zeros(2, 3, HEAD_DIM)
    q[0, :, 0] = 100.0
    k[0, 1, 0] = 100.0  # score 100 * 100 / sqrt(32) = 1768 above the others for queries 1 and 2
    v = torch.arange(3.0)[None, :, None].expand(2, 3, HEAD_DIM).contiguous()
    out = attend(q, k, v, 0)
    assert out[:, 0, 0].tolist() == [0.0, 1.0, 1.0]
    assert out[:, 1, 0].tolist() == [0.0, 0.5, 1.0]  # head 1: all scores 0, uniform over the visible keys
    assert torch.isfinite(out).all()


def test_strided_views_and_an_output_buffer() -> None:
    """Keys and values read in place from a larger cache (head stride past the used slots), queries
    from a permuted view, the result written into a view of a (t, h * d) buffer."""
    h, t, n, window = 3, 9, 20, 64
    cache = rand((2, h, window, HEAD_DIM), 4)
    k, v = cache[0, :, : n + t], cache[1, :, : n + t]
    q = rand((t, h, HEAD_DIM), 5).transpose(0, 1)  # (h, t, d), head stride 32, token stride 96
    buf = torch.full((t, h * HEAD_DIM), float("nan"))
    out = attend(q, k, v, n, out=buf.view(t, h, HEAD_DIM))
    assert out.data_ptr() == buf.data_ptr()
    np.testing.assert_allclose(buf.view(t, h, HEAD_DIM).numpy(), reference(q, k, v, n), atol=2e-5, rtol=1e-5)


def test_threads_do_not_change_the_bits() -> None:
    q, k, v = rand((8, 100, HEAD_DIM), 6), rand((8, 300, HEAD_DIM), 7), rand((8, 300, HEAD_DIM), 8)
    one = attend(q, k, v, 200, threads=1)
    for threads in (2, 3, 8, 64):
        assert torch.equal(attend(q, k, v, 200, threads=threads), one)


def test_fused_rotation_is_apply_rope_bit_for_bit() -> None:
    """attend_rope: rotated keys and copied values land in slots n..n+t-1 (earlier slots untouched),
    bit-identical to apply_rope, and the output is attend's on the rotated queries, bit for bit."""
    h, t, n, window = 4, 13, 30, 64
    qkv = rand((t, 3, h, HEAD_DIM), 9, 3.0)
    tables = rope(torch.arange(n + 1000, n + 1000 + t), HEAD_DIM)  # far positions: large angles
    cache = rand((2, h, window, HEAD_DIM), 10)
    before = cache.clone()
    out = attend_rope(qkv, tables, cache[0, :, : n + t], cache[1, :, : n + t], n)
    q, kn = (apply_rope(qkv[:, i].transpose(0, 1), tables) for i in (0, 1))  # (h, t, d)
    assert torch.equal(cache[0, :, n : n + t], kn)
    assert torch.equal(cache[1, :, n : n + t], qkv[:, 2].transpose(0, 1))
    assert torch.equal(cache[:, :, :n], before[:, :, :n]) and torch.equal(
        cache[:, :, n + t :], before[:, :, n + t :]
    )
    assert torch.equal(out, attend(q, cache[0, :, : n + t], cache[1, :, : n + t], n))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 builds")
@pytest.mark.parametrize("march", ["x86-64", "x86-64-v3"])
def test_portable_and_avx2_paths_agree(march: str) -> None:
    """-march=x86-64 (SSE2 only) and x86-64-v3 (AVX2 + FMA) compile the 8-lane tiles and the portable
    2^x (exponent bits, clamped): within float32 rounding of the native build and of the formula,
    over several blocks, a partial block and tiles cut by the causal edge."""
    q = rand((3, 37, HEAD_DIM), 11, 3.0)
    k, v = rand((3, 137, HEAD_DIM), 12, 3.0), rand((3, 137, HEAD_DIM), 13)
    native = attend(q, k, v, 100)
    other = attend(q, k, v, 100, march=march)
    torch.testing.assert_close(other, native, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(other.numpy(), reference(q, k, v, 100), atol=2e-5, rtol=1e-5)
    qkv, tables = rand((37, 3, 3, HEAD_DIM), 14), rope(torch.arange(100, 137), HEAD_DIM)
    a = rand((2, 3, 137, HEAD_DIM), 15)
    b = a.clone()
    attend_rope(qkv, tables, a[0], a[1], 100)
    attend_rope(qkv, tables, b[0], b[1], 100, march=march)
    assert torch.equal(a, b)  # the rotation is exact in every build


def test_arguments_are_checked() -> None:
    q, k = torch.zeros(2, 3, HEAD_DIM), torch.zeros(2, 5, HEAD_DIM)
    with pytest.raises(TypeError, match=r"q must be a float32 tensor, got dtype torch\.float64"):
        attend(q.double(), k, k, 2)
    with pytest.raises(ValueError, match=r"k must be a CPU tensor of shape \(2, 5, 32\)"):
        attend(q, k[:, :4], k, 2)
    with pytest.raises(ValueError, match=r"q must be a tensor of shape \(heads, t, 32\), got \(2, 3\)"):
        attend(q[:, :, 0], k, k, 2)
    with pytest.raises(
        ValueError, match=r"q must be a CPU tensor of shape \(2, 3, 32\) with unit last stride"
    ):
        attend(torch.zeros(2, 3, 16), k, k, 2)
    with pytest.raises(ValueError, match="n must be an int >= 0, got -1"):
        attend(q, k, k, -1)
    with pytest.raises(ValueError, match=r"n \+ t must be in 1\.\.16384"):
        attend(q, torch.zeros(2, 16385, HEAD_DIM), torch.zeros(2, 16385, HEAD_DIM), 16382)
    with pytest.raises(ValueError, match=r"out must be a CPU tensor of shape \(3, 2, 32\)"):
        attend(q, k, k, 2, out=torch.zeros(2, 3, HEAD_DIM))
    with pytest.raises(ValueError, match="must not require grad"):
        attend(q.requires_grad_(), k, k, 2)
    qkv = torch.zeros(3, 3, 2, HEAD_DIM)
    tables = rope(torch.arange(3), HEAD_DIM)
    with pytest.raises(ValueError, match=r"qkv must be a tensor of shape \(t, 3, heads, 32\)"):
        attend_rope(qkv[:, :2], tables, k, k, 2)
    with pytest.raises(ValueError, match=r"tables\[1\] must be a CPU tensor of shape \(3, 32\)"):
        attend_rope(qkv, (tables[0], tables[1][:2]), k, k, 2)


def test_sliding_cache_uses_the_kernel_and_agrees_with_sdpa() -> None:
    """A head size of 32: float32 inference goes through the kernel; its logits are those of the
    SDPA path within float32 rounding, and the first layer's cached keys are the same bits."""
    m = rope_model(block_size=48, n_embd=64, n_head=2)
    x = torch.cat(
        [torch.tensor([BOS]), torch.randint(0, 256, (100,), generator=torch.Generator().manual_seed(3))]
    )
    fused, plain = SlidingCache(m, 16), SlidingCache(m, 16, fused=False)
    assert fused.fused and not plain.fused
    calls = []
    real = piece_attention.attend_rope

    def counted(*args: object, **kw: object) -> torch.Tensor:
        calls.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(piece_attention, "attend_rope", counted)
        got = torch.cat([fused.feed(x[a : a + 16]) for a in range(0, len(x), 16)])
        want = torch.cat([plain.feed(x[a : a + 16]) for a in range(0, len(x), 16)])
    assert len(calls) == 2 * 7  # two layers, seven pieces
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    assert torch.equal(fused._buffers[0][0, 0], plain._buffers[0][0, 0])


def test_missing_compiler_falls_back_to_sdpa(without_compiler) -> None:
    without_compiler(piece_attention)
    assert not piece_attention.available()
    assert "no-such-cc" in piece_attention.unavailable_reason()
    with pytest.raises(RuntimeError, match="piece-attention kernel is not available"):
        attend(torch.zeros(1, 1, HEAD_DIM), torch.zeros(1, 1, HEAD_DIM), torch.zeros(1, 1, HEAD_DIM), 0)
    m = rope_model(block_size=48, n_embd=64, n_head=2)
    cache = SlidingCache(m, 8)
    assert not cache.fused
    with torch.inference_mode():
        assert torch.isfinite(cache.feed(torch.tensor([BOS, 1, 2]))).all()
