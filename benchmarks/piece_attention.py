"""Piece-attention benchmark: the compiled float32 kernel against torch's SDPA at the bundled model's shapes.

Anchor and ours in this one process, float32, the machine's torch threads (2 here), 8 heads of 32:

1. A sliding cache's piece: t = 512 queries over n = 512 cached keys plus their own, causally
   (``SlidingCache``'s default at the context of 1024). SDPA: ``F.scaled_dot_product_attention``
   with the end-aligned boolean mask (what a cache path without the kernel must pass, since
   ``is_causal`` aligns to the top left). Ours: ``piece_attention.attend`` (q, k, v already rotated)
   and ``attend_rope`` (rotation and cache stores included; SDPA's side then also runs
   ``apply_rope`` and the two cache stores, which is what the kernel replaces).
2. The strided anchor's window: t = 1024 queries, n = 0, causal (SDPA with ``is_causal=True``, which
   skips masked blocks) against ``attend`` with n = 0.
3. Smaller pieces: t = 256 over n = 768, and t = 64 over n = 960.

Speed is reported as causal (query, key, head) pairs per second, the pairs a query actually sees
(``h (t n + t (t + 1) / 2)``): the median over ``--reps`` interleaved rounds (the order reversed
every other round) of each method's time, and the median of the per-round ratios.

    python benchmarks/piece_attention.py               # records the "piece_attention" section of RESULTS.md
    python benchmarks/piece_attention.py --no-record   # prints only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, record, round_order

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from entropykit.models.bytegpt import apply_rope, rope  # noqa: E402
from entropykit.models.kernels import piece_attention  # noqa: E402

HEADS, D = 8, 32


def once(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def case(t: int, n: int, reps: int) -> list[object]:
    g = torch.Generator().manual_seed(t * 7 + n)
    qkv = torch.randn(t, 3, HEADS, D, generator=g)
    tables = rope(torch.arange(n, n + t), D)
    cache = torch.randn(2, HEADS, n + t, D, generator=g)
    k, v = cache[0], cache[1]
    q = apply_rope(qkv[:, 0].transpose(0, 1), tables).contiguous()
    mask = torch.ones(t, n + t, dtype=torch.bool).tril(diagonal=n)

    def sdpa() -> object:
        if n == 0:
            return F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)
        return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)

    def sdpa_rope() -> object:
        qk = apply_rope(qkv[None, :, :2].permute(2, 0, 3, 1, 4), tables)
        k[:, n:] = qk[1, 0]
        v[:, n:] = qkv[:, 2].transpose(0, 1)
        keys, values = k[None], v[None]
        if n == 0:
            y = F.scaled_dot_product_attention(qk[0], keys, values, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(qk[0], keys, values, attn_mask=mask)
        return y.transpose(1, 2).reshape(t, -1)

    methods = {
        "sdpa": sdpa,
        "ours": lambda: piece_attention.attend(q, k, v, n),
        "sdpa+rope": sdpa_rope,
        "ours+rope": lambda: piece_attention.attend_rope(qkv, tables, k, v, n),
    }
    calls = max(1, int(2e7 / (HEADS * t * (n + t))))
    times: dict[str, list[float]] = {m: [] for m in methods}
    for fn in methods.values():
        fn()
    for r in range(reps):
        for name in round_order(methods, r):
            times[name].append(once(methods[name], calls))
    pairs = HEADS * (t * n + t * (t + 1) / 2)
    rate = {m: pairs / statistics.median(ts) / 1e9 for m, ts in times.items()}
    ratio = statistics.median(a / b for a, b in zip(times["sdpa"], times["ours"], strict=True))
    ratio_rope = statistics.median(a / b for a, b in zip(times["sdpa+rope"], times["ours+rope"], strict=True))
    return [
        t,
        n,
        f"{rate['sdpa']:.3f}",
        f"{rate['ours']:.3f}",
        f"{ratio:.2f}x",
        f"{ratio_rope:.2f}x",
        f"{statistics.median(times['ours']) * 1e3:.2f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not piece_attention.available():
        sys.exit(f"piece-attention kernel unavailable: {piece_attention.unavailable_reason()}")
    rows = [case(t, n, args.reps) for t, n in [(512, 512), (1024, 0), (256, 768), (64, 960)]]
    header = [
        "t (queries)",
        "n (cached keys)",
        "SDPA G pairs/s",
        "ours G pairs/s",
        "speed-up",
        "speed-up with rotation + cache stores",
        "ours ms/call",
    ]
    table = markdown_table(header, rows)
    body = (
        f"float32, {torch.get_num_threads()} threads, {HEADS} heads of {D}; G pairs/s = causal "
        f"(query, key, head) pairs a query sees per second, median of {args.reps} interleaved rounds; "
        "speed-up = median of per-round ratios. SDPA: `F.scaled_dot_product_attention` with the "
        "end-aligned mask (n > 0) or `is_causal=True` (n = 0: the strided anchor's window, whose kernel "
        "skips masked blocks). The rotation column adds `apply_rope` and the two cache stores on SDPA's "
        "side, `attend_rope` on ours (what `SlidingCache.feed` runs per layer).\n\n"
        f"{table}\n"
    )
    print(body)
    if not args.no_record:
        cmd = "python benchmarks/piece_attention.py"
        record(
            "piece_attention", "Piece attention: the float32 kernel vs SDPA (sliding-cache shapes)", cmd, body
        )


if __name__ == "__main__":
    main()
