"""Every `TrainConfig` field reaches the object it configures, through `train_and_evaluate`
(the recipe `launch.train` runs); the checks read what the run built, drew or wrote."""

import dataclasses
import json
import math
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT

import siamese_tf  # noqa: F401
from siamese_tf import inference
from siamese_tf import losses as losses_lib
from siamese_tf.errors import InputError
from trainers import metric_learning, run_outputs
from trainers.config import TrainConfig

TINY = dict(epochs=1, steps_per_epoch=1, calibration_pairs=40, test_pairs=40)


def first_epoch(workdir):
    return json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])


def test_cross_replica_mining_flag_mines_over_the_global_batch(tmp_path, two_cpus):
    # Two replicas (the two logical CPUs), each fed half of every P×K batch. With the flag the
    # first step's loss is the single-replica loss of the whole global batch; without it, the
    # mean of each half's own loss. The flag travels only through the config.
    config = TrainConfig(**TINY, loss="triplet_semihard", classes_per_batch=6, samples_per_class=4)
    logged = {}
    for flag in (True, False):
        workdir = tmp_path / f"crm_{flag}"
        run = dataclasses.replace(config, cross_replica_mining=flag)
        metric_learning.train_and_evaluate(run, str(workdir), two_cpus, verbose=0)
        logged[flag] = first_epoch(workdir)["loss"]

    # The global batch of step 0 as the two replicas received it, and the initial model.
    data = metric_learning.prepare_data(config)
    batch = next(iter(metric_learning.make_train_dataset(config, data.train, two_cpus)))
    halves = [two_cpus.experimental_local_results(part) for part in batch]
    images, labels = (np.concatenate([np.asarray(h) for h in part]) for part in halves)
    keras.utils.set_random_seed(config.seeds.initialisation)
    model = metric_learning.build_model(config, data.source.image_shape)
    loss_fn = losses_lib.TripletSemiHardLoss(margin=config.margin)
    embeddings = model(images, training=True)
    global_loss = float(loss_fn(labels, embeddings))
    per_replica = np.mean(
        [float(loss_fn(y, e)) for y, e in zip(np.split(labels, 2), np.split(embeddings, 2))]
    )
    assert abs(global_loss - per_replica) > 1e-3  # the two modes are distinguishable here
    assert logged[True] == pytest.approx(global_loss, rel=1e-5)
    assert logged[False] == pytest.approx(per_replica, rel=1e-5)


# --- the audit -------------------------------------------------------------------------------
#
# Each training run changes a few fields at once (one run per field would cost minutes); a row
# checks its field's own observable against an exact expectation, and that the baseline run
# does not meet it, so a field that is ignored fails its row whatever else its run changed.

BASE = dict(epochs=2, steps_per_epoch=2, calibration_pairs=40, test_pairs=40)
ONE_STEP = dict(epochs=1, steps_per_epoch=1)
DUMMY_ZIPS = ROOT / "datasets/omniglot_local/dummy_data"
RUNS = {
    "base": {},
    "model": dict(embedding_dim=16, loss="triplet_semihard", margin=0.3, distance_metric="angular")
    | dict(learning_rate=0.01, cross_replica_mining=True, augment=False, eval_batch_size=7)
    | dict(threshold_rule="max_accuracy", calibration_pairs=30, test_pairs=30)
    | dict(keep_checkpoints=1, save_every_steps=1, oneshot_ways=5, oneshot_episodes=10),
    "data": dict(split_by="class", calibration_fraction=0.3, test_fraction=0.3)
    | dict(classes_per_batch=4, samples_per_class=3, rotate_classes=True),
    # Classes of 40 and 10 examples: on digits' near-equal classes proportional draws are almost
    # always the uniform ones, so the weighting would be unobservable.
    "length": dict(epochs=3, steps_per_epoch=3, lr_schedule="cosine")
    | dict(class_weighting="proportional", dataset="npz:{tmp}/skewed.npz"),
    # XLA compiles the pair-loss step here; test_xla_compiles_every_pk_loss_... and the CLI's
    # test_cli_trains_a_tiny_run cover the P×K losses.
    "numerics": dict(seed=1, mixed_precision=True, deterministic=True, jit_compile=True)
    | dict(loss="contrastive", pairs_per_batch=6),
    # max_steps cuts the run's last epoch (an epoch cut short is not recorded).
    "npz": dict(dataset="npz:{tmp}/tiny.npz", image_size=16, encoder="conv4", max_steps=3),
    "stopping": dict(epochs=3, early_stopping_patience=1, early_stopping_metric="val_eer"),
    # The loss families' hyperparameters, one run per family (one step is enough: the checks
    # read the loss the run compiled).
    "multi_similarity": dict(
        loss="multi_similarity", ms_alpha=3.0, ms_beta=40.0, ms_base=0.3, **ONE_STEP
    ),
    "circle": dict(loss="circle", circle_m=0.3, circle_gamma=32.0, **ONE_STEP),
    "supcon": dict(loss="supcon", supcon_temperature=0.2, cross_batch_memory=64, **ONE_STEP),
    "arcface": dict(
        loss="arcface", arcface_margin=0.3, arcface_scale=16.0, arcface_variant="cosface"
    )
    | ONE_STEP,
    # Omniglot's dummy zips hold 7 images: TFDS builds them from manual_dir into data_dir, then
    # the recipe refuses so little data (InputError); the build is what these rows check.
    "tfds": dict(
        dataset="tfds:omniglot_local:background", manual_dir=str(DUMMY_ZIPS), data_dir="{tmp}/tfds"
    ),
}


@dataclasses.dataclass
class Run:
    """What one `train_and_evaluate` run built, drew and wrote."""

    config: TrainConfig
    workdir: pathlib.Path
    tmp: pathlib.Path
    model: object = None
    data: object = None
    batch: tuple = None
    calibration: object = None
    embed_batch_sizes: set = dataclasses.field(default_factory=set)
    determinism_calls: int = 0
    policy_at_build: str = ""
    report: dict = None
    error: Exception = None

    @property
    def metrics(self):
        return [json.loads(line) for line in (self.workdir / "metrics.jsonl").open()]

    def files(self, folder):
        return sorted(p.name for p in (self.workdir / folder).glob("*.index"))

    def labels_of(self, split):
        return set(self.data.source.labels[getattr(self.data.splits, split)].tolist())


def _train(name, tmp):
    overrides = {k: v.format(tmp=tmp) if isinstance(v, str) else v for k, v in RUNS[name].items()}
    run = Run(TrainConfig(**{**BASE, **overrides}), tmp / name, tmp)
    original = {
        "prepare": metric_learning.prepare_data,
        "build": metric_learning.build_model,
        "dataset": metric_learning.make_train_dataset,
        "embed": inference.embed,
    }

    def prepare(config):
        run.data = original["prepare"](config)
        return run.data

    def build(config, image_shape, *args, **kwargs):
        run.policy_at_build = keras.mixed_precision.global_policy().name
        run.model = original["build"](config, image_shape, *args, **kwargs)
        return run.model

    def dataset(*args, **kwargs):
        ds = original["dataset"](*args, **kwargs)
        if run.batch is None:
            run.batch = tuple(np.asarray(t) for t in next(iter(ds)))
        return ds

    def embed(model, images, batch_size=512):
        run.embed_batch_sizes.add(batch_size)
        return original["embed"](model, images, batch_size)

    class Calibration(metric_learning.ThresholdCalibration):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            run.calibration = self

    def determinism():
        # Recorded, not applied: op determinism cannot be turned off again in this process.
        run.determinism_calls += 1

    with pytest.MonkeyPatch.context() as mp:
        # Local TFDS builders are found by the setting, whatever pytest's working directory.
        mp.setenv("SIAMESE_TF_DATASETS", str(DUMMY_ZIPS.parents[1]))
        mp.setattr(metric_learning, "prepare_data", prepare)
        mp.setattr(metric_learning, "build_model", build)
        mp.setattr(metric_learning, "make_train_dataset", dataset)
        mp.setattr(metric_learning, "ThresholdCalibration", Calibration)
        mp.setattr(run_outputs, "embed", embed)
        mp.setattr(inference, "embed", embed)
        mp.setattr(tf.config.experimental, "enable_op_determinism", determinism)
        try:
            run.report = metric_learning.train_and_evaluate(
                run.config, str(run.workdir), tf.distribute.get_strategy(), verbose=0
            )
        except InputError as err:
            run.error = err
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (192, 6, 6, 1), dtype=np.uint8)
    np.savez(tmp / "tiny.npz", images=images, labels=np.repeat(np.arange(12), 16))
    skewed = np.repeat(np.arange(10), [40] * 5 + [10] * 5)
    pixels = rng.integers(0, 256, (skewed.size, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp / "skewed.npz", images=pixels, labels=skewed)
    done = {}

    def get(name):
        if name not in done:
            done[name] = _train(name, tmp)
        return done[name]

    return get


def _drawn_as_uniform(run):
    """Whether the run's first batch is the one uniform class weighting draws on its data."""
    uniform = dataclasses.replace(run.config, class_weighting="uniform")
    strategy = tf.distribute.get_strategy()
    batch = next(iter(metric_learning.make_train_dataset(uniform, run.data.train, strategy)))
    return np.array_equal(np.asarray(batch[1]), run.batch[1])


def _first_lr(run):
    return run.metrics[0]["learning_rate"]


def _cosine(config, step):
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * step / config.total_steps))


# field -> (run, check(run, base)); each check passes on its run and fails on the baseline.
CHECKS = {
    "dataset": ("npz", lambda r: len(r.data.source.labels) == 192),
    "manual_dir": ("tfds", lambda r: any((r.tmp / "tfds" / "omniglot_local").rglob("*.json"))),
    "data_dir": ("tfds", lambda r: (r.tmp / "tfds" / "omniglot_local").is_dir()),
    "image_size": ("npz", lambda r: tuple(r.model.encoder.input_shape[1:3]) == (16, 16)),
    "split_by": ("data", lambda r: not r.labels_of("train") & r.labels_of("test")),
    "calibration_fraction": (
        "data",
        lambda r: abs(len(r.data.splits.calibration) / len(r.data.source.labels) - 0.3) < 0.05,
    ),
    "test_fraction": (
        "data",
        lambda r: abs(len(r.data.splits.test) / len(r.data.source.labels) - 0.3) < 0.05,
    ),
    "encoder": ("npz", lambda r: r.model.encoder.name == "conv4"),
    "embedding_dim": ("model", lambda r: r.model.encoder.output_shape[-1] == 16),
    "loss": ("model", lambda r: isinstance(r.model.loss, losses_lib.TripletSemiHardLoss)),
    "margin": ("model", lambda r: r.model.loss.margin == 0.3 and r.model.stats_margin == 0.3),
    "distance_metric": (
        "model",
        lambda r: r.model.loss.distance_metric == "angular" == r.model.distance_metric,
    ),
    "classes_per_batch": ("data", lambda r: len(np.unique(r.batch[1])) == 4),
    "samples_per_class": (
        "data",
        lambda r: set(np.unique(r.batch[1], return_counts=True)[1]) == {3},
    ),
    # A pair batch is ((a, b), same): 6 pairs, whatever P and K are.
    "pairs_per_batch": ("numerics", lambda r: r.batch[1].shape == (6,)),
    "class_weighting": ("length", lambda r: not _drawn_as_uniform(r)),
    "augment": (
        "model",
        lambda r, b: (
            np.array_equal(r.batch[1], b.batch[1]) and not np.array_equal(r.batch[0], b.batch[0])
        ),
    ),
    "rotate_classes": (
        "data",
        lambda r: len(np.unique(r.data.train.labels)) == 4 * len(r.labels_of("train")),
    ),
    "learning_rate": ("model", lambda r: _first_lr(r) == pytest.approx(0.01)),
    "lr_schedule": (
        "length",
        lambda r: _first_lr(r) == pytest.approx(_cosine(r.config, step=3), rel=1e-5),
    ),
    "epochs": ("length", lambda r: len(r.metrics) == 3),
    "steps_per_epoch": ("length", lambda r: r.metrics[0]["step"] == 3),
    "max_steps": ("npz", lambda r: r.report["steps"] == 3 and len(r.metrics) == 1),
    "seed": ("numerics", lambda r, b: not np.array_equal(r.data.splits.test, b.data.splits.test)),
    "deterministic": ("numerics", lambda r: r.determinism_calls == 1),
    "mixed_precision": ("numerics", lambda r: r.policy_at_build == "mixed_float16"),
    "jit_compile": ("numerics", lambda r: r.model.jit_compile is True and r.report["steps"] == 4),
    "cross_replica_mining": ("model", lambda r: r.model.cross_replica_mining is True),
    "save_every_steps": ("model", lambda r: r.files("backup") == ["step-3.index", "step-4.index"]),
    "keep_checkpoints": ("model", lambda r: len(r.files("checkpoints")) == 1),
    "calibration_pairs": ("model", lambda r: len(r.calibration.pairs.same) == 30),
    "test_pairs": ("model", lambda r: r.report["test"]["num_pairs"] == 30),
    "threshold_rule": (
        "model",
        lambda r: (
            r.calibration.rule == "max_accuracy"
            and r.metrics[-1]["val_threshold"] == r.metrics[-1]["val_max_accuracy_threshold"]
        ),
    ),
    "eval_batch_size": ("model", lambda r: r.embed_batch_sizes == {7}),
    "oneshot_ways": ("model", lambda r: "val_oneshot_5way" in r.metrics[0]),
    "oneshot_episodes": (
        "model",
        lambda r: any(k.startswith("val_oneshot_") for k in r.metrics[0]),
    ),
    "early_stopping_patience": ("stopping", lambda r: "early_stopping" in r.report),
    "early_stopping_metric": (
        "stopping",
        lambda r: r.report.get("early_stopping", {}).get("metric") == "val_eer",
    ),
}


def _loss_has(name, value):
    return lambda r: getattr(r.model.loss, name, None) == value


CHECKS.update(
    {
        "ms_alpha": ("multi_similarity", _loss_has("alpha", 3.0)),
        "ms_beta": ("multi_similarity", _loss_has("beta", 40.0)),
        "ms_base": ("multi_similarity", _loss_has("base", 0.3)),
        "circle_m": ("circle", _loss_has("m", 0.3)),
        "circle_gamma": ("circle", _loss_has("gamma", 32.0)),
        "supcon_temperature": ("supcon", _loss_has("temperature", 0.2)),
        "cross_batch_memory": (
            "supcon",
            lambda r: r.model.cross_batch_memory == 64 and r.model.memory.size == 64,
        ),
        "arcface_margin": ("arcface", _loss_has("margin", 0.3)),
        "arcface_scale": ("arcface", _loss_has("scale", 16.0)),
        "arcface_variant": ("arcface", _loss_has("variant", "cosface")),
    }
)


def test_the_audit_covers_every_config_field():
    assert set(CHECKS) == set(TrainConfig.field_names())
    for name, (run, _) in CHECKS.items():
        assert name in RUNS[run], f"{name} is not changed by run {run!r}"


@pytest.mark.parametrize("field", sorted(CHECKS))
def test_every_config_field_changes_what_it_claims(field, runs):
    run_name, check = CHECKS[field]
    run, base = runs(run_name), runs("base")
    if run_name == "tfds":
        assert run.error is not None  # 7 images are too few to train on, as intended
    else:
        assert run.error is None, run.error
    assert base.error is None, base.error
    two = check.__code__.co_argcount == 2
    assert check(run, base) if two else check(run), f"{field} had no effect"
    if not two and run_name != "tfds":
        assert not check(base), f"the check of {field} also holds without it"


@pytest.mark.parametrize(
    "loss, samples_per_class",
    [
        # 7 and 15 positive slots: both mining paths (a loop per slot up to
        # mining.LOOP_QUERIES_MAX, sorted buckets beyond) of the losses that mine.
        (losses_lib.TripletSemiHardLoss, 8),
        (losses_lib.TripletSemiHardLoss, 16),
        (losses_lib.TripletBatchAllLoss, 8),
        (losses_lib.TripletBatchAllLoss, 16),
        (losses_lib.TripletHardLoss, 8),
        (losses_lib.MultiSimilarityLoss, 8),
        (losses_lib.CircleLoss, 8),
        (losses_lib.SupConLoss, 8),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_xla_compiles_every_pk_loss_to_the_same_value_and_gradient(loss, samples_per_class):
    """`--jit_compile` compiles the whole train step: every P×K loss must compile under XLA."""
    labels = tf.constant(np.repeat(np.arange(10), samples_per_class))
    embeddings = tf.math.l2_normalize(
        tf.random.stateless_normal([10 * samples_per_class, 16], seed=[0, 1]), axis=1
    )

    def value_and_gradient(y, e):
        with tf.GradientTape() as tape:
            tape.watch(e)
            value = loss()(y, e)
        return value, tape.gradient(value, e)

    compiled = tf.function(value_and_gradient, jit_compile=True)(labels, embeddings)
    eager = value_and_gradient(labels, embeddings)
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5)
    # float32 round-off: XLA orders the sums differently (circle's gamma = 80 amplifies it).
    np.testing.assert_allclose(compiled[1], eager[1], rtol=1e-4, atol=1e-5)
