"""The bundled model file: cache equivalence, persistence, context limit, training-data scripts; and
its fast incremental step (``models.bytegpt_step``) against the module's forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_compression_fixtures import tiny_model

from entropykit.models import ByteModel
from entropykit.models.bytegpt import BOS, VOCAB_SIZE, ByteGPT, ByteGPTConfig
from entropykit.models.bytegpt_step import (
    ByteGPTStepper,
    Stepper,
    int8kv_unavailable,
    is_bytegpt,
    step_precisions,
    stepper,
)
from entropykit.models.kernels import decode_attention

# the int8-KV kernel needs a C compiler; without one those tests are skipped (the rest still run)
needs_kernel = pytest.mark.skipif(
    not decode_attention.available(),
    reason=f"int8-KV kernel unavailable: {decode_attention.unavailable_reason()}",
)

ROOT = Path(__file__).resolve().parents[2]


def tiny(block_size: int = 32) -> ByteGPT:
    torch.manual_seed(0)
    return ByteGPT(ByteGPTConfig(block_size=block_size, n_layer=2, n_head=2, n_embd=16)).eval()


def test_incremental_decoding_with_cache_matches_full_forward() -> None:
    model = tiny()
    idx = torch.randint(0, 256, (3, 20))
    full, _ = model(idx)
    past = None
    steps = []
    for chunk in (idx[:, :7], idx[:, 7:8], idx[:, 8:15], idx[:, 15:16], idx[:, 16:]):
        logits, past = model(chunk, past)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert full.shape == (3, 20, VOCAB_SIZE)


def test_positions_are_causal() -> None:
    model = tiny()
    a = torch.randint(0, 256, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 256  # changing the future must not change earlier logits
    la, _ = model(a)
    lb, _ = model(b)
    torch.testing.assert_close(la[:, :8], lb[:, :8])
    assert not torch.allclose(la[:, 8:], lb[:, 8:])


def test_context_overflow_is_a_clear_error() -> None:
    model = tiny(block_size=8)
    _, past = model(torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the context of 8"):
        model(torch.zeros(1, 3, dtype=torch.long), past)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    model = tiny()
    model.save(tmp_path / "m")
    again = ByteGPT.load(tmp_path / "m")
    x = torch.tensor([[BOS, 72, 105]])
    torch.testing.assert_close(model(x)[0], again(x)[0], rtol=0, atol=0)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["n_layer"] == 2


@pytest.mark.parametrize("name", ["bytegpt-6l", "bytegpt-small"])
def test_bundled_models_fit_the_size_budget(name: str) -> None:
    weights = ROOT / "src/entropykit/models/bundled" / name / "model.safetensors"
    assert weights.exists(), f"bundled weights missing: {weights}"
    assert weights.stat().st_size <= 25 * 2**20


def test_heldout_split_is_disjoint_from_training_documents() -> None:
    split = json.loads((ROOT / "data/corpus/split.json").read_text())
    train = {name for name, _ in split["train"]}
    heldout = {name for name, _ in split["heldout"]}
    assert heldout and train and not (train & heldout)
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "scripts/build_corpus.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert all(mod.is_heldout(n) for n in heldout) and not any(mod.is_heldout(n) for n in train)
    assert (ROOT / "data/corpus/heldout.bin").stat().st_size == sum(n for _, n in split["heldout"])


# --- the fast incremental step ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> ByteModel:
    """A tiny trained ByteGPT (1 layer, one head of the kernel's size 32)."""
    return tiny_model()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_fast_stepper_matches_model_forward(model) -> None:
    ids = np.random.default_rng(1).integers(0, 256, (3, 60))
    fast, slow = ByteGPTStepper(model, 3), Stepper(model)
    a = [fast.prime(np.full((3, 1), BOS))]
    b = [slow.prime(np.full((3, 1), BOS))]
    for i in range(40):
        a.append(fast.step(ids[:, i]))
        b.append(slow.step(ids[:, i]))
    a.append(fast.prime(ids[:, 10:30]))
    b.append(slow.prime(ids[:, 10:30]))
    for i in range(30, 60):
        a.append(fast.step(ids[:, i]))
        b.append(slow.step(ids[:, i]))
    np.testing.assert_allclose(np.stack(a), np.stack(b), rtol=1e-5, atol=1e-5)


def test_bf16_stepper_is_close_to_float32(model) -> None:
    """The bf16 path (packed oneDNN weights, bf16 KV cache) computes the same model: its logits
    stay within bf16 rounding of the fp32 stepper's, and prime and step agree with each other."""
    ids = np.random.default_rng(3).integers(0, 256, (3, 45))
    b16, f32 = ByteGPTStepper(model, 3, "bfloat16"), ByteGPTStepper(model, 3)
    a = [b16.prime(np.full((3, 1), BOS))]
    b = [f32.prime(np.full((3, 1), BOS))]
    for i in range(44):
        a.append(b16.step(ids[:, i]))
        b.append(f32.step(ids[:, i]))
    a, b = np.stack(a), np.stack(b)
    assert a.dtype == np.float32 and np.abs(a - b).max() < 0.15 < np.abs(b).max()
    fresh = ByteGPTStepper(model, 3, "bfloat16")
    primed = fresh.prime(np.concatenate([np.full((3, 1), BOS), ids[:, :44]], axis=1))
    np.testing.assert_allclose(primed, a[-1], atol=0.1)  # one forward pass vs 44 cached steps
    # the int8 KV cache (fused kernel) stays as close to the fp32 logits as the bf16 cache does
    if not decode_attention.available():
        return
    i8 = ByteGPTStepper(model, 3, "int8kv")
    c = [i8.prime(np.full((3, 1), BOS))] + [i8.step(ids[:, i]) for i in range(44)]
    assert np.abs(np.stack(c) - b).max() < 0.15
    assert not np.array_equal(np.stack(c), a)  # it is another computation


@pytest.mark.parametrize("precision", ["float32", "bfloat16", pytest.param("int8kv", marks=needs_kernel)])
def test_row_results_do_not_depend_on_other_rows(model, precision: str) -> None:
    """Kernels give a row the same bits whatever the other rows of the batch hold (same shape)."""
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (4, 50)), rng.integers(0, 256, (4, 50))
    y[1] = x[1]
    sx, sy = ByteGPTStepper(model, 4, precision), ByteGPTStepper(model, 4, precision)
    for s in (sx, sy):
        s.prime(np.full((4, 1), BOS))
    for i in range(50):
        assert np.array_equal(sx.step(x[:, i])[1], sy.step(y[:, i])[1])


@needs_kernel
def test_int8kv_stepper_with_a_context_that_is_not_a_whole_kernel_block() -> None:
    """The int8 cache rounds its slots up to whole 64-slot blocks: a 40-token model steps to its end."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        gpt = ByteGPT(ByteGPTConfig(block_size=40, n_layer=1, n_head=1, n_embd=32)).eval()
    lm = ByteModel(gpt, "tiny-40")
    ids = np.random.default_rng(4).integers(0, 256, (2, 39))
    i8, b16 = ByteGPTStepper(lm, 2, "int8kv"), ByteGPTStepper(lm, 2, "bfloat16")
    a = [i8.prime(np.full((2, 1), BOS))] + [i8.step(ids[:, i]) for i in range(39)]
    b = [b16.prime(np.full((2, 1), BOS))] + [b16.step(ids[:, i]) for i in range(39)]
    assert i8.length == 40 and np.abs(np.stack(a) - np.stack(b)).max() < 0.05


def test_stepper_choice_and_supported_precisions(model, tmp_path: Path) -> None:
    assert is_bytegpt(model) and isinstance(stepper(model, 2), ByteGPTStepper)
    supported = step_precisions(model)
    assert supported[:2] == ("float32", "bfloat16")
    assert ("int8kv" in supported) == decode_attention.available() == (int8kv_unavailable(model) == "")
    # a head size the kernel does not take: no int8kv, and the reason says why
    wide = ByteModel(ByteGPT(ByteGPTConfig(block_size=16, n_layer=1, n_head=1, n_embd=16)).eval(), "w")
    assert step_precisions(wide) == ("float32", "bfloat16")
    assert "head size of 32" in int8kv_unavailable(wide)
    with pytest.raises(ValueError, match="precision"):
        ByteGPTStepper(model, 1, "fp8")  # type: ignore[arg-type]


def test_generic_stepper_for_other_models(tmp_path: Path) -> None:
    from entropykit.models import load_model
    from hf_fixtures import tiny_hf_model_dir

    hf = load_model(tiny_hf_model_dir(tmp_path))
    assert not is_bytegpt(hf) and step_precisions(hf) == ("float32",)
    assert "ByteGPT" in int8kv_unavailable(hf)
    s = stepper(hf, 1)
    assert type(s) is Stepper
    with pytest.raises(ValueError, match="precision"):
        stepper(hf, 1, "bfloat16")
    ids = np.array([[3, 5, 7, 9]])
    first = s.prime(ids[:, :2])
    nxt = s.step(ids[:, 2])
    full, _ = hf.forward(torch.as_tensor(ids[:, :3]))
    want = full[:, 1:3].transpose(0, 1).numpy()
    np.testing.assert_allclose(np.stack([first, nxt]), want, rtol=1e-5, atol=1e-5)
    assert s.length == 3
