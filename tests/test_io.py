"""Atomic writes and input reading."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from entropykit._io import atomic_write, read_input


def test_atomic_write_creates_file_with_normal_permissions(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "out.txt", "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_atomic_write_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--force"):
        atomic_write(target, b"new", force=False)
    assert target.read_bytes() == b"old"
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"


def test_atomic_write_onto_a_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path, b"x")


def test_read_input_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        read_input(str(tmp_path / "missing.txt"))
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read_input(str(tmp_path))
    (tmp_path / "a").write_bytes(b"\xff\x00")
    assert read_input(str(tmp_path / "a")) == b"\xff\x00"
