"""`load_dataset`: runs the reader of a format, then the checks every format shares.

Every reader returns a `Raw` (records, image folder, report); this module drops image paths
outside the image folder, empty captions and missing images, builds the splits (from split
lists, from the records, or hashed) and returns the `CaptionDataset`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from captioner.data.base import SPLITS, CaptionDataset, DatasetError, LoadReport, NoDatasetError, Raw, hashed_split
from captioner.data.files import is_outside, quoted, shorten
from captioner.data.registry import detect_format, format_names, get_format
from captioner.text import has_words

__all__ = ["load_dataset"]

logger = logging.getLogger(__name__)


def load_dataset(
    path: str | os.PathLike,
    format: str = "auto",
    image_dir: str | os.PathLike | None = None,
    check_images: bool = True,
    *,
    allow_outside_paths: bool = False,
) -> CaptionDataset:
    """Reads a caption dataset (see `captioner.data` for the layouts).

    Args:
        path: the dataset directory or its caption file.
        format: one of `FORMATS`, or "auto" to detect it.
        image_dir: the image folder, if not the layout's usual one.
        check_images: keep only images that exist in the image folder (one directory scan,
            not one lookup per caption); missing ones are counted in the report.
        allow_outside_paths: keep records whose image path is absolute or contains "..". By
            default they are skipped and counted in `report.outside_paths`, so that a caption
            file cannot make the program read files outside its image folder.

    Returns:
        The dataset, with `report` saying what was kept and skipped (`report.summary()` says
        it in one line for a user).

    Raises:
        NoDatasetError: nothing at `path`, or no dataset file of any known format there.
        DatasetError: unknown format name, a dataset file that is broken (binary, not UTF-8,
            wrong format), or nothing left to load (for example when no image was found:
            probably the wrong `image_dir`).
    """
    started = time.perf_counter()
    path = Path(path)
    name = format.strip().lower()
    if name == "auto":
        name = detect_format(path)
    elif get_format(name) is None:
        raise DatasetError(path, f"unknown dataset format {format!r} (known: auto, {', '.join(format_names())})")
    elif not path.exists():
        raise NoDatasetError(path, "not found")
    reader = get_format(name)
    assert reader is not None  # detect_format only returns registered names
    raw = reader.read(path, Path(image_dir) if image_dir is not None else None)
    raw.report.source = raw.source.name
    # Sharded formats hold their images inside the shards; their readers already counted missing ones.
    dataset = _assemble(raw, name, check_images and reader.open_shards is None, allow_outside_paths)
    dataset.report.seconds = time.perf_counter() - started
    logger.debug("%s (%s): %s", raw.source, name, dataset.report)
    return dataset


def _assemble(raw: Raw, name: str, check_images: bool, allow_outside_paths: bool) -> CaptionDataset:
    report = raw.report
    captions, record_splits = _collect_captions(raw, allow_outside_paths)
    if check_images:
        _drop_missing_images(raw, captions)
    if raw.split_lists is not None:
        splits = _splits_from_lists(raw.split_lists, captions, report)
    else:
        splits = _splits_from_records(captions, record_splits, raw.hashed)
    assigned = {k for keys in splits.values() for k in keys}
    report.unassigned_images = sum(1 for k in captions if k not in assigned)
    report.images = len(captions)
    report.captions = sum(len(c) for c in captions.values())
    if not captions:
        raise DatasetError(raw.source, _nothing_loaded(raw, check_images))
    return CaptionDataset(name, raw.image_dir, captions, splits, report, raw.source)


def _collect_captions(raw: Raw, allow_outside_paths: bool) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Groups captions by image, dropping refused paths and empty captions; remembers each image's first split."""
    report = raw.report
    captions: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    for key, caption, split, number in raw.records:
        if not allow_outside_paths and is_outside(key):
            report.outside_paths += 1
            report.note(f"{raw.where(number)}: image path {quoted(key)} is outside the dataset folder; skipped")
            continue
        if not has_words(caption):
            report.empty_captions += 1
            report.note(f"{raw.where(number)}: empty caption {quoted(caption)} for {shorten(key)}; skipped")
            continue
        captions.setdefault(key, []).append(caption)
        if split is not None:
            first = splits.setdefault(key, split)
            if first != split:
                report.split_conflicts += 1
                report.note(f"{raw.where(number)}: {shorten(key)} listed in {first} and {split}; kept in {first}")
    return captions, splits


def _drop_missing_images(raw: Raw, captions: dict[str, list[str]]) -> None:
    if not raw.image_dir.is_dir():
        raise DatasetError(raw.image_dir, "image folder not found (pass image_dir, or check_images=False)")
    present = _existing_files(raw.image_dir, captions)
    report = raw.report
    for key in [k for k in captions if k not in present]:
        report.missing_images += 1
        report.missing_captions += len(captions[key])
        report.note(f"{shorten(key)}: image not found in {raw.image_dir}; its {len(captions[key])} captions skipped")
        del captions[key]


def _existing_files(image_dir: Path, keys: Iterable[str]) -> set[str]:
    """The keys whose files exist, scanning each folder once instead of one stat per key."""
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        folder, _, name = key.rpartition("/")
        by_folder.setdefault(folder, []).append((key, name))
    present: set[str] = set()
    for folder, folder_keys in by_folder.items():
        try:
            with os.scandir(image_dir / folder) as entries:
                names = {e.name for e in entries if e.is_file()}
        except OSError:
            continue  # a folder that is missing just means its images are missing
        present.update(key for key, name in folder_keys if name in names)
    return present


def _splits_from_lists(lists: dict[str, list[str]], captions: dict[str, list[str]], report: LoadReport) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for split, names in lists.items():
        keys: list[str] = []
        for name in names:
            if name not in captions:
                report.split_extras += 1
                report.note(f"{shorten(name)}: in the {split} list but has no captions or no image; ignored")
            elif name in owner:
                if owner[name] != split:
                    report.split_conflicts += 1
                    report.note(f"{shorten(name)}: listed in {owner[name]} and {split}; kept in {owner[name]}")
            else:
                owner[name] = split
                keys.append(name)
        splits[split] = keys
    return splits


def _splits_from_records(captions: dict[str, list[str]], record_splits: dict[str, str], hashed: bool) -> dict[str, list[str]]:
    if hashed:
        splits: dict[str, list[str]] = {s: [] for s in SPLITS}
        for key in captions:
            splits[hashed_split(key)].append(key)
        return splits
    splits = {}
    for key in captions:
        splits.setdefault(record_splits[key], []).append(key)
    return {s: splits[s] for s in SPLITS if s in splits}


def _nothing_loaded(raw: Raw, check_images: bool) -> str:
    r = raw.report
    if check_images and r.missing_images:
        return f"none of the {r.missing_images:,} images named in the captions is in {raw.image_dir} (wrong image_dir?)"
    if r.outside_paths and not r.empty_captions:
        return f"all {r.outside_paths:,} image paths are outside the dataset folder (absolute or with '..'); pass allow_outside_paths=True to use them"
    if r.empty_captions and not r.outside_paths:
        return f"no usable captions: all {r.empty_captions:,} are empty after cleaning"
    first = f" (first problem: {r.messages[0]})" if r.messages else ""
    return f"no captions found{first}"
