"""Mirostat (v1, v2) and the entropix-style adaptive sampler."""

from __future__ import annotations

import math

import pytest
import torch

from entropykit import decoding as d
from entropykit.decoding.adaptive import BRANCHES

LN2 = math.log(2)


def zipf_logits(exponents: list[float], v: int) -> torch.Tensor:
    ranks = torch.arange(1, v + 1, dtype=torch.float64)
    return torch.stack([-s * torch.log(ranks) for s in exponents])


def entropy_bits(z: torch.Tensor) -> torch.Tensor:
    lp = torch.log_softmax(z, -1)
    return -(lp.exp() * lp).sum(-1) / LN2


@pytest.mark.parametrize("version", [1, 2])
def test_mirostat_converges_on_zipf(version: int) -> None:
    # Tolerance: |mean surprise - tau| <= 0.1 bits over 1200 steps (and over the last 600), on
    # Zipf rows with exponents 1.0-1.3 over 2000 tokens, jittered each step, tau = 4 bits.
    v, tau, n = 2000, 4.0, 1200
    base = zipf_logits([1.0, 1.1, 1.2, 1.3], v)
    assert bool((entropy_bits(base) > tau + 1).all())  # tau is reachable
    g = torch.Generator().manual_seed(version)
    m = d.Mirostat(version=version, tau=tau, eta=0.1)
    perm = torch.randperm(v, generator=g)
    s = []
    for _ in range(n):
        x = base + 0.2 * torch.randn(base.shape, generator=g, dtype=torch.float64)
        m(None, x[:, perm].float(), g)
        assert m.last_surprise is not None
        s.append(m.last_surprise)
    surprise = torch.stack(s, 1)
    assert torch.allclose(surprise.mean(1), torch.full((4,), tau, dtype=torch.float64), atol=0.1)
    assert torch.allclose(surprise[:, n // 2 :].mean(1), torch.full((4,), tau, dtype=torch.float64), atol=0.1)
    assert m.mu is not None and bool((m.mu.abs() < 30).all())


def naive_v2(z: torch.Tensor, mu: float, u: float) -> tuple[int, float]:
    """llama.cpp's v2 step on one row, written as loops in float64."""
    p = torch.softmax(z.double(), -1).tolist()
    order = sorted(range(len(p)), key=lambda i: -p[i])
    keep = [i for i in order if -math.log2(p[i]) <= mu] if p else []
    keep = keep or [order[0]]
    tot = sum(p[i] for i in keep)
    q = {i: p[i] / tot for i in keep}
    # inverse CDF in token-index order, as sample_from_logits does
    acc = 0.0
    for i in sorted(keep):
        acc += q[i]
        if u * 1.0 < acc:
            return i, -math.log2(q[i])
    last = max(keep)
    return last, -math.log2(q[last])


def test_mirostat_v2_step_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 30, generator=g) * 3
    m = d.Mirostat(version=2, tau=2.0, eta=0.3)
    mu = [4.0, 4.0, 4.0]
    for _ in range(20):
        state = g.get_state()
        u = torch.rand(3, 1, generator=g, dtype=torch.float64).flatten().tolist()
        g.set_state(state)
        step = m(None, z, g)
        for r in range(3):
            tok, s = naive_v2(z[r], mu[r], u[r])
            assert int(step.tokens[r]) == tok
            assert math.isclose(float(m.last_surprise[r]), s, rel_tol=1e-9, abs_tol=1e-9)
            mu[r] -= 0.3 * (s - 2.0)
        assert torch.allclose(m.mu, torch.tensor(mu, dtype=torch.float64))


def test_mirostat_v1_k_formula() -> None:
    # exact Zipf(1.5): s_hat recovers the exponent, k follows the closed form
    v = 1000
    z = zipf_logits([1.5], v).float()
    m = d.Mirostat(version=1, tau=3.0, m=100)
    step = m(None, z, torch.Generator().manual_seed(0))
    eps = 0.5
    k = ((eps * 2**6.0) / (1 - v**-eps)) ** (1 / 1.5)
    assert int(step.kept[0]) == int(k)


def test_mirostat_rows_never_share_state() -> None:
    g_a, g_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    base = zipf_logits([1.1], 500).float()
    other_1, other_2 = torch.randn(1, 500) * 4, torch.zeros(1, 500)
    m_a, m_b = d.Mirostat(tau=3.0), d.Mirostat(tau=3.0)
    for _ in range(60):
        sa = m_a(None, torch.cat([base, other_1]), g_a)
        sb = m_b(None, torch.cat([base, other_2]), g_b)
        assert int(sa.tokens[0]) == int(sb.tokens[0])
    assert m_a.mu is not None and m_b.mu is not None
    assert float(m_a.mu[0]) == float(m_b.mu[0]) and float(m_a.mu[1]) != float(m_b.mu[1])


def test_mirostat_state_persists_and_resets() -> None:
    m = d.Mirostat(tau=3.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 50, generator=g)
    m(None, x, g)
    assert m.mu is not None
    mu1 = m.mu.clone()
    m(None, x, g)
    assert not torch.equal(m.mu, torch.full((2,), 6.0, dtype=torch.float64)) and not torch.equal(m.mu, mu1)
    with pytest.raises(ValueError, match="reset"):
        m(None, torch.randn(3, 50), g)
    m.reset()
    m(None, torch.randn(3, 50), g)
    assert m.mu.shape == (3,)
    with pytest.raises(ValueError, match="version"):
        d.Mirostat(version=3)
    with pytest.raises(ValueError, match="tau"):
        d.Mirostat(tau=-1.0)


def test_mirostat_on_bundled_model() -> None:
    # Works with placeholder or trained weights: tau = 1.5 bits is below the model's entropy in both.
    from entropykit.lm import load_model

    model = load_model("bytegpt-small")
    m = d.Mirostat(version=2, tau=1.5, eta=0.2)
    seen: list[torch.Tensor] = []

    def recording(ids: torch.Tensor, scores: torch.Tensor, g: torch.Generator | None) -> d.SamplerStep:
        step = m(ids, scores, g)
        assert m.last_surprise is not None
        seen.append(m.last_surprise)
        return step

    n = 200
    out = d.generate(
        model,
        torch.tensor([[256, *b"The "]] * 2),
        sampler=recording,
        max_new_tokens=n,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.steps == n
    # Tolerance 0.3 bits after 200 tokens (mean surprise = tau + (mu_0 - mu_n) / (eta n)).
    mean = torch.stack(seen, 1).mean(1)
    assert torch.allclose(mean, torch.full((2,), 1.5, dtype=torch.float64), atol=0.3), mean


def test_entropix_branches() -> None:
    s = d.EntropixSampler(clarify_token=7)
    g = torch.Generator().manual_seed(0)
    v = 256
    peaked = torch.full((1, v), -30.0)
    peaked[0, 3] = 10.0  # H ~ 0, V ~ 0 -> argmax
    flat = torch.zeros(1, v)  # H = 8 bits, V = 0 -> clarify
    two = torch.full((1, v), -30.0)
    two[0, :2] = 0.0
    two[0, 2:] = -4.0  # spread surprisal: high varentropy
    rows = torch.cat([peaked, flat, two, torch.randn(1, v, generator=g)])
    step = s(torch.tensor([[1], [1], [1], [1]]), rows, g)
    names = [BRANCHES[i] for i in s.last_branch.tolist()]
    assert names[0] == "argmax" and int(step.tokens[0]) == 3 and int(step.kept[0]) == 1
    assert names[1] == "clarify" and int(step.tokens[1]) == 7
    h, var = float(s.last_entropy_bits[2]), float(s.last_varentropy_bits2[2])
    assert names[2] == ("explore" if h < 5 and var > 5 else "resample" if h > 5 and var > 5 else "adaptive")
    # after the clarify token, the clarify branch samples hotter instead of repeating it
    step2 = s(torch.tensor([[7]]), flat, g)
    assert int(step2.tokens[0]) != 7 or float(step2.temperature[0]) > 0
    assert math.isclose(float(step2.temperature[0]), min(1.5, 0.666 * 1.3), rel_tol=1e-6)
    # thresholds are parameters: raise the argmax thresholds and the flat row becomes greedy
    s2 = d.EntropixSampler(argmax_entropy=9.0, argmax_varentropy=1.0)
    s2(None, flat, g)
    assert BRANCHES[int(s2.last_branch[0])] == "argmax"


def test_entropix_statistics_match_measures() -> None:
    from entropykit import measures

    s = d.EntropixSampler()
    x = torch.randn(4, 100, generator=torch.Generator().manual_seed(1)) * 2
    s(None, x, torch.Generator().manual_seed(0))
    assert torch.allclose(s.last_entropy_bits, measures.entropy(x, base=2), atol=1e-5)
    lp = torch.log_softmax(x.double(), -1) / LN2
    h = -(lp.exp2() * lp).sum(-1, keepdim=True)
    assert torch.allclose(s.last_varentropy_bits2.double(), (lp.exp2() * (lp + h) ** 2).sum(-1), atol=1e-4)
    with pytest.raises(ValueError, match="top_k"):
        d.EntropixSampler(top_k=0)


# --- the stateful samplers inside transformers' model.generate ----------------------------------------
@pytest.mark.parametrize("make", [lambda: d.Mirostat(tau=3.0), lambda: d.Mirostat(version=1, tau=3.0),
                                  lambda: d.EntropixSampler()])
@pytest.mark.parametrize("do_sample", [False, True])
def test_stateful_samplers_work_inside_hf_generate(make, do_sample: bool) -> None:  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=40, n_positions=32,
                                     bos_token_id=0, eos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # spread the distributions so the samplers' branches differ
    prompt = torch.tensor([[0, 5, 7]])
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # what generate hands over
        seen.append((input_ids.clone(), scores.clone()))
        return scores

    sampler = make()
    procs = transformers.LogitsProcessorList(
        [record, sampler.as_logits_processor(torch.Generator().manual_seed(3))]
    )
    out = model.generate(prompt, logits_processor=procs, do_sample=do_sample, max_new_tokens=8,
                         pad_token_id=0, top_k=None, top_p=None, temperature=None)
    # Reference: the same sampler, fresh, driven by hand on the scores generate handed over.
    ref, g = make(), torch.Generator().manual_seed(3)
    chosen = [int(ref(ids, scores, g).tokens[0]) for ids, scores in seen]
    assert len(seen) == 8 and out[0, 3:].tolist() == chosen
    assert all(ids[0, 3:].tolist() == chosen[:k] for k, (ids, _) in enumerate(seen))
    if isinstance(sampler, d.Mirostat):
        assert sampler.mu is not None and ref.mu is not None  # the state was updated, as by hand
        assert float(sampler.mu) != 6.0 and torch.allclose(sampler.mu, ref.mu)
    else:
        assert sampler.last_branch is not None and ref.last_branch is not None
        assert sampler.last_branch.tolist() == ref.last_branch.tolist()


def test_sampler_processor_checks_its_arguments() -> None:
    from entropykit.decoding.mirostat import SamplerProcessor

    with pytest.raises(TypeError, match="sampler"):
        SamplerProcessor(3)
    with pytest.raises(TypeError, match="generator"):
        d.Mirostat().as_logits_processor(generator=1)  # type: ignore[arg-type]
