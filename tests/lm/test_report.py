"""HTML and PNG reports of a ScoreResult (structure; the browser test is in test_report_browser.py)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from entropykit.lm import ByteModel, ScoreResult, score
from entropykit.lm.report import PALETTES, _groups, plot_png, render_html, write_html
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


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.spans: list[str] = []
        self._in: str | None = None
        self.script: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "span" and "g" in (a.get("class") or "").split():
            self._in = "span"
            self.spans.append("")
        if tag == "script" and a.get("id") == "data":
            self._in = "data"

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "span":
            self.spans[-1] += data
        elif self._in == "data":
            self.script.append(data)


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


def test_html_structure_and_no_remote_resources(lm: ByteModel) -> None:
    text = "x < y && 'é' </script> done\n"
    r = score(text, lm)
    page = render_html(r, title="t", mode="rank")
    p = Collect()
    p.feed(page)
    assert "".join(p.spans) == text  # every character shown once, escaped correctly
    for tag, attrs in p.tags:
        for key in ("src", "href"):
            assert key not in attrs, (tag, attrs)  # nothing loaded from anywhere
        if tag == "link":
            raise AssertionError("no external stylesheets")
    assert "http://" not in page and "https://" not in page
    data = json.loads("".join(p.script))
    assert data["initial"] == "rank" and data["palettes"] == PALETTES
    assert len(data["tok"]["s"]) == len(r) and len(data["group"]["s"]) == len(p.spans)
    # a group's value is the sum of its tokens' surprisals ('é' = 2 bytes)
    i = text.encode().index("é".encode())
    j = p.spans.index("é")
    assert data["group"]["s"][j] == pytest.approx(
        float(r.surprisal_bits[i] + r.surprisal_bits[i + 1]), abs=2e-3
    )
    assert data["group"]["r"][j] == int(max(r.rank[i], r.rank[i + 1]))
    # the summary is on top of the page
    assert page.index("bits per byte") < page.index('<pre id="text">')
    with pytest.raises(ValueError, match="mode"):
        render_html(r, mode="colour")


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
