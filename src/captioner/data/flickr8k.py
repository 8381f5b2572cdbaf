"""The classic Flickr8k download: a token file, split lists and an image folder.

``Flickr8k.token.txt`` holds "<image>.jpg#<n><TAB><caption>" lines; ``Flickr_8k.{train,dev,test}
Images.txt`` list the images of each split. Both live in the dataset root or in
``Flickr8k_text/``; the images in ``Flicker8k_Dataset/`` (the historical spelling),
``Flickr8k_Dataset/`` or ``Images/``. A missing split file just means that split is absent;
with no split file at all, images get a hashed split.
"""

from __future__ import annotations

from pathlib import Path

from captioner.data.base import DatasetError, LoadReport, NoDatasetError, Raw, Record
from captioner.data.files import check_key, find_image_dir, parse_lines, quoted, read_lines, read_text
from captioner.data.registry import Format, register

TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
FLICKR8K_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "images")


def find_token_file(root: Path) -> Path | None:
    """The token file in `root` or `root/Flickr8k_text`, or None."""
    for folder in (root, root / "Flickr8k_text"):
        if (folder / TOKEN_FILE).is_file():
            return folder / TOKEN_FILE
    return None


def read_flickr8k(path: Path, image_dir: Path | None) -> Raw:
    """Reads a Flickr8k directory or its token file (split lists are read from beside it).

    Raises:
        NoDatasetError: a directory without a token file.
        DatasetError: a token file that cannot be read or has no valid line.
    """
    if path.is_dir():
        token_file = find_token_file(path)
        if token_file is None:
            raise NoDatasetError(path, f"no {TOKEN_FILE} here or in Flickr8k_text/")
        root = path
    else:
        token_file = path
        root = path.parent.parent if path.parent.name == "Flickr8k_text" else path.parent
    report = LoadReport()
    records = _parse_token_file(token_file, report)
    split_lists = _read_split_lists(token_file.parent)
    if image_dir is None:
        image_dir = find_image_dir((root, token_file.parent), FLICKR8K_IMAGE_DIRS, root / FLICKR8K_IMAGE_DIRS[0])
    hashed = not split_lists
    if hashed:
        report.note(f"{token_file.parent}: no Flickr_8k.*Images.txt split files; using a hashed split", problem=False)
    return Raw(token_file, image_dir, records, report, None if hashed else split_lists, hashed)


def _parse_token_file(token_file: Path, report: LoadReport) -> list[Record]:
    records: list[Record] = [(key, caption, None, number) for number, (key, caption) in parse_lines(token_file, report, _parse_token_line)]
    if not records:
        first = f": {report.messages[0]}" if report.messages else ""
        raise DatasetError(token_file, f"not a Flickr8k token file (no '<image>#<n><TAB><caption>' line){first}")
    return records


def _parse_token_line(line: str) -> tuple[str, str] | str:
    """(image key, caption) or the reason the line is malformed."""
    if "\t" not in line:
        return "no tab between image and caption"
    ref, caption = line.split("\t", 1)
    key, hash_, number = ref.strip().rpartition("#")
    if not hash_ or not number.isdigit():
        return f"{quoted(ref.strip())} is not '<image>#<n>'"
    problem = check_key(key)
    if problem:
        return problem
    return key, caption.strip()


def _read_split_lists(text_dir: Path) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for split, filename in SPLIT_FILES.items():
        path = text_dir / filename
        if path.is_file():
            # The original files lack a final newline; read_lines does not care.
            lists[split] = [line.strip() for _, line in read_lines(read_text(path)) if line.strip()]
    return lists


def _looks_like_token_line(first_line: str) -> bool:
    return "\t" in first_line and "#" in first_line.split("\t", 1)[0]


register(
    Format(
        name="flickr8k",
        read=read_flickr8k,
        looks_for=TOKEN_FILE,
        in_directory=lambda directory: find_token_file(directory) is not None,
        file_suffixes=(".token.txt",),
        sniff=_looks_like_token_line,
    )
)
