"""Each method's update against a hand-written float64 step on a tiny model (same parameters after
the step, to float tolerance), and the filters / weights on constructed batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tta_refs import NORM, clone_params, ent, forward, sgd, tiny

from entropykit import tta
from entropykit.tta import functional as tf

ALL = ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias")


def grads_of(loss_fn, params: dict[str, Tensor], names) -> dict[str, Tensor]:  # type: ignore[no-untyped-def]
    leaves = {n: p.detach().clone().requires_grad_(n in names) for n, p in params.items()}
    loss = loss_fn(leaves)
    gs = torch.autograd.grad(loss, [leaves[n] for n in names])
    return dict(zip(names, gs))


def assert_params(net: nn.Module, ref: dict[str, Tensor], prefix: str = "") -> None:
    got = dict(net.named_parameters())
    for n, v in ref.items():
        torch.testing.assert_close(got[prefix + n], v, rtol=1e-10, atol=1e-12, msg=n)


def batches(seed: int, n: int = 3, size: int = 12, scale: float = 1.0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(size, 5, generator=g, dtype=torch.float64) for _ in range(n)]


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_tent_equals_hand_written_entropy_sgd(norm: str) -> None:
    net = tiny(norm)
    params = clone_params(net)
    adapter = tta.Tent(net, lr=0.05)
    bufs: dict[str, Tensor] = {}
    for x in batches(1):
        z_ref = forward(params, x, norm)
        out = adapter(x)
        torch.testing.assert_close(out, z_ref, rtol=1e-10, atol=1e-12)  # the pre-step predictions
        g = grads_of(lambda p, x=x: ent(forward(p, x, norm)).mean(), params, NORM)
        sgd(params, g, bufs, 0.05)
        assert_params(net, params)


def test_tent_adam_matches_torch_adam_rule() -> None:
    net = tiny("bn")
    params = clone_params(net)
    adapter = tta.Tent(net, optimizer="adam", lr=0.01)
    m = {n: torch.zeros_like(params[n]) for n in NORM}
    v = {n: torch.zeros_like(params[n]) for n in NORM}
    for t, x in enumerate(batches(2), start=1):
        adapter(x)
        g = grads_of(lambda p, x=x: ent(forward(p, x)).mean(), params, NORM)
        for n in NORM:  # Kingma & Ba 2015, eps 1e-8
            m[n] = 0.9 * m[n] + 0.1 * g[n]
            v[n] = 0.999 * v[n] + 0.001 * g[n] ** 2
            mh, vh = m[n] / (1 - 0.9**t), v[n] / (1 - 0.999**t)
            params[n] = params[n] - 0.01 * mh / (vh.sqrt() + 1e-8)
        assert_params(net, params)


def test_eata_equals_hand_written_steps_with_fisher() -> None:
    c = 4
    e0 = 0.4 * math.log(c)
    d, alpha, lr = 0.9, 50.0, 0.05
    net = tiny("bn")
    params = clone_params(net)
    src = batches(9, n=2, size=10)
    # Fisher: squared batch gradients of CE against the model's own predictions, averaged over batches
    fisher = {n: torch.zeros_like(params[n]) for n in NORM}
    for xb in src:
        g = grads_of(
            lambda p, xb=xb: F.cross_entropy(forward(p, xb), forward(p, xb).argmax(-1)), params, NORM
        )
        for n in NORM:
            fisher[n] += g[n] ** 2 / len(src)
    theta0 = {n: params[n].clone() for n in NORM}
    adapter = tta.EATA(
        net, source=torch.cat(src), source_batch_size=10, fisher_alpha=alpha, d_margin=d, lr=lr
    )
    for n in NORM:
        torch.testing.assert_close(adapter.fisher[n], fisher[n], rtol=1e-10, atol=1e-14)
    bufs: dict[str, Tensor] = {}
    ema = None
    seen = set()
    for x in batches(3, n=4, size=16, scale=2.0):
        with torch.no_grad():
            z = forward(params, x)
            h = ent(z)
            p = z.softmax(-1)
            keep = h < e0
            if ema is not None:
                cos = (p @ ema) / (p.norm(dim=1) * ema.norm())
                keep &= cos.abs() < d
            w = torch.exp(-(h - e0))
        seen.add((bool(keep.any()), bool((~keep).any())))
        adapter(x)
        if keep.any():
            ema = p[keep].mean(0) if ema is None else 0.9 * ema + 0.1 * p[keep].mean(0)

            def loss(pp, x=x, keep=keep, w=w):  # type: ignore[no-untyped-def]
                hh = ent(forward(pp, x))
                fish = sum(alpha * (fisher[n] * (pp[n] - theta0[n]) ** 2).sum() for n in NORM)
                return (w[keep] * hh[keep]).sum() / keep.sum() + fish

            sgd(params, grads_of(loss, params, NORM), bufs, lr)
        assert_params(net, params)
        torch.testing.assert_close(adapter.probs_ema, ema)
    assert (True, True) in seen, "the batches must exercise both kept and filtered samples"


def test_eata_select_on_constructed_batches() -> None:
    e0 = tf.entropy_margin(3)
    z = torch.log(torch.tensor([[0.98, 0.01, 0.01], [0.34, 0.33, 0.33], [0.01, 0.98, 0.01]]))
    h = ent(z)
    keep, w, ema = tf.eata_select(z, e0)
    assert keep.tolist() == [True, False, True]
    torch.testing.assert_close(w, torch.where(keep, 1 / torch.exp(h - e0), torch.zeros(3)))
    torch.testing.assert_close(ema, z.softmax(-1)[keep].mean(0))
    # redundancy: a sample whose probabilities point like the average is dropped
    prev = torch.tensor([1.0, 0.0, 0.0])
    keep2, _, ema2 = tf.eata_select(z, e0, d_margin=0.5, probs_ema=prev)
    assert keep2.tolist() == [False, False, True]
    torch.testing.assert_close(ema2, 0.9 * prev + 0.1 * z.softmax(-1)[2])
    # nothing kept: the average is unchanged, no weights
    keep3, w3, ema3 = tf.eata_select(z[1:2], e0, probs_ema=prev)
    assert not keep3.any() and float(w3.sum()) == 0.0 and torch.equal(ema3, prev)


def test_sar_equals_hand_written_sam_step_and_recovers() -> None:
    e0 = 0.4 * math.log(4)
    rho, lr = 0.5, 0.05
    net = tiny("ln")
    params = clone_params(net)
    adapter = tta.SAR(net, rho=rho, lr=lr, reset_constant=-1.0)
    bufs: dict[str, Tensor] = {}
    ema = None
    for x in batches(4, n=3, size=16, scale=2.0):
        adapter(x)
        with torch.no_grad():
            keep1 = ent(forward(params, x, "ln")) < e0
        assert keep1.any()
        g1 = grads_of(lambda p, x=x, k=keep1: ent(forward(p, x, "ln"))[k].mean(), params, NORM)
        gnorm = torch.sqrt(sum((g**2).sum() for g in g1.values()))
        pert = dict(params)
        for n in NORM:
            pert[n] = params[n] + rho * g1[n] / (gnorm + 1e-12)
        with torch.no_grad():
            h2 = ent(forward(pert, x, "ln"))[keep1]
            keep2 = h2 < e0
        g2 = grads_of(lambda p, x=x, k1=keep1, k2=keep2: ent(forward(p, x, "ln"))[k1][k2].mean(), pert, NORM)
        l2 = float(h2[keep2].mean())
        ema = l2 if ema is None else 0.9 * ema + 0.1 * l2
        sgd(params, g2, bufs, lr)
        assert_params(net, params)
        assert adapter.ema == pytest.approx(ema, rel=1e-12)
    # the recovery rule: ema below the constant -> back to the source state
    net2 = tiny("ln")
    source = clone_params(net2)
    rec = tta.SAR(net2, rho=rho, lr=lr, reset_constant=10.0)
    rec(batches(4, n=1, size=16, scale=2.0)[0])
    assert rec.recoveries == 1 and rec.ema is None
    assert_params(net2, source)


def test_sar_takes_no_step_when_no_sample_is_reliable() -> None:
    net = tiny("bn")
    source = clone_params(net)
    adapter = tta.SAR(net, e_margin=0.0, lr=1.0)  # entropy is never < 0
    adapter(batches(5, n=1)[0])
    assert_params(net, source)
    assert adapter.ema is None


def naive_patch_shuffle(x: Tensor, k: int, rand: Tensor) -> Tensor:
    out = torch.empty_like(x)
    n, _, h, w = x.shape
    ph, pw = h // k, w // k
    for i in range(n):
        perm = torch.argsort(rand[i])
        for j in range(k * k):
            src = int(perm[j])
            r, c = divmod(j, k)
            sr, sc = divmod(src, k)
            out[i, :, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw] = x[
                i, :, sr * ph : (sr + 1) * ph, sc * pw : (sc + 1) * pw
            ]
    return out


def test_patch_shuffle_equals_naive_loops() -> None:
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    rand = torch.rand(3, 9, generator=torch.Generator().manual_seed(7))
    got = tf.patch_shuffle(x, 3, torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, naive_patch_shuffle(x, 3, rand.double()))


def test_deyo_equals_hand_written_step() -> None:
    c, k, lr = 4, 2, 0.05
    base = tiny("bn", d_in=16)
    net = nn.Sequential(nn.Flatten(), base)
    params = clone_params(base)
    thr = 0.0
    adapter = tta.DeYO(
        net, lr=lr, patch_len=k, plpd_threshold=thr, generator=torch.Generator().manual_seed(3)
    )
    gen = torch.Generator().manual_seed(3)
    bufs: dict[str, Tensor] = {}
    xg = torch.Generator().manual_seed(11)
    for _ in range(2):
        x = 2.0 * torch.randn(16, 1, 4, 4, generator=xg, dtype=torch.float64)
        with torch.no_grad():
            z = forward(params, x.flatten(1))
            h = ent(z)
            keep1 = h < 0.5 * math.log(c)
            xp = naive_patch_shuffle(x[keep1], k, torch.rand(int(keep1.sum()), k * k, generator=gen).double())
            zp = forward(params, xp.flatten(1))
            y = z[keep1].argmax(-1, keepdim=True)
            d = (z[keep1].softmax(-1).gather(-1, y) - zp.softmax(-1).gather(-1, y)).squeeze(-1)
            keep2 = d > thr
            w = 1 / torch.exp(h[keep1][keep2] - 0.4 * math.log(c)) + 1 / torch.exp(-d[keep2])
        assert keep2.any() and (~keep1).any()
        adapter(x)
        g = grads_of(
            lambda p, x=x, k1=keep1, k2=keep2, w=w: (ent(forward(p, x.flatten(1)))[k1][k2] * w).mean(),
            params,
            NORM,
        )
        sgd(params, g, bufs, lr)
        assert_params(base, params)


def _shift(x: Tensor, g: torch.Generator | None) -> Tensor:
    return x.flip(-1)  # a deterministic "augmentation": the teacher sees other inputs than the student


def test_cotta_equals_hand_written_step_teacher_and_restore() -> None:
    lr, mt = 0.05, 0.9
    net = tiny("bn")
    student = clone_params(net)
    teacher = clone_params(net)
    source = clone_params(net)
    cfg = {"optimizer": "sgd", "lr": lr, "ap": 1.0, "n_augmentations": 1, "augment": _shift}
    adapter = tta.CoTTA(net, mt=mt, rst=0.0, **cfg)  # ap 1: always the augmentation average
    bufs: dict[str, Tensor] = {}
    for x in batches(6, n=3):
        out = adapter(x)
        with torch.no_grad():
            zt = forward(teacher, _shift(x, None))
        torch.testing.assert_close(out, zt, rtol=1e-10, atol=1e-12)
        g = grads_of(
            lambda p, x=x, zt=zt: -(zt.softmax(-1) * forward(p, x).log_softmax(-1)).sum(-1).mean(),
            student,
            ALL,
        )
        assert max(float(v.abs().max()) for v in g.values()) > 1e-3
        sgd(student, g, bufs, lr)
        for n in ALL:
            teacher[n] = mt * teacher[n] + (1 - mt) * student[n]
        assert_params(net, student)
        assert_params(adapter.teacher, teacher)
    # stochastic restore: rst = 1 puts every trained element back to its source value
    full = tta.CoTTA(tiny("bn"), rst=1.0, **cfg)
    full(batches(6, n=1)[0])
    assert_params(full.model, source)
    # rst = 0.5: each element is either its source value or the value without restore
    a = tta.CoTTA(tiny("bn"), rst=0.5, generator=torch.Generator().manual_seed(0), **cfg)
    b = tta.CoTTA(tiny("bn"), rst=0.0, **cfg)
    x = batches(6, n=1)[0]
    a(x)
    b(x)
    restored = moved = 0
    for (n, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        is_src, is_new = pa == source[n], pa == pb
        assert bool((is_src | is_new).all()), n
        restored += int((is_src & ~is_new).sum())
        moved += int((is_new & ~is_src).sum())
    assert restored > 0 and moved > 0


def test_cotta_averages_teacher_logits_over_augmentations() -> None:
    net = tiny("ln")
    calls: list[Tensor] = []

    def aug(x: Tensor, g: torch.Generator | None) -> Tensor:
        y = x + 0.1 * (len(calls) + 1)
        calls.append(y)
        return y

    teacher = clone_params(net)
    adapter = tta.CoTTA(net, lr=0.01, ap=1.0, n_augmentations=3, augment=aug)  # ap 1: always augment
    x = batches(7, n=1)[0]
    out = adapter(x)
    ref = torch.stack([forward(teacher, y, "ln") for y in calls]).mean(0)
    assert len(calls) == 3
    torch.testing.assert_close(out, ref)


def test_cotta_augments_only_when_the_source_is_unsure() -> None:
    """The paper's gate: augmentation-averaged teacher logits when the source model's mean confidence
    on the batch is below ap, the teacher's logits on x otherwise."""
    x = batches(8, n=1)[0]
    net = tiny("ln")
    params = clone_params(net)
    conf = float(forward(params, x, "ln").softmax(-1).amax(-1).mean())
    for ap, augmented in ((conf + 1e-9, True), (conf - 1e-9, False)):
        adapter = tta.CoTTA(tiny("ln"), lr=0.01, ap=ap, n_augmentations=2, augment=lambda x, g: x + 0.5)
        ref = forward(params, x + 0.5 if augmented else x, "ln")
        torch.testing.assert_close(adapter(x), ref)


def test_rmt_equals_hand_written_step_with_source_replay() -> None:
    lr, mt = 0.05, 0.99
    net = tiny("bn")
    student, teacher = clone_params(net), clone_params(net)
    xs = torch.randn(6, 5, dtype=torch.float64)
    ys = torch.tensor([0, 1, 2, 3, 0, 1])
    adapter = tta.RMT(
        net,
        optimizer="sgd",
        lr=lr,
        mt=mt,
        source=(xs, ys),
        source_batch_size=4,
        lambda_cont=0.0,
        warmup_samples=0,
        augment=lambda x, g: x.flip(0),
        generator=torch.Generator().manual_seed(5),
    )
    gen = torch.Generator().manual_seed(5)
    bufs: dict[str, Tensor] = {}
    for x in batches(8, n=2):
        out = adapter(x)
        idx = torch.randint(6, (4,), generator=gen)
        with torch.no_grad():
            zt = forward(teacher, x)
        torch.testing.assert_close(out, forward(student, x) + zt, rtol=1e-10, atol=1e-12)

        def sce(zs: Tensor, zt: Tensor) -> Tensor:
            return -0.5 * (zt.softmax(-1) * zs.log_softmax(-1)).sum(-1) - 0.5 * (
                zs.softmax(-1) * zt.log_softmax(-1)
            ).sum(-1)

        def loss(p, x=x, zt=zt, idx=idx):  # type: ignore[no-untyped-def]
            st = 0.5 * sce(forward(p, x), zt) + 0.5 * sce(forward(p, x.flip(0)), zt)
            return st.mean() + F.cross_entropy(forward(p, xs[idx]), ys[idx])

        sgd(student, grads_of(loss, student, ALL), bufs, lr)
        for n in ALL:
            teacher[n] = mt * teacher[n] + (1 - mt) * student[n]
        assert_params(net, student)
        assert_params(adapter.teacher, teacher)


def test_woc_filters_samples_less_confident_than_the_source() -> None:
    lr = 0.5
    net = tiny("gn")
    params, source = clone_params(net), clone_params(net)
    adapter = tta.WOC(net, lr=lr)
    bufs: dict[str, Tensor] = {}
    kept = []
    for x in batches(10, n=5, size=16):
        with torch.no_grad():
            p = forward(params, x, "gn").softmax(-1)
            q = forward(source, x, "gn").softmax(-1)
            y = p.argmax(-1, keepdim=True)
            keep = (p.gather(-1, y) >= q.gather(-1, y)).squeeze(-1)
        kept.append(keep)
        adapter(x)
        if keep.any():
            g = grads_of(lambda pp, x=x, k=keep: ent(forward(pp, x, "gn"))[k].mean(), params, NORM)
            sgd(params, g, bufs, lr)
        assert_params(net, params)
    assert any((~k).any() for k in kept[1:]), "later batches must drop some samples"


def naive_lame(logits: Tensor, feats: Tensor, knn: int, steps: int = 100, affinity: str = "rbf") -> Tensor:
    n = len(feats)
    f = feats / feats.norm(dim=1, keepdim=True)
    dist = torch.tensor(
        [[float(torch.sqrt(((f[i] - f[j]) ** 2).sum())) for j in range(n)] for i in range(n)],
        dtype=feats.dtype,
    )
    if affinity == "knn":  # the LAME code's kNN_affinity: 1 for the knn nearest *other* points
        kern = torch.zeros(n, n, dtype=feats.dtype)
        for i in range(n):
            others = sorted((float(dist[i, j]), j) for j in range(n) if j != i)
            for _, j in others[:knn]:
                kern[i, j] = 1.0
    else:  # rbf_affinity: sigma = mean distance to the knn-th nearest point, the point itself included
        kth = [sorted(dist[i].tolist())[min(knn, n) - 1] for i in range(n)]
        sigma = sum(kth) / n
        kern = torch.tensor(
            [[math.exp(-(dist[i, j] ** 2) / (2 * sigma**2)) for j in range(n)] for i in range(n)],
            dtype=feats.dtype,
        )
    unary = -torch.log(torch.softmax(logits, -1) + 1e-10)
    y = torch.softmax(-unary, -1)
    old = math.inf
    for it in range(steps):
        y = torch.softmax(-unary + kern @ y, -1)
        energy = 0.0
        ky = kern @ y
        for i in range(n):
            for c in range(y.shape[1]):
                yi = float(y[i, c])
                energy += float(unary[i, c]) * yi - float(ky[i, c]) * yi + yi * math.log(max(yi, 1e-20))
        if it > 1 and abs(energy - old) <= 1e-8 * abs(old):
            break
        old = energy
    return y


def test_lame_equals_naive_laplacian_iterations() -> None:
    g = torch.Generator().manual_seed(2)
    logits = 2 * torch.randn(10, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(10, 4, generator=g, dtype=torch.float64)
    got = tf.lame(logits, feats, knn=3).exp()
    ref = naive_lame(logits, feats, 3)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-8)
    got = tf.lame(logits, feats, affinity="knn", knn=3).exp()
    torch.testing.assert_close(got, naive_lame(logits, feats, 3, affinity="knn"), rtol=1e-6, atol=1e-8)


def test_lame_knn_affinity_keeps_a_minority_cluster() -> None:
    """Two separated clusters of features, 7 vs 3 points, with right but unsure source predictions:
    the kNN affinity (each point's 2 nearest others) keeps both classes."""
    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0] * 7 + [1] * 3)
    feats = centre[labels] + 0.05 * torch.randn(10, 3, generator=g, dtype=torch.float64)
    logits = 0.3 * F.one_hot(labels, 2).double()
    knn = tf.lame(logits, feats, affinity="knn", knn=2).argmax(-1)
    assert torch.equal(knn, labels)


def test_lame_adapter_uses_the_classifier_input_and_freezes_the_model() -> None:
    net = tiny("bn")
    before = clone_params(net)
    adapter = tta.LAME(net, knn=3)
    x = batches(12, n=1)[0]
    out = adapter(x)
    with torch.no_grad():
        feats = torch.relu(
            F.batch_norm(net[0](x), net[1].running_mean, net[1].running_var, net[1].weight, net[1].bias)
        )
        ref = tf.lame(net[3](feats), feats, knn=3)
    torch.testing.assert_close(out, ref)
    assert_params(net, before)
    one = adapter(x[:1])  # a single sample keeps its source prediction's class
    assert int(one.argmax()) == int(net(x[:1]).argmax())


def test_bn_adapt_and_source_outputs() -> None:
    net = tiny("bn")
    params = clone_params(net)
    x = batches(13, n=1)[0]
    torch.testing.assert_close(tta.BNAdapt(net)(x), forward(params, x))
    net2 = tiny("bn").eval()
    with torch.no_grad():
        ref = net2[3](torch.relu(net2[1](net2[0](x))))  # eval mode: the source statistics
    torch.testing.assert_close(tta.Source(net2)(x), ref)


def test_determinism_with_a_seed() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)  # different global state must not matter; the generator decides
        net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 36, 4))
        with torch.no_grad():
            for i, p in enumerate(net.parameters()):
                p.copy_(torch.linspace(-1, 1, p.numel()).view(p.shape) * (i + 1) / 3)
        a = tta.CoTTA(net, n_augmentations=2, ap=1.0, rst=0.3, generator=torch.Generator().manual_seed(4))
        d = tta.DeYO(
            nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 36, 4)),
            margin=10.0,
            plpd_threshold=-1.0,
            lr=0.1,
            generator=torch.Generator().manual_seed(4),
        )
        xs = torch.rand(2, 8, 1, 8, 8, generator=torch.Generator().manual_seed(9))
        torch.manual_seed(len(outs))
        d(xs[0])
        outs.append([a(xs[0]), a(xs[1]), d(xs[1]), *[p.clone() for p in (*a.model.parameters(), *d.params)]])
    for u, v in zip(*outs):
        assert torch.equal(u, v)
