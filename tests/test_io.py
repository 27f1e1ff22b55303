"""Atomic writes and input reading."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from entropykit._io import atomic_output, atomic_write, check_output, is_stream, read_input, utf8_warning


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


# --- the output rule: devices and FIFOs are written through, never replaced -------------------------
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mknod needs root")


@needs_root
@pytest.mark.parametrize("force", [False, True])
def test_a_character_device_is_written_through_not_replaced(tmp_path: Path, force: bool) -> None:
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    check_output(node, force=force)  # no --force needed for a device
    atomic_write(node, b"gone", force=force)
    with atomic_output(node, force=force) as f:
        f.write(b"more")
    assert stat.S_ISCHR(node.stat().st_mode)  # still the device, not a regular file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # no temporary file left
    assert is_stream(node)


def test_a_fifo_is_written_through_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    check_output(fifo)
    atomic_write(fifo, b"through the pipe", force=False)
    reader.join(10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.stat().st_mode) and is_stream(fifo)


def test_other_special_files_are_refused(tmp_path: Path) -> None:
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(ValueError, match="not a regular file"):
            check_output(sock_path, force=True, option="--html")
        with pytest.raises(ValueError, match="not a regular file"):
            atomic_write(sock_path, b"x")
        assert stat.S_ISSOCK(sock_path.stat().st_mode)


def test_check_output_validates_before_work(tmp_path: Path) -> None:
    check_output(tmp_path / "new.html", option="--html")  # a new file: fine, nothing left behind
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.html").write_text("x")
    with pytest.raises(FileExistsError, match=r"^--html .*old\.html: exists \(use --force"):
        check_output(tmp_path / "old.html", option="--html")
    check_output(tmp_path / "old.html", force=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_output(tmp_path / "no" / "x.png", option="--plot")
    with pytest.raises(IsADirectoryError, match="--plot"):
        check_output(tmp_path, option="--plot")
    if Path("/proc/self").is_dir():  # a directory nobody can create files in, even root
        with pytest.raises(OSError, match=r"--roc /proc/roc\.png: cannot create a file in /proc"):
            check_output("/proc/roc.png", option="--roc")


def test_late_write_errors_name_the_users_path_not_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(OSError) as info, atomic_output(target, option="-o") as f:
        f.write(b"x")
        os.chmod(tmp_path, 0o500)  # the rename below fails (except for root: then simulate it)
        if os.geteuid() == 0:
            (tmp_path / "out.bin").mkdir()  # a directory appears: os.replace cannot replace it
    os.chmod(tmp_path, 0o700)
    msg = str(info.value)
    assert msg.startswith(f"-o {target}") and ".tmp" not in msg


def test_utf8_warning() -> None:
    assert utf8_warning("naïve — ok".encode(), "a.txt") is None
    msg = utf8_warning(b"ok\xff\xfe", "a.bin")
    assert msg is not None and msg.startswith("a.bin is not valid UTF-8") and "offset 2" in msg
