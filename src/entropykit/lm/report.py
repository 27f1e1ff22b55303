"""Reports of a ``ScoreResult``: a standalone HTML page and a PNG plot.

HTML: the text with every token coloured by surprisal, entropy or rank (GLTR-style buckets that
adapt to the vocabulary: top-1 / top-3 / top-10 / other for byte models, top-10 / top-100 /
top-1000 / other for large vocabularies, Gehrmann et al., 2019), a selector that switches the
colouring (``#entropy`` / ``#rank`` in the URL pick it too), each token's numbers and its top-k
alternatives (when scored with ``top_k``) on hover, the summary, the most surprising spans, and a
surprisal and a rank histogram on top. The page is one file: inline CSS and JavaScript, no remote
resources.

Size and speed: the per-token data is packed into little-endian typed arrays (base64): the text's
bytes, per display group its byte length and token count, per token its id, surprisal, entropy and
window entropy (uint16, 1/500 bit), varentropy (uint16, 1/100 bit²) and rank; about 23 bytes of
HTML per token without top-k. The script builds the coloured spans one page of ``PAGE_GROUPS``
display groups at a time, so a 1 M-token text opens as fast as a short one. Without JavaScript
the page shows the summary and histograms only.

Display groups: a token that ends inside a UTF-8 character (a byte model's first byte of "é", or a
byte-level BPE piece) is shown together with the following token(s) up to the end of the character,
as one coloured span; the span shows the sum of the surprisals (bits of the whole character), the
first token's entropy (the uncertainty before it) and the worst (largest) rank, and the hover lists
every token.

PNG: surprisal along the text with its rolling mean and the window entropy, the high-window-entropy
threshold and flagged stretches shaded (matplotlib, Agg canvas). Texts longer than ``max_points``
tokens are drawn as ``max_points`` bins: each bin's mean, and its minimum-maximum band.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

import numpy as np

from entropykit._io import atomic_write
from entropykit.lm.scoring import ScoreResult

__all__ = ["plot_png", "rank_edges", "render_html", "write_html"]

# Bucket edges (bits) shared by the surprisal and entropy colourings; 8 buckets.
BIT_EDGES = [1.0, 2.0, 4.0, 6.0, 8.0, 11.0, 15.0]
RANK_EDGES = [10, 100, 1000]  # GLTR: top-10, top-100, top-1000, other (large vocabularies)
PALETTES = {
    "surprisal": ["#ffffff", "#fff3cf", "#ffe29a", "#ffc674", "#ff9d57", "#f26b3a", "#d93b26", "#a8001a"],
    "entropy": ["#ffffff", "#ecf3ff", "#d2e4ff", "#aecdff", "#80b0f8", "#558fea", "#2f69d0", "#16409f"],
    "rank": ["#adff80", "#ffea80", "#ff9280", "#e5b0ff"],  # GLTR's green / yellow / red / purple
}
MODES = ("surprisal", "entropy", "rank")
PAGE_GROUPS = 50_000  # display groups rendered at once (texts longer than this are paged)
S_SCALE, V_SCALE = 500.0, 100.0  # uint16 quantisation of bits and bits^2


def rank_edges(vocab_size: int) -> list[int]:
    """Rank-bucket edges for a vocabulary: the buckets are rank <= e[0], <= e[1], <= e[2], other.

    GLTR's top-10 / top-100 / top-1000 separate nothing in a 257-symbol byte vocabulary, so small
    vocabularies get finer edges: V <= 1024 -> 1 / 3 / 10; V <= 16384 -> 1 / 10 / 100; else GLTR's
    10 / 100 / 1000.

    >>> rank_edges(257), rank_edges(8000), rank_edges(50257)
    ([1, 3, 10], [1, 10, 100], [10, 100, 1000])
    """
    if vocab_size <= 1024:
        return [1, 3, 10]
    if vocab_size <= 16384:
        return [1, 10, 100]
    return list(RANK_EDGES)


def _groups(result: ScoreResult) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
    """Display groups ``(first token, last token + 1, byte start, byte end)`` and uncovered gaps.

    A group closes at the first token whose span ends on a UTF-8 character boundary; a token adding
    no new bytes (overlapping spans) joins the previous group.
    """
    raw = result.text
    n_bytes = len(raw)
    groups: list[tuple[int, int, int, int]] = []
    gaps: list[tuple[int, int]] = []
    pos = 0  # bytes displayed so far
    g0 = 0  # first token of the open group
    gstart = 0
    offsets = result.offsets.tolist()
    for i, (a, b) in enumerate(offsets):
        if i == g0:
            if a > pos:  # text no token covers (some tokenizers drop whitespace)
                gaps.append((pos, a))
                pos = a
            gstart = pos
        if b <= pos and groups and i == g0:  # nothing new: belongs to the previous group
            t0, _, s0, e0 = groups[-1]
            groups[-1] = (t0, i + 1, s0, e0)
            g0 = i + 1
            continue
        if b >= n_bytes or (raw[b] & 0xC0) != 0x80:  # b is a character boundary: close the group
            groups.append((g0, i + 1, gstart, b))
            pos, g0 = b, i + 1
    if g0 < len(offsets):  # trailing tokens ending inside a character (invalid UTF-8 at the end)
        groups.append((g0, len(offsets), gstart, n_bytes))
        pos = n_bytes
    if pos < n_bytes:
        gaps.append((pos, n_bytes))
    return groups, gaps


def _bucket(values: np.ndarray, edges: list[float] | list[int]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values.astype(np.float64))


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode()


def _q16(x: np.ndarray, scale: float) -> np.ndarray:
    x = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=65535 / scale, neginf=0.0)
    return np.clip(np.rint(x * scale), 0, 65535).astype(np.uint16)


def _vocab_size(result: ScoreResult, vocab_size: int | None) -> int:
    if vocab_size is not None:
        return int(vocab_size)
    known = getattr(result, "vocab_size", None)
    if known:
        return int(known)
    hi = [int(result.token_ids.max()) + 1 if len(result) else 1, int(result.rank.max()) if len(result) else 1]
    if result.top_k_ids is not None and result.top_k_ids.size:
        hi.append(int(result.top_k_ids.max()) + 1)
    return max(hi)


def _elements(result: ScoreResult) -> tuple[np.ndarray, np.ndarray]:
    """The text as display elements in byte order: (byte length, token count) each; a gap (text no
    token covers) has 0 tokens. Long elements are split into pieces of at most 65535 bytes."""
    groups, gaps = _groups(result)
    items = sorted([(a, b, t1 - t0) for t0, t1, a, b in groups] + [(a, b, 0) for a, b in gaps])
    lengths: list[int] = []
    counts: list[int] = []
    for a, b, k in items:
        n = b - a
        while n > 65535:  # only gaps get this long; a token group keeps its count on the last piece
            lengths.append(65535)
            counts.append(0)
            n -= 65535
        lengths.append(n)
        counts.append(k)
    return np.asarray(lengths, np.uint16), np.asarray(counts, np.uint16)


def _svg_bars(labels: list[str], counts: list[int], colours: list[str], title: str) -> str:
    """A small inline SVG bar chart (counts on hover and above the bars)."""
    w, h, pad = 26, 90, 14
    top = max(max(counts), 1) if counts else 1
    total = max(sum(counts), 1)
    bars = []
    for i, (lab, c, col) in enumerate(zip(labels, counts, colours)):
        bh = round(h * c / top)
        x = i * (w + 4)
        bars.append(
            f'<g><title>{html.escape(lab)}: {c:,} tokens ({100 * c / total:.1f}%)</title>'
            f'<rect x="{x}" y="{pad + h - bh}" width="{w}" height="{max(bh, 0)}" fill="{col}" '
            f'stroke="#888" stroke-width="0.5"/>'
            f'<text x="{x + w / 2}" y="{pad + h - bh - 3}" font-size="8" text-anchor="middle">'
            f"{100 * c / total:.0f}%</text>"
            f'<text x="{x + w / 2}" y="{pad + h + 11}" font-size="8" text-anchor="middle">'
            f"{html.escape(lab)}</text></g>"
        )
    width = len(labels) * (w + 4)
    return (
        f'<figure class="hist"><figcaption>{html.escape(title)}</figcaption>'
        f'<svg width="{width}" height="{h + pad + 16}" role="img" aria-label="{html.escape(title)}">'
        + "".join(bars)
        + "</svg></figure>"
    )


def _histograms(result: ScoreResult, edges: list[int]) -> tuple[str, dict[str, list[int]]]:
    s = result.surprisal_bits.astype(np.float64)
    top = 20  # bins of 1 bit, the last one open: >= 20 bits
    s_counts = np.bincount(np.clip(np.floor(s), 0, top).astype(np.int64), minlength=top + 1).tolist()
    s_labels = [str(i) for i in range(top)] + [f"{top}+"]
    shades = [PALETTES["surprisal"][int(k)] for k in _bucket(np.arange(top + 1) + 0.5, BIT_EDGES)]
    r_counts = np.bincount(_bucket(result.rank, edges), minlength=4).tolist()
    r_labels = [f"top-{e}" for e in edges] + ["other"]
    out = _svg_bars(s_labels, s_counts, shades, "surprisal histogram (bits per token)")
    out += _svg_bars(r_labels, r_counts, PALETTES["rank"], "rank histogram (rank of the actual token)")
    return out + _svg_spectrum(s), {"surprisal": s_counts, "rank": r_counts}


def _svg_spectrum(s: np.ndarray, points: int = 160) -> str:
    """A small inline SVG line of the surprisal sequence's spectrum (FACE: |FFT| of the z-scored
    sequence, ``entropykit.lm.fourier``), averaged into at most ``points`` frequency bins."""
    if s.size < 16:
        return ""
    from entropykit.lm.fourier import surprisal_spectrum

    sp = surprisal_spectrum(s, preprocess="zscore")
    f, p = sp.freq[1:], sp.power[1:]  # frequency 0 is the (removed) mean
    k = min(points, f.size)
    f, p = _binned(f, k)[1], _binned(p, k)[1]  # the mean of each bin, as the long-text plot bins
    w, h, pad = 240, 90, 14
    top = float(p.max()) or 1.0
    pts = " ".join(f"{w * fi / 0.5:.1f},{pad + h - h * pi / top:.1f}" for fi, pi in zip(f, p))
    peak = float(f[int(np.argmax(p))])
    title = "spectrum of the surprisal sequence (FACE; cycles per token, 0 to 0.5)"
    return (
        f'<figure class="hist"><figcaption>{html.escape(title)}</figcaption>'
        f'<svg width="{w}" height="{h + pad + 16}" role="img" aria-label="{html.escape(title)}">'
        f"<title>peak at {peak:.3f} cycles/token (period {1 / peak:.1f} tokens)</title>"
        f'<polyline points="{pts}" fill="none" stroke="#2f69d0" stroke-width="1"/>'
        f'<text x="0" y="{pad + h + 11}" font-size="8">0</text>'
        f'<text x="{w}" y="{pad + h + 11}" font-size="8" text-anchor="end">0.5</text></svg></figure>'
    )


def render_html(
    result: ScoreResult, *, title: str | None = None, mode: str = "surprisal", vocab_size: int | None = None
) -> str:
    """A standalone HTML page (str) colouring each token of ``result``; see the module docstring.

    ``mode`` is the initial colouring: ``"surprisal"``, ``"entropy"`` or ``"rank"``. ``vocab_size``
    (default: the result's, else inferred from its ids and ranks) picks the rank buckets
    (:func:`rank_edges`).

    >>> from entropykit.lm import ByteModel, score
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> lm = ByteModel(ByteGPT(ByteGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16)))
    >>> page = render_html(score("hi there", lm), mode="rank", vocab_size=257)
    >>> page.startswith("<!DOCTYPE html>"), '"rank_edges":[1,3,10]' in page
    (True, True)
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    n = len(result)
    vocab = _vocab_size(result, vocab_size)
    edges = rank_edges(vocab)
    lengths, counts = _elements(result)
    wide = vocab > 65536
    id_t = np.uint32 if wide else np.uint16
    # token texts: one per distinct id (the first occurrence's bytes), plus the top-k alternatives'
    ids = result.token_ids.astype(np.int64)
    texts: dict[int, str] = {}
    if n:
        uniq, first = np.unique(ids, return_index=True)
        texts = {int(u): result.token_text(int(i)) for u, i in zip(uniq, first)}
    top: dict[str, Any] | None = None
    if result.top_k_ids is not None and result.top_k_probs is not None and result.top_k_ids.size:
        k_ids = result.top_k_ids.astype(np.int64)
        if result.top_k_tokens is not None:
            for row_ids, row_txt in zip(k_ids.tolist(), result.top_k_tokens):
                for t, txt in zip(row_ids, row_txt):
                    texts.setdefault(t, txt)
        top = {"k": int(k_ids.shape[1]), "ids": _b64(k_ids.astype(id_t)),
               "p": _b64(_q16(result.top_k_probs.astype(np.float64), 65535.0))}
    hists, counts_by = _histograms(result, edges)
    data = {
        "n": n,
        "edges": {"surprisal": BIT_EDGES, "entropy": BIT_EDGES, "rank": edges},
        "rank_edges": edges,
        "palettes": PALETTES,
        "initial": mode,
        "page": PAGE_GROUPS,
        "wide": wide,
        "scale": {"s": S_SCALE, "v": V_SCALE},
        "text": base64.b64encode(result.text).decode(),
        "glen": _b64(lengths),
        "gtok": _b64(counts),
        "id": _b64(ids.astype(id_t)),
        "s": _b64(_q16(result.surprisal_bits, S_SCALE)),
        "h": _b64(_q16(result.entropy_bits, S_SCALE)),
        "v": _b64(_q16(result.varentropy_bits2, V_SCALE)),
        "w": _b64(_q16(result.window_entropy_bits, S_SCALE)),
        "r": _b64(result.rank.astype(np.uint32 if wide else np.uint16)),
        "hwe": _b64(np.packbits(result.high_window_entropy.astype(bool), bitorder="little")),
        "vocab": {str(k): v for k, v in texts.items()},
        "top": top,
        "spans": [[sp["start"], sp["end"]] for sp in result.summary["top_spans"]],
        "hist": counts_by,
    }
    payload = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")

    summ = result.summary
    rows = [
        ("model", html.escape(summ["model"])),
        ("tokens / bytes", f"{summ['tokens']:,} / {summ['bytes']:,}"),
        ("bits per byte", f"{summ['bits_per_byte']:.4f}"),
        ("perplexity (per token)", _fmt(summ["perplexity"])),
        ("mean surprisal", f"{summ['mean_surprisal_bits']:.3f} bits"),
        ("mean entropy", f"{summ['mean_entropy_bits']:.3f} bits"),
        ("top-1 tokens", f"{100 * summ['top1_fraction']:.1f}%"),
        (
            "high window entropy",
            f"{100 * summ['hwe_fraction']:.1f}% of tokens (mean entropy of {summ['window']} "
            f"tokens &gt; {summ['hwe_threshold_bits']:.2f} bits; underlined)",
        ),
        ("context / stride", f"{summ['context']} / {summ['stride']} tokens"),
    ]
    if summ["lossy_utf8"]:
        rows.append(("note", "input was not valid UTF-8: decoded with replacement characters (U+FFFD)"))
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    spans = "".join(
        f'<li><a href="#" data-span="{j}"><code>{html.escape(sp["text"].replace(chr(10), "↵"))}</code></a> '
        f"&mdash; {sp['surprisal_bits']:.1f} bits "
        f"({sp['bits_per_token']:.2f} bits/token, bytes {sp['start']}&ndash;{sp['end']})</li>"
        for j, sp in enumerate(summ["top_spans"])
    )
    heading = html.escape(title or "entropykit score")
    css = "".join(
        f".{m[0]}{i}{{background:{c}}}" for m in MODES for i, c in enumerate(PALETTES[m])
    )
    return _PAGE.format(
        title=heading,
        table=table,
        spans=spans or "<li>(none)</li>",
        hists=hists,
        payload=payload,
        static_css=css,
        options="".join(f'<option value="{m}"{" selected" if m == mode else ""}>{m}</option>' for m in MODES),
    )


def write_html(
    result: ScoreResult,
    path: str | os.PathLike[str],
    *,
    force: bool = True,
    option: str | None = None,
    **kwargs: Any,
) -> None:
    """Write ``render_html(result, **kwargs)`` to ``path`` under the output rule (UTF-8): atomically
    onto a regular file (replaced only with ``force``), straight through to a device or FIFO."""
    atomic_write(path, render_html(result, **kwargs), force=force, option=option)


def _binned(x: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x`` cut into ``bins`` consecutive bins of (almost) equal size: centre index, mean, min, max."""
    n = len(x)
    starts = (np.arange(bins, dtype=np.int64) * n) // bins
    sizes = np.diff(np.append(starts, n))
    mean = np.add.reduceat(x, starts) / sizes
    return starts + (sizes - 1) / 2.0, mean, np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)


def plot_png(
    result: ScoreResult,
    path: str | os.PathLike[str] | None = None,
    *,
    width: float = 12.0,
    dpi: int = 100,
    max_points: int = 2000,
    force: bool = True,
    option: str | None = None,
) -> bytes:
    """Plot surprisal, its rolling mean and the window entropy along the text; return PNG bytes.

    x axis: token index; y axis: bits. The dashed line is the high-window-entropy threshold and the
    shaded stretches are the flagged tokens. Texts of more than ``max_points`` tokens are drawn as
    ``max_points`` bins (per bin: mean surprisal as the line, its min-max range as a band, the mean
    window entropy; a bin is shaded when most of its tokens are flagged), so the plot stays readable
    at a million tokens. Writes the PNG to ``path`` when given (see :func:`write_html` for the rule).
    Needs matplotlib (``pip install 'entropykit[plot]'``).

    >>> from entropykit.lm import ByteModel, score
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> lm = ByteModel(ByteGPT(ByteGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16)))
    >>> plot_png(score("hi there", lm), width=4, dpi=40)[:4]
    b'\x89PNG'
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise ValueError("plot: matplotlib is not installed (pip install 'entropykit[plot]')") from exc
    import torch

    from entropykit.measures import rolling_mean

    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points: expected an integer >= 2, got {max_points!r}")
    n = len(result)
    s = result.surprisal_bits.astype(np.float64)
    w = result.window_entropy_bits.astype(np.float64)
    flag = result.high_window_entropy.astype(np.float64)
    fig = Figure(figsize=(width, 3.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if n > max_points:
        x, s_mean, s_lo, s_hi = _binned(s, max_points)
        _, w_mean, _, _ = _binned(w, max_points)
        _, f_mean, _, _ = _binned(flag, max_points)
        per = n / max_points
        ax.fill_between(x, s_lo, s_hi, color="#f2a38a", alpha=0.35, lw=0,
                        label=f"surprisal, min-max per {per:,.0f} tokens")
        ax.plot(x, s_mean, color="#c0281b", lw=1.2, label=f"surprisal, mean per {per:,.0f} tokens")
        ax.plot(x, w_mean, color="#2f69d0", lw=1.2, label=f"window entropy ({result.window}), mean")
        shaded = f_mean > 0.5
    else:
        x = np.arange(n)
        s_roll = rolling_mean(torch.from_numpy(s), result.window).numpy()
        ax.plot(x, s, color="#f2a38a", lw=0.6, alpha=0.7, label="surprisal (per token)")
        ax.plot(x, s_roll, color="#c0281b", lw=1.4, label=f"surprisal, mean of {result.window}")
        ax.plot(x, w, color="#2f69d0", lw=1.4, label=f"window entropy ({result.window})")
        shaded = flag > 0.5
    ax.axhline(result.hwe_threshold_bits, color="#2f69d0", ls="--", lw=0.8, label="HWE threshold")
    if shaded.any():
        ax.fill_between(x, 0, 1, where=shaded, transform=ax.get_xaxis_transform(), color="#2f69d0",
                        alpha=0.08, lw=0, step="mid")
    summ = result.summary
    ax.set_title(
        f"{summ['model']}: {summ['bits_per_byte']:.3f} bits/byte, perplexity {summ['perplexity']:.3g}, "
        f"{summ['tokens']:,} tokens",
        fontsize=10,
    )
    ax.set_xlabel("token")
    ax.set_ylabel("bits")
    ax.set_xlim(0, max(n - 1, 1))
    top = max(float(np.max(s)) if n else 1.0, result.hwe_threshold_bits, 1.0)
    ax.set_ylim(0, top * 1.22)  # headroom for the legend
    ax.legend(loc="upper right", fontsize=8, ncol=4, framealpha=0.85)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    if path is not None:
        atomic_write(path, png, force=force, option=option)
    return png


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#fafafa}}
header{{padding:14px 22px;background:#fff;border-bottom:1px solid #ddd}}
h1{{font-size:18px;margin:0 0 8px}} h2{{font-size:14px;margin:12px 0 4px}}
table.summary{{border-collapse:collapse}} table.summary th{{text-align:left;padding:1px 14px 1px 0;
font-weight:600;color:#555}} table.summary td{{padding:1px 0}}
.top{{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}}
figure.hist{{margin:0}} figure.hist figcaption{{font-size:12px;color:#555}}
.controls{{margin-top:10px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}}
#legend span{{display:inline-block;padding:0 6px;margin-right:2px;border:1px solid #ccc;font-size:12px}}
ol{{margin:2px 0;padding-left:22px}} code{{background:#f0f0f0;padding:0 3px;white-space:pre-wrap}}
#text{{font:13px/1.7 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;
word-wrap:break-word;margin:0;padding:16px 22px}}
#text span.g{{border-radius:2px}} #text span.hwe{{border-bottom:2px dotted #16409f}}
#text span.flash{{outline:2px solid #16409f}}
{static_css}
.s6,.s7,.e6,.e7{{color:#fff}}
#tip{{position:fixed;z-index:10;max-width:560px;background:#222;color:#eee;
font:12px/1.4 ui-monospace,monospace;
padding:6px 8px;border-radius:4px;pointer-events:none;white-space:pre}}
</style></head>
<body>
<header>
<h1>{title}</h1>
<div class="top"><table class="summary">{table}</table>{hists}</div>
<h2>Most surprising spans</h2><ol id="spans">{spans}</ol>
<div class="controls"><label>Colour tokens by <select id="mode">{options}</select></label>
<span id="legend"></span><span id="pager" hidden><button id="prev">&larr;</button>
page <select id="page"></select> of <span id="pages"></span> <button id="next">&rarr;</button></span></div>
</header>
<noscript><p style="padding:0 22px">The coloured text needs JavaScript.</p></noscript>
<pre id="text"></pre>
<div id="tip" hidden></div>
<script id="data" type="application/json">{payload}</script>
<script>
(function () {{
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  function bytes(b64) {{
    var s = atob(b64), a = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }}
  function u16(b64) {{ var b = bytes(b64); return new Uint16Array(b.buffer, 0, b.length >> 1); }}
  function u32(b64) {{ var b = bytes(b64); return new Uint32Array(b.buffer, 0, b.length >> 2); }}
  var ids = D.wide ? u32 : u16;
  var TEXT = bytes(D.text), GLEN = u16(D.glen), GTOK = u16(D.gtok), ID = ids(D.id);
  var S = u16(D.s), H = u16(D.h), V = u16(D.v), W = u16(D.w), R = ids(D.r), HWE = bytes(D.hwe);
  var TOPI = D.top ? ids(D.top.ids) : null, TOPP = D.top ? u16(D.top.p) : null;
  var SS = D.scale.s, VS = D.scale.v, ne = GLEN.length;
  var EB = new Float64Array(ne + 1), ET = new Float64Array(ne + 1), i;
  for (i = 0; i < ne; i++) {{ EB[i + 1] = EB[i] + GLEN[i]; ET[i + 1] = ET[i] + GTOK[i]; }}
  var utf8 = new TextDecoder("utf-8");
  var box = document.getElementById("text"), sel = document.getElementById("mode");
  var tip = document.getElementById("tip"), pageSel = document.getElementById("page");
  var pages = Math.max(1, Math.ceil(ne / D.page)), page = -1, mode = D.initial, spans = [];
  function bucket(v, edges, rank) {{
    var k = 0;
    while (k < edges.length && (rank ? v > edges[k] : v >= edges[k])) k++;
    return k;
  }}
  function value(m, e) {{
    var a = ET[e], b = ET[e + 1], t, x = 0;
    if (m === "entropy") return H[a] / SS;
    if (m === "rank") {{ for (t = a; t < b; t++) x = Math.max(x, R[t]); return x; }}
    for (t = a; t < b; t++) x += S[t];
    return x / SS;
  }}
  function hwe(e) {{
    for (var t = ET[e]; t < ET[e + 1]; t++) if (HWE[t >> 3] & (1 << (t & 7))) return true;
    return false;
  }}
  function cls(e) {{
    var k = bucket(value(mode, e), D.edges[mode], mode === "rank");
    return "g " + mode.charAt(0) + k + (hwe(e) ? " hwe" : "");
  }}
  function legend() {{
    var e = D.edges[mode], p = D.palettes[mode], out = [], j, lo, hi;
    for (j = 0; j < p.length; j++) {{
      if (mode === "rank") out.push(j < e.length ? "top-" + e[j] : "other");
      else {{
        lo = j === 0 ? 0 : e[j - 1]; hi = j < e.length ? e[j] : null;
        out.push(hi === null ? "\\u2265" + lo + " bits" : lo + "\\u2013" + hi);
      }}
    }}
    document.getElementById("legend").innerHTML = out.map(function (t, j) {{
      return '<span style="background:' + p[j] + '">' + t + "</span>";
    }}).join("");
  }}
  function show(p) {{
    p = Math.max(0, Math.min(pages - 1, p));
    if (p === page) return;
    page = p;
    var a = p * D.page, b = Math.min(ne, a + D.page), frag = document.createDocumentFragment(), e, el;
    spans = [];
    for (e = a; e < b; e++) {{
      var txt = utf8.decode(TEXT.subarray(EB[e], EB[e + 1]));
      if (GTOK[e] === 0) {{ frag.appendChild(document.createTextNode(txt)); continue; }}
      el = document.createElement("span");
      el.className = cls(e);
      el.textContent = txt;
      el._e = e;
      spans.push(el);
      frag.appendChild(el);
    }}
    box.textContent = "";
    box.appendChild(frag);
    pageSel.value = String(p);
  }}
  function paint(m) {{
    mode = D.palettes[m] ? m : "surprisal";
    for (var j = 0; j < spans.length; j++) spans[j].className = cls(spans[j]._e);
    sel.value = mode;
    document.body.setAttribute("data-mode", mode);
    legend();
  }}
  function fmt(x) {{ return x < 0.001 ? x.toExponential(2) : x.toPrecision(4); }}
  function describe(e) {{
    var lines = [], t, j, k;
    for (t = ET[e]; t < ET[e + 1]; t++) {{
      var s = S[t] / SS;
      lines.push("token " + t + " " + JSON.stringify(D.vocab[ID[t]]) +
        "\\n  surprisal " + s.toFixed(3) + " bits   p " + fmt(Math.pow(2, -s)) + "   rank " + R[t] +
        "\\n  entropy " + (H[t] / SS).toFixed(3) + " bits   varentropy " + (V[t] / VS).toFixed(2) +
        " bits\\u00b2   window entropy " + (W[t] / SS).toFixed(3) + " bits");
      if (D.top) {{
        var alt = [];
        for (j = 0; j < D.top.k; j++) {{
          k = t * D.top.k + j;
          alt.push(JSON.stringify(D.vocab[TOPI[k]]) + " " + (TOPP[k] / 65535).toFixed(3));
        }}
        lines.push("  top " + D.top.k + ": " + alt.join("  "));
      }}
    }}
    return lines.join("\\n");
  }}
  box.addEventListener("mousemove", function (ev) {{
    var t = ev.target;
    if (!t || t._e === undefined) {{ tip.hidden = true; return; }}
    tip.textContent = describe(t._e);
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - 570) + "px";
    tip.style.top = (ev.clientY + 16) + "px";
  }});
  box.addEventListener("mouseleave", function () {{ tip.hidden = true; }});
  sel.addEventListener("change", function () {{
    paint(sel.value);
    history.replaceState(null, "", "#" + sel.value);
  }});
  if (pages > 1) {{
    document.getElementById("pager").hidden = false;
    document.getElementById("pages").textContent = String(pages);
    for (i = 0; i < pages; i++) pageSel.add(new Option(String(i + 1), String(i)));
    pageSel.addEventListener("change", function () {{ show(+pageSel.value); paint(mode); }});
    document.getElementById("prev").addEventListener("click", function () {{ show(page - 1); paint(mode); }});
    document.getElementById("next").addEventListener("click", function () {{ show(page + 1); paint(mode); }});
  }}
  document.getElementById("spans").addEventListener("click", function (ev) {{
    var a = ev.target.closest ? ev.target.closest("a[data-span]") : null;
    if (!a) return;
    ev.preventDefault();
    var start = D.spans[+a.getAttribute("data-span")][0], lo = 0, hi = ne - 1, mid;
    while (lo < hi) {{ mid = (lo + hi + 1) >> 1; if (EB[mid] <= start) lo = mid; else hi = mid - 1; }}
    show(Math.floor(lo / D.page));
    paint(mode);
    for (var j = 0; j < spans.length; j++) {{
      if (spans[j]._e >= lo) {{
        spans[j].scrollIntoView({{block: "center"}});
        spans[j].classList.add("flash");
        break;
      }}
    }}
  }});
  var h = (location.hash || "").replace("#", "");
  mode = D.palettes[h] ? h : D.initial;
  show(0);
  paint(mode);
}})();
</script>
</body></html>
"""
