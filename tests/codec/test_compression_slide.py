"""Container version 4: coding through a sliding (ring) KV cache with a BOS sink (rotary ByteGPTs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bytegpt_reference import ring_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compression import parse, rewrite_header
from test_compression_fixtures import sample_text, tiny_model, tiny_rope_model

from entropykit.codec import SLIDE_WINDOW, ContainerError, can_slide, coding, compress, decompress
from entropykit.codec.container import FLAG_SLIDE
from entropykit.models import ByteModel
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
from entropykit.models.kernels import decode_attention

PRECISIONS = ["float32", "bfloat16", pytest.param("int8kv", marks=pytest.mark.skipif(
    not decode_attention.available(), reason="no int8-KV kernel"))]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def ring_bits(model, data: bytes, window: int) -> float:
    """Cross-entropy (bits) of ``data`` under the ring rule (the float64 reference forward of
    ``tests/models/bytegpt_reference.py``)."""
    logits = ring_reference(model.module, list(data[:-1]), window)
    lse = logits.max(-1) + np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1))
    return float(((lse - logits[np.arange(len(data)), list(data)]) / np.log(2)).sum())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_slide_round_trips_past_the_window(precision: str) -> None:
    lm = tiny_rope_model()
    data = sample_text(900, 3000)
    blob = compress(data, lm, window=24, chunk_size=400, precision=precision, workers=1)
    info = parse(blob)
    assert info["version"] == 5 and info["flags"] & FLAG_SLIDE and info["window"] == 24
    assert [c["mode"] for c in info["chunks"]] == [0, 0, 0]  # model-coded: the ring path ran
    assert decompress(blob, lm) == data


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_encoders_look_ahead_changes_no_bit(precision: str, monkeypatch) -> None:
    """The encoder feeds AHEAD tokens per stepper call (the decoder one): the container is the same
    bytes as with one token per call, and it decodes."""
    lm = tiny_rope_model()
    data = sample_text(1500, 11)
    blob = compress(data, lm, window=24, chunk_size=700, precision=precision, workers=1)
    monkeypatch.setattr(coding, "AHEAD", 1)
    assert compress(data, lm, window=24, chunk_size=700, precision=precision, workers=1) == blob
    monkeypatch.setattr(coding, "AHEAD", 5)
    assert compress(data, lm, window=24, chunk_size=700, precision=precision, workers=1) == blob
    assert decompress(blob, lm) == data


def test_the_coded_size_is_the_ring_cross_entropy() -> None:
    """float32 payload bits = the float64 reference model's cross-entropy under the ring rule, up to
    the 1/32-nat logit grid and the coder's flush (a few bytes)."""
    lm = tiny_rope_model()
    data = sample_text(500, 7000)
    blob = compress(data, lm, window=32, chunk_size=1000, precision="float32", workers=1, match=False)
    (chunk,) = parse(blob)["chunks"]
    want = ring_bits(lm, data, 32)
    assert chunk["mode"] == 0
    assert abs(8 * len(chunk["payload"]) - want) < 0.01 * want + 64


def test_slide_is_the_default_for_rotary_models_only() -> None:
    data = sample_text(300)
    rope, learned = tiny_rope_model(), tiny_model()
    assert can_slide(rope) and not can_slide(learned)
    assert parse(compress(data, rope, workers=1))["flags"] & FLAG_SLIDE
    assert not parse(compress(data, learned, workers=1))["flags"] & FLAG_SLIDE
    off = compress(data, rope, slide=False, workers=1)  # the re-prime schedule, same container version
    assert not parse(off)["flags"] & FLAG_SLIDE and decompress(off, rope) == data
    assert not parse(compress(data, rope, prime=10, workers=1))["flags"] & FLAG_SLIDE  # prime: re-prime


def test_default_windows_768_sliding_and_512_re_primed() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lm = ByteModel(ByteGPT(ByteGPTConfig(1024, 1, 1, 32, positions="rope")).eval(), "rope-1024")
    data = sample_text(200)
    slid, primed = compress(data, lm, workers=1), compress(data, lm, slide=False, workers=1)
    assert (parse(slid)["window"], parse(primed)["window"]) == (SLIDE_WINDOW, 512) == (768, 512)
    assert decompress(slid, lm) == data and decompress(primed, lm) == data


def test_slide_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="slide"):
        compress(b"abc", tiny_model(), slide=True)
    with pytest.raises(ValueError, match="prime"):
        compress(b"abc", tiny_rope_model(), slide=True, prime=5)


def test_a_slide_flag_where_it_cannot_be_is_refused() -> None:
    learned = tiny_model()
    blob = compress(b"hello there", learned, precision="float32", workers=1)
    with pytest.raises(ContainerError, match="slide flag"):
        decompress(rewrite_header(blob, flags=FLAG_SLIDE), learned)
    rope = tiny_rope_model()
    blob = compress(b"hello there", rope, precision="float32", workers=1)
    with pytest.raises(ContainerError, match="invalid coding parameters"):
        decompress(rewrite_header(blob, flags=FLAG_SLIDE, version=3), rope)  # version 3 has no slide flag


@given(st.binary(min_size=0, max_size=200), st.integers(3, 40))
@settings(max_examples=12, deadline=None)
def test_slide_round_trips_any_bytes(data: bytes, window: int) -> None:
    lm = tiny_rope_model()
    blob = compress(data, lm, window=window, chunk_size=64, precision="float32", workers=1)
    assert decompress(blob, lm) == data
