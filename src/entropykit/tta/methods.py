"""The test-time adaptation methods, each a thin :class:`~entropykit.tta.Adapter` over the formulas
of :mod:`entropykit.tta.functional`. Defaults are the papers' (ImageNet-C, batch 64, unless said);
the anchor is the test-time-adaptation repository (Döbler, Marsden, Yang et al.), whose CIFAR-10-C
configurations use Adam with lr 1e-3 at batch 200 for every gradient method.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entropykit._validate import check_choice, check_int, check_positive, check_real, check_tensor, reduce
from entropykit.measures import entropy
from entropykit.tta import functional as tf
from entropykit.tta._base import Adapter, _apply_modes, ema_update, iterate_batches

__all__ = ["EATA", "ETA", "LAME", "RMT", "SAR", "WOC", "BNAdapt", "CoTTA", "DeYO", "RDumb", "Source", "Tent"]


#: SGD as TENT/EATA/SAR/DeYO on ImageNet (batch 64); Adam as the anchor's CIFAR configurations.
_SGD: dict[str, Any] = {"optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9}
_ADAM: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3}


def _frozen_copy(model: nn.Module, bn: str, alpha: float) -> nn.Module:
    twin = copy.deepcopy(model)
    _apply_modes(twin, bn, alpha)  # re-bind alpha-BN forwards to the copy's own buffers
    twin.requires_grad_(False)
    return twin


def _margin(cache: float | None, factor: float, logits: Tensor) -> float:
    return cache if cache is not None else factor * math.log(logits.shape[-1])


class Source(Adapter):
    """No adaptation: the source model with its stored BatchNorm statistics (the baseline).

    >>> net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    >>> Source(net)(torch.randn(5, 4)).shape
    torch.Size([5, 3])
    """

    name = "source"
    PARAMS = "none"
    BN = "source"

    def __init__(self, model: nn.Module, **kw: Any) -> None:
        super().__init__(model, **kw)
        self._snapshot_source()

    @torch.no_grad()
    def step(self, x: Tensor) -> Tensor:
        return self.model(x)  # type: ignore[no-any-return]


class BNAdapt(Source):
    """Test-time normalisation: BatchNorm uses the test batch's statistics (Schneider et al. 2020,
    "Improving robustness against common corruptions by covariate shift adaptation"; Nado et al.
    2020); ``bn="alpha"`` mixes them, (1 - alpha) source + alpha batch (alpha 0.1 at batch 1, the
    anchor's ``norm_alpha``). No parameter changes.

    >>> net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    >>> out = BNAdapt(net)(torch.randn(5, 4))
    >>> bool(out.mean(0).abs().max() < 1e-5)  # normalised with this batch's mean
    True
    """

    name = "bn_adapt"
    BN = "batch"


class Tent(Adapter):
    """TENT: minimise the mean prediction entropy over the normalisation affine parameters, one
    step per batch (Wang et al. 2021, "Tent: fully test-time adaptation by entropy minimization").

    loss = (1/N) sum_i H(softmax(f(x_i))), nats (:func:`entropykit.measures.entropy`); the
    returned logits are those of the forward before the step. Defaults (paper, ImageNet, batch 64):
    SGD, lr 2.5e-4, momentum 0.9; on CIFAR the paper and the anchor use Adam, lr 1e-3.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    >>> tent = Tent(net, lr=1e-2)
    >>> before = net[1].weight.clone()
    >>> _ = tent(torch.randn(16, 4))
    >>> bool((net[1].weight != before).any()), net[0].weight.requires_grad
    (True, False)
    """

    name = "tent"
    defaults: ClassVar[dict[str, Any]] = dict(_SGD)

    def __init__(self, model: nn.Module, **kw: Any) -> None:
        super().__init__(model, **kw)
        self._snapshot_source()

    def loss(self, logits: Tensor, x: Tensor) -> Tensor | None:
        """The loss of one batch; None: no update."""
        return entropy(logits, reduction="mean")

    def step(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            out = self.model(x)
            loss = self.loss(out, x)
            if loss is not None:
                self._update(loss)
        return out.detach()


class WOC(Tent):
    """TENT with the open-set "wisdom of crowds" filter (Lee et al. 2023, "Towards open-set
    test-time adaptation utilizing the wisdom of crowds in entropy minimization"): samples whose
    confidence (probability of the predicted class) under the adapted model is lower than under
    the original (source) model are left out of the entropy loss.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    >>> WOC(net)(torch.randn(6, 4)).shape
    torch.Size([6, 3])
    """

    name = "woc"

    def __init__(self, model: nn.Module, **kw: Any) -> None:
        super().__init__(model, **kw)
        self.source_model = _frozen_copy(model, self._bn, self._alpha)
        self.kept = 0
        self._snapshot_source()

    def loss(self, logits: Tensor, x: Tensor) -> Tensor | None:
        with torch.no_grad():
            p = logits.softmax(-1)
            y = p.argmax(-1, keepdim=True)
            q = self.source_model(x).softmax(-1)
            keep = (p.gather(-1, y) >= q.gather(-1, y)).squeeze(-1)
        self.kept += int(keep.sum())
        return reduce(entropy(logits), "mean", keep) if bool(keep.any()) else None


class EATA(Adapter):
    """EATA: entropy minimisation on reliable, non-redundant samples, reweighted, with a Fisher
    anti-forgetting penalty (Niu et al. 2022, "Efficient test-time model adaptation without
    forgetting"; transcribed from the EATA / test-time-adaptation code).

    loss = (1/|S|) sum_{i in S} H_i / exp(H_i - E_0) + alpha sum_k F_k (theta_k - theta0_k)^2, with
    S the samples kept by :func:`~entropykit.tta.functional.eata_select` (H < E_0 = ``margin`` ln C,
    |cos(p, ema)| < ``d_margin``); no update when S is empty. F is the diagonal Fisher
    (:func:`~entropykit.tta.functional.fisher_diagonal`) on ``source`` inputs (a tensor or an
    iterable of batches, ~2000 in-distribution samples in the paper); without ``source`` (or with
    ``fisher_alpha=0``) this is ETA. Defaults (paper, ImageNet): E_0 = 0.4 ln C, d = 0.05,
    alpha = 2000, SGD lr 2.5e-4 momentum 0.9 at batch 64; the anchor's CIFAR-10 setting is d 0.4,
    alpha 1.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    >>> eata = EATA(net, source=torch.randn(32, 4), fisher_alpha=2000.0)
    >>> eata(torch.randn(16, 4)).shape, sorted(eata.fisher)
    (torch.Size([16, 3]), ['1.bias', '1.weight'])
    """

    name = "eata"
    defaults: ClassVar[dict[str, Any]] = {**_SGD, "margin": 0.4, "d_margin": 0.05, "fisher_alpha": 2000.0}

    def __init__(
        self, model: nn.Module, *, source: Tensor | Iterable[Any] | None = None, fisher_alpha: float = 2000.0,
        margin: float = 0.4, e_margin: float | None = None, d_margin: float = 0.05,
        source_batch_size: int = 64, **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        self.margin = check_positive(margin, "margin")
        self.e_margin = None if e_margin is None else check_real(e_margin, "e_margin", finite=True)
        self.d_margin = check_real(d_margin, "d_margin", finite=True)
        self.fisher_alpha = check_real(fisher_alpha, "fisher_alpha", 0.0, finite=True)
        self.probs_ema: Tensor | None = None
        self.kept_reliable = 0  # samples through the first (entropy) filter
        self.kept = 0  # samples through both filters
        self.fisher: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        if source is not None and self.fisher_alpha > 0:
            pmap = dict(model.named_parameters())
            chosen = {n: pmap[n] for n in self.selection.params}
            self.fisher = tf.fisher_diagonal(model, chosen, iterate_batches(source, source_batch_size))
            self.anchor = {n: p.detach().clone() for n, p in chosen.items()}
        self._snapshot_source()

    def _method_state(self) -> dict[str, Any]:
        return {"probs_ema": self.probs_ema}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.probs_ema = state["probs_ema"]

    def step(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            out = self.model(x)
            e0 = _margin(self.e_margin, self.margin, out)
            h = entropy(out)  # once: the count, and the loss below
            self.kept_reliable += int((h.detach() < e0).sum())
            keep, w, self.probs_ema = tf.eata_select(out.detach(), e0, self.d_margin, self.probs_ema)
            self.kept += int(keep.sum())
            if bool(keep.any()):
                loss = reduce(h * w, "mean", keep)
                if self.fisher:
                    pmap = dict(self.model.named_parameters())
                    for n, f in self.fisher.items():
                        loss = loss + self.fisher_alpha * (f * (pmap[n] - self.anchor[n]) ** 2).sum()
                self._update(loss)
        return out.detach()


class ETA(EATA):
    """ETA: EATA without the Fisher penalty (Niu et al. 2022). Same filters and weights.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.GroupNorm(2, 8), nn.Linear(8, 3))
    >>> ETA(net)(torch.randn(4, 4)).shape
    torch.Size([4, 3])
    """

    name = "eta"
    defaults: ClassVar[dict[str, Any]] = {**_SGD, "margin": 0.4, "d_margin": 0.05}

    def __init__(self, model: nn.Module, **kw: Any) -> None:
        kw.pop("source", None)
        kw["fisher_alpha"] = 0.0
        super().__init__(model, **kw)


class RDumb(ETA):
    """RDumb: ETA reset to the source state every ``reset_every`` updates (Press et al. 2023,
    "RDumb: a simple approach that questions our progress in continual test-time adaptation";
    default 1000 updates and, as the anchor's CIFAR-10 setting, d_margin 0.4). The collapse guard
    (``reset_every``) is available on every method.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    >>> RDumb(net).reset_every
    1000
    """

    name = "rdumb"
    defaults: ClassVar[dict[str, Any]] = {**_SGD, "margin": 0.4, "d_margin": 0.4, "reset_every": 1000}

    def __init__(self, model: nn.Module, **kw: Any) -> None:
        kw.setdefault("reset_every", 1000)
        kw.setdefault("d_margin", 0.4)
        super().__init__(model, **kw)


class SAR(Adapter):
    """SAR: sharpness-aware, reliable entropy minimisation with model recovery (Niu et al. 2023,
    "Towards stable test-time adaptation in dynamic wild world"; the SAR code).

    Per batch: keep S1 = {H < E_0} (E_0 = ``margin`` ln C, 0.4); g = grad of mean_{S1} H; perturb
    theta + rho g / ||g|| (SAM, rho 0.05); keep S2 = {i in S1: H'_i < E_0} under the perturbed
    model; step from theta with the gradient of mean_{S2} H' (SGD lr 2.5e-4, momentum 0.9 at batch
    64). ema <- 0.9 ema + 0.1 mean_{S2} H' (the first value as is); when ema < ``reset_constant``
    (0.2) the model returns to the source state (collapse). When S1 or S2 is empty, no step is
    taken (the SAR code would step on a NaN loss). SAR also freezes the top blocks of its
    ImageNet models: pass ``exclude=["layer4*"]`` (see :func:`~entropykit.tta.configure`).

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    >>> sar = SAR(net, margin=1.0)
    >>> sar(torch.randn(16, 4)).shape, sar.ema is not None
    (torch.Size([16, 3]), True)
    """

    name = "sar"
    defaults: ClassVar[dict[str, Any]] = {**_SGD, "margin": 0.4, "rho": 0.05, "reset_constant": 0.2}

    def __init__(
        self, model: nn.Module, *, margin: float = 0.4, e_margin: float | None = None, rho: float = 0.05,
        reset_constant: float = 0.2, **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        self.margin = check_positive(margin, "margin")
        self.e_margin = None if e_margin is None else check_real(e_margin, "e_margin", finite=True)
        self.rho = check_real(rho, "rho", 0.0, finite=True)
        self.reset_constant = check_real(reset_constant, "reset_constant", finite=True)
        self.ema: float | None = None
        self.recoveries = 0
        self._snapshot_source()

    def _method_state(self) -> dict[str, Any]:
        return {"ema": self.ema}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.ema = state["ema"]

    def step(self, x: Tensor) -> Tensor:
        assert self.optimizer is not None
        opt = self.optimizer
        with torch.enable_grad():
            out = self.model(x)
            e0 = _margin(self.e_margin, self.margin, out)
            h = entropy(out)
            keep1 = h.detach() < e0
            if not bool(keep1.any()):
                return out.detach()
            opt.zero_grad(set_to_none=True)
            h[keep1].mean().backward()
            eps = tf.sam_perturbation(self.params, self.rho)
            with torch.no_grad():
                for p, e in zip(self.params, eps):
                    p.add_(e)
            opt.zero_grad(set_to_none=True)
            h2 = entropy(self.model(x))[keep1]
            keep2 = h2.detach() < e0
            stepped = bool(keep2.any())
            if stepped:
                loss2 = h2[keep2].mean()
                v = float(loss2.detach())
                self.ema = v if self.ema is None else 0.9 * self.ema + 0.1 * v
                loss2.backward()
            with torch.no_grad():
                for p, e in zip(self.params, eps):
                    p.sub_(e)
            if stepped:
                opt.step()
            opt.zero_grad(set_to_none=True)
        if self.ema is not None and self.ema < self.reset_constant:
            self.reset()
            self.recoveries += 1
        return out.detach()


class DeYO(Adapter):
    """DeYO: entropy minimisation on samples whose prediction relies on the object's shape
    (Lee et al. 2024, "Entropy is not enough for test-time adaptation: from the perspective of
    disentangled factors"; the DeYO code).

    Keep S1 = {H < 0.5 ln C}; x' = :func:`~entropykit.tta.functional.patch_shuffle` (4 x 4
    patches); keep S = {i in S1: PLPD_i > 0.2} (0.3 in the paper's mild settings); loss =
    mean_S H_i (1/exp(H_i - 0.4 ln C) + 1/exp(-PLPD_i)); no update when S is empty. Inputs must be
    images (N, C, H, W). SGD lr 2.5e-4, momentum 0.9 at batch 64.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 3))
    >>> DeYO(net, generator=torch.Generator().manual_seed(0))(torch.randn(8, 1, 8, 8)).shape
    torch.Size([8, 3])
    """

    name = "deyo"
    defaults: ClassVar[dict[str, Any]] = {
        **_SGD, "margin": 0.5, "margin_e0": 0.4, "plpd_threshold": 0.2, "patch_len": 4,
    }

    def __init__(
        self, model: nn.Module, *, margin: float = 0.5, margin_e0: float = 0.4, plpd_threshold: float = 0.2,
        patch_len: int = 4, **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        self.margin = check_positive(margin, "margin")
        self.margin_e0 = check_positive(margin_e0, "margin_e0")
        self.plpd_threshold = check_real(plpd_threshold, "plpd_threshold", finite=True)
        self.patch_len = check_int(patch_len, "patch_len", 1)
        self.kept = 0
        self._snapshot_source()

    def step(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"x must be a batch of images (N, C, H, W) for DeYO, got shape {tuple(x.shape)}")
        with torch.enable_grad():
            out = self.model(x)
            c = out.shape[-1]
            h = entropy(out)
            keep1 = h.detach() < self.margin * math.log(c)
            if not bool(keep1.any()):
                return out.detach()
            xp = tf.patch_shuffle(x[keep1].detach(), self.patch_len, self.generator)
            with torch.no_grad():
                outp = self.model(xp)
            d = tf.plpd(out[keep1].detach(), outp)
            keep2 = d > self.plpd_threshold
            if not bool(keep2.any()):
                return out.detach()
            hs = h[keep1][keep2]
            w = tf.deyo_weights(hs.detach(), d[keep2], self.margin_e0 * math.log(c))
            self.kept += int(keep2.sum())
            self._update((hs * w).mean())
        return out.detach()


class CoTTA(Adapter):
    """CoTTA: continual adaptation with a mean teacher, augmentation-averaged pseudo-labels and
    stochastic restore (Wang et al. 2022, "Continual test-time domain adaptation"; the anchor's
    ``cotta.py``).

    Student f (all parameters train), teacher f_t (EMA, momentum 0.999), source f_0 (frozen). When
    the source's mean confidence on the batch is below ``ap`` (0.92), the teacher's logits are
    averaged over ``n_augmentations`` (32) augmented copies (``augment``, default
    :func:`~entropykit.tta.functional.cotta_augment`), else taken on x. loss = mean_i
    CE(softmax(f_t), softmax(f)); Adam lr 1e-3 (CIFAR-10); then the EMA update and, per element of
    every trained tensor, a restore to its source value with probability ``rst`` (0.01). Returns
    the teacher's logits.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 3))
    >>> cotta = CoTTA(net, n_augmentations=2, generator=torch.Generator().manual_seed(0))
    >>> cotta(torch.rand(8, 1, 8, 8)).shape
    torch.Size([8, 3])
    """

    name = "cotta"
    PARAMS = "all"
    defaults: ClassVar[dict[str, Any]] = {
        **_ADAM, "mt": 0.999, "rst": 0.01, "ap": 0.92, "n_augmentations": 32,
    }

    def __init__(
        self, model: nn.Module, *, mt: float = 0.999, rst: float = 0.01, ap: float = 0.92,
        n_augmentations: int = 32, augment: Callable[[Tensor, torch.Generator | None], Tensor] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        self.mt = check_real(mt, "mt", 0.0, 1.0)
        self.rst = check_real(rst, "rst", 0.0, 1.0)
        self.ap = check_real(ap, "ap", 0.0, 1.0)
        self.n_augmentations = check_int(n_augmentations, "n_augmentations", 1)
        self.augment = augment if augment is not None else tf.cotta_augment
        self.teacher = _frozen_copy(model, self._bn, self._alpha)
        self.source_model = _frozen_copy(model, self._bn, self._alpha)
        self._src_params = [p.detach().clone() for p in self.params]
        self._snapshot_source()

    def train(self, mode: bool = True) -> CoTTA:
        super().train(mode)
        for m in (getattr(self, "teacher", None), getattr(self, "source_model", None)):
            if m is not None:
                _apply_modes(m, self._bn, self._alpha)
        return self

    def step(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            conf = self.source_model(x).softmax(-1).amax(-1).mean()
            if float(conf) < self.ap:
                t_out = torch.stack(
                    [self.teacher(self.augment(x, self.generator)) for _ in range(self.n_augmentations)]
                ).mean(0)
            else:
                t_out = self.teacher(x)
        with torch.enable_grad():
            out = self.model(x)
            self._update(tf.teacher_cross_entropy(out, t_out).mean())
        ema_update(self.teacher, self.model, self.mt)
        if self.rst > 0:
            with torch.no_grad():
                for p, s in zip(self.params, self._src_params):
                    mask = torch.rand(p.shape, generator=self.generator).to(p.device) < self.rst
                    p.copy_(torch.where(mask, s, p))
        return t_out


def _classifier_name(model: nn.Module, classifier: str | None, method: str) -> str:
    """``classifier`` checked, or the name of the model's last ``nn.Linear``."""
    modules = dict(model.named_modules())
    if classifier is None:
        linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        if not linear:
            raise ValueError(
                f"model must contain an nn.Linear classifier for {method}, or pass classifier=<name>"
            )
        classifier = linear[-1]
    if classifier not in modules:
        raise ValueError(f"classifier must name a module of the model, got {classifier!r}")
    return classifier


class RMT(Adapter):
    """RMT, robust mean teacher (Döbler, Marsden & Yang 2023, "Robust mean teacher for continual and
    gradual test-time adaptation"; the anchor's ``rmt.py``). All parameters train (Adam lr 1e-3).

    Per batch x: the teacher f_t (EMA of the student, momentum ``mt`` 0.999) gives z_t = f_t(x); the
    student gives z = f(x) and z_a = f(aug x) (``augment``, default
    :func:`~entropykit.tta.functional.cotta_augment`) with features h, h_a (the input of the
    ``classifier`` module; default the model's last ``nn.Linear``), and

        loss = lambda_trg (0.5 SCE(z, z_t) + 0.5 SCE(z_a, z_t))             (eq. 2-3)
             + lambda_cont SupCon([proto(h), h, h_a] through the projector)  (eq. 4)
             + lambda_src CE(f(x_src), y_src)                               (source replay)

    SCE is :func:`~entropykit.tta.functional.symmetric_cross_entropy`; proto(h) is the source class
    prototype (class mean of the source features) nearest to h by cosine; the projector is
    Linear(D, 128)-ReLU-Linear(128, 128), trained with the model (``projection_dim``); SupCon is
    :func:`~entropykit.tta.functional.supervised_contrastive_loss` (temperature 0.1). Then the EMA
    update. Returns z + z_t. The contrastive and replay terms need ``source=(x_src, y_src)``;
    replay draws ``source_batch_size`` random source samples per step.

    Warm-up (paper sec. 3.4; the anchor's ``warmup``): before the stream, ``warmup_samples`` //
    ``source_batch_size`` steps on source inputs with loss SCE(f(x_src), f_t(x_src)), the learning
    rate ramped linearly to ``lr``, each followed by the EMA update; the warmed-up state is the state
    ``reset()`` returns to. Paper defaults: lambda_trg = lambda_cont = lambda_src = 1, 50,000 warm-up
    samples (CIFAR-10-C; 0 turns it off).

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 3))
    >>> src = (torch.rand(12, 1, 8, 8), torch.arange(12) % 3)
    >>> g = torch.Generator().manual_seed(0)
    >>> rmt = RMT(net, source=src, warmup_samples=24, source_batch_size=6, generator=g)
    >>> rmt(torch.rand(8, 1, 8, 8)).shape, tuple(rmt.prototypes.shape)
    (torch.Size([8, 3]), (3, 144))
    """

    name = "rmt"
    PARAMS = "all"
    defaults: ClassVar[dict[str, Any]] = {
        **_ADAM, "mt": 0.999, "lambda_trg": 1.0, "lambda_cont": 1.0, "lambda_src": 1.0, "temperature": 0.1,
        "projection_dim": 128, "warmup_samples": 50000,
    }

    def __init__(
        self, model: nn.Module, *, mt: float = 0.999, source: tuple[Tensor, Tensor] | None = None,
        lambda_trg: float = 1.0, lambda_cont: float = 1.0, lambda_src: float = 1.0, temperature: float = 0.1,
        projection_dim: int = 128, warmup_samples: int = 50000, source_batch_size: int = 64,
        classifier: str | None = None,
        augment: Callable[[Tensor, torch.Generator | None], Tensor] | None = None, **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        self.mt = check_real(mt, "mt", 0.0, 1.0)
        self.lambda_trg = check_real(lambda_trg, "lambda_trg", 0.0, finite=True)
        self.lambda_cont = check_real(lambda_cont, "lambda_cont", 0.0, finite=True)
        self.lambda_src = check_real(lambda_src, "lambda_src", 0.0, finite=True)
        self.temperature = check_positive(temperature, "temperature")
        projection_dim = check_int(projection_dim, "projection_dim", 1)
        warmup_samples = check_int(warmup_samples, "warmup_samples", 0)
        self.source_batch_size = check_int(source_batch_size, "source_batch_size", 1)
        if source is not None:
            if not isinstance(source, (tuple, list)) or len(source) != 2:
                raise TypeError("source must be a pair (inputs, labels) of tensors")
            check_tensor(source[0], "source[0]", floating=True, min_dim=1)
            check_tensor(source[1], "source[1]", min_dim=1)
            if len(source[0]) != len(source[1]) or len(source[0]) == 0:
                raise ValueError(
                    "source must hold as many labels as inputs (>= 1), "
                    f"got {len(source[0])} and {len(source[1])}"
                )
        self.source = source
        self.augment = augment if augment is not None else tf.cotta_augment
        self.teacher = _frozen_copy(model, self._bn, self._alpha)  # before the hook: deepcopy copies hooks
        self.classifier = _classifier_name(model, classifier, "RMT")
        self._feats: Tensor | None = None
        dict(model.named_modules())[self.classifier].register_forward_pre_hook(self._grab)
        self.prototypes: Tensor | None = None
        self.projector: nn.Module | None = None
        if source is not None and self.lambda_cont > 0:
            self.prototypes = self._prototypes(*source)
            d = self.prototypes.shape[-1]
            ref = self.params[0] if self.params else self.prototypes
            lins = (nn.Linear(d, projection_dim), nn.Linear(projection_dim, projection_dim))
            self.projector = nn.Sequential(lins[0], nn.ReLU(), lins[1]).to(device=ref.device, dtype=ref.dtype)
            if self.generator is not None:  # deterministic initialisation (torch's default rule)
                with torch.no_grad():
                    for lin in lins:
                        bound = 1 / math.sqrt(lin.in_features)
                        for p in (lin.weight, lin.bias):
                            u = torch.rand(p.shape, generator=self.generator, dtype=p.dtype)
                            p.copy_((u * 2 - 1) * bound)
            if self.optimizer is not None:
                self.optimizer.add_param_group({"params": list(self.projector.parameters())})
        self.warmup_steps = 0
        if source is not None and warmup_samples > 0 and self.optimizer is not None:
            self.warmup_steps = max(1, warmup_samples // self.source_batch_size)
            self._warmup()
        self._snapshot_source()

    def _grab(self, module: nn.Module, args: Sequence[Any]) -> None:
        self._feats = args[0]

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(x)
        assert self._feats is not None
        feats = self._feats.reshape(len(x), -1)
        self._feats = None
        return out, feats

    @torch.no_grad()
    def _prototypes(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Class means of the source features (C, D); classes absent from the source get a zero row."""
        feats = torch.cat([self._features(b)[1] for b in xs.split(self.source_batch_size)])
        ys = ys.long().to(feats.device)
        c = int(ys.max()) + 1
        sums = torch.zeros(c, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(0, ys, feats)
        counts = torch.bincount(ys, minlength=c).clamp_min(1).to(feats.dtype)
        return sums / counts[:, None]

    def _source_batch(self) -> tuple[Tensor, Tensor]:
        assert self.source is not None
        xs, ys = self.source
        n = min(self.source_batch_size, len(xs))
        idx = torch.randint(len(xs), (n,), generator=self.generator)
        return xs[idx], ys[idx].long()

    def _warmup(self) -> None:
        assert self.optimizer is not None
        for i in range(self.warmup_steps):
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * (i + 1) / self.warmup_steps
            xs, _ = self._source_batch()
            with torch.no_grad():
                t_out = self.teacher(xs)
            with torch.enable_grad():
                self._update(tf.symmetric_cross_entropy(self.model(xs), t_out).mean())
            ema_update(self.teacher, self.model, self.mt)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def train(self, mode: bool = True) -> RMT:
        super().train(mode)
        if getattr(self, "teacher", None) is not None:
            _apply_modes(self.teacher, self._bn, self._alpha)
        return self

    def step(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            t_out = self.teacher(x)
            x_aug = self.augment(x, self.generator)
        with torch.enable_grad():
            out, h = self._features(x)
            out_aug, h_aug = self._features(x_aug)
            sce = tf.symmetric_cross_entropy
            loss = self.lambda_trg * (0.5 * sce(out, t_out) + 0.5 * sce(out_aug, t_out)).mean()
            if self.projector is not None and self.prototypes is not None:
                with torch.no_grad():
                    near = (F.normalize(h, dim=1) @ F.normalize(self.prototypes, dim=1).T).argmax(1)
                views = torch.stack([self.prototypes[near], h, h_aug], 1)  # (N, 3, D)
                z = self.projector(views.flatten(0, 1)).view(len(x), 3, -1)
                cont = tf.supervised_contrastive_loss(z, temperature=self.temperature)
                loss = loss + self.lambda_cont * cont
            if self.source is not None and self.lambda_src > 0:
                xs, ys = self._source_batch()
                loss = loss + self.lambda_src * F.cross_entropy(self.model(xs), ys)
            self._update(loss)
        ema_update(self.teacher, self.model, self.mt)
        return (out.detach() + t_out).detach()


class LAME(Adapter):
    """LAME: output-only adaptation by Laplacian adjusted maximum-likelihood estimation (Boudiaf et
    al. 2022, "Parameter-free online test-time adaptation"; :func:`~entropykit.tta.functional.lame`).

    The model is frozen, BatchNorm keeps the source statistics. Features are the input of the
    ``classifier`` module (a module name; default: the model's last ``nn.Linear``), captured by a
    forward hook. Defaults (the LAME code's ``LAME_AFFINITY='rbf'``, ``LAME_KNN=5``): rbf affinity
    with sigma the mean distance to the 5th nearest point (self included), lambda 1, 100 steps. The
    paper tunes the affinity over kNN / rbf / linear and k over 1, 3, 5: ``affinity="knn"`` (0/1 to
    the k nearest other points) is sparse and local, where the dense rbf kernel pulls a batch's
    minority classes to its majority (on Digits-C's label-sorted batches of two or three classes the
    rbf kernel is worse than no adaptation and the kNN one better; ``benchmarks/RESULTS.md``).
    A batch of one has no neighbours, so LAME returns the source prediction; ``window=W`` gives it
    the last W inputs as neighbours, which helps on label-correlated streams and hurts on i.i.d.
    ones (Digits-C, single samples, GN CNN: 56.9 % rbf, 47.2 % kNN against source 36.2 %; a memory
    of up to 256 past features did not help either). Returns log-probabilities.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> LAME(net)(torch.randn(6, 4)).exp().sum(-1).allclose(torch.ones(6))
    True
    """

    name = "lame"
    PARAMS = "none"
    BN = "source"
    defaults: ClassVar[dict[str, Any]] = {"affinity": "rbf", "knn": 5, "force_symmetry": False}

    def __init__(
        self, model: nn.Module, *, classifier: str | None = None, affinity: str = "rbf", knn: int = 5,
        force_symmetry: bool = False, **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        modules = dict(model.named_modules())
        classifier = self.classifier = _classifier_name(model, classifier, "LAME")
        check_choice(affinity, tf.AFFINITIES, "affinity")
        self.affinity = affinity
        self.knn = check_int(knn, "knn", 1)
        self.force_symmetry = bool(force_symmetry)
        self._feats: Tensor | None = None
        modules[classifier].register_forward_pre_hook(self._grab)
        self._snapshot_source()

    def _grab(self, module: nn.Module, args: Sequence[Any]) -> None:
        self._feats = args[0]

    @torch.no_grad()
    def step(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        assert self._feats is not None
        feats = self._feats.reshape(len(x), -1)
        self._feats = None
        return tf.lame(
            logits, feats, affinity=self.affinity, knn=self.knn, force_symmetry=self.force_symmetry
        )
