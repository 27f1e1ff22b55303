"""Language-model tools: model loading, scoring, compression and detection.

``load_model`` and the adapter protocol are imported eagerly; the heavier parts on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from entropykit.lm.adapters import (
    ByteModel,
    Encoding,
    HFModel,
    LanguageModel,
    bundled_models,
    load_model,
    resolve_model,
)

# public name -> module that defines it (imported lazily)
_LAZY = {
    "score": "entropykit.lm.scoring",
    "ScoreResult": "entropykit.lm.scoring",
    "compress": "entropykit.lm.compression",
    "decompress": "entropykit.lm.compression",
    "compress_stream": "entropykit.lm.compression",
    "decompress_stream": "entropykit.lm.compression",
    "ContainerError": "entropykit.lm.compression",
    "container_info": "entropykit.lm.compression",
    "resolve_precision": "entropykit.lm.compression",
    "detect": "entropykit.lm.detect",
    "score_texts": "entropykit.lm.detect",
}

__all__ = [
    "ByteModel", "Encoding", "HFModel", "LanguageModel", "bundled_models", "load_model", "resolve_model",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == module.__name__.rsplit(".", 1)[1] else getattr(module, name)
    raise AttributeError(f"module 'entropykit.lm' has no attribute {name!r}")
