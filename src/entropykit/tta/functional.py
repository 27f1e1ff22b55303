"""The formulas of test-time adaptation as functions: filters, weights, penalties, LAME.

Each method class in :mod:`entropykit.tta.methods` is a thin stateful wrapper over these. Logits
have the class axis last, shape (N, C); entropies are in nats (:func:`entropykit.measures.entropy`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entropykit._validate import (
    check_choice,
    check_int,
    check_logits,
    check_positive,
    check_real,
    check_tensor,
)
from entropykit.measures import entropy

__all__ = [
    "AFFINITIES",
    "adjust_hue",
    "adjust_saturation",
    "cotta_augment",
    "deyo_weights",
    "eata_select",
    "entropy_margin",
    "fisher_diagonal",
    "hsv_to_rgb",
    "lame",
    "laplacian_optimization",
    "patch_shuffle",
    "plpd",
    "rgb_to_hsv",
    "sam_perturbation",
    "supervised_contrastive_loss",
    "symmetric_cross_entropy",
    "teacher_cross_entropy",
]


def entropy_margin(num_classes: int, factor: float = 0.4) -> float:
    """The entropy threshold ``factor * ln C`` of EATA / SAR (0.4) and DeYO (0.5), in nats.

    >>> round(entropy_margin(10), 4)
    0.921
    """
    c = check_int(num_classes, "num_classes", 1)
    return check_positive(factor, "factor") * math.log(c)


def eata_select(
    logits: Tensor, e_margin: float, d_margin: float = 0.05, probs_ema: Tensor | None = None,
    ema: float = 0.9,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """EATA's sample selection and weights (Niu et al. 2022, "Efficient test-time model adaptation
    without forgetting", eqs. 3-6; transcribed from the EATA / test-time-adaptation code).

    A sample is kept when it is *reliable*, H(p) < ``e_margin`` (E_0 = 0.4 ln C), and, once a
    moving average ``probs_ema`` of the kept batch-mean probabilities exists, *non-redundant*:
    |cos(p, probs_ema)| < ``d_margin`` (0.05 on ImageNet; the anchor uses 0.4 on CIFAR-10).
    Weights are 1 / exp(H - E_0) (detached). The average becomes
    ``ema * probs_ema + (1 - ema) * mean(p_kept)`` (the first kept batch's mean when there was none;
    unchanged when nothing is kept).

    Returns (keep mask (N,), weights (N,) -- zero where not kept, new ``probs_ema``).

    >>> z = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    >>> keep, w, ema = eata_select(z, entropy_margin(3))
    >>> keep.tolist(), ema.shape
    ([True, False], torch.Size([3]))
    """
    check_logits(logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    e_margin = check_real(e_margin, "e_margin", finite=True)
    d_margin = check_real(d_margin, "d_margin", finite=True)
    ema = check_real(ema, "ema", 0.0, 1.0)
    with torch.no_grad():
        h = entropy(logits)
        p = logits.softmax(-1)
        keep = h < e_margin
        if probs_ema is not None:
            cos = F.cosine_similarity(probs_ema.unsqueeze(0).to(p.dtype), p, dim=1)
            keep &= cos.abs() < d_margin
        new: Tensor | None
        if bool(keep.any()):
            mean = p[keep].mean(0)
            new = mean if probs_ema is None else ema * probs_ema + (1 - ema) * mean
        else:
            new = probs_ema
        w = torch.where(keep, torch.exp(-(h - e_margin)), torch.zeros_like(h))
    return keep, w, new


def fisher_diagonal(
    model: nn.Module, params: dict[str, nn.Parameter], batches: Iterable[Tensor]
) -> dict[str, Tensor]:
    """EATA's diagonal Fisher information of ``params`` on in-distribution inputs (eq. 9).

    Per batch b: the gradient g_b of the mean cross-entropy against the model's own predicted
    classes (pseudo-labels); F = (1/B) sum_b g_b^2, elementwise (as the EATA code: squared batch
    gradients averaged over batches, ~2000 samples in total). The model is used as configured.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    >>> f = fisher_diagonal(net, {"1.weight": net[1].weight}, [torch.randn(8, 3)])
    >>> f["1.weight"].shape, bool((f["1.weight"] >= 0).all())
    (torch.Size([4]), True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = list(params)
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for x in batches:
        check_tensor(x, "source batch", floating=True, min_dim=1)
        with torch.enable_grad():
            out = model(x)
            loss = F.cross_entropy(out, out.argmax(-1))
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                sums[n] += g.detach() ** 2
        count += 1
    if count == 0:
        raise ValueError("batches must hold at least one batch of source inputs, got none")
    return {n: s / count for n, s in sums.items()}


@torch.no_grad()
def sam_perturbation(params: Sequence[Tensor], rho: float = 0.05) -> list[Tensor]:
    """SAM's ascent step e(w) = rho g / (||g||_2 + 1e-12) over all ``params`` with a gradient
    (Foret et al. 2021; SAR, Niu et al. 2023, eq. 4; the davda54/sam code, non-adaptive).

    Returns one perturbation per parameter (zeros where ``p.grad`` is None); the caller adds it,
    recomputes the loss, subtracts it and steps with the new gradient.

    >>> w = torch.zeros(2, requires_grad=True); w.grad = torch.tensor([3.0, 4.0])
    >>> sam_perturbation([w], rho=0.5)
    [tensor([0.3000, 0.4000])]
    """
    rho = check_real(rho, "rho", 0.0, finite=True)
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2) if grads else torch.zeros(())
    scale = rho / (norm + 1e-12)
    return [torch.zeros_like(p) if p.grad is None else p.grad * scale.to(p) for p in params]


def patch_shuffle(x: Tensor, patch_len: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """DeYO's object-destructive transform: cut each image into ``patch_len`` x ``patch_len`` patches
    and permute them at random, per image (Lee et al. 2024, "Entropy is not enough for test-time
    adaptation"; the DeYO code's ``aug_type="patch"``). Images whose side is not a multiple of
    ``patch_len`` are resized to the nearest lower multiple first and back afterwards (bilinear).

    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> y = patch_shuffle(x, 2, torch.Generator().manual_seed(0))
    >>> sorted(y.flatten().tolist()) == list(range(16))
    True
    """
    check_tensor(x, "x", floating=True)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    k = check_int(patch_len, "patch_len", 1)
    n, c, h, w = x.shape
    th, tw = (h // k) * k, (w // k) * k
    if th == 0 or tw == 0:
        raise ValueError(f"patch_len must be <= the image side, got {k} for images {h}x{w}")
    y = x if (th, tw) == (h, w) else F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    ph, pw = th // k, tw // k
    patches = y.reshape(n, c, k, ph, k, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, k * k, c, ph, pw)
    perm = torch.argsort(torch.rand(n, k * k, generator=generator), dim=-1).to(x.device)
    patches = patches[torch.arange(n, device=x.device).unsqueeze(-1), perm]
    y = patches.reshape(n, k, k, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, th, tw)
    return y if (th, tw) == (h, w) else F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)


def plpd(logits: Tensor, logits_prime: Tensor) -> Tensor:
    """Pseudo-label probability difference PLPD = p_yhat(x) - p_yhat(x'), yhat = argmax p(x)
    (DeYO, Lee et al. 2024, eq. 5); x' is the shuffled input. In [-1, 1], per sample.

    >>> plpd(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
    tensor([0.3808])
    """
    check_logits(logits)
    check_logits(logits_prime, "logits_prime")
    if logits.shape != logits_prime.shape:
        raise ValueError(
            f"logits and logits_prime must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(logits_prime.shape)}"
        )
    p, q = logits.softmax(-1), logits_prime.softmax(-1)
    y = p.argmax(-1, keepdim=True)
    return (p.gather(-1, y) - q.gather(-1, y)).squeeze(-1)


def deyo_weights(ent: Tensor, plpd_: Tensor, e_margin: float) -> Tensor:
    """DeYO's sample weights 1 / exp(H - E_0) + 1 / exp(-PLPD), E_0 = 0.4 ln C (eq. 8; the code's
    ``reweight_ent`` and ``reweight_plpd``).

    >>> deyo_weights(torch.tensor([0.0]), torch.tensor([0.0]), 0.0)
    tensor([2.])
    """
    return torch.exp(-(ent - e_margin)) + torch.exp(plpd_)


def teacher_cross_entropy(student: Tensor, teacher: Tensor) -> Tensor:
    """-sum_c softmax(teacher)_c log softmax(student)_c per sample: CoTTA's consistency loss
    (Wang et al. 2022, the CIFAR form; the teacher is not differentiated).

    >>> z = torch.tensor([[1.0, 0.0]])
    >>> bool(torch.isclose(teacher_cross_entropy(z, z), entropy(z)))
    True
    """
    return -(teacher.detach().softmax(-1) * student.log_softmax(-1)).sum(-1)


def symmetric_cross_entropy(student: Tensor, teacher: Tensor, alpha: float = 0.5) -> Tensor:
    """RMT's symmetric cross-entropy (Döbler et al. 2023, "Robust mean teacher", eq. 2), per sample:
    -(1 - alpha) sum q log p - alpha sum p log q, p = softmax(student), q = softmax(teacher)
    (the teacher is not differentiated; alpha 0.5 as the anchor's ``SymmetricCrossEntropy``).

    >>> z = torch.tensor([[1.0, 0.0]])
    >>> bool(torch.isclose(symmetric_cross_entropy(z, z), entropy(z)))
    True
    """
    a = check_real(alpha, "alpha", 0.0, 1.0)
    t = teacher.detach()
    return -(1 - a) * (t.softmax(-1) * student.log_softmax(-1)).sum(-1) - a * (
        student.softmax(-1) * t.log_softmax(-1)
    ).sum(-1)


def supervised_contrastive_loss(
    features: Tensor, labels: Tensor | None = None, temperature: float = 0.1, base_temperature: float = 0.1,
) -> Tensor:
    """The supervised contrastive loss (Khosla et al. 2020, "Supervised contrastive learning", eq. 2;
    the SupContrast code, ``contrast_mode="all"``), as RMT uses it (Döbler et al. 2023, eq. 4).

    ``features`` (N, V, D): V views of N samples (RMT: the nearest source prototype, the test
    feature, the augmented test feature, after the projector); each row is L2-normalised; with
    a = the N V normalised rows, i ranging over all of them, P(i) the other rows of the same sample
    (or, with ``labels`` (N,), of the same label):

        L = -(tau / tau_b) (1 / NV) sum_i (1 / |P(i)|) sum_{p in P(i)}
            log( exp(a_i . a_p / tau) / sum_{k != i} exp(a_i . a_k / tau) )

    (nats; tau = ``temperature`` 0.1, tau_b = ``base_temperature`` 0.1, RMT's values).

    >>> f = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    >>> round(float(supervised_contrastive_loss(f)), 4)  # views agree, samples orthogonal
    0.0001
    """
    check_tensor(features, "features", floating=True)
    if features.dim() != 3 or features.shape[1] < 2:
        raise ValueError(f"features must have shape (N, V >= 2, D), got {tuple(features.shape)}")
    tau = check_positive(temperature, "temperature")
    tau_b = check_positive(base_temperature, "base_temperature")
    n, v, _ = features.shape
    if labels is None:
        same = torch.eye(n, dtype=torch.bool, device=features.device)
    else:
        check_tensor(labels, "labels")
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        same = labels.view(-1, 1) == labels.view(1, -1)
    a = F.normalize(torch.cat(torch.unbind(features, dim=1)), p=2, dim=1)  # (V N, D), view-major
    logits = a @ a.T / tau
    logits = logits - logits.amax(1, keepdim=True).detach()
    not_self = ~torch.eye(n * v, dtype=torch.bool, device=features.device)
    pos = same.repeat(v, v) & not_self
    log_prob = logits - torch.logsumexp(logits.masked_fill(~not_self, -math.inf), 1, keepdim=True)
    mean_pos = (log_prob * pos).sum(1) / pos.sum(1)
    return -(tau / tau_b) * mean_pos.mean()


def cotta_augment(
    x: Tensor, generator: torch.Generator | None = None, *, flip: bool = False, noise_std: float = 0.005,
) -> Tensor:
    """A tensor version of CoTTA's augmentation (Wang et al. 2022; the anchor's
    ``get_tta_transforms``): per image, brightness x[0.6, 1.4], contrast x[0.7, 1.3], saturation
    x[0.5, 1.5] and hue +-0.06 (3-channel RGB images only: :func:`adjust_saturation`,
    :func:`adjust_hue`; grayscale and other channel counts skip both), gamma [0.7, 1.3] on [0,
    1]-clipped values, a random affine map (rotation +-15 degrees, translation +-1/16, scale [0.9,
    1.1], edge padding), a Gaussian blur (5 x 5, sigma in [0.001, 0.5], reflect padding), Gaussian
    noise (std 0.005), clip to [0, 1]. The colour jitters run in this fixed order (torchvision's
    ``ColorJitter`` draws a random order per call); the horizontal flip is off by default (it
    changes the class of digits and text) and on with ``flip=True``.

    >>> x = torch.rand(2, 1, 8, 8)
    >>> cotta_augment(x, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
    """
    check_tensor(x, "x", floating=True)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    n = x.shape[0]

    def u(lo: float, hi: float) -> Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=generator)).to(x).view(n, 1, 1, 1)

    y = x.clamp(0, 1)
    y = (y * u(0.6, 1.4)).clamp(0, 1)
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = ((y - mean) * u(0.7, 1.3) + mean).clamp(0, 1)
    if y.shape[1] == 3:
        y = adjust_saturation(y, u(0.5, 1.5))
        y = adjust_hue(y, u(-0.06, 0.06))
    y = y.clamp_min(1e-8) ** u(0.7, 1.3)
    ang = u(-15, 15).view(n) * math.pi / 180
    scale = u(0.9, 1.1).view(n)
    tx, ty = u(-1 / 8, 1 / 8).view(n), u(-1 / 8, 1 / 8).view(n)  # 1/16 of the side = 1/8 in [-1, 1] units
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)
    grid = F.affine_grid(theta, list(y.shape), align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = _gaussian_blur(y, u(0.001, 0.5).view(n))
    if flip:
        f = torch.rand(n, generator=generator).to(x.device) < 0.5
        y = torch.where(f.view(n, 1, 1, 1), y.flip(-1), y)
    noise = torch.randn(y.shape, generator=generator).to(x) * noise_std
    return (y + noise).clamp(0, 1)


def _check_rgb(x: Tensor) -> None:
    check_tensor(x, "x", floating=True)
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"x must hold RGB images (..., 3, H, W), got shape {tuple(x.shape)}")


def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB -> HSV of images (..., 3, H, W) with values in [0, 1]; H, S, V in [0, 1] (hue as a
    fraction of the circle), the formulas of Python's ``colorsys.rgb_to_hsv`` (Smith 1978):
    V = max, S = (max - min) / max (0 when max = 0), H from the channel holding the max
    (0 for grey pixels).

    >>> [round(v, 4) for v in rgb_to_hsv(torch.tensor([1.0, 0.5, 0.0]).view(3, 1, 1)).flatten().tolist()]
    [0.0833, 1.0, 1.0]
    """
    _check_rgb(x)
    r, g, b = x.unbind(-3)
    maxc, minc = x.amax(-3), x.amin(-3)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-30), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-30)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], -3)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """HSV -> RGB of images (..., 3, H, W), the inverse of :func:`rgb_to_hsv` (``colorsys.hsv_to_rgb``:
    sector i = floor(6 H), f = 6 H - i, p = V (1 - S), q = V (1 - S f), t = V (1 - S (1 - f))).

    >>> hsv_to_rgb(torch.tensor([1 / 12, 1.0, 1.0]).view(3, 1, 1)).flatten().tolist()
    [1.0, 0.5, 0.0]
    """
    _check_rgb(x)
    h, s, v = x.unbind(-3)
    h6 = (h % 1.0) * 6.0
    i = torch.floor(h6).clamp(0, 5)
    f = h6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.to(torch.long).unsqueeze(-3)
    # per sector (0..5) the (r, g, b) sources among v, t, p, q
    table = torch.stack([
        torch.stack([v, q, p, p, t, v], -3),
        torch.stack([t, v, v, q, p, p], -3),
        torch.stack([p, p, t, v, v, q], -3),
    ], -4)  # (..., 3, 6, H, W)
    return table.gather(-3, i.unsqueeze(-4).expand(*table.shape[:-3], 1, *table.shape[-2:])).squeeze(-3)


def adjust_hue(x: Tensor, hue_factor: Tensor | float) -> Tensor:
    """Rotate the hue of RGB images (..., 3, H, W) in [0, 1] by ``hue_factor`` (a fraction of the
    circle in [-0.5, 0.5]; a tensor broadcasting against (..., 1, H, W) for one factor per image):
    H <- (H + factor) mod 1 in HSV, S and V unchanged (torchvision's ``adjust_hue``).

    >>> adjust_hue(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1), 1 / 3).flatten().tolist()
    [0.0, 1.0, 0.0]
    """
    hsv = rgb_to_hsv(x)
    f = torch.as_tensor(hue_factor, dtype=x.dtype, device=x.device)
    h = (hsv[..., :1, :, :] + f) % 1.0
    return hsv_to_rgb(torch.cat([h, hsv[..., 1:, :, :]], -3))


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """Scale the saturation of RGB images (..., 3, H, W) in [0, 1]: blend with the grayscale image,
    factor * x + (1 - factor) * gray, gray = 0.299 R + 0.587 G + 0.114 B, clipped to [0, 1]
    (torchvision's ``adjust_saturation``; 0 gives the grayscale image, 1 the input).

    >>> red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    >>> [round(v, 4) for v in adjust_saturation(red, 0.0).flatten().tolist()]
    [0.299, 0.299, 0.299]
    """
    _check_rgb(x)
    r, g, b = x.unbind(-3)
    gray = (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)
    f = torch.as_tensor(factor, dtype=x.dtype, device=x.device)
    return ((x - gray) * f + gray).clamp(0, 1)


def _gaussian_blur(x: Tensor, sigma: Tensor, size: int = 5) -> Tensor:
    """Per-image 2-D Gaussian blur (``size`` x ``size``, one sigma per image, reflect padding)."""
    n, c, h, w = x.shape
    t = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma.view(n, 1) ** 2))
    g = g / g.sum(-1, keepdim=True)  # (n, size)
    k = (g[:, :, None] * g[:, None, :]).repeat_interleave(c, 0).unsqueeze(1)  # (n c, 1, size, size)
    r = size // 2
    mode = "reflect" if min(h, w) > r else "replicate"
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode=mode)
    return F.conv2d(y, k, groups=n * c).view(n, c, h, w)


# ---------------------------------------------------------------------------------------------
# LAME (Boudiaf et al. 2022, "Parameter-free online test-time adaptation")
# ---------------------------------------------------------------------------------------------

AFFINITIES = ("rbf", "knn", "linear")


def _affinity(feats: Tensor, kind: str, knn: int) -> Tensor:
    n = feats.shape[0]
    if kind == "linear":
        return feats @ feats.T
    dist = torch.cdist(feats, feats)
    if kind == "knn":
        idx = dist.topk(min(knn + 1, n), -1, largest=False).indices[:, 1:]
        return torch.zeros(n, n, dtype=feats.dtype, device=feats.device).scatter_(-1, idx, 1.0)
    sigma = dist.topk(min(knn, n), -1, largest=False).values[:, -1].mean()
    if float(sigma) == 0.0:  # one sample (or identical features): the kernel of equal points only
        return (dist == 0).to(feats.dtype)
    return torch.exp(-(dist**2) / (2 * sigma**2))


def laplacian_optimization(
    unary: Tensor, kernel: Tensor, bound_lambda: float = 1.0, max_steps: int = 100
) -> Tensor:
    """LAME's concave-convex iterations: Y <- softmax(-unary + lambda K Y), starting from
    softmax(-unary), until the energy sum(unary Y - lambda (K Y) Y + Y log Y) changes by at most
    1e-8 relatively (at most ``max_steps``; the LAME code's ``laplacian_optimization``).

    ``unary`` (N, C) = -log p (source probabilities), ``kernel`` (N, N) the affinity.
    Returns the assignment probabilities Y (N, C).

    >>> unary = -torch.log(torch.tensor([[0.6, 0.4], [0.45, 0.55]]))
    >>> laplacian_optimization(unary, torch.ones(2, 2)).argmax(-1).tolist()
    [0, 0]
    """
    lam = check_real(bound_lambda, "bound_lambda", finite=True)
    steps = check_int(max_steps, "max_steps", 1)
    y = (-unary).softmax(-1)
    old = math.inf
    for i in range(steps):
        pairwise = lam * kernel @ y
        y = (-unary + pairwise).softmax(-1)
        e = float((unary * y - lam * pairwise * y + y * torch.log(y.clamp_min(1e-20))).sum())
        if i > 1 and abs(e - old) <= 1e-8 * abs(old):
            break
        old = e
    return y


def lame(
    logits: Tensor, features: Tensor, *, affinity: str = "rbf", knn: int = 5, force_symmetry: bool = False,
    bound_lambda: float = 1.0, max_steps: int = 100,
) -> Tensor:
    """LAME: adjust a batch's predictions by Laplacian regularisation over its feature affinity;
    no parameter changes (Boudiaf et al. 2022; defaults of the anchor: rbf kernel whose sigma is
    the mean distance to the ``knn``-th nearest point (self included), knn 5, lambda 1, 100 steps).

    unary = -log(softmax(logits) + 1e-10); features are L2-normalised; kernel K per ``affinity``
    ("rbf", "knn": 0/1 to the ``knn`` nearest other points, "linear": f f^T), symmetrised with
    ``force_symmetry``; then :func:`laplacian_optimization`. Returns log Y (N, C), usable as logits.

    >>> z = torch.tensor([[2.0, 0.0], [0.2, 0.0], [0.0, 0.1]])
    >>> f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.95, 0.0]])
    >>> lame(z, f).argmax(-1).tolist()
    [0, 0, 0]
    """
    check_logits(logits)
    check_tensor(features, "features", floating=True)
    if logits.dim() != 2 or features.dim() != 2 or features.shape[0] != logits.shape[0]:
        raise ValueError(
            "logits and features must have shapes (N, C) and (N, D), got "
            f"{tuple(logits.shape)} and {tuple(features.shape)}"
        )
    check_choice(affinity, AFFINITIES, "affinity")
    k = check_int(knn, "knn", 1)
    with torch.no_grad():
        z = logits.detach().float() if logits.dtype in (torch.float16, torch.bfloat16) else logits.detach()
        unary = -torch.log(z.softmax(-1) + 1e-10)
        f = F.normalize(features.detach().to(z.dtype), p=2, dim=-1)
        kernel = _affinity(f, affinity, k)
        if force_symmetry:
            kernel = 0.5 * (kernel + kernel.T)
        y = laplacian_optimization(unary, kernel, bound_lambda, max_steps)
    return torch.log(y.clamp_min(1e-30))
