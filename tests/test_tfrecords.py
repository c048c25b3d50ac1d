"""Class shards: writing (atomic, one class per shard), loading, and the streaming P×K reader."""

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from siamese_tf.data import (
    Source,
    class_shard_pk_batches,
    load_class_shards,
    load_source,
    open_class_shards,
    prepare_class_shards,
    write_class_shards,
)
from siamese_tf.data.tfrecords import ClassShardWriter
from siamese_tf.errors import InputError

# Class c has COUNTS[c] examples; pixel [0, 0] of example j of class c is 20 * c + j, so a batch
# says which records it holds. Class 0 has a single example.
COUNTS = [1, 2, 3, 5, 9, 14]
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)
WITHIN = np.concatenate([np.arange(n) for n in COUNTS])
IMAGES = np.zeros((LABELS.size, 3, 3, 1), np.uint8)
IMAGES[:, 0, 0, 0] = 20 * LABELS + WITHIN
SOURCE = Source(IMAGES, LABELS, "tiny")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "tiny"
    write_class_shards(SOURCE, out, shard_size=4)
    return out


def take(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_index_lists_one_class_per_shard(shards):
    index = json.loads((shards / "index.json").read_text())
    assert index["num_examples"] == LABELS.size and index["num_classes"] == len(COUNTS)
    assert index["image_shape"] == [3, 3, 1] and not index["encoded"]
    for entry, count in zip(index["classes"], COUNTS, strict=True):
        assert entry["count"] == count
        assert [s["count"] for s in entry["shards"]] == [
            min(4, count - i) for i in range(0, count, 4)
        ]
        for shard in entry["shards"]:
            assert shard["file"].startswith(f"class{entry['label']}-")


def test_load_class_shards_round_trip(shards):
    loaded = load_source(f"tfrecord:{shards}")
    assert loaded.image_shape == (3, 3, 1)
    np.testing.assert_array_equal(loaded.labels, LABELS)  # LABELS are sorted: same order
    np.testing.assert_array_equal(loaded.images, IMAGES)
    # A glob reads only the shards it matches.
    part = load_class_shards(str(shards / "class4-*.tfrecord"))
    np.testing.assert_array_equal(part.labels, [4] * 9)


def test_encoded_shards_round_trip(tmp_path):
    for c in range(3):
        (tmp_path / "img" / f"c{c}").mkdir(parents=True)
        for i in range(2):
            buffer = io.BytesIO()
            Image.fromarray(np.full((40, 40), 30 * c + i, np.uint8)).save(buffer, format="PNG")
            (tmp_path / "img" / f"c{c}" / f"{i}.png").write_bytes(buffer.getvalue())
    index = prepare_class_shards(f"folder:{tmp_path / 'img'}", tmp_path / "out", image_size=20)
    assert index["encoded"] and index["image_shape"] == [20, 20, 1]
    assert index["class_names"] == ["c0", "c1", "c2"]
    loaded = load_source(f"tfrecord:{tmp_path / 'out'}", storage="stored")
    assert loaded.encoded and loaded.class_names == ("c0", "c1", "c2")
    np.testing.assert_array_equal(loaded.decoded_images()[:, 0, 0, 0], [0, 1, 30, 31, 60, 61])
    batch, labels = next(
        iter(
            class_shard_pk_batches(
                tmp_path / "out", classes_per_batch=3, samples_per_class=2, seed=0
            )
        )
    )
    assert batch.shape == (6, 20, 20, 1)
    np.testing.assert_array_equal(batch.numpy()[:, 0, 0, 0] // 30, labels.numpy())


def test_writer_flushes_short_shards_when_buffers_are_full(tmp_path):
    writer = ClassShardWriter(tmp_path, shard_size=100, buffer_bytes=1)
    writer.add(IMAGES, LABELS)
    index = writer.close(
        name="t", encoded=False, image_shape=[3, 3, 1], stored_shape=[3, 3, 1], class_names=None
    )
    assert index["num_examples"] == LABELS.size
    assert all(s["count"] == 1 for c in index["classes"] for s in c["shards"])


def test_prepare_is_atomic_and_refuses_foreign_folders(tmp_path):
    for c in range(2):
        (tmp_path / "img" / f"c{c}").mkdir(parents=True)
        (tmp_path / "img" / f"c{c}" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InputError, match="cannot decode image .*a.png"):
        prepare_class_shards(f"folder:{tmp_path / 'img'}", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        prepare_class_shards("digits", tmp_path / "other", overwrite=False)
    with pytest.raises(InputError, match="did not write"):
        prepare_class_shards("digits", tmp_path / "other", overwrite=True)
    prepare_class_shards("digits", tmp_path / "digits", shard_size=1000)
    with pytest.raises(InputError, match="--overwrite"):
        prepare_class_shards("digits", tmp_path / "digits")
    index = prepare_class_shards("digits", tmp_path / "digits", shard_size=100, overwrite=True)
    assert len(list((tmp_path / "digits").glob("*.tfrecord"))) == sum(
        len(c["shards"]) for c in index["classes"]
    )


# --- the streaming reader ------------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["uniform", "proportional"])
def test_reader_yields_p_distinct_classes_of_k_consecutive_records(shards, weighting):
    p, k = 3, 4
    ds = class_shard_pk_batches(
        shards, classes_per_batch=p, samples_per_class=k, seed=1, class_weighting=weighting
    )
    for images, labels in take(ds, 25):
        assert images.shape == (p * k, 3, 3, 1)
        values = images[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(values // 20, labels)  # labels match the records
        groups = labels.reshape(p, k)
        assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == p
        assert 0 not in groups[:, 0]  # the single-example class is never drawn
        for group in values.reshape(p, k):
            n = COUNTS[group[0] // 20]
            j = group % 20
            # K consecutive records of the class, wrapping round: distinct when n >= K.
            np.testing.assert_array_equal(j, (j[0] + np.arange(k)) % n)


def test_reader_is_deterministic_and_resumes_exactly(shards):
    kwargs = dict(classes_per_batch=2, samples_per_class=3, seed=7)
    first = take(class_shard_pk_batches(shards, **kwargs), 10)
    again = take(class_shard_pk_batches(shards, **kwargs), 10)
    resumed = take(class_shard_pk_batches(shards, start_step=6, **kwargs), 4)
    other = take(class_shard_pk_batches(shards, stream=1, **kwargs), 10)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(first[6:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    assert sum(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True)) < 3


def test_reader_visits_every_record(shards):
    ds = class_shard_pk_batches(shards, classes_per_batch=2, samples_per_class=2, seed=3)
    seen = {int(v) for images, _ in take(ds, 150) for v in images[:, 0, 0, 0]}
    assert seen == {int(v) for v in IMAGES[LABELS > 0, 0, 0, 0]}


def test_reader_bad_input(shards, tmp_path):
    with pytest.raises(InputError, match="only 5 classes"):
        class_shard_pk_batches(shards, classes_per_batch=6, samples_per_class=2, seed=0)
    with pytest.raises(InputError, match=">= 1"):
        class_shard_pk_batches(shards, classes_per_batch=2, samples_per_class=0, seed=0)
    with pytest.raises(InputError, match="no index.json"):
        open_class_shards(tmp_path)
    with pytest.raises(InputError, match="no folder or files match"):
        open_class_shards(str(tmp_path / "*.tfrecord"))


def test_single_example_classes_are_reported_once(tmp_path, caplog):
    labels = np.array([0, 0, 1, 1, 2, 3, 3, 40])  # labels 2 and 40 have one example
    out = tmp_path / "s"
    write_class_shards(Source(np.zeros((8, 2, 2, 1), np.uint8), labels, "singles"), out)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            class_shard_pk_batches(out, classes_per_batch=2, samples_per_class=2, seed=0)
    reports = [r for r in caplog.records if "single example" in r.getMessage()]
    assert len(reports) == 1 and "labels 2, 40" in reports[0].getMessage()


def test_prepare_streams_a_tfds_split(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        index = prepare_class_shards("tfds:mnist:train", tmp_path / "out", shard_size=2)
    assert index["encoded"] and index["num_examples"] == 24
    assert index["image_shape"] == [28, 28, 1] and len(index["class_names"]) == 10
    loaded = load_source(f"tfrecord:{tmp_path / 'out'}", storage="stored")
    assert loaded.encoded and loaded.decoded_images([0]).shape == (1, 28, 28, 1)
