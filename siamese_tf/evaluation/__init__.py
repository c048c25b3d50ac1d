"""Evaluation: pure numpy / scikit-learn metrics of distances and embeddings (no TensorFlow).

- `metrics`: verification of pair distances (ROC, AUC, EER, threshold rules, bootstrap CIs).
- `retrieval`: 1-NN, recall@k, precision@k and MAP@R.
- `oneshot`: N-way k-shot episodes and their accuracy.
- `clustering`: k-means scored by NMI and AMI.
"""

from siamese_tf.evaluation.clustering import cluster_embeddings, clustering_scores
from siamese_tf.evaluation.metrics import (
    THRESHOLD_RULES,
    RocCurve,
    ThresholdRule,
    bootstrap_ci,
    calibrate,
    distance_statistics,
    equal_error_rate,
    pair_classification_metrics,
    parse_threshold_rule,
    roc_auc,
    roc_curve,
    select_threshold,
    tar_at_far_key,
    threshold_at_far,
    threshold_at_max_accuracy,
    threshold_youden,
    verification_report,
)
from siamese_tf.evaluation.oneshot import (
    Episodes,
    episode_accuracies,
    n_way_k_shot_accuracy,
    sample_episodes,
)
from siamese_tf.evaluation.retrieval import (
    map_at_r,
    nearest_neighbour_accuracy,
    precision_at_k,
    recall_at_k,
)

__all__ = [
    "THRESHOLD_RULES",
    "Episodes",
    "RocCurve",
    "ThresholdRule",
    "bootstrap_ci",
    "calibrate",
    "cluster_embeddings",
    "clustering_scores",
    "distance_statistics",
    "episode_accuracies",
    "equal_error_rate",
    "map_at_r",
    "n_way_k_shot_accuracy",
    "nearest_neighbour_accuracy",
    "pair_classification_metrics",
    "parse_threshold_rule",
    "precision_at_k",
    "recall_at_k",
    "roc_auc",
    "roc_curve",
    "sample_episodes",
    "select_threshold",
    "tar_at_far_key",
    "threshold_at_far",
    "threshold_at_max_accuracy",
    "threshold_youden",
    "verification_report",
]
