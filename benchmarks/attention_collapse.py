"""The proof for monitors and regularisers: attention entropy collapse at a too-high learning rate,
and what sigmaReparam and an entropy floor do about it.

    python benchmarks/attention_collapse.py                 # 3 seeds x 3 variants, records RESULTS.md
    python benchmarks/attention_collapse.py --quick         # a smoke run, nothing recorded

A small ByteGPT (4 layers, 128 wide, 4 heads, context 128) is trained on the bundled corpus sample
(data/corpus/train-sample.bin) with Adam at a learning rate far above the stable one and no warm-up
(Zhai et al. 2023 show entropy collapse as the failure mode of exactly this), three ways:

- ``baseline``: plain training;
- ``sigma_reparam``: every linear layer under sigmaReparam (``losses.regularizers.sigma_reparam``);
- ``entropy_floor``: the loss plus ``0.1 * attention_entropy_penalty(H, floor=1.0)`` on the per-head
  attention entropies the monitor records with ``differentiable=True``.

Every run is watched by ``monitors.attach`` (every 10 steps). Reported per variant over 3 seeds: the
final training loss, loss spikes (steps whose loss exceeds 1.5x the running minimum after step 50),
the lowest per-head attention entropy at the end, and a PNG of loss and minimum-head-entropy curves.
Each finished run is cached as JSON under ``.cache/attention_collapse`` so an interrupted run resumes.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, record
from entropykit.losses.regularizers import attention_entropy_penalty, sigma_reparam
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig
from entropykit.monitors import attach

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "attention_collapse"
VARIANTS = ("baseline", "sigma_reparam", "entropy_floor")


def run(variant: str, seed: int, steps: int, lr: float, data: np.ndarray) -> dict[str, list[float]]:
    torch.manual_seed(seed)
    model = ByteGPT(ByteGPTConfig(block_size=128, n_layer=4, n_head=4, n_embd=128)).train()
    if variant == "sigma_reparam":
        sigma_reparam(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1000 + seed)
    losses: list[float] = []
    min_entropy: list[float] = []
    entropy_steps: list[float] = []
    with attach(model, every=1 if variant == "entropy_floor" else 10,
                differentiable=variant == "entropy_floor") as mon:
        for step in range(steps):
            ix = torch.randint(0, len(data) - 128, (16,), generator=g).tolist()
            y = torch.from_numpy(np.stack([data[i : i + 128] for i in ix]).astype(np.int64))
            x = torch.cat([torch.full((16, 1), BOS), y[:, :-1]], dim=1)
            logits, _ = model(x)
            loss = F.cross_entropy(logits.reshape(-1, 257), y.reshape(-1))
            total = loss
            if variant == "entropy_floor":
                total = loss + 0.1 * attention_entropy_penalty(mon.entropies(), floor=1.0)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses.append(loss.item() if math.isfinite(loss.item()) else float("nan"))
            if step % 10 == 0 and mon.history:
                last = mon.history[-1]
                min_entropy.append(min(float(v.min()) for v in last.values()))
                entropy_steps.append(step)
    return {"loss": losses, "min_entropy": min_entropy, "entropy_steps": entropy_steps}


def spikes(loss: list[float]) -> int:
    best, n = math.inf, 0
    for i, v in enumerate(loss):
        if not math.isfinite(v):
            n += 1
            continue
        if i >= 50 and v > 1.5 * best:
            n += 1
        best = min(best, v)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    steps, seeds = (30, 1) if args.quick else (args.steps, args.seeds)
    data = np.frombuffer((ROOT / "data/corpus/train-sample.bin").read_bytes(), dtype=np.uint8)
    CACHE.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, list[float]]]] = {v: [] for v in VARIANTS}
    t0 = time.perf_counter()
    for variant in VARIANTS:
        for seed in range(seeds):
            path = CACHE / f"{variant}-s{seed}-n{steps}-lr{args.lr:g}.json"
            if path.exists() and not args.quick:
                results[variant].append(json.loads(path.read_text()))
                continue
            out = run(variant, seed, steps, args.lr, data)
            if not args.quick:
                path.write_text(json.dumps(out))
            results[variant].append(out)
            print(f"{variant} seed {seed}: final loss {out['loss'][-1]:.3f}, "
                  f"min head entropy {out['min_entropy'][-1]:.3f} ({time.perf_counter() - t0:.0f} s)")
    rows = []
    for variant, runs in results.items():
        final = [float(np.nanmean(r["loss"][-20:])) for r in runs]
        ent = [r["min_entropy"][-1] for r in runs]
        rows.append([variant, f"{np.mean(final):.3f} ({', '.join(f'{x:.2f}' for x in final)})",
                     ", ".join(str(spikes(r["loss"])) for r in runs),
                     f"{np.mean(ent):.3f} ({', '.join(f'{x:.2f}' for x in ent)})"])
    table = markdown_table(["variant", "final loss, nats (per seed)", "loss spikes per seed",
                            "lowest head entropy at the end, nats (per seed)"], rows)
    png = ROOT / "benchmarks" / "figures" / "attention_collapse.png"
    if not args.quick:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for color, (variant, runs) in zip(("tab:red", "tab:blue", "tab:green"), results.items()):
            for i, r in enumerate(runs):
                axes[0].plot(r["loss"], color=color, alpha=0.6, lw=0.8, label=variant if i == 0 else None)
                axes[1].plot(r["entropy_steps"], r["min_entropy"], color=color, alpha=0.7,
                             label=variant if i == 0 else None)
        axes[0].set(xlabel="step", ylabel="training loss (nats/byte)",
                    title=f"Adam, lr {args.lr:g}, no warm-up")
        axes[1].set(xlabel="step", ylabel="lowest per-head attention entropy (nats)",
                    title="attention entropy (monitors.attach)")
        for ax in axes:
            ax.legend()
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=100)
        plt.close(fig)
    body = (
        f"ByteGPT 4 x 128 (4 heads, context 128), batch 16, {steps} steps of Adam at lr {args.lr:g} "
        f"without warm-up, {seeds} seeds; entropy floor: 0.1 x relu(1.0 - H)^2 per head.\n\n{table}\n\n"
        f"Curves: `benchmarks/figures/attention_collapse.png`. Wall time {time.perf_counter() - t0:.0f} s."
    )
    print(body)
    if not args.quick:
        record("attention_collapse", "Attention entropy collapse and its cures (monitors, regularizers)",
               f"python benchmarks/attention_collapse.py --steps {steps} --lr {args.lr:g}", body)


if __name__ == "__main__":
    main()
