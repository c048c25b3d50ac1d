"""Sources: every spec, encoded storage with decode-after-sampling, and each bad-input case."""

import gzip
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import png_bytes as encode
from helpers import write_flat_pngs

from siamese_tf.data import Source, balanced_pairs, load_source, pk_batches
from siamese_tf.data.images import sniff_format
from siamese_tf.errors import InputError


def gray(seed, size=(6, 6)):
    return np.random.RandomState(seed).randint(0, 256, size).astype(np.uint8)


def write_folder(
    root, classes=3, per_class=4, fmts=("PNG", "JPEG", "BMP", "GIF"), size=(6, 6), rgb=False
):
    """class<c>/<i>.<fmt> files; returns {path: pixels} for lossless formats."""
    pixels = {}
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            fmt = fmts[(c + i) % len(fmts)]
            array = gray(10 * c + i, size)
            if rgb:
                array = np.stack([array, array[::-1], array.T], axis=-1)
            path = root / f"class{c}" / f"{i}.{fmt.lower()}"
            path.write_bytes(encode(array, fmt))
            if fmt in ("PNG", "BMP"):
                pixels[path] = array if rgb else array[..., None]
    return pixels


# --- arrays, digits, mnist, npz ------------------------------------------------------------------


def test_digits_is_the_embedded_default():
    source = load_source("digits")
    assert source.image_shape == (8, 8, 1) and len(source) == 1797
    assert source.labels.dtype == np.int64 and source.map_fn is None
    assert not source.encoded and source.images.max() == 255


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files(tmp_path):
    train_x = np.arange(5 * 4 * 4).reshape(5, 4, 4) % 256
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 1, 0]))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", train_x[:2])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 3]))
    train = load_source(f"mnist:{tmp_path}")
    np.testing.assert_array_equal(train.images[..., 0], train_x)
    np.testing.assert_array_equal(train.labels, [0, 1, 2, 1, 0])
    assert len(load_source(f"mnist:{tmp_path}:test")) == 2
    assert len(load_source(f"mnist:{tmp_path}:all")) == 7
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="t10k-labels-idx1-ubyte"):
        load_source(f"mnist:{tmp_path}:test")


def test_npz_arrays(tmp_path):
    images = np.random.RandomState(0).rand(6, 5, 5).astype(np.float32)  # floats in [0, 1]
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 0, 1, 1, 2, 2]))
    source = load_source(f"npz:{tmp_path / 'd.npz'}")
    assert source.image_shape == (5, 5, 1) and source.images.dtype == np.uint8
    np.testing.assert_array_equal(source.images[..., 0], np.round(images * 255).astype(np.uint8))
    np.savez(tmp_path / "bad.npz", x=images, labels=np.arange(6))
    with pytest.raises(InputError, match="lacks images"):
        load_source(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "str.npz", images=images, labels=np.array(list("aabbcc")))
    with pytest.raises(InputError, match="integers"):
        load_source(f"npz:{tmp_path / 'str.npz'}")


def test_resize_arrays_and_storage_choice(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, (4, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 0, 1, 1]))
    # Downscaling: resizing at load is smaller, so "auto" stores the resized images.
    small = load_source(f"npz:{tmp_path / 'd.npz'}", image_size=4)
    assert small.images.shape == (4, 4, 4, 1) and small.map_fn is None
    # Upscaling: the originals are smaller, so they stay and are resized after sampling.
    big = load_source(f"npz:{tmp_path / 'd.npz'}", image_size=16)
    assert big.images.shape == (4, 8, 8, 1) and big.image_shape == (16, 16, 1)
    assert big.decoded_images().shape == (4, 16, 16, 1)
    decoded = load_source(f"npz:{tmp_path / 'd.npz'}", image_size=16, storage="decoded")
    np.testing.assert_array_equal(decoded.images, big.decoded_images())


# --- image folders -------------------------------------------------------------------------------


def test_folder_of_mixed_formats_decodes_every_format(tmp_path):
    pixels = write_folder(tmp_path / "root")
    source = load_source(f"folder:{tmp_path / 'root'}", storage="stored")
    assert source.encoded and source.image_shape == (6, 6, 1)
    assert source.class_names == ("class0", "class1", "class2")
    np.testing.assert_array_equal(source.labels, np.repeat([0, 1, 2], 4))
    assert {sniff_format(b) for b in source.images} == {"PNG", "JPEG", "BMP", "GIF"}
    decoded = source.decoded_images()
    for row, path in enumerate(sorted((tmp_path / "root").rglob("*.*"))):
        if path in pixels:  # lossless formats decode exactly
            np.testing.assert_array_equal(decoded[row], pixels[path])


def test_folder_rgb_and_nested_classes(tmp_path):
    write_folder(tmp_path / "root" / "alphabet_a", classes=2, rgb=True, fmts=("PNG",))
    write_folder(tmp_path / "root" / "alphabet_b", classes=1, rgb=True, fmts=("JPEG",))
    (tmp_path / "root" / "README.md").write_text("files beside the classes are ignored")
    (tmp_path / "root" / "alphabet_a" / "class0" / ".DS_Store").write_bytes(b"hidden")
    source = load_source(f"folder:{tmp_path / 'root'}", image_size=9)
    assert source.image_shape == (9, 9, 3)
    assert source.class_names == ("alphabet_a/class0", "alphabet_a/class1", "alphabet_b/class0")
    assert source.decoded_images([0]).shape == (1, 9, 9, 3)


def test_encoded_images_are_kept_when_smaller_and_decoded_after_sampling(tmp_path):
    # Flat 64x64 pictures compress to a few dozen bytes: far smaller than 4096 decoded bytes.
    write_flat_pngs(tmp_path, classes=4, per_class=3, size=64, step=20)
    source = load_source(f"folder:{tmp_path}")
    assert source.encoded and source.nbytes < len(source) * 64 * 64
    ds = pk_batches(source, classes_per_batch=2, samples_per_class=3, seed=0)
    for images, labels in ds.take(3):
        images, labels = images.numpy(), labels.numpy()
        assert images.shape == (6, 64, 64, 1) and images.dtype == np.uint8
        # Each decoded picture is one of its class's: values 20c .. 20c + 2.
        values = images[:, 0, 0, 0]
        assert np.all(values // 20 == labels) and len(set(values)) == 6
        assert np.all(images == values[:, None, None, None])
    (a, b), same = next(iter(balanced_pairs(source, batch_size=4, seed=0)))
    assert a.shape == b.shape == (4, 64, 64, 1)
    assert np.array_equal(a.numpy()[:2, 0, 0, 0] // 20, b.numpy()[:2, 0, 0, 0] // 20)


def test_mixed_sizes_need_image_size(tmp_path):
    for c, size in ((0, (6, 6)), (1, (6, 7))):
        (tmp_path / f"c{c}").mkdir()
        for i in range(2):
            (tmp_path / f"c{c}" / f"{i}.png").write_bytes(encode(gray(i, size), "PNG"))
    with pytest.raises(InputError, match=r"c0/0.png is 6x6 but .*c1/0.png is 6x7.*image_size"):
        load_source(f"folder:{tmp_path}")
    assert load_source(f"folder:{tmp_path}", image_size=5).image_shape == (5, 5, 1)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"II*\x00" + bytes(40), "unsupported image file .*bad.tiff"),  # a TIFF
        (b"plain text", "unsupported image file .*bad.tiff"),
        (b"", "bad.tiff is empty"),
    ],
)
def test_unsupported_file_is_named(tmp_path, content, message):
    write_folder(tmp_path, classes=2, per_class=2)
    (tmp_path / "class1" / "bad.tiff").write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_source(f"folder:{tmp_path}")


def test_undecodable_file_is_named(tmp_path):
    write_folder(tmp_path, classes=2, per_class=2)
    (tmp_path / "class0" / "broken.png").write_bytes(encode(gray(0), "PNG")[:30])
    with pytest.raises(InputError, match=r"cannot decode image .*class0/broken.png"):
        load_source(f"folder:{tmp_path}")


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(InputError, match="empty"):
        load_source(f"folder:{tmp_path}")
    with pytest.raises(InputError, match="not a folder"):
        load_source(f"folder:{tmp_path / 'nope'}")


# --- TFDS ----------------------------------------------------------------------------------------


def test_tfds_split_keeps_images_encoded():
    with tfds.testing.mock_data(num_examples=20):
        source = load_source("tfds:mnist", storage="stored")
        test = load_source("tfds:mnist:test")
    assert source.encoded and source.image_shape == (28, 28, 1) and len(source) == 20
    assert source.class_names == tuple(str(d) for d in range(10))
    assert source.decoded_images([0, 1]).shape == (2, 28, 28, 1)
    assert len(test) == 20 and test.labels.dtype == np.int64


def test_unknown_dataset_and_spec():
    with pytest.raises(InputError, match="unknown dataset 'no_such_dataset_xyz'"):
        load_source("tfds:no_such_dataset_xyz")
    with pytest.raises(InputError, match="unknown dataset 'imagenet'"):
        load_source("imagenet")


# --- Source --------------------------------------------------------------------------------------


def test_source_take_keeps_storage_and_shape(tmp_path):
    write_folder(tmp_path, classes=2, per_class=3, fmts=("PNG",))
    source = load_source(f"folder:{tmp_path}", image_size=12, storage="stored")
    part = source.take([0, 4])
    assert part.encoded and part.image_shape == (12, 12, 1) and part.class_names
    np.testing.assert_array_equal(part.labels, [0, 1])
    np.testing.assert_array_equal(part.decoded_images(), source.decoded_images([0, 4]))
    assert source.decoded_images([]).shape == (0, 12, 12, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(images=np.zeros((2, 4, 4, 1), np.uint8), labels=[0]), "differ in length"),
        (dict(images=np.zeros((0, 4, 4, 1), np.uint8), labels=[]), "empty"),
        (dict(images=np.zeros((2, 4, 4, 1), np.float32), labels=[0, 1]), "uint8"),
        (dict(images=np.zeros((2, 4, 4, 1), np.uint8), labels=[0.5, 1]), "integers"),
        (dict(images=[b"\x89PNG", b"\x89PNG"], labels=[0, 1]), "image_shape"),
    ],
)
def test_source_rejects_bad_arrays(kwargs, message):
    with pytest.raises(InputError, match=message):
        Source(**kwargs)
