"""PNG figures: the reliability diagram and rejection curves (matplotlib, extra ``[plot]``).

Each function returns the PNG bytes and, with ``path``, also writes them there (replacing a file).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from entropykit._io import atomic_write
from entropykit.uncertainty._common import vector
from entropykit.uncertainty.calibration import _error, reliability_bins
from entropykit.uncertainty.evaluation import prr, rejection_curve

__all__ = ["rejection_plot", "reliability_diagram"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ValueError("plots need matplotlib: pip install 'entropykit[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Any, plt: Any, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = buf.getvalue()
    if path is not None:
        atomic_write(path, png)
    return png


def reliability_diagram(
    logits: Tensor,
    labels: Tensor,
    path: str | Path | None = None,
    *,
    n_bins: int = 15,
    binning: str = "width",
    probs: bool = False,
    title: str = "reliability",
) -> bytes:
    """Accuracy against mean confidence per bin (bars), the diagonal of perfect calibration, the
    ECE in the legend, and the share of samples per bin below (Guo et al. 2017, Fig. 1).

    >>> import torch
    >>> png = reliability_diagram(torch.randn(50, 3), torch.zeros(50, dtype=torch.long))
    >>> png[:4]
    b'\\x89PNG'
    """
    b = reliability_bins(logits, labels, n_bins=n_bins, binning=binning, probs=probs)
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), dpi=110, gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    lo, hi = b.edges[:-1].numpy(), b.edges[1:].numpy()
    keep = b.count.numpy() > 0
    ax.bar(
        lo[keep],
        b.accuracy.numpy()[keep],
        width=(hi - lo)[keep],
        align="edge",
        edgecolor="k",
        alpha=0.7,
        label=f"accuracy (ECE = {_error(b, 'l1'):.4f})",
    )
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="perfect calibration")
    ax.scatter(
        b.confidence.numpy()[keep],
        b.accuracy.numpy()[keep],
        s=10,
        c="C3",
        zorder=3,
        label="(mean confidence, accuracy)",
    )
    ax.set(ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    ax2.bar(lo, (b.count / b.count.sum()).numpy(), width=hi - lo, align="edge", edgecolor="k", alpha=0.5)
    ax2.set(xlabel="confidence", ylabel="share")
    return _finish(fig, plt, path)


def rejection_plot(
    curves: Mapping[str, Any],
    quality: Any,
    path: str | Path | None = None,
    *,
    title: str = "rejection curves",
) -> bytes:
    """Mean quality of the kept answers against the rejected fraction for each estimator in
    ``curves`` (name -> uncertainty values), with the oracle and random; PRR in the legend.

    >>> png = rejection_plot({"u": [0.1, 0.9, 0.5]}, [1.0, 0.0, 1.0])
    >>> png[:4]
    b'\\x89PNG'
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty mapping name -> uncertainty values")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    q = vector(quality, "quality")
    for name, u in curves.items():
        r, m = rejection_curve(u, q)
        ax.plot(r.numpy(), m.numpy(), label=f"{name} (PRR {prr(u, q):.3f})", lw=1.2)
    r, m = rejection_curve(-q, q)
    ax.plot(r.numpy(), m.numpy(), c="k", ls="--", lw=1, label="oracle")
    ax.axhline(float(m[0]), c="grey", ls=":", lw=1, label="random")
    ax.set(xlabel="rejected fraction", ylabel="mean quality of kept answers", title=title, xlim=(0, 1))
    ax.legend(fontsize=6, loc="lower right")
    return _finish(fig, plt, path)
