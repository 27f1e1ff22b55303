"""``entropykit score-corpus``: one summary row per document of a corpus, locally or on Ray, resumable."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from entropykit.cli._common import add_force, add_model, check_outputs, load_model, renamed, require, warn

EXAMPLES = """examples:
  entropykit score-corpus docs/ --out results.parquet                 # every .jsonl/.parquet/.txt/.md
  entropykit score-corpus data.jsonl --out scores.jsonl --detect min_k,zlib
  entropykit score-corpus DIR --out results.parquet --engine ray --workers 8
  entropykit score-corpus DIR --out r.parquet --engine ray --ray-address ray://head:10001

Rows keep the input order (index 0..n-1) and stable ids (--id-field, or FILE:LINE / FILE:ROW / FILE).
Finished shards are kept in OUT.parts/: rerun the same command after an interruption and only the
missing shards are scored (each part is checked against the content hash of its documents).
An unreadable file is reported with its path and skipped (--on-error skip) or stops the job (fail).
"""


class DetectScorer:
    """A ``score_corpus`` scorer: ``entropykit.detect.score_texts(texts, method, model)`` per shard.

    Picklable (Ray ships it to every worker); the reference model loads once per worker, on first use.
    """

    def __init__(self, method: str, reference: str | None = None) -> None:
        self.method = method
        self.reference = reference
        self._ref: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"method": self.method, "reference": self.reference, "_ref": None}

    def __call__(self, texts: list[Any], model: Any) -> Any:
        from entropykit.detect import METHODS, score_texts
        from entropykit.models import load_model as load

        ref = None
        if self.reference is not None and METHODS[self.method].reference != "none":
            if self._ref is None:
                self._ref = load(self.reference)
            ref = self._ref
        return score_texts(texts, self.method, model, reference=ref, progress=False)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score-corpus",
        help="per-document bits/byte, perplexity, entropy (and detection scores) of a whole corpus",
        description="Score every document of a corpus (JSON lines, Parquet, text files, or a directory of "
        "them) under a language model and write one summary row per document, in input order, to "
        "Parquet or JSON lines; locally or on Ray, resumable shard by shard.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="a .jsonl/.ndjson/.parquet/.txt/.md file or a directory")
    p.add_argument("--out", "-o", required=True, metavar="OUT", help="output .parquet or .jsonl file")
    add_model(p)
    p.add_argument("--engine", choices=("local", "ray", "dask"), default="local",
                   help="local: this process; ray: Ray Data actors; dask: a Dask client or process pool "
                        "(pip install 'entropykit[scale]')")
    p.add_argument("--workers", type=int, default=2,
                   help="Ray actors / Dask processes, one model each (default: 2)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="connect to a running Ray cluster (ray.init(address=ADDR)); default: a local Ray")
    p.add_argument("--shard-docs", type=int, default=64, metavar="N",
                   help="documents per shard: the unit of work and of resumption (default: 64)")
    p.add_argument("--text-field", default="text",
                   help="JSON field / Parquet column of the text (default: text)")
    p.add_argument("--id-field", default=None, help="JSON field / Parquet column of a document id")
    p.add_argument("--window", type=int, default=16, help="tokens in the window-entropy mean (default: 16)")
    p.add_argument("--stride", type=int, default=None,
                   help="tokens between window starts (default: context/2)")
    p.add_argument("--hwe-threshold", type=float, default=None, metavar="BITS",
                   help="high-window-entropy threshold in bits (default: 0.5*log2(vocabulary size))")
    p.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default="float32",
                   help="model arithmetic (see entropykit score --help)")
    p.add_argument("--detect", default=None, metavar="METHODS",
                   help="comma-separated entropykit.detect methods added as columns (e.g. loss,min_k,zlib)")
    p.add_argument("--reference", default=None, metavar="M",
                   help="the second model of --detect methods that take one (reference, binoculars)")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="an unreadable file: report and skip it (default) or stop the job")
    p.add_argument("--parts-dir", default=None, metavar="DIR", help="finished shards (default: OUT.parts)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    add_force(p, "--out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from entropykit.lm.corpus import score_corpus

    for value, option in ((args.workers, "--workers"), (args.shard_docs, "--shard-docs"),
                          (args.window, "--window"), (args.stride, "--stride"), (args.threads, "--threads")):
        require(value, option)
    check_outputs(args, ("--out", args.out))
    scorers: dict[str, Any] = {}
    if args.detect:
        from entropykit.detect import METHODS

        for m in (x.strip() for x in args.detect.split(",") if x.strip()):
            if m not in METHODS:
                raise ValueError(f"--detect: unknown method {m!r} (choose from {', '.join(METHODS)})")
            if METHODS[m].reference == "required" and args.reference is None:
                raise ValueError(f"--detect {m} needs --reference M (a second model)")
            scorers[m] = DetectScorer(m, args.reference)
    elif args.reference is not None:
        warn(args, "--reference has no effect without --detect")
    # the local engine loads the model here (errors name --model); Ray workers load it from the spec
    model = load_model(args.model) if args.engine == "local" else args.model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped files are reported below, from the result
        try:
            r = score_corpus(args.source, args.out, model=model, engine=args.engine, workers=args.workers,
                             shard_docs=args.shard_docs, text_field=args.text_field, id_field=args.id_field,
                             window=args.window, stride=args.stride, hwe_threshold=args.hwe_threshold,
                             precision=args.precision, scorers=scorers, on_error=args.on_error,
                             parts_dir=args.parts_dir, ray_address=args.ray_address, threads=args.threads,
                             progress=False if args.no_progress else None, force=args.force)
        except ValueError as exc:
            names = {"stride": "--stride", "window": "--window", "precision": "--precision",
                     "hwe_threshold": "--hwe-threshold", "source": "SOURCE", "out": "--out"}
            raise renamed(exc, names) from None
    for path, reason in r.skipped:
        warn(args, f"skipped {path}: {reason}")
    if r.failed_documents:
        warn(args, f"{r.failed_documents} document(s) could not be scored: see the 'error' column")
    print(f"scored {r.documents:,} documents ({r.shards} shards: {r.scored_shards} scored, "
          f"{r.reused_shards} reused) in {r.seconds:.1f} s ({r.docs_per_second:.1f} docs/s, "
          f"engine {r.engine}) -> {r.out}", file=sys.stderr)
    return 0
