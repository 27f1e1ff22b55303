"""Neural variational bounds: values with the analytically optimal critic of a Gaussian pair (the
bounds are tight there), known ceilings (InfoNCE <= log n), SMILE = DV when the clip is inactive,
and one short training run."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import estimators as est


def optimal_scores(n: int, rho: float, seed: int) -> tuple[torch.Tensor, float]:
    """f*(x, y) = log p(y | x) - log p(y): the density ratio, for which DV and NWJ equal the MI."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x, y = z[:, 0], rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]
    s2 = 1 - rho**2
    cond = -((y[None, :] - rho * x[:, None]) ** 2) / (2 * s2) - 0.5 * math.log(s2)
    return cond + y[None, :] ** 2 / 2, -0.5 * math.log(1 - rho**2)


@pytest.mark.parametrize("bound", ["dv", "nwj", "smile"])
def test_bounds_are_tight_at_the_optimal_critic(bound: str) -> None:
    scores, truth = optimal_scores(1500, 0.6, 0)
    if bound == "nwj":
        scores = scores + 1.0  # NWJ's optimal critic is 1 + log(density ratio)
    assert float(est.mi_bound(scores, bound, clip=50.0)) == pytest.approx(truth, abs=0.06)


def test_infonce_saturates_at_log_batch() -> None:
    scores, truth = optimal_scores(1500, 0.999, 1)  # truth 3.1 nats; log 16 = 2.77
    small = scores[:16, :16]
    val = float(est.mi_bound(small, "infonce"))
    assert val <= math.log(16) + 1e-12
    assert float(est.mi_bound(scores, "infonce")) == pytest.approx(truth, abs=0.1)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 2**31), scale=st.floats(0.1, 50))
def test_infonce_never_exceeds_log_n(n: int, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, n, generator=g, dtype=torch.float64) * scale
    scores.diagonal().add_(scale)  # favour the joint pairs
    assert float(est.mi_bound(scores, "infonce")) <= math.log(n) + 1e-9
    # SMILE with an inactive clip is DV; a permutation of the batch changes nothing
    clip = float(scores.abs().max()) + 1
    assert float(est.mi_bound(scores, "smile", clip=clip)) == pytest.approx(float(est.mi_bound(scores, "dv")))
    perm = torch.randperm(n, generator=g)
    nwj = float(est.mi_bound(scores, "nwj"))
    assert float(est.mi_bound(scores[perm][:, perm], "nwj")) == pytest.approx(nwj)


def test_smile_gradient_is_the_js_bound_gradient() -> None:
    scores = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    est.mi_bound(scores, "smile").backward()
    assert scores.grad is not None
    s2 = scores.detach().clone().requires_grad_(True)
    off = ~torch.eye(6, dtype=torch.bool)
    js = -torch.nn.functional.softplus(-s2.diagonal()).mean() - torch.nn.functional.softplus(s2[off]).mean()
    js.backward()
    assert torch.allclose(scores.grad, s2.grad)


@pytest.mark.parametrize("bound", ["mine"])
def test_training_finds_a_positive_bound_below_the_truth(bound: str) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1200, 2, generator=g)
    x, y = z[:, :1], 0.8 * z[:, :1] + 0.6 * z[:, 1:]
    truth = -0.5 * math.log(1 - 0.64)
    r = est.neural_mutual_info(x, y, bound=bound, hidden=16, embed=8, batch_size=64, steps=200,
                               eval_every=20, generator=g)
    assert 0.25 < r.estimate < truth + 0.15 and r.ceiling == math.inf and len(r.history) >= 1


def test_neural_validation() -> None:
    with pytest.raises(ValueError, match="scores must be a square"):
        est.mi_bound(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="bound must be one of"):
        est.mi_bound(torch.zeros(2, 2), "mi")
    with pytest.raises(ValueError, match="scores must be finite"):
        est.mi_bound(torch.tensor([[0.0, math.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="enough samples"):
        est.neural_mutual_info(torch.zeros(100, 1), torch.zeros(100, 1), batch_size=64)
    with pytest.raises(ValueError, match="critic must be one of"):
        est.neural_mutual_info(torch.zeros(100, 1), torch.zeros(100, 1), critic="bilinear")
