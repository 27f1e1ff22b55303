"""Machine-written passages for detection evaluations: plain multinomial sampling (KV-cached)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from entropykit._validate import check_int, check_positive
from entropykit.models import LanguageModel, resolve_model

__all__ = ["generate_passages"]


def _check(
    prompts: Sequence[str | bytes], length: int, seed: int, batch_size: int, temperature: float
) -> None:
    if isinstance(prompts, (str, bytes)):
        raise TypeError(f"prompts must be a sequence of str/bytes, got a single {type(prompts).__name__}")
    for i, p in enumerate(prompts):
        if not isinstance(p, (str, bytes)):
            raise TypeError(f"prompts[{i}] must be str or bytes, got {type(p).__name__}")
    check_int(length, "length", 1)
    check_int(seed, "seed")
    check_int(batch_size, "batch_size", 1)
    check_positive(temperature, "temperature")


def _sample_rows(
    model: LanguageModel, rows: list[list[int]], length: int, g: torch.Generator, temperature: float
) -> list[list[int]]:
    """Sample ``length`` tokens after each row (all rows of equal length) with ``decoding.generate``."""
    from entropykit.decoding.generate import Multinomial, generate

    prefix = list(model.prefix_ids)
    banned = torch.tensor(sorted(set(prefix)), dtype=torch.long)

    def process(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        z = scores.double() / temperature
        return z.index_fill(-1, banned, -torch.inf) if banned.numel() else z  # BOS is not text

    ids = torch.tensor([prefix + r for r in rows], dtype=torch.long)
    out = generate(
        model,
        ids,
        processors=process,
        sampler=Multinomial(),
        max_new_tokens=length,
        generator=g,
        return_stats=False,
    )
    return out.new_tokens


def generate_passages(
    prompts: Sequence[str | bytes],
    length: int,
    seed: int,
    model: LanguageModel | str | None = None,
    *,
    batch_size: int = 32,
    temperature: float = 1.0,
    progress: bool | None = None,
) -> list[bytes]:
    """Continue each prompt with ``length`` tokens sampled from ``model`` (ancestral sampling).

    x_t ~ softmax(z_t / temperature) exactly (default T = 1: the model's own distribution; no
    top-k/top-p), drawn by ``entropykit.decoding.generate`` (KV cache; ``Multinomial`` sampler)
    from a ``torch.Generator`` seeded with ``seed``; prompts of equal token length are batched.
    Prefix (BOS) tokens are excluded from sampling. When prompt + passage exceed ``max_context``
    the model is re-primed on BOS plus the last 3/4 context (``decoding.generate.ContextStream``),
    as the bundled models were trained on windows starting with BOS. Returns the continuations'
    bytes (prompt excluded); deterministic for the same (prompts, length, seed, model, batch_size).

    >>> from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig
    >>> from entropykit.models import ByteModel
    >>> m = ByteModel(ByteGPT(ByteGPTConfig(block_size=16, n_layer=1, n_head=1, n_embd=8)))
    >>> [len(p) for p in generate_passages(["ab", "cd"], 20, seed=0, model=m)]
    [20, 20]
    """
    _check(prompts, length, seed, batch_size, temperature)
    lm = resolve_model(model)
    g = torch.Generator().manual_seed(seed)
    encoded = [list(lm.encode(p).ids) for p in prompts]
    if not lm.prefix_ids and any(not e for e in encoded):
        why = f"model {lm.name!r} has no BOS/prefix token"
        raise ValueError(f"prompts must be non-empty ({why}), got an empty prompt")
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    out: list[bytes] = [b""] * len(encoded)
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch_size and len(encoded[groups[-1][0]]) == len(encoded[i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    bar = tqdm(
        total=len(encoded),
        desc="generating",
        unit="passage",
        disable=(not progress) if progress is not None else None,
    )
    for group in groups:
        for i, ids in zip(group, _sample_rows(lm, [encoded[i] for i in group], length, g, temperature)):
            out[i] = lm.decode(ids)
        bar.update(len(group))
    bar.close()
    return out
