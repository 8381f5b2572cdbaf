"""Caption datasets: readers for the common layouts, caption cleaning and splits.

`load_dataset` reads any of these into one `CaptionDataset`:

- ``flickr8k``: the classic download. ``Flickr8k.token.txt`` ("<image>.jpg#<n>\\t<caption>") and
  ``Flickr_8k.{train,dev,test}Images.txt``, in the root or in ``Flickr8k_text/``, and the images in
  ``Flicker8k_Dataset/`` (the historical spelling), ``Flickr8k_Dataset/`` or ``Images/``.
  A missing split file just means that split is absent (the shared copy has no test split).
- ``kaggle``: ``captions.txt`` (CSV with an ``image,caption`` header) and ``Images/``.
- ``karpathy``: Karpathy's ``dataset_{flickr8k,flickr30k,coco}.json``. Split ``val`` becomes
  ``dev`` and ``restval`` becomes ``train``. COCO keys are ``filepath/filename``.
- ``csv``: a CSV file with ``image`` and ``caption`` columns and an optional ``split`` column.
- ``jsonl``: one JSON object per line, ``{"image": ..., "caption": ..., "split": ...}``
  (``"captions": [...]`` is accepted too).
- ``webdataset``: img2dataset's WebDataset tar shards (``KEY.jpg`` + ``KEY.txt``, optional
  ``KEY.json``), a folder of ``*.tar`` or one shard.
- ``parquet``: img2dataset's Parquet shards (``key``, ``caption``, image bytes in ``jpg``).

The last two are sharded: `open_sharded` streams them a shard at a time (`ShardedSource`), which is
how extraction reads them; `load_dataset` reads their captions only (the images stay in the shards).

Splits are always named ``train``, ``dev`` and ``test``; ``val``, ``valid`` and ``validation`` are
accepted as aliases of ``dev`` (and ``restval`` of ``train`` in files). Formats without a split
column get a hashed split: each image's split depends only on its own key (BLAKE2b of the key,
modulo 8: 0-5 train, 6 dev, 7 test, so about 75 / 12.5 / 12.5 %), which is reproducible across
machines and Python runs and does not move images when others are added or removed. The Kaggle
copy of Flickr8k has no split lists, so its hashed dev/test splits are *not* the standard
Karpathy ones; compare numbers against published results on the classic layout only.

Bad input never stops a load because of one line: malformed lines, rows whose split name is not
recognised, captions that are empty after cleaning and images missing from the image folder are
skipped, counted in `LoadReport` and described (with line numbers) in its messages;
`LoadReport.summary()` says it all in one line for a user. Image paths that are absolute or
contain ".." are skipped the same way unless `load_dataset(..., allow_outside_paths=True)`: a
caption file cannot make the program read files outside its image folder.

Two kinds of error, so that a broken dataset is never mistaken for no dataset:

- `NoDatasetError`: nothing at the path, or no file of any known format there (a caller may
  then treat a folder as plain images).
- `DatasetError` (its base class): a dataset file that is there but cannot be used (no valid
  line, wrong header, binary, not UTF-8, truncated JSON, no image found).

Both are `captioner.errors.FileError`s, whose message is "<file>: <problem>" on one line.

Package layout: `base` (dataset, report, errors, splits), `files` (reading caption files,
checking image keys), `registry` (the formats and `detect_format`), `loader` (`load_dataset`
and the checks every format shares), and one module per format (`flickr8k`, `kaggle`,
`karpathy`, `table` for csv and jsonl; `csvrows` is the CSV parser kaggle and csv share), each
registering itself when imported below; the import order is the detection order. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

# The reader modules register their formats on import, in detection order: most specific first.
from captioner.data import flickr8k, kaggle, karpathy, parquet, table, webdataset  # noqa: F401  (isort: keep this order)
from captioner.data.base import (  # noqa: F401  (MAX_MESSAGES: for callers and tests)
    MAX_MESSAGES,
    SPLITS,
    CaptionDataset,
    DatasetError,
    LoadReport,
    NoDatasetError,
    hashed_split,
    normalize_split,
)
from captioner.data.loader import load_dataset
from captioner.data.registry import detect_format, format_names, get_format
from captioner.data.shards import Sample, ShardedSource
from captioner.text import clean_caption

__all__ = [
    "FORMATS",
    "SPLITS",
    "CaptionDataset",
    "DatasetError",
    "LoadReport",
    "NoDatasetError",
    "Sample",
    "ShardedSource",
    "clean_caption",
    "detect_format",
    "hashed_split",
    "is_sharded",
    "load_dataset",
    "normalize_split",
    "open_sharded",
]

FORMATS: tuple[str, ...] = format_names()


def open_sharded(path: str | os.PathLike, format: str = "auto") -> ShardedSource:
    """The shards of a WebDataset or Parquet dataset, to stream a shard at a time.

    Raises:
        NoDatasetError: nothing of a known format at `path`.
        DatasetError: a dataset of a format that is not sharded (its images are files in a folder:
            use `load_dataset`), or a shard that cannot be read.
    """
    path = Path(path)
    name = detect_format(path) if format.strip().lower() == "auto" else format.strip().lower()
    fmt = get_format(name)
    if fmt is None:
        raise DatasetError(path, f"unknown dataset format {format!r} (known: auto, {', '.join(format_names())})")
    if fmt.open_shards is None:
        raise DatasetError(path, f"a {name} dataset is not sharded (its images are files); use load_dataset")
    return fmt.open_shards(path)


def is_sharded(path: str | os.PathLike, format: str = "auto") -> bool:
    """Whether the dataset at `path` is of a sharded format (False for anything else, even nothing)."""
    try:
        name = detect_format(path) if format.strip().lower() == "auto" else format.strip().lower()
    except DatasetError:
        return False
    fmt = get_format(name)
    return fmt is not None and fmt.open_shards is not None
