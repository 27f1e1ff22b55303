"""Fused operations: statistics of softmax(h W^T + b) without the N x V logits (``linear``; the
training objectives MixCE and sparse-logit KD in ``objectives``; the LM head sharded over a
``torch.distributed`` group in ``parallel``), and the entropy of attention without the T x T matrix
(``attention``)."""

from __future__ import annotations

from entropykit.ops.attention import attention_entropy
from entropykit.ops.linear import linear_cross_entropy, linear_distill, linear_token_stats
from entropykit.ops.objectives import linear_mixce, linear_sparse_kd  # MixCE, sparse-logit KD
from entropykit.ops.parallel import parallel_linear_cross_entropy, parallel_linear_token_stats

__all__ = [
    "attention_entropy",
    "linear_cross_entropy",
    "linear_distill",
    "linear_mixce",
    "linear_sparse_kd",
    "linear_token_stats",
    "parallel_linear_cross_entropy",
    "parallel_linear_token_stats",
]
