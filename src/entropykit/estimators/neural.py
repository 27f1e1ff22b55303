"""Neural variational lower bounds on mutual information (torch), and a small training loop.

The functional core is :func:`mi_bound`: given a critic's score matrix ``scores[i, j] = f(x_i, y_j)``
over a batch (the diagonal holds samples of the joint, the off-diagonal pairs samples of the product
of marginals), it returns the bound's value as a differentiable scalar. :func:`neural_mutual_info`
trains a separable (``g(x)^T h(y)``) or joint (``f([x, y])``) MLP critic on it with early stopping
and reports the bound on held-out samples.

Known limits (Poole et al. 2019; McAllester & Stratos 2020): InfoNCE can never exceed
``log(batch_size)``; DV/MINE and NWJ have variance growing like ``exp(I)``; SMILE trades a bias for
lower variance through the clip ``tau``. High true MI is out of reach of every bound at small batches.

References
----------
.. [1] M. I. Belghazi et al., "Mutual information neural estimation", ICML 2018 (MINE; DV bound and
       the EMA-debiased gradient).
.. [2] X. Nguyen, M. J. Wainwright, M. I. Jordan, "Estimating divergence functionals and the
       likelihood ratio by convex risk minimization", IEEE Trans. Inf. Theory 56, 2010 (NWJ).
.. [3] A. van den Oord, Y. Li, O. Vinyals, "Representation learning with contrastive predictive
       coding", 2018 (InfoNCE).
.. [4] B. Poole, S. Ozair, A. van den Oord, A. Alemi, G. Tucker, "On variational bounds of mutual
       information", ICML 2019.
.. [5] J. Song, S. Ermon, "Understanding the limitations of variational mutual information
       estimators", ICLR 2020 (SMILE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from entropykit._validate import check_choice, check_finite, check_int, check_positive, check_tensor

from ._samples import check_same_n, check_samples

__all__ = ["BOUNDS", "NeuralMIResult", "mi_bound", "neural_mutual_info"]

BOUNDS = ("infonce", "nwj", "dv", "mine", "smile")


def _logmeanexp_offdiag(scores: Tensor) -> Tensor:
    n = scores.shape[0]
    off = scores.masked_fill(torch.eye(n, dtype=torch.bool, device=scores.device), -math.inf)
    return torch.logsumexp(off.reshape(-1), 0) - math.log(n * (n - 1))


def mi_bound(scores: Tensor, bound: str = "infonce", *, clip: float = 5.0) -> Tensor:
    r"""Value of a variational lower bound on I(X; Y) from a critic score matrix (n x n, n >= 2):

    - ``"infonce"``: :math:`\frac1n\sum_i [f_{ii} - \log\sum_j e^{f_{ij}}] + \log n` (<= log n) [3]_;
    - ``"nwj"``: :math:`\frac1n\sum_i f_{ii} - e^{-1}\,\mathrm{mean}_{i\ne j} e^{f_{ij}}` [2]_;
    - ``"dv"`` and ``"mine"``: :math:`\frac1n\sum_i f_{ii} - \log \mathrm{mean}_{i\ne j} e^{f_{ij}}`
      (Donsker-Varadhan; MINE differs only in its training gradient) [1]_;
    - ``"smile"``: DV with the partition term over :math:`\mathrm{clip}(f, -\tau, \tau)` (``clip`` = tau);
      its gradient is the Jensen-Shannon (f-GAN) bound's, as in the authors' code [5]_.

    Nats. Differentiable (maximise it to train the critic).

    >>> import torch
    >>> scores = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(float(mi_bound(scores, "infonce")), 4), round(math.log(2), 4)  # below log(batch)
    (0.5662, 0.6931)
    >>> float(mi_bound(scores, "dv"))
    2.0
    """
    check_tensor(scores, "scores", floating=True)
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        got = tuple(scores.shape)
        raise ValueError(f"scores must be a square (n, n) matrix with n >= 2, got shape {got}")
    check_finite(scores.detach(), "scores")
    bound = check_choice(bound, BOUNDS, "bound")
    n = scores.shape[0]
    joint = scores.diagonal().mean()
    if bound == "infonce":
        return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(n)
    if bound == "nwj":
        return joint - torch.exp(_logmeanexp_offdiag(scores) - 1.0)
    if bound in ("dv", "mine"):
        return joint - _logmeanexp_offdiag(scores)
    tau = check_positive(clip, "clip")
    dv = joint - _logmeanexp_offdiag(scores.clamp(-tau, tau))
    # Jensen-Shannon f-GAN bound: E_p[-softplus(-f)] - E_q[softplus(f)]
    off = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    js = -nn.functional.softplus(-scores.diagonal()).mean() - nn.functional.softplus(scores[off]).mean()
    return js + (dv - js).detach()


class _MLP(nn.Sequential):
    def __init__(self, d_in: int, hidden: int, d_out: int, layers: int) -> None:
        mods: list[nn.Module] = []
        d = d_in
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        mods.append(nn.Linear(d, d_out))
        super().__init__(*mods)


class _Critic(nn.Module):
    def __init__(self, dx: int, dy: int, kind: str, hidden: int, embed: int, layers: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "separable":
            self.g, self.h = _MLP(dx, hidden, embed, layers), _MLP(dy, hidden, embed, layers)
        else:
            self.f = _MLP(dx + dy, hidden, 1, layers)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.kind == "separable":
            return self.g(x) @ self.h(y).T
        n = x.shape[0]
        pairs = torch.cat([x[:, None, :].expand(n, n, -1), y[None, :, :].expand(n, n, -1)], dim=-1)
        return self.f(pairs)[..., 0]


@dataclass(frozen=True)
class NeuralMIResult:
    """Held-out bound value (nats), its ceiling (``log(batch_size)`` for InfoNCE, else inf), the
    number of training steps taken and the validation curve."""

    estimate: float
    ceiling: float
    steps: int
    history: list[float] = field(default_factory=list)


def neural_mutual_info(
    x: Any, y: Any, *, bound: str = "smile", critic: str = "separable", hidden: int = 64, embed: int = 32,
    layers: int = 2, batch_size: int = 128, steps: int = 2000, lr: float = 5e-4, clip: float = 5.0,
    ema: float = 0.9, validation: float = 0.2, eval_every: int = 50, patience: int = 5,
    generator: torch.Generator | None = None, threads: int | None = 1,
) -> NeuralMIResult:
    r"""Train a critic to maximise a variational bound (:func:`mi_bound`) on I(X; Y) and report the
    bound on held-out samples (a fraction ``validation`` of the rows), with early stopping when the
    held-out bound has not improved for ``patience`` evaluations. ``bound="mine"`` trains DV with the
    EMA-debiased gradient (rate ``ema`` = 0.9, the MINE paper's). Inputs are standardised with the
    training rows' statistics. ``generator`` seeds the split, the batches and the initialisation.
    ``threads``: torch intra-op threads while training (restored afterwards; the default 1 suits these
    small critics, for which more threads mostly add synchronisation; None keeps the current setting).
    Nats. References: Belghazi et al. [1]_, Poole et al. [4]_, Song and Ermon [5]_.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> z = torch.randn(1000, 2, generator=g)
    >>> x, y = z[:, :1], 0.8 * z[:, :1] + 0.6 * z[:, 1:]  # truth -log(1 - 0.64) / 2 = 0.51
    >>> r = neural_mutual_info(x, y, bound="infonce", hidden=16, batch_size=64, steps=150, generator=g)
    >>> 0.2 < r.estimate < 0.7, r.ceiling == math.log(64)
    (True, True)
    """
    a, c = check_samples(x, "x"), check_samples(y, "y")
    n = check_same_n({"x": a, "y": c})
    bound = check_choice(bound, BOUNDS, "bound")
    critic = check_choice(critic, ("separable", "joint"), "critic")
    hidden, embed = check_int(hidden, "hidden", 1), check_int(embed, "embed", 1)
    layers = check_int(layers, "layers", 0)
    batch_size = check_int(batch_size, "batch_size", 2)
    steps, eval_every = check_int(steps, "steps", 1), check_int(eval_every, "eval_every", 1)
    patience = check_int(patience, "patience", 1)
    lr, clip = check_positive(lr, "lr"), check_positive(clip, "clip")
    ema = float(check_positive(ema, "ema"))
    if not 0 < validation < 1:
        raise ValueError(f"validation must be a fraction in (0, 1), got {validation!r}")
    n_val = round(validation * n)
    if n_val < batch_size or n - n_val < batch_size:
        raise ValueError(f"x must have enough samples for a training and a validation batch of "
                         f"batch_size={batch_size} (validation={validation}), got {n}")
    if threads is not None:
        threads = check_int(threads, "threads", 1)
    previous = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        return _train(a, c, bound, critic, hidden, embed, layers, batch_size, steps, lr, clip, ema, n_val,
                      eval_every, patience, generator)
    finally:
        torch.set_num_threads(previous)


def _train(
    a: Any, c: Any, bound: str, critic: str, hidden: int, embed: int, layers: int, batch_size: int,
    steps: int, lr: float, clip: float, ema: float, n_val: int, eval_every: int, patience: int,
    generator: torch.Generator | None,
) -> NeuralMIResult:
    n = a.shape[0]
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = _Critic(a.shape[1], c.shape[1], critic, hidden, embed, layers).double()
    perm = torch.randperm(n, generator=gen)
    xt, yt = torch.from_numpy(a)[perm], torch.from_numpy(c)[perm]
    mx, sx = xt[n_val:].mean(0), xt[n_val:].std(0).clamp_min(1e-12)
    my, sy = yt[n_val:].mean(0), yt[n_val:].std(0).clamp_min(1e-12)
    xt, yt = (xt - mx) / sx, (yt - my) / sy
    xv, yv, xtr, ytr = xt[:n_val], yt[:n_val], xt[n_val:], yt[n_val:]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    running: Tensor | None = None

    def held_out() -> float:
        with torch.no_grad():
            vals = [float(mi_bound(model(xv[i:i + batch_size], yv[i:i + batch_size]), bound, clip=clip))
                    for i in range(0, n_val - batch_size + 1, batch_size)]
        return sum(vals) / len(vals)

    best, best_state, bad, history, step = -math.inf, None, 0, [], 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, xtr.shape[0], (batch_size,), generator=gen)
        scores = model(xtr[idx], ytr[idx])
        if bound == "mine":
            t_marg = _logmeanexp_offdiag(scores)
            now = t_marg.exp().detach()
            running = now if running is None else ema * running + (1 - ema) * now
            objective = scores.diagonal().mean() - t_marg.exp() / running  # gradient: MINE's debiased
        else:
            objective = mi_bound(scores, bound, clip=clip)
        opt.zero_grad()
        (-objective).backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            v = held_out()
            history.append(v)
            if v > best:
                best, bad = v, 0
                best_state = {k: t.clone() for k, t in model.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    ceiling = math.log(batch_size) if bound == "infonce" else math.inf
    return NeuralMIResult(held_out(), ceiling, step, history)
