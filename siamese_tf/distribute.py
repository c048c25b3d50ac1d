"""Strategy factory: the one place a `tf.distribute.Strategy` is chosen by name."""

from __future__ import annotations

import tensorflow as tf

from siamese_tf.errors import InputError

STRATEGIES = ("auto", "default", "one_device", "mirrored")


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Creates a strategy by name.

    Args:
      name: "auto" (MirroredStrategy over all GPUs when there are several, else the default
        strategy), "default", "one_device" (first GPU, else CPU) or "mirrored" (all GPUs, or
        all logical CPUs when there is no GPU).

    Returns:
      The strategy.

    Raises:
      InputError: an unknown name.
    """
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


def distribute_pk_dataset(strategy, make_dataset, classes_per_batch: int, start_step: int = 0):
    """Per-replica P×K pipelines through `strategy.distribute_datasets_from_function`.

    Each replica receives whole P×K groups: the global P is divided among the replicas, so every
    replica mines complete classes. Each input pipeline samples its own stream (its pipeline id),
    and because a pipeline feeds its local replicas in turn, consecutive sampler steps go to
    different replicas; step numbers are scaled so `start_step` resumes exactly.

    Args:
      strategy: the strategy.
      make_dataset: `fn(classes_per_replica, stream, start_element) -> tf.data.Dataset` of
        per-replica batches.
      classes_per_batch: the global P.
      start_step: the global training step to start from.

    Returns:
      A distributed dataset (or the plain dataset for a single replica).

    Raises:
      InputError: P not divisible by the number of replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if classes_per_batch % replicas:
        raise InputError(
            f"classes_per_batch={classes_per_batch} is not divisible by the {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    per_replica = classes_per_batch // replicas
    if replicas == 1:
        return make_dataset(per_replica, 0, start_step)

    def dataset_fn(context: tf.distribute.InputContext):
        local_replicas = replicas // context.num_input_pipelines
        return make_dataset(per_replica, context.input_pipeline_id, start_step * local_replicas)

    return strategy.distribute_datasets_from_function(dataset_fn)
