"""Batched rare-event estimation and Gaussian-mixture proposals vs SciPy's Gaussian tails; properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from entropykit.optim import rare_event_probabilities, rare_event_probability

SETTINGS = settings(max_examples=15, deadline=None)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", range(2))
def test_many_thresholds_at_once_within_their_standard_errors(seed: int) -> None:
    # P(sum of 10 N(0,1) >= c sqrt(10)) = sf(c), c from 2 to 6 (2.3e-2 .. 9.9e-10), one call
    c = torch.linspace(2.0, 6.0, 9, dtype=torch.float64)
    r = rare_event_probabilities(lambda x: x.sum(-1), c * math.sqrt(10), 10, generator=_g(seed))
    truth = torch.tensor(norm.sf(c.numpy()))
    assert r.probability.shape == (9,) and r.reached.all()
    assert ((r.probability - truth).abs() <= 3 * r.std_error).all()
    assert (r.relative_error < 0.1).all()
    # each problem climbs its own levels: the far thresholds need more, finished ones read NaN
    climbed = (~torch.isnan(r.levels)).sum(0)
    assert climbed[0] == 2 and bool((climbed[1:] >= climbed[:-1]).all()) and climbed[-1] >= 4
    last = r.levels[climbed - 1, torch.arange(9)]
    torch.testing.assert_close(last, c * math.sqrt(10))


def test_a_batch_of_nominal_densities_and_a_batched_log_density() -> None:
    # problem b: X ~ N(m_b, s_b^2) in 2-D, event x0 + x1 >= t_b; truth sf((t_b - 2 m_b) / (s_b sqrt 2))
    m = torch.tensor([[0.0], [1.0], [-2.0]], dtype=torch.float64)
    s = torch.tensor([[1.0], [0.5], [2.0]], dtype=torch.float64)
    t = torch.tensor([6.0, 5.5, 7.0], dtype=torch.float64)
    truth = norm.sf(((t - 2 * m[:, 0]) / (s[:, 0] * math.sqrt(2))).numpy())
    r = rare_event_probabilities(lambda x: x.sum(-1), t, 2, mean=m, std=s, generator=_g(0))
    assert np.all(np.abs(r.probability.numpy() - truth) <= 3 * r.std_error.numpy())

    def log_density(x: torch.Tensor) -> torch.Tensor:  # the same nominal densities, given by hand
        z = (x - m[:, None]) / s[:, None]
        return (-0.5 * z * z - s[:, None].log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    given_density = rare_event_probabilities(
        lambda x: x.sum(-1), t, 2, mean=m, std=s, log_density=log_density, generator=_g(0)
    )
    torch.testing.assert_close(given_density.probability, r.probability, rtol=1e-10, atol=0)


@SETTINGS
@given(
    st.integers(1, 4),
    st.floats(2.0, 4.0),
    st.floats(-3.0, 3.0),
    st.floats(0.2, 5.0),
    st.floats(-5.0, 5.0),
    st.integers(0, 2**31 - 1),
)
def test_estimates_are_equivariant_under_shifts_and_affine_scores(
    dim: int, c: float, shift: float, a: float, b: float, seed: int
) -> None:
    c = c * math.sqrt(dim)
    base = rare_event_probabilities(lambda x: x.sum(-1), torch.tensor([c, c + 0.5]), dim,
                                    n_samples=200, generator=_g(seed))
    # moving the nominal mean by `shift` and the threshold with it: the same samples, the same answer
    moved = rare_event_probabilities(lambda x: x.sum(-1), torch.tensor([c, c + 0.5]) + dim * shift, dim,
                                     mean=shift, n_samples=200, generator=_g(seed))
    torch.testing.assert_close(moved.probability, base.probability, rtol=1e-9, atol=1e-300)
    # an increasing affine map of the score and the threshold selects the same elites
    affine = rare_event_probabilities(lambda x: a * x.sum(-1) + b, a * torch.tensor([c, c + 0.5]) + b, dim,
                                      n_samples=200, generator=_g(seed))
    torch.testing.assert_close(affine.probability, base.probability, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("seed", range(3))
def test_mixture_proposal_finds_both_tails_where_one_gaussian_finds_none(seed: int) -> None:
    truth = 2 * norm.sf(4.5)  # P(|Z| >= 4.5) = 6.8e-6: two regions, symmetric about the mean
    mix = rare_event_probability(lambda x: x[:, 0].abs(), 4.5, 1, components=2, generator=_g(seed))
    assert mix.reached and abs(mix.probability - truth) <= 3 * mix.std_error and mix.relative_error < 0.1
    assert mix.proposal_weights is not None and mix.proposal_mean is not None
    assert mix.proposal_mean.shape == (2, 1) and sorted(np.sign(mix.proposal_mean[:, 0].tolist())) == [-1, 1]
    assert (mix.proposal_weights - 0.5).abs().max() < 0.2
    # one Gaussian: the elites of both tails average to the old mean, the levels never climb
    one = rare_event_probability(lambda x: x[:, 0].abs(), 4.5, 1, max_levels=8, generator=_g(seed))
    assert not one.reached and one.probability < 0.1 * truth


@pytest.mark.parametrize("seed", range(2))
def test_mixture_on_a_union_of_half_planes(seed: int) -> None:
    # P(max(X1, X2) >= 4) = 1 - Phi(4)^2 in 2-D; one Gaussian proposal drifts to one arm and reports
    # about half of it with a small error bar
    truth = 1 - norm.cdf(4.0) ** 2
    mix = rare_event_probability(lambda x: x.max(-1).values, 4.0, 2, components=2, generator=_g(seed))
    assert abs(mix.probability - truth) <= 3 * mix.std_error and mix.relative_error < 0.1
    one = rare_event_probability(lambda x: x.max(-1).values, 4.0, 2, generator=_g(seed))
    assert one.probability < 0.7 * truth and abs(one.probability - truth) > 3 * one.std_error


def test_batched_mixture_and_a_problem_without_finite_scores() -> None:
    t = torch.tensor([3.5, 4.5], dtype=torch.float64)
    r = rare_event_probabilities(lambda x: x[..., 0].abs(), t, 1, components=2, generator=_g(0))
    truth = 2 * norm.sf(t.numpy())
    assert np.all(np.abs(r.probability.numpy() - truth) <= 3 * r.std_error.numpy())
    assert r.proposal_weights.shape == (2, 2) and r.proposal_mean.shape == (2, 2, 1)

    def score(x: torch.Tensor) -> torch.Tensor:  # problem 1 scores NaN everywhere: it never climbs
        out = x[..., 0].clone()
        out[1] = float("nan")
        return out

    r = rare_event_probabilities(score, torch.tensor([3.0, 3.0]), 1, generator=_g(0))
    assert r.reached.tolist() == [True, False] and float(r.probability[1]) == 0.0
    assert abs(float(r.probability[0]) - norm.sf(3.0)) <= 3 * float(r.std_error[0])


def test_bad_input_to_the_batched_form() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sum(-1)

    with pytest.raises(ValueError, match="thresholds must be finite"):
        rare_event_probabilities(f, torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(ValueError, match="must broadcast"):
        rare_event_probabilities(f, torch.ones(3), 2, mean=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="components must be an int >= 1"):
        rare_event_probabilities(f, 3.0, 1, components=0)
    with pytest.raises(ValueError, match=r"log_density\(x\) must have shape"):
        rare_event_probabilities(f, torch.ones(2), 1, log_density=lambda x: x.sum((-1, -2)))
    with pytest.raises(ValueError, match=r"score\(x\) must have shape"):
        rare_event_probabilities(lambda x: x[0], torch.ones(2), 1)
    with pytest.raises(ValueError, match="mean must be a number or a vector of length 2"):
        rare_event_probability(f, 3.0, 2, mean=torch.zeros(3))
    with pytest.raises(TypeError, match="adapt_std must be a bool"):
        rare_event_probabilities(f, 3.0, 1, adapt_std=1)  # type: ignore[arg-type]
