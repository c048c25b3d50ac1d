"""Writes a dataset as class-sharded TFRecords: `python -m launch.prepare --dataset=SPEC --out=DIR`.

Each shard holds examples of one class, and `DIR/index.json` lists every class's shards and
counts. Train from them with `--dataset=tfrecord:DIR` (loaded into memory), or stream P×K batches
with `siamese_tf.data.class_shard_pk_batches(DIR, ...)` when the data is larger than memory.
Images are checked as they are read; a bad one stops the job with one line on stderr naming the
file (exit status 2) and leaves nothing in DIR.
"""

from __future__ import annotations

import json

from absl import flags, logging

from launch import common
from siamese_tf.errors import InputError

flags.DEFINE_string(
    "dataset", None, "Dataset spec: mnist:DIR, npz:PATH, tfds:NAME[:SPLIT], folder:PATH, digits."
)
flags.DEFINE_string("out", None, "Output folder for the shards and index.json (must be empty).")
flags.DEFINE_integer("shard_size", 256, "Records per shard file (a class's last may hold fewer).")
flags.DEFINE_integer(
    "image_size", 0, "Decode images to image_size x image_size when training (0: keep sizes)."
)
flags.DEFINE_string("manual_dir", "", "Folder of manual files for tfds: local builders.")
flags.DEFINE_string("data_dir", "", "TFDS data folder (TFDS's default when empty).")
flags.DEFINE_bool("overwrite", False, "Replace an output folder written by an earlier prepare.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not FLAGS.dataset:
        raise InputError("--dataset is required, e.g. --dataset=folder:/data/images")
    if not FLAGS.out:
        raise InputError("--out is required, e.g. --out=/data/shards")
    if FLAGS.shard_size < 1:
        raise InputError(f"--shard_size must be >= 1, got {FLAGS.shard_size}")
    if FLAGS.image_size < 0:
        raise InputError(f"--image_size must be >= 0, got {FLAGS.image_size}")
    # Heavy imports after the cheap checks, so a typo fails in a second, not after TF starts.
    from siamese_tf.data.tfrecords import prepare_class_shards

    index = prepare_class_shards(
        FLAGS.dataset,
        FLAGS.out,
        image_size=FLAGS.image_size,
        shard_size=FLAGS.shard_size,
        manual_dir=FLAGS.manual_dir,
        data_dir=FLAGS.data_dir,
        overwrite=FLAGS.overwrite,
    )
    files = sum(len(c["shards"]) for c in index["classes"])
    logging.info("wrote %d shard files to %s", files, FLAGS.out)
    summary = {
        "out": FLAGS.out,
        "examples": index["num_examples"],
        "classes": index["num_classes"],
        "shards": files,
        "encoded": index["encoded"],
        "image_shape": index["image_shape"],
    }
    print("summary: " + json.dumps(summary))


if __name__ == "__main__":
    common.run(main)
