"""Neighbour machinery of the kNN estimators (internal: callers pass validated float64 arrays).

Three paths compute the same numbers (Chebyshev distances are ``max |a_i - b_i|`` in float64 on all,
so counts agree exactly):

- ``grid`` (the default when numba is installed; max-norm only): strips along one coordinate, sorted
  by another, swept outwards from each point (``_kernels``), for the joint k-th neighbours and every
  marginal count; 4-9x a KD-tree KSG from 1x1 to 25x25 (``benchmarks/estimators.py``), because the
  marginal balls hold ~100 points at N = 5,000 and a KD-tree visits them one by one; a 1-D
  marginal is counted over its sorted values, each window edge galloped from the previous point's;
- ``tree``: SciPy's ``cKDTree`` for the k-th neighbour in the joint space and ball counts in the
  marginal spaces; a one-dimensional marginal is counted by an exact vectorised binary search over
  its sorted values (no tree).
- ``brute``: blocks of rows of the per-part distance matrices from ``scipy.spatial.distance.cdist``;
  the joint distance is the maximum over parts, so one pass yields the joint k-th distance *and*
  every marginal count. It wins once the joint dimension makes KD-trees degrade (about 8 and up).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from . import _kernels

_P = {"chebyshev": np.inf, "euclidean": 2.0}
_BLOCK_ELEMENTS = 1 << 22  # float64 elements per block matrix (32 MB)


def choose(neighbors: str, n: int, dim: int, metric: str = "chebyshev") -> str:
    """``auto``: the numba strip sweep for the max-norm when numba imports; otherwise brute force from
    joint dimension 8 up while n^2 stays moderate, else the tree. ``grid`` with the Euclidean metric
    (which it does not implement) falls back to that rule."""
    if neighbors == "grid" and metric != "chebyshev":
        neighbors = "auto"
    if neighbors == "grid" and not _kernels.available():
        raise ValueError("neighbors must be 'auto', 'tree' or 'brute' without numba installed, got 'grid'")
    if neighbors != "auto":
        return neighbors
    if metric == "chebyshev" and _kernels.available():
        return "grid"
    return _scipy_path(n, dim)


def _scipy_path(n: int, dim: int) -> str:
    return "brute" if dim >= 8 and n <= 40_000 else "tree"


def _n_workers(workers: int) -> int:
    return (os.cpu_count() or 1) if workers == -1 else workers


def _blocks(n: int, per_row: int) -> list[tuple[int, int]]:
    rows = max(1, min(n, _BLOCK_ELEMENTS // max(1, per_row)))
    return [(s, min(n, s + rows)) for s in range(0, n, rows)]


def _run(fn: Callable[[int, int], None], blocks: list[tuple[int, int]], workers: int) -> None:
    w = _n_workers(workers)
    if w <= 1 or len(blocks) <= 1:
        for s, e in blocks:
            fn(s, e)
        return
    with ThreadPoolExecutor(w) as pool:  # cdist, partition and comparisons release the GIL
        list(pool.map(lambda se: fn(*se), blocks))


def count_sorted_1d(v: np.ndarray, r: np.ndarray, strict: bool) -> np.ndarray:
    """For each i, the number of j != i with ``|v_j - v_i| < r_i`` (``<=`` if not ``strict``), by an
    exact binary search over sorted values: the predicate is evaluated as ``fl(v_j - v_i)`` exactly as
    a KD-tree evaluates it, and is monotone in ``v_j``, so counts match the tree's bit for bit."""
    s = np.sort(v)
    n = s.size

    def boundary(upper: bool) -> np.ndarray:
        # upper: first index j with not pred(s_j - v_i); lower: first index with pred(v_i - s_j)
        lo = np.zeros(n, dtype=np.int64)
        hi = np.full(n, n, dtype=np.int64)
        while True:
            active = lo < hi
            if not active.any():
                return lo
            mid = (lo + hi) // 2
            m = np.minimum(mid, n - 1)
            d = s[m] - v if upper else v - s[m]
            inside = d < r if strict else d <= r
            go_right = inside if upper else ~inside
            lo = np.where(active & go_right, mid + 1, lo)
            hi = np.where(active & ~go_right, mid, hi)

    count = np.maximum(boundary(True) - boundary(False), 0)  # r == 0 strictly: the windows cross
    self_in = (r > 0) if strict else np.ones(n, dtype=bool)
    return count - self_in.astype(np.int64)


Counts = tuple[np.ndarray, list[np.ndarray], np.ndarray | None]


def ksg_counts(
    parts: Sequence[np.ndarray], subspaces: Sequence[Sequence[int]], k: int, mode: str, *,
    neighbors: str, workers: int = 1,
) -> Counts:
    """Joint max-norm k-th neighbour distance ``eps`` (self excluded) and, per subspace (a tuple of
    part indices), the number of other points within it:

    - ``mode="lt"``: distance ``< eps_i`` (KSG type 1, Frenzel-Pompe);
    - ``mode="mixed"``: as ``lt``, but rows whose ``eps_i`` is 0 count the points at distance 0,
      and the third output holds the number of joint ties at distance 0 (Gao et al.'s estimator);
    - ``mode="ksg2"``: distance ``<= eps_sub_i``, the largest subspace distance among the k joint
      neighbours (KSG type 2).
    """
    return ksg_counts_multi(parts, subspaces, [k], mode, neighbors=neighbors, workers=workers)[0]


def ksg_counts_multi(
    parts: Sequence[np.ndarray], subspaces: Sequence[Sequence[int]], ks: Sequence[int], mode: str, *,
    neighbors: str, workers: int = 1,
) -> list[Counts]:
    """:func:`ksg_counts` for several k from one neighbour search (one pass of distance blocks, or
    one tree query for the largest k): the k-ensemble costs little more than its largest k."""
    n = parts[0].shape[0]
    dim = sum(p.shape[1] for p in parts)
    path = choose(neighbors, n, dim)
    out: list[Counts] = [
        (np.zeros(n), [np.zeros(n, dtype=np.int64) for _ in subspaces],
         np.zeros(n, dtype=np.int64) if mode == "mixed" else None)
        for _ in ks
    ]
    if path == "grid":
        _grid_counts(parts, subspaces, ks, mode, out, workers)
        return out
    if path == "brute":

        def block(s: int, e: int) -> None:
            dp = [cdist(p[s:e], p, "chebyshev") for p in parts]
            joint = dp[0].copy() if len(dp) > 1 else dp[0]
            for d in dp[1:]:
                np.maximum(joint, d, out=joint)
            rows = np.arange(e - s)
            joint_self = joint if len(dp) > 1 else joint.copy()
            joint_self[rows, rows + s] = np.inf
            subs = []
            for sub in subspaces:
                d = dp[sub[0]]
                if len(sub) > 1:
                    d = d.copy()
                    for q in sub[1:]:
                        np.maximum(d, dp[q], out=d)
                subs.append(d)
            part = None if mode == "ksg2" else np.partition(joint_self, [k - 1 for k in ks], axis=1)
            for k, (eps, counts, ties) in zip(ks, out):
                if part is None:
                    idx = np.argpartition(joint_self, k - 1, axis=1)[:, :k]
                    e_i = np.take_along_axis(joint_self, idx, axis=1).max(axis=1)
                else:
                    e_i = part[:, k - 1]
                eps[s:e] = e_i
                if ties is not None:
                    ties[s:e] = (joint_self == 0).sum(axis=1)
                for c, d in zip(counts, subs):
                    if part is None:
                        r = np.take_along_axis(d, idx, axis=1).max(axis=1)
                        c[s:e] = (d <= r[:, None]).sum(axis=1) - 1
                    elif mode == "mixed":
                        lt = (d < e_i[:, None]).sum(axis=1) - 1
                        c[s:e] = np.where(e_i > 0, lt, (d <= 0).sum(axis=1) - 1)
                    else:
                        c[s:e] = (d < e_i[:, None]).sum(axis=1) - (e_i > 0)

        _run(block, _blocks(n, n * (len(parts) + len(subspaces) + 2)), workers)
        return out

    joint = np.hstack(parts) if len(parts) > 1 else parts[0]
    tree = cKDTree(joint)
    dist, idx = tree.query(joint, max(ks) + 1, p=np.inf, workers=workers)
    dist, idx = dist.reshape(n, -1), idx.reshape(n, -1)
    views = [np.hstack([parts[q] for q in sub]) if len(sub) > 1 else parts[sub[0]] for sub in subspaces]
    trees: dict[int, cKDTree] = {}
    for k, (eps, counts, ties) in zip(ks, out):
        eps[:] = dist[:, k]
        if ties is not None:
            zero = np.flatnonzero(eps == 0)
            if zero.size:
                ties[zero] = tree.query_ball_point(joint[zero], 0.0, p=np.inf, return_length=True) - 1
        for j, (c, v) in enumerate(zip(counts, views)):
            if mode == "ksg2":
                # neighbours' largest subspace distance (self may be displaced by a duplicate: same value)
                nb = v[idx[:, 1:k + 1]]
                r = np.abs(nb - v[:, None, :]).max(axis=(1, 2))
                strict = False
            else:
                r, strict = eps, True
            if v.shape[1] == 1:
                c[:] = count_sorted_1d(v[:, 0], r, strict)
                if mode == "mixed" and (r == 0).any():
                    c[:] = np.where(r == 0, count_sorted_1d(v[:, 0], r, False), c)
            else:
                if j not in trees:
                    trees[j] = cKDTree(v)
                radius = np.nextafter(r, 0) if strict else r
                got = trees[j].query_ball_point(v, radius, p=np.inf, return_length=True, workers=workers)
                got = np.asarray(got, dtype=np.int64) - 1
                # strict with r == 0: nothing is inside (lt); the ties at distance 0 (mixed)
                c[:] = np.where(r == 0, got if mode == "mixed" else 0, got) if strict else got
    return out


def _grid_counts(parts: Sequence[np.ndarray], subspaces: Sequence[Sequence[int]], ks: Sequence[int],
                 mode: str, out: list[Counts], workers: int) -> None:
    joint = np.hstack(parts) if len(parts) > 1 else parts[0]
    grid = _kernels.Grid(joint, _kernels.knn_scale(joint, max(ks)))
    dist, idx = grid.knn(max(ks), workers)
    views = [np.hstack([parts[q] for q in sub]) if len(sub) > 1 else parts[sub[0]] for sub in subspaces]
    grids: dict[int, _kernels.Grid] = {}
    for k, (eps, counts, ties) in zip(ks, out):
        eps[:] = dist[:, k - 1]
        zero = eps == 0
        if ties is not None and zero.any():
            ties[:] = np.where(zero, grid.count(np.zeros_like(eps), False, workers), 0)
        for j, (c, v) in enumerate(zip(counts, views)):
            if mode == "ksg2":
                r = np.abs(v[idx[:, :k]] - v[:, None, :]).max(axis=(1, 2))
                strict = False
            else:
                r, strict = eps, True
            if j not in grids:  # strip width: the median radius (one coordinate: no strips)
                pos = r[r > 0] if v.shape[1] > 1 else r[:0]
                grids[j] = _kernels.Grid(v, float(np.median(pos)) if pos.size else 0.0)
            c[:] = grids[j].count(r, strict, workers)
            if mode == "mixed" and (r == 0).any():  # a discrete atom: the ties at distance 0
                c[:] = np.where(r == 0, grids[j].count(r, False, workers), c)


def kth_distance(
    data: np.ndarray, query: np.ndarray | None, k: int, metric: str, *, neighbors: str, workers: int = 1
) -> np.ndarray:
    """Distance from each query point to its k-th nearest point of ``data`` (``query=None``: the
    points of ``data`` themselves, each excluding itself)."""
    q = data if query is None else query
    n = q.shape[0]
    path = choose(neighbors, max(n, data.shape[0]), data.shape[1], metric)
    if path == "grid" and query is None:
        return _kernels.Grid(data, _kernels.knn_scale(data, k)).knn(k, workers)[0][:, -1].copy()
    if path == "grid":  # queries from another sample: not a strip sweep
        path = _scipy_path(max(n, data.shape[0]), data.shape[1])
    if path == "tree":
        kk = k + 1 if query is None else k
        dist, _ = cKDTree(data).query(q, kk, p=_P[metric], workers=workers)
        return np.asarray(dist).reshape(n, -1)[:, -1].copy()
    out = np.zeros(n)

    def block(s: int, e: int) -> None:
        d = cdist(q[s:e], data, metric)
        if query is None:
            rows = np.arange(e - s)
            d[rows, rows + s] = np.inf
        out[s:e] = np.partition(d, k - 1, axis=1)[:, k - 1]

    _run(block, _blocks(n, 2 * data.shape[0]), workers)
    return out
