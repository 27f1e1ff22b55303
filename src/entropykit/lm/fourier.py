"""FACE: Fourier analysis of the cross-entropy (surprisal) sequence of texts.

A text scored by a language model gives a sequence of per-token surprisals ``s_1..s_n``. FACE (Yang
et al., NeurIPS 2023, "FACE: Evaluating Natural Language Generation with Fourier Analysis of
Cross-Entropy") takes the spectrum of that sequence and compares the spectra of model-written and
human-written texts, pair by pair, with four similarity metrics:

- **SO** (spectral overlap): both spectra on one frequency grid ``f in [0, 1/2]``,
  ``SO = int min(|y1|, |y2|) df / int max(|y1|, |y2|) df`` (trapezoid rule); 1 = identical.
- **CORR**: Pearson correlation of the two gridded spectra; 1 = same shape.
- **SAM** (spectral angle mapper): ``arccos(<y1, y2> / (|y1| |y2|)) / pi``; 0 = same direction.
- **SPEAR**: Spearman rank correlation of the two gridded spectra.

The reference code (github.com/CLCS-SUSTech/FACE, ``fft_utils.py`` and ``metrics.py``) computes the
spectrum as ``|fftshift(fft(s))|`` at the non-negative frequencies ``fftshift(fftfreq(n))[n//2:]``,
interpolates every spectrum linearly (with extrapolation) onto ``linspace(0, 0.5, 1000)``, and pairs
the i-th text of one set with the i-th of the other (up to the shorter set). We follow it, and also
offer SciPy's periodogram and Welch estimates (``method=``), which FACE lists as an option.

Units: frequency in cycles per token; the spectrum is in the units of the input (bits when the
surprisal is in bits). All four metrics are unchanged when both spectra are scaled by one factor, so
bits versus nats does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import interpolate, signal, stats

from entropykit._registry import Method, registry
from entropykit._validate import check_choice, check_int

if TYPE_CHECKING:
    from entropykit.models import LanguageModel

__all__ = [
    "FACE_METRICS",
    "FaceResult",
    "Spectrum",
    "face",
    "face_metrics",
    "spectral_angle",
    "spectral_overlap",
    "spectral_pearson",
    "spectral_spearman",
    "surprisal_spectrum",
]

SpectrumMethod = Literal["fft", "periodogram", "welch"]
Preprocess = Literal["none", "zscore", "minmax", "log", "logzs"]
METHODS_SPECTRUM = ("fft", "periodogram", "welch")
PREPROCESS = ("none", "zscore", "minmax", "log", "logzs")
GRID = 1000  # FACE's interpolation grid: linspace(0, 0.5, 1000)
_EPS = 1e-6  # FACE's z-score epsilon


@dataclass(frozen=True)
class Spectrum:
    """One spectrum: ``freq`` (cycles per token, ascending from 0) and ``power`` of the same length."""

    freq: np.ndarray
    power: np.ndarray


def _as_sequence(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {a.shape}")
    if a.size < 2:
        raise ValueError(f"{name} must have at least 2 values, got {a.size}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(a)).sum())} NaN/inf value(s)")
    return a


def _preprocess(s: np.ndarray, how: str, name: str) -> np.ndarray:
    if how == "zscore":
        return (s - s.mean()) / (s.std() + _EPS)
    if how == "minmax":
        span = s.max() - s.min()
        if span == 0:
            raise ValueError(f"{name} must not be constant for preprocess='minmax'")
        return (s - s.min()) / span
    if how in ("log", "logzs"):
        if (s <= -1).any():
            raise ValueError(f"{name} must be > -1 for preprocess={how!r}, got min {s.min():.6g}")
        s = np.log(s + 1.0)
        return (s - s.mean()) / (s.std() + _EPS) if how == "logzs" else s
    return s


def surprisal_spectrum(
    surprisal: Sequence[float] | np.ndarray,
    *,
    method: SpectrumMethod = "fft",
    preprocess: Preprocess = "none",
    nperseg: int | None = None,
) -> Spectrum:
    """The spectrum of a surprisal (cross-entropy) sequence, FACE's first step.

    ``method="fft"`` (FACE's default): ``power_k = |sum_t s_t exp(-2 pi i k t / n)|`` at
    ``freq_k = k / n`` for ``k = 0 .. ceil(n/2) - 1`` (the magnitude, not squared, as FACE keeps it).
    ``"periodogram"``: ``scipy.signal.periodogram(s)`` (power spectral density, constant detrended).
    ``"welch"``: ``scipy.signal.welch(s, nperseg=nperseg)`` (averaged over overlapping segments; less
    variance, coarser frequency resolution). ``preprocess`` is FACE's: ``"zscore"``
    ``(s - mean) / (std + 1e-6)``, ``"minmax"``, ``"log"`` ``log(s + 1)``, ``"logzs"`` (log then z-score).

    Units: frequency in cycles per token (0 to 1/2); power in the input's units (squared units per
    cycle/token for the periodogram and Welch). Source: Yang et al. (2023), FACE, ``fft_utils.py``.

    >>> sp = surprisal_spectrum([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    >>> sp.freq.tolist(), sp.power.round(6).tolist()
    ([0.0, 0.125, 0.25, 0.375], [4.0, 0.0, 0.0, 0.0])
    """
    s = _as_sequence(surprisal, "surprisal")
    check_choice(method, METHODS_SPECTRUM, "method")
    check_choice(preprocess, PREPROCESS, "preprocess")
    s = _preprocess(s, preprocess, "surprisal")
    n = s.size
    if method == "fft":
        half = n - n // 2  # the non-negative frequencies of fftshift(fftfreq(n))
        return Spectrum(np.arange(half) / n, np.abs(np.fft.rfft(s))[:half])
    if method == "periodogram":
        f, p = signal.periodogram(s)
        return Spectrum(f, p)
    if nperseg is not None:
        nperseg = check_int(nperseg, "nperseg", 2, n)
    f, p = signal.welch(s, nperseg=nperseg if nperseg is not None else min(n, 256))
    return Spectrum(f, p)


def _on_grid(sp: Spectrum, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation onto ``grid``, extrapolated linearly at both ends (FACE's
    ``scipy.interpolate.interp1d(..., fill_value="extrapolate")``)."""
    if sp.freq.size == 1:
        return np.full_like(grid, sp.power[0])
    return interpolate.interp1d(sp.freq, sp.power, fill_value="extrapolate")(grid)


def spectral_overlap(y1: np.ndarray, y2: np.ndarray, grid: np.ndarray) -> float:
    """SO = ``trapz(min(|y1|, |y2|), grid) / trapz(max(|y1|, |y2|), grid)`` in [0, 1]; 1 = identical.

    >>> g = np.linspace(0, 0.5, 5)
    >>> spectral_overlap(np.ones(5), 2 * np.ones(5), g)
    0.5
    """
    a, b = np.abs(y1), np.abs(y2)
    roof = float(np.trapezoid(np.maximum(a, b), grid))
    return float(np.trapezoid(np.minimum(a, b), grid)) / roof if roof > 0 else 1.0


def spectral_pearson(y1: np.ndarray, y2: np.ndarray, grid: np.ndarray | None = None) -> float:
    """CORR: Pearson correlation of two gridded spectra (``scipy.stats.pearsonr``), in [-1, 1].

    >>> round(spectral_pearson(np.arange(5.0), 2 * np.arange(5.0)), 12)
    1.0
    """
    return float(stats.pearsonr(y1, y2)[0])


def spectral_spearman(y1: np.ndarray, y2: np.ndarray, grid: np.ndarray | None = None) -> float:
    """SPEAR: Spearman rank correlation of two gridded spectra (``scipy.stats.spearmanr``).

    >>> round(spectral_spearman(np.arange(5.0), np.arange(5.0) ** 3), 12)
    1.0
    """
    return float(stats.spearmanr(y1, y2)[0])


def spectral_angle(y1: np.ndarray, y2: np.ndarray, grid: np.ndarray | None = None) -> float:
    """SAM: ``arccos(<y1, y2> / (|y1| |y2|)) / pi`` in [0, 1]; 0 = same direction (a distance).

    >>> spectral_angle(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    0.5
    """
    c = float(np.dot(y1, y2) / (np.linalg.norm(y1) * np.linalg.norm(y2)))
    return float(np.arccos(np.clip(c, -1.0, 1.0)) / np.pi)


# name -> the metric function (y1, y2, grid) -> float; params record which direction means "closer"
FACE_METRICS: dict[str, Method] = registry(
    Method("so", spectral_overlap, "Yang et al. 2023 (FACE), spectral overlap",
           {"higher_is_closer": True}, "area of the spectra's minimum over the area of their maximum"),
    Method("corr", spectral_pearson, "Yang et al. 2023 (FACE), Pearson correlation",
           {"higher_is_closer": True}, "Pearson correlation of the gridded spectra"),
    Method("sam", spectral_angle, "Yang et al. 2023 (FACE), spectral angle mapper",
           {"higher_is_closer": False}, "angle between the spectra over pi (0 = same shape)"),
    Method("spear", spectral_spearman, "Yang et al. 2023 (FACE), Spearman correlation",
           {"higher_is_closer": True}, "Spearman rank correlation of the gridded spectra"),
)


def _spectra(x: Sequence[Spectrum], name: str) -> list[Spectrum]:
    if isinstance(x, Spectrum) or not isinstance(x, Sequence):
        raise TypeError(f"{name} must be a sequence of Spectrum objects, got {type(x).__name__}")
    if len(x) == 0:
        raise ValueError(f"{name} must not be empty")
    for i, sp in enumerate(x):
        if not isinstance(sp, Spectrum):
            raise TypeError(f"{name}[{i}] must be a Spectrum, got {type(sp).__name__}")
        if sp.freq.size < 2:
            raise ValueError(f"{name}[{i}] must have at least 2 frequencies, got {sp.freq.size}")
    return list(x)


def face_metrics(
    spectra_a: Sequence[Spectrum], spectra_b: Sequence[Spectrum], *, grid: int = GRID
) -> dict[str, np.ndarray]:
    """The four FACE metrics between the i-th spectrum of ``spectra_a`` and of ``spectra_b``.

    Every spectrum is interpolated onto ``linspace(0, 0.5, grid)`` (linear, extrapolated at the
    ends), then ``so``, ``corr``, ``sam`` and ``spear`` (see ``FACE_METRICS``) are computed per pair,
    for ``min(len(a), len(b))`` pairs as FACE does. Returns ``{metric: array of per-pair values}``.

    >>> a = [surprisal_spectrum(np.sin(np.arange(64) * 0.8) + 2)]
    >>> {k: round(float(v[0]), 6) for k, v in face_metrics(a, a).items()}
    {'so': 1.0, 'corr': 1.0, 'sam': 0.0, 'spear': 1.0}
    """
    a, b = _spectra(spectra_a, "spectra_a"), _spectra(spectra_b, "spectra_b")
    g = np.linspace(0.0, 0.5, check_int(grid, "grid", 2))
    out: dict[str, list[float]] = {k: [] for k in FACE_METRICS}
    for sa, sb in zip(a, b, strict=False):
        y1, y2 = _on_grid(sa, g), _on_grid(sb, g)
        for k, m in FACE_METRICS.items():
            out[k].append(m.fn(y1, y2, g))
    return {k: np.asarray(v) for k, v in out.items()}


@dataclass
class FaceResult:
    """FACE between two sets of texts: per-pair metrics, their means and every text's spectrum."""

    metrics: dict[str, np.ndarray]
    spectra_a: list[Spectrum] = field(repr=False)
    spectra_b: list[Spectrum] = field(repr=False)
    method: str = "fft"

    @property
    def summary(self) -> dict[str, float]:
        """The mean of each metric over the pairs (what FACE reports)."""
        return {k: float(np.mean(v)) for k, v in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": len(next(iter(self.metrics.values()))), "method": self.method,
                "mean": self.summary, "per_pair": {k: v.tolist() for k, v in self.metrics.items()}}

    def plot_png(self, path: str | Path | None = None, *, force: bool = True) -> bytes:
        """The mean gridded spectrum of each set as PNG bytes, written to ``path`` when given (needs
        matplotlib: the ``[plot]`` extra)."""
        from entropykit.lm._plot import new_figure, save_png

        fig = new_figure(6, 3.2)
        ax = fig.add_subplot(1, 1, 1)
        g = np.linspace(0.0, 0.5, GRID)
        for sps, label in ((self.spectra_a, "a"), (self.spectra_b, "b")):
            ax.plot(g, np.mean([_on_grid(s, g) for s in sps], axis=0), label=f"set {label} (n={len(sps)})")
        ax.set_xlabel("frequency (cycles per token)")
        ax.set_ylabel("|FFT| of surprisal" if self.method == "fft" else "power")
        ax.set_title("FACE: mean spectrum of the surprisal sequence", fontsize=10)
        ax.legend()
        return save_png(fig, path, force=force)


def face(
    texts_a: Sequence[str | bytes],
    texts_b: Sequence[str | bytes],
    model: LanguageModel | str | Path | None = None,
    *,
    method: SpectrumMethod = "fft",
    preprocess: Preprocess = "none",
    grid: int = GRID,
) -> FaceResult:
    """FACE between two sets of texts (e.g. human-written vs model-written), scored by ``model``.

    Each text is scored with ``entropykit.lm.score`` (surprisal in bits per token), its spectrum is
    taken with ``surprisal_spectrum`` and the i-th texts of the two sets are compared with
    ``face_metrics``. Source: Yang et al. (2023), FACE.

    >>> from entropykit.lm import ByteModel
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> import torch; _ = torch.manual_seed(0)
    >>> m = ByteModel(ByteGPT(ByteGPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16)))
    >>> r = face(["the cat sat on the mat"], ["the dog sat on the log"], m)
    >>> sorted(r.summary)
    ['corr', 'sam', 'so', 'spear']
    """
    from entropykit.lm.scoring import score
    from entropykit.models import resolve_model

    for name, texts in (("texts_a", texts_a), ("texts_b", texts_b)):
        if isinstance(texts, (str, bytes)) or len(texts) == 0:
            raise ValueError(f"{name} must be a non-empty sequence of texts, got {type(texts).__name__}")
    lm = resolve_model(model)

    def spectra(texts: Sequence[str | bytes], name: str) -> list[Spectrum]:
        out = []
        for i, t in enumerate(texts):
            s = score(t, lm).surprisal_bits
            if s.size < 2:
                raise ValueError(f"{name}[{i}] must have at least 2 scored tokens, got {s.size}")
            out.append(surprisal_spectrum(s, method=method, preprocess=preprocess))
        return out

    a, b = spectra(texts_a, "texts_a"), spectra(texts_b, "texts_b")
    return FaceResult(face_metrics(a, b, grid=grid), a, b, method)
