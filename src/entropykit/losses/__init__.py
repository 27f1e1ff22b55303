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

# more training objectives from the papers (MixCE, EMO, PLD, AnyLoss, EISL, sparse-logit KD + teacher cache)
from entropykit._registry import Method, registry  # noqa: E402
from entropykit.losses.objectives import (  # noqa: E402
    ANYLOSS_METRICS,
    EMO_MODES,
    AnyLoss,
    EISLoss,
    EMOLoss,
    MixCELoss,
    PLDLoss,
    anyloss,
    eisl_loss,
    emo_loss,
    mixce_loss,
    pld_loss,
)
from entropykit.losses.sparse_kd import (  # noqa: E402
    SPARSE_KD_METHODS,
    SparseKDLoss,
    check_sparse_targets,
    sample_teacher,
    sparse_kd_loss,
    topk_teacher,
)
from entropykit.losses.teacher_cache import TeacherCache, build_teacher_cache  # noqa: E402

#: The objectives of issue 24: name -> function, source, main parameters (defaults), summary.
OBJECTIVES = registry(
    Method("mixce", mixce_loss, "Zhang et al., MixCE, ACL 2023 (bloomberg/MixCE-acl2023)", {"mixing": 0.5},
           "forward + approximated reverse cross-entropy; fused: ops.linear_mixce"),
    Method("emo", emo_loss, "Ren et al., EMO, ICLR 2024 (DRSY/EMO)", {"mode": "mle"},
           "earth mover's distance with a 1 - cos embedding cost, combined with MLE"),
    Method("pld", pld_loss, "Bassam et al., PLD, NeurIPS 2025 (arXiv:2506.12542)", {"temperature": 1.0},
           "Plackett-Luce list-wise distillation of the teacher's ranking"),
    Method("sparse_kd", sparse_kd_loss,
           "Anshumann et al., Sparse Logit Sampling, ACL 2025 (arXiv:2503.16870)",
           {"temperature": 1.0}, "KD from K cached (token, weight) pairs; fused: ops.linear_sparse_kd"),
    Method("anyloss", anyloss, "Han et al., AnyLoss, KDD 2024", {"metric": "f_beta", "amplify": 73.0},
           "1 - a confusion-matrix metric made differentiable (binary)"),
    Method("eisl", eisl_loss, "Liu et al., EISL, NAACL 2022 (guangyliu/EISL)", {"ngrams": (1, 2, 3, 4)},
           "edit-invariant n-gram convolution sequence loss"),
)

__all__ += [
    "ANYLOSS_METRICS", "EMO_MODES", "OBJECTIVES", "SPARSE_KD_METHODS", "AnyLoss", "EISLoss", "EMOLoss",
    "MixCELoss", "PLDLoss", "SparseKDLoss", "TeacherCache", "anyloss", "build_teacher_cache",
    "check_sparse_targets", "eisl_loss", "emo_loss", "mixce_loss", "pld_loss", "sample_teacher",
    "sparse_kd_loss", "topk_teacher",
]
del Method, registry
