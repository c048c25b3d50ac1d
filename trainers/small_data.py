"""Fits a run's config to its data before anything is written: adapt a default, or say the fix.

Small data (a folder of ten people, a few images each) must train with the defaults or say
exactly what to change. Each check here either

* adapts a setting the user left at its default (the caller says which ones it may adapt) and
  returns a note saying what was chosen: the held-out fractions of a class split (each held-out
  split needs 2 classes to form negative pairs), P (`classes_per_batch`) when the training split
  has fewer classes, K (`samples_per_class`) when its largest class is smaller, the pairs per
  batch of a pair loss when the replicas cannot share them evenly; or
* raises an `InputError` naming the split, the count and the flag and value that fix it, when
  the user set the value or no value can serve.

The adapted config is what the run records in config.json, so evaluation rebuilds the same
split, and the same command adapts the same way when it resumes. Runs on host.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from siamese_tf.data import Source, split_indices
from siamese_tf.errors import InputError
from trainers.config import TrainConfig
from trainers.losses import LABELLED_LOSSES

# Classes a held-out split needs: two, so that it holds negative pairs.
MIN_HELD_OUT_CLASSES = 2
# Held-out fractions tried when a class split must hold out more classes.
_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(1, 10))


def class_name(source: Source, label) -> str:
    """A class as the user knows it: its folder (or TFDS) name when known, else its label."""
    names = source.class_names
    if names is not None and 0 <= int(label) < len(names) and names[int(label)]:
        return repr(names[int(label)])
    return f"label {int(label)}"


def check_classes(source: Source) -> None:
    """Refuses data that cannot train a metric: fewer than 2 classes, or no class with 2 examples.

    Raises:
      InputError: naming the classes found.
    """
    classes, counts = np.unique(source.labels, return_counts=True)
    if classes.size < 2:
        where = " (one sub-folder per class)" if source.name.startswith("folder:") else ""
        raise InputError(
            f"{source.name} holds 1 class ({class_name(source, classes[0])}, {counts[0]} "
            f"examples): metric learning learns what tells classes apart, so it needs 2 or "
            f"more classes{where}"
        )
    if not np.any(counts >= 2):
        raise InputError(
            f"every class of {source.name} has a single example: positive pairs need 2 "
            "examples of one class; add examples"
        )


def fit_split(config: TrainConfig, source: Source, adaptable=()) -> tuple:
    """Checks that the split can be drawn; raises held-out fractions the data needs raised.

    With `split_by=class` each held-out split needs 2 classes (negative pairs); with
    `split_by=example` every class must reach every split (stratified), so the held-out
    splits need as many examples as there are classes. When the fractions fail that, the ones
    in `adaptable` are raised, in steps of 0.05, to the smallest total that works.

    Args:
      config: the run's config.
      source: the whole dataset.
      adaptable: names of the config fields this may change.

    Returns:
      `(config, notes)`: the config to run (changed or not) and the notes saying what changed.

    Raises:
      InputError: the split cannot be drawn with the fractions the user set, or at all; the
        message names the split, the count and the flags that fix it.
    """
    if config.split_by not in ("class", "example"):
        return config, []  # Another kind of split: drawn (and checked) as it is.
    labels = source.labels
    classes = np.unique(labels)
    now = _split_counts(labels, config.calibration_fraction, config.test_fraction, config)
    if now is not None:
        return config, []
    fixed = [n for n in ("calibration_fraction", "test_fraction") if n not in set(adaptable)]
    found = _search_fractions(labels, config, fixed)
    if found is not None:
        cal, test, counts = found
        new = dataclasses.replace(config, calibration_fraction=cal, test_fraction=test)
        if config.split_by == "class":
            why = (
                f"split_by=class on {classes.size} classes: {counts[0]} / {counts[1]} / "
                f"{counts[2]} for training / calibration / test; a held-out split needs "
                f"{MIN_HELD_OUT_CLASSES}"
            )
        else:
            why = (
                f"split_by=example on {classes.size} classes of {counts[3]}-{counts[4]} "
                f"examples: {counts[0]} / {counts[1]} / {counts[2]} examples for training / "
                "calibration / test, every class in each"
            )
        return new, [f"--calibration_fraction={cal} --test_fraction={test} ({why})"]
    suggestion = _search_fractions(labels, config, fixed=[])
    if config.split_by == "example":
        _raise_example_split(config, source, suggestion)
    if suggestion is None:
        raise InputError(
            f"split_by=class needs 2 classes each for training, calibration and test, so at "
            f"least 6 (and 2 held-out classes need more than 30%); {source.name} has "
            f"{classes.size}: use --split_by=example (every split then holds every class) or "
            "add classes"
        )
    cal, test, _ = suggestion
    counts = _class_split_counts(classes, config.calibration_fraction, config.test_fraction, config)
    if counts is None or min(counts[1:]) >= MIN_HELD_OUT_CLASSES:
        problem = (
            f"cannot split {classes.size} classes into training, calibration and test with "
            f"--calibration_fraction={config.calibration_fraction} "
            f"--test_fraction={config.test_fraction}"
        )
    else:
        short = "calibration" if counts[1] < MIN_HELD_OUT_CLASSES else "test"
        count = counts[1] if short == "calibration" else counts[2]
        problem = (
            f"the {short} split gets {count} of the {classes.size} classes (split_by=class, "
            f"--calibration_fraction={config.calibration_fraction} "
            f"--test_fraction={config.test_fraction}): it needs {MIN_HELD_OUT_CLASSES} to form "
            "negative pairs"
        )
    raise InputError(f"{problem}; set --calibration_fraction={cal} --test_fraction={test}")


def fit_batch(config: TrainConfig, train: Source, adaptable=(), replicas: int = 1) -> tuple:
    """Fits the batch to the training split and the replicas: P and K, or pairs per batch.

    P (`classes_per_batch`) may not exceed the training classes with 2+ examples and must be a
    multiple of the replicas; K (`samples_per_class`) may not exceed the largest training class.
    Pair losses use neither: `pairs_per_batch` must give every replica the same number of
    pairs, 2 or more. A value in `adaptable` that breaks this is changed to the nearest that
    fits (P and K: the largest), with a note.

    Args:
      config: the run's config.
      train: the training split (after class augmentation, if any).
      adaptable: names of the config fields this may change.
      replicas: replicas in sync (each takes whole P×K groups).

    Returns:
      `(config, notes)`.

    Raises:
      InputError: naming the training split's class count and the flag value that fits.
    """
    adaptable = set(adaptable)
    classes, counts = np.unique(train.labels, return_counts=True)
    eligible = int(np.sum(counts >= 2))
    if eligible < 1 or classes.size < 2:
        raise InputError(
            f"the training split has {classes.size} classes, {eligible} with 2+ examples: "
            "training needs 2 classes and a class with 2+ examples; "
            + _more_training_classes(config)
        )
    if config.loss not in LABELLED_LOSSES:  # Pair batches: any classes serve, P and K unused.
        return _fit_pairs(config, adaptable, replicas)
    notes, changes = [], {}
    p, k = config.classes_per_batch, config.samples_per_class
    fitting_p = eligible - eligible % replicas
    if eligible < 2 or fitting_p < 1:
        raise InputError(
            f"the training split has {eligible} classes with 2+ examples: a P×K batch needs 2 "
            f"(and one per replica, {replicas}); " + _more_training_classes(config)
        )
    if p > eligible or p % replicas:
        if "classes_per_batch" not in adaptable:
            reason = (
                f"exceeds the {eligible} classes with 2+ examples in the training split"
                if p > eligible
                else f"is not a multiple of the {replicas} replicas"
            )
            raise InputError(
                f"--classes_per_batch={p} {reason}; set --classes_per_batch={fitting_p}"
            )
        changes["classes_per_batch"] = fitting_p
        notes.append(
            f"--classes_per_batch={fitting_p} (the training split has {eligible} classes with "
            f"2+ examples{f', {replicas} replicas' if replicas > 1 else ''})"
        )
    largest = int(counts.max())
    if k > largest:
        if "samples_per_class" not in adaptable:
            raise InputError(
                f"--samples_per_class={k} exceeds the largest class of the training split "
                f"({largest} examples); set --samples_per_class={largest}"
            )
        changes["samples_per_class"] = largest
        notes.append(f"--samples_per_class={largest} (the largest training class)")
    if changes:
        config = dataclasses.replace(config, **changes)
    return config, notes


def _fit_pairs(config: TrainConfig, adaptable: set, replicas: int) -> tuple:
    """`pairs_per_batch` as a multiple of the replicas, 2+ pairs each (see `fit_batch`)."""
    pairs = config.pairs_per_batch
    if pairs % replicas == 0 and pairs >= 2 * replicas:
        return config, []
    fitting = max(pairs - pairs % replicas, 2 * replicas)
    if "pairs_per_batch" not in adaptable:
        raise InputError(
            f"--pairs_per_batch={pairs} does not give each of the {replicas} replicas the same "
            f"number of pairs, 2 or more; set --pairs_per_batch={fitting}"
        )
    note = f"--pairs_per_batch={fitting} (a multiple of the {replicas} replicas)"
    return dataclasses.replace(config, pairs_per_batch=fitting), [note]


def check_held_out(name: str, split: Source, config: TrainConfig) -> None:
    """Refuses a calibration or test split that cannot form positive and negative pairs.

    Raises:
      InputError: naming the split, its class count and the flag that fixes it.
    """
    classes, counts = np.unique(split.labels, return_counts=True)
    multi = int(np.sum(counts >= 2))
    if classes.size >= MIN_HELD_OUT_CLASSES and multi >= 1:
        return
    flag = f"--{name}_fraction"
    value = getattr(config, f"{name}_fraction")
    plural = "es" if classes.size != 1 else ""
    raise InputError(
        f"the {name} split has {classes.size} class{plural} ({multi} with 2+ examples): its pairs "
        f"need {MIN_HELD_OUT_CLASSES} classes and a class with 2+ examples; raise {flag} "
        f"(now {value})"
    )


def _class_split_counts(classes, calibration: float, test: float, config) -> tuple | None:
    """(training, calibration, test) class counts of a class split; None if it cannot be drawn."""
    try:
        splits = split_indices(
            classes,
            calibration_fraction=calibration,
            test_fraction=test,
            seed=config.seeds.split,  # as `TrainConfig.split` draws it
            split_by="class",
        )
    except InputError:
        return None
    # One row per class: the split of `classes` assigns them as the split of the data does.
    return (splits.train.size, splits.calibration.size, splits.test.size)


def _split_counts(labels, calibration: float, test: float, config) -> tuple | None:
    """Sizes of a split that serves training, or None when it cannot be drawn or serve.

    By class: (training, calibration, test) class counts, each held-out split with 2+ classes
    and training with 2+. By example: (training, calibration, test) example counts and the
    smallest and largest class size.
    """
    if config.split_by == "class":
        counts = _class_split_counts(np.unique(labels), calibration, test, config)
        if counts is None or counts[0] < 2 or min(counts[1:]) < MIN_HELD_OUT_CLASSES:
            return None
        return counts
    try:
        splits = split_indices(
            labels,
            calibration_fraction=calibration,
            test_fraction=test,
            seed=config.seeds.split,  # as `TrainConfig.split` draws it
            split_by="example",
        )
    except InputError:
        return None
    sizes = np.unique(labels, return_counts=True)[1]
    return (
        splits.train.size,
        splits.calibration.size,
        splits.test.size,
        int(sizes.min()),
        int(sizes.max()),
    )


def _search_fractions(labels, config: TrainConfig, fixed) -> tuple | None:
    """The smallest held-out fractions (not below the config's) that give a usable split.

    Returns:
      `(calibration_fraction, test_fraction, counts)` (see `_split_counts`), or None.
    """

    def options(name):
        value = getattr(config, name)
        if name in fixed:
            return [value]
        return [value] + [f for f in _FRACTIONS if f > value]

    candidates = sorted(
        itertools.product(options("calibration_fraction"), options("test_fraction")),
        key=lambda c: (round(c[0] + c[1], 6), abs(c[0] - c[1])),
    )
    # Training keeps at least half the examples, or 30% of the classes (and 2).
    most = 0.7 if config.split_by == "class" else 0.5
    for cal, test in candidates:
        if cal + test > most + 1e-9:
            continue
        counts = _split_counts(labels, cal, test, config)
        if counts is not None:
            return cal, test, counts
    return None


def _raise_example_split(config: TrainConfig, source: Source, suggestion) -> None:
    """Raises why a split by example fails: the classes too small for it, and the fix."""
    classes, counts = np.unique(source.labels, return_counts=True)
    fractions = (
        f"--calibration_fraction={config.calibration_fraction} "
        f"--test_fraction={config.test_fraction}"
    )
    if suggestion is not None:
        cal, test, _ = suggestion
        raise InputError(
            f"split_by=example puts examples of every one of the {classes.size} classes in the "
            f"calibration and test splits, and {fractions} leaves them too few examples; set "
            f"--calibration_fraction={cal} --test_fraction={test}, or use --split_by=class"
        )
    # The smallest class size that splits once the smaller classes are left out.
    for need in range(2, min(int(counts.max()), 100) + 1):
        kept = counts >= need
        if kept.sum() < 2:
            break
        kept_labels = source.labels[np.isin(source.labels, classes[kept])]
        fractions_now = (config.calibration_fraction, config.test_fraction)
        if _split_counts(kept_labels, *fractions_now, config) is None:
            continue
        small = np.flatnonzero(~kept)
        small = small[np.argsort(counts[small], kind="stable")]
        shown = ", ".join(f"{class_name(source, classes[i])}: {counts[i]}" for i in small[:5])
        more = f" and {small.size - 5} more" if small.size > 5 else ""
        several = small.size > 1
        raise InputError(
            f"split_by=example puts examples of every class in the training, calibration and "
            f"test splits, and {small.size} class{'es are' if several else ' is'} too small "
            f"for that (examples of {shown}{more}); remove the classes with fewer than {need} "
            "examples, or use --split_by=class (whole classes per split)"
        )
    raise InputError(
        f"split_by=example puts examples of every class in the training, calibration and test "
        f"splits, and the {classes.size} classes of {source.name} are too small for that "
        f"(largest: {counts.max()} examples); use --split_by=class (whole classes per split) "
        "or add examples"
    )


def _more_training_classes(config: TrainConfig) -> str:
    if config.split_by == "class":
        return (
            "lower --calibration_fraction / --test_fraction, use --split_by=example, or add classes"
        )
    return "add classes with 2+ examples"
