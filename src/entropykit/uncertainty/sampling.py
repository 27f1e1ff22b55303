"""Uncertainty from several sampled answers: predictive and semantic entropy, lexical and graph measures.

:class:`Samples` holds M sampled answers (text) with their sequence log-probabilities
log p(s_m | x) (nats) and lengths (tokens). Get them from any sampler: :func:`collect` calls a
function you pass (one sample per call), :meth:`Samples.from_generation` reads an output of
``entropykit.decoding.generate`` (any processor chain; the sequence log-probability is the sum of
its per-step surprisal under the model's raw distribution) -- this part does not import
``decoding``, so ``generate`` runs in the caller (the CLI, the benchmark).

Meaning: an *equivalence* decides whether two answers mean the same (``"exact"``: equal after
:func:`normalize_answer`; a function ``(a, b) -> bool``; or an :class:`NLI` model, bidirectional
entailment) and gives the semantic clusters; a *similarity* in [0, 1] (``"rouge_l"``,
``"jaccard"``, ``"exact"``, a function ``(a, b) -> float``, or an :class:`NLI` model's entailment
probability) gives the graph of the spectral measures.

===========================  ==========================================================  ==============
estimator                    formula (higher = less certain)                             source
===========================  ==========================================================  ==============
predictive_entropy           -(1/M) sum_m log p(s_m)  (``length_normalised``: / len(s_m))  Kuhn 2023
semantic_entropy             -sum_c p(c) log p(c),  p(c) = sum_{m in c} p(s_m) / sum p(s)  Kuhn 2023
discrete_semantic_entropy    -sum_c f(c) log f(c),  f(c) = |c| / M                         Farquhar 2024
num_semantic_sets            number of clusters                                          Lin 2023
lexical_similarity           1 - mean_{i<j} ROUGE-L(s_i, s_j)                            Fomicheva 2020
eigval_laplacian             sum_k max(0, 1 - lambda_k(L)),  L = I - D^-1/2 W D^-1/2       Lin 2023
degree                       1 - sum_ij W_ij / M^2   (= trace(M I - D) / M^2)             Lin 2023
eccentricity                 || centred spectral embeddings ||_F                         Lin 2023
snne                         -(1/M) sum_i log sum_j exp(W_ij / tau)                      Nguyen 2025
===========================  ==========================================================  ==============
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from entropykit._validate import check_choice, check_int, check_positive, check_real, check_tensor

__all__ = [
    "EQUIVALENCES",
    "NLI",
    "SIMILARITIES",
    "Samples",
    "cluster",
    "collect",
    "degree",
    "discrete_semantic_entropy",
    "eccentricity",
    "eigval_laplacian",
    "jaccard",
    "lexical_similarity",
    "normalize_answer",
    "num_semantic_sets",
    "predictive_entropy",
    "rouge_l",
    "semantic_entropy",
    "similarity_matrix",
    "snne",
]

EQUIVALENCES = ("exact",)
SIMILARITIES = ("rouge_l", "jaccard", "exact")
LN2 = math.log(2.0)


# --- samples ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Samples:
    """M sampled answers: ``texts``, ``log_probs`` (M,) = log p(s_m | x) in nats, ``lengths`` (M,)
    in tokens (>= 1)."""

    texts: list[str]
    log_probs: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if isinstance(self.texts, str) or not isinstance(self.texts, Sequence):
            raise TypeError(f"texts must be a list of strings, got {type(self.texts).__name__}")
        if len(self.texts) == 0:
            raise ValueError("texts must hold at least one sampled answer, got an empty list")
        bad = [i for i, t in enumerate(self.texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(
                f"texts must hold strings, got {type(self.texts[bad[0]]).__name__} at index {bad[0]}"
            )
        m = len(self.texts)
        check_tensor(self.log_probs, "log_probs", floating=True)
        check_tensor(self.lengths, "lengths")
        if self.log_probs.shape != (m,) or self.lengths.shape != (m,):
            raise ValueError(
                f"log_probs and lengths must have shape ({m},) (one per text), got "
                f"{tuple(self.log_probs.shape)} and {tuple(self.lengths.shape)}"
            )
        if bool(torch.isnan(self.log_probs).any()) or bool((self.log_probs > 1e-6).any()):
            raise ValueError(
                f"log_probs must be log-probabilities (<= 0, not NaN), got max {float(self.log_probs.max())}"
            )
        if bool((self.lengths < 1).any()):
            raise ValueError(f"lengths must be >= 1 token, got min {float(self.lengths.min())}")

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_generation(
        cls,
        output: Any,
        decode: Callable[[list[int]], str],
        *,
        rows: Sequence[int] | None = None,
        strip: Sequence[int] = (),
    ) -> Samples:
        """From a ``GenerateOutput`` of ``entropykit.decoding.generate`` (read by its fields
        ``new_tokens`` and ``stats.surprisal_bits``; ``return_stats=True``): one sample per row
        (``rows``: a subset). ``decode`` maps token ids to text; tokens in ``strip`` (e.g. the stop
        token) are dropped from the text but their probability counts (the answer ended there).

        >>> from types import SimpleNamespace
        >>> out = SimpleNamespace(new_tokens=[[72, 10]],
        ...                       stats=SimpleNamespace(surprisal_bits=torch.tensor([[1.0, 1.0]])))
        >>> s = Samples.from_generation(out, lambda ids: bytes(ids).decode(), strip=[10])
        >>> s.texts, round(float(s.log_probs[0]), 4), s.lengths.tolist()
        (['H'], -1.3863, [2])
        """
        stats = getattr(output, "stats", None)
        new = getattr(output, "new_tokens", None)
        if stats is None or new is None or not hasattr(stats, "surprisal_bits"):
            raise TypeError(
                "output must be a generate() output with new_tokens and stats "
                "(generate(..., return_stats=True))"
            )
        if not callable(decode):
            raise TypeError(f"decode must be a callable token ids -> str, got {type(decode).__name__}")
        idx = list(range(len(new))) if rows is None else list(rows)
        sb = stats.surprisal_bits
        texts, lps, lens = [], [], []
        for b in idx:
            toks = list(new[b])
            if not toks:
                raise ValueError(f"output row {b} generated no token (max_new_tokens=0?)")
            s = sb[b, : len(toks)].double()
            texts.append(decode([t for t in toks if t not in set(strip)]))
            lps.append(-float(s.sum()) * LN2)
            lens.append(len(toks))
        return cls(texts, torch.tensor(lps, dtype=torch.float64), torch.tensor(lens))


def collect(sample_fn: Callable[[int], tuple[str, Any]], n: int) -> Samples:
    """``n`` samples from ``sample_fn(i) -> (text, token_log_probs)`` (nats, one per generated
    token): any sampler you have -- an API, a Hugging Face ``model.generate`` with
    ``output_scores``, or ``entropykit.decoding.generate``.

    >>> s = collect(lambda i: (["yes", "no"][i % 2], [-0.1, -0.2]), 4)
    >>> s.texts, round(float(s.log_probs[0]), 4)
    (['yes', 'no', 'yes', 'no'], -0.3)
    """
    if not callable(sample_fn):
        raise TypeError(
            f"sample_fn must be a callable i -> (text, token_log_probs), got {type(sample_fn).__name__}"
        )
    check_int(n, "n", 1)
    texts, lps, lens = [], [], []
    for i in range(n):
        out = sample_fn(i)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"sample_fn must return (text, token_log_probs), got {type(out).__name__}")
        text, tok = out
        t = torch.as_tensor(tok, dtype=torch.float64).reshape(-1)
        if t.numel() == 0:
            raise ValueError(f"sample_fn({i}) returned no token log-probabilities")
        texts.append(text)
        lps.append(float(t.sum()))
        lens.append(t.numel())
    return Samples(texts, torch.tensor(lps, dtype=torch.float64), torch.tensor(lens))


def _as_samples(samples: Any) -> Samples:
    if not isinstance(samples, Samples):
        raise TypeError(f"samples must be an uncertainty.Samples, got {type(samples).__name__}")
    return samples


def _texts(texts: Any) -> list[str]:
    if isinstance(texts, Samples):
        return list(texts.texts)
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings or Samples, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts must hold at least one sampled answer, got an empty list")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts must hold strings, got {type(t).__name__} at index {i}")
    return list(texts)


# --- predictive entropy -------------------------------------------------------------------------------
def predictive_entropy(samples: Samples, *, length_normalised: bool = False) -> float:
    """Monte Carlo predictive entropy -(1/M) sum_m log p(s_m | x), nats; ``length_normalised``:
    -(1/M) sum_m log p(s_m | x) / len(s_m) (Malinin & Gales 2021; Kuhn et al. 2023).

    >>> s = Samples(["a", "b"], torch.tensor([-1.0, -3.0]), torch.tensor([1, 2]))
    >>> predictive_entropy(s), predictive_entropy(s, length_normalised=True)
    (2.0, 1.25)
    """
    s = _as_samples(samples)
    lp = s.log_probs.double()
    if length_normalised:
        lp = lp / s.lengths.double()
    return float(-lp.mean())


# --- meaning --------------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces: the SQuAD answer
    normalisation (Rajpurkar et al. 2016) used for exact-match equivalence.

    >>> normalize_answer("  The Eiffel-Tower! ")
    'eiffeltower'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    t = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(t.split())


class NLI:
    """A Hugging Face NLI model (``AutoModelForSequenceClassification``) by name, for semantic
    equivalence (bidirectional entailment, Kuhn et al. 2023) and entailment similarity (Lin et al.
    2023). Needs ``transformers`` and the model locally or a reachable hub; the label order is read
    from the model's ``config.id2label`` (the ``entailment`` / ``contradiction`` entries).

    ``equivalent(a, b)``: a entails b and b entails a (argmax = entailment both ways;
    ``strict=False``: neither direction is a contradiction). ``similarity(a, b)``: the mean of the
    two directions' entailment probabilities.
    """

    def __init__(self, name: str = "microsoft/deberta-large-mnli", *, strict: bool = True) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be an NLI model name or path, got {name!r}")
        try:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ValueError("NLI needs transformers: pip install 'entropykit[hf]'") from exc
        from pathlib import Path

        from entropykit.models.adapters import _hub_reachable

        offline = Path(name).exists() or not _hub_reachable()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                name, local_files_only=offline
            ).eval()
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"NLI model {name!r} could not be loaded (not local and no hub reachable): "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
        labels = {str(v).lower(): int(k) for k, v in self.model.config.id2label.items()}
        if "entailment" not in labels or "contradiction" not in labels:
            raise ValueError(
                f"NLI model {name!r} must have entailment and contradiction labels, got {labels}"
            )
        self.name, self.strict = name, strict
        self.entail, self.contra = labels["entailment"], labels["contradiction"]
        self._cache: dict[tuple[str, str], Tensor] = {}

    def probs(self, premise: str, hypothesis: str) -> Tensor:
        """The model's label probabilities for (premise, hypothesis) (cached)."""
        key = (premise, hypothesis)
        if key not in self._cache:
            enc = self.tokenizer(premise, hypothesis, return_tensors="pt", truncation=True)
            with torch.no_grad():
                self._cache[key] = torch.softmax(self.model(**enc).logits[0].double(), -1)
        return self._cache[key]

    def _entails(self, a: str, b: str) -> bool:
        p = self.probs(a, b)
        return int(p.argmax()) == self.entail if self.strict else int(p.argmax()) != self.contra

    def equivalent(self, a: str, b: str) -> bool:
        return self._entails(a, b) and self._entails(b, a)

    def similarity(self, a: str, b: str) -> float:
        return 0.5 * float(self.probs(a, b)[self.entail] + self.probs(b, a)[self.entail])

    def __call__(self, a: str, b: str) -> bool:
        return self.equivalent(a, b)


def cluster(texts: Any, equivalence: Any = "exact") -> Tensor:
    """Semantic cluster of every answer, numbered by first appearance, int64 (M,).

    ``"exact"``: equal after :func:`normalize_answer`. A function ``(a, b) -> bool`` or an
    :class:`NLI`: each answer joins the first cluster whose first member is equivalent to it, else
    opens a new one (the greedy bidirectional-entailment algorithm of Kuhn et al. 2023, Alg. 1).

    >>> cluster(["Paris", "paris.", "London", "The Paris"]).tolist()
    [0, 0, 1, 0]
    """
    ts = _texts(texts)
    if isinstance(equivalence, str):
        check_choice(equivalence, EQUIVALENCES, "equivalence")
        seen: dict[str, int] = {}
        return torch.tensor([seen.setdefault(normalize_answer(t), len(seen)) for t in ts])
    if not callable(equivalence):
        raise TypeError(
            f"equivalence must be 'exact', a callable (a, b) -> bool or an NLI, got {equivalence!r}"
        )
    heads: list[str] = []
    labels = []
    for t in ts:
        for c, h in enumerate(heads):
            if bool(equivalence(h, t)):
                labels.append(c)
                break
        else:
            labels.append(len(heads))
            heads.append(t)
    return torch.tensor(labels)


def _labels(samples: Any, equivalence: Any, clusters: Tensor | None, m: int) -> Tensor:
    if clusters is None:
        return cluster(samples, equivalence)
    check_tensor(clusters, "clusters")
    if clusters.shape != (m,) or clusters.is_floating_point() or bool((clusters < 0).any()):
        raise ValueError(f"clusters must hold {m} non-negative integer labels, got {tuple(clusters.shape)}")
    return clusters.long()


def _entropy_of(mass: Tensor) -> float:
    p = mass[mass > 0]
    p = p / p.sum()
    return float(-(p * p.log()).sum())


def semantic_entropy(
    samples: Samples,
    *,
    equivalence: Any = "exact",
    clusters: Tensor | None = None,
    length_normalised: bool = False,
) -> float:
    """Semantic entropy SE = -sum_c p(c) log p(c), nats.

    p(c) = sum_{m in c} p(s_m | x) / sum_m p(s_m | x): the sampled answers' probabilities,
    normalised over the samples and pooled by meaning (``length_normalised``: p(s_m) replaced by
    exp(log p(s_m) / len(s_m)), as Kuhn et al. do for long answers). Clusters from ``equivalence``
    (see :func:`cluster`) unless given. Source: Kuhn et al. 2023 (arXiv:2302.09664); Farquhar et
    al. 2024 (Nature).

    >>> s = Samples(["Paris", "paris", "Rome"], torch.log(torch.tensor([0.3, 0.3, 0.2])), torch.ones(3))
    >>> round(semantic_entropy(s), 4)  # p(c) = (0.75, 0.25)
    0.5623
    """
    s = _as_samples(samples)
    lab = _labels(s, equivalence, clusters, len(s))
    lp = s.log_probs.double() / (s.lengths.double() if length_normalised else 1.0)
    w = torch.softmax(lp, 0)
    mass = torch.zeros(int(lab.max()) + 1, dtype=torch.float64).scatter_add_(0, lab, w)
    return _entropy_of(mass)


def discrete_semantic_entropy(
    texts: Any, *, equivalence: Any = "exact", clusters: Tensor | None = None
) -> float:
    """Discrete semantic entropy -sum_c f(c) log f(c), f(c) = |c| / M: cluster frequencies only, no
    probabilities (for black-box models), nats (Farquhar et al. 2024).

    >>> round(discrete_semantic_entropy(["yes", "Yes.", "no", "no"]), 4)  # log 2
    0.6931
    """
    ts = _texts(texts)
    lab = _labels(ts, equivalence, clusters, len(ts))
    return _entropy_of(torch.bincount(lab).double())


def num_semantic_sets(texts: Any, *, equivalence: Any = "exact", clusters: Tensor | None = None) -> float:
    """The number of semantic clusters among the M answers (Lin et al. 2023, NumSemSets).

    >>> num_semantic_sets(["yes", "Yes.", "no"])
    2.0
    """
    ts = _texts(texts)
    return float(int(_labels(ts, equivalence, clusters, len(ts)).max()) + 1)


# --- similarity and graphs --------------------------------------------------------------------------------
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _words(text: str) -> list[str]:
    """rouge-score's default tokens: lower case, runs of characters other than a-z0-9 split."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str, b: str, *, unit: str = "word") -> float:
    """ROUGE-L F1 = 2 LCS / (|a| + |b|) over words (lower case, split at every character other than
    a-z0-9: the tokens of Google's ``rouge-score`` without stemming, so the value equals its
    ``rougeL`` F-measure); ``unit="char"``: over the characters of those words joined by spaces. 1 for
    two empty answers (Lin 2004).

    >>> rouge_l("The cat sat on the mat.", "the cat lay on a mat")  # LCS 'the cat on mat': 2 * 4 / 12
    0.6666666666666666
    """
    check_choice(unit, ("word", "char"), "unit")
    x: Sequence[str] = _words(a) if unit == "word" else " ".join(_words(a))
    y: Sequence[str] = _words(b) if unit == "word" else " ".join(_words(b))
    if not x and not y:
        return 1.0
    return 2.0 * _lcs(x, y) / (len(x) + len(y))


def jaccard(a: str, b: str) -> float:
    """|A & B| / |A | B| of the word sets (words as in :func:`rouge_l`); 1 for two empty answers
    (Lin et al. 2023).

    >>> jaccard("red apple", "green apple")
    0.3333333333333333
    """
    x, y = set(_words(a)), set(_words(b))
    return 1.0 if not (x | y) else len(x & y) / len(x | y)


def similarity_matrix(texts: Any, similarity: Any = "rouge_l") -> Tensor:
    """The symmetric (M, M) float64 similarity matrix W, W_ii = 1, W_ij = (s(a_i, a_j) + s(a_j, a_i)) / 2.

    ``similarity``: ``"rouge_l"`` (words), ``"jaccard"``, ``"exact"`` (1 if equal after
    :func:`normalize_answer`), a function ``(a, b) -> float`` in [0, 1], or an :class:`NLI`
    (entailment probability).

    >>> similarity_matrix(["red apple", "green apple"], "jaccard").tolist()
    [[1.0, 0.3333333333333333], [0.3333333333333333, 1.0]]
    """
    ts = _texts(texts)
    if isinstance(similarity, str):
        check_choice(similarity, SIMILARITIES, "similarity")
        fn: Callable[[str, str], float] = {
            "rouge_l": rouge_l,
            "jaccard": jaccard,
            "exact": lambda a, b: float(normalize_answer(a) == normalize_answer(b)),
        }[similarity]
    elif isinstance(similarity, NLI):
        fn = similarity.similarity
    elif callable(similarity):
        fn = similarity
    else:
        raise TypeError(f"similarity must be one of {SIMILARITIES}, a callable or an NLI, got {similarity!r}")
    m = len(ts)
    w = torch.eye(m, dtype=torch.float64)
    for i in range(m):
        for j in range(i + 1, m):
            v = 0.5 * (float(fn(ts[i], ts[j])) + float(fn(ts[j], ts[i])))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"similarity must return values in [0, 1], got {v} for answers {i} and {j}")
            w[i, j] = w[j, i] = v
    return w


def _matrix(w: Any) -> Tensor:
    check_tensor(w, "similarity", floating=True)
    if w.dim() != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
        raise ValueError(f"similarity must be a square (M, M) matrix with M >= 1, got {tuple(w.shape)}")
    x = w.detach().double()
    if not bool(torch.isfinite(x).all()) or bool(((x < 0) | (x > 1)).any()):
        raise ValueError("similarity must hold values in [0, 1]")
    return 0.5 * (x + x.T)


def _laplacian(w: Tensor) -> Tensor:
    d = w.sum(1)
    inv = d.rsqrt()
    return torch.eye(w.shape[0], dtype=torch.float64) - inv[:, None] * w * inv[None, :]


def lexical_similarity(texts: Any, *, unit: str = "word") -> float:
    """1 - mean_{i<j} ROUGE-L(a_i, a_j): how much the M answers differ in wording (0 with one
    answer). lm-polygraph's ``LexicalSimilarity`` returns -mean (same ranking). Source: Fomicheva
    et al. 2020 (arXiv:2005.10608).

    >>> lexical_similarity(["the cat sat", "the cat sat", "a dog ran"])  # ROUGE-L 1, 0, 0
    0.6666666666666667
    """
    ts = _texts(texts)
    m = len(ts)
    if m == 1:
        return 0.0
    sims = [rouge_l(ts[i], ts[j], unit=unit) for i in range(m) for j in range(i + 1, m)]
    return 1.0 - sum(sims) / len(sims)


def eigval_laplacian(similarity: Tensor) -> float:
    """U_EigV = sum_k max(0, 1 - lambda_k) over the eigenvalues of the normalised graph Laplacian
    L = I - D^-1/2 W D^-1/2 of the (symmetrised) similarity matrix W: a soft count of semantic
    sets (exactly the number of clusters for a 0/1 block-diagonal W). Lin et al. 2023
    (arXiv:2305.19187).

    >>> round(eigval_laplacian(torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])), 6)
    2.0
    """
    w = _matrix(similarity)
    lam = torch.linalg.eigvalsh(_laplacian(w))
    return float((1 - lam).clamp(min=0).sum())


def degree(similarity: Tensor) -> float:
    """U_Deg = trace(M I - D) / M^2 = 1 - sum_ij W_ij / M^2 (D = diag of row sums): the mean
    dissimilarity of the answers (Lin et al. 2023).

    >>> degree(torch.tensor([[1.0, 0.5], [0.5, 1.0]]))
    0.25
    """
    w = _matrix(similarity)
    return float(1 - w.sum() / w.shape[0] ** 2)


def eccentricity(similarity: Tensor, *, threshold: float = 0.9) -> float:
    """U_Ecc = || [v_1 - v_bar, ..., v_M - v_bar] ||_F: the spread of the answers' spectral
    embeddings v_j (row j of the eigenvectors of L whose eigenvalues are < ``threshold``; at least
    one) (Lin et al. 2023; lm-polygraph's threshold 0.9).

    >>> eccentricity(torch.ones(3, 3))  # one meaning: every embedding equal
    0.0
    """
    w = _matrix(similarity)
    t = check_real(threshold, "threshold", 0, 2)
    lam, vec = torch.linalg.eigh(_laplacian(w))
    k = max(1, int((lam < t).sum()))
    v = vec[:, :k]
    return float(torch.linalg.norm(v - v.mean(0, keepdim=True)))


def snne(similarity: Tensor, *, tau: float = 1.0, log_probs: Tensor | None = None) -> float:
    """Semantic nearest-neighbour entropy -(1/M) sum_i log sum_j exp(W_ij / tau), nats-like.

    The pairwise-similarity successor of semantic entropy: no hard clusters, answers close to many
    others lower it. With ``log_probs`` (M,), the weighted form (WSNNE): -sum_i w_i log sum_j
    exp(W_ij / tau) with w = softmax(log_probs). Nguyen et al. 2025, "Beyond Semantic Entropy"
    (arXiv:2506.00245).

    >>> round(snne(torch.eye(2)), 4)  # log(e + 1)
    -1.3133
    """
    w = _matrix(similarity)
    t = check_positive(tau, "tau")
    row = torch.logsumexp(w / t, 1)
    if log_probs is None:
        return float(-row.mean())
    lp = torch.as_tensor(log_probs, dtype=torch.float64)
    if lp.shape != (w.shape[0],) or bool(torch.isnan(lp).any()):
        raise ValueError(f"log_probs must have shape ({w.shape[0]},) without NaN, got {tuple(lp.shape)}")
    return float(-(torch.softmax(lp, 0) * row).sum())
