"""A TFDS split: `tfds:NAME[:VERSION][:SPLIT]`, local builder folders first."""

from __future__ import annotations

import re

from siamese_tf.data.sources.arrays import as_uint8_images
from siamese_tf.data.stream import CHUNK, SourceStream
from siamese_tf.errors import InputError

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# A ClassLabel feature of one of these names gives the examples' groups (Source.groups).
GROUP_FEATURES = ("group", "alphabet")


def parse_tfds_spec(arg: str) -> tuple[str, str]:
    """`NAME[:VERSION][:SPLIT]` → (builder name with version, split); split defaults to train.

    The split may hold colons of its own (`train[:80%]`).
    """
    name, _, rest = arg.partition(":")
    version, _, after = rest.partition(":")
    if _VERSION.match(version):
        name, rest = f"{name}:{version}", after
    if not name:
        raise InputError("tfds: expected tfds:NAME[:SPLIT], e.g. tfds:mnist:train")
    return name, rest or "train"


def tfds_stream(arg: str, *, data_dir: str = "", manual_dir: str = "") -> SourceStream:
    """A TFDS split; images stay encoded when the feature is a `tfds.features.Image`.

    A `ClassLabel` feature named `group` or `alphabet` (Omniglot) becomes the examples' groups.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from siamese_tf.data import tfds_local

    name, split = parse_tfds_spec(arg)
    builder = tfds_local.load_local_builder(
        name, data_dir=data_dir or None, manual_dir=manual_dir or None
    )
    features = builder.info.features
    keys = builder.info.supervised_keys
    image_key, label_key = keys if isinstance(keys, tuple) and len(keys) == 2 else (None, None)
    if not (isinstance(image_key, str) and isinstance(label_key, str)):
        image_key, label_key = "image", "label"
    for key in (image_key, label_key):
        if key not in features:
            raise InputError(
                f"tfds:{name} has no feature {key!r} (features: {', '.join(features)}) and no "
                "(image, label) supervised keys"
            )
    encoded = isinstance(features[image_key], tfds.features.Image)
    decoders = {image_key: tfds.decode.SkipDecoding()} if encoded else None
    try:
        ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    except (AssertionError, ValueError, KeyError, FileNotFoundError, tf.errors.OpError) as err:
        detail = " ".join(str(err).split())
        raise InputError(
            f"cannot read tfds:{name} split {split!r} from {builder.data_dir}: {detail}. "
            "Build it first (tfds build, or pass manual_dir / --manual_dir for a local builder)"
        ) from None
    group_key = next(
        (
            key
            for key in GROUP_FEATURES
            if key in features and isinstance(features[key], tfds.features.ClassLabel)
        ),
        None,
    )
    group_names = list(features[group_key].names) if group_key else None
    ds = ds.map(
        lambda ex: (ex[image_key], ex[label_key], ex[group_key] if group_key else ex[label_key])
    ).batch(CHUNK)
    label_feature = features[label_key]
    is_class_label = isinstance(label_feature, tfds.features.ClassLabel)
    names = list(label_feature.names) if is_class_label else None

    def chunks():
        seen = 0
        for images, labels, groups in ds.as_numpy_iterator():
            items = list(images) if encoded else as_uint8_images(images, f"tfds:{name}")
            names_ = [f"tfds:{name}:{split} example {seen + i}" for i in range(len(labels))]
            yield (items, labels, names_, groups) if group_key else (items, labels, names_)
            seen += len(labels)

    return SourceStream(f"tfds:{name}:{split}", encoded, chunks(), names, group_names)
