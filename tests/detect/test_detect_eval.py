"""entropykit.detect evaluation (AUC, TPR@FPR, calibrate, ROC) and generate_passages."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu
from test_detect import make_bigram, tiny_bytegpt

from entropykit.detect import calibrate, evaluate, generate_passages, roc_curve

scores = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=30)  # small ints: many ties


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_auc_is_the_pairwise_probability_with_half_ties(pos: list[float], neg: list[float]) -> None:
    naive = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])
    r = evaluate(pos, neg)
    assert r["auc"] == pytest.approx(naive, abs=1e-12)
    u = mannwhitneyu(pos, neg, alternative="greater", method="asymptotic").statistic
    assert r["auc"] == pytest.approx(u / (len(pos) * len(neg)), abs=1e-12)
    fpr, tpr, _ = roc_curve(pos, neg)
    assert np.trapezoid(tpr, fpr) == pytest.approx(naive, abs=1e-12)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and (np.diff(fpr) >= 0).all()


@settings(max_examples=60, deadline=None)
@given(scores, scores, st.sampled_from([0.0, 0.01, 0.1, 0.25, 0.5, 0.999, 1.0]))
def test_calibrated_threshold_is_the_smallest_with_fpr_at_most_target(
    pos: list[float], neg: list[float], target: float
) -> None:
    tau = calibrate(neg, target)
    neg_a = np.array(neg)
    assert np.mean(neg_a > tau) <= target + 1e-12
    lower = neg_a[neg_a < tau]  # any smaller candidate threshold breaks the FPR budget
    if lower.size:
        assert np.mean(neg_a > lower.max()) > target
    r = evaluate(pos, neg, fprs=(target,))
    assert r["tpr_at_fpr"][target] == pytest.approx(np.mean(np.array(pos) > tau))


def test_evaluate_known_values_and_errors() -> None:
    r = evaluate([0.9, 0.8, 0.7], [0.1, 0.2, 0.75])
    assert r["auc"] == pytest.approx(8 / 9)
    assert r["tpr_at_fpr"] == {0.01: pytest.approx(0.0 + 2 / 3), 0.001: pytest.approx(2 / 3)}
    assert calibrate(list(range(100)), 0.01) == 98.0 and calibrate([1.0, 2.0], 1.0) == -math.inf
    with pytest.raises(ValueError, match="neg_scores"):
        evaluate([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        evaluate([float("nan")], [1.0])
    with pytest.raises(ValueError, match="fpr"):
        calibrate([1.0], 1.5)


def test_generate_passages_is_seeded_and_follows_the_model_past_the_context() -> None:
    q = make_bigram(7, max_context=5)  # tiny context: generation must slide its window
    a = generate_passages(["ab", "c", "dd"], 30, seed=3, model=q, batch_size=1)
    assert a == generate_passages(["ab", "c", "dd"], 30, seed=3, model=q, batch_size=1)
    assert a != generate_passages(["ab", "c", "dd"], 30, seed=4, model=q, batch_size=1)
    assert [len(x) for x in a] == [30, 30, 30]
    # past the context (window re-primed several times) the bigram transitions still follow the model
    (long,) = generate_passages(["a"], 3000, seed=0, model=q)
    seq = [0, *[c - 97 for c in long]]
    counts = np.zeros((5, 5))
    for x, y in itertools.pairwise(seq):
        counts[x, y] += 1
    z = q.table64[:5, :5]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    rows = counts.sum(1) > 200
    assert np.abs(counts[rows] / counts[rows].sum(1, keepdims=True) - p[rows]).max() < 0.08


def test_generate_passages_first_token_frequencies_follow_the_model() -> None:
    q = make_bigram(8)
    out = generate_passages(["a"] * 3000, 1, seed=0, model=q, batch_size=3000)
    counts = np.bincount([o[0] - 97 for o in out], minlength=5)
    z = q.table64[0].copy()
    z[-1] = -np.inf
    p = np.exp(z - z.max())
    p /= p.sum()
    assert np.abs(counts / 3000 - p[:5]).max() < 0.03


def test_generate_passages_low_temperature_is_greedy() -> None:
    q = make_bigram(9)
    (out,) = generate_passages(["a"], 12, seed=0, model=q, temperature=1e-4)
    last, want = 0, []
    for _ in range(12):
        last = int(np.argmax(q.table64[last][:-1]))
        want.append(last)
    assert out == bytes(97 + t for t in want)


def test_generate_passages_on_bytegpt_past_the_context_and_errors() -> None:
    m = tiny_bytegpt(16)
    out = generate_passages([b"0123456789abcdefXYZ", b"hi"], 40, seed=0, model=m)
    assert [len(x) for x in out] == [40, 40]
    with pytest.raises(TypeError, match="prompts"):
        generate_passages("abc", 3, seed=0, model=m)
    with pytest.raises(ValueError, match="temperature"):
        generate_passages(["abc"], 3, seed=0, model=m, temperature=0.0)
    with pytest.raises(ValueError, match="length"):
        generate_passages(["abc"], 0, seed=0, model=m)
