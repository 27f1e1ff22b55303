"""monitors.attach: recognised modules, bit-identical outputs, values against eager attention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
from entropykit.monitors import ADAPTERS, attach


def entropy_of(weights: torch.Tensor) -> torch.Tensor:
    """-sum p log p over the last axis, float64 (0 log 0 = 0)."""
    p = weights.double()
    return -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(-1)


def tiny_bytegpt(seed: int = 0) -> ByteGPT:
    torch.manual_seed(seed)
    model = ByteGPT(ByteGPTConfig(block_size=24, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():  # sharper attention than the 0.02 init, so heads differ
        for blk in model.blocks:
            blk.attn.qkv.weight.mul_(20)
    return model.eval()


def bytegpt_reference(model: ByteGPT, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-layer, per-head mean entropy of the causal attention, from explicit T x T weights."""
    out = {}
    h = model.wte(x) + model.wpe(torch.arange(x.shape[1]))
    for i, blk in enumerate(model.blocks):
        a = blk.ln1(h)
        b, t, c = a.shape
        q, k, _ = blk.attn.qkv(a).split(c, dim=2)
        q, k = (y.view(b, t, blk.attn.n_head, -1).transpose(1, 2) for y in (q, k))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -math.inf)
        out[f"blocks.{i}.attn"] = entropy_of(s.softmax(-1)).mean(dim=(0, 2))
        h, _ = blk(h, None)
    return out


def test_bytegpt_values_identity_and_detach() -> None:
    model = tiny_bytegpt()
    x = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)[0]
        ref = bytegpt_reference(model, x)
        mon = attach(model, block_size=5)
        during = model(x)[0]
        assert torch.equal(before, during)  # the monitor only reads q and k
        assert mon.layers == ["blocks.0.attn", "blocks.1.attn"] and set(mon.adapters.values()) == {"bytegpt"}
        for name, value in mon.entropies().items():
            torch.testing.assert_close(value.double(), ref[name], atol=1e-5, rtol=1e-5)
        assert len(mon.history) == 1 and mon.steps == [0]
        assert not ref["blocks.0.attn"].allclose(ref["blocks.0.attn"].flip(0))  # the heads really differ
        mon.remove()
        mon.remove()  # idempotent
        model(x)
    assert len(mon.history) == 1
    assert not model._forward_hooks and not model.blocks[0].attn._forward_hooks


def test_every_history_matrix_and_logging(tmp_path) -> None:
    model = tiny_bytegpt()
    x = torch.randint(0, 256, (1, 12))
    with torch.no_grad(), attach(model, every=2) as mon:
        for _ in range(5):
            model(x)
    assert mon.steps == [0, 2, 4]
    m = mon.matrix()
    assert m.shape == (3, 2, 2) and torch.equal(m[0, 1], mon.history[0]["blocks.1.attn"])
    flat = mon.as_dict()
    assert set(flat) == {
        "blocks.0.attn/head0",
        "blocks.0.attn/head1",
        "blocks.1.attn/head0",
        "blocks.1.attn/head1",
    }

    class Writer:
        def __init__(self) -> None:
            self.rows: list[tuple[str, float, int]] = []

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.rows.append((tag, value, step))

    w = Writer()
    mon.log_tensorboard(w)
    assert len(w.rows) == 4 and all(step == 4 for _, _, step in w.rows)
    assert w.rows[0][0].startswith("attention_entropy/blocks.0.attn/head")
    pytest.importorskip("matplotlib")
    png = mon.heatmap(tmp_path / "heat.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kv_cache_step_sees_all_cached_keys() -> None:
    model = tiny_bytegpt()
    x = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        _, past = model(x[:, :9])
        with attach(model) as mon:
            model(x[:, 9:], past)
        full = bytegpt_reference(model, x)
    # the last query's entropy over 10 keys: recompute from the full reference for one position
    h = model.wte(x) + model.wpe(torch.arange(10))
    a = model.blocks[0].ln1(h)
    q, k, _ = model.blocks[0].attn.qkv(a).split(16, dim=2)
    q, k = (y.view(1, 10, 2, 8).transpose(1, 2) for y in (q, k))
    s = (q[:, :, -1:] @ k.transpose(-1, -2)) / math.sqrt(8)
    torch.testing.assert_close(
        mon.entropies()["blocks.0.attn"].double(), entropy_of(s.softmax(-1))[0, :, 0], atol=1e-5, rtol=1e-5
    )
    assert full  # the reference ran


def test_differentiable_feeds_a_loss() -> None:
    model = tiny_bytegpt().train()
    x = torch.randint(0, 256, (2, 16))
    with attach(model, differentiable=True) as mon:
        model(x)
        loss = sum(v.sum() for v in mon.entropies().values())
        loss.backward()
    grad = model.blocks[0].attn.qkv.weight.grad
    assert grad is not None and bool(grad[:32].abs().sum() > 0)  # q and k rows of qkv get a gradient


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_with_masks(batch_first: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=batch_first, bias=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.mul_(6)
    b, tq, tk = 2, 5, 7
    q, kv = torch.randn(b, tq, 12), torch.randn(b, tk, 12)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    pad = torch.zeros(b, tk, dtype=torch.bool)
    pad[1, -3:] = True  # MHA: True = ignore
    causalish = torch.zeros(tq, tk, dtype=torch.bool)
    causalish[0, 4:] = True
    for kwargs in (
        {},
        {"key_padding_mask": pad},
        {"key_padding_mask": pad, "attn_mask": causalish},
        {"attn_mask": torch.randn(tq, tk)},
    ):
        with torch.no_grad():
            ref_out, weights = mha(q, kv, kv, need_weights=True, average_attn_weights=False, **kwargs)
            with attach(mha) as mon:
                out, _ = mha(q, kv, kv, need_weights=True, average_attn_weights=False, **kwargs)
        assert torch.equal(out, ref_out)
        expected = entropy_of(weights).mean(dim=(0, 2))  # weights: (B, H, Tq, Tk)
        torch.testing.assert_close(mon.entropies()["<root>"].double(), expected, atol=1e-5, rtol=1e-5)


def _hf_models():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=32, bos_token_id=0, eos_token_id=0
        )
    )
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=64,
            vocab_size=50,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    for m in (gpt2, llama):
        with torch.no_grad():
            for name, p in m.named_parameters():
                if any(s in name for s in ("c_attn", "q_proj", "k_proj")):
                    p.mul_(15)
    return {"gpt2": gpt2.eval(), "llama": llama.eval()}


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_hugging_face_models(implementation: str) -> None:
    for kind, model in _hf_models().items():
        model.set_attn_implementation(implementation)
        x = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3))
        am = torch.ones(2, 9, dtype=torch.long)
        am[1, :3] = 0  # left padding
        with torch.no_grad():
            before = model(x, attention_mask=am).logits
            with attach(model) as mon:
                during = model(x, attention_mask=am).logits
            assert model.config._attn_implementation == implementation  # restored
            after = model(x, attention_mask=am).logits
            assert torch.equal(before, during) and torch.equal(before, after), kind
            model.set_attn_implementation("eager")
            attentions = model(x, attention_mask=am, output_attentions=True).attentions
            model.set_attn_implementation(implementation)
        assert len(mon.layers) == 2 and set(mon.adapters.values()) == {"hf"}
        for name, a in zip(mon.layers, attentions):
            h = entropy_of(a)  # (B, H, T); padded query rows of row 1 have no key: left out
            valid = torch.ones_like(h, dtype=torch.bool)
            valid[1, :, :3] = False
            expected = (h * valid).sum(dim=(0, 2)) / valid.sum(dim=(0, 2))
            torch.testing.assert_close(mon.entropies()[name].double(), expected, atol=1e-5, rtol=1e-5)


def test_hugging_face_generate_with_cache() -> None:
    model = _hf_models()["llama"]
    x = torch.randint(0, 50, (1, 5))
    with torch.no_grad():
        plain = model.generate(x, max_new_tokens=4, do_sample=False, pad_token_id=0)
        with attach(model) as mon:
            watched = model.generate(x, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(plain, watched)
    assert len(mon.history) == 4  # one forward per generated token, every one recorded


def test_no_attention_module_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="recognised attention module") as err:
        attach(nn.Sequential(nn.Linear(3, 3)))
    for adapter in ADAPTERS:
        assert adapter.looks_for in str(err.value)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        attach("gpt2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every must be an int >= 1, got 0"):
        attach(tiny_bytegpt(), every=0)
