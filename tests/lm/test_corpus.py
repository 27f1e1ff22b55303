"""score_corpus on the local engine: formats, ids, order, per-document numbers, resumption, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entropykit.lm import ByteModel, score
from entropykit.lm.corpus import COLUMNS, _Planner, _rows, score_corpus
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig


def tiny_model() -> ByteModel:
    torch.manual_seed(0)
    return ByteModel(ByteGPT(ByteGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16)))


MODEL = tiny_model()


def docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["entropy", "the", "cat", "sat", "on", "a", "mat", "zebra", "quux", "é", "42", "\n"]
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 25)))) for _ in range(n)]


def write_jsonl(path: Path, texts: list[str], **extra: list) -> Path:
    with open(path, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"text": t, **{k: v[i] for k, v in extra.items()}}) + "\n")
    return path


def read_out(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return [json.loads(x) for x in path.read_text().splitlines()]


class Flaky:
    """A scorer (text length in bytes) that fails on a text containing STOP while ``flag`` exists."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __call__(self, texts, model):
        if self.flag.exists() and any("STOP" in t for t in texts):
            raise RuntimeError("interrupted")
        return [float(len(t.encode())) for t in texts]


def test_rows_match_score_and_keep_input_order(tmp_path):
    texts = docs(23)
    write_jsonl(tmp_path / "b.jsonl", texts[:10])
    write_jsonl(tmp_path / "a.jsonl", texts[10:])  # sorted walk: a.jsonl first
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("a text file is one document")
    out = tmp_path / "out" / "res.parquet"
    out.parent.mkdir()
    r = score_corpus(tmp_path, out, model=MODEL, shard_docs=4, window=4, progress=False)
    rows = read_out(out)
    order = texts[10:] + texts[:10] + ["a text file is one document"]
    assert r.documents == len(rows) == 24 and r.shards == 6 and r.reused_shards == 0
    assert [x["index"] for x in rows] == list(range(24))
    assert [x["id"] for x in rows[:2]] == ["a.jsonl:1", "a.jsonl:2"] and rows[13]["id"] == "b.jsonl:1"
    assert rows[-1]["id"] == "sub/c.txt" and rows[-1]["source"] == "sub/c.txt"
    assert list(rows[0])[: len(COLUMNS)] == list(COLUMNS)
    for row, text in zip(rows, order):
        ref = score(text, MODEL, window=4)
        s = ref.summary
        assert row["tokens"] == s["tokens"] and row["bytes"] == len(text.encode())
        for k in ("bits_per_byte", "perplexity", "mean_entropy_bits", "hwe_fraction"):
            assert row[k] == pytest.approx(s[k], rel=1e-6)
        k = int(np.argmax(ref.window_entropy_bits))
        assert row["max_window_entropy_bits"] == pytest.approx(float(ref.window_entropy_bits.max()))
        assert row["peak_end"] == int(ref.offsets[k, 1])
        assert row["peak_start"] == int(ref.offsets[max(0, k - 3), 0])  # the 4-token window ending at k
        assert row["error"] is None


def test_parquet_input_id_field_jsonl_output_and_scorers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [*docs(9, seed=1), ""]  # an empty document keeps its row, with NaN numbers and the reason
    ids = [f"doc-{i}" for i in range(10)]
    pq.write_table(pa.table({"body": texts, "key": ids}), tmp_path / "c.parquet", row_group_size=3)
    out = tmp_path / "o.jsonl"
    r = score_corpus(tmp_path / "c.parquet", out, model=MODEL, text_field="body", id_field="key",
                     shard_docs=4, scorers={"length": Flaky(tmp_path / "no-flag")}, progress=False)
    rows = read_out(out)
    assert [x["id"] for x in rows] == ids and r.failed_documents == 1
    assert rows[-1]["error"] and "empty" in rows[-1]["error"] and rows[-1]["bits_per_byte"] is None
    assert rows[-1]["length"] is None  # JSON lines: NaN is written as null
    assert [x["length"] for x in rows[:-1]] == [float(len(t.encode())) for t in texts[:-1]]
    s = score(texts[4], MODEL).summary
    assert rows[4]["bits_per_byte"] == pytest.approx(s["bits_per_byte"], rel=1e-6)


def test_interrupted_run_resumes_without_losing_or_duplicating_rows(tmp_path):
    texts = docs(30, seed=2)
    texts[17] += " STOP"
    write_jsonl(tmp_path / "in.jsonl", texts)
    flag = tmp_path / "flag"
    flag.write_text("")
    out = tmp_path / "o.parquet"
    kw = dict(model=MODEL, shard_docs=5, scorers={"length": Flaky(flag)}, progress=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        score_corpus(tmp_path / "in.jsonl", out, **kw)
    assert not out.exists()  # nothing half-written
    parts = sorted((tmp_path / "o.parquet.parts").glob("*.json"))
    assert len(parts) == 3  # shards 0-2 finished before the failing shard 3
    flag.unlink()
    r = score_corpus(tmp_path / "in.jsonl", out, **kw)
    assert (r.reused_shards, r.scored_shards) == (3, 3)
    rows = read_out(out)
    assert [x["index"] for x in rows] == list(range(30))
    assert len({x["id"] for x in rows}) == 30
    clean = score_corpus(tmp_path / "in.jsonl", tmp_path / "clean.parquet", **kw)
    assert clean.reused_shards == 0 and read_out(tmp_path / "clean.parquet") == rows
    # a changed document invalidates exactly its shard (content hash), the others are reused
    texts[26] = "changed"
    write_jsonl(tmp_path / "in.jsonl", texts)
    r = score_corpus(tmp_path / "in.jsonl", out, **kw)
    assert (r.reused_shards, r.scored_shards) == (5, 1)
    assert read_out(out)[26]["sha256"] != rows[26]["sha256"]


def test_unreadable_files_are_reported_and_skipped_or_fail(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", docs(3))
    (tmp_path / "b.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (tmp_path / "c.parquet").write_bytes(b"not parquet")
    write_jsonl(tmp_path / "d.jsonl", ["last"])
    out = tmp_path / "out.jsonl"
    with pytest.warns(UserWarning) as caught:
        r = score_corpus(tmp_path, out, model=MODEL, shard_docs=2, progress=False)
    msgs = [str(w.message) for w in caught]
    assert "b.jsonl:2: not valid JSON" in msgs[0] and "c.parquet: cannot read" in msgs[1]
    assert [p for p, _ in r.skipped] == [str(tmp_path / "b.jsonl"), str(tmp_path / "c.parquet")]
    rows = read_out(out)
    assert [x["id"] for x in rows] == ["a.jsonl:1", "a.jsonl:2", "a.jsonl:3", "d.jsonl:1"]
    with pytest.raises(ValueError, match=r"b\.jsonl:2"):
        score_corpus(tmp_path, tmp_path / "o2.jsonl", model=MODEL, on_error="fail", progress=False)
    with pytest.raises(ValueError, match="engine must be one of"):
        score_corpus(tmp_path, out, model=MODEL, engine="spark")
    with pytest.raises(ValueError, match="out"):
        score_corpus(tmp_path, tmp_path / "x.csv", model=MODEL)
    with pytest.raises(FileNotFoundError, match="source"):
        score_corpus(tmp_path / "missing", out, model=MODEL)


def test_a_file_changed_after_planning_is_an_error(tmp_path, monkeypatch):
    from entropykit.lm import corpus

    write_jsonl(tmp_path / "a.jsonl", ["one", "two"])
    plan = corpus._Planner.finish

    def finish_then_edit(self):
        shards = plan(self)
        write_jsonl(tmp_path / "a.jsonl", ["one", "TWO"])  # same length, other content
        return shards

    monkeypatch.setattr(corpus._Planner, "finish", finish_then_edit)
    with pytest.raises(ValueError, match="changed since it was planned"):
        score_corpus(tmp_path / "a.jsonl", tmp_path / "o.jsonl", model=MODEL, progress=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 7), min_size=1, max_size=4), shard=st.integers(1, 5))
def test_plan_covers_every_document_once_in_order(tmp_path_factory, sizes, shard):
    """Property: shards tile the documents (all files, in order, blank lines skipped) for any shard size,
    and the workers' range reads give back exactly the planned ids."""
    d = tmp_path_factory.mktemp("plan")
    files, expect = [], []
    for k, n in enumerate(sizes):
        p = d / f"{k}.jsonl"
        p.write_text("".join(json.dumps({"text": f"d{k}-{i}"}) + "\n\n" for i in range(n)))
        files.append(p)
        expect += [f"{k}.jsonl:{2 * i + 1}" for i in range(n)]
    planner = _Planner("cfg", shard)
    for p in files:
        planner.add_file(str(p), "jsonl", p.name, "text", None)
    shards = planner.finish()
    got = [did for s in shards for (path, kind, rel, a, b, line0) in s["segments"]
           for _, _, did, _ in _rows(path, kind, rel, "text", None, a, b, line0)]
    assert got == expect
    assert all(s["n"] <= shard for s in shards) and sum(s["n"] for s in shards) == len(expect)
    assert [s["first"] for s in shards] == [sum(x["n"] for x in shards[:i]) for i in range(len(shards))]
    assert math.isclose(len(shards), -(-len(expect) // shard))


@pytest.mark.slow  # two worker processes import torch
def test_dask_engine_equals_local(tmp_path):
    pytest.importorskip("dask.bag", reason="engine='dask' needs Dask")
    src = tmp_path / "c"
    src.mkdir()
    write_jsonl(src / "a.jsonl", docs(12, seed=9))
    model_dir = tmp_path / "m"
    MODEL.module.save(model_dir)  # the workers load the model by path, once per process
    kw = dict(model=str(model_dir), shard_docs=4, threads=1, progress=False)
    local = score_corpus(src, tmp_path / "l.parquet", engine="local", **kw)
    dask_run = score_corpus(src, tmp_path / "d.parquet", engine="dask", workers=2, **kw)
    assert dask_run.scored_shards == local.scored_shards == 3
    assert read_out(tmp_path / "d.parquet") == read_out(tmp_path / "l.parquet")
