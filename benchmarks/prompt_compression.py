"""Prompt compression methods vs random dropping (entropykit.lm.compress_prompt, lm.prompt.METHODS).

Held-out passages of the bundled corpus (``data/corpus/heldout.bin``, never trained on) are cut into a
context (CTX bytes) and the continuation that follows it (CONT bytes). The context is compressed at a
ratio r (fraction of its tokens dropped) by each registered method, or by dropping random units to the
same token budget; the cost is how much the model's surprisal of the continuation grows, in bits per
continuation byte, over the uncompressed context:

    delta = bits/byte(continuation | compressed context) - bits/byte(continuation | full context)

Lower is better; "no context" shows the ceiling. Random is the mean over SEEDS draws per passage; the
comparison is paired: per passage, delta(random) - delta(method), then its mean and standard error over
passages (> 0: the method beats random). No method reads the continuation (the contrastive score looks
at the prompt's own later text and the model's own greedy continuation of it). Line breaks are kept by
every method (``keep_layout``), so no method joins lines. Methods:

- surprisal: Selective Context, units of lowest self-information per token dropped first;
- llmlingua: LLMLingua's budget controller (sentences, coarse=1.4) + iterative compression of 64-token
  segments given the compressed prefix; "llmlingua, coarse=0": the iterative stage alone;
- contrastive: drop the units whose removal least raises the surprisal of the next 16 tokens (16
  tokens of greedy lookahead appended).

    python benchmarks/prompt_compression.py            # word 40, phrase 24, token 12 passages, 2 workers
    python benchmarks/prompt_compression.py --quick    # 6 passages per unit
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch

from _common import markdown_table, record
from entropykit.lm import load_model, prompt, score
from entropykit.lm.prompt import compress_prompt

CTX, CONT, SEEDS = 384, 128, 3
RATIOS = (0.3, 0.5, 0.7)
PASSAGES = {"word": 40, "phrase": 24, "token": 12}
METHODS: dict[str, dict[str, Any]] = {
    "surprisal": {"method": "surprisal"},
    "llmlingua": {"method": "llmlingua"},
    "llmlingua, coarse=0": {"method": "llmlingua", "coarse": 0.0},
    "contrastive": {"method": "contrastive"},
}
ROOT = Path(__file__).resolve().parents[1]


def passages(n: int) -> list[tuple[bytes, bytes]]:
    data = (ROOT / "data" / "corpus" / "heldout.bin").read_bytes()
    out, step = [], max((len(data) - CTX - CONT) // n, CTX + CONT)
    for i in range(n):
        a = i * step
        chunk = data[a:a + CTX + CONT]
        text = chunk.decode("utf-8", errors="ignore").encode()  # whole characters only
        out.append((text[:CTX], text[CTX:CTX + CONT]))
    return out


def cont_bpb(model, ctx: bytes, cont: bytes) -> float:
    r = score(ctx + cont, model)
    start = len(ctx)
    mask = r.offsets[:, 0] >= start
    return float(r.surprisal_bits[mask].astype(np.float64).sum() / len(cont))


def se(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / np.sqrt(v.size))


_MODEL: Any = None


def _init(name: str) -> None:
    global _MODEL
    torch.set_num_threads(1)
    _MODEL = load_model(name)
    # The contrastive score of a unit does not depend on the ratio: compute it once per passage
    # (the same deterministic function, so the same numbers as three separate calls).
    orig, memo = prompt._contrastive, {}

    def cached(p: Any, window: int, lookahead: int) -> np.ndarray:
        key = (p.data, tuple(p.spans), p.forced.tobytes(), window, lookahead)
        if key not in memo:
            memo.clear()
            memo[key] = orig(p, window, lookahead)
        return memo[key]

    prompt._contrastive = cached


def _passage(task: tuple[str, int, bytes, bytes]) -> dict[str, Any]:
    """Deltas of every method (and the random seeds' mean) at every ratio for one passage."""
    unit, i, c, x = task
    model = _MODEL
    full = cont_bpb(model, c, x)
    out: dict[str, Any] = {"unit": unit, "full": full, "none": cont_bpb(model, b"", x)}
    for ratio in RATIOS:
        for name, kw in METHODS.items():
            cp = compress_prompt(c, model, ratio=ratio, unit=unit, **kw)
            out[name, ratio] = (cont_bpb(model, cp.text.encode(), x) - full, cp.ratio)
        draws, ach = [], []
        for k in range(SEEDS):
            g = torch.Generator().manual_seed(1000 * i + k)
            rp = compress_prompt(c, model, ratio=ratio, unit=unit, method="random", generator=g)
            ach.append(rp.ratio)
            draws.append(cont_bpb(model, rp.text.encode(), x) - full)
        out["random", ratio] = (float(np.mean(draws)), float(np.mean(ach)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="bytegpt-6l")
    ap.add_argument("--units", default="word,phrase,token")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (1 torch thread each)")
    args = ap.parse_args()
    units = args.units.split(",")
    tasks = [(unit, i, c, x) for unit in units
             for i, (c, x) in enumerate(passages(6 if args.quick else PASSAGES[unit]))]
    t0 = time.perf_counter()
    import multiprocessing as mp

    with mp.get_context("fork").Pool(args.jobs, _init, (args.model,)) as pool:
        results = []
        for r in pool.imap(_passage, tasks):
            results.append(r)
            print(f"{r['unit']} passage {len(results)}/{len(tasks)} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    identity = load_model(args.model).identity
    rows, notes = [], []
    for unit in units:
        res = [r for r in results if r["unit"] == unit]
        full = np.array([r["full"] for r in res])
        none = np.array([r["none"] for r in res])
        notes.append(f"{unit}: {len(res)} passages, continuation bits/byte with the full context "
                     f"{full.mean():.4f}, with none {none.mean():.4f} (Δ {none.mean() - full.mean():+.4f})")
        for ratio in RATIOS:
            rr = np.array([r["random", ratio][0] for r in res])
            rows.append([unit, ratio, f"random ({SEEDS} seeds)",
                         f"{np.mean([r['random', ratio][1] for r in res]):.3f}",
                         f"{rr.mean():+.4f} ± {se(rr):.4f}", "", "", ""])
            for name in METHODS:
                o = np.array([r[name, ratio][0] for r in res])
                d = rr - o  # paired: random minus method, per passage
                z = d.mean() / se(d) if se(d) > 0 else float("inf")
                verdict = "beats" if z > 2 else "loses" if z < -2 else "tie"
                rows.append([unit, ratio, name, f"{np.mean([r[name, ratio][1] for r in res]):.3f}",
                             f"{o.mean():+.4f} ± {se(o):.4f}", f"{d.mean():+.4f} ± {se(d):.4f}",
                             f"{(d > 0).sum()}/{d.size}", f"{verdict} ({z:+.1f} s.e.)"])
    elapsed = time.perf_counter() - t0
    table = markdown_table(
        ["unit", "ratio", "method", "achieved ratio", "Δ (± s.e.)", "random − method, paired (± s.e.)",
         "passages won", "vs random"], rows)
    body = (
        f"Model `{identity}`; held-out passages of `data/corpus/heldout.bin`, context {CTX} bytes, "
        f"continuation {CONT} bytes. Δ = continuation bits/byte with the compressed context minus with "
        f"the full one (lower is better); ratio = fraction of the context's tokens dropped (tokens = "
        f"bytes for this model; a token unit is a whole UTF-8 character). Random: mean of {SEEDS} seeds "
        f"per passage; 'vs random' = beats/loses when the paired mean is more than 2 s.e. from 0.\n\n"
        + "\n".join(f"- {n}" for n in notes) + f"\n\n{table}\n\n"
        f"Wall time {elapsed:.0f} s ({args.jobs} nice'd worker processes, 1 thread each). Load average "
        f"at the end: {os.getloadavg()[0]:.1f} (shared machine).\n"
    )
    print(body)
    cmd = "python benchmarks/prompt_compression.py" + (" --quick" if args.quick else "")
    if args.units != "word,phrase,token":
        cmd += f" --units {args.units}"
    record("prompt_compression",
           "Prompt compression (Selective Context, LLMLingua, contrastive) vs random dropping "
           "(lm.compress_prompt)", cmd, body)


if __name__ == "__main__":
    main()
