"""One protocol for every causal language model entropykit drives.

``LanguageModel`` is what scoring, generation, detection and compression use:

- ``encode(text_or_bytes) -> Encoding``: token ids plus each token's byte span ``[start, end)`` in
  the UTF-8 bytes of the input (for bytes input, in the bytes themselves);
- ``prefix_ids``: tokens that condition the first token of a text (a BOS token), possibly empty;
- ``forward(input_ids, past=None) -> (logits, past)``: float32 next-token logits (B, T, V) for a batch
  of sequences, with an opaque KV cache (``past``) where the model has one;
- ``max_context``: the longest sequence ``forward`` accepts, cache included;
- ``identity``: name plus a SHA-256 of the weights, so a compressed file can refuse a wrong model.

Two adapters implement it: ``ByteModel`` for the bundled byte-level ByteGPT models, and ``HFModel``
for any Hugging Face causal LM with its tokenizer (extra ``[hf]``).
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from entropykit.models.bytegpt import BOS, ByteGPT

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_MODEL = "bytegpt-general"


@dataclass(frozen=True)
class Encoding:
    """Token ids of a text and the byte span of each token in the text's bytes."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    n_bytes: int
    lossy: bool = False  # True when the bytes were not valid UTF-8 and a subword model replaced them


class LanguageModel(ABC):
    """The adapter protocol (see the module docstring)."""

    name: str
    max_context: int
    vocab_size: int
    prefix_ids: list[int]
    supports_cache: bool
    module: nn.Module

    @abstractmethod
    def encode(self, data: str | bytes) -> Encoding: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> bytes: ...

    @abstractmethod
    def forward(self, input_ids: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]: ...

    def token_text(self, token_id: int) -> str:
        """A printable form of one token (bytes decoded with replacement)."""
        return self.decode([token_id]).decode("utf-8", errors="replace")

    @cached_property
    def identity(self) -> str:
        """``name@sha256`` of the weights (parameters and buffers, in state-dict order)."""
        h = hashlib.sha256()
        for key, tensor in self.module.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return f"{self.name}@{h.hexdigest()[:16]}"

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}({self.name!r}, max_context={self.max_context}, vocab={self.vocab_size})"


class ByteModel(LanguageModel):
    """Adapter for a ByteGPT: tokens are bytes (0..255) and BOS = 256."""

    supports_cache = True

    def __init__(self, model: ByteGPT, name: str = "bytegpt") -> None:
        self.module = model.eval()
        self.name = name
        self.max_context = model.config.block_size
        self.vocab_size = model.config.vocab_size
        self.prefix_ids = [BOS]

    def encode(self, data: str | bytes) -> Encoding:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return Encoding(list(raw), [(i, i + 1) for i in range(len(raw))], len(raw))

    def decode(self, ids: list[int]) -> bytes:
        return bytes(i for i in ids if i < 256)

    def token_text(self, token_id: int) -> str:
        return "<bos>" if token_id == BOS else super().token_text(token_id)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
        logits, present = self.module(input_ids, past)
        return logits.float(), present


class HFModel(LanguageModel):
    """Adapter for a Hugging Face ``AutoModelForCausalLM`` and its tokenizer."""

    supports_cache = True

    def __init__(self, model: nn.Module, tokenizer: Any, name: str) -> None:
        self.module = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        cfg = model.config
        ctx: Any = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.max_context = int(ctx or getattr(tokenizer, "model_max_length", 1024))
        head: Any = cast(Any, model).get_output_embeddings()
        self.vocab_size = int(head.weight.shape[0])
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.prefix_ids = [] if start is None else [int(start)]

    def encode(self, data: str | bytes) -> Encoding:
        lossy = False
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text, lossy = data.decode("utf-8", errors="replace"), True
        else:
            text = data
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        # Character offsets -> byte offsets in the UTF-8 encoding of the (possibly repaired) text.
        char_to_byte = [0]
        for ch in text:
            char_to_byte.append(char_to_byte[-1] + len(ch.encode("utf-8")))
        offsets = [(char_to_byte[a], char_to_byte[b]) for a, b in enc["offset_mapping"]]
        return Encoding(list(enc["input_ids"]), offsets, char_to_byte[-1], lossy)

    def decode(self, ids: list[int]) -> bytes:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text.encode("utf-8")

    def forward(self, input_ids: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
        return hf_forward(self.module, input_ids, past)


@torch.inference_mode()
def hf_forward(module: nn.Module, input_ids: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
    """One forward of a Hugging Face causal LM with its KV cache: (float32 logits, new cache).

    transformers >= 5.2x names the cache ``cache`` (``past_key_values`` is deprecated, with a
    FutureWarning on every call); older versions and remote-code models know only the old name.
    """
    key = "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
    out = module(input_ids=input_ids, use_cache=True, **{key: past})
    return out.logits.float(), out[key] if key in out else None


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "model.safetensors").exists())


def load_model(name_or_path: str | Path | None = None) -> LanguageModel:
    """Load a model behind the ``LanguageModel`` protocol.

    ``None`` -> the bundled default (``bytegpt-general``); a bundled name (``bytegpt-general``,
    ``bytegpt-6l``, ``bytegpt-small``) -> that model; a directory holding a ByteGPT (``config.json`` +
    ``model.safetensors`` with ``n_layer``) -> it; anything else -> a Hugging Face model name or
    directory loaded with ``AutoModelForCausalLM`` and ``AutoTokenizer`` (needs ``transformers``,
    ``pip install 'entropykit[hf]'``). A model that cannot be found raises ``ValueError`` naming it.
    """
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if not name.strip():
        raise ValueError(f"model must be a model name or path, got an empty name {name!r}")
    bundled = BUNDLED_DIR / name
    # Only a bare name can be bundled: BUNDLED_DIR / "/abs/path" would be the path itself.
    if Path(name).name == name and (bundled / "model.safetensors").exists():
        return ByteModel(ByteGPT.load(bundled), name)
    path = Path(name)
    if (path / "model.safetensors").exists() and _is_bytegpt_dir(path):
        return ByteModel(ByteGPT.load(path), path.name)
    if name_or_path is None:
        raise ValueError(
            f"model must be given, got None: the bundled default {DEFAULT_MODEL!r} is missing "
            f"from {BUNDLED_DIR}"
        )
    return _load_hf(name)


def resolve_model(model: LanguageModel | str | Path | None, what: str = "model") -> LanguageModel:
    """``model`` itself when it is a ``LanguageModel``; else ``load_model(model)`` (None = default).

    ``what`` names the argument in the ``TypeError`` raised for anything else.
    """
    if isinstance(model, LanguageModel):
        return model
    if model is None or isinstance(model, (str, Path)):
        return load_model(model)
    got = type(model).__name__
    raise TypeError(f"{what} must be a LanguageModel, a model name or path, or None, got {got}")


def _is_bytegpt_dir(path: Path) -> bool:
    import json

    try:
        return "n_layer" in json.loads((path / "config.json").read_text()) and not (
            path / "tokenizer_config.json"
        ).exists()
    except (OSError, ValueError):
        return False


def _load_hf(name: str) -> HFModel:
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ValueError(
            f"model {name!r}: not a bundled model ({', '.join(bundled_models())}) and transformers is "
            "not installed (pip install 'entropykit[hf]')"
        ) from exc
    from transformers.utils import logging as hf_logging

    bundled = ", ".join(bundled_models())
    local = Path(name).exists()
    looks_local = name.startswith((".", "~", "/")) or "\\" in name or name.count("/") > 1
    if looks_local and not local:  # a path, not a hub name: say so instead of the hub's repo-id rules
        raise ValueError(f"model {name!r}: no such file or directory (bundled models: {bundled})")
    if local and not Path(name).is_dir():
        raise ValueError(f"model {name!r}: not a model directory (bundled models: {bundled})")
    # Offline (host does not resolve): look only in the local cache instead of ~50 s of hub retries.
    offline = local or not _hub_reachable()
    # Quiet unless the user raised transformers' verbosity (TRANSFORMERS_VERBOSITY=info, the CLI's
    # --verbose): no weight-loading bar, no info/warning lines on every call.
    quiet = hf_logging.get_verbosity() > hf_logging.INFO
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(name, local_files_only=offline)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"model {name!r} could not be loaded: not a bundled model ({bundled}), "
            f"not a local model directory, and not reachable on a model hub ({first})"
        ) from exc
    finally:
        if quiet:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()
    if quiet and isinstance(getattr(tokenizer, "deprecation_warnings", None), dict):
        # entropykit windows long texts itself, so the tokenizer's once-per-tokenizer warning that a text
        # is longer than the model's context ("... will result in indexing errors") does not apply.
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return HFModel(model, tokenizer, Path(name).name if local else name)


def _hub_reachable() -> bool:
    """Whether the Hugging Face hub's host name resolves (and ``HF_HUB_OFFLINE`` is not set)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return False
    return True
