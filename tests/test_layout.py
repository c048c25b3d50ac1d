"""Workspace rules from DESIGN.md: only `siamese_tf` is installed; `datasets/` is not a package."""

import configparser
import pathlib

import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_only_siamese_tf_is_installed():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    include = config["options.packages.find"]["include"].split()
    packages = setuptools.find_packages(where=str(ROOT), include=include)
    assert packages, "setup.cfg installs nothing"
    assert all(p == "siamese_tf" or p.startswith("siamese_tf.") for p in packages), packages
    assert "siamese_tf.data" in packages and "siamese_tf.models" in packages


def test_datasets_folder_is_not_a_package():
    assert (ROOT / "datasets").is_dir()
    assert not (ROOT / "datasets" / "__init__.py").exists()


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "pip install -e '.[test]' && python -m pytest"
    assert command in readme and command in ci


def test_library_never_imports_flags_or_upper_layers():
    for path in (ROOT / "siamese_tf").rglob("*.py"):
        text = path.read_text()
        for banned in (
            "from absl import flags",
            "import trainers",
            "from trainers",
            "import launch",
            "from launch",
            "Lambda(",
        ):
            assert banned not in text, f"{path} contains {banned!r}"
    for path in (ROOT / "trainers").rglob("*.py"):
        text = path.read_text()
        assert "from launch" not in text and "flags.DEFINE" not in text, path
