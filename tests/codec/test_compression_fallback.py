"""Container version 3: the LZMA2 chunk record (never worse than LZMA per chunk), version-2 files."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compression import parse
from test_compression_fixtures import sample_text, tiny_model

from entropykit.codec import ContainerError, compress, decompress
from entropykit.codec.container import (
    MODE_CODED,
    MODE_LZMA,
    MODE_STORED,
    Params,
    chunk_record,
    lzma_compress,
    lzma_decompress,
    read_record,
)

RECORD_HEAD = 1 + 8  # tag + two CRC-32s; plus the varints


@pytest.fixture(scope="module")
def model():
    return tiny_model()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_an_lzma_record_in_a_version_2_file_is_refused() -> None:
    p = Params(window=64, prime=31, chunk_size=1000, group=1, version=2)
    record, _ = chunk_record(b"ab" * 400, 800, None)
    assert record[:1] == b"L"
    with pytest.raises(ContainerError, match="version 3"):
        read_record(io.BytesIO(record), p, 0)
    assert read_record(io.BytesIO(record), Params(64, 31, 1000, 1), 0).raw() == b"ab" * 400


@settings(max_examples=40, deadline=None)
@given(raw=st.binary(min_size=1, max_size=600), coded=st.one_of(st.none(), st.binary(max_size=700)))
def test_the_record_is_the_smallest_of_the_three(raw: bytes, coded: bytes | None) -> None:
    """Whatever the model's payload, the record is no longer than the smallest of stored, model-coded
    and LZMA plus its head, and it reads back to the chunk."""
    if coded is not None:
        coded = coded[: len(coded) // 4 * 4]
    record, _ = chunk_record(raw, len(raw), coded)

    def varint_len(n: int) -> int:
        return max(1, (n.bit_length() + 6) // 7)

    n = RECORD_HEAD + 2 * varint_len(len(raw))  # tag, raw length, symbols, CRCs
    lz = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[  # the documented filter, written out
        {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": max(len(raw), 4096)}])
    totals = {n + len(raw): len(raw)}  # stored
    if len(lz) < len(raw):
        totals.setdefault(n + varint_len(len(lz)) + len(lz), len(lz))
    if coded is not None and len(coded) < len(raw):
        totals.setdefault(n + varint_len(len(coded)) + len(coded), len(coded))
    assert len(record) == min(totals)
    r = read_record(io.BytesIO(record), Params(64, 31, 4096, 1), 0)
    assert r.raw_len == len(raw)
    if r.mode == MODE_CODED:
        assert r.payload == coded
    else:
        assert r.raw() == raw and r.mode in (MODE_STORED, MODE_LZMA)


def test_lzma_payload_is_standard_lzma2_that_xz_decodes() -> None:
    raw = sample_text(3000)
    lz = lzma_compress(raw)
    assert lzma_decompress(lz, len(raw), 0) == raw
    # the same stream as the stdlib's raw LZMA2 at preset 9e, and not larger than xz -9e's payload
    assert len(lz) <= len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) - 50
    xz = shutil.which("xz")
    if xz is None:
        pytest.skip("no xz binary for the independent decoder")
    out = subprocess.run([xz, "--format=raw", "--lzma2=preset=9e,dict=4KiB", "-dc"], input=lz,
                         capture_output=True, check=True).stdout
    assert out == raw


def test_damaged_lzma_payload_is_a_container_error() -> None:
    lz = bytearray(lzma_compress(sample_text(2000)))
    with pytest.raises(ContainerError, match="LZMA chunk 7"):
        lzma_decompress(bytes(lz), 1999, 7)  # wrong length
    lz[5] ^= 0xFF
    with pytest.raises(ContainerError, match="LZMA chunk 7"):
        lzma_decompress(bytes(lz[:20]), 2000, 7)  # cut short


def test_repetitive_binary_takes_lzma_and_round_trips(model) -> None:
    block = np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8).tobytes()
    data = block * 14  # the 64-token tiny model cannot copy 300 bytes back; LZMA can
    blob = compress(data, model, chunk_size=2100, precision="float32")
    info = parse(blob)
    assert [c["mode"] for c in info["chunks"]] == [MODE_LZMA, MODE_LZMA]
    assert decompress(blob, model) == data
    lz = sum(len(lzma_compress(data[i : i + 2100])) for i in (0, 2100))
    assert len(blob) <= lz + info["header_size"] + 53 + 2 * 15


@pytest.mark.parametrize("kind", ["random", "xz"])
def test_incompressible_input_does_not_grow_beyond_the_record_heads(model, kind: str) -> None:
    data = os.urandom(6000) if kind == "random" else lzma.compress(sample_text(20000), preset=9)
    blob = compress(data, model, chunk_size=2048, precision="float32")
    info = parse(blob)
    assert all(c["mode"] in (MODE_STORED, MODE_LZMA) for c in info["chunks"])
    # header + trailer + at most 15 bytes per chunk (tag, 2-byte varints, 2 CRCs)
    assert len(blob) - len(data) <= info["header_size"] + 53 + 15 * len(info["chunks"])
    assert decompress(blob, model) == data
