"""losses.regularizers: sigmaReparam against its defining formula, the entropy penalties by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from entropykit.losses.regularizers import (
    SigmaReparam,
    aem_loss,
    attention_entropy_penalty,
    remove_sigma_reparam,
    sigma_reparam,
    spectral_norms,
)


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4, bias=False))


def test_outputs_unchanged_at_conversion_and_names() -> None:
    net = _net()
    x = torch.randn(3, 6)
    before = net(x)
    assert sigma_reparam(net) == ["0", "2"]
    torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)


def test_one_step_matches_the_formula() -> None:
    """W_hat = gamma W / (v^T W u'), u' = normalize(W^T v), v = normalize(W u) (apple/ml-sigma-reparam)."""
    torch.manual_seed(1)
    w = torch.randn(5, 7, dtype=torch.float64)
    p = SigmaReparam(w).train()
    u = p.u.clone()
    v = torch.nn.functional.normalize(w @ u, dim=0)
    u2 = torch.nn.functional.normalize(w.t() @ v, dim=0)
    sigma = v @ w @ u2
    gamma = torch.linalg.matrix_norm(w, ord=2)  # gamma starts at the SVD spectral norm
    torch.testing.assert_close(p(w), gamma * w / sigma)
    torch.testing.assert_close(p.u, u2)  # u advanced in training
    torch.testing.assert_close(p.spectral_norm, sigma.reshape(1))
    p.eval()
    p(w * 3)
    torch.testing.assert_close(p.u, u2)  # not in eval


def test_power_iteration_tracks_the_spectral_norm_and_the_gradient_flows() -> None:
    net = _net(2)
    sigma_reparam(net)
    lin = net[0]
    w = lin.parametrizations.weight.original
    with torch.no_grad():
        w.mul_(3)  # the weight moves away from where u was initialised
    for _ in range(30):
        net(torch.randn(2, 6))
    true = torch.linalg.matrix_norm(w.detach(), ord=2).item()
    assert spectral_norms(net)["0"] == pytest.approx(true, rel=1e-4)
    # the effective weight's spectral norm is gamma
    gamma = lin.parametrizations.weight[0].gamma
    assert torch.linalg.matrix_norm(lin.weight.detach(), ord=2).item() == pytest.approx(
        gamma.item(), rel=1e-3
    )
    net(torch.randn(4, 6)).square().sum().backward()
    assert gamma.grad is not None and w.grad is not None and bool(w.grad.abs().sum() > 0)


def test_stats_only_remove_and_state_dict() -> None:
    net = _net(3)
    w0 = net[0].weight.detach().clone()
    sigma_reparam(net, stats_only=True, include=lambda name, m: name == "0")
    assert torch.equal(net[0].weight, w0)  # stats only: the weight is used as is
    assert set(spectral_norms(net)) == {"0"}
    with pytest.raises(ValueError, match="already has a parametrisation"):
        sigma_reparam(net, include=lambda name, m: name == "0")
    net2 = _net(4)
    sigma_reparam(net2)
    with torch.no_grad():
        net2[0].parametrizations.weight[0].gamma.mul_(0.5)
    effective = net2[0].weight.detach().clone()
    state = net2.state_dict()
    assert "0.parametrizations.weight.original" in state and "0.parametrizations.weight.0.gamma" in state
    assert remove_sigma_reparam(net2) == ["0", "2"]
    torch.testing.assert_close(net2[0].weight.detach(), effective)
    with pytest.raises(ValueError, match=r"must contain an nn\.Linear"):
        sigma_reparam(nn.ReLU())


def test_entropy_penalties_by_hand() -> None:
    h = torch.tensor([0.5, 1.0, 2.5])
    assert attention_entropy_penalty(h, floor=1.0).item() == pytest.approx(0.25 / 3)
    assert attention_entropy_penalty(h, floor=1.0, reduction="sum").item() == pytest.approx(0.25)
    band = attention_entropy_penalty(h, target=1.5, tolerance=0.5, reduction="none")
    torch.testing.assert_close(band, torch.tensor([0.25, 0.0, 0.25]))
    d = {"a": torch.tensor([0.5]), "b": torch.tensor([1.0, 2.5])}
    torch.testing.assert_close(
        attention_entropy_penalty(d, floor=1.0), attention_entropy_penalty(h, floor=1.0)
    )
    x = h.clone().requires_grad_()
    attention_entropy_penalty(x, floor=1.0, reduction="sum").backward()
    torch.testing.assert_close(x.grad, torch.tensor([-1.0, 0.0, 0.0]))  # d/dH relu(f - H)^2 = -2 (f - H)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of floor and target"),
        ({"floor": 1.0, "target": 1.0}, "exactly one of floor and target"),
        ({"floor": float("nan")}, "floor must be a finite number"),
        ({"target": 1.0, "tolerance": -1.0}, r"tolerance must be a finite number in \[0.0"),
        ({"floor": 1.0, "reduction": "avg"}, "reduction must be one of"),
    ],
)
def test_penalty_bad_input(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        attention_entropy_penalty(torch.ones(3), **kwargs)
    with pytest.raises(ValueError, match="empty mapping"):
        attention_entropy_penalty({}, floor=1.0)


def test_aem_is_minus_the_attention_entropy() -> None:
    s = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    p = s.softmax(-1)
    expected = (p * p.log()).sum(-1)  # -H per bag
    torch.testing.assert_close(aem_loss(s, reduction="none"), expected)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    pm = s[0, :2].softmax(-1)
    torch.testing.assert_close(aem_loss(s, mask, reduction="none")[0], (pm * pm.log()).sum())
    with pytest.raises(ValueError, match="at least one instance"):
        aem_loss(s, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        aem_loss(s, torch.ones(2, 3, dtype=torch.bool))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), scale=st.floats(0.0, 20.0), seed=st.integers(0, 1000))
def test_aem_bounds(n: int, scale: float, seed: int) -> None:
    s = torch.randn(3, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    loss = aem_loss(s, reduction="none")
    assert bool((loss <= 1e-12).all()) and bool((loss >= -math.log(n) - 1e-9).all())
