"""Hand-written float64 references for the tta tests: a tiny MLP whose forward is spelled out."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def tiny(norm: str = "bn", d_in: int = 5, hidden: int = 6, classes: int = 4, seed: int = 0) -> nn.Sequential:
    """Linear -> norm -> ReLU -> Linear, float64, with non-trivial affine parameters."""
    g = torch.Generator().manual_seed(seed)
    layer = {"bn": nn.BatchNorm1d(hidden), "ln": nn.LayerNorm(hidden), "gn": nn.GroupNorm(2, hidden)}[norm]
    net = nn.Sequential(nn.Linear(d_in, hidden), layer, nn.ReLU(), nn.Linear(hidden, classes)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        if norm == "bn":
            layer.running_mean.copy_(torch.randn(hidden, generator=g, dtype=torch.float64))
            layer.running_var.copy_(torch.rand(hidden, generator=g, dtype=torch.float64) + 0.5)
    return net


def forward(params: dict[str, Tensor], x: Tensor, norm: str = "bn", eps: float = 1e-5) -> Tensor:
    """The tiny net's forward written out (BatchNorm with the batch's biased statistics)."""
    h = x @ params["0.weight"].T + params["0.bias"]
    if norm == "bn":
        mu, var = h.mean(0), h.var(0, unbiased=False)
    elif norm == "ln":
        mu, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
    else:  # GroupNorm with 2 groups
        hg = h.view(len(h), 2, -1)
        mu = hg.mean(-1, keepdim=True).expand_as(hg).reshape(h.shape)
        var = hg.var(-1, unbiased=False, keepdim=True).expand_as(hg).reshape(h.shape)
    h = (h - mu) / torch.sqrt(var + eps) * params["1.weight"] + params["1.bias"]
    h = torch.relu(h)
    return h @ params["3.weight"].T + params["3.bias"]


def ent(z: Tensor) -> Tensor:
    """Per-row Shannon entropy in nats, written out."""
    p = torch.softmax(z, -1)
    return -(p * torch.log(p)).sum(-1)


def clone_params(net: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def sgd(
    params: dict[str, Tensor],
    grads: dict[str, Tensor],
    bufs: dict[str, Tensor],
    lr: float,
    momentum: float = 0.9,
) -> None:
    """torch.optim.SGD's rule (dampening 0, no Nesterov): b <- m b + g (b = g first), p <- p - lr b."""
    for n, g in grads.items():
        bufs[n] = g.clone() if n not in bufs else momentum * bufs[n] + g
        params[n] = params[n] - lr * bufs[n]


NORM = ("1.weight", "1.bias")
LOG = math.log
