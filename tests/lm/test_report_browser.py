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
            self.styles.append(a.get("style") or "")
            self.text.append("")
            self._in = True
        elif tag == "span" and a.get("id") == "legend":
            self._legend = True
        elif tag == "span" and self._legend:
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


def test_dom_after_script_colours_tokens_by_rank(result: ScoreResult, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(result, page)
    p = Spans()
    p.feed(chromium(tmp_path, "--dump-dom", page.as_uri() + "#rank"))
    assert p.body.get("data-mode") == "rank"  # the script ran and picked the mode from the URL
    assert "".join(p.text) == TEXT
    _, ranks = expected_groups(result)
    assert len(p.styles) == len(ranks)
    gltr = [rgb(c) for c in PALETTES["rank"]]
    for style, rank in zip(p.styles, ranks):
        m = re.search(r"background-color:\s*rgb\((\d+),\s*(\d+),\s*(\d+)\)", style)
        assert m, style
        bucket = 0 if rank <= 10 else 1 if rank <= 100 else 2 if rank <= 1000 else 3
        assert tuple(int(x) for x in m.groups()) == gltr[bucket]
    assert p.legend == 4


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
