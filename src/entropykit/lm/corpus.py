"""Score a whole corpus: one summary row per document, resumable, on one process or a Ray cluster.

``score_corpus(source, out, model=..., engine="local" | "ray")`` reads JSON-lines, Parquet and text
files (one file, or a directory walked in sorted order), scores every document with
:func:`entropykit.lm.score` and writes one row per document to Parquet or JSON lines, **in input
order**. Per document (all in bits, as ``score``): tokens, bytes, bits per byte, perplexity, mean
surprisal, mean entropy, the high-window-entropy fraction and the window-entropy peak (its value and
byte span), plus any user scorer (``scorers={"min_k": fn}``, e.g. the membership and machine-text
scores of ``entropykit.detect``, which the CLI wires in with ``--detect``).

How it scales and resumes:

- **Plan** (driver, streaming, O(shards) memory): documents get stable ids (``id_field`` or
  ``<relative path>:<line>`` / ``:<row>`` / the path of a text file) and consecutive documents form
  shards of ``shard_docs``. A shard's SHA-256 covers the scoring options, the model and every
  (id, SHA-256 of the text) in it. Files that cannot be read are reported with their path and
  skipped (``on_error="skip"``, a warning and ``CorpusResult.skipped``) or fail the job
  (``on_error="fail"``); a document that cannot be scored (empty, or one token without BOS) keeps its
  row with NaN numbers and the reason in ``error``. Nothing is dropped silently.
- **Score**: a worker reads its shard's byte/row range itself (texts never pass through the driver),
  re-hashes what it read (a file changed since planning is an error, not a wrong row), and returns
  the rows; the driver writes each finished shard atomically to ``<out>.parts/NNNNNN-<hash>.json``.
  The model is loaded once per worker (``ShardScorer``, a Ray actor class under ``map_batches`` with
  ``concurrency=workers``); ``engine="local"`` runs the same class in this process, ``engine="dask"``
  one per Dask worker process.
- **Resume**: a rerun reuses every part whose name, hash, row count and ids match its shard, so a run
  killed at any point loses at most the shards in flight and never duplicates a row.
- **Order**: rows are assembled from the parts by shard index, so Ray's out-of-order completion
  (ray #50890, #35724) and drifting batch sizes (#51419) do not matter; ``preserve_order`` is not
  needed (and would serialise completion).

Ray: ``engine="ray"`` uses a running Ray (``ray.init(address=...)`` before the call, or
``ray_address=``); otherwise it starts a local one with ``workers`` CPUs and shuts it down after.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from entropykit._io import atomic_output, atomic_write, check_output
from entropykit._validate import check_choice, check_int
from entropykit.models import LanguageModel, resolve_model

__all__ = ["ENGINES", "KINDS", "CorpusResult", "ShardScorer", "score_corpus"]

#: file name suffix -> reader kind
KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".txt": "text", ".md": "text",
         ".text": "text"}
ENGINES = ("local", "ray", "dask")
_FORMAT = 2  # version of the part files and the shard hash; bump when either changes
#: the per-document columns, in order (scorer columns follow)
COLUMNS = ("index", "id", "source", "sha256", "bytes", "tokens", "bits_per_byte", "perplexity",
           "mean_surprisal_bits", "mean_entropy_bits", "hwe_fraction", "max_window_entropy_bits",
           "peak_start", "peak_end", "error")
Scorer = Callable[[list[Any], LanguageModel], Sequence[float]]


class FileError(ValueError):
    """A corpus file that cannot be read (the message starts with its path)."""


# --------------------------------------------------------------------------------------------------
# reading: one function for the planner (whole files) and the workers (their shard's ranges)
# --------------------------------------------------------------------------------------------------


def _rows(path: str, kind: str, rel: str, text_field: str, id_field: str | None, start: int = 0,
          stop: int | None = None, line0: int = 0) -> Iterator[tuple[int, int, str, str | bytes]]:
    """(position after the row, lines read up to there, id, text) of the rows in [start, stop): byte
    offsets for JSON lines (``line0``: the lines before ``start``, for the ``FILE:LINE`` ids), row
    numbers for Parquet; a text file is one row (positions 0 -> 1)."""
    try:
        if kind == "text":
            yield 1, 1, rel, Path(path).read_bytes()
        elif kind == "jsonl":
            with open(path, "rb") as f:
                f.seek(start)
                pos, line_no = start, line0
                while stop is None or pos < stop:
                    line = f.readline()
                    if not line:
                        break
                    pos += len(line)
                    line_no += 1
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        raise FileError(f"{path}:{line_no}: not valid JSON ({exc})") from None
                    if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                        raise FileError(f"{path}:{line_no}: no string field {text_field!r}")
                    did = obj.get(id_field) if id_field else None
                    yield pos, line_no, (f"{rel}:{line_no}" if did is None else str(did)), obj[text_field]
        else:
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            if text_field not in names:
                raise FileError(f"{path}: no column {text_field!r} (columns: {', '.join(names)})")
            cols = [text_field] + ([id_field] if id_field and id_field in names else [])
            meta = pf.metadata
            stop = meta.num_rows if stop is None else stop
            first = 0
            for g in range(meta.num_row_groups):  # read only the row groups that overlap [start, stop)
                n = meta.row_group(g).num_rows
                if first + n > start and first < stop:
                    table = pf.read_row_group(g, columns=cols).to_pydict()
                    for i in range(max(start, first), min(stop, first + n)):
                        text = table[text_field][i - first]
                        if not isinstance(text, (str, bytes)):
                            raise FileError(f"{path}: row {i}: {text_field!r} is not a string")
                        did = table[id_field][i - first] if len(cols) > 1 else None
                        yield i + 1, i + 1, (f"{rel}:{i}" if did is None else str(did)), text
                first += n
    except FileError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise FileError(f"{path}: cannot read ({exc})") from None
    except Exception as exc:  # pyarrow's errors (ArrowInvalid is a ValueError; others are not)
        raise FileError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def _files(source: Path, exclude: Sequence[Path]) -> list[tuple[str, str, str]]:
    """(path, kind, relative name) of the corpus files under ``source`` (sorted; outputs excluded)."""
    if source.is_file():
        kind = KINDS.get(source.suffix.lower())
        if kind is None:
            raise ValueError(f"source: {source}: unknown file type (use {', '.join(sorted(KINDS))})")
        return [(str(source), kind, source.name)]
    if not source.is_dir():
        raise FileNotFoundError(f"source: {source}: no such file or directory")
    skip = [p.resolve() for p in exclude]
    out = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".parts")
                         and (Path(root) / d).resolve() not in skip)  # no hidden dirs, no parts of a run
        for name in sorted(names):
            p = Path(root) / name
            kind = KINDS.get(p.suffix.lower())
            if kind and not name.startswith(".") and p.resolve() not in skip:
                out.append((str(p), kind, p.relative_to(source).as_posix()))
    return out


# --------------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------------


class _Planner:
    """Streams the files once and cuts them into shards (descriptors of ranges plus a hash)."""

    def __init__(self, config: str, shard_docs: int) -> None:
        self.config = config
        self.shard_docs = shard_docs
        self.shards: list[dict[str, Any]] = []
        self.docs = 0
        self._open()

    def _open(self) -> None:
        self.segments: list[list[Any]] = []
        self.count = 0
        self.hasher = hashlib.sha256(self.config.encode())

    def _close(self) -> None:
        if self.count:
            self.shards.append({"index": len(self.shards), "first": self.docs - self.count, "n": self.count,
                                "hash": self.hasher.hexdigest(), "segments": self.segments})
        self._open()

    def add_file(self, path: str, kind: str, rel: str, text_field: str, id_field: str | None) -> None:
        state = (len(self.shards), self.docs, [list(s) for s in self.segments], self.count,
                 self.hasher.copy())
        try:
            pos = lines = 0
            for end, lines_end, did, text in _rows(path, kind, rel, text_field, id_field):
                if self.segments and self.segments[-1][0] == path and self.segments[-1][4] == pos:
                    self.segments[-1][4] = end
                else:  # [path, kind, relative name, start, stop, lines before start]
                    self.segments.append([path, kind, rel, pos, end, lines])
                pos, lines = end, lines_end
                self.hasher.update(f"{did}\0{_digest(text)}\n".encode())
                self.count += 1
                self.docs += 1
                if self.count == self.shard_docs:
                    self._close()
        except FileError:
            n, self.docs, self.segments, self.count, self.hasher = state
            del self.shards[n:]
            raise

    def finish(self) -> list[dict[str, Any]]:
        self._close()
        return self.shards


# --------------------------------------------------------------------------------------------------
# scoring: one class for every engine
# --------------------------------------------------------------------------------------------------


def _nan_row() -> dict[str, Any]:
    return {k: math.nan for k in ("bits_per_byte", "perplexity", "mean_surprisal_bits", "mean_entropy_bits",
                                  "hwe_fraction", "max_window_entropy_bits")}


class ShardScorer:
    """Scores shards with one model loaded once (in ``__init__``): a Ray Data actor class, or local.

    ``options``: ``text_field``, ``id_field``, ``window``, ``stride``, ``hwe_threshold``, ``precision``,
    ``config`` (the planner's hash prefix) and ``scorers`` (name -> ``fn(texts, model) -> floats``).
    ``__call__`` takes a Ray batch ``{"desc": [json, ...]}`` and returns ``{"index", "rows"}`` (JSON).
    """

    def __init__(self, model: LanguageModel | str | Path | None, options: Mapping[str, Any]) -> None:
        if options.get("threads"):
            import torch

            torch.set_num_threads(int(options["threads"]))
        self.lm = resolve_model(model)
        self.opt = dict(options)

    def score_shard(self, desc: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows of one shard, in order; raises ``FileError`` if the files changed since planning."""
        from entropykit.lm.scoring import score

        o = self.opt
        hasher = hashlib.sha256(o["config"].encode())
        rows: list[dict[str, Any]] = []
        texts: list[str | bytes] = []
        for path, kind, rel, a, b, line0 in desc["segments"]:
            for _, _, did, text in _rows(path, kind, rel, o["text_field"], o["id_field"], a, b, line0):
                sha = _digest(text)
                hasher.update(f"{did}\0{sha}\n".encode())
                row: dict[str, Any] = {"index": desc["first"] + len(rows), "id": did, "source": rel,
                                       "sha256": sha, "bytes": len(text.encode("utf-8")) if isinstance(
                                           text, str) else len(text), "tokens": 0, **_nan_row(),
                                       "peak_start": -1, "peak_end": -1, "error": None}
                try:
                    res = score(text, self.lm, window=o["window"], stride=o["stride"],
                              hwe_threshold=o["hwe_threshold"], precision=o["precision"], progress=False)
                except ValueError as exc:  # empty text, one token without BOS: keep the row, say why
                    row["error"] = str(exc)
                else:
                    s = res.summary
                    we = res.window_entropy_bits
                    k = int(np.argmax(we))
                    row.update(tokens=s["tokens"], bits_per_byte=s["bits_per_byte"],
                               perplexity=s["perplexity"], mean_surprisal_bits=s["mean_surprisal_bits"],
                               mean_entropy_bits=s["mean_entropy_bits"], hwe_fraction=s["hwe_fraction"],
                               max_window_entropy_bits=float(we[k]),
                               peak_start=int(res.offsets[max(0, k - res.window + 1), 0]),
                               peak_end=int(res.offsets[k, 1]))
                    texts.append(text)
                rows.append(row)
        if len(rows) != desc["n"] or hasher.hexdigest() != desc["hash"]:
            raise FileError(f"{desc['segments'][0][0]}: shard {desc['index']} changed since it was planned "
                            "(content hash differs); rerun to re-plan")
        ok = [x for x in rows if x["error"] is None]
        for name, fn in o["scorers"].items():
            for x in rows:
                x[name] = math.nan
            for x, v in zip(ok, self._apply(name, fn, texts, ok)):
                x[name] = v
        return rows

    def _apply(self, name: str, fn: Scorer, texts: list[Any], rows: list[dict[str, Any]]) -> list[float]:
        """One call per shard; if it rejects the batch (ValueError), one call per text, and a text it
        rejects gets NaN with the reason in its row's ``error``."""
        if not texts:
            return []
        try:
            vals = [float(v) for v in fn(texts, self.lm)]
        except ValueError:
            vals = []
            for t, r in zip(texts, rows):
                try:
                    vals += [float(v) for v in fn([t], self.lm)]
                except ValueError as exc:
                    vals.append(math.nan)
                    r["error"] = r["error"] or f"{name}: {exc}"
        if len(vals) != len(texts):
            raise ValueError(f"scorers[{name!r}] returned {len(vals)} values for {len(texts)} texts")
        return vals

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        descs = [json.loads(d) for d in batch["desc"]]
        return {"index": np.array([d["index"] for d in descs]),
                "rows": np.array([json.dumps(self.score_shard(d)) for d in descs], dtype=object)}


# --------------------------------------------------------------------------------------------------
# parts, assembly, the entry point
# --------------------------------------------------------------------------------------------------


def _part_path(parts: Path, desc: Mapping[str, Any]) -> Path:
    return parts / f"{desc['index']:06d}-{desc['hash'][:24]}.json"


def _load_part(path: Path, desc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The part's rows if it is complete and belongs to this shard (hash, count, indices), else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    rows = data.get("rows") if isinstance(data, dict) else None
    if (data.get("hash") != desc["hash"] or not isinstance(rows, list) or len(rows) != desc["n"]
            or [r.get("index") for r in rows] != list(range(desc["first"], desc["first"] + desc["n"]))):
        return None
    return rows


def _write_part(path: Path, desc: Mapping[str, Any], rows: list[dict[str, Any]]) -> None:
    atomic_write(path, json.dumps({"format": _FORMAT, "hash": desc["hash"], "rows": rows}))


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _assemble(out: Path, parts: Path, shards: list[dict[str, Any]], names: list[str]) -> int:
    """Concatenate the parts in shard order into ``out`` (Parquet or JSON lines), atomically and shard by
    shard (memory: one shard); returns the number of rows with an ``error``."""
    failed = 0
    if out.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        f64, i64 = pa.float64(), pa.int64()
        types = {"index": i64, "id": pa.string(), "source": pa.string(), "sha256": pa.string(), "bytes": i64,
                 "tokens": i64, "peak_start": i64, "peak_end": i64, "error": pa.string()}
        schema = pa.schema([(c, types.get(c, f64)) for c in (*COLUMNS, *names)])
        with atomic_output(out) as f:
            writer = pq.ParquetWriter(f, schema)
            for desc in shards:
                rows = json.loads(_part_path(parts, desc).read_text())["rows"]
                failed += sum(r["error"] is not None for r in rows)
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            writer.close()
        return failed
    with atomic_output(out) as f:
        for desc in shards:
            for r in json.loads(_part_path(parts, desc).read_text())["rows"]:
                failed += r["error"] is not None
                line = json.dumps({k: _finite(v) for k, v in r.items()}, ensure_ascii=False)
                f.write((line + "\n").encode())
    return failed


@dataclass
class CorpusResult:
    """What a ``score_corpus`` run did. ``skipped``: (path, reason) of unreadable files."""

    out: Path
    documents: int
    shards: int
    scored_shards: int
    reused_shards: int
    seconds: float
    engine: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed_documents: int = 0

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else math.nan


def _config(model: Any, opts: Mapping[str, Any]) -> str:
    ident = model.identity if isinstance(model, LanguageModel) else f"spec:{model}"
    keys = ("text_field", "id_field", "window", "stride", "hwe_threshold", "precision")
    return json.dumps({"format": _FORMAT, "model": ident, "scorers": sorted(opts["scorers"]),
                       **{k: opts[k] for k in keys}}, sort_keys=True)


def score_corpus(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: LanguageModel | str | Path | None = None,
    engine: str = "local",
    workers: int = 2,
    shard_docs: int = 64,
    text_field: str = "text",
    id_field: str | None = None,
    window: int = 16,
    stride: int | None = None,
    hwe_threshold: float | None = None,
    precision: str = "float32",
    scorers: Mapping[str, Scorer] | None = None,
    on_error: str = "skip",
    parts_dir: str | os.PathLike[str] | None = None,
    ray_address: str | None = None,
    threads: int | None = None,
    progress: bool | None = None,
    force: bool = True,
) -> CorpusResult:
    """Score every document of a corpus and write one summary row per document, in input order.

    Per document (bits, as :func:`entropykit.lm.score`): ``tokens``, ``bytes``, ``bits_per_byte`` =
    total surprisal / UTF-8 bytes, ``perplexity`` = 2^(mean surprisal), ``mean_surprisal_bits``,
    ``mean_entropy_bits``, ``hwe_fraction`` (share of tokens whose ``window``-token mean entropy exceeds
    the threshold), ``max_window_entropy_bits`` with its byte span ``peak_start``/``peak_end``, plus one
    float column per scorer; also ``index`` (0..n-1, input order), ``id``, ``source``, ``sha256`` and
    ``error`` (None, or why the document has NaN numbers: it could not be scored, or a scorer rejected
    it, e.g. a detection method that needs 2 tokens). See the module docstring for shards,
    resumption and the engines.

    Args:
        source: a ``.jsonl``/``.ndjson`` (one JSON object per line), ``.parquet`` or text
            (``.txt``/``.md``/``.text``: one document per file) file, or a directory of them (a sorted
            walk that skips hidden entries, ``*.parts`` directories and ``out`` itself).
        out: ``.parquet`` or ``.jsonl`` output (NaN is written as null in JSON lines).
        model: a ``LanguageModel``, a name or directory for ``load_model``, None = bundled default;
            loaded once per worker.
        engine: ``"local"`` (this process), ``"ray"`` (Ray Data actors, ``workers`` of them) or
            ``"dask"`` (a bag of shards on a running ``dask.distributed`` Client, else ``workers``
            processes; each worker caches its model, so pass a name or path rather than an object).
        shard_docs: documents per shard: the unit of work, of resumption and of worker memory.
        scorers: name -> ``fn(texts, model) -> one float per text``, called once per shard on the
            documents that scored (picklable for Ray), e.g.
            ``functools.partial(entropykit.detect.score_texts, method="min_k")``.
        on_error: an unreadable file is reported with its path and ``"skip"``-ped (a warning,
            ``CorpusResult.skipped``) or ``"fail"``-s the job (``ValueError``).
        parts_dir: where finished shards live (default ``<out>.parts``); kept for reruns.
        ray_address: ``ray.init(address=...)`` when Ray is not initialised yet (None: a local Ray
            with ``workers`` CPUs, shut down at the end).
        threads: torch threads per worker (None: the engine's default).

    Source: Ray Data ``map_batches`` with an actor class (docs.ray.io); ``score`` for the statistics.

    >>> import tempfile, pathlib, torch
    >>> from entropykit.lm import ByteModel
    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> m = ByteModel(ByteGPT(ByteGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16)))
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl").write_text('{"text": "hello"}\\n{"text": "world!"}\\n')
    >>> r = score_corpus(d / "a.jsonl", d / "out.jsonl", model=m, progress=False)
    >>> r.documents, [json.loads(x)["id"] for x in (d / "out.jsonl").read_text().splitlines()]
    (2, ['a.jsonl:1', 'a.jsonl:2'])
    """
    check_choice(engine, ENGINES, "engine")
    check_choice(on_error, ("skip", "fail"), "on_error")
    check_int(shard_docs, "shard_docs", 1)
    check_int(workers, "workers", 1)
    check_int(window, "window", 1)
    outp = Path(out)
    if outp.suffix.lower() not in (".parquet", ".jsonl"):
        raise ValueError(f"out: {outp}: use a .parquet or .jsonl file name")
    check_output(outp, force=force, option="out")
    scorers = dict(scorers or {})
    for name, fn in scorers.items():
        if name in COLUMNS or not callable(fn):
            raise ValueError(f"scorers: {name!r} must be a new column name mapped to a callable")
    parts = Path(parts_dir) if parts_dir is not None else outp.with_name(outp.name + ".parts")
    opts: dict[str, Any] = dict(text_field=text_field, id_field=id_field, window=window, stride=stride,
                                hwe_threshold=hwe_threshold, precision=precision, scorers=scorers,
                                threads=threads)
    opts["config"] = _config(model, opts)
    t0 = time.perf_counter()

    planner = _Planner(opts["config"], shard_docs)
    skipped: list[tuple[str, str]] = []
    for path, kind, rel in _files(Path(source), [outp, parts]):
        try:
            planner.add_file(path, kind, rel, text_field, id_field)
        except FileError as exc:
            if on_error == "fail":
                raise
            skipped.append((path, str(exc)))
            warnings.warn(f"{exc}; skipped", stacklevel=2)
    shards = planner.finish()
    parts.mkdir(parents=True, exist_ok=True)
    todo = [d for d in shards if _load_part(_part_path(parts, d), d) is None]
    reused = len(shards) - len(todo)

    from tqdm.auto import tqdm

    show = progress if progress is not None else sys.stderr.isatty()
    with tqdm(total=planner.docs, initial=sum(d["n"] for d in shards) - sum(d["n"] for d in todo),
              unit="doc", disable=not show, desc=f"scoring corpus ({engine})", file=sys.stderr) as bar:
        if todo and engine == "local":
            scorer = ShardScorer(model, opts)
            for desc in todo:
                _write_part(_part_path(parts, desc), desc, scorer.score_shard(desc))
                bar.update(desc["n"])
        elif todo and engine == "ray":
            _run_ray(todo, model, opts, parts, workers, ray_address, bar)
        elif todo:
            _run_dask(todo, model, opts, parts, workers, bar)

    failed = _assemble(outp, parts, shards, sorted(scorers))
    keep = {_part_path(parts, d).name for d in shards}
    for p in parts.glob("*.json"):  # parts of earlier plans (other options, changed files)
        if p.name not in keep:
            p.unlink(missing_ok=True)
    return CorpusResult(out=outp, documents=planner.docs, shards=len(shards), scored_shards=len(todo),
                        reused_shards=reused, seconds=time.perf_counter() - t0, engine=engine,
                        skipped=skipped, failed_documents=failed)


def _run_ray(todo: list[dict[str, Any]], model: Any, opts: dict[str, Any], parts: Path, workers: int,
             address: str | None, bar: Any) -> None:
    try:
        import ray
    except ImportError:
        raise ImportError("engine='ray' needs Ray: pip install 'entropykit[scale]'") from None
    started = not ray.is_initialized()
    if started:
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        by_index = {d["index"]: d for d in todo}
        ds = ray.data.from_items([{"desc": json.dumps(d)} for d in todo], override_num_blocks=len(todo))
        res = ds.map_batches(ShardScorer, fn_constructor_kwargs={"model": model, "options": opts},
                             batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                             batch_format="numpy")
        for row in res.iter_rows():  # completion order; each part is written as soon as it arrives
            desc = by_index[int(row["index"])]
            _write_part(_part_path(parts, desc), desc, json.loads(row["rows"]))
            bar.update(desc["n"])
    finally:
        if started:
            ray.shutdown()


_WORKER_SCORERS: dict[str, ShardScorer] = {}  # engine="dask": one ShardScorer per worker process and config


def _dask_shard(desc: dict[str, Any], model: Any, opts: dict[str, Any], parts: str) -> int:
    """One Dask task: score a shard with this worker's cached model and write its part (atomically)."""
    scorer = _WORKER_SCORERS.get(opts["config"])
    if scorer is None:
        scorer = _WORKER_SCORERS[opts["config"]] = ShardScorer(model, opts)
    _write_part(_part_path(Path(parts), desc), desc, scorer.score_shard(desc))
    return int(desc["n"])


def _run_dask(todo: list[dict[str, Any]], model: Any, opts: dict[str, Any], parts: Path, workers: int,
              bar: Any) -> None:
    """Dask: a bag of shards; the workers write their parts themselves (so a killed job keeps every
    finished shard). A running ``dask.distributed`` Client is used if there is one, else a pool of
    ``workers`` processes."""
    try:
        import dask
        import dask.bag as db
    except ImportError:
        raise ImportError("engine='dask' needs Dask: pip install dask") from None
    bag = db.from_sequence(todo, npartitions=len(todo)).map(_dask_shard, model, opts, str(parts))
    try:
        from distributed import default_client

        default_client()
        kw: dict[str, Any] = {}
    except (ImportError, ValueError):
        kw = {"scheduler": "processes", "num_workers": workers}
    done = dask.compute(bag, **kw)[0]
    bar.update(sum(done))
