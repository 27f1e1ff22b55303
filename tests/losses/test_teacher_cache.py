"""The teacher cache: rows match the teacher's windows, compact storage, atomic files, vocab checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from entropykit.losses import TeacherCache, build_teacher_cache, topk_teacher


class _Tiny:
    """A deterministic causal 'LM': logits depend on the current token and the position in the window."""

    name = "tiny"
    max_context = 6

    def __init__(self, vocab: int = 11) -> None:
        self.vocab_size = vocab
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(vocab, vocab, generator=g)

    def forward(self, ids: torch.Tensor, past: object = None) -> tuple[torch.Tensor, None]:
        pos = torch.arange(ids.shape[1], dtype=torch.float32)
        return self.table[ids] + 0.1 * pos[None, :, None], None


def test_topk_rows_equal_the_teacher_on_each_window() -> None:
    m = _Tiny()
    tokens = torch.randint(0, 11, (20,), generator=torch.Generator().manual_seed(1))
    c = build_teacher_cache(m, tokens, k=3, method="topk", window=6, batch_size=2)
    assert len(c) == 20 and c.k == 3 and c.window == 6 and c.ids.dtype == torch.uint16
    for s in range(0, 20, 6):
        x = tokens[s:s + 6][None]
        ids, w = topk_teacher(m.forward(x)[0][0], 3)
        got_i, got_w = c.targets(s, s + x.shape[1], vocab_size=11)
        assert torch.equal(got_i, ids) and torch.allclose(got_w, w)


def test_sampled_cache_is_reproducible_and_normalised() -> None:
    m = _Tiny()
    tokens = torch.randint(0, 11, (15,), generator=torch.Generator().manual_seed(2))
    a = build_teacher_cache(m, tokens, k=4, generator=torch.Generator().manual_seed(3))
    b = build_teacher_cache(m, tokens, k=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.ids, b.ids) and torch.equal(a.weights, b.weights)
    assert torch.allclose(a.weights.sum(1), torch.ones(15))
    # 6 bytes per slot (uint16 id + float32 weight) vs 4 V bytes of float32 logits per position
    assert a.nbytes == 15 * 4 * 6


def test_save_load_roundtrip_atomic_and_vocab_check(tmp_path: Path) -> None:
    m = _Tiny()
    tokens = torch.arange(12) % 11
    c = build_teacher_cache(m, tokens, k=2, method="topk", weight_dtype=torch.float16)
    p = tmp_path / "teacher.cache"
    c.save(p)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["teacher.cache"]  # no temporary left behind
    d = TeacherCache.load(p, vocab_size=11)
    assert torch.equal(d.ids, c.ids) and torch.equal(d.weights, c.weights) and d.method == "topk"
    assert d.weights.dtype == torch.float16 and d.meta["model"] == "tiny"
    with pytest.raises(ValueError, match="vocabularies differ"):
        TeacherCache.load(p, vocab_size=257)
    with pytest.raises(ValueError, match="vocabularies differ"):
        d.targets(0, 4, vocab_size=12)
    with pytest.raises(FileExistsError):
        c.save(p, force=False)


def test_bad_files_and_arguments(tmp_path: Path) -> None:
    bad = tmp_path / "junk"
    bad.write_bytes(b"not a cache")
    with pytest.raises(ValueError, match="teacher cache"):
        TeacherCache.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(ValueError, match="teacher cache"):
        TeacherCache.load(other)
    m = _Tiny()
    with pytest.raises(ValueError, match="tokens"):
        build_teacher_cache(m, torch.zeros(2, 3, dtype=torch.long), k=2)
    with pytest.raises(ValueError, match="window"):
        build_teacher_cache(m, torch.arange(5), k=2, window=7)
    with pytest.raises(ValueError, match="method"):
        build_teacher_cache(m, torch.arange(5), k=2, method="all")
    with pytest.raises(ValueError, match="k"):
        build_teacher_cache(m, torch.arange(5), k=12, method="topk")
    with pytest.raises(ValueError, match="stop"):
        build_teacher_cache(m, torch.arange(5), k=2).targets(0, 9, vocab_size=11)
