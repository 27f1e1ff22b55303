"""More training objectives on the bundled corpus (issue 24).

1. **LM objectives.** A tiny ByteGPT (2 layers, 64 wide, 64-byte context) trained from scratch on
   data/corpus/train-sample.bin with CE, MixCE (eta = 0.5) and EMO (mode "mle", cost = 1 - cos of the
   model's own tied embedding, detached each step) for the same steps and seeds; held-out bits/byte on
   data/corpus/heldout.bin and distinct-n of sampled text (temperature 1).
2. **Sparse-logit distillation.** A tiny student distilled from a bundled model (``--teacher``, default
   ``bytegpt-6l``) on cached
   teacher targets: full KL (all 257 probabilities), top-k (renormalised) and random-sampled
   (Anshumann et al. 2025) at matched storage (K slots a position); held-out KL(teacher || student),
   expected calibration error of the student's top-1 next byte, and bits/byte.
3. **Fused memory.** ``ops.linear_mixce`` / ``ops.linear_sparse_kd`` against the logits path: peak
   extra memory and time of forward + backward, loss difference.

Run: ``python benchmarks/objectives.py`` (add ``--no-record`` to skip RESULTS.md; ``--steps`` /
``--seeds`` to change the budget).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit.losses import (
    build_teacher_cache,
    emo_loss,
    mixce_loss,
    sparse_kd_loss,
)
from entropykit.models import load_model
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig
from entropykit.ops import linear_mixce, linear_sparse_kd

ROOT = Path(__file__).resolve().parent.parent
CTX = 64
LN2 = math.log(2.0)


def load_bytes(name: str, limit: int) -> torch.Tensor:
    data = np.fromfile(ROOT / "data" / "corpus" / name, dtype=np.uint8)[:limit]
    return torch.from_numpy(data.astype(np.int64))


def windows(stream: torch.Tensor, length: int) -> torch.Tensor:
    """(n, length + 1) rows: BOS then ``length`` bytes (inputs = row[:-1], targets = row[1:])."""
    n = stream.shape[0] // length
    body = stream[: n * length].view(n, length)
    return torch.cat([torch.full((n, 1), BOS), body], 1)


def tiny(seed: int) -> ByteGPT:
    torch.manual_seed(seed)
    return ByteGPT(ByteGPTConfig(block_size=CTX + 1, n_layer=2, n_head=2, n_embd=64))


@torch.no_grad()
def bits_per_byte(model: ByteGPT, rows: torch.Tensor) -> float:
    tot, cnt = 0.0, 0
    for i in range(0, rows.shape[0], 64):
        r = rows[i:i + 64]
        logits, _ = model(r[:, :-1])
        flat = logits.reshape(-1, logits.shape[-1])
        tot += float(F.cross_entropy(flat, r[:, 1:].reshape(-1), reduction="sum"))
        cnt += r[:, 1:].numel()
    return tot / cnt / LN2


@torch.no_grad()
def sample(model: ByteGPT, n: int, length: int, seed: int) -> list[bytes]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.full((n, 1), BOS)
    logits, past = model(idx)
    out = []
    for _ in range(length):
        p = torch.softmax(logits[:, -1, :256], -1)  # bytes only (BOS is never generated)
        nxt = torch.multinomial(p, 1, generator=g)
        out.append(nxt)
        logits, past = model(nxt, past)
    return [bytes(r.tolist()) for r in torch.cat(out, 1)]


def distinct(texts: list[bytes], n: int) -> float:
    grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def train(model: ByteGPT, rows: torch.Tensor, steps: int, seed: int, loss_fn) -> ByteGPT:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        for pg in opt.param_groups:  # linear warm-up then cosine decay
            pg["lr"] = 3e-3 * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
        b = torch.randint(0, rows.shape[0], (16,), generator=g)
        loss = loss_fn(model, rows[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def verdict(name: str, base: str, diffs: list[float], what: str) -> str:
    """Paired per-seed differences (same initialisation and batches): method minus baseline."""
    d = np.asarray(diffs)
    if bool((d < 0).all()):
        word = f"lower than {base} on every seed"
    elif bool((d > 0).all()):
        word = f"higher than {base} on every seed (does not beat it)"
    else:
        word = f"no consistent difference from {base} across seeds (does not beat it)"
    each = ", ".join(f"{x:+.4f}" for x in d)
    return f"- {name}: {what} {d.mean():+.4f} (paired, per seed: {each}): {word}."


def lm_losses():
    def ce(m, r):
        z, _ = m(r[:, :-1])
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), r[:, 1:].reshape(-1))

    def mix(m, r):
        z, _ = m(r[:, :-1])
        return mixce_loss(z, r[:, 1:], mixing=0.5)

    def emo(m, r):
        z, _ = m(r[:, :-1])
        return emo_loss(z, r[:, 1:], cost_embedding=m.wte.weight.detach(), mode="mle")

    return {"CE": ce, "MixCE (eta 0.5)": mix, "EMO (mode mle)": emo}


def part_lm(train_rows: torch.Tensor, held: torch.Tensor, steps: int, seeds: list[int]) -> tuple[str, list]:
    rows_out, raw = [], []
    for name, fn in lm_losses().items():
        bpb, d2, d4, secs = [], [], [], []
        for s in seeds:
            t = time.perf_counter()
            m = train(tiny(s), train_rows, steps, s, fn)
            secs.append(time.perf_counter() - t)
            bpb.append(bits_per_byte(m, held))
            texts = sample(m, 8, CTX, 1000 + s)
            d2.append(distinct(texts, 2))
            d4.append(distinct(texts, 4))
        raw.append((name, bpb))
        rows_out.append([name, f"{np.mean(bpb):.4f} ± {np.std(bpb):.4f}", f"{np.mean(d2):.3f}",
                         f"{np.mean(d4):.3f}", f"{np.mean(secs):.1f}"])
        print(rows_out[-1], flush=True)
    table = markdown_table(["objective", "held-out bits/byte (mean ± sd over seeds)", "distinct-2",
                            "distinct-4", "train s / run"], rows_out)
    base = dict(raw)["CE"]
    notes = [verdict(n, "CE", [a - b for a, b in zip(v, base, strict=True)], "bits/byte minus CE's")
             for n, v in raw if n != "CE"]
    return table + "\n\n" + "\n".join(notes), raw


def ece(probs: torch.Tensor, target: torch.Tensor, bins: int = 15) -> float:
    conf, pred = probs.max(-1)
    acc = (pred == target).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=probs.dtype)
    out = 0.0
    for lo, hi in itertools.pairwise(edges):
        sel = (conf > lo) & (conf <= hi)
        if bool(sel.any()):
            out += float(sel.double().mean()) * abs(float(acc[sel].mean()) - float(conf[sel].double().mean()))
    return out


def part_kd(train_rows: torch.Tensor, held: torch.Tensor, steps: int, seeds: list[int], k: int,
            teacher_name: str) -> str:
    teacher = load_model(teacher_name)
    tmod = teacher.module
    tmod.eval()
    with torch.no_grad():
        full_lp = torch.cat([torch.log_softmax(tmod(train_rows[i:i + 64, :-1])[0], -1)
                             for i in range(0, train_rows.shape[0], 64)])  # (n, CTX, V)
        held_lp = torch.cat([torch.log_softmax(tmod(held[i:i + 64, :-1])[0], -1)
                             for i in range(0, held.shape[0], 64)])
    v = full_lp.shape[-1]

    class _Rows:  # the cache tool over the same windows the student trains on (BOS + 64 bytes each)
        vocab_size, max_context, name = v, CTX, teacher_name

        def forward(self, ids: torch.Tensor, past: object = None) -> tuple[torch.Tensor, None]:
            return tmod(ids)[0], None

    stream = train_rows[:, :-1].reshape(-1)
    caches = {
        "top-k": build_teacher_cache(_Rows(), stream, k=k, method="topk", window=CTX),
        "sampled": build_teacher_cache(_Rows(), stream, k=k, method="sample", window=CTX,
                                       generator=torch.Generator().manual_seed(7)),
    }
    n = train_rows.shape[0]
    results, per_seed = [], {}
    teacher_bpb = float(-held_lp.gather(-1, held[:, 1:, None]).mean()) / LN2
    for name in ("full KL", "top-k", "sampled"):
        kls, eces, bpbs = [], [], []
        for s in seeds:
            if name == "full KL":
                def fn(m, r, b):
                    z, _ = m(r[:, :-1])
                    lp = torch.log_softmax(z, -1)
                    return (full_lp[b].exp() * (full_lp[b] - lp)).sum(-1).mean()
            else:
                cache = caches[name]
                ids_all = cache.ids.long().view(n, CTX, k)
                w_all = cache.weights.float().view(n, CTX, k)

                def fn(m, r, b, ids_all=ids_all, w_all=w_all):
                    z, _ = m(r[:, :-1])
                    return sparse_kd_loss(z, ids_all[b], w_all[b])
            m = tiny(s)
            opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
            g = torch.Generator().manual_seed(s)
            m.train()
            for step in range(steps):
                for pg in opt.param_groups:
                    pg["lr"] = 3e-3 * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
                b = torch.randint(0, n, (16,), generator=g)
                loss = fn(m, train_rows[b], b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            m.eval()
            with torch.no_grad():
                lp = torch.cat([torch.log_softmax(m(held[i:i + 64, :-1])[0], -1)
                                for i in range(0, held.shape[0], 64)])
                kls.append(float((held_lp.exp() * (held_lp - lp)).sum(-1).mean()))
                eces.append(ece(lp.exp().reshape(-1, v), held[:, 1:].reshape(-1)))
                bpbs.append(float(-lp.gather(-1, held[:, 1:, None]).mean()) / LN2)
        per_seed[name] = kls
        storage = 4 * v if name == "full KL" else caches[name].nbytes // caches[name].ids.shape[0]
        results.append([name, storage, f"{np.mean(kls):.4f} ± {np.std(kls):.4f}", f"{np.mean(eces):.4f}",
                        f"{np.mean(bpbs):.4f}"])
        print(results[-1], flush=True)
    table = markdown_table(["teacher targets", "bytes / position", "held-out KL(teacher||student) nats",
                            "student ECE (top-1)", "student bits/byte"], results)
    notes = [verdict("sampled", "top-k", [a - b for a, b in zip(per_seed["sampled"], per_seed["top-k"],
                                                                  strict=True)], "KL minus top-k's"),
             verdict("sampled", "full KL", [a - b for a, b in zip(per_seed["sampled"], per_seed["full KL"],
                                                                    strict=True)], "KL minus full KD's")]
    return (table + f"\n\nTeacher `{teacher_name}` held-out bits/byte on the same windows: "
            f"{teacher_bpb:.4f}.\n\n"
            + "\n".join(notes))


def part_memory() -> str:
    n, d, v = 2048, 128, 16384
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, d, generator=g).requires_grad_(True)
    w = (torch.randn(v, d, generator=g) * 0.05).requires_grad_(True)
    y = torch.randint(0, v, (n,), generator=g)
    ids = torch.randint(0, v, (n, 12), generator=g)
    tw = torch.rand(n, 12, generator=g)
    tw = tw / tw.sum(1, keepdim=True)

    def run(f):
        def go():
            h.grad = w.grad = None
            loss = f()
            loss.backward()
            return float(loss.detach())
        return go

    cases = [
        ("MixCE", run(lambda: mixce_loss(h @ w.T, y, mixing=0.5)),
         run(lambda: linear_mixce(h, w, y, mixing=0.5))),
        ("sparse KD (K=12)", run(lambda: sparse_kd_loss(h @ w.T, ids, tw)),
         run(lambda: linear_sparse_kd(h, w, ids, tw))),
    ]
    rows = []
    for name, ref, fused in cases:
        lr, mr = peak_extra_mb(ref)
        lf, mf = peak_extra_mb(fused)
        tr, tf = timeit(ref, repeat=2), timeit(fused, repeat=2)
        rows.append([name, f"{mr:.0f}", f"{mf:.0f}", f"{mr / max(mf, 1e-9):.1f}x", f"{tr:.3f}", f"{tf:.3f}",
                     f"{tf / tr:.2f}", f"{abs(lr - lf) / abs(lr):.1e}"])
        print(rows[-1], flush=True)
    return (f"N={n} tokens, D={d}, V={v} (fp32 logits = {n * v * 4 / 2**20:.0f} MB), forward + backward.\n\n"
            + markdown_table(["loss", "logits path peak MB", "fused peak MB", "memory ratio", "logits s",
                              "fused s", "time fused/logits", "rel. loss diff"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--teacher", default="bytegpt-6l", help="bundled teacher of part 2 (default bytegpt-6l)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    train_rows = windows(load_bytes("train-sample.bin", 256 * 1024), CTX)
    held = windows(load_bytes("heldout.bin", 32 * 1024), CTX)
    print(f"train windows {train_rows.shape}, held-out windows {held.shape}", flush=True)
    lm_table, _ = part_lm(train_rows, held, args.steps, seeds)
    kd_table = part_kd(train_rows[:1024], held, args.steps, seeds, args.k, args.teacher)
    mem_table = part_memory()
    load = os.getloadavg()
    body = (
        f"Shared machine (load average {load[0]:.1f} on 2 cores during the run; timings indicative only). "
        f"{args.steps} AdamW steps of 16 windows x {CTX} bytes per run, seeds {seeds}; wall time "
        f"{time.perf_counter() - t0:.0f} s.\n\n"
        "### 1. CE vs MixCE vs EMO: tiny ByteGPT (2 layers, 64 wide) from scratch\n\n"
        "Held-out: first 32 KiB of data/corpus/heldout.bin. "
        f"Distinct-n over 8 samples of {CTX} bytes.\n\n{lm_table}\n\n"
        f"### 2. Distillation from {args.teacher} at matched storage (K = "
        f"{args.k} slots a position for top-k and sampled)\n\n{kd_table}\n\n"
        f"### 3. Fused paths vs the logits path\n\n{mem_table}\n"
    )
    print(body)
    if not args.no_record:
        record("objectives", "More training objectives: MixCE / EMO vs CE, sparse-logit KD, fused memory",
               f"python benchmarks/objectives.py --steps {args.steps} --seeds {args.seeds} --k {args.k} "
               f"--teacher {args.teacher}",
               body)


if __name__ == "__main__":
    main()
