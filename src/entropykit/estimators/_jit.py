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
def locate0(v0: np.ndarray, a: int, b: int, x0: float) -> int:  # first i in [a, b) with v0_i >= x0
    while a < b:
        m = (a + b) // 2
        if v0[m] < x0:
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


CHUNK = 32  # candidates per distance block of knn_blocks


@jit
def block_dist(vt: np.ndarray, j0: int, m: int, p: int, buf: np.ndarray, bound: float) -> bool:
    """``buf[t] = max_c |vt[c, j0 + t] - vt[c, p]|`` for ``t < m``, one coordinate at a time over the
    block (a contiguous loop that vectorises); False (buf partial) as soon as every entry has
    reached ``bound`` (checked every 8 coordinates), when none of them can be a neighbour."""
    d = vt.shape[0]
    x = vt[0, p]
    for t in range(m):
        buf[t] = abs(vt[0, j0 + t] - x)
    for c in range(1, d):
        x = vt[c, p]
        for t in range(m):
            e = abs(vt[c, j0 + t] - x)
            buf[t] = e if e > buf[t] else buf[t]
        if (c & 7) == 7 and c < d - 1:
            least = buf[0]
            for t in range(1, m):
                least = buf[t] if buf[t] < least else least
            if least >= bound:
                return False
    return True


@jit
def knn_blocks(vt: np.ndarray, starts: np.ndarray, lo1: np.ndarray, hi1: np.ndarray, strip: np.ndarray,
               k: int, start: int, stop: int, dist: np.ndarray, idx: np.ndarray) -> None:
    """``knn`` for three or more coordinates, ``vt`` coordinate-major ``(d, n)``: the same sweep, but
    candidates are taken CHUNK at a time from the nearer side and their distances computed as a
    block (``block_dist``); a side stops once its nearest remaining c0 gap reaches the k-th distance."""
    v0 = vt[0]
    x1s = vt[1]
    nstrips = starts.size - 1
    buf = np.empty(CHUNK)
    for p in range(start, stop):
        bd = dist[p]
        bi = idx[p]
        for t in range(k):
            bd[t] = np.inf
            bi[t] = -1
        x0 = v0[p]
        x1 = x1s[p]
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
            hi = locate0(v0, a, b, x0)
            lo = hi - 1
            while True:
                gl = x0 - v0[lo] if lo >= a else np.inf
                gh = v0[hi] - x0 if hi < b else np.inf
                if min(gl, gh) >= bd[k - 1]:  # every remaining candidate of this strip is this far
                    break
                if gl <= gh:
                    j0 = max(a, lo - CHUNK + 1)
                    m = lo + 1 - j0
                    lo = j0 - 1
                else:
                    j0 = hi
                    m = min(b, hi + CHUNK) - hi
                    hi += m
                if not block_dist(vt, j0, m, p, buf, bd[k - 1]):
                    continue
                for t in range(m):
                    e = buf[t]
                    if e < bd[k - 1] and j0 + t != p:
                        q = k - 1
                        while q > 0 and bd[q - 1] > e:
                            bd[q] = bd[q - 1]
                            bi[q] = bi[q - 1]
                            q -= 1
                        bd[q] = e
                        bi[q] = j0 + t


@jit
def window(v0: np.ndarray, a: int, b: int, x0: float, rad: float, strict: bool) -> tuple[int, int]:
    """``[lo, hi)``: the j in ``[a, b)`` with ``|fl(v0_j - x0)| < rad`` (``<=`` if not strict), v0 sorted.
    ``fl(v - x0)`` is monotone in v, so the set is contiguous and its edges are two binary searches."""
    lo, hi = a, b
    while lo < hi:  # first j with fl(v_j - x0) > -rad (>= if closed)
        m = (lo + hi) // 2
        g = v0[m] - x0
        if (g > -rad) if strict else (g >= -rad):
            hi = m
        else:
            lo = m + 1
    first = lo
    hi = b
    while lo < hi:  # first j with fl(v_j - x0) >= rad (> if closed)
        m = (lo + hi) // 2
        g = v0[m] - x0
        if (g >= rad) if strict else (g > rad):
            hi = m
        else:
            lo = m + 1
    return first, lo


@jit
def count(vt: np.ndarray, starts: np.ndarray, lo1: np.ndarray, hi1: np.ndarray, strip: np.ndarray,
          r: np.ndarray, strict: bool, start: int, stop: int, out: np.ndarray) -> None:
    """Two or more coordinates, ``vt`` coordinate-major ``(d, n)``: in every strip within reach, the
    run of points inside the radius along c0 (two binary searches), then the other coordinates'
    running maximum over that run one coordinate at a time (contiguous loops that vectorise) and
    the number of them inside."""
    d = vt.shape[0]
    v0 = vt[0]
    nstrips = starts.size - 1
    buf = np.empty(vt.shape[1])
    for p in range(start, stop):
        rad = r[p]
        x0 = v0[p]
        x1 = vt[1, p]
        s_lo = strip[p]  # the strips whose c1 range comes within reach: [s_lo, s_hi)
        while s_lo > 0:
            lb = x1 - hi1[s_lo - 1]
            if (lb >= rad) if strict else (lb > rad):
                break
            s_lo -= 1
        s_hi = strip[p] + 1
        while s_hi < nstrips:
            lb = lo1[s_hi] - x1
            if (lb >= rad) if strict else (lb > rad):
                break
            s_hi += 1
        total = 0
        for s in range(s_lo, s_hi):
            lo, hi = window(v0, starts[s], starts[s + 1], x0, rad, strict)
            m = hi - lo
            if m <= 0:
                continue
            for t in range(m):
                buf[t] = abs(vt[1, lo + t] - x1)
            for c in range(2, d):
                x = vt[c, p]
                for t in range(m):
                    e = abs(vt[c, lo + t] - x)
                    buf[t] = e if e > buf[t] else buf[t]
            if strict:
                for t in range(m):
                    total += buf[t] < rad
            else:
                for t in range(m):
                    total += buf[t] <= rad
            if lo <= p < hi:  # p itself (distance 0) is inside whenever its own run is non-empty
                total -= 1
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
