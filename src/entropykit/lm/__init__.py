"""Language-model tools: scoring texts (per-token surprisal, entropy, reports) and the analyses built on
it: FACE spectra (``face``), log-likelihood model maps (``model_map``), prompt compression
(``compress_prompt``), scaling-law fits (``fit_power_law``, ``fit_chinchilla``) and corpus-scale
scoring (``score_corpus``, locally, on Ray or on Dask).

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
    from entropykit.lm.fourier import face as face
    from entropykit.lm.fourier import face_metrics as face_metrics
    from entropykit.lm.fourier import surprisal_spectrum as surprisal_spectrum
    from entropykit.lm.loglik_vectors import ModelMap as ModelMap
    from entropykit.lm.loglik_vectors import model_map as model_map
    from entropykit.lm.prompt import compress_prompt as compress_prompt
    from entropykit.lm.scaling import fit_chinchilla as fit_chinchilla
    from entropykit.lm.scaling import fit_power_law as fit_power_law
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
    # analyses built on the per-token statistics of score (issue 23)
    "face": "entropykit.lm.fourier",
    "face_metrics": "entropykit.lm.fourier",
    "surprisal_spectrum": "entropykit.lm.fourier",
    "model_map": "entropykit.lm.loglik_vectors",
    "ModelMap": "entropykit.lm.loglik_vectors",
    "compress_prompt": "entropykit.lm.prompt",
    "fit_power_law": "entropykit.lm.scaling",
    "fit_chinchilla": "entropykit.lm.scaling",
}

__all__ = [
    "ByteModel", "Encoding", "HFModel", "LanguageModel", "bundled_models", "load_model", "resolve_model",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        # a sibling part re-exported whole (``detect``) is the module; every other name is an attribute
        # (``face`` is the function of ``entropykit.lm.fourier``, not that module)
        return module if module.__name__ == f"entropykit.{name}" else getattr(module, name)
    raise AttributeError(f"module 'entropykit.lm' has no attribute {name!r}")
