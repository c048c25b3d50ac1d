"""The "same" decision of a pair, and what "not calibrated" means: each decided here only.

A pair is called "same" when its distance is <= the threshold: the ROC sweeps, the metrics at a
threshold, `SiameseModel.verify`, the exported `verify` signature and the predictions on files
all call `same`. A model's `threshold` variable holds `UNCALIBRATED` until calibration sets it;
`is_calibrated` is the one test for it.

No TensorFlow here: `same` takes numpy arrays, Python numbers and tensors alike.
"""

from __future__ import annotations

import numpy as np

# The threshold of a model no calibration has set. Distances are >= 0, so it calls no pair
# "same" — but it is a marker, not a decision: code asks `is_calibrated` before deciding.
UNCALIBRATED = -1.0


def is_calibrated(threshold) -> bool:
    """Whether a threshold was set by calibration, i.e. is not `UNCALIBRATED`.

    Args:
      threshold: a number, a numpy scalar, or a scalar variable or tensor (`model.threshold`).
    """
    return float(np.asarray(threshold)) != UNCALIBRATED


def same(distances, threshold):
    """Which pairs are called "same": `distances <= threshold`, elementwise.

    Args:
      distances: pair distances (numpy, Python or TensorFlow values).
      threshold: the distance threshold (a number, array or tensor of a compatible type).

    Returns:
      Booleans of the distances' shape (a numpy array, a bool or a tensor, as they were given).
    """
    return distances <= threshold
