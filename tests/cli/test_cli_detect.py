"""``entropykit detect`` / ``detect-eval`` end to end on a tiny ByteGPT saved as a model directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_detect import tiny_bytegpt

from entropykit.cli.main import main
from entropykit.detect import FrequencyTable, evaluate, score_texts
from entropykit.lm import load_model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("models")
    a, b = root / "tiny-a", root / "tiny-b"
    tiny_bytegpt(32, seed=0).module.save(a)
    tiny_bytegpt(32, seed=1).module.save(b)
    return str(a), str(b)


def _files(d: Path, texts: list[str]) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i, t in enumerate(texts):
        (d / f"{i:02d}.txt").write_text(t)
        out.append(str(d / f"{i:02d}.txt"))
    return out


def test_detect_json_matches_library(
    models: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _files(tmp_path, ["The cat sat on the mat, all day long.", "def f(x):\n    return x\n"])
    args = ["detect", *files, "--method", "binoculars", "--model", models[0], "--reference", models[1]]
    assert main([*args, "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = score_texts(
        [Path(f).read_bytes() for f in files],
        "binoculars",
        load_model(models[0]),
        reference=load_model(models[1]),
    )
    np.testing.assert_allclose([r["score"] for r in out["results"]], want, rtol=1e-12)
    assert out["kind"] == "machine" and "higher = more likely machine" in out["convention"]
    assert main(["detect", *files, "--method", "entropy_gap", "--model", models[0], "--threshold", "0"]) == 0
    text = capsys.readouterr().out
    assert "p_value=" in text and "log_ppl_gap=" in text and files[0] in text


def test_detect_dc_pdd_builds_saves_and_loads_frequencies(
    models: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _files(tmp_path / "corpus", ["reference corpus text one", "and another reference text"])
    files = _files(tmp_path / "in", ["some text to audit here"])
    table = tmp_path / "freq.json"
    base = ["detect", *files, "--method", "dc_pdd", "--model", models[0], "--format", "json"]
    assert main([*base, "--frequency-corpus", *corpus, "--save-frequencies", str(table)]) == 0
    built = json.loads(capsys.readouterr().out)["results"][0]["score"]
    assert main([*base, "--frequencies", str(table)]) == 0
    loaded = json.loads(capsys.readouterr().out)["results"][0]["score"]
    freq = FrequencyTable.from_texts([Path(c).read_bytes() for c in corpus], load_model(models[0]))
    want = score_texts([Path(files[0]).read_bytes()], "dc_pdd", load_model(models[0]), frequencies=freq)
    assert built == loaded == pytest.approx(float(want[0]), rel=1e-12)


def test_detect_eval_prints_metrics_and_writes_roc_png(
    models: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pos = ["aaaa aaaa aaaa aaaa", "abab abab abab abab", "xxxxxxxxxxxxxxxxxxxx"]
    neg = ["Qz7!pK#2 vW@9", "mN$4^rT&8*yU", "0xDEADBEEF?!"]
    _files(tmp_path / "pos", pos)
    _files(tmp_path / "neg", neg)
    roc = tmp_path / "roc.png"
    args = ["detect-eval", "--positives", str(tmp_path / "pos"), "--negatives", str(tmp_path / "neg")]
    args += ["--method", "min_k", "--k", "0.5", "--model", models[0], "--roc", str(roc)]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = load_model(models[0])
    want = evaluate(score_texts(pos, "min_k", m, k=0.5), score_texts(neg, "min_k", m, k=0.5))
    assert out["auc"] == pytest.approx(want["auc"]) and out["n_positives"] == 3
    assert roc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args[:-2], "--no-roc"]) == 0
    text = capsys.readouterr().out
    assert "ROC-AUC" in text and "TPR@0.01FPR" in text


def test_detect_cli_errors_exit_2(
    models: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _files(tmp_path, ["x"])
    assert main(["detect", *files, "--method", "loss", "--model", models[0]]) == 2
    assert "1 token" in capsys.readouterr().err
    ok = _files(tmp_path / "ok", ["some text"])
    assert main(["detect", *ok, "--method", "loss", "--k", "0.3", "--model", models[0]]) == 2
    assert "--k" in capsys.readouterr().err
    assert main(["detect", *ok, "--method", "reference", "--model", models[0]]) == 2
    assert "reference" in capsys.readouterr().err
    assert (
        main(
            [
                "detect-eval",
                "--positives",
                str(tmp_path / "nope"),
                "--negatives",
                str(tmp_path),
                "--method",
                "loss",
                "--model",
                models[0],
            ]
        )
        == 2
    )
    assert "--positives" in capsys.readouterr().err


def test_detect_slide(models: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--slide: a rotary model's scores equal the library's score_texts(slide=True) (texts longer than
    the 16-token context, so the cache really slides); a learned-position model is refused, one line
    naming --slide, exit 2."""
    from test_bytegpt_rope import rope_model

    rope_dir = tmp_path / "rope"
    rope_model(block_size=16, n_embd=32, n_head=2).save(rope_dir)
    texts = ["The cat sat on the mat, all day long, and then some more.", "abc " * 20]
    files = _files(tmp_path / "texts", texts)
    assert main(["detect", *files, "--method", "loss", "--model", str(rope_dir), "--slide", "--json",
                 "--no-progress"]) == 0
    got = [r["score"] for r in json.loads(capsys.readouterr().out)["results"]]
    lm = load_model(str(rope_dir))
    want = score_texts([t.encode() for t in texts], "loss", lm, slide=True)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(want, score_texts([t.encode() for t in texts], "loss", lm))  # it did slide
    assert main(["detect", *files, "--method", "loss", "--model", models[0], "--slide"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--slide" in err and "rotary" in err and len(err.splitlines()) == 1
