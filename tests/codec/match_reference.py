"""An independent reference of the codec's match model (``entropykit.codec.match``), for tests.

Written from the module docstring's rules with other means: the earlier occurrence of the last
``MIN_LEN`` tokens is found by scanning the history backwards (no table), and the mixture is taken in
probability space on exact float64 softmax probabilities (not the codec's quantised weights).
"""

from __future__ import annotations

import numpy as np

from entropykit.codec.match import ETA, LAMBDA0, LAMBDA_MAX, MAX_BUCKET, MIN_LEN


def predictions(tokens: list[int]) -> list[tuple[int, int] | None]:
    """(predicted token, match length) before each position of ``tokens``, or None."""
    out: list[tuple[int, int] | None] = []
    ptr = length = 0
    for j in range(len(tokens)):  # before coding tokens[j]; history is tokens[:j]
        out.append((tokens[ptr], length) if length else None)
        y = tokens[j]
        if length and tokens[ptr] == y:
            ptr, length = ptr + 1, length + 1
        else:
            length = 0
        end = j + 1  # the history now ends at `end`
        if not length and end >= MIN_LEN:
            gram = tokens[end - MIN_LEN : end]
            for start in range(end - 1, MIN_LEN - 1, -1):  # latest earlier end of the same n-gram
                if tokens[start - MIN_LEN : start] == gram:
                    n = 0  # equal tokens counted backwards from both ends
                    while n < MAX_BUCKET and n < start and tokens[start - 1 - n] == tokens[end - 1 - n]:
                        n += 1
                    ptr, length = start, n
                    break
    return out


def mixture_bits(probs: np.ndarray, tokens: list[int]) -> float:
    """-sum log2 p'(x_t) of the mixture ``p' = (1 - lam) p + lam [v = c]`` with the learned ``lam``
    per match-length bucket; ``probs`` (n, V): the model's normalised distributions."""
    lam = [LAMBDA0] * MAX_BUCKET
    bits = 0.0
    for p, pred, y in zip(probs, predictions(tokens), tokens):
        if pred is None:
            bits -= np.log2(p[y])
            continue
        c, length = pred
        b = min(length, MAX_BUCKET) - 1
        mixed = (1 - lam[b]) * p + lam[b] * (np.arange(len(p)) == c)
        bits -= np.log2(mixed[y])
        lam[b] = float(np.clip(lam[b] + ETA * ((y == c) - p[c]) / mixed[y], 0.0, LAMBDA_MAX))
    return float(bits)
