"""Tables of (image, caption[, split]) rows: the ``csv`` and ``jsonl`` formats.

- ``csv``: a CSV (or TSV) file with image and caption columns and an optional ``split`` column
  (see `captioner.data.csvrows`).
- ``jsonl``: one JSON object per line, ``{"image": ..., "caption": ..., "split": ...}``
  (``"captions": [...]`` is accepted too).

Without a split column the images get a hashed split. The image folder is a usual one
(``images/``, ``Images/``, ...) next to the file, else the file's own folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from captioner.data.base import DatasetError, LoadReport, Raw, Record, normalize_split
from captioner.data.csvrows import header_columns, read_csv
from captioner.data.files import check_key, default_image_dir, files_with_suffix, parse_lines, quoted, single_file
from captioner.data.registry import Format, register

CSV_SUFFIXES = (".csv", ".tsv")
JSONL_SUFFIXES = (".jsonl", ".ndjson")

# --------------------------------------------------------------------------------------------
# CSV


def read_csv_dataset(path: Path, image_dir: Path | None) -> Raw:
    """Reads a CSV file, or the one CSV file in a directory."""
    csv_file = single_file(path, CSV_SUFFIXES, "CSV")
    return read_csv(csv_file, default_image_dir(csv_file, image_dir))


# --------------------------------------------------------------------------------------------
# JSON Lines


def read_jsonl_dataset(path: Path, image_dir: Path | None) -> Raw:
    """Reads a JSON Lines file, or the one such file in a directory.

    Raises:
        DatasetError: no line is an object with image and caption fields.
    """
    jsonl_file = single_file(path, JSONL_SUFFIXES, "JSON Lines")
    report = LoadReport()
    records: list[Record] = []
    any_split = False
    valid_lines = 0
    for number, (key, texts, split) in parse_lines(jsonl_file, report, _parse_jsonl_line):
        valid_lines += 1
        any_split = any_split or split is not None
        records.extend((key, text.strip(), split, number) for text in texts)
    if not valid_lines and report.skipped_lines:
        raise DatasetError(jsonl_file, f"not JSON Lines with image and caption fields: {report.messages[0]}")
    if any_split:
        records = _fill_missing_splits(records, report, jsonl_file.name)
    return Raw(jsonl_file, default_image_dir(jsonl_file, image_dir), records, report, None, hashed=not any_split)


def _parse_jsonl_line(line: str) -> tuple[str, list[str], str | None] | str:
    """(image key, captions, canonical split or None), or why the line is unusable."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return f"invalid JSON ({e.msg} at column {e.colno})"
    if not isinstance(obj, dict):
        return f"expected a JSON object, found {type(obj).__name__}"
    key = obj.get("image", obj.get("filename"))
    if not isinstance(key, str):
        return "no 'image' string"
    key = key.strip()
    problem = check_key(key)
    if problem:
        return problem
    if "captions" in obj and "caption" not in obj:
        texts = obj["captions"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return "'captions' is not a list of strings"
    else:
        texts = obj.get("caption")
        if not isinstance(texts, str):
            return "no 'caption' string"
        texts = [texts]
    split = obj.get("split")
    if split is not None:
        if not isinstance(split, str) or normalize_split(split) is None:
            return f"unknown split {quoted(split)}"
        split = normalize_split(split)
    return key, texts, split


def _fill_missing_splits(records: list[Record], report: LoadReport, name: str) -> list[Record]:
    """Within a file that has splits, a record without one is as unusable as an unknown split."""
    kept = []
    for record in records:
        if record[2] is None:
            report.skip(f"{name} line {record[3]}", "unknown split: none, while other lines have one")
        else:
            kept.append(record)
    return kept


register(
    Format(
        name="csv",
        read=read_csv_dataset,
        looks_for="*.csv",
        in_directory=lambda directory: bool(files_with_suffix(directory, (".csv",))),
        file_suffixes=CSV_SUFFIXES,
        # A first line that opens a JSON object is JSON Lines, even if it could parse as a header.
        sniff=lambda first_line: not first_line.startswith("{") and header_columns(first_line) is not None,
    )
)

register(
    Format(
        name="jsonl",
        read=read_jsonl_dataset,
        looks_for="*.jsonl",
        in_directory=lambda directory: bool(files_with_suffix(directory, JSONL_SUFFIXES)),
        file_suffixes=JSONL_SUFFIXES,
        sniff=lambda first_line: first_line.startswith("{"),
    )
)
