"""absl entry points: `python -m launch.train`, `evaluate`, `predict`, `export`, `benchmark`."""

import pathlib

# The checkout these entry points belong to. `launch/` is never installed (setup.cfg installs
# `siamese_tf` only), so its parent is the workspace root whatever the working directory; the
# library itself finds nothing through its own location (see `siamese_tf.data.tfds_local`).
WORKSPACE = pathlib.Path(__file__).resolve().parent.parent
