"""Per-token statistics of a text under a scoring model (and optionally a second model), streamed.

Every detection score in ``entropykit.detect`` is a function of a few float64 numbers per token
position t of a text x (q = the scoring model's next-token distribution, p = the distribution whose
expectation is taken: the reference/observer model when one is given, else q itself):

- ``logprob[t]``          log q(x_t | x_<t)                                      (nats)
- ``expected[t]``         mu_t = sum_v p_t(v) log q_t(v)     (= -H(q_t) when p = q; = -CE(p_t, q_t))
- ``variance[t]``         sigma_t^2 = sum_v p_t(v) (log q_t(v))^2 - mu_t^2  (= varentropy when p = q)
- ``logprob_range[t]``    max_v log q_t(v) - min_v log q_t(v) over the support of p_t (Azuma range)
- ``ref_logprob[t]``      log p(x_t | x_<t) under the second model (only when one is given)

Long texts are streamed through the strided windows of ``entropykit.models.stream.windows`` (the one
window rule of every part): every window starts with the model's prefix (BOS) tokens, as the bundled
ByteGPTs saw in training (each training window began with BOS), so a later window is an
in-distribution input. Windows of several texts are batched (right-padded: the models are causal,
so padding after a row's last real token cannot change its logits). Logits are upcast to float64
before any log-softmax so sums over thousands of positions keep their precision.

With ``slide=True`` (ByteGPTs with rotary positions, both models) each text instead slides a KV
cache with a BOS attention sink (``entropykit.models.bytegpt.slide_logits``, the loop of
``lm.score(slide=True)``): every token is computed once, in pieces of ``stride`` tokens (default
C/2), and sees the same number of text tokens directly as in a strided window (see
``entropykit.lm.scoring``); texts are then fed one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from tqdm.auto import tqdm

from entropykit import measures
from entropykit._validate import check_bool, check_class_index, check_int, check_logits, check_same_shape
from entropykit.models import LanguageModel, stream
from entropykit.models.bytegpt import ByteGPT, slide_logits
from entropykit.models.bytegpt_step import slide_piece

__all__ = ["TokenStats", "token_statistics"]

_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class TokenStats:
    """Per-position float64 statistics of one text (see the module docstring for the formulas)."""

    ids: np.ndarray  # int64 token ids of the scored positions (x_t)
    logprob: np.ndarray
    expected: np.ndarray
    variance: np.ndarray
    logprob_range: np.ndarray
    ref_logprob: np.ndarray | None
    data: bytes  # the text's bytes (zlib needs them)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def from_logits(
        cls,
        logits: torch.Tensor,
        ids: Sequence[int],
        ref_logits: torch.Tensor | None = None,
        data: bytes = b"",
    ) -> TokenStats:
        """Statistics from explicit next-token logits: row t of ``logits`` (T, V) predicts ``ids[t]``.

        ``ref_logits`` (T, V), when given, is the second model's p (the expectation distribution).

        >>> s = TokenStats.from_logits(torch.zeros(2, 4), [1, 2])
        >>> [round(float(v), 4) for v in s.logprob], round(float(s.expected[0]), 4)
        ([-1.3863, -1.3863], -1.3863)
        """
        check_logits(logits, "logits")
        if logits.dim() != 2:
            raise ValueError(f"logits must have shape (positions, vocab), got {tuple(logits.shape)}")
        target = check_class_index(
            torch.as_tensor(list(ids)),
            (logits.shape[0],),
            logits.shape[1],
            None,
            name="ids",
            lead_what="one id per logit row:",
        )
        if ref_logits is not None:
            check_same_shape(logits, check_logits(ref_logits, "ref_logits"), "logits", "ref_logits")
        cols = _position_stats(logits, target, ref_logits)
        ref = cols["ref_logprob"]
        return cls(
            ids=target.numpy().astype(np.int64),
            data=data,
            logprob=_cat([cols["logprob"]]),
            expected=_cat([cols["expected"]]),
            variance=_cat([cols["variance"]]),
            logprob_range=_cat([cols["logprob_range"]]),
            ref_logprob=None if ref is None else ref.numpy(),
        )


def _position_stats(
    logits: torch.Tensor, target: torch.Tensor, ref_logits: torch.Tensor | None
) -> dict[str, torch.Tensor | None]:
    """float64 per-position columns for logits (T, V) predicting target (T,).

    Through the one definition, :func:`entropykit.measures.token_stats`: ``logprob`` is
    ``-surprisal``, and without a second model ``expected`` is ``-entropy`` and ``variance`` is
    ``varentropy``; ``ref_logprob`` is ``-surprisal`` under the second model. Fields only detection
    has (documented in the module docstring): ``expected`` / ``variance`` under a second model's p
    (a cross-entropy and its variance, not a property of q alone) and ``logprob_range``.
    """
    z = logits.double()
    lq = torch.log_softmax(z, -1)
    st = measures.token_stats(z, target)  # surprisal, entropy, varentropy in one pass
    assert st.surprisal is not None
    logprob = -st.surprisal
    if ref_logits is None:
        expected, variance = -st.entropy, st.varentropy
        support = torch.isfinite(lq)
        ref_logprob = None
    else:
        zp = ref_logits.double()
        p = torch.softmax(zp, -1)
        expected = -measures.cross_entropy(z, p, reduction="none")
        # Var_p(log q): centred form (no cancellation); 0 * inf terms (p_v = 0) dropped.
        dev = torch.where(p > 0, lq - expected.unsqueeze(-1), torch.zeros_like(lq))
        variance = (p * dev * dev).sum(-1)
        support = p > 0
        ref_sur = measures.token_stats(zp, target).surprisal
        assert ref_sur is not None
        ref_logprob = -ref_sur
    hi = torch.where(support, lq, torch.full_like(lq, -torch.inf)).amax(-1)
    lo = torch.where(support, lq, torch.full_like(lq, torch.inf)).amin(-1)
    return {
        "logprob": logprob,
        "expected": expected,
        "variance": variance.clamp(min=0.0),
        "logprob_range": hi - lo,
        "ref_logprob": ref_logprob,
    }


@dataclass(frozen=True)
class _Job:
    text: int  # index of the text
    start: int  # first target index (into the text's ids)
    end: int  # one past the last target index
    inputs: list[int]  # prefix + context + targets[:-1]


def _check_pair(model: LanguageModel, reference: LanguageModel | None) -> None:
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model must be a LanguageModel, got {type(model).__name__}")
    if reference is None:
        return
    if not isinstance(reference, LanguageModel):
        raise TypeError(f"reference must be a LanguageModel or None, got {type(reference).__name__}")
    if reference.vocab_size != model.vocab_size or list(reference.prefix_ids) != list(model.prefix_ids):
        raise ValueError(
            f"reference must share the tokenizer of {model.name!r}, got {reference.name!r} "
            f"(vocab {reference.vocab_size} vs {model.vocab_size}, "
            f"prefix {reference.prefix_ids} vs {model.prefix_ids})"
        )


def _encode_all(
    texts: Sequence[str | bytes], model: LanguageModel, reference: LanguageModel | None
) -> list[list[int]]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"texts must be a sequence of str/bytes, got a single {type(texts).__name__}")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, (str, bytes)):
            raise TypeError(f"texts[{i}] must be str or bytes, got {type(text).__name__}")
        ids = list(model.encode(text).ids)
        if len(ids) < 2:
            raise ValueError(
                f"texts[{i}] must hold at least 2 tokens (detection needs them), got {len(ids)} token(s)"
            )
        if reference is not None and list(reference.encode(text).ids) != ids:
            raise ValueError(
                f"reference must tokenize texts[{i}] as {model.name!r} does, got other ids from "
                f"{reference.name!r}"
            )
        out.append(ids)
    return out


def _forward(model: LanguageModel, batch: torch.Tensor) -> torch.Tensor:
    logits, _ = model.forward(batch)
    return logits


def token_statistics(
    texts: Sequence[str | bytes],
    model: LanguageModel,
    reference: LanguageModel | None = None,
    *,
    batch_size: int | None = None,
    stride: int | None = None,
    progress: bool | None = None,
    slide: bool = False,
) -> list[TokenStats]:
    """Stream every text through ``model`` (and ``reference``) and return its ``TokenStats``.

    Windows follow ``entropykit.models.stream.windows`` (each starts with the prefix/BOS; targets
    advance ``stride`` tokens per window, default ``stream.default_stride``) with the smaller of the
    two models' contexts; windows of different texts are batched ``batch_size`` at a time (longest
    first; default ``stream.batch_windows``: about 2048 tokens a pass). ``slide=True`` (both models
    ByteGPTs with rotary positions): a sliding KV cache per text instead, pieces of ``stride`` tokens
    (default C/2; see the module docstring). ``progress=None`` shows a tqdm bar only on a terminal.
    Texts of fewer than 2 tokens raise ``ValueError``.
    """
    _check_pair(model, reference)
    check_bool(slide, "slide")
    ctx = model.max_context if reference is None else min(model.max_context, reference.max_context)
    batch_size = (stream.batch_windows(ctx, model.vocab_size) if batch_size is None
                  else check_int(batch_size, "batch_size", 1))
    if slide:
        piece = slide_piece({"model": model, "reference": reference}, stride, ctx)
        return _slid(texts, _encode_all(texts, model, reference), model, reference, piece, ctx, progress)
    all_ids = _encode_all(texts, model, reference)
    prefix = list(model.prefix_ids)
    jobs = [
        _Job(i, w.first, w.end, prefix + ids[w.start : w.end - 1])
        for i, ids in enumerate(all_ids)
        for w in stream.windows(len(ids), ctx, len(prefix), stride)
    ]
    jobs.sort(key=lambda w: -len(w.inputs))
    parts: list[list[tuple[int, dict[str, torch.Tensor | None]]]] = [[] for _ in texts]
    pad = prefix[0] if prefix else 0
    step = max(1, _CHUNK_ELEMENTS // model.vocab_size)  # float64 (positions, V) temporaries <= ~128 MB
    bar = tqdm(
        total=len(jobs),
        desc="scoring",
        unit="window",
        disable=(not progress) if progress is not None else None,
    )
    for b in range(0, len(jobs), batch_size):
        group = jobs[b : b + batch_size]
        width = len(group[0].inputs)
        batch = torch.tensor([w.inputs + [pad] * (width - len(w.inputs)) for w in group], dtype=torch.long)
        q_logits = _forward(model, batch)
        p_logits = None if reference is None else _forward(reference, batch)
        for r, w in enumerate(group):
            n_in, n_t = len(w.inputs), w.end - w.start
            rows = slice(n_in - n_t, n_in)
            target = torch.tensor(all_ids[w.text][w.start : w.end], dtype=torch.long)
            for c in range(0, n_t, step):
                pos = slice(rows.start + c, min(rows.stop, rows.start + c + step))
                p_rows = None if p_logits is None else p_logits[r, pos]
                cols = _position_stats(q_logits[r, pos], target[c : c + step], p_rows)
                parts[w.text].append((w.start + c, cols))
        bar.update(len(group))
    bar.close()
    return _assemble(texts, all_ids, parts, 0 if prefix else 1, reference is not None)


def _slid(
    texts: Sequence[str | bytes],
    all_ids: list[list[int]],
    model: LanguageModel,
    reference: LanguageModel | None,
    piece: int,
    window: int,
    progress: bool | None,
) -> list[TokenStats]:
    """``token_statistics(slide=True)``: each text's tokens through one sliding cache per model
    (``bytegpt.slide_logits``), both in step; the statistics of each piece as the strided path
    computes them."""
    parts: list[list[tuple[int, dict[str, torch.Tensor | None]]]] = [[] for _ in texts]
    bar = tqdm(total=sum(len(ids) for ids in all_ids), desc="scoring", unit="tok",
               disable=(not progress) if progress is not None else None)
    with torch.inference_mode():
        for i, ids in enumerate(all_ids):
            target = torch.tensor(ids, dtype=torch.long)
            q_run = slide_logits(cast(ByteGPT, model.module), target, piece, True, window)
            p_run = None if reference is None else slide_logits(
                cast(ByteGPT, reference.module), target, piece, True, window)
            for q_logits, a, b in q_run:
                p_logits = None if p_run is None else next(p_run)[0]
                parts[i].append((a, _position_stats(q_logits, target[a:b], p_logits)))
                bar.update(b - a)
    bar.close()
    return _assemble(texts, all_ids, parts, 0, reference is not None)


def _assemble(
    texts: Sequence[str | bytes],
    all_ids: list[list[int]],
    parts: list[list[tuple[int, dict[str, torch.Tensor | None]]]],
    first: int,
    has_reference: bool,
) -> list[TokenStats]:
    """One ``TokenStats`` per text from its column chunks (keyed by first target index); ``first``:
    the first scored token (1 when the model has no prefix: the first token has no prediction)."""
    out = []
    for i, text in enumerate(texts):
        chunks = [c for _, c in sorted(parts[i], key=lambda x: x[0])]
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        ref = [c["ref_logprob"] for c in chunks]
        out.append(
            TokenStats(
                ids=np.asarray(all_ids[i][first:], dtype=np.int64),
                data=data,
                logprob=_cat([c["logprob"] for c in chunks]),
                expected=_cat([c["expected"] for c in chunks]),
                variance=_cat([c["variance"] for c in chunks]),
                logprob_range=_cat([c["logprob_range"] for c in chunks]),
                ref_logprob=_cat(ref) if has_reference else None,
            )
        )
    return out


def _cat(columns: list[torch.Tensor | None]) -> np.ndarray:
    return torch.cat([c for c in columns if c is not None]).numpy()
