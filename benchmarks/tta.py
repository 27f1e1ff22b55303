"""Digits-C: test-time adaptation on corrupted scikit-learn digits, built on the fly (no download).

Source models: scikit-learn's bundled ``load_digits`` (1,797 8x8 images, upsampled to 16x16,
values in [0, 1]), split 1,000 train / 797 test (stratified, seed 0); a small CNN with BatchNorm
(2d + 1d) and the same CNN with GroupNorm + LayerNorm, trained on the clean train digits (Adam,
a few seconds; weights cached under ``$ENTROPYKIT_BENCH_CACHE`` or ``~/.cache/entropykit/bench``).

Digits-C: 15 corruptions in the spirit of the -C benchmarks (Hendrycks & Dietterich 2019) --
noise: gaussian, shot, impulse; blur: defocus, motion, zoom, glass; weather-like: snow, frost,
fog, brightness, contrast; digital: elastic, pixelate, JPEG (Pillow) -- at severities 1-5, each
deterministic from a seed, applied to 256 of the 797 test digits (a subset drawn per seed).

Settings (severity 5, batch 64 unless said; error % on the adapted predictions, mean over seeds):

* ``reset``: each corruption from the source state, mean over the 15;
* ``continual``: the 15 corruptions in a row, no reset (the anchor's continual CIFAR10-C);
* ``long``: the continual sequence three times over (45 domains, ~36k images);
* ``mixed``: all 15 corruptions shuffled into one stream;
* ``sorted``: continual, each domain's images sorted by label (correlated, non-i.i.d. batches);
* ``wild``: SAR's "wild" test (Niu et al. 2023): the GroupNorm/LayerNorm CNN, all 15 corruptions
  mixed into one stream *and* sorted by label (online imbalanced label shift), batch 8 -- where
  TENT collapses;
* ``bs1``: GroupNorm/LayerNorm CNN, batch size 1, 40 images per corruption in a row; the ``+w16``
  rows adapt on a sliding window of the last 16 samples (``window=16``);
* ``bs1_bn``: the same single-sample stream through the BatchNorm CNN, sliding window of 16.

The anchor cross-check: a transcription of the tent repository's loop (configure, Adam, mean
softmax entropy; DequanWang/tent) runs in this process on the continual stream next to ours and must
give the same error. Throughput: TENT on the BN CNN at batch 64 against a plain forward + backward
of the same model (same trainable parameters), images per second for every method.

    python benchmarks/tta.py              # 3 seeds, records the "tta" section of RESULTS.md
    python benchmarks/tta.py --quick      # 1 seed, fewer settings, prints only
    python benchmarks/tta.py --settings bs1,bs1_bn --methods tent_drift,eta_drift   # rerun a part
    python benchmarks/tta.py --settings throughput                 # only the timing (idle machine)
    python benchmarks/tta.py --record-only --reading notes.md      # re-record the merged results

Every run merges its entries into a cache (``tta_results.json`` next to the weights; seeded once from
the existing section of RESULTS.md) and records the whole table, each entry tagged with its run.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit import tta

SIDE = 16
CACHE = Path(os.environ.get("ENTROPYKIT_BENCH_CACHE", Path.home() / ".cache" / "entropykit" / "bench"))

# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test): 16x16 images in [0, 1], stratified 1000 / 797 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(d.target)
    tr, te = train_test_split(np.arange(len(y)), train_size=1000, stratify=d.target, random_state=0)
    return x[tr], y[tr], x[te], y[te]


def _conv(x: Tensor, k: Tensor) -> Tensor:
    k = (k / k.sum()).to(x)[None, None]
    ph, pw = k.shape[-2] // 2, k.shape[-1] // 2
    return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="replicate"), k)


def _gauss(sigma: float) -> Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g[:, None] * g[None, :]


def _smooth_field(n: int, rng: np.random.Generator, grid: int, scale: float) -> Tensor:
    f = torch.tensor(rng.standard_normal((n, 1, grid, grid)), dtype=torch.float32)
    return F.interpolate(f, size=(SIDE, SIDE), mode="bicubic", align_corners=False) * scale


def _warp(x: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    n = len(x)
    lin = torch.linspace(-1, 1, SIDE)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.stack([gx.expand(n, -1, -1) + dx[:, 0], gy.expand(n, -1, -1) + dy[:, 0]], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _zoom(x: Tensor, z: float) -> Tensor:
    theta = torch.tensor([[1 / z, 0, 0], [0, 1 / z, 0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jpeg(x: Tensor, quality: int) -> Tensor:
    from PIL import Image

    out = []
    for img in (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy():
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf), dtype=np.float32) / 255.0)
    return torch.tensor(np.stack(out)).unsqueeze(1)


def corrupt(name: str, x: Tensor, severity: int, seed: int) -> Tensor:
    """One Digits-C corruption at ``severity`` (1-5), deterministic from ``seed``; output in [0, 1]."""
    rng = np.random.default_rng([seed, severity, sorted(CORRUPTIONS).index(name)])
    s = severity - 1
    n = len(x)

    def rand(*shape: int) -> Tensor:
        return torch.tensor(rng.random(shape), dtype=torch.float32)

    def randn(*shape: int) -> Tensor:
        return torch.tensor(rng.standard_normal(shape), dtype=torch.float32)

    if name == "gaussian_noise":
        y = x + randn(*x.shape) * [0.15, 0.25, 0.35, 0.5, 0.7][s]
    elif name == "shot_noise":
        lam = [30, 15, 8, 4, 2][s]
        y = torch.tensor(rng.poisson(x.numpy() * lam), dtype=torch.float32) / lam
    elif name == "impulse_noise":
        amount = [0.05, 0.1, 0.15, 0.22, 0.3][s]
        u = rand(*x.shape)
        y = torch.where(u < amount / 2, 0.0, torch.where(u > 1 - amount / 2, 1.0, x))
    elif name == "defocus_blur":
        r = [1.0, 1.5, 2.0, 2.5, 3.0][s]
        t = torch.arange(-3, 4, dtype=torch.float32)
        disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= r**2).float()
        y = _conv(x, disk)
    elif name == "motion_blur":
        length = [3, 5, 7, 9, 11][s]
        k = torch.zeros(length, length)
        k[length // 2, :] = 1.0
        ang = float(rng.uniform(-45, 45))
        theta = torch.tensor(
            [
                [math.cos(math.radians(ang)), -math.sin(math.radians(ang)), 0.0],
                [math.sin(math.radians(ang)), math.cos(math.radians(ang)), 0.0],
            ]
        )[None]
        grid = F.affine_grid(theta, [1, 1, length, length], align_corners=False)
        k = F.grid_sample(k[None, None], grid, align_corners=False)[0, 0].clamp_min(0) + 1e-6
        y = _conv(x, k)
    elif name == "zoom_blur":
        zs = np.arange(1.0, [1.15, 1.25, 1.35, 1.5, 1.7][s], 0.05)
        y = torch.stack([_zoom(x, float(z)) for z in zs]).mean(0)
    elif name == "glass_blur":
        sigma, delta, iters = [(0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.8, 2, 2), (1.0, 2, 3)][s]
        y = _conv(x, _gauss(sigma)).clone()
        for _ in range(iters):  # local pixel swaps
            for h in range(SIDE - delta, delta, -1):
                for w in range(SIDE - delta, delta, -1):
                    dx, dy = rng.integers(-delta, delta, size=2)
                    h2, w2 = h + int(dy), w + int(dx)
                    a, b = y[:, :, h, w].clone(), y[:, :, h2, w2].clone()
                    y[:, :, h, w], y[:, :, h2, w2] = b, a
        y = _conv(y, _gauss(sigma))
    elif name == "snow":
        flakes = (rand(n, 1, SIDE, SIDE) < [0.04, 0.07, 0.1, 0.14, 0.18][s]).float()
        streak = torch.zeros(5, 5)
        streak[range(5), range(5)] = 1.0
        flakes = _conv(flakes, streak) * 5 * [0.3, 0.4, 0.5, 0.6, 0.7][s]
        y = torch.maximum(x * [0.9, 0.8, 0.7, 0.65, 0.6][s], flakes)
    elif name == "frost":
        tex = _conv((rand(n, 1, SIDE, SIDE) < 0.3).float() * rand(n, 1, SIDE, SIDE), _gauss(0.7))
        c = [(1.0, 0.4), (0.9, 0.6), (0.85, 0.8), (0.8, 1.0), (0.75, 1.2)][s]
        y = c[0] * x + c[1] * tex / tex.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    elif name == "fog":
        fog = _smooth_field(n, rng, 4, 1.0)
        fog = (fog - fog.amin(dim=(2, 3), keepdim=True)) / (
            fog.amax(dim=(2, 3), keepdim=True) - fog.amin(dim=(2, 3), keepdim=True)
        ).clamp_min(1e-6)
        a = [0.3, 0.45, 0.6, 0.75, 0.9][s]
        y = (x + a * fog) / (1 + a)
    elif name == "brightness":
        y = x + [0.15, 0.25, 0.35, 0.45, 0.55][s]
    elif name == "contrast":
        c = [0.4, 0.3, 0.2, 0.12, 0.07][s]
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        y = (x - m) * c + m
    elif name == "elastic":
        a = [0.06, 0.09, 0.12, 0.15, 0.18][s]
        y = _warp(x, _smooth_field(n, rng, 4, a), _smooth_field(n, rng, 4, a))
    elif name == "pixelate":
        size = [10, 8, 7, 6, 5][s]
        y = F.interpolate(F.interpolate(x, size=(size, size), mode="area"), size=(SIDE, SIDE), mode="nearest")
    elif name == "jpeg":
        y = _jpeg(x, [20, 12, 8, 5, 2][s])
    else:
        raise ValueError(f"unknown corruption {name!r}")
    return y.clamp(0, 1).to(torch.float32)


CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic",
    "pixelate",
    "jpeg",
)

# ------------------------------------------------------------------------------------------------
# source models
# ------------------------------------------------------------------------------------------------


class Normalize(nn.Module):
    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def cnn(norm: str, mean: float = 0.0, std: float = 1.0) -> nn.Sequential:
    """Conv-Norm-ReLU-Pool x2, Linear-Norm-ReLU, Linear(10); BatchNorm or GroupNorm/LayerNorm."""

    def n2(c: int) -> nn.Module:
        return nn.BatchNorm2d(c) if norm == "bn" else nn.GroupNorm(4, c)

    return nn.Sequential(
        Normalize(mean, std),
        nn.Conv2d(1, 8, 3, padding=1),
        n2(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        n2(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 16, 64),
        nn.BatchNorm1d(64) if norm == "bn" else nn.LayerNorm(64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def source_model(norm: str, x: Tensor, y: Tensor) -> nn.Sequential:
    """Train (or load from the cache) the source CNN on clean digits."""
    mean, std = float(x.mean()), float(x.std())
    path = CACHE / f"digits_cnn_{norm}_v2.pt"
    net = cnn(norm, mean, std)
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    torch.manual_seed(0)
    net = cnn(norm, mean, std)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(25):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net.eval()


# ------------------------------------------------------------------------------------------------
# streams and methods
# ------------------------------------------------------------------------------------------------

Stream = list[tuple[Tensor, Tensor]]


def domains(x: Tensor, y: Tensor, seed: int, severity: int = 5) -> list[tuple[Tensor, Tensor]]:
    return [(corrupt(c, x, severity, seed), y) for c in CORRUPTIONS]


def batched(x: Tensor, y: Tensor, bs: int, seed: int, sort: bool = False) -> Stream:
    order = (
        torch.argsort(y, stable=True)
        if sort
        else torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    )
    return [(x[i], y[i]) for i in order.split(bs)]


LR = 1e-2
WINDOW = 16
AGREEMENT = 0.95  # the drift guard's threshold (tent_drift, eta_drift)


def split_name(name: str) -> tuple[str, str, int]:
    """``"tent+w16@gn"`` -> ("tent", "gn", 16): method, architecture ("" = the setting's), window."""
    name, _, arch = name.partition("@")
    name, _, w = name.partition("+w")
    return name, arch, int(w) if w else 0


def method_params(name: str, bs: int, src_x: Tensor, src_y: Tensor, seed: int) -> dict[str, Any]:
    """One setting for every gradient method: Adam (the anchor's CIFAR-10-C configurations) with lr
    ``LR`` for batched streams and ``LR / 16`` for single-sample streams (``bs`` 1, with or without a
    window); the anchor's CIFAR values for EATA (d 0.4, alpha 1); the papers' values otherwise."""
    lr = LR if bs > 1 else LR / 16
    gen = torch.Generator().manual_seed(seed)
    opt = {"optimizer": "adam", "lr": lr}
    if name in ("source", "bn_adapt", "lame"):
        return {}
    if name == "lame_knn":  # the LAME paper's kNN affinity (its grid: kNN / rbf / linear x k 1, 3, 5)
        return {"affinity": "knn", "knn": 5}
    if name == "tent_guard":
        return {**opt, "reset_every": 50 if bs > 1 else 200}
    if name == "tent_drift":
        return {**opt, "reset_agreement": AGREEMENT}
    if name == "eta_drift":
        return {**opt, "d_margin": 0.4, "reset_agreement": AGREEMENT}
    if name in ("eta", "eata"):
        p = {**opt, "d_margin": 0.4}
        if name == "eata":
            p |= {"source": src_x[:500], "fisher_alpha": 1.0}
        return p
    if name == "rdumb":
        return {**opt, "reset_every": 50 if bs > 1 else 200}
    if name == "deyo":
        return {**opt, "generator": gen}
    if name == "cotta":  # the paper's CIFAR values: mt 0.999, rst 0.01, ap 0.92, 32 augmentations
        return {**opt, "n_augmentations": 32, "generator": gen}
    if name == "rmt":  # warm-up: one pass over the source training set (CIFAR-10: 50,000 = one pass)
        return {
            **opt, "source": (src_x, src_y), "warmup_samples": len(src_x), "source_batch_size": max(bs, 8),
            "generator": gen,
        }
    return opt


def make(name: str, net: nn.Module, params: dict[str, Any], window: int = 0) -> tta.Adapter:
    alias = {"tent_guard": "tent", "tent_drift": "tent", "eta_drift": "eta", "lame_knn": "lame"}
    base = alias.get(name, name)
    return tta.make(base, net, **params, window=window)


def run(adapter: Callable[[Tensor], Tensor], stream: Stream) -> tuple[float, float, float]:
    """(error %, images per second, collapse share) of ``adapter`` over ``stream``; the collapse
    share is the fraction of the last third's predictions that go to its most predicted class."""
    wrong = total = 0
    preds = []
    t = time.perf_counter()
    for xb, yb in stream:
        p = adapter(xb).argmax(-1)
        preds.append(p)
        wrong += int((p != yb).sum())
        total += len(yb)
    ips = total / (time.perf_counter() - t)
    last = torch.cat(preds[-max(1, len(preds) // 3) :])
    return 100.0 * wrong / total, ips, float(torch.bincount(last).max()) / len(last)


class TentRepoLoop:
    """The tent repository's loop, transcribed (DequanWang/tent ``tent.py``): configure (train mode,
    grads off except BatchNorm2d affine, BatchNorm2d forced to batch statistics by dropping its
    running buffers), Adam on those parameters, loss = mean softmax entropy, predictions before the
    step. Only BatchNorm2d adapts there; our models also hold a BatchNorm1d, which it leaves in train
    mode (batch statistics) as the anchor repository does, and trains as well."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        self.model = model
        model.train()
        model.requires_grad_(False)
        params = []
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.requires_grad_(True)
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
                params += [m.weight, m.bias]
        self.opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)

    @torch.enable_grad()
    def __call__(self, x: Tensor) -> Tensor:
        out = self.model(x)
        loss = -(out.softmax(1) * out.log_softmax(1)).sum(1).mean(0)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return out.detach()


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------

CHEAP = (
    "source", "bn_adapt", "tent", "tent_guard", "tent_drift", "eta", "eta_drift", "eata", "rdumb", "sar",
    "lame", "lame_knn",
)
SETTING_METHODS: dict[str, tuple[str, ...]] = {
    "reset": CHEAP,
    "continual": (*CHEAP, "deyo", "cotta", "rmt"),
    "long": CHEAP,
    "mixed": CHEAP,
    "sorted": (
        *CHEAP, "deyo", "rmt", "source@gn", "tent_drift@gn", "eta_drift@gn", "lame@gn", "lame_knn@gn",
    ),
    "wild": (
        "source", "tent", "tent_guard", "tent_drift", "eta", "eta_drift", "sar", "rmt", "lame", "lame_knn",
    ),
    "bs1": (
        "source", "tent", "tent_guard", "tent_drift", "eta", "eta_drift", "rdumb", "sar", "lame",
        *(f"{m}+w{WINDOW}" for m in ("tent", "eta", "eta_drift", "lame", "lame_knn")),
    ),
    "bs1_bn": ("source", *(f"{m}+w{WINDOW}" for m in ("bn_adapt", "tent", "tent_guard", "tent_drift", "eta",
                                                     "eta_drift"))),
}
ARCH = {"wild": "gn", "bs1": "gn"}  # the setting's default architecture (else the BN CNN)
ROW_ORDER = (
    "source", "bn_adapt", "tent", "tent_guard", "tent_drift", "eta", "eta_drift", "eata", "rdumb", "sar",
    "deyo", "cotta", "rmt", "lame", "lame_knn", "source@gn", "tent_drift@gn", "eta_drift@gn", "lame@gn",
    "lame_knn@gn",
    *(f"{m}+w{WINDOW}" for m in (
        "bn_adapt", "tent", "tent_guard", "tent_drift", "eta", "eta_drift", "sar", "lame", "lame_knn"
    )),
)


def streams_for(x: Tensor, y: Tensor, seed: int, wild_per_domain: int) -> dict[str, list[Stream]]:
    doms = domains(x, y, seed)
    out: dict[str, list[Stream]] = {}
    out["reset"] = [batched(xd, yd, 64, seed + i) for i, (xd, yd) in enumerate(doms)]
    cont = [b for i, (xd, yd) in enumerate(doms) for b in batched(xd, yd, 64, seed + i)]
    out["continual"] = [cont]
    out["long"] = [cont * 3]
    allx, ally = torch.cat([d[0] for d in doms]), torch.cat([d[1] for d in doms])
    out["mixed"] = [batched(allx, ally, 64, seed)]
    out["sorted"] = [[b for xd, yd in doms for b in batched(xd, yd, 64, seed, sort=True)]]
    # wild: all corruptions mixed (shuffled), then sorted by label (stable), batch 8
    g = torch.Generator().manual_seed(seed)
    pick = torch.cat(
        [i * len(y) + torch.randperm(len(y), generator=g)[:wild_per_domain] for i in range(len(doms))]
    )
    pick = pick[torch.randperm(len(pick), generator=g)]
    out["wild"] = [batched(allx[pick], ally[pick], 8, seed, sort=True)]
    sub = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:40]
    out["bs1"] = [[b for xd, yd in doms for b in batched(xd[sub], yd[sub], 1, seed)]]
    out["bs1_bn"] = out["bs1"]
    return out


RESULTS_CACHE = CACHE / "tta_results.json"
THROUGHPUT = "throughput"


def fmt(e: dict[str, Any] | None, key: str = "err", digits: int = 1) -> str:
    """``mean ± std`` of a cached entry's per-seed values (or of its imported mean and std)."""
    if e is None:
        return "--"
    if key in e:
        v = e[key]
        return f"{np.mean(v):.{digits}f} ± {np.std(v):.{digits}f}" if len(v) > 1 else f"{v[0]:.{digits}f}"
    m, sd = e.get(f"{key}_mean"), e.get(f"{key}_std")
    if m is None:
        return "--"
    return f"{m:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{m:.{digits}f}"


def tagged(e: dict[str, Any] | None, tag: bool) -> str:
    """A table cell: ``fmt`` and, when several runs are merged, the run it comes from ``[k]``."""
    return fmt(e) + (f" [{e['run']}]" if tag and e is not None else "")


def load_cache() -> dict[str, Any]:
    if RESULTS_CACHE.exists():
        return dict(json.loads(RESULTS_CACHE.read_text()))
    return {"entries": {}, "speed": {}, "runs": [], "throughput": None, "meta": {}}


def _pm(cell: str) -> tuple[float, float | None] | None:
    m = re.fullmatch(r"\s*([\d.]+)(?:\s*±\s*([\d.]+))?(?:\s*\[\d+\])?\s*", cell)
    return None if m is None else (float(m.group(1)), None if m.group(2) is None else float(m.group(2)))


def import_results(cache: dict[str, Any]) -> None:
    """Seed the cache with the error, share and speed tables of the ``tta`` section of RESULTS.md (mean
    and std only: the per-seed values of that run are not stored), for entries the cache lacks."""
    from _common import RESULTS

    text = RESULTS.read_text()
    m = re.search(r"<!-- BEGIN tta -->(.*?)<!-- END tta -->", text, re.S)
    if m is None:
        return
    sec = m.group(1)
    date = re.search(r"- date: (.*)", sec)
    run = {"date": date.group(1) if date else "?", "load": None, "measured": "imported from RESULTS.md"}
    load = re.search(r"load average\s+([\d.]+) / ([\d.]+) / ([\d.]+)", sec)
    if load:
        run["load"] = [float(load.group(k)) for k in (1, 2, 3)]
    tables = re.findall(r"((?:^\|.*\|\n)+)", sec, re.M)
    entries = cache["entries"]
    for tab in tables:
        lines = [ln.strip().strip("|").split("|") for ln in tab.strip().splitlines()]
        head = [h.strip() for h in lines[0]]
        for row in lines[2:]:
            cells = [c.strip() for c in row]
            name = cells[0]
            if head[0] == "method" and len(head) > 2:  # the error table
                for setting, cell in zip(head[1:], cells[1:]):
                    v = _pm(cell)
                    key = f"{setting}|{name}"
                    if v is not None and key not in entries and "anchor" not in name:
                        entries[key] = {"err_mean": v[0], "err_std": v[1], "run": 0}
                    if v is not None and "anchor" in name and "anchor" not in cache:
                        cache["anchor"] = {"err_mean": v[0], "err_std": v[1], "run": 0}
            elif head[0] == "method (wild)":
                v = _pm(cells[2])
                e = entries.get(f"wild|{name}")
                if v is not None and e is not None and e.get("run") == 0:
                    e["share_mean"], e["share_std"] = v
            elif head[0] == "method" and "images/s" in head[1]:
                cache["speed"].setdefault(name, {"mean": float(cells[1]), "run": 0})
    tp = re.search(
        r"Adam step\)\s+([\d.]+) ms against.*?trainable set ([\d.]+) ms: \*\*([\d.]+)x\*\*"
        r".*?rounds gave\s+([\d., ]+)\).*?Adam step\s+([\d.]+) ms: ([\d.]+)x \(rounds ([\d., ]+)\);"
        r" peak extra\s+memory of one step ([\d.]+) MB",
        sec, re.S,
    )
    if tp and cache.get("throughput") is None:
        cache["throughput"] = {
            "tt": float(tp.group(1)) / 1e3, "tp": float(tp.group(2)) / 1e3, "ta": float(tp.group(5)) / 1e3,
            "rounds": [float(r) for r in tp.group(4).split(",")],
            "rounds_adam": [float(r) for r in tp.group(7).split(",")], "mem": float(tp.group(8)), "run": 0,
        }
    if not cache["runs"]:
        cache["runs"].append(run)


def measure_throughput(nets: dict[str, nn.Module], x_te: Tensor, lr: float) -> dict[str, Any]:
    """TENT at batch 64 against a plain forward + backward of the same trainable set (interleaved rounds)."""
    xb = corrupt("gaussian_noise", x_te, 5, 0)[:64]
    ours = tta.Tent(copy.deepcopy(nets["bn"]), optimizer="adam", lr=lr)
    plain = copy.deepcopy(nets["bn"])
    tta.configure(plain)
    opt = torch.optim.Adam([p for p in plain.parameters() if p.requires_grad], lr=lr)

    def fwd_bwd(step: bool = False) -> None:
        out = plain(xb)
        F.cross_entropy(out, out.argmax(-1).detach()).backward()
        if step:
            opt.step()
        plain.zero_grad(set_to_none=True)

    def cpu_time(fn: Callable[[], Any], repeat: int = 15, warmup: int = 3) -> float:
        """Median CPU seconds of this thread (time.thread_time): not inflated by other jobs' load."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeat):
            t = time.thread_time()
            fn()
            times.append(time.thread_time() - t)
        return float(np.median(times))

    fns = {"plain": fwd_bwd, "adam": lambda: fwd_bwd(True), "tent": lambda: ours(xb)}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(5):  # interleaved rounds, medians of medians: the machine is shared
        for k, fn in fns.items():
            wall[k].append(timeit(fn, repeat=15, warmup=3))
            cpu[k].append(cpu_time(fn))
    tp, ta, tt = (float(np.median(wall[k])) for k in ("plain", "adam", "tent"))
    cp, ca, ct = (float(np.median(cpu[k])) for k in ("plain", "adam", "tent"))
    _, mem = peak_extra_mb(lambda: ours(xb))
    out = {
        "tt": tt, "tp": tp, "ta": ta, "mem": mem, "ct": ct, "cp": cp, "ca": ca,
        "rounds": [t / p for t, p in zip(wall["tent"], wall["plain"])],
        "rounds_adam": [t / p for t, p in zip(wall["tent"], wall["adam"])],
        "cpu_rounds": [t / p for t, p in zip(cpu["tent"], cpu["plain"])],
        "load": list(os.getloadavg()),
    }
    r, ra, rc = out["rounds"], out["rounds_adam"], out["cpu_rounds"]
    print(
        f"TENT step {1e3 * tt:.2f} ms; plain forward+backward {1e3 * tp:.2f} ms ({tt / tp:.2f}x, rounds "
        f"{min(r):.2f}-{max(r):.2f}); plain forward+backward+Adam step {1e3 * ta:.2f} ms "
        f"({tt / ta:.2f}x, rounds {min(ra):.2f}-{max(ra):.2f}); CPU time {1e3 * ct:.2f} / {1e3 * cp:.2f} ms "
        f"({ct / cp:.2f}x, rounds {min(rc):.2f}-{max(rc):.2f}); load {out['load']}"
    )
    return out


def render(cache: dict[str, Any]) -> str:
    """The RESULTS.md body from the merged cache: every (setting, method) entry with its run."""
    entries, meta, runs = cache["entries"], cache["meta"], cache["runs"]
    settings = list(SETTING_METHODS)
    names = list(ROW_ORDER) + sorted(
        {k.split("|", 1)[1] for k in entries} - set(ROW_ORDER) - {"anchor"}
    )
    rows = []
    for name in names:
        if not any(f"{s}|{name}" in entries for s in settings):
            continue
        rows.append([name, *(tagged(entries.get(f"{s}|{name}"), len(runs) > 1) for s in settings)])
    anchor_row = ["tent (tent-repo loop, anchor)"] + ["--"] * len(settings)
    anchor_row[settings.index("continual") + 1] = fmt(cache.get("anchor"))
    rows.append(anchor_row)
    table = markdown_table(["method", *settings], rows)
    wild = [n for n in names if f"wild|{n}" in entries]
    share_table = markdown_table(
        ["method (wild)", "error %", "top-class share of the last third's predictions"],
        [[n, fmt(entries[f"wild|{n}"]), fmt(entries[f"wild|{n}"], "share", 2)] for n in wild],
    )
    speed_rows = [
        [n, f"{np.mean(v['ips']) if 'ips' in v else v['mean']:.0f}", str(v["run"])]
        for n, v in cache["speed"].items()
    ]
    speed_table = markdown_table(["method", "images/s (continual, batch 64)", "run"], speed_rows)

    def run_line(i: int, r: dict[str, Any]) -> str:
        load = "?" if r.get("load") is None else " / ".join(f"{v:.1f}" for v in r["load"])
        extra = f", {r['elapsed']:.0f} s wall" if "elapsed" in r else ""
        return f"- run {i} ({r['date']}, load average {load}{extra}): {r['measured']}"

    tp = cache.get("throughput")
    if tp:
        tput = (
            f"Throughput (run {tp['run']}): one TENT step at batch 64 on the BN CNN (forward, entropy from "
            f"`measures`, backward, Adam step) {1e3 * tp['tt']:.2f} ms against a plain forward + "
            f"cross-entropy backward of the same model and trainable set {1e3 * tp['tp']:.2f} ms: "
            f"**{tp['tt'] / tp['tp']:.2f}x** (goal <= 1.3x; the 5 interleaved rounds gave "
            f"{', '.join(f'{r:.2f}' for r in tp['rounds'])}), and against forward + backward + the same Adam "
            f"step {1e3 * tp['ta']:.2f} ms: {tp['tt'] / tp['ta']:.2f}x (rounds "
            f"{', '.join(f'{r:.2f}' for r in tp['rounds_adam'])}); peak extra memory of one step "
            f"{tp['mem']:.1f} MB."
        )
        if "ct" in tp:
            tput += (
                f" In CPU time of the process's thread (`time.thread_time`, which other jobs' load does not "
                f"inflate, cache contention aside): TENT {1e3 * tp['ct']:.2f} ms, plain forward + backward "
                f"{1e3 * tp['cp']:.2f} ms: **{tp['ct'] / tp['cp']:.2f}x** (rounds "
                f"{', '.join(f'{r:.2f}' for r in tp['cpu_rounds'])}); with the Adam step "
                f"{1e3 * tp['ca']:.2f} ms: {tp['ct'] / tp['ca']:.2f}x. Load average during the timing "
                f"{' / '.join(f'{v:.1f}' for v in tp['load'])}."
            )
    else:
        tput = "Throughput: not measured (`--settings throughput`)."
    m = meta or {"per_domain": 256, "wild_per_domain": 256, "seeds": 3, "lr": LR}
    head = ""
    if "clean" in meta:
        head = (
            f"Clean test error: BN CNN {meta['clean']['bn']:.1f} %, GN/LN CNN {meta['clean']['gn']:.1f} %. "
            f"Source error of the BN CNN by severity 1-5: {', '.join(f'{v:.1f}' for v in meta['sev'])}."
        )
    return f"""
Digits-C (scikit-learn digits upsampled to 16x16, {m['per_domain']} test images per corruption,
15 corruptions, severity 5), error % (mean ± std over {m['seeds']} seeds: corruption noise, stream order,
method randomness; one source model per architecture). {head}

Settings: `reset` each corruption from the source state (mean of 15); `continual` the 15 in a row;
`long` the continual sequence three times (45 domains); `mixed` all corruptions shuffled together;
`sorted` continual with label-sorted domains (images sorted by label: batches of two or three
classes); `wild` SAR's wild test on the GroupNorm/LayerNorm CNN: all 15 corruptions mixed into one
stream *and* sorted by label (online imbalanced label shift), batch 8, {m['wild_per_domain']} images per
corruption; `bs1` the GroupNorm/LayerNorm CNN at batch size 1, 40 images per corruption in a row
(`+w{WINDOW}`: adapting on a sliding window of the last {WINDOW} samples, `window={WINDOW}`); `bs1_bn` the
same single-sample stream through the BatchNorm CNN with the window (BatchNorm needs a batch).
CoTTA runs only on `continual` (CPU time: 32 augmented teacher forwards per step), DeYO and RMT
on `continual`, `sorted` and `wild` (RMT) only.

Every gradient method: Adam, lr {m['lr']:g} for batches (also `wild`'s batch 8: the high rate and small
batch are the wild test) or {m['lr']:g}/16 for single-sample streams (window or not), one step per batch
(60 updates cover the continual stream, against 750 of lr 1e-3 in the anchor's CIFAR10-C stream: the
larger step stands in for the longer stream). EATA d_margin 0.4, Fisher alpha 1 from 500 clean
train images (the anchor's CIFAR-10 values); `tent_guard` (TENT + the periodic collapse guard) and
`rdumb` reset to the source every 50 updates (200 single-sample); `tent_drift` and `eta_drift` are
TENT and ETA with the drift guard (`reset_agreement={AGREEMENT}`: reset when the running top-1 agreement
with the frozen source model, an average over ~50 samples, falls below {AGREEMENT}); CoTTA the paper's
CIFAR values (EMA 0.999, restore 0.01, confidence threshold 0.92, 32 augmentations, colour jitter with
hue only on RGB inputs: Digits-C is grayscale); RMT the paper's losses (symmetric CE to the EMA teacher
on x and an augmented x, the contrastive loss to the nearest source prototype through a 128-d
projector, source replay) and warm-up over one pass of the 1,000 clean train digits (the paper: one
pass of CIFAR-10's 50,000); `lame` the LAME code's default (rbf kernel, sigma = mean distance to the
5th neighbour), `lame_knn` the paper's kNN affinity (5 neighbours). The anchor row is a transcription
of the tent repository's loop run in this process.

Runs merged into this section (`--settings` / `--methods` rerun a part; each entry comes from the
latest run that measured it, tagged `[k]` in the table; the imported run's entries have mean ± std
only):

{chr(10).join(run_line(i, r) for i, r in enumerate(runs))}

{table}

`@gn`: the GroupNorm/LayerNorm CNN (the anchor's correlated setting uses a GN model).

Collapse in the `wild` stream (share 1.00 = every prediction of the last third is one class):

{share_table}

{tput}

{speed_table}

The machine is shared with other jobs (load averages above), so times are indicative; ratios are
measured in one process.
"""


def main() -> None:
    global LR, AGREEMENT
    torch.set_num_threads(1)  # small models: one thread is faster, and the machine is shared
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, continual + bs1 only, print only")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-domain", type=int, default=256, help="test images per corruption")
    ap.add_argument("--wild-per-domain", type=int, default=256, help="images per corruption in `wild`")
    ap.add_argument("--lr", type=float, default=LR, help="Adam learning rate for batches (batch 1: lr / 16)")
    ap.add_argument(
        "--settings", default=None,
        help=f"comma-separated subset of {', '.join([*SETTING_METHODS, THROUGHPUT])} (default: all)",
    )
    ap.add_argument(
        "--methods", default=None,
        help="comma-separated subset of the methods (row names, e.g. tent_drift,eta_drift+w16); "
        "the other entries of RESULTS.md are kept from earlier runs",
    )
    ap.add_argument("--agreement", type=float, default=AGREEMENT, help="the drift guard's threshold")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--record-only", action="store_true", help="re-record the merged results (no run)")
    ap.add_argument("--reading", default=None, help="a markdown file appended to the body as the reading")
    args = ap.parse_args()
    reading = ""
    if args.reading is not None:
        reading = "\n\nReading (written after the run, against the issue's goals):\n\n"
        reading += Path(args.reading).read_text().strip()
    title, command = "Test-time adaptation: Digits-C", "python benchmarks/tta.py"
    cache = load_cache()
    import_results(cache)
    if args.record_only:
        record("tta", title, command, render(cache) + reading)
        return
    LR, AGREEMENT = args.lr, args.agreement
    seeds = list(range(1 if args.quick else args.seeds))
    known = [*SETTING_METHODS, THROUGHPUT]
    settings = ["continual", "bs1"] if args.quick else args.settings.split(",") if args.settings else known
    for s in settings:
        check_name(s, known, "--settings")
    wanted = None if args.methods is None else args.methods.split(",")
    plan = {
        s: [n for n in SETTING_METHODS[s] if wanted is None or n in wanted]
        for s in settings
        if s != THROUGHPUT
    }
    if wanted is not None:
        unknown = set(wanted) - {n for v in plan.values() for n in v}
        if unknown:
            raise SystemExit(f"--methods: {sorted(unknown)} not in the chosen settings' methods {plan}")
    t0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te = digits()
    nets = {norm: source_model(norm, x_tr, y_tr) for norm in ("bn", "gn")}
    clean = {k: 100.0 * float((v(x_te).argmax(-1) != y_te).float().mean()) for k, v in nets.items()}
    print(f"clean test error: BN CNN {clean['bn']:.1f} %, GN/LN CNN {clean['gn']:.1f} %")
    sev = [
        float(np.mean([
            100.0 * float((nets["bn"](corrupt(c, x_te, s, 0)).argmax(-1) != y_te).float().mean())
            for c in CORRUPTIONS
        ]))
        for s in range(1, 6)
    ]
    print("source error by severity (BN CNN): " + ", ".join(f"{s + 1}: {v:.1f}" for s, v in enumerate(sev)))

    err: dict[tuple[str, str], list[float]] = {}
    share: dict[tuple[str, str], list[float]] = {}
    speed: dict[str, list[float]] = {}
    anchor_err: list[float] = []
    run_anchor = "continual" in plan and wanted is None
    for seed in seeds if plan else []:
        keep = torch.randperm(len(y_te), generator=torch.Generator().manual_seed(100 + seed))[
            : args.per_domain
        ]
        streams = streams_for(x_te[keep], y_te[keep], seed, min(args.wild_per_domain, len(keep)))
        for setting, names in plan.items():
            for name in names:
                base, arch, window = split_name(name)
                errs, shares = [], []
                for stream in streams[setting]:
                    net = copy.deepcopy(nets[arch or ARCH.get(setting, "bn")])
                    bs = 1 if setting.startswith("bs1") else len(stream[0][1])
                    params = method_params(base, bs if not window else 1, x_tr, y_tr, seed)
                    e, ips, sh = run(make(base, net, params, window), stream)
                    errs.append(e)
                    shares.append(sh)
                    if setting == "continual":
                        speed.setdefault(name, []).append(ips)
                err.setdefault((setting, name), []).append(float(np.mean(errs)))
                share.setdefault((setting, name), []).append(float(np.mean(shares)))
                print(
                    f"seed {seed} {setting:9s} {name:14s} {err[(setting, name)][-1]:5.1f} %  "
                    f"(top-class share {shares[-1]:.2f}; {time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            if setting == "continual" and run_anchor:
                e, _, _ = run(TentRepoLoop(copy.deepcopy(nets["bn"]), LR), streams["continual"][0])
                anchor_err.append(e)
                print(f"seed {seed} continual tent (tent-repo loop) {e:5.1f} %", flush=True)
    tp = measure_throughput(nets, x_te, LR) if THROUGHPUT in settings else None
    for (setting, name), v in err.items():
        print(f"{setting:9s} {name:16s} {fmt({'err': v})}")
    elapsed = time.perf_counter() - t0
    print(f"total {elapsed:.0f} s")
    if args.quick or args.no_record:
        return
    run_id = len(cache["runs"])
    measured = "; ".join(f"`{s}`: {', '.join(n)}" for s, n in plan.items() if n)
    if tp is not None:
        measured += ("; " if measured else "") + "throughput"
    cache["runs"].append({
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": list(os.getloadavg()),
        "elapsed": elapsed, "measured": measured, "seeds": len(seeds),
    })
    for key, v in err.items():
        cache["entries"]["|".join(key)] = {"err": v, "share": share[key], "run": run_id}
    for name, v in speed.items():
        cache["speed"][name] = {"ips": v, "run": run_id}
    if anchor_err:
        cache["anchor"] = {"err": anchor_err, "run": run_id}
    if tp is not None:
        cache["throughput"] = {**tp, "run": run_id}
    cache["meta"] = {
        "clean": clean, "sev": sev, "per_domain": args.per_domain, "wild_per_domain": args.wild_per_domain,
        "seeds": len(seeds), "lr": LR,
    }
    RESULTS_CACHE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_CACHE.write_text(json.dumps(cache, indent=1))
    record("tta", title, command, render(cache) + reading)


def check_name(name: str, known: list[str], flag: str) -> None:
    if name not in known:
        raise SystemExit(f"{flag}: unknown {name!r}; choose from {', '.join(known)}")


if __name__ == "__main__":
    main()
