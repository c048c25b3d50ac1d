"""Class augmentation: each training class rotated by quarter turns becomes new classes.

A character turned upside down is a different character as far as a one-shot learner is
concerned; adding the 90°, 180° and 270° turns of every training class as classes of their own
quadruples the classes a P×K batch can draw from. Few-shot Omniglot work (Santoro et al. 2016,
Vinyals et al. 2016, Snell et al. 2017) trains this way. Apply it to the training split only:
validation and test classes stay upright, as the classes a user will query are.
"""

from __future__ import annotations

import numpy as np

from siamese_tf.data.source import Source
from siamese_tf.errors import InputError

QUARTER_TURNS = (1, 2, 3)


def rotated_classes(
    source: Source, quarter_turns=QUARTER_TURNS, label_offset: int | None = None
) -> Source:
    """The source plus, for each k in `quarter_turns`, every image turned by k × 90° as new classes.

    The images are decoded once on host (the rotation must act on pixels, not encoded bytes);
    rotated copies of class c get label `c + k * label_offset`, so every (class, turn) is a
    distinct class and upright labels keep their values.

    Args:
      source: the training source; its images must be square.
      quarter_turns: distinct turns from {1, 2, 3}, counter-clockwise.
      label_offset: at least the number of labels of the whole dataset, so that no rotated
        class takes the label of a held-out class; default: the source's largest label + 1.

    Returns:
      A decoded source with `len(source) * (1 + len(quarter_turns))` examples.

    Raises:
      InputError: non-square images, turns outside {1, 2, 3} or repeated, or a label_offset
        not above every label.
    """
    turns = tuple(int(k) for k in quarter_turns)
    if not turns or len(set(turns)) != len(turns) or not set(turns) <= set(QUARTER_TURNS):
        raise InputError(f"quarter_turns must be distinct values of 1, 2, 3, got {quarter_turns}")
    height, width, _ = source.image_shape
    if height != width:
        raise InputError(
            f"rotating classes needs square images, got {height}x{width}: set --image_size"
        )
    upright = source.decoded_images()
    offset = int(source.labels.max()) + 1 if label_offset is None else int(label_offset)
    if offset <= source.labels.max():
        raise InputError(f"label_offset={offset} must exceed every label ({source.labels.max()})")
    images = [upright] + [np.rot90(upright, k, axes=(1, 2)) for k in turns]
    labels = [source.labels] + [source.labels + k * offset for k in turns]
    class_names = None
    if source.class_names is not None:
        # Exactly `offset` upright names (labels are < offset), so label c + k·offset indexes
        # the rotated copy of name c.
        names = (list(source.class_names) + [""] * offset)[:offset]
        class_names = tuple(names) + tuple(f"{name}_rot{90 * k}" for k in turns for name in names)
    return Source(
        images=np.ascontiguousarray(np.concatenate(images)),
        labels=np.concatenate(labels),
        name=f"{source.name}+rotated",
        image_shape=source.image_shape,
        class_names=class_names,
        groups=None if source.groups is None else np.tile(source.groups, 1 + len(turns)),
        group_names=source.group_names,
    )
