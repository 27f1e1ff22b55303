"""cov_selection(distributed=True) over 2 gloo processes equals the whole-batch selection."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from entropykit import rl


def _data():
    g = torch.Generator().manual_seed(7)
    lp = -torch.rand(8, 12, generator=g, dtype=torch.float64) * 3
    adv = torch.randn(8, 1, generator=g, dtype=torch.float64).expand(8, 12) * 4
    mask = torch.rand(8, 12, generator=g) < 0.8
    return lp, adv, mask


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        lp, adv, mask = _data()
        rows = slice(0, 4) if rank == 0 else slice(4, 8)
        top = rl.cov_selection(lp[rows], adv[rows], mask[rows], mode="top", ratio=0.1, distributed=True)
        band = rl.cov_selection(lp[rows], adv[rows], mask[rows], mode="band", ratio=0.1, distributed=True,
                                generator=torch.Generator().manual_seed(3))
        torch.save({"top": top, "band": band}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_distributed_selection_equals_whole_batch(tmp_path):
    ctx = mp.get_context("fork")  # no re-import of torch in the children: seconds, not a minute
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    lp, adv, mask = _data()
    whole_top = rl.cov_selection(lp, adv, mask, mode="top", ratio=0.1)
    whole_band = rl.cov_selection(lp, adv, mask, mode="band", ratio=0.1,
                                  generator=torch.Generator().manual_seed(3))
    assert whole_band.any()
    assert torch.equal(torch.cat([p["top"] for p in parts]), whole_top)
    assert torch.equal(torch.cat([p["band"] for p in parts]), whole_band)


def test_distributed_requires_initialised_process_group():
    lp, adv, mask = _data()
    with pytest.raises(ValueError, match="distributed"):
        rl.cov_selection(lp, adv, mask, distributed=True)
