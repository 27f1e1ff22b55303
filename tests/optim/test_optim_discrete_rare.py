"""Categorical CEM (reference step, convergence, properties) and rare-event estimation vs SciPy tails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from entropykit.optim import (
    categorical_ask,
    categorical_init,
    categorical_tell,
    rare_event_probability,
)

SETTINGS = settings(max_examples=25, deadline=None)


def test_categorical_step_matches_counting_reference() -> None:
    rng = np.random.default_rng(0)
    n, d, k_cls, k = 10, 3, 4, 3
    x = rng.integers(0, k_cls, size=(n, d))
    f = rng.normal(size=n)
    f[int(np.argmin(f))] = np.nan  # the best one is NaN: never an elite
    p0 = rng.dirichlet(np.ones(k_cls), size=d)
    s = categorical_init(torch.tensor(p0), popsize=n, elite=k, old_weight=0.25, prob_min=0.01)
    s = categorical_tell(s, torch.tensor(x), torch.tensor(f))
    order = sorted((i for i in range(n) if math.isfinite(f[i])), key=lambda i: (f[i], i))[:k]
    counts = np.zeros((d, k_cls))
    for i in order:
        for j in range(d):
            counts[j, x[i, j]] += 1 / k
    ref = 0.25 * p0 + 0.75 * counts
    ref = np.maximum(ref, 0.01)
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(s.probs.numpy(), ref, rtol=1e-12, atol=1e-14)
    assert s.nonfinite == 1


def test_categorical_cem_finds_a_known_discrete_optimum() -> None:
    target = torch.tensor([3, 0, 2, 2, 1, 0, 3, 1, 2, 0, 1, 3])
    g = torch.Generator().manual_seed(0)
    s = categorical_init(torch.full((2, 12, 4), 0.25), popsize=60, elite=0.1, old_weight=0.3)
    for _ in range(40):
        x = categorical_ask(s, g)
        s = categorical_tell(s, x, (x != target).sum(-1).float())  # Hamming distance, two problems
    assert s.best_f.tolist() == [0.0, 0.0]
    assert torch.equal(s.best_x, target.expand(2, 12)) and torch.equal(
        s.probs.argmax(-1), target.expand(2, 12)
    )


def test_categorical_maximize_and_samples_follow_probs() -> None:
    g = torch.Generator().manual_seed(1)
    s = categorical_init(torch.tensor([[0.7, 0.2, 0.1]]), popsize=20_000, maximize=True)
    x = categorical_ask(s, g)
    freq = torch.bincount(x[:, 0], minlength=3).double() / 20_000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), atol=0.015)
    s = categorical_init(torch.full((1, 3), 1 / 3), popsize=3, elite=1, maximize=True)
    s = categorical_tell(s, torch.tensor([[0], [1], [2]]), torch.tensor([1.0, 5.0, 2.0]))
    assert s.probs.tolist() == [[0.0, 1.0, 0.0]] and s.best_f.item() == 5.0


@SETTINGS
@given(st.integers(1, 3), st.integers(2, 10), st.integers(1, 3), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_categorical_batch_equals_loop_and_monotone_invariance(
    b: int, n: int, d: int, kc: int, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(b, d, kc, generator=g, dtype=torch.float64) + 0.1
    x = torch.randint(0, kc, (b, n, d), generator=g)
    f = torch.randn(b, n, generator=g, dtype=torch.float64)
    opts = dict(popsize=n, elite=max(1, n // 3), old_weight=0.2)
    batch = categorical_tell(categorical_init(probs, **opts), x, f)
    again = categorical_tell(categorical_init(probs, **opts), x, torch.exp(2 * f))
    assert torch.equal(batch.probs, again.probs)
    for i in range(b):
        one = categorical_tell(categorical_init(probs[i], **opts), x[i], f[i])
        torch.testing.assert_close(batch.probs[i], one.probs, rtol=1e-12, atol=1e-12)


def test_categorical_bad_input() -> None:
    with pytest.raises(ValueError, match="probs must have shape"):
        categorical_init(torch.ones(3))
    with pytest.raises(ValueError, match="probs must be finite"):
        categorical_init(torch.tensor([[0.5, -0.1]]))
    with pytest.raises(ValueError, match="elite must be <= popsize"):
        categorical_init(torch.full((2, 2), 0.5), popsize=3, elite=4)
    with pytest.raises(ValueError, match="prob_min must be <= 1 / K"):
        categorical_init(torch.full((2, 2), 0.5), prob_min=0.6)
    s = categorical_init(torch.full((2, 3), 1 / 3), popsize=4)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        categorical_tell(s, torch.tensor([[0, 3]]), torch.zeros(1))
    with pytest.raises(TypeError, match="integer class indices"):
        categorical_tell(s, torch.zeros(1, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="f must have shape"):
        categorical_tell(s, torch.zeros(2, 2, dtype=torch.long), torch.zeros(3))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("dim", "threshold"), [(1, 5.0), (10, 15.0)])
def test_rare_event_gaussian_tail_within_its_standard_error(seed: int, dim: int, threshold: float) -> None:
    # P(sum of dim standard normals >= c) = norm.sf(c / sqrt(dim)); dim 1, c 5: 2.87e-7
    truth = norm.sf(threshold / math.sqrt(dim))
    r = rare_event_probability(
        lambda x: x.sum(-1), threshold, dim, generator=torch.Generator().manual_seed(seed)
    )
    assert r.reached and r.levels[-1] == threshold
    assert abs(r.probability - truth) <= 3 * r.std_error
    assert 0 < r.relative_error < 0.15


def test_rare_event_with_a_given_nominal_density_and_adapted_std() -> None:
    # nominal N(0, 2^2) in 2-D given as a log-density; event x0 + x1 >= 12: sf(12 / (2 sqrt 2))
    def log_density(x: torch.Tensor) -> torch.Tensor:
        return (-0.5 * (x / 2) ** 2 - math.log(2) - 0.5 * math.log(2 * math.pi)).sum(-1)

    truth = norm.sf(12 / (2 * math.sqrt(2)))
    r = rare_event_probability(
        lambda x: x.sum(-1),
        12.0,
        2,
        log_density=log_density,
        std=2.0,
        adapt_std=True,
        n_samples=4000,
        generator=torch.Generator().manual_seed(0),
    )
    assert r.reached and abs(r.probability - truth) <= 3 * r.std_error and r.relative_error < 0.1


def test_rare_event_nan_scores_count_as_misses_and_bad_input() -> None:
    score = lambda x: torch.where(x[:, 0] < 0, torch.full_like(x[:, 0], float("nan")), x[:, 0])  # noqa: E731
    r = rare_event_probability(score, 4.0, 1, generator=torch.Generator().manual_seed(0))
    assert abs(r.probability - norm.sf(4.0)) <= 3 * r.std_error
    with pytest.raises(ValueError, match="std must be positive"):
        rare_event_probability(score, 4.0, 1, std=0.0)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        rare_event_probability(score, math.inf, 1)
    with pytest.raises(ValueError, match="rho must be"):
        rare_event_probability(score, 4.0, 1, rho=0.9)
    with pytest.raises(ValueError, match=r"score\(x\) must have shape"):
        rare_event_probability(lambda x: x, 4.0, 2)
    with pytest.raises(TypeError, match="score must be callable"):
        rare_event_probability(1.0, 4.0, 1)  # type: ignore[arg-type]
