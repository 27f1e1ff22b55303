"""``entropykit uncertainty``: how sure is the model of its answers, and does that predict its errors?"""

from __future__ import annotations

import argparse
import json
from typing import Any

from entropykit._io import atomic_write, read_input
from entropykit.cli._common import add_force, add_model, build, check_outputs, load_model, require, warn

# entropykit.uncertainty.METHODS without importing torch (--help); tests/cli/test_cli_uncertainty.py
# keeps the two equal.
METHODS = (
    "max_sequence_probability",
    "perplexity",
    "mean_surprisal",
    "max_surprisal",
    "mean_token_entropy",
    "max_token_entropy",
    "predictive_entropy",
    "predictive_entropy_normalised",
    "semantic_entropy",
    "discrete_semantic_entropy",
    "num_semantic_sets",
    "lexical_similarity",
    "eigval_laplacian",
    "degree",
    "eccentricity",
    "snne",
    "wsnne",
)

EXAMPLES = (
    """input: JSON Lines, one object per prompt: {"prompt": "...", "reference": "..."}
("answer" is accepted for "reference"; without references only the uncertainties are reported).

examples:
  entropykit uncertainty questions.jsonl                      # the bundled default model, 10 samples each
  entropykit uncertainty q.jsonl --samples 20 --temperature 0.8 --top-p 0.95 --seed 0
  entropykit uncertainty q.jsonl --methods semantic_entropy,max_sequence_probability --format json
  entropykit uncertainty q.jsonl --output per-prompt.jsonl --plot rejection.png

Per prompt: the greedy answer (its per-token statistics give the one-generation estimators) and
--samples sampled answers (the sample-based ones); an answer ends at --stop (default: a newline) or
after --max-new-tokens. With references: correct = exact match after normalisation (lower case, no
punctuation or articles), and per estimator the PRR (1 = errors ranked last, 0 = random) and the
AUROC of the uncertainty for errors. Estimators (higher = less certain): """
    + ", ".join(METHODS)
    + "."
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "uncertainty",
        help="uncertainty of a model's answers (semantic entropy, MSP, ...) and how well it predicts errors",
        description="Answer every prompt of a JSONL file greedily and by sampling, estimate the uncertainty "
        "of each answer with every estimator of entropykit.uncertainty and, given reference answers, "
        "evaluate the estimators by PRR and AUROC.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE.jsonl", help="prompts (and reference answers); '-' = standard input")
    add_model(p)
    p.add_argument(
        "--samples", type=int, default=10, metavar="N", help="sampled answers per prompt (default 10)"
    )
    p.add_argument(
        "--max-new-tokens",
        "-n",
        type=int,
        default=32,
        metavar="N",
        help="longest answer in tokens (default 32)",
    )
    p.add_argument(
        "--stop",
        default="\n",
        metavar="TEXT",
        help="characters that end an answer, each a single token (default: newline)",
    )
    p.add_argument("--temperature", "-t", type=float, default=None, metavar="T", help="sampling temperature")
    p.add_argument(
        "--top-k", type=int, default=None, metavar="K", help="sample from the K most likely tokens"
    )
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling mass P")
    p.add_argument("--min-p", type=float, default=None, metavar="P", help="keep tokens with p >= P * max p")
    p.add_argument("--methods", default=None, metavar="A,B", help="comma-separated estimators (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling (default 0)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument(
        "--output", "-o", default=None, metavar="OUT.jsonl", help="write one result per prompt here"
    )
    p.add_argument("--plot", default=None, metavar="PNG", help="rejection curves (needs references)")
    add_force(p)
    p.set_defaults(func=run)


def _read(path: str) -> list[dict[str, Any]]:
    raw = read_input(path).decode("utf-8", errors="replace")
    rows = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {i} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise ValueError(f'{path}: line {i} must be an object with a "prompt" string')
        ref = obj.get("reference", obj.get("answer"))
        if ref is not None and not isinstance(ref, str):
            raise ValueError(f'{path}: line {i}: "reference" must be a string, got {type(ref).__name__}')
        rows.append({"prompt": obj["prompt"], "reference": ref})
    if not rows:
        raise ValueError(f'{path}: no prompts (expected JSON Lines with a "prompt" per line)')
    return rows


def _methods(spec: str | None) -> list[str]:
    if spec is None:
        return list(METHODS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ValueError(f"--methods must be a comma-separated list of {', '.join(METHODS)}, got {spec!r}")
    return names


def _processors(args: argparse.Namespace) -> list[Any]:
    from entropykit.decoding import MinP, Temperature, TopK, TopP

    names = {"t": "--temperature", "k": "--top-k", "p": "--top-p", "min_p": "--min-p"}
    out: list[Any] = []
    if args.top_k is not None:
        out.append(build(TopK, names, args.top_k))
    if args.top_p is not None:
        out.append(build(TopP, names, args.top_p))
    if args.min_p is not None:
        out.append(build(MinP, names, args.min_p))
    if args.temperature is not None:
        out.append(build(Temperature, names, args.temperature))
    return out


def _stop_ids(lm: Any, stop: str) -> list[int]:
    ids = []
    for ch in stop:
        enc = lm.encode(ch).ids
        if len(enc) != 1:
            raise ValueError(f"--stop: {ch!r} is not a single token of the model")
        ids.append(enc[0])
    return ids


def run(args: argparse.Namespace) -> int:
    require(args.samples, "--samples")
    require(args.max_new_tokens, "--max-new-tokens")
    methods = _methods(args.methods)
    check_outputs(args, ("--output", args.output), ("--plot", args.plot))
    rows = _read(args.file)
    import torch

    from entropykit import uncertainty as unc
    from entropykit.decoding import Greedy, generate

    lm = load_model(args.model)
    processors = _processors(args)
    stops = _stop_ids(lm, args.stop) if args.stop else []
    gen = torch.Generator().manual_seed(args.seed)

    def text_of(ids: list[int]) -> str:
        return lm.decode([t for t in ids if t not in stops]).decode("utf-8", errors="replace")

    results = []
    for row in rows:
        prompt = torch.tensor([list(lm.prefix_ids) + lm.encode(row["prompt"]).ids])
        if prompt.shape[1] == 0:
            raise ValueError("a prompt is empty and the model has no BOS token to start from")
        greedy = generate(
            lm, prompt, sampler=Greedy(), max_new_tokens=args.max_new_tokens, stop=stops or None
        )
        assert greedy.stats is not None
        tokens = unc.Tokens.from_bits(greedy.stats.surprisal_bits[0], greedy.stats.entropy_bits[0])
        sampled = generate(
            lm,
            prompt.expand(args.samples, -1),
            processors=processors or None,
            max_new_tokens=args.max_new_tokens,
            stop=stops or None,
            generator=gen,
        )
        samples = unc.Samples.from_generation(sampled, text_of)
        samples = unc.Samples([s.strip() for s in samples.texts], samples.log_probs, samples.lengths)
        answer = text_of(greedy.new_tokens[0]).strip()
        scores = unc.estimate(unc.Answer(tokens, samples), methods)
        res: dict[str, Any] = {"prompt": row["prompt"], "answer": answer, "samples": samples.texts}
        if row["reference"] is not None:
            res["reference"] = row["reference"]
            res["correct"] = unc.normalize_answer(answer) == unc.normalize_answer(row["reference"])
        res["uncertainty"] = scores
        results.append(res)

    summary: dict[str, Any] = {"model": lm.identity, "prompts": len(results), "samples": args.samples}
    graded = [r for r in results if "correct" in r]
    evaluation: dict[str, dict[str, float]] = {}
    if graded:
        correct = [float(r["correct"]) for r in graded]
        summary["graded"] = len(graded)
        summary["accuracy"] = sum(correct) / len(correct)
        if 0 < sum(correct) < len(correct):
            for m in methods:
                u = [r["uncertainty"][m] for r in graded]
                evaluation[m] = {"prr": unc.prr(u, correct), "auroc": unc.auroc(u, [1 - c for c in correct])}
        else:
            warn(args, "every graded answer is right (or every one wrong): PRR and AUROC are undefined")
    if args.plot and not evaluation:
        raise ValueError("--plot needs references with both right and wrong answers")
    if args.format == "json":
        print(json.dumps({**summary, "evaluation": evaluation, "results": results}, indent=2), flush=True)
    else:
        print(
            f"# {summary['model']}: {len(results)} prompts, {args.samples} samples each"
            + (f"; accuracy {summary['accuracy']:.3f} on {len(graded)} graded" if graded else "")
        )
        for r in results:
            mark = "" if "correct" not in r else ("  [right]" if r["correct"] else "  [wrong]")
            shown = ", ".join(f"{m}={r['uncertainty'][m]:.3f}" for m in methods[:3])
            print(f"{r['prompt'][:40]!r} -> {r['answer'][:30]!r}{mark}  {shown}")
        if evaluation:
            print(f"{'estimator':32s} {'PRR':>8s} {'AUROC':>8s}")
            for m, ev in sorted(evaluation.items(), key=lambda kv: -kv[1]["prr"]):
                print(f"{m:32s} {ev['prr']:8.3f} {ev['auroc']:8.3f}")
    if args.output:
        body = "".join(json.dumps(r) + "\n" for r in results)
        atomic_write(args.output, body, force=args.force, option="--output")
    if args.plot:
        from entropykit.uncertainty import plots

        correct = [float(r["correct"]) for r in graded]
        png = plots.rejection_plot({m: [r["uncertainty"][m] for r in graded] for m in methods}, correct)
        atomic_write(args.plot, png, force=args.force, option="--plot")
    return 0
