"""The metric-learning recipe: data → sampler → SiameseModel.fit → calibrated report."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import keras
import numpy as np

from siamese_tf import losses as losses_lib
from siamese_tf.callbacks import MetricsJsonl, ThresholdCalibration
from siamese_tf.data import (
    ArraySource,
    Splits,
    balanced_pairs,
    fixed_pairs,
    load_source,
    pk_batches,
    split_indices,
)
from siamese_tf.distribute import distribute_pk_dataset
from siamese_tf.errors import InputError
from siamese_tf.evaluation import metrics as eval_metrics
from siamese_tf.evaluation.retrieval import nearest_neighbour_accuracy
from siamese_tf.heads import PairClassifierHead
from siamese_tf.inference import embed, pair_set_distances
from siamese_tf.models import SiameseModel, build_encoder
from trainers.config import TrainConfig

TRIPLET_LOSSES = {
    "triplet_semihard": losses_lib.TripletSemiHardLoss,
    "triplet_hard": losses_lib.TripletHardLoss,
    "triplet_batch_all": losses_lib.TripletBatchAllLoss,
}
PAIR_LOSSES = ("contrastive", "bce")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The loaded, split and validated data of a run (nothing written yet)."""

    source: ArraySource
    splits: Splits
    train: ArraySource
    calibration: ArraySource
    test: ArraySource


def prepare_data(config: TrainConfig) -> PreparedData:
    """Loads and splits the data and checks the config against it. Writes nothing.

    Raises:
      InputError: an unknown dataset or loss, or P / K larger than the data allows.
    """
    if config.loss not in TRIPLET_LOSSES and config.loss not in PAIR_LOSSES:
        known = ", ".join([*TRIPLET_LOSSES, *PAIR_LOSSES])
        raise InputError(f"unknown loss {config.loss!r}; choose one of: {known}")
    eval_metrics.parse_threshold_rule(config.threshold_rule)
    source = load_source(config.dataset)
    splits = split_indices(
        source.labels,
        calibration_fraction=config.calibration_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        split_by=config.split_by,
    )
    train = source.take(splits.train)
    counts = np.unique(train.labels, return_counts=True)[1]
    eligible = int(np.sum(counts >= 2))
    if config.loss in TRIPLET_LOSSES and config.classes_per_batch > eligible:
        raise InputError(
            f"classes_per_batch={config.classes_per_batch} exceeds the {eligible} training "
            f"classes with 2+ examples; lower --classes_per_batch"
        )
    if config.loss in TRIPLET_LOSSES and config.samples_per_class > counts.max():
        raise InputError(
            f"samples_per_class={config.samples_per_class} exceeds the largest training class "
            f"({counts.max()} examples); lower --samples_per_class"
        )
    return PreparedData(source, splits, train, source.take(splits.calibration),
                        source.take(splits.test))


def build_model(config: TrainConfig, image_shape) -> SiameseModel:
    """Builds and compiles the model. Call inside `strategy.scope()`."""
    encoder = build_encoder(config.encoder, image_shape, config.embedding_dim)
    head = PairClassifierHead() if config.loss == "bce" else None
    model = SiameseModel(
        encoder, head=head, distance_metric=config.distance_metric, stats_margin=config.margin
    )
    if config.loss in TRIPLET_LOSSES:
        loss = TRIPLET_LOSSES[config.loss](
            margin=config.margin, distance_metric=config.distance_metric
        )
    elif config.loss == "contrastive":
        loss = losses_lib.ContrastiveLoss(margin=config.margin)
    else:
        loss = keras.losses.BinaryCrossentropy()
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss)
    model.build((None, *image_shape))
    return model


def make_train_dataset(config: TrainConfig, train: ArraySource, strategy, start_step: int = 0):
    """The training input: per-replica P×K (or balanced pair) pipelines."""

    def make(classes_per_replica, stream, start_element):
        if config.loss in TRIPLET_LOSSES:
            return pk_batches(
                train.images, train.labels,
                classes_per_batch=classes_per_replica,
                samples_per_class=config.samples_per_class,
                seed=config.seed, start_step=start_element, stream=stream,
                class_weighting=config.class_weighting,
            )
        return balanced_pairs(
            train.images, train.labels,
            batch_size=classes_per_replica * config.samples_per_class,
            seed=config.seed, start_step=start_element, stream=stream,
            class_weighting=config.class_weighting,
        )

    return distribute_pk_dataset(strategy, make, config.classes_per_batch, start_step)


def evaluate_test(model: SiameseModel, config: TrainConfig, data: PreparedData) -> dict:
    """The final report on the test split at the calibrated threshold (never tuned on test)."""
    pairs = fixed_pairs(data.test.labels, config.test_pairs, seed=config.seed + 2)
    distances = pair_set_distances(model, data.test.images, pairs, config.eval_batch_size)
    threshold = float(model.threshold.numpy())
    report = {"test": eval_metrics.verification_report(distances, pairs.same, threshold)}
    if config.split_by == "example":
        report["one_nn_accuracy"] = nearest_neighbour_accuracy(
            embed(model, data.test.images, config.eval_batch_size), data.test.labels,
            embed(model, data.train.images, config.eval_batch_size), data.train.labels,
        )
    else:
        # Open set: test classes are absent from the training gallery, so 1-NN against it is
        # meaningless; the one-shot protocols of `launch.evaluate` measure this case.
        report["one_nn_accuracy"] = None
    return report


def train_and_evaluate(config: TrainConfig, workdir: str, strategy, data: PreparedData | None = None,
                       verbose: int = 1) -> dict:
    """Trains, calibrates and reports one run into `workdir`.

    Args:
      config: the run's hyperparameters.
      workdir: the run directory (created if missing).
      strategy: the `tf.distribute.Strategy` to build and train under.
      data: already prepared data (from `prepare_data`), else prepared here.
      verbose: Keras `fit` verbosity (1: progress bar).

    Returns:
      The report (also written to `workdir/report.json`).
    """
    data = data or prepare_data(config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        payload = json.loads(config.to_json())
        payload["split_sizes"] = data.splits.sizes()
        json.dump(payload, f, indent=2, sort_keys=True)

    with strategy.scope():
        model = build_model(config, data.source.image_shape)
    dataset = make_train_dataset(config, data.train, strategy)
    calibration_pairs = fixed_pairs(data.calibration.labels, config.calibration_pairs,
                                    seed=config.seed + 1)
    callbacks = [
        ThresholdCalibration(data.calibration.images, calibration_pairs, rule=config.threshold_rule,
                             batch_size=config.eval_batch_size),
        MetricsJsonl(os.path.join(workdir, "metrics.jsonl"), config.steps_per_epoch),
    ]
    start = time.perf_counter()
    history = model.fit(dataset, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                        callbacks=callbacks, verbose=verbose)
    train_seconds = time.perf_counter() - start

    model.save(os.path.join(workdir, "model.keras"))
    report = evaluate_test(model, config, data)
    report.update(
        train_seconds=round(train_seconds, 2),
        epochs=config.epochs,
        steps=config.epochs * config.steps_per_epoch,
        replicas=strategy.num_replicas_in_sync,
        calibration={k: v[-1] for k, v in history.history.items() if k.startswith("val_")},
    )
    with open(os.path.join(workdir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report
