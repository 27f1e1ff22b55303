"""ByteGPT: the bundled byte-level causal transformer (a model file you can read in one sitting).

Tokens are the 256 byte values plus one beginning-of-text token (``BOS = 256``), so the model
scores *any* byte string and bits/byte is simply total surprisal in bits over the number of bytes.
Architecture (nanoGPT-style, pre-norm): token + learned position embeddings, ``n_layer`` blocks of
causal multi-head self-attention and a GELU MLP, final LayerNorm, a head tied to the embedding.

The forward pass accepts an optional key/value cache so that generation and sliding-window scoring
do not recompute the prefix. Positions are absolute, so a cache is only valid while the sequence
fits in ``block_size``; callers that slide past the context start a fresh window.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BOS = 256
VOCAB_SIZE = 257

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ByteGPTConfig:
    block_size: int = 512
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 256
    dropout: float = 0.0

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE


class SelfAttention(nn.Module):
    def __init__(self, cfg: ByteGPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for y in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if past is None:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        elif t > 1:
            # Causal mask aligned to the end: query i sees keys up to (prefix length + i).
            s = k.shape[2]
            mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(diagonal=s - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # one new query attends to every cached key
            y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: ByteGPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        )

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, present = self.attn(self.ln1(x), past)
        x = x + a
        return x + self.mlp(self.ln2(x)), present


class ByteGPT(nn.Module):
    def __init__(self, cfg: ByteGPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(VOCAB_SIZE, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def hidden_states(
        self, idx: torch.Tensor, past: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Final-layer hidden states (B, T, n_embd) and the updated cache."""
        start = 0 if past is None else past[0][0].shape[2]
        t = idx.shape[1]
        if start + t > self.config.block_size:
            raise ValueError(
                f"sequence of {start + t} tokens exceeds the context of {self.config.block_size}"
            )
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        present: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if past is None else past[i])
            present.append(kv)
        return self.ln_f(x), present

    def forward(self, idx: torch.Tensor, past: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Next-token logits (B, T, 257) for every position, and the updated cache."""
        h, present = self.hidden_states(idx, past)
        return F.linear(h, self.wte.weight), present

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    # --- persistence: safetensors weights + a JSON config beside them -------------------------
    def save(self, directory: str | Path, *, metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / "model.safetensors"), metadata=metadata or {})
        (d / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> ByteGPT:
        from safetensors.torch import load_file

        d = Path(directory)
        cfg = ByteGPTConfig(**json.loads((d / "config.json").read_text()))
        model = cls(cfg)
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        return model.eval()
