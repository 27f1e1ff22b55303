"""Entropy collapse and its controls, end to end, on a verifiable bandit task (CPU, minutes).

Task: P prompts, V answers each, C of them correct (reward 1, else 0). The policy is a table of logits
(P x V, from zero: uniform). Each step samples a group of G answers per prompt, computes GRPO
advantages, and takes E PPO epochs (Adam) on that batch with the method's loss. Each response is one
token, so the per-token entropy is the policy's entropy at the prompt. Plain GRPO sharpens onto
whichever correct answer got lucky early and keeps ~1 of C: entropy collapse. The controls should keep
more correct answers alive (entropy near log C) without losing pass@1.

Reported per method (mean +- std over seeds): final entropy (nats, mean over prompts), pass@1 (mean
probability of a correct answer), pass@k (1 - (1 - pass@1)^k per prompt, averaged), "kept" = correct
answers with probability >= 0.05 per prompt (of C), and the R = -a e^H + b fit over GRPO's run.

    python benchmarks/rl_entropy.py            # 3 seeds, all methods (~4-7 min, shared 2-core machine)
    python benchmarks/rl_entropy.py --quick    # 1 seed, fewer steps
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

import torch

from _common import markdown_table, record
from entropykit import rl

P, V, C, G = 16, 64, 4, 16
EPOCHS, LR, CLIP = 4, 0.05, 0.2
TARGET = 1.0  # nats; uniform over the 4 correct answers would be log 4 = 1.386
KEEP_P = 0.05


def make_task(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(10_000 + seed)
    correct = torch.zeros(P, V, dtype=torch.bool)
    for p in range(P):
        correct[p, torch.randperm(V, generator=g)[:C]] = True
    return correct


class Run:
    """Per-method state: the controllers that live across steps."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.adaptive = rl.AdaptiveEntropyCoef(coef=0.0, target=TARGET, delta=0.005)
        self.pic = rl.EntroPIC(target=TARGET, kp=1.0, ki=0.05, limit=0.9)
        self.alpha = 0.0

    def loss(self, old: torch.Tensor, lp: torch.Tensor, ent: torch.Tensor, adv: torch.Tensor,
             mask: torch.Tensor, sel: torch.Tensor | None) -> torch.Tensor:
        m = self.method
        if m == "grpo":
            return rl.ppo_loss(old, lp, adv, mask, clip_ratio=CLIP)[0]
        if m == "bonus":
            return rl.ppo_loss(old, lp, adv, mask, clip_ratio=CLIP)[0] + rl.entropy_bonus(ent, mask, 0.05)
        if m == "adaptive":
            loss = rl.ppo_loss(old, lp, adv, mask, clip_ratio=CLIP)[0]
            return loss + rl.entropy_bonus(ent, mask, self.adaptive.applied)
        if m == "clip_cov":
            return rl.clip_cov_loss(old, lp, adv, mask, clip_ratio=CLIP, selected=sel)[0]
        if m == "kl_cov":
            return rl.kl_cov_loss(old, lp, adv, mask, selected=sel, ppo_kl_coef=1.0)[0]
        if m == "kl_cov_cov":
            return rl.kl_cov_loss(old, lp, adv, mask, selected=sel, ppo_kl_coef=1.0, penalty="cov")[0]
        if m == "mask_80_20":
            keep = rl.high_entropy_mask(ent.detach(), mask, 0.2)
            return rl.ppo_loss(old, lp, adv, mask, clip_ratio=CLIP, weights=keep.double())[0]
        if m in ("qae", "grpo_qae"):
            return rl.ppo_loss(old, lp, adv, mask, clip_ratio=CLIP)[0]
        if m == "entropic":
            w = rl.entropic_weights(adv, self.alpha)
            return rl.ppo_loss(old, lp, adv, mask, clip_ratio=CLIP, weights=w)[0]
        raise ValueError(m)

    def after_step(self, entropy: float) -> None:
        self.adaptive.update(entropy)
        self.alpha = self.pic.update(entropy)


SEL_RATIO = {"clip_cov": 0.02, "kl_cov": 0.02, "kl_cov_cov": 0.02}


def train(method: str, seed: int, steps: int) -> dict[str, object]:
    correct = make_task(seed)
    gen = torch.Generator().manual_seed(seed)
    theta = torch.zeros(P, V, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=LR)
    run = Run(method)
    curve_h, curve_r = [], []
    rows = torch.arange(P).repeat_interleave(G)
    for _ in range(steps):
        with torch.no_grad():
            probs = torch.softmax(theta, -1)
            acts = torch.multinomial(probs, G, replacement=True, generator=gen)  # (P, G)
            reward = correct.gather(1, acts).double().reshape(-1)
            old = torch.log(probs).gather(1, acts).reshape(-1, 1)
            h_now = float(-(probs * torch.log(probs)).sum(-1).mean())
        if method == "qae":
            adv = rl.qae_advantages(reward, G, k=0.4)
        else:
            adv = rl.grpo_advantages(reward, G)
        adv = adv[:, None]
        mask = torch.ones(P * G, 1, dtype=torch.bool)
        sel = None
        if method in SEL_RATIO:
            mode = "band" if method == "clip_cov" else "top"
            sel = rl.cov_selection(old, adv, mask, mode=mode, ratio=SEL_RATIO[method], generator=gen)
        for _ in range(EPOCHS):
            logp = torch.log_softmax(theta, -1)
            lp = logp[rows, acts.reshape(-1)][:, None]
            ent = (-(logp.exp() * logp).sum(-1))[rows][:, None]
            loss = run.loss(old, lp, ent, adv, mask, sel)
            opt.zero_grad()
            loss.backward()
            opt.step()
        run.after_step(h_now)
        curve_h.append(h_now)
        curve_r.append(float(reward.mean()))
    with torch.no_grad():
        probs = torch.softmax(theta, -1)
        p_ok = (probs * correct).sum(-1)
        ent = float(-(probs * torch.log(probs.clamp_min(1e-300))).sum(-1).mean())
        kept = float(((probs >= KEEP_P) & correct).sum(-1).double().mean())
    return {"entropy": ent, "pass1": float(p_ok.mean()), "pass8": float((1 - (1 - p_ok) ** 8).mean()),
            "kept": kept, "curve_h": curve_h, "curve_r": curve_r}


METHODS: dict[str, str] = {
    "grpo": "GRPO (PPO clip 0.2)",
    "bonus": "+ entropy bonus 0.05",
    "adaptive": f"+ adaptive coefficient (target {TARGET})",
    "clip_cov": "Clip-Cov (ratio 0.02, batch selection)",
    "kl_cov": "KL-Cov abs penalty (ratio 0.02)",
    "kl_cov_cov": "KL-Cov cov penalty (ratio 0.02)",
    "mask_80_20": "80/20 high-entropy mask (rho 0.2)",
    "qae": "QAE (K 0.4)",
    "entropic": f"EntroPIC (target {TARGET}, Kp 1, Ki 0.05)",
}


def stats(xs: list[float]) -> str:
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return f"{m:.3f}"
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return f"{m:.3f} ± {sd:.3f}"


def plot(curves: dict[str, list[list[float]]], rewards: dict[str, list[list[float]]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in curves.items():
        mean_h = torch.tensor(runs).mean(0)
        mean_r = torch.tensor(rewards[name]).mean(0)
        k = 20
        smooth = torch.nn.functional.avg_pool1d(mean_r[None, None], k, 1)[0, 0]
        axes[0].plot(mean_h.numpy(), label=name)
        axes[1].plot(smooth.numpy(), label=name)
    axes[0].axhline(TARGET, color="k", lw=0.5, ls="--")
    axes[0].set(xlabel="step", ylabel="policy entropy (nats)", title="entropy")
    axes[1].set(xlabel="step", ylabel="batch reward (moving mean)", title="reward")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    steps = args.steps or (200 if args.quick else 400)
    seeds = args.seeds or (1 if args.quick else 3)
    t0 = time.perf_counter()
    rows, curves, rewards, grpo_pairs = [], {}, {}, ([], [])
    for name in args.methods:
        res = [train(name, s, steps) for s in range(seeds)]
        curves[name] = [r["curve_h"] for r in res]
        rewards[name] = [r["curve_r"] for r in res]
        if name == "grpo":
            for r in res:
                grpo_pairs[0].extend(r["curve_h"])
                grpo_pairs[1].extend(r["curve_r"])
        rows.append([METHODS[name], stats([r["entropy"] for r in res]), stats([r["pass1"] for r in res]),
                     stats([r["pass8"] for r in res]), stats([r["kept"] for r in res])])
        print(rows[-1], flush=True)
    header = ["method", "final entropy (nats)", "pass@1", "pass@8", f"correct kept (p >= {KEEP_P}, of {C})"]
    table = markdown_table(header, rows)
    fit_txt = ""
    if grpo_pairs[0]:
        f = rl.fit_entropy_performance(grpo_pairs[0], grpo_pairs[1])
        fit_txt = (f"R = -a e^H + b over GRPO's run ({len(grpo_pairs[0])} (entropy, batch reward) pairs): "
                   f"a = {f.a:.3f} [{f.a_ci[0]:.3f}, {f.a_ci[1]:.3f}], b = {f.b:.3f} "
                   f"[{f.b_ci[0]:.3f}, {f.b_ci[1]:.3f}], predicted ceiling b - a = {f.ceiling:.3f} "
                   f"[{f.ceiling_ci[0]:.3f}, {f.ceiling_ci[1]:.3f}], R^2 = {f.r2:.3f}.")
    png = Path(__file__).parent / "rl_entropy.png"
    has_png = plot(curves, rewards, png)
    elapsed = time.perf_counter() - t0
    print(table)
    print(fit_txt)
    load = os.getloadavg()
    body = (
        f"Bandit task: {P} prompts x {V} answers, {C} correct each; GRPO groups of {G}, {EPOCHS} PPO epochs "
        f"per batch, Adam lr {LR}, {steps} steps, {seeds} seed(s) (mean ± std); tabular policy from uniform. "
        f"Machine shared (load average {load[0]:.1f}); wall time {elapsed:.0f} s.\n\n{table}\n\n{fit_txt}\n"
        + (f"\nCurves (mean over seeds): `benchmarks/{png.name}`.\n" if has_png else "")
    )
    if not args.no_record:
        cmd = "python benchmarks/rl_entropy.py" + (" --quick" if args.quick else "")
        title = "Entropy collapse and controls on a verifiable bandit (entropykit.rl)"
        record("rl_entropy", title, cmd, body)


if __name__ == "__main__":
    main()
