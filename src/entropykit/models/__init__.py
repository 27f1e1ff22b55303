"""Language models behind one protocol: adapters (bundled ByteGPT, Hugging Face), the ByteGPT model
with its fast incremental step, the one window iterator, and the bundled weights.

Every part that drives a language model (``lm``, ``detect``, ``codec``, ``decoding``) imports it from
here; nothing here imports those parts.
"""

from __future__ import annotations

from entropykit.models.adapters import (
    BUNDLED_DIR,
    DEFAULT_MODEL,
    ByteModel,
    Encoding,
    HFModel,
    LanguageModel,
    bundled_models,
    load_model,
    resolve_model,
)

__all__ = [
    "BUNDLED_DIR", "DEFAULT_MODEL", "ByteModel", "Encoding", "HFModel", "LanguageModel", "bundled_models",
    "load_model", "resolve_model",
]
