"""Vocab-parallel fused cross-entropy on 2 gloo processes against the single-process ops, in one script.

Claim (issue 21): ``ops.parallel_linear_cross_entropy`` over K processes matches the single-process op and
``F.cross_entropy`` (loss and gradients, with label smoothing and ignore_index) to 1e-6, and each process
needs about 1/K of the single-process op's peak extra memory at V = 128k.

Rows: the single-process fused op ``ops.linear_cross_entropy`` (the anchor of memory and time) and the
vocab-parallel op on each of K gloo processes (localhost, fork). Each row is measured in its own fresh
process (peak extra resident memory of forward + backward, median wall time of 2 runs after it).
Accuracy: float64, a smaller N, against ``F.cross_entropy`` on the full logits (label smoothing 0.1,
20 % ignored targets), max |difference| of loss, dhidden and the local dweight shard over the ranks.

    python benchmarks/vocab_parallel.py            # N=1024, D=256, V=131072, 2 processes
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit import ops


def data(n: int, d: int, v: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(v, d, generator=g, dtype=dtype) / d**0.5
    y = torch.randint(0, v, (n,), generator=g)
    y[torch.rand(n, generator=g) < 0.2] = -100
    return h, w, y


def shard(v: int, world: int, rank: int) -> tuple[int, int]:
    base, extra = divmod(v, world)
    sizes = [base + (r < extra) for r in range(world)]
    return sum(sizes[:rank]), sizes[rank]


def _single(args, q) -> None:
    h0, w0, y = data(args.n, args.d, args.v, torch.float32)
    h, w = h0.requires_grad_(), w0.requires_grad_()

    def step():
        h.grad = w.grad = None
        ops.linear_cross_entropy(h, w, y, label_smoothing=0.1).backward()

    _, mb = peak_extra_mb(step)
    q.put(("single", mb, timeit(step, repeat=2, warmup=0)))


def _rank(rank: int, world: int, port: int, args, q) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)  # one core per process: the K processes share this machine's cores
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # memory and time: float32 at the full size
        a, vl = shard(args.v, world, rank)
        h0, w0, y = data(args.n, args.d, args.v, torch.float32)
        h, w = h0.requires_grad_(), w0[a:a + vl].clone().requires_grad_()
        del w0

        def step():
            h.grad = w.grad = None
            ops.parallel_linear_cross_entropy(h, w, y, label_smoothing=0.1).backward()

        _, mb = peak_extra_mb(step)
        secs = timeit(step, repeat=2, warmup=0)
        # accuracy (after the memory measurement): float64 against F.cross_entropy on the full logits
        h0, w0, y = data(args.n_check, args.d, args.v, torch.float64, seed=1)
        h, w = h0.clone().requires_grad_(), w0[a:a + vl].clone().requires_grad_()
        loss = ops.parallel_linear_cross_entropy(h, w, y, label_smoothing=0.1)
        loss.backward()
        hr, wr = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        ref = F.cross_entropy(hr @ wr.T, y, label_smoothing=0.1)
        ref.backward()
        err = max(float((loss - ref).detach().abs()), float((h.grad - hr.grad).abs().max()),
                  float((w.grad - wr.grad[a:a + vl]).abs().max()))
        q.put((f"rank {rank}", mb, secs, err))
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--v", type=int, default=131072)
    ap.add_argument("--n-check", type=int, default=256)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_single, args=(args, q))
    p.start()
    single = q.get()
    p.join()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_rank, args=(r, args.world, port, args, q)) for r in range(args.world)]
    for p in procs:
        p.start()
    ranks = sorted(q.get() for _ in procs)
    for p in procs:
        p.join()
    rows = [["ops.linear_cross_entropy (1 process, 2 threads)", f"{single[1]:.0f}", 1.0,
             f"{single[2]:.3f}", 1.0, "-"]]
    for name, mb, secs, err in ranks:
        rows.append([f"ops.parallel_linear_cross_entropy, {name} of {args.world} (1 thread)", f"{mb:.0f}",
                     round(mb / single[1], 3), f"{secs:.3f}", round(secs / single[2], 2), f"{err:.1e}"])
    header = ["op (fwd + bwd, fp32, label_smoothing 0.1, 20 % ignored)", "peak extra MB", "memory ratio",
              "s", "time ratio", "max abs err vs F.cross_entropy (f64)"]
    table = markdown_table(header, rows)
    load = os.getloadavg()
    body = (f"N={args.n}, D={args.d}, V={args.v} (accuracy: float64, N={args.n_check}); "
            f"load average {load[0]:.1f} on {os.cpu_count()} cores (shared machine: times are "
            "indicative).\n\n"
            f"{table}\n\n"
            "Per process the peak is about 1/K of the single-process op: the local weight gradient is "
            "V/K x D and the chunk buffer is rows x V/K (the rows come from the full vocabulary, so "
            "every rank runs the same number of chunks and all-reduces). Time: each rank recomputes its "
            "logits in backward (one extra matmul, CCE style) and waits in 2 all-reduces per chunk plus "
            "one of dhidden; the single process uses both cores, each rank one.")
    print(body)
    if not args.no_record:
        cmd = "python benchmarks/vocab_parallel.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
        record("vocab_parallel", "Vocab-parallel cross-entropy (gloo, 2 processes) vs the single-process op",
               cmd, body)


if __name__ == "__main__":
    main()
