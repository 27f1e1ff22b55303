"""Small I/O helpers shared by the library and the CLI: atomic writes and input reading."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, force: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    With ``force=False`` an existing file is never replaced: ``FileExistsError`` is raised instead.
    A reader sees either the old file or the complete new one, never a partial write.
    """
    target = Path(path)
    if not force and target.exists():
        raise FileExistsError(f"{target} exists (use --force to overwrite)")
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (or keep the old file's).
        os.fchmod(fd, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_input(path: str) -> bytes:
    """Read a whole input file as bytes; ``-`` reads standard input.

    Raises ``FileNotFoundError``/``IsADirectoryError`` with the path named, so the CLI can print
    one clear line.
    """
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file")
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return p.read_bytes()
