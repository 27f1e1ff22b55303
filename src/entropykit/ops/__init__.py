"""Fused operations: statistics of softmax(h W^T + b) without the N x V logits (``linear``), and the
entropy of attention without the T x T matrix (``attention``)."""

from __future__ import annotations

from entropykit.ops.attention import attention_entropy
from entropykit.ops.linear import linear_cross_entropy, linear_distill, linear_token_stats

__all__ = ["attention_entropy", "linear_cross_entropy", "linear_distill", "linear_token_stats"]

# fused training objectives (MixCE, sparse-logit KD) built on the chunked kernels above
from entropykit.ops.objectives import linear_mixce, linear_sparse_kd

__all__ += ["linear_mixce", "linear_sparse_kd"]
