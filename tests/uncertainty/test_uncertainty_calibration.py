"""Calibration metrics against torchmetrics / netcal (when installed) and against naive float64 loops;
temperature scaling against a grid search; the bad inputs the issue names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import uncertainty as unc


def _data(n: int = 400, k: int = 5, scale: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    y = torch.distributions.Categorical(logits=z / 2).sample()  # over-confident by a factor 2
    return z, y


def naive_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int, norm: str = "l1") -> float:
    """Equal-width bins by explicit interval tests: [lo, hi) and the last bin [lo, 1]."""
    n = len(conf)
    gaps, weights = [], []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= 1.0))
        if inside.sum() == 0:
            continue
        gaps.append(abs(correct[inside].mean() - conf[inside].mean()))
        weights.append(inside.sum() / n)
    g, w = np.array(gaps), np.array(weights)
    if norm == "max":
        return float(g.max())
    if norm == "l2":
        return float(math.sqrt((w * g**2).sum()))
    return float((w * g).sum())


def test_ece_mce_rmsce_match_naive_loops() -> None:
    z, y = _data()
    p = torch.softmax(z, -1).numpy()
    conf, correct = p.max(1), (p.argmax(1) == y.numpy()).astype(float)
    for norm in ("l1", "l2", "max"):
        for bins in (1, 7, 15):
            assert unc.ece(z, y, n_bins=bins, norm=norm) == pytest.approx(
                naive_ece(conf, correct, bins, norm), abs=1e-12
            )
    assert unc.mce(z, y) == pytest.approx(naive_ece(conf, correct, 15, "max"), abs=1e-12)


def test_ece_matches_torchmetrics() -> None:
    tm = pytest.importorskip("torchmetrics.functional.classification")
    for seed in range(3):
        z, y = _data(seed=seed)
        p = torch.softmax(z.float(), -1)
        for norm in ("l1", "l2", "max"):
            ref = float(tm.multiclass_calibration_error(p, y, num_classes=5, n_bins=15, norm=norm))
            assert unc.ece(p, y, probs=True, norm=norm) == pytest.approx(ref, abs=1e-6)
        # binary: torchmetrics bins the positive-class probability against the label
        pb, yb = p[:, 0], (y == 0).long()
        ref = float(tm.binary_calibration_error(pb, yb, n_bins=10))
        assert unc.confidence_ece(pb, yb, n_bins=10) == pytest.approx(ref, abs=1e-6)


def test_ece_matches_netcal() -> None:
    metrics = pytest.importorskip("netcal.metrics")
    z, y = _data(seed=3)
    p = torch.softmax(z, -1).numpy()
    ref = metrics.ECE(bins=15).measure(p, y.numpy())
    assert unc.ece(z, y) == pytest.approx(ref, abs=1e-6)
    ref_mce = metrics.MCE(bins=15).measure(p, y.numpy())
    assert unc.mce(z, y) == pytest.approx(ref_mce, abs=1e-6)


def test_equal_mass_bins_by_hand() -> None:
    conf = torch.tensor([0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 0.95], dtype=torch.float64)
    correct = torch.tensor([0, 0, 1, 1, 0, 1, 1])
    # 3 bins of sizes 3, 2, 2 over the sorted confidences
    bins = [([0.1, 0.2, 0.3], [0, 0, 1]), ([0.6, 0.7], [1, 0]), ([0.9, 0.95], [1, 1])]
    want = sum(len(c) / 7 * abs(np.mean(a) - np.mean(c)) for c, a in bins)
    assert unc.confidence_ece(conf, correct, n_bins=3, binning="mass") == pytest.approx(want, abs=1e-12)


def test_classwise_brier_nll_against_naive() -> None:
    z, y = _data(n=120, k=4, seed=5)
    p = torch.softmax(z, -1).numpy()
    onehot = np.eye(4)[y.numpy()]
    cw = np.mean([naive_ece(p[:, k], onehot[:, k], 10) for k in range(4)])
    assert unc.classwise_ece(z, y, n_bins=10) == pytest.approx(cw, abs=1e-12)
    assert unc.brier(z, y) == pytest.approx(((p - onehot) ** 2).sum(1).mean(), abs=1e-12)
    assert unc.nll(z, y) == pytest.approx(float(F.cross_entropy(z, y)), abs=1e-12)
    assert unc.nll(torch.softmax(z, -1), y, probs=True) == pytest.approx(
        float(F.cross_entropy(z, y)), abs=1e-9
    )


def test_confidence_exactly_one_is_in_the_last_bin() -> None:
    # torchmetrics >= 1.0 would give it an extra bin; our bins (and netcal's) keep it in [14/15, 1]
    assert unc.confidence_ece([1.0, 0.95], [1, 0]) == pytest.approx(abs(0.5 - 0.975), abs=1e-12)
    assert unc.confidence_ece(
        torch.tensor([1.0, 0.95], dtype=torch.float64), torch.tensor([True, False])
    ) == unc.confidence_ece([1.0, 0.95], [1, 0])


def test_temperature_scaling_matches_grid_search() -> None:
    z, y = _data(n=600, seed=7)
    t = unc.fit_temperature(z, y)
    grid = torch.exp(torch.linspace(math.log(1.0), math.log(4.0), 1001, dtype=torch.float64))
    lp = torch.log_softmax(z[None] / grid[:, None, None], -1)
    nlls = -lp.gather(2, y[None, :, None].expand(len(grid), -1, 1)).mean((1, 2))
    t_grid = float(grid[nlls.argmin()])
    assert t == pytest.approx(t_grid, rel=2e-3)
    assert float(F.cross_entropy(z / t, y)) <= float(nlls.min()) + 1e-10
    assert 1.4 < t < 2.8  # data were generated at temperature 2
    assert unc.ece(z / t, y) < unc.ece(z, y)


def test_vector_scaling_beats_or_equals_temperature_on_its_fit_data() -> None:
    z, y = _data(n=300, seed=9)
    vs = unc.fit_vector_scaling(z, y)
    t = unc.fit_temperature(z, y)
    assert unc.nll(vs(z), y) <= unc.nll(z / t, y) + 1e-9
    assert vs.weight.shape == (5,) and vs.bias.shape == (5,)


def test_temperature_scaling_netcal_anchor() -> None:
    scaling = pytest.importorskip("netcal.scaling")
    z, y = _data(n=400, seed=11)
    p = torch.softmax(z, -1).numpy()
    ts = scaling.TemperatureScaling(method="mle")
    ts.fit(p, y.numpy())
    ours = torch.softmax(z / unc.fit_temperature(z, y), -1).numpy()
    ref = ts.transform(p)
    assert np.abs(ours - ref).max() < 1e-3  # netcal's optimiser stops at its own tolerance


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(2, 6), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_ece_property_naive_and_bounds(n: int, k: int, bins: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 4
    y = torch.randint(0, k, (n,), generator=g)
    p = torch.softmax(z, -1).numpy()
    conf, correct = p.max(1), (p.argmax(1) == y.numpy()).astype(float)
    e = unc.ece(z, y, n_bins=bins)
    assert e == pytest.approx(naive_ece(conf, correct, bins), abs=1e-12)
    assert 0.0 <= e <= unc.mce(z, y, n_bins=bins) + 1e-15 <= 1.0 + 1e-15
    assert 0.0 <= unc.ece(z, y, n_bins=bins, binning="mass") <= 1.0


def test_bad_input() -> None:
    z, y = _data(n=10)
    with pytest.raises(ValueError, match="sum to 1"):
        unc.ece(torch.full((3, 2), 0.7), torch.tensor([0, 1, 0]), probs=True)
    with pytest.raises(ValueError, match=">= 0"):
        unc.brier(torch.tensor([[1.5, -0.5]]), torch.tensor([0]), probs=True)
    with pytest.raises(ValueError, match="labels holds index 5"):
        unc.ece(z, torch.full((10,), 5))
    with pytest.raises(ValueError, match="labels must have length"):
        unc.nll(z, y[:3])
    with pytest.raises(TypeError, match="labels must hold integer"):
        unc.nll(z, y.double())
    with pytest.raises(ValueError, match="logits"):
        unc.ece(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="n_bins must be an int >= 1"):
        unc.ece(z, y, n_bins=0)
    with pytest.raises(ValueError, match="binning must be one of"):
        unc.ece(z, y, binning="quantile")
    with pytest.raises(ValueError, match=r"confidence must hold probabilities in \[0, 1\]"):
        unc.confidence_ece([1.2], [1])
    with pytest.raises(ValueError, match="correct must be 0/1"):
        unc.confidence_ece([0.2], [2])
    with pytest.raises(ValueError, match="confidence must not be empty"):
        unc.confidence_ece([], [])
    with pytest.raises(ValueError, match="at least one sample"):
        unc.ece(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
