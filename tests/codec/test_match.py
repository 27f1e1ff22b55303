"""The codec's match model (``entropykit.codec.match``) against the independent reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from match_reference import mixture_bits, predictions
from test_compression_fixtures import tiny_model

from entropykit.codec import compress, container_info, decompress
from entropykit.codec.match import LAMBDA0, LAMBDA_MAX, MatchModel

# short alphabets repeat themselves: many matches, hits and misses
tokens_st = st.lists(st.integers(0, 2), min_size=0, max_size=300) | st.lists(
    st.sampled_from([b"abcdefgh", b"abcdefxy", b"hello ", b"\n"]), max_size=40
).map(lambda parts: list(b"".join(parts)))


def run(tokens: list[int], probs: np.ndarray) -> tuple[list[int | None], list[np.ndarray], MatchModel]:
    """Predictions and mixed weights of a MatchModel over ``tokens`` (weights ``probs``)."""
    m, preds, mixed = MatchModel(), [], []
    for t, p in zip(tokens, probs):
        preds.append(m.predicted())
        w = p.copy()
        m.mix(w)
        mixed.append(w)
        m.update(t, w)
    return preds, mixed, m


def dirichlet(n: int, seed: int, v: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(v, 0.3), size=n)


@settings(max_examples=150, deadline=None)
@given(tokens_st, st.integers(0, 2**31))
def test_predictions_and_mixture_match_the_reference(tokens: list[int], seed: int) -> None:
    probs = dirichlet(len(tokens), seed)
    preds, mixed, m = run(tokens, probs)
    ref = predictions(tokens)
    assert preds == [None if r is None else r[0] for r in ref]
    bits = 0.0
    for t, p, w, r in zip(tokens, probs, mixed, ref):
        changed = np.flatnonzero(w != p)
        if r is None:  # no prediction: the weights are untouched
            assert changed.size == 0
        else:  # only the predicted token gains, and the rest keep their ratios
            assert set(changed.tolist()) <= {r[0]} and w[r[0]] >= p[r[0]]
        bits -= np.log2(w[t] / w.sum())
    np.testing.assert_allclose(bits, mixture_bits(probs, tokens), rtol=1e-9, atol=1e-9)
    assert all(0.0 <= lam <= LAMBDA_MAX for lam in m.lam)


def test_the_weight_learns_to_trust_a_repeat() -> None:
    """A text repeated verbatim: the mixing weights of long matches climb from LAMBDA0 towards
    LAMBDA_MAX, and the repeat costs a fraction of what the model alone would pay."""
    text = list(b"The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. ")
    tokens = text * 6
    probs = np.full((len(tokens), 256), 1 / 256)
    _, mixed, m = run(tokens, probs)
    assert m.lam[-1] > 0.9 > LAMBDA0
    repeat = slice(2 * len(text), len(tokens))
    cost = -sum(np.log2(w[t] / w.sum()) for t, w in zip(tokens[repeat], mixed[repeat]))
    assert cost < 0.02 * 8 * len(tokens[repeat])


def test_a_misleading_match_loses_its_weight() -> None:
    """Random tokens over 4 symbols repeat 6-grams by chance, and their next token is a guess right 1
    time in 4, no better than the model's p = 1/4: the weight of 6-token matches falls towards 0."""
    tokens = [int(x) for x in np.random.default_rng(0).integers(0, 4, 4000)]
    probs = np.full((len(tokens), 4), 0.25)
    preds, mixed, m = run(tokens, probs)
    assert sum(p is not None for p in preds) > 1000
    assert m.lam[5] < 0.15 < LAMBDA0  # it hovers near 0 (gradient steps of ETA)
    cost = -sum(np.log2(w[t] / w.sum()) for t, w in zip(tokens, mixed))
    assert cost < 1.01 * 2 * len(tokens)  # it costs little more than the model alone (2 bits a token)


def test_the_mixture_is_bit_reproducible() -> None:
    tokens = list(b"abcabcabdabcabcabd" * 20)
    probs = dirichlet(len(tokens), 3)
    a, b = run(tokens, probs)[1], run(tokens, probs)[1]
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


@settings(max_examples=25, deadline=None)
@given(tokens_st.map(bytes))
def test_round_trip_with_and_without_the_match_model(data: bytes) -> None:
    lm = tiny_model()
    for match in (True, False):
        blob = compress(data, lm, chunk_size=128, precision="float32", match=match, workers=1)
        assert container_info(blob)["match"] is match
        assert decompress(blob, lm) == data


def test_the_match_model_pays_less_on_repeats() -> None:
    lm = tiny_model()
    data = b"".join(b"entry %d: see the reference manual, section %d.\n" % (i % 7, i % 5) for i in range(120))
    with_match = compress(data, lm, chunk_size=8192, precision="float32", workers=1, fallback=None)
    alone = compress(data, lm, chunk_size=8192, precision="float32", workers=1, fallback=None, match=False)
    assert len(with_match) < 0.8 * len(alone)
    assert decompress(with_match, lm) == data


def test_bad_match_argument() -> None:
    with pytest.raises(TypeError, match="match must be a bool, got int 1"):
        compress(b"abc", tiny_model(), match=1)  # type: ignore[arg-type]
