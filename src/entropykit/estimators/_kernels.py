"""Strip-and-sweep neighbour search for the max-norm (internal), compiled with numba.

The points are cut into strips along one coordinate (``c1``) and, inside a strip, sorted by another
(``c0``). A point's neighbours within max-norm distance r lie in the strips whose ``c1`` range
comes within r of it, and inside each such strip in a contiguous run of the ``c0`` order around
its position (``|v_j0 - v_i0| < r``), found by binary search and swept outwards:

- ``knn``: the k nearest others (distance and index): its own strip first, then the strips in order
  of their ``c1`` gap, each swept nearer side first; a strip or a side stops once its gap reaches
  the current k-th distance. With one or two coordinates a candidate at a time; from three up
  (``knn_blocks``) 32 candidates at a time, their distances computed coordinate by coordinate over
  the block from a coordinate-major copy (loops that vectorise; 2-3x faster at 4-10 coordinates),
  a block given up every 8 coordinates once all of it has reached the k-th distance;
- ``count``: the number of others strictly inside (``strict``) or within radius ``r_i``: per strip
  within reach, the run inside the radius along ``c0`` (two binary searches), then the running
  maximum of the other coordinates over the whole run, one coordinate at a time (vectorised).

With one coordinate (or many, where strips stop paying) there is one strip: a plain sort-and-sweep.
Every distance is ``max_c |fl(v_jc - v_ic)|`` in float64, as SciPy's ``cKDTree`` and the naive loops
compute it, and the strip bounds are the strips' actual smallest and largest ``c1`` values, so the
k-th distances and counts are the same numbers as a KD-tree's (the only freedom is which of
several neighbours at exactly the same distance is listed, which never changes a k-th distance).
Rows are processed in independent blocks: ``workers`` threads split them (the kernels release
the GIL). Compiled on first use and cached on disk (numba's ``cache=True``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

_MAX_STRIP_DIM = 12  # from this many coordinates up, neighbourhoods span most strips: one strip
_MIN_BLOCK_DIM = 3  # kNN from this many coordinates up: distances a block of candidates at a time


def available() -> bool:
    """Whether numba imports (the estimators fall back to SciPy's cKDTree otherwise)."""
    return _compiled() is not None


@functools.cache
def _compiled() -> Any:
    try:
        from . import _jit
    except ImportError:  # pragma: no cover - numba is a dev dependency (via infomeasure)
        return None
    return _jit.knn, _jit.count, _jit.count_1d, _jit.knn_blocks


def _run(fn: Callable[[int, int], None], n: int, workers: int) -> None:
    if workers <= 1:
        fn(0, n)
        return
    edges = np.linspace(0, n, 4 * workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda se: fn(*se), [(int(s), int(e)) for s, e in itertools.pairwise(edges)]))


class Grid:
    """One point set cut into strips of width ``h`` along its second-widest coordinate and sorted by
    its widest one inside each strip, for repeated kNN and count queries (``h`` <= 0: one strip)."""

    def __init__(self, v: np.ndarray, h: float) -> None:
        n, d = v.shape
        self.n = n
        w = v
        if d > 1:  # c0, c1 = the two widest coordinates
            perm = np.argsort(-v.std(axis=0), kind="stable")
            if (perm != np.arange(d)).any():
                w = v[:, perm]
        # the order among equal c0 values is free (it never changes a distance or a count), so the
        # fast unstable sort; inside strips, by the unique key (strip, rank in c0)
        by0 = np.argsort(w[:, 0])
        if 1 < d < _MAX_STRIP_DIM and h > 0:
            raw = np.minimum(np.floor((w[:, 1] - w[:, 1].min()) / h), n).astype(np.int64)  # <= n + 1 strips
            present = np.bincount(raw, minlength=n + 1) > 0
            strip = (np.cumsum(present) - 1)[raw]  # non-empty strips, numbered in order
            self.order = by0[np.argsort(strip[by0] * n + np.arange(n))]
            self.strip = np.ascontiguousarray(strip[self.order])
            nstrips = int(self.strip[-1]) + 1
            self.starts = np.searchsorted(self.strip, np.arange(nstrips + 1)).astype(np.int64)
        else:  # one strip: a plain sort-and-sweep
            self.order = by0
            self.strip = np.zeros(n, dtype=np.int64)
            self.starts = np.array([0, n], dtype=np.int64)
        self.v = np.ascontiguousarray(w[self.order])
        self.vt = np.ascontiguousarray(self.v.T)  # coordinate-major, for the block kernels
        c1 = self.v[:, 1] if d > 1 else np.zeros(n)
        self.lo1 = np.minimum.reduceat(c1, self.starts[:-1])
        self.hi1 = np.maximum.reduceat(c1, self.starts[:-1])

    def _args(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        return v, self.starts, self.lo1, self.hi1, self.strip

    def knn(self, k: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances (ascending) and indices of each point's k nearest other points, ``(n, k)``."""
        knn, _, _, knn_blocks = _compiled()
        dist = np.empty((self.n, k))
        idx = np.empty((self.n, k), dtype=np.int64)
        if self.v.shape[1] < _MIN_BLOCK_DIM:
            _run(lambda s, e: knn(*self._args(self.v), k, s, e, dist, idx), self.n, workers)
        else:
            _run(lambda s, e: knn_blocks(*self._args(self.vt), k, s, e, dist, idx), self.n, workers)
        out_d = np.empty_like(dist)
        out_i = np.empty_like(idx)
        out_d[self.order] = dist
        out_i[self.order] = self.order[idx]
        return out_d, out_i

    def count(self, r: np.ndarray, strict: bool, workers: int = 1) -> np.ndarray:
        """For each point i, the number of other points at distance ``< r_i`` (``<=`` if not strict)."""
        _, count, count_1d, _ = _compiled()
        rs = np.ascontiguousarray(r[self.order], dtype=np.float64)
        got = np.empty(self.n, dtype=np.int64)
        if self.v.shape[1] == 1:
            _run(lambda s, e: count_1d(self.v, rs, strict, s, e, got), self.n, workers)
        else:
            _run(lambda s, e: count(*self._args(self.vt), rs, strict, s, e, got), self.n, workers)
        out = np.empty_like(got)
        out[self.order] = got
        return out


def knn_scale(v: np.ndarray, k: int) -> float:
    """A strip width for kNN queries: 1.5 x the k-th neighbour distance a uniform density over one
    standard deviation per coordinate would give, ``1.5 sigma (k / n)^(1 / d)`` (the speed is flat
    within a factor of 4 either side of the best width on the benchmark's Gaussians)."""
    n, d = v.shape
    return float(1.5 * np.sort(v.std(axis=0))[-min(d, 2)] * (k / n) ** (1.0 / d))
