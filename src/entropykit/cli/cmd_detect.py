"""``entropykit detect`` and ``entropykit detect-eval``: membership / machine-text scores of files."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from entropykit._io import atomic_write, read_input, utf8_warning
from entropykit.cli._common import (
    add_force,
    add_model,
    check_outputs,
    folder_files,
    load_model,
    renamed,
    require,
    warn,
)

# entropykit.detect.METHODS without importing torch (--help): name -> (kind, reference, parameters).
# tests/cli/test_cli_detect.py keeps it equal to the registry.
METHODS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "loss": ("membership", "none", ()),
    "reference": ("membership", "required", ()),
    "zlib": ("membership", "none", ()),
    "min_k": ("membership", "none", ("k",)),
    "min_k_plus_plus": ("membership", "none", ("k",)),
    "dc_pdd": ("membership", "none", ("frequencies", "a")),
    "binoculars": ("machine", "required", ()),
    "fast_detect_gpt": ("machine", "optional", ()),
    "entropy_gap": ("machine", "optional", ()),
}

DETECT_EXAMPLES = """conventions: higher = more likely a training member (loss, reference, zlib, min_k,
min_k_plus_plus, dc_pdd) or more likely machine-generated (binoculars, fast_detect_gpt, entropy_gap).

examples:
  entropykit detect notes.txt essay.txt --method min_k_plus_plus
  entropykit detect a.txt --method reference --reference bytegpt-small --json
  entropykit detect a.txt --method binoculars --model bytegpt-small --reference bytegpt-6l
      # performer = --model, observer = --reference (the stronger assignment for the bundled pair)
  entropykit detect a.txt --method dc_pdd --frequency-corpus corpus/*.txt --save-frequencies freq.json
  entropykit detect a.txt --method dc_pdd --frequencies freq.json
  entropykit detect a.txt --method entropy_gap        # also prints the zero-shot test's p-value
  entropykit detect essay.txt --method loss --slide    # a long text: every token computed once
"""

EVAL_EXAMPLES = """examples:
  entropykit detect-eval --positives members/ --negatives nonmembers/ --method min_k_plus_plus
  entropykit detect-eval --positives machine/ --negatives human/ --method fast_detect_gpt \\
      --roc roc.png --json
  (--plot is the same as --roc; results are printed before the plot is written)
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        required=True,
        choices=list(METHODS),
        metavar="METHOD",
        help="detection score: " + ", ".join(METHODS),
    )
    add_model(p, "scoring model")
    p.add_argument("--reference", default=None, help="second model (reference / observer / sampling model)")
    p.add_argument(
        "--k", type=float, default=None, help="fraction of lowest tokens for min_k[_plus_plus] (default 0.2)"
    )
    p.add_argument("--a", type=float, default=None, help="dc_pdd clipping bound (default 0.01)")
    p.add_argument("--frequencies", default=None, help="dc_pdd: token-frequency table (JSON) to load")
    p.add_argument(
        "--frequency-corpus",
        nargs="+",
        default=None,
        metavar="FILE",
        help="dc_pdd: build the frequency table from these reference-corpus files",
    )
    p.add_argument("--save-frequencies", default=None, metavar="PATH",
                   help="dc_pdd: write the table built from --frequency-corpus here")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default: about 2048 tokens a pass)")
    p.add_argument("--slide", action="store_true",
                   help="long texts: slide a KV cache (with a BOS attention sink) instead of strided "
                        "windows, every token computed once (ByteGPTs with rotary positions, e.g. the "
                        "default; --reference too)")
    p.add_argument("--json", action="store_true", help="JSON output (same as --format json)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_force(p)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "detect",
        help="membership / machine-text scores of text files",
        description="Score each file with a membership-inference or machine-text detection method.",
        epilog=DETECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="text files ('-' = standard input)")
    _add_common(p)
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="also print a verdict: flagged when score > threshold (see detect-eval / calibrate)",
    )
    p.set_defaults(func=run)
    e = subparsers.add_parser(
        "detect-eval",
        help="AUC and TPR@FPR of a detection method on two folders of texts",
        description="Score every file of --positives (members / machine) and --negatives (non-members / "
        "human), print ROC-AUC and TPR at 1%% and 0.1%% FPR, and write the ROC curve as a PNG.",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--positives", required=True, help="folder of positive texts (members / machine)")
    e.add_argument("--negatives", required=True, help="folder of negative texts (non-members / human)")
    _add_common(e)
    e.add_argument("--roc", "--plot", dest="roc", default=None, metavar="PNG",
                   help="ROC plot path (default roc-METHOD.png)")
    e.add_argument("--no-roc", action="store_true", help="do not write the ROC plot")
    e.set_defaults(func=run_eval)


def _check_options(args: argparse.Namespace, outputs: list[tuple[str, str | None]]) -> None:
    """Every option checked against --method before any model loads or any text is scored."""
    _, reference, params = METHODS[args.method]
    bad = [f"--{k}" for k in ("k", "a") if getattr(args, k) is not None and k not in params]
    if (args.frequencies or args.frequency_corpus) and "frequencies" not in params:
        bad.append("--frequencies/--frequency-corpus")
    if args.reference is not None and reference == "none":
        bad.append("--reference")
    if bad:
        raise ValueError(f"{', '.join(bad)} do(es) not apply to --method {args.method}")
    if reference == "required" and args.reference is None:
        raise ValueError(f"--method {args.method} needs a second model: --reference MODEL")
    if "frequencies" in params and not (args.frequencies or args.frequency_corpus):
        raise ValueError(f"--method {args.method} needs a token-frequency table: --frequencies FILE.json "
                         "or --frequency-corpus FILE... (reference texts to count tokens in)")
    if args.frequencies and args.frequency_corpus:
        raise ValueError("give --frequencies or --frequency-corpus, not both")
    if args.save_frequencies and not args.frequency_corpus:
        raise ValueError("--save-frequencies needs --frequency-corpus (the table it saves is built from it)")
    require(args.batch_size, "--batch-size")
    if args.k is not None and not 0 < args.k <= 1:
        raise ValueError(f"--k must be in (0, 1], got {args.k}")
    check_outputs(args, ("--save-frequencies", args.save_frequencies), *outputs)


def _read(args: argparse.Namespace, files: list[str]) -> list[bytes]:
    texts = [read_input(f) for f in files]
    bad = [f for f, t in zip(files, texts) if utf8_warning(t, f)]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        warn(args, f"not valid UTF-8 text (binary or another encoding): {shown}")
    return texts


def _params(args: argparse.Namespace) -> dict[str, Any]:
    from entropykit.detect import FrequencyTable

    params: dict[str, Any] = {k: v for k, v in {"k": args.k, "a": args.a}.items() if v is not None}
    if args.frequency_corpus:
        table = FrequencyTable.from_texts([read_input(f) for f in args.frequency_corpus], _load(args.model))
        if args.save_frequencies:
            table.save(args.save_frequencies)
        params["frequencies"] = table
    elif args.frequencies:
        try:
            params["frequencies"] = FrequencyTable.load(args.frequencies)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"--frequencies {args.frequencies}: {exc}") from None
    return params


_MODELS: dict[tuple[str | None, str], Any] = {}


def _load(name: str | None, option: str = "--model") -> Any:
    if (name, option) not in _MODELS:
        _MODELS[name, option] = load_model(name, option)
    return _MODELS[name, option]


def _score(args: argparse.Namespace, texts: list[bytes]) -> tuple[Any, dict[str, Any]]:
    """Scores of ``texts`` under the arguments' method and models, plus extra per-text columns
    (entropy_gap: the signed log-perplexity gap and the zero-shot test's p-value)."""
    from entropykit.detect import entropy_gap_test, score_texts

    params = _params(args)
    model = _load(args.model)
    reference = None if args.reference is None else _load(args.reference, "--reference")
    progress = False if args.no_progress else None
    names = {"k": "--k", "a": "--a", "batch_size": "--batch-size", "reference": "--reference",
             "slide": "--slide"}
    try:
        if args.method == "entropy_gap":
            gap, pval = entropy_gap_test(
                texts, model, reference=reference, batch_size=args.batch_size, progress=progress,
                slide=args.slide,
            )
            return -abs(gap), {"log_ppl_gap": gap, "p_value": pval}
        scores = score_texts(
            texts,
            args.method,
            model,
            reference=reference,
            batch_size=args.batch_size,
            progress=progress,
            slide=args.slide,
            **params,
        )
    except ValueError as exc:
        raise renamed(exc, names) from None
    return scores, {}


def _describe(args: argparse.Namespace) -> dict[str, Any]:
    kind = METHODS[args.method][0]
    what = "a training member" if kind == "membership" else "machine-generated"
    return {
        "method": args.method,
        "kind": kind,
        "convention": f"higher = more likely {what}",
        "model": _load(args.model).identity,
        "reference": None if args.reference is None else _load(args.reference, "--reference").identity,
    }


def run(args: argparse.Namespace) -> int:
    _check_options(args, [])
    texts = _read(args, args.files)
    scores, extra_cols = _score(args, texts)
    rows = []
    for i, f in enumerate(args.files):
        row: dict[str, Any] = {"file": f, "score": float(scores[i])}
        row.update({k: float(v[i]) for k, v in extra_cols.items()})
        if args.threshold is not None:
            row["flagged"] = bool(scores[i] > args.threshold)
        rows.append(row)
    if args.json or args.format == "json":
        print(json.dumps({**_describe(args), "threshold": args.threshold, "results": rows}, indent=2))
        return 0
    info = _describe(args)
    print(
        f"# {info['method']} ({info['convention']}); model {info['model']}"
        + (f", reference {info['reference']}" if info["reference"] else "")
    )
    for row in rows:
        extra = "".join(f"  {k}={row[k]:.4g}" for k in extra_cols)
        verdict = ("  FLAGGED" if row["flagged"] else "  -") if "flagged" in row else ""
        print(f"{row['score']:12.6f}{extra}{verdict}  {row['file']}")
    return 0


def _roc_png(curves: tuple[Any, Any], auc: float, title: str) -> bytes:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        msg = "the ROC plot needs matplotlib: pip install 'entropykit[plot]' (or pass --no-roc)"
        raise ValueError(msg) from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr = curves
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot(fpr, tpr, drawstyle="steps-post", label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(
        xlabel="false-positive rate", ylabel="true-positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def run_eval(args: argparse.Namespace) -> int:
    from entropykit.detect import calibrate, evaluate, roc_curve

    if args.no_roc and args.roc:
        raise ValueError("--roc/--plot and --no-roc contradict each other")
    roc_path = None if args.no_roc else args.roc or f"roc-{args.method}.png"
    _check_options(args, [("--roc", roc_path)])
    pos_files = folder_files(args.positives, "--positives")
    neg_files = folder_files(args.negatives, "--negatives")
    pos, neg = _read(args, pos_files), _read(args, neg_files)
    scores, _ = _score(args, pos + neg)
    s_pos, s_neg = scores[: len(pos)], scores[len(pos) :]
    result = evaluate(s_pos, s_neg)
    tpr_at = result["tpr_at_fpr"]
    assert isinstance(tpr_at, dict)
    thresholds = {f: calibrate(s_neg, f) for f in tpr_at}
    if args.json or args.format == "json":
        out = {
            **_describe(args),
            "auc": result["auc"],
            "tpr_at_fpr": {str(k): v for k, v in tpr_at.items()},
            "threshold_at_fpr": {str(k): v for k, v in thresholds.items()},
            "n_positives": len(pos),
            "n_negatives": len(neg),
            "roc": roc_path,
            "scores": {
                "positives": dict(zip(pos_files, s_pos.tolist())),
                "negatives": dict(zip(neg_files, s_neg.tolist())),
            },
        }
        print(json.dumps(out, indent=2), flush=True)
    else:
        info = _describe(args)
        print(f"method      {info['method']} ({info['convention']})")
        ref = f"  reference {info['reference']}" if info["reference"] else ""
        print(f"model       {info['model']}{ref}")
        print(f"texts       {len(pos)} positives, {len(neg)} negatives")
        print(f"ROC-AUC     {result['auc']:.4f}")
        for f, t in tpr_at.items():
            print(f"TPR@{f:g}FPR".ljust(12) + f"{t:.4f}   (flag score > {thresholds[f]:.6g})")
        if roc_path:
            print(f"ROC plot    {roc_path}", flush=True)
    if roc_path:  # after the results: a late write error loses nothing
        fpr, tpr, _ = roc_curve(s_pos, s_neg)
        png = _roc_png((fpr, tpr), float(result["auc"]), f"{args.method}")  # type: ignore[arg-type]
        atomic_write(roc_path, png, force=args.force, option="--roc")
    return 0
