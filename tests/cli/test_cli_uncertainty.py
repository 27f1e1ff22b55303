"""``entropykit uncertainty``: JSONL in, per-prompt uncertainties and PRR/AUROC out; errors name options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from entropykit.cli.cmd_uncertainty import METHODS
from entropykit.cli.main import main


def test_cli_method_list_equals_the_registry() -> None:
    from entropykit import uncertainty

    assert list(METHODS) == list(uncertainty.METHODS)


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_json_output_with_references(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = _jsonl(
        tmp_path / "q.jsonl",
        [{"prompt": "ab", "reference": "x"}, {"prompt": "cd", "answer": "y"}, {"prompt": "ef"}],
    )
    out = tmp_path / "res.jsonl"
    rc = main(
        [
            "uncertainty",
            str(f),
            "--model",
            str(model_dir),
            "--samples",
            "3",
            "-n",
            "4",
            "--stop",
            "",
            "--format",
            "json",
            "--output",
            str(out),
            "--top-k",
            "50",
            "--temperature",
            "0.9",
        ]
    )
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prompts"] == 3 and data["graded"] == 2 and data["samples"] == 3
    for r in data["results"]:
        assert len(r["samples"]) == 3 and set(r["uncertainty"]) == set(METHODS)
    assert "correct" not in data["results"][2]
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["prompt"] == "ab"
    # same seed, same numbers
    main(
        [
            "uncertainty",
            str(f),
            "--model",
            str(model_dir),
            "--samples",
            "3",
            "-n",
            "4",
            "--stop",
            "",
            "--format",
            "json",
            "--top-k",
            "50",
            "--temperature",
            "0.9",
        ]
    )
    again = json.loads(capsys.readouterr().out)
    assert again["results"] == data["results"]


def test_evaluation_and_plot(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    from entropykit.decoding import Greedy, generate
    from entropykit.models import load_model

    lm = load_model(str(model_dir))
    prompts = ["ab", "cd", "ef", "gh"]
    rows = []
    for i, p in enumerate(prompts):  # make the first two right and the others wrong
        g = generate(lm, p, sampler=Greedy(), max_new_tokens=3)
        greedy = lm.decode(g.new_tokens[0]).decode("utf-8", "replace").strip()
        rows.append({"prompt": p, "reference": greedy if i < 2 else greedy + "zz"})
    f = _jsonl(tmp_path / "q.jsonl", rows)
    png = tmp_path / "rej.png"
    rc = main(
        [
            "uncertainty",
            str(f),
            "--model",
            str(model_dir),
            "--samples",
            "2",
            "-n",
            "3",
            "--stop",
            "",
            "--methods",
            "semantic_entropy,max_sequence_probability",
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "accuracy 0.500 on 4 graded" in text and "PRR" in text and "semantic_entropy" in text
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_errors_name_the_option(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _jsonl(tmp_path / "q.jsonl", [{"prompt": "ab"}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    m = ["--model", str(model_dir)]
    cases = [
        (["uncertainty", str(f), *m, "--samples", "0"], "--samples must be an integer >= 1"),
        (["uncertainty", str(f), *m, "--methods", "nope"], "--methods must be a comma-separated list"),
        (["uncertainty", str(bad), *m], "line 2 is not valid JSON"),
        (["uncertainty", str(empty), *m], "no prompts"),
        (["uncertainty", str(f), *m, "--top-p", "1.5", "-n", "2"], "--top-p"),
        (
            ["uncertainty", str(f), *m, "--plot", str(tmp_path / "x.png"), "-n", "2", "--samples", "1"],
            "--plot needs references",
        ),
    ]
    for argv, msg in cases:
        assert main(argv) == 2
        assert msg in capsys.readouterr().err
    _jsonl(tmp_path / "noprompt.jsonl", [{"question": "x"}])
    assert main(["uncertainty", str(tmp_path / "noprompt.jsonl"), *m]) == 2
    assert 'must be an object with a "prompt" string' in capsys.readouterr().err
