"""omniglot_local: Omniglot (Lake et al. 2015) built from the upstream zips in `manual_dir`.

Unlike the TFDS catalogue's `omniglot` (which downloads, and stores 3-channel images), this
builder reads local files only and keeps the images single-channel. The labels are the dataset's
own global character ids, so one character has the same label in every split.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 105
NUM_CHARACTERS = 1623

# Split name -> zip file expected in `manual_dir`.
SPLIT_FILES = {
    "background": "images_background.zip",
    "evaluation": "images_evaluation.zip",
    "background_small1": "images_background_small1.zip",
    "background_small2": "images_background_small2.zip",
}

# The 30 background alphabets, then the 20 evaluation alphabets (each group sorted), so the
# alphabet label tells the two sets apart: ids 0-29 are background, 30-49 evaluation.
BACKGROUND_ALPHABETS = (
    "Alphabet_of_the_Magi",
    "Anglo-Saxon_Futhorc",
    "Arcadian",
    "Armenian",
    "Asomtavruli_(Georgian)",
    "Balinese",
    "Bengali",
    "Blackfoot_(Canadian_Aboriginal_Syllabics)",
    "Braille",
    "Burmese_(Myanmar)",
    "Cyrillic",
    "Early_Aramaic",
    "Futurama",
    "Grantha",
    "Greek",
    "Gujarati",
    "Hebrew",
    "Inuktitut_(Canadian_Aboriginal_Syllabics)",
    "Japanese_(hiragana)",
    "Japanese_(katakana)",
    "Korean",
    "Latin",
    "Malay_(Jawi_-_Arabic)",
    "Mkhedruli_(Georgian)",
    "N_Ko",
    "Ojibwe_(Canadian_Aboriginal_Syllabics)",
    "Sanskrit",
    "Syriac_(Estrangelo)",
    "Tagalog",
    "Tifinagh",
)
EVALUATION_ALPHABETS = (
    "Angelic",
    "Atemayar_Qelisayer",
    "Atlantean",
    "Aurek-Besh",
    "Avesta",
    "Ge_ez",
    "Glagolitic",
    "Gurmukhi",
    "Kannada",
    "Keble",
    "Malayalam",
    "Manipuri",
    "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)",
    "Oriya",
    "Sylheti",
    "Syriac_(Serto)",
    "Tengwar",
    "Tibetan",
    "ULOG",
)
ALPHABETS = BACKGROUND_ALPHABETS + EVALUATION_ALPHABETS

# `<anything>/<Alphabet>/characterNN/XXXX_YY.png`: XXXX is the global character id (0001-1623),
# YY the drawer (01-20). Only the last three path parts are used, so a zip with an extra or a
# missing top-level folder still reads the same.
_IMAGE_PATH = re.compile(r"(?:^|/)([^/]+)/character(\d+)/(\d{4})_(\d+)\.png$")

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put these four files, unchanged, in `manual_dir` (nothing is downloaded):
  images_background.zip, images_evaluation.zip,
  images_background_small1.zip, images_background_small2.zip
They are published at https://github.com/brendenlake/omniglot (folder `python/`).
"""


def _is_junk(name: str) -> bool:
    """Entries some zip tools add (macOS resource forks, Finder files) that hold no image."""
    base = name.rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith("._") or base == ".DS_Store"


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


class Builder(tfds.core.GeneratorBasedBuilder):
    """Omniglot from the four upstream image zips in `manual_dir`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 4 splits from local zips, 1-channel images."}
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
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(IMAGE_SIZE, IMAGE_SIZE, 1), encoding_format="png"
                    ),
                    # Global character id - 1: unique per (alphabet, character) and the same in
                    # every split, since small1/small2 are subsets of background.
                    "label": tfds.features.ClassLabel(num_classes=NUM_CHARACTERS),
                    "alphabet": tfds.features.ClassLabel(names=ALPHABETS),
                    "alphabet_char_id": np.int32,
                    "drawer": np.int32,
                    "filename": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/brendenlake/omniglot",
            # Examples are written sorted by path (alphabet, character, drawer): the order is
            # the same on every build, and each character's 20 images are contiguous.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        """Returns one generator per split; every zip must be present."""
        manual_dir = dl_manager.manual_dir
        missing = [name for name in SPLIT_FILES.values() if not (manual_dir / name).exists()]
        if missing:
            # One line, so entry points can print it as it is.
            raise FileNotFoundError(
                f"omniglot_local: missing {', '.join(missing)} in manual_dir {manual_dir}; "
                f"it needs {', '.join(SPLIT_FILES.values())}, unchanged, from "
                "https://github.com/brendenlake/omniglot (folder python/)"
            )
        return {
            split: self._generate_examples(manual_dir / name) for split, name in SPLIT_FILES.items()
        }

    def _generate_examples(self, zip_path):
        """Yields (in-zip path, example) for every character image of one zip, sorted by path."""
        ids_of_character = {}
        characters_of_id = {}
        with zip_path.open("rb") as stream, zipfile.ZipFile(stream) as archive:
            names = sorted(
                name
                for name in archive.namelist()
                if name.lower().endswith(".png") and not _is_junk(name)
            )
            if not names:
                raise ValueError(f"{zip_path}: no PNG images inside")
            for name in names:
                match = _IMAGE_PATH.search(name)
                if match is None:
                    raise ValueError(
                        f"{zip_path}: unexpected entry {name!r}; expected "
                        "<Alphabet>/characterNN/XXXX_YY.png"
                    )
                alphabet, char_number, char_id, drawer = match.groups()
                if alphabet not in ALPHABETS:
                    raise ValueError(f"{zip_path}: unknown alphabet {alphabet!r} in {name!r}")
                char_id = int(char_id)
                if not 1 <= char_id <= NUM_CHARACTERS:
                    raise ValueError(f"{zip_path}: character id {char_id} out of range in {name!r}")
                # The label must name exactly one (alphabet, character) and vice versa.
                character = (alphabet, int(char_number))
                ids_of_character.setdefault(character, set()).add(char_id)
                characters_of_id.setdefault(char_id, set()).add(character)
                if len(ids_of_character[character]) > 1 or len(characters_of_id[char_id]) > 1:
                    raise ValueError(
                        f"{zip_path}: character id {char_id} and folder "
                        f"{alphabet}/character{char_number} do not map one to one ({name!r})"
                    )
                yield (
                    name,
                    {
                        "image": _to_grayscale_png(archive.read(name), f"{zip_path}:{name}"),
                        "label": char_id - 1,
                        "alphabet": alphabet,
                        "alphabet_char_id": int(char_number),
                        "drawer": int(drawer),
                        "filename": name,
                    },
                )
