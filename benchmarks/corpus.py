"""Corpus scoring: Ray Data with 2 local workers against one process, and resumption after a kill.

Claims (issue 21): ``score_corpus(engine="ray")`` on 2 local Ray workers reaches >= 0.9x the
single-process throughput on this 2-core machine with identical rows in input order; a run killed at
50 % resumes without losing or duplicating a row (checked by ids, indices and content hashes).

Setup: synthetic documents (random words, 60-400 bytes) in 4 JSON-lines files, a small ByteGPT saved
to disk (each Ray worker loads it once). Rows:

- local engine, this process, 1 torch thread (the fastest single process on this shared machine);
- Ray engine, 2 actors of 1 CPU / 1 thread each, with the Ray session started before the run
  (``ray.init`` is reported separately: a cluster pays it once, not per job); "actor start-up" is the
  time until the first part is written minus one shard's local scoring time;
- a Ray run during which one actor process is SIGKILLed;
- kill at 50 %: ``entropykit score-corpus`` (local engine) in a subprocess, SIGKILL once half of the
  shards are on disk, then the same command again.

    python benchmarks/corpus.py              # 1200 documents, shards of 24
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch

from _common import markdown_table, record
from entropykit.lm.corpus import score_corpus
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig


def make_corpus(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = "the of and to in is that entropy model token surprise data corpus ray shard byte".split()
    src = root / "corpus"
    src.mkdir()
    per = -(-n // 4)
    for k in range(4):
        with open(src / f"part-{k}.jsonl", "w") as f:
            for i in range(min(per, n - k * per)):
                text = " ".join(rng.choice(words, size=int(rng.integers(12, 80))))
                f.write(json.dumps({"text": text, "doc": f"d{k}-{i}"}) + "\n")
    return src


def make_model(root: Path) -> Path:
    torch.manual_seed(0)
    d = root / "model"
    ByteGPT(ByteGPTConfig(block_size=256, n_layer=2, n_head=4, n_embd=96)).save(d)
    return d


def rows_of(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def first_part_seconds(parts: Path, t0: float) -> float:
    return min(p.stat().st_mtime for p in parts.glob("*.json")) - t0


def kill_an_actor_run(src: Path, root: Path, kw: dict) -> tuple[int | None, str]:
    """A Ray run during which one scoring actor (a process this script's Ray started) is SIGKILLed."""
    import threading

    import psutil

    parts = root / "ray-killed.parquet.parts"
    killed: list[int] = []

    def killer() -> None:
        while not (parts.is_dir() and any(parts.glob("*.json"))):
            time.sleep(0.05)
        for p in psutil.Process().children(recursive=True):
            try:
                if "MapWorker" in " ".join(p.cmdline()):
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)
                    return
            except psutil.Error:
                continue

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    out = root / "ray-killed.parquet"
    try:
        r = score_corpus(src, out, engine="ray", workers=2, threads=1, **kw)
        outcome = (f"Ray restarted the actor and retried its shard; the job finished "
                   f"({r.scored_shards} shards)")
    except Exception as exc:  # the job failed: the rerun resumes from the parts on disk
        r = score_corpus(src, out, engine="ray", workers=2, threads=1, **kw)
        outcome = (f"the job failed ({type(exc).__name__}); the rerun reused {r.reused_shards} shards and "
                   f"scored {r.scored_shards}")
    th.join(timeout=1)
    return (killed[0] if killed else None), outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1200)
    ap.add_argument("--shard-docs", type=int, default=24)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ek-corpus-"))
    src, model = make_corpus(root, args.docs), make_model(root)
    kw = dict(model=str(model), shard_docs=args.shard_docs, progress=False)
    n_shards = -(-args.docs // args.shard_docs)
    table = []

    # the single process runs 1 torch thread: on this oversubscribed 2-core machine torch's default 2
    # threads spin against each other (a trial with 120 documents at load 16: 121.6 s with 2 threads,
    # 4.0 s with 1), so 1 thread is the fastest single process here
    r_local = score_corpus(src, root / "local.parquet", engine="local", threads=1, **kw)
    local_rate = r_local.docs_per_second
    shard_s = r_local.seconds / n_shards
    table.append(["local, 1 process, 1 thread", f"{r_local.seconds:.1f}", f"{local_rate:.1f}", 1.0, "-"])

    import ray

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t
    t0 = time.time()
    r_ray = score_corpus(src, root / "ray.parquet", engine="ray", workers=2, threads=1, **kw)
    startup = first_part_seconds(root / "ray.parquet.parts", t0) - shard_s
    killed, outcome = kill_an_actor_run(src, root, kw)
    ray.shutdown()
    same = rows_of(root / "ray.parquet") == rows_of(root / "local.parquet")
    same_killed = rows_of(root / "ray-killed.parquet") == rows_of(root / "local.parquet")
    steady = args.docs / max(1e-9, r_ray.seconds - startup)
    table.append(["Ray Data, 2 actors x 1 thread (session already up)", f"{r_ray.seconds:.1f}",
                  f"{r_ray.docs_per_second:.1f}", round(r_ray.docs_per_second / local_rate, 3),
                  f"{startup:.1f}"])
    table.append(["  same, after actor start-up (steady state)", f"{r_ray.seconds - startup:.1f}",
                  f"{steady:.1f}", round(steady / local_rate, 3), "-"])
    table.append(["  same, including ray.init", f"{r_ray.seconds + t_init:.1f}",
                  f"{args.docs / (r_ray.seconds + t_init):.1f}",
                  round(args.docs / (r_ray.seconds + t_init) / local_rate, 3), f"{t_init:.1f} (init)"])

    # kill at 50 % and resume (the CLI, local engine, a subprocess)
    out = root / "killed.parquet"
    cmd = [sys.executable, "-m", "entropykit", "score-corpus", str(src), "--out", str(out), "--model",
           str(model), "--shard-docs", str(args.shard_docs), "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    parts = root / "killed.parquet.parts"
    while proc.poll() is None and len(list(parts.glob("*.json"))) < n_shards // 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = len(list(parts.glob("*.json")))
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    resume_s = time.perf_counter() - t
    rows, ref = rows_of(out), rows_of(root / "local.parquet")
    ok_ids = [r["index"] for r in rows] == list(range(args.docs))
    ok_ids = ok_ids and len({r["id"] for r in rows}) == args.docs
    ok_hash = [r["sha256"] for r in rows] == [r["sha256"] for r in ref]
    ok_vals = rows == ref
    report = res.stderr.strip().splitlines()[-1]

    # documents d at which startup + d / steady = d / (0.9 local_rate)
    gap = 1 / (0.9 * local_rate) - 1 / steady
    breakeven = startup / gap if gap > 0 else float("inf")
    load = os.getloadavg()
    body = (
        f"{args.docs} synthetic documents (60-400 bytes) in 4 JSON-lines files, shards of {args.shard_docs}, "
        f"a 2-layer ByteGPT (n_embd 96) loaded from disk. Load average {load[0]:.1f} on {os.cpu_count()} "
        "cores during the run (shared machine: times are indicative; every ratio is within this one "
        "script).\n\n"
        + markdown_table(["engine", "s", "docs/s", "x local", "start-up s"], table)
        + f"\n\nRows identical to the local engine, in input order: {same}.\n\n"
        f"A Ray actor killed mid-run (SIGKILL to pid {killed} once the first part was on disk): "
        f"{outcome}; rows identical to the local engine: {same_killed}.\n\n"
        f"Kill at 50 %: SIGKILL after {at_kill} of {n_shards} shards were on disk; the rerun says "
        f"`{report}` ({resume_s:.1f} s). Indices 0..n-1 with unique ids: {ok_ids}; content hashes equal "
        f"to the uninterrupted run: {ok_hash}; every value equal: {ok_vals}.\n\n"
        "Where Ray's overhead goes: `ray.init` (once per cluster, not per job), each actor's start-up (a "
        "new Python process importing torch and entropykit and loading the model: the start-up column, "
        "paid once per job and worker), and per shard a task round trip plus JSON (de)serialisation of "
        "its rows through the object store, small next to scoring. In the steady state the two 1-thread "
        "actors use both cores where the single process uses one (its 2-thread mode is slower on this "
        f"shared machine). With these figures Ray reaches 0.9x the single process from about "
        f"{breakeven:.0f} documents per job (the start-up amortised) and passes it beyond."
    )
    print(body)
    shutil.rmtree(root, ignore_errors=True)
    if not args.no_record:
        command = "python benchmarks/corpus.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
        record("corpus", "Corpus scoring: Ray Data (2 local workers) vs one process; resume after a kill",
               command, body)


if __name__ == "__main__":
    main()
