"""ByteGPT: the bundled byte-level causal transformer (a model file you can read in one sitting).

Tokens are the 256 byte values plus one beginning-of-text token (``BOS = 256``), so the model
scores *any* byte string and bits/byte is simply total surprisal in bits over the number of bytes.
Architecture (nanoGPT-style, pre-norm): token embeddings, ``n_layer`` blocks of causal multi-head
self-attention and a GELU MLP, final LayerNorm, a head tied to the embedding. Positions are either
learned absolute embeddings added to the input (``positions="learned"``, GPT-2; the default, and
every config saved before the option existed) or rotary embeddings of the queries and keys
(``positions="rope"``, RoFormer: Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
Embedding"; the GPT-NeoX half-split layout, as in Hugging Face's Llama).

The forward pass accepts an optional key/value cache so that generation and sliding-window scoring
do not recompute the prefix. With learned positions a cache is only valid while the sequence fits
in ``block_size``; callers that slide past the context start a fresh window. With rotary positions
attention depends only on the distance between query and key, so a cache can slide: drop old keys,
keep going with ``start`` = the next absolute position (see :func:`rope`; the cache itself still
holds at most ``block_size`` tokens).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from entropykit._validate import check_int
from entropykit.models.kernels import piece_attention

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
    positions: str = "learned"  # "learned" (absolute, added to the input) or "rope" (rotary q/k)
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.positions not in ("learned", "rope"):
            raise ValueError(f"positions must be 'learned' or 'rope', got {self.positions!r}")
        if self.n_embd % self.n_head or (self.positions == "rope" and (self.n_embd // self.n_head) % 2):
            raise ValueError(
                f"n_embd must be a multiple of n_head (an even head size with rope), got {self.n_embd}"
                f" and n_head {self.n_head}"
            )

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE


Rope = tuple[torch.Tensor, torch.Tensor]


def rope(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> Rope:
    """Rotary tables ``(cos, sin)``, each (T, head_dim), for absolute ``positions`` (T,).

    ``theta_i = base^(-2i/d)`` for ``i < d/2``; the angle of position ``m`` is ``m theta_i``, computed
    in float64 (exact for any position a text reaches) and rounded to float32. Source: RoFormer
    (Su et al. 2021), eq. 34; the half-split layout of GPT-NeoX / Hugging Face ``LlamaRotaryEmbedding``.

    >>> cos, sin = rope(torch.arange(3), 4)
    >>> cos.shape, float(cos[0, 0]), round(float(sin[1, 0]), 4)
    (torch.Size([3, 4]), 1.0, 0.8415)
    """
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = positions.to(torch.float64)[:, None] * inv[None]
    ang = torch.cat([ang, ang], dim=1)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, tables: Rope) -> torch.Tensor:
    """Rotate ``x`` (..., T, d) by ``tables`` from :func:`rope`: ``x cos + rotate_half(x) sin`` with
    ``rotate_half([a, b]) = [-b, a]``, in float32, returned in ``x``'s dtype.

    >>> x = torch.randn(1, 2, 5, 8)
    >>> y = apply_rope(x, rope(torch.arange(5), 8))
    >>> bool(torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5))  # a rotation
    True
    """
    cos, sin = tables
    xf = x.float()
    a, b = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat([-b, a], dim=-1) * sin).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ByteGPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, tables: Rope | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for y in (q, k, v))
        if tables is not None:
            q, k = apply_rope(q, tables), apply_rope(k, tables)
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
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, tables: Rope | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, present = self.attn(self.ln1(x), past, tables)
        x = x + a
        return x + self.mlp(self.ln2(x)), present


class ByteGPT(nn.Module):
    def __init__(self, cfg: ByteGPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(VOCAB_SIZE, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.positions == "learned" else None
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
        self, idx: torch.Tensor, past: KVCache | None = None, start: int | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Final-layer hidden states (B, T, n_embd) and the updated cache. ``start`` is the absolute
        position of ``idx[:, 0]`` (default: the cache length); only rotary models take another one
        (a cache that slid keeps its keys' positions, so new tokens continue after them)."""
        cached = 0 if past is None else past[0][0].shape[2]
        t = idx.shape[1]
        if cached + t > self.config.block_size:
            raise ValueError(
                f"sequence of {cached + t} tokens exceeds the context of {self.config.block_size}"
            )
        if start is None:
            start = cached
        elif self.wpe is not None and start != cached:
            raise ValueError(f"start must be the cache length {cached} with learned positions, got {start}")
        pos = torch.arange(start, start + t, device=idx.device)
        tables = None
        if self.wpe is not None:
            x = self.wte(idx) + self.wpe(pos)
        else:
            x = self.wte(idx)
            tables = rope(pos, self.config.n_embd // self.config.n_head, self.config.rope_base)
        present: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if past is None else past[i], tables)
            present.append(kv)
        return self.ln_f(x), present

    def forward(
        self, idx: torch.Tensor, past: KVCache | None = None, start: int | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Next-token logits (B, T, 257) for every position, and the updated cache (``start``: see
        :meth:`hidden_states`)."""
        h, present = self.hidden_states(idx, past, start)
        return F.linear(h, self.wte.weight), present

    def num_parameters(self) -> int:
        """Parameters, not counting the position table (GPT-2's convention)."""
        n = sum(p.numel() for p in self.parameters())
        return n - (self.wpe.weight.numel() if self.wpe is not None else 0)

    # --- persistence: safetensors weights + a JSON config beside them -------------------------
    def save(self, directory: str | Path, *, metadata: dict[str, str] | None = None) -> None:
        """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if missing), each
        atomically (``entropykit._io.atomic_write``: a reader never sees a half-written file)."""
        from safetensors.torch import save

        from entropykit._io import atomic_write

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        atomic_write(d / "model.safetensors", save(state, metadata=metadata or {}))
        cfg = asdict(self.config)
        if self.config.positions == "learned":  # the config files of the learned models stay as they were
            del cfg["positions"], cfg["rope_base"]
        atomic_write(d / "config.json", json.dumps(cfg, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> ByteGPT:
        from safetensors.torch import load_file

        d = Path(directory)
        cfg = ByteGPTConfig(**json.loads((d / "config.json").read_text()))
        model = cls(cfg)
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        return model.eval()


QUERY_BLOCK = 256  # SlidingCache: queries per attention call (keys past a block's last query skipped)


class SlidingCache:
    """Feed a rotary ByteGPT a text of any length in pieces of at most ``piece`` tokens, each token
    computed once, through preallocated key/value buffers (a sliding KV cache).

    The inputs are fed in order from absolute position 0 (``feed`` returns the logits of each piece).
    While the window has room, the cache holds every earlier input; once a piece would overflow the
    attention window ``W = window`` (default the context, ``block_size``), the cache is cut to
    ``keep = W - piece`` entries first: with ``sink``
    (StreamingLLM's attention sink, Xiao et al. 2024) the first input's key and value (the BOS of a
    scored text, whose states depend on nothing else), its key re-rotated to sit just before the
    oldest kept input, plus the newest ``keep - 1`` inputs; without it the newest ``keep``. A query
    of a piece attends to every kept entry and causally to its own piece: query ``i`` of a piece after
    a cut attends to ``keep + i + 1`` entries (at most ``W``), laid out densely. With the sink in the
    slot of a window's BOS, that is the strided loop's window (BOS + ``W - 1`` tokens, the last
    ``piece`` scored) except that the kept inputs' states come from their own, earlier history
    instead of being recomputed from the window start. Rotary positions make this
    exact: attention scores depend only on the distance between query and key, so a kept key (stored
    rotated to its absolute position) is valid for every later query.

    Float32 inference with a head size of 32 (``fused``, the default, where the C compiler builds it):
    each layer's rotation of q and k, the cache stores and the piece's causal attention are one call
    of the compiled kernel ``kernels.piece_attention.attend_rope`` (the rotation bit for bit
    ``apply_rope``'s, the attention equal to SDPA's within float32 rounding, 1.7-1.9x as fast per
    causal score as the strided loop's SDPA and about 2x this class's SDPA path:
    ``benchmarks/piece_attention.py``). Otherwise (bfloat16, autograd, other head sizes,
    ``fused=False``) the arithmetic is that of :meth:`ByteGPT.forward` with a cache: the same
    modules, in the same order, attention by ``F.scaled_dot_product_attention`` (for a piece over a
    cache: in blocks of ``QUERY_BLOCK`` queries, each over the keys up to its last query with an
    additive mask built once per shape, which skips the keys no query of the block sees -- about 4%
    of the time of a 512-token piece here; ``is_causal`` for the first). What it saves against a
    cache of concatenated tensors: no reallocation per layer and piece (two buffers per layer
    alternate at each cut), no per-layer boolean-to-additive mask conversion, and q and k are
    rotated in one pass. The buffers take the dtype of the keys on the first feed (bfloat16 under
    CPU autocast).

    >>> m = ByteGPT(ByteGPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=8, positions="rope")).eval()
    >>> cache, x = SlidingCache(m, piece=4), torch.tensor([BOS, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> with torch.no_grad():
    ...     logits = torch.cat([cache.feed(x[a : a + 4]) for a in range(0, 10, 4)])
    >>> logits.shape, cache.position, cache.length  # after the last piece: sink + 3 kept + 2 new
    (torch.Size([10, 257]), 10, 6)
    """

    def __init__(
        self, model: ByteGPT, piece: int, sink: bool = True, window: int | None = None, fused: bool = True
    ) -> None:
        cfg = model.config
        if model.wpe is not None:
            raise ValueError("model must have rotary positions (positions='rope') to slide a cache, "
                             "got learned absolute positions")
        window = cfg.block_size if window is None else check_int(window, "window", 2, cfg.block_size)
        check_int(piece, "piece", 1, window - 2 if sink else window - 1)
        self.model, self.piece, self.sink, self.window = model, piece, sink, window
        self.keep = window - piece
        self.heads, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.position = 0  # absolute position of the next input
        self.length = 0  # cache entries in use
        self._buffers: list[torch.Tensor] = []  # two (2, n_layer, n_head, C, head_dim): keys and values
        self._sink: torch.Tensor | None = None  # (2, n_layer, n_head, 1, head_dim), unrotated
        self._masks: dict[tuple[int, int, int, torch.dtype], torch.Tensor] = {}
        # float32 attention by the compiled kernel where it builds (head size 32)
        self.fused = (fused and self.head_dim == piece_attention.HEAD_DIM
                      and window <= piece_attention.MAX_KEYS and piece_attention.available())

    def _cut(self) -> None:
        """Keep the sink and the newest ``keep - 1`` entries (or the newest ``keep``), in the other buffer."""
        src, dst = self._buffers
        n, keep = self.length, self.keep
        if self.sink:
            assert self._sink is not None
            lo = self.position - (keep - 1)  # absolute position of the oldest kept input
            tables = rope(torch.tensor([lo - 1]), self.head_dim, self.model.config.rope_base)
            dst[0, :, :, :1] = apply_rope(self._sink[0], tables)
            dst[1, :, :, :1] = self._sink[1]
            dst[:, :, :, 1:keep] = src[:, :, :, n - keep + 1 : n]
        else:
            dst[:, :, :, :keep] = src[:, :, :, n - keep : n]
        self._buffers.reverse()
        self.length = keep

    def _mask(self, n: int, a: int, b: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (b - a, n + b) of the piece's queries a..b-1: query i sees the n cached keys
        and new keys 0..i."""
        key = (n, a, b, dtype)
        if key not in self._masks:
            allowed = torch.ones(b - a, n + b, dtype=torch.bool).tril(diagonal=n + a)
            self._masks[key] = torch.zeros(b - a, n + b, dtype=dtype).masked_fill_(~allowed, float("-inf"))
        return self._masks[key]

    def _use_kernel(self, qkv: torch.Tensor) -> bool:
        """Float32 inference with ``fused``: the compiled kernel (``kernels.piece_attention``)."""
        grad = torch.is_grad_enabled() and qkv.requires_grad
        return self.fused and qkv.dtype == torch.float32 and not grad

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
        """Attention (1, t, h * d) of the piece's queries q (1, h, t, d) over n cached and t new keys,
        causal among the new ones, by ``F.scaled_dot_product_attention`` in query blocks of
        ``QUERY_BLOCK``: block a..b-1 reads keys 0..n+b-1 only, so the keys no query of the block
        sees are skipped (about 1/8 of the products at t = n = 512)."""
        t = q.shape[2]
        if n == 0:
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        else:
            out = q.new_empty(q.shape)
            for a in range(0, t, QUERY_BLOCK):
                b = min(t, a + QUERY_BLOCK)
                mask = self._mask(n, a, b, q.dtype)
                out[:, :, a:b] = F.scaled_dot_product_attention(
                    q[:, :, a:b], keys[:, :, : n + b], values[:, :, : n + b], attn_mask=mask)
        return out.transpose(1, 2).reshape(1, t, -1)

    def feed(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (t, 257) of the next ``t <= piece`` inputs ``idx`` (t,) (int64), in the model's dtype."""
        t = idx.shape[0]
        if not 1 <= t <= self.piece:
            raise ValueError(f"idx must hold 1..{self.piece} tokens (the piece), got {t}")
        gpt, h, d = self.model, self.heads, self.head_dim
        if self.length + t > self.window:
            self._cut()
        n = self.length
        x = gpt.wte(idx)[None]
        tables = rope(torch.arange(self.position, self.position + t), d, gpt.config.rope_base)
        blocks: list[Block] = list(gpt.blocks)  # type: ignore[arg-type]
        for i, block in enumerate(blocks):
            attn = block.attn
            qkv = attn.qkv(block.ln1(x)).view(1, t, 3, h, d)
            if not self._buffers:  # first feed: the buffers take the dtype the keys come in
                shape = (2, len(blocks), h, self.window, d)
                self._buffers = [torch.empty(shape, dtype=qkv.dtype) for _ in range(2)]
            kv = self._buffers[0]
            keys, values = kv[0, i, :, : n + t], kv[1, i, :, : n + t]
            if self._use_kernel(qkv):  # rotation, cache stores and attention in one call
                y = piece_attention.attend_rope(qkv[0], tables, keys, values, n).view(1, t, h * d)
            else:
                qk = apply_rope(qkv[:, :, :2].permute(2, 0, 3, 1, 4), tables)  # (2, 1, h, t, d): q and k
                keys[:, n:] = qk[1, 0]
                values[:, n:] = qkv[0, :, 2].transpose(0, 1)
                y = self._attend(qk[0], keys[None], values[None], n)
            x = x + attn.proj(y)
            x = x + block.mlp(block.ln2(x))
        if self.position == 0 and self.sink:  # the first input at position 0: rotation is the identity
            self._sink = self._buffers[0][:, :, :, :1].clone()
        self.position += t
        self.length = n + t
        return F.linear(gpt.ln_f(x[0]), gpt.wte.weight)


def slide_logits(
    model: ByteGPT, tokens: torch.Tensor, piece: int, sink: bool = True, window: int | None = None
) -> Iterator[tuple[torch.Tensor, int, int]]:
    """The next-token logits of a text's ``tokens`` (n,) through one :class:`SlidingCache`, piece by
    piece: the inputs are BOS then ``tokens[:-1]`` (BOS at absolute position 0, as in training), and
    each yield ``(logits, a, b)`` holds the (b - a, 257) logits that predict ``tokens[a:b]``. Every
    input is computed once; the context each sees is :class:`SlidingCache`'s (``window``, ``sink``).
    The one sliding loop of scoring (``lm.score(slide=True)``) and detection
    (``detect.token_statistics(slide=True)``).

    >>> m = ByteGPT(ByteGPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=8, positions="rope")).eval()
    >>> with torch.no_grad():
    ...     [(z.shape[0], a, b) for z, a, b in slide_logits(m, torch.tensor([1, 2, 3, 4, 5]), 2)]
    [(2, 0, 2), (2, 2, 4), (1, 4, 5)]
    """
    inputs = torch.cat([torch.tensor([BOS]), tokens[:-1].long()])
    cache = SlidingCache(model, piece, sink, window)
    for a in range(0, len(inputs), piece):
        b = min(a + piece, len(inputs))
        yield cache.feed(inputs[a:b]), a, b
