"""Compile a kernel's C source once per (source, compiler, flags, CPU) and load it with ctypes.

The shared recipe of the compiled kernels (``decode_attention``, ``piece_attention``): the library
goes to ``$ENTROPYKIT_CACHE_DIR/kernels`` (else ``$XDG_CACHE_HOME/entropykit/kernels``, ``~/.cache``),
named by a hash of everything that shapes the machine code, and is installed by renaming a
complete temporary file (concurrent builders never expose a half-written library).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path


def _cache_dir() -> Path:
    """``$ENTROPYKIT_CACHE_DIR/kernels``, else ``$XDG_CACHE_HOME/entropykit/kernels`` (``~/.cache``)."""
    own = os.environ.get("ENTROPYKIT_CACHE_DIR")
    if own:
        return Path(own) / "kernels"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "entropykit" / "kernels"


def _cpu_fingerprint() -> str:
    try:  # -march=native code must not be reused on another CPU sharing the home directory
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next((line for line in lines if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def _compile(cc: str, source: Path, flags: tuple[str, ...], target: Path) -> str:
    """Compile ``source`` to ``target`` through a temporary file renamed into place (concurrent
    builders each install a complete file); returns an error message, '' on success."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so")
        os.close(fd)
    except OSError as exc:
        return f"cannot write the kernel cache {target.parent}: {exc} (set ENTROPYKIT_CACHE_DIR)"
    try:
        done = subprocess.run([cc, *flags, "-o", tmp, str(source)], capture_output=True, timeout=300)
        if done.returncode != 0:
            return f"compiling {source.name} failed: {done.stderr.decode(errors='replace')[-400:]}"
        os.replace(tmp, target)
        return ""
    except (OSError, subprocess.SubprocessError) as exc:
        return f"compiling {source.name} failed: {exc}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compile_library(source: Path, flags: tuple[str, ...]) -> tuple[ctypes.CDLL | None, str]:
    """Build ``source`` with ``flags`` (``-shared -fPIC`` added) by ``$CC`` (else cc, gcc, clang)
    into the cache directory unless already there, and load it; returns (library, '') or
    (None, why not)."""
    flags = (*flags, "-shared", "-fPIC")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler found (set CC or install gcc)"
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"C compiler {cc!r} does not run: {exc}"
    parts = [source.read_bytes(), " ".join(flags).encode(), version, _cpu_fingerprint().encode(),
             platform.machine().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]
    target = _cache_dir() / f"{source.stem}-{key}.so"
    if not target.exists():
        error = _compile(cc, source, flags, target)
        if error:
            return None, error
    try:
        return ctypes.CDLL(str(target)), ""
    except OSError as exc:
        return None, f"cannot load {target}: {exc}"


def loaded(built: tuple[ctypes.CDLL | None, str], kernel: str) -> ctypes.CDLL:
    """The library of a ``compile_library`` result, else RuntimeError naming ``kernel`` and why."""
    lib, reason = built
    if lib is None:
        raise RuntimeError(f"the {kernel} kernel is not available: {reason}")
    return lib
