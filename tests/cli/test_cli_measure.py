"""``entropykit measure``: values against SciPy, output formats, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
from scipy.spatial.distance import jensenshannon

from entropykit.cli.main import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["measure", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_logits_in_nats_match_scipy(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "--logits", "2", "1", "0")
    p = scipy.special.softmax([2.0, 1.0, 0.0])
    m = doc["measures"]
    assert doc["unit"] == "nats" and doc["p"] == pytest.approx(p.tolist())
    h = scipy.stats.entropy(p)
    assert m["entropy"] == pytest.approx(h, rel=1e-12)
    assert m["varentropy"] == pytest.approx(float((p * (np.log(p) + h) ** 2).sum()), rel=1e-12)
    assert m["normalized_entropy"] == pytest.approx(h / math.log(3), rel=1e-12)
    assert m["renyi_entropy_2"] == pytest.approx(-math.log((p**2).sum()), rel=1e-12)
    assert m["tsallis_entropy_2"] == pytest.approx(1 - (p**2).sum(), rel=1e-12)
    assert "kl_p_q" not in m


def test_probs_with_divergences_in_bits(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "--probs", "0.5", "0.25", "0.25", "--q-probs", "0.2,0.3,0.5", "--bits")
    p, q = np.array([0.5, 0.25, 0.25]), np.array([0.2, 0.3, 0.5])
    m = doc["measures"]
    assert doc["units"]["entropy"] == "bits" and doc["units"]["varentropy"] == "bits^2"
    assert m["entropy"] == pytest.approx(1.5, rel=1e-12)
    assert m["kl_p_q"] == pytest.approx(scipy.stats.entropy(p, q, base=2), rel=1e-12)
    assert m["kl_q_p"] == pytest.approx(scipy.stats.entropy(q, p, base=2), rel=1e-12)
    assert m["cross_entropy_p_q"] == pytest.approx(-(p * np.log2(q)).sum(), rel=1e-12)
    assert m["js_div"] == pytest.approx(jensenshannon(p, q, base=2) ** 2, rel=1e-10)
    assert m["tv_distance"] == pytest.approx(0.5 * np.abs(p - q).sum(), rel=1e-12)
    assert m["hellinger"] == pytest.approx(math.sqrt(1 - np.sqrt(p * q).sum()), rel=1e-10)
    assert m["chi2_div_p_q"] == pytest.approx(((p - q) ** 2 / q).sum(), rel=1e-12)


def test_masked_entries_and_infinite_values(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "--logits", "0 0 -inf", "--q-probs", "1", "0", "0")
    m = doc["measures"]
    assert m["entropy"] == pytest.approx(math.log(2))
    assert m["normalized_entropy"] == pytest.approx(1.0)
    assert m["kl_p_q"] == "inf"  # q = 0 where p > 0
    assert m["kl_q_p"] == pytest.approx(math.log(2))


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "--logits", "1", "1", "--q-logits", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("p = [0.5, 0.5]")
    line = next(ln for ln in out.splitlines() if ln.startswith("entropy "))
    assert line.split()[1:] == [f"{math.log(2):.6g}", "nats"]
    assert "js_div" in out and "hellinger" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--probs", "0.5", "0.25"], "--probs must sum to 1, got a sum of 0.75"),
        (["--probs", "1.5", "-0.5"], "--probs must be finite and >= 0"),
        (["--logits", "2", "x"], "--logits expects numbers, got 'x'"),
        (["--logits", "1", "2", "--q-logits", "1", "2", "3"], "same number of entries, got 2 and 3"),
        (["--logits", "-inf -inf"], "all -inf"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["measure", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_requires_a_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["measure", "--bits"])
    assert exc.value.code == 2
    assert "--logits" in capsys.readouterr().err
