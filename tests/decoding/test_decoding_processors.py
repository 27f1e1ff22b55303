"""Logits processors: parity with transformers' warpers, documented differences, and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import decoding as d
from entropykit.decoding import processors as P

lp = pytest.importorskip("transformers.generation.logits_process")

NEG = float("-inf")
IDS = torch.zeros(1, 1, dtype=torch.long)
KINDS = ("normal", "flat", "peaked", "ties", "inf", "uniform")


def make_rows(kind: str, b: int, v: int, g: torch.Generator) -> torch.Tensor:
    if kind == "flat":
        return torch.randn(b, v, generator=g) * 0.05
    if kind == "peaked":
        x = torch.randn(b, v, generator=g) * 2
        x[:, 0] += 15
        return x
    if kind == "ties":  # many exact ties, on every boundary
        return torch.randint(-3, 3, (b, v), generator=g).float()
    if kind == "inf":  # masked entries (at least one finite per row)
        x = torch.randn(b, v, generator=g) * 3
        x[torch.rand(b, v, generator=g) < 0.6] = NEG
        x[:, -1] = 1.0
        return x
    if kind == "uniform":
        return torch.zeros(b, v)
    return torch.randn(b, v, generator=g) * 3


def same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row: identical kept sets and identical values on them."""
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    return (fa == fb).all(-1) & torch.where(fa & fb, a == b, True).all(-1)


PAIRS = [
    ("temperature", lambda: lp.TemperatureLogitsWarper(0.7), lambda x: d.temperature(x, 0.7)),
    ("top_k", lambda: lp.TopKLogitsWarper(5), lambda x: d.top_k(x, 5)),
    (
        "top_k_keep",
        lambda: lp.TopKLogitsWarper(3, min_tokens_to_keep=6),
        lambda x: d.top_k(x, 3, min_tokens_to_keep=6),
    ),
    ("top_p", lambda: lp.TopPLogitsWarper(0.9), lambda x: d.top_p(x, 0.9)),
    (
        "top_p_keep",
        lambda: lp.TopPLogitsWarper(0.3, min_tokens_to_keep=3),
        lambda x: d.top_p(x, 0.3, min_tokens_to_keep=3),
    ),
    ("min_p", lambda: lp.MinPLogitsWarper(0.1), lambda x: d.min_p(x, 0.1)),
    (
        "min_p_keep",
        lambda: lp.MinPLogitsWarper(0.5, min_tokens_to_keep=4),
        lambda x: d.min_p(x, 0.5, min_tokens_to_keep=4),
    ),
    ("epsilon", lambda: lp.EpsilonLogitsWarper(3e-3), lambda x: d.epsilon_cutoff(x, 3e-3)),
    (
        "epsilon_keep",
        lambda: lp.EpsilonLogitsWarper(0.05, min_tokens_to_keep=3),
        lambda x: d.epsilon_cutoff(x, 0.05, min_tokens_to_keep=3),
    ),
    ("eta", lambda: lp.EtaLogitsWarper(3e-3), lambda x: d.eta_cutoff(x, 3e-3)),
    ("typical", lambda: lp.TypicalLogitsWarper(0.9), lambda x: d.typical(x, 0.9)),
    ("typical_low", lambda: lp.TypicalLogitsWarper(0.2), lambda x: d.typical(x, 0.2)),
    ("top_h", lambda: lp.TopHLogitsWarper(0.4), lambda x: d.top_h(x, 0.4)),
    ("top_h_one", lambda: lp.TopHLogitsWarper(1.0), lambda x: d.top_h(x, 1.0)),
]


@pytest.mark.parametrize("name,ref,ours", PAIRS, ids=[p[0] for p in PAIRS])
def test_parity_with_transformers(name: str, ref, ours) -> None:
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    warper = ref()
    rows = 0
    for kind in KINDS:
        for v in (2, 7, 120, 1500):
            for b in (1, 64, 64):
                x = make_rows(kind, b, v, g)
                a, o = warper(IDS, x), ours(x)
                bad = (~same(a, o)).nonzero().flatten().tolist()
                assert not bad, f"{name} {kind} V={v} B={b}: rows {bad[:5]} differ"
                rows += b
    assert rows >= 2000


@pytest.mark.parametrize("name", ["top_k", "top_p", "min_p", "epsilon", "eta", "top_h"])
def test_parity_large_vocab(name: str) -> None:
    # V >= 4096 takes the NumPy selection/sort paths of top_k, top_p and top_h.
    ref, ours = {p[0]: (p[1], p[2]) for p in PAIRS}[name]
    g = torch.Generator().manual_seed(11)
    for kind in ("normal", "ties", "inf", "peaked"):
        x = make_rows(kind, 6, 8192, g)
        a, o = ref()(IDS, x), ours(x)
        assert bool(same(a, o).all()), (name, kind)


def test_typical_parity_large_vocab() -> None:
    # Selection instead of a sort: rows may only differ where transformers' float32 cumulative mass
    # is within rounding of `mass`; at V = 32000 they are identical in practice.
    g = torch.Generator().manual_seed(7)
    x = torch.randn(16, 32000, generator=g) * 2.5
    a, o = lp.TypicalLogitsWarper(0.9)(IDS, x), d.typical(x, 0.9)
    diff = (torch.isfinite(a) != torch.isfinite(o)).sum(-1)
    assert int(diff.max()) <= 1 and int((diff > 0).sum()) <= 2
    # every differing token sits exactly at the boundary: its float64 cumulative mass is ~mass
    for row in (diff > 0).nonzero().flatten().tolist():
        logp = torch.log_softmax(x[row].double(), -1)
        s = (-logp - (-(logp.exp() * logp).sum())).abs()
        tok = (torch.isfinite(a[row]) != torch.isfinite(o[row])).nonzero().flatten()
        mass_below = logp.exp()[s <= s[tok].max()].sum()
        assert abs(float(mass_below) - 0.9) < 1e-4


def test_half_precision_upcast() -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 300, generator=g) * 3).bfloat16()
    out = d.min_p(x, 0.1)
    assert out.dtype == torch.bfloat16
    ref = d.min_p(x.float(), 0.1)
    assert torch.equal(torch.isfinite(out), torch.isfinite(ref))


# --- documented differences ----------------------------------------------------------------------
def test_top_h_zero_log_zero() -> None:
    # transformers: renormalised probabilities that underflow to 0 give 0 * log 0 = NaN and are
    # dropped. Ours: 0 log 0 = 0, so they are kept while the entropy budget allows (value unchanged).
    x = torch.tensor([[0.0, -0.5, -200.0, -201.0] + [-1e4] * 4])
    ref = lp.TopHLogitsWarper(1.0)(IDS, x)
    ours = d.top_h(x, 1.0)
    assert torch.isfinite(ref).tolist() == [[True, True] + [False] * 6]
    assert torch.isfinite(ours).all()
    assert torch.equal(ours, x)


def test_typical_min_tokens_ties() -> None:
    # Four tokens tie for "most typical"; min_tokens_to_keep=2 keeps all four (transformers keeps
    # whichever two its sort put first). With no tie at that boundary, both agree.
    x = torch.log(torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.1, 0.1]]))
    ours = d.typical(x, 0.05, min_tokens_to_keep=2)
    assert int(torch.isfinite(ours).sum()) == 4
    y = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]]))
    ref = lp.TypicalLogitsWarper(0.05, min_tokens_to_keep=2)(IDS, y)
    assert torch.equal(d.typical(y, 0.05, min_tokens_to_keep=2), ref)


# --- properties ------------------------------------------------------------------------------------
def entropy_nats(q: torch.Tensor) -> torch.Tensor:
    return -torch.where(q > 0, q * q.log(), torch.zeros_like(q)).sum(-1)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 1.0), st.integers(2, 300), st.sampled_from(KINDS))
def test_top_h_entropy_bound(seed: int, alpha: float, v: int, kind: str) -> None:
    x = make_rows(kind, 8, v, torch.Generator().manual_seed(seed)).double()
    out = d.top_h(x, alpha)
    n = min(100, v)
    top, _ = torch.topk(x, n)
    q = torch.softmax(top, -1)
    budget = alpha * entropy_nats(q)
    for r in range(8):
        kept = torch.isfinite(out[r])
        qk = torch.softmax(top[r], -1)[: int(kept.sum())]  # kept = a prefix of the top-n order
        assert bool(torch.isin(x[r][kept], top[r]).all())
        partial = -torch.where(qk > 0, qk * qk.log(), torch.zeros_like(qk)).sum()
        assert int(kept.sum()) == 1 or float(partial) <= float(budget[r]) + 1e-9
        # greedy: adding the next token would break the bound (or nothing is left)
        k = int(kept.sum())
        if k < n and torch.isfinite(top[r, k]) and float(budget[r]) > 0:
            nxt = torch.softmax(top[r], -1)[: k + 1]
            over = -torch.where(nxt > 0, nxt * nxt.log(), torch.zeros_like(nxt)).sum()
            assert float(over) > float(budget[r]) - 1e-9 or k == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 3.0), st.floats(0.0, 2.0), st.floats(0.2, 3.0))
def test_dynamic_temperature_formula(seed: int, t: float, delta: float, exponent: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = make_rows("inf", 6, 50, g).double()
    x[0] = NEG
    x[0, 3] = 0.5  # a single candidate: normalised entropy 0
    out, temp = d.dynamic_temperature(x, t, delta, exponent)
    for r in range(6):
        fin = torch.isfinite(x[r])
        nfin = int(fin.sum())
        pr = torch.softmax(x[r][fin], -1)
        h = float(-(pr * pr.log()).sum())
        hn = h / math.log(nfin) if nfin > 1 else 0.0
        lo, hi = max(0.0, t - delta), t + delta
        expect = t if delta == 0 else lo + (hi - lo) * hn**exponent
        assert math.isclose(float(temp[r]), expect, rel_tol=1e-9, abs_tol=1e-9)
        if expect > 0:
            assert torch.allclose(out[r][fin], x[r][fin] / expect)
        else:  # greedy
            assert int(torch.isfinite(out[r]).sum()) == int((x[r] == x[r].max()).sum())


def test_xtc_semantics() -> None:
    p = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.3, 0.3, 0.3, 0.1]])
    x = p.log()
    g = torch.Generator().manual_seed(0)
    out = d.xtc(x, 0.15, 1.0, generator=g)
    # row 0: 0.4, 0.3, 0.2 pass the threshold -> all but the least likely (0.2) removed
    assert torch.isfinite(out[0]).tolist() == [False, False, True, True]
    # row 1: only one token passes -> unchanged
    assert torch.equal(out[1], x[1])
    # row 2: the least likely passing tokens tie -> every tie is kept
    assert torch.equal(out[2], x[2])
    assert torch.equal(d.xtc(x, 0.15, 0.0, generator=g), x)  # probability 0: never
    # probability 1/2: reproducible with a fixed generator, and applied to about half the rows
    big = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]])).repeat(2000, 1)
    o1 = d.xtc(big, 0.15, 0.5, generator=torch.Generator().manual_seed(3))
    o2 = d.XTC(0.15, 0.5, torch.Generator().manual_seed(3))(IDS, big)
    assert torch.equal(o1, o2)
    frac = float((~torch.isfinite(o1[:, 0])).float().mean())
    assert 0.45 < frac < 0.55
    # min_tokens_to_keep: a row that would keep fewer is left alone
    two = torch.log(torch.tensor([[0.6, 0.4]]))
    assert torch.equal(d.xtc(two, 0.3, 1.0, min_tokens_to_keep=2), two)


def test_top_n_sigma() -> None:
    g = torch.Generator().manual_seed(5)
    x = make_rows("inf", 16, 200, g).double()
    out = d.top_n_sigma(x, 1.5)
    for r in range(16):
        z = x[r][torch.isfinite(x[r])]
        thr = z.max() - 1.5 * z.std(unbiased=False)
        assert torch.equal(torch.isfinite(out[r]), x[r] >= thr)
    assert torch.equal(d.top_n_sigma(x * 3, 1.5).isfinite(), out.isfinite())  # temperature invariant


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(KINDS), st.integers(1, 6))
def test_min_tokens_and_rows_independent(seed: int, kind: str, keep: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = make_rows(kind, 5, 40, g)
    rules = [
        lambda s: d.top_p(s, 0.01, min_tokens_to_keep=keep),
        lambda s: d.min_p(s, 1.0, min_tokens_to_keep=keep),
        lambda s: d.epsilon_cutoff(s, 0.9, min_tokens_to_keep=keep),
        lambda s: d.eta_cutoff(s, 0.9, min_tokens_to_keep=keep),
        lambda s: d.typical(s, 0.01, min_tokens_to_keep=keep),
        lambda s: d.top_h(s, 0.01, min_tokens_to_keep=keep),
        lambda s: d.top_k(s, 1, min_tokens_to_keep=keep),
    ]
    finite = torch.isfinite(x).sum(-1)
    for rule in rules:
        out = rule(x)
        assert bool((torch.isfinite(out).sum(-1) >= torch.clamp(finite, max=keep)).all())
        # each row alone gives the same answer as in the batch
        for r in range(5):
            assert torch.equal(rule(x[r : r + 1])[0], out[r])


def test_chain_and_temperature_record() -> None:
    x = torch.tensor([[4.0, 2.0, 0.0, -1.0]])
    c = d.chain(d.TopK(3), d.Temperature(2.0), d.DynamicTemperature(1.0, 0.0))
    out = c(IDS, x)
    assert torch.equal(out, torch.tensor([[2.0, 1.0, 0.0, NEG]]))
    assert c.last_temperature is not None and float(c.last_temperature[0]) == 2.0
    assert "TopK" in repr(c)


def test_fixed_generator_reproducible() -> None:
    x = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    a = d.sample_from_logits(x, torch.Generator().manual_seed(9))
    b = d.sample_from_logits(x, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: d.top_p(torch.zeros(2, 3), 1.5), ValueError, r"p must be a number in \[0.0, 1.0\], got 1.5"),
        (lambda: d.top_k(torch.zeros(2, 3), 0), ValueError, r"k must be an int >= 1, got 0"),
        (lambda: d.min_p(torch.zeros(2, 3), 0.1, min_tokens_to_keep=0), ValueError,
         r"min_tokens_to_keep must be an int >= 1, got 0"),
        (lambda: d.typical(torch.zeros(2, 3), 1.0), ValueError,
         r"mass must be a number in \(0.0, 1.0\), got 1.0"),
        (lambda: d.top_h(torch.zeros(2, 3), 0.0), ValueError,
         r"alpha must be a number in \(0.0, 1.0\], got 0.0"),
        (lambda: d.epsilon_cutoff(torch.zeros(3), 0.1), ValueError,
         r"scores must have shape \(batch, vocab\), got shape \(3,\)"),
        (lambda: d.eta_cutoff(torch.zeros(2, 3, dtype=torch.long), 0.1), TypeError,
         r"scores must be a floating-point tensor, got dtype torch.int64"),
        (lambda: d.Temperature(0.0), ValueError, r"t must be a positive finite number, got 0.0"),
        (lambda: d.TopNSigma(-1.0), ValueError, r"n must be a non-negative finite number, got -1.0"),
        (lambda: d.XTC(0.1, 2.0), ValueError, r"probability must be a number in \[0.0, 1.0\], got 2.0"),
        (lambda: d.top_p(torch.zeros(2, 3), "0.5"), TypeError, r"p must be a real number, got str"),
    ],
)
def test_bad_input(call, exc, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()
    with pytest.raises(TypeError, match=r"scores must be a torch\.Tensor, got list"):
        P.top_k([[1.0]], 1)  # type: ignore[arg-type]
