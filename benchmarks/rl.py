"""entropykit.rl against its anchors, in one process: the fused policy loss and the forking-token mask.

1. Policy loss + entropy bonus (+ high-entropy mask), forward + backward, from hidden states (N, D) and
   an LM head (V, D): ``rl.fused_policy_loss`` (chunked, no N x V logits) vs the logits path -- naive
   ``h @ W.T`` then log_softmax / entropy in fp32 -- and TRL's logits path (``selective_log_softmax`` +
   ``entropy_from_logits`` + ``get_high_entropy_mask``, when ``trl`` is installed). Same loss pieces
   after the statistics (``rl.ppo_loss`` with clip-higher, TRL-style mask and bonus). Two settings:
   the top-0.2 entropy mask (the fused backward recomputes only the kept rows) and no mask (the fused
   forward forms the gradients chunk by chunk, Liger-style). Reports median wall time, ratio to ours,
   peak extra resident memory, and |loss - ours|.
2. The high-entropy mask over N valid tokens: TRL's ``get_high_entropy_mask`` (``torch.quantile``,
   which refuses more than 2^24 elements) vs ``rl.high_entropy_mask`` (exact quantile by selection).

    python benchmarks/rl.py            # N=8192, D=512, V=32000 (the issue's point); minutes
    python benchmarks/rl.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit import rl

try:
    import trl
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax
except Exception:  # not installed (the [rl] extra)
    trl = None

POINTS = [(8192, 512, 32000)]
QUICK = [(1024, 256, 8000)]
RHO, COEF, HIGH = 0.2, 0.01, 0.28
RHOS = (0.2, 1.0)


def _trl_mask(ent: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    accel = types.SimpleNamespace(pad_across_processes=lambda t, dim=0, pad_index=0: t, gather=lambda t: t)
    fake = types.SimpleNamespace(accelerator=accel)
    return trl.GRPOTrainer.get_high_entropy_mask(fake, ent, mask, threshold)


def make(n: int, d: int, v: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b = n // 512
    h = torch.randn(b, 512, d, generator=g) * 0.5
    w = torch.randn(v, d, generator=g) / d**0.5
    y = torch.randint(0, v, (b, 512), generator=g)
    mask = torch.rand(b, 512, generator=g) < 0.95
    with torch.no_grad():
        old = torch.cat([torch.log_softmax(h[i] @ w.T, -1).gather(-1, y[i][:, None])[:, 0][None]
                         for i in range(b)])
    old = old + 0.05 * torch.randn(b, 512, generator=g)
    adv = torch.randn(b, generator=g)
    return h, w, y, mask, old, adv


def logits_loss(h, w, y, mask, old, adv, stats: Callable, rho: float) -> torch.Tensor:
    z = h @ w.T
    lp, ent = stats(z, y)
    if rho == 1.0:
        keep = mask
    elif stats is _trl_stats:
        keep = _trl_mask(ent.detach(), mask.long(), 1 - rho)
    else:
        keep = rl.high_entropy_mask(ent.detach(), mask, rho)
    loss, _ = rl.ppo_loss(old, lp, adv, mask, clip_ratio_high=HIGH, weights=keep.float())
    return loss - COEF * (ent * keep).sum() / keep.sum().clamp(min=1)


def _naive_stats(z: torch.Tensor, y: torch.Tensor):
    logp = torch.log_softmax(z, -1)
    return logp.gather(-1, y[..., None])[..., 0], -(logp.exp() * logp).sum(-1)


def _trl_stats(z: torch.Tensor, y: torch.Tensor):
    return selective_log_softmax(z, y), entropy_from_logits(z)


def fused_loss(h, w, y, mask, old, adv, rho: float) -> torch.Tensor:
    loss, _ = rl.fused_policy_loss(h, w, y, old, adv, mask, clip_ratio_high=HIGH, entropy_coef=COEF,
                                   top_entropy_quantile=rho)
    return loss


def _runner(fn: Callable[..., torch.Tensor], h, w, y, mask, old, adv) -> Callable[[], float]:
    hp, wp = h.clone().requires_grad_(), w.clone().requires_grad_()

    def go() -> float:
        hp.grad = wp.grad = None
        loss = fn(hp, wp, y, mask, old, adv)
        loss.backward()
        return float(loss.detach())

    return go


def bench_point(n: int, d: int, v: int, rho: float, repeat: int) -> list[list[object]]:
    data = make(n, d, v)
    methods: dict[str, Callable[[], float]] = {
        "naive logits (h @ W.T, log_softmax)": _runner(
            lambda *a: logits_loss(*a, stats=_naive_stats, rho=rho), *data)}
    if trl is not None and rho < 1.0:
        methods["TRL logits path (selective_log_softmax, entropy_from_logits, mask)"] = _runner(
            lambda *a: logits_loss(*a, stats=_trl_stats, rho=rho), *data)
    ours = _runner(lambda *a: fused_loss(*a, rho=rho), *data)
    ours_val, ours_mem = peak_extra_mb(ours)
    ours_t = timeit(ours, repeat=repeat, warmup=0)  # the memory run above was the warm-up
    rows: list[list[object]] = []
    for name, fn in methods.items():
        val, mem = peak_extra_mb(fn)
        t = timeit(fn, repeat=repeat, warmup=0)
        rows.append([f"{n}x{d}x{v}", rho, name, t, t / ours_t, mem, mem / max(ours_mem, 1.0),
                     abs(val - ours_val)])
        print(rows[-1], flush=True)
    rows.append([f"{n}x{d}x{v}", rho, "entropykit rl.fused_policy_loss", ours_t, 1.0, ours_mem, 1.0, 0.0])
    print(rows[-1], flush=True)
    return rows


def bench_fused(points, repeat: int) -> str:
    rows = [r for n, d, v in points for rho in RHOS for r in bench_point(n, d, v, rho, repeat)]
    header = ["N x D x V", "entropy mask rho", "method", "s (fwd+bwd)", "time / ours", "peak extra MB",
              "mem / ours", "abs(loss - ours)"]
    return markdown_table(header, rows)


def mask_row(n: int) -> list[object]:
    g = torch.Generator().manual_seed(1)
    ent = torch.rand(n // 1024, 1024, generator=g) * 3
    mask = torch.ones_like(ent, dtype=torch.bool)
    ours = timeit(lambda: rl.high_entropy_mask(ent, mask, RHO), repeat=3, warmup=1)
    if trl is None:
        return [f"2^{n.bit_length() - 1}", "not installed", ours, "-", "-"]
    try:
        t = timeit(lambda: _trl_mask(ent, mask.long(), 1 - RHO), repeat=3, warmup=1)
    except RuntimeError as exc:
        return [f"2^{n.bit_length() - 1}", f"error: {str(exc)[:40]}", ours, "-", "-"]
    same = bool(torch.equal(_trl_mask(ent, mask.long(), 1 - RHO), rl.high_entropy_mask(ent, mask, RHO)))
    return [f"2^{n.bit_length() - 1}", t, ours, t / ours, same]


def bench_mask(sizes: list[int]) -> str:
    rows = []
    for n in sizes:
        rows.append(mask_row(n))
        print(rows[-1], flush=True)
    header = ["valid tokens", "TRL get_high_entropy_mask s", "ours s", "TRL / ours", "same mask"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="tokens N of the fused point (D=512, V=32000)")
    args = ap.parse_args(argv)
    points = QUICK if args.quick else POINTS
    if args.n:
        points = [(args.n, 512, 32000)]
    fused_table = bench_fused(points, repeat=1 if not args.quick else 2)
    mask_table = bench_mask([2**16, 2**20] if args.quick else [2**20, 2**24, 2**25])
    load = os.getloadavg()
    body = (
        f"Policy loss (PPO clip-higher {HIGH}) + entropy bonus {COEF}, with the top-{RHO} entropy mask and "
        f"without it (rho 1), forward + "
        f"backward w.r.t. hidden and weight, fp32, sequences of 512 tokens (95% valid). Machine shared by "
        f"other jobs (load average {load[0]:.1f} at the end): times are indicative, ratios measured in one "
        f"process.\n\n{fused_table}\n\nHigh-entropy mask (rho {RHO}) over N valid tokens:\n\n{mask_table}\n"
    )
    print(body)
    if not args.no_record:
        cmd = "python benchmarks/rl.py" + (" --quick" if args.quick else "")
        cmd += f" --n {args.n}" if args.n else ""
        title = "RL entropy control: fused policy loss and forking-token mask (entropykit.rl)"
        record("rl", title, cmd, body)


if __name__ == "__main__":
    main()
