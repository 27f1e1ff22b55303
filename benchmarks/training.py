"""Training step of the general-text ByteGPT: our fused loss vs plain ``F.cross_entropy``, one process.

Claim checked (issue 15): training with ``entropykit.ops.linear_cross_entropy`` (the loss from the
final hidden states and the tied embedding, never materialising the (B*T, 257) logits) is at least as
fast as ``F.cross_entropy(F.linear(h, W), y)`` on this model, with less peak memory.

Model: the shape ``scripts/train_model.py`` trains (rotary ByteGPT, 8 layers, n_embd 256, 8 heads,
context 1024; fresh weights, same seed for both), batch ``--batch`` windows of 1024 bytes of
``/work/corpus/general/train.bin`` (or random bytes when the corpus is absent). One step = forward,
loss, backward, gradient clip, AdamW step, as in training; bf16 autocast rows only where
``precision.native_bf16()`` (as training does). Three identical models -- ours, the anchor and a
control (a second anchor model) -- run alternately on the same batches, the order flipping every step
(ABC CBA ..., so drift in the machine's load cancels); ``--steps`` timed steps each after one warm-up;
the speed ratio is the median of the per-step ratios (wall time; also from process CPU time, which
other processes on the machine disturb less), with their interquartile range. The control's ratio
(1 in expectation) shows the resolution of the step measurement. Also timed: the loss head alone (loss
+ its backward from fixed hidden states), where the losses differ; it is well under 1% of a step,
which bounds how much any loss can change the step speed. Under bf16 autocast ours is the trainer's
loss, whose logits are rounded to bf16 as the anchor's autocast ``F.linear`` rounds them
(``logits_dtype=torch.bfloat16``); the head is also timed in the library's default exact mode (fp32
logits), the "exact" row.

Peak memory: the rise of the resident-set high-water mark over one step (``_common.peak_extra_mb``),
measured after a warm-up step, in a fresh process per variant, with glibc's mmap threshold fixed at
64 KB (``MALLOC_MMAP_THRESHOLD_``): every tensor above 64 KB is then its own mapping, touched when
written and returned when freed, so the rise is the step's peak of live tensor memory. Without that,
glibc serves tensors from memory freed earlier in the process and the rise depends on what ran before:
the in-process figures of an earlier version of this script read 184 MB for ours and 16 MB for the
anchor; a 1-thread probe of the same step read 54 / 94 MB with ours measured first and 29 / 148 MB the
other way round. Measured so for the whole step and for the loss head alone.

Run:  python benchmarks/training.py [--batch 8] [--steps 6] [--threads 2] [--no-record]
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
sys.path.insert(0, str(ROOT / "scripts"))
import train_model  # noqa: E402  (scripts/train_model.py)
from _common import markdown_table, peak_extra_mb, record, round_order  # noqa: E402
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig  # noqa: E402
from entropykit.precision import native_bf16  # noqa: E402

CORPUS = Path("/work/corpus/general/train.bin")
OURS, ANCHOR = "ours: linear_cross_entropy", "anchor: F.cross_entropy"
CONTROL = "control: F.cross_entropy again"  # a second anchor model: the step measure's resolution
EXACT = "exact: linear_cross_entropy, fp32 logits"  # bf16 only: the library's default precision (head alone)


def fused_loss(model: ByteGPT, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Ours: exactly the trainer's loss (scripts/train_model.py ``loss_fn``: hidden states ->
    linear_cross_entropy with the tied embedding)."""
    return train_model.loss_fn(model, x, y, bf16)


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


#: a fixed mmap threshold: each tensor above 64 KB is mapped on allocation and unmapped when freed
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def head_loss(name: str, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The loss head alone, from hidden states ``h`` (fp32 leaf) and the tied weight ``w`` (fp32 leaf):
    ``"ours"`` as the trainer computes it (bf16: logits rounded to bf16, as the anchor's autocast
    ``F.linear`` rounds them), ``"exact"`` with fp32 logits of the bf16 products, else the anchor."""
    if name in ("ours", "exact"):
        return train_model.fused_head(h, w, y, bf16, "bf16" if name == "ours" else "exact")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        z = F.linear(h, w)
    return F.cross_entropy(z.float().reshape(-1, 257), y.reshape(-1))


def memory_child(what: str, name: str, bf16: bool, batch: int) -> None:
    """In a fresh process (started with MMAP_ENV): the peak extra memory (MB) of one training step
    (``what="step"``) or of the loss head alone (``"head"``), after one warm-up run; printed."""
    torch.manual_seed(0)
    model = ByteGPT(ByteGPTConfig(1024, 8, 8, 256, positions="rope")).train()
    data = batches(2, batch, 1024)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    fn = fused_loss if name == "ours" else plain_loss
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h0, _ = model.hidden_states(data[0][0])
    h = h0.detach().float().requires_grad_(True)
    w = model.wte.weight.detach().requires_grad_(True)

    def run(i: int) -> None:
        x, y = data[i]
        if what == "head":
            head_loss(name, h, w, y, bf16).backward()
            return
        loss = fn(model, x, y, bf16)
        opt.zero_grad(set_to_none=True)  # as training does: last step's gradients live until here
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    run(0)  # warm-up: one-off allocations (oneDNN primitives, JIT code, optimizer state)
    h.grad = w.grad = None  # the head's gradients are its output: measured from none
    _, mb = peak_extra_mb(lambda: run(1 if what == "step" else 0))
    print(f"{mb:.2f}")


def child_peak(what: str, name: str, bf16: bool, batch: int, threads: int) -> float:
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--memory-child", what, name, "--bf16", str(int(bf16)),
                          "--batch", str(batch), "--threads", str(threads)],
                         capture_output=True, text=True, check=True, env={**os.environ, **MMAP_ENV}).stdout
    return float(out.split()[-1])


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat), 0 where unavailable."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the memory probes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def training_running() -> bool:
    """A python process running scripts/train_model.py (not a shell that merely names it)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"python" in Path(argv[0].decode(errors="replace")).name.encode() and any(
                a.endswith(b"scripts/train_model.py") for a in argv[1:3]):
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory-child", nargs=2, metavar=("WHAT", "NAME"), help=argparse.SUPPRESS)
    ap.add_argument("--bf16", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--head-repeat", type=int, default=40, help="timed runs of the loss head alone")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], bool(args.bf16), args.batch)
        return
    busy = training_running()
    machine0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    cfg = ByteGPTConfig(1024, 8, 8, 256, positions="rope")
    data = batches(args.steps + 1, args.batch, cfg.block_size)
    ours, anchor, control = OURS, ANCHOR, CONTROL
    losses = {ours: fused_loss, anchor: plain_loss, control: plain_loss}
    precisions = [True, False] if native_bf16() else [False]
    rows = []
    share = {}
    for bf16 in precisions:
        states = {}
        for name in losses:
            torch.manual_seed(0)
            model = ByteGPT(cfg).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
            states[name] = (model, opt)
        wall: dict[str, list[float]] = {n: [] for n in losses}
        cpu: dict[str, list[float]] = {n: [] for n in losses}
        first_loss: dict[str, float] = {}
        for i, (x, y) in enumerate(data):
            for name in round_order(losses, i):  # ABC CBA: load drift cancels
                fn = losses[name]
                model, opt = states[name]
                t, c = time.perf_counter(), time.process_time()
                loss = fn(model, x, y, bf16)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                value = float(loss.detach())
                if i == 0:
                    first_loss[name] = value
                else:
                    wall[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
        # the loss head alone, from fixed hidden states of the fused model, alternating
        model = states[ours][0]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h0, _ = model.hidden_states(data[0][0])
        y0 = data[0][1]
        head: dict[str, list[float]] = {ours: [], EXACT: [], anchor: []} if bf16 else {ours: [], anchor: []}
        for k in range(args.head_repeat + 1):
            for name in round_order(head, k):
                h = h0.detach().float().requires_grad_(True)
                w = model.wte.weight.detach().requires_grad_(True)
                t = time.perf_counter()
                head_loss(name.split(":")[0], h, w, y0, bf16).backward()
                if k:  # the first round is a warm-up
                    head[name].append(time.perf_counter() - t)
        prec = "bf16 autocast" if bf16 else "float32"
        share[prec] = statistics.median(head[anchor]) / statistics.median(wall[anchor])
        for name in [*losses, *(n for n in head if n not in losses)]:
            if name not in losses:  # the exact mode: the loss head alone
                rows.append([prec, name, *["-"] * 5, f"{statistics.median(head[name]) * 1000:.2f}",
                             f"{statistics.median(head[anchor]) / statistics.median(head[name]):.3f}x",
                             f"{child_peak('head', 'exact', bf16, args.batch, args.threads):.1f}", "-"])
                continue
            per_step = sorted(a / o for a, o in zip(wall[anchor], wall[name]))
            q1, q3 = np.percentile(per_step, [25, 75])
            cpu_ratio = statistics.median(a / o for a, o in zip(cpu[anchor], cpu[name]))
            short = name.split(":")[0]
            timed_head = name in head
            rows.append([
                prec, name, f"{tokens_of(args) / statistics.median(wall[name]):.0f}",
                f"{statistics.median(per_step):.3f}x", f"{q1:.3f}-{q3:.3f}", f"{cpu_ratio:.3f}x",
                f"{child_peak('step', short, bf16, args.batch, args.threads):.1f}" if timed_head else "-",
                f"{statistics.median(head[name]) * 1000:.2f}" if timed_head else "-",
                f"{statistics.median(head[anchor]) / statistics.median(head[name]):.3f}x"
                if timed_head else "-",
                f"{child_peak('head', short, bf16, args.batch, args.threads):.1f}" if timed_head else "-",
                f"{first_loss[name]:.5f}",
            ])
        cols = ["precision", "loss", "tokens/s", "vs anchor", "IQR", "CPU vs anchor", "step MB", "head ms",
                "head vs anchor", "head MB", "step-0 loss"]
        print(markdown_table(cols, rows), flush=True)
    load = os.getloadavg()
    others = max(0.0, busy_cpu_seconds() - machine0 - (own_cpu_seconds() - own0))
    others_share = others / ((time.perf_counter() - wall0) * (os.cpu_count() or 1))
    tokens = tokens_of(args)
    machine_note = (
        "the long training run (scripts/train_model.py) was running on the same 2 cores: absolute figures "
        "are indicative, the ratios come from alternating steps in one process" if busy else
        "no training run on the machine (other sessions' jobs may have been)")
    shares = "; ".join(f"{k}: {v * 100:.2f}%" for k, v in share.items())
    body = (
        f"Model: rotary ByteGPT 8 x 256, context 1024, {ByteGPT(cfg).num_parameters():,} parameters; batch "
        f"{args.batch} x 1024 tokens; {args.steps} timed steps each after one warm-up, the three models "
        f"alternating (ABC CBA ...); speed = median of the per-step time ratios anchor / row (IQR: their "
        f"interquartile range; CPU: the same from process CPU time, less sensitive to other processes); "
        f"loss head: median of {args.head_repeat} alternating runs; {args.threads} threads.\n\n"
        + markdown_table(
            ["precision", "loss", "tokens/s", "step speed vs anchor", "per-step ratio IQR",
             "step CPU-time speed vs anchor", "step peak extra MB", "loss head ms (fwd+bwd)",
             "loss head speed vs anchor", "loss head peak extra MB", "step-0 loss (nats)"], rows)
        + "\n\nUnder bf16 autocast the anchor's logits come from autocast's `F.linear`, rounded to bf16; "
        "ours (the trainer's loss) rounds them likewise (`logits_dtype=torch.bfloat16`): the same precision. "
        "The exact row is the library's default, fp32 logits of the exact bf16 products (loss head alone; "
        "on a CPU without AMX oneDNN forms fp32 outputs from bf16 operands at about half the native rate)."
        "\n\nThe control row is a second, identical model trained with the anchor's loss: its ratio is "
        "the resolution of the step measurement on this machine. The loss head is a small part of a step "
        f"(the anchor's head time / its step time: {shares}), so the loss can move the step speed by at "
        "most about that much; the head columns show the difference itself.\n\n"
        "Peak extra MB: one step (or the loss head alone) after a warm-up, each in a fresh process "
        "with glibc's mmap threshold fixed at 64 KB, so that the rise of the resident set is the peak of "
        "live tensor memory (in one long process the allocator reuses memory freed earlier and the figure "
        "depends on what ran before). The loss head's tensors are small next to the model's activations: "
        f"the logits are {tokens} x 257 floats ({tokens * 257 * 4 / 2**20:.1f} MB in float32).\n\n"
        f"Machine: load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end of the "
        f"run; other processes used {others:.0f} CPU-seconds during the run ({others_share * 100:.0f}% of "
        f"the machine's {os.cpu_count()} cores); {machine_note}."
    )
    if not args.no_record:
        record("training", "Training step: fused linear cross-entropy vs F.cross_entropy (ByteGPT 8x256)",
               "python " + " ".join(["benchmarks/training.py", *sys.argv[1:]]), body)


def tokens_of(args: argparse.Namespace) -> int:
    return int(args.batch) * 1024


if __name__ == "__main__":
    main()
