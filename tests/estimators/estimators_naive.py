"""Independent float64 O(N^2) references for the kNN estimators: plain loops over samples, full
sorts, no trees, no blocking; written from the papers' formulas (and Gao et al.'s reference code)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import digamma, gammaln


def cheb(a: np.ndarray, i: int) -> np.ndarray:
    return np.abs(a - a[i]).max(axis=1)


def ksg1(x: np.ndarray, y: np.ndarray, k: int) -> float:
    n = len(x)
    total = 0.0
    for i in range(n):
        dx, dy = cheb(x, i), cheb(y, i)
        d = np.maximum(dx, dy)
        d[i] = np.inf
        eps = np.sort(d)[k - 1]
        nx = sum(1 for j in range(n) if j != i and dx[j] < eps)
        ny = sum(1 for j in range(n) if j != i and dy[j] < eps)
        total += digamma(nx + 1) + digamma(ny + 1)
    return float(digamma(k) + digamma(n) - total / n)


def ksg2(x: np.ndarray, y: np.ndarray, k: int) -> float:
    n = len(x)
    total = 0.0
    for i in range(n):
        dx, dy = cheb(x, i), cheb(y, i)
        d = np.maximum(dx, dy)
        d[i] = np.inf
        nb = np.argsort(d, kind="stable")[:k]
        ex, ey = dx[nb].max(), dy[nb].max()
        nx = sum(1 for j in range(n) if j != i and dx[j] <= ex)
        ny = sum(1 for j in range(n) if j != i and dy[j] <= ey)
        total += digamma(nx) + digamma(ny)
    return float(digamma(k) - 1 / k + digamma(n) - total / n)


def cmi(x: np.ndarray, y: np.ndarray, z: np.ndarray, k: int) -> float:
    n = len(x)
    total = 0.0
    for i in range(n):
        dx, dy, dz = cheb(x, i), cheb(y, i), cheb(z, i)
        d = np.maximum(np.maximum(dx, dy), dz)
        d[i] = np.inf
        eps = np.sort(d)[k - 1]
        others = np.arange(n) != i
        nxz = np.sum(others & (np.maximum(dx, dz) < eps))
        nyz = np.sum(others & (np.maximum(dy, dz) < eps))
        nz = np.sum(others & (dz < eps))
        total += digamma(nxz + 1) + digamma(nyz + 1) - digamma(nz + 1)
    return float(digamma(k) - total / n)


def kl_entropy(x: np.ndarray, k: int, metric: str) -> float:
    n, d = x.shape
    logs = []
    for i in range(n):
        diff = x - x[i]
        dist = np.abs(diff).max(axis=1) if metric == "chebyshev" else np.sqrt((diff**2).sum(axis=1))
        dist[i] = np.inf
        logs.append(math.log(np.sort(dist)[k - 1]))
    vol = d * math.log(2) if metric == "chebyshev" else d / 2 * math.log(math.pi) - gammaln(d / 2 + 1)
    return float(digamma(n) - digamma(k) + vol + d * np.mean(logs))


def wkv(x: np.ndarray, y: np.ndarray, k: int) -> float:
    n, d = x.shape
    m = len(y)
    s = 0.0
    for i in range(n):
        rho = np.sqrt(((x - x[i]) ** 2).sum(axis=1))
        rho[i] = np.inf
        nu = np.sqrt(((y - x[i]) ** 2).sum(axis=1))
        s += math.log(np.sort(nu)[k - 1] / np.sort(rho)[k - 1])
    return d * s / n + math.log(m / (n - 1))


def mixed_ksg_gao(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Gao et al.'s ``Mixed_KSG`` (their reference code), with loops instead of KD-trees."""
    n = len(x)
    xy = np.hstack([x, y])
    ans = 0.0
    for i in range(n):
        dj = cheb(xy, i)
        rho = np.sort(dj)[k]  # k + 1 smallest including the point itself
        dx, dy = cheb(x, i), cheb(y, i)
        if rho == 0:
            kp, nx, ny = np.sum(dj <= 1e-15), np.sum(dx <= 1e-15), np.sum(dy <= 1e-15)
        else:
            kp, nx, ny = k, np.sum(dx < rho), np.sum(dy < rho)  # both include the point itself
        ans += (digamma(kp) + math.log(n) - digamma(nx) - digamma(ny)) / n
    return float(ans)
