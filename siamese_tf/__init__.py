"""siamese_tf: Siamese and metric-learning networks on TensorFlow 2 / Keras 3.

Importing the package registers its Keras layers, losses and models, so a saved `.keras` model
loads with `keras.models.load_model(path)` in safe mode.
"""

from siamese_tf import (  # noqa: F401  (imported for registration and as the public namespace)
    callbacks,
    data,
    distances,
    distribute,
    errors,
    evaluation,
    heads,
    losses,
    memory,
    mining,
    models,
)
from siamese_tf.errors import InputError
from siamese_tf.models import SiameseModel

__version__ = "0.1.0"
__all__ = ["InputError", "SiameseModel", "__version__"]
