"""Dataset readers, caption cleaning and splits, on generated files in every layout."""

from __future__ import annotations

import json
import pickle
import time
from collections import Counter

import pytest

from captioner.data import (
    MAX_MESSAGES,
    CaptionDataset,
    DatasetError,
    LoadReport,
    NoDatasetError,
    clean_caption,
    detect_format,
    hashed_split,
    load_dataset,
    normalize_split,
)

# --- cleaning ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("A child in a pink dress is climbing up a set of stairs in an entry way .", "a child in a pink dress is climbing up a set of stairs in an entry way"),
        ("A black dog and a tri-colored dog playing with each other on the road .", "a black dog and a tricolored dog playing with each other on the road"),
        ("The dog's ball, 2 kids & 3rd base!", "the dogs ball kids base"),
        ("  Two   DOGS\tplay\n", "two dogs play"),
        ("I see a <start> token", "i see a start token"),
        ("snake_case words", "snakecase words"),
        ("Café crème", "café crème"),
        ("Cafe\u0301", "café"),
        (" . 42 !", ""),
        ("", ""),
    ],
)
def test_clean_caption(raw, cleaned):
    assert clean_caption(raw) == cleaned


def test_clean_caption_is_idempotent():
    text = "A man's 2nd-hand bike, (red) -- near the U.S. border."
    assert clean_caption(clean_caption(text)) == clean_caption(text) == "a mans bike red near the us border"


def test_split_names():
    assert [normalize_split(s) for s in ("train", "Val", "validation", "restval", "dev", "TEST", "x")] == ["train", "dev", "dev", "train", "dev", "test", None]


def test_hashed_split_is_fixed_and_balanced():
    # Pinned values: the split must not change between Python runs, machines or versions.
    keys = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "1000268201_693b08cb0e.jpg"]
    assert [hashed_split(k) for k in keys] == ["train", "dev", "train", "test", "train"]
    counts = Counter(hashed_split(f"{i}_photo.jpg") for i in range(8000))
    assert abs(counts["train"] - 6000) < 200 and abs(counts["dev"] - 1000) < 120 and abs(counts["test"] - 1000) < 120


# --- Flickr8k classic --------------------------------------------------------------------------


def test_flickr8k_layout(tiny_flickr8k):
    ds = load_dataset(tiny_flickr8k.root)
    assert isinstance(ds, CaptionDataset) and ds.name == "flickr8k"
    assert ds.image_dir == tiny_flickr8k.image_dir
    assert ds.source == tiny_flickr8k.caption_file
    assert ds.captions == {k: [c.strip() for c in v] for k, v in tiny_flickr8k.captions.items()}
    assert ds.splits == tiny_flickr8k.splits
    assert {s: len(k) for s, k in ds.splits.items()} == {"train": 6, "dev": 2, "test": 2}
    assert (ds.report.images, ds.report.captions, ds.report.records) == (10, 50, 50)
    assert ds.report.problems == 0 and ds.report.messages == []
    assert ds.image_path(ds.split_images("train")[0]).is_file()


def test_split_queries(tiny_flickr8k):
    ds = load_dataset(tiny_flickr8k.root)
    assert ds.split_images("val") == ds.split_images("validation") == ds.split_images("dev")
    assert ds.split_images("all") == list(ds.captions)
    ds.split_images("train").clear()  # a copy: callers cannot damage the dataset
    assert len(ds.split_images("train")) == 6
    with pytest.raises(DatasetError, match=r"unknown split 'holdout' \(known: train, dev, test, all"):
        ds.split_images("holdout")


def test_cleaned_captions(tiny_flickr8k):
    ds = load_dataset(tiny_flickr8k.root)
    cleaned = ds.cleaned("dev")
    assert list(cleaned) == tiny_flickr8k.splits["dev"]
    key = tiny_flickr8k.splits["dev"][0]
    fg, bg = tiny_flickr8k.colors[key]
    assert cleaned[key][0] == f"a {fg} square on a {bg} background"
    assert cleaned[key][3] == f"{fg} square {bg} background"


def test_flickr8k_without_test_split(make_flickr8k):
    tiny = make_flickr8k(with_test=False)
    ds = load_dataset(tiny.root)
    assert set(ds.splits) == {"train", "dev"}
    with pytest.raises(DatasetError) as info:
        ds.split_images("test")
    message = str(info.value)
    assert message.startswith(f"{tiny.caption_file}: ") and "no test split" in message
    assert "train (8 images), dev (2 images)" in message


@pytest.mark.parametrize("image_dir_name", ["Flickr8k_Dataset", "Images"])
def test_flickr8k_text_in_root_and_other_image_folders(make_flickr8k, image_dir_name):
    tiny = make_flickr8k(text_subdir=False, image_dir_name=image_dir_name, final_newline=True)
    ds = load_dataset(tiny.root)
    assert ds.image_dir == tiny.image_dir and ds.report.images == 10
    assert ds.splits == tiny.splits


def test_flickr8k_token_file_path(tiny_flickr8k):
    ds = load_dataset(tiny_flickr8k.caption_file)
    assert ds.name == "flickr8k" and ds.image_dir == tiny_flickr8k.image_dir and ds.report.images == 10


def test_flickr8k_malformed_lines_are_skipped_and_counted(tiny_flickr8k):
    token = tiny_flickr8k.caption_file
    lines = token.read_text().split("\n")
    lines[3:3] = [
        "no tab in this line",
        "2258277193_586949ec62.jpg.1#0\tA dog with no image file name .",
        "image_without_number.jpg\tA caption .",
        "",
        "   ",
    ]
    token.write_text("\r\n".join(lines))  # Windows line endings too
    ds = load_dataset(tiny_flickr8k.root)
    assert (ds.report.images, ds.report.captions, ds.report.skipped_lines) == (10, 50, 3)
    assert ds.report.messages[:3] == [
        "Flickr8k.token.txt line 4: no tab between image and caption; skipped",
        "Flickr8k.token.txt line 5: '2258277193_586949ec62.jpg.1' is not an image file name; skipped",
        "Flickr8k.token.txt line 6: 'image_without_number.jpg' is not '<image>#<n>'; skipped",
    ]
    assert all(not c.endswith("\r") for caps in ds.captions.values() for c in caps)


def test_missing_image_is_reported_and_skipped(tiny_flickr8k):
    gone = tiny_flickr8k.splits["train"][0]
    (tiny_flickr8k.image_dir / gone).unlink()
    ds = load_dataset(tiny_flickr8k.root)
    assert gone not in ds.captions and gone not in ds.split_images("train")
    r = ds.report
    assert (r.images, r.captions, r.missing_images, r.missing_captions, r.split_extras) == (9, 45, 1, 5, 1)
    assert any(gone in m and "image not found" in m for m in r.messages)
    assert "1 missing images (5 captions dropped)" in str(r)

    unchecked = load_dataset(tiny_flickr8k.root, check_images=False)
    assert gone in unchecked.captions and unchecked.report.missing_images == 0


def test_wrong_image_dir_is_a_clear_error(tiny_flickr8k, tmp_path):
    empty = tmp_path / "empty_images"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"none of the 10 images .* is in .*empty_images \(wrong image_dir\?\)"):
        load_dataset(tiny_flickr8k.root, image_dir=empty)
    with pytest.raises(DatasetError, match="image folder not found"):
        load_dataset(tiny_flickr8k.root, image_dir=tmp_path / "nowhere")


def test_image_in_two_split_lists_stays_in_the_first(tiny_flickr8k):
    text_dir = tiny_flickr8k.caption_file.parent
    moved = tiny_flickr8k.splits["train"][0]
    dev_file = text_dir / "Flickr_8k.devImages.txt"
    dev_file.write_text(dev_file.read_text() + "\n" + moved)
    ds = load_dataset(tiny_flickr8k.root)
    assert moved in ds.splits["train"] and moved not in ds.splits["dev"]
    assert ds.report.split_conflicts == 1


def test_flickr8k_without_split_files_gets_a_hashed_split(tiny_flickr8k):
    for path in tiny_flickr8k.caption_file.parent.glob("Flickr_8k.*Images.txt"):
        path.unlink()
    ds = load_dataset(tiny_flickr8k.root)
    assert set(ds.splits) == {"train", "dev", "test"}
    assert all(hashed_split(k) == s for s, keys in ds.splits.items() for k in keys)
    assert "hashed split" in ds.report.messages[0]


def test_images_in_no_split_are_counted(tiny_flickr8k):
    (tiny_flickr8k.caption_file.parent / "Flickr_8k.testImages.txt").unlink()
    ds = load_dataset(tiny_flickr8k.root)
    assert ds.report.unassigned_images == 2 and ds.report.images == 10


def test_non_utf8_token_file(tiny_flickr8k):
    token = tiny_flickr8k.caption_file
    token.write_bytes(token.read_bytes() + b"x.jpg#0\tCaf\xe9 au lait\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(tiny_flickr8k.root)
    assert str(info.value) == f"{token}: not UTF-8 text (byte 0xe9 on line 51); re-save the file as UTF-8"


def test_utf8_bom_is_accepted(tiny_flickr8k):
    token = tiny_flickr8k.caption_file
    token.write_bytes(b"\xef\xbb\xbf" + token.read_bytes())
    assert load_dataset(tiny_flickr8k.root).report.skipped_lines == 0


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        (b"just some text\nwithout tabs\n", "not a Flickr8k token file"),
    ],
)
def test_token_file_in_the_wrong_format(tiny_flickr8k, content, problem):
    tiny_flickr8k.caption_file.write_bytes(content)
    with pytest.raises(DatasetError, match=problem) as info:
        load_dataset(tiny_flickr8k.root)
    assert str(info.value).startswith(str(tiny_flickr8k.caption_file)) and "\n" not in str(info.value)


def test_messages_are_kept_up_to_a_cap_and_str_shows_the_first_20():
    report = LoadReport()
    for i in range(MAX_MESSAGES + 7):
        report.skip(f"x.txt line {i + 1}", "no tab between image and caption")
    assert MAX_MESSAGES >= 10_000
    assert len(report.messages) == MAX_MESSAGES and report.more_messages == 7
    assert report.messages[-1] == f"x.txt line {MAX_MESSAGES}: no tab between image and caption; skipped"
    assert report.skipped_lines == MAX_MESSAGES + 7  # the counts stay complete
    text = str(report)
    assert len(text.splitlines()) == 1 + 20 + 1 and text.endswith(f"... and {MAX_MESSAGES - 20 + 7:,} more")
    assert report.summary(verbose=True).endswith("  ... and 7 more, not recorded")


# --- LoadReport.summary ------------------------------------------------------------------------


def test_summary_is_none_when_nothing_was_skipped(tiny_flickr8k, tiny_kaggle):
    assert load_dataset(tiny_flickr8k.root).report.summary() is None
    assert load_dataset(tiny_kaggle.root).report.summary(verbose=True) is None


def test_summary_leaves_out_the_hashed_split_notice(tiny_flickr8k):
    """The hashed-split notice is in the messages but is not a skipped line."""
    for path in tiny_flickr8k.caption_file.parent.glob("Flickr_8k.*Images.txt"):
        path.unlink()
    report = load_dataset(tiny_flickr8k.root).report
    assert "hashed split" in report.messages[0] and report.summary() is None
    with tiny_flickr8k.caption_file.open("a") as f:
        f.write("no tab here\n")
    report = load_dataset(tiny_flickr8k.root).report
    assert report.summary() == "Flickr8k.token.txt: skipped 1 line (1 malformed); e.g. line 51: no tab between image and caption"
    assert report.summary(verbose=True).split("\n") == ["Flickr8k.token.txt: skipped 1 line (1 malformed):", "  line 51: no tab between image and caption"]


def _spoil_flickr8k(tiny):
    """2 malformed lines, 1 empty caption, 2 dev-list names without an image."""
    token = tiny.caption_file
    lines = token.read_text().split("\n")
    lines[7:7] = ["no tab in this line", "x.jpg.1#0\tA caption .", f"{tiny.splits['train'][0]}#5\t . 42 !"]
    token.write_text("\n".join(lines))
    dev_list = token.parent / "Flickr_8k.devImages.txt"
    dev_list.write_text(dev_list.read_text() + "\nghost1.jpg\nghost2.jpg")


def test_summary_one_line_with_counts_and_the_first_examples(tiny_flickr8k):
    _spoil_flickr8k(tiny_flickr8k)
    report = load_dataset(tiny_flickr8k.root).report
    key = tiny_flickr8k.splits["train"][0]
    assert report.summary() == (
        "Flickr8k.token.txt: skipped 3 lines (2 malformed, 1 empty caption), 2 split entries without an image; "
        "e.g. line 8: no tab between image and caption; line 9: 'x.jpg.1' is not an image file name; "
        f"line 10: empty caption '. 42 !' for {key} (2 more: --verbose for all)"
    )


def test_summary_verbose_lists_every_problem(tiny_flickr8k):
    _spoil_flickr8k(tiny_flickr8k)
    lines = load_dataset(tiny_flickr8k.root).report.summary(verbose=True).split("\n")
    assert lines[0] == "Flickr8k.token.txt: skipped 3 lines (2 malformed, 1 empty caption), 2 split entries without an image:"
    assert lines[1:3] == ["  line 8: no tab between image and caption", "  line 9: 'x.jpg.1' is not an image file name"]
    assert lines[4:] == [
        "  ghost1.jpg: in the dev list but has no captions or no image; ignored",
        "  ghost2.jpg: in the dev list but has no captions or no image; ignored",
    ]


def test_summary_counts_missing_images_and_unknown_splits(make_image, tmp_path):
    make_image("images/a.jpg")
    write(tmp_path / "caps.csv", "image,caption,split\na.jpg,A dog.,train\nb.jpg,A cat.,train\nb.jpg,Cat.,train\na.jpg,A dog again.,holdout\n")
    summary = load_dataset(tmp_path / "caps.csv").report.summary()
    assert summary.startswith(
        "caps.csv: skipped 1 line (1 unknown split), 1 image not found (2 captions dropped); e.g. line 5: unknown split 'holdout'; b.jpg: image not found in "
    )
    assert "\n" not in summary


def test_summary_of_a_karpathy_file_counts_records(make_karpathy):
    tiny = make_karpathy(n_images=4)
    doc = json.loads(tiny.caption_file.read_text())
    doc["images"].append("not an object")
    tiny.caption_file.write_text(json.dumps(doc))
    assert load_dataset(tiny.root).report.summary() == ("dataset_flickr8k.json: skipped 1 record (1 malformed); e.g. images[4]: not an object")


# --- no dataset versus a broken one ------------------------------------------------------------


def test_no_dataset_error_is_a_dataset_error():
    assert issubclass(NoDatasetError, DatasetError)
    error = pickle.loads(pickle.dumps(NoDatasetError("/d", "not found")))
    assert type(error) is NoDatasetError and str(error) == "/d: not found"


def test_no_dataset_here(tmp_path, make_image):
    make_image("photos/a.jpg")
    (tmp_path / "photos" / "notes.txt").write_text("hello\n")
    for path in (tmp_path / "photos", tmp_path / "missing", tmp_path / "photos" / "notes.txt"):
        with pytest.raises(NoDatasetError):
            load_dataset(path)


@pytest.mark.parametrize("format", ["flickr8k", "kaggle", "karpathy", "csv", "jsonl"])
def test_explicit_format_on_a_folder_without_its_file_is_no_dataset(tmp_path, format):
    with pytest.raises(NoDatasetError, match=f"^{tmp_path}: "):
        load_dataset(tmp_path, format=format)


def test_a_broken_dataset_is_not_no_dataset(tiny_flickr8k, tmp_path):
    tiny_flickr8k.caption_file.write_bytes(b"\xef\xbb\xbf1.jpg#0\tA caf\xe9\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(tiny_flickr8k.root)
    assert not isinstance(info.value, NoDatasetError)
    assert str(info.value) == f"{tiny_flickr8k.caption_file}: not UTF-8 text (byte 0xe9 on line 1); re-save the file as UTF-8"
    for name in ("a.csv", "b.csv"):
        write(tmp_path / "two" / name, "image,caption\na.jpg,A dog\n")
    with pytest.raises(DatasetError, match=r"expected exactly one CSV file here, found a\.csv, b\.csv") as info:
        load_dataset(tmp_path / "two")
    assert not isinstance(info.value, NoDatasetError)


# --- image paths outside the dataset folder ----------------------------------------------------


def test_paths_outside_the_dataset_folder_are_refused_by_default(make_image, tmp_path):
    outside = make_image("elsewhere/secret.jpg")
    make_image("data/images/a.jpg")
    make_image("data/images/sub/b.jpg")
    csv_file = write(
        tmp_path / "data" / "caps.csv",
        "\n".join(
            [
                "image,caption",
                "a.jpg,A dog.",
                "sub/b.jpg,A cat.",
                f"{outside},An absolute path.",
                "../../elsewhere/secret.jpg,A relative escape.",
                "sub/../../../elsewhere/secret.jpg,A hidden escape.",
                "",
            ]
        ),
    )
    ds = load_dataset(csv_file)
    assert sorted(ds.captions) == ["a.jpg", "sub/b.jpg"]
    assert ds.report.outside_paths == 3 and ds.report.skipped_lines == 0
    assert f"caps.csv line 4: image path {str(outside)!r} is outside the dataset folder; skipped" in ds.report.messages
    assert "3 image paths outside the dataset folder" in ds.report.summary()

    allowed = load_dataset(csv_file, allow_outside_paths=True)
    assert len(allowed.captions) == 5 and allowed.report.outside_paths == 0
    assert allowed.image_path(str(outside)) == outside
    assert allowed.image_path("../../elsewhere/secret.jpg").resolve() == outside.resolve()


def test_symlinks_inside_the_folder_are_fine(make_image, tmp_path):
    target = make_image("elsewhere/real.jpg")
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "link.jpg").symlink_to(target)
    write(tmp_path / "data" / "caps.jsonl", json.dumps({"image": "link.jpg", "caption": "A dog."}))
    ds = load_dataset(tmp_path / "data")
    assert list(ds.captions) == ["link.jpg"] and ds.report.problems == 0


def test_only_outside_paths_is_a_clear_error(make_karpathy):
    tiny = make_karpathy(n_images=2)
    doc = json.loads(tiny.caption_file.read_text())
    for entry in doc["images"]:
        entry["filepath"] = "../.."
    tiny.caption_file.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"all 10 image paths are outside the dataset folder .*allow_outside_paths=True"):
        load_dataset(tiny.root)


def test_loading_is_fast(tmp_path):
    """3,000 images and 15,000 captions (empty image files: only existence is checked)."""
    image_dir = tmp_path / "Flicker8k_Dataset"
    image_dir.mkdir()
    keys = [f"{1000000 + i}_abcdef.jpg" for i in range(3000)]
    for key in keys:
        (image_dir / key).touch()
    lines = [f"{k}#{n}\tA dog runs through the grass with a ball in its mouth ." for k in keys for n in range(5)]
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines))
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("\n".join(keys[:2000]))
    (tmp_path / "Flickr_8k.devImages.txt").write_text("\n".join(keys[2000:2500]))
    (tmp_path / "Flickr_8k.testImages.txt").write_text("\n".join(keys[2500:]))
    started = time.perf_counter()
    ds = load_dataset(tmp_path)
    elapsed = time.perf_counter() - started
    assert ds.report.captions == 15000 and len(ds.splits["test"]) == 500
    assert elapsed < 2.0, f"loading took {elapsed:.2f} s"


# --- Kaggle and CSV ----------------------------------------------------------------------------


def test_kaggle_layout(tiny_kaggle):
    ds = load_dataset(tiny_kaggle.root)
    assert ds.name == "kaggle" and ds.image_dir == tiny_kaggle.image_dir
    assert ds.captions == tiny_kaggle.captions  # quoted captions with commas survive intact
    assert any("," in c for caps in ds.captions.values() for c in caps)
    assert set(ds.splits) == {"train", "dev", "test"}
    assert all(hashed_split(k) == s for s, keys in ds.splits.items() for k in keys)
    assert sorted(k for keys in ds.splits.values() for k in keys) == sorted(tiny_kaggle.captions)
    assert load_dataset(tiny_kaggle.caption_file).captions == ds.captions


def test_kaggle_unquoted_comma_in_caption(tiny_kaggle):
    key = next(iter(tiny_kaggle.captions))
    with tiny_kaggle.caption_file.open("a") as f:
        f.write(f"{key},A dog, a cat, and a bird\n")
    ds = load_dataset(tiny_kaggle.root)
    assert ds.captions[key][-1] == "A dog, a cat, and a bird" and ds.report.skipped_lines == 0


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_split_column(make_image, tmp_path):
    for name in ("a.jpg", "b.png", "c.jpg", "d.jpg"):
        make_image(f"data/images/{name}")
    csv_file = write(
        tmp_path / "data" / "caps.csv",
        "\n".join(
            [
                "image,caption,split",
                "a.jpg,A dog runs.,train",
                'b.png,"A cat, sleeping",val',
                "c.jpg,A bird,test",
                "d.jpg,A fish,holdout",
                "c.jpg,Too many,fields,test,extra",
                "",
            ]
        ),
    )
    ds = load_dataset(csv_file)
    assert ds.name == "csv" and ds.image_dir == tmp_path / "data" / "images"
    assert ds.splits == {"train": ["a.jpg"], "dev": ["b.png"], "test": ["c.jpg"]}
    assert ds.captions["b.png"] == ["A cat, sleeping"]
    r = ds.report
    assert (r.unknown_splits, r.skipped_lines, r.images) == (1, 1, 3)
    assert "caps.csv line 5: unknown split 'holdout'; skipped" in r.messages
    assert "caps.csv line 6: 5 fields, expected 3; skipped" in r.messages


def test_csv_without_split_column_and_other_delimiters(make_image, tmp_path):
    make_image("images/x.jpg")
    # Flickr30k's Kaggle results.csv uses "|" and other column names.
    csv_file = write(tmp_path / "results.csv", "image_name| comment_number| comment\nx.jpg| 0| A man rides a bike .\n")
    ds = load_dataset(csv_file, image_dir=tmp_path / "images")
    assert ds.captions == {"x.jpg": ["A man rides a bike ."]}
    assert ds.splits[hashed_split("x.jpg")] == ["x.jpg"]


@pytest.mark.parametrize(
    "content, problem",
    [
        ("image,text_length\na.jpg,3\n", "needs 'image' and 'caption' columns"),
        ('{"images": [{"filename": "a.jpg"}]}', "not a caption CSV"),
    ],
)
def test_csv_in_the_wrong_format(tmp_path, content, problem):
    csv_file = write(tmp_path / "caps.csv", content)
    with pytest.raises(DatasetError, match=problem) as info:
        load_dataset(csv_file, format="csv", check_images=False)
    assert str(info.value).startswith(f"{csv_file}: ")


def test_csv_with_only_bad_rows(tmp_path):
    csv_file = write(tmp_path / "caps.csv", "image,caption\nnot-an-image,hello\n")
    with pytest.raises(DatasetError, match=r"no valid row: caps\.csv line 2: 'not-an-image' is not an image file name"):
        load_dataset(csv_file, check_images=False)


# --- JSON Lines --------------------------------------------------------------------------------


def test_jsonl(make_image, tmp_path):
    for name in ("a.jpg", "b.jpg"):
        make_image(f"images/{name}")
    jsonl = write(
        tmp_path / "caps.jsonl",
        "\n".join(
            [
                json.dumps({"image": "a.jpg", "caption": "A dog runs."}),
                "{not json",
                json.dumps(["a list"]),
                json.dumps({"image": "b.jpg", "captions": ["A cat.", "Cat sleeping"]}),
                json.dumps({"image": "a.jpg"}),
            ]
        ),
    )
    ds = load_dataset(tmp_path / "caps.jsonl")
    assert ds.name == "jsonl" and ds.image_dir == tmp_path / "images"
    assert ds.captions == {"a.jpg": ["A dog runs."], "b.jpg": ["A cat.", "Cat sleeping"]}
    assert ds.report.skipped_lines == 3
    assert ds.report.messages[0].startswith("caps.jsonl line 2: invalid JSON")
    assert ds.report.messages[1] == "caps.jsonl line 3: expected a JSON object, found list; skipped"
    assert all(hashed_split(k) == s for s, keys in ds.splits.items() for k in keys)
    assert load_dataset(jsonl, format="jsonl").captions == ds.captions


def test_jsonl_with_splits(make_image, tmp_path):
    make_image("a.jpg")
    make_image("b.jpg")
    write(
        tmp_path / "caps.jsonl",
        "\n".join(
            [
                json.dumps({"image": "a.jpg", "caption": "A dog.", "split": "train"}),
                json.dumps({"image": "b.jpg", "caption": "A cat.", "split": "validation"}),
                json.dumps({"image": "b.jpg", "caption": "A cat again.", "split": "nonsense"}),
            ]
        ),
    )
    ds = load_dataset(tmp_path / "caps.jsonl")
    assert ds.image_dir == tmp_path
    assert ds.splits == {"train": ["a.jpg"], "dev": ["b.jpg"]} and ds.report.unknown_splits == 1


def test_pretty_printed_json_is_not_jsonl(tmp_path):
    path = write(tmp_path / "caps.jsonl", json.dumps({"image": "a.jpg", "caption": "x"}, indent=2))
    with pytest.raises(DatasetError, match="not JSON Lines"):
        load_dataset(path, check_images=False)


# --- Karpathy JSON -----------------------------------------------------------------------------


def test_karpathy_flickr8k(make_karpathy):
    tiny = make_karpathy(n_images=8)
    ds = load_dataset(tiny.root)  # the directory holds one dataset_*.json and images/
    assert ds.name == "karpathy" and ds.image_dir == tiny.image_dir
    assert ds.captions == tiny.captions and ds.splits == tiny.splits
    assert {s: len(k) for s, k in ds.splits.items()} == {"train": 4, "dev": 2, "test": 2}  # restval -> train


def test_karpathy_coco_filepaths(make_karpathy):
    tiny = make_karpathy(n_images=8, coco=True)
    ds = load_dataset(tiny.caption_file)
    assert all(k.startswith(("train2014/", "val2014/")) for k in ds.captions)
    assert ds.splits == tiny.splits
    assert ds.image_path(ds.split_images("dev")[0]).is_file()
    (tiny.image_dir / ds.split_images("test")[0]).unlink()
    assert load_dataset(tiny.caption_file).report.missing_images == 1


def test_karpathy_bad_entries(make_karpathy):
    tiny = make_karpathy(n_images=4)
    doc = json.loads(tiny.caption_file.read_text())
    doc["images"] += [
        {"filename": "x.jpg", "split": "holdout", "sentences": [{"raw": "a"}]},
        {"split": "train", "sentences": []},
        "not an object",
        {"filename": "y.jpg", "split": "train", "sentences": [{"tokens": ["a", "red", "kite"]}]},
    ]
    tiny.caption_file.write_text(json.dumps(doc))
    ds = load_dataset(tiny.caption_file, check_images=False)
    assert ds.captions["y.jpg"] == ["a red kite"]
    assert (ds.report.unknown_splits, ds.report.skipped_lines) == (1, 2)
    assert "dataset_flickr8k.json images[4]: unknown split 'holdout'; skipped" in ds.report.messages


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"images": [', "invalid JSON at line 1"),
        ('{"annotations": []}', "not a Karpathy caption file"),
        ("image,caption\na.jpg,hi\n", "invalid JSON"),
    ],
)
def test_karpathy_wrong_format(tmp_path, content, problem):
    path = write(tmp_path / "dataset_coco.json", content)
    with pytest.raises(DatasetError, match=problem):
        load_dataset(path)


# --- detection and arguments -------------------------------------------------------------------


def test_detect_format(tiny_flickr8k, tiny_kaggle, make_karpathy, tmp_path):
    assert detect_format(tiny_flickr8k.root) == "flickr8k"
    assert detect_format(tiny_flickr8k.caption_file) == "flickr8k"
    assert detect_format(tiny_kaggle.root) == "kaggle"
    assert detect_format(make_karpathy(n_images=4).root) == "karpathy"
    assert detect_format(write(tmp_path / "a.csv", "image,caption\n")) == "csv"
    assert detect_format(write(tmp_path / "a.jsonl", "{}\n")) == "jsonl"
    assert detect_format(write(tmp_path / "list.txt", "a.jpg#0\tA dog\n")) == "flickr8k"
    assert detect_format(write(tmp_path / "other.txt", "image,caption\na.jpg,A dog\n")) == "csv"


def test_detect_format_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        detect_format(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no known dataset layout"):
        detect_format(tmp_path / "empty")
    with pytest.raises(DatasetError, match="unknown caption file format"):
        detect_format(write(tmp_path / "notes.txt", "hello world\n"))


def test_unknown_format_argument(tiny_flickr8k):
    with pytest.raises(DatasetError, match="unknown dataset format 'coco'"):
        load_dataset(tiny_flickr8k.root, format="coco")


def test_explicit_format_on_a_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nothing", format="flickr8k")


def test_dataset_error_pickles():
    error = pickle.loads(pickle.dumps(DatasetError("/d/captions.txt", "file is empty")))
    assert str(error) == "/d/captions.txt: file is empty"


# --- the real data -----------------------------------------------------------------------------


@pytest.mark.slow
def test_real_flickr8k(flickr8k_dir):
    started = time.perf_counter()
    ds = load_dataset(flickr8k_dir)
    elapsed = time.perf_counter() - started
    assert ds.name == "flickr8k"
    assert (ds.report.images, ds.report.captions) == (7000, 35000)
    assert {s: len(k) for s, k in ds.splits.items()} == {"train": 6000, "dev": 1000}
    assert ds.report.problems == 0
    assert all(len(caps) == 5 for caps in ds.captions.values())
    assert not set(ds.splits["train"]) & set(ds.splits["dev"])
    with pytest.raises(DatasetError, match="no test split"):
        ds.split_images("test")
    cleaned = ds.cleaned("train")
    assert sum(len(c) for c in cleaned.values()) == 30000
    assert cleaned["1000268201_693b08cb0e.jpg"][0] == ("a child in a pink dress is climbing up a set of stairs in an entry way")
    print(f"\nreal Flickr8k: {ds.report} (this test measured {elapsed:.2f} s)")
    assert elapsed < 3.0, f"loading took {elapsed:.2f} s"
