"""Fused operations on a linear head: statistics of softmax(h W^T + b) without the N x V logits."""

from __future__ import annotations

from entropykit.ops.linear import linear_cross_entropy, linear_distill, linear_token_stats

__all__ = ["linear_cross_entropy", "linear_distill", "linear_token_stats"]
