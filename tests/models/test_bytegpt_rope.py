"""ByteGPT with rotary positions: the rotation, the model, its fast step, and the learned-position
models (old configs) computing what they computed before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bytegpt_reference import forward as reference_forward
from bytegpt_reference import rotate
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.models import ByteModel, load_model
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig, apply_rope, rope
from entropykit.models.bytegpt_step import ByteGPTStepper, int8kv_unavailable, step_precisions
from entropykit.models.kernels import decode_attention

needs_kernel = pytest.mark.skipif(
    not decode_attention.available(), reason=f"no int8-KV kernel: {decode_attention.unavailable_reason()}"
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
