"""Test-time adaptation of classifiers by entropy minimisation and its relatives.

One interface for every method: ``adapter = tta.make("tent", model)`` (or ``tta.Tent(model)``)
configures ``model`` in place (:func:`configure`: the affine parameters of every normalisation
layer train -- BatchNorm1d/2d/3d, LayerNorm, GroupNorm, RMSNorm -- BatchNorm uses test-batch
statistics), then ``logits = adapter(x)`` adapts on each test batch and returns its predictions;
``adapter.reset()`` restores the source state; ``episodic=True`` resets before every batch;
``reset_every=n`` resets every n updates (the collapse guard); ``window=W`` adapts single-sample
streams on a sliding window of the last W inputs; ``adapter.state()`` / ``load_state()`` save and
resume a stream.

==========  =====================================================================================
method      what it does (reference; defaults in the class docstring)
==========  =====================================================================================
source      no adaptation
bn_adapt    BatchNorm with test-batch statistics, or the alpha-mix (Schneider et al. 2020)
tent        mean entropy, one step per batch (Wang et al. 2021)
woc         TENT without samples less confident than under the source model (Lee et al. 2023)
eta         reliable + non-redundant samples, weights 1/exp(H - E_0) (Niu et al. 2022)
eata        ETA + Fisher penalty from source samples (Niu et al. 2022)
rdumb       ETA reset every 1000 updates (Press et al. 2023)
sar         SAM step on reliable samples, reset on collapse (Niu et al. 2023)
deyo        entropy + PLPD filter with patch shuffling (Lee et al. 2024)
cotta       EMA teacher, augmentation averaging, stochastic restore (Wang et al. 2022)
rmt         EMA teacher, symmetric cross-entropy, contrastive loss to source prototypes, source
            replay, warm-up (Döbler et al. 2023)
lame        output-only Laplacian adjustment of the predictions (Boudiaf et al. 2022)
==========  =====================================================================================

>>> import torch
>>> from torch import nn
>>> from entropykit import tta
>>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
>>> adapter = tta.make("tent", net, lr=1e-3)
>>> adapter(torch.randn(16, 4)).shape
torch.Size([16, 3])
>>> adapter.reset()
>>> sorted(tta.METHODS)[:4]
['bn_adapt', 'cotta', 'deyo', 'eata']
"""

from __future__ import annotations

from typing import Any

from torch import nn

from entropykit._registry import Method
from entropykit._validate import check_choice
from entropykit.tta import functional
from entropykit.tta._base import NORM_TYPES, Adapter, Selection, configure, ema_update
from entropykit.tta.methods import EATA, ETA, LAME, RMT, SAR, WOC, BNAdapt, CoTTA, DeYO, RDumb, Source, Tent

__all__ = [
    "EATA",
    "ETA",
    "LAME",
    "METHODS",
    "NORM_TYPES",
    "RMT",
    "SAR",
    "WOC",
    "Adapter",
    "BNAdapt",
    "CoTTA",
    "DeYO",
    "Method",
    "RDumb",
    "Selection",
    "Source",
    "Tent",
    "configure",
    "ema_update",
    "functional",
    "make",
]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("source", Source, "--", {}, "no adaptation"),
        Method("bn_adapt", BNAdapt, "Schneider et al. 2020, arXiv:2006.16971", {"bn": "batch", "alpha": 0.1},
               "BatchNorm with test-batch statistics (bn='alpha': the alpha-mix)"),
        Method("tent", Tent, "Wang et al. 2021, arXiv:2006.10726", Tent.defaults, "mean prediction entropy"),
        Method("woc", WOC, "Lee et al. 2023, arXiv:2308.06879", Tent.defaults,
               "TENT on samples at least as confident as under the source model"),
        Method("eta", ETA, "Niu et al. 2022, arXiv:2204.02610", ETA.defaults,
               "reliable, non-redundant, reweighted entropy"),
        Method("eata", EATA, "Niu et al. 2022, arXiv:2204.02610", EATA.defaults, "ETA + Fisher penalty"),
        Method("rdumb", RDumb, "Press et al. 2023, arXiv:2306.05401", RDumb.defaults,
               "ETA with periodic reset (collapse guard)"),
        Method("sar", SAR, "Niu et al. 2023, arXiv:2302.12400", SAR.defaults,
               "sharpness-aware reliable entropy, model recovery"),
        Method("deyo", DeYO, "Lee et al. 2024, arXiv:2403.07366", DeYO.defaults,
               "entropy + pseudo-label probability difference filter"),
        Method("cotta", CoTTA, "Wang et al. 2022, arXiv:2203.13591", CoTTA.defaults,
               "mean teacher, augmentation averaging, stochastic restore"),
        Method("rmt", RMT, "Döbler et al. 2023, arXiv:2211.13081", RMT.defaults,
               "mean teacher, symmetric cross-entropy, contrastive prototypes, source replay, warm-up"),
        Method("lame", LAME, "Boudiaf et al. 2022, arXiv:2201.05718", LAME.defaults,
               "Laplacian adjustment of the outputs, no parameter update"),
    )
}


def make(method: str, model: nn.Module, **params: Any) -> Adapter:
    """The adapter of ``method`` (a key of :data:`METHODS`) around ``model`` with ``params``.

    >>> from torch import nn
    >>> type(make("eta", nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4)))).__name__
    'ETA'
    """
    check_choice(method, tuple(METHODS), "method")
    return METHODS[method].fn(model, **params)
