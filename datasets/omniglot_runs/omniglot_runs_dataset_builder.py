"""omniglot_runs: the official one-shot classification runs of Lake et al. (2015), one trial each.

`all_runs.zip` holds runs `runNN/` with `training/classKK.png` (one image of each candidate
character), `test/itemKK.png` (one query per candidate) and `class_labels.txt`, whose lines
"runNN/test/itemKK.png runNN/training/classJJ.png" give the answer. Each example here is one
trial: a query, the run's support images in class order, and the index of the right one, so an
evaluator scores a trial with one argmin over 20 distances and needs nothing else.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 105
RUNS_FILE = "all_runs.zip"

_LABELS_PATH = re.compile(r"^(.*/)?run(\d+)/class_labels\.txt$")
_TEST_PATH = re.compile(r"^run(\d+)/test/item(\d+)\.png$")
_TRAINING_PATH = re.compile(r"^run(\d+)/training/class(\d+)\.png$")

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put `all_runs.zip`, unchanged, in `manual_dir` (nothing is downloaded). It is published at
https://github.com/brendenlake/omniglot (python/one-shot-classification/all_runs.zip).
"""


def _to_grayscale_png(data: bytes, where: str) -> bytes:
    """Re-encodes a PNG as 8-bit grayscale (0 = stroke, 255 = background).

    The upstream PNGs are 1-bit. TensorFlow decodes 1-bit PNGs to 0/255 but PIL (the numpy
    decoder TFDS uses without OpenCV) to 0/1, so storing 8-bit grayscale makes every decoder agree.
    """
    pil_image = tfds.core.lazy_imports.PIL_Image
    with pil_image.open(io.BytesIO(data)) as image:
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"{where}: expected a {IMAGE_SIZE}x{IMAGE_SIZE} image, got {image.size[0]}x"
                f"{image.size[1]}"
            )
        buffer = io.BytesIO()
        image.convert("L").save(buffer, format="PNG")
    return buffer.getvalue()


def _parse_run(labels_text: str, run: int, files: set, where: str):
    """Checks one run and returns its trials.

    Args:
      labels_text: contents of the run's `class_labels.txt`.
      run: the run number from its folder name.
      files: the run's `test/` and `training/` image paths, relative to the folder holding
        `runNN/`.
      where: a name for error messages.

    Returns:
      (support_files, trials): the sorted `training/` paths, and a list of
      (item number, query path, target index into support_files) sorted by item number.

    Raises:
      ValueError: a malformed line, a path that is not in the zip, or a mapping that is not
        one query per support image.
    """
    support_files = sorted(f for f in files if _TRAINING_PATH.match(f))
    query_files = sorted(f for f in files if _TEST_PATH.match(f))
    if not support_files:
        raise ValueError(f"{where}: no training/classKK.png images for run {run}")
    pairs = {}
    for line_number, line in enumerate(labels_text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{where}:{line_number}: expected 2 paths, got {line!r}")
        query, support = parts
        query_match, support_match = _TEST_PATH.match(query), _TRAINING_PATH.match(support)
        if query_match is None or support_match is None:
            raise ValueError(
                f"{where}:{line_number}: expected 'runNN/test/itemKK.png "
                f"runNN/training/classJJ.png', got {line!r}"
            )
        if int(query_match.group(1)) != run or int(support_match.group(1)) != run:
            raise ValueError(f"{where}:{line_number}: paths of another run in {line!r}")
        for path in (query, support):
            if path not in files:
                raise ValueError(f"{where}:{line_number}: {path} is not in the zip")
        if query in pairs:
            raise ValueError(f"{where}:{line_number}: {query} is listed twice")
        pairs[query] = support
    if sorted(pairs) != query_files:
        raise ValueError(f"{where}: labels cover {len(pairs)} of {len(query_files)} test images")
    if sorted(pairs.values()) != support_files:
        raise ValueError(f"{where}: the answers are not one query per training image")
    trials = [
        (int(_TEST_PATH.match(query).group(2)), query, support_files.index(pairs[query]))
        for query in query_files
    ]
    trials.sort()
    return support_files, trials


class Builder(tfds.core.GeneratorBasedBuilder):
    """The 20 official 20-way one-shot runs of Lake et al. (2015), from `manual_dir`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: one example per trial, from all_runs.zip."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
    # README.md, CITATIONS.bib and TAGS.txt sit next to this file; saying so explicitly keeps the
    # metadata readable however the module was imported (`tfds build`, a path loader, pytest).
    pkg_dir_path = tfds.core.Path(__file__).parent

    # TFDS 4.9 finds `code_path` through `importlib_resources`, which it no longer installs on
    # Python >= 3.9 (tensorflow/datasets#11212); this file's path is the same answer, without it.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        """This module's file: `checksums.tsv` and `dummy_data/` are found next to it."""
        return tfds.core.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        """Returns the dataset metadata."""
        image = tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), encoding_format="png")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "run": np.int32,
                    "trial": np.int32,
                    "query_image": image,
                    "query_file": tfds.features.Text(),
                    # Length left open so the same layout also reads N-way runs; Lake's are 20.
                    "support_images": tfds.features.Sequence(image),
                    "support_files": tfds.features.Sequence(tfds.features.Text()),
                    "target": np.int32,
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/brendenlake/omniglot",
            # Trials are written in (run, trial) order, the order of the paper's tables.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        """Returns the single `test` split: the runs are for evaluation only."""
        path = dl_manager.manual_dir / RUNS_FILE
        if not path.exists():
            # One line, so entry points can print it as it is.
            raise FileNotFoundError(
                f"omniglot_runs: missing {RUNS_FILE} in manual_dir {dl_manager.manual_dir}; it "
                "is python/one-shot-classification/all_runs.zip of "
                "https://github.com/brendenlake/omniglot, unchanged"
            )
        return {"test": self._generate_examples(path)}

    def _generate_examples(self, zip_path):
        """Yields ("runNN/itemKK", example) for every trial, in (run, trial) order."""
        with zip_path.open("rb") as stream, zipfile.ZipFile(stream) as archive:
            names = archive.namelist()
            runs = sorted(
                (int(match.group(2)), match.group(1) or "", name)
                for name in names
                if (match := _LABELS_PATH.match(name)) and not name.startswith("__MACOSX/")
            )
            if not runs:
                raise ValueError(f"{zip_path}: no runNN/class_labels.txt inside")
            numbers = [run for run, _, _ in runs]
            if len(set(numbers)) != len(numbers):
                raise ValueError(f"{zip_path}: a run number appears twice: {numbers}")
            for run, base, labels_name in runs:
                # Paths in class_labels.txt are relative to `base`, the folder holding `runNN/`.
                files = set()
                for name in names:
                    relative = name[len(base) :]
                    match = _TEST_PATH.match(relative) or _TRAINING_PATH.match(relative)
                    if name.startswith(base) and match and int(match.group(1)) == run:
                        files.add(relative)
                where = f"{zip_path}:{labels_name}"
                labels_text = archive.read(labels_name).decode("utf-8")
                support_files, trials = _parse_run(labels_text, run, files, where)
                support_images = [
                    _to_grayscale_png(archive.read(base + f), f"{zip_path}:{base}{f}")
                    for f in support_files
                ]
                for item, query, target in trials:
                    yield (
                        f"run{run:02d}/item{item:02d}",
                        {
                            "run": run,
                            "trial": item,
                            "query_image": _to_grayscale_png(
                                archive.read(base + query), f"{zip_path}:{base}{query}"
                            ),
                            "query_file": query,
                            "support_images": support_images,
                            "support_files": support_files,
                            "target": target,
                        },
                    )
