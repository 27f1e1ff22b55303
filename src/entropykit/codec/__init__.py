"""Lossless compression with a language model: range coding of each token under the model's prediction.

Arithmetic/range coding a sequence with the next-token distributions ``p(x_t | x_<t)`` of a model
costs ``sum_t -log2 p(x_t | x_<t) + O(1)`` bits (Rissanen 1976; Witten, Neal & Cleary 1987), so the
compressed size *is* the model's cross-entropy of the data (in bits). Bellard's ``ts_zip``/``nncp``
and LLMZip (Valmeekam et al. 2023) use this with large models; here any ``LanguageModel`` works,
by default the bundled byte-level ByteGPT, which codes *any* bytes (text in any encoding, binary).

How it stays exact
------------------
The decoder must reproduce the encoder's probabilities bit for bit, in another process, with
another thread count, after a fresh import. Three measures make that so:

1. *Same computation on both sides.* Encoder and decoder run the identical incremental procedure
   (BOS prime, one KV-cached step per token, a fixed re-prime schedule) on identically shaped
   batches: chunks are coded in lockstep groups of ``group`` chunks, the group composition is a
   function of the container header only, and rows that have finished (or are stored) are fed the
   same padding on both sides. So every forward call sees the same input tensor in both processes.
2. *Pinned threads, recorded arithmetic.* The model runs with ``torch.set_num_threads(1)`` for
   the duration of the call (the caller's setting is restored afterwards; groups run in parallel
   in worker processes, one thread each), so a different thread count on the decoding side cannot
   change the floating-point reduction order of any kernel. The arithmetic (float32; bfloat16
   with packed oneDNN weights where the CPU multiplies bf16 in hardware; and with it, by default,
   an int8 KV cache read by the fused kernel of ``decode_attention``, whose results are the same
   on every CPU) is recorded in header flags, so the decoder repeats the encoder's choice.
3. *Integer logits and an exact float64 softmax.* Logits are rounded to the fixed-point grid
   ``k = round(32 * logit)``; each symbol's weight is ``r ** (max(k) - k)`` with ``r = exp(-1/32)``
   read from an exact table built by repeated IEEE multiplication (no libm), passed as float64 to
   ``constriction``'s ``Categorical(perfect=False)``, which normalises and quantises it to 24-bit
   fixed point in integer arithmetic. A tiny float noise in a logit changes nothing unless it
   crosses a grid boundary, and the per-chunk CRC-32 of the decoded bytes catches it if it does.

Chunks and context
------------------
Input is cut into chunks of ``chunk_size`` bytes (a cut never splits a UTF-8 character when it can
move back up to 3 bytes), each coded independently: the context resets at every chunk start, so
chunks can be decoded in parallel (lockstep batches here). Inside a chunk the model sees a window
of ``window`` tokens (prefix included); when the window is full it is re-primed with the prefix and
the last ``prime`` tokens, so every token but the first ``window`` of a chunk has at least
``prime`` tokens of context. Models with rotary positions (the default ``bytegpt-general``) instead
slide a ring KV cache of ``window`` slots with a BOS attention sink (``slide``, container version 4):
every token computes once and, after the first ``window - 1``, sees exactly ``window - 2`` earlier
tokens plus the sink. A chunk whose coded form would not be smaller than the chunk itself is
*stored*, and one whose LZMA2 stream (``xz -9e``'s coding, Python's stdlib ``lzma``) is smaller than
both is written as that (container version 3, ``fallback="lzma"``, the default): so no chunk costs
more than the better of the model and LZMA plus a record head, and random or already-compressed
data grows by at most the per-chunk overhead.

The container format (magic, version, model identity, coding parameters, chunk records with
CRC-32s, a trailer with the original length and its SHA-256) is documented byte for byte in
``docs/container-format.md``.

Rooms: ``container`` (the format: header, records, trailer, ``container_info``), ``coding``
(quantised probabilities, the lockstep procedure that codes a group of chunks), ``pool`` (worker
processes, the progress meter); this module holds the public API. The model's fast incremental
step lives with the model (``entropykit.models.bytegpt_step``), its int8-KV attention kernel in
``entropykit.models.kernels.decode_attention``.

Example:
    >>> from entropykit.codec import compress, decompress
    >>> blob = compress(b"hello, world")           # the bundled default model
    >>> blob[1:4], decompress(blob)
    (b'EKZ', b'hello, world')
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, BinaryIO

from entropykit._validate import check_bool, check_choice, check_int
from entropykit.codec.coding import cut, decode_group, encode_group
from entropykit.codec.container import (
    FLAG_MATCH,
    FLAG_SLIDE,
    ContainerError,
    Params,
    Record,
    container_info,
    header,
    read_header,
    read_record,
    read_upto,
    trailer,
    verify_trailer,
)
from entropykit.codec.pool import Groups, Meter, Progress, closing, count_workers, pinned_threads
from entropykit.models import LanguageModel, load_model, resolve_model
from entropykit.models.bytegpt_step import int8kv_unavailable, is_bytegpt, is_rotary_bytegpt, step_precisions
from entropykit.precision import resolve

__all__ = [
    "DEFAULT_CHUNK_SIZE", "SLIDE_WINDOW", "ContainerError", "can_slide", "compress", "compress_stream",
    "container_info", "decompress", "decompress_stream", "resolve_precision",
]

DEFAULT_CHUNK_SIZE = 4096
DEFAULT_GROUP = 32
REPRIME_WINDOW = 512  # default window of re-primed coding
# default window of the sliding cache (rotary models): against 512, 0-4% smaller on every held-out kind
# of bytegpt-general (prose 4%, Python 2.9%), never larger; attention reads 1.5x the cache per token
SLIDE_WINDOW = 768


def resolve_precision(model: LanguageModel | str | None, precision: str = "auto") -> str:
    """The arithmetic ``compress`` uses for ``model`` with ``precision`` (see :func:`compress_stream`):
    ``"float32"``, ``"bfloat16"`` or ``"int8kv"``; ``"auto"`` resolved for this machine by
    :func:`entropykit.precision.resolve` over what the model's stepper runs here
    (:func:`entropykit.models.bytegpt_step.step_precisions`). Raises ValueError when the requested
    one cannot run here.

    Example:
        >>> resolve_precision(None, "float32")
        'float32'
    """
    lm = resolve_model(model)
    supported = step_precisions(lm)
    why = ""
    if not is_bytegpt(lm):
        why = "'bfloat16' and 'int8kv' are available for the bundled ByteGPT models only"
    elif "int8kv" not in supported:
        why = f"'int8kv' is not available here: {int8kv_unavailable(lm)}"
    return resolve(precision, supported, why=why)


def can_slide(model: LanguageModel | str | None) -> bool:
    """True when ``model`` can code through a sliding KV cache (``compress(..., slide=True)``): a
    ByteGPT with rotary positions (:func:`entropykit.models.bytegpt_step.is_rotary_bytegpt`).

    Example:
        >>> can_slide("bytegpt-6l"), can_slide("bytegpt-general")  # learned positions; rotary
        (False, True)
    """
    return is_rotary_bytegpt(resolve_model(model))


def _params(
    model: LanguageModel, chunk_size: int, group: int, window: int | None, prime: int | None, precision: str,
    fallback: str | None = "lzma", slide: bool | None = None, match: bool = True,
) -> Params:
    check_int(chunk_size, "chunk_size", 1, 2**30)
    check_int(group, "group", 1, 4096)
    n_prefix = len(model.prefix_ids)
    if slide is None:
        slide = can_slide(model) and prime is None
    elif slide and not can_slide(model):
        raise ValueError(f"slide: a sliding cache needs a rotary ByteGPT, got {model.name}")
    w = min(SLIDE_WINDOW if slide else REPRIME_WINDOW, model.max_context) if window is None else window
    check_int(w, "window", n_prefix + 2, model.max_context)
    if slide:
        if prime is not None:
            raise ValueError(f"prime: a sliding cache never re-primes, got prime={prime} with slide=True")
        k = w - n_prefix - 1  # recorded, unused: the header's sanity rule wants 0 < prime < window
    else:
        k = (w - n_prefix) // 2 if prime is None else prime
    check_int(k, "prime", 1, w - n_prefix - 1)
    if fallback is not None:
        check_choice(fallback, ("lzma",), "fallback")
    check_bool(match, "match")
    flags = Params.flags_of(resolve_precision(model, precision)) | (FLAG_SLIDE if slide else 0)
    flags |= FLAG_MATCH if match else 0
    return Params(w, k, chunk_size, group, flags, lzma=fallback is not None)


def _check_model(model: LanguageModel | str | None, identity: str, params: Params) -> LanguageModel:
    if model is None:
        name = identity.rsplit("@", 1)[0]
        try:
            model = load_model(name)
        except (ValueError, OSError) as exc:
            raise ContainerError(
                f"this file was compressed with model {identity!r}, which could not be loaded ({exc}); "
                "pass the model (--model NAME_OR_PATH)"
            ) from exc
    lm = resolve_model(model)
    if lm.identity != identity:
        raise ContainerError(
            f"wrong model: this file was compressed with {identity!r} but the model given is "
            f"{lm.identity!r}; decompress with the same model (--model)"
        )
    if params.window > lm.max_context or params.prime > params.window - len(lm.prefix_ids) - 1:
        raise ContainerError("damaged container: window/prime do not fit the model's context")
    if params.precision != "float32" and not is_bytegpt(lm):
        raise ContainerError("damaged container: a precision flag is set for a model that has none")
    if params.slide and not can_slide(lm):
        raise ContainerError("damaged container: the slide flag is set for a model without rotary positions")
    if params.int8_kv and (reason := int8kv_unavailable(lm)):
        raise ContainerError(
            f"this file was coded with the int8-KV attention kernel, which cannot run here: {reason}"
        )
    return lm


def compress_stream(
    src: BinaryIO,
    dst: BinaryIO,
    model: LanguageModel | str | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    group: int | None = None,
    window: int | None = None,
    prime: int | None = None,
    precision: str = "auto",
    workers: int | None = None,
    progress: Progress | None = None,
    fallback: str | None = "lzma",
    slide: bool | None = None,
    match: bool = True,
) -> int:
    """Compress the binary stream ``src`` into ``dst``; returns the number of bytes written.

    Cost: ``sum_t -log2 p(x_t | context) + O(1)`` bits per chunk (range coding; Rissanen 1976),
    i.e. the model's cross-entropy of the data in bits under the chunk/window policy of the module
    docstring (with ``match``, of the mixture of the model and the match model), plus the container
    overhead (a header of ~60 bytes, a 53-byte trailer, ~15 bytes and a <= 4-byte coder flush per
    chunk). Memory is bounded by ``workers`` groups (``group *
    chunk_size`` bytes of input each), so inputs larger than memory work.

    ``model``: a ``LanguageModel``, a name for ``load_model`` or ``None`` (the bundled default,
    ``models.DEFAULT_MODEL``). ``chunk_size``: bytes per independently decodable chunk. ``group``: chunks
    coded together in one lockstep batch (recorded in the container; default: up to 32, fewer for
    a small seekable input so that every worker gets a group). ``window``: tokens of context
    (default ``min(512, max_context)``), re-primed with the last ``prime`` tokens (default half the
    window); with ``slide``, the sliding cache's slots (default ``min(768, max_context)``).
    ``precision``: the arithmetic of the bundled ByteGPT models, ``"float32"``,
    ``"bfloat16"`` (weights, activations and KV cache in bf16 with fp32 accumulation; the coded
    size changes by well under 0.1%), ``"int8kv"`` (bf16 with the KV cache in int8, read by the
    fused C kernel of ``decode_attention``: 1.6-1.8x faster than ``"bfloat16"`` at the same coded
    size; needs a C compiler on first use and a head size of 32) or ``"auto"`` (``"int8kv"`` where
    the CPU multiplies bf16 in hardware and the kernel builds, else ``"bfloat16"`` there, else
    ``"float32"``); it is recorded in the container, so the decoder repeats it.
    Other models run as they are. ``workers``: groups coded at the same time in worker processes,
    one core each (default: the CPU count, at most 8); it changes the speed, never the
    probabilities of a given group.
    ``progress(done_bytes, coded_bits)`` is called as coding advances. ``fallback``: ``"lzma"``
    (default) writes a chunk as LZMA2 (``xz -9e``'s filter) when that is smaller than both its
    model-coded and stored forms; ``None`` only model-codes or stores (as version-2 writers did).
    ``slide``: code through a sliding (ring) KV cache of ``window`` slots with a BOS attention sink
    instead of re-priming full windows (every token after the first ``window - 1`` of a chunk then sees
    exactly ``window - 2`` earlier tokens plus the sink, and no token is computed twice); ``None``
    (default): on for a rotary ByteGPT (:func:`can_slide`, e.g. the default ``bytegpt-general``)
    unless ``prime`` is given. Recorded in the header (version 4, flag bit 2).
    ``match``: mix each step's distribution with the chunk's match model
    (:class:`entropykit.codec.match.MatchModel`: the token that followed the last occurrence of the
    last 6 tokens, with a learned weight), so repeats beyond the window cost little (held-out 12 KB
    slices with bytegpt-general: 0.5-16% smaller, most on repetitive text; 0.2% larger on the GNU
    licences); recorded in the header (version 5, flag bit 3).

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> n = compress_stream(io.BytesIO(b"abc"), out)
        >>> n == len(out.getvalue()), decompress(out.getvalue())
        (True, b'abc')
    """
    lm = resolve_model(model)
    n_workers = count_workers(workers)
    if group is None:  # enough groups to keep every worker busy, each a batch of up to 32 chunks
        remaining = _remaining(src)
        n_chunks_total = 1 if remaining is None else max(1, -(-remaining // max(1, chunk_size)))
        group = DEFAULT_GROUP if remaining is None else min(DEFAULT_GROUP, -(-n_chunks_total // n_workers))
    p = _params(lm, chunk_size, group, window, prime, precision, fallback, slide, match)
    head = header(lm.identity, p)
    dst.write(head)
    written, n_chunks, digest, meter = len(head), 0, hashlib.sha256(), Meter(progress)
    carry, eof = b"", False
    groups = Groups(lm, n_workers, meter)
    with pinned_threads(), closing(groups):
        while True:
            batch: list[tuple[int, list[bytes]]] = []  # (first chunk's index, chunks) per group
            for _ in range(n_workers):
                # 4 bytes of look-ahead beyond the group let the last cut see the byte after it
                more, eof = (b"", True) if eof else read_upto(src, p.group * p.chunk_size + 4 - len(carry))
                buf, start = carry + more, 0
                chunks: list[bytes] = []
                while start < len(buf) and len(chunks) < p.group:
                    end = cut(buf, start, p.chunk_size)
                    chunks.append(buf[start:end])
                    start = end
                carry = buf[start:]
                if not chunks:
                    break
                batch.append((n_chunks, chunks))
                n_chunks += len(chunks)
            if not batch:
                break
            coded = groups.run(encode_group, p, batch)
            for (_, chunks), records in zip(batch, coded):
                for raw, record in zip(chunks, records):
                    dst.write(record)
                    digest.update(raw)
                    written += len(record)
    tail = trailer(n_chunks, meter.bytes, digest.digest())
    dst.write(tail)
    return written + len(tail)


def _remaining(src: BinaryIO) -> int | None:
    """Bytes left in a seekable ``src`` (None for pipes)."""
    try:
        if not src.seekable():
            return None
        here = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(here)
        return end - here
    except (OSError, AttributeError, ValueError):
        return None


def decompress_stream(
    src: BinaryIO,
    dst: BinaryIO,
    model: LanguageModel | str | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Decompress a container from ``src`` into ``dst``; returns the number of bytes written.

    Inverse of :func:`compress_stream`. ``model=None`` loads the model named in the container;
    a model whose identity (name + weights hash) differs is refused. Every chunk is checked
    (record CRC-32 before decoding, CRC-32 of the decoded bytes after) before it is written, and the
    trailer's length and SHA-256 of the whole output at the end; any mismatch, truncation or
    trailing garbage raises ``ContainerError`` (a ``ValueError``). Chunks already verified may have
    been written to ``dst`` by then, so write to a temporary file and discard it on error (the CLI
    does). ``workers``: groups decoded at the same time (default: the CPU count, at most 8).
    ``progress(done_bytes, coded_bits)`` is called as decoding advances.

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> decompress_stream(io.BytesIO(compress(b"abc")), out), out.getvalue()
        (3, b'abc')
    """
    identity, p = read_header(src)
    lm = _check_model(model, identity, p)
    n_workers = count_workers(workers)
    n_chunks, digest, meter = 0, hashlib.sha256(), Meter(progress)
    tail: bytes | None = None
    groups = Groups(lm, n_workers, meter)
    with pinned_threads(), closing(groups):
        while tail is None:
            batch: list[tuple[int, list[Record]]] = []
            while tail is None and len(batch) < n_workers:
                records: list[Record] = []
                while len(records) < p.group:
                    item = read_record(src, p, n_chunks)
                    if isinstance(item, bytes):
                        tail = item
                        break
                    records.append(item)
                    n_chunks += 1
                if records:
                    batch.append((records[0].index, records))
            for chunks in groups.run(decode_group, p, batch) if batch else []:
                for raw in chunks:
                    dst.write(raw)
                    digest.update(raw)
    assert tail is not None
    verify_trailer(tail, n_chunks, meter.bytes, digest.digest())
    if read_upto(src, 1)[0]:
        raise ContainerError("damaged container: unexpected data after the end of the container")
    return meter.bytes


def compress(data: bytes, model: LanguageModel | str | None = None, **options: Any) -> bytes:
    """Compress ``data`` losslessly with a language model; returns the container bytes.

    The size is the model's cross-entropy of ``data`` in bits (``sum_t -log2 p(x_t | x_<t)``,
    range coding; Rissanen 1976, Witten et al. 1987) plus a small constant per chunk; see
    :func:`compress_stream` for ``model`` and the ``options`` (``chunk_size``, ``group``,
    ``window``, ``prime``, ``progress``).

    Example:
        >>> blob = compress(b"any bytes \\x00\\xff")
        >>> decompress(blob) == b"any bytes \\x00\\xff"
        True
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    out = io.BytesIO()
    compress_stream(io.BytesIO(bytes(data)), out, model, **options)
    return out.getvalue()


def decompress(blob: bytes, model: LanguageModel | str | None = None, **options: Any) -> bytes:
    """Recover the exact original bytes from a container made by :func:`compress`.

    ``model=None`` loads the model named in the container (and checks its weights hash). A damaged,
    truncated or foreign file, another format version or a wrong model raises ``ContainerError``
    (a ``ValueError``) -- never wrong output. ``options``: ``progress``.

    Example:
        >>> decompress(compress(b""))
        b''
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"blob: expected bytes, got {type(blob).__name__}")
    out = io.BytesIO()
    decompress_stream(io.BytesIO(bytes(blob)), out, model, **options)
    return out.getvalue()
