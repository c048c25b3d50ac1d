"""Trains a Siamese / metric-learning network: `python -m launch.train --workdir=DIR [flags]`.

With no dataset flags it trains on scikit-learn's bundled 8×8 digits. The training flags are the
fields of `trainers.config.TrainConfig`; `--flagfile=launch/configs/NAME.flags` loads a recipe.
Defaults your data cannot serve (more classes per batch than it has, held-out splits of one
class) are fitted to it and reported on one `info:` line; a value you set that it cannot serve
stops the run with the flag and value that fix it. Nothing is written to the workdir before
the data is loaded and checked; re-running the same command resumes.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from launch import common
from siamese_tf.errors import InputError
from trainers.config import TrainConfig

flags.DEFINE_string(
    "workdir",
    None,
    "Required. The run's directory: config.json, metrics.jsonl, model.keras, report.json, "
    "plots/, ...; the same command on the same workdir resumes.",
)
flags.DEFINE_string(
    "strategy",
    "auto",
    "`auto` (MirroredStrategy over all GPUs when there are several, else the default), "
    "`default`, `one_device`, `mirrored`, `multi_worker` or `tpu`.",
)
flags.DEFINE_string(
    "cluster", "tf_config", "Where multi_worker finds its cluster: `tf_config` or `slurm`."
)
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
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
    config = common.dataclass_from_flags(TrainConfig)
    common.check_workdir_writable(FLAGS.workdir)
    from siamese_tf.checkpointing import NonFiniteLossError, PreemptionSignal
    from siamese_tf.distribute import get_strategy
    from trainers import metric_learning
    from trainers import workdir as wd

    strategy = get_strategy(FLAGS.strategy, cluster=FLAGS.cluster)
    # Defaults the user did not set may be fitted to small data (trainers/small_data.py); the
    # fitted config is the run's: it is compared on resume and recorded in config.json.
    adaptable = [name for name in TrainConfig.field_names() if not FLAGS[name].present]
    data = metric_learning.prepare_data(
        config, adaptable=adaptable, replicas=strategy.num_replicas_in_sync
    )
    config = data.config
    if data.notes:
        print(
            "info: defaults fitted to the data (set a flag to choose otherwise): "
            + "; ".join(data.notes),
            flush=True,
        )
    # Everything is validated and loaded: only now may the workdir be written.
    wd.check_resume_config(FLAGS.workdir, json.loads(config.to_json()), FLAGS.allow_config_change)
    preemption = PreemptionSignal()
    try:
        report = metric_learning.train_and_evaluate(
            config,
            FLAGS.workdir,
            strategy,
            data=data,
            # A progress bar for a terminal; one plain line per epoch into a file or pipe.
            verbose=1 if sys.stdout.isatty() else 2,
            preemption=preemption,
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
