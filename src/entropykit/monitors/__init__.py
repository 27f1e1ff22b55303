"""Monitors: watch information measures inside a model while it trains or runs.

- ``attach(model) -> AttentionMonitor``: per-layer, per-head attention entropy (streamed over key
  blocks, never the T x T matrix; fused attention keeps running), with a history, a flat dict for
  loggers, TensorBoard scalars and a PNG heat map. ``ADAPTERS`` lists the attention modules it
  recognises (ByteGPT, ``torch.nn.MultiheadAttention``, Hugging Face attention-interface models).

The functional core is ``entropykit.ops.attention_entropy``; the regularisers that shape attention
entropy are in ``entropykit.losses.regularizers``.
"""

from __future__ import annotations

from entropykit.monitors.attention import ADAPTERS, Adapter, AttentionMonitor, attach

__all__ = ["ADAPTERS", "Adapter", "AttentionMonitor", "attach"]
