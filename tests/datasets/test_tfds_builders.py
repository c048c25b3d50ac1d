"""The Omniglot TFDS builder folder, built from its `dummy_data/` through `tfds_local`; also
runs the folder's own `tfds new`-style builder test (outside pytest's `testpaths` otherwise)."""

import importlib
import importlib.util
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import ROOT, cli_env, run_cli

from siamese_tf.data import tfds_local
from siamese_tf.errors import InputError

DATASETS = ROOT / "datasets"
LOCAL_DUMMY = DATASETS / "omniglot_local" / "dummy_data"
SPLITS = {"background": 7, "evaluation": 4, "background_small1": 2, "background_small2": 3}


def _load(name, data_dir, manual_dir=None):
    return tfds_local.load_local_builder(
        name, data_dir=data_dir, manual_dir=manual_dir, search_paths=[DATASETS]
    )


@pytest.fixture(scope="module")
def local_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def local_builder(local_data_dir):
    return _load("omniglot_local", local_data_dir, LOCAL_DUMMY)


@pytest.fixture(scope="module")
def local_examples(local_builder):
    return {split: list(tfds.as_numpy(local_builder.as_dataset(split=split))) for split in SPLITS}


def test_local_split_sizes_and_supervised_examples(local_builder, local_examples):
    assert local_builder.name == "omniglot_local"
    assert {s: i.num_examples for s, i in local_builder.info.splits.items()} == SPLITS
    assert {s: len(e) for s, e in local_examples.items()} == SPLITS
    ds = local_builder.as_dataset(split="evaluation", as_supervised=True)
    image, label = next(iter(tfds.as_numpy(ds)))
    assert image.shape == (105, 105, 1)
    assert label == 964  # Angelic/character01 is character 0965


def test_local_fields_come_from_the_path(local_builder, local_examples):
    alphabet = local_builder.info.features["alphabet"]
    path = re.compile(r"images_\w+/([^/]+)/character(\d+)/(\d{4})_(\d{2})\.png")
    for split, examples in local_examples.items():
        filenames = [ex["filename"].decode() for ex in examples]
        assert filenames == sorted(filenames), f"{split}: not in deterministic (sorted) order"
        for ex, name in zip(examples, filenames, strict=True):
            assert name.startswith(f"images_{split}/")
            name_alphabet, char, char_id, drawer = path.fullmatch(name).groups()
            assert alphabet.int2str(ex["alphabet"]) == name_alphabet
            assert ex["alphabet_char_id"] == int(char)
            assert ex["label"] == int(char_id) - 1
            assert ex["drawer"] == int(drawer)
            assert ex["image"].shape == (105, 105, 1) and ex["image"].dtype == np.uint8
            # 1-bit sources stored as 8-bit: strokes 0, background 255, both present.
            assert set(np.unique(ex["image"])) == {0, 255}


def test_local_labels_name_one_character_each(local_examples):
    def characters(split):
        return {(int(ex["alphabet"]), int(ex["alphabet_char_id"])) for ex in local_examples[split]}

    mappings = {}
    for split, examples in local_examples.items():
        pairs = {
            (int(ex["label"]), int(ex["alphabet"]), int(ex["alphabet_char_id"])) for ex in examples
        }
        labels = {p[0] for p in pairs}
        assert len(labels) == len(pairs) == len(characters(split)), split
        mappings[split] = {p[0]: p[1:] for p in pairs}
    # The small splits reuse background's labels; evaluation's characters are all new.
    for small in ("background_small1", "background_small2"):
        assert mappings[small].items() <= mappings["background"].items()
    assert not set(mappings["evaluation"]) & set(mappings["background"])
    assert len(mappings["background"]) == 3 and len(mappings["evaluation"]) == 2


def test_missing_or_corrupt_zip_and_missing_manual_dir_are_named(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(LOCAL_DUMMY, manual)
    (manual / "images_evaluation.zip").unlink()
    with pytest.raises(tfds_local.MissingDataError) as caught:
        _load("omniglot_local", tmp_path / "data", manual)
    assert "images_evaluation.zip" in str(caught.value) and str(manual) in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, InputError)
    assert "\n" not in str(caught.value)  # entry points print it as one line
    shutil.copy(LOCAL_DUMMY / "images_evaluation.zip", manual)
    (manual / "images_background_small2.zip").write_bytes(b"not a zip")
    with pytest.raises(tfds_local.MissingDataError, match="not a valid zip"):
        _load("omniglot_local", tmp_path / "data2", manual)
    with pytest.raises(tfds_local.MissingDataError, match=re.escape(str(tmp_path / "nowhere"))):
        _load("omniglot_local", tmp_path / "data3", tmp_path / "nowhere")


def test_manual_dir_is_needed_until_the_dataset_is_prepared(
    tmp_path, local_builder, local_data_dir
):
    builder = _load("omniglot_local", tmp_path / "data")
    assert not builder.is_prepared()
    with pytest.raises(InputError, match="manual_dir.*images_background.zip"):
        tfds_local.prepare(builder)
    again = _load("omniglot_local", local_data_dir)  # prepared by local_builder
    assert again.is_prepared()
    assert tfds_local.prepare(again) is again


def test_folder_import_is_registered_reused_and_its_name_taken(tmp_path):
    cls = tfds_local.import_builder_class(DATASETS / "omniglot_local")
    assert cls is tfds_local.import_builder_class(DATASETS / "omniglot_local")
    assert tfds.builder_cls("omniglot_local") is cls
    assert cls.name != "omniglot" and cls.MANUAL_DOWNLOAD_INSTRUCTIONS
    clash = tmp_path / "omniglot_local"
    clash.mkdir()
    (clash / "omniglot_local_dataset_builder.py").write_text("")
    with pytest.raises(InputError, match="already taken"):
        tfds_local.import_builder_class(clash)


def test_search_paths(tmp_path, monkeypatch):
    extra = tmp_path / "mine"
    (extra / "my_set").mkdir(parents=True)
    (extra / "my_set" / "my_set_dataset_builder.py").write_text("")
    monkeypatch.setenv(tfds_local.ENV_VAR, str(extra))
    monkeypatch.chdir(tmp_path)
    # The setting, then ./datasets; never the checkout the module happens to sit in.
    assert tfds_local.default_search_paths() == [extra, tmp_path / "datasets"]
    assert tfds_local.find_builder_dir("my_set") == extra / "my_set"
    assert tfds_local.find_builder_dir("omniglot_local") is None
    monkeypatch.setenv(tfds_local.ENV_VAR, os.pathsep.join([str(extra), str(DATASETS)]))
    assert tfds_local.find_builder_dir("omniglot_local") == DATASETS / "omniglot_local"
    monkeypatch.delenv(tfds_local.ENV_VAR)
    monkeypatch.chdir(DATASETS.parent)  # jobs run from the workspace root
    assert tfds_local.default_search_paths() == [DATASETS]
    assert tfds_local.find_builder_dir("omniglot_local") == DATASETS / "omniglot_local"


@pytest.mark.parametrize("name", ["../omniglot_local", "omniglot local", "a/b/c", ""])
def test_malformed_names_are_refused(name):
    with pytest.raises(InputError):
        tfds_local.load_local_builder(name, search_paths=[DATASETS])


def test_names_without_a_folder_come_from_the_catalogue_or_list_the_folders(tmp_path):
    builder = tfds_local.load_local_builder("mnist", data_dir=tmp_path, search_paths=[DATASETS])
    assert builder.name == "mnist" and not builder.is_prepared()
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "no_such_set_xyz"))) as caught:
        tfds_local.load_local_builder("no_such_set_xyz", search_paths=[tmp_path])
    message = str(caught.value)
    assert "\n" not in message and f"set {tfds_local.ENV_VAR} to the folder" in message


def _prepare_cli(cwd, *args, builders=None):
    """`python -m launch.prepare` run from `cwd`, with `$SIAMESE_TF_DATASETS` = `builders`."""
    env = cli_env(unset=[tfds_local.ENV_VAR])
    if builders:
        env[tfds_local.ENV_VAR] = str(builders)
    return run_cli("prepare", *args, cwd=cwd, env=env, timeout=300)


def test_cli_finds_builders_by_setting_not_by_checkout(tmp_path):
    # Run from a folder without `datasets/`, as an installed package would be.
    data = tmp_path / "tfds"
    spec = ["--dataset=tfds:omniglot_local:background", f"--data_dir={data}"]
    build = [*spec, f"--manual_dir={LOCAL_DUMMY}"]
    result = _prepare_cli(tmp_path, *build, f"--out={tmp_path / 'a'}")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown dataset 'omniglot_local'" in errors[0]
    assert f"set {tfds_local.ENV_VAR} to the folder that holds omniglot_local/" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "a").exists()

    result = _prepare_cli(tmp_path, *build, f"--out={tmp_path / 'b'}", builders=DATASETS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"examples": 7' in result.stdout
    # Once prepared, TFDS reads the copy in --data_dir from its files: no builder code needed.
    result = _prepare_cli(tmp_path, *spec, f"--out={tmp_path / 'c'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"examples": 7' in result.stdout


# The builder folders' own tests (`tfds new` layout). tfds.testing needs `dill`.
if importlib.util.find_spec("dill") is None:

    @pytest.mark.skip(reason="tfds.testing needs dill: pip install dill")
    def test_builder_folder_tests():
        pass

else:
    tfds_local.import_builder_class(DATASETS / "omniglot_local")  # makes the package importable
    OmniglotLocalTest = importlib.import_module(
        "omniglot_local.omniglot_local_dataset_builder_test"
    ).OmniglotLocalTest


def test_the_alphabet_becomes_the_source_group(local_builder, local_data_dir):
    from siamese_tf.data import load_source

    source = load_source(
        "tfds:omniglot_local:background", data_dir=str(local_data_dir), manual_dir=str(LOCAL_DUMMY)
    )
    assert source.groups is not None and len(source.group_names) == 50
    examples = list(tfds.as_numpy(local_builder.as_dataset(split="background")))
    np.testing.assert_array_equal(source.groups, [e["alphabet"] for e in examples])
