"""HTML/PNG report size and build time vs the scoring itself, on a long text.

Claim (issue 13): the HTML report of a 300 KB text is under 10 MB (<= ~30 bytes per token) and is
built in under 1.5x the time of scoring the text; the PNG plot of a long text is binned.
Anchor: the previous report (``entropykit.lm.report`` as of commit 9e38ba2: one ``<span>`` per
display group plus a JSON array per statistic), loaded from git in this same process, rendered on
the same ``ScoreResult``. Text: the first ``--kb`` KB of data/corpus/heldout.bin; model
``--model`` (bytegpt-small by default: the faster model makes the report's share of the time the
larger, so the ratio is conservative).

Run:  python benchmarks/report.py [--kb 300] [--model bytegpt-small] [--no-anchor] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, peak_extra_mb, record
from entropykit.lm import load_model, report, score

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "data" / "corpus" / "heldout.bin"
ANCHOR_COMMIT = "9e38ba2"


def anchor_module() -> types.ModuleType | None:
    try:
        src = subprocess.run(["git", "show", f"{ANCHOR_COMMIT}:src/entropykit/lm/report.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("report_anchor")
    exec(compile(src, "report_anchor.py", "exec"), mod.__dict__)
    return mod


def timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out, mb = peak_extra_mb(fn)
    return out, time.perf_counter() - t, mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kb", type=int, default=300)
    ap.add_argument("--model", default="bytegpt-small")
    ap.add_argument("--no-anchor", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    data = HELDOUT.read_bytes()[: args.kb * 1024]
    model = load_model(args.model)
    result, t_score, mb_score = timed(lambda: score(data, model, progress=False))
    n = len(result)
    out = Path(tempfile.mkdtemp())
    rows = [["score (reference time)", f"{t_score:.1f}", "", "", f"{mb_score:.0f}", ""]]

    def ours() -> int:
        report.write_html(result, out / "new.html", vocab_size=model.vocab_size)
        return os.path.getsize(out / "new.html")

    size, t_new, mb_new = timed(ours)
    rows.append(["HTML, ours", f"{t_new:.2f}", f"{size / 1e6:.2f}", f"{size / n:.1f}", f"{mb_new:.0f}",
                 f"{t_new / t_score:.3f}"])
    _, t_png, mb_png = timed(lambda: report.plot_png(result, out / "new.png"))
    rows.append(["PNG, ours (binned)", f"{t_png:.2f}", f"{os.path.getsize(out / 'new.png') / 1e6:.2f}", "",
                 f"{mb_png:.0f}", f"{t_png / t_score:.3f}"])
    anchor = None if args.no_anchor else anchor_module()
    if anchor is not None:
        def old() -> int:
            Path(out / "old.html").write_text(anchor.render_html(result), encoding="utf-8")
            return os.path.getsize(out / "old.html")

        size_old, t_old, mb_old = timed(old)
        rows.append([f"HTML, anchor ({ANCHOR_COMMIT})", f"{t_old:.2f}", f"{size_old / 1e6:.2f}",
                     f"{size_old / n:.1f}", f"{mb_old:.0f}", f"{t_old / t_score:.3f}"])
    header = ["step", "seconds", "MB on disk", "bytes/token", "peak extra MB", "x scoring time"]
    table = markdown_table(header, rows)
    load = os.getloadavg()
    text = (
        f"{args.kb} KB of held-out text, {n:,} tokens, model {model.identity}.\n\n{table}\n\n"
        f"Shared machine (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}): times are "
        "indicative; ratios are measured in one process."
    )
    print(text)
    if not args.no_record:
        cmd = "python benchmarks/report.py " + " ".join(sys.argv[1:])
        record("report", "HTML / PNG report of a long text", cmd.strip(), text)


if __name__ == "__main__":
    main()
