"""Log-likelihood vectors: many language models as points of one space, distances as KL divergences.

Oyama, Yamagiwa, Takase and Shimodaira (ACL 2025), "Mapping 1,000+ Language Models via the
Log-Likelihood Vector": score a fixed probe set of texts ``x_1..x_N`` with every model ``p_i`` and
keep the matrix ``L[i, s] = log p_i(x_s)`` (whole-text log-likelihoods, nats). Double centring
(subtract each column's mean over models, then each row's mean over texts) gives ``Q``; the row
``q_i`` is model i's coordinate and

    2 KL(p_i, p_j) ~= ||q_i - q_j||^2 / N.

Why: ``q_i - q_j`` is the log-ratio ``log p_i(x) - log p_j(x)`` centred over the probe texts, so
``||q_i - q_j||^2 / N`` is its sample variance; for nearby models, ``Var_x[log p_i/p_j] = 2 KL(p_i,
p_j) + O(|log p_i/p_j|^3)`` (the Fisher metric). The approximation is local: it holds when the probe
texts are drawn from a distribution near the models', and it underestimates far-apart models.
Sampling error: the variance of N draws has standard error ``sqrt((m4 - v^2) / N)`` (m4 the fourth
central moment), which ``ModelMap.kl_se`` reports (halved, like the KL).

Texts must be scored whole by every model (a model without a BOS token leaves its first token out,
which changes its log-likelihood by one token: compare such models on long texts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entropykit._validate import check_int

if TYPE_CHECKING:
    from entropykit.models import LanguageModel

__all__ = ["ModelMap", "double_centre", "kl_from_loglik", "loglik_matrix", "model_map"]


def _matrix(loglik: Any, name: str = "loglik") -> np.ndarray:
    L = np.asarray(loglik, dtype=np.float64)
    if L.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (models, texts) array, got shape {L.shape}")
    if L.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 models (rows), got {L.shape[0]}")
    if L.shape[1] < L.shape[0]:
        raise ValueError(f"{name} must have at least as many texts as models, got {L.shape[1]} texts "
                         f"for {L.shape[0]} models")
    if not np.isfinite(L).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(L)).sum())} NaN/inf value(s)")
    return L


def double_centre(loglik: Any) -> np.ndarray:
    """``Q = L - column means - row means + grand mean``: every row and every column of Q sums to 0.

    ``L`` is (models, texts). Source: Oyama et al. (2025), Sec. 3.

    >>> double_centre([[1.0, 2.0], [3.0, 6.0]])
    array([[ 0.5, -0.5],
           [-0.5,  0.5]])
    """
    L = _matrix(loglik)
    return L - L.mean(axis=0, keepdims=True) - L.mean(axis=1, keepdims=True) + L.mean()


def kl_from_loglik(loglik: Any) -> tuple[np.ndarray, np.ndarray]:
    """Estimated KL matrix ``KL[i, j] ~= ||q_i - q_j||^2 / (2 N)`` (nats) and its standard error.

    The estimate is symmetric (it approximates both KL(p_i, p_j) and KL(p_j, p_i), which agree to
    second order). Standard error: half the standard error of the sample variance of the centred
    log-ratio, ``sqrt((m4 - v^2) / N) / 2``. Source: Oyama et al. (2025), Eq. (2).

    >>> kl, se = kl_from_loglik([[0.0, -1.0, -2.0], [0.0, 0.0, 0.0]])
    >>> round(float(kl[0, 1]), 6)
    0.333333
    """
    Q = double_centre(loglik)  # q_i - q_j is the centred log-ratio of models i and j
    n = Q.shape[1]
    # sums over texts of (q_i - q_j)^2 and ^4 by matrix products: O(K^2 N) time, O(K^2 + K N) memory
    q2, q3, q4 = Q**2, Q**3, Q**4
    s2 = q2.sum(axis=1)
    s4 = q4.sum(axis=1)
    v = (s2[:, None] + s2[None, :] - 2.0 * Q @ Q.T) / n
    q3q = q3 @ Q.T  # [i, j] = sum q_i^3 q_j
    m4 = (s4[:, None] + s4[None, :] - 4.0 * q3q - 4.0 * q3q.T + 6.0 * q2 @ q2.T) / n
    v = np.maximum(v, 0.0)
    np.fill_diagonal(v, 0.0)
    se = np.sqrt(np.maximum(m4 - v**2, 0.0) / n) / 2.0
    np.fill_diagonal(se, 0.0)
    return v / 2.0, se


def loglik_matrix(
    models: Sequence[LanguageModel | str | Path], texts: Sequence[str | bytes], *, progress: bool = False
) -> np.ndarray:
    """``L[i, s] = log p_i(texts[s])`` in nats (the sum of the model's token log-probabilities over the
    whole text, scored by ``entropykit.lm.score``; long texts slide a window)."""
    from entropykit.lm.scoring import score
    from entropykit.models import resolve_model

    _check_inputs(models, texts)
    L = np.empty((len(models), len(texts)))
    for i, m in enumerate(models):
        lm = resolve_model(m, f"models[{i}]")
        for s, t in enumerate(texts):
            bits = score(t, lm, progress=progress).surprisal_bits.astype(np.float64).sum()
            L[i, s] = -float(bits) * math.log(2)
    return L


def _check_inputs(models: Sequence[Any], texts: Sequence[Any]) -> None:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of texts, got {type(texts).__name__}")
    if not isinstance(models, Sequence) or isinstance(models, str) or len(models) < 2:
        raise ValueError(f"models must be a sequence of at least 2 models, got {models!r}")
    if len(texts) < len(models):
        raise ValueError(f"texts must number at least as many as models ({len(models)}), got {len(texts)}")


@dataclass
class ModelMap:
    """Models as points: ``coords`` (double-centred log-likelihood vectors, models x texts), the
    estimated ``kl`` matrix (nats) with its standard error ``kl_se``, and a 2-D ``embedding`` (the
    first two principal components of ``coords``, which is classical MDS of the distances)."""

    names: list[str]
    loglik: np.ndarray
    coords: np.ndarray
    kl: np.ndarray
    kl_se: np.ndarray
    embedding: np.ndarray
    explained: np.ndarray  # fraction of the squared distances each of the two axes carries

    def nearest(self, name: str, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` models closest to ``name`` by estimated KL, closest first."""
        if name not in self.names:
            raise ValueError(f"name must be one of {self.names}, got {name!r}")
        i = self.names.index(name)
        k = check_int(k, "k", 1)
        order = [j for j in np.argsort(self.kl[i], kind="stable") if j != i][:k]
        return [(self.names[j], float(self.kl[i, j])) for j in order]

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "texts": int(self.loglik.shape[1]), "kl_nats": self.kl.tolist(),
                "kl_se_nats": self.kl_se.tolist(), "embedding": self.embedding.tolist(),
                "explained": self.explained.tolist()}

    def plot_png(self, path: str | Path | None = None, *, force: bool = True) -> bytes:
        """The 2-D map as PNG bytes (written to ``path`` when given; needs the ``[plot]`` extra)."""
        from entropykit.lm._plot import new_figure, save_png

        fig = new_figure(5.5, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        x, y = self.embedding[:, 0], self.embedding[:, 1]
        ax.scatter(x, y, s=28, color="#2f69d0")
        for xi, yi, n in zip(x, y, self.names, strict=True):
            ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(f"PC1 ({self.explained[0]:.0%})")
        ax.set_ylabel(f"PC2 ({self.explained[1]:.0%})")
        ax.set_title(f"model map: {len(self.names)} models, {self.loglik.shape[1]} probe texts", fontsize=10)
        return save_png(fig, path, force=force)


def _embed(Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, s, _ = np.linalg.svd(Q, full_matrices=False)
    emb = np.zeros((Q.shape[0], 2))
    r = min(2, s.size)
    emb[:, :r] = u[:, :r] * s[:r]
    total = float((s**2).sum())
    explained = np.zeros(2)
    explained[:r] = (s[:r] ** 2) / total if total > 0 else 0.0
    return emb, explained


def model_map(
    models: Sequence[LanguageModel | str | Path] | None = None,
    texts: Sequence[str | bytes] | None = None,
    *,
    loglik: Any = None,
    names: Sequence[str] | None = None,
    progress: bool = False,
) -> ModelMap:
    """Map models by their log-likelihood vectors on a shared probe set (Oyama et al., ACL 2025).

    Give ``models`` and ``texts`` (scored here with ``loglik_matrix``), or a precomputed
    ``loglik`` matrix (models x texts, nats). Returns a ``ModelMap``: the estimated KL matrix
    ``||q_i - q_j||^2 / (2N)`` (nats), its standard error, a 2-D PCA embedding and ``nearest``.

    >>> mm = model_map(loglik=[[-5.0, -9.0, -4.0], [-5.5, -8.0, -4.0], [-9.0, -3.0, -7.0]], names="abc")
    >>> [n for n, _ in mm.nearest("a", k=2)]
    ['b', 'c']
    """
    if loglik is None:
        if models is None or texts is None:
            raise ValueError("model_map needs models and texts, or loglik")
        L = loglik_matrix(models, texts, progress=progress)
        default = [m if isinstance(m, str) else getattr(m, "name", f"model{i}") for i, m in enumerate(models)]
    else:
        L = _matrix(loglik)
        default = [f"model{i}" for i in range(L.shape[0])]
    labels = [str(n) for n in (names if names is not None else default)]
    if len(labels) != L.shape[0]:
        raise ValueError(f"names must have one name per model ({L.shape[0]}), got {len(labels)}")
    if len(set(labels)) != len(labels):  # keep every point distinguishable
        labels = [f"{n}#{i}" for i, n in enumerate(labels)]
    Q = double_centre(L)
    kl, se = kl_from_loglik(L)
    emb, explained = _embed(Q)
    return ModelMap(labels, L, Q, kl, se, emb, explained)
