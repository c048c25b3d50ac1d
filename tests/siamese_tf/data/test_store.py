"""The prepared store: written from any spec, read by row id, equal to in-memory data, checked."""

import json
import pathlib
import shutil
import zlib

import numpy as np
import pytest
import tensorflow as tf
from helpers import take_batches as batches
from helpers import write_flat_pngs as write_pngs

from siamese_tf.data import (
    StoreError,
    balanced_pairs,
    load_source,
    open_store,
    open_stream,
    pk_batches,
    write_store,
)
from siamese_tf.data.store import layout, store_error_from
from siamese_tf.errors import InputError

# Class c has COUNTS[c] examples; pixel [0, 0] of example j of class c is 20 * c + j. Rows are
# shuffled so the store's record order is not the class order.
COUNTS = [1, 2, 3, 5, 9, 14]
_ORDER = np.random.default_rng(0).permutation(sum(COUNTS))
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)[_ORDER]
IMAGES = np.zeros((LABELS.size, 3, 3, 1), np.uint8)
IMAGES[:, 0, 0, 0] = (
    20 * np.repeat(np.arange(len(COUNTS)), COUNTS) + np.concatenate([np.arange(n) for n in COUNTS])
)[_ORDER]


@pytest.fixture(scope="module")
def raw_store(tmp_path_factory):
    """A store of raw uint8 rows (from an npz), in small shards; and the npz spec."""
    root = tmp_path_factory.mktemp("raw")
    np.savez(root / "rows.npz", images=IMAGES, labels=LABELS)
    spec = f"npz:{root / 'rows.npz'}"
    write_store(open_stream(spec), str(root / "store"), shard_bytes=40)
    return root / "store", spec


@pytest.fixture(scope="module")
def png_store(tmp_path_factory):
    """A store of encoded PNGs (from an image folder); and the folder spec."""
    root = tmp_path_factory.mktemp("png")
    write_pngs(root / "img")
    spec = f"folder:{root / 'img'}"
    write_store(open_stream(spec), str(root / "store"))
    return root / "store", spec


def test_metadata_and_index_describe_the_records(raw_store):
    store, _ = raw_store
    meta = json.loads((store / layout.META_FILE).read_text())
    assert meta["format"] == layout.FORMAT and meta["version"] == layout.VERSION
    assert meta["num_examples"] == LABELS.size and meta["num_classes"] == len(COUNTS)
    assert meta["image_shape"] == [3, 3, 1] and not meta["encoded"]
    assert len(meta["shards"]) > 1  # 40-byte shards: 5 records each
    assert sum(s["records"] for s in meta["shards"]) == LABELS.size
    with np.load(store / layout.INDEX_FILE) as index:
        np.testing.assert_array_equal(index["labels"], LABELS)
        np.testing.assert_array_equal(index["class_counts"], COUNTS)
        for c, (start, count) in enumerate(zip(index["class_starts"], index["class_counts"])):
            ids = index["class_order"][start : start + count]
            np.testing.assert_array_equal(ids, np.flatnonzero(LABELS == c))


def test_store_rows_equal_the_source_rows(raw_store, png_store):
    for store, spec in (raw_store, png_store):
        streamed, loaded = load_source(f"prepared:{store}"), load_source(spec)
        assert not streamed.in_memory and streamed.nbytes == 0
        np.testing.assert_array_equal(streamed.labels, loaded.labels)
        assert streamed.image_shape == loaded.image_shape
        assert streamed.class_names == loaded.class_names
        np.testing.assert_array_equal(streamed.decoded_images(), loaded.decoded_images())
        rows = [5, 0, 5, 3]  # any order, repeats
        np.testing.assert_array_equal(streamed.decoded_images(rows), loaded.decoded_images(rows))
        part = streamed.take([4, 1])
        np.testing.assert_array_equal(part.decoded_images(), loaded.decoded_images([4, 1]))


def test_decoded_batches_are_bounded_and_pk_batches_read_their_rows(raw_store):
    source = load_source(f"prepared:{raw_store[0]}")
    sizes = [len(b) for b in source.decoded_batches(batch_size=4)]
    assert max(sizes) == 4 and sum(sizes) == LABELS.size
    # P×K batches read the rows they name (pixel [0, 0] is 20 * class + j).
    for x, y in batches(pk_batches(source, classes_per_batch=3, samples_per_class=2, seed=1), 5):
        np.testing.assert_array_equal(x[:, 0, 0, 0] // 20, y)


def test_samplers_draw_the_same_batches_from_store_and_memory(raw_store, png_store):
    for store, spec in (raw_store, png_store):
        streamed, loaded = load_source(f"prepared:{store}"), load_source(spec)
        for sampler, kwargs in (
            (pk_batches, dict(classes_per_batch=2, samples_per_class=3)),
            (balanced_pairs, dict(batch_size=5)),
        ):
            full = batches(sampler(streamed, seed=4, **kwargs), 6)
            assert len(full) == 6
            memory = batches(sampler(loaded, seed=4, **kwargs), 6)
            resumed = batches(sampler(streamed, seed=4, start_step=2, **kwargs), 4)
            for a, b in [*zip(full, memory, strict=True), *zip(full[2:], resumed, strict=True)]:
                for x, y in zip(a, b, strict=True):
                    np.testing.assert_array_equal(x, y)


def test_resize_on_open(png_store):
    source = open_store(str(png_store[0]), image_size=4)
    assert source.image_shape == (4, 4, 1) and source.decoded_images([0]).shape == (1, 4, 4, 1)


def test_prepare_streams_a_tfds_split(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        meta = write_store(open_stream("tfds:mnist:train"), str(tmp_path / "out"))
    assert meta["encoded"] and meta["num_examples"] == 24
    assert meta["image_shape"] == [28, 28, 1] and len(meta["class_names"]) == 10
    loaded = load_source(f"tfrecord:{tmp_path / 'out'}")  # the documented alias
    assert loaded.encoded and loaded.decoded_images([0]).shape == (1, 28, 28, 1)


def test_bad_image_leaves_nothing(tmp_path):
    write_pngs(tmp_path / "img")
    (tmp_path / "img" / "c1" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match=r"cannot decode image .*c1/9\.png"):
        write_store(open_stream(f"folder:{tmp_path / 'img'}"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_output_folder_rules(tmp_path, raw_store):
    _, spec = raw_store
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_store(open_stream(spec), str(tmp_path / "busy"))
    with pytest.raises(InputError, match="did not write"):
        write_store(open_stream(spec), str(tmp_path / "busy"), overwrite=True)
    write_store(open_stream(spec), str(tmp_path / "store"))
    with pytest.raises(InputError, match="--overwrite"):
        write_store(open_stream(spec), str(tmp_path / "store"))
    meta = write_store(open_stream("digits"), str(tmp_path / "store"), overwrite=True)
    assert meta["num_examples"] == 1797
    assert len(load_source(f"prepared:{tmp_path / 'store'}")) == 1797


def copy_store(src, dst):
    return pathlib.Path(shutil.copytree(src, dst))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("not_a_folder", "is not a prepared store"),
        ("no_meta", r"no store\.json"),
        ("legacy", "class-shard TFRecords of an earlier siamese_tf"),
        ("other_version", "store version 99"),
        ("corrupt_meta", "unreadable or corrupt"),
        ("truncated_index", "index.npz is truncated or corrupt"),
        ("missing_shard", r"shard records-00001\.bin is missing"),
        ("truncated_shard", r"records-00000\.bin is truncated"),
    ],
)
def test_a_bad_store_is_one_clear_error(tmp_path, raw_store, damage, message):
    store = copy_store(raw_store[0], tmp_path / "store")
    meta_path = store / layout.META_FILE
    if damage == "not_a_folder":
        store = tmp_path / "nowhere"
    elif damage == "no_meta":
        meta_path.unlink()
    elif damage == "legacy":
        meta_path.unlink()
        (store / layout.LEGACY_INDEX_FILE).write_text('{"format": "siamese_tf.class_shards"}')
    elif damage == "other_version":
        meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": 99}))
    elif damage == "corrupt_meta":
        meta_path.write_text("{ not json")
    elif damage == "truncated_index":
        data = (store / layout.INDEX_FILE).read_bytes()
        (store / layout.INDEX_FILE).write_bytes(data[: len(data) // 2])
    elif damage == "missing_shard":
        (store / "records-00001.bin").unlink()
    elif damage == "truncated_shard":
        data = (store / "records-00000.bin").read_bytes()
        (store / "records-00000.bin").write_bytes(data[:-3])
    with pytest.raises(StoreError, match=message) as raised:
        load_source(f"prepared:{store}")
    assert "\n" not in str(raised.value)


def test_a_corrupt_record_names_its_record_and_class(tmp_path, png_store):
    store = copy_store(png_store[0], tmp_path / "store")
    with np.load(store / layout.INDEX_FILE) as index:
        offset, length = int(index["offset"][6]), int(index["length"][6])
        assert zlib.crc32((store / "records-00000.bin").read_bytes()[offset : offset + length])
    shard = bytearray((store / "records-00000.bin").read_bytes())
    shard[offset + length // 2] ^= 0xFF  # same size: only the checksum can tell
    (store / "records-00000.bin").write_bytes(bytes(shard))
    source = load_source(f"prepared:{store}")  # opening does not read records
    with pytest.raises(tf.errors.OpError) as raised:
        list(source.decoded_batches())
    error = store_error_from(raised.value)
    assert error is not None
    assert "record 6 (class 'c1', label 1) is corrupt" in str(error)


def test_a_store_in_a_non_local_file_system_reads_the_same(tmp_path):
    """TensorFlow's ram:// file system stands in for a bucket: every access goes through
    `tf.io.gfile` (no os.pread), as for gs://."""
    meta = write_store(open_stream("digits"), "ram://stores/digits", shard_bytes=20_000)
    assert len(meta["shards"]) > 1
    streamed, loaded = load_source("prepared:ram://stores/digits"), load_source("digits")
    np.testing.assert_array_equal(streamed.decoded_images(), loaded.decoded_images())
    kwargs = dict(classes_per_batch=4, samples_per_class=3, seed=0)
    for a, b in zip(
        batches(pk_batches(streamed, **kwargs), 3), batches(pk_batches(loaded, **kwargs), 3)
    ):
        np.testing.assert_array_equal(a[0], b[0])
