"""Lake et al.'s (2015) one-shot runs, read straight from `all_runs.zip` (no extraction, no TFDS).

The archive holds 20 runs of a 20-way one-shot task: `runNN/training/classKK.png` (one image of
each of 20 characters of one evaluation alphabet), `runNN/test/itemKK.png` (20 queries) and
`runNN/class_labels.txt`, which names each query's class.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile

import numpy as np

from siamese_tf.errors import InputError


@dataclasses.dataclass(frozen=True)
class OneShotRun:
    """One official run: 20 support images (one per class) and 20 queries.

    Attributes:
      name: "run01" ... "run20".
      support_files: the zip members of `training/`, sorted (the class order).
      support: their bytes.
      query_files: the zip members of `test/`, sorted.
      queries: their bytes.
      targets: int [Q] position in `support_files` of each query's class.
    """

    name: str
    support_files: tuple
    support: tuple
    query_files: tuple
    queries: tuple
    targets: np.ndarray


_RUN_LABELS = re.compile(r"^(?P<base>(?:.*/)?)(?P<run>run\d+)/class_labels\.txt$")


def read_omniglot_runs(zip_path: str) -> list[OneShotRun]:
    """Reads the one-shot runs straight from `all_runs.zip` (no extraction, no TFDS).

    Each `runNN/` holds `training/classKK.png`, `test/itemKK.png` and `class_labels.txt`, whose
    lines "runNN/test/itemKK.png runNN/training/classJJ.png" give each query's class (paths
    relative to the folder holding `runNN/`).

    Raises:
      InputError: a missing or invalid zip, no runs inside, or a malformed run.
    """
    if not zip_path or not os.path.isfile(zip_path):
        raise InputError(f"runs zip {zip_path!r} not found (expected Lake et al.'s all_runs.zip)")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{zip_path} is not a readable zip file: {err}") from None
    runs = []
    with archive:
        names = set(archive.namelist())
        found = sorted(
            (m.group("run"), m.group("base"), name)
            for name in names
            if (m := _RUN_LABELS.match(name)) and not name.startswith("__MACOSX/")
        )
        if not found:
            raise InputError(f"{zip_path} holds no runNN/class_labels.txt: not all_runs.zip")
        for run_name, base, labels_name in found:
            where = f"{zip_path}:{labels_name}"
            support_files = sorted(
                n[len(base) :]
                for n in names
                if n.startswith(f"{base}{run_name}/training/") and n.lower().endswith(".png")
            )
            answers = {}
            for line in archive.read(labels_name).decode("utf-8").splitlines():
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or parts[1] not in support_files:
                    raise InputError(
                        f"{where}: bad line {line!r} (expected 'runNN/test/item.png "
                        "runNN/training/class.png' of files in the zip)"
                    )
                if f"{base}{parts[0]}" not in names:
                    raise InputError(f"{where}: {parts[0]} is not in the zip")
                answers[parts[0]] = support_files.index(parts[1])
            if not answers:
                raise InputError(f"{where} lists no test images")
            query_files = sorted(answers)
            runs.append(
                OneShotRun(
                    name=run_name,
                    support_files=tuple(support_files),
                    support=tuple(archive.read(base + f) for f in support_files),
                    query_files=tuple(query_files),
                    queries=tuple(archive.read(base + f) for f in query_files),
                    targets=np.array([answers[f] for f in query_files], np.int64),
                )
            )
    return runs
