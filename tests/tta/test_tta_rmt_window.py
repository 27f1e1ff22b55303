"""RMT's contrastive loss and warm-up, the sliding window for single-sample streams and CoTTA's
augmentation, against hand-written float64 transcriptions of the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from tta_refs import clone_params, ent, forward, sgd, tiny

from entropykit import tta
from entropykit.tta import functional as tf

ALL = ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias")
PROJ = ("p0.weight", "p0.bias", "p2.weight", "p2.bias")


def naive_supcon(feats: Tensor, labels: Tensor | None, tau: float, tau_b: float) -> Tensor:
    """Khosla et al. 2020 eq. 2 with loops: anchors i over all N V views, positives p != i of the same
    sample (or label), denominators over every k != i."""
    n, v, _ = feats.shape
    rows = [(s, F.normalize(feats[s, j], dim=0)) for j in range(v) for s in range(n)]
    total = torch.zeros((), dtype=feats.dtype)
    for i, (si, ai) in enumerate(rows):
        denom = sum(torch.exp(ai @ ak / tau) for k, (_, ak) in enumerate(rows) if k != i)
        pos = [
            torch.log(torch.exp(ai @ ap / tau) / denom)
            for k, (sk, ap) in enumerate(rows)
            if k != i and (sk == si if labels is None else labels[sk] == labels[si])
        ]
        total = total - (tau / tau_b) * sum(pos) / len(pos)
    return total / len(rows)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 5), st.integers(2, 3), st.integers(2, 5), st.booleans())
def test_supcon_equals_the_naive_formula(seed: int, n: int, v: int, d: int, with_labels: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, v, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (n,), generator=g) if with_labels else None
    got = tf.supervised_contrastive_loss(f, labels, temperature=0.3, base_temperature=0.1)
    torch.testing.assert_close(got, naive_supcon(f, labels, 0.3, 0.1), rtol=1e-9, atol=1e-12)
    assert float(got) >= -1e-9 * 3  # -(tau/tau_b) mean log p with p <= 1: non-negative


def test_supcon_bad_input() -> None:
    with pytest.raises(ValueError, match="features must have shape"):
        tf.supervised_contrastive_loss(torch.randn(4, 1, 3))
    with pytest.raises(ValueError, match="temperature must be"):
        tf.supervised_contrastive_loss(torch.randn(4, 2, 3), temperature=0.0)


def feats(p: dict[str, Tensor], x: Tensor) -> Tensor:
    """The tiny BN net's classifier input (ReLU of BatchNorm with batch statistics), written out."""
    h = x @ p["0.weight"].T + p["0.bias"]
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5) * p["1.weight"] + p["1.bias"]
    return torch.relu(h)


def project(p: dict[str, Tensor], h: Tensor) -> Tensor:
    return torch.relu(h @ p["p0.weight"].T + p["p0.bias"]) @ p["p2.weight"].T + p["p2.bias"]


def sce(zs: Tensor, zt: Tensor) -> Tensor:
    """Döbler et al. 2023 eq. 2 with alpha 0.5: -0.5 sum q log p - 0.5 sum p log q."""
    p, q = zs.softmax(-1), zt.softmax(-1)
    return -0.5 * (q * torch.log(p)).sum(-1) - 0.5 * (p * torch.log(q)).sum(-1)


def test_rmt_warmup_contrastive_and_replay_equal_hand_written_steps() -> None:
    lr, mt, bs, warm, proj = 0.05, 0.9, 4, 12, 5
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(10, 5, generator=g, dtype=torch.float64)
    ys = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    net = tiny("bn")
    student, teacher = clone_params(net), clone_params(net)
    adapter = tta.RMT(
        net, optimizer="sgd", lr=lr, mt=mt, source=(xs, ys), source_batch_size=bs, warmup_samples=warm,
        projection_dim=proj, augment=lambda x, g: x.flip(0) * 0.9, generator=torch.Generator().manual_seed(7),
    )
    gen = torch.Generator().manual_seed(7)
    # the projector's initialisation: torch's default rule, drawn from the generator
    shapes = [(6, (proj, 6)), (6, (proj,)), (proj, (proj, proj)), (proj, (proj,))]
    for name, (fan_in, shape) in zip(PROJ, shapes):
        u = torch.rand(shape, generator=gen, dtype=torch.float64)
        student[name] = (u * 2 - 1) * (1 / math.sqrt(fan_in))
    # source prototypes: class means of the source features (BatchNorm statistics per source batch)
    fs = torch.cat([feats(student, b) for b in xs.split(bs)])
    protos = torch.stack([fs[ys == c].mean(0) for c in range(4)])
    torch.testing.assert_close(adapter.prototypes, protos, rtol=1e-10, atol=1e-12)
    bufs: dict[str, Tensor] = {}
    # warm-up: warm // bs SCE steps on source inputs, lr ramped linearly, EMA after each
    steps = warm // bs
    for i in range(steps):
        idx = torch.randint(10, (bs,), generator=gen)
        zt = forward(teacher, xs[idx])
        leaves = {n: student[n].clone().requires_grad_(True) for n in ALL}
        grads = torch.autograd.grad(sce(forward(leaves, xs[idx]), zt).mean(), [leaves[n] for n in ALL])
        sgd(student, dict(zip(ALL, grads)), bufs, lr * (i + 1) / steps)
        for n in ALL:
            teacher[n] = mt * teacher[n] + (1 - mt) * student[n]
    for n in ALL:
        torch.testing.assert_close(dict(net.named_parameters())[n], student[n], rtol=1e-10, atol=1e-12)
    # the stream: SCE on x and aug x + SupCon of [prototype, h, h_aug] + replay CE
    for x in [torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(2)]:
        out = adapter(x)
        zt = forward(teacher, x)
        idx = torch.randint(10, (bs,), generator=gen)
        torch.testing.assert_close(out, forward(student, x) + zt, rtol=1e-10, atol=1e-12)

        def loss(p: dict[str, Tensor], x: Tensor = x, zt: Tensor = zt, idx: Tensor = idx) -> Tensor:
            xa = x.flip(0) * 0.9
            h, ha = feats(p, x), feats(p, xa)
            near = torch.tensor(
                [max(range(4), key=lambda c: float(F.cosine_similarity(r, protos[c], 0))) for r in h.detach()]
            )
            views = torch.stack([project(p, protos[near]), project(p, h), project(p, ha)], 1)
            st_ = (0.5 * sce(forward(p, x), zt) + 0.5 * sce(forward(p, xa), zt)).mean()
            return st_ + naive_supcon(views, None, 0.1, 0.1) + F.cross_entropy(forward(p, xs[idx]), ys[idx])

        names = ALL + PROJ
        leaves = {n: student[n].clone().requires_grad_(True) for n in names}
        grads = torch.autograd.grad(loss(leaves), [leaves[n] for n in names])
        sgd(student, dict(zip(names, grads)), bufs, lr)
        for n in ALL:
            teacher[n] = mt * teacher[n] + (1 - mt) * student[n]
        got = dict(net.named_parameters())
        for n in ALL:
            torch.testing.assert_close(got[n], student[n], rtol=1e-9, atol=1e-11, msg=n)
        assert adapter.projector is not None
        for n, pp in zip(PROJ, adapter.projector.parameters()):
            torch.testing.assert_close(pp, student[n], rtol=1e-9, atol=1e-11, msg=n)
    # reset returns to the warmed-up state, not to the untouched model
    adapter.reset()
    assert not torch.equal(dict(net.named_parameters())["1.weight"], tiny("bn")[1].weight)


def test_window_adapts_on_the_last_w_samples() -> None:
    w, lr = 3, 0.1
    net = tiny("bn")
    params = clone_params(net)
    adapter = tta.Tent(net, optimizer="sgd", lr=lr, window=w)
    xs = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bufs: dict[str, Tensor] = {}
    # the first sample alone: predicted with the source statistics, no update
    with torch.no_grad():
        h = xs[:1] @ params["0.weight"].T + params["0.bias"]
        h = (h - net[1].running_mean) / torch.sqrt(net[1].running_var + 1e-5)
        h = h * params["1.weight"] + params["1.bias"]
        first = torch.relu(h) @ params["3.weight"].T + params["3.bias"]
    torch.testing.assert_close(adapter(xs[:1]), first)
    assert adapter.updates == 0
    for t in range(1, len(xs)):
        buf = xs[max(0, t + 1 - w) : t + 1]
        out = adapter(xs[t : t + 1])
        torch.testing.assert_close(out, forward(params, buf)[-1:], rtol=1e-10, atol=1e-12)
        leaves = {n: params[n].clone().requires_grad_(n.startswith("1.")) for n in ALL}
        g = torch.autograd.grad(ent(forward(leaves, buf)).mean(), [leaves["1.weight"], leaves["1.bias"]])
        sgd(params, dict(zip(("1.weight", "1.bias"), g)), bufs, lr)
        torch.testing.assert_close(net[1].weight, params["1.weight"], rtol=1e-10, atol=1e-12)
    # a batch of two takes the last two rows; the buffer keeps w samples
    assert adapter(xs[:2]).shape == (2, 4) and len(adapter.state()["buffer"]) == w
    saved = adapter.state()
    a = adapter(xs[2:3])
    adapter.load_state(saved)
    assert torch.equal(adapter(xs[2:3]), a)  # the window is part of the state
    adapter.reset()
    assert adapter.state()["buffer"] is None


def test_window_with_lame_and_the_periodic_reset() -> None:
    lame = tta.LAME(tiny("bn"), window=4, knn=2)
    xs = torch.randn(5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    outs = [lame(x[None]) for x in xs]
    ref = tta.LAME(tiny("bn"), knn=2)(xs[1:5])[-1:]  # LAME on the window of the last four samples
    torch.testing.assert_close(outs[-1], ref)
    guard = tta.Tent(tiny("ln"), lr=0.1, window=3, reset_every=2)
    for x in xs:
        guard(x[None])
    assert guard.state()["buffer"].shape[0] == 3  # the guard resets the model, not the window
    with pytest.raises(ValueError, match="sample shape"):
        guard(torch.randn(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="window must be"):
        tta.Tent(tiny("ln"), window=-1)


def naive_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """torchvision's GaussianBlur(5) per image, with loops: reflect padding, separable kernel."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        s2 = 2 * float(sigma[i]) ** 2
        k = torch.tensor([math.exp(-(t**2) / s2) for t in range(-2, 3)], dtype=x.dtype)
        k = k / k.sum()
        for ch in range(c):
            for r in range(h):
                for col in range(w):
                    acc = 0.0
                    for a in range(-2, 3):
                        for b in range(-2, 3):
                            rr, cc = r + a, col + b
                            rr = -rr if rr < 0 else 2 * (h - 1) - rr if rr >= h else rr
                            cc = -cc if cc < 0 else 2 * (w - 1) - cc if cc >= w else cc
                            acc += float(k[a + 2] * k[b + 2] * x[i, ch, rr, cc])
                    out[i, ch, r, col] = acc
    return out


def test_cotta_blur_equals_torchvision_rule_and_augment_stays_in_range() -> None:
    from entropykit.tta.functional import _gaussian_blur

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.5], dtype=torch.float64)
    torch.testing.assert_close(_gaussian_blur(x, sigma), naive_blur(x, sigma))
    y = tf.cotta_augment(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, tf.cotta_augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(y, tf.cotta_augment(x, torch.Generator().manual_seed(2)))
