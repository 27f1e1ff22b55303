"""Lossless LM compression: exact round trips, container checks, coding cost, determinism."""

from __future__ import annotations

import io
import math
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import match_reference
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compression_fixtures import ROOT, other_model, sample_text, tiny_model, tiny_model_dir

from entropykit.codec import (
    ContainerError,
    compress,
    compress_stream,
    container_info,
    decompress,
    decompress_stream,
    resolve_precision,
)
from entropykit.codec.coding import quantized_probabilities
from entropykit.codec.container import FLAG_MATCH, LOGIT_SCALE, MAGIC
from entropykit.codec.pool import Meter
from entropykit.models import ByteModel
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig
from entropykit.models.kernels import decode_attention
from entropykit.precision import native_bf16

# the int8-KV kernel needs a C compiler; without one those tests are skipped (the rest still run)
needs_kernel = pytest.mark.skipif(
    not decode_attention.available(),
    reason=f"int8-KV kernel unavailable: {decode_attention.unavailable_reason()}",
)

UTF8 = "Grüße aus Köln — naïve café, 日本語のテキスト, emoji 🎉🚀, ελληνικά, русский текст.\n".encode()


# --- an independent parser of the documented layout (docs/container-format.md) ----------------------


def parse(blob: bytes) -> dict:
    """Parse a container with plain struct calls, following the byte layout table of the docs."""
    magic, version, flags, scale, window, prime, chunk_size, group = struct.unpack_from("<8sBBHIIIH", blob, 0)
    pos = 26
    n = blob[pos]
    identity = blob[pos + 1 : pos + 1 + n].decode()
    pos += 1 + n
    (hcrc,) = struct.unpack_from("<I", blob, pos)
    assert hcrc == zlib.crc32(blob[:pos])
    pos += 4
    chunks = []

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            byte = blob[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while blob[pos : pos + 1] in (b"C", b"S", b"L"):
        start, mode = pos, {b"C": 0, b"S": 1, b"L": 2}[blob[pos : pos + 1]]
        pos += 1
        raw_len, n_sym = varint(), varint()
        n_pay = varint() if mode != 1 else raw_len
        _raw_crc, crc = struct.unpack_from("<II", blob, pos)
        payload = blob[pos + 8 : pos + 8 + n_pay]
        assert crc == zlib.crc32(blob[start : pos + 4] + payload)
        chunks.append({"mode": mode, "raw_len": raw_len, "n_symbols": n_sym, "payload": payload})
        pos += 8 + n_pay
    tag, n_chunks, length, sha, tcrc = struct.unpack_from("<cQQ32sI", blob, pos)
    assert tag == b"E" and tcrc == zlib.crc32(blob[pos : pos + 49]) and pos + 53 == len(blob)
    return {
        "magic": magic, "version": version, "flags": flags, "scale": scale, "window": window, "prime": prime,
        "chunk_size": chunk_size, "group": group, "identity": identity, "chunks": chunks,
        "n_chunks": n_chunks, "length": length, "sha256": sha, "header_size": 31 + n,
    }


@pytest.fixture(scope="module")
def model():
    return tiny_model()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# --- round trips ---------------------------------------------------------------------------------------


CASES = {
    "empty": b"",
    "one byte": b"x",
    "one NUL": b"\x00",
    "one 0xff": b"\xff",
    "random binary": np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "utf-8 multibyte": UTF8 * 12,
    "invalid utf-8": b"abc\xff\xfe\xc3(\xa0\xa1 \xe2\x82 text \xf0\x28\x8c\xbc" * 40,
    "latin-1 text": "Façade, señor, Zürich — déjà vu.\n".encode("latin-1", errors="replace") * 30,
    "utf-16 text": "Entropy of UTF-16 text\n".encode("utf-16") * 30,
    "text": sample_text(6000, 1234),
}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip(model, name: str) -> None:
    data = CASES[name]
    blob = compress(data, model, chunk_size=1000, group=4, window=48, prime=20)
    assert decompress(blob, model) == data
    info = parse(blob)
    assert info["length"] == len(data) and sum(c["raw_len"] for c in info["chunks"]) == len(data)
    if name == "text":  # text is model-coded (or LZMA where that is smaller) and much smaller than its bytes
        modes = [c["mode"] for c in info["chunks"]]
        assert set(modes) <= {0, 2} and 0 in modes
        assert len(blob) < 0.7 * len(data)


def test_random_bytes_are_stored_not_expanded(model) -> None:
    data = os.urandom(5000)
    blob = compress(data, model, chunk_size=2048)
    info = parse(blob)
    assert [c["mode"] for c in info["chunks"]] == [1, 1, 1]
    assert len(blob) <= len(data) + info["header_size"] + 53 + 13 * 3  # tag, 2 x 2-byte varints, 2 CRCs
    assert decompress(blob, model) == data


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(max_size=400),
    chunk_size=st.integers(1, 150),
    group=st.integers(1, 5),
    window=st.integers(3, 64),
    prime_frac=st.floats(0.0, 1.0),
)
def test_round_trip_property(
    data: bytes, chunk_size: int, group: int, window: int, prime_frac: float
) -> None:
    model = tiny_model()
    prime = 1 + int(prime_frac * (window - 3))
    blob = compress(data, model, chunk_size=chunk_size, group=group, window=window, prime=prime)
    assert decompress(blob, model) == data


def test_chunk_cuts_do_not_split_utf8(model) -> None:
    data = UTF8 * 5
    blob = compress(data, model, chunk_size=37, group=3)
    pos = 0
    for c in parse(blob)["chunks"]:
        piece = data[pos : pos + c["raw_len"]]
        piece.decode("utf-8")  # every chunk is whole characters
        pos += c["raw_len"]
    assert decompress(blob, model) == data


def test_stream_api_with_small_reads(model) -> None:
    class Trickle(io.RawIOBase):  # a pipe-like source returning at most 7 bytes per read
        def __init__(self, data: bytes) -> None:
            self.buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.buf.read(min(7, n) if n >= 0 else 7)

    data = sample_text(3000) + UTF8
    out = io.BytesIO()
    n = compress_stream(Trickle(data), out, model, chunk_size=300, group=3)  # type: ignore[arg-type]
    assert n == len(out.getvalue())
    assert out.getvalue() == compress(data, model, chunk_size=300, group=3)  # same bytes as in memory
    back = io.BytesIO()
    assert decompress_stream(Trickle(out.getvalue()), back, model) == len(data)  # type: ignore[arg-type]
    assert back.getvalue() == data


def test_large_input_round_trip_1mb(model) -> None:
    """1 MB round trip with the tiny trained ByteGPT (the bundled 6-layer model would take minutes
    on 2 cores; its round trip is tested on ~24 KB in test_compression_bundled.py)."""
    data = sample_text(1 << 20, 777)
    t = time.perf_counter()
    blob = compress(data, model, chunk_size=4096, group=128)
    assert decompress(blob, model) == data
    assert len(blob) < 0.75 * len(data)
    assert time.perf_counter() - t < 240


# --- the coding cost is the model's cross-entropy -----------------------------------------------------


def policy_probs(model, tokens: list[int], window: int, prime: int) -> np.ndarray:
    """p(. | context) (n, V) float64 (softmax in float64) of full, non-incremental forward passes per window:
    window 1 = BOS + x[0:window-1] predicts x[0:window]; each later window = BOS + the last `prime`
    tokens before position `pos` + the next ones, predicting window - prime tokens."""
    gpt = model.module
    rows, pos, n = [], 0, len(tokens)
    with torch.no_grad():
        while pos < n:
            if pos == 0:
                ctx, count = [], window
            else:
                ctx, count = tokens[pos - prime : pos], window - prime
            count = min(count, n - pos)
            inp = [BOS, *ctx, *tokens[pos : pos + count - 1]]
            logits, _ = gpt(torch.tensor([inp]))
            rows.append(torch.softmax(logits[0].double(), -1)[len(ctx) :].numpy())
            pos += count
    return np.concatenate(rows)


@pytest.mark.parametrize("match", [False, True])
@pytest.mark.parametrize(("window", "prime"), [(64, 31), (24, 10)])
def test_coded_size_matches_cross_entropy(model, window: int, prime: int, match: bool) -> None:
    """Payload bits = the float64 reference model's cross-entropy under the re-prime policy; with the
    match model, the cross-entropy of the independent reference mixture (``match_reference``)."""
    data = sample_text(6000, 50_000)
    blob = compress(data, model, chunk_size=2000, group=3, window=window, prime=prime, fallback=None,
                    precision="float32", match=match)
    info = parse(blob)
    pos, ref, coded, alone = 0, 0.0, 0, 0.0
    for c in info["chunks"]:
        assert c["mode"] == 0
        tokens = list(data[pos : pos + c["raw_len"]])
        probs = policy_probs(model, tokens, window, prime)
        bits = float(-np.log2(probs[np.arange(len(tokens)), tokens]).sum())
        alone += bits
        ref += match_reference.mixture_bits(probs, tokens) if match else bits
        coded += 8 * len(c["payload"])
        pos += c["raw_len"]
    if match:  # the reST sample repeats itself (directives, field lists): the mixture pays less
        assert ref < 0.97 * alone
    # payload: within 1% of the cross-entropy plus the coder's flush (<= 32 bits per chunk)
    assert abs(coded - ref) <= 0.01 * ref + 32 * len(info["chunks"]) + 32
    # whole container: plus header, per-chunk records and trailer
    overhead = info["header_size"] + 15 * len(info["chunks"]) + 53
    assert 8 * len(blob) <= 1.01 * ref + 8 * overhead + 64 * len(info["chunks"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-30, 30, allow_nan=False, width=32), min_size=2, max_size=40))
def test_quantized_probabilities_are_close_to_softmax(logits: list[float]) -> None:
    z = np.asarray([logits], dtype=np.float32)
    w = quantized_probabilities(z)[0]
    q = w / w.sum()
    p = np.exp(z[0].astype(np.float64) - z.max())
    p /= p.sum()
    # each logit moves by <= 1/(2*32) nat, so log-probabilities move by <= 1/32 nat (+ table rounding)
    big = p > 1e-12
    assert np.all(np.abs(np.log(q[big]) - np.log(p[big])) <= 1.0 / LOGIT_SCALE + 1e-9)
    assert w.max() == 1.0
    # shifting all logits by a multiple of the grid step changes nothing
    assert np.array_equal(quantized_probabilities(z + np.float32(2.0)), quantized_probabilities(z))


def test_thread_count_is_restored(model) -> None:
    torch.set_num_threads(2)
    decompress(compress(b"abc" * 50, model), model)
    assert torch.get_num_threads() == 2


# --- determinism across processes and thread counts ------------------------------------------------


SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from entropykit.lm import compress, decompress, load_model
model = load_model(sys.argv[2])
src, dst = open(sys.argv[4], 'rb').read(), sys.argv[5]
if sys.argv[3] == 'c':
    out = compress(src, model, chunk_size=1500, group=3, precision=sys.argv[6])
else:
    out = decompress(src, model)
open(dst, 'wb').write(out)
"""


def run_child(tmp_path: Path, threads: int, model_dir: Path, mode: str, src: Path, dst: Path,
              precision: str = "auto") -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads), str(model_dir), mode, str(src), str(dst), precision],
        check=True, env=env, cwd=tmp_path, timeout=300,
    )


@pytest.mark.parametrize("precision", ["float32", "bfloat16", pytest.param("int8kv", marks=needs_kernel)])
def test_same_bits_across_processes_and_thread_counts(tmp_path: Path, model, precision: str) -> None:
    data = sample_text(4000, 9999) + UTF8 + b"\x00\xff\x80"
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    d = tiny_model_dir()
    run_child(tmp_path, 2, d, "c", src, tmp_path / "a.ekz", precision)
    run_child(tmp_path, 1, d, "c", src, tmp_path / "b.ekz", precision)
    a, b = (tmp_path / "a.ekz").read_bytes(), (tmp_path / "b.ekz").read_bytes()
    # the decoder learns the arithmetic here
    assert parse(a)["flags"] == {"float32": 0, "bfloat16": 1, "int8kv": 3}[precision] | FLAG_MATCH
    torch.set_num_threads(2)
    here = compress(data, model, chunk_size=1500, group=3, precision=precision)
    assert a == b == here  # the encoder's output does not depend on the process or thread count
    run_child(tmp_path, 1, d, "d", tmp_path / "a.ekz", tmp_path / "a.out")  # made with 2 threads
    assert (tmp_path / "a.out").read_bytes() == data
    assert decompress(b, model) == data


# --- damaged, truncated, foreign, wrong model --------------------------------------------------------


@pytest.fixture(scope="module")
def blob(model) -> bytes:
    return compress(sample_text(1500) + UTF8 + os.urandom(300), model, chunk_size=500, group=2)


def test_wrong_model_is_refused(blob: bytes) -> None:
    with pytest.raises(ContainerError, match="wrong model"):
        decompress(blob, other_model())


def test_missing_model_name_asks_for_model(blob: bytes) -> None:
    with pytest.raises(ContainerError, match="--model"):
        decompress(blob)  # "tiny-bytegpt" is not a bundled model


def rewrite_header(blob: bytes, *, version: int | None = None, flags: int | None = None) -> bytes:
    """``blob`` with the header's version and/or flags byte replaced (header CRC recomputed)."""
    n = parse(blob)["header_size"]
    out = bytearray(blob)
    if version is not None:
        out[8] = version
    if flags is not None:
        out[9] = flags
    out[n - 4 : n] = struct.pack("<I", zlib.crc32(bytes(out[: n - 4])))
    return bytes(out)


def test_other_version_is_refused(blob: bytes, model) -> None:
    with pytest.raises(ContainerError, match="version 6"):
        decompress(rewrite_header(blob, version=6), model)


@pytest.mark.parametrize("bad", [b"", b"hello", b"\x89EKZ\r\n", MAGIC])
def test_not_a_container(bad: bytes, model) -> None:
    with pytest.raises(ContainerError):
        decompress(bad, model)


def test_every_truncation_fails(blob: bytes, model) -> None:
    for n in list(range(0, 80)) + list(range(80, len(blob), 37)) + [len(blob) - 1]:
        with pytest.raises(ContainerError):
            decompress(blob[:n], model)


def test_trailing_garbage_fails(blob: bytes, model) -> None:
    with pytest.raises(ContainerError, match="after the end"):
        decompress(blob + b"\x00", model)


def test_fuzz_mutations_never_give_wrong_output(blob: bytes, model) -> None:
    """Random flips, overwrites, insertions, deletions and splices for a bounded time: every mutant
    either raises ContainerError or (never expected) decodes to the exact original."""
    rng = np.random.default_rng(12345)
    original = decompress(blob, model)
    deadline, tried = time.monotonic() + 8.0, 0
    while time.monotonic() < deadline or tried < 50:
        m = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            kind, i = int(rng.integers(0, 5)), int(rng.integers(0, len(m)))
            if kind == 0:
                m[i] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:
                m[i] = int(rng.integers(0, 256))
            elif kind == 2:
                m.insert(i, int(rng.integers(0, 256)))
            elif kind == 3:
                del m[i]
            else:
                j = int(rng.integers(0, len(m)))
                m[i:i] = m[j : j + int(rng.integers(1, 40))]
        if bytes(m) == blob:
            continue
        try:
            out = decompress(bytes(m), model)
        except ContainerError:
            pass
        else:
            assert out == original
        tried += 1
    assert tried >= 50


def test_damaged_payload_caught_before_decoding(blob: bytes, model) -> None:
    info = parse(blob)
    bad = bytearray(blob)
    bad[info["header_size"] + 22 + 3] ^= 0x10  # inside the first chunk's payload
    with pytest.raises(ContainerError, match="checksum mismatch in chunk 0"):
        decompress(bytes(bad), model)


def test_checksum_catches_a_model_that_computes_differently(model) -> None:
    """If the decoder's model computed other probabilities (nondeterminism), the chunk CRC fires."""
    data = sample_text(800)
    blob = compress(data, model, fallback=None)  # model-coded (LZMA2 chunks need no model)
    drifted = tiny_model()
    with torch.no_grad():
        drifted.module.ln_f.bias.add_(0.3)  # different logits, same identity (cached)
    drifted.__dict__["identity"] = model.identity
    with pytest.raises(ContainerError, match=r"fail its checksum|range decoding failed"):
        decompress(blob, drifted)


def test_worker_process_errors_reach_the_caller(model, tmp_path: Path) -> None:
    """A group failing inside a worker process raises the same ContainerError in the caller, promptly,
    and decompress_stream writes nothing past the last verified group."""
    data = sample_text(4000, 77)
    blob = compress(data, model, chunk_size=500, group=2, workers=1, fallback=None)  # 8 chunks: 4 groups
    drifted = tiny_model()
    with torch.no_grad():
        drifted.module.ln_f.bias.add_(0.3)
    drifted.__dict__["identity"] = model.identity
    out = io.BytesIO()
    t = time.perf_counter()
    with pytest.raises(ContainerError, match=r"fail its checksum|range decoding failed"):
        decompress_stream(io.BytesIO(blob), out, drifted, workers=2)
    assert time.perf_counter() - t < 60
    assert out.getvalue() == b""  # the first groups already fail: nothing unverified was written


# --- argument validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"chunk_size": 1.5}, TypeError, "chunk_size"),
        ({"group": 0}, ValueError, "group"),
        ({"window": 65}, ValueError, "window"),
        ({"window": 2}, ValueError, "window"),
        ({"window": 10, "prime": 9}, ValueError, "prime"),
        ({"window": 10, "prime": 0}, ValueError, "prime"),
        ({"precision": "fp8"}, ValueError, "precision"),
    ],
)
def test_bad_arguments(model, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        compress(b"abc", model, **kwargs)


def test_bad_types(model) -> None:
    with pytest.raises(TypeError, match="data"):
        compress("text", model)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="blob"):
        decompress("text", model)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        compress(b"x", 3)  # type: ignore[arg-type]


def test_header_records_parameters_and_identity(model) -> None:
    blob = compress(b"hello", model, chunk_size=777, group=5, window=40, prime=13)
    info = parse(blob)
    assert (info["magic"], info["version"], info["scale"]) == (MAGIC, 5, LOGIT_SCALE)
    # "auto": bf16 where the CPU has it, with the int8-KV kernel where it builds; the match model
    assert info["flags"] == ((3 if decode_attention.available() else 1) if native_bf16() else 0) | FLAG_MATCH
    assert parse(compress(b"hello", model, precision="float32"))["flags"] == FLAG_MATCH
    assert parse(compress(b"hello", model, precision="float32", match=False))["flags"] == 0
    assert parse(compress(b"hello", model, precision="bfloat16"))["flags"] == 1 | FLAG_MATCH
    if decode_attention.available():
        assert parse(compress(b"hello", model, precision="int8kv"))["flags"] == 3 | FLAG_MATCH
    assert (info["chunk_size"], info["group"], info["window"], info["prime"]) == (777, 5, 40, 13)
    assert info["identity"] == model.identity and info["n_chunks"] == 1
    import hashlib

    assert info["sha256"] == hashlib.sha256(b"hello").digest()


# --- parallel groups, other models ---------------------------------------------------------------------


def test_workers_change_speed_not_bits(model) -> None:
    data = sample_text(5000, 4242) + UTF8
    one = compress(data, model, chunk_size=700, group=2, workers=1)
    two = compress(data, model, chunk_size=700, group=2, workers=2)
    assert one == two
    assert decompress(one, model, workers=3) == data
    auto = compress(data, model, chunk_size=700, workers=2)  # ~8 chunks: 2 groups, one per worker
    n_chunks = math.ceil(len(data) / 700)
    assert parse(auto)["group"] == math.ceil(n_chunks / 2)
    assert decompress(auto, model, workers=1) == data


def test_progress_is_cumulative_and_complete(model) -> None:
    data = sample_text(3000)
    calls: list[tuple[int, float]] = []
    blob = compress(data, model, chunk_size=500, group=2, workers=2, progress=lambda *a: calls.append(a))
    assert calls[-1][0] == len(data)
    assert calls[-1][1] == pytest.approx(8 * sum(len(c["payload"]) for c in parse(blob)["chunks"]))
    back: list[tuple[int, float]] = []
    decompress(blob, model, progress=lambda d, b: back.append((d, b)))
    assert back[-1][0] == len(data) and all(0 <= d <= len(data) for d, _ in back)
    back.clear()  # in worker processes the totals come with each group's result, not a late report
    decompress(blob, model, workers=2, progress=lambda d, b: back.append((d, b)))
    assert back[-1] == (len(data), pytest.approx(calls[-1][1]))


def test_meter_ignores_reports_of_finished_groups() -> None:
    """A worker's queued progress reports can arrive after its result, even while a later batch of
    groups runs: they must not count again (the race behind 'assert 4000 == 3000')."""
    calls: list[tuple[int, float]] = []
    m = Meter(lambda d, b: calls.append((d, b)))
    m.report(0, 600, 10.0)
    m.report(2, 100, 2.0)
    m.finish(0, 1000, 20.0)
    m.report(0, 1000, 20.0)  # late: group 0 already counted
    m.finish(2, 1000, 15.0)
    m.report(2, 1000, 15.0)
    m.finish(0, 1000, 20.0)  # a repeated finish counts once too
    assert [d for d, _ in calls] == [600, 700, 1100, 2000]
    assert (m.bytes, m.bits) == (2000, 35.0) and calls[-1] == (2000, 35.0)


def test_late_worker_reports_do_not_count_twice(model, monkeypatch) -> None:
    """Each worker repeats its group's final report a little later, as a slow queue would deliver it:
    the total must still end at exactly the input length (fails with a per-batch filter)."""
    import threading

    from entropykit.codec import pool

    real = pool._in_worker

    def late(fn, p, key, items):  # type: ignore[no-untyped-def]
        out = real(fn, p, key, items)
        threading.Timer(0.01, pool._WORKER["ticks"].put, [(key, out[1], out[2])]).start()
        return out

    late.__module__, late.__qualname__ = real.__module__, real.__qualname__  # pickled by name
    monkeypatch.setattr(pool, "_in_worker", late)
    data = sample_text(1600, 5)
    calls: list[tuple[int, float]] = []
    compress(data, model, chunk_size=400, group=1, window=24, prime=8, precision="float32", workers=2,
             progress=lambda d, b: calls.append((d, b)))
    done = [d for d, _ in calls]
    assert done == sorted(done) and max(done) == done[-1] == len(data), done


def spin(n: int) -> list[subprocess.Popen]:
    """``n`` processes spinning one core each (a busy machine)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_progress_is_exact_on_a_busy_machine(model) -> None:
    """With both cores kept busy by other processes, progress from 1 or 2 workers never decreases,
    never exceeds the input and ends at exactly its length, compressing and decompressing; many
    small groups in several batches give the late reports every chance to arrive late."""
    data = sample_text(1200, 31)
    hogs = spin(2)
    try:
        for workers in (2, 1):
            calls: list[tuple[int, float]] = []
            back: list[tuple[int, float]] = []
            blob = compress(data, model, chunk_size=150, group=1, window=24, prime=8, precision="float32",
                            workers=workers, progress=lambda d, b, out=calls: out.append((d, b)))
            assert decompress(blob, model, workers=workers,
                              progress=lambda d, b, out=back: out.append((d, b))) == data
            for seq in (calls, back):
                done = [d for d, _ in seq]
                assert done == sorted(done) and max(done) == done[-1] == len(data), (workers, done)
    finally:
        for p in hogs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("precision", ["float32", "bfloat16", pytest.param("int8kv", marks=needs_kernel)])
def test_model_without_a_prefix_round_trips(precision: str) -> None:
    """No BOS: the first token is coded uniformly, the first step goes into an empty cache, and later
    windows re-prime with the last `prime` tokens alone (the one re-prime rule, models.stream)."""
    bare = tiny_model()
    bare.prefix_ids = []
    data = sample_text(900, 17)
    blob = compress(data, bare, chunk_size=450, group=2, window=20, prime=5, precision=precision,
                    fallback=None)
    assert decompress(blob, bare) == data
    assert all(c["mode"] == 0 for c in parse(blob)["chunks"])


def test_hf_model_round_trip(tmp_path: Path) -> None:
    from entropykit.models import load_model
    from hf_fixtures import tiny_hf_model_dir

    hf = load_model(tiny_hf_model_dir(tmp_path))
    texts = (b"The quick brown fox jumps over the lazy dog. " * 8, UTF8 * 3, b"\xff\xfe not utf-8 \x80", b"")
    for data in texts:
        blob = compress(data, hf, chunk_size=90, group=3)
        assert decompress(blob, hf) == data
    info = parse(compress(b"\xff\xfe not utf-8 \x80", hf))
    assert [c["mode"] for c in info["chunks"]] == [1]  # not representable as text tokens: stored
    assert info["flags"] == FLAG_MATCH  # "auto" leaves other models' arithmetic alone
    with pytest.raises(ValueError, match="precision"):
        compress(b"abc", hf, precision="bfloat16")


@needs_kernel
def test_int8kv_without_a_compiler_fails_loudly(model, monkeypatch, tmp_path: Path) -> None:
    """No C compiler: 'auto' falls back to bf16, 'int8kv' is refused, and an int8kv container is a
    clear error on decoding (never a silent fallback to other arithmetic)."""
    blob = compress(b"some text " * 20, model, precision="int8kv")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    decode_attention._build.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"'int8kv' is not available here.*no-such-cc"):
            compress(b"abc", model, precision="int8kv")
        assert parse(compress(b"abc", model))["flags"] == (1 if native_bf16() else 0) | FLAG_MATCH
        with pytest.raises(ContainerError, match="int8-KV attention kernel, which cannot run here"):
            decompress(blob, model)
    finally:
        monkeypatch.undo()
        decode_attention._build.cache_clear()
    assert decompress(blob, model) == b"some text " * 20


def test_container_info_and_resolve_precision(model) -> None:
    blob = compress(sample_text(3000), model, chunk_size=1000, group=2, precision="bfloat16")
    src = io.BytesIO(blob)
    info = container_info(src)
    assert info == {"model": model.identity, "version": 5, "precision": "bfloat16", "window": 64,
                    "prime": 31, "chunk_size": 1000, "group": 2, "slide": False, "match": True,
                    "original_length": 3000}
    assert src.tell() == 0 and decompress_stream(src, io.BytesIO(), model) == 3000  # left at the start
    assert resolve_precision(model, "float32") == "float32"
    assert resolve_precision(model) == ("int8kv" if native_bf16() and decode_attention.available()
                                        else "bfloat16" if native_bf16() else "float32")
    assert container_info(io.BytesIO(compress(b"x", model)))["precision"] == resolve_precision(model)
    with pytest.raises(ValueError, match="precision"):
        resolve_precision(model, "fp8")
    with pytest.raises(ContainerError, match="bad magic"):
        container_info(io.BytesIO(b"not a container at all"))


def test_container_info_takes_bytes_and_paths(model, tmp_path: Path) -> None:
    blob = compress(sample_text(700), model, chunk_size=300, group=2, precision="float32")
    want = container_info(io.BytesIO(blob))
    path = tmp_path / "x.ekz"
    path.write_bytes(blob)
    for src in (blob, bytearray(blob), memoryview(blob), path, str(path)):
        assert container_info(src) == want  # type: ignore[arg-type]
    assert want["original_length"] == 700 and want["precision"] == "float32"
    with pytest.raises(ContainerError, match="bad magic"):
        container_info(b"not a container")
    with pytest.raises(ContainerError, match="truncated"):
        container_info(blob[:20])
    with pytest.raises(FileNotFoundError):
        container_info(tmp_path / "missing.ekz")
    with pytest.raises(TypeError, match="src"):
        container_info(3)  # type: ignore[arg-type]


def test_precision_is_the_one_vocabulary(model) -> None:
    """resolve_precision speaks entropykit.precision: same choices and message style, and the model
    decides what is supported (float32 always; bf16 and int8kv for a ByteGPT; int8kv where the
    kernel builds and fits)."""
    from entropykit.models.bytegpt_step import step_precisions
    from entropykit.precision import PRECISIONS, resolve

    for p in PRECISIONS:
        if p == "auto" or p in step_precisions(model):
            assert resolve_precision(model, p) == resolve(p, step_precisions(model))
    with pytest.raises(ValueError, match=r"precision must be one of 'auto', .*got 'fp8'"):
        resolve_precision(model, "fp8")
    wide = ByteModel(ByteGPT(ByteGPTConfig(block_size=16, n_layer=1, n_head=1, n_embd=16)).eval(), "wide")
    with pytest.raises(ValueError, match="'int8kv' is not available here: the kernel needs a head size"):
        resolve_precision(wide, "int8kv")
    assert resolve_precision(wide, "bfloat16") == "bfloat16"
