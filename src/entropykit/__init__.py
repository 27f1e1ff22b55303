"""entropykit: entropy, cross-entropy and divergences as first-class tools for neural models.

The information measures (``entropykit.measures``) are re-exported here; the parts live in
sub-packages: ``entropykit.ops``, ``entropykit.losses``, ``entropykit.decoding``, ``entropykit.lm``.
Everything is imported on first use (``ek.entropy`` loads ``entropykit.measures`` and torch), so
``import entropykit`` and the command line's ``--help`` start without torch. The
``TYPE_CHECKING`` imports give type checkers and IDEs the real signatures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entropykit import codec as codec
    from entropykit import decoding as decoding
    from entropykit import detect as detect
    from entropykit import estimators as estimators
    from entropykit import lm as lm
    from entropykit import losses as losses
    from entropykit import measures as measures
    from entropykit import models as models
    from entropykit import monitors as monitors
    from entropykit import ops as ops
    from entropykit import optim as optim
    from entropykit import rl as rl
    from entropykit import tta as tta
    from entropykit import uncertainty as uncertainty
    from entropykit.measures import DISTILL_DIVERGENCES as DISTILL_DIVERGENCES
    from entropykit.measures import DIVERGENCE_ALIASES as DIVERGENCE_ALIASES
    from entropykit.measures import DIVERGENCES as DIVERGENCES
    from entropykit.measures import Divergence as Divergence
    from entropykit.measures import TokenStats as TokenStats
    from entropykit.measures import alpha_div as alpha_div
    from entropykit.measures import check_distributions as check_distributions
    from entropykit.measures import chi2_div as chi2_div
    from entropykit.measures import cross_entropy as cross_entropy
    from entropykit.measures import entropy as entropy
    from entropykit.measures import hellinger as hellinger
    from entropykit.measures import js_div as js_div
    from entropykit.measures import kl_div as kl_div
    from entropykit.measures import normalized_entropy as normalized_entropy
    from entropykit.measures import reduce as reduce
    from entropykit.measures import renyi_entropy as renyi_entropy
    from entropykit.measures import resolve_divergence as resolve_divergence
    from entropykit.measures import rolling_mean as rolling_mean
    from entropykit.measures import skew_kl as skew_kl
    from entropykit.measures import surprisal as surprisal
    from entropykit.measures import token_rank as token_rank
    from entropykit.measures import token_stats as token_stats
    from entropykit.measures import tsallis_entropy as tsallis_entropy
    from entropykit.measures import tv_distance as tv_distance
    from entropykit.measures import varentropy as varentropy

__version__ = "0.1.0"

# entropykit.measures.__all__, spelled out so that reading it needs no torch (a test keeps them equal)
_MEASURES = (
    "DISTILL_DIVERGENCES", "DIVERGENCES", "DIVERGENCE_ALIASES", "Divergence", "TokenStats", "alpha_div",
    "check_distributions", "chi2_div", "cross_entropy", "entropy", "hellinger", "js_div", "kl_div",
    "normalized_entropy", "reduce", "renyi_entropy", "resolve_divergence", "rolling_mean", "skew_kl",
    "surprisal", "token_rank", "token_stats", "tsallis_entropy", "tv_distance", "varentropy",
)
_PARTS = (
    "measures", "ops", "losses", "decoding", "models", "lm", "detect", "codec",
    "rl", "optim", "monitors", "estimators", "tta", "uncertainty",
)
__all__ = [*_MEASURES, *_PARTS]


def __getattr__(name: str) -> Any:
    if name in _PARTS:
        module = importlib.import_module(f"entropykit.{name}")
        globals()[name] = module
        return module
    if name in _MEASURES:
        value = getattr(importlib.import_module("entropykit.measures"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'entropykit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
