"""``entropykit`` entry point.

Subcommands live in ``entropykit/cli/cmd_<name>.py``; each module defines
``register(subparsers) -> None``, which adds its parser and sets ``func=run`` on it. They are
discovered automatically, so adding a subcommand touches no shared file.

Errors: a user error (bad input, missing file, bad argument value) prints one line on stderr and
exits with status 2; ``--debug`` shows the traceback instead. ``--verbose`` lets Hugging Face
libraries print their loading bars and warnings (quiet by default).

Startup imports no torch (``--help`` is instant): subcommand modules import the library inside
``run``; the top-level ``entropykit`` package re-exports lazily.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from entropykit import __version__

EXAMPLES = """examples:
  entropykit score README.md --html report.html     # per-token surprisal/entropy of a text
  entropykit measure --logits 2 1 0 --bits          # information measures of one distribution
  entropykit <command> --help                       # each command's options and examples
"""

USER_ERRORS = (ValueError, TypeError, OSError, KeyError, RuntimeError, UnicodeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entropykit",
        description="Entropy, cross-entropy and divergences for training, decoding and auditing models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"entropykit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from entropykit import cli

    parser.add_argument("--verbose", action="store_true", help="let Hugging Face print its loading output")
    for info in sorted(pkgutil.iter_modules(cli.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"entropykit.cli.{info.name}").register(sub)
    for command in sub.choices.values():  # accepted after the subcommand too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="let Hugging Face print its loading bars and warnings")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Hugging Face libraries read this when first imported (entropykit's loader is quiet anyway).
    os.environ["TRANSFORMERS_VERBOSITY"] = "info" if args.verbose else os.environ.get(
        "TRANSFORMERS_VERBOSITY", "error"
    )
    hf_logging: Any = None
    level = 0
    if args.verbose and "transformers" in sys.modules:  # already imported (a caller's process)
        hf_logging = importlib.import_module("transformers.utils.logging")
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_info()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("entropykit: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            raise
        msg = str(exc) or type(exc).__name__
        print(f"entropykit {args.command}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        if hf_logging is not None:
            hf_logging.set_verbosity(level)


if __name__ == "__main__":
    sys.exit(main())
