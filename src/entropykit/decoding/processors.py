"""Logits processors: truncation and temperature rules for sampling.

Every rule is a function ``rule(scores, ...) -> scores`` over a batch of next-token logits
``scores[B, V]`` (natural-log units; removed tokens get ``-inf``), and a thin class with the
Hugging Face ``LogitsProcessor`` protocol ``processor(input_ids, scores) -> scores``, so our
processors can be passed to ``transformers``' ``model.generate(logits_processor=[...])`` as well as
to :func:`entropykit.decoding.generate`. ``chain(*processors)`` composes them left to right.

Parity: ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``epsilon_cutoff``, ``eta_cutoff`` and
``top_h`` reproduce the ``transformers`` 5.x warpers' float32 arithmetic, so kept sets and values
are identical (tests check thousands of rows, with ties and ``-inf``). ``typical`` avoids the
reference's full-vocabulary sort (a histogram selection, see its docstring), so a row can differ
only when the reference's float32 cumulative mass lands within rounding of ``mass``. Documented
differences from the references, each tested: ``typical`` keeps every token tied at the
``min_tokens_to_keep`` boundary; ``top_h`` treats ``0 log 0 = 0`` (transformers turns it into NaN
and drops such tokens) and has ``min_tokens_to_keep``.

Speed (CPU): removals are applied arithmetically rather than through a boolean mask (see
``_drop_below``), top-p sorts with NumPy's SIMD sort (same values, so the same arithmetic), top-k
and top-H select their top values from a sampled threshold instead of ``torch.topk``, and typical
avoids the sort altogether; ``benchmarks/decoding.py`` has the figures.

Rows are independent: every threshold is computed per row. Half-precision scores are upcast to
float32 for the decision and returned in their own dtype. NaN scores are not checked here (hot
path); :func:`entropykit.decoding.generate` rejects them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from entropykit._validate import check_int, check_logits, check_positive, check_real

__all__ = [
    "XTC",
    "Chain",
    "DynamicTemperature",
    "Epsilon",
    "Eta",
    "MinP",
    "Processor",
    "Temperature",
    "TopH",
    "TopK",
    "TopNSigma",
    "TopP",
    "Typical",
    "chain",
    "dynamic_temperature",
    "epsilon_cutoff",
    "eta_cutoff",
    "min_p",
    "temperature",
    "top_h",
    "top_k",
    "top_n_sigma",
    "top_p",
    "typical",
    "xtc",
]

NEG_INF = float("-inf")
_TYPICAL_BUCKETS = 2048
_TYPICAL_RANGE = 32.0  # nats of |surprisal - entropy| spanned by the histogram
_FAR = 1e30


# --- validation (the dialect of entropykit._validate) -----------------------------------------------
def check_scores(scores: Tensor) -> Tensor:
    """``scores`` if it is a floating-point tensor of shape (batch, vocab >= 1): the argument check of
    every processor and sampler here; TypeError / ValueError naming ``scores`` otherwise.

    >>> check_scores(torch.zeros(2, 5)).shape
    torch.Size([2, 5])
    """
    check_logits(scores, "scores")
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (batch, vocab), got shape {tuple(scores.shape)}")
    return scores


def _work(scores: Tensor) -> Tensor:
    """float32/float64 view used for decisions (half precision is upcast)."""
    return scores if scores.dtype in (torch.float32, torch.float64) else scores.float()


def _drop_below(value: Tensor, bound: Tensor | float, scores: Tensor) -> Tensor:
    """``scores`` with ``-inf`` wherever ``value < bound`` (row-wise bound), without a boolean mask.

    Selecting through a boolean mask (``masked_fill``/``where``) runs at ~20 ns per element on CPU,
    an order of magnitude slower than arithmetic, so the mask is built in float: the sign of
    ``value - bound`` is exact, ``min(d, 0) * inf`` is ``-inf`` below the bound and NaN (0 * inf) at
    or above it, and NaN -> 0. Adding 0 leaves a score unchanged (``-0.0`` becomes ``+0.0``).
    """
    if (
        value is scores
        and isinstance(bound, Tensor)
        and value.dtype in (torch.float32, torch.float64)
        and (value.device.type == "cpu" and value.shape[0] <= 64)
    ):
        # Fewest passes: copy, then per row keep x > nextafter(bound, -inf), i.e. x >= bound.
        lows = torch.nextafter(bound.to(value.dtype), torch.tensor(NEG_INF, dtype=value.dtype)).flatten()
        out = value.clone()
        for r, low in enumerate(lows.expand(value.shape[0]).tolist()):
            torch.nn.functional.threshold(out[r], low, NEG_INF, inplace=True)
        return out
    bias = (value - bound).clamp_(max=0.0).mul_(math.inf).nan_to_num_(nan=0.0, neginf=NEG_INF)
    if bias.dtype == scores.dtype and bias.shape == scores.shape:
        return bias.add_(scores)  # one temporary: x + b == b + x exactly
    return (scores + bias).to(scores.dtype)


def _top_values(x: Tensor, n: int) -> Tensor:
    """The ``n`` largest values of each row, descending: ``torch.topk(x, n).values``, bit for bit.

    ``torch.topk`` costs ~15 ns per element on CPU. On large CPU rows this instead takes a threshold
    from a strided sample (its ~2n/step-th largest value, so ~2n tokens pass), keeps the values above
    it with one vectorised compare, and selects among those few (NumPy); a row where fewer than ``n``
    pass falls back to a full selection. Only values are returned, so tie order is irrelevant.
    """
    b, v = x.shape
    if x.device.type != "cpu" or v < 4096 or n > v // 16:
        return torch.topk(x, n, dim=-1).values
    xn = x.detach().numpy()
    out = np.empty((b, n), dtype=xn.dtype)
    step = max(1, v // (16 * n))
    for r in range(b):
        row = xn[r]
        sub = row[::step]
        m = min(sub.size, 2 * n // step + 4)
        cand = row[row >= np.partition(sub, sub.size - m)[sub.size - m]]
        if cand.size < n:  # NaN or unlucky sample
            return torch.topk(x, n, dim=-1).values
        out[r] = np.sort(np.partition(cand, cand.size - n)[cand.size - n :])[::-1]
    return torch.from_numpy(out)


def _sorted_values(x: Tensor) -> Tensor:
    """``torch.sort(x).values`` (ascending), with NumPy's SIMD sort on CPU (~20x faster than torch's)."""
    if x.device.type != "cpu":
        return torch.sort(x, dim=-1).values
    return torch.from_numpy(np.sort(x.detach().numpy(), axis=-1))


def _keep_top(remove: Tensor, x: Tensor, k: int) -> Tensor:
    """Un-remove the k highest-scoring tokens of each row (as transformers' topk + scatter does)."""
    if k > 1:
        idx = torch.topk(x, min(k, x.shape[-1]), dim=-1).indices
        remove = remove.scatter(-1, idx, False)
    return remove


# --- rules -----------------------------------------------------------------------------------------
def temperature(scores: Tensor, t: float) -> Tensor:
    """Temperature scaling ``z / t`` (``t > 0``; ``t < 1`` sharpens, ``t > 1`` flattens).

    Ackley, Hinton & Sejnowski (1985); the softmax temperature of every sampler. Units: logits (nats).

    >>> temperature(torch.tensor([[2.0, 0.0]]), 2.0)
    tensor([[1., 0.]])
    """
    check_scores(scores)
    check_positive(t, "t")
    return scores / t


def top_k(scores: Tensor, k: int, *, min_tokens_to_keep: int = 1) -> Tensor:
    """Keep the ``k`` highest logits of each row (every token tied with the k-th is kept).

    Fan, Lewis & Dauphin (2018), "Hierarchical Neural Story Generation". ``k`` is raised to
    ``min_tokens_to_keep`` and clipped to the vocabulary.

    >>> top_k(torch.tensor([[3.0, 1.0, 2.0]]), 2)
    tensor([[3., -inf, 2.]])
    """
    check_scores(scores)
    check_int(k, "k", 1)
    k = min(max(k, check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)), scores.shape[-1])
    x = _work(scores)
    kth = _top_values(x, k)[:, -1:]
    return _drop_below(x, kth, scores)


def top_p(scores: Tensor, p: float, *, min_tokens_to_keep: int = 1) -> Tensor:
    """Nucleus sampling: keep the most likely tokens whose probability mass reaches ``p``.

    Holtzman et al. (2020), "The Curious Case of Neural Text Degeneration". As in transformers:
    sort ascending, ``c_j`` = cumulative probability of the j smallest; remove tokens with
    ``c_j <= 1 - p``; the ``min_tokens_to_keep`` most likely are always kept. ``0 <= p <= 1``.

    >>> top_p(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), 0.7).isfinite()
    tensor([[ True,  True, False]])
    """
    check_scores(scores)
    p = check_real(p, "p", 0.0, 1.0)
    keep_min = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)
    x = _work(scores)
    v = x.shape[-1]
    sorted_logits = _sorted_values(x)  # same values as transformers' torch.sort, so same arithmetic
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # cum is non-decreasing, so the removed tokens are a prefix of the ascending order.
    bound = torch.full((x.shape[0], 1), 1 - p, dtype=cum.dtype)
    n_remove = torch.searchsorted(cum, bound, right=True).clamp_(max=max(v - keep_min, 0))
    first_kept = sorted_logits.gather(-1, n_remove.clamp(max=v - 1))
    last_removed = sorted_logits.gather(-1, (n_remove - 1).clamp(min=0))
    if bool(((n_remove > 0) & (last_removed == first_kept)).any()):
        # A tie straddles the cut: the sort order decides which tied tokens go (as in transformers).
        sorted_idx = torch.sort(x, descending=False).indices
        ranks = torch.arange(v).expand_as(sorted_idx)
        sorted_remove = ranks < n_remove
        remove = torch.empty_like(sorted_remove).scatter_(-1, sorted_idx, sorted_remove)
        return scores.masked_fill(remove, NEG_INF)
    return _drop_below(x, first_kept, scores)


def min_p(scores: Tensor, min_p: float, *, min_tokens_to_keep: int = 1) -> Tensor:
    """Min-p: keep tokens with ``p_i >= min_p * max_j p_j`` (``0 <= min_p <= 1``; typical 0.01-0.2).

    Nguyen et al. (2024), "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs".

    >>> min_p(torch.log(torch.tensor([[0.6, 0.3, 0.1]])), 0.4).isfinite()
    tensor([[ True,  True, False]])
    """
    check_scores(scores)
    min_p = check_real(min_p, "min_p", 0.0, 1.0)
    keep_min = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)
    x = _work(scores)
    probs = torch.softmax(x, dim=-1)
    bound = min_p * probs.amax(dim=-1, keepdim=True)
    if keep_min == 1:  # nothing more is needed: the most likely token passes (min_p <= 1)
        return _drop_below(probs, bound, scores)
    return scores.masked_fill(_keep_top(probs < bound, probs, keep_min), NEG_INF)


def epsilon_cutoff(scores: Tensor, epsilon: float, *, min_tokens_to_keep: int = 1) -> Tensor:
    """Epsilon sampling: keep tokens with ``p_i >= epsilon`` (and the ``min_tokens_to_keep`` best).

    Hewitt, Manning & Liang (2022), "Truncation Sampling as Language Model Desmoothing".
    ``0 < epsilon < 1``; typical 3e-4 .. 9e-4.

    >>> epsilon_cutoff(torch.log(torch.tensor([[0.7, 0.2999, 0.0001]])), 3e-4).isfinite()
    tensor([[ True,  True, False]])
    """
    check_scores(scores)
    epsilon = check_real(epsilon, "epsilon", 0.0, 1.0, lo_open=True, hi_open=True)
    return _cutoff(scores, _work(scores), epsilon, check_int(min_tokens_to_keep, "min_tokens_to_keep", 1))


def eta_cutoff(scores: Tensor, epsilon: float, *, min_tokens_to_keep: int = 1) -> Tensor:
    """Eta sampling: keep tokens with ``p_i >= eta``, ``eta = min(eps, sqrt(eps) * exp(-H))``.

    Hewitt, Manning & Liang (2022). ``H`` = entropy of the row in nats; ``0 < epsilon < 1``.

    >>> eta_cutoff(torch.log(torch.tensor([[0.7, 0.2999, 0.0001]])), 3e-4).isfinite()
    tensor([[ True,  True, False]])
    """
    check_scores(scores)
    epsilon = check_real(epsilon, "epsilon", 0.0, 1.0, lo_open=True, hi_open=True)
    keep_min = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)
    x = _work(scores)
    # Entropy exactly as torch.distributions.Categorical computes it (what transformers uses).
    ln = x - x.logsumexp(dim=-1, keepdim=True)
    h = -(ln.clamp(min=torch.finfo(ln.dtype).min) * torch.softmax(ln, dim=-1)).sum(-1)
    eps = torch.tensor(epsilon, dtype=torch.float32)
    eta = torch.minimum(eps, torch.sqrt(eps) * torch.exp(-h))[..., None]
    return _cutoff(scores, x, eta, keep_min)


def _cutoff(scores: Tensor, x: Tensor, bound: float | Tensor, keep_min: int) -> Tensor:
    """Drop the tokens of ``scores`` whose probability (from ``x = _work(scores)``) is below ``bound``."""
    probs = torch.softmax(x, dim=-1)
    # Only rows whose best token falls below the bound need the "keep the best" rule.
    if keep_min == 1 and not bool((probs.amax(dim=-1, keepdim=True) < bound).any()):
        return _drop_below(probs, bound, scores)
    remove = probs < bound
    if keep_min == 1:
        remove &= x < x.amax(dim=-1, keepdim=True)
    else:
        remove &= x < torch.topk(x, min(keep_min, x.shape[-1]), dim=-1).values[..., -1:]
    return scores.masked_fill(remove, NEG_INF)


def typical(scores: Tensor, mass: float, *, min_tokens_to_keep: int = 1) -> Tensor:
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy.

    Meister et al. (2023), "Locally Typical Sampling". Score ``s_i = | -log p_i - H |`` (nats);
    order tokens by ``s`` ascending; keep every token whose score is ``<=`` the score at the first
    position where the cumulative probability reaches ``mass`` (``0 < mass < 1``), and at least
    ``min_tokens_to_keep`` tokens (every token tied at that boundary is kept, where transformers
    keeps whichever its sort put first).

    Instead of sorting the vocabulary, the threshold is found by selection: a 2048-bucket
    probability histogram of ``s`` over [0, 32) nats locates the bucket where the mass is reached,
    and only that bucket's tokens are sorted. Cumulative sums run in float64 and
    are compared in float32 like transformers'.

    >>> typical(torch.log(torch.tensor([[0.4, 0.35, 0.2, 0.05]])), 0.5).isfinite()
    tensor([[ True,  True, False, False]])
    """
    check_scores(scores)
    mass = check_real(mass, "mass", 0.0, 1.0, lo_open=True, hi_open=True)
    keep_min = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)
    x = _work(scores)
    logp = torch.log_softmax(x, dim=-1)
    p = logp.exp()
    ent = -(logp * p).nansum(-1, keepdim=True)
    s = (logp + ent).abs_()  # == |(-log p) - H| bit for bit (rounding is sign-symmetric)
    thr = _typical_threshold(s, p, mass)
    if keep_min > 1:
        thr = torch.maximum(thr, torch.topk(s, min(keep_min, s.shape[-1]), largest=False).values[..., -1:])
    return _drop_below(thr, s, scores)  # removes s > thr


def _typical_threshold(s: Tensor, p: Tensor, mass: float) -> Tensor:
    """Smallest score value at which the probability of {s_i <= value} reaches ``mass`` (B, 1)."""
    b, v = s.shape
    mass32 = torch.tensor(mass, dtype=torch.float32)
    nb = min(_TYPICAL_BUCKETS, v)
    # Buckets of width 32/nb nats over s in [0, 32); larger, infinite (p = 0) and NaN scores share the last.
    bf = torch.nan_to_num_(s * (nb / _TYPICAL_RANGE), nan=nb - 1, posinf=nb - 1).clamp_(max=nb - 1).floor_()
    bucket = bf.to(torch.int64)
    p64 = p.double()
    cum = torch.zeros(b, nb, dtype=torch.float64).scatter_add_(1, bucket, p64).cumsum_(-1)
    counts = torch.zeros(b, nb).scatter_add_(1, bucket, torch.ones(1).expand(b, v))
    crossing = (cum.float() < mass32).sum(-1, keepdim=True)
    reached = crossing < nb
    crossing.clamp_(max=nb - 1)
    before = torch.where(
        crossing > 0, cum.gather(-1, (crossing - 1).clamp(min=0)), torch.zeros_like(p64[:, :1])
    )
    k = max(int(counts.gather(-1, crossing).max()), 1)
    # Sort key without a boolean mask (see _drop_below): s inside the crossing bucket, >= _FAR outside.
    key = (bf - crossing.to(bf.dtype)).abs_().mul_(_FAR).add_(s)
    vals, idx = torch.topk(key, k, dim=-1, largest=False, sorted=True)
    inside = vals < _FAR
    cand = (before + torch.where(inside, p64.gather(-1, idx), 0.0).cumsum(-1)).float()
    pos = (cand < mass32).sum(-1, keepdim=True).clamp_(max=k - 1)
    thr = vals.gather(-1, pos)
    # Mass never reached in float32 (e.g. mass ~ 1): keep everything, as transformers does.
    return torch.where(reached, thr, s.amax(-1, keepdim=True))


def top_h(scores: Tensor, alpha: float, *, top_n: int = 100, min_tokens_to_keep: int = 1) -> Tensor:
    """Top-H: entropy-constrained mass maximisation (greedy), entropy in nats.

    Potraghloo et al. (2025), "Top-H Decoding: Adapting the Creativity and Coherence with Bounded
    Entropy in Text Generation". Restrict to the ``top_n`` most likely tokens and renormalise
    (``q``); ``tau = alpha * H(q)``; add tokens by decreasing probability while
    ``sum_kept -q_i log q_i <= tau``; the first ``min_tokens_to_keep`` are always kept.
    ``0 < alpha <= 1`` (typical 0.3-0.5). Same arithmetic as transformers' ``TopHLogitsWarper``
    except that ``0 log 0 = 0`` (transformers gets NaN and drops tokens whose renormalised
    probability underflows to 0).

    >>> top_h(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), 0.5).isfinite()
    tensor([[ True, False, False]])
    """
    check_scores(scores)
    alpha = check_real(alpha, "alpha", 0.0, 1.0, lo_open=True)
    check_int(top_n, "top_n", 1)
    keep_min = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)
    x = _work(scores)
    n = min(top_n, x.shape[-1])
    top_logits = _top_values(x, n)
    # torch.distributions.Categorical(logits=top_logits) arithmetic, as transformers uses it.
    ln = top_logits - top_logits.logsumexp(dim=-1, keepdim=True)
    q = torch.softmax(ln, dim=-1)
    h = -(ln.clamp(min=torch.finfo(ln.dtype).min) * q).sum(-1, keepdim=True)
    terms = torch.where(q > 0, -q * torch.log(q), 0.0)  # transformers' arithmetic, with 0 log 0 = 0
    keep = torch.cumsum(terms, dim=-1) <= h * alpha
    keep[:, : min(keep_min, n)] = True
    # The kept tokens are a prefix of the top-n order, so one threshold per row selects them, unless
    # a tie straddles the cut (then the topk order decides, as in transformers).
    count = keep.sum(-1, keepdim=True)  # terms >= 0, so the running sum is monotone: keep is a prefix
    pair = top_logits.gather(-1, torch.cat([count - 1, count.clamp(max=n - 1)], dim=-1))
    thr = pair[:, :1]
    tie = (count < n) & (pair[:, 1:] == thr)
    full = count == n
    any_tie, any_full = torch.stack([tie.any(), full.any()]).tolist()
    if any_full and n < x.shape[-1]:  # tokens outside the top n may equal the last kept value
        tie |= full & ((x == thr).sum(-1, keepdim=True) > (top_logits == thr).sum(-1, keepdim=True))
        any_tie = bool(tie.any())
    if any_tie:  # the topk order decides which tied tokens stay, as in transformers
        top_idx = torch.topk(x, n, dim=-1, largest=True, sorted=True).indices
        ranks = torch.arange(n).expand_as(top_idx)
        remove = torch.ones(x.shape, dtype=torch.bool).scatter_(1, top_idx, ranks >= count)
        return scores.masked_fill(remove, NEG_INF)
    return _drop_below(x, thr, scores)


def top_n_sigma(scores: Tensor, n: float) -> Tensor:
    """Top-nσ: keep tokens with ``z_i >= max(z) - n * std(z)`` (std over the finite logits, population).

    Tang et al. (2024), "Top-nσ: Not All Logits Are You Need". Works in logit space, so it is
    temperature invariant; ``n >= 0`` (``n = 0`` keeps the argmax and its ties).

    >>> top_n_sigma(torch.tensor([[4.0, 3.0, 0.0, -1.0]]), 0.5).isfinite()
    tensor([[ True,  True, False, False]])
    """
    check_scores(scores)
    n = check_positive(n, "n", allow_zero=True)
    x = _work(scores)
    finite = torch.isfinite(x)
    cnt = finite.sum(-1, keepdim=True).clamp(min=1)
    z = torch.where(finite, x, torch.zeros_like(x))
    mean = z.sum(-1, keepdim=True) / cnt
    var = torch.where(finite, (z - mean) ** 2, torch.zeros_like(x)).sum(-1, keepdim=True) / cnt
    thr = x.amax(-1, keepdim=True) - n * var.sqrt()
    return _drop_below(x, thr, scores)


def xtc(
    scores: Tensor,
    threshold: float,
    probability: float,
    *,
    generator: torch.Generator | None = None,
    min_tokens_to_keep: int = 1,
) -> Tensor:
    """XTC ("exclude top choices"): with chance ``probability`` per row, if at least two tokens have
    ``p_i >= threshold``, remove all of them except the least likely one (its ties are kept too).

    p-e-w (2024), text-generation-webui / llama.cpp XTC sampler. A row is left unchanged when fewer
    than ``min_tokens_to_keep`` tokens would remain. One uniform draw per row from ``generator``
    (drawn on every call, so a fixed generator gives reproducible output).

    >>> g = torch.Generator().manual_seed(0)
    >>> xtc(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), 0.25, 1.0, generator=g).isfinite()
    tensor([[False,  True,  True]])
    """
    check_scores(scores)
    threshold = check_real(threshold, "threshold", 0.0, 1.0, lo_open=True)
    probability = check_real(probability, "probability", 0.0, 1.0)
    keep_min = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)
    x = _work(scores)
    draw = torch.rand(x.shape[0], generator=generator, device=x.device)
    probs = torch.softmax(x, dim=-1)
    above = probs >= threshold
    weakest = x.masked_fill(~above, math.inf).amin(-1, keepdim=True)
    remove = above & (x > weakest)
    left = torch.isfinite(x).sum(-1) - remove.sum(-1)
    active = (draw < probability) & (above.sum(-1) >= 2) & (left >= keep_min)
    return scores.masked_fill(remove & active[:, None], NEG_INF)


def dynamic_temperature(
    scores: Tensor, temperature: float, delta: float, exponent: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Entropy-driven temperature (llama.cpp "dynatemp", kalomaze 2023); returns (scores, T per row).

    ``minT = max(0, T - delta)``, ``maxT = T + delta``, ``Hn = H / ln N`` (H in nats over the
    ``N`` finite candidates; ``Hn = 0`` when ``N = 1``), ``T_dyn = minT + (maxT - minT) * Hn^exponent``,
    scores divided by ``T_dyn``. A row whose ``T_dyn`` is 0 becomes greedy (only its argmax and
    ties stay). ``delta = 0`` is plain temperature ``T``.

    >>> out, t = dynamic_temperature(torch.zeros(1, 4), 1.0, 0.5)
    >>> t
    tensor([1.5000])
    """
    check_scores(scores)
    temperature = check_positive(temperature, "temperature", allow_zero=True)
    delta = check_positive(delta, "delta", allow_zero=True)
    exponent = check_positive(exponent, "exponent")
    x = _work(scores)
    b = x.shape[0]
    if delta == 0:
        t = torch.full((b,), temperature, dtype=x.dtype)
    else:
        lo, hi = max(0.0, temperature - delta), temperature + delta
        logp = torch.log_softmax(x, dim=-1)
        h = -torch.where(logp > NEG_INF, logp.exp() * logp, torch.zeros_like(logp)).sum(-1)
        n = torch.isfinite(x).sum(-1)
        hn = torch.where(n > 1, h / torch.log(n.clamp(min=2).to(x.dtype)), torch.zeros_like(h)).clamp(0, 1)
        t = lo + (hi - lo) * hn**exponent
    greedy = t <= 0
    out = x / torch.where(greedy, torch.ones_like(t), t)[:, None]
    if bool(greedy.any()):
        out = out.masked_fill(greedy[:, None] & (x < x.amax(-1, keepdim=True)), NEG_INF)
    return out.to(scores.dtype), t


# --- the LogitsProcessor protocol --------------------------------------------------------------------
class Processor(ABC):
    """Base class: ``processor(input_ids[B, T], scores[B, V]) -> scores[B, V]``.

    ``last_temperature`` (tensor[B] or None) is the temperature a processor applied on its last call,
    which :func:`entropykit.decoding.generate` reports per step.
    """

    last_temperature: Tensor | None = None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_scores(scores)
        return self.apply(scores)

    @abstractmethod
    def apply(self, scores: Tensor) -> Tensor:
        """The rule itself, on validated scores (B, V)."""

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "last_temperature"
        )
        return f"{type(self).__name__}({args})"


class Temperature(Processor):
    """``scores / t`` (see :func:`temperature`)."""

    def __init__(self, t: float) -> None:
        self.t = check_positive(t, "t")
        self._rows = 0

    @property
    def last_temperature(self) -> Tensor | None:  # type: ignore[override]
        return torch.full((self._rows,), self.t) if self._rows else None

    def apply(self, scores: Tensor) -> Tensor:
        self._rows = scores.shape[0]  # the tensor is built only when asked for (hot path)
        return scores / self.t


class TopK(Processor):
    """Keep the k best tokens (see :func:`top_k`)."""

    def __init__(self, k: int, min_tokens_to_keep: int = 1) -> None:
        top_k(torch.zeros(1, 1), k, min_tokens_to_keep=min_tokens_to_keep)  # validates
        self.k, self.min_tokens_to_keep = k, min_tokens_to_keep

    def apply(self, scores: Tensor) -> Tensor:
        return top_k(scores, self.k, min_tokens_to_keep=self.min_tokens_to_keep)


class TopP(Processor):
    """Nucleus sampling (see :func:`top_p`)."""

    def __init__(self, p: float, min_tokens_to_keep: int = 1) -> None:
        self.p = check_real(p, "p", 0.0, 1.0)
        self.min_tokens_to_keep = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)

    def apply(self, scores: Tensor) -> Tensor:
        return top_p(scores, self.p, min_tokens_to_keep=self.min_tokens_to_keep)


class MinP(Processor):
    """Min-p truncation (see :func:`min_p`)."""

    def __init__(self, min_p: float, min_tokens_to_keep: int = 1) -> None:
        self.min_p = check_real(min_p, "min_p", 0.0, 1.0)
        self.min_tokens_to_keep = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)

    def apply(self, scores: Tensor) -> Tensor:
        return min_p(scores, self.min_p, min_tokens_to_keep=self.min_tokens_to_keep)


class Epsilon(Processor):
    """Epsilon truncation (see :func:`epsilon_cutoff`)."""

    def __init__(self, epsilon: float, min_tokens_to_keep: int = 1) -> None:
        self.epsilon = check_real(epsilon, "epsilon", 0.0, 1.0, lo_open=True, hi_open=True)
        self.min_tokens_to_keep = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)

    def apply(self, scores: Tensor) -> Tensor:
        return epsilon_cutoff(scores, self.epsilon, min_tokens_to_keep=self.min_tokens_to_keep)


class Eta(Processor):
    """Eta truncation (see :func:`eta_cutoff`)."""

    def __init__(self, epsilon: float, min_tokens_to_keep: int = 1) -> None:
        self.epsilon = check_real(epsilon, "epsilon", 0.0, 1.0, lo_open=True, hi_open=True)
        self.min_tokens_to_keep = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)

    def apply(self, scores: Tensor) -> Tensor:
        return eta_cutoff(scores, self.epsilon, min_tokens_to_keep=self.min_tokens_to_keep)


class Typical(Processor):
    """Locally typical sampling (see :func:`typical`)."""

    def __init__(self, mass: float = 0.9, min_tokens_to_keep: int = 1) -> None:
        self.mass = check_real(mass, "mass", 0.0, 1.0, lo_open=True, hi_open=True)
        self.min_tokens_to_keep = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)

    def apply(self, scores: Tensor) -> Tensor:
        return typical(scores, self.mass, min_tokens_to_keep=self.min_tokens_to_keep)


class TopH(Processor):
    """Top-H entropy-bounded truncation (see :func:`top_h`)."""

    def __init__(self, alpha: float, top_n: int = 100, min_tokens_to_keep: int = 1) -> None:
        top_h(torch.zeros(1, 1), alpha, top_n=top_n, min_tokens_to_keep=min_tokens_to_keep)  # validates
        self.alpha, self.top_n, self.min_tokens_to_keep = float(alpha), top_n, min_tokens_to_keep

    def apply(self, scores: Tensor) -> Tensor:
        return top_h(scores, self.alpha, top_n=self.top_n, min_tokens_to_keep=self.min_tokens_to_keep)


class TopNSigma(Processor):
    """Top-nσ truncation in logit space (see :func:`top_n_sigma`)."""

    def __init__(self, n: float) -> None:
        self.n = check_positive(n, "n", allow_zero=True)

    def apply(self, scores: Tensor) -> Tensor:
        return top_n_sigma(scores, self.n)


class XTC(Processor):
    """Exclude-top-choices (see :func:`xtc`); the generator is kept so calls are reproducible."""

    def __init__(
        self,
        threshold: float = 0.1,
        probability: float = 0.5,
        generator: torch.Generator | None = None,
        min_tokens_to_keep: int = 1,
    ) -> None:
        self.threshold = check_real(threshold, "threshold", 0.0, 1.0, lo_open=True)
        self.probability = check_real(probability, "probability", 0.0, 1.0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        self.min_tokens_to_keep = check_int(min_tokens_to_keep, "min_tokens_to_keep", 1)

    def apply(self, scores: Tensor) -> Tensor:
        return xtc(
            scores,
            self.threshold,
            self.probability,
            generator=self.generator,
            min_tokens_to_keep=self.min_tokens_to_keep,
        )


class DynamicTemperature(Processor):
    """Entropy-driven temperature (see :func:`dynamic_temperature`); ``last_temperature`` holds T_dyn."""

    def __init__(self, temperature: float = 1.0, delta: float = 0.5, exponent: float = 1.0) -> None:
        self.temperature = check_positive(temperature, "temperature", allow_zero=True)
        self.delta = check_positive(delta, "delta", allow_zero=True)
        self.exponent = check_positive(exponent, "exponent")

    def apply(self, scores: Tensor) -> Tensor:
        out, self.last_temperature = dynamic_temperature(scores, self.temperature, self.delta, self.exponent)
        return out


class Chain(Processor):
    """Apply processors left to right; ``last_temperature`` is the product of theirs."""

    def __init__(self, processors: Sequence[Callable[[Tensor, Tensor], Tensor]]) -> None:
        for i, proc in enumerate(processors):
            if not callable(proc):
                raise TypeError(
                    f"processors[{i}] must be a callable (input_ids, scores) -> scores, got {proc!r}"
                )
        self.processors = list(processors)

    def apply(self, scores: Tensor) -> Tensor:
        """The chain without token history: processors that read ``input_ids`` get an empty (B, 0)."""
        return self(torch.empty(scores.shape[0], 0, dtype=torch.long, device=scores.device), scores)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_scores(scores)
        temps: Tensor | None = None
        for proc in self.processors:
            scores = proc(input_ids, scores)
            t = getattr(proc, "last_temperature", None)
            if isinstance(t, Tensor):
                temps = t if temps is None else temps * t
        self.last_temperature = temps
        return scores

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.processors))})"


def chain(*processors: Callable[[Tensor, Tensor], Tensor]) -> Chain:
    """Compose processors left to right: ``chain(a, b)(ids, s) == b(ids, a(ids, s))``.

    >>> c = chain(TopK(2), Temperature(2.0))
    >>> c(torch.zeros(1, 0, dtype=torch.long), torch.tensor([[4.0, 2.0, 0.0]]))
    tensor([[2., 1., -inf]])
    """
    return Chain(processors)
