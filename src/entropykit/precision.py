"""The one precision vocabulary: what arithmetic a model's forward passes use.

No torch import here, so the command line can offer the choices without loading torch.

- ``"float32"``: the model's own float32 arithmetic (exact reference numbers);
- ``"bfloat16"``: bf16 matmuls with float32 accumulation (CPU autocast, or packed bf16 weights);
  statistics are still computed in float32;
- ``"int8kv"``: ``"bfloat16"`` plus an int8 KV cache read by the fused decode-attention kernel
  (incremental decoding of the bundled ByteGPT models only);
- ``"auto"``: resolved once per call to the fastest precision the model, the CPU and the task
  support (see the resolver of each task).
"""

from __future__ import annotations

from typing import Literal

Precision = Literal["auto", "float32", "bfloat16", "int8kv"]
PRECISIONS: tuple[Precision, ...] = ("auto", "float32", "bfloat16", "int8kv")
