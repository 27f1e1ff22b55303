"""Fused operations: statistics of softmax(h W^T + b) without the N x V logits (``linear``), and the
entropy of attention without the T x T matrix (``attention``)."""

from __future__ import annotations

from entropykit.ops.attention import attention_entropy
from entropykit.ops.linear import linear_cross_entropy, linear_distill, linear_token_stats

__all__ = ["attention_entropy", "linear_cross_entropy", "linear_distill", "linear_token_stats"]

from entropykit.ops.parallel import parallel_linear_cross_entropy, parallel_linear_token_stats

__all__ += ["parallel_linear_cross_entropy", "parallel_linear_token_stats"]
