"""``entropykit face``: FACE (Fourier analysis of cross-entropy) between two folders of texts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from entropykit._io import read_input
from entropykit.cli._common import add_force, add_model, build, check_outputs, folder_files, load_model

EXAMPLES = """The i-th file of A (sorted by path) is paired with the i-th file of B, up to the shorter folder.
Metrics (FACE, Yang et al. 2023): so (spectral overlap, 1 = same), corr (Pearson), spear (Spearman),
sam (spectral angle / pi, 0 = same).

examples:
  entropykit face human/ machine/
  entropykit face human/ machine/ --preprocess zscore --json
  entropykit face human/ machine/ --plot spectra.png --model bytegpt-small
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "face",
        help="FACE: compare two folders of texts by the spectra of their surprisal sequences",
        description="Score every text, take the spectrum of its per-token surprisal sequence and compare "
        "the spectra of folder A and folder B pair by pair with FACE's four metrics.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", metavar="DIR_A", help="folder of texts (e.g. human-written)")
    p.add_argument("b", metavar="DIR_B", help="folder of texts (e.g. model-written)")
    add_model(p, "scoring model")
    p.add_argument("--method", choices=["fft", "periodogram", "welch"], default="fft",
                   help="spectrum estimate (default fft, as FACE)")
    p.add_argument("--preprocess", choices=["none", "zscore", "minmax", "log", "logzs"], default="none",
                   help="transform of the surprisal sequence before the spectrum (FACE's options)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the two mean spectra as a PNG")
    p.add_argument("--json", action="store_true", help="JSON output with per-pair values")
    add_force(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs(args, ("--plot", args.plot))
    files_a, files_b = folder_files(args.a, "DIR_A"), folder_files(args.b, "DIR_B")
    if args.plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--plot needs matplotlib: pip install 'entropykit[plot]'")
    model = load_model(args.model)
    from entropykit.lm.fourier import face

    names = {"texts_a": "DIR_A", "texts_b": "DIR_B", "method": "--method", "preprocess": "--preprocess"}
    result = build(face, names, [read_input(f) for f in files_a], [read_input(f) for f in files_b], model,
                   method=args.method, preprocess=args.preprocess)
    n = len(result.metrics["so"])
    if args.json:
        out = {"model": model.identity, **result.to_dict(),
               "files": [[a, b] for a, b in zip(files_a[:n], files_b[:n], strict=True)]}
        print(json.dumps(out, indent=2))
    else:
        print(f"# FACE over {n} pairs ({args.method}, preprocess {args.preprocess}); model {model.identity}")
        for k, v in result.summary.items():
            print(f"{k:6s} {v:.4f}")
    if args.plot is not None:
        result.plot_png(args.plot, force=args.force)
    return 0
