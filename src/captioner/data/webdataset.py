"""WebDataset tar shards as `img2dataset --output_format webdataset` writes them: the ``webdataset`` format.

A shard ``00000.tar`` holds, per sample, files that share a key: ``000000123.jpg`` (or .png, .webp,
...), ``000000123.txt`` (the caption) and optionally ``000000123.json`` (img2dataset's metadata:
url, caption, size, ...; a ``split`` field there sets the sample's split). As in the webdataset
library, a file's key is its path up to the first dot of its name, and a sample's files are next to
each other in the tar. The folder may also hold img2dataset's ``*.parquet`` and ``*_stats.json``
side files; they are not read.

Tars are read as streams (``tarfile`` mode ``r|*``, gzip too): nothing is extracted to disk, a shard
is read once from start to end, and member names can never make a file be written anywhere. Members
that are not regular files are ignored; an image over `captioner.images.MAX_FILE_BYTES` or a text
over 1 MB is skipped. A shard that is not a tar, or that is cut short (an img2dataset job killed
while writing), is reported and its readable samples kept.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from captioner.data.base import LoadReport, Raw
from captioner.data.files import quoted
from captioner.data.registry import Format, register
from captioner.data.shards import Sample, ShardedSource, find_shards, shard_files, split_of
from captioner.images import MAX_FILE_BYTES

__all__ = ["open_webdataset"]

SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
TEXT_EXTENSIONS = ("txt", "json")
MAX_TEXT_BYTES = 1 << 20


def open_webdataset(path: Path) -> ShardedSource:
    """The shards at `path` (a .tar file, or a folder of them)."""
    root, shards = find_shards(path, SUFFIXES, "WebDataset .tar")
    return ShardedSource("webdataset", root, shards, _read_shard)


def _read_webdataset(path: Path, image_dir: Path | None) -> Raw:
    return open_webdataset(path).to_raw(image_dir)


def _split_name(name: str) -> tuple[str, str]:
    """("dir/000000123", "jpg") for "dir/000000123.jpg": the key is everything up to the name's first dot."""
    folder, _, base = name.lstrip("./").rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


class _Pending:
    """The files of one sample seen so far."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.image_ext: str | None = None
        self.image: bytes | None = None
        self.text: str | None = None
        self.meta: dict | None = None
        self.problem: str | None = None

    def sample(self, where: str) -> Sample:
        captions = [self.text.strip()] if self.text is not None and self.text.strip() else []
        split_value = None
        if self.meta is not None:
            if not captions and isinstance(self.meta.get("caption"), str) and self.meta["caption"].strip():
                captions = [self.meta["caption"].strip()]
            split_value = self.meta.get("split")
        split, raw_split = split_of(split_value)
        key = f"{self.key}.{self.image_ext}" if self.image_ext else self.key
        return Sample(key, self.image, self.image_ext is not None, captions, split, where, raw_split)


def _read_shard(shard: Path, images: bool, report: LoadReport) -> Iterator[Sample]:
    name = shard.name
    pending: _Pending | None = None
    samples = 0
    try:
        with tarfile.open(shard, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                if pending is not None and key != pending.key:
                    samples += 1
                    yield _finish(pending, name, report)
                    pending = None
                if ext not in IMAGE_EXTENSIONS and ext not in TEXT_EXTENSIONS:
                    continue
                if pending is None:
                    pending = _Pending(key)
                _add_member(pending, tar, member, ext, images)
            # A stream that ends inside a header looks like a normal end to tarfile; a whole tar
            # ends with two zero blocks after its last member.
            cut_short = not shard.name.lower().endswith((".gz", ".tgz")) and tar.offset + 2 * tarfile.BLOCKSIZE > shard.stat().st_size
            if pending is not None and not cut_short:
                samples += 1
                yield _finish(pending, name, report)
            if cut_short:
                report.skip(name, f"cut short after {samples} samples (no end-of-archive blocks); the rest of the shard")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        what = "not a tar archive" if samples == 0 and pending is None else f"damaged or cut short after {samples} samples"
        report.skip(name, f"{what} ({detail}); the rest of the shard")


def _finish(pending: _Pending, shard_name: str, report: LoadReport) -> Sample:
    where = f"{shard_name} {pending.key}"
    if pending.problem:
        report.note(f"{where}: {pending.problem}")
    return pending.sample(where)


def _add_member(pending: _Pending, tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str, images: bool) -> None:
    if ext in IMAGE_EXTENSIONS:
        if pending.image_ext is not None:
            return  # a second image of the same key: the first counts
        if member.size > MAX_FILE_BYTES:
            pending.problem = f"image {member.size:,} bytes, over the {MAX_FILE_BYTES:,} limit; skipped"
            return
        pending.image_ext = ext
        if images:
            file = tar.extractfile(member)
            pending.image = file.read() if file is not None else None
        return
    if member.size > MAX_TEXT_BYTES:
        pending.problem = f".{ext} of {member.size:,} bytes, over the {MAX_TEXT_BYTES:,} limit; ignored"
        return
    file = tar.extractfile(member)
    data = file.read() if file is not None else b""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pending.problem = f".{ext} is not UTF-8 text; ignored"
        return
    if ext == "txt":
        pending.text = text
        return
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        pending.problem = f".json is not valid JSON ({e.msg}); ignored"
        return
    if isinstance(meta, dict):
        pending.meta = meta
    else:
        pending.problem = f".json holds {quoted(type(meta).__name__)}, not an object; ignored"


register(
    Format(
        name="webdataset",
        read=_read_webdataset,
        looks_for="*.tar",
        in_directory=lambda directory: bool(shard_files(directory, SUFFIXES)),
        file_suffixes=SUFFIXES,
        open_shards=open_webdataset,
    )
)
