"""Reading caption CSV files: the parser behind the ``csv`` and ``kaggle`` formats.

A caption CSV's header names an image column (``image``, ``image_name``, ``filename``, ...) and a
caption column (``caption``, ``comment``, ``text``, ...), and optionally a ``split`` column; the
delimiter (``,``, TAB, ``|`` or ``;``) is read off the header. This module registers no format.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from captioner.data.base import DatasetError, LoadReport, Raw, Record, check_key, normalize_split, read_text

__all__ = ["header_columns", "read_csv"]

_IMAGE_COLUMNS = ("image", "image_name", "filename", "file_name", "file", "path")
_CAPTION_COLUMNS = ("caption", "comment", "text", "sentence", "raw")
_SPLIT_COLUMNS = ("split",)


def header_columns(header: str) -> tuple[str, list[str]] | None:
    """(delimiter, lower-cased column names) if the line is a header with image and caption columns."""
    for delimiter in (",", "\t", "|", ";"):
        if delimiter not in header:
            continue
        columns = [c.strip().strip('"').lower() for c in header.split(delimiter)]
        if any(c in _IMAGE_COLUMNS for c in columns) and any(c in _CAPTION_COLUMNS for c in columns):
            return delimiter, columns
    return None


def _column(columns: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in columns:
            return columns.index(name)
    return None


def read_csv(csv_file: Path, image_dir: Path) -> Raw:
    """Reads a caption CSV whose header names its columns.

    Raises:
        DatasetError: no usable header, malformed CSV, or no valid row.
    """
    text = read_text(csv_file)
    header_line = text.lstrip().split("\n", 1)[0].rstrip("\r")
    found = header_columns(header_line)
    if found is None:
        shown = header_line if len(header_line) <= 60 else header_line[:57] + "..."
        raise DatasetError(
            csv_file, f"not a caption CSV: the header {shown!r} needs 'image' and 'caption' columns"
        )
    delimiter, columns = found
    image_col = _column(columns, _IMAGE_COLUMNS)
    caption_col = _column(columns, _CAPTION_COLUMNS)
    split_col = _column(columns, _SPLIT_COLUMNS)
    report = LoadReport()
    records: list[Record] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    seen_header = False
    try:
        for row in reader:
            number = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if not seen_header:
                seen_header = True
                continue
            report.records += 1
            parsed = _parse_csv_row(row, len(columns), image_col, caption_col, split_col)
            if isinstance(parsed, str):
                report.skip(f"{csv_file.name} line {number}", parsed)
                continue
            records.append(parsed)
    except csv.Error as e:
        raise DatasetError(csv_file, f"line {reader.line_num}: malformed CSV ({e})") from None
    if not records and report.skipped_lines:
        raise DatasetError(csv_file, f"no valid row: {report.messages[0]}")
    return Raw(csv_file, image_dir, records, report, None, hashed=split_col is None)


def _parse_csv_row(row: list[str], width: int, image_col: int, caption_col: int, split_col: int | None) -> Record | str:
    if len(row) > width and caption_col == width - 1:
        # An unquoted comma inside a caption in the last column: the rest of the row is caption.
        row = [*row[:caption_col], ",".join(row[caption_col:])]
    if len(row) != width:
        return f"{len(row)} fields, expected {width}"
    key = row[image_col].strip()
    problem = check_key(key)
    if problem:
        return problem
    split = None
    if split_col is not None:
        split = normalize_split(row[split_col])
        if split is None:
            return f"unknown split {row[split_col].strip()!r}"
    return key, row[caption_col].strip(), split
