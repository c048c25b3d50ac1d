"""omniglot_runs dataset: the `tfds new` builder test, run on `dummy_data/`.

Run from the workspace root: `python -m pytest datasets/omniglot_runs`.
"""

import tensorflow_datasets as tfds

from . import omniglot_runs_dataset_builder


class OmniglotRunsTest(tfds.testing.DatasetBuilderTestCase):
    """Builds the trials of the two 4-way runs in `dummy_data/all_runs.zip`."""

    DATASET_CLASS = omniglot_runs_dataset_builder.Builder
    SPLITS = {"test": 8}  # 2 runs x 4 trials


if __name__ == "__main__":
    tfds.testing.test_main()
