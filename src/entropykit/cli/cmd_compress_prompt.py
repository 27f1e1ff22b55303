"""``entropykit compress-prompt``: drop the least informative words/phrases of a prompt."""

from __future__ import annotations

import argparse
import json
from typing import Any

from entropykit._io import atomic_write, read_input
from entropykit.cli._common import add_force, add_model, build, check_outputs, load_model

EXAMPLES = """examples:
  entropykit compress-prompt prompt.txt --ratio 0.5                 # drop half of the tokens
  entropykit compress-prompt prompt.txt --ratio 0.3 --unit phrase --keep "Question:" --json
  entropykit compress-prompt prompt.txt --ratio 0.5 --out short.txt
  entropykit compress-prompt prompt.txt --ratio 0.5 --method contrastive   # best against random dropping
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compress-prompt",
        help="shorten a prompt by dropping what the model can best do without (Selective Context, "
        "LLMLingua, contrastive)",
        description="Score the prompt's units with the model and drop the least informative until --ratio "
        "of its tokens are gone. Methods: surprisal (Selective Context: self-information), llmlingua "
        "(sentence budget + iterative compression given the compressed prefix), contrastive (how much "
        "removing a unit raises the surprisal of the text after it), random (baseline).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="prompt file ('-' = standard input)")
    p.add_argument("--ratio", type=float, default=0.5,
                   help="fraction of tokens to drop, in (0, 1) (default 0.5)")
    p.add_argument("--unit", choices=["token", "word", "phrase"], default="word", help="what is dropped")
    p.add_argument("--method", choices=["surprisal", "llmlingua", "contrastive", "random"],
                   default="surprisal", help="how units are scored (default surprisal)")
    p.add_argument("--rank", choices=["mean", "sum"], default="mean",
                   help="surprisal: rank units by bits per token (mean) or total bits (sum, "
                   "Selective Context)")
    p.add_argument("--keep", action="append", default=[], metavar="TEXT",
                   help="a substring that must survive (repeatable)")
    add_model(p, "scoring model")
    p.add_argument("--out", default=None, metavar="PATH", help="write the compressed prompt here")
    p.add_argument("--json", action="store_true", help="JSON output: text, achieved ratio, dropped units")
    add_force(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.ratio < 1:
        raise ValueError(f"--ratio must be in (0, 1), got {args.ratio}")
    if any(k == "" for k in args.keep):
        raise ValueError("--keep must be a non-empty string")
    check_outputs(args, ("--out", args.out))
    text = read_input(args.file)
    model = load_model(args.model)
    from entropykit.lm.prompt import compress_prompt

    cp = build(compress_prompt, {"ratio": "--ratio", "unit": "--unit", "keep": "--keep", "text": "FILE"},
               text, model, ratio=args.ratio, unit=args.unit, method=args.method, rank=args.rank,
               keep=args.keep)
    if args.out is not None:
        atomic_write(args.out, cp.text.encode("utf-8"), force=args.force, option="--out")
    if args.json:
        print(json.dumps({"model": model.identity, **cp.to_dict()}, indent=2))
    elif args.out is None:
        print(cp.text)
    return 0
