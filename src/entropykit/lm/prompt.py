"""Prompt compression by self-information: drop what the model finds least surprising.

Selective Context (Li et al., EMNLP 2023, "Compressing Context to Enhance Inference Efficiency of
Large Language Models") scores every token's self-information ``I(x_t) = -log2 p(x_t | x_<t)`` with
a causal LM, sums it over lexical units (tokens, words or phrases) and removes the least informative
units; LLMLingua-2 (Pan et al., 2024) budgets the removal by a target token rate. We do both: units
are ranked by self-information (``rank="mean"``: bits per token of the unit, the cost of keeping each
token; ``rank="sum"``: the unit's total, Selective Context's choice) and dropped lowest first until
``ratio`` of the prompt's tokens are gone. ``method="random"`` drops random units to the same token
budget: the baseline a compressor has to beat.

Units (byte spans that tile the text, so keeping them all gives the text back):
``"token"``: the model's tokens; ``"word"``: a run of non-space bytes and the whitespace after it;
``"phrase"``: text up to and including a run of ``, . ; : ! ?`` or a newline, plus the whitespace after.
A line break with the indentation after it is a unit of its own (kept by default: ``keep_layout``).
``keep`` names substrings that must survive (every occurrence; units overlapping them are kept).
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

__all__ = ["UNITS", "CompressedPrompt", "compress_prompt", "unit_spans"]

Unit = Literal["token", "word", "phrase"]
UNITS = ("token", "word", "phrase")
_WORD = re.compile(rb"\S+\s*")
_PHRASE = re.compile(rb"[^,.;:!?\n]*(?:[,.;:!?]+|\n)\s*|[^,.;:!?\n]+$")


@dataclass
class CompressedPrompt:
    """The compressed prompt and what was dropped.

    ``text``: the kept units in order; ``units``: every unit's text, tokens and self-information
    (bits); ``kept``: a boolean per unit; ``ratio``: the fraction of the prompt's tokens dropped
    (``ratio_requested`` is what was asked)."""

    text: str
    units: list[str]
    unit_tokens: np.ndarray
    unit_bits: np.ndarray
    kept: np.ndarray
    ratio_requested: float
    method: str

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
        starts = sorted({int(a) for a, _ in token_offsets})
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


def compress_prompt(
    text: str | bytes,
    model: LanguageModel | str | Path | None = None,
    *,
    ratio: float = 0.5,
    unit: Unit = "word",
    rank: Literal["mean", "sum"] = "mean",
    method: Literal["surprisal", "random"] = "surprisal",
    keep: Sequence[str | bytes] = (),
    keep_layout: bool = True,
    generator: torch.Generator | None = None,
) -> CompressedPrompt:
    """Drop the least informative units of ``text`` until ``ratio`` of its tokens are gone.

    Self-information of unit u: ``I(u) = sum_{t in u} -log2 p(x_t | x_<t)`` bits (one forward pass
    over the whole prompt with ``entropykit.lm.score``); units are dropped in increasing order of
    ``I(u) / tokens(u)`` (``rank="mean"``) or ``I(u)`` (``rank="sum"``, Selective Context) until at
    least ``ratio`` of the tokens are dropped; units overlapping ``keep`` are never dropped, nor (with
    ``keep_layout``) the line breaks and indentation, which are units of their own for ``"word"`` and
    ``"phrase"``: dropping never joins two lines. ``method="random"`` drops a random order of units
    to the same budget (``generator`` seeds it).

    Sources: Li et al. (2023), Selective Context; Pan et al. (2024), LLMLingua-2 (token-rate budget).

    >>> from entropykit.lm import ByteModel
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> import torch; _ = torch.manual_seed(0)
    >>> m = ByteModel(ByteGPT(ByteGPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16)))
    >>> cp = compress_prompt("the cat sat on the mat", m, ratio=0.5, keep=["cat"])
    >>> "cat" in cp.text, cp.ratio >= 0.5
    (True, True)
    """
    from entropykit.lm.scoring import score
    from entropykit.models import resolve_model

    if not isinstance(text, (str, bytes)):
        raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
    r = check_real(ratio, "ratio", 0.0, 1.0, lo_open=True, hi_open=True)
    check_choice(unit, UNITS, "unit")
    check_choice(rank, ("mean", "sum"), "rank")
    check_choice(method, ("surprisal", "random"), "method")
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
    if method == "random":
        import torch

        order = torch.randperm(n_units, generator=generator).numpy()
    else:
        key = bits / np.maximum(tokens, 1) if rank == "mean" else bits
        order = np.argsort(key, kind="stable")
    kept = np.ones(n_units, dtype=bool)
    budget, total = 0, int(tokens.sum())
    for u in order:
        if budget >= r * total:
            break
        if not forced[u]:
            kept[u] = False
            budget += int(tokens[u])
    out = b"".join(data[a:b] for (a, b), k in zip(spans, kept, strict=True) if k)
    return CompressedPrompt(
        text=out.decode("utf-8", errors="ignore"),
        units=[data[a:b].decode("utf-8", errors="replace") for a, b in spans],
        unit_tokens=tokens,
        unit_bits=bits,
        kept=kept,
        ratio_requested=r,
        method=method,
    )
