"""Parquet shards as `img2dataset --output_format parquet` writes them: the ``parquet`` format.

Each ``00000.parquet`` has a row per URL: ``key``, ``url``, ``caption`` (or ``txt``), ``status``
and the image's bytes in a binary column named after its encoding (``jpg``, ``png`` or ``webp``;
``image`` and ``jpeg`` are accepted too), null where the download failed. An optional ``split``
column sets the split. Files are read a row group at a time (only the columns needed), so a shard
is never in memory whole. Reading Parquet needs pyarrow (``pip install 'captioner[parquet]'``;
the ``ray`` extra has it too).

A Parquet file with URLs and captions but no image column is img2dataset's input, not its output:
it is refused with a message saying so (the images have to be downloaded first).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from captioner.data.base import DatasetError, LoadReport, Raw
from captioner.data.registry import Format, register
from captioner.data.shards import Sample, ShardedSource, find_shards, shard_files, split_of
from captioner.data.webdataset import SUFFIXES as WEBDATASET_SUFFIXES
from captioner.images import MAX_FILE_BYTES

__all__ = ["open_parquet"]

SUFFIXES = (".parquet",)
IMAGE_COLUMNS = ("jpg", "png", "webp", "jpeg", "image")
CAPTION_COLUMNS = ("caption", "txt")
ROWS_PER_READ = 256  # rows per record batch: bounds memory to a few hundred images


def _pyarrow_parquet(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(path, "reading Parquet needs pyarrow: pip install 'captioner[parquet]'") from None
    return pq


def open_parquet(path: Path) -> ShardedSource:
    """The shards at `path` (a .parquet file, or a folder of them); checks the first one's columns."""
    root, shards = find_shards(path, SUFFIXES, "Parquet")
    _columns(shards[0])
    return ShardedSource("parquet", root, shards, _read_shard)


def _read_parquet(path: Path, image_dir: Path | None) -> Raw:
    return open_parquet(path).to_raw(image_dir)


def _columns(shard: Path) -> tuple[str | None, str, str, str | None]:
    """(key column or None, caption column, image column, split column or None) of a shard."""
    pq = _pyarrow_parquet(shard)
    try:
        names = list(pq.read_schema(shard).names)
    except Exception as err:  # pyarrow raises its own ArrowInvalid, OSError, ...
        raise DatasetError(shard, f"not a readable Parquet file ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    caption = next((c for c in CAPTION_COLUMNS if c in names), None)
    image = next((c for c in IMAGE_COLUMNS if c in names), None)
    if caption is None:
        raise DatasetError(shard, f"no caption column (looked for {', '.join(CAPTION_COLUMNS)}; found {', '.join(names[:12]) or 'none'})")
    if image is None:
        hint = "; this looks like img2dataset's input (URLs only): download the images first (img2dataset --output_format parquet)" if "url" in names else ""
        raise DatasetError(shard, f"no image bytes column (looked for {', '.join(IMAGE_COLUMNS)}){hint}")
    return ("key" if "key" in names else None), caption, image, ("split" if "split" in names else None)


def _read_shard(shard: Path, images: bool, report: LoadReport) -> Iterator[Sample]:
    pq = _pyarrow_parquet(shard)
    try:
        key_column, caption_column, image_column, split_column = _columns(shard)
    except DatasetError as err:
        report.skip(shard.name, err.problem)
        return
    extension = "jpg" if image_column in ("image", "jpeg") else image_column
    wanted = [c for c in (key_column, caption_column, split_column, "status") if c is not None]
    row = 0
    try:
        parquet = pq.ParquetFile(shard)
        wanted = [c for c in wanted if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=ROWS_PER_READ, columns=[*wanted, image_column]):
            columns = {name: batch.column(name) for name in wanted}
            image_values = batch.column(image_column)
            for i in range(batch.num_rows):
                row += 1
                yield _sample(
                    shard.name,
                    row,
                    {name: values[i].as_py() for name, values in columns.items()},
                    image_values[i],
                    images,
                    key_column,
                    caption_column,
                    split_column,
                    extension,
                )
    except Exception as err:  # a damaged file: pyarrow's errors have no common base but Exception
        if isinstance(err, GeneratorExit):
            raise
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        report.skip(shard.name, f"damaged after {row} rows ({detail}); the rest of the shard")


def _sample(
    shard_name: str,
    row: int,
    values: dict,
    image_value: Any,
    images: bool,
    key_column: str | None,
    caption_column: str,
    split_column: str | None,
    extension: str,
) -> Sample:
    raw_key = values.get(key_column) if key_column else None
    key = str(raw_key).strip() if raw_key is not None and str(raw_key).strip() else f"{Path(shard_name).stem}-{row:09d}"
    caption = values.get(caption_column)
    captions = [caption.strip()] if isinstance(caption, str) and caption.strip() else []
    split, raw_split = split_of(values.get(split_column) if split_column else None)
    has_image = image_value.is_valid
    data: bytes | None = None
    if has_image and images:
        data = image_value.as_py()
        if isinstance(data, dict):  # {"bytes": ..., "path": ...} as Hugging Face datasets store images
            data = data.get("bytes")
        if not isinstance(data, bytes) or not data or len(data) > MAX_FILE_BYTES:
            has_image, data = False, None
    where = f"{shard_name} row {row}" + (f" ({key})" if raw_key is not None else "")
    if not has_image and values.get("status") not in (None, "success"):
        where += f" [status {values['status']}]"
    return Sample(f"{key}.{extension}", data, has_image, captions, split, where, raw_split)


register(
    Format(
        name="parquet",
        read=_read_parquet,
        looks_for="*.parquet",
        # img2dataset's WebDataset folders hold .parquet side files (metadata, no images) next to the tars.
        in_directory=lambda directory: bool(shard_files(directory, SUFFIXES)) and not shard_files(directory, WEBDATASET_SUFFIXES),
        file_suffixes=SUFFIXES,
        open_shards=open_parquet,
    )
)
