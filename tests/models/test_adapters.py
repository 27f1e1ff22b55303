"""The LanguageModel adapters: ByteModel (bundled ByteGPT) and HFModel (a tiny random GPT-2 saved to a
temporary directory and loaded by path), and load_model's resolution and errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from entropykit.lm import ByteModel, HFModel, LanguageModel, bundled_models, load_model
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig

transformers = pytest.importorskip("transformers")
from hf_fixtures import tiny_hf_model_dir  # noqa: E402

TEXT = "Héllo wörld — entropy is 42 bits, naïvely.\nSecond line!"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hf_model_dir(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def hf_model(hf_dir: Path) -> LanguageModel:
    return load_model(hf_dir)


def small_byte_model(seed: int = 0) -> ByteModel:
    g = torch.Generator().manual_seed(seed)
    m = ByteGPT(ByteGPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return ByteModel(m, "tiny")


# --- ByteModel ---------------------------------------------------------------------------------
def test_byte_model_encode_decode() -> None:
    lm = small_byte_model()
    enc = lm.encode(TEXT)
    raw = TEXT.encode()
    assert enc.ids == list(raw) and enc.n_bytes == len(raw) and not enc.lossy
    assert enc.offsets == [(i, i + 1) for i in range(len(raw))]
    assert lm.decode(enc.ids) == raw
    assert lm.encode(b"\xff\x00").ids == [255, 0]  # any bytes
    assert lm.prefix_ids == [BOS] and lm.token_text(BOS) == "<bos>" and lm.token_text(65) == "A"
    assert (lm.max_context, lm.vocab_size) == (32, 257)


def test_byte_model_cache_matches_full_forward() -> None:
    lm = small_byte_model()
    x = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(1))
    full, _ = lm.forward(x)
    assert full.shape == (2, 20, 257) and full.dtype == torch.float32
    a, past = lm.forward(x[:, :12])
    b, past = lm.forward(x[:, 12:19], past)
    c, _ = lm.forward(x[:, 19:], past)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, rtol=1e-5, atol=1e-5)


def test_identity_depends_on_weights() -> None:
    a, b = small_byte_model(0), small_byte_model(1)
    assert a.identity == small_byte_model(0).identity
    assert a.identity != b.identity and a.identity.startswith("tiny@")


def test_load_bundled_and_bytegpt_directory(tmp_path: Path) -> None:
    assert {"bytegpt-general", "bytegpt-6l", "bytegpt-small"} <= set(bundled_models())
    default = load_model()
    assert isinstance(default, ByteModel) and default.name == "bytegpt-general"
    assert load_model("bytegpt-small").name == "bytegpt-small"
    small_byte_model().module.save(tmp_path / "mine")
    lm = load_model(tmp_path / "mine")
    assert isinstance(lm, ByteModel) and lm.max_context == 32
    assert lm.identity.split("@")[1] == small_byte_model().identity.split("@")[1]


@pytest.mark.parametrize("name", ["no-such-model-xyz", "org/missing-model", "/nonexistent/dir/model"])
def test_missing_model_is_a_clear_fast_error(name: str) -> None:
    t = time.perf_counter()
    with pytest.raises(ValueError, match=name.replace("/", ".")):
        load_model(name)
    assert time.perf_counter() - t < 30  # no minute of hub retries when there is no hub


def test_empty_name() -> None:
    with pytest.raises(ValueError, match="empty"):
        load_model("  ")


# --- HFModel -------------------------------------------------------------------------------------
def test_hf_load_by_path(hf_model: LanguageModel, hf_dir: Path) -> None:
    assert isinstance(hf_model, HFModel)
    assert hf_model.max_context == 64 and hf_model.name == "tiny-gpt2"
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert hf_model.vocab_size == len(tok)
    assert hf_model.prefix_ids == [tok.bos_token_id]
    assert hf_model.identity.startswith("tiny-gpt2@")


def test_hf_encode_offsets_are_byte_spans(hf_model: LanguageModel) -> None:
    enc = hf_model.encode(TEXT)
    raw = TEXT.encode()
    assert enc.n_bytes == len(raw) and not enc.lossy
    assert hf_model.decode(enc.ids) == raw
    # spans are byte spans, in order, without gaps, covering every byte (a multi-byte character split
    # over several byte-level tokens gives those tokens overlapping spans)
    assert enc.offsets[0][0] == 0 and enc.offsets[-1][1] == len(raw)
    for (a0, b0), (a, b) in zip(enc.offsets, enc.offsets[1:]):
        assert a < b and a0 <= a <= b0 <= b
    # ASCII text: spans tile the bytes exactly and each span decodes to its token
    ascii_text = "entropy is the mean surprisal"
    e2 = hf_model.encode(ascii_text)
    assert [ascii_text.encode()[a:b] for a, b in e2.offsets] == [hf_model.decode([i]) for i in e2.ids]


def test_hf_invalid_utf8_is_lossy(hf_model: LanguageModel) -> None:
    enc = hf_model.encode(b"ab\xff\xfecd")
    assert enc.lossy
    repaired = b"ab\xff\xfecd".decode("utf-8", errors="replace").encode()
    assert enc.n_bytes == len(repaired) and hf_model.decode(enc.ids) == repaired


def test_hf_forward_matches_transformers_and_cache(hf_model: LanguageModel, hf_dir: Path) -> None:
    ref = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    ids = torch.tensor([hf_model.prefix_ids + hf_model.encode(TEXT).ids])
    with torch.no_grad():
        expected = ref(ids).logits
    logits, past = hf_model.forward(ids)
    assert logits.dtype == torch.float32 and logits.shape == (1, ids.shape[1], hf_model.vocab_size)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    a, past = hf_model.forward(ids[:, :10])
    b, _ = hf_model.forward(ids[:, 10:], past)
    torch.testing.assert_close(torch.cat([a, b], 1), expected, rtol=1e-4, atol=1e-4)
    batch = torch.cat([ids[:, :8], ids[:, 8:16]])
    lb, _ = hf_model.forward(batch)
    torch.testing.assert_close(lb[1], hf_model.forward(ids[:, 8:16])[0][0], rtol=1e-5, atol=1e-5)
