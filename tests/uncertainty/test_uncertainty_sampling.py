"""Sample-based estimators: semantic entropy against a hand-worked clustering, the spectral family on
graphs with known spectra, ROUGE-L against rouge-score (when installed) and by hand, SNNE by hand,
samples from entropykit's generate, the NLI path (skipped without a hub), bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import uncertainty as unc


def _samples(texts: list[str], probs: list[float], lengths: list[int] | None = None) -> unc.Samples:
    n = len(texts)
    return unc.Samples(
        texts,
        torch.tensor(probs, dtype=torch.float64).log(),
        torch.tensor(lengths if lengths is not None else [1] * n),
    )


def test_semantic_entropy_hand_worked() -> None:
    # 5 answers, 3 meanings: {Paris, paris!, The Paris}, {Lyon}, {Rome, rome}
    s = _samples(["Paris", "Lyon", "paris!", "Rome", "The Paris"], [0.2, 0.1, 0.1, 0.05, 0.05])
    assert unc.cluster(s).tolist() == [0, 1, 0, 2, 0]
    # p(c) over the samples' normalised probabilities: total 0.5 -> (0.35, 0.1, 0.05) / 0.5
    pc = np.array([0.7, 0.2, 0.1])
    assert unc.semantic_entropy(s) == pytest.approx(-(pc * np.log(pc)).sum(), abs=1e-12)
    f = np.array([3, 1, 1]) / 5
    assert unc.discrete_semantic_entropy(s) == pytest.approx(-(f * np.log(f)).sum(), abs=1e-12)
    assert unc.num_semantic_sets(s) == 3.0
    # length normalisation: p -> exp(log p / len)
    s2 = _samples(["a x", "b"], [0.04, 0.2], [2, 1])  # (0.2, 0.2) after normalisation
    assert unc.semantic_entropy(s2, length_normalised=True) == pytest.approx(math.log(2), abs=1e-12)
    assert unc.semantic_entropy(s2) == pytest.approx(
        -(0.04 / 0.24 * math.log(0.04 / 0.24) + 0.2 / 0.24 * math.log(0.2 / 0.24)), abs=1e-12
    )


def test_user_equivalence_and_given_clusters() -> None:
    calls: list[tuple[str, str]] = []

    def same_first_letter(a: str, b: str) -> bool:
        calls.append((a, b))
        return a[0].lower() == b[0].lower()

    texts = ["apple", "Avocado", "banana", "blueberry", "cherry"]
    lab = unc.cluster(texts, same_first_letter)
    assert lab.tolist() == [0, 0, 1, 1, 2]
    assert ("apple", "banana") in calls and ("banana", "blueberry") in calls  # compared to first members
    s = _samples(texts, [0.2] * 5)
    assert unc.semantic_entropy(s, equivalence=same_first_letter) == pytest.approx(
        unc.semantic_entropy(s, clusters=lab), abs=1e-15
    )
    assert unc.discrete_semantic_entropy(texts, clusters=torch.tensor([0, 0, 0, 0, 0])) == 0.0


def test_predictive_entropy() -> None:
    s = _samples(["a", "b", "c"], [0.5, 0.25, 0.125], [1, 2, 3])
    want = -(np.log(0.5) + np.log(0.25) + np.log(0.125)) / 3
    assert unc.predictive_entropy(s) == pytest.approx(want, abs=1e-12)
    assert unc.predictive_entropy(s, length_normalised=True) == pytest.approx(
        -(np.log(0.5) + np.log(0.25) / 2 + np.log(0.125) / 3) / 3, abs=1e-12
    )


def test_rouge_l_by_hand_and_against_rouge_score() -> None:
    assert unc.rouge_l("a b c d", "a b c d") == 1.0
    assert unc.rouge_l("x y", "z w") == 0.0
    assert unc.rouge_l("police killed the gunman", "the gunman police killed") == pytest.approx(2 * 2 / 8)
    assert unc.rouge_l("abcd", "abed", unit="char") == pytest.approx(2 * 3 / 8)
    rs = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rs.RougeScorer(["rougeL"])
    cases = (
        ("police killed the gunman", "police kill the gunman"),
        ("one two three four", "two four"),
        ("The cat -- sat, on the MAT!", "a cat sat on a mat"),
        ("", "x"),
        ("x1 y-2", "X1 y 2"),
    )
    for a, b in cases:
        assert unc.rouge_l(a, b) == pytest.approx(scorer.score(a, b)["rougeL"].fmeasure, abs=1e-12)


def test_spectral_family_on_known_graphs() -> None:
    # block-diagonal 0/1 similarity = disjoint cliques: L has eigenvalue 0 once per clique, 1 otherwise
    texts = ["yes", "yes", "no", "maybe", "no"]
    w = unc.similarity_matrix(texts, "exact")
    assert unc.eigval_laplacian(w) == pytest.approx(3.0, abs=1e-10)
    assert unc.degree(w) == pytest.approx(1 - (4 + 1 + 4) / 25, abs=1e-12)
    # eigenvalues against numpy on a dense random similarity
    g = np.random.default_rng(0)
    a = g.uniform(0, 1, (6, 6))
    a = (a + a.T) / 2
    np.fill_diagonal(a, 1.0)
    d = a.sum(1)
    lap = np.eye(6) - a / np.sqrt(np.outer(d, d))
    lam = np.linalg.eigvalsh(lap)
    assert unc.eigval_laplacian(torch.tensor(a)) == pytest.approx(np.clip(1 - lam, 0, None).sum(), abs=1e-10)
    vec = np.linalg.eigh(lap)[1][:, : max(1, int((lam < 0.9).sum()))]
    want = np.linalg.norm(vec - vec.mean(0))
    assert unc.eccentricity(torch.tensor(a)) == pytest.approx(want, abs=1e-10)
    assert unc.eccentricity(torch.ones(4, 4, dtype=torch.float64)) == pytest.approx(0.0, abs=1e-12)


def test_snne_by_hand() -> None:
    w = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    want = -math.log(math.exp(1) + math.exp(0.5))
    assert unc.snne(w) == pytest.approx(want, abs=1e-12)
    assert unc.snne(w, tau=0.5) == pytest.approx(-math.log(math.exp(2) + math.exp(1)), abs=1e-12)
    w3 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    rows = np.log([math.e + 2, 2 * math.e + 1, 2 * math.e + 1])
    lp = torch.log(torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert unc.snne(w3, log_probs=lp) == pytest.approx(-(0.5 * rows[0] + 0.25 * rows[1] + 0.25 * rows[2]))
    # more agreement -> lower SNNE
    assert unc.snne(torch.ones(3, 3, dtype=torch.float64)) < unc.snne(torch.eye(3, dtype=torch.float64))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d e", "e"]), min_size=1, max_size=8))
def test_semantic_measures_properties(texts: list[str]) -> None:
    lab = unc.cluster(texts)
    k = int(lab.max()) + 1
    s = unc.Samples(texts, torch.full((len(texts),), -1.0, dtype=torch.float64), torch.ones(len(texts)))
    # equal probabilities: semantic entropy = discrete semantic entropy, both in [0, log k]
    se = unc.semantic_entropy(s)
    assert se == pytest.approx(unc.discrete_semantic_entropy(texts), abs=1e-12)
    assert -1e-12 <= se <= math.log(k) + 1e-12
    w = unc.similarity_matrix(texts, "exact")
    assert unc.eigval_laplacian(w) == pytest.approx(k, abs=1e-9)
    assert 0.0 <= unc.lexical_similarity(texts) <= 1.0


def test_samples_from_entropykit_generate() -> None:
    from entropykit.decoding import TopK, generate
    from entropykit.models import load_model

    lm = load_model("bytegpt-small")
    prompt = torch.tensor([lm.prefix_ids + lm.encode("import ").ids] * 4)
    out = generate(
        lm,
        prompt,
        processors=[TopK(20)],
        max_new_tokens=5,
        stop=[32],
        generator=torch.Generator().manual_seed(0),
    )
    s = unc.Samples.from_generation(out, lambda ids: lm.decode(ids).decode("utf-8", "replace"), strip=[32])
    assert len(s) == 4 and all(" " not in t for t in s.texts)
    assert out.stats is not None
    for b in range(4):
        n = len(out.new_tokens[b])
        assert int(s.lengths[b]) == n
        assert float(s.log_probs[b]) == pytest.approx(
            -float(out.stats.surprisal_bits[b, :n].double().sum()) * math.log(2), rel=1e-12
        )
    ans = unc.Answer(samples=s)
    assert set(unc.estimate(ans)) == set(unc.answers.from_samples)


def test_collect_and_callable_similarity() -> None:
    s = unc.collect(lambda i: (f"answer {i % 2}", [-0.5] * (i + 1)), 4)
    assert s.lengths.tolist() == [1, 2, 3, 4] and s.log_probs.tolist() == [-0.5, -1.0, -1.5, -2.0]
    w = unc.similarity_matrix(s, lambda a, b: 1.0 if a == b else 0.25)
    assert w[0, 2] == 1.0 and w[0, 1] == 0.25


def test_nli_equivalence_needs_a_hub_or_cache() -> None:
    pytest.importorskip("transformers")
    from entropykit.models.adapters import _hub_reachable

    if not _hub_reachable():
        pytest.skip("no model hub reachable (the NLI model is loaded by name)")
    try:
        nli = unc.NLI("microsoft/deberta-base-mnli")
    except ValueError as exc:
        pytest.skip(f"NLI model not available: {exc}")
    assert nli.equivalent("The capital of France is Paris.", "Paris is the capital of France.")
    assert not nli.equivalent("It is raining.", "It is sunny.")
    lab = unc.cluster(["Paris.", "It is Paris.", "Rome."], nli)
    assert lab[0] != lab[2]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one sampled answer"):
        unc.Samples([], torch.zeros(0), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one sampled answer"):
        unc.discrete_semantic_entropy([])
    with pytest.raises(TypeError, match="texts must be a list of strings"):
        unc.cluster("abc")
    with pytest.raises(TypeError, match="texts must hold strings"):
        unc.lexical_similarity(["a", 3])
    with pytest.raises(ValueError, match="log_probs must be log-probabilities"):
        unc.Samples(["a"], torch.tensor([0.3]), torch.tensor([1]))
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        unc.Samples(["a", "b"], torch.tensor([-0.3]), torch.tensor([1]))
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        unc.Samples(["a"], torch.tensor([-0.3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="equivalence must be one of"):
        unc.cluster(["a"], "nli")
    with pytest.raises(ValueError, match=r"similarity must hold values in \[0, 1\]"):
        unc.degree(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="similarity must return values in"):
        unc.similarity_matrix(["a", "b"], lambda a, b: 3.0)
    with pytest.raises(ValueError, match="tau must be a positive"):
        unc.snne(torch.eye(2), tau=0)
    with pytest.raises(ValueError, match="needs sampled answers"):
        unc.estimate(unc.Answer(), ["semantic_entropy"])
