"""Scaling-law fit on a series of ByteGPTs trained here, and their log-likelihood model map.

1. Synthetic recovery: L = E + A x^-alpha with 0.5% log-normal noise at 8 sizes, fitted 20 times;
   the median relative error of E and alpha.
2. A series of ByteGPTs at 5 sizes, each trained for the same number of tokens on the bundled corpus
   sample (``data/corpus/train-sample.bin``, 512 KB), held-out loss (bits/byte) on
   ``data/corpus/heldout.bin``. ``fit_power_law`` on the 4 smallest (x = parameters) predicts the
   largest model's loss with a bootstrap interval; we report the miss.
3. The model map (``lm.loglik_vectors``) of the 5 models and the two bundled ones on held-out probe
   passages: estimated KL of each to the largest trained model, and nearest neighbours.

    python benchmarks/scaling.py            # ~3-6 min on 2 shared cores
    python benchmarks/scaling.py --quick    # fewer steps
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch
import torch.nn.functional as F

from _common import markdown_table, record
from entropykit.lm import ByteModel, load_model
from entropykit.lm.loglik_vectors import model_map
from entropykit.lm.scaling import fit_power_law
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(1, 32, 2), (2, 48, 2), (2, 64, 4), (3, 96, 4), (4, 128, 4)]  # (layers, width, heads)
CTX, BATCH = 128, 16
FIGURE = ROOT / "benchmarks" / "figures" / "scaling_fit.png"


def synthetic(reps: int = 20) -> tuple[float, float, float]:
    errs_e, errs_a, cover = [], [], 0
    for s in range(reps):
        rng = np.random.default_rng(s)
        x = np.geomspace(1e5, 1e9, 8)
        y = (1.7 + 400 * x**-0.34) * np.exp(rng.normal(0, 0.005, x.size))
        f = fit_power_law(x, y, bootstrap=100, seed=s)
        errs_e.append(abs(f.params["E"] / 1.7 - 1))
        errs_a.append(abs(f.params["alpha"] / 0.34 - 1))
        lo, hi = f.intervals["E"]
        cover += lo <= 1.7 <= hi
    return float(np.median(errs_e)), float(np.median(errs_a)), cover / reps


def train(layers: int, width: int, heads: int, steps: int, data: torch.Tensor, seed: int = 0) -> ByteGPT:
    torch.manual_seed(seed)
    model = ByteGPT(ByteGPTConfig(block_size=CTX + 1, n_layer=layers, n_head=heads, n_embd=width))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.01)
    warm = steps // 10
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    bos = torch.full((BATCH, 1), BOS, dtype=torch.long)
    for _ in range(steps):
        i = torch.randint(0, data.numel() - CTX, (BATCH,), generator=g)
        x = torch.stack([data[j:j + CTX] for j in i.tolist()])
        inp = torch.cat([bos, x[:, :-1]], 1)
        logits, _ = model(inp)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def heldout_bpb(model: ByteGPT, data: torch.Tensor) -> float:
    n = (data.numel() // CTX) * CTX
    x = data[:n].view(-1, CTX)
    total = 0.0
    for b in range(0, x.shape[0], 64):
        xb = x[b:b + 64]
        inp = torch.cat([torch.full((xb.shape[0], 1), BOS, dtype=torch.long), xb[:, :-1]], 1)
        logits, _ = model(inp)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), xb.reshape(-1),
                                 reduction="sum").item()
    return total / n / math.log(2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    steps = args.steps or (100 if args.quick else 300)
    t0 = time.perf_counter()
    e_err, a_err, cover = synthetic(5 if args.quick else 20)
    print(f"synthetic: median |E err| {e_err:.4f}, |alpha err| {a_err:.4f}, E interval coverage {cover:.2f}")

    corpus = ROOT / "data" / "corpus"
    raw = (corpus / "train-sample.bin").read_bytes()
    train_data = torch.tensor(np.frombuffer(raw, np.uint8).astype(np.int64))
    held = (corpus / "heldout.bin").read_bytes()
    held_t = torch.tensor(np.frombuffer(held[:65536], np.uint8).astype(np.int64))
    rows, params, losses, models = [], [], [], []
    for layers, width, heads in SIZES:
        t = time.perf_counter()
        m = train(layers, width, heads, steps, train_data)
        n_par = sum(p.numel() for p in m.parameters())
        bpb = heldout_bpb(m, held_t)
        params.append(n_par)
        losses.append(bpb)
        models.append(ByteModel(m, name=f"L{layers}W{width}"))
        rows.append([f"L{layers}W{width}", f"{n_par:,}", f"{steps * BATCH * CTX:,}", f"{bpb:.4f}",
                     f"{time.perf_counter() - t:.0f}"])
        print(rows[-1], flush=True)
    x, y = np.array(params, float), np.array(losses)
    fit = fit_power_law(x[:-1], y[:-1], bootstrap=500, seed=0)
    lo, hi = fit.predict_interval(x[-1])
    pred = float(fit.predict(x[-1])[0])
    inside = bool(lo[0] <= y[-1] <= hi[0])
    FIGURE.parent.mkdir(exist_ok=True)
    fit.plot_png(FIGURE, extrapolate_to=float(x[-1]) * 2)

    # the model map: 5 trained + 2 bundled models on held-out probe passages
    probes = [held[a:a + 256] for a in range(100_000, 100_000 + 60 * 1000, 1000)]
    mm = model_map([*models, load_model("bytegpt-small"), load_model("bytegpt-6l")], probes)
    big = mm.names.index(models[-1].name)
    kl_rows = [[n, f"{mm.kl[big, i]:.2f} ± {mm.kl_se[big, i]:.2f}", mm.nearest(n, 1)[0][0]]
               for i, n in enumerate(mm.names)]
    monotone = all(mm.kl[big, i] >= mm.kl[big, i + 1] for i in range(len(models) - 1))
    elapsed = time.perf_counter() - t0

    p = fit.params
    body = (
        f"**Synthetic recovery** (L = 1.7 + 400 x^-0.34, 8 sizes 1e5..1e9, 0.5% noise, "
        f"{5 if args.quick else 20} fits): median relative error of E {e_err:.2%}, of alpha {a_err:.2%} "
        f"(goal <= 5%); the 95% bootstrap interval of E covered the truth in {cover:.0%} of fits.\n\n"
        f"**Trained series**: ByteGPT, context {CTX}, batch {BATCH}, {steps} AdamW steps each (cosine, "
        f"warm-up {steps // 10}) on `data/corpus/train-sample.bin`; held-out bits/byte on the first 64 KB "
        f"of `data/corpus/heldout.bin`.\n\n"
        + markdown_table(["model", "parameters", "tokens", "held-out bits/byte", "train s"], rows)
        + f"\n\nFit on the 4 smallest: E = {p['E']:.3f}, A = {p['A']:.3g}, alpha = {p['alpha']:.3f} "
        f"(95% intervals: E {fit.intervals['E'][0]:.3f}..{fit.intervals['E'][1]:.3f}, alpha "
        f"{fit.intervals['alpha'][0]:.3f}..{fit.intervals['alpha'][1]:.3f}). Predicted loss of the largest "
        f"({params[-1]:,} parameters): {pred:.4f} bits/byte, 95% interval {lo[0]:.4f}..{hi[0]:.4f}; "
        f"measured {y[-1]:.4f}: error {pred - y[-1]:+.4f} ({(pred - y[-1]) / y[-1]:+.1%}), "
        f"{'inside' if inside else 'outside'} the interval. Figure: `benchmarks/figures/scaling_fit.png`.\n\n"
        f"**Model map** ({len(probes)} held-out probe passages of 256 bytes): estimated KL (nats per "
        f"passage, ± s.e.) of each model to the largest trained one, and its nearest neighbour. KL to the "
        f"largest falls monotonically with size across the trained series: {monotone}.\n\n"
        + markdown_table(["model", f"KL to {models[-1].name}", "nearest"], kl_rows)
        + f"\n\nWall time {elapsed:.0f} s; load average at the end {os.getloadavg()[0]:.1f} "
        "(shared machine).\n"
    )
    print(body)
    record("scaling", "Scaling-law fit and model map of trained ByteGPTs (lm.scaling, lm.loglik_vectors)",
           "python benchmarks/scaling.py" + (" --quick" if args.quick else ""), body)


if __name__ == "__main__":
    main()
