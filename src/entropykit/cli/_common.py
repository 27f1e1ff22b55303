"""What every subcommand shares: the output rule, option-named errors, warnings, model loading.

Nothing here imports torch at module level: ``--help`` must stay instant.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from entropykit._io import check_output

T = TypeVar("T")

# The bundled default model's name, for help texts: the same as ``entropykit.models.DEFAULT_MODEL``
# (tests/cli/test_cli_safety.py checks it), written here because importing models would import torch.
DEFAULT_MODEL = "bytegpt-general"


def add_force(p: argparse.ArgumentParser, what: str = "output files") -> None:
    """``-f/--force``: the one overwrite rule (an existing regular file is replaced only with it)."""
    p.add_argument("-f", "--force", action="store_true",
                   help=f"overwrite existing {what} (devices and FIFOs are written without it)")


def add_model(p: argparse.ArgumentParser, role: str = "model") -> None:
    """``-m/--model M``: the one model option (a bundled name, a ByteGPT directory, or a Hugging Face
    model name or directory; loaded by :func:`load_model`)."""
    p.add_argument("--model", "-m", default=None, metavar="M",
                   help=f"{role}: a bundled name (default {DEFAULT_MODEL}), a ByteGPT directory, or a "
                        "Hugging Face model name or directory")


def check_outputs(args: argparse.Namespace, *pairs: tuple[str, str | None]) -> None:
    """Validate every ``(option, path)`` output before any work (see ``entropykit._io.check_output``)."""
    for option, path in pairs:
        if path is not None:
            check_output(path, force=bool(getattr(args, "force", False)), option=option)


def warn(args: argparse.Namespace, message: str) -> None:
    """One warning line on standard error: ``entropykit CMD: warning: ...``."""
    print(f"entropykit {args.command}: warning: {message}", file=sys.stderr)


def renamed(exc: BaseException, names: Mapping[str, str]) -> ValueError:
    """``exc``'s message with a leading library parameter name (``t: ...``, ``p must ...``) replaced by
    the CLI option that set it (``--temperature: ...``); with one option, an unnamed message is
    prefixed by it."""
    msg = str(exc) or type(exc).__name__
    m = re.match(r"([A-Za-z_][\w]*)(:| must )", msg)
    if m and m.group(1) in names:
        return ValueError(names[m.group(1)] + msg[m.end(1):])
    if len(names) == 1:
        return ValueError(f"{next(iter(names.values()))}: {msg}")
    return ValueError(msg)


def build(ctor: Callable[..., T], names: Mapping[str, str], *a: Any, **kw: Any) -> T:
    """``ctor(*a, **kw)`` whose ValueError/TypeError name the CLI options (``names``: param -> option)."""
    try:
        return ctor(*a, **kw)
    except (ValueError, TypeError) as exc:
        raise renamed(exc, names) from None


def load_model(name: str | None, option: str = "--model") -> Any:
    """``entropykit.models.load_model`` with errors naming ``option`` instead of the parameter."""
    from entropykit.models import load_model as load

    try:
        return load(name)
    except ValueError as exc:
        msg = str(exc)
        if name is not None and msg.startswith(f"model {name!r}"):
            msg = f"{option} {name}" + msg[len(f"model {name!r}"):]
        elif msg.startswith("model: "):
            msg = f"{option}: " + msg[len("model: "):]
        raise ValueError(msg) from None


def require(value: Any, option: str, *, minimum: int = 1) -> None:
    """An integer option must be >= ``minimum`` (None = not given: fine)."""
    if value is not None and value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value}")


def given(args: argparse.Namespace, *names: str) -> list[str]:
    """The options among ``names`` (attribute names) that the user set (their default is None/False)."""
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) not in (None, False)]


def folder_files(path: str, what: str) -> list[str]:
    """The files under directory ``path`` (recursively, hidden ones skipped), sorted; errors name
    ``what`` (the option or argument)."""
    from pathlib import Path

    d = Path(path)
    if not d.is_dir():
        raise NotADirectoryError(f"{what}: {path} is not a directory")
    files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{what}: no files in {path}")
    return [str(f) for f in files]
