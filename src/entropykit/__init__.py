"""entropykit: entropy, cross-entropy and divergences as first-class tools for neural models.

The information measures (``entropykit.measures``) are re-exported here; the parts live in
sub-packages imported on first use: ``entropykit.ops``, ``entropykit.losses``,
``entropykit.decoding``, ``entropykit.lm``.
"""

from __future__ import annotations

import importlib
from typing import Any

from entropykit import measures
from entropykit.measures import *  # noqa: F403

__version__ = "0.1.0"

_PARTS = ("ops", "losses", "decoding", "lm")
__all__ = [*measures.__all__, "measures", *_PARTS]


def __getattr__(name: str) -> Any:
    if name in _PARTS:
        return importlib.import_module(f"entropykit.{name}")
    raise AttributeError(f"module 'entropykit' has no attribute {name!r}")
