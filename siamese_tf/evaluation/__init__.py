"""Evaluation: pure numpy / scikit-learn metrics of distances and embeddings (no TensorFlow).

- verification of pair distances: `roc` (ROC curve, AUC, EER, operating thresholds and their
  rules), `reports` (metrics at a threshold, the verification report, calibration summaries),
  `bootstrap` (confidence intervals of AUC and EER), all on the threshold sweep of `sweep`.
- `retrieval`: 1-NN, recall@k, precision@k and MAP@R.
- `oneshot`: N-way k-shot episodes and their accuracy.
- `clustering`: k-means scored by NMI and AMI.
- `episodes`: `oneshot` episodes over a `siamese_tf.data.Source` and the rows they embed. It
  imports `siamese_tf.data` (and so TensorFlow), so it is imported by its module path
  (`from siamese_tf.evaluation.episodes import source_episodes`), not re-exported here.
"""

from siamese_tf.evaluation.bootstrap import BOOTSTRAP_STATISTICS, bootstrap_ci
from siamese_tf.evaluation.clustering import cluster_embeddings, clustering_scores
from siamese_tf.evaluation.oneshot import (
    Episodes,
    episode_accuracies,
    n_way_k_shot_accuracy,
    sample_episodes,
)
from siamese_tf.evaluation.reports import (
    calibrate,
    distance_statistics,
    pair_classification_metrics,
    tar_at_far_key,
    verification_report,
)
from siamese_tf.evaluation.retrieval import (
    map_at_r,
    nearest_neighbour_accuracy,
    precision_at_k,
    recall_at_k,
)
from siamese_tf.evaluation.roc import (
    THRESHOLD_RULES,
    RocCurve,
    ThresholdRule,
    equal_error_rate,
    parse_threshold_rule,
    roc_auc,
    roc_curve,
    select_threshold,
    threshold_at_far,
    threshold_at_max_accuracy,
    threshold_youden,
)

__all__ = [
    "BOOTSTRAP_STATISTICS",
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
