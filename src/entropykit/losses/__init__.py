"""Training objectives on logits (the cross-entropy family, distillation) and the fused linear head.

Functional forms plus ``nn.Module`` wrappers named like torch's losses; all in nats, classes on the
last axis, ``ignore_index`` / ``reduction`` as in PyTorch (``mean`` over non-ignored positions, 0 when
none).
"""

from __future__ import annotations

from entropykit.losses.classification import (
    CrossEntropy,
    FocalLoss,
    GeneralizedCrossEntropy,
    HLGaussLoss,
    LogitClipCrossEntropy,
    OrdinalWassersteinLoss,
    PolyLoss,
    SigmoidFocalLoss,
    SoftDiceLoss,
    Squentropy,
    SymmetricCrossEntropy,
    TverskyLoss,
    ZLoss,
    cross_entropy,
    focal_loss,
    generalized_cross_entropy,
    hl_gauss_loss,
    hl_gauss_mean,
    hl_gauss_target,
    logit_clip,
    logit_clip_cross_entropy,
    ordinal_wasserstein_loss,
    poly1_cross_entropy,
    sigmoid_focal_loss,
    soft_dice_loss,
    squentropy,
    symmetric_cross_entropy,
    tversky_loss,
    z_loss,
)
from entropykit.losses.distillation import DIVERGENCES, DistillationLoss, distill_loss
from entropykit.losses.linear import LinearCrossEntropy

__all__ = [
    "DIVERGENCES",
    "CrossEntropy",
    "DistillationLoss",
    "FocalLoss",
    "GeneralizedCrossEntropy",
    "HLGaussLoss",
    "LinearCrossEntropy",
    "LogitClipCrossEntropy",
    "OrdinalWassersteinLoss",
    "PolyLoss",
    "SigmoidFocalLoss",
    "SoftDiceLoss",
    "Squentropy",
    "SymmetricCrossEntropy",
    "TverskyLoss",
    "ZLoss",
    "cross_entropy",
    "distill_loss",
    "focal_loss",
    "generalized_cross_entropy",
    "hl_gauss_loss",
    "hl_gauss_mean",
    "hl_gauss_target",
    "logit_clip",
    "logit_clip_cross_entropy",
    "ordinal_wasserstein_loss",
    "poly1_cross_entropy",
    "sigmoid_focal_loss",
    "soft_dice_loss",
    "squentropy",
    "symmetric_cross_entropy",
    "tversky_loss",
    "z_loss",
]

# preference optimisation (DPO family, SimPO, ORPO) and the exact alignment policies
from entropykit.losses.alignment import (
    BonVsTilt,
    best_of_n,
    best_of_n_kl,
    best_of_n_kl_bound,
    bon_vs_tilt,
    f_regularised_policy,
    policy_kl,
    tilt_at_kl,
    tilted_policy,
)
from entropykit.losses.preference import (
    F_DIVERGENCES,
    LOSS_TYPES,
    PREFERENCE_LOSSES,
    ORPOLoss,
    PreferenceLoss,
    PreferenceOutput,
    SimPOLoss,
    f_divergence_score,
    ld_sequence_logprobs,
    orpo_loss,
    preference_loss,
    sequence_logprobs,
    sequence_logprobs_from_hidden,
    simpo_loss,
    token_logprobs,
    wpo_weights,
    wpo_weights_from_hidden,
)

__all__ += [
    "F_DIVERGENCES", "LOSS_TYPES", "PREFERENCE_LOSSES", "BonVsTilt", "ORPOLoss", "PreferenceLoss",
    "PreferenceOutput", "SimPOLoss", "best_of_n", "best_of_n_kl", "best_of_n_kl_bound", "bon_vs_tilt",
    "f_divergence_score", "f_regularised_policy", "ld_sequence_logprobs", "orpo_loss", "policy_kl",
    "preference_loss",
    "sequence_logprobs", "sequence_logprobs_from_hidden", "simpo_loss", "tilt_at_kl", "tilted_policy",
    "token_logprobs", "wpo_weights", "wpo_weights_from_hidden",
]
