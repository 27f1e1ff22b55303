"""The numba kernels of :mod:`._kernels` (internal; imported only when numba is installed).

Module-level functions so that numba's on-disk cache (``cache=True``) is hit by every later process:
kernels defined as closures inside a function were recompiled in every process (their cache key
changes), which cost seconds to tens of seconds per process on a loaded machine.
"""

from __future__ import annotations

import numba
import numpy as np

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
