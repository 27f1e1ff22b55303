"""The match model: the token that followed the last occurrence of the current context, mixed in.

A language model with a window of ``W`` tokens cannot see a repeat that lies further back; LZ77
coders (``xz``) live on such repeats (navigation lists, reference links, licence clauses, code that
restates names). Container version 5 (header flag bit 3) lets the codec add the match model of the
PAQ family (Mahoney's lpaq1, 2007) to each step's distribution, per chunk:

* **Prediction.** After token ``t_{i-1}``: if a match is running (``length > 0``), the predicted
  token is ``c = h[ptr]``, the token that followed the earlier occurrence; otherwise there is none.
  A hit (``t_i = c``) extends the match (``ptr += 1``, ``length += 1``); a miss ends it. With no
  match running, the last ``MIN_LEN`` tokens are looked up in a table of the most recent position
  where each ``MIN_LEN``-gram ended; a hit there starts a match at that position, its ``length`` the
  number of equal tokens counted backwards (at most ``MAX_BUCKET``). The table then records the
  current position for that ``MIN_LEN``-gram.
* **Mixture** (units: the codec's unnormalised weights ``w``, ``S = fsum(w)``; ``p = w / S``):
  ``p'(v) = (1 - lam) p(v) + lam [v = c]``, i.e. ``w'_c = w_c + lam / (1 - lam) * S`` and every other
  weight unchanged; ``lam = lam[b]`` with bucket ``b = min(length, MAX_BUCKET) - 1``.
* **Learning** ``lam`` online by gradient ascent on the log-likelihood of the coded token ``y``:
  ``d log p'(y) / d lam = ([y = c] - p(c)) / p'(y)``; ``lam[b] <- clip(lam[b] + ETA * that, 0,
  LAMBDA_MAX)``, starting from ``LAMBDA0`` in every bucket of every chunk.

Everything after the model's quantised weights is IEEE float64 addition, multiplication and
division in one fixed order plus ``math.fsum`` (correctly rounded), so encoder and decoder compute the
same bits on any machine. Source: M. Mahoney, "Data Compression Explained", section 4.3 (match
models) and lpaq1 (2007); the learned two-way mixture is the linear mixing of Mahoney (2005),
"Adaptive weighing of context models for lossless data compression", Florida Tech. CS-2005-16.

Example:
    >>> import numpy as np
    >>> m = MatchModel()
    >>> for t in b"abcdefgh-abcdef":  # the second "abcdef" has been seen: 'g' is predicted
    ...     w = np.ones(256)
    ...     m.mix(w)
    ...     m.update(t, w)
    >>> w = np.ones(256)
    >>> m.mix(w)
    >>> chr(int(w.argmax())), round(float(w[ord("g")] / w.sum()), 4)  # (1 - 0.3) / 256 + 0.3
    ('g', 0.3027)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ETA", "LAMBDA0", "LAMBDA_MAX", "MAX_BUCKET", "MIN_LEN", "MatchModel"]

MIN_LEN = 6  # tokens of context a match must share to start
MAX_BUCKET = 16  # match lengths 1..16+ each learn their own mixing weight
ETA = 0.02  # step size of the mixing weight's gradient ascent
LAMBDA0 = 0.3  # every bucket's mixing weight at the start of a chunk
LAMBDA_MAX = 0.98  # the mixture always leaves the model >= 2% of the mass


class MatchModel:
    """One chunk's match model (state of one row of a coding group); see the module docstring.

    Call :meth:`mix` on each step's weights before they are coded, then :meth:`update` with the
    token that was coded and the same (mixed) weights.
    """

    __slots__ = ("_pending", "history", "lam", "length", "ptr", "table")

    def __init__(self) -> None:
        self.history: list[int] = []
        self.table: dict[tuple[int, ...], int] = {}
        self.ptr = 0  # position in history of the predicted token (when length > 0)
        self.length = 0  # tokens matched so far (0: no prediction)
        self.lam = [LAMBDA0] * MAX_BUCKET
        self._pending: tuple[int, int, float, float] | None = None  # (c, bucket, p(c), S) of this step

    def predicted(self) -> int | None:
        """The token the match predicts for the next step, or None."""
        return self.history[self.ptr] if self.length else None

    def mix(self, w: np.ndarray) -> None:
        """Mix the prediction into one step's unnormalised weights ``w`` (1-D float64), in place."""
        if not self.length:
            self._pending = None
            return
        c, b = self.history[self.ptr], min(self.length, MAX_BUCKET) - 1
        lam, wc = self.lam[b], float(w[c])
        s = math.fsum(w.tolist())
        w[c] = wc + lam / (1.0 - lam) * s
        self._pending = (c, b, wc / s, s)

    def update(self, y: int, w: np.ndarray) -> None:
        """Learn from the coded token ``y`` (``w``: the weights :meth:`mix` returned) and advance."""
        y = int(y)
        if self._pending is not None:
            c, b, pc, s = self._pending
            lam = self.lam[b]
            hit = y == c
            p_y = (1.0 - lam) * pc + lam if hit else (1.0 - lam) * (float(w[y]) / s)
            grad = ((1.0 if hit else 0.0) - pc) / p_y
            self.lam[b] = min(LAMBDA_MAX, max(0.0, lam + ETA * grad))
            self._pending = None
        h = self.history
        if self.length and h[self.ptr] == y:
            self.ptr += 1
            self.length += 1
        else:
            self.length = 0
        h.append(y)
        j = len(h)
        if j >= MIN_LEN:
            key = tuple(h[j - MIN_LEN : j])
            start = self.table.get(key)
            if not self.length and start is not None:
                n = 0
                while n < MAX_BUCKET and start - 1 - n >= 0 and h[start - 1 - n] == h[j - 1 - n]:
                    n += 1
                self.ptr, self.length = start, n
            self.table[key] = j
