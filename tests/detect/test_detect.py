"""entropykit.detect: every score against a float64 NumPy recomputation on hand-written models,
streaming/batching invariance, identities (Min-K% k=1 = loss, Min-K%++ standardisation), errors."""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax

from entropykit.detect import (
    METHODS,
    FrequencyTable,
    TokenStats,
    entropy_gap_test,
    score_stats,
    score_texts,
    token_statistics,
)
from entropykit.detect.scores import entropy_gap_pvalue, log_ppl_gap, min_k_plus_plus
from entropykit.models import ByteModel, Encoding, LanguageModel
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
from entropykit.models.stream import windows


class Bigram(LanguageModel):
    """A hand-written model: next-token logits depend only on the previous token (table row).

    Letters 'a', 'b', ... are tokens 0, 1, ...; the last id is BOS. ``forward`` refuses inputs longer
    than ``max_context`` (cache included), so the streaming code must respect the context.
    """

    supports_cache = True

    def __init__(self, table: np.ndarray, max_context: int = 1000, name: str = "bigram") -> None:
        self.table64 = np.asarray(table, dtype=np.float64)
        self.table = torch.tensor(self.table64, dtype=torch.float32)
        self.vocab_size = int(table.shape[0])
        self.max_context = max_context
        self.prefix_ids = [self.vocab_size - 1]
        self.name = name
        self.module = torch.nn.Linear(1, 1)

    def encode(self, data: str | bytes) -> Encoding:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        return Encoding([b - 97 for b in raw], [(i, i + 1) for i in range(len(raw))], len(raw))

    def decode(self, ids: list[int]) -> bytes:
        return bytes(97 + i for i in ids if i < self.vocab_size - 1)

    def forward(self, input_ids: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
        n = input_ids.shape[1] + (past or 0)
        if n > self.max_context:
            raise ValueError(f"{n} tokens exceed the context {self.max_context}")
        return self.table[input_ids], n

    # float64 reference: log-softmax rows for a text (previous tokens: BOS, x_0, ..., x_{n-2})
    def ref_logprobs(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array(self.encode(text).ids)
        prev = np.r_[self.prefix_ids[0], ids[:-1]]
        return log_softmax(self.table64[prev], axis=-1), ids


def make_bigram(seed: int, v: int = 6, max_context: int = 1000, scale: float = 2.0) -> Bigram:
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(v, v)) * scale
    table = table.astype(np.float32).astype(np.float64)  # exactly representable in the model's float32
    return Bigram(table, max_context, name=f"bigram{seed}")


def tiny_bytegpt(block_size: int = 16, seed: int = 0) -> ByteModel:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ByteModel(
            ByteGPT(ByteGPTConfig(block_size=block_size, n_layer=1, n_head=2, n_embd=16)), "tiny"
        )


TEXTS = ["abcdeabcaddd", "eeeeabab", "ab", "dcbadcbadcbadcbaaaee" * 3]


# --- naive float64 recomputations --------------------------------------------------------------
def naive(method: str, text: str, q: Bigram, p: Bigram | None = None, **kw: Any) -> float:
    lq, ids = q.ref_logprobs(text)
    n = len(ids)
    l = np.array([lq[t, ids[t]] for t in range(n)])
    qs = np.exp(lq)
    if method == "loss":
        return l.mean()
    if method == "reference":
        assert p is not None
        lp, _ = p.ref_logprobs(text)
        return l.mean() - np.mean([lp[t, ids[t]] for t in range(n)])
    if method == "zlib":
        return l.mean() / len(zlib.compress(text.encode()))
    if method in ("min_k", "min_k_plus_plus"):
        m = max(1, math.floor(kw.get("k", 0.2) * n + 1e-9))
        if method == "min_k":
            vals = l
        else:
            mu = np.array([sum(qs[t, v] * lq[t, v] for v in range(q.vocab_size)) for t in range(n)])
            m2 = np.array([sum(qs[t, v] * lq[t, v] ** 2 for v in range(q.vocab_size)) for t in range(n)])
            vals = (l - mu) / np.sqrt(m2 - mu**2)
        return float(np.mean(sorted(vals)[:m]))
    if method == "dc_pdd":
        f = kw["frequencies"].probabilities()
        seen: set[int] = set()
        alphas = []
        for t in range(n):
            if ids[t] in seen:
                continue
            seen.add(ids[t])
            alphas.append(min(math.exp(l[t]) * -math.log(f[ids[t]]), kw.get("a", 0.01)))
        return float(np.mean(alphas))
    dist = qs if p is None else np.exp(p.ref_logprobs(text)[0])
    mu = (dist * lq).sum(-1)
    var = (dist * lq**2).sum(-1) - mu**2
    if method == "binoculars":
        ppl, xppl = -l.mean(), -mu.mean()  # log-perplexity, cross-perplexity
        return -ppl / xppl
    if method == "log_ppl_gap":
        return float(np.mean(mu - l))
    if method == "fast_detect_gpt":
        return (l.sum() - mu.sum()) / math.sqrt(var.sum())
    if method == "entropy_gap":
        return -abs(float(np.mean(mu - l)))
    raise AssertionError(method)


@pytest.mark.parametrize("ctx", [1000, 4, 2])
@pytest.mark.parametrize(
    ("method", "two", "kw"),
    [
        ("loss", False, {}),
        ("reference", True, {}),
        ("zlib", False, {}),
        ("min_k", False, {"k": 0.2}),
        ("min_k", False, {"k": 0.5}),
        ("min_k_plus_plus", False, {"k": 0.2}),
        ("min_k_plus_plus", False, {"k": 1.0}),
        ("binoculars", True, {}),
        ("fast_detect_gpt", False, {}),
        ("fast_detect_gpt", True, {}),
        ("entropy_gap", False, {}),
        ("entropy_gap", True, {}),
    ],
)
def test_scores_match_float64_recomputation(method: str, two: bool, kw: dict[str, Any], ctx: int) -> None:
    q = make_bigram(1, max_context=ctx)
    p = make_bigram(2, max_context=ctx) if two else None
    got = score_texts(TEXTS, method, q, reference=p, batch_size=3, **kw)
    want = [naive(method, t, q, p, **kw) for t in TEXTS]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_dc_pdd_matches_recomputation_and_table_roundtrip(tmp_path: Any) -> None:
    q = make_bigram(3)
    table = FrequencyTable.from_texts(["aaab", "abcd", "eeea"], q)
    np.testing.assert_array_equal(table.counts, [5, 2, 1, 1, 3, 0])
    np.testing.assert_allclose(table.probabilities(), (1 + table.counts) / (12 + 6))
    path = tmp_path / "freq.json"
    table.save(path)
    loaded = FrequencyTable.load(path)
    np.testing.assert_array_equal(loaded.counts, table.counts)
    for a in (0.01, 10.0):
        got = score_texts(TEXTS, "dc_pdd", q, frequencies=path, a=a)
        np.testing.assert_allclose(
            got, [naive("dc_pdd", t, q, frequencies=table, a=a) for t in TEXTS], rtol=1e-9
        )
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="path must name a entropykit-token-frequencies file"):
        FrequencyTable.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="frequencies must count the model's 6 token ids, got a table of 4"):
        score_texts(TEXTS, "dc_pdd", q, frequencies=FrequencyTable(np.array([1, 2, 3, 4])))
    with pytest.raises(ValueError, match="needs frequencies"):
        score_texts(TEXTS, "dc_pdd", q)


def test_min_k_with_k_one_is_mean_logprob() -> None:
    m = tiny_bytegpt(32)
    texts = ["hello world", "entropy", "zz"]
    np.testing.assert_allclose(
        score_texts(texts, "min_k", m, k=1.0), score_texts(texts, "loss", m), rtol=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=2, max_size=7), st.floats(-50, 50))
def test_min_k_plus_plus_is_standardised_under_the_model(row: list[float], shift: float) -> None:
    """E_q[z] = 0 and E_q[z^2] = 1 for z = (log q(x) - mu) / sigma, and a logit shift changes nothing."""
    logits = torch.tensor(row, dtype=torch.float64)
    v = logits.numel()
    q = torch.softmax(logits, -1).numpy()
    if np.var(np.log(q)) < 1e-12:
        return  # a uniform row: sigma = 0, z = 0 by convention
    z = np.array([min_k_plus_plus(TokenStats.from_logits(logits[None], [x]), k=1.0) for x in range(v)])
    z_shift = [min_k_plus_plus(TokenStats.from_logits(logits[None] + shift, [x]), k=1.0) for x in range(v)]
    np.testing.assert_allclose(np.sum(q * z), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.sum(q * z * z), 1.0, rtol=1e-9)
    np.testing.assert_allclose(z_shift, z, atol=1e-9)


def test_min_k_plus_plus_zero_variance_position_scores_zero() -> None:
    s = TokenStats.from_logits(torch.tensor([[0.0, -torch.inf, -torch.inf], [1.0, 2.0, 3.0]]), [0, 2])
    assert s.variance[0] == 0.0 and np.isfinite(min_k_plus_plus(s, k=1.0))


@torch.no_grad()
def test_streaming_bytegpt_matches_direct_forward_with_documented_contexts() -> None:
    m = tiny_bytegpt(16)
    text = b"The quick brown fox jumps over the dog."
    ids = list(text)
    (s,) = token_statistics([text], m, stride=5)
    assert len(s) == len(ids)
    want = np.empty(len(ids))
    for a, lo, hi in windows(len(ids), 16, 1, 5):
        for t in range(lo, hi):
            x = torch.tensor([[256, *ids[a:t]]])
            z = m.module(x)[0][0, -1].double()
            want[t] = torch.log_softmax(z, -1)[ids[t]].item()
    np.testing.assert_allclose(s.logprob, want, rtol=1e-5, atol=1e-5)
    # a text that fits in one window equals one full forward in float64
    short = b"fits in ctx"
    (s2,) = token_statistics([short], tiny_bytegpt(64))
    z = tiny_bytegpt(64).module(torch.tensor([[256, *list(short[:-1])]]))[0][0].double()
    lq = torch.log_softmax(z, -1)
    np.testing.assert_allclose(s2.logprob, lq.gather(1, torch.tensor(list(short))[:, None])[:, 0], rtol=1e-6)
    np.testing.assert_allclose(s2.expected, (lq.exp() * lq).sum(-1), rtol=1e-6)


def test_position_chunking_for_large_vocabularies(monkeypatch: pytest.MonkeyPatch) -> None:
    from entropykit.detect import stats as detect_stats

    q, p = make_bigram(1, max_context=9), make_bigram(2, max_context=9)
    whole = token_statistics(TEXTS, q, p)
    monkeypatch.setattr(detect_stats, "_CHUNK_ELEMENTS", 2 * q.vocab_size)  # 2 positions per chunk
    for a, b in zip(whole, token_statistics(TEXTS, q, p)):
        for name in ("logprob", "expected", "variance", "logprob_range", "ref_logprob"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_hf_model_scores_match_a_direct_forward(tmp_path: Any) -> None:
    from entropykit.lm import load_model
    from hf_fixtures import tiny_hf_model_dir

    m = load_model(tiny_hf_model_dir(tmp_path))
    texts = ["Entropy measures surprise.", "The quick brown fox."]
    got = score_texts(texts, "fast_detect_gpt", m)
    for text, g in zip(texts, got):
        ids = torch.tensor([[*m.prefix_ids, *m.encode(text).ids]])
        with torch.no_grad():
            lq = torch.log_softmax(m.module(ids[:, :-1]).logits[0].double(), -1)
        l = lq.gather(1, ids[0, 1:, None])[:, 0]
        mu = (lq.exp() * lq).sum(-1)
        var = (lq.exp() * lq**2).sum(-1) - mu**2
        assert g == pytest.approx(float((l.sum() - mu.sum()) / var.sum().sqrt()), rel=1e-5)


def test_batching_and_padding_do_not_change_scores() -> None:
    m = tiny_bytegpt(16)
    texts = ["a long text that needs several windows", "short", "medium length text", "xy"]
    one = score_texts(texts, "min_k_plus_plus", m, batch_size=1, stride=6)
    many = score_texts(texts, "min_k_plus_plus", m, batch_size=7, stride=6)
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-6)
    alone = score_texts(texts[1:2], "min_k_plus_plus", m, stride=6)
    np.testing.assert_allclose(alone, many[1:2], rtol=1e-5, atol=1e-6)
    default = score_texts(texts, "min_k_plus_plus", m, stride=6)  # stream.batch_windows(16, 257) = 128
    np.testing.assert_allclose(default, one, rtol=1e-5, atol=1e-6)


def test_default_batch_follows_the_stream_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without batch_size, token_statistics batches stream.batch_windows(C, V) windows a pass."""
    from entropykit.detect import stats as stats_mod
    from entropykit.models import stream

    m, sizes = tiny_bytegpt(16), []
    forward = stats_mod._forward

    def counted(model: object, batch: torch.Tensor) -> torch.Tensor:
        sizes.append(len(batch))
        return forward(model, batch)

    monkeypatch.setattr(stats_mod, "_forward", counted)
    monkeypatch.setattr(stream, "BATCH_TOKENS", 48)  # 3 windows of 16
    token_statistics(["a text long enough for seven or eight windows of sixteen"], m, stride=6)
    assert sizes[0] == 3 and max(sizes) == 3 and sum(sizes) > 3


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 60), st.integers(2, 12), st.integers(0, 2), st.data())
def test_windows_cover_every_target_once_within_context(n: int, ctx: int, n_prefix: int, data: Any) -> None:
    width = ctx - n_prefix
    if width < 1:
        with pytest.raises(ValueError):
            list(windows(n, ctx, n_prefix))
        return
    stride = data.draw(st.integers(1, width))
    chunks = list(windows(n, ctx, n_prefix, stride))
    covered = [t for _, s, e in chunks for t in range(s, e)]
    assert covered == list(range(0 if n_prefix else 1, n))
    for i, (a, s, e) in enumerate(chunks):
        assert n_prefix + (e - 1 - a) <= ctx and 0 <= a <= s < e
        if i:
            assert s - a >= width + 1 - stride


def test_fast_detect_gpt_same_model_relates_to_entropy_gap() -> None:
    m = tiny_bytegpt(32)
    stats = token_statistics(TEXTS, m)
    gap = np.array([log_ppl_gap(s) for s in stats])
    d = score_stats(stats, "fast_detect_gpt")
    n = np.array([len(s) for s in stats])
    var = np.array([s.variance.sum() for s in stats])
    np.testing.assert_allclose(d, -n * gap / np.sqrt(var), rtol=1e-10)
    np.testing.assert_allclose(score_stats(stats, "entropy_gap"), -np.abs(gap), rtol=1e-12)


def test_entropy_gap_pvalue_formula_validity_and_power() -> None:
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.uniform(0, 1.0, size=(200, 5)))
    lq = torch.log_softmax(logits, -1).numpy()
    # sampled from the model (H0): the bound is valid, so p <= 0.1 happens at most ~10% of the time
    cdf = np.cumsum(np.exp(lq), -1)
    draws = (rng.random((200, 200, 1)) > cdf[None, :, :-1]).sum(-1)  # 200 texts of 200 sampled tokens
    pv = [entropy_gap_pvalue(TokenStats.from_logits(logits, ids.tolist())) for ids in draws]
    assert np.mean(np.array(pv) <= 0.1) <= 0.1
    # the least likely token every time: strongly rejected, and equal to the closed form
    ids = lq.argmin(-1).tolist()
    s = TokenStats.from_logits(logits, ids)
    total = float(np.sum((np.exp(lq) * lq).sum(-1) - lq.min(-1)))
    want = 2 * math.exp(-2 * total**2 / np.sum((lq.max(-1) - lq.min(-1)) ** 2))
    assert entropy_gap_pvalue(s) == pytest.approx(want, rel=1e-9) and want < 1e-6
    assert entropy_gap_pvalue(TokenStats.from_logits(logits, lq.argmax(-1).tolist())) < 1e-6  # two-sided
    gap, p = entropy_gap_test(["abcab", "eeee"], make_bigram(4))
    assert gap.shape == p.shape == (2,) and ((p > 0) & (p <= 1)).all()
    np.testing.assert_allclose(gap, [naive("log_ppl_gap", t, make_bigram(4)) for t in ["abcab", "eeee"]])


def test_generated_text_scores_as_machine_on_a_peaked_model() -> None:
    from entropykit.detect import generate_passages

    q = make_bigram(5, scale=3.0)
    machine = [t.decode() for t in generate_passages(["a", "b", "c"] * 4, 60, seed=1, model=q)]
    rng = np.random.default_rng(1)
    human = ["".join(rng.choice(list("abcde"), size=60)) for _ in range(12)]  # uniform: off-model
    for method in ("fast_detect_gpt", "entropy_gap"):
        s_m, s_h = score_texts(machine, method, q), score_texts(human, method, q)
        assert s_m.min() > s_h.max(), method


def test_errors_name_the_argument() -> None:
    q = make_bigram(1)
    with pytest.raises(ValueError, match=r"texts\[1\] must hold at least 2 tokens.*got 0 token"):
        score_texts(["abc", ""], "loss", q)
    with pytest.raises(ValueError, match=r"texts\[0\] must hold at least 2 tokens.*got 1 token"):
        score_texts(["a"], "min_k_plus_plus", q)
    with pytest.raises(ValueError, match="method must be one of"):
        score_texts(["abc"], "nope", q)
    with pytest.raises(TypeError, match="unexpected parameter"):
        score_texts(["abc"], "loss", q, k=0.3)
    with pytest.raises(ValueError, match="k must be"):
        score_texts(["abc"], "min_k", q, k=1.5)
    with pytest.raises(ValueError, match="needs a reference"):
        score_texts(["abc"], "binoculars", q)
    with pytest.raises(TypeError, match="takes no reference"):
        score_texts(["abc"], "loss", q, reference=q)
    with pytest.raises(ValueError, match="share the tokenizer"):
        score_texts(["abc"], "reference", q, reference=make_bigram(2, v=7))
    with pytest.raises(TypeError, match="texts"):
        score_texts("abc", "loss", q)
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        score_texts([3], "loss", q)
    assert score_texts([], "loss", q).shape == (0,)


def test_methods_registry_documents_kind_and_reference() -> None:
    assert {m.kind for m in METHODS.values()} == {"membership", "machine"}
    assert METHODS["binoculars"].reference == "required" and METHODS["loss"].reference == "none"


def test_token_stats_from_logits_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match=r"ids holds index 5, outside \[0, 4\)"):
        TokenStats.from_logits(torch.zeros(2, 4), [1, 5])
    with pytest.raises(ValueError, match=r"ids must have one id per logit row: \(2,\), got \(1,\)"):
        TokenStats.from_logits(torch.zeros(2, 4), [1])
    with pytest.raises(ValueError, match=r"logits must have shape \(positions, vocab\), got \(4,\)"):
        TokenStats.from_logits(torch.zeros(4), [1])
    with pytest.raises(ValueError, match="logits and ref_logits must have the same shape"):
        TokenStats.from_logits(torch.zeros(2, 4), [1, 2], torch.zeros(2, 3))
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        TokenStats.from_logits(torch.zeros(2, 4, dtype=torch.long), [1, 2])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        token_statistics(["abc"], make_bigram(1), batch_size=0)
    with pytest.raises(ValueError, match=r"stride must be an int in \[1, 4\], got 5"):
        token_statistics(["abcdefghijkl"], make_bigram(1, max_context=5), stride=5)


# --------------------------------------------------------------------------------------------------
# slide=True: a sliding KV cache per text (rotary ByteGPTs), against the float64 masked reference
# --------------------------------------------------------------------------------------------------


def _rope(seed: int = 0, block_size: int = 16) -> ByteModel:
    from test_bytegpt_rope import rope_model

    return ByteModel(rope_model(block_size=block_size, n_embd=32, n_head=2, seed=seed), f"rope{seed}")


@pytest.mark.parametrize("n", [3, 15, 40, 100])
def test_slide_logprob_matches_the_sliding_reference(n: int) -> None:
    """logprob per token = -(surprisal of the sliding rule) from an independent masked float64 forward
    (``bytegpt_reference.sliding_reference``), for texts within one piece, one window and several."""
    from bytegpt_reference import sliding_reference

    m = _rope()
    text = np.random.default_rng(n).integers(97, 110, n).astype(np.uint8).tobytes()
    (s,) = token_statistics([text], m, slide=True, progress=False)
    want = -sliding_reference(m.module, list(text), 16, True) * math.log(2)
    np.testing.assert_allclose(s.logprob, want, atol=2e-4)
    assert s.ids.tolist() == list(text) and len(s.logprob) == n


def test_slide_equals_strided_within_one_window_and_keeps_every_column() -> None:
    """A text that fits one window sees the same context either way: every column (q alone, and with a
    second model) equals the strided path's to float32 rounding; stats of several texts keep order."""
    m, ref = _rope(0), _rope(1)
    texts = [b"abcabcabdab", b"hello there", b"zz"]
    for r in (None, ref):
        slid = token_statistics(texts, m, r, slide=True, progress=False)
        strided = token_statistics(texts, m, r, progress=False)
        for a, b in zip(slid, strided):
            assert a.ids.tolist() == b.ids.tolist() and a.data == b.data
            for name in ("logprob", "expected", "variance", "logprob_range", "ref_logprob"):
                x, y = getattr(a, name), getattr(b, name)
                if r is None and name == "ref_logprob":
                    assert x is None and y is None
                    continue
                np.testing.assert_allclose(x, y, atol=2e-5, rtol=1e-5)


def test_slide_reference_column_is_the_reference_models_own_slide() -> None:
    """ref_logprob under slide=True is -surprisal of the second model over the same sliding rule."""
    from bytegpt_reference import sliding_reference

    m, ref = _rope(0), _rope(2)
    text = np.random.default_rng(7).integers(97, 110, 70).astype(np.uint8).tobytes()
    (s,) = token_statistics([text], m, ref, slide=True, stride=5, progress=False)
    want = -sliding_reference(ref.module, list(text), 16, True, piece=5) * math.log(2)
    assert s.ref_logprob is not None
    np.testing.assert_allclose(s.ref_logprob, want, atol=2e-4)
    own = -sliding_reference(m.module, list(text), 16, True, piece=5) * math.log(2)
    np.testing.assert_allclose(s.logprob, own, atol=2e-4)


def test_slide_through_score_texts_and_entropy_gap() -> None:
    m = _rope()
    texts = [np.random.default_rng(i).integers(97, 105, 60).astype(np.uint8).tobytes() for i in range(2)]
    stats = token_statistics(texts, m, slide=True, progress=False)
    np.testing.assert_allclose(score_texts(texts, "loss", m, slide=True), [score_stats(stats, "loss")[i]
                                                                          for i in range(2)])
    gap, _ = entropy_gap_test(texts, m, slide=True)
    np.testing.assert_allclose(gap, [log_ppl_gap(s) for s in stats])


def test_slide_needs_rotary_bytegpts() -> None:
    rope = _rope()
    learned = ByteModel(ByteGPT(ByteGPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=8)), "learned")
    needs = r"slide: True needs a ByteGPT with rotary positions .*got "
    with pytest.raises(ValueError, match=needs + "model 'learned'"):
        token_statistics([b"abcdef"], learned, slide=True)
    with pytest.raises(ValueError, match=needs + "reference 'learned'"):
        token_statistics([b"abcdef"], rope, learned, slide=True)
    with pytest.raises(ValueError, match="stride"):
        token_statistics([b"abcdef"], rope, slide=True, stride=15)  # no room for the sink and a token
    with pytest.raises(TypeError, match="slide"):
        token_statistics([b"abcdef"], rope, slide=1)  # type: ignore[arg-type]
