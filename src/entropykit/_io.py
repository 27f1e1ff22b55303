"""Small I/O helpers shared by the library and the CLI: atomic writes and input reading."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, force: bool = True) -> Iterator[BinaryIO]:
    """A binary file object whose content appears at ``path`` only if the ``with`` block succeeds.

    The bytes go to a temporary file in the same directory, which is fsynced and renamed over
    ``path`` at the end; on any error it is deleted, so a reader sees either the old file or the
    complete new one, never a partial write. With ``force=False`` an existing file is never
    replaced (checked before and, by a hard link, again at the rename): ``FileExistsError``.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory")
    if not force and target.exists():
        raise FileExistsError(f"{target} exists (use --force to overwrite)")
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (or keep the old file's).
        os.fchmod(fd, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, target)
        else:
            try:  # a link fails if the target appeared meanwhile: never overwrite without force
                os.link(tmp, target)
            except FileExistsError:
                raise FileExistsError(f"{target} exists (use --force to overwrite)") from None
            except OSError:  # a file system without hard links
                os.replace(tmp, target)
            Path(tmp).unlink(missing_ok=True)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, force: bool = True) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` atomically; see :func:`atomic_output`."""
    with atomic_output(path, force=force) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """An input file opened for binary reading; ``-`` is standard input.

    Raises ``FileNotFoundError``/``IsADirectoryError`` with the path named, so the CLI can print
    one clear line.
    """
    if path == "-":
        yield sys.stdin.buffer
        return
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file")
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with open(p, "rb") as f:
        yield f


def read_input(path: str) -> bytes:
    """Read a whole input file as bytes; ``-`` reads standard input (errors as :func:`open_input`)."""
    with open_input(path) as f:
        return f.read()
