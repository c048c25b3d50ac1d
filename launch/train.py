"""Trains a Siamese / metric-learning network: `python -m launch.train --workdir=DIR [flags]`.

With no dataset flags it trains on scikit-learn's bundled 8×8 digits. Flags mirror the fields of
`trainers.config.TrainConfig`; `--flagfile=launch/configs/NAME.flags` loads a recipe.
"""

from __future__ import annotations

import json

from absl import flags

from launch import common
from trainers.config import TrainConfig

flags.DEFINE_string("workdir", None, "Run directory: config.json, metrics.jsonl, model.keras, ...")
flags.DEFINE_string("strategy", "auto", "auto | default | one_device | mirrored")
common.define_dataclass_flags(TrainConfig)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = common.dataclass_from_flags(TrainConfig)
    common.check_workdir_writable(FLAGS.workdir)
    # Heavy imports after the cheap checks, so a typo fails in a second, not after TF starts.
    from siamese_tf.distribute import get_strategy
    from trainers import metric_learning

    strategy = get_strategy(FLAGS.strategy)
    data = metric_learning.prepare_data(config)
    report = metric_learning.train_and_evaluate(config, FLAGS.workdir, strategy, data=data)
    test = report["test"]
    summary = {
        "workdir": FLAGS.workdir,
        "test_auc": round(test["auc"], 4),
        "test_eer": round(test["eer"], 4),
        "test_accuracy": round(test["accuracy"], 4),
        "threshold": round(test["threshold"], 4),
        "one_nn_accuracy": report["one_nn_accuracy"],
        "train_seconds": report["train_seconds"],
    }
    print("summary: " + json.dumps(summary))


if __name__ == "__main__":
    common.run(main)
