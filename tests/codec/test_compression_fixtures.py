"""A tiny ByteGPT trained for a few seconds, shared by the compression tests (no tests here).

Random weights cost > 8 bits/byte, so every chunk would be *stored* and the range-coding path
would never run; a 1-layer model trained briefly on the training-corpus sample reaches ~4 bits/byte
on English/reST text, so text chunks are model-coded. It is built once per process and saved as a
ByteGPT directory (``load_model(path)`` loads it; subprocess tests pass the path).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from entropykit.models import ByteModel, load_model
from entropykit.models.bytegpt import BOS, ByteGPT, ByteGPTConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "corpus" / "train-sample.bin"
_DIR: Path | None = None


def sample_text(n: int, offset: int = 0) -> bytes:
    """``n`` bytes of the training-corpus sample (reST documentation), repeated if needed."""
    data = SAMPLE.read_bytes()
    out = (data * (1 + (offset + n) // len(data)))[offset : offset + n]
    return out


def _train(cfg: ByteGPTConfig, steps: int, seed: int) -> ByteGPT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ByteGPT(cfg)
    g = torch.Generator().manual_seed(seed)
    data = torch.frombuffer(bytearray(sample_text(200_000)), dtype=torch.uint8).long()
    params = list(model.parameters())
    m1 = [torch.zeros_like(q) for q in params]
    m2 = [torch.zeros_like(q) for q in params]
    t = cfg.block_size
    model.train()
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(data) - t, (16,), generator=g)
        y = torch.stack([data[s : s + t] for s in starts.tolist()])
        x = torch.cat([torch.full((16, 1), BOS), y[:, :-1]], dim=1)
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():  # plain Adam (torch.optim's first step imports torch._dynamo: seconds)
            for q, g1, a, b in zip(params, grads, m1, m2):
                a.mul_(0.9).add_(g1, alpha=0.1)
                b.mul_(0.99).addcmul_(g1, g1, value=0.01)
                q.sub_(1e-2 * (a / (1 - 0.9**step)) / ((b / (1 - 0.99**step)).sqrt() + 1e-8))
    return model.eval()


def tiny_model_dir() -> Path:
    """Directory of the tiny trained ByteGPT (block_size 64, 1 layer, 1 head of 32 dims: the head
    size of the int8-KV attention kernel, so "auto" and "int8kv" run it)."""
    global _DIR
    if _DIR is None or not (_DIR / "model.safetensors").exists():
        d = Path(tempfile.mkdtemp(prefix="entropykit-compress-")) / "tiny-bytegpt"
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny ops: one thread is fastest, and immune to a busy machine
        try:
            _train(ByteGPTConfig(block_size=64, n_layer=1, n_head=1, n_embd=32), steps=100, seed=7).save(d)
        finally:
            torch.set_num_threads(threads)
        _DIR = d
    return _DIR


def tiny_model() -> ByteModel:
    model = load_model(tiny_model_dir())
    assert isinstance(model, ByteModel)
    return model


def other_model() -> ByteModel:
    """Same architecture and name as ``tiny_model`` but other weights (a 'wrong model')."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        gpt = ByteGPT(ByteGPTConfig(block_size=64, n_layer=1, n_head=1, n_embd=32)).eval()
    return ByteModel(gpt, "tiny-bytegpt")


_ROPE: ByteModel | None = None


def tiny_rope_model() -> ByteModel:
    """A tiny trained *rotary* ByteGPT (block_size 64, 2 layers, 1 head of 32 dims): the model kind
    that codes through the sliding cache (``slide``, container version 4)."""
    global _ROPE
    if _ROPE is None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            cfg = ByteGPTConfig(block_size=64, n_layer=2, n_head=1, n_embd=32, positions="rope")
            gpt = _train(cfg, 100, 11)
        finally:
            torch.set_num_threads(threads)
        _ROPE = ByteModel(gpt, "tiny-rope")
    return _ROPE
