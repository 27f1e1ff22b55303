"""The one precision vocabulary: what arithmetic a model's forward passes use, and its one resolver.

No torch import at module level, so the command line offers the choices without loading torch.

- ``"float32"``: the model's own float32 arithmetic (the exact reference numbers);
- ``"bfloat16"``: bf16 matmuls with float32 accumulation (CPU autocast, or packed bf16 weights);
  statistics are still computed in float32;
- ``"int8kv"``: ``"bfloat16"`` plus an int8 KV cache read by the fused decode-attention kernel
  (incremental decoding of the bundled ByteGPT models only);
- ``"auto"``: the fastest precision the task supports here: ``"int8kv"`` then ``"bfloat16"`` where
  the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), else ``"float32"``.

Each task (scoring, compression, generation) says which concrete precisions it ``supports`` for a
given model and calls :func:`resolve` once per call.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

Precision = Literal["auto", "float32", "bfloat16", "int8kv"]
PRECISIONS: tuple[Precision, ...] = ("auto", "float32", "bfloat16", "int8kv")
_FASTEST_FIRST: tuple[Precision, ...] = ("int8kv", "bfloat16", "float32")


@functools.cache
def native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX) and torch has oneDNN:
    there the bf16 paths are several times faster than float32 at small batches."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    if not ("avx512_bf16" in flags or "amx_bf16" in flags):
        return False
    import torch  # only here: importing this module must not load torch

    return bool(torch.backends.mkldnn.is_available())


def resolve(
    precision: object, supported: Sequence[Precision], *, name: str = "precision", why: str = ""
) -> Precision:
    """The concrete precision (never ``"auto"``) to run with.

    ``supported``: the concrete precisions the task can run here for this model (``"float32"``
    always among them). ``"auto"`` becomes the fastest supported one, bf16-based ones only where
    :func:`native_bf16`; an explicit precision must be supported, else ``ValueError`` naming
    ``name``, the value and ``why`` (the task's reason, e.g. "int8kv needs a bundled ByteGPT model").

    >>> resolve("float32", ("float32", "bfloat16"))
    'float32'
    >>> resolve("auto", ("float32",))
    'float32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision == "auto":
        fast = native_bf16()
        for p in _FASTEST_FIRST:
            if p in supported and (p == "float32" or fast):
                return p
        return "float32"
    if precision not in supported:
        ok = ", ".join(map(repr, ("auto", *supported)))
        raise ValueError(f"{name} must be one of {ok} here, got {precision!r}{f' ({why})' if why else ''}")
    return precision  # type: ignore[return-value]
