"""Trains a Siamese / metric-learning network: `python -m launch.train --workdir=DIR [flags]`.

With no dataset flags it trains on scikit-learn's bundled 8×8 digits. Flags mirror the fields of
`trainers.config.TrainConfig`; `--flagfile=launch/configs/NAME.flags` loads a recipe.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from launch import common
from trainers.config import TrainConfig

flags.DEFINE_string("workdir", None, "Run directory: config.json, metrics.jsonl, model.keras, ...")
flags.DEFINE_string(
    "strategy", "auto", "auto | default | one_device | mirrored | multi_worker | tpu"
)
flags.DEFINE_string("cluster", "tf_config", "multi_worker cluster source: tf_config | slurm")
flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a workdir even though its config.json differs from the flags.",
)
common.define_dataclass_flags(TrainConfig)
FLAGS = flags.FLAGS
# EX_TEMPFAIL: the job stopped on a preemption signal after saving; re-run it to resume.
EXIT_PREEMPTED = 75


def main(argv):
    del argv
    config = common.dataclass_from_flags(TrainConfig)
    common.check_workdir_writable(FLAGS.workdir)
    from siamese_tf.checkpointing import NonFiniteLossError, PreemptionSignal
    from siamese_tf.distribute import get_strategy
    from trainers import metric_learning
    from trainers import workdir as wd

    wd.check_resume_config(FLAGS.workdir, json.loads(config.to_json()), FLAGS.allow_config_change)
    strategy = get_strategy(FLAGS.strategy, cluster=FLAGS.cluster)
    data = metric_learning.prepare_data(config)
    preemption = PreemptionSignal()
    try:
        report = metric_learning.train_and_evaluate(
            config, FLAGS.workdir, strategy, data=data, preemption=preemption
        )
    except metric_learning.Preempted as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        preemption.restore()
    test = report["test"]
    summary = {
        "workdir": FLAGS.workdir,
        "test_auc": round(test["auc"], 4),
        "test_eer": round(test["eer"], 4),
        "test_accuracy": round(test["accuracy"], 4),
        "threshold": round(test["threshold"], 4),
        "one_nn_accuracy": report["one_nn_accuracy"],
        "train_seconds": report["train_seconds"],
        "weights_sha256": report["weights_sha256"],
    }
    print("summary: " + json.dumps(summary))


if __name__ == "__main__":
    common.run(main)
