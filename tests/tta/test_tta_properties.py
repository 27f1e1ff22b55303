"""Hypothesis property tests of the tta formulas."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.measures import entropy
from entropykit.tta import functional as tf

SETTINGS = settings(max_examples=15, deadline=None)


def _logits(seed: int, n: int, c: int, scale: float) -> torch.Tensor:
    return scale * torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 12), st.integers(2, 6), st.floats(0.1, 8.0), st.floats(0.0, 1.0))
def test_eata_select_keeps_only_reliable_samples_with_weights_above_one(
    seed: int, n: int, c: int, scale: float, d: float
) -> None:
    z = _logits(seed, n, c, scale)
    e0 = tf.entropy_margin(c)
    prev = torch.softmax(_logits(seed + 1, 1, c, 1.0)[0], -1)
    keep, w, ema = tf.eata_select(z, e0, d, prev)
    h = entropy(z)
    assert bool((h[keep] < e0).all())
    assert bool((w[keep] > 1).all()) and bool((w[~keep] == 0).all())
    torch.testing.assert_close(w[keep], torch.exp(e0 - h[keep]))
    assert ema is not None and math.isclose(float(ema.sum()), 1.0, rel_tol=1e-9)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 4), st.sampled_from([1, 2, 3, 6]), st.integers(1, 3))
def test_patch_shuffle_permutes_each_image(seed: int, n: int, k: int, ch: int) -> None:
    x = torch.randn(n, ch, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = tf.patch_shuffle(x, k, torch.Generator().manual_seed(seed))
    for i in range(n):
        assert torch.equal(x[i].flatten().sort().values, y[i].flatten().sort().values)
    if k == 1:
        assert torch.equal(x, y)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 8), st.integers(2, 6), st.floats(0.1, 6.0))
def test_plpd_bounds_and_zero_on_itself(seed: int, n: int, c: int, scale: float) -> None:
    z, zp = _logits(seed, n, c, scale), _logits(seed + 7, n, c, scale)
    d = tf.plpd(z, zp)
    assert bool((d >= -1).all() and (d <= 1).all())
    assert bool((tf.plpd(z, z) == 0).all())
    w = tf.deyo_weights(entropy(z), d, tf.entropy_margin(c))
    torch.testing.assert_close(w, torch.exp(tf.entropy_margin(c) - entropy(z)) + torch.exp(d))


@SETTINGS
@given(st.integers(0, 10**6), st.floats(0.0, 2.0), st.integers(1, 4))
def test_sam_perturbation_has_norm_rho(seed: int, rho: float, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ps = [torch.zeros(3, dtype=torch.float64, requires_grad=True) for _ in range(k)]
    for p in ps:
        p.grad = torch.randn(3, generator=g, dtype=torch.float64)
    e = tf.sam_perturbation(ps, rho)
    norm = math.sqrt(sum(float((x**2).sum()) for x in e))
    assert math.isclose(norm, rho, rel_tol=1e-9, abs_tol=1e-12)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 8), st.integers(2, 6), st.floats(0.0, 1.0))
def test_consistency_losses_against_entropy(seed: int, n: int, c: int, alpha: float) -> None:
    zs, zt = _logits(seed, n, c, 2.0), _logits(seed + 3, n, c, 2.0)
    # CE(q, p) >= H(q) (Gibbs), equality at p = q; the symmetric CE of a pair with itself is H
    assert bool((tf.teacher_cross_entropy(zs, zt) >= entropy(zt) - 1e-12).all())
    torch.testing.assert_close(tf.symmetric_cross_entropy(zs, zs, alpha), entropy(zs))
    torch.testing.assert_close(
        tf.symmetric_cross_entropy(zs, zt, alpha),
        (1 - alpha) * tf.teacher_cross_entropy(zs, zt) + alpha * tf.teacher_cross_entropy(zt, zs),
    )


@SETTINGS
@given(
    st.integers(0, 10**6), st.integers(1, 10), st.integers(2, 5), st.sampled_from(["rbf", "knn", "linear"])
)
def test_lame_returns_distributions_and_a_fixed_point(seed: int, n: int, c: int, affinity: str) -> None:
    z = _logits(seed, n, c, 2.0)
    f = _logits(seed + 5, n, 4, 1.0)
    y = tf.lame(z, f, affinity=affinity, knn=3).exp()
    torch.testing.assert_close(y.sum(-1), torch.ones(n, dtype=torch.float64))
    # a zero kernel leaves the source probabilities
    unary = -torch.log(z.softmax(-1))
    torch.testing.assert_close(
        tf.laplacian_optimization(unary, torch.zeros(n, n, dtype=torch.float64)), z.softmax(-1)
    )
