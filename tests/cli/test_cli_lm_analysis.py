"""``entropykit face`` and ``entropykit compress-prompt`` end to end on a tiny on-disk ByteGPT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from entropykit.cli.main import main
from entropykit.lm import load_model
from entropykit.lm.fourier import face
from entropykit.lm.prompt import compress_prompt

TEXTS_A = ["The cat sat on the mat, all day long, and then it slept.", "A quick brown fox jumps over dogs."]
TEXTS_B = ["def f(x):\n    return x * 2\n\nprint(f(3))\n", "for i in range(10):\n    print(i)\n"]


def _folder(d: Path, texts: list[str]) -> str:
    d.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(texts):
        (d / f"{i:02d}.txt").write_text(t)
    return str(d)


def test_face_json_matches_library(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _folder(tmp_path / "a", TEXTS_A), _folder(tmp_path / "b", TEXTS_B)
    assert main(["face", a, b, "--model", str(model_dir), "--json", "--preprocess", "zscore"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = face(TEXTS_A, TEXTS_B, load_model(model_dir), preprocess="zscore")
    for k, v in want.summary.items():
        assert out["mean"][k] == pytest.approx(v, rel=1e-12)
    assert out["pairs"] == 2 and len(out["files"]) == 2
    png = tmp_path / "spectra.png"
    assert main(["face", a, b, "--model", str(model_dir), "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "so " in capsys.readouterr().out
    assert main(["face", a, b, "--model", str(model_dir), "--plot", str(png)]) == 2  # exists, no --force
    assert "--plot" in capsys.readouterr().err


def test_face_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["face", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "DIR_A" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["face", str(tmp_path / "empty"), str(tmp_path / "empty")]) == 2
    assert "no files" in capsys.readouterr().err


def test_compress_prompt(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.txt"
    f.write_text(TEXTS_A[0])
    assert main(["compress-prompt", str(f), "--model", str(model_dir), "--ratio", "0.4", "--keep", "cat",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = compress_prompt(TEXTS_A[0], load_model(model_dir), ratio=0.4, keep=["cat"])
    assert out["text"] == want.text and "cat" in out["text"]
    assert out["ratio"] == pytest.approx(want.ratio) and out["ratio"] >= 0.4
    dest = tmp_path / "short.txt"
    assert main(["compress-prompt", str(f), "--model", str(model_dir), "--out", str(dest)]) == 0
    assert dest.read_text() == compress_prompt(TEXTS_A[0], load_model(model_dir), ratio=0.5).text
    assert main(["compress-prompt", str(f), "--model", str(model_dir), "--ratio", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ratio" in err[0]
    assert main(["compress-prompt", str(f), "--model", str(model_dir), "--out", str(dest)]) == 2
    assert np.isfinite(out["bits_kept"])
