"""Shared benchmark plumbing: timing, peak extra memory, machine facts, RESULTS.md sections.

Peak extra memory is the rise of the process's resident-set high-water mark (VmHWM) over the
resident set just before the call, after resetting the high-water mark (``/proc/self/clear_refs``
with ``5``). It counts every allocation that touched memory (torch, NumPy, SciPy alike). It is a
Linux-only measurement; elsewhere it reports ``nan``.
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from entropykit._io import atomic_write

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _status_kb(field: str) -> float:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return float(m.group(1)) if m else float("nan")


def peak_extra_mb(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn()`` once; return its result and the peak resident memory it added, in MB."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return fn(), float("nan")
    base = _status_kb("VmRSS")
    out = fn()
    return out, (_status_kb("VmHWM") - base) / 1024.0


def timeit(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


T = TypeVar("T")


def round_order(items: Iterable[T], r: int) -> list[T]:
    """The order of timed methods in round ``r``: as given in even rounds, reversed in odd ones (ABC CBA),
    so that a drift of the machine's speed over a run weighs on every method alike."""
    order = list(items)
    return order if r % 2 == 0 else order[::-1]


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(x: Any) -> str:
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def record(name: str, title: str, command: str, body: str) -> None:
    """Replace (or add) this benchmark's section of RESULTS.md, between its own markers."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n"
        f"- date: {stamp}\n- machine: {machine()}\n- command: `{command}`\n\n{body.strip()}\n"
        f"<!-- END {name} -->"
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write(RESULTS, text)
