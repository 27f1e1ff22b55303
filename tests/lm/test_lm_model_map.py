"""Log-likelihood vectors (model map): KL estimates against exact KL, trained models separated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.lm import ByteModel
from entropykit.lm.loglik_vectors import double_centre, kl_from_loglik, loglik_matrix, model_map
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig


def test_double_centre_rows_and_columns_sum_to_zero() -> None:
    L = np.random.default_rng(0).normal(size=(5, 9))
    Q = double_centre(L)
    np.testing.assert_allclose(Q.sum(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Q.sum(axis=1), 0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10), st.integers(0, 2**31))
def test_kl_matrix_is_half_the_sample_variance_of_log_ratios(k: int, extra: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(k, k + extra)) * rng.uniform(0.1, 10)
    kl, se = kl_from_loglik(L)
    for i in range(k):
        for j in range(k):
            d = L[i] - L[j]
            scale = 1 + np.abs(L).max() ** 2
            assert kl[i, j] == pytest.approx(0.5 * np.var(d), rel=1e-9, abs=1e-12 * scale)
            c = d - d.mean()
            ref_var4 = max(np.mean(c**4) - np.var(d) ** 2, 0)  # (2 se)^2 N = m4 - v^2
            # compared before the square root: the matrix-product form of the 4th moment cancels digits
            # on the scale of max|L|^4, which a square root would blow up
            assert (2 * se[i, j]) ** 2 * d.size == pytest.approx(ref_var4, rel=1e-6, abs=1e-11 * scale**2)
    np.testing.assert_allclose(kl, kl.T, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_estimate_agrees_with_exact_kl_of_nearby_categorical_models(seed: int) -> None:
    """Models are categorical distributions over M texts near a base p0; probe texts ~ p0."""
    rng = np.random.default_rng(seed)
    m, eps, n = 40, 0.05, 40_000
    base = np.log(rng.dirichlet(np.ones(m)))
    logs = []
    for _ in range(4):
        lp = base + eps * rng.normal(size=m)
        logs.append(lp - np.logaddexp.reduce(lp))
    x = rng.choice(m, size=n, p=np.exp(base))
    kl, se = kl_from_loglik(np.array([lp[x] for lp in logs]))
    for i in range(4):
        for j in range(i + 1, 4):
            p, q = np.exp(logs[i]), np.exp(logs[j])
            exact = 0.5 * (np.sum(p * (logs[i] - logs[j])) + np.sum(q * (logs[j] - logs[i])))
            # sampling error (4 standard errors) plus the third-order term of the local expansion
            assert abs(kl[i, j] - exact) <= 4 * se[i, j] + 5 * eps**3, (i, j, kl[i, j], exact)


def _train(text: bytes, width: int, steps: int, seed: int) -> ByteModel:
    torch.manual_seed(seed)
    cfg = ByteGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=width)
    model = ByteGPT(cfg)
    data = torch.tensor(list(text), dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, data.numel() - 33, (16,), generator=g)
        x = torch.stack([data[j:j + 33] for j in i.tolist()])
        logits, _ = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ByteModel(model, name=f"w{width}s{seed}")


def test_map_separates_models_trained_on_different_data() -> None:
    """Two data mixes (mostly prose vs mostly sums) x two widths; probes from the even mix. The local
    approximation needs models that all know the probe distribution (far-apart models, e.g. trained
    on disjoint data, are dominated by their out-of-domain failures)."""
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park"]

    def mix(p_prose: float, n: int) -> bytes:
        parts = [" ".join(rng.choice(words, 8)) + ". " if rng.random() < p_prose
                 else "".join(f"{a}+{b}={a + b};" for a, b in rng.integers(0, 99, (2, 2))) + " "
                 for _ in range(n)]
        return "".join(parts).encode()

    mostly_prose, mostly_sums, even = mix(0.85, 200), mix(0.15, 200), mix(0.5, 100)
    models = [_train(mostly_prose, 16, 120, 1), _train(mostly_prose, 24, 120, 2),
              _train(mostly_sums, 16, 120, 3), _train(mostly_sums, 24, 120, 4)]
    probes = [even[i:i + 40] for i in range(0, 2400, 100)]
    mm = model_map(models, probes)
    assert mm.names == ["w16s1", "w24s2", "w16s3", "w24s4"]
    assert [n for n, _ in mm.nearest("w16s1", 1)] == ["w24s2"]
    assert [n for n, _ in mm.nearest("w16s3", 1)] == ["w24s4"]
    assert mm.kl[0, 1] < min(mm.kl[0, 2], mm.kl[0, 3]) and mm.kl[2, 3] < min(mm.kl[2, 0], mm.kl[2, 1])
    # PC1 splits the two data sources
    assert np.sign(mm.embedding[0, 0]) == np.sign(mm.embedding[1, 0]) != np.sign(mm.embedding[2, 0])
    # the stored matrix is the models' whole-text log-likelihoods (nats)
    lm, short = models[0], probes[0][:20]
    ids = torch.tensor([[256, *short]])
    with torch.no_grad():
        logp = torch.log_softmax(lm.module(ids[:, :-1])[0].double(), -1)
    ref = logp[0].gather(-1, ids[0, 1:, None]).sum().item()
    assert loglik_matrix(models[:2], [short, short])[0, 0] == pytest.approx(ref, rel=1e-5)
    assert loglik_matrix(models[:2], probes[:2]).shape == (2, 2)
    assert set(mm.to_dict()) >= {"names", "kl_nats", "embedding"}
    pytest.importorskip("matplotlib")
    assert mm.plot_png()[:4] == b"\x89PNG"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least as many texts as models"):
        kl_from_loglik(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="texts must number at least as many as models"):
        loglik_matrix(["a", "b", "c"], ["x"])
    with pytest.raises(ValueError, match="loglik must be finite"):
        double_centre([[0.0, np.nan], [1.0, 2.0]])
    with pytest.raises(ValueError, match="names must have one name per model"):
        model_map(loglik=np.zeros((2, 3)), names=["a"])
    mm = model_map(loglik=np.random.default_rng(0).normal(size=(3, 5)))
    with pytest.raises(ValueError, match="name must be one of"):
        mm.nearest("zzz")
