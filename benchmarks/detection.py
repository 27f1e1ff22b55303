"""Detection end to end: every method on a membership task and a machine-text task, plus throughput.

Tasks (bundled model = bytegpt-6l, second model = bytegpt-small, same byte tokenizer):

- membership: members = N passages of the model's training split (``data/corpus/train-sample.bin``),
  non-members = N passages of the held-out split (``heldout.bin``); the split is by document (a hash
  of the path), so both sides come from the same distribution (Python-docs reStructuredText).
- machine text: prompts = the first P bytes of N held-out passages; machine = L bytes sampled from
  the bundled model (T = 1, ``generate_passages``); human = the held-out L bytes that followed.

Passages are non-overlapping L-byte chunks of the documents, drawn uniformly with a fixed seed, from
all 34 training-sample and all 38 held-out documents (an earlier version kept half of the held-out
documents for DC-PDD's frequency table: 19 documents of non-members made the AUCs mostly a matter of
document topics). DC-PDD's reference corpus is the Python standard library's own source (``*.py``
under ``sysconfig``'s stdlib path, sorted, the first 2 MB): present on every machine and disjoint
from both splits. Binoculars runs with both role assignments of the pair (performer = the scoring
model, observer = the model whose distribution weighs the cross-perplexity, as in the reference
code). Anchors: the papers' reference formulas
(Min-K%++, Fast-DetectGPT analytic, Binoculars), written as in their repositories (float32, one text
per forward pass), run on the same texts: we report the largest score difference and the speed ratio.

    python benchmarks/detection.py                 # N = 200, L = 512, P = 128 (about 10 minutes)
    python benchmarks/detection.py --n 10 --no-record   # smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from _common import markdown_table, peak_extra_mb, record
from entropykit.detect import (
    METHODS,
    FrequencyTable,
    evaluate,
    generate_passages,
    score_stats,
    score_texts,
    token_statistics,
)
from entropykit.detect.scores import entropy_gap_pvalue, log_ppl_gap
from entropykit.lm import load_model
from entropykit.models import BUNDLED_DIR, LanguageModel

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


# --- data ------------------------------------------------------------------------------------------
def documents() -> tuple[list[bytes], list[bytes]]:
    """(training-split documents in train-sample.bin, held-out documents), rebuilt from split.json."""
    split = json.loads((CORPUS / "split.json").read_text())
    by_hash = sorted(split["train"], key=lambda d: hashlib.sha256(d[0].encode()).digest())
    sizes, total = [], 0
    for _, n in by_hash:  # the same greedy selection as scripts/build_corpus.py
        if total + n <= 512 * 1024:
            sizes.append(n)
            total += n
    out = []
    for name, sz in (("train-sample.bin", sizes), ("heldout.bin", [n for _, n in split["heldout"]])):
        data = (CORPUS / name).read_bytes()
        if sum(sz) != len(data):
            raise SystemExit(f"{name}: {len(data)} bytes, split.json says {sum(sz)}")
        bounds = np.cumsum([0, *sz])
        out.append([data[a:b] for a, b in itertools.pairwise(bounds)])
    return out[0], out[1]


def stdlib_corpus(limit: int = 2 * 2**20) -> list[bytes]:
    """The first ``limit`` bytes of the Python standard library's ``*.py`` files (sorted paths)."""
    out, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        data = path.read_bytes()
        out.append(data[: limit - total])
        total += len(out[-1])
        if total >= limit:
            break
    return out


def chunks(docs: list[bytes], size: int, n: int, rng: np.random.Generator) -> list[bytes]:
    pool = [d[i : i + size] for d in docs for i in range(0, len(d) - size + 1, size)]
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} passages of {size} bytes available, asked for {n}")
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]


# --- anchors: the papers' reference formulas, one text per forward pass, float32 -------------------
def _logits(model: LanguageModel, text: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[*model.prefix_ids, *model.encode(text).ids]])
    logits, _ = model.forward(ids[:, :-1])
    return logits[0], ids[0, 1:]


def anchor_min_k_plus_plus(model: LanguageModel, text: bytes, k: float = 0.2) -> float:
    # zjysteven/mink-plus-plus run.py
    logits, input_ids = _logits(model, text)
    probs, log_probs = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
    token_log_probs = log_probs.gather(dim=-1, index=input_ids.unsqueeze(-1)).squeeze(-1)
    mu = (probs * log_probs).sum(-1)
    sigma = (probs * torch.square(log_probs)).sum(-1) - torch.square(mu)
    mink_plus = (token_log_probs - mu) / sigma.sqrt()
    k_length = int(len(mink_plus) * k)
    return float(np.mean(np.sort(mink_plus.numpy())[:k_length]))


def anchor_fast_detect_gpt(model: LanguageModel, text: bytes) -> float:
    # baoguangsheng/fast-detect-gpt get_sampling_discrepancy_analytic (reference = scoring model)
    logits, labels = _logits(model, text)
    lprobs_score = torch.log_softmax(logits, dim=-1)
    probs_ref = torch.softmax(logits, dim=-1)
    log_likelihood = lprobs_score.gather(dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    mean_ref = (probs_ref * lprobs_score).sum(dim=-1)
    var_ref = (probs_ref * torch.square(lprobs_score)).sum(dim=-1) - torch.square(mean_ref)
    return float((log_likelihood.sum() - mean_ref.sum()) / var_ref.sum().sqrt())


def anchor_binoculars(performer: LanguageModel, observer: LanguageModel, text: bytes) -> float:
    # ahans30/Binoculars: ppl (performer) / x_ppl (observer probs vs performer logits), negated
    p_logits, labels = _logits(performer, text)
    o_logits, _ = _logits(observer, text)
    ppl = torch.nn.functional.cross_entropy(p_logits, labels).item()
    x_ppl = (-(torch.softmax(o_logits, -1) * torch.log_softmax(p_logits, -1)).sum(-1)).mean().item()
    return -ppl / x_ppl


# --- runs ------------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    t = time.perf_counter()
    out, mb = peak_extra_mb(fn)
    return out, time.perf_counter() - t, mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="texts per class (default 200)")
    ap.add_argument("--bytes", type=int, default=512, help="passage length in bytes (default 512)")
    ap.add_argument("--prompt-bytes", type=int, default=128, help="prompt length for generation (128)")
    ap.add_argument("--model", default="bytegpt-6l")
    ap.add_argument("--second", default="bytegpt-small", help="reference / observer model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--extra-temperature", type=float, default=0.8,
                    help="also evaluate machine text sampled at this temperature (0 = skip; default 0.8)")
    ap.add_argument("--n-timed", type=int, default=40, help="texts for throughput and anchor timings (40)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--no-record", action="store_true", help="print only, do not update RESULTS.md")
    args = ap.parse_args()
    command = "python benchmarks/detection.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if k != "no_record" and v != ap.get_default(k)
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    model, second = load_model(args.model), load_model(args.second)
    cards = []
    for name in (args.model, args.second):
        dirs = (Path(name), BUNDLED_DIR / name)
        card = next((d / "training.json" for d in dirs if (d / "training.json").exists()), None)
        info = json.loads(card.read_text()) if card else {}
        bpb = next((v for k, v in info.items() if k.startswith("heldout_bits_per_byte")), None)
        cards.append(f"{name}: " + (f"held-out {bpb} bits/byte, {info.get('steps')} steps" if card else
                                    "no training.json (placeholder or copied weights)"))
    train_docs, held_docs = documents()
    members = chunks(train_docs, args.bytes, args.n, rng)
    nonmembers = chunks(held_docs, args.bytes, args.n, rng)
    pairs = chunks(held_docs, args.prompt_bytes + args.bytes, args.n, rng)
    prompts = [p[: args.prompt_bytes] for p in pairs]
    human = [p[args.prompt_bytes :] for p in pairs]
    t0 = time.perf_counter()
    machine = generate_passages(prompts, args.bytes, seed=args.seed, model=model, batch_size=args.n)
    gen_s = time.perf_counter() - t0
    extra_t = args.extra_temperature
    machine_t = (generate_passages(prompts, args.bytes, seed=args.seed, model=model, batch_size=args.n,
                                   temperature=extra_t) if extra_t else [])
    freq = FrequencyTable.from_texts(stdlib_corpus(), model)
    params: dict[str, dict[str, Any]] = {"dc_pdd": {"frequencies": freq}}
    runs = [(name, None if m.reference == "none" else (second if m.reference == "required" else None))
            for name, m in METHODS.items()]
    runs += [("fast_detect_gpt", second), ("entropy_gap", second)]  # two-model variants

    def label(name: str, ref: LanguageModel | None) -> str:
        m = METHODS[name]
        extra = f" (k={m.params['k']})" if "k" in m.params else ""
        return name + extra + (f" [ref {ref.name}]" if ref is not None else "")

    # Statistics once per (task, reference) pair; every method's score derives from them.
    texts = {"membership": members + nonmembers, "machine": machine + human}
    if extra_t:
        texts["machine_t"] = machine_t + human
    stats = {
        (task, ref): token_statistics(tx, model, None if ref is None else second, batch_size=args.batch_size,
                                      progress=False)
        for task, tx in texts.items() for ref in (None, second.name)
    }
    rows: dict[str, list[list[Any]]] = {task: [] for task in texts}
    for task in texts:
        for name, ref in runs:
            s = score_stats(stats[task, None if ref is None else ref.name], name, **params.get(name, {}))
            r = evaluate(s[: args.n], s[args.n :])
            rows[task].append([label(name, ref), METHODS[name].kind, r["auc"], r["tpr_at_fpr"][0.01],
                               r["tpr_at_fpr"][0.001]])
    # Throughput: each method end to end through score_texts on a subset (checked against the above).
    sub = texts["membership"][: args.n_timed // 2] + texts["membership"][args.n : args.n + args.n_timed // 2]
    mem_peak = 0.0
    for row, (name, ref) in zip(rows["membership"], runs):
        s, secs, mb = timed(lambda n=name, r=ref: score_texts(
            sub, n, model, reference=r, batch_size=args.batch_size, progress=False, **params.get(n, {})))
        key = ("membership", None if ref is None else ref.name)
        full = score_stats(stats[key], name, **params.get(name, {}))
        idx = list(range(args.n_timed // 2)) + list(range(args.n, args.n + args.n_timed // 2))
        assert np.allclose(s, full[idx], rtol=1e-9, atol=1e-12), name
        mem_peak = max(mem_peak, mb)
        row.append(len(sub) / secs)
        print(row, flush=True)
    # Binoculars with the roles swapped: performer = the second model, observer = the scoring model.
    swapped = f"binoculars [performer {second.name}, observer {model.name}]"
    for task, tx in texts.items():
        st = token_statistics(tx, second, model, batch_size=args.batch_size, progress=False)
        s = score_stats(st, "binoculars")
        r = evaluate(s[: args.n], s[args.n :])
        rows[task].append([swapped, "machine", r["auc"], r["tpr_at_fpr"][0.01], r["tpr_at_fpr"][0.001],
                           *([float("nan")] if task == "membership" else [])])
    rows_a, rows_b = rows["membership"], rows["machine"]
    texts_b = texts["machine"]
    pv = np.array([entropy_gap_pvalue(s) for s in stats["machine", None]])
    test_row = [float(np.mean(pv[args.n :] < 0.05)), float(np.mean(pv[: args.n] < 0.05)),
                float(np.median(pv[args.n :])), float(np.median(pv[: args.n]))]
    # Calibration diagnostic: signed gap log-ppl - mean entropy (nats/byte), per class and task.
    gm, gh = (np.array([log_ppl_gap(s) for s in stats["machine", None]][sl]) for sl in
              (slice(0, args.n), slice(args.n, None)))
    gap_line = (
        f"Signed gap log-perplexity - mean entropy under {args.model} (nats/byte, mean +- sd): "
        f"machine {gm.mean():+.3f} +- {gm.std():.3f}, human {gh.mean():+.3f} +- {gh.std():.3f} "
        "(0 = the model's own expectation; negative = text less surprising than the model expects, "
        "i.e. the model is underconfident on it)."
    )
    # Anchors (paper code, one text per pass) on a subset of task B texts.
    texts_b = texts_b[: args.n_timed // 2] + texts_b[args.n : args.n + args.n_timed // 2]
    anchor_rows = []
    for name, ours_fn, anchor_fn in (
        ("min_k_plus_plus", lambda: score_texts(texts_b, "min_k_plus_plus", model, progress=False),
         lambda: [anchor_min_k_plus_plus(model, t) for t in texts_b]),
        ("fast_detect_gpt", lambda: score_texts(texts_b, "fast_detect_gpt", model, progress=False),
         lambda: [anchor_fast_detect_gpt(model, t) for t in texts_b]),
        ("binoculars", lambda: score_texts(texts_b, "binoculars", model, reference=second, progress=False),
         lambda: [anchor_binoculars(model, second, t) for t in texts_b]),
    ):
        with torch.inference_mode():
            a, ta, _ = timed(anchor_fn)
        o, to, _ = timed(ours_fn)
        diff = float(np.max(np.abs(np.asarray(a) - o)))
        anchor_rows.append([name, diff, len(texts_b) / to, len(texts_b) / ta,
                            ta / to])
        print(anchor_rows[-1], flush=True)

    auc_a = {r[0]: r[2] for r in rows_a}
    mkpp = auc_a["min_k_plus_plus (k=0.2)"]
    goals = [
        f"- Min-K%++ membership AUC {mkpp:.3f} >= loss {auc_a['loss']:.3f} and zlib {auc_a['zlib']:.3f}: "
        + ("met" if mkpp >= max(auc_a["loss"], auc_a["zlib"]) else "**missed**"),
    ]
    for task, setting in (("machine", "T=1"), ("machine_t", f"T={extra_t}")):
        if task not in rows:
            continue
        auc = {r[0]: r[2] for r in rows[task]}
        for name in ("fast_detect_gpt", f"binoculars [ref {second.name}]", swapped):
            goals.append(f"- {name} machine-text AUC >= 0.9, machine text sampled at {setting}: "
                         f"{auc[name]:.3f} -> " + ("met" if auc[name] >= 0.9 else "**missed**"))
    body = "\n".join([
        f"Models: `{model.identity}` (scoring / performer / generator), `{second.identity}` (reference / "
        f"observer; `[ref M]` = M is the reference / observer); {'; '.join(cards)}. "
        f"{args.n} + {args.n} texts "
        f"of {args.bytes} bytes per task; seed {args.seed}. With {args.n} negatives, TPR@0.1%FPR is the TPR "
        "at zero false positives. Higher score = member / machine for every method.",
        "",
        "**Membership** (members: training-split passages; non-members: held-out passages, split by "
        f"document). texts/s = `score_texts` end to end on {args.n_timed} of the texts "
        f"(batch of {args.batch_size} windows, {torch.get_num_threads()} thread(s)).",
        "",
        markdown_table(["method", "kind", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "texts/s"], rows_a),
        "",
        f"**Machine text** (machine: {args.bytes} bytes sampled at T=1 from {args.model} after a "
        f"{args.prompt_bytes}-byte held-out prompt; human: the held-out continuation). Generation: "
        f"{len(machine) / gen_s:.1f} passages/s.",
        "",
        markdown_table(["method", "kind", "AUC", "TPR@1%FPR", "TPR@0.1%FPR"], rows_b),
        *([
            "",
            f"Secondary check, machine text sampled at T={extra_t} (same prompts and human texts; a "
            "generator whose decoding sharpens the model's distribution, as deployed LLMs' does):",
            "",
            markdown_table(["method", "kind", "AUC", "TPR@1%FPR", "TPR@0.1%FPR"], rows["machine_t"]),
        ] if extra_t else []),
        "",
        gap_line,
        "",
        "Entropy-gap zero-shot test (two-sided Azuma-Hoeffding p-value of \"sampled from the model\"): "
        f"human rejected at p<0.05: {test_row[0]:.2f}, machine rejected: {test_row[1]:.2f}; median p "
        f"human {test_row[2]:.3g}, machine {test_row[3]:.3g}.",
        "",
        f"**Anchors**: the papers' reference code (float32, one text per forward pass) vs ours (float64 "
        f"statistics, batched), on {args.n_timed} of the machine-text task's texts.",
        "",
        markdown_table(["method", "max abs score diff", "ours texts/s", "anchor texts/s", "speed-up"],
                       anchor_rows),
        "",
        f"Peak extra memory of one `score_texts` run: {mem_peak:.0f} MB.",
        "",
        "Goals:",
        *goals,
    ])
    print(body)
    if not args.no_record:
        record("detection", "Detection: membership inference and machine-text detection", command, body)


if __name__ == "__main__":
    main()
