"""Score a text under a causal language model: per-token surprisal, entropy, rank and summary.

For each token x_t of a text (conditioned on the model's BOS token(s) and the tokens before it):

- surprisal   s_t = -log2 p(x_t | x_<t)                          (bits)
- entropy     H_t = -sum_v p_v log2 p_v                          (bits; the model's uncertainty)
- varentropy  V_t = sum_v p_v (log2 p_v)^2 - H_t^2               (bits^2)
- rank        r_t = 1 + #{v : logit_v > logit_{x_t}}              (1 = the model's top choice; GLTR)
- probability p(x_t | x_<t) = 2^-s_t
- window entropy W_t = mean(H_{t-w+1..t}) (the last ``window`` tokens, fewer at the start), and the
  high-window-entropy flag W_t > threshold (a stretch where the model stays uncertain).

Every unit in the result is **bits** and the names say so (``surprisal_bits``); perplexity is
``2 ** mean(surprisal_bits)`` (= exp of the mean surprisal in nats) and bits per byte is the total
surprisal in bits over the number of UTF-8 bytes of the text (comparable across tokenisers).

Long texts use the strided windows of ``entropykit.models.stream`` (the transformers perplexity
guide's loop, with one BOS rule for every part): window k feeds the model's prefix (BOS) plus up to
``C - 1`` text tokens (``C = model.max_context``) starting at token ``k * stride`` and scores only
the tokens the previous window did not reach, so every token is scored exactly once with at least
``C - stride`` text tokens of history (the first window scores all of its tokens with whatever
history they have). **Every window starts with BOS**, as the models were trained; before this
rule, windows after the first started without it, so long-text numbers differ slightly from
earlier releases. The numbers are exactly those of the naive loop (one window per forward pass),
but windows are batched into one forward pass, statistics are computed only for the scored
positions, without per-token Python work, and results go straight into preallocated arrays, so
working memory stays flat in the text length (the per-token result arrays, about 45 bytes per
token, are the only part that grows).

Why no key/value cache is carried across windows: in the next window a token sits at a different
position (absolute positions: ByteGPT, GPT-2) and, for any model, its keys in layers >= 2 depend on
that window's history, so reusing them would change the numbers. Exact strided scores therefore need
one fresh forward pass per window (batched here); a text that fits the context is one pass.

**Sliding KV cache** (``slide=True``, models with rotary positions: ByteGPT ``positions="rope"``):
attention then depends only on the distance between query and key, so the cache can slide over the
text and every token is computed once. The text (after BOS) is fed in pieces of ``stride`` tokens
(default ``W // 2``) through an attention window of ``W = slide_window`` tokens (default ``C``):
before each piece that would overflow the window, the cache is cut to its newest ``W - stride - 1``
tokens plus an attention sink (StreamingLLM, Xiao et al. 2024): the BOS keys and values, re-rotated
to sit just before the oldest kept token, so the cache always looks like a BOS-started window, as in
training. Every token after the first window sees between ``W - stride`` and ``W - 1`` text tokens
directly, as in a strided window of ``W`` tokens (the strided loop gives ``C - stride`` to ``C - 1``:
at the default ``W = C`` and ``stride = C/2`` of both, the same tokens, the sink standing in the
window's BOS slot; for a one-layer model and a stride that divides ``C`` the very same numbers). What
differs: the cached tokens' states in layers >= 2 were computed with their own history, so they
carry more than the window. ``sink=False`` drops the oldest tokens only (no sink; one more text
token, ``W - stride + 1`` to ``W``). The
cost per token is the layers' matrix products once plus attention over ``W - stride/2`` keys on
average, against the strided loop's two passes over each token at ``C/2`` keys on average: halving
the products, but not the attention, is why ``slide_window`` exists (``W = 3C/4``, ``stride =
C/4`` keeps the strided loop's minimum history of ``C/2`` tokens for less attention). In float32
with a head size of 32 (the bundled rotary models) each piece's attention runs in a compiled kernel
(``entropykit.models.kernels.piece_attention``: rotation, cache stores and causal attention in one
call, only the scores a query sees), 1.7-1.9x the causal scores per second of the strided loop's
attention (``benchmarks/piece_attention.py``); that and the halved products make the default
about 2.1x the strided loop. The
numbers differ from the strided loop's for texts longer than one window (and equal them up to
rounding for one window); ``benchmarks/scoring.py`` reports the speed and bits/byte of both.

References: GLTR (Gehrmann et al., 2019, rank buckets); the ``surprisal`` package (per-token
surprisal); Hugging Face "Perplexity of fixed-length models" (strided evaluation).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from entropykit import measures
from entropykit._validate import check_int, check_real
from entropykit.models import ByteModel, LanguageModel, resolve_model, stream
from entropykit.models.bytegpt import ByteGPT, slide_logits
from entropykit.models.bytegpt_step import slide_piece
from entropykit.precision import Precision, resolve

__all__ = ["SCORING_PRECISIONS", "ScoreResult", "default_hwe_threshold", "score"]

# The precisions scoring can run (``entropykit.precision``): the model's own float32 arithmetic, or
# bf16 under CPU autocast; ``"auto"`` picks bf16 where the CPU multiplies it in hardware.
SCORING_PRECISIONS: tuple[Precision, ...] = ("float32", "bfloat16")
N_SPANS = 5  # how many "most surprising spans" the summary lists


def default_hwe_threshold(vocab_size: int) -> float:
    """Default high-window-entropy threshold: half the maximum entropy, ``0.5 * log2(vocab_size)`` bits.

    A window is "high entropy" when the model's mean entropy over it exceeds half of what a uniform
    guess over the whole vocabulary would have (normalised entropy > 0.5): about 4.0 bits for the
    257-token byte models, 7.8 bits for GPT-2's 50 257 tokens. A fixed fraction of the maximum keeps
    the flag meaningful across texts (a quantile of the text's own values would always flag the same
    fraction).

    >>> round(default_hwe_threshold(257), 3)
    4.003
    """
    return 0.5 * math.log2(vocab_size)


@dataclass
class ScoreResult:
    """Per-token scores of one text (arrays of length ``n`` tokens, all in bits) and a summary.

    ``text`` holds the bytes the byte spans ``offsets[i] = (start, end)`` index into (the input's
    UTF-8 bytes; for a subword model given invalid UTF-8, the bytes after replacement, ``lossy``).
    A model without a BOS token cannot score the first token: it is left out and the summary's
    ``bytes`` (the bits/byte denominator) start at ``scored_from_byte``, the second token's start.
    ``top_k_ids``/``top_k_probs`` (n, k) hold the k most likely next tokens when ``top_k > 0``.
    """

    text: bytes
    model: str
    token_ids: np.ndarray
    offsets: np.ndarray
    surprisal_bits: np.ndarray
    entropy_bits: np.ndarray
    varentropy_bits2: np.ndarray
    rank: np.ndarray
    probability: np.ndarray
    window_entropy_bits: np.ndarray
    high_window_entropy: np.ndarray
    window: int
    hwe_threshold_bits: float
    stride: int
    context: int
    lossy: bool = False
    scored_from_byte: int = 0  # > 0 only for a model without a BOS token: its first token is unscored
    top_k_ids: np.ndarray | None = None
    top_k_tokens: list[list[str]] | None = field(default=None, repr=False)
    top_k_probs: np.ndarray | None = None
    precision: Precision = "float32"  # the resolved arithmetic: "float32" (exact) or "bfloat16" (autocast)
    cache: str = "strided"  # "strided" windows, or a "sliding" KV cache (with a BOS sink; "sliding-nosink")

    def __len__(self) -> int:
        return len(self.token_ids)

    def token_text(self, i: int) -> str:
        """Token ``i`` as text: its bytes decoded with replacement (a partial character shows as U+FFFD)."""
        a, b = self.offsets[i]
        return self.text[a:b].decode("utf-8", errors="replace")

    @property
    def tokens(self) -> list[str]:
        """All tokens as text (see ``token_text``)."""
        return [self.token_text(i) for i in range(len(self))]

    @cached_property
    def summary(self) -> dict[str, Any]:
        """tokens, bytes, total surprisal, perplexity, bits/byte, means, HWE fraction, top spans."""
        n = len(self)
        s = self.surprisal_bits.astype(np.float64)
        total = float(s.sum())
        n_bytes = len(self.text) - self.scored_from_byte
        return {
            "model": self.model,
            "precision": self.precision,
            "tokens": n,
            "bytes": n_bytes,
            "total_surprisal_bits": total,
            "perplexity": float(2.0 ** (total / n)) if n else float("nan"),
            "bits_per_byte": total / n_bytes if n_bytes else float("nan"),
            "mean_surprisal_bits": total / n if n else float("nan"),
            "mean_entropy_bits": float(self.entropy_bits.astype(np.float64).mean()) if n else float("nan"),
            "mean_varentropy_bits2": float(self.varentropy_bits2.astype(np.float64).mean())
            if n
            else float("nan"),
            "top1_fraction": float((self.rank == 1).mean()) if n else float("nan"),
            "hwe_fraction": float(self.high_window_entropy.mean()) if n else float("nan"),
            "hwe_threshold_bits": self.hwe_threshold_bits,
            "window": self.window,
            "stride": self.stride,
            "cache": self.cache,
            "context": self.context,
            "lossy_utf8": self.lossy,
            "top_spans": self.surprising_spans(N_SPANS),
        }

    def surprising_spans(self, k: int = N_SPANS, length: int | None = None) -> list[dict[str, Any]]:
        """The ``k`` non-overlapping runs of ``length`` (default ``window``) tokens of most total surprisal.

        Each is ``{"start", "end" (byte span), "text", "tokens", "surprisal_bits", "bits_per_token"}``,
        most surprising first.
        """
        n = len(self)
        if n == 0 or k <= 0:
            return []
        length = max(1, min(length or self.window, n))
        c = np.concatenate([[0.0], np.cumsum(self.surprisal_bits, dtype=np.float64)])
        sums = c[length:] - c[:-length]  # sums[j] = tokens j .. j+length-1
        order = np.argsort(-sums, kind="stable")
        chosen: list[int] = []
        for j in order:  # greedy; in practice only neighbours of the chosen runs are skipped
            if all(abs(int(j) - c0) >= length for c0 in chosen):
                chosen.append(int(j))
                if len(chosen) == k:
                    break
        out = []
        for j in chosen:
            a, b = int(self.offsets[j, 0]), int(self.offsets[j + length - 1, 1])
            out.append(
                {
                    "start": a,
                    "end": b,
                    "text": self.text[a:b].decode("utf-8", errors="replace"),
                    "tokens": length,
                    "surprisal_bits": float(sums[j]),
                    "bits_per_token": float(sums[j] / length),
                }
            )
        return out

    # --- export ----------------------------------------------------------------------------
    def _columns(self) -> dict[str, np.ndarray]:
        return {
            "start": self.offsets[:, 0],
            "end": self.offsets[:, 1],
            "token_id": self.token_ids,
            "surprisal_bits": self.surprisal_bits,
            "entropy_bits": self.entropy_bits,
            "varentropy_bits2": self.varentropy_bits2,
            "rank": self.rank,
            "probability": self.probability,
            "window_entropy_bits": self.window_entropy_bits,
            "high_window_entropy": self.high_window_entropy,
        }

    def to_dict(self, *, tokens: bool = True) -> dict[str, Any]:
        """``{"summary": ..., "tokens": [{"i", "token", "start", "end", "surprisal_bits", ...}, ...]}``."""
        out: dict[str, Any] = {"summary": self.summary}
        if tokens:
            cols = {k: v.tolist() for k, v in self._columns().items()}
            texts = self.tokens
            rows = []
            for i in range(len(self)):
                row: dict[str, Any] = {"i": i, "token": texts[i]}
                row.update({k: v[i] for k, v in cols.items()})
                if self.top_k_ids is not None and self.top_k_probs is not None:
                    row["top_k"] = [
                        {"token_id": int(t), "token": s, "probability": float(p)}
                        for t, s, p in zip(
                            self.top_k_ids[i], (self.top_k_tokens or [])[i], self.top_k_probs[i]
                        )
                    ]
                rows.append(row)
            out["tokens"] = rows
        return out

    def to_json(self, *, indent: int | None = None, tokens: bool = True) -> str:
        """``to_dict`` as JSON (NaN-free: every number is finite)."""
        return json.dumps(self.to_dict(tokens=tokens), indent=indent, ensure_ascii=False)

    def to_csv(self) -> str:
        """One row per token: i, token, start, end, token_id, surprisal_bits, entropy_bits, ... ."""
        buf = io.StringIO()
        cols = self._columns()
        w = csv.writer(buf, lineterminator="\n")
        header = ["i", "token", *cols]
        k = 0 if self.top_k_ids is None else self.top_k_ids.shape[1]
        for j in range(k):
            header += [f"top{j + 1}_token", f"top{j + 1}_probability"]
        w.writerow(header)
        lists = [v.tolist() for v in cols.values()]
        texts = self.tokens
        for i in range(len(self)):
            row: list[Any] = [i, texts[i], *(c[i] for c in lists)]
            for j in range(k):
                assert self.top_k_probs is not None and self.top_k_tokens is not None
                row += [self.top_k_tokens[i][j], float(self.top_k_probs[i, j])]
            w.writerow(row)
        return buf.getvalue()


# --- the scoring engine -----------------------------------------------------------------------
def _encode(model: LanguageModel, data: str | bytes) -> tuple[np.ndarray, np.ndarray, bytes, bool]:
    """Token ids, byte spans (n, 2) int64, the bytes the spans index, and the lossy flag."""
    if type(model).encode is ByteModel.encode:  # tokens are the bytes themselves: vectorised, no lists
        raw = data.encode("utf-8") if isinstance(data, str) else data
        offsets = np.empty((len(raw), 2), np.int64)
        offsets[:, 0] = np.arange(len(raw))
        offsets[:, 1] = offsets[:, 0] + 1
        return np.frombuffer(raw, dtype=np.uint8), offsets, raw, False
    enc = model.encode(data)
    if isinstance(data, str):
        raw = data.encode("utf-8")
    else:
        raw = data.decode("utf-8", errors="replace").encode("utf-8") if enc.lossy else data
    ids = np.asarray(enc.ids, dtype=np.int64)
    offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    return ids, offsets, raw, enc.lossy


def _window_mean(x: np.ndarray, window: int, block: int = 1 << 16) -> np.ndarray:
    """``measures.rolling_mean`` over float32 ``x`` in blocks (float64 inside): flat memory, same values."""
    out = np.empty(len(x), np.float32)
    for a in range(0, len(x), block):
        lo = max(0, a - window + 1)  # the block's first window reaches back window - 1 tokens
        b = min(a + block, len(x))
        mean = measures.rolling_mean(torch.from_numpy(x[lo:b].astype(np.float64)), window)
        out[a:b] = mean[a - lo :].numpy()
    return out


def score(
    text: str | bytes,
    model: LanguageModel | str | Path | None = None,
    *,
    stride: int | None = None,
    window: int = 16,
    hwe_threshold: float | None = None,
    top_k: int = 0,
    batch_size: int | None = None,
    precision: Precision = "float32",
    progress: bool | None = None,
    slide: bool = False,
    sink: bool = True,
    slide_window: int | None = None,
) -> ScoreResult:
    """Score every token of ``text`` under a causal language model (all quantities in bits).

    Per token t: surprisal ``-log2 p(x_t|x_<t)``, entropy ``-sum p log2 p``, varentropy
    ``sum p (log2 p)^2 - H^2``, rank (1 = top choice, GLTR), probability, the mean entropy of the
    last ``window`` tokens and whether it exceeds ``hwe_threshold`` bits (default
    ``0.5 * log2(vocab_size)``, see ``default_hwe_threshold``); ``top_k > 0`` adds the k most likely
    tokens at each position. ``summary``: perplexity ``2 ** mean surprisal``, bits/byte = total
    surprisal bits / UTF-8 bytes, mean entropy, HWE fraction, the most surprising spans.

    Args:
        text: ``str`` (scored as its UTF-8 bytes) or ``bytes`` (any bytes for the byte models; a
            subword model decodes invalid UTF-8 with replacement and sets ``lossy``).
        model: a ``LanguageModel``, a model name or directory (``load_model``), or None = bundled.
        stride: tokens between window starts for texts longer than the model's context ``C``
            (default ``C // 2`` for a model with a BOS token, ``stream.default_stride``; at most
            ``C - 1``, or ``C`` without BOS): each later token keeps at least ``C - stride`` text
            tokens of history after the window's BOS (``entropykit.models.stream.windows``).
        window: tokens in the window-entropy mean.
        batch_size: windows per forward pass (default ``stream.batch_windows``: about 2048 tokens
            a pass, at most 64 MiB of float32 logits).
        precision: ``"float32"`` (default: the model's own arithmetic, the numbers the transformers
            strided loop gives), ``"bfloat16"``: the forward passes run under CPU autocast
            (bf16 matmuls with fp32 accumulation; statistics still in fp32), several times faster on
            CPUs with AMX/AVX512-BF16, bits/byte then differ from float32 by about 2e-4 relative;
            or ``"auto"``: bfloat16 where the CPU multiplies bf16 in hardware, else float32
            (``entropykit.precision.resolve``; ``summary["precision"]`` records the choice).
        progress: a tqdm bar on stderr; default only for multi-window texts on a terminal.
        slide: score with a sliding KV cache instead of strided windows (every token computed once;
            rotary-position ByteGPTs only; see the module docstring); ``stride`` is then the number of
            new tokens per forward pass (default ``C // 2``; at most ``C - 2``; each later token sees at
            least ``C - stride`` text tokens, as with strided windows) and ``batch_size`` does not
            apply. ``sink``: keep the BOS attention sink in the sliding cache. ``slide_window``: the
            most tokens a query attends to (cache + piece, sink included; default and at most
            ``C``): a smaller window computes less attention per token and gives each later token
            ``slide_window - stride`` to ``slide_window - 1`` text tokens of context
            (``summary["context"]`` records it).

    Sources: GLTR (Gehrmann et al., 2019); Hugging Face "Perplexity of fixed-length models".

    >>> from entropykit.lm import ByteModel
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> m = ByteModel(ByteGPT(ByteGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16)))
    >>> r = score("hello world", m)
    >>> len(r), r.summary["bytes"]
    (11, 11)
    >>> bool(abs(r.summary["bits_per_byte"] - r.surprisal_bits.sum() / 11) < 1e-6)
    True
    """
    if isinstance(text, (bytearray, memoryview)):
        text = bytes(text)
    if not isinstance(text, (str, bytes)):
        raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
    if len(text) == 0:
        raise ValueError("text must be non-empty, got an empty input (0 bytes): nothing to score")
    lm = resolve_model(model)
    prec = resolve(precision, SCORING_PRECISIONS)  # once per call; the result records it
    ctx = int(lm.max_context)
    p = len(lm.prefix_ids)
    if slide:  # stride = new tokens per forward pass of the sliding cache (room for the sink + 1 token)
        ctx = ctx if slide_window is None else check_int(slide_window, "slide_window", 3, ctx)
        stride = slide_piece({"model": lm}, stride, ctx)
    elif slide_window is not None:
        raise ValueError(f"slide_window applies only with slide=True, got slide_window={slide_window}")
    elif stride is None:
        stride = stream.default_stride(ctx, p)
    check_int(stride, "stride", 1, ctx - p)
    check_int(window, "window", 1)
    check_int(top_k, "top_k", 0, lm.vocab_size)
    if batch_size is not None:
        check_int(batch_size, "batch_size", 1)
    if hwe_threshold is None:
        hwe_threshold = default_hwe_threshold(lm.vocab_size)
    hwe_threshold = check_real(hwe_threshold, "hwe_threshold", finite=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bfloat16")

    ids, offsets, raw, lossy = _encode(lm, text)
    if len(ids) == 0:
        raise ValueError(f"text: the tokenizer of model {lm.name!r} produced no tokens for this input")
    first = 0 if p else 1  # without a BOS token the first token has nothing to condition on
    n = len(ids) - first
    if n <= 0:
        raise ValueError(f"text: a single token and model {lm.name!r} has no BOS token, nothing to score")
    # The text as int32, shared with the result's token_ids (a view): scoring keeps no per-token
    # buffers besides the result arrays. Window inputs are widened to int64 for the model.
    seq_np = np.asarray(ids, dtype=np.int32)
    del ids
    seq = torch.from_numpy(seq_np)
    prefix = torch.tensor(lm.prefix_ids, dtype=torch.long)

    def inputs(w: stream.Window) -> torch.Tensor:
        """The window's input: the prefix (BOS) + ids[start:end-1] (int64)."""
        return torch.cat([prefix, seq[w.start : w.end - 1].long()])

    # Logit rows per forward pass within the memory budget; a window larger than that (long context,
    # large vocabulary) is fed in chunks through the KV cache, which gives the same numbers.
    rows_budget = max(1, stream.BATCH_LOGIT_BYTES // (4 * lm.vocab_size))
    chunked = ctx > rows_budget and lm.supports_cache
    if batch_size is None:
        batch_size = stream.batch_windows(ctx, lm.vocab_size)
    if chunked:
        batch_size = 1

    out_s = np.empty(n, np.float32)
    out_h = np.empty(n, np.float32)
    out_v = np.empty(n, np.float32)
    out_r = np.empty(n, np.int32)
    k = int(top_k)
    out_ki = np.empty((n, k), np.int64) if k else None
    out_kp = np.empty((n, k), np.float32) if k else None

    def consume(z: torch.Tensor, t0: int, t1: int) -> None:
        """Statistics of targets ids[t0:t1] from their logit rows z (t1 - t0, V), into the outputs."""
        target = seq[t0:t1].long().view(z.shape[:-1])
        st = measures.token_stats(z, target, base=2)  # one fused pass: entropy, varentropy, surprisal
        assert st.surprisal is not None
        sl = slice(t0 - first, t1 - first)
        out_s[sl] = st.surprisal.reshape(-1).numpy()
        out_h[sl] = st.entropy.reshape(-1).numpy()
        out_v[sl] = st.varentropy.reshape(-1).numpy()
        out_r[sl] = measures.token_rank(z, target).reshape(-1).numpy()
        if out_ki is not None and out_kp is not None:
            top = torch.topk(z, k, dim=-1)
            out_ki[sl] = top.indices.reshape(-1, k).numpy()
            probs = torch.exp(top.values - st.lse.unsqueeze(-1))  # lse: the log-partition, per row
            out_kp[sl] = probs.reshape(-1, k).numpy()

    def run(batch: list[stream.Window]) -> int:
        # Window w scores targets ids[w.first:w.end] from its logit rows w.rows(p); consecutive
        # windows' targets are contiguous, so one batch fills one slice of the outputs.
        t0, t1 = batch[0].first, batch[-1].end
        if chunked:
            w, past = batch[0], None
            x, rows = inputs(w), w.rows(p)
            for c0 in range(0, len(x), rows_budget):
                c1 = min(c0 + rows_budget, len(x))
                with autocast:  # forward returns float32 logits (the adapter contract)
                    logits, past = lm.forward(x[c0:c1][None], past)
                a, z1 = max(rows.start, c0), min(rows.stop, c1)  # logit rows this chunk contributes
                if a < z1:
                    consume(logits[0, a - c0 : z1 - c0], t0 + a - rows.start, t0 + z1 - rows.start)
            return t1 - t0
        with autocast:
            logits, _ = lm.forward(torch.stack([inputs(w) for w in batch]))
        spans = [w.rows(p) for w in batch]
        if len(set((r.start, r.stop) for r in spans)) == 1:  # same rows in every window: a view, no copy
            consume(logits[:, spans[0]], t0, t1)
        else:
            consume(torch.cat([logits[i, r] for i, r in enumerate(spans)]), t0, t1)
        return t1 - t0

    n_win = stream.n_windows(len(seq_np), ctx, p, stride)
    if slide:
        n_win = -(-n // stride)
    show = progress if progress is not None else (n_win > 8 and sys.stderr.isatty())
    from tqdm.auto import tqdm

    with (
        torch.inference_mode(),
        tqdm(
            total=n,
            unit="tok",
            unit_scale=True,
            disable=not show,
            desc=f"scoring with {lm.name}",
            file=sys.stderr,
        ) as bar,
    ):
        batch: list[stream.Window] = []
        if slide:
            with autocast:
                for logits, a, b in slide_logits(cast(ByteGPT, lm.module), seq, stride, sink, ctx):
                    consume(logits.float(), a, b)
                    bar.update(b - a)
        for w in [] if slide else stream.windows(len(seq_np), ctx, p, stride):
            # Windows of one input length share a forward pass.
            if batch and (len(batch) == batch_size or w.n_inputs(p) != batch[0].n_inputs(p)):
                bar.update(run(batch))
                batch = []
            batch.append(w)
        if batch:
            bar.update(run(batch))

    w_ent = _window_mean(out_h, window)
    top_tokens = None
    if out_ki is not None:
        cache: dict[int, str] = {}
        top_tokens = [
            [cache.setdefault(int(t), lm.token_text(int(t))) for t in row] for row in out_ki.tolist()
        ]
    return ScoreResult(
        text=raw,
        model=lm.identity,
        token_ids=seq_np[first:],
        offsets=offsets[first:],
        surprisal_bits=out_s,
        entropy_bits=out_h,
        varentropy_bits2=out_v,
        rank=out_r,
        probability=np.exp2(-out_s),
        window_entropy_bits=w_ent,
        high_window_entropy=w_ent > hwe_threshold,
        window=window,
        hwe_threshold_bits=float(hwe_threshold),
        stride=stride,
        context=ctx,
        lossy=lossy,
        scored_from_byte=int(offsets[1, 0]) if first else 0,
        top_k_ids=out_ki,
        top_k_tokens=top_tokens,
        top_k_probs=out_kp,
        precision=prec,
        cache=("sliding" if sink else "sliding-nosink") if slide else "strided",
    )
