"""``entropykit compress`` / ``decompress`` end to end (in-process ``main``; one piped subprocess)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_compression_fixtures import ROOT, other_model, sample_text, tiny_model_dir

from entropykit.cli.cmd_compress import _Progress
from entropykit.cli.main import main
from entropykit.lm import compress

DATA = sample_text(3000, 321) + "— ünïcödé ✓\n".encode() + b"\x00\xff\xfe binary tail"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "notes.txt"
    src.write_bytes(DATA)
    return src, str(tiny_model_dir())


def test_round_trip_with_default_names(files, capsys) -> None:
    src, model = files
    assert main(["compress", str(src), "--model", model, "--chunk-size", "1000", "--no-progress"]) == 0
    packed = Path(str(src) + ".ekz")
    assert packed.exists() and packed.stat().st_size < len(DATA)
    assert "bits/byte" in capsys.readouterr().out
    src.rename(src.with_suffix(".orig"))
    assert main(["decompress", str(packed), "--model", model, "--no-progress"]) == 0
    assert src.read_bytes() == DATA


def test_json_summary(files, capsys) -> None:
    src, model = files
    out = src.parent / "x.bin"
    args = ["compress", str(src), "-o", str(out), "--model", model, "--format", "json", "--no-progress"]
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["input_bytes"] == len(DATA) and s["output_bytes"] == out.stat().st_size
    assert s["bits_per_byte"] == pytest.approx(8 * out.stat().st_size / len(DATA))
    assert s["model"].startswith("tiny-bytegpt@")
    from entropykit.codec import resolve_precision

    assert s["precision"] == resolve_precision(model)  # "auto" as it resolved on this machine
    back = src.parent / "back.txt"
    assert main(["decompress", str(out), "-o", str(back), "--model", model, "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["output_bytes"] == len(DATA) and (d["model"], d["precision"]) == (s["model"], s["precision"])
    assert back.read_bytes() == DATA


def test_no_match_is_recorded_and_decodes(files, capsys) -> None:
    from entropykit.codec import container_info

    src, model = files
    for flag in ([], ["--no-match"]):
        out = src.parent / f"x{len(flag)}.ekz"
        assert main(["compress", str(src), "-o", str(out), "--model", model, "--format", "json",
                     "--no-progress", *flag]) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["match"] is (not flag) is container_info(out)["match"]
        back = src.parent / f"back{len(flag)}.txt"
        assert main(["decompress", str(out), "-o", str(back), "--model", model, "--no-progress"]) == 0
        assert back.read_bytes() == DATA
        capsys.readouterr()


def test_refuses_to_overwrite_without_force(files, capsys) -> None:
    src, model = files
    out = src.parent / "exists.ekz"
    out.write_bytes(b"keep me")
    assert main(["compress", str(src), "-o", str(out), "--model", model, "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["compress", str(src), "-o", str(out), "--model", model, "--force", "--no-progress"]) == 0
    assert out.read_bytes() != b"keep me"
    target = src.parent / "target.txt"
    target.write_bytes(b"keep")
    assert main(["decompress", str(out), "-o", str(target), "--model", model, "--no-progress"]) == 2
    assert target.read_bytes() == b"keep"


def test_damaged_file_fails_and_writes_nothing(files, capsys) -> None:
    src, model = files
    packed = src.parent / "p.ekz"
    assert main(["compress", str(src), "-o", str(packed), "--model", model, "--no-progress"]) == 0
    good = packed.read_bytes()
    blob = bytearray(good)
    blob[len(blob) // 2] ^= 0x01
    packed.write_bytes(bytes(blob))
    out = src.parent / "restored.txt"
    assert main(["decompress", str(packed), "-o", str(out), "--model", model, "--no-progress"]) == 2
    assert "damaged" in capsys.readouterr().err
    assert not out.exists()
    assert [p.name for p in src.parent.iterdir() if p.name.endswith(".tmp")] == []  # temp file removed
    packed.write_bytes(good[:-10])  # truncated
    assert main(["decompress", str(packed), "-o", str(out), "--model", model, "--no-progress"]) == 2
    assert "truncated" in capsys.readouterr().err and not out.exists()


def test_wrong_model_fails(files, capsys, tmp_path: Path) -> None:
    src, model = files
    packed = src.parent / "p.ekz"
    assert main(["compress", str(src), "-o", str(packed), "--model", model, "--no-progress"]) == 0
    wrong = tmp_path / "tiny-bytegpt"  # same name, other weights
    other_model().module.save(wrong)
    out = src.parent / "o.txt"
    assert main(["decompress", str(packed), "-o", str(out), "--model", str(wrong), "--no-progress"]) == 2
    assert "wrong model" in capsys.readouterr().err and not out.exists()


def test_missing_input_and_not_a_container(tmp_path: Path, capsys) -> None:
    assert main(["compress", str(tmp_path / "nope.txt"), "--no-progress"]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.ekz"
    junk.write_bytes(b"this is not a container")
    assert main(["decompress", str(junk), "--no-progress"]) == 2
    assert "not an entropykit compressed file" in capsys.readouterr().err


def test_empty_and_one_byte_files(tmp_path: Path) -> None:
    model = str(tiny_model_dir())
    for name, data in (("empty", b""), ("one", b"\x7f")):
        f = tmp_path / name
        f.write_bytes(data)
        assert main(["compress", str(f), "--model", model, "--no-progress", "--format", "json"]) == 0
        f.unlink()
        assert main(["decompress", str(f) + ".ekz", "--model", model, "--no-progress"]) == 0
        assert f.read_bytes() == data


def test_stdin_to_stdout(monkeypatch, capsysbinary) -> None:
    model = str(tiny_model_dir())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(DATA)))
    assert main(["compress", "-", "--model", model, "--no-progress"]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out == compress(DATA, model)  # stdout carries exactly the container
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(captured.out)))
    assert main(["decompress", "-", "--model", model, "--no-progress"]) == 0
    assert capsysbinary.readouterr().out == DATA


def test_piped_subprocess(tmp_path: Path) -> None:
    model = str(tiny_model_dir())
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "entropykit"]
    packed = subprocess.run([*cmd, "compress", "-", "-o", "-", "--model", model], input=DATA,
                            capture_output=True, env=env, check=True, timeout=300).stdout
    back = subprocess.run([*cmd, "decompress", "-", "--model", model], input=packed,
                          capture_output=True, env=env, check=True, timeout=300)
    assert back.stdout == DATA
    bad = subprocess.run([*cmd, "decompress", "-", "--model", model], input=packed[:-1],
                         capture_output=True, env=env, timeout=300)
    assert bad.returncode == 2 and b"truncated" in bad.stderr and bad.stdout == b""


def test_progress_reports_bits_per_byte() -> None:
    class Bar:
        def __init__(self) -> None:
            self.n, self.postfix = 0, ""

        def update(self, k: int) -> None:
            self.n += k

        def set_postfix_str(self, s: str, refresh: bool = True) -> None:
            self.postfix = s

    bar = Bar()
    progress = _Progress(bar)
    progress(1000, 2500.0)
    progress(4000, 8000.0)
    assert bar.n == 4000 and bar.postfix == "2.000 bits/byte"


def test_help_has_examples(capsys) -> None:
    for cmd in ("compress", "decompress"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and f"entropykit {cmd}" in out and "--force" in out


def test_precision_choices_match_the_library(files, capsys) -> None:
    from entropykit.cli.cmd_compress import PRECISIONS
    from entropykit.precision import PRECISIONS as LIBRARY

    assert PRECISIONS == LIBRARY
    src, model = files
    from entropykit.models.kernels import decode_attention

    for precision in ("int8kv", "float32") if decode_attention.available() else ("float32",):
        out = src.with_suffix(f".{precision}.ekz")
        assert main(["compress", str(src), "-o", str(out), "--model", model, "--precision", precision]) == 0
        assert main(["decompress", str(out), "-o", str(out) + ".back", "--model", model]) == 0
        assert Path(str(out) + ".back").read_bytes() == src.read_bytes()


def test_cache_option(files, tmp_path: Path, capsys) -> None:
    src, learned = files  # the tiny model has learned positions: it cannot slide
    bad = ["compress", str(src), "-o", str(tmp_path / "a.ekz"), "--model", learned, "--cache", "slide"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cache slide" in err and not (tmp_path / "a.ekz").exists()
    from test_compression_fixtures import tiny_rope_model

    rope_dir = tmp_path / "tiny-rope"
    tiny_rope_model().module.save(rope_dir)
    data = src.read_bytes()[:600]
    src.write_bytes(data)
    for cache in ("slide", "reprime"):
        out = tmp_path / f"{cache}.ekz"
        args = ["compress", str(src), "-o", str(out), "--model", str(rope_dir), "--cache", cache,
                "--window", "40"]
        assert main([*args, "--no-progress"]) == 0
        assert main(["decompress", str(out), "-o", str(out) + ".back", "--model", str(rope_dir)]) == 0
        assert Path(str(out) + ".back").read_bytes() == data
        assert bool(out.read_bytes()[9] & 4) == (cache == "slide")  # header flag bit 2
