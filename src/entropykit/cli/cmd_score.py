"""``entropykit score``: per-token surprisal, entropy and rank of a text, with HTML and PNG reports."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from entropykit.cli._common import add_force, add_model, check_outputs, load_model, renamed, require, warn
from entropykit.precision import PRECISIONS as _ALL

PRECISIONS = tuple(p for p in _ALL if p != "int8kv")  # int8kv is for incremental decoding only

EXAMPLES = """examples:
  entropykit score README.md --html readme-score.html   # summary + most surprising spans, HTML report
  entropykit score notes.txt --all                      # every token in the table
  entropykit score - --format json < text.txt > scores.json
  entropykit score data.txt --format csv > tokens.csv   # one row per token
  entropykit score essay.txt --plot essay.png --model ./my-gpt2-dir
  entropykit score notes.txt --top-k 3 --html notes.html   # hover shows the 3 likeliest tokens

All quantities are in bits. perplexity = 2^(mean surprisal); bits/byte = total surprisal / UTF-8 bytes.
High window entropy (HWE): the mean entropy of the last --window tokens exceeds --hwe-threshold
(default 0.5 * log2(vocabulary size) bits: 4.0 bits for the bundled byte models).
Texts longer than the model's context C are scored in windows of C tokens every --stride tokens
(default C/2), so every token keeps at least C - stride tokens of history; with --slide (rotary-position
models) a KV cache slides over the text instead and every token is computed once.
"""

TABLE_LIMIT = 60  # longer texts show the summary and spans only, unless --all


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        help="per-token surprisal, entropy and rank of a text under a language model",
        description="Score every token of a text under a causal language model (the bundled byte-level "
        "ByteGPT by default): surprisal, entropy, varentropy, rank, window entropy; "
        "perplexity and bits per byte; optional HTML page and PNG plot.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE|-", help="text file to score, or - for standard input")
    add_model(p)
    p.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="standard output format (default: table)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help=f"table: list every token (default: only for texts of at most {TABLE_LIMIT} tokens)",
    )
    p.add_argument("--html", metavar="OUT.html", help="write a standalone HTML page colouring every token")
    p.add_argument(
        "--color-by",
        choices=("surprisal", "entropy", "rank"),
        default=None,
        help="initial colouring of the HTML page (default surprisal; a selector on the page switches it)",
    )
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG plot of surprisal and window entropy")
    p.add_argument(
        "--stride", type=int, default=None, help="tokens between window starts (default: context/2)"
    )
    p.add_argument("--slide", action="store_true",
                   help="long texts: slide a KV cache (with a BOS attention sink) instead of strided "
                        "windows, so every token is computed once (rotary-position models only; "
                        "--stride is then the new tokens per forward pass, default context/2)")
    p.add_argument("--window", type=int, default=16, help="tokens in the window-entropy mean (default: 16)")
    p.add_argument(
        "--hwe-threshold",
        type=float,
        default=None,
        metavar="BITS",
        help="high-window-entropy threshold in bits (default: 0.5*log2(vocabulary size))",
    )
    p.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="also report the K most likely next tokens (table, JSON, CSV and the HTML hover)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="model arithmetic: float32 (exact, default) or bfloat16 (CPU autocast: several "
                        "times faster with AMX/AVX512-BF16, bits/byte within ~2e-4 relative); auto = "
                        "bfloat16 where the CPU multiplies bf16 in hardware, else float32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    add_force(p, "--html/--plot files")
    p.set_defaults(func=run)


def _show(token: str, width: int = 18) -> str:
    """A token on one line: control characters escaped, long tokens shortened."""
    out = "".join(
        {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(
            c, c if c.isprintable() or c == " " else f"\\x{ord(c):02x}"
        )
        for c in token
    )
    return out if len(out) <= width else out[: width - 1] + "…"


def format_table(result: Any, *, name: str, all_tokens: bool = False) -> str:
    """The terminal report: summary, most surprising spans and (short texts / --all) every token."""
    s = result.summary
    lines = [
        f"{name}: {s['tokens']:,} tokens, {s['bytes']:,} bytes, model {s['model']}"
        + (f" ({s['precision']})" if s["precision"] != "float32" else ""),
        f"  bits per byte   {s['bits_per_byte']:8.4f}      "
        f"perplexity     {s['perplexity']:10.4g} (per token)",
        f"  mean surprisal  {s['mean_surprisal_bits']:8.3f} bits "
        f"mean entropy   {s['mean_entropy_bits']:8.3f} bits",
        f"  top-1 tokens    {100 * s['top1_fraction']:7.1f} %      "
        f"high window entropy {100 * s['hwe_fraction']:5.1f} %"
        f" (> {s['hwe_threshold_bits']:.2f} bits over {s['window']} tokens)",
    ]
    if s["lossy_utf8"]:
        lines.append("  note: input is not valid UTF-8; decoded with replacement characters (U+FFFD)")
    if s["tokens"] > s["context"]:
        lines.append(f"  long text: windows of {s['context']} tokens every {s['stride']} tokens")
    spans = s["top_spans"]
    if spans:
        lines += [
            "",
            f"most surprising spans ({spans[0]['tokens']} tokens each):",
            f"  {'bits':>8} {'bits/tok':>8}  {'bytes':>13}  text",
        ]
        for sp in spans:
            lines.append(
                f"  {sp['surprisal_bits']:8.1f} {sp['bits_per_token']:8.2f}  "
                f"{sp['start']:>6}-{sp['end']:<6}  {_show(sp['text'], 60)}"
            )
    n = len(result)
    if all_tokens or n <= TABLE_LIMIT:
        top = result.top_k_probs is not None and result.top_k_tokens is not None
        lines += [
            "",
            f"  {'i':>6}  {'token':<18} {'surprisal':>9} {'entropy':>8} {'rank':>6} {'p':>8} "
            f"{'win.H':>6} HWE" + ("  most likely next tokens (p)" if top else ""),
        ]
        texts = result.tokens
        for i in range(n):
            row = (
                f"  {i:>6}  {_show(texts[i]):<18} "
                f"{result.surprisal_bits[i]:9.3f} {result.entropy_bits[i]:8.3f} "
                f"{int(result.rank[i]):>6} {result.probability[i]:8.4f} {result.window_entropy_bits[i]:6.2f} "
                f"{'*' if result.high_window_entropy[i] else ' ':<3}"
            )
            if top:
                row += "  " + "  ".join(
                    f"{_show(t, 8)} {float(q):.3f}"
                    for t, q in zip(result.top_k_tokens[i], result.top_k_probs[i])
                )
            lines.append(row.rstrip())
    else:
        lines += ["", f"({n:,} tokens: per-token table omitted; use --all, --format csv|json or --html)"]
    return "\n".join(lines)


def _options(args: argparse.Namespace) -> None:
    """Fail on bad values and say which options have no effect, before any work."""
    require(args.window, "--window")
    require(args.stride, "--stride")
    require(args.top_k, "--top-k", minimum=0)
    if args.color_by is not None and not args.html:
        warn(args, "--color-by has no effect without --html")
    if args.all and args.format != "table":
        warn(args, f"--all has no effect with --format {args.format} (every token is listed)")


def run(args: argparse.Namespace) -> int:
    from entropykit._io import read_input, utf8_warning
    from entropykit.lm import score
    from entropykit.precision import resolve

    _options(args)
    check_outputs(args, ("--html", args.html), ("--plot", args.plot))
    data = read_input(args.file)
    name = "<stdin>" if args.file == "-" else args.file
    if not data:
        raise ValueError(f"{name}: empty input, nothing to score")
    bad = utf8_warning(data, name)
    if bad:
        warn(args, bad)
    precision = resolve(args.precision, ("float32", "bfloat16"), name="--precision")
    model = load_model(args.model)
    try:
        result = score(
            data,
            model,
            stride=args.stride,
            slide=args.slide,
            window=args.window,
            hwe_threshold=args.hwe_threshold,
            top_k=args.top_k,
            precision=precision,
            progress=False if args.no_progress else None,
        )
    except ValueError as exc:
        raise renamed(exc, {"stride": "--stride", "window": "--window", "hwe_threshold": "--hwe-threshold",
                            "top_k": "--top-k", "precision": "--precision", "slide": "--slide"}) from None
    if result.lossy:
        warn(args, f"model {model.name} scored {name} decoded with replacement characters (U+FFFD)")
    if args.format == "json":
        sys.stdout.write(result.to_json() + "\n")
    elif args.format == "csv":
        sys.stdout.write(result.to_csv())
    else:
        print(format_table(result, name=name, all_tokens=args.all))
        if args.top_k and not (args.all or len(result) <= TABLE_LIMIT) and not args.html:
            warn(args, "--top-k is shown in the per-token table, omitted for this long text: "
                       "add --all, --html or --format json|csv")
    sys.stdout.flush()  # the results are out before any file is written (a late write error loses nothing)
    if args.html:
        from entropykit.lm.report import write_html

        write_html(result, args.html, title=f"entropykit score: {name}", mode=args.color_by or "surprisal",
                   vocab_size=model.vocab_size, force=args.force, option="--html")
        print(f"wrote {args.html} (open it in a browser; hover a token for its numbers)", file=sys.stderr)
    if args.plot:
        from entropykit.lm.report import plot_png

        plot_png(result, args.plot, force=args.force, option="--plot")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
