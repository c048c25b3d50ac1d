"""Evaluates a finished run: `python -m launch.evaluate --workdir=DIR [--protocol=...] [flags]`.

Protocols (comma-separated for several; the split is embedded once for all):
verification (the split's fixed pairs at the calibrated threshold, with bootstrap CIs),
oneshot (N-way k-shot episodes), retrieval (recall@k, precision@k, MAP@R), clustering (k-means
NMI / AMI) and omniglot_runs (Lake et al.'s 20 one-shot runs, `--runs_zip=.../all_runs.zip`).
Each writes `DIR/eval/<protocol>.json` (`<protocol>_<split>.json` off the test split);
protocols run independently: one the data cannot serve (too few classes for N-way episodes,
...) is reported in its JSON (`"status": "failed"`, `"error"`) and on one `error:` line, and
the others complete. Exit status: 0 every protocol succeeded; 3 some failed, the others
completed; 2 bad input (a flag, the workdir, or every protocol failed).
`DIR/plots/*.png` get the ROC curve, the distance histograms and a 2-D embedding map;
`--projector` writes TensorBoard projector files to `DIR/logs/projector/`. The data is rebuilt
from `DIR/config.json` exactly as training split it; `--dataset=SPEC --split=all` scores every
example of another dataset instead (e.g. Omniglot's evaluation alphabets, which training never
saw).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import flags

from launch import common
from siamese_tf.errors import InputError

flags.DEFINE_string("workdir", None, "The finished run's directory (config.json, model.keras).")
flags.DEFINE_string(
    "protocol",
    "verification",
    "verification | oneshot | retrieval | clustering | omniglot_runs; comma-separated for several.",
)
flags.DEFINE_enum(
    "split",
    "test",
    ["test", "calibration", "all"],
    "The split to evaluate on: test / calibration of the run's data, or all of --dataset.",
)
flags.DEFINE_integer(
    "num_pairs", 0, "verification: number of pairs; 0 uses the run's own pair set of the split."
)
flags.DEFINE_integer("bootstrap", 1000, "verification: bootstrap resamples for CIs (0: none).")
flags.DEFINE_list(
    "ways",
    ["5", "20"],
    "oneshot: N of the N-way episodes (each >= 2); an N the split cannot fill is skipped.",
)
flags.DEFINE_list("shots", ["1"], "oneshot: k of the k-shot episodes.")
flags.DEFINE_integer("queries", 1, "oneshot: queries per class and episode.")
flags.DEFINE_integer("episodes", 1000, "oneshot: episodes per (N, k).")
flags.DEFINE_list("ks", ["1", "2", "4", "8"], "retrieval: the k of recall@k and precision@k.")
flags.DEFINE_integer("clusters", 0, "clustering: k-means clusters (0: the number of classes).")
flags.DEFINE_string("runs_zip", "", "omniglot_runs: path of Lake et al.'s all_runs.zip.")
flags.DEFINE_bool("plots", True, "Write plots/*.png (needs matplotlib).")
flags.DEFINE_bool("projector", False, "Write TensorBoard projector files to logs/projector/.")
flags.DEFINE_enum(
    "projection",
    "auto",
    ["auto", "tsne", "pca"],
    "Embedding map projection: auto is t-SNE up to 3000 points, PCA beyond.",
)
flags.DEFINE_integer(
    "seed",
    None,
    "Seed of pairs / episodes / bootstrap / k-means / projection (each drawn from its named "
    "sub-seed); default: the run's.",
)
flags.DEFINE_integer("batch_size", 0, "Images per forward pass (0: the run's eval_batch_size).")
flags.DEFINE_string("manual_dir", "", "Overrides the run's manual_dir (the data moved).")
flags.DEFINE_string("data_dir", "", "Overrides the run's TFDS data_dir.")
flags.DEFINE_string(
    "dataset",
    "",
    "Score every example of another dataset (with --split=all), e.g. classes training never "
    "saw: tfds:omniglot_local:evaluation. Resized to the run's image_size.",
)
flags.DEFINE_integer(
    "tta_shift",
    0,
    "Test-time augmentation (oneshot, retrieval, clustering, omniglot_runs): each embedding is "
    "the normalised mean over every translation of its image by up to N pixels per axis "
    "((2N+1)^2 views, edges mirrored); reports get a _ttaN suffix. 0: off. Not with "
    "verification (its threshold was calibrated without it).",
)
FLAGS = flags.FLAGS
# Some protocols failed (each on its `error:` line and in its JSON); the others completed.
EXIT_SOME_FAILED = 3


def _ints(name: str, values) -> tuple:
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise InputError(f"--{name} must be comma-separated integers, got {values}") from None


def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.workdir:
        raise InputError("--workdir is required: the folder of a finished run")
    from trainers import evaluation

    # Every option is the flag of the same name; the integer lists are parsed here.
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(evaluation.EvalOptions)}
    values.update({name: _ints(name, values[name]) for name in ("ways", "shots", "ks")})
    options = evaluation.EvalOptions(**values)
    results = evaluation.evaluate(FLAGS.workdir, FLAGS.protocol, options)
    for protocol, result in results.items():
        path = os.path.join(
            FLAGS.workdir,
            evaluation.EVAL_DIR,
            evaluation.report_filename(protocol, FLAGS.split, FLAGS.tta_shift),
        )
        if result["status"] == "failed":
            print(f"error: {protocol}: {result['error']} ({path})", file=sys.stderr)
            continue
        summary = {"protocol": protocol, **evaluation.headline(protocol, result), "json": path}
        print("summary: " + json.dumps(summary))
    if any(r["status"] == "failed" for r in results.values()):
        sys.exit(EXIT_SOME_FAILED)


if __name__ == "__main__":
    common.run(main)
