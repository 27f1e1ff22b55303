"""`entropykit score-corpus` end to end: rows equal the library's, --detect columns equal
detect.score_texts, resumption, skipped files reported, clean errors (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from entropykit import detect
from entropykit.cli.main import main
from entropykit.lm import load_model, score


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["score-corpus", *argv])
    out, err = capsys.readouterr()
    return code, out, err


TEXTS = ["the cat sat on the mat", "entropy is surprise on average", "zzzz qqqq", "a"]


def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps({"text": t, "key": f"k{i}"}) + "\n"
                                       for i, t in enumerate(TEXTS[:3])))
    (d / "b.txt").write_text(TEXTS[3])
    return d


def test_score_corpus_with_detect_columns(tmp_path: Path, model_dir: Path, capsys) -> None:
    src, out = corpus(tmp_path), tmp_path / "r.jsonl"
    code, _, err = run(capsys, str(src), "--out", str(out), "--model", str(model_dir), "--detect",
                       "loss,min_k", "--shard-docs", "2", "--no-progress")
    assert code == 0, err
    assert "scored 4 documents (2 shards: 2 scored, 0 reused)" in err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a.jsonl:1", "a.jsonl:2", "a.jsonl:3", "b.txt"]
    m = load_model(model_dir)
    for r, t in zip(rows, TEXTS):
        assert r["bits_per_byte"] == pytest.approx(score(t, m).summary["bits_per_byte"], rel=1e-6)
    for method in ("loss", "min_k"):  # "a" is one token: detection needs 2, so NaN (null) and the reason
        np.testing.assert_allclose([r[method] for r in rows[:3]], detect.score_texts(TEXTS[:3], method, m),
                                   rtol=1e-6)  # float32, other batches
        assert rows[3][method] is None
    assert "loss: " in rows[3]["error"] and "2 tokens" in rows[3]["error"] and "1 document(s)" in err
    # a rerun reuses every shard (and needs --force for the existing output)
    code, _, err = run(capsys, str(src), "--out", str(out), "--model", str(model_dir), "--detect",
                       "loss,min_k", "--shard-docs", "2", "--no-progress")
    assert code == 2 and "--out" in err and "--force" in err
    code, _, err = run(capsys, str(src), "--out", str(out), "--model", str(model_dir), "--detect",
                       "loss,min_k", "--shard-docs", "2", "--no-progress", "--force")
    assert code == 0 and "0 scored, 2 reused" in err


def test_score_corpus_reports_skipped_files_and_errors(tmp_path: Path, model_dir: Path, capsys) -> None:
    src = corpus(tmp_path)
    (src / "bad.jsonl").write_text("{not json}\n")
    out = tmp_path / "r.parquet"
    code, _, err = run(capsys, str(src), "--out", str(out), "--model", str(model_dir), "--id-field", "key",
                       "--no-progress")
    assert code == 0 and f"warning: skipped {src / 'bad.jsonl'}" in err and "bad.jsonl:1" in err
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("id").to_pylist() == ["k0", "k1", "k2", "b.txt"]
    code, _, err = run(capsys, str(src), "--out", str(tmp_path / "x.jsonl"), "--model", str(model_dir),
                       "--on-error", "fail")
    assert code == 2 and "bad.jsonl:1" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, str(src), "--out", str(tmp_path / "y.jsonl"), "--detect", "nope")
    assert code == 2 and "--detect: unknown method 'nope'" in err
    code, _, err = run(capsys, str(src), "--out", str(tmp_path / "y.jsonl"), "--detect", "reference")
    assert code == 2 and "--reference" in err
    code, _, err = run(capsys, str(src), "--out", str(tmp_path / "y.csv"), "--model", str(model_dir))
    assert code == 2 and "--out" in err and ".parquet or .jsonl" in err
    code, _, err = run(capsys, str(src), "--out", str(tmp_path / "y.jsonl"), "--shard-docs", "0")
    assert code == 2 and "--shard-docs must be an integer >= 1" in err
