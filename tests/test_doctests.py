"""Run the docstring examples of every entropykit module (the CLI and ``__main__`` excepted).

A module whose import fails because an optional third-party dependency is missing is skipped;
any other import error fails the test.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import entropykit


def _modules() -> list[str]:
    names = {"entropykit"}
    for info in pkgutil.walk_packages(entropykit.__path__, "entropykit.", onerror=lambda name: None):
        names.add(info.name)
    skip = ("entropykit.cli", "entropykit.__main__")  # importing __main__ runs the CLI
    return sorted(n for n in names if not any(n == s or n.startswith(s + ".") for s in skip))


MODULES = _modules()


def test_measures_is_covered() -> None:
    assert "entropykit.measures" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing and missing.split(".")[0] != "entropykit":
            pytest.skip(f"optional dependency {missing!r} is not installed")
        raise
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
