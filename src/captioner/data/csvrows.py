"""Reading caption CSV files: the parser behind the ``csv`` and ``kaggle`` formats.

A caption CSV's header names an image column (``image``, ``image_name``, ``filename``, ...) and a
caption column (``caption``, ``comment``, ``text``, ...), and optionally a ``split`` column; the
delimiter (``,``, TAB, ``|`` or ``;``) is read off the header. This module registers no format.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from captioner.data.base import DatasetError, LoadReport, Raw, Record, normalize_split
from captioner.data.files import check_key, quoted, read_text, shorten

if TYPE_CHECKING:
    import _csv

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

    A row the csv module refuses (a field over its size limit) is skipped like any other
    malformed row.

    Raises:
        DatasetError: no usable header, or no valid row.
    """
    text = read_text(csv_file)
    header_line = text.lstrip().split("\n", 1)[0].rstrip("\r")
    found = header_columns(header_line)
    if found is None:
        raise DatasetError(csv_file, f"not a caption CSV: the header {shorten(header_line, 60)!r} needs 'image' and 'caption' columns")
    delimiter, columns = found
    image_col = _column(columns, _IMAGE_COLUMNS)
    caption_col = _column(columns, _CAPTION_COLUMNS)
    split_col = _column(columns, _SPLIT_COLUMNS)
    report = LoadReport()
    records: list[Record] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    seen_header = False
    for number, row in _rows(reader):
        if isinstance(row, list) and not any(cell.strip() for cell in row):
            continue
        if not seen_header:
            seen_header = True
            continue
        report.records += 1
        assert image_col is not None and caption_col is not None  # the header check above guarantees both
        parsed = _parse_csv_row(row, len(columns), image_col, caption_col, split_col)
        if isinstance(parsed, str):
            report.skip(f"{csv_file.name} line {number}", parsed)
            continue
        records.append((*parsed, number))
    if not records and report.skipped_lines:
        raise DatasetError(csv_file, f"no valid row: {report.messages[0]}")
    return Raw(csv_file, image_dir, records, report, None, hashed=split_col is None)


def _rows(reader: _csv.Reader) -> Iterator[tuple[int, list[str] | str]]:
    """(line number, row) pairs, with the reason in place of a row the csv module refuses."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield reader.line_num, f"malformed CSV ({e})"
        else:
            yield reader.line_num, row


def _parse_csv_row(row: list[str] | str, width: int, image_col: int, caption_col: int, split_col: int | None) -> tuple[str, str, str | None] | str:
    if isinstance(row, str):
        return row
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
            return f"unknown split {quoted(row[split_col].strip())}"
    return key, row[caption_col].strip(), split
