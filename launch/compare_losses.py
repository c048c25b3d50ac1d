"""Trains one recipe with each loss on the same budget, evaluates, prints one table.

    python -m launch.compare_losses --recipe=omniglot --max_steps=2000 --parallel=2 \\
        --manual_dir=OMNIGLOT_ZIPS --data_dir=TFDS_DIR --out=runs/losses

For each `--losses` entry: `python -m launch.train --flagfile=launch/configs/RECIPE.flags
--loss=LOSS` (every other flag as the recipe has it, plus `--max_steps` and `--seed`) into
`OUT/LOSS`, then, when `--eval_dataset` is set (the Omniglot default: the 20 evaluation
alphabets, never trained on), `python -m launch.evaluate --protocol=oneshot,verification
--split=all` on it. The table has the N-way 1-shot accuracy with its 95% interval, the
verification AUC on the evaluation dataset, the test-split AUC of the training report and the
training time per step (`train_seconds / steps` of `report.json`: it includes the per-epoch
calibration). `--parallel=N` runs N losses at a time, each with one TensorFlow thread
(`TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1`): on a 2-core CPU two one-thread runs beat
one two-thread run on these small convolutions (WORKSPACE.md), so step times from a parallel
comparison are one-thread times. Re-running resumes: finished runs are reported again.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

from absl import flags

from launch import WORKSPACE, common

DEFAULT_LOSSES = ["triplet_semihard", "multi_similarity", "circle", "supcon", "arcface"]
EVAL_DEFAULTS = {"omniglot": "tfds:omniglot_local:evaluation"}

flags.DEFINE_string("out", None, "Folder of the runs (one sub-folder per loss) and summary.json.")
flags.DEFINE_string("recipe", "digits", "A flagfile name in launch/configs/ (digits, omniglot).")
flags.DEFINE_list("losses", DEFAULT_LOSSES, "The --loss values to compare.")
flags.DEFINE_integer("max_steps", 0, "Training steps of every run (0: the recipe's).")
flags.DEFINE_integer("seed", 0, "The --seed of every run.")
flags.DEFINE_integer("parallel", 1, "Runs at a time (each with one TensorFlow thread if > 1).")
flags.DEFINE_string("manual_dir", "", "Passed to launch.train (TFDS manual files).")
flags.DEFINE_string("data_dir", "", "Passed to launch.train (TFDS data).")
flags.DEFINE_string(
    "eval_dataset", None, "Dataset scored by launch.evaluate --split=all ('' for none)."
)
flags.DEFINE_integer("ways", 20, "N of the N-way 1-shot episodes.")
flags.DEFINE_integer("episodes", 1000, "Episodes of the one-shot evaluation.")
flags.DEFINE_list("train_args", [], "Extra launch.train flags for every run.")
FLAGS = flags.FLAGS


def _run(args, env, log_path):
    with open(log_path, "a", encoding="utf-8") as log:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            cwd=WORKSPACE,
            env=env,
            stdout=log,
            stderr=log,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} exited {done.returncode}; see {log_path}")


def _one_loss(loss, out, eval_dataset, single_thread):
    """Trains and evaluates one loss; returns its row (runs on host, in a worker thread)."""
    workdir = os.path.join(out, loss)
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if single_thread:
        env.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    log_path = os.path.join(out, f"{loss}.log")
    flagfile = WORKSPACE / "launch" / "configs" / (FLAGS.recipe + ".flags")
    train = ["launch.train", f"--workdir={workdir}", f"--flagfile={flagfile}", f"--loss={loss}"]
    train.append(f"--seed={FLAGS.seed}")
    optional = ("max_steps", "manual_dir", "data_dir")  # passed on only when set
    train += [f"--{n}={FLAGS[n].value}" for n in optional if FLAGS[n].value] + FLAGS.train_args
    _run(train, env, log_path)
    with open(os.path.join(workdir, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    steps = report["steps"] - report["start_step"]
    row = {
        "loss": loss,
        "steps": report["steps"],
        "test_auc": report["test"]["auc"],
        "one_nn_accuracy": report["one_nn_accuracy"],
        "train_seconds": report["train_seconds"],
        "seconds_per_step": report["train_seconds"] / steps if steps else None,
    }
    if eval_dataset:
        evaluate = ["launch.evaluate", f"--workdir={workdir}", "--protocol=oneshot,verification"]
        evaluate += ["--split=all", f"--dataset={eval_dataset}", f"--ways={FLAGS.ways}"]
        evaluate += ["--shots=1", f"--episodes={FLAGS.episodes}", "--plots=false"]
        _run(evaluate, env, log_path)
        eval_dir = os.path.join(workdir, "eval")
        with open(os.path.join(eval_dir, "oneshot_all.json"), encoding="utf-8") as f:
            episodes = json.load(f)["episodes"][f"{FLAGS.ways}way_1shot"]
        with open(os.path.join(eval_dir, "verification_all.json"), encoding="utf-8") as f:
            verification = json.load(f)
        row.update(
            oneshot_accuracy=episodes["accuracy"],
            oneshot_ci95=episodes["ci95_half_width"],
            eval_auc=verification["report"]["auc"],
        )
    return row


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_table(rows, ways) -> str:
    """Markdown table of the rows."""
    lines = [
        f"| loss | {ways}-way 1-shot (95% CI) | verification AUC (eval) | test AUC | "
        "1-NN | s / step | train s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        oneshot = "-"
        if row.get("oneshot_accuracy") is not None:
            oneshot = f"{100 * row['oneshot_accuracy']:.2f} ±{100 * row['oneshot_ci95']:.2f}"
        lines.append(
            f"| {row['loss']} | {oneshot} | {_fmt(row.get('eval_auc'), '.4f')} | "
            f"{_fmt(row['test_auc'], '.4f')} | {_fmt(row['one_nn_accuracy'], '.4f')} | "
            f"{_fmt(row['seconds_per_step'], '.3f')} | {_fmt(row['train_seconds'], '.0f')} |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.out:
        common.fail("--out is required: the folder of the runs")
    flagfile = WORKSPACE / "launch" / "configs" / (FLAGS.recipe + ".flags")
    if not os.path.exists(flagfile):
        common.fail(f"--recipe={FLAGS.recipe}: no {flagfile}")
    if FLAGS.parallel < 1:
        common.fail(f"--parallel must be >= 1, got {FLAGS.parallel}")
    eval_dataset = FLAGS.eval_dataset
    if eval_dataset is None:
        eval_dataset = EVAL_DEFAULTS.get(FLAGS.recipe, "")
    os.makedirs(FLAGS.out, exist_ok=True)
    single_thread = FLAGS.parallel > 1
    with concurrent.futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
        futures = [
            pool.submit(_one_loss, loss, FLAGS.out, eval_dataset, single_thread)
            for loss in FLAGS.losses
        ]
        rows, failures = [], []
        for loss, future in zip(FLAGS.losses, futures):
            try:
                rows.append(future.result())
            except RuntimeError as err:
                failures.append(f"{loss}: {err}")
    summary = {
        "recipe": FLAGS.recipe,
        "max_steps": FLAGS.max_steps,
        "seed": FLAGS.seed,
        "parallel": FLAGS.parallel,
        "eval_dataset": eval_dataset,
        "rows": rows,
        "failures": failures,
    }
    with open(os.path.join(FLAGS.out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(format_table(rows, FLAGS.ways))
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    common.run(main)
