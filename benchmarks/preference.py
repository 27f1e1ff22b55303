"""Preference losses on a tabular policy: where each loss lands against the analytic optimum.

A policy pi = softmax(theta) over K responses, a reference p, a known reward r and beta. Preference pairs
(y_w, y_l) ~ p x p, the winner drawn from Bradley-Terry sigma(r_i - r_j). Each loss of
``entropykit.losses.PREFERENCE_LOSSES`` is minimised (L-BFGS from theta = log p) twice: on the *exact*
population (every ordered pair weighted by p_i p_j sigma(r_i - r_j)) and on M sampled pairs. Reported:
KL to the closed-form optimum where one exists (DPO: pi* ∝ p e^{r/beta}; H-DPO: pi*^{1/alpha}; f-DPO:
``f_regularised_policy``), KL to pi*, expected reward and entropy; H-DPO's entropy as alpha moves;
best-of-N against the tilt at matched KL; and the time of the loss next to a ByteGPT forward.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit.losses import (
    PREFERENCE_LOSSES,
    bon_vs_tilt,
    f_regularised_policy,
    policy_kl,
    preference_loss,
    sequence_logprobs,
    tilted_policy,
)
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig

K, BETA, M, SEED = 64, 0.5, 20_000, 0


def problem(m: int = M, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED)
    p = torch.softmax(torch.randn(K, generator=g, dtype=torch.float64), 0)
    r = torch.randn(K, generator=g, dtype=torch.float64)
    g.manual_seed(seed + 1)
    i = torch.multinomial(p, m, replacement=True, generator=g)
    j = torch.multinomial(p, m, replacement=True, generator=g)
    keep = i != j
    i, j = i[keep], j[keep]
    first_wins = torch.rand(i.shape[0], generator=g, dtype=torch.float64) < torch.sigmoid(r[i] - r[j])
    w, lo = torch.where(first_wins, i, j), torch.where(first_wins, j, i)
    return p, r, w, lo


def fit(name: str, p: torch.Tensor, w: torch.Tensor, lo: torch.Tensor, weights: torch.Tensor | None,
        params: dict[str, Any]) -> tuple[torch.Tensor | None, float]:
    """Minimise sum_pairs weight * loss(pair) over theta; return pi and the final gradient norm (None and
    NaN when the loss is unbounded below and the line search runs theta to non-finite values)."""
    meth = PREFERENCE_LOSSES[name]
    logp = p.log()
    theta = logp.clone().requires_grad_(True)
    one = torch.ones(w.shape[0], dtype=torch.float64)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=400, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        lp = torch.log_softmax(theta, 0)
        if name in ("simpo", "orpo"):
            out = meth.fn(lp[w], lp[lo], reduction="none", **params)
        else:
            out = meth.fn(lp[w], lp[lo], logp[w], logp[lo], chosen_lengths=one, rejected_lengths=one,
                          reduction="none", **params)
        loss = out.loss.mean() if weights is None else (out.loss * weights).sum()
        loss.backward()
        return loss

    try:
        opt.step(closure)
        closure()
    except ValueError:  # non-finite log-probs: theta ran off
        return None, float("nan")
    assert theta.grad is not None
    return torch.softmax(theta.detach(), 0), float(theta.grad.norm())


#: What is known of each loss's optimum when no closed form is computed (the exact-population fit is it).
NOTES = {
    "hinge": "not unique (piecewise linear)",
    "ipo": "least squares: u_w - u_l = (2P - 1) / (2β)",
    "exo_pair": "numerical (reverse KL to ε-smoothed labels)",
    "nca_pair": "numerical (absolute anchors)",
    "bco_pair": "numerical (absolute anchors)",
    "sppo_hard": "numerical (least squares on u)",
    "aot": "batch-sorted: no per-pair optimum",
    "aot_unpaired": "batch-sorted: no per-pair optimum",
    "apo_zero": "numerical (bounded sigmoid loss)",
    "apo_down": "numerical (bounded sigmoid loss)",
    "discopop": "numerical",
    "sft": "the winners' marginal (MLE)",
    "simpo": "reference-free: margin γ on β log π",
    "orpo": "reference-free: NLL + odds ratio",
    "sigmoid": "biased toward p (label smoothing)",
    "robust": "none: unbounded below where P(lose) / P(win) < ε / (1 - ε)",
}


def closed_form(name: str, params: dict[str, Any], p: torch.Tensor, r: torch.Tensor) -> tuple[str, Any]:
    beta = params.get("beta", BETA)
    if params.get("label_smoothing") and name in ("sigmoid", "robust"):
        return NOTES[name], None
    if name in ("sigmoid", "sigmoid_norm", "robust", "f_dpo_reverse_kl"):
        return "p e^{r/β} / Z", tilted_policy(p, r, beta)
    if name == "hdpo":
        a = params["hdpo_alpha"]
        return f"(p e^(r/β))^(1/{a:g}) / Z", torch.softmax(tilted_policy(p, r, beta).log() / a, 0)
    if name.startswith("f_dpo_"):
        div = name[len("f_dpo_"):]
        return f"β f'(π/p) = r + c ({div})", f_regularised_policy(p, r, beta, div, params.get("f_alpha", 0.5))
    return NOTES.get(name, "numerical"), None


def entropy(q: torch.Tensor) -> float:
    return float(-(q * torch.where(q > 0, q.log(), torch.zeros_like(q))).sum())


def variants() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registry name, params): every registry entry at beta = BETA, plus label-smoothed variants."""
    out = []
    for name, meth in PREFERENCE_LOSSES.items():
        params = dict(meth.params)
        if "beta" in params and name not in ("simpo", "orpo"):
            params["beta"] = BETA
        if name == "hdpo":
            params["hdpo_alpha"] = 0.5
        out.append((name + (" α=0.5" if name == "hdpo" else ""), name, params))
    out.append(("sigmoid ε=0.1 (cDPO)", "sigmoid", {"beta": BETA, "label_smoothing": 0.1}))
    out.append(("robust ε=0.1", "robust", {"beta": BETA, "label_smoothing": 0.1}))
    return out


def bench_losses(p: torch.Tensor, r: torch.Tensor, w: torch.Tensor, lo: torch.Tensor) -> str:
    star = tilted_policy(p, r, BETA)
    i, j = torch.meshgrid(torch.arange(K), torch.arange(K), indexing="ij")
    i, j = i.flatten(), j.flatten()
    exact_w = p[i] * p[j] * torch.sigmoid(r[i] - r[j])
    rows: list[list[Any]] = [["reference p", "", "", "", "", float((p * r).sum()), entropy(p), ""],
                             ["π* (DPO optimum)", "", "", "", "", float((star * r).sum()), entropy(star), ""]]
    for label, name, params in variants():
        form, opt = closed_form(name, params, p, r)
        kl_exact_cf: Any
        kl_exact_star: Any
        if name in ("aot", "aot_unpaired", "sft"):
            kl_exact_cf = kl_exact_star = "n/a (batch-level loss)"
        else:
            q_exact, _ = fit(name, p, i, j, exact_w, params)
            if q_exact is None:
                kl_exact_cf = kl_exact_star = "diverged"
            else:
                kl_exact_cf = float(policy_kl(q_exact, opt)) if opt is not None else "—"
                kl_exact_star = float(policy_kl(q_exact, star))
        q, gnorm = fit(name, p, w, lo, None, params)
        if q is None:
            rows.append([label, form, kl_exact_cf, kl_exact_star, "diverged", "", "", ""])
        else:
            rows.append([label, form, kl_exact_cf, kl_exact_star, float(policy_kl(q, star)),
                         float((q * r).sum()), entropy(q), gnorm])
        print(rows[-1], flush=True)
    header = ["loss", "optimum (closed form or what is known)", "KL(exact-pref fit ‖ closed form)",
              "KL(exact-pref fit ‖ π*)",
              f"KL({M // 1000}k-pair fit ‖ π*)", "E[r] (pair fit)", "H nats (pair fit)", "|grad| at end"]
    return markdown_table(header, rows)


def bench_hdpo(p: torch.Tensor, r: torch.Tensor, w: torch.Tensor, lo: torch.Tensor) -> str:
    rows = []
    for a in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
        params = {"beta": BETA, "hdpo_alpha": a}
        _, opt = closed_form("hdpo", params, p, r)
        q, _ = fit("hdpo", p, w, lo, None, params)
        assert q is not None
        rows.append([a, entropy(opt), entropy(q), float(policy_kl(q, opt)), float((q * r).sum())])
    return markdown_table(["α", "H of optimum (nats)", "H of pair fit", "KL(fit ‖ optimum)", "E[r] of fit"],
                          rows)


def bench_samples(sizes: list[int]) -> str:
    rows = []
    for m in sizes:
        kls = []
        for seed in range(3):
            p, r, w, lo = problem(m, seed)
            q, _ = fit("sigmoid", p, w, lo, None, {"beta": BETA})
            assert q is not None
            kls.append(float(policy_kl(q, tilted_policy(p, r, BETA))))
        rows.append([m, sum(kls) / 3, max(kls)])
    return markdown_table(["pairs M", "mean KL(DPO fit ‖ π*) over 3 seeds", "max"], rows)


def bench_bon(p: torch.Tensor, r: torch.Tensor) -> str:
    rows = []
    for n in (1, 2, 4, 8, 16, 64, 256):
        c = bon_vs_tilt(p, r, n) if n > 1 else None
        if c is None:
            rows.append([1, 0.0, 0.0, "inf", float((p * r).sum()), float((p * r).sum()), 0.0])
            continue
        rows.append([n, c.kl, c.kl_bound, c.beta, c.bon_reward, c.tilt_reward, c.kl_bon_to_tilt])
    return markdown_table(["N", "KL(BoN ‖ p)", "log N - (N-1)/N", "matched tilt β", "E[r] BoN", "E[r] tilt",
                           "KL(BoN ‖ tilt)"], rows)


def bench_time(quick: bool) -> str:
    cfg = ByteGPTConfig()  # the house ByteGPT: 6 layers, 256 wide, 257 bytes
    torch.manual_seed(0)
    model = ByteGPT(cfg)
    pairs, t = (4, 128) if quick else (8, 256)
    ids = torch.randint(0, 256, (2 * pairs, t))
    ref = torch.randn(2 * pairs, dtype=torch.float32)

    def forward() -> torch.Tensor:
        return model(ids)[0]

    logits = forward().detach().requires_grad_(True)
    y = ids[:, 1:]

    def seq() -> torch.Tensor:
        return sequence_logprobs(logits[:, :-1], y)

    s = seq().detach().requires_grad_(True)

    def loss() -> torch.Tensor:
        out = preference_loss(s[:pairs], s[pairs:], ref[:pairs], ref[pairs:], beta=0.1)
        out.loss.backward()
        return out.loss

    def seq_and_loss() -> torch.Tensor:
        lp = seq()
        out = preference_loss(lp[:pairs], lp[pairs:], ref[:pairs], ref[pairs:], beta=0.1)
        out.loss.backward()
        return out.loss

    with torch.no_grad():
        t_fwd = timeit(forward, repeat=5)
        _, mem_fwd = peak_extra_mb(forward)
    t_loss = timeit(loss, repeat=20)
    t_all = timeit(seq_and_loss, repeat=5)
    _, mem_all = peak_extra_mb(seq_and_loss)
    rows = [["ByteGPT forward (no grad)", t_fwd * 1e3, 1.0, mem_fwd],
            ["preference_loss fwd+bwd (from sequence log-probs)", t_loss * 1e3, t_loss / t_fwd, "—"],
            ["sequence_logprobs + preference_loss fwd+bwd (from logits)", t_all * 1e3, t_all / t_fwd,
             mem_all]]
    head = (f"{pairs} pairs = {2 * pairs} sequences x {t} tokens, V = 257, float32, "
            f"{torch.get_num_threads()} thread(s)")
    return head + "\n\n" + markdown_table(["step", "ms", "ratio to the forward", "peak extra MB"], rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    p, r, w, lo = problem()
    losses = bench_losses(p, r, w, lo)
    hdpo = bench_hdpo(p, r, w, lo)
    samples = bench_samples([2_000, 20_000, 200_000] if not args.quick else [2_000, 20_000])
    bon = bench_bon(p, r)
    timing = bench_time(args.quick)
    load = os.getloadavg()
    body = (
        f"Tabular policy over K = {K} responses, reference p = softmax(N(0, 1)), reward r ~ N(0, 1), "
        f"beta = {BETA}; {w.shape[0]} Bradley-Terry pairs (y_w, y_l) ~ p x p (ties dropped), seed "
        f"{SEED}. Each loss is minimised by L-BFGS (strong Wolfe, 400 iterations) from theta = log p, once "
        "on the exact population (all K^2 ordered pairs weighted by p_i p_j sigma(r_i - r_j)) and once on "
        "the sampled pairs. Lengths are 1 (one-token responses), so sigmoid_norm = sigmoid and IPO's length "
        "average is the plain sum. SimPO and ORPO use the policy log-probs only (no reference). "
        "'|grad| at end' near 0 means the pair fit converged; an entropy near 0 with a converged fit "
        "(aot_unpaired, apo_down) is a policy run off to a point mass: that loss has no finite minimiser on "
        "this data. Machine "
        f"shared by other jobs (load average {load[0]:.1f} at the end): times are indicative, ratios are "
        f"measured in one process.\n\n{losses}\n\n"
        "DPO's sampled-pair fit approaches pi* as the number of pairs grows (the remaining KL is the "
        "sampling error of the empirical preferences). With few pairs DPO has no finite minimiser: a "
        "response that only ever wins is pushed to probability 1 and one that only ever loses to 0 (at "
        "M = 2000, seed 1 has a response that won its single comparison: the fit puts all mass on it, pi* "
        "gives it 1.3e-5, "
        f"KL 11.2):\n\n{samples}\n\n"
        f"H-DPO (beta = {BETA}) as alpha moves: alpha < 1 sharpens (lower entropy), alpha = 1 is DPO; the "
        f"optimum is (p e^(r/beta))^(1/alpha) / Z:\n\n{hdpo}\n\n"
        "Best-of-N against the KL-regularised tilt at matched KL (same p, r; exact, no sampling):\n\n"
        f"{bon}\n\nLoss time next to a model forward:\n\n{timing}\n"
    )
    print(body)
    if not args.no_record:
        record("preference",
               "Preference losses: tabular optimum, H-DPO entropy, best-of-N (entropykit.losses)",
               "python benchmarks/preference.py" + (" --quick" if args.quick else ""), body)


if __name__ == "__main__":
    main()
