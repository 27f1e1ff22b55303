"""Sequence-level estimators from per-token statistics, against naive log-softmax; the score / generate
adapters (no second forward pass: the numbers are the ones scoring and generation report)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropykit import uncertainty as unc


def _naive(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, np.ndarray]:
    lp = torch.log_softmax(logits.double(), -1)
    tok = lp.gather(-1, tokens[..., None]).squeeze(-1).numpy()
    h = -(lp.exp() * lp).sum(-1).numpy()
    m = mask.numpy()
    out: dict[str, list[float]] = {k: [] for k in ("msp", "ppl", "ms", "mx", "mte", "xte")}
    for b in range(tok.shape[0]):
        t, e = tok[b][m[b]], h[b][m[b]]
        out["msp"].append(-t.sum())
        out["ppl"].append(math.exp(-t.mean()))
        out["ms"].append(-t.mean())
        out["mx"].append(-t.min())
        out["mte"].append(e.mean())
        out["xte"].append(e.max())
    return {k: np.array(v) for k, v in out.items()}


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 12), st.integers(2, 30), st.integers(0, 2**31 - 1))
def test_estimators_against_naive(b: int, t: int, v: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 3
    tokens = torch.randint(0, v, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) < 0.7
    mask[:, 0] = True
    tk = unc.Tokens.from_logits(logits, tokens, mask=mask)
    want = _naive(logits, tokens, mask)
    for key, fn in (
        ("msp", unc.max_sequence_probability),
        ("ppl", unc.perplexity),
        ("ms", unc.mean_surprisal),
        ("mx", unc.max_surprisal),
        ("mte", unc.mean_token_entropy),
        ("xte", unc.max_token_entropy),
    ):
        np.testing.assert_allclose(fn(tk).numpy(), want[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_span_is_the_claim_conditioned_view() -> None:
    logits = torch.randn(1, 6, 10, dtype=torch.float64)
    tokens = torch.randint(0, 10, (1, 6))
    tk = unc.Tokens.from_logits(logits, tokens)
    span = torch.tensor([[False, False, True, True, False, False]])
    sub = unc.Tokens.from_logits(logits[:, 2:4], tokens[:, 2:4])
    for fn in (unc.max_sequence_probability, unc.perplexity, unc.mean_token_entropy, unc.max_token_entropy):
        torch.testing.assert_close(fn(tk, span=span), fn(sub))
    with pytest.raises(ValueError, match="at least one token"):
        unc.mean_token_entropy(tk, span=torch.zeros(1, 6, dtype=torch.bool))


def test_from_bits_reads_score_and_generate_outputs() -> None:
    from entropykit.decoding import generate
    from entropykit.lm import score
    from entropykit.models import load_model

    lm = load_model("bytegpt-small")
    res = score("The function returns a list.", lm)
    tk = unc.Tokens.from_bits(res.surprisal_bits, res.entropy_bits)
    # the same numbers as a direct pass over the logits
    ids = torch.tensor([lm.prefix_ids + lm.encode("The function returns a list.").ids])
    logits, _ = lm.forward(ids[:, :-1])
    direct = unc.Tokens.from_logits(logits, ids[:, 1:])
    assert float(unc.max_sequence_probability(tk)) == pytest.approx(
        float(unc.max_sequence_probability(direct)), rel=1e-4
    )
    assert float(unc.mean_token_entropy(tk)) == pytest.approx(float(unc.mean_token_entropy(direct)), rel=1e-4)
    out = generate(lm, "def ", max_new_tokens=6, stop=[10], generator=torch.Generator().manual_seed(0))
    assert out.stats is not None
    st_ = unc.Tokens.from_bits(out.stats.surprisal_bits[0], out.stats.entropy_bits[0])
    n = len(out.new_tokens[0])
    assert int(st_.mask.sum()) == n
    want = float(out.stats.surprisal_bits[0, :n].double().sum()) * math.log(2)
    assert float(unc.max_sequence_probability(st_)) == pytest.approx(want, rel=1e-9)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="log_probs must be <= 0"):
        unc.Tokens(torch.tensor([0.5]), torch.zeros(1), torch.ones(1, dtype=torch.bool))
    with pytest.raises(ValueError, match="entropy must have the shape"):
        unc.Tokens(torch.zeros(2), torch.zeros(3), torch.ones(2, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        unc.Tokens(torch.zeros(2), torch.zeros(2), torch.ones(2))
    with pytest.raises(TypeError, match=r"tokens must be an uncertainty\.Tokens"):
        unc.perplexity(torch.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target holds index 7"):
        unc.Tokens.from_logits(torch.zeros(2, 5), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="one shape"):
        unc.Tokens.from_bits([1.0, 2.0], [1.0])
