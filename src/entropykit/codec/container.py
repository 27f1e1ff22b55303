"""The container format (version 5): header, chunk records and trailer, read and written here only.

Version 5 adds header flag bit 3 (:data:`FLAG_MATCH`): each step's distribution is mixed with the
match model of :mod:`entropykit.codec.match` before it is coded. Version 4 adds header flag bit 2
(:data:`FLAG_SLIDE`): the model steps through a sliding (ring) KV
cache with a BOS attention sink instead of re-priming full windows (rotary ByteGPTs). Version 3
adds the ``L`` chunk record: the chunk compressed by LZMA2 (Python's stdlib ``lzma``, raw LZMA2
stream, preset 9 + extreme, the filter of ``xz -9e``), kept when it is smaller than both the
model-coded record and the stored one, so no chunk costs more than the better of the two standard
ways (plus a record head). Version 2 containers (no ``L`` records) still decode.

The layout is documented byte for byte in ``docs/container-format.md``; a damaged, truncated or
foreign file raises :class:`ContainerError`. Nothing here runs a model.

Example:
    >>> p = Params(window=64, prime=31, chunk_size=1000, group=2, flags=FLAG_BF16)
    >>> head = header("tiny@0123", p)
    >>> import io
    >>> read_header(io.BytesIO(head)) == ("tiny@0123", p), p.precision
    (True, 'bfloat16')
"""

from __future__ import annotations

import io
import lzma
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from entropykit.precision import Precision

__all__ = [
    "FLAG_BF16", "FLAG_INT8_KV", "FLAG_MATCH", "FLAG_SLIDE", "LOGIT_SCALE", "MAGIC", "MODE_CODED",
    "MODE_LZMA", "MODE_STORED", "VERSION",
    "ContainerError", "Params", "Record", "chunk_record", "container_info", "header", "original_length",
    "read_exact", "read_header", "read_record", "read_upto", "trailer", "verify_trailer",
]

MAGIC = b"\x89EKZ\r\n\x1a\n"
VERSION = 5  # 2: bf16 flag, compact records (varint sizes); 3: LZMA2 records (tag L); 4: the slide flag;
# 5: the match flag
READABLE = (2, 3, 4, 5)
FLAG_BF16 = 1  # header flag: the model arithmetic ran in bfloat16
FLAG_INT8_KV = 2  # header flag (with FLAG_BF16): int8 KV cache read by the fused decode-attention kernel
FLAG_SLIDE = 4  # header flag (version >= 4): a sliding (ring) KV cache with a BOS sink, no re-primes
FLAG_MATCH = 8  # header flag (version >= 5): the match model is mixed into every step (codec/match.py)
_FLAG_SINCE = {FLAG_SLIDE: 4, FLAG_MATCH: 5}  # the version that introduced each coding flag
LOGIT_SCALE = 32  # logits are rounded to multiples of 1/32 nat
MODE_CODED, MODE_STORED, MODE_LZMA = 0, 1, 2
LZMA_PRESET = 9 | lzma.PRESET_EXTREME  # xz -9e; the dictionary is sized to the chunk (see _lzma_filters)

_HEADER = struct.Struct("<8sBBHIIIH")  # magic, version, flags, logit scale, window, prime, chunk, group
_CRCS = struct.Struct("<II")  # a chunk record's raw CRC-32 and record CRC-32
_TRAILER = struct.Struct("<cQQ32sI")  # tag, n_chunks, original length, sha256, trailer crc
_TAGS = {b"C": MODE_CODED, b"S": MODE_STORED, b"L": MODE_LZMA}  # record tags; b"E" starts the trailer
_FLAGS: dict[str, int] = {"float32": 0, "bfloat16": FLAG_BF16, "int8kv": FLAG_BF16 | FLAG_INT8_KV}


class ContainerError(ValueError):
    """A container that is damaged, truncated, of another version or made with another model."""


@dataclass(frozen=True)
class Params:
    """The coding parameters a header records (see the docs' header table)."""

    window: int
    prime: int
    chunk_size: int
    group: int
    flags: int = 0  # the header's FLAG_* bits: the arithmetic
    version: int = VERSION  # of the container read (written containers are always VERSION)
    lzma: bool = True  # encoder only (not in the header): may write LZMA2 records

    @staticmethod
    def flags_of(precision: str) -> int:
        """The header flags of a concrete precision."""
        return _FLAGS[precision]

    @property
    def bf16(self) -> bool:
        return bool(self.flags & FLAG_BF16)

    @property
    def int8_kv(self) -> bool:
        return bool(self.flags & FLAG_INT8_KV)

    @property
    def slide(self) -> bool:
        return bool(self.flags & FLAG_SLIDE)

    @property
    def match(self) -> bool:
        return bool(self.flags & FLAG_MATCH)

    @property
    def precision(self) -> Precision:
        return "int8kv" if self.int8_kv else "bfloat16" if self.bf16 else "float32"


# --- header ----------------------------------------------------------------------------------------------


def header(identity: str, p: Params) -> bytes:
    """The header bytes for a model ``identity`` and parameters ``p``."""
    ident = identity.encode("utf-8")
    body = _HEADER.pack(MAGIC, VERSION, p.flags, LOGIT_SCALE, p.window, p.prime, p.chunk_size, p.group)
    body += bytes([len(ident)]) + ident
    return body + struct.pack("<I", zlib.crc32(body))


def read_upto(src: BinaryIO, size: int) -> tuple[bytes, bool]:
    """Up to ``size`` bytes of ``src`` (reading until full or EOF); returns (bytes, reached EOF)."""
    parts: list[bytes] = []
    have = 0
    while have < size:
        part = src.read(size - have)
        if not part:
            return b"".join(parts), True
        parts.append(part)
        have += len(part)
    return b"".join(parts), False


def read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    """Exactly ``n`` bytes of ``src``, else "truncated container" naming ``what``."""
    data, _ = read_upto(src, n)
    if len(data) != n:
        raise ContainerError(f"truncated container: {what} is cut short ({len(data)} of {n} bytes)")
    return data


def read_header(src: BinaryIO) -> tuple[str, Params]:
    """The model identity and parameters of the header at the start of ``src`` (checked)."""
    head, _ = read_upto(src, _HEADER.size)
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise ContainerError("not an entropykit compressed file (bad magic number)")
    if len(head) < _HEADER.size:
        raise ContainerError("truncated container: the header is cut short")
    _, version, flags, scale, window, prime, chunk_size, group = _HEADER.unpack(head)
    if version not in READABLE:
        raise ContainerError(
            f"unsupported container format version {version} (this entropykit reads versions "
            f"{', '.join(map(str, READABLE))})"
        )
    n = read_exact(src, 1, "the header")
    ident = read_exact(src, n[0], "the header")
    (crc,) = struct.unpack("<I", read_exact(src, 4, "the header"))
    if zlib.crc32(head + n + ident) != crc:
        raise ContainerError("damaged container: header checksum mismatch")
    sane = chunk_size and group and 0 < prime < window
    known = flags & ~sum(_FLAG_SINCE) in _FLAGS.values() and all(
        version >= since or not flags & flag for flag, since in _FLAG_SINCE.items()
    )
    if not known or scale != LOGIT_SCALE or not sane:
        raise ContainerError("damaged container: invalid coding parameters in the header")
    try:
        identity = ident.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContainerError("damaged container: the model identity is not UTF-8") from exc
    return identity, Params(window, prime, chunk_size, group, flags, version)


# --- chunk records ---------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low first, high bit = more bytes follow."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_varint(src: BinaryIO, what: str) -> tuple[int, bytes]:
    """A LEB128 value below 2**32 and its bytes."""
    raw = bytearray()
    for _ in range(5):
        raw += read_exact(src, 1, what)
        if not raw[-1] & 0x80:
            return sum((b & 0x7F) << (7 * i) for i, b in enumerate(raw)), bytes(raw)
    raise ContainerError(f"damaged container: over-long size field in {what}")


def _lzma_filters(raw_len: int) -> list[dict[str, int]]:
    """LZMA2 at preset 9e with a dictionary of the chunk's size (at least 4 KiB, at most preset 9's
    64 MiB): the same coding as a 64 MiB dictionary for a chunk that fits, without allocating ~700 MB."""
    return [{"id": lzma.FILTER_LZMA2, "preset": LZMA_PRESET, "dict_size": min(max(raw_len, 4096), 1 << 26)}]


def lzma_compress(raw: bytes) -> bytes:
    """``raw`` as a raw LZMA2 stream (no .xz container), preset 9 + extreme (``xz -9e``'s filter)."""
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters(len(raw)))


def lzma_decompress(payload: bytes, raw_len: int, index: int) -> bytes:
    """Inverse of :func:`lzma_compress`; a damaged stream raises ContainerError."""
    try:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma_filters(raw_len))
        raw = d.decompress(payload, max_length=raw_len + 1)
    except lzma.LZMAError as exc:
        raise ContainerError(f"damaged container: LZMA chunk {index} does not decode ({exc})") from exc
    if not d.eof or d.unused_data or len(raw) != raw_len:
        raise ContainerError(f"damaged container: LZMA chunk {index} has the wrong length")
    return raw


def chunk_record(raw: bytes, n_symbols: int, payload: bytes | None, *, use_lzma: bool = True
                 ) -> tuple[bytes, int]:
    """The smallest record of chunk ``raw`` and the length of the payload it holds: model-coded
    (``n_symbols`` tokens range-coded into ``payload``; ``None``: not coded), LZMA2 (:func:`lzma_compress`
    of ``raw``; not with ``use_lzma=False``) or stored. Ties go to the earlier of stored, coded, LZMA."""
    size = struct.Struct("<II").size
    n = _varint(len(raw)) + _varint(n_symbols)
    options = [(b"S" + n, raw)]
    if payload is not None and len(payload) < len(raw):
        options.append((b"C" + n + _varint(len(payload)), payload))
    lz = lzma_compress(raw) if use_lzma else raw
    if len(lz) < len(raw):
        options.append((b"L" + n + _varint(len(lz)), lz))
    head, body = min(options, key=lambda o: len(o[0]) + len(o[1]) + size)
    head += struct.pack("<I", zlib.crc32(raw))
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body, len(body)


@dataclass(frozen=True)
class Record:
    """A chunk record read back (its record CRC checked; ``raw_crc`` is checked after decoding)."""

    index: int
    mode: int
    raw_len: int
    n_symbols: int
    raw_crc: int
    payload: bytes

    @property
    def stored(self) -> bool:
        """Stored or LZMA: the decoder knows the chunk's bytes without the model (:meth:`raw`)."""
        return self.mode in (MODE_STORED, MODE_LZMA)

    def raw(self) -> bytes:
        """The chunk's bytes of a stored or LZMA record (not yet CRC-checked)."""
        if self.mode == MODE_LZMA:
            return lzma_decompress(self.payload, self.raw_len, self.index)
        if self.mode == MODE_STORED:
            return self.payload
        raise ValueError(f"chunk {self.index} is model-coded: its bytes come from the range decoder")


def read_record(src: BinaryIO, p: Params, index: int) -> Record | bytes:
    """The next chunk record, or the trailer's bytes when the end tag comes."""
    tag = read_exact(src, 1, "a chunk record")
    if tag == b"E":
        return tag + read_exact(src, _TRAILER.size - 1, "the trailer")
    if tag not in _TAGS:
        raise ContainerError(f"damaged container: unexpected record tag {tag!r} at chunk {index}")
    mode, head = _TAGS[tag], bytearray(tag)
    if mode == MODE_LZMA and p.version < 3:
        raise ContainerError(f"damaged container: an LZMA record (version 3) in a version {p.version} file")
    raw_len, raw = _read_varint(src, "a chunk record")
    n_sym, raw_sym = _read_varint(src, "a chunk record")
    head += raw + raw_sym
    n_pay = raw_len
    if mode != MODE_STORED:
        n_pay, raw = _read_varint(src, "a chunk record")
        head += raw
    if not (0 < raw_len <= p.chunk_size and n_sym <= raw_len and n_pay <= raw_len):
        raise ContainerError(f"damaged container: invalid sizes in chunk {index}")
    if mode == MODE_CODED and n_pay % 4:
        raise ContainerError(f"damaged container: invalid payload size in chunk {index}")
    crcs = read_exact(src, _CRCS.size, "a chunk record")
    head += crcs[:4]  # the record CRC covers the head up to and including the raw CRC
    raw_crc, crc = _CRCS.unpack(crcs)
    payload = read_exact(src, n_pay, "a chunk payload")
    if zlib.crc32(payload, zlib.crc32(head)) != crc:
        raise ContainerError(f"damaged container: checksum mismatch in chunk {index}")
    return Record(index, mode, raw_len, n_sym, raw_crc, payload)


# --- trailer ---------------------------------------------------------------------------------------------


def trailer(n_chunks: int, length: int, sha256: bytes) -> bytes:
    """The trailer: chunk count, original length, SHA-256 of the original, CRC-32."""
    body = _TRAILER.pack(b"E", n_chunks, length, sha256, 0)[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def verify_trailer(tail: bytes, n_chunks: int, length: int, sha256: bytes) -> None:
    """Check the trailer ``tail`` (as :func:`read_record` returned it) against what was decoded."""
    _, t_chunks, t_len, t_sha, t_crc = _TRAILER.unpack(tail)
    if zlib.crc32(tail[:-4]) != t_crc:
        raise ContainerError("damaged container: trailer checksum mismatch")
    if t_chunks != n_chunks or t_len != length:
        raise ContainerError(
            f"damaged container: the trailer promises {t_len} bytes in {t_chunks} chunks, found "
            f"{length} in {n_chunks}"
        )
    if t_sha != sha256:
        raise ContainerError("damaged container: SHA-256 of the output does not match the original")


def original_length(src: BinaryIO) -> int | None:
    """The original length a seekable container's trailer states (None if unknown); the stream is
    left at its start. For progress bars: nothing here is verified."""
    try:
        if not src.seekable():
            return None
        end = src.seek(0, os.SEEK_END)
        tail = b""
        if end >= _TRAILER.size:
            src.seek(end - _TRAILER.size)
            tail = src.read(_TRAILER.size)
        src.seek(0)
    except OSError:
        return None
    return int(_TRAILER.unpack(tail)[2]) if tail[:1] == b"E" else None


def container_info(src: BinaryIO | bytes | bytearray | memoryview | str | os.PathLike[str]) -> dict[str, Any]:
    """What a container's header records: ``model`` (identity), ``version``, ``precision``,
    ``window``, ``prime``, ``chunk_size``, ``group``, ``slide`` and ``match`` (flag bits 2 and 3), and
    ``original_length`` from the trailer (None when ``src`` cannot seek).

    ``src``: the container's bytes, a path (``str`` or ``os.PathLike``) or a binary file; a
    seekable file is left at its start. Raises ContainerError for a damaged, truncated or foreign
    header; the chunks are not checked (``decompress`` does that).

    Example:
        >>> from entropykit.codec import compress
        >>> info = container_info(compress(b"abc", precision="float32"))
        >>> info["precision"], info["original_length"], info["model"].split("@")[0]
        ('float32', 3, 'bytegpt-general')
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        return container_info(io.BytesIO(bytes(src)))
    if isinstance(src, (str, os.PathLike)):
        with Path(src).open("rb") as f:
            return container_info(f)
    if not callable(getattr(src, "read", None)):
        raise TypeError(f"src must be bytes, a path or a binary file, got {type(src).__name__}")
    identity, p = read_header(src)
    return {
        "model": identity, "version": p.version, "precision": p.precision, "window": p.window,
        "prime": p.prime, "chunk_size": p.chunk_size, "group": p.group, "slide": p.slide, "match": p.match,
        "original_length": original_length(src),
    }
