"""The cross-entropy family of classification losses, on logits, with ``nn.Module`` wrappers.

Conventions: classes on the last axis of ``logits``; integer ``target`` of the leading shape with
``ignore_index`` (default -100) positions contributing 0; ``reduction`` in ``"none" | "mean" | "sum"``
where ``mean`` averages over non-ignored positions and is 0 (not NaN) when all are ignored; float32
(float64 for float64 inputs) arithmetic; nats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from entropykit._validate import (
    check_int,
    check_real,
    check_reduction,
    check_same_shape,
    check_tensor,
    reduce,
)
from entropykit.losses._common import FunctionalLoss, class_target, float_logits

__all__ = [
    "CrossEntropy",
    "FocalLoss",
    "GeneralizedCrossEntropy",
    "HLGaussLoss",
    "LogitClipCrossEntropy",
    "OrdinalWassersteinLoss",
    "PolyLoss",
    "SigmoidFocalLoss",
    "SoftDiceLoss",
    "Squentropy",
    "SymmetricCrossEntropy",
    "TverskyLoss",
    "ZLoss",
    "cross_entropy",
    "focal_loss",
    "generalized_cross_entropy",
    "hl_gauss_loss",
    "hl_gauss_mean",
    "hl_gauss_target",
    "logit_clip",
    "logit_clip_cross_entropy",
    "ordinal_wasserstein_loss",
    "poly1_cross_entropy",
    "sigmoid_focal_loss",
    "soft_dice_loss",
    "squentropy",
    "symmetric_cross_entropy",
    "tversky_loss",
    "z_loss",
]


def _prep(logits: Tensor, target: Tensor, ignore_index: int | None, reduction: str
          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(float logits, safe target indices, valid mask, log-probs)."""
    z = float_logits(logits)
    y = class_target(target, z, ignore_index)
    check_reduction(reduction)
    valid = y != ignore_index if ignore_index is not None else torch.ones_like(y, dtype=torch.bool)
    ysafe = torch.where(valid, y, torch.zeros_like(y))
    return z, ysafe, valid, torch.log_softmax(z, -1)


def _pick(x: Tensor, y: Tensor) -> Tensor:
    return x.gather(-1, y[..., None]).squeeze(-1)


# --------------------------------------------------------------------------------------------------


def cross_entropy(logits: Tensor, target: Tensor, *, weight: Tensor | None = None, ignore_index: int = -100,
                  label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    r"""Cross-entropy with class weights and label smoothing, as ``torch.nn.functional.cross_entropy``.

    Per position with log-probs :math:`\log p` and class weights :math:`w` (1 if None):
    :math:`L = (1-\varepsilon)\,w_y(-\log p_y) + \tfrac{\varepsilon}{C}\sum_j w_j(-\log p_j)`;
    ``mean`` divides the sum by :math:`\sum w_y` over non-ignored positions (label smoothing:
    Szegedy et al. 2016, "Rethinking the Inception Architecture"). Unlike torch, ``mean`` over zero
    valid positions is 0, not NaN. Units: nats.

    Example:
        >>> z, y = torch.randn(4, 3), torch.tensor([0, 2, -100, 1])
        >>> bool(torch.allclose(cross_entropy(z, y, label_smoothing=0.1),
        ...                     torch.nn.functional.cross_entropy(z, y, label_smoothing=0.1)))
        True
    """
    z, y, valid, lp = _prep(logits, target, ignore_index, reduction)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    c = z.shape[-1]
    if weight is not None:
        if not isinstance(weight, Tensor) or weight.shape != (c,):
            got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"weight must be a tensor of shape ({c},), got {got}")
        w = weight.to(z.dtype)
        wy = torch.where(valid, w[y], torch.zeros_like(z[..., 0]))
        smooth = -(lp * w).sum(-1)
    else:
        wy = valid.to(z.dtype)
        smooth = -lp.sum(-1)
    loss = (1.0 - eps) * wy * -_pick(lp, y) + (eps / c) * smooth
    return reduce(loss, reduction, valid, wy if reduction == "mean" else None)


def z_loss(logits: Tensor, target: Tensor | None = None, *, ignore_index: int = -100,
           reduction: str = "mean") -> Tensor:
    r"""Z-loss :math:`\mathrm{lse}(z)^2` (PaLM, Chowdhery et al. 2022; ST-MoE router z-loss).

    Pushes the softmax normaliser towards 1 for numerical stability; add it as ``coef * z_loss``
    (PaLM uses coef = 1e-4). ``target`` (optional) only marks ignored positions.

    Example:
        >>> round(z_loss(torch.zeros(2, 4)).item(), 4)  # ln(4)^2
        1.9218
    """
    z = float_logits(logits)
    check_reduction(reduction)
    valid = None
    if target is not None:
        valid = class_target(target, z, ignore_index) != ignore_index
    return reduce(torch.logsumexp(z, -1).square(), reduction, valid)


def poly1_cross_entropy(logits: Tensor, target: Tensor, *, epsilon: float = 1.0, ignore_index: int = -100,
                        label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    r"""Poly-1 loss: :math:`L = \mathrm{CE} + \epsilon (1 - p_t)` (Leng et al. 2022, "PolyLoss").

    With label smoothing, :math:`p_t = \sum_j q_j p_j` for the smoothed target q, as in the paper.

    Example:
        >>> z, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
        >>> p = torch.softmax(z, -1)[0, 0]
        >>> bool(torch.isclose(poly1_cross_entropy(z, y), -p.log() + 1 - p))
        True
    """
    z, y, valid, lp = _prep(logits, target, ignore_index, reduction)
    e = check_real(epsilon, "epsilon")
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    c = z.shape[-1]
    q = F.one_hot(y, c).to(z.dtype) * (1.0 - eps) + eps / c
    ce = -(q * lp).sum(-1)
    pt = (q * lp.exp()).sum(-1)
    return reduce(ce + e * (1.0 - pt), reduction, valid)


def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: float | Tensor | None = None,
               ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    r"""Softmax (multi-class) focal loss :math:`-\alpha_y (1 - p_y)^\gamma \log p_y` (Lin et al. 2017).

    ``alpha``: None (1), a float applied to every class, or a per-class tensor (C,). gamma = 0 with
    alpha None is cross-entropy.

    Example:
        >>> z, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
        >>> bool(torch.allclose(focal_loss(z, y, gamma=0.0), torch.nn.functional.cross_entropy(z, y)))
        True
    """
    z, y, valid, lp = _prep(logits, target, ignore_index, reduction)
    g = check_real(gamma, "gamma", 0.0)
    lpy = _pick(lp, y)
    loss = -((-lpy.exp()).add(1.0).clamp(min=0.0) ** g) * lpy
    if alpha is not None:
        if isinstance(alpha, Tensor):
            if alpha.shape != (z.shape[-1],):
                raise ValueError(f"alpha tensor must have shape ({z.shape[-1]},), got {tuple(alpha.shape)}")
            loss = loss * alpha.to(z.dtype)[y]
        else:
            loss = loss * check_real(alpha, "alpha", 0.0)
    return reduce(loss, reduction, valid)


def sigmoid_focal_loss(logits: Tensor, target: Tensor, *, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> Tensor:
    r"""Binary (sigmoid) focal loss, the formula of ``torchvision.ops.sigmoid_focal_loss`` (Lin et al. 2017).

    :math:`p_t = p\,t + (1-p)(1-t)`, :math:`L = \alpha_t (1 - p_t)^\gamma \mathrm{BCE}(z, t)` with
    :math:`\alpha_t = \alpha t + (1-\alpha)(1-t)`; ``alpha < 0`` disables the weighting. ``target``
    holds float labels in [0, 1] of the logits' shape. Default ``reduction="none"`` as torchvision.

    Example:
        >>> round(sigmoid_focal_loss(torch.tensor([0.0]), torch.tensor([1.0]), gamma=0.0, alpha=-1).item(), 6)
        0.693147
    """
    check_tensor(logits, "logits", floating=True)
    check_same_shape(check_tensor(target, "target"), logits, "target", "logits")
    check_reduction(reduction)
    g = check_real(gamma, "gamma", 0.0)
    a = check_real(alpha, "alpha", hi=1.0)
    z = logits.double() if logits.dtype == torch.float64 else logits.float()
    t = target.to(z.dtype)
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    pt = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - pt) ** g
    if a >= 0:
        loss = (a * t + (1 - a) * (1 - t)) * loss
    return reduce(loss, reduction)


def squentropy(logits: Tensor, target: Tensor, *, ignore_index: int = -100,
               reduction: str = "mean") -> Tensor:
    r"""Squentropy: cross-entropy plus the mean squared logit over the incorrect classes.

    :math:`L = -\log p_y + \frac{1}{C-1}\sum_{j\ne y} z_j^2` (Hui, Belkin & Wright 2023, "Cut your
    Losses with Squentropy"). Needs C >= 2.

    Example:
        >>> z, y = torch.tensor([[1.0, 2.0, -1.0]]), torch.tensor([1])
        >>> ce = torch.nn.functional.cross_entropy(z, y)
        >>> bool(torch.isclose(squentropy(z, y), ce + (1.0 + 1.0) / 2))
        True
    """
    z, y, valid, lp = _prep(logits, target, ignore_index, reduction)
    c = z.shape[-1]
    if c < 2:
        raise ValueError(f"squentropy needs at least 2 classes, got logits with {c}")
    sq = (z.square().sum(-1) - _pick(z, y).square()) / (c - 1)
    return reduce(-_pick(lp, y) + sq, reduction, valid)


def generalized_cross_entropy(logits: Tensor, target: Tensor, *, q: float = 0.7, ignore_index: int = -100,
                              reduction: str = "mean") -> Tensor:
    r"""Generalised cross-entropy :math:`(1 - p_y^q)/q` (Zhang & Sabuncu 2018, noise-robust L_q loss).

    q -> 0 recovers cross-entropy, q = 1 is MAE (up to a factor). q in (0, 1].

    Example:
        >>> z, y = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
        >>> generalized_cross_entropy(z, y, q=1.0).item()
        0.5
    """
    _, y, valid, lp = _prep(logits, target, ignore_index, reduction)
    qq = check_real(q, "q", 0.0, 1.0, lo_open=True)
    return reduce(-torch.expm1(qq * _pick(lp, y)) / qq, reduction, valid)


def symmetric_cross_entropy(logits: Tensor, target: Tensor, *, alpha: float = 0.1, beta: float = 1.0,
                            log_zero: float = -4.0, ignore_index: int = -100,
                            reduction: str = "mean") -> Tensor:
    r"""Symmetric cross-entropy :math:`\alpha\,\mathrm{CE} + \beta\,\mathrm{RCE}` (Wang et al. 2019).

    Reverse CE :math:`-\sum_k p_k \log q_k` with the one-hot label q and :math:`\log 0 := A`
    (``log_zero``, paper: -4) equals :math:`-A(1 - p_y)`. Defaults: the paper's CIFAR-10 setting.

    Example:
        >>> z, y = torch.tensor([[0.0, 0.0]]), torch.tensor([1])
        >>> round(symmetric_cross_entropy(z, y).item(), 4)  # 0.1 ln 2 + 4 * 0.5
        2.0693
    """
    _, y, valid, lp = _prep(logits, target, ignore_index, reduction)
    a, b = check_real(alpha, "alpha"), check_real(beta, "beta")
    A = check_real(log_zero, "log_zero", hi=0.0, hi_open=True)
    lpy = _pick(lp, y)
    return reduce(-a * lpy - b * A * (1.0 - lpy.exp()), reduction, valid)


def logit_clip(logits: Tensor, max_norm: float, *, p: float = 2.0) -> Tensor:
    r"""LogitClip: rescale each logit vector so its p-norm is at most ``max_norm``.

    :math:`z \mapsto z \cdot \min(1, \tau / \lVert z\rVert_p)` (Wei et al. 2023, "Mitigating
    Memorization of Noisy Labels by Clipping the Model Prediction", ICML; the paper's
    :math:`1/\tau`-bounded logits). Differentiable; returns the input dtype.

    Example:
        >>> logit_clip(torch.tensor([[3.0, 4.0]]), 1.0)
        tensor([[0.6000, 0.8000]])
    """
    float_logits(logits)
    tau = check_real(max_norm, "max_norm", 0.0, lo_open=True)
    pp = check_real(p, "p", 1.0)
    norm = torch.linalg.vector_norm(logits, ord=pp, dim=-1, keepdim=True)
    return logits * (tau / norm.clamp(min=tau))


def logit_clip_cross_entropy(logits: Tensor, target: Tensor, *, max_norm: float = 1.0, p: float = 2.0,
                             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Cross-entropy on ``logit_clip(logits, max_norm, p=p)`` (Wei et al. 2023).

    Example:
        >>> z, y = torch.tensor([[30.0, 40.0]]), torch.tensor([0])
        >>> bool(torch.isclose(logit_clip_cross_entropy(z, y, max_norm=5.0),
        ...                    torch.nn.functional.cross_entropy(torch.tensor([[3.0, 4.0]]), y)))
        True
    """
    return cross_entropy(logit_clip(logits, max_norm, p=p), target, ignore_index=ignore_index,
                         reduction=reduction)


def tversky_loss(logits: Tensor, target: Tensor, *, alpha: float = 0.5, beta: float = 0.5,
                 smooth: float = 1.0, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    r"""Soft Tversky loss over softmax probabilities, per class, aggregated over all positions.

    With :math:`p` = softmax(logits) and one-hot targets :math:`g` summed over non-ignored positions:
    :math:`TP_c = \sum p g`, :math:`FP_c = \sum p(1-g)`, :math:`FN_c = \sum (1-p) g`,
    :math:`L_c = 1 - \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}` (Salehi et al. 2017).
    alpha = beta = 1/2 is the soft Dice loss (Milletari et al. 2016, V-Net). ``reduction`` acts over
    classes ("none" returns (C,)). ``target`` may also be a probability tensor of the logits' shape.

    Example:
        >>> z = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])
        >>> tversky_loss(z, torch.tensor([0, 1])).item() < 1e-6
        True
    """
    z = float_logits(logits)
    check_reduction(reduction)
    a, b = check_real(alpha, "alpha", 0.0), check_real(beta, "beta", 0.0)
    s = check_real(smooth, "smooth", 0.0)
    p = torch.softmax(z, -1).reshape(-1, z.shape[-1])
    if isinstance(target, Tensor) and target.is_floating_point():
        check_same_shape(target, logits, "a probability target", "logits")
        g = target.to(z.dtype).reshape(p.shape)
    else:
        y = class_target(target, z, ignore_index).reshape(-1)
        valid = y != ignore_index
        p, y = p[valid], y[valid]
        g = F.one_hot(y, z.shape[-1]).to(z.dtype)
    tp = (p * g).sum(0)
    fp = (p * (1 - g)).sum(0)
    fn = ((1 - p) * g).sum(0)
    den = tp + a * fp + b * fn + s
    loss = 1.0 - (tp + s) / torch.where(den > 0, den, torch.ones_like(den))
    return reduce(loss, reduction)


def soft_dice_loss(logits: Tensor, target: Tensor, *, smooth: float = 1.0, ignore_index: int = -100,
                   reduction: str = "mean") -> Tensor:
    r"""Soft Dice loss :math:`1 - \frac{2 TP_c + s}{2TP_c + FP_c + FN_c + s}` per class (V-Net,
    Milletari et al. 2016); ``tversky_loss`` with alpha = beta = 1/2, same conventions.

    Example:
        >>> z = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])
        >>> soft_dice_loss(z, torch.tensor([1, 0]), smooth=0.0).item() > 0.99
        True
    """
    return tversky_loss(logits, target, alpha=0.5, beta=0.5, smooth=smooth, ignore_index=ignore_index,
                        reduction=reduction)


def ordinal_wasserstein_loss(logits: Tensor, target: Tensor, *, p: float = 1.0, ignore_index: int = -100,
                             reduction: str = "mean") -> Tensor:
    r"""Wasserstein distance between softmax(logits) over ordered bins 0..C-1 and the target bin.

    In 1-D with unit bin spacing :math:`W_1 = \sum_k |F_k - G_k|` for the CDFs F (prediction) and
    G (one-hot target), which for a point-mass target equals :math:`\sum_k p_k |k - y|`; ``p = 2``
    gives the squared-EMD loss :math:`\sum_k (F_k - G_k)^2` (Hou, Yu & Samaras 2016). Units: bins.

    Example:
        >>> z = torch.tensor([[0.0, -1e9, -1e9]])
        >>> ordinal_wasserstein_loss(z, torch.tensor([2])).item()
        2.0
    """
    z, y, valid, lp = _prep(logits, target, ignore_index, reduction)
    pp = check_real(p, "p", 1.0)
    c = z.shape[-1]
    cdf = lp.exp().cumsum(-1)
    ks = torch.arange(c, device=z.device)
    gcdf = (ks >= y[..., None]).to(z.dtype)
    return reduce((cdf - gcdf).abs().pow(pp)[..., : c - 1].sum(-1), reduction, valid)


# --- HL-Gauss ------------------------------------------------------------------------------------


def _support(vmin: float, vmax: float, num_bins: int, device: torch.device | None, dtype: torch.dtype
             ) -> Tensor:
    check_int(num_bins, "num_bins", 1)
    lo, hi = check_real(vmin, "vmin"), check_real(vmax, "vmax")
    if not hi > lo:
        raise ValueError(f"vmax must be > vmin, got vmin={vmin!r}, vmax={vmax!r}")
    return torch.linspace(lo, hi, num_bins + 1, device=device, dtype=dtype)


def hl_gauss_target(y: Tensor, vmin: float, vmax: float, num_bins: int, sigma: float | None = None) -> Tensor:
    r"""Histogram target of HL-Gauss: the mass of :math:`\mathcal N(y, \sigma^2)` in each of
    ``num_bins`` equal bins on [vmin, vmax], renormalised to the interval (Imani & White 2018;
    Farebrother et al. 2024, "Stop Regressing"). Default sigma = 0.75 bin widths (the paper's choice).
    Returns (..., num_bins) probabilities. Tail masses are differenced on the small side, so targets
    outside the support stay accurate; if all bins underflow, the nearest end bin gets the mass.

    Example:
        >>> hl_gauss_target(torch.tensor([0.5]), 0.0, 1.0, 2)
        tensor([[0.5000, 0.5000]])
    """
    check_tensor(y, "y", floating=True)
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    edges = _support(vmin, vmax, num_bins, y.device, dtype)
    sig = 0.75 * (vmax - vmin) / num_bins if sigma is None else check_real(sigma, "sigma", 0.0, lo_open=True)
    x = (edges - y.to(dtype)[..., None]) / sig
    # 0.5 erfc(-x / sqrt 2) is accurate deep in the tails (torch.special.ndtr flushes below ~1e-16)
    lower, upper = 0.5 * torch.special.erfc(-x * 0.5**0.5), 0.5 * torch.special.erfc(x * 0.5**0.5)
    # difference of whichever tail is small: no cancellation for bins far from y
    mass = torch.where(x[..., :-1] > 0, upper[..., :-1] - upper[..., 1:], lower[..., 1:] - lower[..., :-1])
    total = mass.sum(-1, keepdim=True)
    # y so far outside the support that every bin underflows: all mass on the nearest end bin
    nearest = F.one_hot((y.to(dtype) > (vmin + vmax) / 2).long() * (num_bins - 1), num_bins).to(dtype)
    return torch.where(total > 0, mass / total.clamp(min=torch.finfo(dtype).tiny), nearest)


def hl_gauss_loss(logits: Tensor, y: Tensor, *, vmin: float, vmax: float, sigma: float | None = None,
                  reduction: str = "mean") -> Tensor:
    r"""HL-Gauss categorical regression loss: cross-entropy between softmax(logits) over
    C = logits.shape[-1] bins on [vmin, vmax] and ``hl_gauss_target(y, ...)``.

    :math:`L = -\sum_k q_k(y) \log p_k` in nats; predict with ``hl_gauss_mean``.
    (Farebrother et al. 2024, "Stop Regressing: Training Value Functions via Classification".)

    Example:
        >>> z = torch.zeros(1, 4)
        >>> loss = hl_gauss_loss(z, torch.tensor([0.3]), vmin=0.0, vmax=1.0)
        >>> round(loss.item(), 4)  # uniform prediction: ln 4
        1.3863
    """
    z = float_logits(logits)
    check_reduction(reduction)
    if check_tensor(y, "y").shape != z.shape[:-1]:
        raise ValueError(f"y must have shape {tuple(z.shape[:-1])}, got {tuple(y.shape)}")
    q = hl_gauss_target(y.to(z.dtype), vmin, vmax, z.shape[-1], sigma)
    return reduce(-(q * torch.log_softmax(z, -1)).sum(-1), reduction)


def hl_gauss_mean(logits: Tensor, *, vmin: float, vmax: float) -> Tensor:
    """Point prediction of an HL-Gauss head: sum_k p_k * (bin centre k).

    Example:
        >>> hl_gauss_mean(torch.zeros(4), vmin=0.0, vmax=1.0).item()
        0.5
    """
    z = float_logits(logits)
    edges = _support(vmin, vmax, z.shape[-1], z.device, z.dtype)
    return (torch.softmax(z, -1) * (edges[1:] + edges[:-1]) / 2).sum(-1)


# --- nn.Module wrappers ---------------------------------------------------------------------------


class CrossEntropy(FunctionalLoss):
    """Module form of :func:`cross_entropy` (options: weight, ignore_index, label_smoothing, reduction)."""

    fn = staticmethod(cross_entropy)


class ZLoss(FunctionalLoss):
    """Module form of :func:`z_loss`; ``forward(logits, target)`` with target marking ignored rows."""

    fn = staticmethod(z_loss)


class PolyLoss(FunctionalLoss):
    """Module form of :func:`poly1_cross_entropy` (Poly-1)."""

    fn = staticmethod(poly1_cross_entropy)


class FocalLoss(FunctionalLoss):
    """Module form of :func:`focal_loss` (softmax, multi-class)."""

    fn = staticmethod(focal_loss)


class SigmoidFocalLoss(FunctionalLoss):
    """Module form of :func:`sigmoid_focal_loss` (binary / multi-label)."""

    fn = staticmethod(sigmoid_focal_loss)


class Squentropy(FunctionalLoss):
    """Module form of :func:`squentropy`."""

    fn = staticmethod(squentropy)


class GeneralizedCrossEntropy(FunctionalLoss):
    """Module form of :func:`generalized_cross_entropy`."""

    fn = staticmethod(generalized_cross_entropy)


class SymmetricCrossEntropy(FunctionalLoss):
    """Module form of :func:`symmetric_cross_entropy`."""

    fn = staticmethod(symmetric_cross_entropy)


class LogitClipCrossEntropy(FunctionalLoss):
    """Module form of :func:`logit_clip_cross_entropy`."""

    fn = staticmethod(logit_clip_cross_entropy)


class TverskyLoss(FunctionalLoss):
    """Module form of :func:`tversky_loss`."""

    fn = staticmethod(tversky_loss)


class SoftDiceLoss(FunctionalLoss):
    """Module form of :func:`soft_dice_loss`."""

    fn = staticmethod(soft_dice_loss)


class OrdinalWassersteinLoss(FunctionalLoss):
    """Module form of :func:`ordinal_wasserstein_loss`."""

    fn = staticmethod(ordinal_wasserstein_loss)


class HLGaussLoss(FunctionalLoss):
    """Module form of :func:`hl_gauss_loss`: ``HLGaussLoss(vmin=..., vmax=..., sigma=None)(logits, y)``;
    ``.predict(logits)`` returns the expected value."""

    fn = staticmethod(hl_gauss_loss)

    def predict(self, logits: Tensor) -> Tensor:
        o = self.options()
        return hl_gauss_mean(logits, vmin=o["vmin"], vmax=o["vmax"])
