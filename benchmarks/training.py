"""Training step of the general-text ByteGPT: our fused loss vs plain ``F.cross_entropy``, one process.

Claim checked (issue 15): training with ``entropykit.ops.linear_cross_entropy`` (the loss from the
final hidden states and the tied embedding, never materialising the (B*T, 257) logits) is at least as
fast as ``F.cross_entropy(F.linear(h, W), y)`` on this model, with less peak memory.

Model: the shape ``scripts/train_model.py`` trains (rotary ByteGPT, 8 layers, n_embd 256, 8 heads,
context 1024; fresh weights, same seed for both), batch ``--batch`` windows of 1024 bytes of
``/work/corpus/general/train.bin`` (or random bytes when the corpus is absent). One step = forward,
loss, backward, gradient clip, AdamW step, as in training; bf16 autocast rows only where
``precision.native_bf16()`` (as training does). The two losses run alternately (ABAB...) on the same
batches; ``--steps`` timed steps each after one warm-up. Peak memory: the rise of the resident-set
high-water mark over one step (``_common.peak_extra_mb``). Also timed: the loss head alone (loss +
its backward from fixed hidden states), where the two differ, and its peak extra memory measured in a
fresh process per variant (the whole-step peak in one long process is blurred by the allocator reusing
memory freed by earlier steps).

Run:  python benchmarks/training.py [--batch 8] [--steps 3] [--threads 2] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from _common import markdown_table, peak_extra_mb, record  # noqa: E402
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig  # noqa: E402
from entropykit.ops import linear_cross_entropy  # noqa: E402
from entropykit.precision import native_bf16  # noqa: E402

CORPUS = Path("/work/corpus/general/train.bin")


def fused_loss(model: ByteGPT, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Ours (as scripts/train_model.py): hidden states -> linear_cross_entropy with the tied embedding."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h, _ = model.hidden_states(x)
    w = model.wte.weight
    if bf16:
        h, w = h.to(torch.bfloat16), w.to(torch.bfloat16)
    else:
        h = h.float()
    return linear_cross_entropy(h.reshape(-1, h.shape[-1]), w, y.reshape(-1))  # type: ignore[return-value]


def plain_loss(model: ByteGPT, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Anchor: the logits (autocast bf16 matmul when bf16), then F.cross_entropy on float32 logits."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits, _ = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


def batches(n: int, b: int, t: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    data = (np.fromfile(CORPUS, dtype=np.uint8) if CORPUS.exists()
            else rng.integers(0, 256, 1 << 22, dtype=np.uint8))
    out = []
    for _ in range(n):
        ix = rng.integers(0, len(data) - t, b)
        y = torch.from_numpy(np.stack([data[i : i + t] for i in ix]).astype(np.int64))
        out.append((torch.cat([torch.full((b, 1), BOS), y[:, :-1]], dim=1), y))
    return out


def head_child(name: str, bf16: bool, batch: int) -> None:
    """In a fresh process: peak extra memory (MB) of the loss head alone (loss + backward from fixed
    hidden states), printed; a fresh process so that no earlier allocation is reused."""
    torch.manual_seed(0)
    model = ByteGPT(ByteGPTConfig(1024, 8, 8, 256, positions="rope"))
    x, y = batches(1, batch, 1024)[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h0, _ = model.hidden_states(x)
    h = h0.detach().float().requires_grad_(True)
    w = model.wte.weight.detach().requires_grad_(True)

    def run() -> None:
        if name == "ours":
            hh, ww = (h.bfloat16(), w.bfloat16()) if bf16 else (h, w)
            loss = linear_cross_entropy(hh.reshape(-1, 256), ww, y.reshape(-1))
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                z = F.linear(h, w)
            loss = F.cross_entropy(z.float().reshape(-1, 257), y.reshape(-1))
        loss.backward()  # type: ignore[union-attr]

    _, mb = peak_extra_mb(run)
    print(f"{mb:.2f}")


def head_peak(name: str, bf16: bool, batch: int) -> float:
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--head-child", name, "--bf16", str(int(bf16)),
                          "--batch", str(batch)], capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-child", choices=("ours", "anchor"), help=argparse.SUPPRESS)
    ap.add_argument("--bf16", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.head_child:
        head_child(args.head_child, bool(args.bf16), args.batch)
        return
    cfg = ByteGPTConfig(1024, 8, 8, 256, positions="rope")
    data = batches(args.steps + 1, args.batch, cfg.block_size)
    losses = {"ours: linear_cross_entropy": fused_loss, "anchor: F.cross_entropy": plain_loss}
    precisions = [True, False] if native_bf16() else [False]
    rows = []
    for bf16 in precisions:
        states = {}
        for name in losses:
            torch.manual_seed(0)
            model = ByteGPT(cfg).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
            states[name] = (model, opt)
        times: dict[str, list[float]] = {n: [] for n in losses}
        first_loss: dict[str, float] = {}
        peaks: dict[str, float] = {}
        for i, (x, y) in enumerate(data):
            for name, fn in losses.items():
                model, opt = states[name]

                def step(fn=fn, model=model, opt=opt, x=x, y=y, bf16=bf16) -> float:
                    loss = fn(model, x, y, bf16)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    return float(loss.detach())

                t = time.perf_counter()
                if i == 1:  # after the warm-up: peak memory of one step
                    value, peaks[name] = peak_extra_mb(step)
                else:
                    value = step()
                if i == 0:
                    first_loss[name] = value
                else:
                    times[name].append(time.perf_counter() - t)
        # the loss head alone, from fixed hidden states of the fused model
        model = states["ours: linear_cross_entropy"][0]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h0, _ = model.hidden_states(data[0][0])
        head: dict[str, float] = {}
        for name in losses:
            ts = []
            for _ in range(3):
                h = h0.detach().float().requires_grad_(True)
                t = time.perf_counter()
                w = model.wte.weight.detach().requires_grad_(True)
                if name.startswith("ours"):
                    hh, ww = (h.bfloat16(), w.bfloat16()) if bf16 else (h, w)
                    loss = linear_cross_entropy(hh.reshape(-1, 256), ww, data[0][1].reshape(-1))
                else:
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        z = F.linear(h, w)
                    loss = F.cross_entropy(z.float().reshape(-1, 257), data[0][1].reshape(-1))
                loss.backward()  # type: ignore[union-attr]
                ts.append(time.perf_counter() - t)
            head[name] = statistics.median(ts)
        tokens = args.batch * cfg.block_size
        anchor = "anchor: F.cross_entropy"
        for name in losses:
            med = statistics.median(times[name])
            rows.append([
                "bf16 autocast" if bf16 else "float32", name, f"{tokens / med:.0f}",
                f"{statistics.median(times[anchor]) / med:.2f}x", f"{peaks[name]:.0f}",
                f"{head[name] * 1000:.0f}", f"{head_peak(name.split(':')[0], bf16, args.batch):.1f}",
                f"{first_loss[name]:.5f}",
            ])
        cols = ["precision", "loss", "tokens/s", "vs anchor", "peak extra MB", "loss head ms", "loss head MB",
                "step-0 loss"]
        print(markdown_table(cols, rows), flush=True)
    load = os.getloadavg()
    body = (
        f"Model: rotary ByteGPT 8 x 256, context 1024, {ByteGPT(cfg).num_parameters():,} parameters; batch "
        f"{args.batch} x 1024 tokens; {args.steps} timed steps each (median), alternating; "
        f"{args.threads} threads.\n\n"
        + markdown_table(
            ["precision", "loss", "tokens/s", "speed vs anchor", "peak extra MB (step)",
             "loss head ms (fwd+bwd)", "loss head peak MB (fresh process)", "step-0 loss (nats)"], rows)
        + f"\n\nShared machine: load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) "
        "during the run, with the long training run and other sessions' jobs on the 2 cores: absolute "
        "figures are indicative, the ratios come from alternating steps in one process. The logits "
        f"here are only {tokens} x 257 floats ({tokens * 257 * 4 / 2**20:.1f} MB in float32), so the "
        "fused loss can save little memory on a byte-level model; its gain grows with the vocabulary."
    )
    if not args.no_record:
        record("training", "Training step: fused linear cross-entropy vs F.cross_entropy (ByteGPT 8x256)",
               "python " + " ".join(["benchmarks/training.py", *sys.argv[1:]]), body)


if __name__ == "__main__":
    main()
