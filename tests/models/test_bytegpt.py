"""The bundled model file: cache equivalence, persistence, context limit, training-data scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from entropykit.models.bytegpt import BOS, VOCAB_SIZE, ByteGPT, ByteGPTConfig

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
