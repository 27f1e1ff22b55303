"""Fused linear cross-entropy (forward + backward) against its anchors, in one process.

Anchors: naive ``F.cross_entropy(h @ W.T, y)``; torch's ``F.linear_cross_entropy`` without and with
``options=torch.nn.LinearCrossEntropyOptions()`` (chunked); ``cut_cross_entropy.linear_cross_entropy(
impl="torch_compile")`` when ``cut-cross-entropy`` and ``triton`` are importable (skipped otherwise).
Ours: ``entropykit.ops.linear_cross_entropy`` in its exact default mode and, for bf16 inputs, also with
``logits_dtype=torch.bfloat16`` (native bf16 matmuls, logits rounded to bf16 as the anchors do).
For each (N, D, V, dtype) point the script reports the
median wall time of loss + backward, the time ratio to ours, the peak extra resident memory, and the
three-matmul bound ``6 N D V / rate`` where ``rate`` is this machine's fp32 matmul throughput measured
on the point's own shapes. ``|loss - f64|`` is each method's distance to the float64 loss (computed
chunk by chunk from the same inputs).

Examples:
    python benchmarks/linear_ce.py --quick            # small shapes, seconds
    python benchmarks/linear_ce.py --points 0 --dtypes fp32
    python benchmarks/linear_ce.py                    # full grid (minutes; needs ~10 GB for naive)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
import torch.nn.functional as F

from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit.ops import linear_cross_entropy

GRID = [(8192, 512, 32000), (4096, 1024, 128256), (16384, 256, 50257)]
QUICK = [(1024, 256, 8000), (512, 384, 20011)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

try:
    from cut_cross_entropy import linear_cross_entropy as _cce
except Exception:  # missing package, or triton not importable
    _cce = None


OURS = "entropykit linear_cross_entropy"
OURS_BF16 = "entropykit linear_cross_entropy(logits_dtype=bf16)"


Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def methods(dtype: torch.dtype) -> dict[str, Method]:
    m: dict[str, Method] = {
        "naive F.cross_entropy(h @ W.T)": lambda h, w, y: F.cross_entropy(h @ w.T, y),
    }
    if hasattr(F, "linear_cross_entropy"):
        m["F.linear_cross_entropy"] = lambda h, w, y: F.linear_cross_entropy(h, w, y)
        if hasattr(torch.nn, "LinearCrossEntropyOptions"):
            m["F.linear_cross_entropy(options)"] = lambda h, w, y: F.linear_cross_entropy(
                h, w, y, options=torch.nn.LinearCrossEntropyOptions()
            )
    if _cce is not None:
        m["cut_cross_entropy(torch_compile)"] = lambda h, w, y: _cce(h, w, y, impl="torch_compile")
    m[OURS] = lambda h, w, y: cast(torch.Tensor, linear_cross_entropy(h, w, y))
    if dtype == torch.bfloat16:
        m[OURS_BF16] = lambda h, w, y: cast(torch.Tensor, linear_cross_entropy(
            h, w, y, logits_dtype=torch.bfloat16))
    return m


def loss_f64(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, rows: int = 256) -> float:
    """Mean CE in float64, chunk by chunk (the ground truth for the |loss - f64| column)."""
    w64 = w.detach().double()
    valid = y != -100
    total = 0.0
    for s in range(0, h.shape[0], rows):
        z = h[s:s + rows].detach().double() @ w64.T
        yc, vc = y[s:s + rows], valid[s:s + rows]
        nll = torch.logsumexp(z, 1) - z.gather(1, yc.clamp(min=0)[:, None]).squeeze(1)
        total += float(nll[vc].sum())
    return total / max(int(valid.sum()), 1)


def _release_memory() -> None:
    """Return freed heap pages to the OS so each method's peak starts from a low resident set
    (otherwise glibc keeps a previous method's buffers mapped and later methods look cheaper)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def matmul_rate(n: int, d: int, v: int, dtype: torch.dtype) -> float:
    """FLOP/s of ``h @ W.T`` on (min(n, 1024), d) x (d, v) -- the shapes one token chunk uses."""
    rows = min(n, 1024)
    a, b = torch.randn(rows, d, dtype=dtype), torch.randn(v, d, dtype=dtype)
    out = torch.empty(rows, v, dtype=dtype)
    secs = timeit(lambda: torch.mm(a, b.T, out=out), repeat=3, warmup=1)
    return 2.0 * rows * d * v / secs


def run_point(n: int, d: int, v: int, dtype: torch.dtype, repeat: int
              ) -> tuple[list[list[object]], list[list[object]]]:
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(n, d, generator=g)).to(dtype).requires_grad_()
    w = (torch.randn(v, d, generator=g) / d**0.5).to(dtype).requires_grad_()
    y = torch.randint(0, v, (n,), generator=g)
    y[torch.rand(n, generator=g) < 0.05] = -100
    rate = matmul_rate(n, d, v, torch.float32)
    bound = 6.0 * n * d * v / rate
    results = {}
    gt = loss_f64(h, w, y)
    for name, fn in methods(dtype).items():
        def step(fn: Callable[..., torch.Tensor] = fn) -> float:
            h.grad = w.grad = None
            loss = fn(h, w, y)
            loss.backward()
            return float(loss)

        try:
            _release_memory()
            loss, mb = peak_extra_mb(step)
            secs = timeit(step, repeat=repeat, warmup=0)
        except Exception as exc:  # an anchor that cannot run this point is reported, not fatal
            print(f"  {name}: failed ({type(exc).__name__}: {str(exc)[:120]})", file=sys.stderr)
            continue
        results[name] = (secs, mb, loss)
        print(f"  {name:36s} {secs:8.3f} s  {mb:9.1f} MB  loss {loss:.6f}", flush=True)
        h.grad = w.grad = None
        gc.collect()
    ours_t = results[OURS][0]
    point, dt = f"({n}, {d}, {v})", str(dtype).replace("torch.", "")
    rows = []
    for name, (secs, mb, loss) in results.items():
        rows.append([point, dt, name, secs, secs / ours_t, mb, bound, secs / bound,
                     f"{abs(loss - gt):.1e}"])
    anchors = {k: r for k, r in results.items() if not k.startswith("entropykit")}
    fastest = min(anchors, key=lambda k: anchors[k][0])
    chunked = anchors.get("F.linear_cross_entropy(options)", (float("nan"), float("nan"), 0.0))
    summary = []
    for name in (OURS, OURS_BF16):
        if name not in results:
            continue
        secs, mb, loss = results[name]
        mode = "exact (default)" if name == OURS else "logits_dtype=bf16"
        summary.append([point, dt, mode, secs, f"{fastest} ({anchors[fastest][0]:.3g} s)",
                        secs / anchors[fastest][0], secs / bound, mb, chunked[1], f"{abs(loss - gt):.1e}",
                        f"{abs(anchors[fastest][2] - gt):.1e}"])
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[9:]))
    p.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    p.add_argument("--points", default=None, help="comma-separated indices into the grid, e.g. 0,2")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32,bf16")
    p.add_argument("--repeat", type=int, default=2, help="timed repetitions per method (median)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    grid = QUICK if args.quick else GRID
    if args.points:
        grid = [grid[int(i)] for i in args.points.split(",")]
    dtypes = [DTYPES[k.strip()] for k in args.dtypes.split(",")]
    print(f"cut_cross_entropy anchor: {'available' if _cce is not None else 'not importable, skipped'}")
    start = time.time()
    rows: list[list[object]] = []
    summary: list[list[object]] = []
    todo = [(n, d, v, dtype) for n, d, v in grid for dtype in dtypes]
    for i, (n, d, v, dtype) in enumerate(todo):
        print(f"(N, D, V) = ({n}, {d}, {v}) {dtype}", flush=True)
        r, s = run_point(n, d, v, dtype, args.repeat)
        rows.extend(r)
        summary.extend(s)
        # record after every point, so an interrupted full-grid run still leaves its figures
        report(rows, summary, args, partial=i + 1 < len(todo))
    print(f"total {time.time() - start:.0f} s")
    return 0


def report(rows: list[list[object]], summary: list[list[object]], args: argparse.Namespace,
           partial: bool) -> None:
    header = ["(N, D, V)", "dtype", "method", "time s", "time / ours", "peak extra MB",
              "3-matmul bound s (fp32 rate)", "time / bound", "|loss - f64|"]
    table = markdown_table(header, rows)
    goals = markdown_table(["(N, D, V)", "dtype", "ours (mode)", "ours s", "fastest anchor",
                            "ours / fastest (goal <= 1)", "ours / bound (goal <= 1.15)", "ours peak MB",
                            "torch chunked peak MB", "ours |loss - f64|", "fastest anchor |loss - f64|"],
                           summary)
    table = goals + "\n\nAll methods:\n\n" + table
    if not partial:
        print(table)
    if args.no_record:
        return
    cmd = "python benchmarks/linear_ce.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    note = ("Forward + backward of the mean loss over N tokens (5% ignored). `time / ours` > 1 means "
            "ours is faster. `|loss - f64|`: distance to the float64 loss. "
            "The bound is 6 N D V FLOP at the fp32 matmul rate measured on a "
            "(1024, D) x (D, V) product at the start of each point.")
    note += (" For bf16 inputs ours appears twice: `exact (default)` (fp32 logits from exact bf16 products)"
             " and the opt-in `logits_dtype=bf16` (native bf16 matmuls, logits rounded to bf16 as in"
             " F.linear and cut_cross_entropy); each row states its own goal ratios and |loss - f64|.")
    if args.threads is not None:
        note += f" Run with --threads {args.threads}."
    if _cce is None:
        note += " cut_cross_entropy was not importable, so its anchor is absent."
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if load > 1.5 * (os.cpu_count() or 1) / 2:
        note += (f" WARNING: the machine was shared while this ran (1-min load average {load:.1f} on "
                 f"{os.cpu_count()} cores), so absolute times are inflated and ratios are noisy.")
    if partial:
        note += " PARTIAL: the run was still in progress (or was interrupted) when this was written."
    record("linear_ce", "Fused linear cross-entropy (ops.linear_cross_entropy)", cmd, note + "\n\n" + table)


if __name__ == "__main__":
    raise SystemExit(main())
