"""The one validation of the estimators part: samples in (NumPy, torch or nested sequences), float64
2-D arrays out; preprocessing (standardise, seeded jitter) shared by every estimator.

Messages follow the house dialect of :mod:`entropykit._validate`:
``<name> must be <what is accepted>, got <the value>``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from entropykit._validate import check_choice, check_int, check_positive, check_real

RandomState = int | np.random.Generator | None


def check_samples(x: Any, name: str, *, min_samples: int = 2, allow_1d: bool = True) -> np.ndarray:
    """``x`` (array-like or tensor of shape ``(n,)`` or ``(n, d)``) as a C-contiguous float64 array
    of shape ``(n, d)``; TypeError/ValueError naming ``name`` otherwise."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().double().numpy() if x.dtype.is_floating_point else x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged sequences
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__} ({exc})") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    if a.ndim == 1 and allow_1d:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (n_samples,) or (n_samples, n_features), got {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {a.shape}")
    if a.shape[0] < min_samples:
        raise ValueError(f"{name} must have at least {min_samples} samples, got {a.shape[0]}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite, got {a[i, j]} at row {i}, column {j}")
    return a


def check_same_n(arrays: dict[str, np.ndarray]) -> int:
    """All arrays have one number of samples (rows); return it."""
    names = list(arrays)
    n = arrays[names[0]].shape[0]
    for other in names[1:]:
        if arrays[other].shape[0] != n:
            raise ValueError(
                f"{names[0]} and {other} must have the same number of samples, "
                f"got {n} and {arrays[other].shape[0]}"
            )
    return n


def check_k(k: Any, n: int, name: str = "k") -> int:
    """A neighbour count in ``[1, n - 1]`` (the estimators need k neighbours besides the point)."""
    k = check_int(k, name, 1)
    if k > n - 1:
        raise ValueError(f"{name} must be at most n_samples - 1 = {n - 1}, got {k} (too few samples for k)")
    return k


def check_base(base: Any) -> float:
    """The logarithm base of the result (``math.e`` for nats, 2 for bits); a positive number != 1."""
    b = check_positive(base, "base")
    if b == 1.0:
        raise ValueError("base must be a positive number other than 1, got 1")
    return b


def to_base(value: float, base: float) -> float:
    return float(value) if base == math.e else float(value) / math.log(base)


def rng_of(random_state: RandomState) -> np.random.Generator:
    """A NumPy Generator from an int seed, a Generator (used as is) or None (fresh entropy)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, int) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    got = type(random_state).__name__
    raise TypeError(f"random_state must be an int, a numpy Generator or None, got {got}")


def standardize(a: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(a - mean) / std`` per column (population std) and the stds; ValueError on a constant column."""
    std = a.std(axis=0)
    const = np.flatnonzero(std == 0)
    if const.size:
        j = int(const[0])
        raise ValueError(
            f"{name} must have no constant column when standardize=True, got column {j} constant "
            f"(value {a[0, j]!r}); drop it or pass standardize=False"
        )
    return (a - a.mean(axis=0)) / std, std


def prepare(
    arrays: dict[str, np.ndarray], *, standardize_: bool, jitter: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Standardise each array's columns (if asked) and add seeded jitter of relative size ``jitter``
    (scaled by ``max(1, mean |column|)`` as scikit-learn does) to break ties."""
    out = []
    for name, a in arrays.items():
        if standardize_:
            a, _ = standardize(a, name)
        if jitter > 0:
            scale = np.maximum(1.0, np.mean(np.abs(a), axis=0))
            a = a + jitter * scale * rng.standard_normal(a.shape)
        out.append(np.ascontiguousarray(a))
    return out


def check_options(jitter: Any, neighbors: Any, workers: Any) -> tuple[float, str, int]:
    jitter = check_real(jitter, "jitter", 0.0, finite=True)
    neighbors = check_choice(neighbors, ("auto", "grid", "tree", "brute"), "neighbors")
    workers = check_int(workers, "workers", -1)
    if workers == 0:
        raise ValueError("workers must be a positive int or -1 (all cores), got 0")
    return jitter, neighbors, workers
