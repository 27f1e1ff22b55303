"""Prompt compression: drop the units (tokens, words, phrases) a causal LM can best do without.

Four registered methods (``METHODS``), all with one token budget: at least ``ratio`` of the prompt's
tokens (its tokenization under the model) are dropped, and no more than the last dropped unit needs.

- ``"surprisal"``: Selective Context (Li et al., EMNLP 2023, "Compressing Context to Enhance Inference
  Efficiency of Large Language Models"). Every token's self-information ``I(x_t) = -log2 p(x_t|x_<t)``
  from one pass over the whole prompt, summed over a unit; units are dropped lowest first, ranked by
  bits per token (``rank="mean"``) or by the total (``rank="sum"``, the paper's choice).
- ``"llmlingua"``: LLMLingua (Jiang et al., EMNLP 2023, "LLMLingua: Compressing Prompts for
  Accelerated Inference of Large Language Models"): a coarse budget controller drops whole sentences
  (lines) of lowest mean surprisal first while at least ``coarse`` times the target length is kept,
  then iterative token-level compression (ITPC) walks the prompt in segments of ``segment`` tokens and
  scores each segment's units conditioned on the ALREADY COMPRESSED prefix, dropping the least
  surprising of each segment to its share of the budget (the paper's per-segment threshold).
- ``"contrastive"``: a unit's measured effect on the prompt text after it: the bits that removing the
  unit adds to the ``window`` tokens that follow it,
  ``C(u) = sum_{t in window} [-log2 p(x_t | x_<t without u)] - [-log2 p(x_t | x_<t)]``,
  per token of the unit (LongLLMLingua's contrastive perplexity, Jiang et al., ACL 2024, with the unit
  removed instead of a question added; occlusion/erasure importance, Li, Monroe & Jurafsky 2016,
  "Understanding Neural Networks through Representation Erasure"). ``lookahead`` tokens of the model's
  own greedy continuation are appended first, so the prompt's last units have text after them too;
  the evaluation continuation is never read. Units with the smallest ``C(u)`` are dropped first.
- ``"random"``: random units to the same budget: the baseline a compressor has to beat.

Units (byte spans that tile the text, so keeping them all gives the text back):
``"token"``: the model's tokens (never splitting a UTF-8 character); ``"word"``: a run of non-space
bytes and the whitespace after it (a word is never broken); ``"phrase"``: text up to and including a
run of ``, . ; : ! ?`` or a newline, plus the whitespace after. A line break with the indentation
after it is a unit of its own (kept by default: ``keep_layout``). ``keep`` names substrings that must
survive (every occurrence; units overlapping them are kept).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from entropykit._validate import check_choice, check_real

if TYPE_CHECKING:
    import torch

    from entropykit.models import LanguageModel

__all__ = ["METHODS", "UNITS", "CompressedPrompt", "PromptMethod", "compress_prompt", "unit_spans"]

Unit = Literal["token", "word", "phrase"]
Method = Literal["surprisal", "llmlingua", "contrastive", "random"]
UNITS = ("token", "word", "phrase")
_WORD = re.compile(rb"\S+\s*")
_PHRASE = re.compile(rb"[^,.;:!?\n]*(?:[,.;:!?]+|\n)\s*|[^,.;:!?\n]+$")
# LLMLingua's coarse unit: a sentence or a line
_SENTENCE = re.compile(rb"[^.!?\n]*(?:[.!?]+\s*|\n)|[^.!?\n]+$")
_ROWS_BYTES = 1 << 26  # logit bytes per batched forward of the contrastive score


@dataclass(frozen=True)
class PromptMethod:
    """A registered compression method: its name, its source and the parameters it reads."""

    name: str
    reference: str
    parameters: tuple[str, ...]
    summary: str


METHODS: dict[str, PromptMethod] = {
    m.name: m
    for m in (
        PromptMethod("surprisal", "Li et al. (2023), Selective Context, EMNLP", ("rank",),
                     "drop the units of lowest self-information (one pass over the prompt)"),
        PromptMethod("llmlingua", "Jiang et al. (2023), LLMLingua, EMNLP", ("segment", "coarse"),
                     "sentence-level budget controller, then iterative compression of segments "
                     "conditioned on the compressed prefix"),
        PromptMethod("contrastive",
                     "Jiang et al. (2024), LongLLMLingua (contrastive perplexity), ACL; Li, Monroe & "
                     "Jurafsky (2016), representation erasure", ("window", "lookahead"),
                     "drop the units whose removal least raises the surprisal of the text after them"),
        PromptMethod("random", "baseline", (), "drop random units (generator seeds it)"),
    )
}


@dataclass
class CompressedPrompt:
    """The compressed prompt and what was dropped.

    ``text``: the kept units in order; ``units``: every unit's text, tokens and self-information
    (bits, one pass over the whole prompt); ``unit_score``: the key the method ranked by (higher =
    kept first; bits per token: self-information for ``surprisal``, surprisal given the compressed
    prefix for ``llmlingua``, the contrastive effect for ``contrastive``, NaN for ``random`` and for
    units never scored); ``kept``: a boolean per unit; ``ratio``: the fraction of the prompt's tokens
    dropped (``ratio_requested`` is what was asked)."""

    text: str
    units: list[str]
    unit_tokens: np.ndarray
    unit_bits: np.ndarray
    kept: np.ndarray
    ratio_requested: float
    method: str
    unit_score: np.ndarray | None = None

    @property
    def ratio(self) -> float:
        total = int(self.unit_tokens.sum())
        return float(self.unit_tokens[~self.kept].sum() / total) if total else 0.0

    @property
    def dropped(self) -> list[tuple[str, float]]:
        """The dropped units with their self-information in bits, in text order."""
        return [(u, float(b)) for u, b, k in zip(self.units, self.unit_bits, self.kept, strict=True) if not k]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "ratio_requested": self.ratio_requested, "ratio": self.ratio,
                "method": self.method, "units": len(self.units), "kept_units": int(self.kept.sum()),
                "bits_kept": float(self.unit_bits[self.kept].sum()),
                "bits_dropped": float(self.unit_bits[~self.kept].sum()),
                "dropped": [{"text": u, "bits": b} for u, b in self.dropped]}


def unit_spans(data: bytes, unit: Unit, token_offsets: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Byte spans ``(start, end)`` of the units of ``data``; they tile ``data`` exactly.

    >>> unit_spans(b"Hi there, you. Bye", "word")
    [(0, 3), (3, 10), (10, 15), (15, 18)]
    >>> unit_spans(b"Hi there, you. Bye", "phrase")
    [(0, 10), (10, 15), (15, 18)]
    """
    check_choice(unit, UNITS, "unit")
    if unit == "token":
        if token_offsets is None:
            raise ValueError("unit='token' needs the token offsets")
        # a unit never splits a UTF-8 character (byte models: a token is one byte of it)
        starts = sorted({int(a) for a, _ in token_offsets if a >= len(data) or data[a] & 0xC0 != 0x80})
    else:
        pattern = _WORD if unit == "word" else _PHRASE
        starts = []
        for m in pattern.finditer(data):
            if m.end() > m.start():
                starts.append(m.start())
                # a line break and the indentation after it are a unit of their own (the layout)
                body = m.group().rstrip()
                nl = m.group().find(b"\n", len(body))
                if body and nl >= 0:
                    starts.append(m.start() + nl)
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    ends = [*starts[1:], len(data)]
    return [(a, b) for a, b in zip(starts, ends, strict=True) if b > a]


def _forced(data: bytes, keep: Sequence[str | bytes]) -> list[tuple[int, int]]:
    spans = []
    for i, k in enumerate(keep):
        kb = k.encode("utf-8") if isinstance(k, str) else k
        if not isinstance(kb, bytes) or not kb:
            raise ValueError(f"keep[{i}] must be a non-empty string, got {k!r}")
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(kb), data)]
    return spans


@dataclass
class _Prompt:
    """The prompt cut into units, with what every method needs."""

    lm: LanguageModel
    data: bytes
    spans: list[tuple[int, int]]
    starts: np.ndarray
    tokens: np.ndarray  # tokens per unit (each token belongs to the unit holding its first byte)
    bits: np.ndarray  # self-information per unit (bits), one pass over the whole prompt
    forced: np.ndarray  # never dropped

    @property
    def total(self) -> float:
        return float(self.tokens.sum())


def _drop(order: Sequence[int] | np.ndarray, p: _Prompt, kept: np.ndarray, need: float) -> float:
    """Drop units of ``order`` (skipping forced and already dropped ones) while fewer than ``need``
    tokens are dropped in this call; returns the tokens dropped."""
    done = 0.0
    for u in order:
        if done >= need:
            break
        if kept[u] and not p.forced[u]:
            kept[u] = False
            done += float(p.tokens[u])
    return done


def _unit_means(p: _Prompt, pieces: list[int], text_starts: list[int], offsets: np.ndarray,
                bits: np.ndarray) -> np.ndarray:
    """Mean bits per token of units ``pieces`` laid out at ``text_starts`` in a rescored text."""
    which = np.searchsorted(np.asarray(text_starts), offsets[:, 0], side="right") - 1
    n = np.bincount(which, minlength=len(pieces))
    s = np.bincount(which, weights=bits.astype(np.float64), minlength=len(pieces))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _llmlingua(p: _Prompt, r: float, segment: int, coarse: float) -> tuple[np.ndarray, np.ndarray]:
    from entropykit.lm.scoring import score

    n_units = len(p.spans)
    kept = np.ones(n_units, dtype=bool)
    need = r * p.total
    key = np.full(n_units, np.nan)
    # 1. budget controller: whole sentences of lowest mean surprisal go first, while the kept text stays
    #    at least `coarse` times the target length (LLMLingua's token_budget_ratio)
    dropped = 0.0
    if coarse > 0 and coarse * (1 - r) < 1:
        sent_starts = np.array([m.start() for m in _SENTENCE.finditer(p.data) if m.end() > m.start()] or [0])
        sent = np.searchsorted(sent_starts, p.starts, side="right") - 1
        tok = np.bincount(sent, weights=p.tokens, minlength=len(sent_starts))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(sent, weights=p.bits, minlength=len(sent_starts)) / tok
        budget = coarse * (1 - r) * p.total  # tokens the sentences kept must reach
        keep_s = np.zeros(len(sent_starts), dtype=bool)
        got = 0.0
        for j in np.argsort(-np.nan_to_num(mean, nan=np.inf), kind="stable"):  # most surprising first
            if got >= budget:
                break
            keep_s[j] = True
            got += tok[j]
        drop_units = np.flatnonzero(~keep_s[sent] & ~p.forced)
        dropped = _drop(drop_units, p, kept, np.inf)
    # 2. iterative token-level compression: segments scored given the compressed prefix
    rest = max(0.0, need - dropped)
    seg_id = np.zeros(n_units, dtype=np.int64)
    acc, s = 0, 0
    for u in range(n_units):
        if acc >= segment:
            s, acc = s + 1, 0
        seg_id[u] = s
        acc += int(p.tokens[u]) if kept[u] else 0
    alive = np.bincount(seg_id, weights=np.where(kept, p.tokens, 0), minlength=s + 1)
    share = np.cumsum(alive) / max(alive.sum(), 1) * rest  # cumulative token target per segment
    done = 0.0
    for j in range(s + 1):
        if rest <= 0:
            break
        if not (kept & (seg_id == j)).any():  # the sentence stage took the whole segment
            continue
        pieces = [u for u in range(n_units) if kept[u] and seg_id[u] <= j]
        texts = [p.data[a:b] for a, b in (p.spans[u] for u in pieces)]
        text_starts = np.cumsum([0, *map(len, texts[:-1])]).tolist()
        res = score(b"".join(texts), p.lm)
        means = _unit_means(p, pieces, text_starts, res.offsets, res.surprisal_bits)
        here = [i for i, u in enumerate(pieces) if seg_id[u] == j]
        for i in here:
            key[pieces[i]] = means[i]
        order = [pieces[i] for i in sorted(here, key=lambda i: np.nan_to_num(means[i], nan=np.inf))]
        done += _drop(order, p, kept, share[j] - done)
    if done < rest:  # forced units held a segment back: take the rest where the scores are lowest
        _drop(np.argsort(np.nan_to_num(key, nan=np.inf), kind="stable"), p, kept, rest - done)
    return kept, key


def _batched_bits(lm: LanguageModel, seqs: list[tuple[list[int], int]]) -> list[np.ndarray]:
    """Surprisal (bits) of ``seq[t0:]`` given ``seq[:t]`` for each ``(seq, t0)`` (``t0 >= 1``; the seq
    includes the model's prefix), in batches padded on the right (causal: padding never reaches back)."""
    import torch

    out: list[np.ndarray] = [np.empty(0)] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    i = 0
    while i < len(order):
        longest = len(seqs[order[min(len(order) - 1, i)]][0])
        per = max(1, _ROWS_BYTES // (4 * lm.vocab_size * max(longest, 1)))
        batch = order[i:i + per]
        longest = max(len(seqs[k][0]) for k in batch)
        x = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, k in enumerate(batch):
            x[row, :len(seqs[k][0])] = torch.tensor(seqs[k][0])
        with torch.inference_mode():
            logits, _ = lm.forward(x)
        for row, k in enumerate(batch):
            seq, t0 = seqs[k]
            z = torch.log_softmax(logits[row, t0 - 1:len(seq) - 1].double(), -1)
            tgt = torch.tensor(seq[t0:]).long()
            out[k] = (-z.gather(-1, tgt[:, None])[:, 0] / np.log(2)).numpy()
        i += len(batch)
    return out


def _is_bytegpt(lm: LanguageModel) -> bool:
    from entropykit.models import ByteModel
    from entropykit.models.bytegpt import ByteGPT

    return isinstance(lm, ByteModel) and isinstance(lm.module, ByteGPT)


def _cached_bits(lm: LanguageModel, seqs: list[tuple[list[int], int]], n: int) -> list[np.ndarray]:
    """``_batched_bits`` for a ByteGPT when the last of ``seqs`` is the whole text (``n`` tokens) and every
    other one is it with one piece removed: run the whole text once and each shortened sequence from
    the cache of its common start (the same numbers as running it from scratch, up to rounding)."""
    import torch

    full, t0_full = seqs[-1]
    with torch.inference_mode():
        logits, past = lm.module(torch.tensor([full]))
        out = []
        for seq, t0 in seqs[:-1]:
            common = next((i for i, (x, y) in enumerate(zip(seq, full, strict=False)) if x != y),
                          min(len(seq), n))
            common = min(common, t0 - 1)  # the cache holds the inputs before the first target's logit row
            kv = [(k[:, :, :common], v[:, :, :common]) for k, v in past]
            z, _ = lm.module(torch.tensor([seq[common:len(seq) - 1]]), kv)
            z = torch.log_softmax(z[0, t0 - 1 - common:].double(), -1)
            out.append((-z.gather(-1, torch.tensor(seq[t0:])[:, None])[:, 0] / np.log(2)).numpy())
        z = torch.log_softmax(logits[0, t0_full - 1:len(full) - 1].double(), -1)
        out.append((-z.gather(-1, torch.tensor(full[t0_full:])[:, None])[:, 0] / np.log(2)).numpy())
    return out


def _greedy(lm: LanguageModel, seq: list[int], n: int) -> list[int]:
    """``n`` tokens of the model's greedy continuation of ``seq`` (prefix included)."""
    import torch

    ctx = int(lm.max_context)
    seq = seq[:len(lm.prefix_ids)] + seq[len(lm.prefix_ids):][-max(1, ctx - n - len(lm.prefix_ids)):]
    out: list[int] = []
    with torch.inference_mode():
        logits, past = lm.forward(torch.tensor([seq]))
        for k in range(n):
            nxt = int(torch.argmax(logits[0, -1]))
            out.append(nxt)
            if k + 1 < n:
                if lm.supports_cache and past is not None:
                    logits, past = lm.forward(torch.tensor([[nxt]]), past)
                else:
                    logits, _ = lm.forward(torch.tensor([seq + out]))
    return out


def _contrastive(p: _Prompt, window: int, lookahead: int) -> np.ndarray:
    from entropykit.lm.scoring import _encode

    lm = p.lm
    ids_np, offs, _, _ = _encode(lm, p.data)
    ids = [int(i) for i in ids_np]
    pre = [int(i) for i in lm.prefix_ids]
    room = int(lm.max_context) - len(pre)  # text tokens a forward pass holds after the prefix
    if lookahead:
        ids = ids + _greedy(lm, pre + ids, lookahead)
    t_all = len(ids)
    unit_of = np.searchsorted(p.starts, offs[:, 0], side="right") - 1
    first = np.full(len(p.spans), -1)
    last = np.full(len(p.spans), -1)
    for t, u in enumerate(unit_of):
        if first[u] < 0:
            first[u] = t
        last[u] = t + 1
    todo = [u for u in range(len(p.spans)) if not p.forced[u] and first[u] >= 0]
    seqs: list[tuple[list[int], int]] = []
    jobs: list[tuple[int, int, int, bool]] = []  # (unit, first target, targets, own reference window)
    fits = t_all <= room
    window = min(window, room - 1)
    for u in todo:
        a, b = int(first[u]), int(last[u])
        e = min(b + window, t_all)
        lo = max(0, e - (b - a) - room)
        t0 = len(pre) + a - lo
        skip = 1 if t0 == 0 else 0  # no prefix and nothing before u: the first target has no context
        start = b + skip
        if e <= start:
            continue
        seqs.append((pre + ids[lo:a] + ids[b:e], t0 + skip))
        if not fits:  # the reference sees the same history window
            lo2 = max(0, e - room)
            seqs.append((pre + ids[lo2:e], len(pre) + start - lo2))
        jobs.append((u, start, e - start, not fits))
    if fits:
        seqs.append((pre + ids, len(pre)) if pre else (ids, 1))
    got = _cached_bits(lm, seqs, len(pre) + t_all) if fits and _is_bytegpt(lm) else _batched_bits(lm, seqs)
    ref_all = got[-1] if fits and got else None
    c = np.full(len(p.spans), np.nan)
    k = 0
    for u, start, n, own in jobs:
        deleted = got[k]
        if own:
            ref = got[k + 1]
            k += 2
        else:
            assert ref_all is not None
            j = start - (0 if pre else 1)
            ref = ref_all[j:j + n]
            k += 1
        c[u] = float(deleted.sum() - ref.sum()) / max(int(p.tokens[u]), 1)
    # nothing after a unit (the prompt's end, lookahead 0): its effect cannot be measured, so it stays
    c[[u for u in todo if np.isnan(c[u])]] = np.inf
    return c


def compress_prompt(
    text: str | bytes,
    model: LanguageModel | str | Path | None = None,
    *,
    ratio: float = 0.5,
    unit: Unit = "word",
    method: Method = "surprisal",
    rank: Literal["mean", "sum"] = "mean",
    keep: Sequence[str | bytes] = (),
    keep_layout: bool = True,
    segment: int = 64,
    coarse: float = 1.4,
    window: int = 16,
    lookahead: int = 16,
    generator: torch.Generator | None = None,
) -> CompressedPrompt:
    """Drop units of ``text`` until at least ``ratio`` of its tokens are gone (see ``METHODS``).

    Self-information of unit u: ``I(u) = sum_{t in u} -log2 p(x_t | x_<t)`` bits (one forward pass
    over the whole prompt with ``entropykit.lm.score``). ``method``:

    - ``"surprisal"`` (Selective Context): units dropped in increasing order of ``I(u) / tokens(u)``
      (``rank="mean"``) or ``I(u)`` (``rank="sum"``);
    - ``"llmlingua"`` (LLMLingua): whole sentences/lines of lowest mean surprisal are dropped while
      the kept tokens stay >= ``coarse * (1 - ratio)`` of the prompt (``coarse=0``: no sentence stage);
      then, segment by segment of ``segment`` tokens, each unit's bits per token given the
      compressed prefix, the lowest dropped until the segment's share of the remaining budget;
    - ``"contrastive"``: ``C(u)`` = bits per token of u that removing u adds to the next ``window``
      tokens (after ``lookahead`` greedy tokens are appended to the prompt); lowest dropped first;
    - ``"random"``: a random order of units (``generator`` seeds it).

    Budget: units are dropped until at least ``ratio`` of the tokens are gone; the last unit dropped
    is the first to reach it. Units overlapping ``keep`` are never dropped, nor (with ``keep_layout``)
    the line breaks and indentation, units of their own for ``"word"`` and ``"phrase"``: dropping never
    joins two lines. When kept units make the budget unreachable, every other unit is dropped.

    Sources: Li et al. (2023), Selective Context; Jiang et al. (2023), LLMLingua; Jiang et al. (2024),
    LongLLMLingua; Li, Monroe & Jurafsky (2016); Pan et al. (2024), LLMLingua-2 (token-rate budget).

    >>> from entropykit.lm import ByteModel
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> import torch; _ = torch.manual_seed(0)
    >>> m = ByteModel(ByteGPT(ByteGPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16)))
    >>> cp = compress_prompt("the cat sat on the mat", m, ratio=0.5, keep=["cat"])
    >>> "cat" in cp.text, cp.ratio >= 0.5
    (True, True)
    >>> cp = compress_prompt("the cat sat on the mat", m, ratio=0.5, method="llmlingua")
    >>> cp.ratio >= 0.5
    True
    """
    from entropykit._validate import check_int
    from entropykit.lm.scoring import score
    from entropykit.models import resolve_model

    if not isinstance(text, (str, bytes)):
        raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
    r = check_real(ratio, "ratio", 0.0, 1.0, lo_open=True, hi_open=True)
    check_choice(unit, UNITS, "unit")
    check_choice(rank, ("mean", "sum"), "rank")
    check_choice(method, tuple(METHODS), "method")
    check_int(segment, "segment", 1)
    coarse = check_real(coarse, "coarse", 0.0, finite=True)
    if 0 < coarse < 1:  # the sentence stage must leave the token stage something to do, never overshoot
        raise ValueError(f"coarse must be 0 (no sentence stage) or >= 1, got {coarse!r}")
    check_int(window, "window", 1)
    check_int(lookahead, "lookahead", 0)
    if isinstance(keep, (str, bytes)):
        raise TypeError("keep must be a sequence of strings (a list), got a single string")
    lm = resolve_model(model)
    res = score(text, lm)
    data = res.text
    if len(res) == 0:
        raise ValueError("text must have at least one token, got an empty text")
    spans = unit_spans(data, unit, res.offsets)
    starts = np.array([a for a, _ in spans])
    ends = np.array([b for _, b in spans])
    # each token belongs to the unit holding its first byte
    which = np.searchsorted(starts, res.offsets[:, 0], side="right") - 1
    n_units = len(spans)
    tokens = np.bincount(which, minlength=n_units).astype(np.int64)
    bits = np.bincount(which, weights=res.surprisal_bits.astype(np.float64), minlength=n_units)
    forced = np.zeros(n_units, dtype=bool)
    for a, b in _forced(data, keep):
        forced |= (starts < b) & (ends > a)
    forced |= tokens == 0  # bytes no scored token starts in (e.g. a first token a model cannot score)
    if keep_layout:  # never join lines: line breaks (and the indentation after them) stay
        forced |= np.array([b"\n" in data[a:b] and not data[a:b].strip() for a, b in spans])
    p = _Prompt(lm, data, spans, starts, tokens, bits, forced)
    kept = np.ones(n_units, dtype=bool)
    need = r * p.total
    key: np.ndarray
    if method == "llmlingua":
        kept, key = _llmlingua(p, r, segment, coarse)
    else:
        if method == "random":
            import torch

            key = np.full(n_units, np.nan)
            order = torch.randperm(n_units, generator=generator).numpy()
        else:
            if method == "contrastive":
                key = _contrastive(p, window, lookahead)
            else:
                key = bits / np.maximum(tokens, 1) if rank == "mean" else bits.copy()
            order = np.argsort(np.nan_to_num(key, nan=np.inf), kind="stable")
        _drop(order, p, kept, need)
    key = np.where(forced, np.nan, key)
    out = b"".join(data[a:b] for (a, b), k in zip(spans, kept, strict=True) if k)
    return CompressedPrompt(
        text=out.decode("utf-8", errors="ignore"),
        units=[data[a:b].decode("utf-8", errors="replace") for a, b in spans],
        unit_tokens=tokens,
        unit_bits=bits,
        kept=kept,
        ratio_requested=r,
        method=method,
        unit_score=key,
    )
