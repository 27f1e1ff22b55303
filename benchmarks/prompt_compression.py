"""Prompt compression by self-information vs random dropping (entropykit.lm.compress_prompt).

Held-out passages of the bundled corpus (``data/corpus/heldout.bin``, never trained on) are cut into a
context (CTX bytes) and the continuation that follows it (CONT bytes). The context is compressed at a
ratio r (fraction of its tokens dropped) by our method (lowest self-information per token first) or by
dropping random units to the same token budget; the cost is how much the model's surprisal of the
continuation grows, in bits per continuation byte, over the uncompressed context:

    delta = bits/byte(continuation | compressed context) - bits/byte(continuation | full context)

Lower is better; "no context" shows the ceiling. Random is averaged over R draws per passage. Ours
ranks units by bits per token (the default) or by total bits (Selective Context's ranking); line
breaks are kept by all three (``keep_layout``), so no method joins lines.

    python benchmarks/prompt_compression.py            # 16 passages (~3 min idle on 2 cores)
    python benchmarks/prompt_compression.py --quick    # 10 passages
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch

from _common import markdown_table, record
from entropykit.lm import load_model, score
from entropykit.lm.prompt import compress_prompt

CTX, CONT, R = 384, 128, 2
ROOT = Path(__file__).resolve().parents[1]


def passages(n: int) -> list[tuple[bytes, bytes]]:
    data = (ROOT / "data" / "corpus" / "heldout.bin").read_bytes()
    out, step = [], max((len(data) - CTX - CONT) // n, CTX + CONT)
    for i in range(n):
        a = i * step
        chunk = data[a:a + CTX + CONT]
        text = chunk.decode("utf-8", errors="ignore").encode()  # whole characters only
        out.append((text[:CTX], text[CTX:CTX + CONT]))
    return out


def cont_bpb(model, ctx: bytes, cont: bytes) -> float:
    r = score(ctx + cont, model)
    start = len(ctx)
    mask = r.offsets[:, 0] >= start
    return float(r.surprisal_bits[mask].astype(np.float64).sum() / len(cont))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="bytegpt-6l")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = load_model(args.model)
    ps = passages(8 if args.quick else 16)
    t0 = time.perf_counter()
    full = np.array([cont_bpb(model, c, x) for c, x in ps])
    none = np.array([cont_bpb(model, b"", x) for _, x in ps])
    rows = []
    for unit in ("word", "phrase"):
        for ratio in (0.3, 0.5, 0.7):
            ours, sums, rand, achieved = [], [], [], []
            for i, (c, x) in enumerate(ps):
                cp = compress_prompt(c.decode(), model, ratio=ratio, unit=unit)
                achieved.append(cp.ratio)
                ours.append(cont_bpb(model, cp.text.encode(), x) - full[i])
                cs = compress_prompt(c.decode(), model, ratio=ratio, unit=unit, rank="sum")
                sums.append(cont_bpb(model, cs.text.encode(), x) - full[i])
                draws = []
                for k in range(R):
                    g = torch.Generator().manual_seed(1000 * i + k)
                    rp = compress_prompt(c.decode(), model, ratio=ratio, unit=unit, method="random",
                                         generator=g)
                    draws.append(cont_bpb(model, rp.text.encode(), x) - full[i])
                rand.append(float(np.mean(draws)))
            o, so, rr = np.array(ours), np.array(sums), np.array(rand)
            se = lambda v: v.std(ddof=1) / np.sqrt(v.size)  # noqa: E731
            d = rr - o  # paired: random minus ours, per passage
            rows.append([unit, ratio, f"{np.mean(achieved):.3f}", f"{o.mean():+.4f} ± {se(o):.4f}",
                         f"{so.mean():+.4f} ± {se(so):.4f}", f"{rr.mean():+.4f} ± {se(rr):.4f}",
                         f"{d.mean():+.4f} ± {se(d):.4f}", f"{(o < rr).sum()}/{o.size}"])
            print(rows[-1], flush=True)
    elapsed = time.perf_counter() - t0
    table = markdown_table(
        ["unit", "ratio", "achieved", "Δ ours, bits/token rank (± s.e.)", "Δ ours, total-bits rank",
         f"Δ random (mean of {R} draws)", "random - ours, paired", "ours < random"], rows)
    body = (
        f"Model `{model.identity}`; {len(ps)} held-out passages of `data/corpus/heldout.bin`, context "
        f"{CTX} bytes, continuation {CONT} bytes. Continuation bits/byte with the full context: "
        f"{full.mean():.4f}; with no context: {none.mean():.4f} (Δ {none.mean() - full.mean():+.4f}). "
        f"Δ = continuation bits/byte with the compressed context minus with the full one (lower is better); "
        f"ratio = fraction of the context's tokens dropped.\n\n{table}\n\n"
        f"Wall time {elapsed:.0f} s. Load average at the end: {os.getloadavg()[0]:.1f} (shared machine).\n"
    )
    print(body)
    record("prompt_compression",
           "Prompt compression by self-information vs random dropping (lm.compress_prompt)",
           "python benchmarks/prompt_compression.py" + (" --quick" if args.quick else ""), body)


if __name__ == "__main__":
    main()
