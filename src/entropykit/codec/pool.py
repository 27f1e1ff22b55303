"""Running coding groups: inline or in worker processes (one core each), and the progress meter.

The place a group runs never changes its bits: every worker pins one intra-op thread, as the
inline path does (:func:`pinned_threads`). Progress is reported as cumulative
``progress(done_bytes, coded_bits)``: ``done_bytes`` never decreases, never exceeds the input and
ends at exactly its length, however the workers' reports interleave with their results
(:class:`Meter`).

Example:
    >>> calls = []
    >>> m = Meter(lambda done, bits: calls.append(done))
    >>> m.report(0, 40, 8.0); m.report(7, 10, 2.0); m.finish(0, 50, 9.0)
    >>> m.report(0, 40, 8.0)  # a late report of a finished group is ignored
    >>> calls
    [40, 50, 60]
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import torch

from entropykit._validate import check_int
from entropykit.codec.container import Params
from entropykit.models import LanguageModel

__all__ = ["Groups", "Meter", "Progress", "closing", "count_workers", "pinned_threads"]

Progress = Callable[[int, float], None]  # (raw bytes done, coded bits so far), cumulative
GroupFn = Callable[[LanguageModel, Params, int, Any, "Meter"], list[bytes]]


@contextmanager
def pinned_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, restoring the caller's count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def count_workers(n: int | None) -> int:
    """The number of worker processes: ``n``, or the CPU count (at most 8) for ``None``."""
    if n is None:
        return max(1, min(8, os.cpu_count() or 1))
    return check_int(n, "workers", 1)


class Meter:
    """Turns the progress of the groups in flight (keyed by their first chunk, unique in a stream)
    into cumulative ``progress(done_bytes, coded_bits)``; only the calling process's main thread
    touches it.

    A group's partial reports (:meth:`report`) count until its :meth:`finish`; reports of a finished
    group are ignored, whenever they arrive (a worker's queued reports can arrive after its result,
    even during a later batch of groups)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress, self.bytes, self.bits = progress, 0, 0.0
        self.partial: dict[int, tuple[int, float]] = {}
        self.finished: set[int] = set()

    def group(
        self, key: int, lengths: list[int], n_bytes: int, bits: Callable[[float], float]
    ) -> Callable[[int], None]:
        """The per-step callback of group ``key`` (rows of ``lengths`` tokens, ``n_bytes`` bytes);
        ``bits(fraction_done)`` gives the bits coded so far."""
        steps, n_sym = max(lengths, default=0), max(1, sum(lengths))

        def tick(i: int) -> None:
            if self.progress is not None and (i % 256 == 255 or i == steps - 1):
                done = sum(min(i + 1, k) for k in lengths) / n_sym
                self.report(key, int(done * n_bytes), bits(done))

        return tick

    def report(self, key: int, done_bytes: int, bits: float) -> None:
        """Group ``key`` has coded ``done_bytes`` so far, costing ``bits``."""
        if key in self.finished:
            return
        self.partial[key] = (done_bytes, bits)
        self._emit()

    def finish(self, key: int, n_bytes: int, bits: float) -> None:
        """Group ``key`` is done: ``n_bytes`` bytes in ``bits`` bits."""
        if key in self.finished:
            return
        self.finished.add(key)
        self.partial.pop(key, None)
        self.bytes += n_bytes
        self.bits += bits
        self._emit()

    def _emit(self) -> None:
        if self.progress is not None:
            extra = self.partial.values()
            self.progress(self.bytes + sum(b for b, _ in extra), self.bits + sum(c for _, c in extra))


_WORKER: dict[str, Any] = {}  # in a worker process: its model and progress queue


def _init_worker(lm: LanguageModel, ticks: Any) -> None:
    torch.set_num_threads(1)
    _WORKER.update(lm=lm, ticks=ticks)


def _in_worker(fn: GroupFn, p: Params, key: int, items: Any) -> tuple[list[bytes], int, float]:
    """``fn`` on one group in a worker; returns its result and its final (bytes, bits): the queued
    progress reports may arrive after the result."""
    ticks = _WORKER["ticks"]
    meter = Meter(lambda done, bits: ticks.put((key, done, bits)))
    return fn(_WORKER["lm"], p, key, items, meter), meter.bytes, meter.bits


class Groups:
    """Runs coding groups in order: inline when one worker suffices, else in worker *processes*, one
    core each (threads would serialise on the GIL between the many small ops of a step). Each worker
    pins one thread, as the inline path does, so the place a group runs never changes its bits."""

    def __init__(self, lm: LanguageModel, n_workers: int, meter: Meter) -> None:
        self.lm, self.workers, self.meter = lm, n_workers, meter
        self.pool: ProcessPoolExecutor | None = None
        self.ticks: Any = None

    def run(self, fn: GroupFn, p: Params, groups: list[tuple[int, Any]]) -> list[list[bytes]]:
        """``groups``: (key, items) per group; returns ``fn``'s records/chunks per group."""
        if self.workers == 1 or (len(groups) == 1 and self.pool is None):
            return [fn(self.lm, p, key, items, self.meter) for key, items in groups]
        if self.pool is None:
            # fork: the workers inherit the model (nothing to pickle, no re-import of the caller's
            # __main__ as spawn needs); each pins one thread before any torch work, as DataLoader's do
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.ticks = ctx.Queue()
            self.pool = ProcessPoolExecutor(self.workers, ctx, _init_worker, (self.lm, self.ticks))
        futures: dict[Future[tuple[list[bytes], int, float]], int] = {
            self.pool.submit(_in_worker, fn, p, key, items): key for key, items in groups
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            self._drain()
            for f in done:
                _, n_bytes, bits = f.result()  # raise a worker's error here, in order of completion
                self.meter.finish(futures[f], n_bytes, bits)  # its later reports are ignored
        return [f.result()[0] for f in futures]

    def _drain(self) -> None:
        while True:
            try:
                key, done, bits = self.ticks.get_nowait()
            except queue.Empty:
                return
            self.meter.report(key, done, bits)

    def close(self, abort: bool = False) -> None:
        """Stop the workers (``abort``: at once, without waiting for groups still coding)."""
        if self.pool is None:
            return
        if abort:  # an error or Ctrl-C: do not wait for groups still coding
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=not abort, cancel_futures=True)


@contextmanager
def closing(groups: Groups) -> Iterator[Groups]:
    """Close ``groups`` after the block; abort its workers if the block raises (or Ctrl-C)."""
    try:
        yield groups
    except BaseException:
        groups.close(abort=True)
        raise
    groups.close()
