"""PRR against a hand-computed case and lm-polygraph's formula; AUROC/AUPRC against scikit-learn;
rejection curves; the registry; the PNG figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import uncertainty as unc


def polygraph_area(estimator: np.ndarray, target: np.ndarray) -> float:
    """Transcribed from lm-polygraph (ue_metrics/pred_rej_area.py, PredictionRejectionArea.__call__,
    max_rejection = 1, without its target normalisation): area under the rejection curve."""
    ue = np.array(estimator)
    num_obs = len(ue)
    ue_argsort = np.argsort(ue)
    sorted_metrics = np.array(target)[ue_argsort]
    cumsum = np.cumsum(sorted_metrics)
    scores = (cumsum / np.arange(1, num_obs + 1))[::-1]
    return float(np.sum(scores) / num_obs)


def test_prr_hand_case() -> None:
    # 4 answers, quality (1, 0, 1, 0); uncertainty ranks them 0 < 2 < 1 < 3 except one swap
    u = [0.1, 0.3, 0.2, 0.4]  # order by certainty: a0 (1), a2 (1), a1 (0), a3 (0): perfect
    q = [1.0, 0.0, 1.0, 0.0]
    assert unc.prr(u, q) == pytest.approx(1.0)
    u2 = [0.1, 0.2, 0.3, 0.4]  # a0 (1), a1 (0), a2 (1), a3 (0)
    # kept means over k = 1..4: 1, 1/2, 2/3, 1/2 -> area 2.6667 / 4; oracle 1, 1, 2/3, 1/2; random 1/2
    area = (1 + 1 / 2 + 2 / 3 + 1 / 2) / 4
    oracle = (1 + 1 + 2 / 3 + 1 / 2) / 4
    assert unc.prr(u2, q) == pytest.approx((area - 0.5) / (oracle - 0.5), abs=1e-12)
    assert unc.prr(u2, q) == pytest.approx(4 / 7, abs=1e-12)  # (1/6) / (7/24)
    r, m = unc.rejection_curve(u2, q)
    np.testing.assert_allclose(r.numpy(), [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(m.numpy(), [0.5, 2 / 3, 0.5, 1.0])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(0, 2**31 - 1))
def test_prr_matches_polygraph_without_ties(n: int, seed: int) -> None:
    g = np.random.default_rng(seed)
    u = g.permutation(n).astype(float)  # distinct values: no ties
    q = g.uniform(0, 1, n)
    area = polygraph_area(u, q)
    oracle = polygraph_area(-q, q)
    random = q.mean()
    if oracle - random < 1e-12:
        return
    assert unc.prr(u, q) == pytest.approx((area - random) / (oracle - random), abs=1e-9)
    assert unc.prr(u, q) <= 1 + 1e-9


def test_ties_count_in_expectation() -> None:
    # a constant estimator earns exactly random (0), whatever argsort would have done
    assert unc.prr([0.5] * 6, [1, 0, 1, 1, 0, 0]) == pytest.approx(0.0, abs=1e-12)
    # a tie between one right and one wrong answer counts as half of each order
    q = [1.0, 0.0, 1.0, 0.0]
    tied = unc.prr([0.1, 0.5, 0.5, 0.9], q)
    a = unc.prr([0.1, 0.4, 0.6, 0.9], q)
    b = unc.prr([0.1, 0.6, 0.4, 0.9], q)
    assert tied == pytest.approx((a + b) / 2, abs=1e-12)


def test_auroc_auprc_match_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    g = np.random.default_rng(3)
    for _ in range(5):
        e = g.random(60) < 0.3
        u = np.round(g.normal(size=60) + e, 1)  # rounding makes ties
        assert unc.auroc(u, e) == pytest.approx(metrics.roc_auc_score(e, u), abs=1e-12)
        assert unc.auroc(torch.tensor(u), torch.tensor(e)) == unc.auroc(u, e)  # bool tensors read as 0/1
        assert unc.auprc(u, e) == pytest.approx(metrics.average_precision_score(e, u), abs=1e-12)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="quality must vary"):
        unc.prr([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="same length"):
        unc.prr([0.1, 0.2], [1, 0, 1])
    with pytest.raises(ValueError, match="uncertainty must be finite"):
        unc.prr([0.1, float("nan")], [1, 0])
    with pytest.raises(ValueError, match="uncertainty must not be empty"):
        unc.rejection_curve([], [])
    with pytest.raises(ValueError, match="errors must hold both"):
        unc.auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="errors must be 0/1"):
        unc.auprc([0.1, 0.2], [2, 0])


def test_registry_covers_both_kinds_and_runs() -> None:
    assert len(unc.METHODS) >= 12
    for name, m in unc.METHODS.items():
        assert m.name == name and m.reference and m.summary.startswith(("[one generation]", "[samples]"))
    logits = torch.randn(4, 30, dtype=torch.float64)
    tokens = unc.Tokens.from_logits(logits, torch.tensor([1, 2, 3, 4]))
    samples = unc.Samples(["a b", "a b", "c"], torch.tensor([-1.0, -1.0, -2.0]), torch.tensor([2, 2, 1]))
    out = unc.estimate(unc.Answer(tokens, samples), snne={"tau": 0.5})
    assert set(out) == set(unc.METHODS)
    assert out["max_sequence_probability"] == pytest.approx(float(unc.max_sequence_probability(tokens)))
    assert out["snne"] == pytest.approx(unc.snne(unc.similarity_matrix(samples), tau=0.5))
    assert out["num_semantic_sets"] == 2.0
    only = unc.estimate(unc.Answer(tokens=tokens))
    assert set(only) == set(unc.answers.single_generation)
    with pytest.raises(ValueError, match="methods must be one of"):
        unc.estimate(unc.Answer(tokens=tokens), ["nope"])
    with pytest.raises(ValueError, match="needs the answer's per-token statistics"):
        unc.estimate(unc.Answer(samples=samples), ["perplexity"])


def test_pngs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    from entropykit.uncertainty import plots

    z = torch.randn(80, 4)
    y = torch.randint(0, 4, (80,))
    path = tmp_path / "rel.png"
    png = plots.reliability_diagram(z, y, path, binning="mass", n_bins=5)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and path.read_bytes() == png
    q = (torch.rand(30) < 0.5).double()
    png2 = plots.rejection_plot({"a": torch.rand(30), "b": torch.rand(30)}, q, tmp_path / "rej.png")
    assert png2[:4] == b"\x89PNG" and (tmp_path / "rej.png").exists()
    with pytest.raises(ValueError, match="curves must be a non-empty mapping"):
        plots.rejection_plot({}, q)
