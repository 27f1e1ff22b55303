"""Shared by every test folder: ``tests/`` and its part folders on ``sys.path``, so the helper
modules (``hf_fixtures``, ``references``) and the fixtures one part's tests share with another's
(``test_compression_fixtures``, ``test_scoring``) import the same way from any folder. Test file
names are unique across folders."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

_TESTS = Path(__file__).resolve().parent
_PARTS = sorted(p for p in _TESTS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
for _folder in [_TESTS, *_PARTS]:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for the test, the caller's count restored after (the codec and the
    fast steppers pin one thread; their references run faster, and immune to a busy machine, pinned
    too). Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def without_compiler(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[ModuleType], None]]:
    """Call it with a compiled-kernel module (``entropykit.models.kernels.decode_attention``,
    ``piece_attention``): ``CC`` then names no compiler, the kernel cache is an empty folder and the
    module's build is forgotten, until the test ends; then the real build comes back (checked)."""
    modules: list[ModuleType] = []

    def apply(module: ModuleType) -> None:
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
        monkeypatch.setenv("ENTROPYKIT_CACHE_DIR", str(tmp_path))
        module._build.cache_clear()
        modules.append(module)

    yield apply
    monkeypatch.undo()
    for module in modules:
        module._build.cache_clear()
        assert module.available()
