"""Small I/O helpers shared by the library and the CLI: safe output paths, atomic writes, input reading.

One output rule for every writer (``check_output`` before the work, ``atomic_output`` at the end):

- ``-`` is standard output;
- a character device (``/dev/null``, a terminal) or a FIFO is written straight through: it is never
  replaced by a regular file, and needs no ``force``;
- a regular file, or a path that does not exist yet, is written atomically (a temporary file in the
  same directory, fsynced and renamed over it); an existing regular file is replaced only with
  ``force``;
- anything else (a directory, a block device, a socket) is refused.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_output", "atomic_write", "check_output", "is_stream", "open_input", "read_input", "utf8_warning",
]


def _where(path: str | os.PathLike[str], option: str | None) -> str:
    return f"{option} {os.fspath(path)}" if option else os.fspath(path)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def is_stream(path: str | os.PathLike[str]) -> bool:
    """True for ``-``, an existing character device or a FIFO: outputs written straight through."""
    if os.fspath(path) == "-":
        return True
    st = _stat(Path(path))
    return st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode))


def check_output(path: str | os.PathLike[str], *, force: bool = False, option: str | None = None) -> None:
    """Fail now, before any slow work, if ``path`` cannot be written under the output rule.

    Raises ``FileExistsError`` (an existing regular file without ``force``), ``IsADirectoryError``,
    ``FileNotFoundError`` (the parent directory is missing), ``PermissionError``/``OSError`` (a file
    cannot be created in the parent directory: tried with a probe file) or ``ValueError`` (a block
    device or socket). Messages start with ``option`` (e.g. ``--html``) and the path as given.

    >>> check_output("-")
    """
    where = _where(path, option)
    if os.fspath(path) == "-":
        return
    target = Path(path)
    st = _stat(target)
    if st is not None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{where}: is a directory")
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            if not os.access(target, os.W_OK):
                raise PermissionError(f"{where}: not writable")
            return
        if not stat.S_ISREG(mode):
            raise ValueError(f"{where}: not a regular file, character device or FIFO; refusing to write it")
        if not force:
            raise FileExistsError(f"{where}: exists (use --force to overwrite)")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{where}: directory {parent} does not exist")
    try:  # the one reliable test (read-only file systems, /proc, ACLs, root): create a file there
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise type(exc)(f"{where}: cannot create a file in {parent} ({exc.strerror or exc})") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, force: bool = True, option: str | None = None
) -> Iterator[BinaryIO]:
    """A binary file object whose content appears at ``path`` only if the ``with`` block succeeds.

    The bytes go to a temporary file in the same directory, which is fsynced and renamed over
    ``path`` at the end; on any error it is deleted, so a reader sees either the old file or the
    complete new one, never a partial write. With ``force=False`` an existing file is never
    replaced (checked before and, by a hard link, again at the rename): ``FileExistsError``.
    ``-`` (standard output), a character device or a FIFO is written straight through and never
    replaced (see the module docstring). Errors name ``path`` as given (after ``option``), never
    the temporary file.
    """
    where = _where(path, option)
    if os.fspath(path) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    st = _stat(target)
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            try:
                f = open(target, "wb")  # closed by the with below; errors name the path
            except OSError as exc:
                raise type(exc)(f"{where}: cannot write ({exc.strerror or exc})") from None
            with f:
                yield f
            return
        check_output(path, force=True, option=option)  # raises: a directory, block device, socket
    if not force and st is not None:
        raise FileExistsError(f"{where}: exists (use --force to overwrite)")
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise type(exc)(f"{where}: cannot write ({exc.strerror or exc})") from None
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (or keep the old file's).
        os.fchmod(fd, st.st_mode & 0o777 if st is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                raise type(exc)(f"{where}: cannot write ({exc.strerror or exc})") from None
        _commit(tmp, target, force, where)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _commit(tmp: str, target: Path, force: bool, where: str) -> None:
    """Move the finished temporary file onto ``target``, re-checking the target's kind."""
    st = _stat(target)
    if st is not None and not stat.S_ISREG(st.st_mode):  # appeared meanwhile: never replace it
        raise FileExistsError(f"{where}: became a non-regular file while writing; not replaced")
    try:
        if force:
            os.replace(tmp, target)
            return
        try:  # a link fails if the target appeared meanwhile: never overwrite without force
            os.link(tmp, target)
        except FileExistsError:
            raise FileExistsError(f"{where}: exists (use --force to overwrite)") from None
        except OSError:  # a file system without hard links
            os.replace(tmp, target)
        Path(tmp).unlink(missing_ok=True)
    except FileExistsError:
        raise
    except OSError as exc:
        raise type(exc)(f"{where}: cannot write ({exc.strerror or exc})") from None


def atomic_write(
    path: str | os.PathLike[str], data: bytes | str, *, force: bool = True, option: str | None = None
) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` under the output rule; see :func:`atomic_output`.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(d / "a.txt", "hi").read_text()
    'hi'
    """
    with atomic_output(path, force=force, option=option) as f:
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


def utf8_warning(data: bytes, name: str) -> str | None:
    """A one-line warning when ``data`` is not valid UTF-8 text (binary input), else None.

    >>> utf8_warning(b"caf\\xc3\\xa9", "x") is None, utf8_warning(b"\\xff\\x00", "x")[:22]
    (True, 'x is not valid UTF-8 t')
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"{name} is not valid UTF-8 text (first bad byte at offset {exc.start}): "
            "binary or another encoding; scores of such input say little about text"
        )
    return None
