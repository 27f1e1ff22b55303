"""Entropy-aware decoding: logits processors, stateful samplers, generation and two-model switching.

- ``processors``: truncation/temperature rules with the Hugging Face ``LogitsProcessor`` protocol
  (``Temperature``, ``TopK``, ``TopP``, ``MinP``, ``Epsilon``, ``Eta``, ``Typical``, ``TopH``,
  ``TopNSigma``, ``XTC``, ``DynamicTemperature``; ``chain`` composes them);
- ``Mirostat`` (v1, v2) and ``EntropixSampler``: samplers with per-row state / entropy branching;
- ``generate``: token-by-token generation over ``entropykit.lm`` models with per-step entropy,
  varentropy, surprisal, kept-set size and temperature;
- ``EntropySwitch``: entropy-adaptive decoding between a small and a large model.
"""

from __future__ import annotations

from entropykit.decoding.adaptive import BRANCHES, EntropixSampler
from entropykit.decoding.generate import (
    GenerateOutput,
    Greedy,
    Multinomial,
    SamplerStep,
    StepStats,
    generate,
    sample_from_logits,
)
from entropykit.decoding.mirostat import Mirostat
from entropykit.decoding.processors import (
    XTC,
    DynamicTemperature,
    Epsilon,
    Eta,
    MinP,
    Processor,
    Temperature,
    TopH,
    TopK,
    TopNSigma,
    TopP,
    Typical,
    chain,
    dynamic_temperature,
    epsilon_cutoff,
    eta_cutoff,
    min_p,
    temperature,
    top_h,
    top_k,
    top_n_sigma,
    top_p,
    typical,
    xtc,
)
from entropykit.decoding.switching import EntropySwitch, SwitchOutput

__all__ = [
    "BRANCHES",
    "XTC",
    "DynamicTemperature",
    "EntropixSampler",
    "EntropySwitch",
    "Epsilon",
    "Eta",
    "GenerateOutput",
    "Greedy",
    "MinP",
    "Mirostat",
    "Multinomial",
    "Processor",
    "SamplerStep",
    "StepStats",
    "SwitchOutput",
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
    "generate",
    "min_p",
    "sample_from_logits",
    "temperature",
    "top_h",
    "top_k",
    "top_n_sigma",
    "top_p",
    "typical",
    "xtc",
]
