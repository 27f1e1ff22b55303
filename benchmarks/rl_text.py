"""Entropy collapse and its controls when fine-tuning the bundled ``bytegpt-small`` with GRPO (CPU).

Task ("digits"): P code-like prompts where a number may follow (``"x = "``, ``"range("``,
``"[1, 2, "``, ...; left-padded with spaces to one length, so a batch needs no padding mask). The
policy writes K bytes; the verifiable reward is the fraction of those bytes that are ASCII digits.
The pre-trained model writes digits in a few percent of positions. There are 10^K fully correct
answers, so high reward and high entropy are compatible (uniform digits: log 10 = 2.30 nats per
byte); plain GRPO nevertheless sharpens onto a few digit strings per prompt: entropy collapse.

Each step samples G responses per prompt from the current policy (ByteGPT forward with its KV cache;
the sampling-time log-probabilities are ``old_log_prob``), computes GRPO advantages, and takes E
PPO epochs (Adam, all 0.83 M parameters) with the method's loss from ``entropykit.rl``. Per method
(mean +- std over seeds): final entropy per response byte (nats), reward (mean digit fraction), the
fraction of all-digit responses, and the distinct all-digit responses among 32 samples per prompt
(diversity); entropy and reward curves (PNG); the R = -a e^H + b fit over GRPO's runs.

    python benchmarks/rl_text.py --jobs 3   # 3 seeds, 9 methods, 80 steps (~8 min of CPU; 3 processes)
    python benchmarks/rl_text.py --quick    # 1 seed, fewer steps
"""

from __future__ import annotations

import argparse
import copy
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
from entropykit.models import load_model

PROMPTS = ["x = ", "range(", "[1, 2, ", "port=", "0x", "Python 3.", "size = ", "version 2."]
PAD = 10          # prompt bytes after left-padding with spaces
K = 6             # response bytes
G = 8             # group size (responses per prompt)
EPOCHS, LR, CLIP = 1, 1e-3, 0.2
TARGET = 1.0      # nats per response byte, for the controls that have a target
PI_SCALE = 0.05   # entropy coefficient per unit of the PI output (signed: a penalty above target)
PI_KP, PI_KI = 0.5, 0.02
ADAPT_DELTA, ADAPT_MAX = 0.001, 0.05
LP_REG = {"lp_reg_ratio": 0.02, "lp_reg_coef": 1.0}  # proxy: min-p 0.02 on the sampling logits
EVAL_G = 32
BOS = 256


def prompt_ids() -> torch.Tensor:
    rows = []
    for p in PROMPTS:
        b = p.encode()
        assert len(b) <= PAD
        rows.append([BOS, *(b" " * (PAD - len(b)) + b)])
    return torch.tensor(rows)


def reward_of(resp: torch.Tensor) -> torch.Tensor:
    """Fraction of response bytes that are ASCII digits (BOS counts as a non-digit)."""
    return ((resp >= 48) & (resp <= 57)).double().mean(-1)


@torch.no_grad()
def sample(gpt: torch.nn.Module, prompts: torch.Tensor, g: int, gen: torch.Generator):
    """G responses of K bytes per prompt: ids (P G, K), their log-probs, entropies and Lp-Reg proxy
    log-probs at sampling time."""
    ids = prompts.repeat_interleave(g, 0)
    logits, past = gpt(ids)
    out, lps, ents, proxies = [], [], [], []
    for _ in range(K):
        z = logits[:, -1].float()
        logp = torch.log_softmax(z, -1)
        nxt = torch.multinomial(logp.exp(), 1, generator=gen)
        out.append(nxt)
        lps.append(logp.gather(1, nxt))
        ents.append(-(logp.exp() * logp).sum(-1, keepdim=True))
        proxies.append(rl.lp_reg_proxy_log_prob(z, nxt[:, 0], min_p=0.02)[:, None])
        logits, past = gpt(nxt, past)
    return torch.cat(out, 1), torch.cat(lps, 1), torch.cat(ents, 1), torch.cat(proxies, 1)


def response_stats(gpt: torch.nn.Module, ids: torch.Tensor, resp: torch.Tensor):
    """Training forward over prompt + response: per-token log-prob and entropy of the response."""
    full = torch.cat([ids, resp], 1)
    logits, _ = gpt(full[:, :-1])
    return rl.token_logprob_entropy(logits[:, -K:], resp)


class Run:
    """Per-method loss and the controllers that live across steps."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.adaptive = rl.AdaptiveEntropyCoef(coef=0.0, target=TARGET, delta=ADAPT_DELTA, coef_max=ADAPT_MAX)
        self.pic = rl.EntroPIC(target=TARGET, kp=PI_KP, ki=PI_KI, limit=0.9)
        self.alpha = 0.0

    def loss(self, old, lp, ent, proxy, adv, mask, sel) -> torch.Tensor:
        m = self.method
        ppo = lambda **kw: rl.ppo_loss(old, lp, adv, mask, clip_ratio=CLIP, **kw)[0]  # noqa: E731
        if m in ("grpo", "qae"):
            return ppo()
        if m == "bonus":
            return ppo() + rl.entropy_bonus(ent, mask, 0.01)
        if m == "adaptive":
            return ppo() + rl.entropy_bonus(ent, mask, self.adaptive.applied)
        if m == "clip_cov":
            return rl.clip_cov_loss(old, lp, adv, mask, clip_ratio=CLIP, selected=sel)[0]
        if m == "kl_cov":
            return rl.kl_cov_loss(old, lp, adv, mask, selected=sel)[0]
        if m == "kl_cov_cov":
            return rl.kl_cov_loss(old, lp, adv, mask, selected=sel, penalty="cov")[0]
        if m == "mask_80_20":
            keep = rl.high_entropy_mask(ent.detach(), mask, 0.2)
            return ppo(weights=keep.to(lp.dtype))
        if m == "pi_bonus":
            return ppo() + rl.entropy_bonus(ent, mask, PI_SCALE * self.alpha)
        if m == "entropic":
            return ppo(weights=rl.entropic_weights(adv.expand_as(lp), self.alpha))
        if m == "lp_reg":
            return rl.lp_reg_loss(old, lp, adv, mask, proxy_log_prob=proxy, clip_ratio=CLIP, **LP_REG)[0]
        raise ValueError(m)

    def after_step(self, entropy: float) -> None:
        self.adaptive.update(entropy)
        self.alpha = self.pic.update(entropy)


SEL_RATIO = {"clip_cov": 0.02, "kl_cov": 0.02, "kl_cov_cov": 0.02}

METHODS: dict[str, str] = {
    "grpo": "GRPO (PPO clip 0.2)",
    "bonus": "+ entropy bonus 0.01",
    "adaptive": f"+ adaptive coefficient (target {TARGET}, delta {ADAPT_DELTA}, max {ADAPT_MAX})",
    "clip_cov": "Clip-Cov (ratio 0.02, batch selection)",
    "kl_cov_cov": "KL-Cov cov penalty (ratio 0.02)",
    "mask_80_20": "80/20 high-entropy mask (rho 0.2)",
    "pi_bonus": (f"PI-controlled signed bonus (EntroPIC's controller, target {TARGET}, Kp {PI_KP}, "
                 f"Ki {PI_KI}, c = {PI_SCALE} alpha)"),
    "entropic": f"EntroPIC re-weighting (target {TARGET}, Kp {PI_KP}, Ki {PI_KI})",
    "lp_reg": "Lp-Reg (min-p 0.02 proxy, ratio 0.02, k3 coef 1)",
}


def train(base: torch.nn.Module, method: str, seed: int, steps: int) -> dict[str, object]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    gpt = copy.deepcopy(base).train()
    opt = torch.optim.Adam(gpt.parameters(), lr=LR)
    prompts = prompt_ids()
    ids = prompts.repeat_interleave(G, 0)
    run = Run(method)
    curve_h, curve_r = [], []
    mask = torch.ones(len(ids), K, dtype=torch.bool)
    for _ in range(steps):
        gpt.eval()
        resp, old, ent_s, proxy = sample(gpt, prompts, G, gen)
        gpt.train()
        reward = reward_of(resp)
        h_now = float(ent_s.mean())
        adv = (rl.qae_advantages(reward, G, k=0.4) if method == "qae" else rl.grpo_advantages(reward, G))
        adv = adv.float()[:, None]
        sel = None
        if method in SEL_RATIO:
            mode = "band" if method == "clip_cov" else "top"
            sel = rl.cov_selection(old, adv, mask, mode=mode, ratio=SEL_RATIO[method], generator=gen)
        for _ in range(EPOCHS):
            lp, ent = response_stats(gpt, ids, resp)
            loss = run.loss(old, lp, ent, proxy, adv, mask, sel)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
            opt.step()
        run.after_step(h_now)
        curve_h.append(h_now)
        curve_r.append(float(reward.mean()))
    gpt.eval()
    resp, _, ent_s, _ = sample(gpt, prompts, EVAL_G, gen)
    r = reward_of(resp)
    full = r == 1.0
    distinct = []
    for i in range(len(PROMPTS)):
        block = resp[i * EVAL_G:(i + 1) * EVAL_G][full[i * EVAL_G:(i + 1) * EVAL_G]]
        distinct.append(len({tuple(x) for x in block.tolist()}))
    return {"entropy": float(ent_s.mean()), "reward": float(r.mean()),
            "all_digits": float(full.double().mean()), "distinct": sum(distinct) / len(distinct),
            "curve_h": curve_h, "curve_r": curve_r,
            "example": bytes(x for x in resp[2 * EVAL_G].tolist() if x < 256).decode("latin-1")}


def _job(args: tuple[str, int, int]) -> dict[str, object]:
    """One (method, seed) run in a worker process (spawned: loads the bundled model itself)."""
    torch.set_num_threads(1)
    return train(load_model("bytegpt-small").module, *args)


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
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for name, runs in curves.items():
        mean_h = torch.tensor(runs).mean(0)
        mean_r = torch.tensor(rewards[name]).mean(0)
        k = max(1, min(10, len(mean_r)))
        smooth = torch.nn.functional.avg_pool1d(mean_r[None, None], k, 1)[0, 0]
        axes[0].plot(mean_h.numpy(), label=METHODS.get(name, name), lw=1)
        axes[1].plot(smooth.numpy(), label=METHODS.get(name, name), lw=1)
    axes[0].axhline(TARGET, color="k", lw=0.5, ls="--")
    axes[0].set(xlabel="step", ylabel="entropy per response byte (nats)", title="bytegpt-small, digits task")
    axes[1].set(xlabel="step", ylabel="reward (digit fraction, moving mean)", title="reward")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, one thread each")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    steps = args.steps or (40 if args.quick else 80)
    seeds = args.seeds or (1 if args.quick else 3)
    t0 = time.perf_counter()
    todo = [(name, s, steps) for name in args.methods for s in range(seeds)]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            done = dict(zip(todo, pool.map(_job, todo, chunksize=1), strict=True))
    else:
        base = load_model("bytegpt-small").module
        done = {job: train(base, *job) for job in todo}
    rows, curves, rewards, grpo_pairs, summary = [], {}, {}, ([], []), {}
    for name in args.methods:
        res = [done[(name, s, steps)] for s in range(seeds)]
        curves[name] = [r["curve_h"] for r in res]
        rewards[name] = [r["curve_r"] for r in res]
        if name == "grpo":
            for r in res:
                grpo_pairs[0].extend(r["curve_h"])
                grpo_pairs[1].extend(r["curve_r"])
        last = max(1, steps // 5)
        held = [sum(r["curve_h"][-last:]) / last for r in res]
        summary[name] = (sum(held) / len(held), sum(r["reward"] for r in res) / len(res))
        rows.append([METHODS.get(name, name), stats([r["entropy"] for r in res]), stats(held),
                     stats([r["reward"] for r in res]), stats([r["all_digits"] for r in res]),
                     stats([r["distinct"] for r in res]), repr(res[0]["example"])])
        print(rows[-1], f"{time.perf_counter() - t0:.0f}s", flush=True)
    header = ["method", "final entropy (nats/byte)", f"entropy, last {max(1, steps // 5)} steps",
              "reward (digit frac.)", "all-digit responses", f"distinct all-digit of {EVAL_G}",
              "sample ('[1, 2, ', seed 0)"]
    table = markdown_table(header, rows)
    fit_txt = ""
    if grpo_pairs[0]:
        f = rl.fit_entropy_performance(grpo_pairs[0], grpo_pairs[1])
        fit_txt = (f"R = -a e^H + b over GRPO's runs ({len(grpo_pairs[0])} (entropy, batch reward) pairs): "
                   f"a = {f.a:.3f} [{f.a_ci[0]:.3f}, {f.a_ci[1]:.3f}], b = {f.b:.3f} "
                   f"[{f.b_ci[0]:.3f}, {f.b_ci[1]:.3f}], predicted ceiling b - a = {f.ceiling:.3f} "
                   f"[{f.ceiling_ci[0]:.3f}, {f.ceiling_ci[1]:.3f}], R^2 = {f.r2:.3f}.")
    goal = ""
    if "grpo" in summary:
        ok = [METHODS.get(k, k) for k, (h, r) in summary.items()
              if k != "grpo" and abs(h - TARGET) <= 0.1 * TARGET and r >= summary["grpo"][1] - 0.01]
        goal = (f"Issue goal (entropy over the last 20% of steps within ±10% of the target {TARGET}, mean "
                f"over seeds, and final reward >= GRPO's - 0.01): met by {', '.join(ok) if ok else 'none'}.")
        print(goal)
    png = Path(__file__).parent / "figures" / "rl_text.png"
    has_png = plot(curves, rewards, png)
    elapsed = time.perf_counter() - t0
    print(table)
    print(fit_txt)
    load = os.getloadavg()
    body = (
        f"bytegpt-small (0.83 M parameters, bundled), digits task: {len(PROMPTS)} prompts, {K}-byte "
        f"responses, "
        f"reward = digit fraction; GRPO groups of {G}, {EPOCHS} PPO epochs per batch, Adam lr {LR} (all "
        f"parameters, grad-norm clip 1), {steps} steps, {seeds} seed(s) (mean ± std). Final columns from "
        f"{EVAL_G} fresh samples per prompt; {args.jobs} worker process(es). Machine shared (load average "
        f"{load[0]:.1f}); wall time "
        f"{elapsed:.0f} s.\n\n{table}\n\n{fit_txt}\n\n{goal}\n"
        + (f"\nCurves (mean over seeds): `benchmarks/figures/{png.name}`.\n" if has_png else "")
    )
    if not args.no_record:
        cmd = "python benchmarks/rl_text.py" + (" --quick" if args.quick else "") + (
            f" --jobs {args.jobs}" if args.jobs > 1 else "")
        title = ("Entropy collapse and controls fine-tuning bytegpt-small on a verifiable text task "
                 "(entropykit.rl)")
        record("rl_text", title, cmd, body)


if __name__ == "__main__":
    main()
