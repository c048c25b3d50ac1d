"""TFDS builders from local builder folders (`datasets/<name>/`), loaded the way `tfds build` does.

The workspace's top-level `datasets/` folder is deliberately not a Python package (it would
shadow Hugging Face `datasets`), so its builders cannot be imported by name. This module finds
`<dir>/<name>/<name>_dataset_builder.py` on a search path and imports it under the module name
`tfds build` gives it (`<name>.<name>_dataset_builder`), which registers the builder with TFDS:
afterwards `tfds.builder(name)` and `tfds.load(name)` find it too.

Where builder folders are found: the folders listed in `$SIAMESE_TF_DATASETS`, then
`./datasets` — relative to the working directory, since jobs run from the workspace root; an
installed package has no checkout to look into. Names without a local folder go to TFDS, which
reads a copy already prepared in `data_dir` from its files alone (as `tfds.builder_from_directory`
does: no builder code needed), else uses the builder of its catalogue.

Runs on host, once per process; nothing here touches the network, and local builders read
their files from `manual_dir`.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import pathlib
import re
import sys
import zipfile
from collections.abc import Sequence

import tensorflow_datasets as tfds

from siamese_tf.errors import InputError

# Folders that hold builder folders, `os.pathsep`-separated, searched before `./datasets`.
ENV_VAR = "SIAMESE_TF_DATASETS"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MissingDataError(InputError, FileNotFoundError):
    """A file or folder a builder needs is missing; the message names it and where it belongs.

    Both an `InputError` (entry points print it as one line) and a `FileNotFoundError`.
    """


def default_search_paths() -> list[pathlib.Path]:
    """The folders searched for `<name>/` builder folders when none are given.

    Returns:
      The entries of `$SIAMESE_TF_DATASETS` (in order), then `./datasets` of the working
      directory (jobs run from the workspace root). Never the folder this module is installed
      in. Duplicates are dropped; folders need not exist.
    """
    paths = [pathlib.Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    paths.append(pathlib.Path.cwd() / "datasets")
    unique = []
    for path in paths:
        if path.resolve() not in [p.resolve() for p in unique]:
            unique.append(path)
    return unique


def find_builder_dir(
    name: str, search_paths: Sequence[str | os.PathLike] | None = None
) -> pathlib.Path | None:
    """Finds the builder folder of a dataset.

    Args:
      name: the dataset name, e.g. "omniglot_local" (no config or version).
      search_paths: folders that hold builder folders; `default_search_paths()` when None.

    Returns:
      The first `<path>/<name>/` that holds `<name>_dataset_builder.py`, or None.

    Raises:
      InputError: `name` is not a lower-case Python identifier (a builder folder name).
    """
    if not _NAME.match(name):
        raise InputError(
            f"invalid dataset name {name!r}: builder folders are named like 'omniglot_local'"
        )
    paths = default_search_paths() if search_paths is None else search_paths
    for path in paths:
        folder = pathlib.Path(path) / name
        if (folder / f"{name}_dataset_builder.py").is_file():
            return folder
    return None


def import_builder_class(folder: str | os.PathLike) -> type[tfds.core.DatasetBuilder]:
    """Imports a builder folder and returns its registered builder class.

    The folder `<dir>/<name>/` is imported as package `<name>` and its builder module as
    `<name>.<name>_dataset_builder`, the names `tfds build` and pytest use, so importing the
    same folder again (by any of the three) reuses the module instead of registering twice.

    Args:
      folder: the builder folder, holding `<name>_dataset_builder.py`.

    Returns:
      The `tfds.core.DatasetBuilder` subclass defined there.

    Raises:
      MissingDataError: the builder file is missing.
      InputError: another folder of the same name was imported already, the name is taken by
        another module or registered dataset, or the module defines no single builder.
    """
    folder = pathlib.Path(folder).resolve()
    name = folder.name
    source = folder / f"{name}_dataset_builder.py"
    if not source.is_file():
        raise MissingDataError(f"builder folder {folder} has no {source.name}")
    module_name = f"{name}.{name}_dataset_builder"

    package = sys.modules.get(name)
    if package is None:
        init = folder / "__init__.py"
        if init.is_file():
            spec = importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[str(folder)]
            )
        else:  # No `__init__.py`: a namespace package over the one folder.
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        if spec.loader is not None:
            try:
                spec.loader.exec_module(package)
            except BaseException:
                del sys.modules[name]
                raise
    locations = [pathlib.Path(p).resolve() for p in getattr(package, "__path__", [])]
    if folder not in locations:
        raise InputError(
            f"cannot load builder folder {folder}: the module name {name!r} is already taken "
            f"by {getattr(package, '__file__', None) or locations or package!r}"
        )

    if module_name not in sys.modules:
        importlib.invalidate_caches()  # the folder may be new since the last import
    try:
        # Found through the package's `__path__`; importing registers the builder with TFDS.
        module = importlib.import_module(module_name)
    except ValueError as err:
        if "already registered" not in str(err):
            raise
        raise InputError(
            f"cannot register the builder of {folder}: {err} Local builder names must differ "
            "from the TFDS catalogue's and from each other."
        ) from err
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, tfds.core.DatasetBuilder)
        and value.__module__ == module_name
    ]
    if len(classes) != 1:
        raise InputError(f"{source} must define exactly one DatasetBuilder, found {len(classes)}")
    return classes[0]


def load_local_builder(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    search_paths: Sequence[str | os.PathLike] | None = None,
) -> tfds.core.DatasetBuilder:
    """Returns the builder of a dataset, from a local builder folder or the TFDS catalogue.

    Args:
      name: "name", "name:1.0.0" or "name/config[:version]". A local folder `<path>/<name>/` on
        the search path wins; otherwise TFDS's builder of that name: a copy already prepared in
        `data_dir` (read from its files, no builder code needed), else the catalogue's.
      data_dir: where TFDS keeps prepared datasets; TFDS's default (~/tensorflow_datasets or
        $TFDS_DATA_DIR) when None.
      manual_dir: when given, the dataset is also prepared from the files there (see
        `prepare`) if it is not prepared yet; when None, the builder is returned as it is.
      search_paths: folders that hold builder folders; `default_search_paths()` when None.

    Returns:
      The builder, prepared when `manual_dir` was given.

    Raises:
      InputError: a malformed name, or a name that is no local builder folder, not prepared in
        `data_dir` and not in the TFDS catalogue (one line: the folders searched and the
        setting, `$SIAMESE_TF_DATASETS`, that adds folders).
      MissingDataError: `manual_dir` or a file the builder needs in it is missing.
    """
    try:
        dataset_name, kwargs = tfds.core.naming.parse_builder_name_kwargs(name)
    except ValueError as err:
        raise InputError(
            f"invalid dataset {name!r}: expected name[/config][:version], e.g. 'omniglot_local'"
        ) from err
    if dataset_name.namespace:
        raise InputError(f"dataset {name!r}: namespaces are not supported here")
    base = dataset_name.name
    folder = find_builder_dir(base, search_paths)
    if data_dir is not None:
        kwargs["data_dir"] = os.fspath(data_dir)
    if folder is not None:
        builder = import_builder_class(folder)(**kwargs)
    else:
        try:
            builder = tfds.builder(base, **kwargs)
        except tfds.core.registered.DatasetNotFoundError as err:
            paths = default_search_paths() if search_paths is None else search_paths
            searched = ", ".join(str(pathlib.Path(p) / base) for p in paths) or "(no folders)"
            where = kwargs.get("data_dir") or "TFDS's default data_dir"
            raise InputError(
                f"unknown dataset {base!r}: no builder folder at {searched}, no prepared copy "
                f"in {where}, and not in the TFDS catalogue; run from the folder that holds "
                f"datasets/{base}/ or set {ENV_VAR} to the folder that holds {base}/"
            ) from err
    if manual_dir is not None:
        prepare(builder, manual_dir)
    return builder


def prepare(
    builder: tfds.core.DatasetBuilder, manual_dir: str | os.PathLike | None = None
) -> tfds.core.DatasetBuilder:
    """Prepares a builder's dataset from local files, unless it is prepared already.

    Runs on host and may take minutes on first use (the whole dataset is written to the
    builder's data_dir); later calls only check that it is there.

    Args:
      builder: the builder, e.g. from `load_local_builder`.
      manual_dir: the folder holding the files named in `builder.MANUAL_DOWNLOAD_INSTRUCTIONS`.
        Needed only when the dataset is not prepared yet and the builder reads manual files.

    Returns:
      The same builder, now prepared.

    Raises:
      InputError: the dataset is not prepared and needs manual files, but no `manual_dir` was
        given (the message says which files).
      MissingDataError: `manual_dir` is not a folder, or a file the builder needs is missing
        or not a valid zip.
    """
    if builder.is_prepared():
        return builder
    # Messages stay on one line: entry points print an InputError as it is.
    instructions = " ".join((getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or "").split())
    if manual_dir is None:
        if instructions:
            raise InputError(
                f"dataset {builder.name!r} is not prepared in {builder.data_dir}; pass "
                f"manual_dir (--manual_dir), a folder with its files. {instructions}"
            )
        download_config = tfds.download.DownloadConfig()
    else:
        manual_dir = pathlib.Path(manual_dir)
        if not manual_dir.is_dir():
            raise MissingDataError(
                f"manual_dir {manual_dir} is not a folder; dataset {builder.name!r} expects "
                f"its files there. {instructions}"
            )
        download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    try:
        builder.download_and_prepare(download_config=download_config)
    except FileNotFoundError as err:
        raise MissingDataError(str(err)) from err
    except zipfile.BadZipFile as err:
        raise MissingDataError(
            f"dataset {builder.name!r}: a file in {manual_dir} is not a valid zip: {err}"
        ) from err
    return builder
