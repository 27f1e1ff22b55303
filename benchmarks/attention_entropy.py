"""Attention entropy without the T x T matrix: memory, speed, and the monitor's overhead.

    python benchmarks/attention_entropy.py            # and --quick for a smoke run

1. Streaming ``ops.attention_entropy`` vs the eager way (softmax of the full (B, H, T, T) scores, the
   only way today's tools get attention weights) at T = 1024..4096: forward (+ backward) time and
   peak extra memory, and the goal "peak extra memory below 1/10 of one T x T float32 matrix per
   head" (one head's matrix: 4 T^2 bytes).
2. The monitor's overhead on a ByteGPT training step (forward + backward + AdamW), every step and
   every 10th step; goal <= 15 % every step.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
from entropykit.monitors import attach
from entropykit.ops import attention_entropy


def eager(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    t = s.shape[-1]
    s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -math.inf)
    lp = torch.log_softmax(s, -1)
    return -(lp.exp() * torch.nan_to_num(lp, neginf=0.0)).sum(-1)


def _measure(method: str, t: int, heads: int, dim: int, block: int, backward: bool) -> float:
    """Peak extra MB of one call, measured in this (fresh) process."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, t, dim, generator=g).requires_grad_(backward)
    k = torch.randn(1, heads, t, dim, generator=g).requires_grad_(backward)

    def call() -> None:
        with torch.set_grad_enabled(backward):
            if method == "ours":
                out = attention_entropy(q, k, is_causal=True, block_size=block)
            else:
                out = eager(q, k)
            if backward:
                out.sum().backward()

    call()  # warm-up: first-call allocations of torch itself are not the method's
    q.grad = k.grad = None
    _, mb = peak_extra_mb(call)
    return mb


def part_memory(lengths: list[int], heads: int, dim: int, block: int) -> tuple[str, list[str]]:
    import subprocess

    rows, goals = [], []
    for t in lengths:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, heads, t, dim, generator=g)
        k = torch.randn(1, heads, t, dim, generator=g)
        one_matrix_mb = 4 * t * t / 2**20
        res = {}
        for name in ("ours", "eager"):
            mems = []
            for backward in (False, True):  # each peak in a fresh process: no allocator reuse between them
                cmd = [sys.executable, __file__, "--measure", name, str(t), str(heads), str(dim), str(block),
                       str(int(backward))]
                mems.append(float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
            qg, kg = q.clone().requires_grad_(), k.clone().requires_grad_()
            if name == "ours":
                fwd = lambda q=q, k=k: attention_entropy(q, k, is_causal=True, block_size=block)  # noqa: E731
                both = lambda qg=qg, kg=kg: (  # noqa: E731
                    attention_entropy(qg, kg, is_causal=True, block_size=block).sum().backward()
                )
            else:
                fwd = lambda q=q, k=k: eager(q, k)  # noqa: E731
                both = lambda qg=qg, kg=kg: eager(qg, kg).sum().backward()  # noqa: E731
            with torch.no_grad():
                sec = timeit(fwd, repeat=3, warmup=1)
            sec_b = timeit(both, repeat=3, warmup=1)
            res[name] = mems
            rows.append([t, name, sec * 1e3, sec_b * 1e3, mems[0], mems[1], one_matrix_mb,
                         mems[0] / heads / one_matrix_mb])
        per_head = max(res["ours"]) / heads
        goals.append(f"T={t}: ours' peak extra memory per head {per_head:.2f} MB (max of fwd, fwd+bwd) = "
                     f"{per_head / one_matrix_mb:.3f} of one T x T float32 matrix "
                     f"({'meets' if per_head < one_matrix_mb / 10 else 'MISSES'} the < 1/10 goal); "
                     f"eager {max(res['eager']) / heads:.1f} MB per head")
    table = markdown_table(
        ["T", "method", "fwd ms", "fwd+bwd ms", "fwd peak MB", "fwd+bwd peak MB", "one TxT MB",
         "fwd peak per head / TxT"], rows)
    return table, goals


def part_overhead(steps: int, batch: int, t: int) -> tuple[str, list[str]]:
    torch.manual_seed(0)
    cfg = ByteGPTConfig(block_size=t, n_layer=6, n_head=8, n_embd=256)
    model = ByteGPT(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, t))

    def step() -> None:
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 257), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows, goals = [], []
    for every in (1, 10):
        # A/B rounds, alternating, so drift of the machine hits both sides alike
        plain, watched = [], []
        for _ in range(steps):
            plain.append(timeit(step, repeat=1, warmup=1))
            with attach(model, every=every, block_size=128):
                watched.append(timeit(step, repeat=1, warmup=1))
        base, sec = sorted(plain)[len(plain) // 2], sorted(watched)[len(watched) // 2]
        over = sec / base - 1
        rows.append([f"every {every}", base * 1e3, sec * 1e3, f"{100 * over:+.1f} %"])
        if every == 1:
            goals.append(f"monitor on every step: {100 * over:+.1f} % step time "
                         f"({'meets' if over <= 0.15 else 'MISSES'} the <= 15 % goal)")
    table = markdown_table(["monitor", "step ms without", "step ms with", "overhead"], rows)
    return table, goals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, nothing recorded")
    ap.add_argument("--measure", nargs=6, help=argparse.SUPPRESS)  # internal: one peak in a fresh process
    args = ap.parse_args()
    if args.measure:
        m, t, h, d, b, bw = args.measure
        print(_measure(m, int(t), int(h), int(d), int(b), bool(int(bw))))
        return
    lengths = [256, 512] if args.quick else [1024, 2048, 4096]
    mem_table, goals = part_memory(lengths, heads=4, dim=32, block=256)
    ovh_table, goals2 = part_overhead(steps=3 if args.quick else 8, batch=4 if args.quick else 8,
                                      t=128 if args.quick else 256)
    body = (
        "Streaming attention entropy vs eager softmax (B=1, H=4, D=32, causal, block 256; float32):\n\n"
        f"{mem_table}\n\nMonitor overhead on a ByteGPT-6l-sized training step (n_embd 256, 8 heads, "
        f"batch x T = {'4 x 128' if args.quick else '8 x 256'}, AdamW):\n\n{ovh_table}\n\n"
        + "\n".join(f"- {g}" for g in goals + goals2)
    )
    print(body)
    if not args.quick:
        title = "Attention entropy without the T x T matrix (ops.attention_entropy, monitors)"
        record("attention_entropy", title, "python benchmarks/attention_entropy.py", body)


if __name__ == "__main__":
    main()
