"""Karpathy's split files: ``dataset_{flickr8k,flickr30k,coco}.json`` and an image folder.

The file is one JSON object, ``{"images": [{"filename", "filepath"?, "split", "sentences":
[{"raw" or "tokens"}]}]}``. Split ``val`` becomes ``dev`` and ``restval`` becomes ``train``.
COCO entries carry a ``filepath`` ("train2014", "val2014"), and their keys are
``filepath/filename``.
"""

from __future__ import annotations

import json
from pathlib import Path

from captioner.data.base import DatasetError, LoadReport, NoDatasetError, Raw, Record, normalize_split
from captioner.data.files import check_key, default_image_dir, quoted, read_text
from captioner.data.registry import Format, register

# How an entry's place reads in messages: "dataset_coco.json images[12]".
_PLACE = "images[{}]"


def karpathy_files(directory: Path) -> list[Path]:
    """The dataset_*.json files in `directory`, sorted."""
    return sorted(directory.glob("dataset_*.json"))


def read_karpathy(path: Path, image_dir: Path | None) -> Raw:
    """Reads a Karpathy JSON file, or the one dataset_*.json in a directory.

    Raises:
        NoDatasetError: a directory without a dataset_*.json.
        DatasetError: several such files, invalid JSON, no "images" list, or no usable entry.
    """
    if path.is_dir():
        found = karpathy_files(path)
        if len(found) != 1:
            error = NoDatasetError if not found else DatasetError
            names = ", ".join(p.name for p in found) or "none"
            raise error(path, f"expected one dataset_*.json here, found {names}; pass the file itself")
        path = found[0]
    text = read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DatasetError(path, 'not a Karpathy caption file (expected {"images": [...]})')
    report = LoadReport(unit="record")
    records: list[Record] = []
    for index, entry in enumerate(doc["images"]):
        parsed = _parse_entry(entry)
        if isinstance(parsed, str):
            report.records += 1
            report.skip(f"{path.name} {_PLACE.format(index)}", parsed)
            continue
        key, split, texts = parsed
        report.records += len(texts)
        records.extend((key, text.strip(), split, index) for text in texts)
    if not records and report.skipped_lines:
        raise DatasetError(path, f"no usable image entry: {report.messages[0]}")
    return Raw(path, default_image_dir(path, image_dir), records, report, place=_PLACE)


def _parse_entry(entry: object) -> tuple[str, str, list[str]] | str:
    """(image key, canonical split, captions), or why the entry is unusable."""
    if not isinstance(entry, dict):
        return "not an object"
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        return "no 'filename'"
    filepath = entry.get("filepath")
    key = f"{filepath.strip('/')}/{filename.strip()}" if isinstance(filepath, str) and filepath else filename.strip()
    problem = check_key(key)
    if problem:
        return problem
    raw_split = entry.get("split")
    split = normalize_split(raw_split) if isinstance(raw_split, str) else None
    if split is None:
        return f"unknown split {quoted(raw_split)}"
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        return "no 'sentences' list"
    texts = [text for text in map(_sentence_text, sentences) if text is not None]
    if not texts:
        return "no sentence with 'raw' text"
    return key, split, texts


def _sentence_text(sentence: object) -> str | None:
    if not isinstance(sentence, dict):
        return None
    raw = sentence.get("raw")
    if isinstance(raw, str):
        return raw
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens)
    return None


register(
    Format(
        name="karpathy",
        read=read_karpathy,
        looks_for="dataset_*.json",
        in_directory=lambda directory: bool(karpathy_files(directory)),
        file_suffixes=(".json",),
    )
)
