"""Exports a finished run for serving: `python -m launch.export --workdir=DIR --out=DIR`.

Writes a TensorFlow SavedModel that needs neither `siamese_tf` nor Keras to serve, with
signatures `embed(images) -> {embeddings}` and `verify(images_a, images_b) -> {distance, same}`
(the calibrated threshold baked in). Both take raw uint8 images [B, H, W, C] of any size with
1, 3 or 4 channels; conversion and resizing to the model's input happen inside. Load it with
`tf.saved_model.load(OUT)` and call `.signatures["verify"](images_a=..., images_b=...)`.
"""

from __future__ import annotations

import json

from absl import flags

from launch import common
from siamese_tf.errors import InputError

flags.DEFINE_string("workdir", None, "The finished run's directory (config.json, model.keras).")
flags.DEFINE_string("out", None, "The SavedModel folder to write (must not exist or be empty).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --out folder.")
flags.DEFINE_bool(
    "allow_uncalibrated",
    False,
    "Export a model whose threshold was never calibrated (verify never says same).",
)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.workdir:
        raise InputError("--workdir is required: the folder of a finished run")
    if not FLAGS.out:
        raise InputError("--out is required: the SavedModel folder to write")

    from siamese_tf.export import SIGNATURES, export_saved_model
    from trainers import evaluation

    run = evaluation.load_run(FLAGS.workdir)
    path = export_saved_model(
        run.model, FLAGS.out, allow_uncalibrated=FLAGS.allow_uncalibrated, overwrite=FLAGS.overwrite
    )
    summary = {
        "saved_model": path,
        "signatures": list(SIGNATURES),
        "threshold": run.threshold,
        "image_shape": list(run.image_shape),
    }
    print("summary: " + json.dumps(summary))


if __name__ == "__main__":
    common.run(main)
