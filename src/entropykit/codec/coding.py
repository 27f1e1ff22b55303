"""Coding a group of chunks: quantised probabilities, the one lockstep procedure, records.

Encoder and decoder run :func:`run_group`, the same incremental procedure on identically shaped
batches (``docs/container-format.md``, "How the payload is produced"): prefix prime, one KV-cached
step per token through the model's stepper (``entropykit.models.bytegpt_step``), re-prime when the
window is full, as the one re-prime rule says (``entropykit.models.stream.Reprime``); or, with the
header's slide flag (rotary ByteGPTs), one step per token through a sliding ring cache of ``window``
slots with a BOS sink, never re-primed (the encoder, which knows every token, feeds ``AHEAD`` of them
per call of the stepper's ``steps``: the same bits as one ``step`` each, computed layer by layer so
that each row's cache is read once per call). Each step's
logits are quantised by :func:`quantized_probabilities` to the weights the range coder
(``constriction``) uses: ``w_v = exp(-(max(k) - k_v) / 32)`` with ``k = round(32 l)`` (nats on a
1/32 grid); with the header's match flag (version 5) each coded row's weights are then mixed with its
chunk's match model (:class:`entropykit.codec.match.MatchModel`), which learns from each coded token.

Example:
    >>> import numpy as np
    >>> w = quantized_probabilities(np.array([[0.0, -1.0, 2.0]], dtype=np.float32))
    >>> [round(float(x), 6) for x in w[0]]  # exp(-2), exp(-3), 1
    [0.135335, 0.049787, 1.0]
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from entropykit.codec.container import LOGIT_SCALE, ContainerError, Params, Record, chunk_record
from entropykit.codec.match import MatchModel
from entropykit.codec.pool import Meter
from entropykit.models import ByteModel, LanguageModel
from entropykit.models.bytegpt_step import stepper
from entropykit.models.stream import Reprime

__all__ = ["cut", "decode_group", "encode_group", "quantized_probabilities", "run_group"]

EXP_STEP = float.fromhex("0x1.f03f56a88b5d8p-1")  # exp(-1/32), written exactly (no libm at run time)
MAX_GAP = 32 * 40  # weights below exp(-40) are floored; constriction gives every symbol >= 2^-24 anyway
AHEAD = 64  # slide mode: tokens the encoder feeds per stepper call (``steps``; the decoder feeds 1)
PAD = 0  # token fed to rows that have no symbol at a step (identical on both sides)


def _weight_table() -> np.ndarray:
    table = np.empty(MAX_GAP + 1, dtype=np.float64)
    w = 1.0
    for i in range(MAX_GAP + 1):  # repeated multiplication: bit-identical on every IEEE machine
        table[i] = w
        w *= EXP_STEP
    return table


_WEIGHTS = _weight_table()
_FAMILY: Any = None


def _family() -> Any:
    global _FAMILY
    if _FAMILY is None:
        import constriction

        _FAMILY = constriction.stream.model.Categorical(perfect=False)
    return _FAMILY


def quantized_probabilities(logits: np.ndarray) -> np.ndarray:
    """Unnormalised float64 weights ``exp(-(max(k) - k) / 32)`` of the grid logits ``k = round(32 l)``.

    Rows are the distributions handed to the range coder; the result depends only on the integer
    grid values, so it is identical wherever the float32 logits round to the same grid.
    """
    k = np.rint(np.asarray(logits, dtype=np.float32) * np.float32(LOGIT_SCALE)).astype(np.int64)
    gap = np.minimum(k.max(axis=-1, keepdims=True) - k, MAX_GAP)
    return _WEIGHTS[gap]


def run_group(
    model: LanguageModel,
    params: Params,
    tokens: np.ndarray,
    lengths: list[int],
    coders: list[Any],
    decode: bool,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Code one lockstep group of chunks; the ONE procedure both encoder and decoder run.

    ``tokens`` (B, n_max) holds each row's tokens (padding beyond ``lengths[b]``); when decoding,
    rows whose coder is not ``None`` are filled in place from their range decoder. Row ``b`` is
    coded by ``coders[b]`` (a RangeEncoder/RangeDecoder, or ``None`` for rows known to the decoder).
    """
    n_max = tokens.shape[1]
    if n_max == 0:
        return
    batch, family = tokens.shape[0], _family()
    prefix = np.tile(np.asarray(model.prefix_ids, dtype=np.int64), (batch, 1))
    schedule = Reprime(params.window, params.prime, prefix.shape[1])  # the one re-prime rule
    steps = stepper(model, batch, params.precision, ring=params.window if params.slide else None)
    if prefix.shape[1]:
        logits = steps.prime(prefix)
    else:  # no BOS: the first token is coded with a uniform distribution
        logits = np.zeros((batch, model.vocab_size), dtype=np.float32)
    rows = [b for b in range(batch) if coders[b] is not None]
    matches = {b: MatchModel() for b in rows} if params.match else {}
    # The encoder hands constriction up to `span` steps of a row at once (fewer Python calls);
    # the per-row distributions are the very arrays the decoder computes one step at a time.
    span = max(1, min(64, 2**24 // (batch * model.vocab_size)))
    pending = None if decode else np.empty((span, batch, model.vocab_size), dtype=np.float64)
    first = 0
    look = 1 if decode else AHEAD
    ahead: list[np.ndarray] = []  # logits of the next steps, last first
    for i in range(n_max):
        probs = quantized_probabilities(logits)
        live = [b for b in rows if i < lengths[b]]
        for b in live if matches else ():
            matches[b].mix(probs[b])
        if pending is None:
            for b in live:
                tokens[b, i] = coders[b].decode(family, probs[b : b + 1])[0]
        else:
            pending[i - first] = probs
            if i - first + 1 == span or i == n_max - 1:
                for b in rows:
                    end = min(i + 1, lengths[b])
                    if end > first:
                        symbols = tokens[b, first:end].astype(np.int32)
                        coders[b].encode(symbols, family, np.ascontiguousarray(pending[: end - first, b]))
                first = i + 1
        for b in live if matches else ():  # learn from the token just coded
            matches[b].update(tokens[b, i], probs[b])
        if on_step is not None:
            on_step(i)
        if i == n_max - 1:
            break
        if params.slide:  # a sliding cache: one step a token, never a re-prime
            if not ahead:  # the encoder knows the tokens: up to AHEAD steps in one call, same bits
                ahead = list(steps.steps(tokens[:, i : min(i + look, n_max - 1)]))[::-1]
            logits = ahead.pop()
            continue
        feed = schedule.feed(cached=steps.length, fed=i, end=i + 1)
        if feed.restart and steps.length:  # window full: restart from the prefix + the last `prime` tokens
            logits = steps.prime(np.concatenate([prefix, tokens[:, feed.start : feed.end]], axis=1))
        else:  # room left: one cached step (into an empty cache for the first token of a prefix-less model)
            logits = steps.step(tokens[:, i])


# --- tokens of a chunk -------------------------------------------------------------------------------


def chunk_tokens(model: LanguageModel, raw: bytes) -> list[int] | None:
    """Token ids of a chunk if they reproduce it exactly (and are no more than its bytes), else None."""
    if type(model).encode is ByteModel.encode:  # tokens are the bytes (as scoring checks it)
        return list(raw)
    try:
        enc = model.encode(raw)
    except (ValueError, TypeError, UnicodeError):
        return None
    ids = [int(i) for i in enc.ids]
    if enc.lossy or len(ids) > len(raw) or model.decode(ids) != raw:
        return None
    return ids


def cut(buf: bytes, start: int, size: int) -> int:
    """End of the chunk starting at ``start``: ``start + size`` (or the end of ``buf``), moved back by
    up to 3 bytes so as not to split a UTF-8 character (``buf`` holds look-ahead unless at EOF)."""
    end = start + size
    if end >= len(buf):
        return len(buf)
    back = end
    while back > start + 1 and end - back < 3 and (buf[back] & 0xC0) == 0x80:
        back -= 1
    return back if (buf[back] & 0xC0) != 0x80 else end


def _detokenize(model: LanguageModel, ids: np.ndarray) -> bytes:
    try:
        return model.decode([int(i) for i in ids])
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        raise ContainerError(f"damaged container: decoded tokens are invalid ({exc})") from exc


# --- a group: encode to records, decode records ----------------------------------------------------------


def encode_group(lm: LanguageModel, p: Params, key: int, chunks: list[bytes], meter: Meter) -> list[bytes]:
    """Code one group of chunks; returns each chunk's record (record header + payload)."""
    import constriction

    ids = [chunk_tokens(lm, c) for c in chunks]
    lengths = [0 if t is None else len(t) for t in ids]
    tokens = np.full((len(chunks), max(lengths)), PAD, dtype=np.int64)
    for b, t in enumerate(ids):
        tokens[b, : lengths[b]] = t or []
    coders: list[Any] = [None if t is None else constriction.stream.queue.RangeEncoder() for t in ids]
    n_bytes = sum(map(len, chunks))
    tick = meter.group(key, lengths, n_bytes, lambda _: sum(c.num_bits() for c in coders if c))
    run_group(lm, p, tokens, lengths, coders, decode=False, on_step=tick)
    records, bits = [], 0.0
    for raw, coder, n_sym in zip(chunks, coders, lengths):
        payload = None if coder is None else coder.get_compressed().astype("<u4").tobytes()
        record, n_payload = chunk_record(raw, n_sym, payload, use_lzma=p.lzma)
        records.append(record)
        bits += 8.0 * n_payload
    meter.finish(key, n_bytes, bits)
    return records


def decode_group(lm: LanguageModel, p: Params, key: int, records: list[Record], meter: Meter) -> list[bytes]:
    """Decode one group of chunk records into verified chunk bytes."""
    import constriction

    lengths = [r.n_symbols for r in records]
    tokens = np.full((len(records), max(lengths)), PAD, dtype=np.int64)
    coders: list[Any] = []
    for b, r in enumerate(records):
        if not r.stored:
            words = np.frombuffer(r.payload, "<u4").astype(np.uint32)
            coders.append(constriction.stream.queue.RangeDecoder(words))
            continue
        coders.append(None)  # stored or LZMA: its tokens are known, fed exactly as the encoder fed them
        if r.n_symbols:
            known = chunk_tokens(lm, r.raw())
            if known is None or len(known) != r.n_symbols:
                raise ContainerError(f"damaged container: stored chunk {r.index} does not match its record")
            tokens[b, : r.n_symbols] = known
    n_bytes, bits = sum(r.raw_len for r in records), 8.0 * sum(len(r.payload) for r in records)
    try:
        tick = meter.group(key, lengths, n_bytes, lambda f: f * bits)
        run_group(lm, p, tokens, lengths, coders, True, tick)
    except (ValueError, RuntimeError, IndexError, OverflowError) as exc:  # a decoder fed damaged data
        raise ContainerError(f"damaged container: range decoding failed ({exc})") from exc
    out = []
    for b, r in enumerate(records):
        raw = r.raw() if r.stored else _detokenize(lm, tokens[b, : r.n_symbols])
        if len(raw) != r.raw_len or zlib.crc32(raw) != r.raw_crc:
            raise ContainerError(
                f"chunk {r.index} decoded to bytes that fail its checksum: the file is damaged, or the model "
                "computed different probabilities here than when compressing"
            )
        out.append(raw)
    meter.finish(key, n_bytes, bits)
    return out
