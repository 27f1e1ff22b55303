"""Vocab-parallel fused losses over 2 and 3 gloo processes against the single-process float64 op.

The reference is PyTorch itself: ``F.cross_entropy`` (label smoothing, ignore_index) on the full logits,
plus the z-loss term, and ``measures.token_stats`` on the full logits, differentiated by autograd.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from entropykit import measures, ops

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")

N, D, V = 13, 5, 11
SPLITS = {2: [3, 8], 3: [4, 1, 6]}  # odd splits, one shard of a single row
STARTS = {2: None, 3: [7, 6, 0]}  # world 3: shards not in rank order (given explicitly)


def _data():
    g = torch.Generator().manual_seed(11)
    h = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.randn(V, D, generator=g, dtype=torch.float64) * 2
    b = torch.randn(V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (N,), generator=g)
    y[[1, 4, 9]] = -100
    gu = [torch.randn(N, generator=g, dtype=torch.float64) for _ in range(4)]  # upstream grads
    return h, w, b, y, gu


def _shard(world: int, rank: int) -> tuple[int, int]:
    sizes = SPLITS[world]
    starts = STARTS[world] or [sum(sizes[:i]) for i in range(world)]
    return starts[rank], sizes[rank]


CASES = [  # name, kwargs of the CE op (chunk_size=4: several chunks, each with its all-reduces)
    ("plain", dict(reduction="mean")),
    ("smooth_z_bias", dict(reduction="mean", label_smoothing=0.2, z_loss=1e-2, bias=True, chunk_size=4)),
    ("none_softcap", dict(reduction="none", softcap=3.0, label_smoothing=0.1, chunk_size=3)),
    ("sum", dict(reduction="sum", z_loss=1e-3)),
]


def _worker(world: int, rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        h0, w0, b0, y, gu = _data()
        a, v = _shard(world, rank)
        start = None if STARTS[world] is None else a
        res: dict = {}
        for name, kw in CASES:
            kw = dict(kw)
            h = h0.clone().requires_grad_()
            w = w0[a:a + v].clone().requires_grad_()
            b = b0[a:a + v].clone().requires_grad_() if kw.pop("bias", False) else None
            before = (h.detach().clone(), w.detach().clone())
            loss = ops.parallel_linear_cross_entropy(h, w, y, bias=b, vocab_start=start, vocab_size=V, **kw)
            (loss * gu[0] if loss.dim() else loss * 1.7).sum().backward()
            assert torch.equal(h.detach(), before[0]) and torch.equal(w.detach(), before[1])
            res[name] = (loss.detach(), h.grad, w.grad, None if b is None else b.grad)
        # every target ignored: loss 0 and zero gradients, on every rank, no hang
        h = h0.clone().requires_grad_()
        w = w0[a:a + v].clone().requires_grad_()
        loss = ops.parallel_linear_cross_entropy(h, w, torch.full_like(y, -100), vocab_start=start)
        loss.backward()
        res["all_ignored"] = (loss.detach(), h.grad, w.grad, None)
        # token statistics with all four fields in the graph, softcap and temperature
        h = h0.clone().requires_grad_()
        w = w0[a:a + v].clone().requires_grad_()
        yy = y.clamp(min=0)
        st = ops.parallel_linear_token_stats(h, w, yy, vocab_start=start, softcap=4.0, temperature=0.7,
                                             chunk_size=5)
        sum((st[k] * gu[i]).sum() for i, k in enumerate(("lse", "entropy", "varentropy", "surprisal"))
            ).backward()
        res["stats"] = ({k: st[k].detach() for k in ("lse", "entropy", "varentropy", "surprisal")},
                        h.grad, w.grad, None)
        # shards that do not cover the vocabulary: a clear error on every rank
        try:
            ops.parallel_linear_cross_entropy(h0, w0[a:a + v], y, vocab_start=start, vocab_size=V + 1)
        except ValueError as exc:
            res["error_size"] = str(exc)
        try:
            ops.parallel_linear_cross_entropy(h0, w0[a:a + v], y, vocab_start=a + (rank == 0))
        except ValueError as exc:
            res["error_gap"] = str(exc)
        torch.save(res, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reference_ce(kw: dict, upstream: torch.Tensor):
    h0, w0, b0, y, _ = _data()
    kw = dict(kw)
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    b = b0.clone().requires_grad_() if kw.pop("bias", False) else None
    red, eps, zl, cap = kw.get("reduction"), kw.get("label_smoothing", 0.0), kw.get("z_loss", 0.0), \
        kw.get("softcap")
    z = F.linear(h, w, b)
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    per = F.cross_entropy(z, y, reduction="none", label_smoothing=eps)
    per = per + zl * torch.where(y != -100, torch.logsumexp(z, -1) ** 2, 0.0)
    loss = per if red == "none" else (per.sum() / (y != -100).sum() if red == "mean" else per.sum())
    (loss * upstream if loss.dim() else loss * 1.7).sum().backward()
    return loss.detach(), h.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize("world", [2, 3])
def test_vocab_parallel_matches_single_process(world, tmp_path):
    ctx = mp.get_context("fork")  # no re-import of torch in the children
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(world, r, port, str(tmp_path))) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    h0, w0, _, y, gu = _data()
    tol = dict(rtol=0, atol=1e-6)
    for name, kw in CASES:
        ref_loss, ref_dh, ref_dw, ref_db = _reference_ce(kw, gu[0])
        for r, res in enumerate(parts):
            a, v = _shard(world, r)
            loss, dh, dw, db = res[name]
            torch.testing.assert_close(loss, ref_loss, **tol)
            torch.testing.assert_close(dh, ref_dh, **tol)
            torch.testing.assert_close(dw, ref_dw[a:a + v], **tol)
            if ref_db is not None:
                torch.testing.assert_close(db, ref_db[a:a + v], **tol)
    for res in parts:
        loss, dh, dw, _ = res["all_ignored"]
        assert float(loss) == 0.0 and not dh.any() and not dw.any()
        assert "cover" in res["error_size"] and str(V + 1) in res["error_size"]
        assert "do not cover the vocabulary" in res["error_gap"]
    # token statistics against measures.token_stats on the full (capped, tempered) logits
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    z = 4.0 * torch.tanh(h @ w.T / 4.0) / 0.7
    ref = measures.token_stats(z, y.clamp(min=0))
    fields = ("lse", "entropy", "varentropy", "surprisal")
    sum((ref[k] * gu[i]).sum() for i, k in enumerate(fields)).backward()
    for r, res in enumerate(parts):
        a, v = _shard(world, r)
        st, dh, dw, _ = res["stats"]
        for k in st:
            torch.testing.assert_close(st[k], ref[k].detach(), **tol)
        torch.testing.assert_close(dh, h.grad, **tol)
        torch.testing.assert_close(dw, w.grad[a:a + v], **tol)


def test_vocab_parallel_needs_a_process_group():
    h0, w0, _, y, _ = _data()
    if dist.is_initialized():
        pytest.skip("a default process group exists in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        ops.parallel_linear_cross_entropy(h0, w0, y)
    with pytest.raises(TypeError, match="target"):
        ops.parallel_linear_cross_entropy(h0, w0, y.double())


def test_vocab_parallel_single_rank_bf16_and_float32():
    """A group of one is the single-process fused op (float32 and bfloat16 inputs)."""
    if dist.is_initialized():
        pytest.skip("a default process group exists in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        h0, w0, _, y, _ = _data()
        for dt in (torch.float32, torch.bfloat16):
            h, w = h0.to(dt).requires_grad_(), w0.to(dt).requires_grad_()
            got = ops.parallel_linear_cross_entropy(h, w, y, label_smoothing=0.1)
            got.backward()
            h2, w2 = h0.to(dt).requires_grad_(), w0.to(dt).requires_grad_()
            ref = ops.linear_cross_entropy(h2, w2, y, label_smoothing=0.1)
            ref.backward()
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
            if dt == torch.float32:
                torch.testing.assert_close(h.grad, h2.grad, rtol=2e-2, atol=1e-5)
                torch.testing.assert_close(w.grad, w2.grad, rtol=2e-2, atol=1e-5)
                continue
            # bf16: the two ops round the logit gradient to bf16 at different points (the single-process
            # op's one-chunk pass uses native bf16 matmuls), so compare both with the exact gradient at
            # the same bf16 inputs, to bf16 precision of the gradient's scale
            he, we = h0.to(dt).double().requires_grad_(), w0.to(dt).double().requires_grad_()
            F.cross_entropy(he @ we.T, y, label_smoothing=0.1).backward()
            for exact, grads in ((he.grad, (h.grad, h2.grad)), (we.grad, (w.grad, w2.grad))):
                for gr in grads:
                    assert (gr.double() - exact).abs().max() <= 2**-7 * exact.abs().max()
    finally:
        dist.destroy_process_group()
