"""Scoring with a sliding KV cache (rotary ByteGPT): against an independent masked float64 forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bytegpt_reference import sliding_reference
from test_bytegpt_rope import rope_model

from entropykit.lm import score
from entropykit.models import ByteModel, load_model
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("sink", [True, False])
@pytest.mark.parametrize("n", [5, 47, 48, 100])
def test_sliding_cache_matches_the_masked_reference(n: int, sink: bool) -> None:
    m = rope_model(block_size=16, n_embd=32, n_head=2)
    text = np.random.default_rng(n).integers(97, 105, n).astype(np.uint8).tobytes()
    r = score(text, ByteModel(m, "rope"), slide=True, sink=sink)
    want = sliding_reference(m, list(text), 16, sink)
    np.testing.assert_allclose(r.surprisal_bits, want, atol=2e-4)
    assert r.summary["cache"] == ("sliding" if sink else "sliding-nosink")
    assert r.summary["stride"] == 8 and len(r) == n


@pytest.mark.parametrize("stride", [1, 7, 14])
def test_sliding_stride_sets_the_piece(stride: int) -> None:
    m = rope_model(block_size=16, n_embd=32, n_head=2)
    text = np.random.default_rng(stride).integers(97, 105, 60).astype(np.uint8).tobytes()
    r = score(text, ByteModel(m, "rope"), slide=True, stride=stride)
    want = sliding_reference(m, list(text), 16, True, stride)
    np.testing.assert_allclose(r.surprisal_bits, want, atol=2e-4)
    assert r.summary["stride"] == stride
    with pytest.raises(ValueError, match="stride"):
        score(text, ByteModel(m, "rope"), slide=True, stride=15)  # no room for the sink and a token


def test_one_window_equals_the_strided_scores_and_the_sink_matters() -> None:
    m = ByteModel(rope_model(block_size=32, n_embd=32, n_head=2), "rope")
    text = np.random.default_rng(0).integers(97, 105, 31).astype(np.uint8).tobytes()
    a, b = score(text, m), score(text, m, slide=True)
    np.testing.assert_allclose(a.surprisal_bits, b.surprisal_bits, atol=1e-5)
    long = np.random.default_rng(1).integers(97, 105, 200).astype(np.uint8).tobytes()
    with_sink, without = score(long, m, slide=True), score(long, m, slide=True, sink=False)
    assert not np.allclose(with_sink.surprisal_bits[40:], without.surprisal_bits[40:])
    bf = score(long, m, slide=True, precision="bfloat16")
    assert abs(bf.summary["bits_per_byte"] - with_sink.summary["bits_per_byte"]) < 0.02


def test_learned_positions_cannot_slide() -> None:
    with pytest.raises(ValueError, match="slide: True needs a ByteGPT with rotary positions"):
        score("some text", load_model("bytegpt-small"), slide=True)


@pytest.mark.parametrize(("slide_window", "stride"), [(12, 3), (10, 8), (16, 4)])
def test_slide_window_sets_the_attention_window(slide_window: int, stride: int) -> None:
    m = rope_model(block_size=16, n_embd=32, n_head=2)
    text = np.random.default_rng(slide_window).integers(97, 105, 75).astype(np.uint8).tobytes()
    r = score(text, ByteModel(m, "rope"), slide=True, stride=stride, slide_window=slide_window)
    want = sliding_reference(m, list(text), slide_window, True, stride)
    np.testing.assert_allclose(r.surprisal_bits, want, atol=2e-4)
    assert r.summary["context"] == slide_window and r.summary["stride"] == stride


def test_slide_window_is_checked() -> None:
    m = ByteModel(rope_model(block_size=16, n_embd=32, n_head=2), "rope")
    with pytest.raises(ValueError, match="slide_window applies only with slide=True"):
        score("some text", m, slide_window=8)
    with pytest.raises(ValueError, match=r"slide_window must be an int in \[3, 16\], got 17"):
        score("some text", m, slide=True, slide_window=17)
    with pytest.raises(ValueError, match=r"stride must be an int in \[1, 6\], got 7"):
        score("some text", m, slide=True, slide_window=8, stride=7)
    assert score("some text", m, slide=True, slide_window=8).summary["stride"] == 4  # W // 2


@pytest.mark.parametrize("stride", [16, 8])
def test_one_layer_sliding_equals_the_strided_windows(stride: int) -> None:
    # The sink sits in the window's BOS slot and a piece of `stride` tokens sees the cut cache, so each
    # token attends to the tokens a strided window gives it (C - stride .. C - 1); with one layer keys
    # and values depend only on token and position, so the numbers are the strided loop's. With two
    # layers the kept keys carry their own earlier history and the numbers differ.
    text = np.random.default_rng(stride).integers(97, 110, 150).astype(np.uint8).tobytes()
    for layers in (1, 2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stride)
            gpt = ByteGPT(ByteGPTConfig(32, layers, 2, 32, positions="rope")).eval()
            with torch.no_grad():
                for name, p in gpt.named_parameters():
                    if "qkv" in name and p.dim() == 2:
                        p.mul_(8.0)
        m = ByteModel(gpt, "rope")
        strided = score(text, m, stride=stride).surprisal_bits
        sliding = score(text, m, stride=stride, slide=True).surprisal_bits
        if layers == 1:
            np.testing.assert_allclose(sliding, strided, atol=1e-5)
        else:
            np.testing.assert_allclose(sliding[:32], strided[:32], atol=1e-5)  # the first window
            assert np.abs(sliding[32:] - strided[32:]).max() > 1e-3
