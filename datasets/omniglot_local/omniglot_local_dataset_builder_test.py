"""omniglot_local dataset: the `tfds new` builder test, run on `dummy_data/`.

Run from the workspace root: `python -m pytest datasets/omniglot_local`.
"""

import tensorflow_datasets as tfds

from . import omniglot_local_dataset_builder


class OmniglotLocalTest(tfds.testing.DatasetBuilderTestCase):
    """Builds all four splits from the hand-made zips in `dummy_data/`."""

    DATASET_CLASS = omniglot_local_dataset_builder.Builder
    SPLITS = {
        "background": 7,  # Greek c01 x2, Latin c01 x3, Latin c02 x2
        "evaluation": 4,  # Angelic c01 x2, Tengwar c01 x2
        "background_small1": 2,  # Latin c01 x2
        "background_small2": 3,  # Greek c01 x2, Latin c02 x1
    }
    # small1 and small2 are subsets of background, as upstream.
    OVERLAPPING_SPLITS = ["background", "background_small1", "background_small2"]


if __name__ == "__main__":
    tfds.testing.test_main()
