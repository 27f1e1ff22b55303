"""score() through the Hugging Face adapter (tiny random GPT-2 with a subword BPE tokenizer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from entropykit.lm import LanguageModel, load_model, score

pytest.importorskip("transformers")
from test_scoring import assert_matches, naive_strided, reference_stats

from hf_fixtures import tiny_hf_model_dir

TEXT = "The quick brown fox jumps over the lazy dog. Entropy measures the average surprise."


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> LanguageModel:
    return load_model(tiny_hf_model_dir(tmp_path_factory.mktemp("hf")))


def test_short_text_equals_direct(hf_model: LanguageModel) -> None:
    enc = hf_model.encode(TEXT)
    seq = torch.tensor(hf_model.prefix_ids + enc.ids)
    assert len(seq) <= hf_model.max_context
    logits, _ = hf_model.forward(seq[None])
    r = score(TEXT, hf_model)
    assert_matches(r, reference_stats(logits[0, :-1], seq[1:]))
    assert r.offsets.tolist() == [list(o) for o in enc.offsets]
    assert r.summary["bytes"] == len(TEXT.encode()) and r.summary["tokens"] == len(enc.ids)
    assert r.summary["bits_per_byte"] == pytest.approx(
        float(np.sum(r.surprisal_bits, dtype=np.float64)) / len(TEXT.encode()), rel=1e-9
    )
    assert [r.token_text(i) for i in range(3)] == [hf_model.decode([t]).decode() for t in enc.ids[:3]]


@pytest.mark.parametrize("stride", [7, 63])
def test_long_text_equals_naive_strided(hf_model: LanguageModel, stride: int) -> None:
    text = (TEXT + " ") * 4
    assert len(hf_model.encode(text).ids) > 2 * hf_model.max_context
    r = score(text, hf_model, stride=stride, top_k=3)
    assert_matches(r, naive_strided(hf_model, text, stride))
    assert r.top_k_tokens is not None and len(r.top_k_tokens[0]) == 3


def test_invalid_utf8_is_decoded_with_replacement(hf_model: LanguageModel) -> None:
    r = score(b"caf\xe9 au lait \xff", hf_model)
    assert r.lossy and r.summary["lossy_utf8"]
    assert r.text == "caf\ufffd au lait \ufffd".encode()
    assert "\ufffd" in "".join(r.tokens)


def test_model_by_path_string(tmp_path: Path) -> None:
    r = score("hello world", str(tiny_hf_model_dir(tmp_path)))
    assert r.model.startswith("tiny-gpt2@") and len(r) >= 2


def test_chunked_kv_cache_path(hf_model: LanguageModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from entropykit.models import stream

    monkeypatch.setattr(stream, "BATCH_LOGIT_BYTES", 4 * hf_model.vocab_size * 10)  # 10-token chunks
    text = (TEXT + " ") * 3
    r = score(text, hf_model, stride=40)
    assert_matches(r, naive_strided(hf_model, text, 40))
