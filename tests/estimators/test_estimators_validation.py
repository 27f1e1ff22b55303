"""Bad input: clear TypeError/ValueError naming the argument and what was received."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from entropykit import estimators as est

X = np.random.default_rng(0).standard_normal((30, 2))
Y = np.random.default_rng(1).standard_normal((30, 1))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: est.mutual_info_ksg(X, Y[:20]), ValueError, "x and y must have the same number of samples"),
        (lambda: est.mutual_info_ksg(X, Y, k=30), ValueError, "k must be at most n_samples - 1 = 29"),
        (lambda: est.mutual_info_ksg(X, Y, k=0), ValueError, "k must be an int >= 1"),
        (lambda: est.mutual_info_ksg(X, Y, k=2.5), TypeError, "k must be an int"),
        (lambda: est.mutual_info_ksg(X, Y, k=[]), ValueError, "non-empty"),
        (lambda: est.mutual_info_ksg(np.where(X > 1, np.nan, X), Y), ValueError, "x must be finite, got nan"),
        (lambda: est.mutual_info_ksg(X, np.full(30, np.inf)), ValueError, "y must be finite, got inf"),
        (lambda: est.mutual_info_ksg(np.c_[X, np.ones(30)], Y), ValueError, "column 2 constant"),
        (lambda: est.mutual_info_ksg(X, Y, variant=3), ValueError, "variant must be one of 1, 2, got 3"),
        (lambda: est.mutual_info_ksg(X, Y, base=1), ValueError, "base must be a positive number other"),
        (lambda: est.mutual_info_ksg(X, Y, base=-2), ValueError, "base must be a positive"),
        (lambda: est.mutual_info_ksg(X, Y, neighbors="ball"), ValueError, "neighbors must be one of"),
        (lambda: est.mutual_info_ksg(X, Y, workers=0), ValueError, "workers must be"),
        (lambda: est.mutual_info_ksg(X, Y, jitter=-1), ValueError, "jitter must be"),
        (lambda: est.mutual_info_ksg(X, Y, random_state="a"), TypeError, "random_state must be"),
        (lambda: est.mutual_info_ksg(X, Y, lnc_alpha=1.5), ValueError, "lnc_alpha must be"),
        (lambda: est.mutual_info_ksg(X[None], Y), ValueError, r"x must have shape \(n_samples,\)"),
        (lambda: est.mutual_info_ksg(X.astype(complex), Y), TypeError, "x must be an array of real numbers"),
        (lambda: est.mutual_info_ksg(["a"] * 30, Y), TypeError, "x must be an array of real numbers"),
        (lambda: est.mutual_info_ksg(np.zeros((30, 0)), Y), ValueError, "at least one feature"),
        (lambda: est.mutual_info_ksg(X[:1], Y[:1]), ValueError, "x must have at least 2 samples, got 1"),
        (lambda: est.entropy_knn(X, metric="cosine"), ValueError, "metric must be one of"),
        (lambda: est.entropy_knn(np.zeros((10, 1)), standardize=False, jitter=0.0), ValueError, "duplicate"),
        (lambda: est.kl_divergence_knn(X, Y), ValueError, "y must have the same number of features as x"),
        (lambda: est.kl_divergence_knn(X, X[:2], k=3), ValueError, "number of y samples 2"),
        (lambda: est.conditional_mutual_info(X, Y, Y[:5]), ValueError, "x and z must have the same number"),
        (lambda: est.transfer_entropy(Y, Y, lag=0), ValueError, "lag must be an int >= 1"),
        (lambda: est.transfer_entropy(Y[:3], Y[:3], lag=2), ValueError, "longer than the embedding window"),
        (lambda: est.entropy_discrete([0, 1], method="nsbx"), ValueError, "method must be one of"),
        (lambda: est.permutation_entropy(X), ValueError, "one-dimensional series"),
        (lambda: est.permutation_entropy([1.0, 2.0], order=3), ValueError, "more than"),
        (lambda: est.permutation_entropy([1.0] * 9, weighted=True), ValueError, "x must vary"),
        (lambda: est.permutation_entropy(Y, order=9), ValueError, r"order must be an int in \[2, 8\]"),
        (lambda: est.permutation_test(3, X, Y), TypeError, "estimator must be callable"),
    ],
)
def test_bad_input_is_named(call, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_tensors_of_any_float_dtype_and_ints_are_accepted() -> None:
    xt = torch.from_numpy(X)
    a = est.entropy_knn(xt)
    assert a == est.entropy_knn(X)
    assert np.isfinite(est.entropy_knn(xt.to(torch.bfloat16)))
    assert est.entropy_discrete(torch.tensor([0, 1, 1, 2])) == est.entropy_discrete([0, 1, 1, 2])
