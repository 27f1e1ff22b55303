"""HTML and PNG reports of a ScoreResult (structure; the browser test is in test_report_browser.py)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from entropykit.lm import ByteModel, ScoreResult, score
from entropykit.lm.report import PALETTES, _binned, _groups, plot_png, rank_edges, render_html, write_html
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig


@pytest.fixture(scope="module")
def lm() -> ByteModel:
    g = torch.Generator().manual_seed(0)
    m = ByteGPT(ByteGPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return ByteModel(m, "tiny")


def fake_result(text: bytes, offsets: list[tuple[int, int]], surprisal: list[float]) -> ScoreResult:
    n = len(offsets)
    s = np.asarray(surprisal, np.float32)
    return ScoreResult(
        text=text,
        model="fake@0",
        token_ids=np.arange(n),
        offsets=np.asarray(offsets, np.int64).reshape(-1, 2),
        surprisal_bits=s,
        entropy_bits=s + 1,
        varentropy_bits2=np.ones(n, np.float32),
        rank=np.arange(1, n + 1) * 7,
        probability=np.exp2(-s),
        window_entropy_bits=s + 1,
        high_window_entropy=s > 3,
        window=2,
        hwe_threshold_bits=4.0,
        stride=8,
        context=16,
    )


def payload(page: str) -> dict:  # type: ignore[type-arg]
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))


def arr(b64: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype)


def test_groups_join_partial_characters(lm: ByteModel) -> None:
    text = "né — ok"
    r = score(text, lm)
    groups, gaps = _groups(r)
    shown = [r.text[a:b].decode() for _, _, a, b in groups]
    assert shown == ["n", "é", " ", "—", " ", "o", "k"] and gaps == []
    assert [(t0, t1) for t0, t1, _, _ in groups][:4] == [(0, 1), (1, 3), (3, 4), (4, 7)]


def test_groups_overlapping_spans_and_gaps() -> None:
    # "a é" as a subword tokenizer may give it: 'a', ' ' dropped (gap), two pieces of 'é' sharing a span
    text = "a é!".encode()
    r = fake_result(text, [(0, 1), (2, 4), (2, 4), (4, 5)], [1, 2, 3, 4])
    groups, gaps = _groups(r)
    assert gaps == [(1, 2)]
    assert groups == [(0, 1, 0, 1), (1, 3, 2, 4), (3, 4, 4, 5)]


def test_html_payload_decodes_to_the_result(lm: ByteModel) -> None:
    text = "x < y && 'é' </script> done\n"
    r = score(text, lm, top_k=3)
    page = render_html(r, title="t", mode="rank", vocab_size=257)
    for key in ("src=", "href=\"http", "<link", "http://", "https://"):
        assert key not in page  # nothing loaded from anywhere
    d = payload(page)
    assert d["initial"] == "rank" and d["palettes"] == PALETTES
    assert base64.b64decode(d["text"]) == r.text
    # display elements tile the text; their token counts add up to every token
    glen, gtok = arr(d["glen"], "<u2"), arr(d["gtok"], "<u2")
    assert int(glen.sum()) == len(r.text) and int(gtok.sum()) == len(r)
    groups, _ = _groups(r)
    assert [int(k) for k in gtok if k] == [t1 - t0 for t0, t1, _, _ in groups]
    # per-token numbers within their quantisation step
    np.testing.assert_allclose(arr(d["s"], "<u2") / 500, r.surprisal_bits, atol=1.01e-3)
    np.testing.assert_allclose(arr(d["h"], "<u2") / 500, r.entropy_bits, atol=1.01e-3)
    np.testing.assert_allclose(arr(d["w"], "<u2") / 500, r.window_entropy_bits, atol=1.01e-3)
    np.testing.assert_allclose(arr(d["v"], "<u2") / 100, np.minimum(r.varentropy_bits2, 655.35), atol=5.1e-3)
    assert arr(d["r"], "<u2").tolist() == r.rank.tolist()
    assert arr(d["id"], "<u2").tolist() == r.token_ids.tolist()
    hwe = np.unpackbits(arr(d["hwe"], "u1"), bitorder="little")[: len(r)].astype(bool)
    assert hwe.tolist() == r.high_window_entropy.tolist()
    # top-k alternatives for the hover, and their texts
    assert r.top_k_ids is not None and r.top_k_probs is not None and r.top_k_tokens is not None
    assert d["top"]["k"] == 3
    assert arr(d["top"]["ids"], "<u2").reshape(-1, 3).tolist() == r.top_k_ids.tolist()
    np.testing.assert_allclose(arr(d["top"]["p"], "<u2").reshape(-1, 3) / 65535, r.top_k_probs, atol=1e-4)
    for row_ids, row_txt in zip(r.top_k_ids.tolist(), r.top_k_tokens):
        for t, txt in zip(row_ids, row_txt):
            assert d["vocab"][str(t)] == txt
    # histograms: counts per 1-bit surprisal bin and per adaptive rank bucket
    assert d["rank_edges"] == [1, 3, 10] == rank_edges(257)
    ranks = r.rank
    assert d["hist"]["rank"] == [int((ranks <= 1).sum()), int(((ranks > 1) & (ranks <= 3)).sum()),
                                 int(((ranks > 3) & (ranks <= 10)).sum()), int((ranks > 10).sum())]
    s = r.surprisal_bits.astype(np.float64)
    assert d["hist"]["surprisal"][:3] == [int(((s >= k) & (s < k + 1)).sum()) for k in range(3)]
    assert sum(d["hist"]["surprisal"]) == len(r)
    assert page.count("<svg") == 2 + (len(r) >= 16)
    assert "rank histogram" in page and "surprisal histogram" in page
    if len(r) >= 16:
        assert "spectrum of the surprisal sequence" in page and "peak at" in page

    assert page.index("bits per byte") < page.index('<pre id="text">')
    with pytest.raises(ValueError, match="mode"):
        render_html(r, mode="colour")


@pytest.mark.parametrize(("vocab", "edges"), [(2, [1, 3, 10]), (257, [1, 3, 10]), (1024, [1, 3, 10]),
                                              (1025, [1, 10, 100]), (16384, [1, 10, 100]),
                                              (50257, [10, 100, 1000]), (262144, [10, 100, 1000])])
def test_rank_edges_adapt_to_the_vocabulary(vocab: int, edges: list[int]) -> None:
    assert rank_edges(vocab) == edges


def test_rank_buckets_inferred_without_vocab_size(lm: ByteModel) -> None:
    d = payload(render_html(score("abc", lm)))
    assert d["rank_edges"] == [1, 3, 10]  # ids < 257: a byte vocabulary


def test_html_stays_compact_on_long_texts() -> None:
    # 200 K tokens of mixed ASCII / 2-byte text with spread-out numbers: <= 30 bytes of HTML per token
    rng = np.random.default_rng(0)
    n = 200_000
    raw = bytes(rng.integers(97, 123, n, dtype=np.uint8))
    s = rng.exponential(3.0, n).astype(np.float32)
    r = fake_result(raw, [(i, i + 1) for i in range(n)], s.tolist())
    r.rank = rng.integers(1, 257, n)
    r.token_ids = np.frombuffer(raw, np.uint8).astype(np.int64)  # a byte model's ids
    page = render_html(r, vocab_size=257)
    assert len(page.encode()) / n <= 30
    d = payload(page)
    assert d["page"] < n  # paged: the script builds one page of spans at a time


def test_binned_plot_series_match_a_naive_reference() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=10_007)
    centre, mean, lo, hi = _binned(x, 100)
    starts = [(b * len(x)) // 100 for b in range(100)] + [len(x)]
    for b in range(100):
        part = x[starts[b] : starts[b + 1]]
        assert mean[b] == pytest.approx(part.mean()) and lo[b] == part.min() and hi[b] == part.max()
        assert centre[b] == pytest.approx((starts[b] + starts[b + 1] - 1) / 2)


def test_png_of_a_million_tokens_is_binned(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 1_000_000
    rng = np.random.default_rng(2)
    s = rng.exponential(3.0, n).astype(np.float32)
    r = fake_result(b"a" * n, [(i, i + 1) for i in range(0, n)], s.tolist())
    import matplotlib.axes

    drawn: list[int] = []
    real_plot = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        drawn.append(len(args[0]))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    png = plot_png(r, width=6, dpi=50, max_points=500)
    assert png[:4] == b"\x89PNG" and drawn and max(drawn) <= 500
    with pytest.raises(ValueError, match="max_points"):
        plot_png(r, max_points=1)


def test_write_html_and_png(lm: ByteModel, tmp_path: Path) -> None:
    r = score("hello, entropy " * 5, lm, window=4, hwe_threshold=6.0)
    write_html(r, tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    png = plot_png(r, tmp_path / "r.png", width=6, dpi=50)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "r.png").read_bytes() == png
    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "r.png")
    assert img.shape[:2] == (180, 300)
    rgb = (img[..., :3] * 255).reshape(-1, 3)
    for colour in ((0xC0, 0x28, 0x1B), (0x2F, 0x69, 0xD0)):  # surprisal mean, window entropy lines
        near = np.abs(rgb - np.array(colour)).max(axis=1) < 40  # anti-aliased line pixels
        assert near.sum() > 50, colour


def test_spectrum_figure_marks_the_period() -> None:
    from entropykit.lm.report import _svg_spectrum

    assert "peak at 0.250 cycles/token (period 4.0 tokens)" in _svg_spectrum(np.tile([0, 0, 0, 8.0], 64))
    assert _svg_spectrum(np.ones(8)) == ""
