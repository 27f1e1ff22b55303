"""Fixtures shared by the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ByteGPT saved to disk, loaded by the CLI with --model DIR (fast)."""
    g = torch.Generator().manual_seed(0)
    m = ByteGPT(ByteGPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    d = tmp_path_factory.mktemp("models") / "tiny-bytegpt"
    m.save(d)
    return d
