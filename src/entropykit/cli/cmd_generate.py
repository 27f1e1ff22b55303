"""``entropykit generate``: sample a continuation with entropy-aware decoding and show per-token stats."""

from __future__ import annotations

import argparse
import codecs
import json
import sys
from typing import Any

from entropykit.cli._common import (
    add_force,
    add_model,
    build,
    check_outputs,
    given,
    load_model,
    require,
    warn,
)

EXAMPLES = """examples:
  entropykit generate "The entropy of"                       # the bundled default model, plain sampling
  entropykit generate "def main(" --sampler mirostat --tau 3 --seed 1 --stats
  entropykit generate "Once" --min-p 0.05 --temperature 0.8 -n 300
  entropykit generate "Once" --top-h 0.4 --format json > out.json
  entropykit generate "Once" --sampler entropix --stats --html gen.html
  entropykit generate "Once" --small-model bytegpt-small --switch-threshold 2.5 --stats

Processors run in llama.cpp's order: top-n-sigma, top-k, typical, top-p, min-p, epsilon, eta,
top-h, xtc, then temperature (or dynamic temperature). Units: entropy, surprisal, tau and the switch
threshold in bits; varentropy in bits^2. --stats prints one row per generated token.
With --small-model, --model is the large model and the two share the decoding (EntropySwitch).
Text output streams: each token is printed as soon as it is sampled.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text with entropy-aware decoding (min-p, top-H, Mirostat, entropix, ...)",
        description="Generate a continuation of PROMPT with a language model (the bundled byte-level "
        "ByteGPT by default), using truncation rules, Mirostat or an entropy-driven sampler, and "
        "optionally report entropy, varentropy, surprisal, kept-set size and temperature per token.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", metavar="PROMPT", help="the text to continue (- reads standard input)")
    add_model(p)
    p.add_argument(
        "--max-new-tokens", "-n", type=int, default=200, metavar="N", help="tokens to generate (default 200)"
    )
    p.add_argument(
        "--sampler",
        choices=("multinomial", "greedy", "mirostat", "mirostat1", "entropix"),
        default="multinomial",
        help="how the token is chosen (default: multinomial sampling)",
    )
    p.add_argument("--tau", type=float, default=None,
                   help="Mirostat target surprise in bits (default 5; --sampler mirostat|mirostat1 only)")
    p.add_argument("--eta", type=float, default=None,
                   help="Mirostat learning rate (default 0.1; --sampler mirostat|mirostat1 only)")
    p.add_argument(
        "--temperature", "-t", type=float, default=None, metavar="T", help="temperature (applied last)"
    )
    p.add_argument(
        "--dynatemp-range",
        type=float,
        default=None,
        metavar="D",
        help="dynamic temperature: T in [T-D, T+D] by normalised entropy (llama.cpp dynatemp)",
    )
    p.add_argument(
        "--dynatemp-exponent", type=float, default=None, metavar="X",
        help="dynamic temperature exponent (default 1; with --dynatemp-range)"
    )
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="keep the K most likely tokens")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus: keep probability mass P")
    p.add_argument("--min-p", type=float, default=None, metavar="P", help="keep tokens with p >= P * max p")
    p.add_argument(
        "--typical", type=float, default=None, metavar="MASS", help="locally typical sampling mass"
    )
    p.add_argument("--epsilon", type=float, default=None, metavar="E", help="epsilon cutoff: keep p >= E")
    p.add_argument("--eta-cutoff", type=float, default=None, metavar="E", help="eta cutoff with epsilon E")
    p.add_argument(
        "--top-h", type=float, default=None, metavar="ALPHA", help="top-H entropy bound alpha in (0, 1]"
    )
    p.add_argument(
        "--top-n-sigma", type=float, default=None, metavar="N", help="keep logits >= max - N * std"
    )
    p.add_argument("--xtc-threshold", type=float, default=None, metavar="P", help="XTC probability threshold")
    p.add_argument(
        "--xtc-probability", type=float, default=None, metavar="Q",
        help="XTC chance per token (default 0.5; with --xtc-threshold)"
    )
    p.add_argument(
        "--small-model", default=None, metavar="M", help="entropy-switched decoding with this small model"
    )
    p.add_argument(
        "--switch-threshold",
        type=float,
        default=None,
        metavar="BITS",
        help="rolling small-model entropy above which the large model writes "
        "(default 2.5; with --small-model)",
    )
    p.add_argument(
        "--switch-hysteresis", type=float, default=None, metavar="BITS",
        help="hysteresis band (default 0.5; with --small-model)",
    )
    p.add_argument(
        "--switch-window", type=int, default=None, metavar="W",
        help="rolling-entropy window (default 5; with --small-model)",
    )
    p.add_argument("--stop", default=None, metavar="TEXT", help="stop after this text is generated")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: nondeterministic)")
    p.add_argument("--stats", action="store_true", help="print a per-token statistics table")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--html", metavar="OUT.html", help="score prompt + continuation and write the HTML report")
    add_force(p, "--html file")
    p.set_defaults(func=run)


_RULES = (("top_n_sigma", "TopNSigma"), ("top_k", "TopK"), ("typical", "Typical"), ("top_p", "TopP"),
          ("min_p", "MinP"), ("epsilon", "Epsilon"), ("eta_cutoff", "Eta"), ("top_h", "TopH"))


def _check_options(args: argparse.Namespace) -> None:
    """Options that have no effect in the chosen mode are errors; bad values name their option."""
    require(args.max_new_tokens, "--max-new-tokens", minimum=0)
    rules = [
        (("tau", "eta"), args.sampler in ("mirostat", "mirostat1"), "--sampler mirostat or mirostat1"),
        (("xtc_probability",), args.xtc_threshold is not None, "--xtc-threshold"),
        (("dynatemp_exponent",), args.dynatemp_range is not None, "--dynatemp-range"),
        (("switch_threshold", "switch_hysteresis", "switch_window"), args.small_model is not None,
         "--small-model"),
    ]
    for names, active, needs in rules:
        idle = given(args, *names)
        if idle and not active:
            raise ValueError(f"{', '.join(idle)} only apply with {needs}")
    if args.sampler == "greedy" and args.temperature is not None:
        warn(args, "--temperature has no effect with --sampler greedy (the most likely token is taken)")


def _processors(args: argparse.Namespace, generator: Any) -> list[Any]:
    from entropykit import decoding as d

    # one-parameter truncation rules, applied in this order when given
    procs: list[Any] = []
    for name, cls in _RULES:
        value = getattr(args, name)
        if value is not None:
            option = "--" + name.replace("_", "-")
            procs.append(build(getattr(d, cls), {p: option for p in ("k", "p", "min_p", "mass", "epsilon",
                                                                       "alpha", "n")}, value))
    if args.xtc_threshold is not None:
        q = 0.5 if args.xtc_probability is None else args.xtc_probability
        procs.append(build(d.XTC, {"threshold": "--xtc-threshold", "probability": "--xtc-probability",
                                   "generator": "--seed"}, args.xtc_threshold, q, generator))
    if args.dynatemp_range is not None:
        t = 1.0 if args.temperature is None else args.temperature
        x = 1.0 if args.dynatemp_exponent is None else args.dynatemp_exponent
        names = {"temperature": "--temperature", "delta": "--dynatemp-range",
                 "exponent": "--dynatemp-exponent"}
        procs.append(build(d.DynamicTemperature, names, t, args.dynatemp_range, x))
    elif args.temperature is not None:
        procs.append(build(d.Temperature, {"t": "--temperature"}, args.temperature))
    return procs


def _sampler(args: argparse.Namespace) -> Any:
    from entropykit import decoding as d

    if args.sampler == "greedy":
        return d.Greedy()
    if args.sampler in ("mirostat", "mirostat1"):
        tau = 5.0 if args.tau is None else args.tau
        eta = 0.1 if args.eta is None else args.eta
        return build(d.Mirostat, {"tau": "--tau", "eta": "--eta"},
                     version=1 if args.sampler == "mirostat1" else 2, tau=tau, eta=eta)
    if args.sampler == "entropix":
        return d.EntropixSampler()
    return d.Multinomial()


class _Streaming:
    """Wraps the sampler: every chosen token is decoded and printed at once (text output).

    Decoding goes through an incremental UTF-8 decoder over the bytes of all new tokens, so a
    character split over several byte tokens appears when complete.
    """

    def __init__(self, sampler: Any, model: Any, stop: list[int] | None) -> None:
        self.sampler, self.model, self.stop = sampler, model, set(stop or ())
        self.ids: list[int] = []
        self.shown = 0  # bytes of decode(ids) already printed
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.done = False

    def __call__(self, input_ids: Any, scores: Any, generator: Any = None) -> Any:
        step = self.sampler(input_ids, scores, generator)
        if not self.done:
            tok = int(step.tokens[0])
            self.ids.append(tok)
            raw = self.model.decode(self.ids)  # whole: a subword piece may depend on its neighbours
            if len(raw) > self.shown:
                sys.stdout.write(self.utf8.decode(raw[self.shown :]))
                sys.stdout.flush()
                self.shown = len(raw)
            self.done = tok in self.stop
        return step

    def finish(self) -> None:
        sys.stdout.write(self.utf8.decode(b"", final=True))


def _stop_tokens(model: Any, stop: str | None) -> list[int] | None:
    if stop is None:
        return None
    ids = model.encode(stop).ids
    if len(ids) != 1:
        raise ValueError(f"--stop: {stop!r} is {len(ids)} tokens for this model; give a single-token text")
    return list(ids)


def run(args: argparse.Namespace) -> int:
    import torch

    from entropykit import decoding as d
    from entropykit._io import read_input

    _check_options(args)
    check_outputs(args, ("--html", args.html))
    prompt = read_input("-").decode("utf-8", errors="replace") if args.prompt == "-" else args.prompt
    generator = torch.Generator()
    if args.seed is not None:
        generator.manual_seed(args.seed)
    else:
        generator.seed()
    procs = _processors(args, generator)  # validates the flags before the model loads
    sampler = _sampler(args)
    model = load_model(args.model)
    stop = _stop_tokens(model, args.stop)
    ids = list(model.prefix_ids) + model.encode(prompt).ids
    if not ids:
        raise ValueError("PROMPT: empty prompt and the model has no BOS token to start from")
    input_ids = torch.tensor([ids])
    stream = _Streaming(sampler, model, stop) if args.format == "text" else None
    if stream is not None:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    switch: dict[str, Any] | None = None
    if args.small_model is not None:
        require(args.switch_window, "--switch-window")
        sw = build(
            d.EntropySwitch,
            {"window": "--switch-window", "threshold": "--switch-threshold",
             "hysteresis": "--switch-hysteresis"},
            load_model(args.small_model, "--small-model"),
            model,
            window=5 if args.switch_window is None else args.switch_window,
            threshold=2.5 if args.switch_threshold is None else args.switch_threshold,
            hysteresis=0.5 if args.switch_hysteresis is None else args.switch_hysteresis,
            processors=procs,
            sampler=stream or sampler,
        )
        sout = sw.generate(input_ids, max_new_tokens=args.max_new_tokens, stop=stop, generator=generator)
        new = sout.new_tokens
        switch = sout.summary()
        rows: list[dict[str, Any]] = [
            {"source": "large" if s else "small", "entropy_bits": h, "rolling_entropy_bits": r}
            for s, h, r in zip(sout.source, sout.entropy_bits, sout.rolling_entropy_bits)
        ]
    else:
        out = d.generate(
            model,
            input_ids,
            processors=procs,
            sampler=stream or sampler,
            max_new_tokens=args.max_new_tokens,
            stop=stop,
            generator=generator,
            return_stats=True,
        )
        new = out.new_tokens[0]
        rows = [dict(r) for r in out.stats.row(0)] if out.stats is not None else []
    new_bytes = model.decode(new)
    text = new_bytes.decode("utf-8", errors="replace")
    for row, tok in zip(rows, new):
        row["token"] = model.token_text(tok)
        row["token_id"] = tok
    if args.format == "json":
        doc: dict[str, Any] = {
            "model": model.identity,
            "prompt": prompt,
            "text": text,
            "new_tokens": new,
            "sampler": repr(sampler),
            "processors": [repr(p) for p in procs],
            "seed": args.seed,
        }
        if args.stats or switch is not None:
            doc["tokens"] = rows
        if switch is not None:
            doc["switch"] = switch
        print(json.dumps(doc, indent=2))
    else:
        assert stream is not None
        stream.finish()
        sys.stdout.write("\n")
        if args.stats and rows:
            print(_table(rows))
        if switch is not None:
            print(
                f"large model wrote {switch['large_fraction']:.1%} of {switch['new_tokens']} tokens; "
                f"forward-pass cost saved {switch['pass_cost_saved']:.1%}, "
                f"token-FLOPs saved {switch['flop_saved']:.1%}"
            )
    sys.stdout.flush()  # the text is out before the report is written (a late write error loses nothing)
    if args.html:
        from entropykit.lm import score
        from entropykit.lm.report import write_html

        full = prompt.encode("utf-8") + new_bytes
        write_html(score(full, model, progress=False), args.html, title=f"generate: {prompt[:60]}",
                   vocab_size=model.vocab_size, force=args.force, option="--html")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    keys = [
        k
        for k in (
            "entropy_bits",
            "varentropy_bits2",
            "surprisal_bits",
            "kept",
            "temperature",
            "source",
            "rolling_entropy_bits",
        )
        if k in rows[0]
    ]
    header = ["#", "token", *keys]
    lines = ["  ".join([f"{header[0]:>5}", f"{header[1]:>8}", *(f"{h:>16}" for h in keys)])]
    for i, r in enumerate(rows):
        cells = [f"{i:>5}", f"{r['token']!r:>8}"]
        for k in keys:
            v = r[k]
            cells.append(f"{v:>16.3f}" if isinstance(v, float) else f"{v!s:>16}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
