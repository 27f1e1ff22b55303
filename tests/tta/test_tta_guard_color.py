"""The drift guard (reset on falling agreement with the frozen source) against a hand-written loop on
the tiny model, and CoTTA's colour jitter (RGB <-> HSV, hue rotation) against Python's colorsys."""

from __future__ import annotations

import colorsys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from tta_refs import clone_params, ent, forward, sgd, tiny

from entropykit import tta
from entropykit.tta import functional as tf

NORM = ("1.weight", "1.bias")


def _pixels(seed: int, n: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 1, 1, generator=g, dtype=torch.float64)
    # edge cases among the random pixels: greys, black, white, ties between channels, pure hues
    x[:6, :, 0, 0] = torch.tensor(
        [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.2, 0.7, 0.7],
         [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    return x


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10**6), st.floats(-0.5, 0.5))
def test_hsv_round_trip_and_hue_rotation_equal_colorsys(seed: int, shift: float) -> None:
    x = _pixels(seed, 40)
    hsv = tf.rgb_to_hsv(x)
    ref = torch.tensor([colorsys.rgb_to_hsv(*map(float, p[:, 0, 0])) for p in x], dtype=torch.float64)
    torch.testing.assert_close(hsv[:, :, 0, 0], ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(tf.hsv_to_rgb(hsv), x, rtol=0, atol=1e-12)
    back = torch.tensor([colorsys.hsv_to_rgb(*map(float, h)) for h in ref], dtype=torch.float64)
    torch.testing.assert_close(tf.hsv_to_rgb(ref[:, :, None, None])[:, :, 0, 0], back, rtol=0, atol=1e-12)
    rotated = []
    for p in x[:, :, 0, 0].tolist():
        h, s, v = colorsys.rgb_to_hsv(*p)
        rotated.append(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v))
    got = tf.adjust_hue(x, shift)[:, :, 0, 0]
    torch.testing.assert_close(got, torch.tensor(rotated, dtype=torch.float64), rtol=0, atol=1e-12)


def test_hue_per_image_factor_saturation_and_grayscale_skip() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    f = torch.tensor([0.05, -0.06], dtype=torch.float64).view(2, 1, 1, 1)
    got = tf.adjust_hue(x, f)
    for i in range(2):
        torch.testing.assert_close(got[i], tf.adjust_hue(x[i], float(f[i])))
    # saturation: torchvision's blend with 0.299 R + 0.587 G + 0.114 B, pixel by pixel
    sat = tf.adjust_saturation(x, 1.3)
    r, gg, b = (float(v) for v in x[0, :, 2, 3])
    gray = 0.299 * r + 0.587 * gg + 0.114 * b
    want = [min(1.0, max(0.0, 1.3 * c - 0.3 * gray)) for c in (r, gg, b)]
    torch.testing.assert_close(sat[0, :, 2, 3], torch.tensor(want, dtype=torch.float64))
    # grayscale images skip the colour jitter (no hue to rotate); RGB-only helpers say so
    gray_img = torch.rand(3, 1, 6, 6, generator=g, dtype=torch.float64)
    y = tf.cotta_augment(gray_img, torch.Generator().manual_seed(0))
    assert y.shape == gray_img.shape
    with pytest.raises(ValueError, match="RGB"):
        tf.rgb_to_hsv(gray_img)


def test_drift_guard_equals_hand_written_loop() -> None:
    """TENT + reset_agreement on the tiny LayerNorm net, SGD, batch 1: the running agreement and the
    reset step follow the rule written out here (A <- d A + (1 - d) r, d = (1 - 1/T)^n)."""
    lr, thr, big_t = 5.0, 0.8, 4.0
    net = tiny("ln")
    src = clone_params(net)
    adapter = tta.Tent(net, optimizer="sgd", lr=lr, reset_agreement=thr, agreement_samples=big_t)
    xs = torch.randn(30, 1, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    params, bufs = dict(src), {}
    agree: float | None = None
    resets = 0
    for x in xs:
        out = adapter(x)
        with torch.no_grad():
            want = forward(params, x, "ln")
        torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-12)
        leaves = {n: params[n].clone().requires_grad_(n in NORM) for n in params}
        g = torch.autograd.grad(ent(forward(leaves, x, "ln")).mean(), [leaves[n] for n in NORM])
        sgd(params, dict(zip(NORM, g)), bufs, lr)
        rate = float(forward(src, x, "ln").argmax(-1) == want.argmax(-1))
        d = (1 - 1 / big_t) ** len(x)
        agree = rate if agree is None else d * agree + (1 - d) * rate
        if agree < thr:
            params, bufs, agree = dict(src), {}, None
            resets += 1
        assert adapter.agreement == (None if agree is None else pytest.approx(agree))
        torch.testing.assert_close(net[1].weight, params["1.weight"], rtol=1e-9, atol=1e-12)
    assert resets > 0 and adapter.drift_resets == resets  # the large step makes TENT drift


def test_drift_guard_state_reset_and_bad_input() -> None:
    net = tiny("bn")
    adapter = tta.make("eta", net, lr=0.5, reset_agreement=0.9, window=4)
    xs = torch.randn(6, 1, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for x in xs:
        adapter(x)
    guard = adapter.guard_model
    assert guard is not None and not any(p.requires_grad for p in guard.parameters())
    saved = adapter.state()
    a = adapter(xs[0])
    adapter.load_state(saved)
    assert torch.equal(adapter(xs[0]), a)  # the running agreement is part of the state
    adapter.reset()
    assert adapter.agreement is None
    assert tta.make("tent", tiny("bn")).guard_model is None  # off by default: no copy
    with pytest.raises(ValueError, match="reset_agreement must be"):
        tta.make("tent", tiny("bn"), reset_agreement=1.5)
    with pytest.raises(ValueError, match="agreement_samples must be"):
        tta.make("tent", tiny("bn"), reset_agreement=0.5, agreement_samples=0.5)
