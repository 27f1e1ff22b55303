"""A tiny, randomly initialised Hugging Face causal LM built offline, for tests of the HF path.

``tiny_hf_model_dir(tmp_path)`` trains a byte-level BPE tokenizer (``tokenizers``) on a few
sentences, wraps it in ``PreTrainedTokenizerFast``, builds a 2-layer GPT-2 with random weights,
saves both with ``save_pretrained`` into ``tmp_path / "tiny-gpt2"`` and returns that directory, so
``entropykit.lm.load_model(path)`` loads it as a local model directory (no hub needed).

The model is built once per process (weights from a fixed seed, without touching the global RNG
state) and copied into each ``tmp_path``, so calling it in many tests is cheap.

Usage::

    from hf_fixtures import tiny_hf_model_dir

    def test_something(tmp_path):
        model = load_model(tiny_hf_model_dir(tmp_path))

(``tests/conftest.py`` puts ``tests`` on ``sys.path``, so a plain
``from hf_fixtures import ...`` works from any test module.)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

N_POSITIONS = 64
SEED = 1234
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Entropy measures the average surprise of a distribution, in bits or nats.",
    "A language model assigns a probability to every next token of a text.",
    "def score(text, model=None):\n    return model(text)\n",
    "Cross-entropy is the expected surprisal under the true distribution.",
    "Héllo wörld, naïve café — ünïcode tèxt with accents and dashes.",
    "Numbers 0123456789 and symbols !@#$%^&*()[]{}<>?/\\|;:'\",.-_=+~`",
]
_CACHE: Path | None = None


def _build(directory: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    import torch

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    # add_prefix_space=False keeps offsets tiling the text; trim_offsets=False keeps the leading
    # space inside each token's span (so byte spans cover every byte of the input).
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.post_processor = tokenizers.processors.ByteLevel(trim_offsets=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=N_POSITIONS,
    )
    eot = fast.convert_tokens_to_ids("<|endoftext|>")
    config = transformers.GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=len(fast),
        n_positions=N_POSITIONS,
        bos_token_id=eot,
        eos_token_id=eot,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(directory)
    fast.save_pretrained(directory)


def tiny_hf_model_dir(tmp_path: Path) -> Path:
    """Save a tiny random GPT-2 (n_layer=2, n_head=2, n_embd=32, n_positions=64) + tokenizer.

    Returns ``tmp_path / "tiny-gpt2"``. Skips the calling test when ``transformers`` or
    ``tokenizers`` is not installed.
    """
    global _CACHE
    if _CACHE is None or not _CACHE.exists():
        cache = Path(tempfile.mkdtemp(prefix="entropykit-tiny-gpt2-")) / "tiny-gpt2"
        _build(cache)
        _CACHE = cache
    target = Path(tmp_path) / "tiny-gpt2"
    if not target.exists():
        shutil.copytree(_CACHE, target)
    return target
