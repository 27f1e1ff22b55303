"""What a user can trust from every command (issue 13): safe outputs, early errors that name the CLI
option, options without effect reported, --help without torch, streamed generation, quiet HF loading."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from entropykit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


@pytest.fixture(scope="module")
def tiny(model_dir: Path) -> str:
    """The small ByteGPT of tests/cli/conftest.py, as a --model argument."""
    return str(model_dir)


@pytest.fixture
def text(tmp_path: Path) -> str:
    f = tmp_path / "t.txt"
    f.write_text("entropy and surprise")
    return str(f)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- 1. outputs never replace devices or FIFOs ---------------------------------------------------------
@needs_root
def test_score_html_onto_a_device_writes_through(tiny: str, text: str, tmp_path: Path, capsys) -> None:
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    code, _, err = run(capsys, "score", text, "--model", tiny, "--html", str(node), "--plot", str(node))
    assert code == 0, err
    assert stat.S_ISCHR(node.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "t.txt"]


@needs_root
def test_compress_onto_a_device_needs_no_force(tmp_path: Path, capsys) -> None:
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    src = tmp_path / "a.txt"
    src.write_bytes(b"abc abc abc")
    for extra in ([], ["--force"]):
        code, _, err = run(capsys, "compress", str(src), "-o", str(node), "--model", "bytegpt-small",
                           "--precision", "float32", "--no-progress", "-j", "1", *extra)
        assert code == 0, err
        assert stat.S_ISCHR(node.stat().st_mode)


def test_compress_into_a_fifo(tmp_path: Path, capsys) -> None:
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    src = tmp_path / "a.txt"
    src.write_bytes(b"abc abc abc")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code, _, err = run(capsys, "compress", str(src), "-o", str(fifo), "--model", "bytegpt-small",
                       "--precision", "float32", "--no-progress", "-j", "1")
    reader.join(30)
    assert code == 0, err
    assert stat.S_ISFIFO(fifo.stat().st_mode) and got and got[0][:2] != b""


# --- one overwrite rule, checked before the work -------------------------------------------------------
def test_every_command_refuses_an_existing_file_before_working(tiny: str, text: str, tmp_path: Path,
                                                               capsys, monkeypatch) -> None:
    import entropykit.lm.scoring as scoring

    def no_work(*a: Any, **k: Any) -> None:
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(scoring, "score", no_work)
    old = tmp_path / "old.out"
    old.write_text("keep")
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.mkdir(), neg.mkdir()
    (pos / "a.txt").write_text("aaaa aaaa"), (neg / "b.txt").write_text("x7#q")
    cases = [
        ["score", text, "--model", tiny, "--html", str(old)],
        ["score", text, "--model", tiny, "--plot", str(old)],
        ["generate", "x", "--model", tiny, "-n", "2", "--html", str(old)],
        ["detect-eval", "--positives", str(pos), "--negatives", str(neg), "--method", "zlib",
         "--model", tiny, "--roc", str(old)],
        ["compress", text, "-o", str(old), "--model", tiny],
    ]
    for argv in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert re.search(r"old\.out: exists \(use --force to overwrite\)", err), (argv, err)
        assert old.read_text() == "keep"


def test_force_replaces_a_regular_file(tiny: str, text: str, tmp_path: Path, capsys) -> None:
    old = tmp_path / "r.html"
    old.write_text("old")
    code, _, err = run(capsys, "score", text, "--model", tiny, "--html", str(old), "--force")
    assert code == 0, err and old.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# --- 2. results printed before a late write error ------------------------------------------------------
def test_detect_eval_unwritable_roc_fails_before_scoring(
    tiny: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    import entropykit.detect as detect

    monkeypatch.setattr(detect, "score_texts", lambda *a, **k: pytest.fail("scored before the check"))
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.mkdir(), neg.mkdir()
    (pos / "a.txt").write_text("aaaa aaaa"), (neg / "b.txt").write_text("x7#q")
    code, out, err = run(capsys, "detect-eval", "--positives", str(pos), "--negatives", str(neg),
                         "--method", "zlib", "--model", tiny, "--roc", "/proc/roc.png")
    assert code == 2 and out == ""
    assert "--roc /proc/roc.png: cannot create a file in /proc" in err


def test_late_write_error_prints_the_results_first(tiny: str, tmp_path: Path, capsys, monkeypatch) -> None:
    import entropykit.cli.cmd_detect as cmd_detect
    import entropykit.lm.report as report

    def fail(path: Any, *a: Any, option: str | None = None, **k: Any) -> None:
        raise OSError(f"{option} {path}: cannot write (No space left on device)")

    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.mkdir(), neg.mkdir()
    (pos / "a.txt").write_text("aaaa aaaa aaaa"), (neg / "b.txt").write_text("x7#q!z")
    monkeypatch.setattr(cmd_detect, "atomic_write", fail)
    code, out, err = run(capsys, "detect-eval", "--positives", str(pos), "--negatives", str(neg),
                         "--method", "zlib", "--model", tiny, "--roc", str(tmp_path / "roc.png"))
    assert code == 2 and "ROC-AUC" in out
    assert f"--roc {tmp_path / 'roc.png'}: cannot write" in err and ".tmp" not in err
    monkeypatch.setattr(report, "atomic_write", lambda p, d, option=None, **k: fail(p, option=option))
    code, out, err = run(capsys, "generate", "Hi", "--model", tiny, "-n", "5", "--seed", "0",
                         "--html", str(tmp_path / "g.html"))
    assert code == 2 and out.startswith("Hi") and len(out.strip()) > 2  # the generated text is not lost
    assert f"--html {tmp_path / 'g.html'}: cannot write" in err


# --- 4. messages name the CLI options ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "want", "never"),
    [
        (["generate", "x", "--temperature", "0"], "--temperature", "t: "),
        (["generate", "x", "--top-p", "1.5"], "--top-p", "p: "),
        (["generate", "x", "--sampler", "mirostat", "--tau", "-1"], "--tau", "tau: "),
        (["generate", "x", "--xtc-threshold", "2"], "--xtc-threshold", "threshold: "),
        (["detect", "FILE", "--method", "dc_pdd"], "--frequencies", "FrequencyTable"),
        (["detect", "FILE", "--method", "binoculars"], "--reference", "reference:"),
        (["score", "FILE", "--model", "/no/such/dir"], "--model /no/such/dir: no such file", "Repo id"),
        (["compress", "FILE", "--chunk-size", "0"], "--chunk-size must be an integer >= 1, got 0", "4096"),
        (["score", "FILE", "--window", "0"], "--window", "window:"),
        (["generate", "x", "--tau", "3"], "--tau only apply with --sampler mirostat", "Traceback"),
        (["generate", "x", "--switch-window", "3"], "--switch-window only apply with --small-model", "x"),
        (["generate", "x", "--xtc-probability", "0.3"], "--xtc-probability only apply with --xtc-threshold",
         "Traceback"),
        (["detect-eval", "--positives", ".", "--negatives", ".", "--method", "zlib", "--roc", "a.png",
          "--no-roc"], "contradict", "Traceback"),
    ],
)
def test_errors_name_the_cli_option(text: str, capsys, argv: list[str], want: str, never: str) -> None:
    argv = [text if a == "FILE" else a for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2 and want in err and err.count("\n") == 1, err
    msg = err.split("error: ", 1)[1]
    assert never not in msg.replace(want, "") or never == "x", msg  # the library's words are gone


# --- 5. options without effect -------------------------------------------------------------------------
def test_score_top_k_shows_in_the_table_or_warns(tiny: str, text: str, tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "score", text, "--model", tiny, "--top-k", "2")
    assert code == 0 and "most likely next tokens" in out
    rows = [line for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert len(rows) == 20 and all(line.count(" 0.") >= 3 for line in rows)
    long = tmp_path / "long.txt"
    long.write_text("abc " * 40)
    code, out, err = run(capsys, "score", str(long), "--model", tiny, "--top-k", "2")
    assert code == 0 and "warning: --top-k" in err
    code, out, err = run(capsys, "score", text, "--model", tiny, "--color-by", "rank")
    assert code == 0 and "warning: --color-by has no effect without --html" in err


# --- 7. --help without torch; streaming ---------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["score"], ["generate"], ["detect"], ["detect-eval"], ["compress"],
                                     ["decompress"], ["measure"]])
def test_help_imports_no_torch(command: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "entropykit", *command, "--help"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          timeout=60)
    assert proc.returncode == 0 and "usage: entropykit" in proc.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "entropykit.cli.main" in imported
    assert not {"torch", "numpy", "transformers"} & imported, sorted(imported & {"torch", "numpy"})


def test_top_level_exports_are_lazy_and_complete() -> None:
    proc = subprocess.run([sys.executable, "-c", "import sys, entropykit as ek; assert 'torch' not in "
                           "sys.modules; import torch; print(float(ek.entropy(torch.zeros(4), base=2)))"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0 and proc.stdout.strip() == "2.0", proc.stderr
    import entropykit
    from entropykit import measures

    assert set(entropykit._MEASURES) == set(measures.__all__)


def test_detect_method_table_matches_the_registry() -> None:
    from entropykit.cli.cmd_detect import METHODS as CLI
    from entropykit.detect import METHODS

    assert {n: (m.kind, m.reference, tuple(m.params)) for n, m in METHODS.items()} == CLI


def test_generate_streams_tokens_as_they_are_made(tiny: str, monkeypatch) -> None:
    from entropykit.models import ByteModel

    writes: list[str] = []
    seen_at_forward: list[int] = []

    class Out:
        def write(self, s: str) -> int:
            writes.append(s)
            return len(s)

        def flush(self) -> None:
            pass

    real = ByteModel.forward

    def forward(self: Any, *a: Any, **k: Any) -> Any:
        seen_at_forward.append(len(writes))
        return real(self, *a, **k)

    monkeypatch.setattr(ByteModel, "forward", forward)
    monkeypatch.setattr(sys, "stdout", Out())
    assert main(["generate", "Hi", "--model", tiny, "-n", "6", "--seed", "3", "--sampler", "greedy"]) == 0
    # the prompt, then one write per token between forward passes, before generation ends
    assert len(set(seen_at_forward)) >= 6 and seen_at_forward[-1] < len(writes)
    assert "".join(writes).startswith("Hi")


# --- 8. UTF-8 warning; quiet HF loading --------------------------------------------------------------
def test_detect_warns_on_binary_input(tiny: str, tmp_path: Path, capsys) -> None:
    f = tmp_path / "b.bin"
    f.write_bytes(b"\xff\xfe\x00binary\x80 stuff")
    code, _, err = run(capsys, "detect", str(f), "--method", "loss", "--model", tiny)
    assert code == 0 and "warning: not valid UTF-8 text" in err and str(f) in err


def test_hf_loading_is_quiet_unless_verbose(tmp_path: Path, capsys, recwarn) -> None:
    pytest.importorskip("transformers")
    from hf_fixtures import tiny_hf_model_dir

    d = str(tiny_hf_model_dir(tmp_path))
    f = tmp_path / "t.txt"
    f.write_text("The quick brown fox jumps over the lazy dog. " * 3)
    capsys.readouterr()  # building the fixture printed its own bars
    code, _, err = run(capsys, "score", str(f), "--model", d, "--no-progress")
    assert code == 0 and err == "", err
    assert not [w for w in recwarn if "past_key_values" in str(w.message)]
    code, _, err = run(capsys, "score", str(f), "--model", d, "--no-progress", "--verbose")
    assert code == 0 and "Loading weights" in err


def test_help_texts_name_the_library_default_model() -> None:
    from entropykit.cli._common import DEFAULT_MODEL
    from entropykit.models import DEFAULT_MODEL as LIBRARY

    assert DEFAULT_MODEL == LIBRARY
