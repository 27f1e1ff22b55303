"""``entropykit compress`` / ``entropykit decompress``: lossless compression with a language model.

The library side is ``entropykit.codec``; this module only parses arguments, shows a
progress bar (bytes/s and the running bits/byte) and writes the output atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from entropykit._io import atomic_output, open_input
from entropykit.cli._common import add_force, add_model, check_outputs, load_model, renamed, require
from entropykit.precision import PRECISIONS

SUFFIX = ".ekz"

COMPRESS_EXAMPLES = """examples:
  entropykit compress notes.txt                      # -> notes.txt.ekz (the bundled default model)
  entropykit compress data.bin -o data.ekz --force   # overwrite an existing output
  entropykit compress big.log --model bytegpt-small  # a faster, smaller model
  cat notes.txt | entropykit compress - -o - > notes.ekz
  entropykit compress notes.txt --format json        # sizes, bits/byte, speed as JSON
  entropykit compress notes.txt --window 1024        # more context (slower; sliding cache by default)
  entropykit compress notes.txt --no-match           # the model alone (no match model mixed in)

The output is only as portable as the model's arithmetic: decompress on the same kind of machine
(same CPU family, same torch); every chunk carries a checksum, so a mismatch fails loudly.
"""

DECOMPRESS_EXAMPLES = """examples:
  entropykit decompress notes.txt.ekz                # -> notes.txt
  entropykit decompress notes.ekz -o notes.txt --force
  entropykit decompress notes.ekz -o - | less
  entropykit decompress notes.ekz --model ./my-bytegpt   # the model the file names is not bundled
"""


def register(subparsers: Any) -> None:
    c = subparsers.add_parser(
        "compress",
        help="compress a file losslessly with a language model (range coding)",
        description=(
            "Compress FILE losslessly: each byte/token is range-coded under the model's next-token\n"
            "distribution, so the output costs the model's cross-entropy of the file in bits, plus a\n"
            "small container (model identity, chunk checksums, SHA-256 of the original). The progress\n"
            "bar shows bytes/s and the running bits/byte."
        ),
        epilog=COMPRESS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(c, f"output file (default: FILE{SUFFIX}; '-' for standard output)")
    add_model(c)
    c.add_argument("--chunk-size", type=int, default=None, metavar="BYTES",
                   help="bytes per independently decodable chunk (default: 4096)")
    c.add_argument("--group", type=int, default=None, metavar="N",
                   help="chunks coded together in one batch (default: up to 32)")
    c.add_argument("--window", type=int, default=None, metavar="TOKENS",
                   help="context window in tokens (default: min(512, the model's context); with the "
                        "sliding cache min(768, the model's context))")
    c.add_argument("--cache", choices=("auto", "slide", "reprime"), default="auto",
                   help="how the model's context moves along a chunk (recorded in the file): slide = a "
                        "sliding KV cache with a BOS sink, every token computed once (rotary models such "
                        "as bytegpt-general); reprime = restart from the last half window when full; "
                        "auto = slide where the model can, else reprime")
    c.add_argument("--no-match", action="store_true",
                   help="do not mix the match model into the model's predictions (by default each chunk's "
                        "repeats, beyond the window too, are predicted by the token that followed the last "
                        "occurrence of the last 6 tokens, with a learned weight; recorded in the file)")
    c.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="arithmetic of the bundled ByteGPT models while coding (recorded in the file): "
                        "int8kv = bfloat16 with an 8-bit KV cache read by a fused C kernel (fastest; "
                        "needs a C compiler on first use), bfloat16, float32; auto = int8kv, else "
                        "bfloat16, where the CPU multiplies bf16 in hardware, else float32")
    c.set_defaults(func=run_compress)

    d = subparsers.add_parser(
        "decompress",
        help="restore a file made by 'entropykit compress'",
        description=(
            "Decompress FILE made by 'entropykit compress'. The container names the model (and its\n"
            "weights hash): a damaged file, another format version or a different model is an error\n"
            "(exit status 2), never wrong output. The output appears only once fully verified."
        ),
        epilog=DECOMPRESS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(d, f"output file (default: FILE without {SUFFIX}, else FILE.out; '-' for standard output)")
    d.add_argument("--model", default=None,
                   help="model name or path (default: the model named in the file)")
    d.set_defaults(func=run_decompress)


def _common(p: argparse.ArgumentParser, output_help: str) -> None:
    p.add_argument("file", metavar="FILE", help="input file ('-' for standard input)")
    p.add_argument("-o", "--output", default=None, metavar="OUT", help=output_help)
    add_force(p, "OUT")
    p.add_argument("--format", choices=("text", "json"), default="text", help="summary format")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: on a terminal)")
    p.add_argument("-j", "--workers", type=int, default=None, metavar="N",
                   help="groups of chunks processed in parallel (default: the number of CPUs)")


def _bar(args: argparse.Namespace, desc: str, total: int | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=True if args.no_progress else None, dynamic_ncols=True)


class _Progress:
    """The library's ``progress(done_bytes, coded_bits)`` callback driving a tqdm bar."""

    def __init__(self, bar: Any) -> None:
        self.bar, self.done = bar, 0

    def __call__(self, done: int, bits: float) -> None:
        self.bar.update(done - self.done)
        self.done = done
        if done:
            self.bar.set_postfix_str(f"{bits / done:.3f} bits/byte", refresh=False)


def _report(args: argparse.Namespace, summary: dict[str, Any], line: str) -> None:
    out = sys.stderr if summary["output"] == "-" else sys.stdout
    print(json.dumps(summary, indent=2) if args.format == "json" else line, file=out)


def run_compress(args: argparse.Namespace) -> int:
    from entropykit.codec import DEFAULT_CHUNK_SIZE, can_slide, compress_stream, resolve_precision

    output = args.output or ("-" if args.file == "-" else args.file + SUFFIX)
    for option in ("--chunk-size", "--group", "--window", "--workers"):
        require(getattr(args, option[2:].replace("-", "_")), option)
    check_outputs(args, ("-o" if args.output else "output", output))  # fail before the slow part
    size = None if args.file == "-" else Path(args.file).stat().st_size if Path(args.file).is_file() else None
    with open_input(args.file) as src:
        model = load_model(args.model)
        try:
            precision = resolve_precision(model, args.precision)
        except ValueError as exc:
            raise renamed(exc, {"precision": "--precision"}) from None
        slide = {"auto": None, "slide": True, "reprime": False}[args.cache]
        if slide and not can_slide(model):
            raise ValueError(f"--cache slide needs a model with rotary positions (e.g. bytegpt-general), "
                             f"got {model.name}")
        t0 = time.perf_counter()
        with atomic_output(output, force=args.force, option="-o") as dst, _bar(args, "compress", size) as bar:
            progress = _Progress(bar)
            try:
                written = compress_stream(
                    src, dst, model,
                    chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE, group=args.group, window=args.window,
                    precision=precision, workers=args.workers, progress=progress, slide=slide,
                    match=not args.no_match,
                )
            except ValueError as exc:
                raise renamed(exc, {"chunk_size": "--chunk-size", "group": "--group", "window": "--window",
                                    "workers": "--workers", "precision": "--precision",
                                    "slide": "--cache"}) from None
            n = progress.done
        seconds = time.perf_counter() - t0
    summary = {
        "input": args.file, "output": output, "model": model.identity, "precision": precision,
        "match": not args.no_match, "input_bytes": n,
        "output_bytes": written, "bits_per_byte": 8 * written / n if n else None,
        "ratio": written / n if n else None, "seconds": round(seconds, 3),
        "bytes_per_second": n / seconds if seconds > 0 else None,
    }
    bpb = f"{8 * written / n:.3f} bits/byte" if n else "empty input"
    _report(args, summary, f"{args.file} ({n} bytes) -> {output} ({written} bytes, {bpb}) "
                           f"in {seconds:.1f} s with {model.identity} ({precision})")
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    from entropykit.codec import ContainerError, container_info, decompress_stream

    if args.output:
        output = args.output
    elif args.file == "-":
        output = "-"
    else:
        output = args.file[: -len(SUFFIX)] if args.file.endswith(SUFFIX) and len(args.file) > len(SUFFIX) \
            else args.file + ".out"
    require(args.workers, "--workers")
    check_outputs(args, ("-o" if args.output else "output", output))
    with open_input(args.file) as src:
        info: dict[str, Any] = {}
        if src.seekable():  # a damaged header is reported by decompress_stream itself
            with contextlib.suppress(ContainerError):
                info = container_info(src)
            src.seek(0)
        t0 = time.perf_counter()
        total = info.get("original_length")
        with atomic_output(output, force=args.force, option="-o") as dst, \
                _bar(args, "decompress", total) as bar:
            n = decompress_stream(src, dst, args.model, workers=args.workers, progress=_Progress(bar))
        seconds = time.perf_counter() - t0
    in_bytes = None if args.file == "-" else Path(args.file).stat().st_size
    summary = {
        "input": args.file, "output": output, "model": info.get("model"), "precision": info.get("precision"),
        "input_bytes": in_bytes, "output_bytes": n,
        "seconds": round(seconds, 3), "bytes_per_second": n / seconds if seconds > 0 else None,
    }
    how = f" with {info['model']} ({info['precision']})" if info else ""
    _report(args, summary, f"{args.file} -> {output} ({n} bytes) in {seconds:.1f} s{how}")
    return 0
