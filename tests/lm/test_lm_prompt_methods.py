"""Prompt compression methods (LLMLingua, contrastive) against hand computations with a bigram model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from entropykit.lm import ByteModel
from entropykit.lm.prompt import METHODS, compress_prompt, unit_spans
from entropykit.models import Encoding, LanguageModel
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig

BOS = 256


class Bigram(LanguageModel):
    """A deterministic byte model: p(next | previous byte) from a fixed table (BOS = 256)."""

    supports_cache = False

    def __init__(self, table: torch.Tensor) -> None:
        self.module = nn.Module()
        self.module.register_buffer("table", table)
        self.table = table
        self.name = "bigram"
        self.max_context = 128
        self.vocab_size = 257
        self.prefix_ids = [BOS]

    def encode(self, data: str | bytes) -> Encoding:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        return Encoding(list(raw), [(i, i + 1) for i in range(len(raw))], len(raw))

    def decode(self, ids: list[int]) -> bytes:
        return bytes(i for i in ids if i < 256)

    def forward(self, input_ids: torch.Tensor, past: object = None) -> tuple[torch.Tensor, object]:
        return self.table[input_ids].float(), None

    def bits(self, prev: int, nxt: int) -> float:
        lp = torch.log_softmax(self.table[prev].double(), -1)
        return float(-lp[nxt] / math.log(2))


@pytest.fixture(scope="module")
def bigram() -> Bigram:
    g = torch.Generator().manual_seed(3)
    return Bigram(torch.randn(257, 257, generator=g) * 2.0)


@pytest.fixture(scope="module")
def gpt() -> ByteModel:
    torch.manual_seed(0)
    return ByteModel(ByteGPT(ByteGPTConfig(block_size=128, n_layer=1, n_head=2, n_embd=16)))


TEXT = "ab cd. ef gh ij. kl mn\nop qr st."


def _units(text: str, unit: str = "word") -> list[bytes]:
    data = text.encode()
    return [data[a:b] for a, b in unit_spans(data, unit)]  # type: ignore[arg-type]


def _layout(u: bytes) -> bool:
    return b"\n" in u and not u.strip()


def _mean_bits(m: Bigram, prev: int, u: bytes) -> float:
    s, last = 0.0, prev
    for b in u:
        s, last = s + m.bits(last, b), b
    return s / len(u)


def _ref_llmlingua(m: Bigram, text: str, r: float, segment: int, coarse: float) -> np.ndarray:
    """LLMLingua by hand with the bigram: a unit's surprisal given the compressed prefix depends on the
    last kept byte before it."""
    units = _units(text)
    n, total = len(units), sum(map(len, units))
    kept = np.ones(n, dtype=bool)
    forced = np.array([_layout(u) for u in units])
    need = r * total
    dropped = 0
    if coarse > 0 and coarse * (1 - r) < 1:  # sentences: text up to . or a newline
        sent, s, pos = [], 0, 0
        bounds = [0]
        data = text.encode()
        for i, ch in enumerate(data):
            if ch in b".\n" and i + 1 < len(data) and data[i + 1:i + 2] not in (b".",):
                j = i + 1
                while j < len(data) and data[j:j + 1] == b" ":
                    j += 1
                bounds.append(j)
        for u in units:
            while s + 1 < len(bounds) and pos >= bounds[s + 1]:
                s += 1
            sent.append(s)
            pos += len(u)
        full_bits, last = [], BOS
        for u in units:
            full_bits.append(_mean_bits(m, last, u) * len(u))
            last = u[-1]
        sent_a = np.array(sent)
        n_sent = int(sent_a.max()) + 1
        tok = np.array([sum(len(u) for u, k in zip(units, sent_a) if k == j) for j in range(n_sent)])
        bits = np.array([sum(b for b, k in zip(full_bits, sent_a) if k == j) for j in range(len(tok))])
        order = sorted(range(len(tok)), key=lambda j: -bits[j] / tok[j])
        keep_s, got = set(), 0
        for j in order:
            if got >= coarse * (1 - r) * total:
                break
            keep_s.add(j)
            got += tok[j]
        for i in range(n):
            if sent[i] not in keep_s and not forced[i]:
                kept[i] = False
                dropped += len(units[i])
    rest = max(0.0, need - dropped)
    seg, acc, s = [], 0, 0
    for i in range(n):
        if acc >= segment:
            s, acc = s + 1, 0
        seg.append(s)
        acc += len(units[i]) if kept[i] else 0
    alive = [sum(len(units[i]) for i in range(n) if kept[i] and seg[i] == j) for j in range(s + 1)]
    done = 0.0
    for j in range(s + 1):
        share = sum(alive[:j + 1]) / sum(alive) * rest
        scores, last = {}, BOS
        for i in range(n):
            if kept[i] and seg[i] <= j:
                if seg[i] == j:
                    scores[i] = _mean_bits(m, last, units[i])
                last = units[i][-1]
        for i in sorted(scores, key=lambda i: scores[i]):
            if done >= share:
                break
            if not forced[i]:
                kept[i] = False
                done += len(units[i])
    return kept


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
@pytest.mark.parametrize(("segment", "coarse"), [(6, 0.0), (12, 0.0), (1000, 0.0), (8, 1.4), (8, 1.0)])
def test_llmlingua_matches_hand_computation(
    bigram: Bigram, ratio: float, segment: int, coarse: float
) -> None:
    cp = compress_prompt(TEXT, bigram, ratio=ratio, method="llmlingua", segment=segment, coarse=coarse)
    ref = _ref_llmlingua(bigram, TEXT, ratio, segment, coarse)
    assert cp.kept.tolist() == ref.tolist()
    assert cp.ratio >= ratio


def test_llmlingua_conditions_on_the_compressed_prefix(bigram: Bigram) -> None:
    # one segment per word: each word's first byte is scored after the last KEPT byte before it
    cp = compress_prompt(TEXT, bigram, ratio=0.5, method="llmlingua", segment=1, coarse=0.0)
    units = _units(TEXT)
    last = BOS
    assert cp.unit_score is not None
    for i, u in enumerate(units):
        if not _layout(u):
            assert cp.unit_score[i] == pytest.approx(_mean_bits(bigram, last, u), rel=1e-5)
        if cp.kept[i]:
            last = u[-1]
    # one segment holding everything: plain self-information per token (Selective Context's ranking)
    one = compress_prompt(TEXT, bigram, ratio=0.5, method="llmlingua", segment=10_000, coarse=0.0)
    sc = compress_prompt(TEXT, bigram, ratio=0.5, method="surprisal")
    assert one.kept.tolist() == sc.kept.tolist()


def _greedy(m: Bigram, last: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        last = int(torch.argmax(m.table[last]))
        out.append(last)
    return out


@pytest.mark.parametrize("lookahead", [0, 3])
def test_contrastive_matches_hand_computation(bigram: Bigram, lookahead: int) -> None:
    # bigram: removing unit u = x[a:b] changes only the next byte's surprisal: from s(x_b | x_{b-1})
    # to s(x_b | x_{a-1}); per token of u
    text = "ab cd ef\ngh ij"
    cp = compress_prompt(text, bigram, ratio=0.5, method="contrastive", window=4, lookahead=lookahead)
    data = list(text.encode()) + _greedy(bigram, text.encode()[-1], lookahead)
    pos = 0
    assert cp.unit_score is not None
    for i, u in enumerate(_units(text)):
        a, b = pos, pos + len(u)
        pos = b
        if _layout(u):
            assert math.isnan(cp.unit_score[i])
            continue
        if b >= len(data):
            assert cp.unit_score[i] == math.inf  # nothing after it: kept
            continue
        prev = data[a - 1] if a else BOS
        want = (bigram.bits(prev, data[b]) - bigram.bits(data[b - 1], data[b])) / len(u)
        assert cp.unit_score[i] == pytest.approx(want, abs=1e-5)
    order = np.argsort(np.nan_to_num(cp.unit_score, nan=np.inf), kind="stable")
    total, dropped = sum(cp.unit_tokens), 0
    want_kept = np.ones(len(cp.units), dtype=bool)
    for u in order:
        if dropped >= 0.5 * total:
            break
        if not math.isnan(cp.unit_score[u]):
            want_kept[u] = False
            dropped += cp.unit_tokens[u]
    assert cp.kept.tolist() == want_kept.tolist()


def test_contrastive_on_a_transformer_is_the_deletion_effect(gpt: ByteModel) -> None:
    """The cached-prefix path of a ByteGPT equals full forwards of the text with the unit removed."""
    text = "the cat sat on the mat, and then it slept."
    window, lookahead = 5, 4
    cp = compress_prompt(text, gpt, ratio=0.4, method="contrastive", window=window, lookahead=lookahead)
    data = list(text.encode())
    with torch.no_grad():  # greedy lookahead by full forwards
        for _ in range(lookahead):
            z = gpt.module(torch.tensor([[BOS, *data]]))[0]
            data.append(int(torch.argmax(z[0, -1])))

    def bits(seq: list[int]) -> np.ndarray:
        with torch.no_grad():
            z = gpt.module(torch.tensor([[BOS, *seq[:-1]]]))[0][0].double()
        return (-torch.log_softmax(z, -1).gather(-1, torch.tensor(seq)[:, None])[:, 0] / math.log(2)).numpy()

    full = bits(data)
    pos = 0
    assert cp.unit_score is not None
    for i, u in enumerate(cp.units):
        a, b = pos, pos + len(u.encode())
        pos = b
        e = min(b + window, len(data))
        cut = bits(data[:a] + data[b:e])
        want = (cut[a:].sum() - full[b:e].sum()) / (b - a)
        assert cp.unit_score[i] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("unit", ["token", "word", "phrase"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_budget(gpt: ByteModel, method: str, unit: str, ratio: float) -> None:
    text = "The quick brown fox jumps over the lazy dog, and then, at last, it sleeps.\nBye now."
    g = torch.Generator().manual_seed(0)
    cp = compress_prompt(text, gpt, ratio=ratio, unit=unit, method=method, generator=g)  # type: ignore[arg-type]
    total = int(cp.unit_tokens.sum())
    dropped = int(cp.unit_tokens[~cp.kept].sum())
    assert dropped >= ratio * total
    assert dropped - cp.unit_tokens[~cp.kept].max() < ratio * total  # no unit more than needed
    if unit == "token":  # one byte per unit (ASCII): the budget is met exactly
        assert dropped == math.ceil(ratio * total)
    assert cp.text.count("\n") == 1  # lines are never joined
    assert cp.text.encode() == b"".join(u.encode() for u, k in zip(cp.units, cp.kept, strict=True) if k)


def test_token_units_keep_characters_whole(gpt: ByteModel) -> None:
    text = "naïve café über straße"
    for method in ("surprisal", "llmlingua", "contrastive"):
        cp = compress_prompt(text, gpt, ratio=0.5, unit="token", method=method)  # type: ignore[arg-type]
        assert all(u != "\ufffd" for u in cp.units)
        assert len(cp.units) == len(text)
        cp.text.encode().decode("utf-8")  # whole characters only


@pytest.mark.parametrize("method", sorted(METHODS))
def test_forced_keep(gpt: ByteModel, method: str) -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta. iota kappa lambda mu"
    cp = compress_prompt(text, gpt, ratio=0.6, method=method, keep=["gamma delta", "mu"])  # type: ignore[arg-type]
    assert "gamma delta" in cp.text and cp.text.endswith("mu")
    assert cp.ratio >= 0.6
    # an unreachable budget: everything but the forced units goes
    cp = compress_prompt(text, gpt, ratio=0.95, method=method, keep=["gamma delta", "mu"])  # type: ignore[arg-type]
    assert cp.text == "gamma delta mu"


def test_registry() -> None:
    assert set(METHODS) == {"surprisal", "llmlingua", "contrastive", "random"}
    for m in METHODS.values():
        assert m.reference and m.summary
    assert "Jiang" in METHODS["llmlingua"].reference and "Li et al." in METHODS["surprisal"].reference


def test_bad_method_input(gpt: ByteModel) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        compress_prompt("a b c", gpt, method="lingua")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment must be"):
        compress_prompt("a b c", gpt, method="llmlingua", segment=0)
    with pytest.raises(TypeError, match="segment must be an int"):
        compress_prompt("a b c", gpt, method="llmlingua", segment=2.5)  # type: ignore[arg-type]
    for bad in (-1.0, 0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="coarse must be"):
            compress_prompt("a b c", gpt, method="llmlingua", coarse=bad)
    with pytest.raises(ValueError, match="window must be"):
        compress_prompt("a b c", gpt, method="contrastive", window=0)
    with pytest.raises(ValueError, match="lookahead must be"):
        compress_prompt("a b c", gpt, method="contrastive", lookahead=-1)


def test_cli_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from entropykit.cli.main import main
    from entropykit.lm import load_model

    f = tmp_path / "p.txt"
    f.write_text("The cat sat on the mat, all day long, and then it slept.")
    assert main(["compress-prompt", str(f), "--model", "bytegpt-small", "--ratio", "0.4",
                 "--method", "contrastive", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = compress_prompt(f.read_text(), load_model("bytegpt-small"), ratio=0.4, method="contrastive")
    assert out["text"] == want.text and out["method"] == "contrastive" and out["ratio"] >= 0.4
    with pytest.raises(SystemExit):
        main(["compress-prompt", str(f), "--model", "bytegpt-small", "--method", "lingua"])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text("abcd", min_size=1, max_size=4), min_size=2, max_size=12),
       st.sampled_from([0.2, 0.5, 0.8]), st.sampled_from(sorted(METHODS)), st.sampled_from(["word", "token"]),
       st.booleans())
def test_budget_and_keep_property(
    bigram: Bigram, words: list[str], ratio: float, method: str, unit: str, newline: bool
) -> None:
    text = " ".join(words[:-1]) + ("\n" if newline else " ") + words[-1]
    cp = compress_prompt(text, bigram, ratio=ratio, unit=unit, method=method,  # type: ignore[arg-type]
                         keep=[words[0]], segment=3, generator=torch.Generator().manual_seed(0))
    data = text.encode()
    hits = [(m.start(), m.end()) for m in re.finditer(re.escape(words[0].encode()), data)]
    forced, pos = [], 0
    for u in cp.units:
        a, b = pos, pos + len(u.encode())
        pos = b
        forced.append(any(x < b and y > a for x, y in hits) or (unit == "word" and _layout(u.encode()))
                      or u == "\n")
    f = np.array(forced)
    assert words[0] in cp.text and cp.text.count("\n") == int(newline)
    assert cp.kept[f].all()
    total = int(cp.unit_tokens.sum())
    dropped = int(cp.unit_tokens[~cp.kept].sum())
    if dropped < ratio * total:  # the kept units leave too little: everything else is gone
        assert not cp.kept[~f].any()
    else:
        assert dropped - cp.unit_tokens[~cp.kept].max() < ratio * total


def test_contrastive_longer_than_the_context() -> None:
    """A prompt longer than the model's context: each deletion and its reference see the same window of
    the last ``context - 1`` tokens (after BOS)."""
    torch.manual_seed(1)
    m = ByteModel(ByteGPT(ByteGPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16)))
    text = "one two three four five six seven eight nine ten"
    window, room = 3, 15
    cp = compress_prompt(text, m, ratio=0.5, method="contrastive", window=window, lookahead=0)
    data = list(text.encode())

    def bits(seq: list[int], n: int) -> float:  # surprisal of the last n tokens of seq
        with torch.no_grad():
            z = m.module(torch.tensor([[BOS, *seq[:-1]]]))[0][0].double()
        s = -torch.log_softmax(z, -1).gather(-1, torch.tensor(seq)[:, None])[:, 0] / math.log(2)
        return float(s[-n:].sum())

    pos = 0
    assert cp.unit_score is not None
    for i, u in enumerate(cp.units):
        a, b = pos, pos + len(u.encode())
        pos = b
        e = min(b + window, len(data))
        if e <= b:
            assert cp.unit_score[i] == math.inf
            continue
        cut = (data[:a] + data[b:e])[-room:]
        ref = data[:e][-room:]
        want = (bits(cut, e - b) - bits(ref, e - b)) / (b - a)
        assert cp.unit_score[i] == pytest.approx(want, abs=1e-4)
