"""Karpathy's split files: ``dataset_{flickr8k,flickr30k,coco}.json`` and an image folder.

The file is one JSON object, ``{"images": [{"filename", "filepath"?, "split", "sentences":
[{"raw" or "tokens"}]}]}``. Split ``val`` becomes ``dev`` and ``restval`` becomes ``train``.
COCO entries carry a ``filepath`` ("train2014", "val2014"), and their keys are
``filepath/filename``.
"""

from __future__ import annotations

import json
from pathlib import Path

from captioner.data.base import DatasetError, LoadReport, Raw, Record, check_key, default_image_dir, normalize_split, read_text
from captioner.data.registry import Format, register


def karpathy_files(directory: Path) -> list[Path]:
    """The dataset_*.json files in `directory`, sorted."""
    return sorted(directory.glob("dataset_*.json"))


def read_karpathy(path: Path, image_dir: Path | None) -> Raw:
    """Reads a Karpathy JSON file, or the one dataset_*.json in a directory.

    Raises:
        DatasetError: none or several files, invalid JSON, no "images" list, or no usable entry.
    """
    if path.is_dir():
        found = karpathy_files(path)
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise DatasetError(path, f"expected one dataset_*.json here, found {names}; pass the file itself")
        path = found[0]
    text = read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DatasetError(path, "not a Karpathy caption file (expected {\"images\": [...]})")
    report = LoadReport()
    records: list[Record] = []
    for index, entry in enumerate(doc["images"]):
        parsed = _parse_entry(entry)
        if isinstance(parsed, str):
            report.records += 1
            report.skip(f"{path.name} images[{index}]", parsed)
            continue
        report.records += len(parsed)
        records.extend(parsed)
    if not records and report.skipped_lines:
        raise DatasetError(path, f"no usable image entry: {report.messages[0]}")
    return Raw(path, default_image_dir(path, image_dir), records, report)


def _parse_entry(entry: object) -> list[Record] | str:
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
        return f"unknown split {raw_split!r}"
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        return "no 'sentences' list"
    out = []
    for sentence in sentences:
        text = _sentence_text(sentence)
        if text is not None:
            out.append((key, text.strip(), split))
    if not out:
        return "no sentence with 'raw' text"
    return out


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


register(Format(
    name="karpathy",
    read=read_karpathy,
    looks_for="dataset_*.json",
    in_directory=lambda directory: bool(karpathy_files(directory)),
    file_suffixes=(".json",),
))
