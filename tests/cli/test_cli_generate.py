"""``entropykit generate`` end to end (bundled small model, short generations)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from entropykit.cli.main import main

BASE = ["generate", "--model", "bytegpt-small", "-n", "8", "--seed", "1"]


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*BASE, *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_text_and_stats_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "Hello", "--min-p", "0.05", "--stats"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Hello")
    header = next(i for i, line in enumerate(out) if "entropy_bits" in line)
    assert "surprisal_bits" in out[header] and "kept" in out[header] and "temperature" in out[header]
    assert len(out) - header - 1 == 8


def test_json_reproducible_with_seed(capsys: pytest.CaptureFixture[str]) -> None:
    a = run_json(capsys, "The ", "--sampler", "mirostat", "--tau", "3", "--stats")
    b = run_json(capsys, "The ", "--sampler", "mirostat", "--tau", "3", "--stats")
    assert a["new_tokens"] == b["new_tokens"] and len(a["new_tokens"]) == 8
    assert a["sampler"].startswith("Mirostat(version=2, tau=3.0")
    assert len(a["tokens"]) == 8 and {"entropy_bits", "surprisal_bits", "token"} <= set(a["tokens"][0])


def test_processor_flags_build_the_chain(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(
        capsys, "x", "--top-k", "50", "--top-h", "0.4", "--temperature", "0.7", "--xtc-threshold", "0.1"
    )
    assert [p.split("(")[0] for p in doc["processors"]] == ["TopK", "TopH", "XTC", "Temperature"]
    doc = run_json(capsys, "x", "--dynatemp-range", "0.5", "--stats")
    assert doc["processors"][0].startswith("DynamicTemperature")
    assert all(0.5 - 1e-6 <= t["temperature"] <= 1.5 + 1e-6 for t in doc["tokens"])


def test_switch_and_html(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    html = tmp_path / "gen.html"
    doc = run_json(
        capsys, "ab", "--small-model", "bytegpt-small", "--switch-threshold", "0.0", "--html", str(html)
    )
    assert doc["switch"]["large_fraction"] == 1.0 and len(doc["tokens"]) == 8
    assert html.exists() and "<html" in html.read_text().lower()


def test_errors_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "entropykit", *BASE, "x", "--top-p", "1.5"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "error" in proc.stderr and "1.5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert main([*BASE, "x", "--stop", "abc"]) == 2
