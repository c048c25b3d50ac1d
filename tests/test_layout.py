"""Workspace rules from DESIGN.md: only `siamese_tf` is installed; `datasets/` is not a package;
recipe flagfiles parse."""

import ast
import configparser
import json
import subprocess
import sys

import pytest
import setuptools
from helpers import ROOT


def test_only_siamese_tf_is_installed_and_datasets_is_no_package():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    include = config["options.packages.find"]["include"].split()
    packages = setuptools.find_packages(where=str(ROOT), include=include)
    assert packages, "setup.cfg installs nothing"
    assert all(p == "siamese_tf" or p.startswith("siamese_tf.") for p in packages), packages
    assert "siamese_tf.data" in packages and "siamese_tf.models" in packages
    assert (ROOT / "datasets").is_dir()  # and datasets/ is not a package
    assert not (ROOT / "datasets" / "__init__.py").exists()


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "pip install -e '.[test]' && python -m pytest"
    assert command in readme and command in ci


def test_library_never_imports_flags_or_upper_layers():
    for path in (ROOT / "siamese_tf").rglob("*.py"):
        text = path.read_text()
        upper = [
            f"{verb} {layer}" for verb in ("import", "from") for layer in ("trainers", "launch")
        ]
        for banned in ["from absl import flags", "Lambda(", *upper]:
            assert banned not in text, f"{path} contains {banned!r}"
    for path in (ROOT / "trainers").rglob("*.py"):
        text = path.read_text()
        assert "from launch" not in text and "flags.DEFINE" not in text, path


@pytest.mark.parametrize("flagfile", sorted((ROOT / "launch" / "configs").glob("*.flags")))
def test_every_recipe_flagfile_parses_into_a_valid_config(flagfile):
    code = (
        "import json, sys; from absl import flags; import launch.train; from launch import common;"
        "from trainers.config import TrainConfig;"
        f"flags.FLAGS(['train', '--flagfile={flagfile}']);"
        "print(common.dataclass_from_flags(TrainConfig).to_json())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads(result.stdout[result.stdout.index("{") :])
    lines = flagfile.read_text().splitlines()
    named = {line.split("=", 1)[0][2:] for line in lines if line.startswith("--")}
    assert named <= set(config), f"{flagfile.name} sets flags that are not config fields"


# The layers of siamese_tf/data, lowest first: a module may import its own layer or lower ones.
DATA_LAYERS = (
    ("images", "class_index"),
    ("source",),
    ("stream", "sampling", "splits", "pair_sets", "augment", "class_augment"),
    ("store",),
    ("tfds_local", "one_shot_runs"),
    ("sources",),
)


def _imported_modules(path) -> list[str]:
    """Every module a file imports (`from a import b` gives both "a" and "a.b")."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def _data_unit(module: str) -> str | None:
    """`siamese_tf.data.store.reader` -> "store"; None outside siamese_tf.data."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["siamese_tf", "data"] and len(parts) > 2 else None


def test_data_imports_flow_one_way_and_evaluation_builds_on_data():
    rank = {unit: level for level, units in enumerate(DATA_LAYERS) for unit in units}
    data = ROOT / "siamese_tf" / "data"
    for path in data.rglob("*.py"):
        if path.parent == data and path.name == "__init__.py":
            continue  # the package's public names re-export every layer
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        unit = _data_unit(module)
        assert unit in rank, f"{path} is in no layer of DATA_LAYERS"
        for name in _imported_modules(path):
            other = _data_unit(name)
            if other in rank and other != unit:
                assert rank[other] <= rank[unit], f"{module} imports {name} (a higher layer)"
    # Evaluation may read data (episodes of a Source); data never imports evaluation.
    for path in (ROOT / "siamese_tf" / "data").rglob("*.py"):
        for name in _imported_modules(path):
            assert not name.startswith("siamese_tf.evaluation"), f"{path} imports {name}"
    # Within evaluation only `episodes` touches data (the rest stays numpy + scikit-learn).
    for path in (ROOT / "siamese_tf" / "evaluation").glob("*.py"):
        if path.name != "episodes.py":
            for name in _imported_modules(path):
                assert not name.startswith("siamese_tf.data"), f"{path} imports {name}"
