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
import os
import signal
import sys

from absl import flags

from launch import common
from siamese_tf.distribute import CLUSTERS, STRATEGIES
from siamese_tf.errors import InputError
from trainers.config import CHOICES, TrainConfig

flags.DEFINE_string(
    "workdir",
    None,
    "Required. The run's directory: config.json, metrics.jsonl, model.keras, report.json, "
    "plots/, ...; the same command on the same workdir resumes.",
)
flags.DEFINE_enum(
    "strategy",
    "auto",
    STRATEGIES,
    "`auto`: MirroredStrategy over all GPUs when there are several, else the default.",
)
flags.DEFINE_enum("cluster", "tf_config", CLUSTERS, "Where multi_worker finds its cluster.")
flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a workdir even though its config.json differs from the flags.",
)
common.define_dataclass_flags(TrainConfig, CHOICES)
FLAGS = flags.FLAGS


def _stop_line(message: str) -> None:
    """One line on stderr, on a line of its own (a terminal's progress bar leaves its line open)."""
    if sys.stdout.isatty():
        sys.stdout.write("\n")
        sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)


def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
    config = common.dataclass_from_flags(TrainConfig)
    common.check_workdir_writable(FLAGS.workdir)
    import tensorflow as tf

    from siamese_tf.checkpointing import NonFiniteLossError, PreemptionSignal
    from siamese_tf.distribute import get_strategy, lost_worker, multi_worker_resolver
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
    resolver = multi_worker_resolver(strategy)

    def on_resume(step, total):
        print(f"resuming from step {step} of {total}", flush=True)

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
            on_resume=on_resume,
        )
    except metric_learning.Preempted as err:
        if preemption.signum == signal.SIGINT:
            _stop_line(
                f"stopped: interrupted at step {err.step}: a backup was saved in "
                f"{FLAGS.workdir}/backup; re-run the same command to resume"
            )
            sys.exit(common.EXIT_INTERRUPTED)
        _stop_line(f"stopped: {err}")
        sys.exit(common.EXIT_PREEMPTED)
    except NonFiniteLossError as err:
        _stop_line(f"error: {err}")
        sys.exit(1)
    except tf.errors.OpError as err:
        lost = lost_worker(err, resolver) if resolver is not None else None
        if lost is None:
            raise
        backup = tf.train.latest_checkpoint(os.path.join(FLAGS.workdir, "backup"))
        since = f"step {backup.rsplit('-', 1)[-1]}" if backup else "the start"
        _stop_line(
            f"error: lost {lost}; this worker stopped without saving; re-run the same command "
            f"to resume from the last backup ({since})"
        )
        # Skip interpreter teardown: TensorFlow's runtime could wait on the lost peer.
        os._exit(common.EXIT_LOST_WORKER)
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
