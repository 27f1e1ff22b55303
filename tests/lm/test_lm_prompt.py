"""Prompt compression by self-information (Selective Context with a token budget)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.lm import ByteModel
from entropykit.lm.prompt import compress_prompt, unit_spans
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig

TEXT = "The quick brown fox jumps over the lazy dog, and then, at last, it sleeps. The end!\nBye now."


@pytest.fixture(scope="module")
def lm() -> ByteModel:
    torch.manual_seed(0)
    return ByteModel(ByteGPT(ByteGPTConfig(block_size=128, n_layer=1, n_head=2, n_embd=16)))


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=60), st.sampled_from(["word", "phrase"]))
def test_units_tile_the_text(data: bytes, unit: str) -> None:
    spans = unit_spans(data, unit)  # type: ignore[arg-type]
    assert b"".join(data[a:b] for a, b in spans) == data
    assert all(b > a for a, b in spans)


def test_unit_bits_are_the_models_surprisal_sums(lm: ByteModel) -> None:
    cp = compress_prompt(TEXT, lm, ratio=0.3, unit="word")
    data = TEXT.encode()
    ids = torch.tensor([[256, *data]])
    with torch.no_grad():
        logp = torch.log_softmax(lm.module(ids[:, :-1])[0].double(), -1)[0]
    bits = -logp.gather(-1, ids[0, 1:, None])[:, 0].numpy() / np.log(2)
    pos = 0
    for u, b, n in zip(cp.units, cp.unit_bits, cp.unit_tokens, strict=True):
        k = len(u.encode())
        assert n == k
        assert b == pytest.approx(bits[pos:pos + k].sum(), rel=1e-4)
        pos += k
    assert pos == len(data)


@pytest.mark.parametrize("unit", ["token", "word", "phrase"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_budget_and_order(lm: ByteModel, unit: str, ratio: float) -> None:
    cp = compress_prompt(TEXT, lm, ratio=ratio, unit=unit)  # type: ignore[arg-type]
    total = cp.unit_tokens.sum()
    assert cp.ratio >= ratio
    # minimal: un-dropping the last-dropped unit (the highest key among dropped) goes under budget
    key = cp.unit_bits / np.maximum(cp.unit_tokens, 1)
    dropped = ~cp.kept
    last = np.flatnonzero(dropped)[np.argmax(key[dropped])]
    assert (cp.unit_tokens[dropped].sum() - cp.unit_tokens[last]) / total < ratio
    # every dropped unit is less informative per token than every kept one (but the kept layout)
    layout = np.array([bool(u.strip() == "" and "\n" in u) for u in cp.units])
    assert not (layout & dropped).any()
    assert key[dropped].max() <= key[cp.kept & ~layout].min() + 1e-12
    assert cp.text.encode() == b"".join(u.encode() for u, k in zip(cp.units, cp.kept, strict=True) if k)


def test_sum_rank_is_selective_contexts(lm: ByteModel) -> None:
    cp = compress_prompt(TEXT, lm, ratio=0.5, unit="word", rank="sum")
    layout = np.array([bool(u.strip() == "" and "\n" in u) for u in cp.units])
    assert cp.unit_bits[~cp.kept].max() <= cp.unit_bits[cp.kept & ~layout].min()


def test_layout_units() -> None:
    text = b"a b\n  c d,\n e"
    assert unit_spans(text, "word") == [(0, 2), (2, 3), (3, 6), (6, 8), (8, 10), (10, 12), (12, 13)]
    assert unit_spans(text, "phrase") == [(0, 3), (3, 6), (6, 10), (10, 12), (12, 13)]


def test_lines_are_never_joined(lm: ByteModel) -> None:
    text = "one two three\nfour five six\n  seven eight nine\nten"
    for method in ("surprisal", "random"):
        cp = compress_prompt(text, lm, ratio=0.7, method=method, generator=torch.Generator().manual_seed(0))
        assert cp.text.count("\n") == 3
    joined = compress_prompt(text, lm, ratio=0.9, keep_layout=False)
    assert joined.ratio >= 0.9


def test_forced_keep_and_random_baseline(lm: ByteModel) -> None:
    cp = compress_prompt(TEXT, lm, ratio=0.7, unit="word", keep=["lazy dog", "Bye"])
    assert "lazy dog" in cp.text and "Bye" in cp.text
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    r1 = compress_prompt(TEXT, lm, ratio=0.5, method="random", generator=g1)
    r2 = compress_prompt(TEXT, lm, ratio=0.5, method="random", generator=g2)
    assert r1.text == r2.text and r1.ratio >= 0.5
    d = cp.to_dict()
    assert d["ratio"] == cp.ratio and d["bits_dropped"] == pytest.approx(sum(b for _, b in cp.dropped))


def test_bad_input(lm: ByteModel) -> None:
    for bad in (0, 1, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="ratio must be a number in"):
            compress_prompt(TEXT, lm, ratio=bad)
    with pytest.raises(ValueError, match="unit must be"):
        compress_prompt(TEXT, lm, unit="sentence")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keep must be a sequence"):
        compress_prompt(TEXT, lm, keep="dog")
    with pytest.raises(ValueError, match=r"keep\[0\] must be a non-empty"):
        compress_prompt(TEXT, lm, keep=[""])
    with pytest.raises(TypeError, match="text must be str or bytes"):
        compress_prompt(3, lm)  # type: ignore[arg-type]
