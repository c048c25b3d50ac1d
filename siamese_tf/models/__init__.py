"""Models: encoders and the `SiameseModel` wrapper."""

from siamese_tf.models.encoders import ENCODERS, build_encoder, conv4, conv_small
from siamese_tf.models.siamese import UNCALIBRATED, SiameseModel, loss_settings

__all__ = [
    "ENCODERS",
    "UNCALIBRATED",
    "SiameseModel",
    "build_encoder",
    "conv4",
    "conv_small",
    "loss_settings",
]
