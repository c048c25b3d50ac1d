"""siamese_tf: Siamese and metric-learning networks on TensorFlow 2 / Keras 3."""
