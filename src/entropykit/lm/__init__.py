"""Language-model tools: scoring texts (per-token surprisal, entropy, reports).

``entropykit.lm`` is also the front door users already know: ``load_model`` and the adapters (from
``entropykit.models``) are imported eagerly; ``score`` and the re-exports of the sibling parts
(``compress``... from ``entropykit.codec``, ``detect``/``score_texts`` from ``entropykit.detect``) are
imported on first use, so ``import entropykit.lm`` stays light. The ``TYPE_CHECKING`` imports give
type checkers and IDEs the real signatures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from entropykit.models import (
    ByteModel,
    Encoding,
    HFModel,
    LanguageModel,
    bundled_models,
    load_model,
    resolve_model,
)

if TYPE_CHECKING:
    from entropykit import detect as detect
    from entropykit.codec import ContainerError as ContainerError
    from entropykit.codec import compress as compress
    from entropykit.codec import compress_stream as compress_stream
    from entropykit.codec import container_info as container_info
    from entropykit.codec import decompress as decompress
    from entropykit.codec import decompress_stream as decompress_stream
    from entropykit.codec import resolve_precision as resolve_precision
    from entropykit.detect import score_texts as score_texts
    from entropykit.lm.corpus import CorpusResult as CorpusResult
    from entropykit.lm.corpus import score_corpus as score_corpus
    from entropykit.lm.scoring import ScoreResult as ScoreResult
    from entropykit.lm.scoring import score as score

# public name -> module that defines it (imported lazily)
_LAZY = {
    "score": "entropykit.lm.scoring",
    "ScoreResult": "entropykit.lm.scoring",
    "compress": "entropykit.codec",
    "decompress": "entropykit.codec",
    "compress_stream": "entropykit.codec",
    "decompress_stream": "entropykit.codec",
    "ContainerError": "entropykit.codec",
    "container_info": "entropykit.codec",
    "resolve_precision": "entropykit.codec",
    "detect": "entropykit.detect",
    "score_texts": "entropykit.detect",
    "score_corpus": "entropykit.lm.corpus",
    "CorpusResult": "entropykit.lm.corpus",
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
