"""Train a small byte-level causal LM with the fused ``LinearCrossEntropy`` head (no logits tensor).

The model is the bundled ByteGPT architecture (tokens = bytes) at a tiny size; its output head is
tied to the token embedding, so the loss module is built without weights of its own and receives
``model.wte.weight`` per call. ``shift=True`` scores position t against byte t+1. Runs in well under
two minutes on 2 CPU cores.

    python examples/train_linear_ce.py                # 300 steps
    python examples/train_linear_ce.py --steps 50 --batch 16 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from entropykit.losses import LinearCrossEntropy  # noqa: E402
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "corpus" / "train-sample.bin"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest for this tiny model, and robust on a busy machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = torch.from_numpy(np.fromfile(args.data, dtype=np.uint8).astype(np.int64))
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # model initialisation (an example script, not the library)
    model = ByteGPT(ByteGPTConfig(block_size=args.context, n_layer=2, n_head=4, n_embd=128))
    head = LinearCrossEntropy(shift=True)  # tied head: weight passed per call
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)

    def batch() -> torch.Tensor:
        start = torch.randint(0, len(data) - args.context, (args.batch,), generator=gen)
        return torch.stack([data[s: s + args.context] for s in start.tolist()])

    print(f"ByteGPT {model.num_parameters() / 1e6:.2f} M params, {len(data)} training bytes, "
          f"batch {args.batch} x {args.context}")
    t0 = time.time()
    running = None
    for step in range(1, args.steps + 1):
        idx = batch()
        hidden, _ = model.hidden_states(idx)
        loss = head(hidden, idx, weight=model.wte.weight)  # mean nats per predicted byte
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step == 1 or step % 25 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f} nats  ({running / np.log(2):.3f} bits/byte, "
                  f"smoothed)  {time.time() - t0:5.1f} s", flush=True)

    # the fused loss equals the textbook one on materialised logits
    model.eval()
    with torch.no_grad():
        idx = batch()
        hidden, _ = model.hidden_states(idx)
        fused = head(hidden, idx, weight=model.wte.weight).item()
        logits = F.linear(hidden, model.wte.weight)
        naive = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1)).item()
    print(f"check: fused {fused:.6f} vs naive {naive:.6f} nats  (|diff| = {abs(fused - naive):.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
