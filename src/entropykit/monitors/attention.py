"""Watch the attention entropy of every layer and head of a model while it trains or runs.

``attach(model)`` finds the model's attention modules, records each head's mean attention entropy
(``entropykit.ops.attention_entropy``: streamed over key blocks, never the T x T matrix, so fused
attention such as SDPA keeps running) and returns an ``AttentionMonitor``; ``remove()`` (or leaving
the ``with`` block) detaches it. The model's outputs are bit-identical with and without the monitor:
it only reads the queries and keys.

Recognised attention modules (``ADAPTERS``, the registry; tried in order):

=================  =============================================================================
adapter            how q and k are captured
=================  =============================================================================
bytegpt            ``entropykit.models.bytegpt.SelfAttention``: a forward hook; q recomputed from
                   the layer input (one D x D matmul), k read from the returned cache
torch_mha          ``torch.nn.MultiheadAttention`` (self- or cross-attention, batch_first or
                   not, masks in MHA's convention): a forward hook; q and k from ``in_proj``
hf                 Hugging Face models whose attention calls transformers' attention interface
                   (GPT-2, Llama, Mistral, Qwen, ... in transformers >= 4.48): an attention
                   function registered as ``"entropykit_monitor"`` that records (query, key,
                   mask) after RoPE and grouped-query expansion, then calls the model's own
                   implementation (sdpa, eager, ...)
=================  =============================================================================

A head's entropy at one forward is the mean over batch rows and over the queries that had a key to
attend to. Recording uses ``attention_entropy(method="fused")`` (PyTorch's fused CPU attention kernel
with the keys as values: a few ulps of the log-partition from the exact value) unless
``differentiable=True``, which uses the exact blocked computation with its gradient.
With ``differentiable=True`` the recorded values keep their autograd graph, so they can
feed a loss (``entropykit.losses.regularizers.attention_entropy_penalty``); otherwise they are
computed under ``torch.no_grad()``.

Source: Zhai et al., "Stabilizing Transformer Training by Preventing Attention Entropy Collapse"
(ICML 2023), who monitor exactly this per-head quantity.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entropykit._validate import check_int
from entropykit.ops.attention import attention_entropy

__all__ = ["ADAPTERS", "Adapter", "AttentionMonitor", "attach"]

HF_IMPLEMENTATION = "entropykit_monitor"


@dataclass(frozen=True)
class Adapter:
    """How to recognise and hook one kind of attention module."""

    name: str
    matches: Callable[[nn.Module], bool]
    hook: Callable[[AttentionMonitor, str, nn.Module], Callable[[], None]]  # returns an undo function
    looks_for: str  # for the error message when nothing matches


# --- the adapters ----------------------------------------------------------------------------------


def _is_bytegpt(m: nn.Module) -> bool:
    from entropykit.models.bytegpt import SelfAttention

    return isinstance(m, SelfAttention)


def _hook_bytegpt(mon: AttentionMonitor, name: str, module: nn.Module) -> Callable[[], None]:
    def hook(mod: Any, args: tuple[Any, ...], output: Any) -> None:
        if not mon._recording:
            return
        x = args[0]
        k = output[1][0]  # (B, H, Tk, hd): the cache after this call (past keys included)
        b, t, c = x.shape
        w, bias = mod.qkv.weight[:c], mod.qkv.bias[:c] if mod.qkv.bias is not None else None
        with mon._grad_context():
            q = F.linear(x, w, bias).view(b, t, mod.n_head, c // mod.n_head).transpose(1, 2)
            mon._record(name, q, k, None, causal=True)

    handle = module.register_forward_hook(hook)
    return handle.remove


def _hook_mha(mon: AttentionMonitor, name: str, module: nn.Module) -> Callable[[], None]:
    assert isinstance(module, nn.MultiheadAttention)

    def hook(mod: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not mon._recording:
            return
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
        bound = dict(zip(names, args)) | kwargs
        query, key = bound["query"], bound["key"]
        if mod.batch_first and query.dim() == 3:
            query, key = query.transpose(0, 1), key.transpose(0, 1)
        unbatched = query.dim() == 2
        if unbatched:
            query, key = query.unsqueeze(1), key.unsqueeze(1)
        e, h = mod.embed_dim, mod.num_heads
        if mod.in_proj_weight is not None:
            wq, wk = mod.in_proj_weight[:e], mod.in_proj_weight[e : 2 * e]
        else:
            wq, wk = mod.q_proj_weight, mod.k_proj_weight
        bq = bk = None
        if mod.in_proj_bias is not None:
            bq, bk = mod.in_proj_bias[:e], mod.in_proj_bias[e : 2 * e]
        with mon._grad_context():
            tq, b = query.shape[0], query.shape[1]
            tk = key.shape[0]
            q = F.linear(query, wq, bq).view(tq, b, h, e // h).permute(1, 2, 0, 3)
            k = F.linear(key, wk, bk)
            if mod.bias_k is not None:  # add_bias_kv: one learned key appended
                k = torch.cat([k, mod.bias_k.expand(1, b, e)], dim=0)
            k = k.view(k.shape[0], b, h, e // h).permute(1, 2, 0, 3)
            allowed = _mha_mask(
                bound.get("attn_mask"), bound.get("key_padding_mask"), b, h, tq, tk, k.shape[2]
            )
            mon._record(name, q, k, allowed, causal=bool(bound.get("is_causal")) and allowed is None)

    handle = module.register_forward_hook(hook, with_kwargs=True)
    return handle.remove


def _mha_mask(
    attn_mask: Tensor | None, key_padding_mask: Tensor | None, b: int, h: int, tq: int, tk: int, tk_all: int
) -> Tensor | None:
    """MHA's masks (bool True = NOT allowed, or float added) as one SDPA-style mask (B, H, Tq, Tk)."""
    out: Tensor | None = None
    for m, shape in ((attn_mask, None), (key_padding_mask, (b, 1, 1, tk))):
        if m is None:
            continue
        if shape is not None:
            m = m.reshape(shape) if m.dim() == 2 else m.reshape(1, 1, 1, tk)
        elif m.dim() == 3:  # (B * H, Tq, Tk)
            m = m.reshape(b, h, tq, tk)
        m = (~m) if m.dtype == torch.bool else m  # SDPA: True = may attend
        if out is None:
            out = m
        elif out.dtype == torch.bool and m.dtype == torch.bool:
            out = out & m
        else:
            out = _as_bias(out) + _as_bias(m)
    if out is not None and tk_all > tk:  # add_bias_kv's extra key is always visible
        pad = torch.ones if out.dtype == torch.bool else torch.zeros
        out = torch.cat([out.expand(b, h, tq, tk), pad((b, h, tq, tk_all - tk), dtype=out.dtype)], dim=-1)
    return out


def _as_bias(x: Tensor) -> Tensor:
    """A mask as an additive float bias (bool True = may attend -> 0, False -> -inf)."""
    if x.dtype != torch.bool:
        return x
    return torch.zeros(x.shape, dtype=torch.float32, device=x.device).masked_fill(~x, -math.inf)


def _is_hf_attention(m: nn.Module) -> bool:
    cfg = getattr(m, "config", None)
    return (
        cfg is not None
        and hasattr(cfg, "_attn_implementation")
        and type(m).__name__.endswith("Attention")
        and type(m).__module__.startswith("transformers.")
    )


_HF_MODULES: weakref.WeakKeyDictionary[nn.Module, tuple[AttentionMonitor, str, str]] = (
    weakref.WeakKeyDictionary()
)


def _hf_attention(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, **kwargs: Any
) -> Any:
    """The attention function registered with transformers: record, then run the original one."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    mon, name, original = _HF_MODULES[module]
    if mon._recording:
        with mon._grad_context():
            mask = attention_mask
            if mask is not None and mask.shape[-1] != key.shape[2]:
                mask = mask[..., : key.shape[2]]
            if mask is not None and mask.is_floating_point():  # eager's "finfo.min = masked" convention
                mask = mask.masked_fill(mask <= torch.finfo(mask.dtype).min / 2, -math.inf)
            causal = (
                mask is None
                and query.shape[2] > 1
                and bool(kwargs.get("is_causal", getattr(module, "is_causal", True)))
            )
            mon._record(name, query, key, mask, causal=causal, scale=kwargs.get("scaling"))
    if original == "eager":
        fn = _hf_eager(module)
    else:
        fn = ALL_ATTENTION_FUNCTIONS[original]
    return fn(module, query, key, value, attention_mask, **kwargs)


def _hf_eager(module: nn.Module) -> Callable[..., Any]:
    import importlib

    return importlib.import_module(type(module).__module__).eager_attention_forward  # type: ignore[no-any-return]


def _register_hf(original: str) -> str:
    """Register our attention function under a name of its own for each original implementation,
    with the original's mask builder (transformers builds no mask at all for an unknown name)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    name = f"{HF_IMPLEMENTATION}_{original}"
    AttentionInterface.register(name, _hf_attention)
    if original in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    return name


def _hook_hf(mon: AttentionMonitor, name: str, module: nn.Module) -> Callable[[], None]:
    config: Any = module.config
    if id(config) in mon._hf_configs:  # a config shared by several layers: wrapped once
        original = mon._hf_configs[id(config)][1]
        _HF_MODULES[module] = (mon, name, original)
        return lambda: _HF_MODULES.pop(module, None) and None
    original = str(config._attn_implementation or "eager")
    if original.startswith(HF_IMPLEMENTATION):
        raise ValueError(f"model: module {name!r} is already watched by another AttentionMonitor")
    mon._hf_configs[id(config)] = (config, original)
    _HF_MODULES[module] = (mon, name, original)
    config._attn_implementation = _register_hf(original)

    def undo() -> None:
        _HF_MODULES.pop(module, None)
        mon._hf_configs.pop(id(config), None)
        config._attn_implementation = original

    return undo


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("bytegpt", _is_bytegpt, _hook_bytegpt, "entropykit ByteGPT SelfAttention"),
    Adapter(
        "torch_mha", lambda m: isinstance(m, nn.MultiheadAttention), _hook_mha, "torch.nn.MultiheadAttention"
    ),
    Adapter(
        "hf",
        _is_hf_attention,
        _hook_hf,
        "Hugging Face *Attention modules using transformers' attention interface (GPT-2, Llama, ...)",
    ),
)


# --- the monitor ---------------------------------------------------------------------------------


class AttentionMonitor:
    """Per-layer, per-head attention entropy of a model, recorded at every ``every``-th forward.

    Attributes:
        layers: names of the watched attention modules, in model order.
        latest: layer name -> (H,) mean entropy per head from the most recent recorded forward.
        history: one dict per recorded forward of the whole model (layer -> (H,) float tensor,
            detached, on the CPU); ``steps[i]`` is the forward count at which ``history[i]`` was taken.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 1,
        block_size: int = 256,
        differentiable: bool = False,
        base: float | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.every = check_int(every, "every", lo=1)
        self.block_size = check_int(block_size, "block_size", lo=1)
        self.differentiable = bool(differentiable)
        self.base = base
        self.latest: dict[str, Tensor] = {}
        self.history: list[dict[str, Tensor]] = []
        self.steps: list[int] = []
        self.layers: list[str] = []
        self.adapters: dict[str, str] = {}
        self._calls = 0
        self._recording = False
        self._undo: list[Callable[[], None]] = []
        self._hf_configs: dict[int, tuple[Any, str]] = {}  # id(config) -> (config, its implementation)
        for name, module in model.named_modules():
            for adapter in ADAPTERS:
                if adapter.matches(module):
                    self._undo.append(adapter.hook(self, name or "<root>", module))
                    self.layers.append(name or "<root>")
                    self.adapters[name or "<root>"] = adapter.name
                    break
        if not self.layers:
            self.remove()
            looked = "; ".join(a.looks_for for a in ADAPTERS)
            raise ValueError(
                f"model must contain a recognised attention module ({looked}), got none in "
                f"{type(model).__name__}"
            )
        pre = model.register_forward_pre_hook(self._pre)
        post = model.register_forward_hook(self._post)
        self._undo += [pre.remove, post.remove]

    # forward bookkeeping
    def _pre(self, module: nn.Module, args: Any) -> None:
        self._recording = self._calls % self.every == 0
        if self._recording:
            self.latest = {}

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._recording and self.latest:
            self.history.append({k: v.detach().float().cpu() for k, v in self.latest.items()})
            self.steps.append(self._calls)
        self._recording = False
        self._calls += 1

    def _grad_context(self) -> Any:
        return nullcontext() if self.differentiable else torch.no_grad()

    def _record(
        self,
        name: str,
        q: Tensor,
        k: Tensor,
        mask: Tensor | None,
        *,
        causal: bool,
        scale: float | None = None,
    ) -> None:
        ent, valid = attention_entropy(
            q,
            k,
            attn_mask=mask,
            is_causal=causal,
            scale=scale,
            block_size=self.block_size,
            method="blocked" if self.differentiable else "fused",
            base=self.base,
            return_valid=True,
        )
        w = valid.to(ent.dtype)
        per_head = (ent * w).sum(dim=(0, 2)) / w.sum(dim=(0, 2)).clamp(min=1.0)  # (H,)
        self.latest[name] = per_head if self.differentiable else per_head.detach()

    # public API
    def entropies(self) -> dict[str, Tensor]:
        """Layer name -> (H,) mean attention entropy per head at the most recent recorded forward
        (with ``differentiable=True``, tensors that carry the graph of that forward)."""
        return dict(self.latest)

    def as_dict(self, step: int = -1) -> dict[str, float]:
        """A flat ``{"<layer>/head<h>": entropy}`` dict of one recorded step, for loggers."""
        if not self.history:
            return {}
        return {
            f"{layer}/head{i}": float(v) for layer, t in self.history[step].items() for i, v in enumerate(t)
        }

    def log_tensorboard(self, writer: Any, step: int | None = None, tag: str = "attention_entropy") -> None:
        """Write the latest recorded step to a TensorBoard ``SummaryWriter`` (one scalar per head)."""
        s = self.steps[-1] if step is None and self.steps else (step or 0)
        for key, value in self.as_dict().items():
            writer.add_scalar(f"{tag}/{key}", value, s)

    def matrix(self) -> Tensor:
        """(steps, layers, heads) float tensor of the history (heads padded with NaN if they differ)."""
        if not self.history:
            return torch.empty(0, len(self.layers), 0)
        heads = max(t.numel() for step in self.history for t in step.values())
        out = torch.full((len(self.history), len(self.layers), heads), float("nan"))
        for i, step in enumerate(self.history):
            for j, layer in enumerate(self.layers):
                if layer in step:
                    out[i, j, : step[layer].numel()] = step[layer]
        return out

    def heatmap(self, path: str | Path, *, title: str | None = None) -> Path:
        """A PNG heat map: one row per (layer, head), one column per recorded step (needs matplotlib)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from entropykit._io import atomic_write

        m = self.matrix()
        if m.shape[0] == 0:
            raise ValueError("nothing recorded yet: run the model before drawing the heat map")
        rows = m.permute(1, 2, 0).reshape(-1, m.shape[0]).numpy()
        fig, ax = plt.subplots(figsize=(8, max(2.5, 0.12 * rows.shape[0] + 1.5)))
        im = ax.imshow(
            rows,
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            extent=(self.steps[0] - 0.5, self.steps[-1] + 0.5, rows.shape[0] - 0.5, -0.5),
        )
        ax.set_yticks([j * m.shape[2] for j in range(m.shape[1])], self.layers, fontsize=7)
        ax.set_xlabel("forward call")
        ax.set_ylabel("layer (one row per head)")
        unit = "nats" if self.base is None else f"log base {self.base:g}"
        fig.colorbar(im, ax=ax, label=f"attention entropy ({unit})")
        ax.set_title(title or "attention entropy per layer and head")
        fig.tight_layout()
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        target = Path(path)
        atomic_write(target, buf.getvalue())
        return target

    def remove(self) -> None:
        """Detach every hook (idempotent); the recorded history stays readable."""
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> AttentionMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __iter__(self) -> Iterator[tuple[str, Tensor]]:
        return iter(self.latest.items())


def attach(
    model: nn.Module,
    *,
    every: int = 1,
    block_size: int = 256,
    differentiable: bool = False,
    base: float | None = None,
) -> AttentionMonitor:
    """Start watching ``model``'s attention entropy; see ``AttentionMonitor``.

    >>> import torch
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> model = ByteGPT(ByteGPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=8))
    >>> with attach(model) as mon:
    ...     _ = model(torch.randint(0, 256, (1, 16)))
    >>> sorted(mon.entropies()), tuple(mon.entropies()["blocks.0.attn"].shape)
    (['blocks.0.attn', 'blocks.1.attn'], (2,))
    """
    return AttentionMonitor(
        model, every=every, block_size=block_size, differentiable=differentiable, base=base
    )
