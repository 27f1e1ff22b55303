"""Compression with the bundled models: ~24 KB round trip across processes/thread counts, and the
coded size against ``entropykit score`` (``lm.scoring.score``).

The 1 MB round trip lives in test_compression.py with a tiny trained ByteGPT: with the bundled
default it would take minutes on 2 cores. Quality thresholds apply only once trained weights are bundled
(``training.json`` beside the weights).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_compression_fixtures import ROOT, sample_text, tiny_model

from entropykit.codec import compress, decompress
from entropykit.models import BUNDLED_DIR, DEFAULT_MODEL, load_model

HELDOUT = ROOT / "data" / "corpus" / "heldout.bin"

pytestmark = pytest.mark.slow


def trained(name: str) -> bool:
    return (BUNDLED_DIR / name / "training.json").exists()


@pytest.fixture(scope="module")
def bundled():
    return load_model()  # the bundled default, as compress() with no model


def test_bundled_round_trip_across_processes_and_threads(tmp_path: Path, bundled) -> None:
    data = HELDOUT.read_bytes()[200_000:224_000] + "· ünïcode ✓ \n".encode() + b"\xff\x00\xfe"
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    script = (
        "import sys, torch; torch.set_num_threads(2)\n"
        "from entropykit.lm import compress\n"
        "open(sys.argv[2], 'wb').write(compress(open(sys.argv[1], 'rb').read(), chunk_size=1024, group=24,"
        " workers=1))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "c.ekz")], env=env, check=True,
                   timeout=600)
    blob = (tmp_path / "c.ekz").read_bytes()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert decompress(blob) == data  # the model is found by the name in the container
        assert compress(data, bundled, chunk_size=1024, group=24, workers=1) == blob
    finally:
        torch.set_num_threads(before)
    if trained(DEFAULT_MODEL):
        assert 8 * len(blob) / len(data) < 3.0  # held-out reST: the trained model is ~2 bits/byte


def _coded_vs_score(model, texts: list[bytes]) -> tuple[float, float, int]:
    """Total coded payload bits of one-window chunks vs the sum of score()'s total surprisal."""
    from entropykit.lm.scoring import score

    size = len(texts[0])
    blob = compress(b"".join(texts), model, chunk_size=size, group=len(texts))
    from test_compression import parse

    chunks = parse(blob)["chunks"]
    assert [c["raw_len"] for c in chunks] == [size] * len(texts)
    coded = sum(8 * len(c["payload"]) for c in chunks if c["mode"] == 0)
    ref = sum(score(t, model).summary["total_surprisal_bits"] for t, c in zip(texts, chunks) if not c["mode"])
    return coded, ref, sum(c["mode"] == 0 for c in chunks)


def test_coded_size_matches_score_tiny_model() -> None:
    """Chunks that fit one window see the same contexts as score(): sizes agree within 1%."""
    model = tiny_model()
    texts = [sample_text(63, 1000 + 97 * i) for i in range(16)]
    coded, ref, n = _coded_vs_score(model, texts)
    assert n == 16
    assert abs(coded - ref) <= 0.01 * ref + 32 * n


@pytest.mark.skipif(not trained(DEFAULT_MODEL), reason="bundled weights are untrained placeholders")
def test_coded_size_matches_score_bundled(bundled) -> None:
    data = HELDOUT.read_bytes()
    texts = [data[300_000 + 4000 * i : 300_000 + 4000 * i + 511] for i in range(6)]
    coded, ref, n = _coded_vs_score(bundled, texts)
    assert n == 6
    assert abs(coded - ref) <= 0.01 * ref + 32 * n
