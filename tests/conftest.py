"""Shared by every test folder: ``tests/`` and its part folders on ``sys.path``, so the helper
modules (``hf_fixtures``, ``references``) and the fixtures one part's tests share with another's
(``test_compression_fixtures``, ``test_scoring``) import the same way from any folder. Test file
names are unique across folders."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
_PARTS = sorted(p for p in _TESTS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
for _folder in [_TESTS, *_PARTS]:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
