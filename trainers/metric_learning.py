"""The metric-learning recipe: data → sampler → SiameseModel.fit → calibrated report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from siamese_tf.callbacks import MetricsJsonl, ThresholdCalibration
from siamese_tf.checkpointing import TrainingState
from siamese_tf.data import (
    Source,
    Splits,
    balanced_pairs,
    fixed_pairs,
    load_source,
    pk_batches,
)
from siamese_tf.data.augment import augment_by_step, random_affine
from siamese_tf.data.class_augment import rotated_classes
from siamese_tf.distribute import classes_per_replica, distribute_pk_dataset, is_chief
from siamese_tf.errors import InputError
from siamese_tf.evaluation import metrics as eval_metrics
from siamese_tf.evaluation.retrieval import nearest_neighbour_accuracy
from siamese_tf.heads import ClassProxies, PairClassifierHead
from siamese_tf.inference import embed, pair_set_distances
from siamese_tf.models import UNCALIBRATED, SiameseModel, build_encoder
from trainers import losses as run_losses
from trainers import workdir as wd
from trainers.config import TrainConfig
from trainers.training_loop import fit_resumable

# Losses trained on labelled (P×K) batches and on pair batches: see trainers/losses.py.
LABELLED_LOSSES = run_losses.LABELLED_LOSSES
PAIR_LOSSES = run_losses.PAIR_LOSSES

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The loaded, split and validated data of a run (nothing written yet)."""

    source: Source
    splits: Splits
    train: Source
    calibration: Source
    test: Source


def prepare_data(config: TrainConfig) -> PreparedData:
    """Loads and splits the data and checks the config against it. Writes nothing.

    Raises:
      InputError: an unknown dataset or loss, or P / K larger than the data allows.
    """
    run_losses.check(config)
    eval_metrics.parse_threshold_rule(config.threshold_rule)
    source = load_source(
        config.dataset,
        image_size=config.image_size,
        manual_dir=config.manual_dir,
        data_dir=config.data_dir,
    )
    splits = config.split(source.labels)
    train = source.take(splits.train)
    if config.rotate_classes:
        # Training classes only: calibration and test classes stay upright.
        train = rotated_classes(train, label_offset=int(source.labels.max()) + 1)
    counts = np.unique(train.labels, return_counts=True)[1]
    eligible = int(np.sum(counts >= 2))
    if config.loss in LABELLED_LOSSES and config.classes_per_batch > eligible:
        raise InputError(
            f"classes_per_batch={config.classes_per_batch} exceeds the {eligible} training "
            f"classes with 2+ examples; lower --classes_per_batch"
        )
    if config.loss in LABELLED_LOSSES and config.samples_per_class > counts.max():
        raise InputError(
            f"samples_per_class={config.samples_per_class} exceeds the largest training class "
            f"({counts.max()} examples); lower --samples_per_class"
        )
    return PreparedData(
        source, splits, train, source.take(splits.calibration), source.take(splits.test)
    )


def learning_rate(config: TrainConfig):
    """The learning rate or schedule over the run's total steps."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, config.total_steps)
    if config.lr_schedule == "step":
        # Divide by 10 at 50% and 75% of the run.
        boundaries = [config.total_steps // 2, (3 * config.total_steps) // 4]
        values = [config.learning_rate, config.learning_rate / 10, config.learning_rate / 100]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return config.learning_rate


def build_model(config: TrainConfig, image_shape, num_classes: int | None = None) -> SiameseModel:
    """Builds and compiles the model. Call inside `strategy.scope()`.

    Args:
      config: the run's config.
      image_shape: (H, W, C) of the images.
      num_classes: for `--loss=arcface`, the number of class proxies (largest training label
        + 1); ignored otherwise.
    """
    encoder = build_encoder(config.encoder, image_shape, config.embedding_dim)
    head = PairClassifierHead() if config.loss == "bce" else None
    proxies = None
    if config.loss in run_losses.PROXY_LOSSES:
        if not num_classes:
            raise ValueError(f"--loss={config.loss} needs num_classes (largest label + 1)")
        proxies = ClassProxies(num_classes)
    model = SiameseModel(
        encoder,
        head=head,
        distance_metric=config.distance_metric,
        stats_margin=config.margin,
        proxies=proxies,
        cross_batch_memory=config.cross_batch_memory,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config)),
        loss=run_losses.make_loss(config),
        jit_compile=config.jit_compile,
    )
    model.build((None, *image_shape))
    return model


def replica_dataset(
    config: TrainConfig, train: Source, replica_classes: int, stream: int, start_element: int
) -> tf.data.Dataset:
    """One replica's (or input pipeline's) batches: P×K or balanced pairs, augmented if set."""
    common = dict(
        seed=config.seed,
        start_step=start_element,
        stream=stream,
        class_weighting=config.class_weighting,
        prefetch=False,
    )
    if config.loss in LABELLED_LOSSES:
        ds = pk_batches(
            train,
            classes_per_batch=replica_classes,
            samples_per_class=config.samples_per_class,
            **common,
        )
    else:
        ds = balanced_pairs(train, batch_size=replica_classes * config.samples_per_class, **common)
    if config.augment:
        ds = augment_by_step(
            ds, random_affine, seed=config.seed, stream=stream, start_step=start_element
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def make_train_dataset(config: TrainConfig, train: Source, strategy, start_step: int = 0):
    """The training input: per-replica pipelines from global step `start_step` on."""

    def make(replica_classes, stream, start_element):
        return replica_dataset(config, train, replica_classes, stream, start_element)

    return distribute_pk_dataset(strategy, make, config.classes_per_batch, start_step)


def evaluate_test(model: SiameseModel, config: TrainConfig, data: PreparedData) -> dict:
    """The final report on the test split at the calibrated threshold (never tuned on test)."""
    pairs = fixed_pairs(data.test.labels, config.test_pairs, seed=config.seed + 2)
    test_images = data.test.decoded_images()
    distances = pair_set_distances(model, test_images, pairs, config.eval_batch_size)
    threshold = float(model.threshold.numpy())
    report = {"test": eval_metrics.verification_report(distances, pairs.same, threshold)}
    if config.split_by == "example":
        report["one_nn_accuracy"] = nearest_neighbour_accuracy(
            embed(model, test_images, config.eval_batch_size),
            data.test.labels,
            embed(model, data.train.decoded_images(), config.eval_batch_size),
            data.train.labels,
        )
    else:
        # Open set: test classes are absent from the training gallery, so 1-NN against it is
        # meaningless; the one-shot protocols of `launch.evaluate` measure this case.
        report["one_nn_accuracy"] = None
    return report


def weights_digest(model) -> str:
    """SHA-256 of every weight's bytes: equal digests mean bit-identical models."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


class Preempted(Exception):
    """The job received a preemption signal, saved a backup and stopped; re-run to resume."""


def train_and_evaluate(
    config: TrainConfig,
    workdir: str,
    strategy,
    data: PreparedData | None = None,
    verbose: int = 1,
    preemption=None,
) -> dict:
    """Trains (or resumes), calibrates and reports one run into `workdir`.

    Re-running on the same workdir resumes from the last backup; a finished run is reported
    again without training.

    Args:
      config: the run's hyperparameters.
      workdir: the run directory (created if missing).
      strategy: the `tf.distribute.Strategy` to build and train under.
      data: already prepared data (from `prepare_data`), else prepared here.
      verbose: Keras `fit` verbosity (1: progress bar).
      preemption: a `siamese_tf.checkpointing.PreemptionSignal`, or None.

    Returns:
      The report (also written to `workdir/report.json`).

    Raises:
      Preempted: a preemption signal arrived; a backup was saved.
      siamese_tf.checkpointing.NonFiniteLossError: the loss became NaN or infinite.
    """
    data = data or prepare_data(config)
    chief = is_chief(strategy)
    config_dict = json.loads(config.to_json())
    if chief:
        os.makedirs(workdir, exist_ok=True)
        wd.write_json_atomic(
            wd.path(workdir, wd.CONFIG), {**config_dict, "split_sizes": data.splits.sizes()}
        )
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = build_model(
                config, data.source.image_shape, num_classes=int(data.train.labels.max()) + 1
            )
            model.prebuild(_per_replica_spec(config, data.train, strategy))
        state = TrainingState(model, workdir, is_chief=chief, keep=config.keep_checkpoints)
        report = _train_and_report(
            config, workdir, strategy, data, model, state, chief, verbose, preemption
        )
    finally:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
    return report


def _per_replica_spec(config, train, strategy):
    """Element spec of one replica's batches (what `train_step` sees)."""
    replica_classes = classes_per_replica(strategy, config.classes_per_batch)
    return replica_dataset(config, train, replica_classes, stream=0, start_element=0).element_spec


def _train_and_report(config, workdir, strategy, data, model, state, chief, verbose, preemption):
    calibration_pairs = fixed_pairs(
        data.calibration.labels, config.calibration_pairs, seed=config.seed + 1
    )
    callbacks = [
        ThresholdCalibration(
            data.calibration.decoded_images(),
            calibration_pairs,
            rule=config.threshold_rule,
            batch_size=config.eval_batch_size,
            log_dir=wd.path(workdir, wd.LOGS) if chief else None,
        )
    ]
    if chief:
        callbacks += [
            MetricsJsonl(wd.path(workdir, wd.METRICS), config.steps_per_epoch),
            keras.callbacks.TensorBoard(wd.path(workdir, wd.LOGS), write_graph=False),
        ]
    start = time.perf_counter()
    result = fit_resumable(
        model,
        state,
        lambda step: make_train_dataset(config, data.train, strategy, start_step=step),
        steps_per_epoch=config.steps_per_epoch,
        total_steps=config.total_steps,
        callbacks=callbacks,
        save_every_steps=config.save_every_steps,
        preemption=preemption,
        verbose=verbose,
        on_restore=(lambda step: wd.truncate_metrics(workdir, step)) if chief else None,
    )
    train_seconds = time.perf_counter() - start
    state.close()
    if result.preempted_at is not None:
        raise Preempted(
            f"preempted at step {result.preempted_at}: a backup was saved in "
            f"{workdir}/backup; re-run the same command to resume"
        )
    if float(model.threshold.numpy()) == UNCALIBRATED:
        callbacks[0].set_model(model)
        callbacks[0].calibrate()  # A resumed, already finished run: calibrate once more.
    report = evaluate_test(model, config, data)
    report.update(
        train_seconds=round(train_seconds, 2),
        start_step=result.start_step,
        steps=result.end_step,
        epochs=-(-result.end_step // config.steps_per_epoch),
        replicas=strategy.num_replicas_in_sync,
        weights_sha256=weights_digest(model),
        calibration={k: v[-1] for k, v in result.history.items() if k.startswith("val_")},
    )
    if chief:
        wd.save_model_atomic(model, wd.path(workdir, wd.MODEL))
        wd.write_json_atomic(wd.path(workdir, wd.REPORT), report)
    return report
