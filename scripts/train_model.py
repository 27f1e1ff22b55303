"""Train a ByteGPT with entropykit's fused loss; checkpointed, resumable, and exportable as a bundled model.

Start (the general-text model of issue 15; corpus from ``scripts/build_corpus.py general``)::

    mkdir -p /work/train/general
    setsid nohup python scripts/train_model.py --corpus /work/corpus/general --run /work/train/general \\
        --positions rope --block-size 1024 --n-layer 8 --n-embd 256 --n-head 8 --batch-size 8 \\
        --total-steps 16000 --threads 2 > /work/train/general/log 2>&1 &

The run keeps its own copy of the corpus in ``RUN/corpus`` (``cp -r /work/corpus/general RUN/corpus``),
used on resume when the original directory is gone; ``train.bin``'s SHA-256 is checked on resume.

Resume: the same command again. When ``RUN/checkpoint.pt`` exists, the run continues exactly where the
checkpoint left it (model, AdamW moments, step, so the learning-rate schedule and the data position,
and the RNG state); the model options on the command line are ignored and the checkpoint's are used
(``--total-steps`` too, unless ``--retarget-steps N`` is given: the cosine then ends at step N; the
learning rate moves at once to its value at the current step on the new schedule; recorded in the
checkpoint; ``--restart-lr LR`` with it starts a warm restart instead: a new ``--warmup`` ramp to ``LR``
and a cosine to ``--min-lr-ratio``-scaled ``LR`` at step N, the earlier segments kept under
``schedule["history"]``). Stop it at any time (``kill PID``: SIGTERM/SIGINT write a checkpoint
first); at most ``--checkpoint-minutes`` of work is lost on a hard kill. The log is appended to
``RUN/train.log`` (and stdout).

A checkpoint is a file of the session that made it and may not outlive it. The exported model is
committed, so training can go on from it: ``--init-from src/entropykit/models/bundled/bytegpt-general
--restart-lr LR --warmup W --retarget-steps N`` (with no ``RUN/checkpoint.pt``) takes its weights, step,
token count and schedule history, and starts AdamW's moments from zero under a new warm-up.

Ship a checkpoint as a bundled model::

    python scripts/train_model.py --run /work/train/general \\
        --export src/entropykit/models/bundled/bytegpt-general
    python benchmarks/heldout.py --new src/entropykit/models/bundled/bytegpt-general   # records RESULTS.md
    python benchmarks/scoring.py --sliding src/entropykit/models/bundled/bytegpt-general --skip-main

``--export`` writes ``config.json``, ``model.safetensors`` (fp32, about 25 MB for 8 x 256: the bundled
size test allows 25 MiB), ``training.json`` (step, tokens, schedule, corpus summary), ``README.md`` (the
model card: shape, training, corpus per kind, every source package with version, licence and bytes) and
``sources.json`` into that directory. Add the held-out figures of ``benchmarks/heldout.py`` to the card.
Only if the new model's bits/byte beat ``bytegpt-6l``'s on every held-out kind, make it the default:
``DEFAULT_MODEL`` in ``src/entropykit/models/adapters.py`` (tests keep ``bytegpt-small``; doctests and
README figures that name ``bytegpt-6l`` stay valid, since that model stays bundled). Loading needs no
code change: ``load_model("bytegpt-general")`` finds every directory under ``models/bundled``.

Training: random windows of ``train.bin`` (``--block-size`` bytes, each input starting with BOS);
window offsets of step ``s`` come from a generator seeded with ``(seed, s)``, so the data position is
the step. Loss: :func:`entropykit.ops.linear_cross_entropy` on the final hidden states and the tied
embedding (no logits tensor); bfloat16 autocast only where :func:`entropykit.precision.native_bf16`
says the CPU multiplies bf16 in hardware (``--precision float32`` forces float32); under autocast the
loss's logits are rounded to bf16 as autocast's ``F.linear`` would (``--logits exact``: fp32 logits;
the 9,000-step ``bytegpt-general`` was trained with exact logits throughout). AdamW (0.9, 0.95),
weight decay 0.1 on matrices, gradient clip 1.0. Learning rate: linear warm-up over ``--warmup``
steps, then a cosine from ``--lr`` to ``--min-lr-ratio * lr`` at ``--total-steps`` (constant after):
a function of the step alone, so it survives resumption. Held-out bits/byte (``heldout/*.bin``, or
``heldout.bin`` for the pydoc corpus) is logged every ``--eval-every`` steps on the first
``--eval-bytes`` of each kind (non-overlapping windows: a pessimistic figure).

The old time-budgeted run of ``bytegpt-6l`` (learned positions, context 512) is
``--positions learned --block-size 512 --n-layer 6 --total-steps 5000 --lr 1.5e-3``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads burned 2.5x the
# CPU of the same step for no speed (measured with 2 threads at load 10 on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig
from entropykit.ops import linear_cross_entropy
from entropykit.precision import native_bf16

CHECKPOINT = "checkpoint.pt"


def lr_at(step: int, *, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, cosine to ``min_ratio * lr`` at ``total``."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    frac = min(1.0, max(0, step - warmup) / max(1, total - warmup))
    return lr * warm * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def batch(data: np.ndarray, t: int, b: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step``: ``b`` random windows of ``t`` bytes (targets) and BOS-prefixed inputs."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    ix = torch.randint(0, len(data) - t, (b,), generator=g).tolist()
    y = torch.from_numpy(np.stack([data[i : i + t] for i in ix]).astype(np.int64))
    x = torch.cat([torch.full((b, 1), BOS), y[:, :-1]], dim=1)
    return x, y


def loss_fn(model: ByteGPT, x: torch.Tensor, y: torch.Tensor, bf16: bool,
            logits: str = "bf16") -> torch.Tensor:
    """Mean next-byte cross-entropy (nats) through the fused loss (no (B*T, 257) logits tensor).

    Under bf16 autocast, ``logits="bf16"`` forms the logits as autocast's ``F.linear`` does (a native
    bf16 matmul, output rounded to bf16; ``logits_dtype=torch.bfloat16``), ``"exact"`` in fp32 from the
    exact bf16 products (the library's default; about 2x the forward matmul's time on a CPU without
    AMX). Without autocast the logits are fp32 either way."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h, _ = model.hidden_states(x)
    return fused_head(h, model.wte.weight, y, bf16, logits)


def fused_head(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, bf16: bool,
               logits: str = "bf16") -> torch.Tensor:
    """The loss head of :func:`loss_fn`: mean cross-entropy (nats) of ``h @ w.T`` (h (..., D), the tied
    weight w (V, D)) against ``y`` by ``linear_cross_entropy``, on bf16 copies under autocast (logits
    as ``loss_fn`` says) or float32."""
    if bf16:
        h, w = h.to(torch.bfloat16), w.to(torch.bfloat16)
    else:
        h = h.float()
    mode = torch.bfloat16 if bf16 and logits == "bf16" else None
    return linear_cross_entropy(h.reshape(-1, h.shape[-1]), w, y.reshape(-1),  # type: ignore[return-value]
                                logits_dtype=mode)


def heldout_sets(corpus: Path) -> dict[str, np.ndarray]:
    if (corpus / "heldout").is_dir():
        return {p.stem: np.fromfile(p, dtype=np.uint8) for p in sorted((corpus / "heldout").glob("*.bin"))}
    return {"heldout": np.fromfile(corpus / "heldout.bin", dtype=np.uint8)}


@torch.no_grad()
def heldout_bits_per_byte(model: ByteGPT, data: np.ndarray, max_bytes: int | None = None) -> float:
    """Bits/byte over non-overlapping BOS-prefixed windows of the model's context (float32)."""
    was = model.training
    model.eval()
    t = model.config.block_size
    data = data[:max_bytes] if max_bytes else data
    total, n = 0.0, 0
    for start in range(0, len(data), t):
        y = torch.from_numpy(data[start : start + t].astype(np.int64))[None]
        x = torch.cat([torch.tensor([[BOS]]), y[:, :-1]], dim=1)
        h, _ = model.hidden_states(x)
        total += float(linear_cross_entropy(h[0], model.wte.weight, y[0], reduction="sum"))
        n += y.numel()
    model.train(was)
    return total / n / math.log(2)


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def warm_start(model_dir: Path) -> dict[str, Any]:
    """A checkpoint from an exported model directory (``--export``'s ``config.json``,
    ``model.safetensors``, ``training.json``): the weights, step, tokens, time, schedule and run
    arguments; no AdamW moments (``"optimizer": None``) and the RNG seeded from (seed, step). A checkpoint
    is a session's file and may be lost; the exported model is committed, so training can always go on
    from it (with ``--restart-lr``: a new warm-up lets the fresh moments settle)."""
    model = ByteGPT.load(model_dir)
    card = json.loads((model_dir / "training.json").read_text())
    torch.manual_seed(card["args"]["seed"] * 1_000_003 + card["step"])
    return {"config": asdict(model.config), "model": model.state_dict(), "optimizer": None,
            "schedule": card["schedule"], "args": card["args"], "step": card["step"],
            "tokens": card["tokens"], "seconds": card["hours"] * 3600, "rng": torch.get_rng_state(),
            "last_eval": card.get("last_eval_bits_per_byte")}


def export(run: Path, out: Path) -> None:
    ck = torch.load(run / CHECKPOINT, weights_only=False)
    model = ByteGPT(ByteGPTConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    model.save(out, metadata={"name": out.name, "step": str(ck["step"])})
    summary = ck["args"]["corpus"]
    card = {
        "step": ck["step"], "tokens": ck["tokens"], "hours": round(ck["seconds"] / 3600, 2),
        "parameters": model.num_parameters(), "schedule": ck["schedule"], "args": ck["args"],
        "last_eval_bits_per_byte": ck.get("last_eval"),
        "corpus_summary": json.loads((Path(summary) / "summary.json").read_text())
        if (Path(summary) / "summary.json").exists() else None,
    }
    (out / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    manifest = Path(summary) / "manifest.json"
    if manifest.exists():
        packages = json.loads(manifest.read_text())["packages"]
        (out / "sources.json").write_text(json.dumps(packages, indent=1) + "\n")
        (out / "README.md").write_text(model_card(out.name, model, ck, card, packages))
    print(f"exported step {ck['step']} ({ck['tokens']} tokens) to {out}")


def model_card(name: str, model: ByteGPT, ck: dict[str, Any], card: dict[str, Any],
               packages: dict[str, Any]) -> str:
    """A model card (README.md) from the checkpoint and the corpus manifest: shape, training, the corpus
    per kind, and every source package with version, licence and bytes (also in sources.json)."""
    cfg = model.config
    kinds = card["corpus_summary"] or {}
    rows = [f"| {k} | {v.get('train', 0):,} | {v.get('heldout', 0):,} | {v.get('eval', 0):,} | "
            f"{v.get('documents', 0):,} |"
            for k, v in kinds.items() if isinstance(v, dict) and "documents" in v]
    top = sorted(packages.items(), key=lambda kv: -sum(kv[1]["bytes"].values()))
    pkg_rows = [f"| {n} | {e['version']} | {str(e['licence'])[:70]} | {e['bytes'].get('train', 0):,} | "
                f"{e['bytes'].get('heldout', 0):,} | {e['bytes'].get('eval', 0):,} |" for n, e in top]
    sched = ck["schedule"]
    segments = [*sched.get("history", []), sched]
    plan = "; then ".join(
        (f"a warm restart at step {g['start']:,}: " if g.get("start") else "")
        + f"warm-up {g['warmup']}, cosine from lr {g['lr']:g} to {g['min_ratio']:g}x at step {g['total']:,}"
        + (f" (stopped at step {g['end']:,})" if "end" in g else "")
        for g in segments
    )
    hours = ck["seconds"] / 3600
    mlp, cmd = 4 * cfg.n_embd, ck["args"]["command"]
    modes = ck["args"].get("logits", [{"from_step": 0, "mode": "exact"}])
    logits = ", then ".join(f"{'exact fp32' if m['mode'] == 'exact' else 'rounded to bf16'} from step "
                            f"{m['from_step']:,}" for m in modes)
    return f"""# Model card: {name}

- **What**: a byte-level causal transformer (`entropykit/models/bytegpt.py`): vocabulary 256 bytes + BOS,
  context {cfg.block_size}, {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, MLP {mlp},
  positions `{cfg.positions}` (rotary, base {cfg.rope_base:g}: scoring can slide its KV cache, `score(...,
  slide=True)`), head tied to the embedding; {model.num_parameters():,} parameters, fp32 safetensors.
- **Training**: `scripts/train_model.py` (loss: `entropykit.ops.linear_cross_entropy`, bf16 autocast where
  the CPU has it; logits {logits}), step {ck['step']:,}; schedule: {plan}; {ck['tokens']:,} tokens,
  {hours:.1f} h of training time; batch {ck['args']['batch_size']} x {cfg.block_size} bytes. Command: `{cmd}`.
- **Corpus**: `scripts/build_corpus.py general` from the Debian and PyPI packages of the build machine
  (bytes per kind below; held out by SHA-256 of kind and path, about 10% per kind; `eval` = kept out of
  training entirely: git, dpkg and Node.js documentation and changelogs, and the GNU licence texts).
  Evaluation: `python benchmarks/heldout.py --new <this directory>` (RESULTS.md, `heldout_general`).

| kind | train bytes | held-out bytes | eval-only bytes found | documents |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

## Sources ({len(packages)} packages; `sources.json` has the same list)

| package | version | licence | train bytes | held-out bytes | eval-only bytes |
|---|---|---|---:|---:|---:|
{chr(10).join(pkg_rows)}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus/general"))
    ap.add_argument("--run", type=Path, required=True, help="run directory: checkpoint.pt, train.log")
    ap.add_argument("--export", type=Path, help="write RUN's checkpoint as a model directory and exit")
    ap.add_argument("--positions", choices=("learned", "rope"), default="rope")
    ap.add_argument("--n-layer", type=int, default=8)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--block-size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--total-steps", type=int, default=16000, help="length of the LR schedule")
    ap.add_argument("--retarget-steps", type=int, help="on resume: set a new --total-steps")
    ap.add_argument("--restart-lr", type=float,
                    help="on resume: warm restart, a new --warmup + cosine segment from the current step to "
                         "--retarget-steps peaking at this rate (the old schedule kept in 'history')")
    ap.add_argument("--init-from", type=Path,
                    help="with no RUN/checkpoint.pt: start from an exported model directory (its weights, "
                         "step and schedule history; fresh AdamW moments); needs --restart-lr")
    ap.add_argument("--max-steps", type=int, help="stop (checkpointed) after this step (default: total)")
    ap.add_argument("--checkpoint-minutes", type=float, default=4.0)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-bytes", type=int, default=16384)
    ap.add_argument("--precision", choices=("auto", "float32"), default="auto")
    ap.add_argument("--logits", choices=("bf16", "exact"), default="bf16",
                    help="under bf16 autocast: the loss head's logits rounded to bf16 as autocast's F.linear "
                         "does (default), or exact fp32 logits of the bf16 products")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.export:
        export(args.run, args.export)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    args.run.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.run / CHECKPOINT
    log_path = args.run / "train.log"

    def log(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {msg}"
        print(line, flush=True)
        with log_path.open("a") as f:
            f.write(line + "\n")

    if not ckpt_path.exists() and args.init_from:
        if not args.restart_lr:
            raise SystemExit("--init-from starts fresh AdamW moments: give --restart-lr (and --warmup)")
        save_atomic(warm_start(args.init_from), ckpt_path)
        log(f"warm start from {args.init_from}: its weights, step and schedule; AdamW moments from zero")
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        cfg = ByteGPTConfig(**ck["config"])
        model = ByteGPT(cfg)
        model.load_state_dict(ck["model"])
        schedule = ck["schedule"]
        if args.restart_lr:  # a warm restart: a new warm-up + cosine segment from this step
            if not args.retarget_steps or args.retarget_steps <= ck["step"]:
                raise SystemExit(f"--restart-lr needs --retarget-steps > the checkpoint's step {ck['step']}")
            history = [*schedule.pop("history", []), dict(schedule, end=ck["step"])]
            schedule = {"lr": args.restart_lr, "warmup": args.warmup, "total": args.retarget_steps,
                        "min_ratio": schedule["min_ratio"], "start": ck["step"], "history": history}
        elif args.retarget_steps:
            schedule["total"] = args.retarget_steps
        run_args = ck["args"]
        step, tokens, seconds = ck["step"], ck["tokens"], ck["seconds"]
        torch.set_rng_state(ck["rng"])
        log(f"resumed {ckpt_path} at step {step} ({tokens} tokens, {seconds / 3600:.2f} h)")
    else:
        cfg = ByteGPTConfig(args.block_size, args.n_layer, args.n_head, args.n_embd, positions=args.positions)
        torch.manual_seed(args.seed)
        model = ByteGPT(cfg)
        schedule = {"lr": args.lr, "warmup": args.warmup, "total": args.total_steps,
                    "min_ratio": args.min_lr_ratio}
        run_args = {"corpus": str(args.corpus), "batch_size": args.batch_size, "seed": args.seed,
                    "command": " ".join(sys.argv), "logits": []}
        step, tokens, seconds = 0, 0, 0.0
        ck = None
        log(f"new run: {asdict(cfg)}, {model.num_parameters()} parameters, schedule {schedule}")
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
    other = [p for n, p in model.named_parameters() if p.dim() < 2 or "wpe" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
        lr=schedule["lr"], betas=(0.9, 0.95),
    )
    if ck is not None:
        if ck["optimizer"] is not None:  # None: a warm start from exported weights (--init-from)
            opt.load_state_dict(ck["optimizer"])
        last_eval = ck.get("last_eval")
    else:
        last_eval = None
    corpus = Path(run_args["corpus"])
    if not (corpus / "train.bin").exists() and (args.run / "corpus" / "train.bin").exists():
        corpus = args.run / "corpus"  # the run's own copy (the corpus directory may not outlive a session)
    if not (corpus / "train.bin").exists():
        raise SystemExit(f"{corpus}/train.bin is missing: rebuild it with `python scripts/build_corpus.py "
                         f"general --out {corpus}` (deterministic on the same packages) or copy RUN/corpus")
    train = np.fromfile(corpus / "train.bin", dtype=np.uint8)
    digest = hashlib.sha256(train.tobytes()).hexdigest()
    if run_args.setdefault("train_sha256", digest) != digest:
        log(f"WARNING: {corpus}/train.bin differs from the one this run started with "
            f"({run_args['train_sha256'][:12]} vs {digest[:12]}): the data position means other windows now")
    heldout = heldout_sets(corpus)
    bf16 = args.precision == "auto" and native_bf16()
    # the loss's logits per training segment (runs begun before this option: exact logits throughout)
    logits_modes = run_args.setdefault("logits", [{"from_step": 0, "mode": "exact"}])
    mode = args.logits if bf16 else "exact"  # without autocast the logits are fp32 either way
    if not logits_modes or logits_modes[-1]["mode"] != mode:
        logits_modes.append({"from_step": step, "mode": mode})
    b, t, seed = run_args["batch_size"], cfg.block_size, run_args["seed"]
    max_steps = args.max_steps or schedule["total"]
    log(f"train.bin {len(train)} bytes, bf16 autocast {bf16} (logits {mode}), "
        f"threads {torch.get_num_threads()}, "
        f"steps {step}..{max_steps}")

    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def checkpoint() -> None:
        save_atomic({"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "schedule": schedule, "args": run_args, "step": step, "tokens": tokens,
                     "seconds": seconds, "rng": torch.get_rng_state(), "last_eval": last_eval}, ckpt_path)

    last_ck = time.time()
    window_t, window_loss, window_n = time.time(), 0.0, 0
    while step < max_steps and not stop["now"]:
        t0 = time.time()
        start = schedule.get("start", 0)  # the step a warm-restart segment began at (0: none)
        lr = lr_at(step - start, lr=schedule["lr"], warmup=schedule["warmup"],
                   total=schedule["total"] - start, min_ratio=schedule["min_ratio"])
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batch(train, t, b, seed, step)
        loss = loss_fn(model, x, y, bf16, args.logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += x.numel()
        seconds += time.time() - t0
        window_loss += float(loss.detach())
        window_n += 1
        if step % args.log_every == 0:
            rate = window_n * x.numel() / (time.time() - window_t)
            log(f"step {step} lr={lr:.2e} loss={window_loss / window_n / math.log(2):.4f} bits "
                f"{rate:.0f} tok/s")
            window_t, window_loss, window_n = time.time(), 0.0, 0
        if step % args.eval_every == 0:
            t_eval = time.time()
            last_eval = {k: round(heldout_bits_per_byte(model, v, args.eval_bytes), 4)
                         for k, v in heldout.items()}
            mean = sum(last_eval.values()) / len(last_eval)
            log(f"eval step {step}: mean {mean:.4f} bits/byte {last_eval} ({time.time() - t_eval:.0f}s)")
            window_t = time.time()
        if time.time() - last_ck > args.checkpoint_minutes * 60:
            checkpoint()
            last_ck = time.time()
    checkpoint()
    log(f"checkpoint at step {step} ({tokens} tokens, {seconds / 3600:.2f} h); "
        f"{'stopped by signal' if stop['now'] else 'reached step ' + str(max_steps)}")


if __name__ == "__main__":
    main()
