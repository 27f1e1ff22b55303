"""Atomic writes and input reading."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from entropykit._io import atomic_output, atomic_write, read_input


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


def test_atomic_output_leaves_nothing_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"), atomic_output(target) as f:
        f.write(b"partial new content")
        raise RuntimeError("midway")
    assert target.read_bytes() == b"old"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # and no temporary file is left


def test_atomic_output_streams_and_respects_force(tmp_path: Path) -> None:
    target = tmp_path / "stream.bin"
    with atomic_output(target, force=False) as f:
        for i in range(3):
            f.write(bytes([i]) * 4)
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_bytes() == b"\x00" * 4 + b"\x01" * 4 + b"\x02" * 4
    with pytest.raises(FileExistsError, match="--force"), atomic_output(target, force=False) as f:
        f.write(b"x")
    with atomic_output(target, force=True) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1
