"""The metric-learning recipe: data → sampler → SiameseModel.fit → calibrated report."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import time
import traceback

import keras
import numpy as np
import tensorflow as tf

from siamese_tf import evaluation as eval_metrics
from siamese_tf.callbacks import (
    MetricsJsonl,
    OneShotValidation,
    StalledLearning,
    ThresholdCalibration,
)
from siamese_tf.checkpointing import TrainingState
from siamese_tf.data import (
    Source,
    Splits,
    balanced_pairs,
    load_source,
    pk_batches,
)
from siamese_tf.data.augment import augment_by_step, random_affine
from siamese_tf.data.class_augment import rotated_classes
from siamese_tf.data.store import store_error_from
from siamese_tf.distribute import (
    classes_per_replica,
    distribute_pk_dataset,
    is_chief,
    multi_worker_resolver,
)
from siamese_tf.early_stopping import ResumableEarlyStopping
from siamese_tf.errors import InputError
from siamese_tf.heads import ClassProxies, PairClassifierHead
from siamese_tf.models import SiameseModel, build_encoder, loss_settings
from trainers import losses as run_losses
from trainers import run_outputs, small_data
from trainers import workdir as wd
from trainers.config import TrainConfig
from trainers.training_loop import fit_resumable

# Losses trained on labelled (P×K) batches and on pair batches: see trainers/losses.py.
LABELLED_LOSSES = run_losses.LABELLED_LOSSES
PAIR_LOSSES = run_losses.PAIR_LOSSES

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The loaded, split and validated data of a run (nothing written yet).

    `config` is the config fitted to the data (`trainers.small_data`): the one to run and
    record; `notes` say which defaults it adapted.
    """

    source: Source
    splits: Splits
    train: Source
    calibration: Source
    test: Source
    config: TrainConfig | None = None
    notes: tuple = ()


def prepare_data(config: TrainConfig, adaptable=(), replicas: int = 1) -> PreparedData:
    """Loads and splits the data and checks the config against it. Writes nothing.

    Args:
      config: the run's config.
      adaptable: names of config fields left at their defaults, which may be fitted to small
        data (`trainers.small_data`); the others are checked and refused with the fix.
      replicas: replicas in sync (P must be a multiple of them).

    Returns:
      The data, with the fitted config and the notes on what was adapted.

    Raises:
      InputError: an unknown dataset or loss, or data the config cannot serve (the message
        names the split, the count and the flag value that fixes it).
    """
    run_losses.check(config)
    eval_metrics.parse_threshold_rule(config.threshold_rule)
    source = load_source(
        config.dataset,
        image_size=config.image_size,
        manual_dir=config.manual_dir,
        data_dir=config.data_dir,
    )
    small_data.check_classes(source)
    config, notes = small_data.fit_split(config, source, adaptable)
    splits = config.split(source.labels, source.groups)
    train = source.take(splits.train)
    if config.rotate_classes:
        # Training classes only: calibration and test classes stay upright.
        train = rotated_classes(train, label_offset=int(source.labels.max()) + 1)
    config, batch_notes = small_data.fit_batch(config, train, adaptable, replicas)
    calibration, test = source.take(splits.calibration), source.take(splits.test)
    small_data.check_held_out("calibration", calibration, config)
    small_data.check_held_out("test", test, config)
    if config.oneshot_episodes:
        counts = np.unique(calibration.labels, return_counts=True)[1]
        usable = int(np.sum(counts >= 2))
        if usable < config.oneshot_ways:
            raise InputError(
                f"--oneshot_ways={config.oneshot_ways} needs as many calibration classes with 2+ "
                f"examples; the calibration split has {usable}: lower --oneshot_ways or raise "
                "--calibration_fraction"
            )
    return PreparedData(
        source, splits, train, calibration, test, config=config, notes=(*notes, *batch_notes)
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
    loss = run_losses.make_loss(config)
    # Each setting given once: the model reads from its loss what the loss holds (a triplet
    # loss's metric and margin); only the others are given to the model.
    own = {"distance_metric": config.distance_metric, "stats_margin": config.margin}
    held = loss_settings(loss)
    model = SiameseModel(
        encoder,
        head=head,
        cross_replica_mining=config.cross_replica_mining,
        proxies=proxies,
        cross_batch_memory=config.cross_batch_memory,
        **{name: value for name, value in own.items() if name not in held},
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config)),
        loss=loss,
        jit_compile=config.jit_compile,
    )
    model.build((None, *image_shape))
    return model


def replica_dataset(
    config: TrainConfig, train: Source, replica_units: int, stream: int, start_element: int
) -> tf.data.Dataset:
    """One replica's (or input pipeline's) batches, augmented if set.

    `replica_units` is its share of the global batch (`trainers.losses.batch_units`): P
    classes of K examples each for labelled losses, or balanced pairs for pair losses.
    """
    common = dict(
        seed=config.seeds.sampling,
        start_step=start_element,
        stream=stream,
        class_weighting=config.class_weighting,
        prefetch=False,
    )
    if config.loss in LABELLED_LOSSES:
        ds = pk_batches(
            train,
            classes_per_batch=replica_units,
            samples_per_class=config.samples_per_class,
            **common,
        )
    else:
        ds = balanced_pairs(train, batch_size=replica_units, **common)
    if config.augment:
        ds = augment_by_step(
            ds,
            random_affine,
            seed=config.seeds.augmentation,
            stream=stream,
            start_step=start_element,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def make_train_dataset(config: TrainConfig, train: Source, strategy, start_step: int = 0):
    """The training input: per-replica pipelines from global step `start_step` on."""

    def make(replica_units, stream, start_element):
        return replica_dataset(config, train, replica_units, stream, start_element)

    return distribute_pk_dataset(strategy, make, run_losses.batch_units(config), start_step)


@contextlib.contextmanager
def _store_errors_as_input_errors():
    """A bad record of a prepared store, met in the input pipeline or an evaluation read,
    becomes its one-line `StoreError` (it names the record and class). Nothing is saved on the
    way out: the error leaves `fit` before any checkpoint callback runs again."""
    try:
        yield
    except tf.errors.OpError as err:
        store_error = store_error_from(err)
        if store_error is None:
            raise
        # The frames `fit` unwound still hold its dataset iterator, whose parallel reads may be
        # in flight. Destroyed at interpreter exit, it can wait forever on reads that can no
        # longer take the GIL; destroyed now, they finish. (The CLI also skips the teardown:
        # launch/common.py.)
        traceback.clear_frames(err.__traceback__)
        gc.collect()
        raise store_error from None


class Preempted(Exception):
    """The job received a stop signal, saved a backup and stopped; re-run to resume.

    Attributes:
      step: the step saved (in a multi-worker job, the same on every worker).
    """

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def train_and_evaluate(
    config: TrainConfig,
    workdir: str,
    strategy,
    data: PreparedData | None = None,
    verbose: int = 1,
    preemption=None,
    on_resume=None,
) -> dict:
    """Trains (or resumes), calibrates and reports one run into `workdir`.

    Re-running on the same workdir resumes from the last backup; a finished run is reported
    again without training.

    Args:
      config: the run's hyperparameters.
      workdir: the run directory (created if missing).
      strategy: the `tf.distribute.Strategy` to build and train under.
      data: already prepared data (from `prepare_data`), else prepared here.
      verbose: 0 silent, 1 Keras' progress bar, 2 one plain line per epoch (for logs in files).
      preemption: a `siamese_tf.checkpointing.PreemptionSignal`, or None. In a multi-worker
        job a signal to any worker stops all of them at the same step.
      on_resume: optional `fn(step, total_steps)`, called on the chief before training when
        the run resumes from a backup.

    Returns:
      The report (also written to `workdir/report.json`).

    Raises:
      Preempted: a stop signal arrived (here or, multi-worker, on any worker); a backup was
        saved.
      siamese_tf.checkpointing.NonFiniteLossError: the loss became NaN or infinite.
      tensorflow.errors.OpError: multi-worker, a worker was lost (see
        `siamese_tf.distribute.lost_worker`); nothing was saved after the last backup.
    """
    data = data or prepare_data(config)
    chief = is_chief(strategy)
    config_dict = json.loads(config.to_json())
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seeds.initialisation)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = build_model(
                config, data.source.image_shape, num_classes=int(data.train.labels.max()) + 1
            )
            model.prebuild(_per_replica_spec(config, data.train, strategy))
        if chief:  # Only now, with the data and the model built: nothing half-written on error.
            os.makedirs(workdir, exist_ok=True)
            wd.write_json_atomic(
                wd.path(workdir, wd.CONFIG), {**config_dict, "split_sizes": data.splits.sizes()}
            )
        stopping = None
        if config.early_stopping_patience:
            stopping = ResumableEarlyStopping(
                model, config.selection_metric, config.early_stopping_patience
            )
        state = TrainingState(
            model,
            workdir,
            is_chief=chief,
            keep=config.keep_checkpoints,
            extra={"early_stopping": stopping.state} if stopping else None,
        )
        with _store_errors_as_input_errors():
            report = _train_and_report(
                config,
                workdir,
                strategy,
                data,
                model,
                state,
                chief,
                verbose,
                preemption,
                on_resume,
                stopping,
            )
    finally:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
    return report


def _per_replica_spec(config, train, strategy):
    """Element spec of one replica's batches (what `train_step` sees)."""
    replica_units = classes_per_replica(strategy, run_losses.batch_units(config))
    return replica_dataset(config, train, replica_units, stream=0, start_element=0).element_spec


def _train_and_report(
    config,
    workdir,
    strategy,
    data,
    model,
    state,
    chief,
    verbose,
    preemption,
    on_resume=None,
    stopping=None,
):
    calibration = ThresholdCalibration(
        data.calibration,
        config.held_out_pairs("calibration", data.calibration.labels),
        rule=config.threshold_rule,
        batch_size=config.eval_batch_size,
        log_dir=wd.path(workdir, wd.LOGS) if chief else None,
    )
    callbacks = [calibration]
    if config.oneshot_episodes:
        callbacks.append(
            OneShotValidation(
                data.calibration,
                ways=config.oneshot_ways,
                episodes=config.oneshot_episodes,
                seed=config.seeds.oneshot_validation,
                batch_size=config.eval_batch_size,
            )
        )
    if stopping is not None:  # After the callbacks that log the value it watches.
        callbacks.append(stopping)
    if config.loss in run_losses.TRIPLET_LOSSES:
        callbacks.append(StalledLearning())
    if chief:
        callbacks += [
            MetricsJsonl(wd.path(workdir, wd.METRICS), config.steps_per_epoch),
            keras.callbacks.TensorBoard(wd.path(workdir, wd.LOGS), write_graph=False),
        ]
    if verbose == 2:  # One plain line per epoch instead of Keras' progress bar.
        callbacks.append(run_outputs.EpochLine(config.epochs, config.steps_per_epoch))
        verbose = 0

    def on_restore(step):
        if chief:
            wd.truncate_metrics(workdir, step)
            if step and on_resume is not None:
                on_resume(step, config.total_steps)

    start = time.perf_counter()
    try:
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
            on_restore=on_restore,
            cluster_resolver=multi_worker_resolver(strategy),
            stopped_early=(lambda: stopping.stopped) if stopping else None,
        )
    finally:
        state.close()  # a non-chief's temporary checkpoints, also after a lost worker
    train_seconds = time.perf_counter() - start
    if result.preempted_at is not None:
        raise Preempted(
            f"preempted at step {result.preempted_at}: a backup was saved in "
            f"{workdir}/backup; re-run the same command to resume",
            result.preempted_at,
        )
    if stopping is not None and stopping.restore_best(model):
        log.info("early stopping: the weights of epoch %d are kept", stopping.best_epoch + 1)
    final_calibration = calibration.calibrate_final(model)
    report = run_outputs.evaluate_test(model, config, data, workdir=workdir if chief else None)
    report.update(
        train_seconds=round(train_seconds, 2),
        start_step=result.start_step,
        steps=result.end_step,
        epochs=-(-result.end_step // config.steps_per_epoch),
        replicas=strategy.num_replicas_in_sync,
        weights_sha256=run_outputs.weights_digest(model),
        calibration=final_calibration,
    )
    if stopping is not None:
        report["early_stopping"] = {
            "metric": stopping.monitor,
            "best_epoch": None if stopping.best_epoch is None else stopping.best_epoch + 1,
            "stopped": stopping.stopped,
        }
    if chief:
        wd.save_model_atomic(model, wd.path(workdir, wd.MODEL))
        wd.write_json_atomic(wd.path(workdir, wd.REPORT), report)
    return report
