"""Reports of a ``ScoreResult``: a standalone HTML page and a PNG plot.

HTML: the text with every token coloured by surprisal, entropy or rank (GLTR buckets: top-10 /
top-100 / top-1000 / other, Gehrmann et al., 2019), a selector on the page that switches the
colouring (``#entropy`` / ``#rank`` in the URL pick it too), the numbers of each token on hover, the
summary and the most surprising spans on top. The page is one file: inline CSS and JavaScript, no
remote resources. Without JavaScript the tokens keep their server-side surprisal colours.

Display groups: a token that ends inside a UTF-8 character (a byte model's first byte of "é", or a
byte-level BPE piece) is shown together with the following token(s) up to the end of the character,
as one coloured span; the span shows the sum of the surprisals (bits of the whole character), the
first token's entropy (the uncertainty before it) and the worst (largest) rank, and the hover lists
every token.

PNG: surprisal per token, its rolling mean and the window entropy along the text, with the
high-window-entropy threshold and flagged stretches shaded (matplotlib, Agg canvas).
"""

from __future__ import annotations

import html
import io
import json
import os
from typing import Any

import numpy as np

from entropykit._io import atomic_write
from entropykit.lm.scoring import ScoreResult

__all__ = ["plot_png", "render_html", "write_html"]

# Bucket edges (bits) shared by the surprisal and entropy colourings; 8 buckets.
BIT_EDGES = [1.0, 2.0, 4.0, 6.0, 8.0, 11.0, 15.0]
RANK_EDGES = [10, 100, 1000]  # GLTR: top-10, top-100, top-1000, other
PALETTES = {
    "surprisal": ["#ffffff", "#fff3cf", "#ffe29a", "#ffc674", "#ff9d57", "#f26b3a", "#d93b26", "#a8001a"],
    "entropy": ["#ffffff", "#ecf3ff", "#d2e4ff", "#aecdff", "#80b0f8", "#558fea", "#2f69d0", "#16409f"],
    "rank": ["#adff80", "#ffea80", "#ff9280", "#e5b0ff"],  # GLTR's green / yellow / red / purple
}
MODES = ("surprisal", "entropy", "rank")


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


def render_html(result: ScoreResult, *, title: str | None = None, mode: str = "surprisal") -> str:
    """A standalone HTML page (str) colouring each token of ``result``; see the module docstring.

    ``mode`` is the initial colouring: ``"surprisal"``, ``"entropy"`` or ``"rank"``.

    >>> from entropykit.lm import ByteModel, score
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> lm = ByteModel(ByteGPT(ByteGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16)))
    >>> page = render_html(score("hi there", lm), mode="rank")
    >>> page.startswith("<!DOCTYPE html>"), page.count('<span class="g ')
    (True, 8)
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    groups, gaps = _groups(result)
    s = result.surprisal_bits.astype(np.float64)
    cs = np.concatenate([[0.0], np.cumsum(s)])
    first = np.array([g[0] for g in groups], dtype=np.int64)
    last = np.array([g[1] for g in groups], dtype=np.int64)
    g_s = cs[last] - cs[first]
    g_h = result.entropy_bits[first].astype(np.float64)
    g_r = np.maximum.reduceat(result.rank, first) if len(first) else np.zeros(0, np.int64)
    g_hwe = np.logical_or.reduceat(result.high_window_entropy, first) if len(first) else np.zeros(0, bool)
    bucket0 = _bucket(g_s, BIT_EDGES)

    # The text: coloured group spans and plain gaps, in byte order.
    raw = result.text
    pieces: list[tuple[int, str]] = [
        (a, html.escape(raw[a:b].decode("utf-8", errors="replace"))) for a, b in gaps
    ]
    for j, (_, _, a, b) in enumerate(groups):
        cls = f"g b{bucket0[j]}" + (" hwe" if g_hwe[j] else "")
        text = html.escape(raw[a:b].decode("utf-8", errors="replace"))
        pieces.append((a, f'<span class="{cls}">{text}</span>'))
    pieces.sort(key=lambda p: p[0])
    body = "".join(p for _, p in pieces)

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
        f"<li><code>{html.escape(sp['text'].replace(chr(10), '↵'))}</code> "
        f"&mdash; {sp['surprisal_bits']:.1f} bits "
        f"({sp['bits_per_token']:.2f} bits/token, bytes {sp['start']}&ndash;{sp['end']})</li>"
        for sp in summ["top_spans"]
    )
    texts = result.tokens
    data = {
        "edges": {"surprisal": BIT_EDGES, "entropy": BIT_EDGES, "rank": RANK_EDGES},
        "palettes": PALETTES,
        "group": {
            "first": first.tolist(),
            "s": np.round(g_s, 3).tolist(),
            "h": np.round(g_h, 3).tolist(),
            "r": g_r.tolist(),
        },
        "tok": {
            "t": texts,
            "s": np.round(result.surprisal_bits.astype(np.float64), 3).tolist(),
            "h": np.round(result.entropy_bits.astype(np.float64), 3).tolist(),
            "v": np.round(result.varentropy_bits2.astype(np.float64), 3).tolist(),
            "r": result.rank.tolist(),
            "p": [float(f"{p:.4g}") for p in result.probability.tolist()],
            "w": np.round(result.window_entropy_bits.astype(np.float64), 3).tolist(),
        },
        "initial": mode,
    }
    payload = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
    heading = html.escape(title or "entropykit score")
    static_css = "".join(f".b{i}{{background:{c}}}" for i, c in enumerate(PALETTES["surprisal"]))
    return _PAGE.format(
        title=heading,
        table=table,
        spans=spans or "<li>(none)</li>",
        body=body,
        payload=payload,
        static_css=static_css,
        options="".join(f'<option value="{m}"{" selected" if m == mode else ""}>{m}</option>' for m in MODES),
    )


def write_html(result: ScoreResult, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write ``render_html(result, **kwargs)`` to ``path`` atomically (UTF-8)."""
    atomic_write(path, render_html(result, **kwargs))


def plot_png(
    result: ScoreResult, path: str | os.PathLike[str] | None = None, *, width: float = 12.0, dpi: int = 100
) -> bytes:
    """Plot surprisal, its rolling mean and the window entropy along the text; return PNG bytes.

    x axis: token index; y axis: bits. The dashed line is the high-window-entropy threshold and the
    shaded stretches are the flagged tokens. Writes the PNG atomically to ``path`` when given.
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

    n = len(result)
    x = np.arange(n)
    s = result.surprisal_bits.astype(np.float64)
    s_mean = rolling_mean(torch.from_numpy(s), result.window).numpy()
    fig = Figure(figsize=(width, 3.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, s, color="#f2a38a", lw=0.6, alpha=0.7 if n < 5000 else 0.35, label="surprisal (per token)")
    ax.plot(x, s_mean, color="#c0281b", lw=1.4, label=f"surprisal, mean of {result.window}")
    ax.plot(x, result.window_entropy_bits, color="#2f69d0", lw=1.4, label=f"window entropy ({result.window})")
    ax.axhline(result.hwe_threshold_bits, color="#2f69d0", ls="--", lw=0.8, label="HWE threshold")
    flag = result.high_window_entropy
    if flag.any():
        ax.fill_between(
            x,
            0,
            1,
            where=flag,
            transform=ax.get_xaxis_transform(),
            color="#2f69d0",
            alpha=0.08,
            lw=0,
            step="mid",
        )
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
        atomic_write(path, png)
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
.controls{{margin-top:10px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}}
#legend span{{display:inline-block;padding:0 6px;margin-right:2px;border:1px solid #ccc;font-size:12px}}
ol{{margin:2px 0;padding-left:22px}} code{{background:#f0f0f0;padding:0 3px;white-space:pre-wrap}}
#text{{font:13px/1.7 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;
word-wrap:break-word;margin:0;padding:16px 22px}}
#text span.g{{border-radius:2px}} #text span.hwe{{border-bottom:2px dotted #16409f}}
{static_css}
#tip{{position:fixed;z-index:10;max-width:560px;background:#222;color:#eee;
font:12px/1.4 ui-monospace,monospace;
padding:6px 8px;border-radius:4px;pointer-events:none;white-space:pre}}
</style></head>
<body>
<header>
<h1>{title}</h1>
<table class="summary">{table}</table>
<h2>Most surprising spans</h2><ol id="spans">{spans}</ol>
<div class="controls"><label>Colour tokens by <select id="mode">{options}</select></label>
<span id="legend"></span></div>
</header>
<pre id="text">{body}</pre>
<div id="tip" hidden></div>
<script id="data" type="application/json">{payload}</script>
<script>
(function () {{
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var spans = document.querySelectorAll("#text span.g");
  var sel = document.getElementById("mode"), tip = document.getElementById("tip");
  var G = D.group, T = D.tok;
  function bucket(v, edges, rank) {{
    var k = 0;
    while (k < edges.length && (rank ? v > edges[k] : v >= edges[k])) k++;
    return k;
  }}
  function value(mode, j) {{ return mode === "rank" ? G.r[j] : (mode === "entropy" ? G.h[j] : G.s[j]); }}
  function legend(mode) {{
    var e = D.edges[mode], p = D.palettes[mode], out = [], i, lo, hi;
    for (i = 0; i < p.length; i++) {{
      if (mode === "rank") {{
        out.push(i < e.length ? "top-" + e[i] : "other");
      }} else {{
        lo = i === 0 ? 0 : e[i - 1]; hi = i < e.length ? e[i] : null;
        out.push(hi === null ? "\\u2265" + lo + " bits" : lo + "\\u2013" + hi);
      }}
    }}
    document.getElementById("legend").innerHTML = out.map(function (t, i) {{
      return '<span style="background:' + p[i] + '">' + t + "</span>";
    }}).join("");
  }}
  function paint(mode) {{
    if (!D.palettes[mode]) mode = "surprisal";
    var e = D.edges[mode], p = D.palettes[mode], rank = mode === "rank";
    for (var j = 0; j < spans.length; j++) {{
      var k = bucket(value(mode, j), e, rank);
      spans[j].style.backgroundColor = p[k];
      spans[j].style.color = (!rank && k >= p.length - 2) ? "#fff" : "";
      spans[j].setAttribute("data-bucket", String(k));
      spans[j]._g = j;
    }}
    sel.value = mode;
    document.body.setAttribute("data-mode", mode);
    legend(mode);
  }}
  function describe(j) {{
    var a = G.first[j], b = j + 1 < G.first.length ? G.first[j + 1] : T.s.length, lines = [];
    for (var i = a; i < b; i++) {{
      lines.push("token " + i + " " + JSON.stringify(T.t[i]) +
        "\\n  surprisal " + T.s[i] + " bits   entropy " +
        T.h[i] + " bits   varentropy " + T.v[i] + " bits\\u00b2\\n  rank " + T.r[i] + "   p " + T.p[i] +
        "   window entropy " + T.w[i] + " bits");
    }}
    return lines.join("\\n");
  }}
  document.getElementById("text").addEventListener("mousemove", function (ev) {{
    var t = ev.target;
    if (!t || t._g === undefined) {{ tip.hidden = true; return; }}
    tip.textContent = describe(t._g);
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - 570) + "px";
    tip.style.top = (ev.clientY + 16) + "px";
  }});
  document.getElementById("text").addEventListener("mouseleave", function () {{ tip.hidden = true; }});
  sel.addEventListener("change", function () {{
    paint(sel.value);
    history.replaceState(null, "", "#" + sel.value);
  }});
  var h = (location.hash || "").replace("#", "");
  paint(D.palettes[h] ? h : D.initial);
}})();
</script>
</body></html>
"""
