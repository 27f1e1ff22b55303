"""Hypothesis property tests: identities and inequalities every information measure must satisfy."""

from __future__ import annotations

import itertools
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import entropykit.measures as M

LN2 = math.log(2.0)
SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def logit_rows(draw: st.DrawFn, n_dists: int = 1, masked: bool = True) -> list[torch.Tensor]:
    """``n_dists`` float64 logit tensors of one shape (rows, V), some entries -inf (never a whole row)."""
    rows = draw(st.integers(1, 4))
    v = draw(st.integers(1, 12))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_dists):
        z = scale * torch.randn(rows, v, generator=g, dtype=torch.float64)
        if masked and v > 1 and draw(st.booleans()):
            drop = torch.rand(rows, v, generator=g) < 0.3
            drop[:, 0] = False
            z = z.masked_fill(drop, -math.inf)
        out.append(z)
    return out


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-9) -> bool:
    return bool(torch.allclose(a, b, rtol=tol, atol=tol))


@SETTINGS
@given(logit_rows(2, masked=False))
def test_cross_entropy_is_entropy_plus_kl(zs: list[torch.Tensor]) -> None:
    zp, zq = zs
    p = torch.softmax(zp, -1)
    ce = M.cross_entropy(zq, p, reduction="none")  # H(p, q): q is the model
    assert close(ce, M.entropy(zp) + M.kl_div(zp, zq), 1e-8)


@SETTINGS
@given(logit_rows(2))
def test_kl_nonnegative_and_zero_iff_equal(zs: list[torch.Tensor]) -> None:
    zp, zq = zs
    kl = M.kl_div(zp, zq)
    assert bool((kl >= -1e-12).all())
    assert close(M.kl_div(zp, zp), torch.zeros_like(kl), 1e-12)
    # and strictly positive where the distributions differ noticeably
    differ = (torch.softmax(zp, -1) - torch.softmax(zq, -1)).abs().amax(-1) > 1e-3
    assert bool((kl[differ] > 0).all())


@SETTINGS
@given(logit_rows(2), st.floats(0.0, 1.0))
def test_js_bounds(zs: list[torch.Tensor], beta: float) -> None:
    zp, zq = zs
    js = M.js_div(zp, zq)
    assert bool((js >= -1e-12).all()) and bool((js <= LN2 + 1e-12).all())
    assert close(js, M.js_div(zq, zp), 1e-10)
    assert close(M.js_div(zp, zq, base=2), js / LN2)
    g = M.js_div(zp, zq, beta=beta)
    assert bool((g >= -1e-12).all())
    if 0 < beta < 1:  # the generalised JSD is bounded by the binary entropy of beta
        hb = -(beta * math.log(beta) + (1 - beta) * math.log1p(-beta))
        assert bool((g <= hb + 1e-10).all())


@SETTINGS
@given(logit_rows(2), st.floats(0.0, 1.0))
def test_distances_bounded(zs: list[torch.Tensor], lam: float) -> None:
    zp, zq = zs
    tv = M.tv_distance(zp, zq)
    h = M.hellinger(zp, zq)
    assert bool(((tv >= 0) & (tv <= 1 + 1e-12)).all()) and bool(((h >= 0) & (h <= 1)).all())
    # Le Cam: H^2 <= TV <= sqrt(2) H
    assert bool((h**2 <= tv + 1e-12).all()) and bool((tv <= math.sqrt(2) * h + 1e-12).all())
    sk = M.skew_kl(zp, zq, lam=lam)
    assert bool((sk >= -1e-12).all())
    if lam > 0:
        assert bool((sk <= -math.log(lam) + 1e-9).all())


@SETTINGS
@given(logit_rows(1), st.lists(st.floats(0.05, 20.0), min_size=2, max_size=5))
def test_renyi_non_increasing_in_alpha(zs: list[torch.Tensor], alphas: list[float]) -> None:
    (z,) = zs
    values = [M.renyi_entropy(z, a) for a in sorted(alphas)] + [M.renyi_entropy(z, math.inf)]
    for lo, hi in itertools.pairwise(values):
        assert bool((hi <= lo + 1e-9).all())
    # bounded by the log of the support size and by 0
    k = torch.isfinite(z).sum(-1).double()
    assert bool((values[0] <= torch.log(k) + 1e-9).all()) and bool((values[-1] >= -1e-12).all())


@SETTINGS
@given(logit_rows(1), st.sampled_from([1e-4, 1e-6, -1e-6, -1e-4]))
def test_renyi_and_tsallis_tend_to_shannon(zs: list[torch.Tensor], d: float) -> None:
    (z,) = zs
    h = M.entropy(z)
    assert torch.equal(M.renyi_entropy(z, 1.0), h) and torch.equal(M.tsallis_entropy(z, 1.0), h)
    # first-order in d: |H_a - H| <= C |d| with C ~ varentropy / 2 (+ slack)
    bound = (M.varentropy(z) + h**2 + 1) * abs(d)
    assert bool(((M.renyi_entropy(z, 1 + d) - h).abs() <= bound).all())
    assert bool(((M.tsallis_entropy(z, 1 + d) - h).abs() <= bound).all())


@SETTINGS
@given(logit_rows(1), st.floats(-50.0, 50.0))
def test_shift_invariance(zs: list[torch.Tensor], c: float) -> None:
    (z,) = zs
    zc = z + c
    y = torch.zeros(z.shape[0], dtype=torch.long)  # entry 0 is always finite
    for f in (M.entropy, M.varentropy, M.normalized_entropy, lambda t: M.renyi_entropy(t, 2.0),
              lambda t: M.tsallis_entropy(t, 0.5), lambda t: M.surprisal(t, y)):
        assert close(f(z), f(zc), 1e-8)
    assert torch.equal(M.token_rank(z, y), M.token_rank(zc, y))


@SETTINGS
@given(logit_rows(1))
def test_entropy_bounds_and_varentropy_nonnegative(zs: list[torch.Tensor]) -> None:
    (z,) = zs
    h = M.entropy(z)
    k = torch.isfinite(z).sum(-1).double()
    assert bool((h >= 0).all()) and bool((h <= torch.log(k) + 1e-9).all())
    assert bool((M.varentropy(z) >= 0).all())
    ne = M.normalized_entropy(z)
    assert bool(((ne >= 0) & (ne <= 1 + 1e-9)).all())
    assert close(M.entropy(z, base=2), h / LN2) and close(M.varentropy(z, base=2), M.varentropy(z) / LN2**2)


@SETTINGS
@given(logit_rows(1))
def test_float32_agrees_with_float64(zs: list[torch.Tensor]) -> None:
    (z,) = zs
    st64 = M.token_stats(z, torch.zeros(z.shape[0], dtype=torch.long))
    st32 = M.token_stats(z.float(), torch.zeros(z.shape[0], dtype=torch.long))
    for a, b in ((st32.entropy, st64.entropy), (st32.varentropy, st64.varentropy),
                 (st32.surprisal, st64.surprisal)):
        assert a is not None and b is not None
        scale = 1 + b.abs()
        assert bool(((a.double() - b).abs() <= 1e-5 * scale).all())
