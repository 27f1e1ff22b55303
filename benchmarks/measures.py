"""Entropy + surprisal + varentropy of (N, V) logits: entropykit.token_stats vs. today's patterns.

All contenders compute the same three per-row quantities from the same float32 logits, in one
process; the table gives median time, the ratio to ours, the peak extra resident memory (rise of
the process high-water mark over the resident set before the call) and the largest deviation
from ours (float64 reference for ours):

* naive torch: ``softmax`` and ``log_softmax`` over the whole (N, V) tensor;
* chunked lse: ``logsumexp(z) - sum(softmax(z) * z)`` per chunk of 2048 rows (the pattern of
  verl's ``entropy_from_logits_with_chunking``, its default chunk size);
* ``-sum(exp(logp) * logp)`` with ``logp = log_softmax(z)`` over the whole tensor;
* SciPy: ``scipy.stats.entropy(scipy.special.softmax(z))`` on NumPy (float64 inside).

Usage: ``python benchmarks/measures.py`` (N=4096, V=131072, 2 GiB of logits; about 5 minutes and
~12 GB of RAM for the naive contenders) or ``--quick`` (N=256, V=32768, seconds).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.special
import scipy.stats
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit import measures

Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # entropy, varentropy, surprisal


def ours(z: torch.Tensor, y: torch.Tensor) -> Stats:
    st = measures.token_stats(z, y)
    assert st.surprisal is not None
    return st.entropy, st.varentropy, st.surprisal


def naive_torch(z: torch.Tensor, y: torch.Tensor) -> Stats:
    p = torch.softmax(z, -1)
    logp = torch.log_softmax(z, -1)
    h = -(p * logp).sum(-1)
    v = (p * (logp + h[:, None]) ** 2).sum(-1)
    return h, v, -logp.gather(-1, y[:, None])[:, 0]


def chunked_lse(z: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> Stats:
    n = z.shape[0]
    h, v, s = (torch.empty(n) for _ in range(3))
    for i in range(0, n, chunk):
        c = z[i : i + chunk].float()
        p = torch.softmax(c, -1)
        lse = torch.logsumexp(c, -1)
        h[i : i + chunk] = lse - (p * c).sum(-1)
        v[i : i + chunk] = (p * (c - lse[:, None] + h[i : i + chunk, None]) ** 2).sum(-1)
        s[i : i + chunk] = lse - c.gather(-1, y[i : i + chunk, None])[:, 0]
    return h, v, s


def exp_logp(z: torch.Tensor, y: torch.Tensor) -> Stats:
    logp = torch.log_softmax(z, -1)
    h = -(torch.exp(logp) * logp).sum(-1)
    v = (torch.exp(logp) * (logp + h[:, None]) ** 2).sum(-1)
    return h, v, -logp.gather(-1, y[:, None])[:, 0]


def scipy_numpy(z: torch.Tensor, y: torch.Tensor) -> Stats:
    zn, yn = z.numpy(), y.numpy()
    p = scipy.special.softmax(zn, axis=-1)
    h = scipy.stats.entropy(p, axis=-1)
    logp = scipy.special.log_softmax(zn, axis=-1)
    v = (p * (logp + h[:, None]) ** 2).sum(-1)
    s = -np.take_along_axis(logp, yn[:, None], -1)[:, 0]
    return torch.from_numpy(h), torch.from_numpy(v), torch.from_numpy(s)


CONTENDERS: dict[str, Callable[[torch.Tensor, torch.Tensor], Stats]] = {
    "entropykit token_stats (ours)": ours,
    "naive torch softmax + log_softmax": naive_torch,
    "chunked logsumexp - sum(softmax*z), 2048 rows": chunked_lse,
    "-sum(exp(logp) * logp)": exp_logp,
    "scipy.stats.entropy on NumPy": scipy_numpy,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run (N=256, V=32768); not recorded")
    ap.add_argument("--n", type=int, default=None, help="rows (default 4096, quick 256)")
    ap.add_argument("--v", type=int, default=None, help="vocabulary size (default 131072, quick 32768)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per contender (median)")
    ap.add_argument("--skip", nargs="*", default=[], help="substrings of contenders to skip")
    ap.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    ap.add_argument("--note", default="", help="a line added to the RESULTS.md section")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--sweep", action="store_true",
                    help="also time ours with other CPU_CHUNK_BYTES (per-buffer chunk) sizes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.n or (256 if args.quick else 4096)
    v = args.v or (32768 if args.quick else 131072)

    g = torch.Generator().manual_seed(0)
    z = 3.0 * torch.randn(n, v, generator=g)
    y = torch.randint(0, v, (n,), generator=g)
    with torch.no_grad():
        ref = ours(z.double(), y)  # float64 reference for ours
    print(f"N={n} V={v} float32 logits ({z.numel() * 4 / 2**20:.0f} MiB); chunk budget "
          f"{measures.CHUNK_BYTES / 2**20:.0f} MiB (CPU buffers {measures.CPU_CHUNK_BYTES / 2**10:.0f} KiB); "
          f"torch threads {torch.get_num_threads()}", flush=True)

    rows = []
    t_ours = float("nan")
    for name, fn in CONTENDERS.items():
        if any(s in name for s in args.skip):
            continue
        with torch.no_grad():
            out, mem = peak_extra_mb(lambda fn=fn: fn(z, y))  # type: ignore[misc]
            t = timeit(lambda fn=fn: fn(z, y), repeat=args.repeat, warmup=0)  # type: ignore[misc]
        if name.endswith("(ours)"):
            t_ours = t
        err = max(float((o.double() - r).abs().max()) for o, r in zip(out, ref))
        rows.append([name, t, t / t_ours, mem, err])
        print(f"{name:48s} {t:8.3f} s  x{t / t_ours:6.2f}  +{mem:8.1f} MB  max|dev| {err:.2e}", flush=True)
        del out

    if args.sweep:
        default = measures.CPU_CHUNK_BYTES
        for kib in (512, 1024, 4096, 65536):
            measures.CPU_CHUNK_BYTES = kib * 1024
            with torch.no_grad():
                _, mem = peak_extra_mb(lambda: ours(z, y))
                t = timeit(lambda: ours(z, y), repeat=args.repeat, warmup=0)
            name = f"ours, CPU_CHUNK_BYTES = {kib} KiB" + (" (default)" if kib * 1024 == default else "")
            rows.append([name, t, t / t_ours, mem, float("nan")])
            print(f"{name:48s} {t:8.3f} s  x{t / t_ours:6.2f}  +{mem:8.1f} MB", flush=True)
        measures.CPU_CHUNK_BYTES = default

    table = markdown_table(
        ["contender (entropy + varentropy + surprisal)", "time s", "time / ours", "peak extra MB",
         "max abs deviation"],
        rows,
    )
    print(table)
    if args.quick or args.no_record:
        return
    busy = subprocess.run(["pgrep", "-f", "train_model.py"], capture_output=True).returncode == 0
    notes = [
        f"N={n}, V={v}, float32 logits ({z.numel() * 4 / 2**20:.0f} MiB), median of {args.repeat} runs, "
        f"no autograd. Ours: scratch budget CHUNK_BYTES = {measures.CHUNK_BYTES / 2**20:.0f} MiB, on CPU "
        f"two buffers of at most CPU_CHUNK_BYTES = {measures.CPU_CHUNK_BYTES / 2**10:.0f} KiB "
        "(at least one row).",
        "Deviation: largest |difference| of any of the three outputs from ours computed in float64 (nats).",
    ]
    if busy:
        notes.append("NOTE: a model-training job shared the CPU during this run; times are skewed.")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        notes.append(f"NOTE: load average {load:.1f} on {os.cpu_count()} CPUs: other jobs shared the CPU.")
    if args.note:
        notes.append(args.note)
    cmd = "python benchmarks/measures.py" + "".join(f" {a}" for a in sys.argv[1:])
    record("measures", "Information measures: entropy + varentropy + surprisal (token_stats)", cmd,
           "\n".join(f"- {x}" for x in notes) + "\n\n" + table)


if __name__ == "__main__":
    main()
