"""The import path ``entropykit.lm.detect`` users already have: the auditing part now lives in
``entropykit.detect``; this module re-exports its public names."""

from __future__ import annotations

from entropykit.detect import *  # noqa: F403
from entropykit.detect import __all__ as __all__
