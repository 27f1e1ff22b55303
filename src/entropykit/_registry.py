"""The one registry entry of the parts whose methods are plain callables (``rl``, ``optim``, ``tta``).

Each such part keeps ``METHODS: dict[str, Method]`` so the CLI, benchmarks and docs enumerate its
methods from one place. Parts whose entries carry more (``detect``: kind and reference-model needs;
``estimators``: quantity and inputs) define their own entry type with these fields first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Method", "registry"]


@dataclass(frozen=True)
class Method:
    """A registered method: what to call, the source it follows, its main parameters (name ->
    default) and a one-line summary."""

    name: str
    fn: Callable[..., Any]
    reference: str
    params: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


def registry(*methods: Method) -> dict[str, Method]:
    """``{method.name: method}`` in the given order; a repeated name is an error.

    >>> sorted(registry(Method("a", abs, "--"), Method("b", round, "--")))
    ['a', 'b']
    """
    out: dict[str, Method] = {}
    for m in methods:
        if m.name in out:
            raise ValueError(f"methods must have distinct names, got {m.name!r} twice")
        out[m.name] = m
    return out
