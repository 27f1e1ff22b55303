"""kNN estimators against independent references: naive O(N^2) float64 code (exact agreement),
closed forms (Gaussian, uniform, exponential), scikit-learn, SciPy, infomeasure; and properties."""

from __future__ import annotations

import math

import estimators_naive as naive
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import estimators as est
from entropykit.estimators import _kernels, _neighbors


def gaussian_pair(n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed).standard_normal((2, n))
    return g[0], rho * g[0] + math.sqrt(1 - rho**2) * g[1]


def multinormal(n: int, dx: int, dy: int, off: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    d = dx + dy
    s = np.full((d, d), off)
    np.fill_diagonal(s, 1.0)
    z = np.random.default_rng(seed).multivariate_normal(np.zeros(d), s, size=n)
    true = 0.5 * math.log(np.linalg.det(s[:dx, :dx]) * np.linalg.det(s[dx:, dx:]) / np.linalg.det(s))
    return z[:, :dx], z[:, dx:], true


# --------------------------------------------------------------------------- exact agreement


@pytest.mark.parametrize("neighbors", ["grid", "tree", "brute"])
@pytest.mark.parametrize(("dx", "dy", "k"), [(1, 1, 3), (2, 1, 1), (3, 2, 4)])
def test_ksg_matches_naive_exactly(neighbors: str, dx: int, dy: int, k: int) -> None:
    x, y, _ = multinormal(150, dx, dy, 0.4, seed=dx + 10 * k)
    xs, ys = (x - x.mean(0)) / x.std(0), (y - y.mean(0)) / y.std(0)
    kw = {"k": k, "jitter": 0.0, "neighbors": neighbors}
    assert est.mutual_info_ksg(x, y, **kw) == pytest.approx(naive.ksg1(xs, ys, k), abs=1e-12)
    assert est.mutual_info_ksg(x, y, variant=2, **kw) == pytest.approx(naive.ksg2(xs, ys, k), abs=1e-12)


@pytest.mark.parametrize("neighbors", ["grid", "tree", "brute"])
def test_cmi_matches_naive_exactly(neighbors: str) -> None:
    g = np.random.default_rng(3).standard_normal((4, 120))
    x, z = g[0], np.c_[g[1], g[2]]
    y = x + g[1] + g[3]
    ref = naive.cmi(x[:, None], y[:, None], z, 3)
    got = est.conditional_mutual_info(x, y, z, standardize=False, jitter=0.0, neighbors=neighbors)
    assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("metric", ["chebyshev", "euclidean"])
@pytest.mark.parametrize("neighbors", ["grid", "tree", "brute"])
def test_entropy_matches_naive_exactly(metric: str, neighbors: str) -> None:
    x = np.random.default_rng(1).standard_normal((200, 3)) * [1.0, 2.0, 0.5]
    ref = naive.kl_entropy(x, 2, metric)
    got = est.entropy_knn(x, k=2, metric=metric, standardize=False, jitter=0.0, neighbors=neighbors)
    assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("neighbors", ["grid", "tree", "brute"])
def test_kl_divergence_matches_naive_exactly(neighbors: str) -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((150, 2)), rng.standard_normal((170, 2)) + 0.5
    got = est.kl_divergence_knn(x, y, k=2, standardize=False, jitter=0.0, neighbors=neighbors)
    assert got == pytest.approx(naive.wkv(x, y, 2), abs=1e-12)


@pytest.mark.parametrize("neighbors", ["grid", "tree", "brute"])
def test_mixed_matches_gao_reference_code(neighbors: str) -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, size=200).astype(float)
    y = np.where(rng.random(200) < 0.3, 0.0, x + rng.standard_normal(200))  # a discrete atom at 0
    ref = naive.mixed_ksg_gao(x[:, None], y[:, None], 3)
    got = est.mutual_info_mixed(x, y, standardize=False, neighbors=neighbors)
    assert got == pytest.approx(ref, abs=1e-12)


# --------------------------------------------------------------------------- anchors


@pytest.mark.parametrize(("rho", "k", "seed"), [(0.6, 3, 0), (0.9, 5, 1), (0.3, 1, 3), (0.3, 1, 2)])
def test_ksg_agrees_with_scikit_learn(rho: float, k: int, seed: int) -> None:
    sk = pytest.importorskip("sklearn.feature_selection")
    x, y = gaussian_pair(800, rho, seed)
    ref = sk.mutual_info_regression(x[:, None], y, n_neighbors=k, random_state=seed)[0]
    # scikit-learn scales by the std, adds 1e-10 noise and clips at 0; we report negatives as they are
    ours = est.mutual_info_ksg(x, y, k=k)
    assert max(ours, 0.0) == pytest.approx(ref, abs=1e-9)


def test_ksg_agrees_with_infomeasure() -> None:
    im = pytest.importorskip("infomeasure")
    x, y, _ = multinormal(400, 2, 2, 0.5, seed=5)
    ref = im.mutual_information(x, y, approach="ksg", k=4, noise_level=0, base="e")
    assert est.mutual_info_ksg(x, y, k=4, standardize=False, jitter=0.0) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize(
    ("draw", "truth"),
    [
        (lambda r: r.standard_normal(3000), 0.5 * math.log(2 * math.pi * math.e)),
        (lambda r: r.uniform(0, 3, 3000), math.log(3)),
        (lambda r: r.exponential(2.0, 3000), 1 + math.log(2.0)),
    ],
)
def test_entropy_1d_agrees_with_scipy_and_truth(draw, truth: float) -> None:
    from scipy.stats import differential_entropy

    x = draw(np.random.default_rng(0))
    ours = est.entropy_knn(x, k=3)
    assert ours == pytest.approx(truth, abs=0.05)
    assert ours == pytest.approx(differential_entropy(x), abs=0.06)


# --------------------------------------------------------------------------- closed forms


def test_entropy_of_correlated_gaussian() -> None:
    cov = np.array([[1.0, 0.5, 0.2], [0.5, 2.0, 0.3], [0.2, 0.3, 0.5]])
    x = np.random.default_rng(0).multivariate_normal(np.zeros(3), cov, size=4000)
    truth = 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov))
    assert est.entropy_knn(x, k=3) == pytest.approx(truth, abs=0.08)
    assert est.entropy_knn(x, k=3, metric="euclidean", base=2) == pytest.approx(truth / math.log(2), abs=0.12)


def test_entropy_uniform_cube() -> None:
    x = np.random.default_rng(1).uniform(0, 2, size=(4000, 2))
    assert est.entropy_knn(x, standardize=False) == pytest.approx(2 * math.log(2), abs=0.05)


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize(("dx", "dy", "off"), [(1, 1, 0.75), (2, 2, 0.4), (3, 2, 0.3)])
def test_ksg_gaussian_truth(variant: int, dx: int, dy: int, off: float) -> None:
    x, y, truth = multinormal(3000, dx, dy, off, seed=7)
    assert est.mutual_info_ksg(x, y, variant=variant) == pytest.approx(truth, abs=0.05)


def test_ksg_ensemble_and_lnc() -> None:
    x, y = gaussian_pair(500, 0.9999999, 0)
    truth = -0.5 * math.log(1 - 0.9999999**2)  # 7.71 nats: the strong dependence LNC is made for
    plain = est.mutual_info_ksg(x, y, k=3)  # saturates near log(N / k)
    lnc = est.mutual_info_ksg(x, y, k=3, lnc_alpha=0.25)
    assert abs(lnc - truth) < 0.25 * abs(plain - truth)
    with pytest.raises(ValueError, match="lnc_alpha"):
        est.mutual_info_ksg(np.c_[x, y], np.c_[y, x], k=3, lnc_alpha=0.25)  # k < joint dimension 4
    ens = est.mutual_info_ksg(x, y, k=[3, 5])
    assert ens == pytest.approx((plain + est.mutual_info_ksg(x, y, k=5)) / 2, abs=1e-12)


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize("neighbors", ["grid", "tree", "brute"])
def test_ksg_ensemble_is_the_mean_of_single_k(variant: int, neighbors: str) -> None:
    x, y, _ = multinormal(300, 3, 2, 0.4, seed=9)
    kw = {"variant": variant, "neighbors": neighbors}
    singles = [est.mutual_info_ksg(x, y, k=k, **kw) for k in (1, 4, 2)]
    assert est.mutual_info_ksg(x, y, k=[1, 4, 2], **kw) == pytest.approx(np.mean(singles), abs=1e-12)
    assert est.mutual_info_ksg(x, y, k=[1, 4, 2], neighbors="tree" if neighbors == "brute" else "brute",
                               variant=variant) == pytest.approx(np.mean(singles), abs=1e-12)


def test_cca_projection_is_a_lower_bound_exact_for_low_rank_gaussian_dependence() -> None:
    x, y, truth = multinormal(3000, 8, 8, 0.5, seed=1)  # one canonical pair carries all the MI
    plain = est.mutual_info_ksg(x, y)
    cca = est.mutual_info_ksg(x, y, cca_dims=1)
    assert abs(cca - truth) < 0.05 < abs(plain - truth)
    # pairs: the MI is spread over 4 canonical pairs; one of them is a lower bound
    s = np.eye(8)
    for i in range(4):
        s[i, 4 + i] = s[4 + i, i] = 0.6
    z = np.random.default_rng(2).multivariate_normal(np.zeros(8), s, size=3000)
    one = -0.5 * math.log(1 - 0.36)
    assert est.mutual_info_ksg(z[:, :4], z[:, 4:], cca_dims=1) == pytest.approx(one, abs=0.04)
    # invariance: the projection does not care how x and y are linearly mixed
    a = np.random.default_rng(3).standard_normal((8, 8))
    assert est.mutual_info_ksg(x @ a, y, cca_dims=1) == pytest.approx(cca, abs=0.02)
    with pytest.raises(ValueError, match="cca_dims must be an int in"):
        est.mutual_info_ksg(x, y[:, :2], cca_dims=3)


def test_conditional_mi_truth_and_markov_chain() -> None:
    g = np.random.default_rng(0).standard_normal((3, 3000))
    z = g[0]
    x, y = z + g[1], z + g[2]  # X - Z - Y: I(X;Y|Z) = 0, I(X;Y) = log(4/3)/2 > 0
    assert abs(est.conditional_mutual_info(x, y, z)) < 0.02
    assert est.mutual_info_ksg(x, y) == pytest.approx(0.5 * math.log(4 / 3), abs=0.04)


def test_kl_divergence_gaussians() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.normal(0, 1, (3000, 2)), rng.normal(0, 1, (3000, 2)) * [1.5, 1.0] + [0.5, 0.0]
    s2 = 1.5**2  # KL(N(0,I) || N((0.5,0), diag(2.25,1)))
    truth = 0.5 * (1 / s2 + 0.25 / s2 - 1 + math.log(s2))
    assert est.kl_divergence_knn(p, q, k=3) == pytest.approx(truth, abs=0.05)
    assert abs(est.kl_divergence_knn(p, rng.normal(0, 1, (3000, 2)), k=3)) < 0.05


def test_mixed_discrete_and_continuous() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, 3000).astype(float)
    y = x + rng.standard_normal(3000)  # binary X, Gaussian mixture Y
    # truth by numerical integration of H(Y) - H(Y|X)
    t = np.linspace(-8, 9, 200001)
    py = 0.5 * (np.exp(-t**2 / 2) + np.exp(-(t - 1) ** 2 / 2)) / math.sqrt(2 * math.pi)
    hy = -np.sum(py * np.log(py)) * (t[1] - t[0])
    truth = hy - 0.5 * math.log(2 * math.pi * math.e)
    assert est.mutual_info_mixed(x, y, k=5) == pytest.approx(truth, abs=0.03)
    assert est.mutual_info_mixed(x, x) == pytest.approx(math.log(2), abs=1e-3)


def test_transfer_entropy_direction_and_lag() -> None:
    rng = np.random.default_rng(1)
    s = rng.standard_normal(2002)
    x = np.r_[0.0, 0.0, s[:-2]] + 0.5 * rng.standard_normal(2002)  # x_t = s_{t-2} + noise
    assert est.transfer_entropy(s, x, lag=2) > 0.5
    assert abs(est.transfer_entropy(s, x, lag=1)) < 0.05
    assert abs(est.transfer_entropy(x, s, lag=2)) < 0.05


def test_permutation_null_is_centred() -> None:
    x, y = gaussian_pair(400, 0.0, 0)
    r = est.permutation_test(est.mutual_info_ksg, x, y, n_permutations=30, random_state=1)
    assert abs(r.null_mean) < 3 * r.null_std + 0.01
    dep = est.permutation_test(est.mutual_info_ksg, *gaussian_pair(400, 0.5, 0), n_permutations=30)
    assert dep.p_value == pytest.approx(1 / 31) and dep.estimate > dep.null.max()


# --------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(12, 60), dx=st.integers(1, 3), dy=st.integers(1, 3),
       k=st.integers(1, 5), ties=st.booleans())
def test_ksg_properties(seed: int, n: int, dx: int, dy: int, k: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, dx)), rng.standard_normal((n, dy))
    if ties:  # integer-valued data: many ties
        x, y = np.round(2 * x), np.round(2 * y)
    x[:, 0] += np.arange(n) % 2  # no constant column
    y[:, 0] += np.arange(n) % 3
    # raw values (standardising a permuted copy rounds differently, which may reorder exact ties)
    kw = {"k": k, "jitter": 0.0, "standardize": False}
    raw = est.mutual_info_ksg(x, y, **kw)
    perm = rng.permutation(n)
    assert est.mutual_info_ksg(x[perm], y[perm], **kw) == pytest.approx(raw, abs=1e-12)  # sample order
    assert est.mutual_info_ksg(y, x, **kw) == pytest.approx(raw, abs=1e-12)  # symmetry
    kw = {"k": k, "jitter": 0.0}
    base = est.mutual_info_ksg(x, y, **kw)
    scale = 2.0 ** rng.integers(-5, 6, size=dx) * rng.choice([-1, 1], size=dx)
    assert est.mutual_info_ksg(x * scale, y, **kw) == pytest.approx(base, abs=1e-12)  # scale-free
    assert est.mutual_info_ksg(x, y, neighbors="brute", **kw) == pytest.approx(base, abs=1e-12)
    if not ties:
        b2 = est.mutual_info_ksg(x, y, variant=2, **kw)
        assert est.mutual_info_ksg(x, y, variant=2, neighbors="brute", **kw) == pytest.approx(b2, abs=1e-12)
    assert est.mutual_info_ksg(x, y, neighbors="tree", **kw) == pytest.approx(base, abs=1e-12)
    if not ties:
        assert est.mutual_info_ksg(x, y, variant=2, neighbors="tree", **kw) == pytest.approx(b2, abs=1e-12)
    for nb in ("grid", "tree"):
        assert est.mutual_info_mixed(x, y, k=k, neighbors=nb) == pytest.approx(
            est.mutual_info_mixed(x, y, k=k, neighbors="brute"), abs=1e-12)


@pytest.mark.skipif(not _kernels.available(), reason="numba not installed")
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 60), d=st.integers(1, 14), k=st.integers(1, 4),
       h=st.sampled_from([0.0, 0.1, 0.7, 3.0]), ties=st.booleans(), strict=st.booleans())
def test_grid_kernels_match_brute_force(seed: int, n: int, d: int, k: int, h: float, ties: bool,
                                        strict: bool) -> None:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d))
    if ties:
        v = np.round(v)
    dist = np.abs(v[:, None, :] - v[None, :, :]).max(axis=2)
    np.fill_diagonal(dist, np.inf)
    grid = _kernels.Grid(v, h)
    k = min(k, n - 1)
    got_d, got_i = grid.knn(k, workers=2 if seed % 2 else 1)
    assert np.array_equal(got_d, np.sort(dist, axis=1)[:, :k])
    assert np.array_equal(np.take_along_axis(dist, got_i, axis=1), got_d)  # indices of those distances
    assert (got_i != np.arange(n)[:, None]).all()
    r = rng.choice([0.0, 0.5, 1.0, 2.0], size=n) if ties else rng.uniform(0, 2, n)
    inside = dist < r[:, None] if strict else dist <= r[:, None]
    assert np.array_equal(grid.count(r, strict, workers=2 if seed % 3 else 1), inside.sum(axis=1))


@pytest.mark.skipif(not _kernels.available(), reason="numba not installed")
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(40, 400), d=st.integers(2, 20), k=st.integers(1, 6),
       h=st.sampled_from([0.0, 0.2, 0.8, 4.0]), ties=st.sampled_from([None, 1.0, 0.25]),
       dup=st.booleans(), strict=st.booleans())
def test_block_kernels_match_ckdtree(seed: int, n: int, d: int, k: int, h: float, ties: float | None,
                                     dup: bool, strict: bool) -> None:
    """The block kNN (32 candidates at a time, given up every 8 coordinates) and the run-wise counts
    against SciPy's cKDTree (max-norm): several blocks per strip side, up to 20 coordinates (the
    give-up check fires from 9), correlated columns, rounded values (ties) and duplicated rows."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d)) @ (np.eye(d) + 0.5 * rng.standard_normal((d, d)))
    if ties is not None:
        v = np.round(v / ties) * ties
    if dup:
        v[: n // 4] = v[n // 4: 2 * (n // 4)]
    grid = _kernels.Grid(v, h)
    tree = cKDTree(v)
    want_d = tree.query(v, k + 1, p=np.inf)[0].reshape(n, -1)[:, 1:]
    got_d, got_i = grid.knn(k, workers=2 if seed % 2 else 1)
    assert np.array_equal(got_d, want_d)
    assert np.array_equal(np.abs(v[got_i] - v[:, None, :]).max(axis=2), got_d)  # indices of those
    assert (got_i != np.arange(n)[:, None]).all()
    r = got_d[:, -1] * rng.choice([0.0, 0.5, 1.0, 1.0, 2.0], size=n)  # radii at, below and above eps
    if strict:
        got = tree.query_ball_point(v, np.nextafter(r, 0), p=np.inf, return_length=True) - 1
        want = np.where(r > 0, got, 0)
    else:
        want = tree.query_ball_point(v, r, p=np.inf, return_length=True) - 1
    assert np.array_equal(grid.count(r, strict, workers=2 if seed % 3 else 1), want)


@pytest.mark.skipif(not _kernels.available(), reason="numba not installed")
@pytest.mark.parametrize("ties", [False, True])
def test_galloping_1d_counts_match_binary_search(ties: bool) -> None:
    """The 1-D count gallops from the previous point's window edges: radii that jump by orders of
    magnitude between neighbouring points (0, 1e-9, 0.01, 10), ties, and row blocks split over
    threads must give the same counts as independent binary searches."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal(3000)
    if ties:
        v = np.round(v, 1)
    r = rng.choice([0.0, 1e-9, 0.01, 0.3, 10.0], size=v.size)
    grid = _kernels.Grid(v[:, None], 0.0)
    for strict in (True, False):
        want = _neighbors.count_sorted_1d(v, r, strict)
        for workers in (1, 3):
            assert np.array_equal(grid.count(r, strict, workers), want)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(-6, 6) | st.floats(-3, 3, allow_nan=False), min_size=2, max_size=40),
       radii=st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 1e-9]), min_size=40, max_size=40),
       strict=st.booleans())
def test_sorted_counts_match_brute(values: list[float], radii: list[float], strict: bool) -> None:
    v = np.array(values, dtype=float)
    r = np.array(radii[: v.size])
    d = np.abs(v[:, None] - v[None, :])
    inside = d < r[:, None] if strict else d <= r[:, None]
    np.fill_diagonal(inside, False)
    assert np.array_equal(_neighbors.count_sorted_1d(v, r, strict), inside.sum(axis=1))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), d=st.integers(1, 3), j=st.integers(-4, 4))
def test_entropy_scale_and_shift(seed: int, d: int, j: int) -> None:
    x = np.random.default_rng(seed).standard_normal((80, d))
    h = est.entropy_knn(x, standardize=False, jitter=0.0)
    scaled = est.entropy_knn(x * 2.0**j + 3.0, standardize=False, jitter=0.0)
    assert scaled == pytest.approx(h + d * j * math.log(2), abs=1e-6)
    assert est.entropy_knn(x, jitter=0.0) == pytest.approx(  # standardising adds back sum log std
        est.entropy_knn((x - x.mean(0)) / x.std(0), standardize=False, jitter=0.0) + np.log(x.std(0)).sum(),
        abs=1e-9)


def test_torch_and_lists_are_accepted_and_seeded_runs_reproduce() -> None:
    x, y = gaussian_pair(300, 0.5, 0)
    a = est.mutual_info_ksg(x, y)
    assert est.mutual_info_ksg(torch.from_numpy(x).float().double(), torch.from_numpy(y)) == a
    assert est.mutual_info_ksg(x.tolist(), y.tolist()) == a
    xt, yt = np.round(x), np.round(y)  # ties: the seeded jitter decides, reproducibly
    assert est.mutual_info_ksg(xt, yt, random_state=5) != est.mutual_info_ksg(xt, yt, random_state=6)
    assert est.mutual_info_ksg(xt, yt, random_state=5) == est.mutual_info_ksg(xt, yt, random_state=5)
    assert est.mutual_info_ksg(x, y, base=2) == pytest.approx(a / math.log(2))
    assert est.mutual_info_ksg(x, y, workers=2, neighbors="brute") == pytest.approx(a, abs=1e-12)
    assert est.mutual_info_ksg(x, y, workers=2, neighbors="tree") == pytest.approx(a, abs=1e-12)


def test_negative_estimates_are_not_clipped() -> None:
    vals = [est.mutual_info_ksg(*gaussian_pair(200, 0.0, s)) for s in range(8)]
    assert min(vals) < 0


def test_registry_lists_callables_with_their_parameters() -> None:
    import inspect

    for name, m in est.METHODS.items():
        assert m.name == name and callable(m.fn)
        sig = inspect.signature(m.fn)
        assert tuple(sig.parameters)[: len(m.inputs)] == m.inputs
        assert set(m.params) <= set(sig.parameters), name
