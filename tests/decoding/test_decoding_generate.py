"""generate(): cache and re-priming, statistics, stops, reproducibility; EntropySwitch; Hugging Face."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from entropykit import decoding as d
from entropykit import measures
from entropykit.lm import load_model
from entropykit.models import Encoding, LanguageModel


@pytest.fixture(scope="module")
def small() -> LanguageModel:
    return load_model("bytegpt-small")


def naive_logits(model: LanguageModel, seq: torch.Tensor, start: int) -> torch.Tensor:
    """Next-token logits recomputed from scratch on the prefix plus seq[:, start:] (no cache)."""
    window = seq if start == 0 else torch.cat([seq[:, :1], seq[:, start:]], 1)
    return model.forward(window)[0][:, -1]


def test_generate_stats_match_uncached_recomputation(small: LanguageModel) -> None:
    ids = torch.tensor([[256, *b"Hello"]] * 2)
    out = d.generate(
        small,
        ids,
        processors=[d.TopK(40), d.Temperature(0.9)],
        max_new_tokens=12,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.sequences.shape == (2, 6 + 12) and out.stats is not None
    for t in range(12):
        seq = out.sequences[:, : 6 + t]
        logits = small.forward(seq)[0][:, -1]
        tok = out.sequences[:, 6 + t]
        assert torch.allclose(out.stats.entropy_bits[:, t], measures.entropy(logits, base=2), atol=1e-4)
        assert torch.allclose(
            out.stats.varentropy_bits2[:, t], measures.varentropy(logits, base=2), atol=1e-3
        )
        assert torch.allclose(
            out.stats.surprisal_bits[:, t], measures.surprisal(logits, tok, base=2), atol=1e-4
        )
        # the chosen token was in the kept set (top-40 of the raw logits)
        assert bool((measures.token_rank(logits, tok) <= 40).all())
    assert bool((out.stats.kept == 40).all())
    assert torch.allclose(out.stats.temperature, torch.full((2, 12), 0.9))
    assert out.new_tokens[0] == out.sequences[0, 6:].tolist()


def test_generate_reprimes_past_the_context(small: LanguageModel) -> None:
    # ByteGPT's cache is valid up to 512 tokens: a 505-token prompt + 40 tokens forces a re-prime
    # on BOS + the last 383 tokens (3/4 of the context), after which the cache is used again.
    g = torch.Generator().manual_seed(0)
    prompt = torch.cat([torch.tensor([[256]]), torch.randint(32, 127, (1, 504), generator=g)], 1)
    out = d.generate(small, prompt, sampler=d.Greedy(), max_new_tokens=40)
    seq = out.sequences
    keep = int(512 * 0.75)
    start = 0
    for t in range(40):
        n = 505 + t
        cached_len = n if start == 0 else 1 + n - start
        if cached_len > 512:
            start = n - (keep - 1)
        logits = naive_logits(small, seq[:, :n], start)
        top2 = torch.topk(logits[0], 2).values
        if float(top2[0] - top2[1]) > 1e-3:  # a near-tie may flip between cached and uncached sums
            assert int(logits.argmax(-1)) == int(seq[0, n]), f"step {t}"
        assert math.isclose(
            float(out.stats.entropy_bits[0, t]), float(measures.entropy(logits, base=2)), abs_tol=1e-3
        )
    assert start > 0  # a re-prime happened
    assert out.extra["calls"] == 40


def test_generate_reproducible_and_stops(small: LanguageModel) -> None:
    a = d.generate(small, "abc", max_new_tokens=15, generator=torch.Generator().manual_seed(3))
    b = d.generate(small, "abc", max_new_tokens=15, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.sequences, b.sequences)
    assert a.sequences[0, 0] == 256  # a str prompt gets the model's prefix (BOS)
    # stop: the first generated token becomes the stop token, so the row stops at once
    first = int(a.sequences[0, 4])
    c = d.generate(small, "abc", max_new_tokens=15, stop=first, generator=torch.Generator().manual_seed(3))
    assert c.new_tokens == [[first]] and c.steps == 1
    # batch: rows stop independently; stopped rows are padded and their stats are NaN / -1
    ids = torch.tensor([[256, 97], [256, 98]])
    full = d.generate(small, ids, max_new_tokens=6, generator=torch.Generator().manual_seed(1))
    stop_tok = int(full.sequences[0, 3])  # row 0's second token
    part = d.generate(small, ids, max_new_tokens=6, stop=stop_tok, generator=torch.Generator().manual_seed(1))
    assert part.new_tokens[0] == full.new_tokens[0][: full.new_tokens[0].index(stop_tok) + 1]
    s = part.stats
    assert s is not None
    n0 = len(part.new_tokens[0])
    if n0 < part.steps:
        assert bool(torch.isnan(s.entropy_bits[0, n0:]).all()) and bool((s.kept[0, n0:] == -1).all())
        assert len(s.row(0)) == n0


def test_generate_bad_input(small: LanguageModel) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        d.generate(small, "a", max_new_tokens=-1)
    with pytest.raises(ValueError, match="input_ids"):
        d.generate(small, torch.tensor([[999]]), max_new_tokens=1)
    with pytest.raises(TypeError, match="model"):
        d.generate("not a model", "a", max_new_tokens=1)
    with pytest.raises(TypeError, match="stop"):
        d.generate(small, "a", max_new_tokens=1, stop="x")  # type: ignore[arg-type]


class CountingLM(LanguageModel):
    """Fake model with BOS = 0 and a context of 8: the next token is (last + 1) mod 16; it records
    every forward call's input and the cache length it continues from, and refuses overflows."""

    supports_cache = True

    def __init__(self) -> None:
        self.module = nn.Linear(1, 1)
        self.name, self.max_context, self.vocab_size, self.prefix_ids = "counting", 8, 16, [0]
        self.calls: list[tuple[int, list[int]]] = []

    def encode(self, data: str | bytes) -> Encoding:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> bytes:
        return bytes(ids)

    def forward(self, input_ids: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
        cached = past or 0
        assert cached + input_ids.shape[1] <= self.max_context
        self.calls.append((cached, input_ids[0].tolist()))
        nxt = (input_ids[:, :, None] + 1) % 16
        return torch.where(torch.arange(16) == nxt, 0.0, -9.0), cached + input_ids.shape[1]


def test_reprime_schedule_starts_every_window_with_bos() -> None:
    """Context 8, BOS + 5 tokens kept (int(0.75 * 8) - 1): a fresh window is BOS + the last 5 tokens,
    then cached steps until the cache holds 8, then the next re-prime (models.stream.Reprime)."""
    lm = CountingLM()
    out = d.generate(lm, [0, 1, 2, 3], sampler=d.Greedy(), max_new_tokens=12)
    seq = out.sequences[0].tolist()
    assert seq == [0] + [i % 16 for i in range(1, 16)]
    want, cache = [], 0
    for n in range(4, 4 + 12):  # n tokens known (BOS included) when the next one is predicted
        if cache and cache + 1 <= 8:
            want.append((cache, seq[n - 1 : n]))
            cache += 1
        elif n <= 8:
            want.append((0, seq[:n]))
            cache = n
        else:
            want.append((0, [0, *seq[n - 5 : n]]))
            cache = 6
    assert lm.calls == want
    assert all(inp[0] == 0 for past, inp in lm.calls if past == 0)  # every fresh window starts with BOS
    assert sum(past == 0 for past, _ in lm.calls) == 4  # the first prime and three re-primes


# --- EntropySwitch -----------------------------------------------------------------------------------
class ScheduledLM(LanguageModel):
    """Fake model: at absolute position n the next-token entropy is high iff schedule[n]."""

    supports_cache = True

    def __init__(self, schedule: list[bool], width: int) -> None:
        self.module = nn.Linear(width, width)
        self.name, self.max_context, self.vocab_size, self.prefix_ids = "fake", 10_000, 16, []
        self.schedule = schedule

    def encode(self, data: str | bytes) -> Encoding:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> bytes:
        return bytes(ids)

    def forward(self, input_ids: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
        start = 0 if past is None else past
        t = input_ids.shape[1]
        out = torch.full((input_ids.shape[0], t, 16), -20.0)
        for i in range(t):
            n = start + i + 1
            if self.schedule[n]:
                out[:, i, :] = 0.0  # 4 bits
            else:
                out[:, i, 0] = 0.0  # ~0 bits, token 0
        return out, start + t


def test_switch_hysteresis_and_costs() -> None:
    sched = [False] * 10 + [True] * 8 + [False] * 30
    small_m, large_m = ScheduledLM(sched, 4), ScheduledLM(sched, 16)
    sw = d.EntropySwitch(small_m, large_m, window=2, threshold=2.5, hysteresis=1.5, sampler=d.Greedy())
    out = sw.generate(torch.zeros(1, 1, dtype=torch.long), max_new_tokens=30)
    rolls = out.rolling_entropy_bits
    expect, on = [], False
    for r in rolls:
        on = (r > 2.5) if not on else not (r < 1.0)
        expect.append(int(on))
    assert out.source == expect
    assert 0 < sum(out.source) < 30
    # hysteresis keeps the large model on while the rolling mean is in the band (2 bits)
    assert any(math.isclose(r, 2.0, abs_tol=1e-3) and s == 1 for r, s in zip(rolls, out.source))
    p_s, p_l = 4 * 4 + 4, 16 * 16 + 16
    n_l = sum(out.source)
    assert out.large_fraction == n_l / 30
    turns = sum(1 for i, s in enumerate(out.source) if s and (i == 0 or not out.source[i - 1]))
    assert out.large_calls == n_l  # one call per large-model token (catch-up fused into the first)
    assert turns == 1
    assert math.isclose(out.pass_cost_saved, 1 - (30 * p_s + n_l * p_l) / (30 * p_l))


def test_switch_extremes_match_single_model(small: LanguageModel) -> None:
    large = load_model("bytegpt-small")  # a second copy: the logic, not the quality, is tested here
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[256, *b"x = "]])
    ref = d.generate(small, ids, sampler=d.Greedy(), max_new_tokens=10)
    for thr in (-1.0, 1e9):
        sw = d.EntropySwitch(small, large, threshold=thr, hysteresis=0.0, sampler=d.Greedy())
        out = sw.generate(ids, max_new_tokens=10, generator=g)
        assert out.new_tokens == ref.new_tokens[0]
        assert out.large_fraction == (1.0 if thr < 0 else 0.0)
    with pytest.raises(ValueError, match="batch"):
        sw.generate(torch.tensor([[256, 1], [256, 2]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="window"):
        d.EntropySwitch(small, large, threshold=1.0, window=0)


def test_switch_demo_bundled_models(small: LanguageModel) -> None:
    # The demo of the issue: the bundled default large, bytegpt-small small (either weights).
    large = load_model()
    sw = d.EntropySwitch(
        small, large, threshold=float(measures.entropy(torch.zeros(257), base=2)) - 0.3, hysteresis=0.2
    )
    out = sw.generate("The ", max_new_tokens=20, generator=torch.Generator().manual_seed(0))
    assert len(out.new_tokens) == 20 and 0.0 <= out.large_fraction <= 1.0
    assert out.pass_cost_saved <= 1 - sw.p_small / sw.p_large + 1e-9


# --- Hugging Face ----------------------------------------------------------------------------------
def test_hf_model_generate_and_reprime(tmp_path) -> None:
    hf_fixtures = pytest.importorskip("hf_fixtures")
    model = load_model(hf_fixtures.tiny_hf_model_dir(tmp_path))
    assert model.max_context == 64
    out = d.generate(
        model,
        "The quick brown fox",
        processors=[d.MinP(0.05)],
        max_new_tokens=80,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.sequences.shape[1] > 64 and out.stats is not None  # past the context: re-primed
    assert bool(torch.isfinite(out.stats.entropy_bits).all())
    # a bare HF module works too (token ids only)
    bare = d.generate(model.module, torch.tensor([[1, 2, 3]]), sampler=d.Greedy(), max_new_tokens=5)
    assert bare.sequences.shape == (1, 8)


def test_processors_inside_transformers_generate(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    hf_fixtures = pytest.importorskip("hf_fixtures")
    lm = transformers.AutoModelForCausalLM.from_pretrained(hf_fixtures.tiny_hf_model_dir(tmp_path))
    ids = torch.tensor([[5, 6, 7]])
    common = {
        "do_sample": True,
        "max_new_tokens": 12,
        "top_k": None,
        "top_p": None,
        "temperature": None,
        "pad_token_id": 0,
    }
    for ours, theirs in [
        (d.TopP(0.8), {"top_p": 0.8}),
        (d.MinP(0.2), {"min_p": 0.2}),
        (d.Typical(0.7), {"typical_p": 0.7}),
        (d.Eta(0.01), {"eta_cutoff": 0.01}),
        (d.Epsilon(0.005), {"epsilon_cutoff": 0.005}),
    ]:
        torch.manual_seed(11)
        a = lm.generate(ids, **common, logits_processor=transformers.LogitsProcessorList([ours]))
        torch.manual_seed(11)
        b = lm.generate(ids, **{**common, **theirs})
        assert torch.equal(a, b), ours
    # a chain that leaves one token makes sampling greedy
    torch.manual_seed(0)
    a = lm.generate(ids, **common, logits_processor=[d.chain(d.TopK(1), d.Temperature(0.5))])
    g = lm.generate(ids, do_sample=False, max_new_tokens=12, pad_token_id=0)
    assert torch.equal(a, g)
