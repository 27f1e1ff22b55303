"""Strip-and-sweep neighbour search for the max-norm (internal), compiled with numba.

The points are cut into strips along one coordinate (``c1``) and, inside a strip, sorted by another
(``c0``). A point's neighbours within max-norm distance r lie in the strips whose ``c1`` range
comes within r of it, and inside each such strip in a contiguous run of the ``c0`` order around
its position (``|v_j0 - v_i0| < r``), found by binary search and swept outwards:

- ``knn``: the k nearest others (distance and index): its own strip first, then the strips in order
  of their ``c1`` gap, each swept nearer side first; a strip or a side stops once its gap reaches
  the current k-th distance. A candidate's distance is a running maximum over coordinates that
  gives up (every 8 coordinates) once it reaches the k-th distance;
- ``count``: the number of others strictly inside (``strict``) or within radius ``r_i``.

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


def available() -> bool:
    """Whether numba imports (the estimators fall back to SciPy's cKDTree otherwise)."""
    return _compiled() is not None


@functools.cache
def _compiled() -> Any:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dev dependency (via infomeasure)
        return None
    jit = numba.njit(nogil=True, cache=True)

    @jit
    def locate(vs: np.ndarray, a: int, b: int, x0: float) -> int:  # first i in [a, b) with v_i0 >= x0
        while a < b:
            m = (a + b) // 2
            if vs[m, 0] < x0:
                a = m + 1
            else:
                b = m
        return a

    @jit
    def dist_upto(vs: np.ndarray, j: int, p: int, g: float, bound: float, closed: bool) -> float:
        """max(g, max_{c >= 1} |v_jc - v_pc|), abandoned once it is outside the ball of radius bound
        (open: >= bound; closed: > bound), when the exact value no longer matters."""
        d = vs.shape[1]
        m = g
        for c in range(1, d):
            m = max(m, abs(vs[j, c] - vs[p, c]))
            if (c & 7) == 0 and ((m > bound) if closed else (m >= bound)):
                return m
        return m

    @jit
    def knn(vs: np.ndarray, starts: np.ndarray, lo1: np.ndarray, hi1: np.ndarray, strip: np.ndarray,
            k: int, start: int, stop: int, dist: np.ndarray, idx: np.ndarray) -> None:
        d = vs.shape[1]
        nstrips = starts.size - 1
        for p in range(start, stop):
            bd = dist[p]
            bi = idx[p]
            for t in range(k):
                bd[t] = np.inf
                bi[t] = -1
            x0 = vs[p, 0]
            x1 = vs[p, 1] if d > 1 else 0.0
            up = strip[p]
            dn = up - 1
            while True:
                if up == strip[p]:
                    s = up
                    up += 1
                else:
                    lb_up = lo1[up] - x1 if up < nstrips else np.inf
                    lb_dn = x1 - hi1[dn] if dn >= 0 else np.inf
                    if min(lb_up, lb_dn) >= bd[k - 1]:
                        break
                    if lb_up <= lb_dn:
                        s = up
                        up += 1
                    else:
                        s = dn
                        dn -= 1
                a = starts[s]
                b = starts[s + 1]
                hi = locate(vs, a, b, x0)
                lo = hi - 1
                while True:
                    gl = x0 - vs[lo, 0] if lo >= a else np.inf
                    gh = vs[hi, 0] - x0 if hi < b else np.inf
                    if gl <= gh:
                        j, g = lo, gl
                        lo -= 1
                    else:
                        j, g = hi, gh
                        hi += 1
                    kth = bd[k - 1]
                    if g >= kth:  # every remaining candidate of this strip is at least this far
                        break
                    if j == p:
                        continue
                    m = dist_upto(vs, j, p, g, kth, False)
                    if m < kth:
                        q = k - 1
                        while q > 0 and bd[q - 1] > m:
                            bd[q] = bd[q - 1]
                            bi[q] = bi[q - 1]
                            q -= 1
                        bd[q] = m
                        bi[q] = j

    @jit
    def count_strip(vs: np.ndarray, a: int, b: int, p: int, x0: float, rad: float, strict: bool) -> int:
        pos = locate(vs, a, b, x0)
        total = 0
        j = pos - 1
        while j >= a:
            g = x0 - vs[j, 0]
            if (g >= rad) if strict else (g > rad):
                break
            m = dist_upto(vs, j, p, g, rad, not strict)
            total += (m < rad) if strict else (m <= rad)
            j -= 1
        j = pos
        while j < b:
            g = vs[j, 0] - x0
            if (g >= rad) if strict else (g > rad):
                break
            if j != p:
                m = dist_upto(vs, j, p, g, rad, not strict)
                total += (m < rad) if strict else (m <= rad)
            j += 1
        return total

    @jit
    def count(vs: np.ndarray, starts: np.ndarray, lo1: np.ndarray, hi1: np.ndarray, strip: np.ndarray,
              r: np.ndarray, strict: bool, start: int, stop: int, out: np.ndarray) -> None:
        d = vs.shape[1]
        nstrips = starts.size - 1
        for p in range(start, stop):
            rad = r[p]
            x0 = vs[p, 0]
            x1 = vs[p, 1] if d > 1 else 0.0
            total = 0
            s = strip[p]
            while s >= 0:
                lb = x1 - hi1[s] if s < strip[p] else 0.0
                if (lb >= rad) if strict else (lb > rad):
                    break
                total += count_strip(vs, starts[s], starts[s + 1], p, x0, rad, strict)
                s -= 1
            s = strip[p] + 1
            while s < nstrips:
                lb = lo1[s] - x1
                if (lb >= rad) if strict else (lb > rad):
                    break
                total += count_strip(vs, starts[s], starts[s + 1], p, x0, rad, strict)
                s += 1
            out[p] = total

    @jit
    def count_1d(v: np.ndarray, r: np.ndarray, strict: bool, start: int, stop: int, out: np.ndarray) -> None:
        """One coordinate, sorted: both window edges of each point, found by galloping from the
        previous point's edges (neighbouring points have nearby edges) and a binary search inside
        the bracket. The predicates ``fl(x0 - v_j) < r`` and ``fl(v_j - x0) < r`` are monotone in j,
        so the edges are exactly those of a full binary search (or of a KD-tree)."""
        n = v.shape[0]
        left = start  # guesses: the previous point's edges
        right = start
        for p in range(start, stop):
            x0 = v[p, 0]
            rad = r[p]
            pos = p  # first j with v_j >= x0 (p itself unless ties precede it)
            if p > 0 and v[p - 1, 0] >= x0:
                pos = locate(v, 0, p, x0)
            # left edge: first j in [0, pos) with x0 - v_j inside (False ... False True ... True)
            g = min(max(left, 0), pos)
            if g == pos or ((x0 - v[g, 0] < rad) if strict else (x0 - v[g, 0] <= rad)):
                step = 1  # inside (or at pos, an upper bound): gallop left until outside (or 0)
                hi = g
                lo = g - step
                while lo >= 0 and ((x0 - v[lo, 0] < rad) if strict else (x0 - v[lo, 0] <= rad)):
                    hi = lo
                    step *= 2
                    lo = g - step
                lo = max(lo + 1, 0)  # answer in [lo, hi]
            else:
                step = 1  # outside: gallop right until inside (or pos)
                lo = g + 1
                hi = g + step
                while hi < pos and not ((x0 - v[hi, 0] < rad) if strict else (x0 - v[hi, 0] <= rad)):
                    lo = hi + 1
                    step *= 2
                    hi = g + step
                hi = min(hi, pos)  # answer in [lo, hi]
            while lo < hi:
                m = (lo + hi) // 2
                if (x0 - v[m, 0] < rad) if strict else (x0 - v[m, 0] <= rad):
                    hi = m
                else:
                    lo = m + 1
            left = lo
            # right edge: first j in [pos, n) with v_j - x0 outside (True ... True False ... False)
            g = min(max(right, pos), n)
            if g < n and ((v[g, 0] - x0 < rad) if strict else (v[g, 0] - x0 <= rad)):
                step = 1  # inside: gallop right until outside (or n)
                lo = g + 1
                hi = g + step
                while hi < n and ((v[hi, 0] - x0 < rad) if strict else (v[hi, 0] - x0 <= rad)):
                    lo = hi + 1
                    step *= 2
                    hi = g + step
                hi = min(hi, n)  # answer in [lo, hi]
            else:
                step = 1  # outside (or g == n): gallop left until inside (or pos)
                hi = g
                lo = g - step
                while lo >= pos and not ((v[lo, 0] - x0 < rad) if strict else (v[lo, 0] - x0 <= rad)):
                    hi = lo
                    step *= 2
                    lo = g - step
                lo = max(lo + 1, pos)  # answer in [lo, hi]
            while lo < hi:
                m = (lo + hi) // 2
                if (v[m, 0] - x0 < rad) if strict else (v[m, 0] - x0 <= rad):
                    lo = m + 1
                else:
                    hi = m
            right = lo
            self_in = (0.0 < rad) if strict else (0.0 <= rad)  # p itself lies in [pos, right) then
            out[p] = (pos - left) + (right - pos) - (1 if self_in else 0)

    return knn, count, count_1d


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
        c1 = self.v[:, 1] if d > 1 else np.zeros(n)
        self.lo1 = np.minimum.reduceat(c1, self.starts[:-1])
        self.hi1 = np.maximum.reduceat(c1, self.starts[:-1])

    def _args(self) -> tuple[np.ndarray, ...]:
        return self.v, self.starts, self.lo1, self.hi1, self.strip

    def knn(self, k: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances (ascending) and indices of each point's k nearest other points, ``(n, k)``."""
        knn = _compiled()[0]
        dist = np.empty((self.n, k))
        idx = np.empty((self.n, k), dtype=np.int64)
        _run(lambda s, e: knn(*self._args(), k, s, e, dist, idx), self.n, workers)
        out_d = np.empty_like(dist)
        out_i = np.empty_like(idx)
        out_d[self.order] = dist
        out_i[self.order] = self.order[idx]
        return out_d, out_i

    def count(self, r: np.ndarray, strict: bool, workers: int = 1) -> np.ndarray:
        """For each point i, the number of other points at distance ``< r_i`` (``<=`` if not strict)."""
        _, count, count_1d = _compiled()
        rs = np.ascontiguousarray(r[self.order], dtype=np.float64)
        got = np.empty(self.n, dtype=np.int64)
        if self.v.shape[1] == 1:
            _run(lambda s, e: count_1d(self.v, rs, strict, s, e, got), self.n, workers)
        else:
            _run(lambda s, e: count(*self._args(), rs, strict, s, e, got), self.n, workers)
        out = np.empty_like(got)
        out[self.order] = got
        return out


def knn_scale(v: np.ndarray, k: int) -> float:
    """A strip width for kNN queries: 1.5 x the k-th neighbour distance a uniform density over one
    standard deviation per coordinate would give, ``1.5 sigma (k / n)^(1 / d)`` (the speed is flat
    within a factor of 4 either side of the best width on the benchmark's Gaussians)."""
    n, d = v.shape
    return float(1.5 * np.sort(v.std(axis=0))[-min(d, 2)] * (k / n) ** (1.0 / d))
