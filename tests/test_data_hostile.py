"""Hostile dataset files, generated here: each either fails with one clear line or loads and says what it skipped.

A user pointing the tools at a damaged or malicious dataset must get one of two outcomes:

- a `DatasetError` (never the "no dataset here" `NoDatasetError`, which the CLI answers by
  treating the folder as plain images and so would hide the damage) whose message is one line
  starting with the broken file's path; or
- a dataset whose `LoadReport` counts every skipped record, and whose `summary()` says so in one
  line that starts with the file's name.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

import pytest

from captioner.data import DatasetError, NoDatasetError, load_dataset

PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"


def write_csv(path: Path, rows: list[list[str]], lineterminator: str = "\n") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=lineterminator).writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return path


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def kaggle_rows(tiny) -> list[list[str]]:
    return [["image", "caption"], *([key, c] for key, caps in tiny.captions.items() for c in caps)]


def broken(path: Path, problem: str, load_from: Path | None = None) -> DatasetError:
    """Loads `load_from` (default: `path`) and checks the error names `path` and `problem` on one line."""
    with pytest.raises(DatasetError) as info:
        load_dataset(load_from or path)
    error = info.value
    assert not isinstance(error, NoDatasetError), f"a broken dataset reported as no dataset: {error}"
    message = str(error)
    assert message.startswith(f"{path}: ") and problem in message, message
    assert "\n" not in message and "\r" not in message and len(message) < 600, message
    return error


def loaded_with_skips(path: Path, **options):
    """Loads `path` and checks that the report's summary names the file on one line."""
    ds = load_dataset(path, **options)
    summary = ds.report.summary()
    assert summary is not None and summary.startswith(f"{ds.source.name}: "), summary
    assert "\n" not in summary and len(summary) < 1500, summary
    assert all("\n" not in m and len(m) < 600 for m in ds.report.messages)
    return ds


# --- files that cannot be used at all: a DatasetError naming the file, even via the folder -------


def test_token_file_not_utf8(tiny_flickr8k):
    token = tiny_flickr8k.caption_file
    token.write_bytes(token.read_bytes() + "x.jpg#0\tA café\n".encode("latin-1"))
    broken(token, "not UTF-8 text (byte 0xe9 on line 51)", load_from=tiny_flickr8k.root)


def test_not_utf8_after_a_bom_reports_the_right_byte_and_line(tiny_kaggle):
    data = codecs.BOM_UTF8 + b"image,caption\na.jpg,fine\nb.jpg,Stra\xdfe\n"
    tiny_kaggle.caption_file.write_bytes(data)
    broken(tiny_kaggle.caption_file, "not UTF-8 text (byte 0xdf on line 3)", load_from=tiny_kaggle.root)


def test_binary_file_named_captions_txt(tiny_kaggle):
    tiny_kaggle.caption_file.write_bytes(PNG_HEADER * 100)
    broken(tiny_kaggle.caption_file, "binary file", load_from=tiny_kaggle.root)


def test_nul_bytes_at_the_start_of_a_token_file(tiny_flickr8k):
    token = tiny_flickr8k.caption_file
    token.write_bytes(b"\x00" * 16 + token.read_bytes())
    broken(token, "binary file", load_from=tiny_flickr8k.root)


def test_utf16_captions_file_says_utf16(tiny_kaggle):
    text = tiny_kaggle.caption_file.read_text(encoding="utf-8")
    tiny_kaggle.caption_file.write_bytes(text.encode("utf-16"))  # what some spreadsheet tools save
    broken(tiny_kaggle.caption_file, "UTF-16 text, not UTF-8", load_from=tiny_kaggle.root)


@pytest.mark.parametrize("content", [b"", b"  \n\r\n\t\n"], ids=["empty", "whitespace"])
def test_empty_token_file(tiny_flickr8k, content):
    tiny_flickr8k.caption_file.write_bytes(content)
    broken(tiny_flickr8k.caption_file, "file is empty", load_from=tiny_flickr8k.root)


def test_header_only_csv(tiny_kaggle):
    write_csv(tiny_kaggle.caption_file, [["image", "caption"]])
    broken(tiny_kaggle.caption_file, "no captions found", load_from=tiny_kaggle.root)


def test_csv_with_only_short_rows(tiny_kaggle):
    write_csv(tiny_kaggle.caption_file, [["image", "caption"], *([key] for key in tiny_kaggle.captions)])
    broken(tiny_kaggle.caption_file, "no valid row: captions.txt line 2: 1 fields, expected 2; skipped", load_from=tiny_kaggle.root)


def test_jsonl_with_only_bad_lines(tmp_path):
    path = write_jsonl(tmp_path / "caps.jsonl", ["{oops", [1, 2], {"image": "a.jpg"}])
    broken(path, "not JSON Lines with image and caption fields: caps.jsonl line 1: invalid JSON", load_from=tmp_path)


def test_token_file_without_tabs(tiny_flickr8k):
    token = tiny_flickr8k.caption_file
    token.write_text(token.read_text().replace("\t", " "))
    broken(
        token,
        "not a Flickr8k token file (no '<image>#<n><TAB><caption>' line): Flickr8k.token.txt line 1: no tab between image and caption; skipped",
        load_from=tiny_flickr8k.root,
    )


@pytest.mark.parametrize(
    "content, problem",
    [
        ("[]", "not a Karpathy caption file"),
        ('[{"filename": "a.jpg"}]', "not a Karpathy caption file"),
        ('{"images": {"filename": "a.jpg"}}', "not a Karpathy caption file"),
        ('{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A d', "invalid JSON at line 1 column"),
    ],
    ids=["empty-list", "list", "images-not-a-list", "truncated"],
)
def test_karpathy_json_of_the_wrong_shape(make_karpathy, content, problem):
    tiny = make_karpathy(n_images=2)
    tiny.caption_file.write_text(content)
    broken(tiny.caption_file, problem, load_from=tiny.root)


def test_every_caption_only_punctuation(tiny_kaggle):
    write_csv(tiny_kaggle.caption_file, [["image", "caption"], *([key, " . , ! -- ?"] for key in tiny_kaggle.captions)])
    broken(tiny_kaggle.caption_file, "no usable captions: all 10 are empty after cleaning", load_from=tiny_kaggle.root)


def test_image_folder_missing(tiny_kaggle):
    for path in tiny_kaggle.image_dir.iterdir():
        path.unlink()
    tiny_kaggle.image_dir.rmdir()
    broken(tiny_kaggle.image_dir, "image folder not found", load_from=tiny_kaggle.root)


# --- files that load: every skipped record is counted and summarised ---------------------------


def test_csv_with_short_rows_among_good_ones(tiny_kaggle):
    rows = kaggle_rows(tiny_kaggle)
    rows[3:3] = [["lonely.jpg"], [], ["a.jpg", "A dog", "extra", "fields"]]
    write_csv(tiny_kaggle.caption_file, rows)
    ds = loaded_with_skips(tiny_kaggle.root)
    # the 4-field row is taken as an unquoted comma in the caption, as Kaggle files have them
    assert ds.report.skipped_lines == 1 and "captions.txt line 4: 1 fields, expected 2; skipped" in ds.report.messages
    assert ds.report.images == 10 and ds.report.missing_images == 1  # a.jpg does not exist
    assert ds.report.summary().startswith("captions.txt: skipped 1 line (1 malformed), 1 image not found (1 caption")


def test_jsonl_with_bad_lines_among_good_ones(make_image, tmp_path):
    make_image("images/a.jpg")
    make_image("images/b.jpg")
    write_jsonl(
        tmp_path / "caps.jsonl",
        [
            {"image": "a.jpg", "caption": "A dog runs."},
            "{truncated",
            "null",
            {"image": 7, "caption": "not a name"},
            {"image": "b.jpg", "captions": "not a list"},
            {"image": "a\nb.jpg", "caption": "A newline in the name."},
            {"image": "b.jpg", "captions": ["A cat.", "A cat sleeps."]},
        ],
    )
    ds = loaded_with_skips(tmp_path)
    assert ds.captions == {"a.jpg": ["A dog runs."], "b.jpg": ["A cat.", "A cat sleeps."]}
    assert ds.report.skipped_lines == 5
    assert ds.report.messages[4] == "caps.jsonl line 6: image name 'a\\nb.jpg' holds a control character; skipped"
    assert ds.report.summary().startswith("caps.jsonl: skipped 5 lines (5 malformed); e.g. line 2: invalid JSON")


def test_token_lines_without_tab_and_with_crlf(tiny_flickr8k):
    token = tiny_flickr8k.caption_file
    lines = token.read_text().splitlines()
    lines[10] = lines[10].replace("\t", "    ")
    token.write_bytes("\r\n".join(lines).encode("utf-8"))
    ds = loaded_with_skips(tiny_flickr8k.root)
    assert ds.report.skipped_lines == 1 and ds.report.captions == 49
    assert ds.report.summary() == ("Flickr8k.token.txt: skipped 1 line (1 malformed); e.g. line 11: no tab between image and caption")
    assert not any(c.endswith("\r") for caps in ds.captions.values() for c in caps)


def test_split_file_naming_only_missing_images(tiny_flickr8k):
    dev_list = tiny_flickr8k.caption_file.parent / "Flickr_8k.devImages.txt"
    dev_list.write_text("ghost_1.jpg\nghost_2.jpg\nghost_3.jpg")
    ds = loaded_with_skips(tiny_flickr8k.root)
    assert ds.splits["dev"] == [] and ds.report.split_extras == 3
    assert ds.report.unassigned_images == 2  # the real dev images are in no split now
    assert ds.report.summary().startswith(
        "Flickr8k.token.txt: 3 split entries without an image; e.g. ghost_1.jpg: in the dev list but has no captions or no image; ignored"
    )


def test_absolute_image_paths_are_refused(make_image, tiny_kaggle):
    outside = make_image("elsewhere/private.jpg")
    rows = kaggle_rows(tiny_kaggle)
    rows += [[str(outside), "A private photo ."], ["C:\\Users\\me\\private.jpg", "A Windows path ."]]
    write_csv(tiny_kaggle.caption_file, rows)
    ds = loaded_with_skips(tiny_kaggle.root)
    assert str(outside) not in ds.captions and ds.report.outside_paths == 2
    assert ds.report.images == 10 and ds.report.skipped_lines == 0
    assert "skipped 2 lines (2 image paths outside the dataset folder)" in ds.report.summary()

    allowed = load_dataset(tiny_kaggle.root, allow_outside_paths=True)
    assert allowed.captions[str(outside)] == ["A private photo ."]
    assert allowed.report.missing_images == 1  # the Windows path does not exist here


@pytest.mark.parametrize("key", ["../private.jpg", "images/../../private.jpg", "..\\private.jpg", "a/../../../x/private.jpg"])
def test_dotdot_image_paths_are_refused(make_image, tmp_path, key):
    make_image("data/images/a.jpg")
    make_image("private.jpg")
    write_jsonl(
        tmp_path / "data" / "caps.jsonl",
        [
            {"image": "a.jpg", "caption": "A dog."},
            {"image": key, "caption": "A private photo."},
        ],
    )
    ds = loaded_with_skips(tmp_path / "data")
    assert list(ds.captions) == ["a.jpg"] and ds.report.outside_paths == 1
    assert ds.report.messages == [f"caps.jsonl line 2: image path {key!r} is outside the dataset folder; skipped"]


def test_dots_inside_names_are_not_outside(make_image, tmp_path):
    names = ("a..b.jpg", "..hidden.jpg", "x/...b.jpg", "x../y.jpg")
    for name in names:
        make_image(f"images/{name}")
    write_jsonl(tmp_path / "caps.jsonl", [{"image": name, "caption": "A dog."} for name in names])
    ds = load_dataset(tmp_path)
    assert list(ds.captions) == list(names) and ds.report.summary() is None


def test_karpathy_paths_outside_are_refused(make_karpathy):
    tiny = make_karpathy(n_images=4)
    doc = json.loads(tiny.caption_file.read_text())
    doc["images"][0]["filename"] = "/etc/passwd.jpg"
    doc["images"][1]["filepath"] = ".."
    tiny.caption_file.write_text(json.dumps(doc))
    ds = loaded_with_skips(tiny.root)
    assert ds.report.outside_paths == 10 and ds.report.images == 2  # 5 captions each
    assert ds.report.messages[0] == ("dataset_flickr8k.json images[0]: image path '/etc/passwd.jpg' is outside the dataset folder; skipped")


def test_caption_of_only_punctuation(tiny_flickr8k):
    key = tiny_flickr8k.splits["train"][0]
    with tiny_flickr8k.caption_file.open("a") as f:
        f.write(f"{key}#5\t... !!! ,,, ?\n{key}#6\t42 3rd 1,000\n")
    ds = loaded_with_skips(tiny_flickr8k.root)
    assert ds.report.empty_captions == 2 and len(ds.captions[key]) == 5
    assert ds.report.summary().startswith(f"Flickr8k.token.txt: skipped 2 lines (2 empty captions); e.g. line 51: empty caption '... !!! ,,, ?' for {key}")


def test_huge_lines_are_skipped_with_short_messages(tiny_flickr8k):
    token = tiny_flickr8k.caption_file
    huge = "x" * 2_000_000
    with token.open("a") as f:
        f.write(f"{huge}\n{huge}.jpg#0\tA caption\n{huge}#0\tA caption\n")
    ds = loaded_with_skips(tiny_flickr8k.root)
    assert ds.report.skipped_lines == 2 and ds.report.missing_images == 1 and ds.report.images == 10
    assert max(len(m) for m in ds.report.messages) < 400


def test_huge_csv_field_skips_that_row_only(tiny_kaggle):
    rows = kaggle_rows(tiny_kaggle)
    rows.insert(2, [next(iter(tiny_kaggle.captions)), "word " * 100_000])  # over the csv module's field limit
    write_csv(tiny_kaggle.caption_file, rows)
    ds = loaded_with_skips(tiny_kaggle.root)
    assert ds.report.skipped_lines == 1 and ds.report.captions == 50
    assert ds.report.messages[0].startswith("captions.txt line 3: malformed CSV (field larger than field limit")


def test_nul_byte_in_an_image_name_after_the_binary_check(tiny_kaggle):
    rows = kaggle_rows(tiny_kaggle)
    rows += rows[1:] * 4
    rows.append(["ok\x00.jpg", "A caption"])
    write_csv(tiny_kaggle.caption_file, rows)
    assert tiny_kaggle.caption_file.read_bytes().index(b"\x00") > 8192  # so the file is not called binary
    ds = loaded_with_skips(tiny_kaggle.root)
    assert ds.report.skipped_lines == 1 and ds.report.images == 10
    assert ds.report.messages == [f"captions.txt line {len(rows)}: image name 'ok\\x00.jpg' holds a control character; skipped"]


@pytest.mark.parametrize("lineterminator", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_bom_and_crlf_csv_load_cleanly(tiny_kaggle, lineterminator):
    write_csv(tiny_kaggle.caption_file, kaggle_rows(tiny_kaggle), lineterminator)
    tiny_kaggle.caption_file.write_bytes(codecs.BOM_UTF8 + tiny_kaggle.caption_file.read_bytes())
    ds = load_dataset(tiny_kaggle.root)
    assert ds.captions == tiny_kaggle.captions and ds.report.summary() is None


def test_bom_and_crlf_jsonl_load_cleanly(make_image, tmp_path):
    make_image("images/a.jpg")
    lines = [json.dumps({"image": "a.jpg", "caption": f"A dog number {n}."}) for n in range(3)]
    (tmp_path / "caps.jsonl").write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    ds = load_dataset(tmp_path)
    assert ds.captions == {"a.jpg": ["A dog number 0.", "A dog number 1.", "A dog number 2."]}
    assert ds.report.summary() is None


def test_unicode_line_separators_stay_inside_a_caption(tiny_flickr8k):
    key = tiny_flickr8k.splits["train"][0]
    with tiny_flickr8k.caption_file.open("a", encoding="utf-8") as f:
        f.write(f"{key}#5\tA dog\u2028jumps\x0bover\x1ca log\n")
    ds = load_dataset(tiny_flickr8k.root)
    assert ds.captions[key][-1] == "A dog\u2028jumps\x0bover\x1ca log" and ds.report.summary() is None


def test_weird_split_values_are_quoted_short(make_image, tmp_path):
    make_image("a.jpg")
    write_jsonl(
        tmp_path / "caps.jsonl",
        [
            {"image": "a.jpg", "caption": "A dog.", "split": "train"},
            {"image": "a.jpg", "caption": "A dog again.", "split": ["x" * 10_000]},
            {"image": "a.jpg", "caption": "Third.", "split": "line\nbreak"},
        ],
    )
    ds = loaded_with_skips(tmp_path)
    assert ds.report.unknown_splits == 2
    assert ds.report.messages[1] == "caps.jsonl line 3: unknown split 'line\\nbreak'; skipped"
    assert "skipped 2 lines (2 unknown splits)" in ds.report.summary()
