"""The HTML report in a real browser (headless Chromium): the page's script colours every token.

Skips only when no Chromium binary exists (CI installs Debian's ``chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from entropykit.lm import ByteModel, ScoreResult, score
from entropykit.lm.report import BIT_EDGES, PALETTES, _groups, write_html
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary")
TEXT = "Entropy of a fair coin: 1 bit. Naïve café — 42!\nprint('hello')"


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=3000",
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, timeout=180, check=True)
    return out.stdout.decode("utf-8")


@pytest.fixture(scope="module")
def result() -> ScoreResult:
    g = torch.Generator().manual_seed(5)
    m = ByteGPT(ByteGPTConfig(block_size=128, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():  # large random weights: peaked distributions, so all colour buckets occur
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 1.5)
    return score(TEXT, ByteModel(m, "tiny"))


class Spans(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.styles: list[str] = []
        self.text: list[str] = []
        self.body: dict[str, str | None] = {}
        self.legend = 0
        self._in = False
        self._legend = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "span" and "g" in (a.get("class") or "").split():
            self.styles.append(a.get("class") or "")
            self.text.append("")
            self._in = True
        elif tag == "span" and a.get("id") == "legend":
            self._legend = True
        elif tag == "span" and self._legend and "background" in (a.get("style") or ""):
            self.legend += 1

    def handle_endtag(self, tag: str) -> None:
        self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.text[-1] += data


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def expected_groups(r: ScoreResult) -> tuple[np.ndarray, np.ndarray]:
    """Per display group, independently: summed surprisal and worst rank."""
    groups, _ = _groups(r)
    s = np.array([float(np.sum(r.surprisal_bits[a:b], dtype=np.float64)) for a, b, _, _ in groups])
    rk = np.array([int(r.rank[a:b].max()) for a, b, _, _ in groups])
    return s, rk


@pytest.mark.parametrize(("vocab", "edges"), [(257, (1, 3, 10)), (50257, (10, 100, 1000))])
def test_dom_after_script_colours_tokens_by_rank(
    result: ScoreResult, tmp_path: Path, vocab: int, edges: tuple[int, int, int]
) -> None:
    page = tmp_path / "report.html"
    write_html(result, page, vocab_size=vocab)
    p = Spans()
    p.feed(chromium(tmp_path, "--dump-dom", page.as_uri() + "#rank"))
    assert p.body.get("data-mode") == "rank"  # the script ran and picked the mode from the URL
    assert "".join(p.text) == TEXT
    _, ranks = expected_groups(result)
    assert len(p.styles) == len(ranks)
    for classes, rank in zip(p.styles, ranks):
        bucket = 0 if rank <= edges[0] else 1 if rank <= edges[1] else 2 if rank <= edges[2] else 3
        assert f"r{bucket}" in classes.split(), (classes, rank)
    assert p.legend == 4


def test_hover_shows_top_k_and_long_texts_are_paged(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(5)
    m = ByteGPT(ByteGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 1.5)
    text = "ab" * 60
    r = score(text, ByteModel(m, "tiny"), top_k=2)
    page = tmp_path / "report.html"
    import entropykit.lm.report as report

    old = report.PAGE_GROUPS
    report.PAGE_GROUPS = 50  # 120 tokens -> 3 pages
    try:
        write_html(r, page)
    finally:
        report.PAGE_GROUPS = old
    probe = tmp_path / "probe.html"
    script = """<script>window.addEventListener('load', function () {
      var s = document.querySelector('#text span.g');
      s.dispatchEvent(new MouseEvent('mousemove', {bubbles: true, clientX: 5, clientY: 5}));
      var out = document.createElement('div'); out.id = 'probe';
      out.textContent = JSON.stringify({tip: document.getElementById('tip').textContent,
        spans: document.querySelectorAll('#text span.g').length,
        pages: document.getElementById('pages').textContent});
      document.body.appendChild(out);
    });</script></body>"""
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", probe.as_uri())
    m_ = re.search(r'<div id="probe">(.*?)</div>', dom)
    assert m_, dom[-2000:]
    import html as html_mod
    import json

    got = json.loads(html_mod.unescape(m_.group(1)))
    assert got["spans"] == 50 and got["pages"] == "3"
    assert r.top_k_tokens is not None and r.top_k_probs is not None
    alts = "  ".join(
        f"{json.dumps(t, ensure_ascii=False)} {p:.3f}" for t, p in zip(r.top_k_tokens[0], r.top_k_probs[0])
    )
    assert f"top 2: {alts}" in got["tip"]
    assert f"rank {int(r.rank[0])}\n" in got["tip"] and got["tip"].startswith('token 0 "a"')


def test_screenshot_shows_surprisal_colours(result: ScoreResult, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(result, page)
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1100", "--hide-scrollbars", page.as_uri())
    import matplotlib.image as mpimg

    full = (mpimg.imread(shot)[..., :3] * 255).round().astype(int)
    # Look only below the header (whose legend shows every colour): its 1px #ddd bottom border.
    border = np.nonzero((np.abs(full - 221).max(axis=2) <= 2).mean(axis=1) > 0.9)[0]
    assert len(border), "header border not found"
    img = full[border[-1] + 1 :].reshape(-1, 3)
    surprisal, _ = expected_groups(result)
    used = set(np.searchsorted(BIT_EDGES, surprisal, side="left").tolist())
    assert len(used) >= 3  # the test text exercises several buckets
    for k, colour in enumerate(PALETTES["surprisal"]):
        if k == 0:
            continue  # white = the page's own background
        present = int((np.abs(img - np.array(rgb(colour))).max(axis=1) <= 2).sum())
        assert (present > 20) == (k in used), (k, colour, present)  # token background fills
