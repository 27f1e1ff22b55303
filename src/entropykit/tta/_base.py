"""The one adapter interface: configure a classifier, adapt on every forward, reset, save.

``configure`` decides what trains (the affine parameters of every normalisation layer, or all
parameters, or none) and how BatchNorm normalises at test time (the test batch's statistics, the
source statistics, or the alpha-mix of both); ``Adapter`` is the base of every method: its
``forward(x)`` validates the batch, adapts (``steps`` times) and returns the logits of that forward;
``reset()`` restores the source state bit for bit.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from entropykit._validate import (
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_real,
    check_tensor,
)

#: The normalisation layers whose affine parameters ``configure(params="norm")`` trains, by kind.
NORM_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "batchnorm": (_BatchNorm,),  # BatchNorm1d/2d/3d, SyncBatchNorm, LazyBatchNorm*
    "layernorm": (nn.LayerNorm,),
    "groupnorm": (nn.GroupNorm,),
    "rmsnorm": (nn.RMSNorm,),
}
PARAMS = ("norm", "all", "none")
BN_MODES = ("batch", "source", "alpha")
OPTIMIZERS = ("sgd", "adam")


def _kind(m: nn.Module) -> str | None:
    for kind, types in NORM_TYPES.items():
        if isinstance(m, types):
            return kind
    return None


@dataclass(frozen=True)
class Selection:
    """What :func:`configure` selected: the trainable parameter names, the normalisation layers by
    kind, the BatchNorm mode, and the parameter counts. ``str(selection)`` is a one-paragraph report."""

    params: tuple[str, ...]
    norm_layers: dict[str, str] = field(default_factory=dict)  # module name -> kind
    bn: str = "batch"
    n_trainable: int = 0
    n_total: int = 0

    def __str__(self) -> str:
        kinds: dict[str, int] = {}
        for k in self.norm_layers.values():
            kinds[k] = kinds.get(k, 0) + 1
        layers = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no normalisation layers"
        share = 100.0 * self.n_trainable / max(self.n_total, 1)
        return (
            f"{len(self.params)} trainable tensors ({self.n_trainable:,} of {self.n_total:,} parameters, "
            f"{share:.3g}%); {layers}; BatchNorm statistics: {self.bn}"
        )


def _alpha_forward(m: _BatchNorm, alpha: float) -> Callable[[Tensor], Tensor]:
    """BatchNorm with statistics (1 - alpha) source + alpha test batch (Schneider et al. 2020; the
    anchor's ``AlphaBatchNorm``: the batch variance is the unbiased one, as a momentum-1 BN stores)."""

    def forward(x: Tensor) -> Tensor:
        dims = [0, *range(2, x.dim())]
        mu = x.mean(dims)
        var = x.var(dims, unbiased=x.numel() // x.shape[1] > 1)
        assert m.running_mean is not None and m.running_var is not None
        mean = (1 - alpha) * m.running_mean + alpha * mu
        var = (1 - alpha) * m.running_var + alpha * var
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + m.eps)  # differentiable in x's stats
        if m.weight is not None:
            y = y * m.weight.view(shape)
        if m.bias is not None:
            y = y + m.bias.view(shape)
        return y

    return forward


def _apply_modes(model: nn.Module, bn: str, alpha: float) -> None:
    """Eval mode everywhere (no dropout / stochastic depth); BatchNorm per ``bn``."""
    model.eval()
    for m in model.modules():
        if not isinstance(m, _BatchNorm):
            continue
        if "forward" in vars(m):
            del m.forward  # a previous alpha configuration
        if bn == "batch":
            m.train()  # batch statistics; with track_running_stats off the source buffers stay untouched
            m.track_running_stats = False
        elif bn == "alpha":
            m.forward = _alpha_forward(m, alpha)  # type: ignore[method-assign,assignment]


def configure(
    model: nn.Module,
    *,
    params: str = "norm",
    bn: str = "batch",
    alpha: float = 0.1,
    exclude: Sequence[str] = (),
) -> Selection:
    """Configure ``model`` in place for test-time adaptation and report what was selected.

    * ``params="norm"``: train the affine parameters (``weight``, ``bias``) of **every**
      normalisation layer -- BatchNorm1d/2d/3d (any ``_BatchNorm``), LayerNorm, GroupNorm, RMSNorm
      -- and freeze the rest (TENT, Wang et al. 2021; EATA, SAR, DeYO); ``"all"``: train every
      parameter (CoTTA, RMT); ``"none"``: freeze everything (source, BN-adapt, LAME).
    * ``bn="batch"``: BatchNorm normalises with the test batch's statistics and leaves the source
      running statistics untouched; ``"source"``: the stored running statistics; ``"alpha"``:
      mean and variance (1 - alpha) source + alpha batch (Schneider et al. 2020, default 0.1).
    * ``exclude``: fnmatch patterns of module names whose parameters stay frozen (SAR and DeYO
      freeze the top blocks of their ImageNet models, e.g. ``"layer4*"``).

    The rest of the model is put in eval mode (no dropout). Raises ``ValueError`` when
    ``params="norm"`` finds no normalisation layer with affine parameters.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3), nn.LayerNorm(3))
    >>> sel = configure(net)
    >>> sel.params
    ('1.weight', '1.bias', '4.weight', '4.bias')
    >>> print(sel)
    4 trainable tensors (22 of 89 parameters, 24.7%); 1 batchnorm, 1 layernorm; BatchNorm statistics: batch
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(params, PARAMS, "params")
    check_choice(bn, BN_MODES, "bn")
    alpha = check_real(alpha, "alpha", 0.0, 1.0)
    if isinstance(exclude, str):
        exclude = (exclude,)
    model.requires_grad_(False)
    norms = {name: k for name, m in model.named_modules() if (k := _kind(m)) is not None}
    excluded = {name for name, _ in model.named_modules() if any(fnmatch.fnmatch(name, p) for p in exclude)}
    chosen: list[str] = []
    for name, m in model.named_modules():
        if name in excluded or any(name.startswith(e + ".") for e in excluded if e):
            continue
        if params == "all" or (params == "norm" and name in norms):
            for pn, p in m.named_parameters(recurse=False):
                if params == "all" or pn in ("weight", "bias"):
                    p.requires_grad_(True)
                    chosen.append(f"{name}.{pn}" if name else pn)
    if params == "norm" and not chosen:
        raise ValueError(
            "model must contain a normalisation layer with affine parameters (BatchNorm1d/2d/3d, LayerNorm, "
            f"GroupNorm, RMSNorm) to adapt, got {type(model).__name__} with none"
        )
    _apply_modes(model, bn, alpha)
    pmap = dict(model.named_parameters())
    return Selection(
        params=tuple(chosen),
        norm_layers=norms,
        bn=bn,
        n_trainable=sum(pmap[n].numel() for n in chosen),
        n_total=sum(p.numel() for p in pmap.values()),
    )


def make_optimizer(
    params: Sequence[nn.Parameter], optimizer: str | Callable[..., torch.optim.Optimizer], lr: float,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """``"sgd"`` (momentum 0.9, as TENT/EATA/SAR on ImageNet), ``"adam"`` (betas 0.9, 0.999, as the
    anchor's CIFAR configurations), or a factory ``f(params, lr=lr)``."""
    if callable(optimizer):
        return optimizer(params, lr=lr)
    check_choice(optimizer, OPTIMIZERS, "optimizer")
    # the fused kernels update a few small normalisation tensors in one call (~3x faster on CPU)
    fused = len({p.device.type for p in params}) == 1 and params[0].device.type in ("cpu", "cuda")
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, fused=fused or None)
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=fused or None)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Mean teacher: theta_t <- m theta_t + (1 - m) theta_s for every parameter (Tarvainen &
    Valpola 2017; the anchor's ``ema_update_model(update_all=True)``)."""
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)


class Adapter(nn.Module):
    """Base of every test-time adaptation method: wrap a classifier, adapt on each ``forward``.

    ``forward(x)`` checks the batch (a floating tensor with a non-empty batch axis, finite),
    resets first when ``episodic``, runs ``steps`` adaptation steps and returns the logits (class
    scores on the last axis) of the last step's forward -- the predictions of the model *before*
    that step's update, as in TENT. Every ``reset_every`` updates (> 0) the model returns to the
    source state (the collapse guard of RDumb, Press et al. 2023). ``reset()`` restores the source
    parameters, buffers, optimizer and method state bit for bit; ``state()`` / ``load_state()``
    save and restore the whole adaptation state (to pause and resume a stream).

    ``reset_agreement=a`` (in (0, 1]) is the drift guard, a collapse guard with a self-check: a
    frozen copy of the source model (same normalisation mode) also predicts every input, and the
    model returns to the source state when the running rate of agreement between the adapted and
    the source top-1 predictions falls below ``a``. The rate is an exponential moving average over
    samples with time constant ``agreement_samples`` T (50): a batch of n samples with agreement
    rate r_b moves it as A <- d A + (1 - d) r_b, d = (1 - 1/T)^n, from A = r_b after a reset.
    Periodic resets (RDumb, Press et al. 2023) and SAR's entropy-EMA reset (Niu et al. 2023) are
    the published guards; this agreement rule is ours. It costs one forward of the frozen copy, and
    it caps how far adaptation may move the predictions from the source (about a share 1 - a of
    them): on Digits-C it keeps TENT from collapsing on SAR's wild stream (34.9 % error against
    82.9 % without it, source 38.6 %) but takes back ETA's gain on the mixed stream (57.2 against
    53.8 %); ``benchmarks/RESULTS.md``.

    ``window=W`` (> 1) is the sliding-window mode for single-sample (or small-batch) streams, as
    the test-time-adaptation repository's ``TEST.WINDOW_LENGTH``: every call appends ``x`` to a FIFO
    buffer of the last W inputs, adapts on the whole buffer (so BatchNorm has statistics and the
    filters a batch) and returns the logits of the ``len(x)`` newest rows; the very first sample
    alone is only predicted (:meth:`predict`, BatchNorm with the source statistics). The buffer is
    part of the state (``reset()`` empties it). Each call costs a forward/backward over W inputs.

    The model is configured *in place* (see :func:`configure`); ``selection`` reports what trains.
    Subclasses implement ``step(x) -> logits``; a method without trainable parameters has no
    optimizer.
    """

    name: ClassVar[str] = "adapter"
    #: method defaults (the papers'), shown by ``entropykit.tta.METHODS``
    defaults: ClassVar[dict[str, Any]] = {}
    PARAMS: ClassVar[str] = "norm"
    BN: ClassVar[str] = "batch"

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float | None = None,
        optimizer: str | Callable[..., torch.optim.Optimizer] | None = None,
        momentum: float = 0.9,
        steps: int = 1,
        episodic: bool = False,
        reset_every: int = 0,
        params: str | None = None,
        bn: str | None = None,
        alpha: float = 0.1,
        exclude: Sequence[str] = (),
        generator: torch.Generator | None = None,
        window: int = 0,
        reset_agreement: float = 0.0,
        agreement_samples: float = 50.0,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.steps = check_int(steps, "steps", 1)
        self.reset_every = check_int(reset_every, "reset_every", 0)
        self.episodic = check_bool(episodic, "episodic")
        self._bn = bn if bn is not None else self.BN
        self._alpha = alpha
        self.selection = configure(
            model, params=params if params is not None else self.PARAMS, bn=self._bn, alpha=alpha,
            exclude=exclude,
        )
        pmap = dict(model.named_parameters())
        self.params = [pmap[n] for n in self.selection.params]
        self.lr = check_positive(lr if lr is not None else self.defaults.get("lr", 1e-3), "lr")
        opt = optimizer if optimizer is not None else self.defaults.get("optimizer", "sgd")
        self.optimizer: torch.optim.Optimizer | None = (
            make_optimizer(self.params, opt, self.lr, momentum) if self.params else None
        )
        self.generator = generator
        self.updates = 0
        self.window = check_int(window, "window", 0)
        self._buffer: Tensor | None = None
        self._source: dict[str, Any] | None = None
        self.reset_agreement = check_real(reset_agreement, "reset_agreement", 0.0, 1.0)
        self.agreement_samples = check_real(agreement_samples, "agreement_samples", 1.0, finite=True)
        self.agreement: float | None = None  # the drift guard's running agreement with the source
        self.drift_resets = 0
        self.guard_model: nn.Module | None = None
        if self.reset_agreement > 0:  # copied before any subclass hook; synced in _snapshot_source
            self.guard_model = copy.deepcopy(model)
            _apply_modes(self.guard_model, self._bn, alpha)
            self.guard_model.requires_grad_(False)

    # -- state ---------------------------------------------------------------------------------
    def _snapshot_source(self) -> None:
        """Record the source state (call at the end of a subclass's ``__init__``)."""
        if self.guard_model is not None:  # the source of the drift guard is this state (RMT: warmed up)
            with torch.no_grad():
                for g, p in zip(self.guard_model.parameters(), self.model.parameters()):
                    g.copy_(p)
        self._source = copy.deepcopy(self.state())

    def state(self) -> dict[str, Any]:
        """The whole adaptation state: model (and teacher) tensors, optimizer, method state."""
        return {
            "modules": {k: v.detach().clone() for k, v in self.state_dict().items()},
            "optimizer": None if self.optimizer is None else copy.deepcopy(self.optimizer.state_dict()),
            "method": copy.deepcopy(self._method_state()),
            "updates": self.updates,
            "buffer": None if self._buffer is None else self._buffer.clone(),
            "agreement": self.agreement,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state` (bit-identical tensors)."""
        with torch.no_grad():
            for k, v in self.state_dict(keep_vars=True).items():
                v.copy_(state["modules"][k])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._load_method_state(copy.deepcopy(state["method"]))
        self.updates = state["updates"]
        buf = state.get("buffer")
        self._buffer = None if buf is None else buf.clone()
        self.agreement = state.get("agreement")

    def _method_state(self) -> dict[str, Any]:
        return {}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        pass

    def reset(self) -> None:
        """Restore the source state (parameters, buffers, optimizer, method state, an empty window),
        bit for bit."""
        if self._source is None:
            raise RuntimeError(f"{type(self).__name__} did not record its source state")
        self.load_state(self._source)

    def train(self, mode: bool = True) -> Adapter:
        """Keep the configured modes (eval everywhere, BatchNorm per ``bn``) whatever ``mode`` is."""
        super().train(mode)
        _apply_modes(self.model, self._bn, self._alpha)
        if getattr(self, "guard_model", None) is not None:
            _apply_modes(self.guard_model, self._bn, self._alpha)  # type: ignore[arg-type]
        return self

    # -- adaptation ----------------------------------------------------------------------------
    def step(self, x: Tensor) -> Tensor:
        """One adaptation step on batch ``x``, returning its logits; every method defines its own."""
        raise TypeError(f"{type(self).__name__} defines no step(x): an Adapter subclass must define it")

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", floating=True, min_dim=1)
        if x.shape[0] == 0:
            raise ValueError(
                f"x must hold at least one sample (a non-empty batch axis), got shape {tuple(x.shape)}"
            )
        check_finite(x, "x")
        if self.episodic:
            self._reset_keep_window()
        if not self.window:
            return self._guard(x, self._adapt(x), len(x))
        if self._buffer is not None and self._buffer.shape[1:] != x.shape[1:]:
            raise ValueError(
                "x must have the sample shape of the window's earlier inputs "
                f"{tuple(self._buffer.shape[1:])}, got {tuple(x.shape[1:])}"
            )
        buf = x if self._buffer is None else torch.cat([self._buffer, x.to(self._buffer)])
        buf = buf[-max(self.window, len(x)):].detach()
        self._buffer = buf
        if len(buf) < 2:  # one sample: nothing to estimate statistics from yet
            return self.predict(buf)
        return self._guard(buf, self._adapt(buf), len(x))

    def _guard(self, x: Tensor, out: Tensor, n: int) -> Tensor:
        """The drift guard (``reset_agreement``): update the running agreement with the frozen source
        on the ``n`` newest rows of the predictions ``out`` of inputs ``x`` (a window: all of it, for
        BatchNorm's statistics); reset when it falls below the threshold. Returns those ``n`` rows."""
        out = out[-n:]
        if self.guard_model is None:
            return out
        with torch.no_grad():
            rate = float((self.guard_model(x)[-n:].argmax(-1) == out.argmax(-1)).double().mean())
        d = (1.0 - 1.0 / self.agreement_samples) ** n
        self.agreement = rate if self.agreement is None else d * self.agreement + (1.0 - d) * rate
        if self.agreement < self.reset_agreement:
            self._reset_keep_window()
            self.drift_resets += 1
        return out

    def _adapt(self, x: Tensor) -> Tensor:
        out = x
        for _ in range(self.steps):
            out = self.step(x)
            self.updates += 1
            if self.reset_every and self.updates % self.reset_every == 0:
                self._reset_keep_window()
        return out

    def _reset_keep_window(self) -> None:
        """The episodic / periodic reset: the model returns to the source, the window keeps its inputs."""
        buf = self._buffer
        self.reset()
        self._buffer = buf

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The model's logits on ``x`` without adapting; BatchNorm uses the source statistics (a
        window's first sample: one sample has no batch statistics)."""
        bns = [m for m in self.model.modules() if isinstance(m, _BatchNorm) and m.training]
        for m in bns:
            m.eval()
        try:
            return self.model(x)  # type: ignore[no-any-return]
        finally:
            for m in bns:
                m.train()

    def _update(self, loss: Tensor) -> None:
        """One optimizer step on ``loss`` (zero grads before and after)."""
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def extra_repr(self) -> str:
        return f"method={self.name}, {self.selection}"


def iterate_batches(source: Tensor | Iterable[Any], batch_size: int = 64) -> Iterable[Tensor]:
    """Batches of inputs from a tensor (split along axis 0) or an iterable of tensors / (x, y) pairs."""
    if isinstance(source, Tensor):
        yield from source.split(batch_size)
        return
    for item in source:
        yield item[0] if isinstance(item, (tuple, list)) else item
