"""Train a ByteGPT on the corpus built by scripts/build_corpus.py and write it as a bundled model.

    python scripts/train_model.py --corpus data/corpus --out src/entropykit/lm/models/bytegpt-6l \
        --n-layer 6 --n-embd 256 --n-head 8 --block-size 512 --minutes 75 --seed 1234

Training: random windows of the train split, each input starting with BOS; AdamW (0.9, 0.95),
weight decay 0.1, gradient clip 1.0, bfloat16 autocast (fp32 master weights), learning rate with a
linear warm-up and a cosine decay over the *time* budget (so a budget always ends annealed; the
number of steps reached is recorded in the model card). Held-out bits/byte is measured at the end
on every byte of the held-out split with non-overlapping windows (a pessimistic figure: the first
bytes of each window see little context).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig


def batch(data: np.ndarray, t: int, b: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ix = torch.randint(0, len(data) - t, (b,), generator=g).tolist()
    y = torch.from_numpy(np.stack([data[i : i + t] for i in ix]).astype(np.int64))
    x = torch.cat([torch.full((b, 1), BOS), y[:, :-1]], dim=1)
    return x, y


@torch.no_grad()
def heldout_bits_per_byte(model: ByteGPT, data: np.ndarray, max_bytes: int | None = None) -> float:
    model.eval()
    t = model.config.block_size
    data = data[:max_bytes] if max_bytes else data
    total, n = 0.0, 0
    for start in range(0, len(data), t * 16):
        chunk = data[start : start + t * 16]
        rows = [chunk[i : i + t] for i in range(0, len(chunk), t)]
        for row in rows:
            y = torch.from_numpy(row.astype(np.int64))[None]
            x = torch.cat([torch.tensor([[BOS]]), y[:, :-1]], dim=1)
            logits, _ = model(x)
            total += F.cross_entropy(logits[0].float(), y[0], reduction="sum").item()
            n += y.numel()
    model.train()
    return total / n / math.log(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--block-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=75.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--init", type=Path, help="start from the weights in this model directory (same shape)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    train = np.fromfile(args.corpus / "train.bin", dtype=np.uint8)
    heldout = np.fromfile(args.corpus / "heldout.bin", dtype=np.uint8)
    cfg = ByteGPTConfig(args.block_size, args.n_layer, args.n_head, args.n_embd)
    model = ByteGPT.load(args.init).train() if args.init else ByteGPT(cfg)
    if model.config != cfg:
        raise SystemExit(f"--init model config {model.config} differs from the requested {cfg}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
    other = [p for n, p in model.named_parameters() if p.dim() < 2 or "wpe" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )
    budget = args.minutes * 60.0
    t0 = time.time()
    step, tokens = 0, 0
    log = args.out.with_suffix(".log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        frac = (time.time() - t0) / budget
        if frac >= 1.0:
            break
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * cosine
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batch(train, args.block_size, args.batch_size, g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += x.numel()
        if step % 50 == 0:
            bits = loss.item() / math.log(2)
            msg = f"step {step} t={time.time() - t0:.0f}s lr={lr:.2e} loss={bits:.3f} bits"
            if step % 500 == 0:
                msg += f" heldout~{heldout_bits_per_byte(model, heldout, 65536):.3f}"
            print(msg, flush=True)
            with log.open("a") as f:
                f.write(msg + "\n")
    minutes = (time.time() - t0) / 60
    bpb = heldout_bits_per_byte(model, heldout)
    print(f"done: {step} steps, {tokens} tokens, {minutes:.1f} min, held-out {bpb:.4f} bits/byte")
    model.save(args.out, metadata={"name": args.out.name})
    card = {
        "steps": step, "tokens": tokens, "minutes": round(minutes, 1), "seed": args.seed,
        "heldout_bits_per_byte_nonoverlapping": round(bpb, 4), "parameters": model.num_parameters(),
        "command": " ".join(sys.argv), "lr": args.lr, "batch_size": args.batch_size,
    }
    (args.out / "training.json").write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
