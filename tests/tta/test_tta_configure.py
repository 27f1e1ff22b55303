"""configure / Adapter: what trains, BatchNorm statistics, reset, state, modes, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from tta_refs import tiny

from entropykit import tta


class AllNorms(nn.Module):
    """One of every normalisation kind, plus frozen conv/linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3 = nn.Conv3d(1, 2, 1)
        self.bn3 = nn.BatchNorm3d(2)
        self.conv2 = nn.Conv2d(2, 3, 1)
        self.bn2 = nn.BatchNorm2d(3)
        self.gn = nn.GroupNorm(1, 3)
        self.fc = nn.Linear(3, 4)
        self.bn1 = nn.BatchNorm1d(4)
        self.ln = nn.LayerNorm(4)
        self.rms = nn.RMSNorm(4)
        self.ln_noaffine = nn.LayerNorm(4, elementwise_affine=False)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, D, H, W)
        h = self.bn3(self.conv3(x)).mean(2)
        h = self.gn(self.bn2(self.conv2(h))).mean((2, 3))
        h = self.ln_noaffine(self.rms(self.ln(self.bn1(self.fc(h)))))
        return self.head(h)  # type: ignore[no-any-return]


NORM_PARAMS = {f"{m}.{p}" for m in ("bn3", "bn2", "gn", "bn1", "ln") for p in ("weight", "bias")} | {
    "rms.weight"
}


def test_configure_selects_every_normalisation_kind_exactly() -> None:
    net = AllNorms()
    sel = tta.configure(net)
    assert set(sel.params) == NORM_PARAMS
    assert {n for n, p in net.named_parameters() if p.requires_grad} == NORM_PARAMS
    kinds = sorted(set(sel.norm_layers.values()))
    assert kinds == ["batchnorm", "groupnorm", "layernorm", "rmsnorm"]
    assert sel.n_trainable == sum(p.numel() for n, p in net.named_parameters() if n in NORM_PARAMS)
    assert "BatchNorm statistics: batch" in str(sel)
    assert not net.training and net.bn2.training and not net.ln.training


def test_configure_all_none_and_exclude() -> None:
    net = AllNorms()
    assert set(tta.configure(net, params="all").params) == {n for n, _ in net.named_parameters()}
    assert tta.configure(net, params="none").params == ()
    assert not any(p.requires_grad for p in net.parameters())
    sel = tta.configure(net, exclude=["bn*"])
    assert set(sel.params) == {"gn.weight", "gn.bias", "ln.weight", "ln.bias", "rms.weight"}


def test_no_normalisation_layer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="normalisation layer"):
        tta.configure(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="normalisation layer"):
        tta.Tent(nn.Sequential(nn.Linear(3, 2), nn.ReLU()))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        tta.configure("resnet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bn must be one of"):
        tta.configure(tiny(), bn="ema")
    with pytest.raises(ValueError, match="alpha must be"):
        tta.configure(tiny(), bn="alpha", alpha=1.5)


def test_batch_statistics_leave_the_source_buffers_untouched() -> None:
    net = tiny("bn")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tta.configure(net, bn="batch")
    x = torch.randn(7, 5, dtype=torch.float64)
    out = net(x)
    h = net[0](x)
    ref = net[3](torch.relu(nn.functional.batch_norm(h, None, None, net[1].weight, net[1].bias, True)))
    torch.testing.assert_close(out, ref)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_source_and_alpha_statistics() -> None:
    net = tiny("bn")
    x = torch.randn(9, 5, dtype=torch.float64)
    h = net[0](x)
    bn = net[1]
    tta.configure(net, bn="source")
    ref = nn.functional.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False)
    torch.testing.assert_close(net[1](h), ref)
    a = 0.3
    tta.configure(net, bn="alpha", alpha=a)
    mean = (1 - a) * bn.running_mean + a * h.mean(0)
    var = (1 - a) * bn.running_var + a * h.var(0, unbiased=True)  # the anchor's momentum-1 BN stores unbiased
    ref = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(net[1](h), ref)


def test_adapter_train_eval_keep_the_configured_modes() -> None:
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3))
    adapter = tta.Tent(net)
    adapter.train()
    assert net[1].training and not net[2].training
    adapter.eval()
    assert net[1].training and not net[2].training


@pytest.mark.parametrize("method", sorted(tta.METHODS))
def test_reset_restores_bit_identical_state(method: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 36, 6),
        nn.LayerNorm(6),
        nn.Linear(6, 4),
    )
    kw: dict = {"lr": 0.5, "generator": torch.Generator().manual_seed(1)}
    if method in ("source", "bn_adapt", "lame"):
        kw = {}
    if method == "cotta":
        kw["n_augmentations"] = 2
    if method in ("eta", "eata", "sar", "rdumb", "deyo"):
        kw["margin"] = 10.0  # keep every sample so that parameters move
    if method == "deyo":
        kw["plpd_threshold"] = -1.0
    if method == "eata":
        kw["source"] = torch.rand(8, 1, 8, 8)
    adapter = tta.make(method, net, **kw)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    x = torch.rand(8, 1, 8, 8)
    for _ in range(3):
        adapter(x)
    if adapter.optimizer is not None:
        assert any(not torch.equal(v, before[k]) for k, v in adapter.state_dict().items()), "nothing moved"
    adapter.reset()
    for k, v in adapter.state_dict().items():
        assert torch.equal(v, before[k]), k
    if adapter.optimizer is not None:
        assert adapter.optimizer.state_dict()["state"] == {}


def test_state_round_trip_resumes_the_stream() -> None:
    net = tiny("ln")
    a = tta.Tent(net, lr=0.1)
    xs = [torch.randn(6, 5, dtype=torch.float64) for _ in range(4)]
    a(xs[0])
    saved = a.state()
    y1 = [a(x) for x in xs[1:]]
    a.load_state(saved)
    y2 = [a(x) for x in xs[1:]]
    for u, v in zip(y1, y2):
        assert torch.equal(u, v)


def test_episodic_and_reset_every() -> None:
    x = torch.randn(6, 5, dtype=torch.float64)
    ep = tta.Tent(tiny("bn"), lr=0.1, episodic=True)
    assert torch.equal(ep(x), ep(x))  # each batch starts from the source state
    co = tta.Tent(tiny("bn"), lr=0.1)
    assert not torch.equal(co(x), co(x))
    guard = tta.Tent(tiny("bn"), lr=0.1, reset_every=2)
    first = guard(x)
    guard(x)  # second update: reset afterwards
    assert torch.equal(guard(x), first)


def test_no_gradient_leaks_into_frozen_parameters() -> None:
    net = tiny("bn")
    frozen = {n: p.clone() for n, p in net.named_parameters() if not n.startswith("1.")}
    for method in ("tent", "eta", "sar"):
        a = tta.make(method, net, lr=0.5, **({} if method == "tent" else {"margin": 10.0}))
        a(torch.randn(8, 5, dtype=torch.float64))
        for n, p in net.named_parameters():
            if n in frozen:
                assert p.grad is None and torch.equal(p, frozen[n]), (method, n)


@pytest.mark.parametrize(
    ("x", "err", "match"),
    [
        (torch.zeros(0, 5, dtype=torch.float64), ValueError, "at least one sample"),
        (torch.full((3, 5), math.nan, dtype=torch.float64), ValueError, "x must be finite"),
        (torch.ones(3, 5, dtype=torch.long), TypeError, "floating-point"),
        ([[1.0] * 5], TypeError, "torch.Tensor"),
    ],
)
def test_bad_batches(x: object, err: type, match: str) -> None:
    a = tta.Tent(tiny("ln"))
    with pytest.raises(err, match=match):
        a(x)  # type: ignore[arg-type]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="lr must be"):
        tta.Tent(tiny(), lr=-1.0)
    with pytest.raises(ValueError, match="steps must be"):
        tta.Tent(tiny(), steps=0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        tta.Tent(tiny(), optimizer="lbfgs")
    with pytest.raises(ValueError, match="method must be one of"):
        tta.make("tent2", tiny())
    with pytest.raises(ValueError, match="classifier must name"):
        tta.LAME(tiny(), classifier="nope")
    with pytest.raises(ValueError, match="images"):
        tta.DeYO(tiny())(torch.randn(4, 5, dtype=torch.float64))


def test_registry_is_complete() -> None:
    for name, m in tta.METHODS.items():
        assert m.fn.name == name
        assert m.reference and m.summary
