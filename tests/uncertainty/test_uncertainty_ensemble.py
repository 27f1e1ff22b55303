"""total = aleatoric + epistemic against a naive float64 computation; MC dropout; the early-exit cascade."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from entropykit import uncertainty as unc


def naive(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p: (M, N, K) probabilities; entropies with 0 log 0 = 0, MI as the mean KL to the mean."""

    def h(q: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(q > 0, q * np.log(q), 0.0).sum(-1)

    mean = p.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - np.log(mean)), 0.0).sum(-1).mean(0)
    return h(mean), h(p).mean(0), kl


def test_decomposition_against_naive_and_identity() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 30, 5, generator=g, dtype=torch.float64) * 3
    z[2, 4, 1] = -torch.inf  # a member that rules a class out
    d = unc.decompose(z)
    t, a, e = naive(torch.softmax(z, -1).numpy())
    np.testing.assert_allclose(d.total.numpy(), t, atol=1e-12)
    np.testing.assert_allclose(d.aleatoric.numpy(), a, atol=1e-12)
    np.testing.assert_allclose(d.epistemic.numpy(), e, atol=1e-12)
    np.testing.assert_allclose((d.aleatoric + d.epistemic).numpy(), d.total.numpy(), atol=1e-12)
    bits = unc.decompose(z, base=2)
    np.testing.assert_allclose(bits.epistemic.numpy(), e / np.log(2), atol=1e-12)
    # the member axis can sit anywhere but last
    moved = unc.decompose(z.movedim(0, 1), dim=1)
    np.testing.assert_allclose(moved.total.numpy(), t, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(2, 9), st.floats(0.1, 10.0), st.integers(0, 2**31 - 1))
def test_decomposition_properties(m: int, k: int, scale: float, seed: int) -> None:
    z = torch.randn(m, 4, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    d = unc.decompose(z)
    assert bool((d.epistemic >= -1e-12).all()) and bool((d.aleatoric >= -1e-12).all())
    assert bool((d.total <= np.log(k) + 1e-12).all())
    torch.testing.assert_close(d.aleatoric + d.epistemic, d.total, atol=1e-11, rtol=0)
    if m == 1:
        assert float(d.epistemic.abs().max()) < 1e-12  # one member: no disagreement


def test_identical_members_have_no_epistemic_uncertainty() -> None:
    z = torch.randn(1, 10, 4, dtype=torch.float64).expand(5, -1, -1)
    assert float(unc.decompose(z).epistemic.abs().max()) < 1e-12


def test_mc_dropout_restores_modes_and_leaves_global_rng() -> None:
    net = nn.Sequential(nn.Linear(4, 32), nn.BatchNorm1d(32), nn.Dropout(0.3), nn.Linear(32, 3)).eval()
    x = torch.randn(6, 4)
    state = torch.random.get_rng_state()
    a = unc.mc_dropout(net, x, 5, generator=torch.Generator().manual_seed(1))
    b = unc.mc_dropout(net, x, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b) and a.shape == (5, 6, 3)
    assert not net.training and not net[1].training and not net[2].training  # BatchNorm never trained
    assert float(a.std(0).max()) > 0
    with torch.no_grad():
        assert not torch.allclose(a[0], net(x))
    with pytest.raises(ValueError, match="dropout layers"):
        unc.mc_dropout(nn.Linear(2, 2), torch.randn(1, 2), 2)


def test_cascade_by_hand_with_a_window() -> None:
    # 3 exits, one sequence of 4 tokens, vocabulary 2; entropies set through the logits
    sure, unsure = torch.tensor([8.0, 0.0]), torch.tensor([0.0, 0.0])
    exit0 = torch.stack([sure, unsure, sure, sure])
    exit1 = torch.stack([sure, sure, unsure, sure])
    exit2 = torch.stack([sure, sure, sure, sure])
    ex = torch.stack([exit0, exit1, exit2])[:, None]  # (3, 1, 4, 2)
    h_sure = float(unc.decompose(sure[None, None]).total)
    ln2 = float(np.log(2))
    # window 2 at exit 0: [h, (h+ln2)/2, (ln2+h)/2, h] with h ~ 0.003: below 0.3 at t = 0 and t = 3
    assert (h_sure + ln2) / 2 > 0.3 > h_sure
    c = unc.early_exit_cascade(ex, 0.3, window=2)
    assert c.exit.tolist() == [[0, 1, 2, 0]]  # t=2: exit 1's window is (h + ln2)/2 too -> exit 2
    assert c.uncertainty[0, 0].item() == pytest.approx(h_sure, abs=1e-6)
    assert c.uncertainty[0, 1].item() == pytest.approx(h_sure, abs=1e-6)  # exit 1, window (h, h)
    assert c.compute_saved == pytest.approx(1 - (1 + 2 + 3 + 1) / 4 / 3)
    torch.testing.assert_close(c.logits[0, 2], exit2[2])
    c1 = unc.early_exit_cascade(ex, 0.3)
    assert c1.exit.tolist() == [[0, 1, 0, 0]]
    costly = unc.early_exit_cascade(ex, 0.3, costs=[1.0, 1.0, 1.0])
    assert costly.compute_saved == pytest.approx(0.0)
    never = unc.early_exit_cascade(ex, -1.0)
    assert never.exit.tolist() == [[2, 2, 2, 2]] and never.compute_saved == pytest.approx(0.0)


def test_cascade_custom_uncertainty_and_errors() -> None:
    ex = torch.randn(3, 5, 4)
    c = unc.early_exit_cascade(ex, 0.5, uncertainty=lambda z: 1 - torch.softmax(z, -1).amax(-1))
    assert c.exit.shape == (5,)
    with pytest.raises(ValueError, match="window > 1 needs a time axis"):
        unc.early_exit_cascade(ex[:, 0], 0.5, window=2)
    with pytest.raises(ValueError, match="costs must hold 3"):
        unc.early_exit_cascade(ex, 0.5, costs=[1.0, 2.0])
    with pytest.raises(ValueError, match="threshold must be a number"):
        unc.early_exit_cascade(ex, float("nan"))
    with pytest.raises(ValueError, match="exit_logits"):
        unc.early_exit_cascade(torch.full((2, 3, 4), float("nan")), 0.5)
    with pytest.raises(ValueError, match="dim must index a member axis"):
        unc.decompose(torch.randn(3, 4), dim=1)
