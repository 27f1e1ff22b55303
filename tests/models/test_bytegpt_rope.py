"""ByteGPT with rotary positions: the rotation, the model, its fast step, and the learned-position
models (old configs) computing what they computed before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bytegpt_reference import forward as reference_forward
from bytegpt_reference import ring_reference, rotate
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.models import ByteModel, load_model
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig, apply_rope, rope
from entropykit.models.bytegpt_step import ByteGPTStepper, int8kv_unavailable, step_precisions
from entropykit.models.kernels import decode_attention
from entropykit.models.kernels.decode_attention import Int8KVCache

needs_kernel = pytest.mark.skipif(
    not decode_attention.available(), reason=f"no int8-KV kernel: {decode_attention.unavailable_reason()}"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def rope_model(block_size: int = 48, n_embd: int = 64, n_head: int = 2, seed: int = 0) -> ByteGPT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = ByteGPT(ByteGPTConfig(block_size, 2, n_head, n_embd, positions="rope")).eval()
        with torch.no_grad():  # larger weights than the init, so attention is far from uniform
            for name, p in m.named_parameters():
                if "qkv" in name and p.dim() == 2:
                    p.mul_(8.0)
    return m


def test_rotation_matches_the_complex_form_and_transformers() -> None:
    x = torch.randn(2, 3, 7, 16, dtype=torch.float64)
    pos = torch.tensor([0, 1, 5, 99, 1000, 4095, 123456])
    got = apply_rope(x.float(), rope(pos, 16)).double()
    want = rotate(x.numpy(), pos.numpy())
    np.testing.assert_allclose(got.numpy(), want, atol=2e-5)
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    cos, sin = rope(pos, 16)
    q, _ = apply_rotary_pos_emb(x.float(), x.float(), cos[None], sin[None])
    np.testing.assert_allclose(q.numpy(), got.float().numpy(), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(0, 5000), n=st.integers(0, 5000), shift=st.integers(0, 100_000))
def test_rotary_scores_depend_only_on_the_distance(m: int, n: int, shift: int) -> None:
    g = torch.Generator().manual_seed(m * 7 + n)
    q, k = torch.randn(2, 32, generator=g, dtype=torch.float64).float()
    def score(i: int, j: int) -> torch.Tensor:
        return apply_rope(q, rope(torch.tensor([i]), 32)) @ apply_rope(k, rope(torch.tensor([j]), 32)).T

    a, b = score(m, n), score(m + shift, n + shift)
    assert abs(float(a) - float(b)) < 1e-3 * (1 + abs(float(a)))


def test_rope_model_matches_the_float64_reference() -> None:
    m = rope_model()
    tokens = [BOS, *np.random.default_rng(0).integers(0, 256, 30).tolist()]
    got, _ = m(torch.tensor([tokens]))
    np.testing.assert_allclose(got[0].detach().double().numpy(), reference_forward(m, tokens), atol=2e-4)
    assert m.wpe is None and m.num_parameters() == sum(p.numel() for p in m.parameters())


def test_rope_cache_and_position_offset() -> None:
    m = rope_model()
    x = torch.randint(0, 256, (2, 40))
    full, _ = m(x)
    a, past = m(x[:, :17])
    b, past = m(x[:, 17:18], past)
    c, _ = m(x[:, 18:], past)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, rtol=1e-4, atol=1e-4)
    far, _ = m(x, start=100_000)  # rotary: shifting every position changes nothing but rounding
    torch.testing.assert_close(far, full, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="exceeds the context of 48"):
        m(x[:, :10], m(x)[1])


def test_learned_positions_refuse_another_start_and_old_configs_load(tmp_path: Path) -> None:
    torch.manual_seed(1)
    m = ByteGPT(ByteGPTConfig(16, 1, 1, 32)).eval()
    with pytest.raises(ValueError, match="start must be the cache length 0"):
        m(torch.zeros(1, 3, dtype=torch.long), start=5)
    m.save(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    assert "positions" not in cfg  # a learned model's config file is as before the option existed
    assert ByteGPT.load(tmp_path / "old").config.positions == "learned"
    rope_model().save(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "config.json").read_text())["positions"] == "rope"
    again = ByteGPT.load(tmp_path / "new")
    x = torch.tensor([[BOS, 1, 2, 3]])
    torch.testing.assert_close(again(x)[0], rope_model()(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("bad", [{"positions": "alibi"}, {"positions": "rope", "n_embd": 6, "n_head": 2}])
def test_bad_configs_are_clear_errors(bad: dict) -> None:
    kw = {"block_size": 8, "n_layer": 1, "n_head": 1, "n_embd": 8, **bad}
    with pytest.raises(ValueError, match=r"positions|n_embd"):
        ByteGPTConfig(**kw)


@pytest.mark.parametrize("name", ["bytegpt-small", "bytegpt-6l"])
def test_bundled_learned_models_still_compute_the_reference(name: str) -> None:
    lm = load_model(name)
    assert isinstance(lm, ByteModel) and lm.module.config.positions == "learned"
    tokens = [BOS, *b"Return the number of items in a container."]
    got, _ = lm.forward(torch.tensor([tokens]))
    want = reference_forward(lm.module, tokens)
    np.testing.assert_allclose(got[0].detach().double().numpy(), want, atol=2e-3)


# --- the fast step ---------------------------------------------------------------------------------------


def test_rope_fast_step_matches_forward() -> None:
    lm = ByteModel(rope_model(), "rope")
    ids = np.random.default_rng(2).integers(0, 256, (3, 47))
    full, _ = lm.forward(torch.as_tensor(ids))
    s = ByteGPTStepper(lm, 3)
    got = [s.prime(ids[:, :5])] + [s.step(ids[:, i]) for i in range(5, 47)]
    np.testing.assert_allclose(np.stack(got, 1), full[:, 4:].numpy(), rtol=1e-4, atol=1e-4)
    got2 = s.prime(ids[:, 20:30])  # a re-prime starts at position 0 again
    np.testing.assert_allclose(got2, lm.forward(torch.as_tensor(ids[:, 20:30]))[0][:, -1].numpy(), atol=1e-4)


@pytest.mark.parametrize("batch", [1, 2])  # batch 1: every size-1 dimension (odd strides) at once
@pytest.mark.parametrize("precision", ["bfloat16", pytest.param("int8kv", marks=needs_kernel)])
def test_rope_low_precision_steps_stay_close(precision: str, batch: int) -> None:
    lm = ByteModel(rope_model(n_embd=64, n_head=2), "rope")  # head size 32: the kernel's
    assert precision in step_precisions(lm)
    assert int8kv_unavailable(lm) == decode_attention.unavailable_reason()
    ids = np.random.default_rng(3).integers(0, 256, (batch, 47))
    bos = np.full((batch, 1), BOS)
    ref = ByteGPTStepper(lm, batch)
    low = ByteGPTStepper(lm, batch, precision)
    a = [ref.prime(bos)] + [ref.step(ids[:, i]) for i in range(47)]
    b = [low.prime(bos)] + [low.step(ids[:, i]) for i in range(47)]
    err = np.abs(np.stack(a) - np.stack(b)).max()
    assert err < 0.05 * np.abs(np.stack(a)).max()
    again = ByteGPTStepper(lm, batch, precision)  # deterministic: the same bits in a fresh stepper
    c = [again.prime(bos)] + [again.step(ids[:, i]) for i in range(47)]
    assert np.array_equal(np.stack(b), np.stack(c))


# --- the sliding (ring) cache of the codec --------------------------------------------------------------


@pytest.mark.parametrize("window", [3, 8, 16])
def test_ring_step_matches_the_float64_reference(window: int) -> None:
    model = rope_model()
    lm = ByteModel(model, "rope")
    ids = np.random.default_rng(7).integers(0, 256, (2, 60))  # past the model's 48-token context
    s = ByteGPTStepper(lm, 2, ring=window)
    got = np.stack([s.prime(np.full((2, 1), BOS))] + [s.step(ids[:, i]) for i in range(59)], 1)
    for b in range(2):
        want = ring_reference(model, ids[b, :59].tolist(), window)
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-4)
    assert s.length == window and s.position == 60


@given(st.integers(3, 12), st.integers(1, 30), st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_ring_before_it_wraps_is_the_plain_forward(window: int, n: int, seed: int) -> None:
    lm = ByteModel(rope_model(), "rope")
    ids = np.random.default_rng(seed).integers(0, 256, (1, n))
    s = ByteGPTStepper(lm, 1, ring=window)
    got = [s.prime(np.full((1, 1), BOS))] + [s.step(ids[:, i]) for i in range(min(n, window - 1))]
    full, _ = lm.forward(torch.as_tensor(np.concatenate([[[BOS]], ids], 1)))
    k = len(got)
    np.testing.assert_allclose(np.stack(got, 1)[0], full[0, :k].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("precision", ["bfloat16", pytest.param("int8kv", marks=needs_kernel)])
def test_ring_low_precision_stays_close_and_is_deterministic(precision: str, batch: int) -> None:
    lm = ByteModel(rope_model(), "rope")
    ids = np.random.default_rng(5).integers(0, 256, (batch, 70))
    bos = np.full((batch, 1), BOS)

    def run(p: str) -> np.ndarray:
        s = ByteGPTStepper(lm, batch, p, ring=16)
        return np.stack([s.prime(bos)] + [s.step(ids[:, i]) for i in range(70)])

    ref, low = run("float32"), run(precision)
    assert np.abs(ref - low).max() < 0.05 * np.abs(ref).max()
    assert np.array_equal(low, run(precision))  # the same bits in a fresh stepper


def test_ring_int8_rotation_is_the_torch_rotation() -> None:
    if not decode_attention.available():
        pytest.skip(decode_attention.unavailable_reason())
    # one slot, one query: attention returns the stored value, so check the rotated key instead via
    # the score order: a key equal to the rotated query must outscore its unrotated self
    x = torch.randn(1, 3 * 32).to(torch.bfloat16)
    cos, sin = rope(torch.tensor([5]), 32)
    cache = Int8KVCache(1, 1, 1, 64)
    out = cache.step_rope(0, 0, 0, x, (cos[0].contiguous(), sin[0].contiguous()))
    np.testing.assert_allclose(out.float().numpy(), x[:, 64:].float().numpy(), rtol=0.02, atol=0.02)
    want = apply_rope(x[:, 32:64].view(1, 1, 1, 32), (cos[0], sin[0])).view(32)  # torch's bf16 rotation
    store = Int8KVCache(1, 1, 1, 64)
    store.store(0, 0, want.view(1, 1, 1, 32), x[:, 64:].view(1, 1, 1, 32))
    assert torch.equal(cache.k, store.k) and torch.equal(cache.k_scale, store.k_scale)


def test_ring_bad_use_is_a_clear_error() -> None:
    lm = ByteModel(rope_model(), "rope")
    with pytest.raises(ValueError, match="ring"):
        ByteGPTStepper(lm, 1, ring=2)
    with pytest.raises(ValueError, match="ring"):
        ByteGPTStepper(load_model("bytegpt-small"), 1, ring=16)  # learned positions
    s = ByteGPTStepper(lm, 1, ring=8)
    with pytest.raises(ValueError, match="one \\(BOS\\) token"):
        s.prime(np.full((1, 2), BOS))


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["float32", "bfloat16", "int8kv"]), st.integers(3, 40),
       st.lists(st.integers(1, 30), min_size=1, max_size=5), st.integers(0, 2**16))
def test_ring_steps_are_the_bits_of_single_steps(precision: str, window: int, pieces: list[int],
                                                 seed: int) -> None:
    """``steps`` (the encoder's look-ahead: layer by layer, one kernel call for P tokens) gives the
    same bits as P calls of ``step``, across the ring's wrap and any piece boundaries."""
    if precision == "int8kv" and not decode_attention.available():
        precision = "bfloat16"
    lm = ByteModel(rope_model(), "rope")
    ids = np.random.default_rng(seed).integers(0, 256, (2, sum(pieces)))
    bos = np.full((2, 1), BOS)
    one, many = (ByteGPTStepper(lm, 2, precision, ring=window) for _ in range(2))
    one.prime(bos)
    many.prime(bos)
    want = np.stack([one.step(ids[:, i]) for i in range(ids.shape[1])])
    got, i = [], 0
    for n in pieces:
        got.append(many.steps(ids[:, i : i + n]))
        i += n
    assert np.array_equal(np.concatenate(got), want)
    assert (many.position, many.length) == (one.position, one.length)
    if precision == "int8kv":
        assert one.cache8 is not None and many.cache8 is not None
        assert torch.equal(one.cache8.k, many.cache8.k)
        assert torch.equal(one.cache8.v_scale, many.cache8.v_scale)


def test_steps_without_a_ring_are_single_steps() -> None:
    lm = ByteModel(rope_model(), "rope")
    ids = np.random.default_rng(3).integers(0, 256, (1, 20))
    a, b = ByteGPTStepper(lm, 1), ByteGPTStepper(lm, 1)
    a.prime(np.full((1, 1), BOS))
    b.prime(np.full((1, 1), BOS))
    assert np.array_equal(b.steps(ids), np.stack([a.step(ids[:, i]) for i in range(20)]))
    s = ByteGPTStepper(lm, 1, "int8kv" if decode_attention.available() else "float32", ring=8)
    with pytest.raises(ValueError, match="primed with BOS"):
        s.steps(ids[:, :4])
