"""Decoding benchmark: our logits processors against transformers' warpers, and generate()'s overhead.

Per-call latency at batch B in {1, 32} and vocabulary V in {32000, 151936}: for every rule with a
transformers counterpart both run in this process on the same scores (``randn * 2.5``, float32) and
the table gives the median latency, our/theirs ratio (goal <= 1.0, <= 0.5 for Typical and TopH), the
number of rows whose kept set or values differ, and the peak extra memory of one call. Rules
without a counterpart are timed alone. Then ``generate``'s per-step overhead relative to the model's
forward pass on the bundled model (B = 1, KV cache).

    python benchmarks/decoding.py            # full size, records the "decoding" section of RESULTS.md
    python benchmarks/decoding.py --quick    # small sizes, prints only
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, peak_extra_mb, record, timeit
from entropykit import decoding as d


def rules() -> list[tuple[str, object, object, float]]:
    from transformers.generation import logits_process as lp

    return [
        ("Temperature(0.7)", lp.TemperatureLogitsWarper(0.7), d.Temperature(0.7), 1.0),
        ("TopK(50)", lp.TopKLogitsWarper(50), d.TopK(50), 1.0),
        ("TopP(0.9)", lp.TopPLogitsWarper(0.9), d.TopP(0.9), 1.0),
        ("MinP(0.05)", lp.MinPLogitsWarper(0.05), d.MinP(0.05), 1.0),
        ("Epsilon(3e-4)", lp.EpsilonLogitsWarper(3e-4), d.Epsilon(3e-4), 1.0),
        ("Eta(3e-4)", lp.EtaLogitsWarper(3e-4), d.Eta(3e-4), 1.0),
        ("Typical(0.9)", lp.TypicalLogitsWarper(0.9), d.Typical(0.9), 0.5),
        ("TopH(0.4)", lp.TopHLogitsWarper(0.4), d.TopH(0.4), 0.5),
    ]


def differing_rows(a: torch.Tensor, b: torch.Tensor) -> int:
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    same = (fa == fb).all(-1) & torch.where(fa & fb, a == b, True).all(-1)
    return int((~same).sum())


def bench_processors(sizes: list[tuple[int, int]], repeat: int) -> tuple[str, list[str]]:
    ids = torch.zeros(1, 1, dtype=torch.long)
    rows, misses = [], []
    for b, v in sizes:
        scores = torch.randn(b, v, generator=torch.Generator().manual_seed(0)) * 2.5
        for name, theirs, ours, goal in rules():
            t_theirs = timeit(lambda w=theirs, s=scores: w(ids, s), repeat=repeat)  # type: ignore[misc]
            t_ours = timeit(lambda p=ours, s=scores: p(ids, s), repeat=repeat)  # type: ignore[misc]
            ref, m_theirs = peak_extra_mb(lambda w=theirs, s=scores: w(ids, s))  # type: ignore[misc]
            out, m_ours = peak_extra_mb(lambda p=ours, s=scores: p(ids, s))  # type: ignore[misc]
            ratio = t_ours / t_theirs
            ok = ratio <= goal
            if not ok:
                misses.append(f"{name} B={b} V={v}: {ratio:.2f}x (goal {goal}x)")
            rows.append(
                [
                    name,
                    b,
                    v,
                    t_theirs * 1e3,
                    t_ours * 1e3,
                    ratio,
                    f"<= {goal}",
                    "yes" if ok else "NO",
                    f"{differing_rows(ref, out)}/{b}",
                    m_theirs,
                    m_ours,
                ]
            )
            print(*rows[-1], flush=True)
        for name, proc in [
            ("TopNSigma(1.0)", d.TopNSigma(1.0)),
            ("XTC(0.1, 0.5)", d.XTC(0.1, 0.5, torch.Generator().manual_seed(0))),
            ("DynamicTemperature(1, 0.5)", d.DynamicTemperature(1.0, 0.5)),
        ]:
            t = timeit(lambda p=proc, s=scores: p(ids, s), repeat=repeat)  # type: ignore[misc]
            _, mem = peak_extra_mb(lambda p=proc, s=scores: p(ids, s))  # type: ignore[misc]
            rows.append([name, b, v, "-", t * 1e3, "-", "-", "-", "-", "-", mem])
            print(*rows[-1], flush=True)
    header = [
        "rule",
        "B",
        "V",
        "transformers ms",
        "ours ms",
        "ratio",
        "goal",
        "met",
        "rows differing",
        "theirs MB",
        "ours MB",
    ]
    return markdown_table(header, rows), misses


def bench_generate(n_tokens: int) -> str:
    from entropykit.lm import load_model

    model = load_model()
    prompt = torch.tensor([[256, *b"The entropy of a distribution is "]])
    configs = [
        ("multinomial, stats", {}, True),
        ("multinomial, no stats", {}, False),
        ("min-p 0.05 + T 0.8", {"processors": [d.MinP(0.05), d.Temperature(0.8)]}, True),
        ("top-H 0.4", {"processors": [d.TopH(0.4)]}, True),
        ("Mirostat v2 tau=3", {"sampler": d.Mirostat(tau=3.0)}, True),
        ("entropix", {"sampler": d.EntropixSampler()}, True),
    ]
    rows = []
    for name, kw, stats in configs:
        d.generate(
            model, prompt, max_new_tokens=8, generator=torch.Generator().manual_seed(0), **kw
        )  # warm-up
        if "sampler" in kw and hasattr(kw["sampler"], "reset"):
            kw["sampler"].reset()
        out = d.generate(
            model,
            prompt,
            max_new_tokens=n_tokens,
            generator=torch.Generator().manual_seed(0),
            return_stats=stats,
            **kw,
        )
        fwd = out.forward_seconds / out.steps
        over = (out.total_seconds - out.forward_seconds) / out.steps
        rows.append([name, out.steps, fwd * 1e3, over * 1e3, over / fwd])
        print(*rows[-1], flush=True)
    return markdown_table(
        ["configuration", "steps", "forward ms/step", "overhead ms/step", "overhead/forward"], rows
    )


def _large_surprisal(large: object, seq: torch.Tensor, n_new: int) -> float:
    """Mean surprisal (bits) of the last n_new tokens of seq under the large model."""
    window = seq[:, -512:]
    logits, _ = large.forward(window)  # type: ignore[attr-defined]
    lp = torch.log_softmax(logits[0, :-1].double(), -1)
    s = -lp.gather(-1, window[0, 1:, None]).squeeze(-1) / math.log(2)
    return float(s[-n_new:].mean())


def bench_switch(n_tokens: int, prompts: list[bytes]) -> str:
    """EntropySwitch demo: bytegpt-small writes, bytegpt-6l takes over when the rolling entropy is high."""
    from entropykit.lm import load_model

    small, large = load_model("bytegpt-small"), load_model()
    rows = []
    sec0: list[float] = []
    q0: list[float] = []
    for i, prompt in enumerate(prompts):  # the baseline: the large model alone, plain generate
        ids = torch.tensor([[256, *prompt]])
        base = d.generate(
            large,
            ids,
            processors=[d.MinP(0.05)],
            max_new_tokens=n_tokens,
            generator=torch.Generator().manual_seed(i),
            return_stats=False,
        )
        sec0.append(base.total_seconds)
        q0.append(_large_surprisal(large, base.sequences, base.steps))
    m = len(prompts)
    rows.append(["bytegpt-6l alone (generate)", 1.0, 0.0, 0.0, sum(sec0) / m, sum(q0) / m])
    print(*rows[-1], flush=True)
    for label, thr in [
        ("switch, threshold +inf (small always)", 1e9),
        ("switch 1.5 bits", 1.5),
        ("switch 2.5 bits", 2.5),
        ("switch 3.5 bits", 3.5),
        ("switch, threshold -1 (large always)", -1.0),
    ]:
        fr, pc, fl, sec, q = [], [], [], [], []
        for i, prompt in enumerate(prompts):
            sw = d.EntropySwitch(
                small, large, window=5, threshold=thr, hysteresis=0.5, processors=[d.MinP(0.05)]
            )
            ids = torch.tensor([[256, *prompt]])
            out = sw.generate(ids, max_new_tokens=n_tokens, generator=torch.Generator().manual_seed(i))
            fr.append(out.large_fraction)
            pc.append(out.pass_cost_saved)
            fl.append(out.flop_saved)
            sec.append(out.seconds)
            q.append(_large_surprisal(large, out.sequence, len(out.new_tokens)))
        m = len(prompts)
        rows.append([label, sum(fr) / m, sum(pc) / m, sum(fl) / m, sum(sec) / m, sum(q) / m])
        print(*rows[-1], flush=True)
    return markdown_table(
        [
            "decoding",
            "large-model tokens",
            "pass cost saved",
            "token-FLOPs saved",
            "seconds/sequence",
            "large-model surprisal of output (bits/token)",
        ],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes; do not record")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    training_at_start = _training_running()
    if args.quick:
        sizes, repeat, n_tokens = [(1, 4000), (4, 32000)], 3, 32
    else:
        sizes, repeat, n_tokens = [(1, 32000), (32, 32000), (1, 151936), (32, 151936)], 5, 256
    table, misses = bench_processors(sizes, repeat)
    gen = bench_generate(n_tokens)
    heldout = (Path(__file__).resolve().parents[1] / "data" / "corpus" / "heldout.bin").read_bytes()
    n_prompts = 2 if args.quick else 4
    prompts = [heldout[i * 50_000 : i * 50_000 + 200] for i in range(1, n_prompts + 1)]
    switch = bench_switch(32 if args.quick else 200, prompts)
    body = (
        "Per-call latency (median), ours against transformers' warper on the same float32 scores "
        "(`randn * 2.5`); ratio = ours / transformers; `rows differing` = rows whose kept set or kept "
        "values differ from transformers'. Peak extra memory of one call.\n\n"
        f"{table}\n\n"
        + ("Below goal: " + "; ".join(misses) + "\n\n" if misses else "Every rule meets its goal.\n\n")
        + f"`generate` on the bundled bytegpt-6l, B = 1, KV cache, {n_tokens} new tokens: model forward "
        "time per step against everything else per step (processors, sampler, statistics, bookkeeping).\n\n"
        f"{gen}\n\n"
        f"`EntropySwitch` demo: bytegpt-small writes while its 5-token rolling entropy is low, bytegpt-6l "
        f"takes over above the threshold (hysteresis 0.5 bit); min-p 0.05 sampling, {len(prompts)} held-out "
        "prompts of 200 bytes, mean over prompts. Pass cost = forward passes weighted by parameter count "
        "(memory-bound decoding); token-FLOPs count the large model's catch-up in full. Output quality "
        "proxy: mean surprisal of the generated bytes under bytegpt-6l (lower = closer to the large "
        f"model's own choices).\n\n{switch}\n"
    )
    print(body)
    if not args.quick:
        models = Path(d.__file__).resolve().parents[1] / "lm" / "models"
        trained = {m: (models / m / "training.json").exists() for m in ("bytegpt-6l", "bytegpt-small")}
        body += "\nWeights: " + ", ".join(
            f"{m} {'trained' if t else 'random placeholder'}" for m, t in trained.items()
        )
        body += ".\n"
        if training_at_start or _training_running():
            body += (
                "\nNote: a model-training job shared the CPU during this run; absolute times are inflated.\n"
            )
        record(
            "decoding",
            "Decoding: logits processors and generate overhead",
            "python benchmarks/decoding.py" + (f" --threads {args.threads}" if args.threads else ""),
            body,
        )


def _training_running() -> bool:
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"train_model.py" in p.read_bytes():
                return True
        except OSError:
            continue
    return False


if __name__ == "__main__":
    main()
