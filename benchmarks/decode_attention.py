"""Decode-attention benchmark: the int8-KV fused kernel against torch's SDPA over a bf16 cache.

Three parts, anchor and ours in this process, one thread, pinned to the current core:

1. One-token attention per layer at the bundled bytegpt-6l's shape (8 heads of 32), batch B in
   {5, 13} and context T in {128, 384, 511}: ``F.scaled_dot_product_attention`` with q (B, 8, 1, 32)
   over the bf16 cache slots ``[:T]`` (the layout of the bf16 steps) against ``Int8KVCache.step``
   (store + attend). Six layers' caches are cycled, as in a real step, so the caches come from L3,
   not L2. Reported: microseconds per layer call, ratio, bytes of cache read per call.
2. The whole coding step of ``entropykit compress`` (``ByteGPTStepper.step`` of
   ``entropykit.models.bytegpt_step``, 6 layers) with precision bfloat16 and int8kv, at the same
   B and context.
3. ``compress`` + ``decompress`` of the first 100 KB of the held-out text with both precisions
   (2 worker processes): bits/byte and KB/s.

    python benchmarks/decode_attention.py          # records the "decode_attention" section of RESULTS.md
    python benchmarks/decode_attention.py --quick  # parts 1-2 only, short, prints only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, record, timeit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from entropykit.codec import compress, decompress  # noqa: E402
from entropykit.models import load_model  # noqa: E402
from entropykit.models.bytegpt_step import ByteGPTStepper  # noqa: E402
from entropykit.models.kernels.decode_attention import Int8KVCache, available, unavailable_reason  # noqa: E402

LAYERS, HEADS, D, SLOTS = 6, 8, 32, 512


def attention_rows(batches: list[int], contexts: list[int], calls: int) -> list[list[object]]:
    rows: list[list[object]] = []
    g = torch.Generator().manual_seed(0)
    for b in batches:
        k = torch.randn(LAYERS, b, HEADS, SLOTS, D, generator=g).to(torch.bfloat16)
        v = torch.randn(LAYERS, b, HEADS, SLOTS, D, generator=g).to(torch.bfloat16)
        qkv = torch.randn(b, 3 * HEADS * D, generator=g).to(torch.bfloat16)
        ours = Int8KVCache(LAYERS, b, HEADS, SLOTS)
        for i in range(LAYERS):
            ours.store(i, 0, k[i], v[i])
        q = qkv[:, : HEADS * D].reshape(b, HEADS, 1, D)
        for t in contexts:
            def anchor(t: int = t, q: torch.Tensor = q, k: torch.Tensor = k, v: torch.Tensor = v) -> None:
                for _ in range(calls):
                    for i in range(LAYERS):
                        F.scaled_dot_product_attention(q, k[i, :, :, :t], v[i, :, :, :t])

            def fused(t: int = t, ours: Int8KVCache = ours, qkv: torch.Tensor = qkv) -> None:
                for _ in range(calls):
                    for i in range(LAYERS):
                        ours.step(i, t - 1, qkv)

            ta, tb = (timeit(fn, repeat=5) / (calls * LAYERS) * 1e6 for fn in (anchor, fused))
            per_slot = b * HEADS * t
            rows.append([b, t, ta, tb, tb / ta, per_slot * 2 * D * 2 / 1e6, per_slot * (2 * D + 8) / 1e6])
    return rows


def step_rows(batches: list[int], contexts: list[int], steps: int) -> list[list[object]]:
    model = load_model("bytegpt-6l")
    rows: list[list[object]] = []
    rng = np.random.default_rng(0)
    for b in batches:
        ids = rng.integers(0, 256, (b, SLOTS))
        for t in contexts:
            times = []
            for int8 in (False, True):
                stepper = ByteGPTStepper(model, b, "int8kv" if int8 else "bfloat16")
                runs = []
                for _ in range(3):  # prime (not timed) to t - steps/2, then steps across context t
                    stepper.prime(ids[:, : t - steps // 2])
                    start = time.perf_counter()
                    for i in range(steps):
                        stepper.step(ids[:, i])
                    runs.append((time.perf_counter() - start) / steps * 1e3)
                times.append(sorted(runs)[1])
            rows.append([b, t, times[0], times[1], times[1] / times[0], b / times[1]])
    return rows


def coding_rows() -> list[list[object]]:
    data = (ROOT / "data" / "corpus" / "heldout.bin").read_bytes()[:100_000]
    rows: list[list[object]] = []
    for precision in ("bfloat16", "int8kv"):
        t = time.perf_counter()
        blob = compress(data, precision=precision, workers=2)
        tc = time.perf_counter() - t
        t = time.perf_counter()
        back = decompress(blob, workers=2)
        td = time.perf_counter() - t
        if back != data:
            raise SystemExit(f"round trip FAILED with {precision}")
        rows.append([precision, len(blob), f"{8 * len(blob) / len(data):.5f}", len(data) / tc / 1e3,
                     len(data) / td / 1e3])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one size, parts 1-2 only, no RESULTS.md record")
    args = ap.parse_args()
    if not available():
        raise SystemExit(f"the kernel is not available: {unavailable_reason()}")
    torch.set_num_threads(1)
    batches, contexts = ([13], [384]) if args.quick else ([5, 13], [128, 384, 511])
    part1 = attention_rows(batches, contexts, calls=5 if args.quick else 40)
    part2 = step_rows(batches, [384] if args.quick else [128, 384, 490], steps=8 if args.quick else 40)
    lines = [
        "One-token attention per layer call (8 heads of 32; 6 layers' caches cycled), median of 5:",
        "",
        markdown_table(["B", "context", "SDPA bf16 µs", "int8 kernel µs", "ours/SDPA", "bf16 MB read",
                        "int8 MB read"], part1),
        "",
        "Whole coding step of bytegpt-6l (`ByteGPTStepper.step`, 6 layers; median of 3):",
        "",
        markdown_table(["B", "context", "bfloat16 ms", "int8kv ms", "int8kv/bf16", "int8kv KB/s per core"],
                       part2),
    ]
    if not args.quick:
        lines += [
            "",
            "compress + decompress of the first 100 KB of the held-out text, 2 worker processes:",
            "",
            markdown_table(["precision", "container bytes", "bits/byte", "compress KB/s", "decompress KB/s"],
                           coding_rows()),
        ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += ["", f"The machine was shared with other jobs (load average {load} on {os.cpu_count()} cores "
              "at the end of the run): absolute times are indicative; ratios are measured in one process."]
    body = "\n".join(lines)
    print(body)
    if not args.quick:
        record("decode_attention", "Decode attention over an int8 KV cache (models.kernels.decode_attention)",
               "python benchmarks/decode_attention.py", body)


if __name__ == "__main__":
    main()
