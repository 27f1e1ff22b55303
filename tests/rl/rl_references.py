"""Independent references for the rl tests: verl's and TRL's formulas transcribed (not copied) in
plain float64 loops / tensor code, written from their published definitions.

verl: ``verl/trainer/ppo/core_algos.py`` (agg_loss, compute_policy_loss_vanilla, _clip_cov, _kl_cov,
_gspo, compute_grpo_outcome_advantage, compute_rloo_outcome_advantage). TRL: ``GRPOTrainer._compute_loss``
(per-token loss by loss_type, aggregation by loss_type, entropy bonus, adaptive coefficient).
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, m: Tensor) -> Tensor:
    m = m.to(x.dtype)
    return (x * m).sum() / (m.sum() + 1e-8)


def verl_agg(loss_mat: Tensor, mask: Tensor, mode: str) -> Tensor:
    m = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return masked_mean(loss_mat, m)
    if mode == "seq-mean-token-sum":
        return (loss_mat * m).sum(-1).mean()
    if mode == "seq-mean-token-mean":  # empty rows: TRL's clamp(min=1) (verl would divide by 0)
        return ((loss_mat * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if mode == "seq-mean-token-sum-norm":
        return (loss_mat * m).sum() / m.shape[-1]
    raise ValueError(mode)


def verl_vanilla(old, lp, adv, mask, mode, lo=0.2, hi=0.2, c=3.0):
    nkl = torch.clamp(lp - old, -20.0, 20.0)
    ratio = torch.exp(nkl)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - lo, 1 + hi)
    cl1 = torch.maximum(l1, l2)
    l3 = -adv * c
    cl2 = torch.min(l3, cl1)
    losses = torch.where(adv < 0, cl2, cl1)
    clipfrac = masked_mean(torch.gt(l2, l1).to(lp.dtype), mask)
    lower = masked_mean((torch.gt(cl1, l3) & (adv < 0)).to(lp.dtype), mask)
    return verl_agg(losses, mask, mode), clipfrac, masked_mean(-nkl, mask), lower


def verl_clip_cov(old, lp, adv, mask, mode, lo=0.2, hi=0.2, ratio_sel=2e-4, lb=1.0, ub=5.0):
    """The per-call Clip-Cov: random draw with the *global* torch RNG (seed it before calling)."""
    ratio = torch.exp(lp - old)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - lo, 1 + hi)
    clipped = (l2 > l1) & mask
    cov = (adv - masked_mean(adv, mask)) * (lp - masked_mean(lp.detach(), mask))
    cov = cov.detach().clone()
    cov[~mask] = -torch.inf
    cov[clipped] = -torch.inf
    k = max(int(ratio_sel * int(mask.sum())), 1)
    cand = torch.nonzero((cov < ub) & (cov > lb) & mask)
    corr = torch.ones_like(adv)
    if len(cand):
        perm = torch.randperm(len(cand))
        cand = cand[perm[: min(k, len(cand))]]
        corr[cand[:, 0], cand[:, 1]] = 0
    return verl_agg(torch.maximum(l1, l2) * corr, mask, mode), corr == 0


def verl_kl_cov(old, lp, adv, mask, mode, ratio_sel=2e-4, coef=1.0):
    nkl = lp - old
    ratio = torch.exp(nkl)
    pg = -adv * ratio
    pg_kl = -adv * ratio + coef * nkl.abs()
    valid_idx = torch.nonzero(mask.reshape(-1), as_tuple=True)[0]
    a = adv[mask].detach().reshape(-1)
    l = lp[mask].detach().reshape(-1)
    out = pg.clone()
    if len(a):
        cov = (a - a.mean()) * (l - l.mean())
        k = max(1, int(len(cov) * ratio_sel))
        top = valid_idx[torch.topk(cov, k, largest=True).indices]
        rows, cols = top // adv.shape[1], top % adv.shape[1]
        out[rows, cols] = pg_kl[rows, cols]
    return verl_agg(out, mask, mode)


def verl_gspo(old, lp, adv, mask, lo, hi):
    nkl = lp - old
    m = mask.to(lp.dtype)
    seq = (nkl * m).sum(-1) / m.sum(-1).clamp(min=1)
    log_s = torch.clamp(lp - lp.detach() + seq.detach().unsqueeze(-1), max=10.0)
    s = torch.exp(log_s)
    l1 = -adv * s
    l2 = -adv * torch.clamp(s, 1 - lo, 1 + hi)
    return verl_agg(torch.maximum(l1, l2), mask, "seq-mean-token-mean")


def verl_grpo_adv(scores: Tensor, index: list, eps=1e-6, norm=True) -> Tensor:
    out = scores.clone()
    groups: dict = {}
    for i, g in enumerate(index):
        groups.setdefault(g, []).append(scores[i])
    mean, std = {}, {}
    for g, v in groups.items():
        if len(v) == 1:
            mean[g], std[g] = torch.tensor(0.0, dtype=scores.dtype), torch.tensor(1.0, dtype=scores.dtype)
        else:
            t = torch.stack(v)
            mean[g], std[g] = t.mean(), t.std()
    for i, g in enumerate(index):
        out[i] = (scores[i] - mean[g]) / (std[g] + eps) if norm else scores[i] - mean[g]
    return out


def verl_rloo_adv(scores: Tensor, index: list) -> Tensor:
    out = scores.clone()
    groups: dict = {}
    for i, g in enumerate(index):
        groups.setdefault(g, []).append(scores[i])
    for i, g in enumerate(index):
        n = len(groups[g])
        if n > 1:
            mean = torch.stack(groups[g]).mean()
            out[i] = scores[i] * n / (n - 1) - mean * n / (n - 1)
    return out


def trl_per_token_loss(loss_type: str, lp, old, adv, eps_low=0.2, eps_high=0.2, delta=None):
    """TRL GRPOTrainer per-token loss (token-level importance sampling); adv shaped (B, 1)."""
    coef_1 = torch.exp(lp - old)
    if loss_type == "cispo":
        return -torch.clamp(coef_1, max=eps_high).detach() * adv * lp
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    return -torch.min(coef_1 * adv, coef_2 * adv)


def trl_aggregate(loss_type: str, ptl: Tensor, mask: Tensor, max_completion_length: int) -> Tensor:
    m = mask.to(ptl.dtype)
    if loss_type == "grpo":
        return ((ptl * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (ptl * m).sum() / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (ptl * m).sum() / (ptl.size(0) * max_completion_length)
    raise ValueError(loss_type)


class TrlAdaptiveEntropy:
    """TRL's adaptive entropy coefficient state machine (one process, no accumulation)."""

    def __init__(self, coef, target, delta, cmin, cmax):
        self.coef, self.target, self.delta, self.cmin, self.cmax = coef, target, delta, cmin, cmax
        self.last = float("inf")

    def apply_coef(self):
        return self.coef if self.last <= self.target else 0.0

    def step(self, world_entropy):
        if world_entropy <= self.target:
            self.coef = min(self.coef + self.delta, self.cmax)
        else:
            self.coef = max(self.coef - self.delta, self.cmin)
        self.last = world_entropy


# --- Lp-Reg (Huang et al. 2025; the authors' verl fork, CarlanLark/Lp-Reg-dev: dp_actor.apply_min_p and
# core_algos.compute_policy_loss_lp_reg, negative-sample branch), written out with python loops ---------


def lp_reg_min_p_log_prob(logits: Tensor, target: Tensor, min_p: float, regular_type: str,
                          temperature: float) -> Tensor:
    """Filter (softmax of the raw logits below min_p * max, or below min_p) to -1e4, divide by the
    temperature, log-softmax, take the target's entry: one row at a time."""
    z = logits.double().reshape(-1, logits.shape[-1])
    y = target.reshape(-1)
    out = torch.empty(z.shape[0], dtype=torch.float64)
    for i in range(z.shape[0]):
        p = torch.softmax(z[i], -1)
        thr = min_p * float(p.max()) if regular_type == "minp" else min_p
        row = z[i].clone()
        for j in range(row.numel()):
            if float(p[j]) < thr:
                row[j] = -1e4
        out[i] = torch.log_softmax(row / temperature, -1)[int(y[i])]
    return out.reshape(target.shape)


def verl_kl_penalty(lp: Tensor, ref: Tensor, kind: str) -> Tensor:
    if kind == "kl":
        k = lp - ref
    elif kind == "abs":
        k = (lp - ref).abs()
    elif kind == "mse":
        k = 0.5 * (lp - ref) ** 2
    else:
        d = ref - lp
        k = torch.exp(d) - d - 1
    return torch.clamp(k, -10, 10)


def lp_reg_reference(old, lp, tgt, adv, mask, mode, lo=0.2, hi=0.2, neg_ratio=0.01, coef=1.0,
                     kind="low_var_kl"):
    """The per-token PPO loss, then for the k lowest-log-prob negative-advantage valid tokens whose
    log-prob is below the target's, -A ratio + coef * kl_penalty(log_prob, target) (k >= 2 in the tests:
    the authors' code skips k = 1)."""
    ratio = torch.exp(lp - old)
    l1 = -adv * ratio
    l2 = -adv * ratio.clamp(1 - lo, 1 + hi)
    losses = torch.maximum(l1, l2)
    b, t = lp.shape
    neg = [(i, j) for i in range(b) for j in range(t) if bool(mask[i, j]) and float(adv[i, j]) < 0]
    k = max(1, int(len(neg) * neg_ratio))
    neg.sort(key=lambda ij: float(lp[ij[0], ij[1]]))
    rows = []
    for i, j in neg[:k]:
        if float(lp[i, j]) < float(tgt[i, j]):
            rows.append((i, j))
    if rows:
        new = losses.clone()
        for i, j in rows:
            new[i, j] = -adv[i, j] * ratio[i, j] + coef * verl_kl_penalty(lp[i, j], tgt[i, j], kind)
        losses = new
    return verl_agg(losses, mask, mode), len(rows)
