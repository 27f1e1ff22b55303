"""`entropykit score` end to end: formats, reports, truncation, and clean errors (exit 2, one line)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from entropykit.cli.main import main
from entropykit.lm import load_model, score


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["score", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_short_text_lists_every_token(tmp_path: Path, model_dir: Path, capsys) -> None:
    f = tmp_path / "a.txt"
    f.write_text("hi\tthere\n")
    code, out, err = run(capsys, str(f), "--model", str(model_dir), "--no-progress")
    assert code == 0 and err == ""
    assert "bits per byte" in out and "most surprising spans" in out
    r = score("hi\tthere\n", load_model(model_dir))
    assert f"{r.summary['bits_per_byte']:8.4f}" in out
    rows = [line for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert len(rows) == 9 and "\\t" in rows[2] and "\\n" in rows[8]


def test_table_long_text_is_truncated_unless_all(tmp_path: Path, model_dir: Path, capsys) -> None:
    f = tmp_path / "long.txt"
    f.write_text("entropy and surprise, " * 20)  # 440 bytes > 60 tokens, > context 64
    code, out, _ = run(capsys, str(f), "--model", str(model_dir))
    assert code == 0
    assert "per-token table omitted" in out and len(out.splitlines()) < 20
    assert "windows of 64 tokens every 32 tokens" in out
    code, out, _ = run(capsys, str(f), "--model", str(model_dir), "--all")
    assert code == 0 and len(out.splitlines()) > 440


def test_json_and_csv(tmp_path: Path, model_dir: Path, capsys) -> None:
    f = tmp_path / "t.txt"
    f.write_bytes("naïve text".encode())
    ref = score(f.read_bytes(), load_model(model_dir), top_k=2)
    code, out, _ = run(capsys, str(f), "--model", str(model_dir), "--format", "json", "--top-k", "2")
    assert code == 0
    d = json.loads(out)
    assert d["summary"]["bits_per_byte"] == pytest.approx(ref.summary["bits_per_byte"])
    np.testing.assert_allclose([t["surprisal_bits"] for t in d["tokens"]], ref.surprisal_bits, rtol=1e-6)
    assert len(d["tokens"][0]["top_k"]) == 2
    code, out, _ = run(capsys, str(f), "--model", str(model_dir), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(ref) == 11
    assert [int(r["rank"]) for r in rows] == ref.rank.tolist()


def test_stdin(monkeypatch: pytest.MonkeyPatch, model_dir: Path, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    code, out, _ = run(capsys, "-", "--model", str(model_dir), "--format", "json")
    assert code == 0 and json.loads(out)["summary"]["bytes"] == 10


def test_html_and_plot(tmp_path: Path, model_dir: Path, capsys) -> None:
    f = tmp_path / "t.txt"
    f.write_text("a report, please")
    html, png = tmp_path / "out.html", tmp_path / "out.png"
    code, _, err = run(
        capsys,
        str(f),
        "--model",
        str(model_dir),
        "--html",
        str(html),
        "--plot",
        str(png),
        "--color-by",
        "rank",
    )
    assert code == 0 and "wrote" in err
    page = html.read_text(encoding="utf-8")
    assert '"initial":"rank"' in page and '"n":16,' in page
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_invalid_utf8(tmp_path: Path, model_dir: Path, capsys) -> None:
    f = tmp_path / "bin.dat"
    f.write_bytes(b"\xff\xfe binary \x80\x00")
    code, out, err = run(capsys, str(f), "--model", str(model_dir))
    assert code == 0 and "12 bytes" in out  # the byte model scores any bytes, with a warning
    assert "warning" in err and "not valid UTF-8 text" in err and err.count("\n") == 1
    pytest.importorskip("transformers")
    from hf_fixtures import tiny_hf_model_dir

    code, out, err = run(capsys, str(f), "--model", str(tiny_hf_model_dir(tmp_path)))
    assert code == 0 and "not valid UTF-8" in err and "replacement" in err


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: d / "missing.txt", [], "no such file"),
        (lambda d: d, [], "is a directory"),
        (lambda d: (d / "empty.txt", (d / "empty.txt").write_bytes(b""))[0], [], "empty input"),
        (lambda d: (d / "x.txt", (d / "x.txt").write_text("abc"))[0], ["--stride", "0"], "stride"),
        (lambda d: (d / "x.txt", (d / "x.txt").write_text("abc"))[0], ["--window", "0"], "window"),
        (
            lambda d: (d / "x.txt", (d / "x.txt").write_text("abc"))[0],
            ["--html", "/no/such/dir/r.html"],
            "does not exist",
        ),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path: Path, model_dir: Path, capsys, make, extra, message) -> None:
    path = make(tmp_path)
    code, out, err = run(capsys, str(path), "--model", str(model_dir), *extra)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_model_is_one_line(tmp_path: Path, capsys) -> None:
    f = tmp_path / "x.txt"
    f.write_text("abc")
    code, _, err = run(capsys, str(f), "--model", str(tmp_path / "no-model-here"))
    assert code == 2 and "no-model-here" in err and err.count("\n") == 1


def test_precision_choices_match_the_library() -> None:
    from entropykit import precision
    from entropykit.cli.cmd_score import PRECISIONS
    from entropykit.lm.scoring import SCORING_PRECISIONS as LIBRARY

    assert set(PRECISIONS) == {"auto", *LIBRARY} and set(PRECISIONS) <= set(precision.PRECISIONS)


def test_slide_matches_the_library_and_needs_rotary_positions(
    tmp_path: Path, model_dir: Path, capsys
) -> None:
    import torch

    from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig

    torch.manual_seed(0)
    rope = tmp_path / "rope-bytegpt"
    ByteGPT(ByteGPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=16, positions="rope")).save(rope)
    f = tmp_path / "long.txt"
    text = "sliding caches compute every token once. " * 4  # 164 bytes > context 32
    f.write_text(text)
    code, out, err = run(capsys, str(f), "--model", str(rope), "--slide", "--format", "json", "--no-progress")
    assert code == 0 and err == ""
    got = json.loads(out)["summary"]
    want = score(text, load_model(rope), slide=True).summary
    strided = score(text, load_model(rope)).summary
    assert got["bits_per_byte"] == pytest.approx(want["bits_per_byte"], rel=1e-12)
    assert got["bits_per_byte"] != strided["bits_per_byte"]  # the option reached the library
    code, out, err = run(capsys, str(f), "--model", str(model_dir), "--slide")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--slide" in err and "rotary positions" in err
