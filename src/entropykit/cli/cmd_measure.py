"""``entropykit measure``: information measures of one distribution (and divergences to a second)."""

from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any

EXAMPLES = """values: numbers separated by spaces or commas; write masked entries (-inf logits) inside one
quoted argument, e.g. --logits "2 1 -inf", because a bare -inf would look like an option.

examples:
  entropykit measure --logits 2 1 0                 # entropy, varentropy, ... in nats
  entropykit measure --probs 0.5 0.25 0.25 --bits   # from probabilities, in bits
  entropykit measure --logits 2 1 0 --q-logits 0 0 0 --format json
  entropykit measure --logits "3 1 -inf" --q-probs 0.2 0.3 0.5
"""


def _values(tokens: list[str], flag: str) -> list[float]:
    out: list[float] = []
    for tok in tokens:
        for part in re.split(r"[\s,]+", tok.strip()):
            if not part:
                continue
            try:
                out.append(float(part))
            except ValueError:
                raise ValueError(f"{flag} expects numbers, got {part!r}") from None
    if not out:
        raise ValueError(f"{flag} expects at least one number")
    return out


def _as_logits(logits: list[str] | None, probs: list[str] | None, flag: str) -> Any:
    """float64 logits from --X-logits or log of --X-probs (validated)."""
    import torch

    if probs is None:
        assert logits is not None
        return torch.tensor(_values(logits, f"--{flag}logits"), dtype=torch.float64)
    name = f"--{flag}probs"
    p = torch.tensor(_values(probs, name), dtype=torch.float64)
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {p.tolist()}")
    total = float(p.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got a sum of {total:.9g}")
    return torch.log(p)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "measure",
        help="entropy, varentropy, Renyi/Tsallis entropy and divergences of small distributions",
        description=(
            "Information measures of one distribution p given as logits or probabilities: entropy, "
            "varentropy, normalised entropy, Renyi entropy of order 2 and Tsallis entropy of q = 2; "
            "with a second distribution q also cross-entropy H(p, q), KL(p||q), KL(q||p), "
            "Jensen-Shannon, total variation, Hellinger and chi-square."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--logits", nargs="+", metavar="Z", help="logits of p (any real numbers, -inf = masked)")
    src.add_argument("--probs", nargs="+", metavar="P", help="probabilities of p (>= 0, summing to 1)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--q-logits", nargs="+", metavar="Z", help="logits of a second distribution q")
    ref.add_argument("--q-probs", nargs="+", metavar="P", help="probabilities of a second distribution q")
    p.add_argument("--bits", action="store_true", help="report in bits (log base 2) instead of nats")
    p.add_argument(
        "--format", choices=["table", "json"], default="table", help="output format (default: table)"
    )
    p.set_defaults(func=run)


def compute(p_logits: Any, q_logits: Any | None, *, bits: bool) -> dict[str, Any]:
    """The measures printed by ``entropykit measure``, as a JSON-ready dict."""
    import torch

    from entropykit import measures as m

    base = 2 if bits else None
    unit = "bits" if bits else "nats"
    rows: list[tuple[str, float, str]] = [
        ("entropy", float(m.entropy(p_logits, base=base)), unit),
        ("varentropy", float(m.varentropy(p_logits, base=base)), f"{unit}^2"),
        ("normalized_entropy", float(m.normalized_entropy(p_logits)), "1"),
        ("renyi_entropy_2", float(m.renyi_entropy(p_logits, 2.0, base=base)), unit),
        ("tsallis_entropy_2", float(m.tsallis_entropy(p_logits, 2.0)), "1"),
    ]
    p_probs = torch.softmax(p_logits, -1)
    out: dict[str, Any] = {"unit": unit, "p": p_probs.tolist()}
    if q_logits is not None:
        if q_logits.shape != p_logits.shape:
            raise ValueError(
                f"p and q must have the same number of entries, got {p_logits.numel()} and {q_logits.numel()}"
            )
        q = torch.softmax(q_logits, -1)
        out["q"] = q.tolist()
        rows += [
            # H(p, q) = -sum p log q: q is the model, p the target distribution
            ("cross_entropy_p_q", float(m.cross_entropy(q_logits, p_probs, base=base)), unit),
            ("kl_p_q", float(m.kl_div(p_logits, q_logits, base=base)), unit),
            ("kl_q_p", float(m.kl_div(q_logits, p_logits, base=base)), unit),
            ("js_div", float(m.js_div(p_logits, q_logits, base=base)), unit),
            ("tv_distance", float(m.tv_distance(p_logits, q_logits)), "1"),
            ("hellinger", float(m.hellinger(p_logits, q_logits)), "1"),
            ("chi2_div_p_q", float(m.chi2_div(p_logits, q_logits)), "1"),
        ]
    out["measures"] = {name: value for name, value, _ in rows}
    out["units"] = {name: u for name, _, u in rows}
    return out


def _json_value(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


def run(args: argparse.Namespace) -> int:
    p_logits = _as_logits(args.logits, args.probs, "")
    q_logits = None
    if args.q_logits is not None or args.q_probs is not None:
        q_logits = _as_logits(args.q_logits, args.q_probs, "q-")
    res = compute(p_logits, q_logits, bits=args.bits)
    if args.format == "json":
        doc = {
            "unit": res["unit"],
            "p": res["p"],
            **({"q": res["q"]} if "q" in res else {}),
            "measures": {k: _json_value(v) for k, v in res["measures"].items()},
            "units": res["units"],
        }
        print(json.dumps(doc, indent=2))
        return 0
    print("p = [" + ", ".join(f"{x:.4g}" for x in res["p"]) + "]")
    if "q" in res:
        print("q = [" + ", ".join(f"{x:.4g}" for x in res["q"]) + "]")
    width = max(len(k) for k in res["measures"])
    for name, value in res["measures"].items():
        print(f"{name:<{width}}  {value:>12.6g}  {res['units'][name]}")
    return 0
