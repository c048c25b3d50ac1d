"""Applies a finished run's model to image files: `python -m launch.predict --workdir=DIR MODE`.

Modes (one per call):

* `--pair A B`: prints `same` or `different`, the distance and the threshold used;
* `--gallery DIR --query PATH [PATH ...]`: for each query, the best-matching class of a folder
  of labelled examples (one sub-folder per class), its distance, or `unknown` when no gallery
  image is within the threshold;
* `--cluster DIR --k N [--out FILE.csv]`: k-means clusters of the images under DIR, written as
  a CSV of file → cluster (default `DIR_OF_RUN/predict/clusters.csv`).

Images are PNG / JPEG / BMP / GIF files of any size: they are converted to the model's channels
and resized to its input size (bilinear, antialiased: the training pipeline's resize).
`--threshold` overrides the calibrated threshold (and is required for an uncalibrated model).
"""

from __future__ import annotations

import collections
import json
import os

from absl import flags

from launch import common
from siamese_tf.errors import InputError

flags.DEFINE_string("workdir", None, "The finished run's directory (config.json, model.keras).")
flags.DEFINE_multi_string("pair", None, "Two image files to compare: --pair A B.")
flags.DEFINE_string("gallery", None, "A folder of labelled examples, one sub-folder per class.")
flags.DEFINE_multi_string("query", None, "Query image files for --gallery: --query A [B ...].")
flags.DEFINE_string("cluster", None, "A folder of images to cluster (searched recursively).")
flags.DEFINE_integer("k", None, "--cluster: the number of clusters.")
flags.DEFINE_string("out", "", "--cluster: the CSV to write (WORKDIR/predict/clusters.csv).")
flags.DEFINE_float("threshold", None, "Distance threshold instead of the model's calibrated one.")
flags.DEFINE_integer(
    "seed", None, "--cluster: seeds k-means by its named sub-seed (default: the run's seed)."
)
flags.DEFINE_integer("batch_size", 0, "Images per forward pass (0: the run's eval_batch_size).")
flags.DEFINE_bool("json", False, "Print one JSON object per result instead of text lines.")
FLAGS = flags.FLAGS


def _mode(extra: list) -> str:
    """The one mode asked for; positional arguments extend --pair / --query."""
    given = {"pair": FLAGS.pair, "gallery": FLAGS.gallery, "cluster": FLAGS.cluster}
    modes = [name for name, value in given.items() if value]
    if len(modes) != 1:
        raise InputError(
            "give exactly one of --pair A B, --gallery DIR --query PATH..., "
            f"--cluster DIR --k N (got {', '.join(modes) or 'none'})"
        )
    mode = modes[0]
    if extra and mode == "cluster":
        raise InputError(f"unexpected arguments: {' '.join(extra)}")
    if FLAGS.query and mode != "gallery":
        raise InputError("--query needs --gallery DIR")
    return mode


def main(argv):
    extra = list(argv[1:])
    if not FLAGS.workdir:
        raise InputError("--workdir is required: the folder of a finished run")
    mode = _mode(extra)
    if mode == "pair":
        paths = list(FLAGS.pair) + extra
        if len(paths) != 2:
            raise InputError(f"--pair takes exactly two image files, got {len(paths)}")
    elif mode == "gallery":
        queries = list(FLAGS.query or []) + extra
        if not queries:
            raise InputError("--gallery needs query images: --query PATH [PATH ...]")
    elif FLAGS.k is None:
        raise InputError("--cluster needs --k N, the number of clusters")
    from trainers import evaluation, prediction

    run = evaluation.load_run(FLAGS.workdir)
    if mode == "pair":
        result = prediction.predict_pair(run, paths[0], paths[1], FLAGS.threshold)
        verdict = "same" if result["same"] else "different"
        if FLAGS.json:
            print(json.dumps({"a": paths[0], "b": paths[1], **result}))
        else:
            print(
                f"{verdict} distance={result['distance']:.6f} threshold={result['threshold']:.6f}"
            )
    elif mode == "gallery":
        results = prediction.match_gallery(
            run, FLAGS.gallery, queries, FLAGS.threshold, FLAGS.batch_size
        )
        for r in results:
            match = f"unknown (nearest {r['nearest']})" if r["match"] is None else r["match"]
            if FLAGS.json:
                print(json.dumps(r))
            else:
                print(
                    f"{r['query']}\t{match}\tdistance={r['distance']:.6f}\t"
                    f"threshold={r['threshold']:.6f}"
                )
    else:
        out = FLAGS.out or os.path.join(FLAGS.workdir, "predict", "clusters.csv")
        rows = prediction.cluster_folder(
            run, FLAGS.cluster, FLAGS.k, out, FLAGS.seed, FLAGS.batch_size
        )
        sizes = dict(sorted(collections.Counter(c for _, c in rows).items()))
        summary = {"csv": out, "images": len(rows), "clusters": FLAGS.k, "cluster_sizes": sizes}
        print("summary: " + json.dumps(summary))


if __name__ == "__main__":
    common.run(main)
