"""Writes a dataset as a prepared store: `python -m launch.prepare --dataset=SPEC --out=DIR`.

The store (`siamese_tf.data.store`) holds every image as the source stores it, in random-access
record shards, with a small index (per record: label, place, checksum; per class: its record
ids). Train from it with `--dataset=prepared:DIR`: only the rows the sampler draws are read, so
memory does not grow with the dataset. DIR may be a local path or a bucket (`gs://…`). Images
are checked (decoded, on all cores) as they are read; a bad one stops the job with one line on
stderr naming the file (exit status 2) and leaves nothing at DIR.
"""

from __future__ import annotations

import json

from absl import flags, logging

from launch import common
from siamese_tf.errors import InputError

flags.DEFINE_string(
    "dataset", None, "Dataset spec: mnist:DIR, npz:PATH, tfds:NAME[:SPLIT], folder:PATH, digits."
)
flags.DEFINE_string("out", None, "The store's folder, local or gs://… (must be empty).")
flags.DEFINE_integer("shard_mb", 256, "Start a new record shard file after this many MB.")
flags.DEFINE_integer(
    "image_size", 0, "Decode images to image_size x image_size when training (0: keep sizes)."
)
flags.DEFINE_string("manual_dir", "", "Folder of manual files for tfds: local builders.")
flags.DEFINE_string("data_dir", "", "TFDS data folder (TFDS's default when empty).")
flags.DEFINE_bool("overwrite", False, "Replace a store written by an earlier prepare.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not FLAGS.dataset:
        raise InputError("--dataset is required, e.g. --dataset=folder:/data/images")
    if not FLAGS.out:
        raise InputError("--out is required, e.g. --out=/data/prepared/faces")
    if FLAGS.shard_mb < 1:
        raise InputError(f"--shard_mb must be >= 1, got {FLAGS.shard_mb}")
    if FLAGS.image_size < 0:
        raise InputError(f"--image_size must be >= 0, got {FLAGS.image_size}")
    # Heavy imports after the cheap checks, so a typo fails in a second, not after TF starts.
    from siamese_tf.data import open_stream, write_store
    from siamese_tf.data.store.writer import check_out_dir

    check_out_dir(FLAGS.out.rstrip("/"), FLAGS.overwrite)
    stream = open_stream(FLAGS.dataset, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir)
    meta = write_store(
        stream,
        FLAGS.out,
        image_size=FLAGS.image_size,
        shard_bytes=FLAGS.shard_mb << 20,
        overwrite=FLAGS.overwrite,
    )
    logging.info("wrote %d record shards to %s", len(meta["shards"]), FLAGS.out)
    summary = {
        "out": FLAGS.out,
        "examples": meta["num_examples"],
        "classes": meta["num_classes"],
        "shards": len(meta["shards"]),
        "bytes": sum(s["bytes"] for s in meta["shards"]),
        "encoded": meta["encoded"],
        "image_shape": meta["image_shape"],
        "train_with": f"--dataset=prepared:{FLAGS.out}",
    }
    print("summary: " + json.dumps(summary))


if __name__ == "__main__":
    common.run(main)
