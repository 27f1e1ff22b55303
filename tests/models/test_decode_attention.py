"""The int8-KV decode-attention kernel: layout and quantisation exact against NumPy, output against
a float64 reference of the documented formula and against exact attention, masking, the portable
C path bit-identical to the AVX-512 one, validation, and a missing compiler."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.models.bytegpt import rope
from entropykit.models.kernels import decode_attention
from entropykit.models.kernels.decode_attention import BLOCK, HEAD_DIM, Int8KVCache

pytestmark = pytest.mark.skipif(
    not decode_attention.available(), reason=f"kernel unavailable: {decode_attention.unavailable_reason()}"
)


def bf16(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(torch.bfloat16)


def quantize_ref(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Absmax int8 quantisation in float32 NumPy, as documented: round(x * (127 / max|x|))."""
    x32 = x.float().numpy()
    amax = np.abs(x32).max(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    return np.rint(x32 * inv).astype(np.int64), (amax / np.float32(127)).astype(np.float32)[..., 0]


def cached(cache: Int8KVCache, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer keys and values (batch, heads, length, 32) read back through the documented layouts."""
    b, h = cache.batch, cache.heads
    k = cache.k[layer].permute(0, 1, 2, 4, 3, 5).reshape(b, h, cache.length, HEAD_DIM).numpy().astype(int)
    v = cache.v[layer].permute(0, 1, 2, 4, 3).reshape(b, h, cache.length, HEAD_DIM).numpy().astype(np.int64)
    return k - 128, v


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """float64 attention of the quantised q, k, v (the documented formula without the int16 weights)."""
    b, h = k.shape[:2]
    qi, qs = quantize_ref(q.view(b, h, HEAD_DIM))
    ki, ks = quantize_ref(k)
    vi, vs = quantize_ref(v)
    q64, k64 = qi * qs[..., None].astype(np.float64), ki * ks[..., None].astype(np.float64)
    s = np.einsum("bhc,bhjc->bhj", q64, k64)
    s /= np.sqrt(HEAD_DIM)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhj,bhjc->bhc", p, vi * vs[..., None].astype(np.float64)).reshape(b, h * HEAD_DIM)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 300, 512])
def test_store_quantises_into_the_documented_layout(n: int) -> None:
    cache = Int8KVCache(2, 3, 2, 512)
    k, v = bf16((3, 2, n, HEAD_DIM), n), bf16((3, 2, n, HEAD_DIM), n + 1, 3.0)
    cache.store(1, 512 - n, k, v)
    ki, vi = cached(cache, 1)
    rk, rks = quantize_ref(k)
    rv, rvs = quantize_ref(v)
    assert np.array_equal(ki[:, :, 512 - n :], rk) and np.array_equal(vi[:, :, 512 - n :], rv)
    assert np.array_equal(cache.k_scale[1, :, :, 512 - n :].numpy(), rks)
    assert np.array_equal(cache.v_scale[1, :, :, 512 - n :].numpy(), rvs)
    assert not cache.k[0].any() and not cache.v[0].any()  # other layer untouched


@pytest.mark.parametrize(("t", "scale"), [(1, 1.0), (5, 2.0), (64, 0.5), (200, 1.0), (511, 1.5)])
def test_attend_matches_float64_reference(t: int, scale: float) -> None:
    cache = Int8KVCache(1, 3, 4, 512)
    k, v = bf16((3, 4, t, HEAD_DIM), t, scale), bf16((3, 4, t, HEAD_DIM), t + 7)
    q = bf16((3, 4 * HEAD_DIM), t + 9, scale)
    cache.store(0, 0, k, v)
    out = cache.attend(0, t - 1, q)
    assert out.dtype == torch.bfloat16 and out.shape == (3, 4 * HEAD_DIM)
    ref = reference(q, k, v)
    # bf16 output rounding (2^-9 relative) plus the int16 weights (<= 2^-15 of the largest weight each)
    err = np.abs(out.double().numpy() - ref)
    assert err.max() <= 2.0**-8 * np.abs(ref).max() + 1e-3 * float(v.float().abs().max()), err.max()
    # and it is attention: close to the exact softmax(q k / sqrt(d)) v of the unquantised inputs
    exact = torch.nn.functional.scaled_dot_product_attention(
        q.double().view(3, 4, 1, HEAD_DIM), k.double(), v.double()
    ).reshape(3, -1)
    assert (out.double() - exact).abs().max() < 0.08 * float(v.float().abs().max())


def test_long_cache_shrinks_the_weights_and_stays_exact() -> None:
    """Past 516 slots the int16 weights shrink so that int32 sums cannot overflow."""
    cache = Int8KVCache(1, 1, 2, 2048)
    t = 2048
    k = bf16((1, 2, t, HEAD_DIM), 1, 0.2)
    v = torch.full((1, 2, t, HEAD_DIM), 1.0, dtype=torch.bfloat16)
    v[..., 1::2] = -1.0
    cache.store(0, 0, k, v)
    out = cache.attend(0, t - 1, torch.zeros(1, 2 * HEAD_DIM, dtype=torch.bfloat16))  # uniform weights
    assert torch.equal(out.float()[0, ::2], torch.ones(HEAD_DIM))
    assert torch.equal(out.float()[0, 1::2], -torch.ones(HEAD_DIM))
    q = bf16((1, 2 * HEAD_DIM), 5)
    err = np.abs(cache.attend(0, t - 1, q).double().numpy() - reference(q, k, v)).max()
    assert err < 1e-2


def test_slots_past_the_query_and_other_rows_do_not_matter() -> None:
    a, b = Int8KVCache(1, 2, 2, 256), Int8KVCache(1, 2, 2, 256)
    k, v = bf16((2, 2, 100, HEAD_DIM), 1), bf16((2, 2, 100, HEAD_DIM), 2)
    q = bf16((2, 2 * HEAD_DIM), 7)
    for c in (a, b):
        c.store(0, 0, k, v)
    # stale slots 100.. in b: keys aligned with q (scores far above the real ones), large values
    stale_k = (q.float().view(2, 2, 1, HEAD_DIM) * 30).expand(2, 2, 156, HEAD_DIM)
    stale_k = stale_k.to(torch.bfloat16).contiguous()
    b.store(0, 100, stale_k, bf16((2, 2, 156, HEAD_DIM), 4, 50.0))
    kb, vb = k.clone(), v.clone()
    kb[1], vb[1] = bf16((2, 100, HEAD_DIM), 5), bf16((2, 100, HEAD_DIM), 6)  # another row 1
    b.store(0, 0, kb, vb)
    for last in (0, 37, 63, 64, 98, 99):
        assert torch.equal(a.attend(0, last, q)[0], b.attend(0, last, q)[0])
    a.store(0, 0, stale_k[:, :, :100].contiguous(), v)  # and the test would see them
    assert not torch.equal(a.attend(0, 99, q)[0], b.attend(0, 99, q)[0])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="baseline build is for x86-64")
def test_portable_path_gives_the_same_bits_as_the_native_one() -> None:
    """-march=x86-64 compiles the portable C (no AVX-512, no VNNI): the bits must not change."""
    if decode_attention._build("x86-64")[0] is None:
        pytest.skip("baseline build failed")
    for t, length in ((1, 64), (77, 128), (512, 512), (1000, 1024)):
        native, portable = Int8KVCache(2, 3, 2, length), Int8KVCache(2, 3, 2, length, march="x86-64")
        k, v = bf16((3, 2, t, HEAD_DIM), t, 2.0), bf16((3, 2, t, HEAD_DIM), t + 1)
        q = bf16((3, 64), t + 2, 2.0)
        for c in (native, portable):
            c.store(1, 0, k, v)
        assert torch.equal(native.k, portable.k) and torch.equal(native.v, portable.v)
        assert torch.equal(native.k_scale, portable.k_scale) and torch.equal(native.v_scale, portable.v_scale)
        for last in {0, t // 2, t - 1}:
            x, y = native.attend(1, last, q), portable.attend(1, last, q)
            assert torch.equal(x.view(torch.int16), y.view(torch.int16))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.floats(0.01, 8.0), st.integers(0, 2**31 - 1))
def test_output_is_a_convex_combination_of_the_cached_values(t: int, scale: float, seed: int) -> None:
    cache = Int8KVCache(1, 1, 1, 256)
    k, v = bf16((1, 1, t, HEAD_DIM), seed, scale), bf16((1, 1, t, HEAD_DIM), seed + 1)
    q = bf16((1, 32), seed + 2, scale)
    cache.store(0, 0, k, v)
    out = cache.attend(0, t - 1, q).double().numpy()[0]
    vi, vs = quantize_ref(v)
    deq = (vi * vs[..., None])[0, 0]
    slack = 2.0**-8 * np.abs(deq).max() + 1e-6
    assert np.all(out >= deq.min(0) - slack) and np.all(out <= deq.max(0) + slack)


def test_zero_vectors_and_one_slot() -> None:
    cache = Int8KVCache(1, 1, 1, BLOCK)
    z = torch.zeros(1, 1, 1, HEAD_DIM, dtype=torch.bfloat16)
    cache.store(0, 0, z, z)
    assert not cache.attend(0, 0, torch.zeros(1, HEAD_DIM, dtype=torch.bfloat16)).float().any()
    v = bf16((1, 1, 1, HEAD_DIM), 3)
    cache.store(0, 0, z, v)  # one slot: the output is that value, quantised
    vi, vs = quantize_ref(v)
    out = cache.attend(0, 0, bf16((1, HEAD_DIM), 4)).double().numpy()[0]
    assert np.allclose(out, (vi * vs[..., None])[0, 0, 0], rtol=2.0**-8, atol=1e-6)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="length"):
        Int8KVCache(1, 1, 1, 100)
    with pytest.raises(ValueError, match="batch"):
        Int8KVCache(1, 0, 1, 64)
    cache = Int8KVCache(1, 2, 1, 64)
    k = torch.zeros(2, 1, 3, HEAD_DIM, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="k: expected a bfloat16"):
        cache.store(0, 0, k.float(), k)
    with pytest.raises(ValueError, match="v: expected shape"):
        cache.store(0, 0, k, k[:1])
    with pytest.raises(ValueError, match="start"):
        cache.store(0, 62, k, k)
    q = torch.zeros(2, HEAD_DIM, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="last"):
        cache.attend(0, 64, q)
    with pytest.raises(ValueError, match="q: expected shape"):
        cache.attend(0, 1, q[:, :16])


def test_missing_compiler_is_reported(without_compiler) -> None:
    without_compiler(decode_attention)
    assert not decode_attention.available()
    assert "no-such-cc" in decode_attention.unavailable_reason()
    with pytest.raises(RuntimeError, match="not available"):
        Int8KVCache(1, 1, 1, 64)


@pytest.mark.parametrize("position", [0, 63, 64, 300])
def test_step_is_store_then_attend(position: int) -> None:
    a, b = Int8KVCache(2, 3, 2, 512), Int8KVCache(2, 3, 2, 512)
    if position:
        k, v = bf16((3, 2, position, HEAD_DIM), 1), bf16((3, 2, position, HEAD_DIM), 2)
        a.store(1, 0, k, v)
        b.store(1, 0, k, v)
    qkv = bf16((3, 3 * 64), 3, 2.0)
    got = a.step(1, position, qkv)
    rows = qkv.view(3, 3, 2, 1, HEAD_DIM)  # (batch, q|k|v, heads, 1, 32)
    b.store(1, position, rows[:, 1], rows[:, 2])
    want = b.attend(1, position, qkv[:, :64])
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v) and torch.equal(a.k_scale, b.k_scale)
    with pytest.raises(ValueError, match="position"):
        a.step(1, 512, qkv)
    with pytest.raises(ValueError, match="qkv: expected shape"):
        a.step(1, 0, qkv[:, :64])


def test_unwritable_cache_is_reported(monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ENTROPYKIT_CACHE_DIR", str(blocker))
    decode_attention._build.cache_clear()
    try:
        assert not decode_attention.available()
        assert "ENTROPYKIT_CACHE_DIR" in decode_attention.unavailable_reason()
    finally:
        monkeypatch.undo()
        decode_attention._build.cache_clear()
    assert decode_attention.available()


def ring_steps(cache: Int8KVCache, window: int, start: int, qkv: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor, sink: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """steps_rope's documented meaning: one step_rope per position with the ring's slot rule."""
    out = []
    for i in range(qkv.shape[0]):
        p = start + i
        s = (*sink, cos[max(0, p - window + 1)], sin[max(0, p - window + 1)]) if p >= window else None
        out.append(cache.step_rope(0, 1 + (p - 1) % (window - 1), min(p, window - 1), qkv[i],
                                   (cos[p], sin[p]), s))
    return torch.stack(out)


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 128), st.integers(1, 300), st.integers(1, 70), st.integers(0, 2**16))
def test_steps_rope_is_consecutive_step_ropes(window: int, start: int, n: int, seed: int) -> None:
    length = -(-window // BLOCK) * BLOCK
    a, b = Int8KVCache(1, 2, 3, length), Int8KVCache(1, 2, 3, length)
    for c in (a, b):  # a full cache to start from
        c.store(0, 0, bf16((2, 3, length, HEAD_DIM), seed, 2.0), bf16((2, 3, length, HEAD_DIM), seed + 1))
    qkv = bf16((n, 2, 3 * 96), seed + 2, 2.0)
    sink = (bf16((2, 96), seed + 3), bf16((2, 96), seed + 4))
    cos, sin = (t.contiguous() for t in rope(torch.arange(start + n), HEAD_DIM))
    want = ring_steps(b, window, start, qkv, cos, sin, sink)
    rows = [max(0, p - window + 1) for p in range(start, start + n)]
    got = a.steps_rope(0, window, start, qkv, (cos[start:], sin[start:]), (*sink, cos[rows], sin[rows]))
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v)
    assert torch.equal(a.k_scale, b.k_scale) and torch.equal(a.v_scale, b.v_scale)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="baseline build is for x86-64")
def test_steps_rope_portable_path_gives_the_same_bits() -> None:
    if decode_attention._build("x86-64")[0] is None:
        pytest.skip("baseline build failed")
    native, portable = Int8KVCache(1, 2, 2, 128), Int8KVCache(1, 2, 2, 128, march="x86-64")
    qkv, sink = bf16((150, 2, 192), 1, 2.0), (bf16((2, 64), 2), bf16((2, 64), 3))
    cos, sin = (t.contiguous() for t in rope(torch.arange(151), HEAD_DIM))
    rows = [max(0, p - 100 + 1) for p in range(1, 151)]
    x, y = (c.steps_rope(0, 100, 1, qkv, (cos[1:], sin[1:]), (*sink, cos[rows], sin[rows]))
            for c in (native, portable))
    assert torch.equal(x.view(torch.int16), y.view(torch.int16))


def test_steps_rope_bad_arguments_are_named() -> None:
    cache = Int8KVCache(1, 2, 1, 64)
    qkv = torch.zeros(3, 2, 96, dtype=torch.bfloat16)
    t = torch.zeros(3, HEAD_DIM)
    sink = (torch.zeros(2, 32, dtype=torch.bfloat16),) * 2
    with pytest.raises(ValueError, match="qkv: expected shape"):
        cache.steps_rope(0, 10, 1, qkv[:, :1], (t, t), (*sink, t, t))
    with pytest.raises(ValueError, match=r"window: expected 3\.\.64, got 65"):
        cache.steps_rope(0, 65, 1, qkv, (t, t), (*sink, t, t))
    with pytest.raises(ValueError, match="start"):
        cache.steps_rope(0, 10, 0, qkv, (t, t), (*sink, t, t))
    with pytest.raises(ValueError, match="sink cos: expected \\(3, 32\\)"):
        cache.steps_rope(0, 10, 1, qkv, (t, t), (*sink, t[:2], t))
    with pytest.raises(ValueError, match="sink v: expected shape"):
        cache.steps_rope(0, 10, 1, qkv, (t, t), (sink[0], sink[1][:1], t, t))
