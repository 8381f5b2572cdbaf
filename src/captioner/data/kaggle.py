"""The Kaggle copy of Flickr8k: ``captions.txt`` (CSV with an ``image,caption`` header) and ``Images/``.

It has no split lists, so its images get a hashed split: *not* the standard Karpathy dev/test
splits, so compare numbers against published results on the classic layout only.
"""

from __future__ import annotations

from pathlib import Path

from captioner.data.base import NoDatasetError, Raw
from captioner.data.csvrows import read_csv
from captioner.data.files import find_image_dir
from captioner.data.registry import Format, register

CAPTIONS_FILE = "captions.txt"


def read_kaggle(path: Path, image_dir: Path | None) -> Raw:
    """Reads a Kaggle Flickr8k directory or its captions.txt.

    Raises:
        NoDatasetError: a directory without captions.txt.
        DatasetError: a captions.txt that is not a caption CSV.
    """
    if path.is_dir():
        captions_file = path / CAPTIONS_FILE
        if not captions_file.is_file():
            raise NoDatasetError(path, f"no {CAPTIONS_FILE} here (Kaggle layout: {CAPTIONS_FILE} + Images/)")
    else:
        captions_file = path
    if image_dir is None:
        root = captions_file.parent
        image_dir = find_image_dir((root,), ("Images", "images"), root / "Images")
    return read_csv(captions_file, image_dir)


register(
    Format(
        name="kaggle",
        read=read_kaggle,
        looks_for=CAPTIONS_FILE,
        in_directory=lambda directory: (directory / CAPTIONS_FILE).is_file(),
        file_names=(CAPTIONS_FILE,),
    )
)
