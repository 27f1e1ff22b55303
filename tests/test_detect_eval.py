"""entropykit.lm.detect evaluation (AUC, TPR@FPR, calibrate, ROC) and generate_passages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from entropykit.lm.detect import calibrate, evaluate, generate_passages, roc_curve
from test_detect import make_bigram, tiny_bytegpt

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


def test_generate_passages_is_seeded_and_exact_multinomial_sampling() -> None:
    q = make_bigram(7, max_context=5)  # tiny context: generation must slide its window
    a = generate_passages(["ab", "c", "dd"], 30, seed=3, model=q, batch_size=1)
    assert a == generate_passages(["ab", "c", "dd"], 30, seed=3, model=q, batch_size=1)
    assert a != generate_passages(["ab", "c", "dd"], 30, seed=4, model=q, batch_size=1)
    assert [len(x) for x in a] == [30, 30, 30]
    # same draws as a naive sampler consuming one generator in the same order (shortest prompt first)
    g = torch.Generator().manual_seed(3)
    for prompt in ("c", "ab", "dd"):
        last, out = ord(prompt[-1]) - 97, []
        for _ in range(30):
            z = torch.tensor(q.table64[last]).clone()
            z[q.prefix_ids] = -torch.inf
            last = int(torch.multinomial(torch.softmax(z, -1)[None], 1, generator=g)[0, 0])
            out.append(last)
        assert a[["ab", "c", "dd"].index(prompt)] == bytes(97 + t for t in out)


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
