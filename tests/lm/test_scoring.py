"""entropykit.lm.score against independent float64 references: a direct full-context pass and the
naive strided loop of the transformers perplexity guide (one window per forward pass)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit.lm import ByteModel, ScoreResult, load_model, score
from entropykit.lm.scoring import default_hwe_threshold
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig

LN2 = math.log(2.0)
TEXT = "The cat sat on the mat. Entropy: H = -Σ p log p — naïve café!"


def tiny_byte_model(block_size: int = 32, seed: int = 0) -> ByteModel:
    g = torch.Generator().manual_seed(seed)
    model = ByteGPT(ByteGPTConfig(block_size=block_size, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():  # weights larger than the init so that distributions are far from uniform
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return ByteModel(model, name=f"tiny-bytegpt-{block_size}")


@pytest.fixture(scope="module")
def byte_model() -> ByteModel:
    return tiny_byte_model()


def reference_stats(logits: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """Naive float64 per-position statistics in bits from logits (T, V) and targets (T,)."""
    lp = torch.log_softmax(logits.double(), -1)
    p = lp.exp()
    h = -(p * lp).sum(-1)
    v = (p * lp * lp).sum(-1) - h * h
    s = -lp[torch.arange(len(target)), target]
    zy = logits.double()[torch.arange(len(target)), target]
    rank = (logits.double() > zy[:, None]).sum(-1) + 1
    return {
        "surprisal_bits": (s / LN2).numpy(),
        "entropy_bits": (h / LN2).numpy(),
        "varentropy_bits2": (v / LN2**2).numpy(),
        "rank": rank.numpy(),
    }


def naive_strided(lm, data: bytes | str, stride: int) -> dict[str, np.ndarray]:
    """The transformers guide's loop with the model's prefix (BOS) prepended to every window: windows
    ids[begin:end] of C - P + 1 text tokens start every ``stride``; each is fed as prefix +
    ids[begin:end-1] (C tokens; the last token's logits would be unused) and scores only the targets
    the previous window did not reach."""
    ids = list(lm.encode(data).ids)
    prefix = list(lm.prefix_ids)
    width = lm.max_context - len(prefix)
    parts: list[dict[str, np.ndarray]] = []
    prev_end = 0 if prefix else 1
    for begin in range(0, len(ids), stride):
        end = min(begin + width + 1, len(ids))
        x = torch.tensor(prefix + ids[begin : end - 1])
        assert len(x) <= lm.max_context
        logits, _ = lm.forward(x[None])
        # target ids[t] is predicted by input position len(prefix) + t - begin - 1
        rows = logits[0, len(prefix) + prev_end - begin - 1 : len(prefix) + end - begin - 1]
        parts.append(reference_stats(rows, torch.tensor(ids[prev_end:end])))
        prev_end = end
        if end == len(ids):
            break
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def assert_matches(r: ScoreResult, ref: dict[str, np.ndarray]) -> None:
    assert len(r) == len(ref["rank"])
    for key in ("surprisal_bits", "entropy_bits"):
        np.testing.assert_allclose(getattr(r, key), ref[key], rtol=1e-5, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(r.varentropy_bits2, ref["varentropy_bits2"], rtol=1e-4, atol=1e-4)
    # Ranks may differ only where two logits tie within float error; there are none with random weights.
    np.testing.assert_array_equal(r.rank, ref["rank"])


def test_short_text_equals_direct_full_context(byte_model: ByteModel) -> None:
    data = "hello, world: 12345"
    assert len(data) + 1 <= byte_model.max_context
    seq = torch.tensor([256, *data.encode()])
    logits, _ = byte_model.forward(seq[None])
    ref = reference_stats(logits[0, :-1], seq[1:])
    r = score(data, byte_model)
    assert_matches(r, ref)
    np.testing.assert_allclose(r.probability, np.exp2(-ref["surprisal_bits"]), rtol=1e-5)
    assert r.offsets.tolist() == [[i, i + 1] for i in range(len(data))]
    assert r.token_ids.tolist() == list(data.encode())


@pytest.mark.parametrize(("stride", "batch_size"), [(1, None), (5, 1), (16, 3), (31, None)])
def test_long_text_equals_naive_strided(byte_model: ByteModel, stride: int, batch_size: int | None) -> None:
    data = (TEXT * 2).encode()  # ~130 bytes, context 32
    r = score(data, byte_model, stride=stride, batch_size=batch_size)
    assert_matches(r, naive_strided(byte_model, data, stride))
    # every token scored exactly once, in order
    assert r.offsets[:, 0].tolist() == list(range(len(data)))
    assert r.stride == stride and r.context == 32


def test_bfloat16_precision_is_the_autocast_forward(byte_model: ByteModel) -> None:
    """precision="bfloat16": the same windows under CPU autocast; statistics of those logits in fp32,
    close to (not equal to) the float32 numbers, and recorded in the summary."""
    data = (TEXT * 2).encode()
    fast = score(data, byte_model, stride=9, precision="bfloat16")
    exact = score(data, byte_model, stride=9)
    assert fast.summary["precision"] == "bfloat16" and exact.summary["precision"] == "float32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = naive_strided(byte_model, data, 9)
    assert_matches(fast, ref)
    assert not np.array_equal(fast.surprisal_bits, exact.surprisal_bits)
    assert fast.summary["bits_per_byte"] == pytest.approx(exact.summary["bits_per_byte"], rel=2e-2)


def test_auto_precision_is_resolved_once_and_recorded(
    byte_model: ByteModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "auto" is bfloat16 exactly where the CPU multiplies bf16 in hardware; the result records the
    concrete precision, and its numbers are those of that precision."""
    import entropykit.precision as precision

    data = (TEXT * 2).encode()
    for native, want in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(precision, "native_bf16", lambda native=native: native)
        r = score(data, byte_model, stride=9, precision="auto")
        assert r.precision == want and r.summary["precision"] == want
        np.testing.assert_array_equal(
            r.surprisal_bits, score(data, byte_model, stride=9, precision=want).surprisal_bits
        )


def test_totals_agree(byte_model: ByteModel) -> None:
    data = TEXT * 2
    r = score(data, byte_model, stride=9)
    s = r.summary
    nbytes = len(data.encode())
    total = float(np.sum(r.surprisal_bits, dtype=np.float64))
    assert s["bytes"] == nbytes and s["tokens"] == nbytes
    assert s["total_surprisal_bits"] == pytest.approx(total, rel=1e-9)
    assert s["bits_per_byte"] == pytest.approx(total / nbytes, rel=1e-9)
    mean_nats = float(np.mean(r.surprisal_bits, dtype=np.float64)) * LN2
    assert s["perplexity"] == pytest.approx(math.exp(mean_nats), rel=1e-9)
    assert s["mean_entropy_bits"] == pytest.approx(float(np.mean(r.entropy_bits, dtype=np.float64)), rel=1e-6)
    assert s["hwe_fraction"] == pytest.approx(float(np.mean(r.high_window_entropy)))


def test_window_entropy_and_flag(byte_model: ByteModel) -> None:
    r = score(TEXT, byte_model, window=5, hwe_threshold=3.0)
    h = r.entropy_bits.astype(np.float64)
    ref = np.array([h[max(0, t - 4) : t + 1].mean() for t in range(len(h))])
    np.testing.assert_allclose(r.window_entropy_bits, ref, rtol=1e-5)
    np.testing.assert_array_equal(r.high_window_entropy, ref > 3.0)
    assert r.hwe_threshold_bits == 3.0
    assert score(TEXT, byte_model).hwe_threshold_bits == pytest.approx(0.5 * math.log2(257))
    assert default_hwe_threshold(50257) == pytest.approx(7.81, abs=0.01)


def test_top_k(byte_model: ByteModel) -> None:
    data = "abcabcabd"
    r = score(data, byte_model, top_k=4)
    seq = torch.tensor([256, *data.encode()])
    logits, _ = byte_model.forward(seq[None])
    probs = torch.softmax(logits[0, :-1].double(), -1)
    ref = torch.topk(probs, 4, dim=-1)
    assert r.top_k_ids is not None and r.top_k_probs is not None and r.top_k_tokens is not None
    np.testing.assert_array_equal(r.top_k_ids, ref.indices.numpy())
    np.testing.assert_allclose(r.top_k_probs, ref.values.numpy(), rtol=1e-5)
    assert r.top_k_tokens[0][0] == byte_model.token_text(int(ref.indices[0, 0]))
    # the observed token's probability appears among the top-k exactly when its rank <= k
    for i in range(len(r)):
        assert (r.token_ids[i] in r.top_k_ids[i]) == (r.rank[i] <= 4)


def test_most_surprising_spans(byte_model: ByteModel) -> None:
    r = score(TEXT * 2, byte_model, window=8)
    spans = r.summary["top_spans"]
    assert len(spans) == 5
    c = np.concatenate([[0.0], np.cumsum(r.surprisal_bits, dtype=np.float64)])
    sums = c[8:] - c[:-8]
    assert spans[0]["surprisal_bits"] == pytest.approx(sums.max())
    assert [s["surprisal_bits"] for s in spans] == sorted((s["surprisal_bits"] for s in spans), reverse=True)
    starts = sorted(s["start"] for s in spans)
    assert all(
        b - a >= 8 for a, b in itertools.pairwise(starts)
    )  # non-overlapping (byte model: 1 token = 1 byte)
    assert spans[0]["text"] == r.text[spans[0]["start"] : spans[0]["end"]].decode("utf-8", errors="replace")
    # a text shorter than the span length gives one span: the whole text
    short = score("abc", byte_model, window=16).summary["top_spans"]
    assert len(short) == 1 and short[0]["text"] == "abc"


@settings(max_examples=10, deadline=None)
@given(data=st.binary(min_size=1, max_size=80), stride=st.integers(1, 31), batch=st.integers(1, 4))
def test_property_any_bytes_any_stride(data: bytes, stride: int, batch: int) -> None:
    lm = _MODEL
    r = score(data, lm, stride=stride, batch_size=batch)
    assert len(r) == len(data)
    assert_matches(r, naive_strided(lm, data, stride))
    assert np.all(r.surprisal_bits >= -1e-5) and np.all(r.entropy_bits >= -1e-5)
    assert np.all(r.entropy_bits <= math.log2(257) + 1e-4)
    assert np.all((r.rank >= 1) & (r.rank <= 257))


_MODEL = tiny_byte_model(seed=3)


def test_str_and_bytes_agree_and_invalid_utf8_is_scored(byte_model: ByteModel) -> None:
    a = score(TEXT, byte_model)
    b = score(TEXT.encode(), byte_model)
    np.testing.assert_array_equal(a.surprisal_bits, b.surprisal_bits)
    bad = b"ok \xff\xfe\x80 end"
    r = score(bad, byte_model)
    assert len(r) == len(bad) and not r.lossy and r.text == bad
    assert r.tokens[3] == "\ufffd"


def test_export_roundtrip(byte_model: ByteModel) -> None:
    r = score('a,b\n"c"', byte_model, top_k=2)
    d = json.loads(r.to_json())
    assert d["summary"]["tokens"] == len(r) == len(d["tokens"])
    assert d["tokens"][1]["token"] == ","
    assert d["tokens"][0]["surprisal_bits"] == pytest.approx(float(r.surprisal_bits[0]))
    assert len(d["tokens"][0]["top_k"]) == 2
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(r.to_csv())))
    assert len(rows) == len(r)
    assert [row["token"] for row in rows] == list('a,b\n"c"')
    assert float(rows[2]["surprisal_bits"]) == pytest.approx(float(r.surprisal_bits[2]), rel=1e-6)
    assert rows[0]["high_window_entropy"] in ("True", "False")
    assert "top2_probability" in rows[0]


def test_bundled_default_model_runs() -> None:
    r = score("print('hi')\n")
    assert r.model.startswith("bytegpt-general@")
    assert len(r) == 12 and np.isfinite(r.surprisal_bits).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"text": ""}, ValueError, "empty"),
        ({"text": b""}, ValueError, "empty"),
        ({"text": 3}, TypeError, "text"),
        ({"stride": 0}, ValueError, "stride"),
        ({"stride": 32}, ValueError, "stride"),  # C - stride >= 1 token of history
        ({"stride": 2.5}, TypeError, "stride"),
        ({"window": 0}, ValueError, "window"),
        ({"top_k": -1}, ValueError, "top_k"),
        ({"top_k": 258}, ValueError, "top_k"),
        ({"hwe_threshold": float("nan")}, ValueError, "hwe_threshold"),
        ({"model": 1.5}, TypeError, "model"),
        ({"model": "no-such-model-xyz"}, ValueError, "no-such-model-xyz"),
        ({"precision": "fp16"}, ValueError, "precision"),
        ({"precision": "int8kv"}, ValueError, "precision must be one of 'auto', 'float32', 'bfloat16'"),
    ],
)
def test_bad_input(byte_model: ByteModel, kwargs: dict, exc: type, match: str) -> None:
    args = {"text": "abc", "model": byte_model, **kwargs}
    with pytest.raises(exc, match=match):
        score(args.pop("text"), **args)


def test_progress_bar(byte_model: ByteModel, capsys: pytest.CaptureFixture[str]) -> None:
    score(TEXT * 4, byte_model, progress=True)
    assert "tok" in capsys.readouterr().err
    score(TEXT * 4, byte_model, progress=False)
    assert capsys.readouterr().err == ""


def test_load_model_by_name() -> None:
    assert isinstance(load_model("bytegpt-small"), ByteModel)


@pytest.mark.parametrize("budget_rows", [1, 7, 40])
def test_chunked_kv_cache_path_equals_naive(
    byte_model: ByteModel, monkeypatch: pytest.MonkeyPatch, budget_rows: int
) -> None:
    """A window larger than the logit budget is fed in chunks through the KV cache: same numbers."""
    from entropykit.models import stream

    monkeypatch.setattr(stream, "BATCH_LOGIT_BYTES", 4 * 257 * budget_rows)
    data = (TEXT * 2).encode()
    for stride in (9, 16):
        r = score(data, byte_model, stride=stride, top_k=2)
        assert_matches(r, naive_strided(byte_model, data, stride))


BUNDLED = Path(__file__).resolve().parents[2] / "src" / "entropykit" / "models" / "bundled" / "bytegpt-6l"


@pytest.mark.skipif(
    not (BUNDLED / "training.json").exists(), reason="bundled weights are untrained placeholders"
)
def test_trained_bundled_model_quality() -> None:
    """Only with the trained weights: held-out reStructuredText is far below the 8 bits/byte of chance."""
    heldout = (Path(__file__).resolve().parents[2] / "data" / "corpus" / "heldout.bin").read_bytes()[:1000]
    r = score(heldout)
    assert r.summary["bits_per_byte"] < 3.5
    assert r.summary["top1_fraction"] > 0.3
    assert r.summary["hwe_fraction"] < 0.5


def test_model_without_bos_skips_the_first_token(byte_model: ByteModel) -> None:
    class NoBos(ByteModel):
        pass

    lm = NoBos(byte_model.module, "no-bos")
    lm.prefix_ids = []
    data = "abcdefgh"
    seq = torch.tensor(list(data.encode()))
    logits, _ = lm.forward(seq[None])
    r = score(data, lm)
    assert_matches(r, reference_stats(logits[0, :-1], seq[1:]))
    assert r.offsets[0].tolist() == [1, 2] and r.scored_from_byte == 1
    assert r.summary["bytes"] == 7
    assert r.summary["bits_per_byte"] == pytest.approx(float(np.sum(r.surprisal_bits, dtype=np.float64)) / 7)
    with pytest.raises(ValueError, match="no BOS"):
        score("a", lm)


@pytest.mark.parametrize(("window", "block"), [(1, 7), (5, 7), (20, 7), (16, 1 << 16)])
def test_blocked_window_mean_equals_naive(window: int, block: int) -> None:
    from entropykit.lm.scoring import _window_mean

    x = np.random.default_rng(window).random(100).astype(np.float32) * 8
    ref = np.array([x[max(0, t - window + 1) : t + 1].astype(np.float64).mean() for t in range(len(x))])
    np.testing.assert_allclose(_window_mean(x, window, block=block), ref, rtol=1e-6)
