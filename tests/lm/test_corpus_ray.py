"""score_corpus(engine="ray") on a local Ray with 2 CPUs against the local engine: same rows, same order;
a run interrupted by a failure resumes on Ray without losing or duplicating a row. One Ray session for
the module and one Ray run: Ray start-up and each actor's torch import dominate the run time."""

from __future__ import annotations

import sys

import pytest

ray = pytest.importorskip("ray", reason="engine='ray' needs the [scale] extra")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, at start-up

import test_corpus as tc  # noqa: E402  (tests/lm is on the path: rootdir-style imports)
from ray import cloudpickle  # noqa: E402

from entropykit.lm.corpus import score_corpus  # noqa: E402

# the test helpers (Flaky) travel to the Ray workers by value: the tests folder is not on their path
cloudpickle.register_pickle_by_value(sys.modules[tc.__name__])


@pytest.fixture(scope="module")
def ray_session():
    if ray.is_initialized():
        pytest.skip("a Ray session already exists in this process")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_resumes_an_interrupted_run_with_the_local_engines_rows(ray_session, tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    texts = tc.docs(40, seed=5)
    texts[7] += " STOP"  # row 15 + 7 = 22, in shard 7 of 14: fails while the flag exists
    tc.write_jsonl(src / "b.jsonl", texts[:25])
    tc.write_jsonl(src / "a.jsonl", texts[25:])  # sorted walk: a.jsonl (15 rows) first
    flag = tmp_path / "flag"
    kw = dict(model=tc.MODEL, shard_docs=3, threads=1, progress=False, scorers={"length": tc.Flaky(flag)})
    clean = score_corpus(src, tmp_path / "clean.parquet", engine="local", **kw)
    assert clean.scored_shards == 14

    flag.write_text("")
    out = tmp_path / "ray.parquet"
    with pytest.raises(RuntimeError, match="interrupted"):
        score_corpus(src, out, engine="local", **kw)
    assert not out.exists()  # nothing half-written
    done = len(list((tmp_path / "ray.parquet.parts").glob("*.json")))
    assert done == 7
    flag.unlink()
    r = score_corpus(src, out, engine="ray", workers=2, **kw)
    assert (r.reused_shards, r.scored_shards) == (7, 7)
    rows_c, rows_r = tc.read_out(tmp_path / "clean.parquet"), tc.read_out(out)
    assert [x["index"] for x in rows_r] == list(range(40)) and len({x["id"] for x in rows_r}) == 40
    assert rows_r == rows_c  # identical numbers, identical order (7 shards from Ray's actors)
    assert [x["id"] for x in rows_r[:2]] == ["a.jsonl:1", "a.jsonl:2"]
