"""Vocabulary: deterministic building, encode/decode, the Tokenizer interface, JSON files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captioner.data import clean_caption
from captioner.vocab import END, PAD, SPECIALS, START, UNK, Vocabulary, VocabularyError

CAPTIONS = [
    "A dog runs on the grass .",
    "A black dog runs !",
    "The cat sits.",
    "a dog",
]


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.build(CAPTIONS)


def test_specials_come_first(vocab):
    assert vocab.id_to_word[:4] == [PAD, START, END, UNK]
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    assert [vocab.word_to_id[w] for w in SPECIALS] == [0, 1, 2, 3]


def test_build_orders_by_count_then_alphabet(vocab):
    # a: 3, dog: 3, runs: 2, the: 2, then the singletons alphabetically.
    assert vocab.id_to_word[4:] == ["a", "dog", "runs", "the", "black", "cat", "grass", "on", "sits"]
    assert len(vocab) == 13


def test_build_is_independent_of_caption_order(vocab):
    assert Vocabulary.build(reversed(CAPTIONS)) == vocab


def test_build_cleans_captions_so_raw_and_clean_agree(vocab):
    assert Vocabulary.build(clean_caption(c) for c in CAPTIONS) == vocab


def test_min_count_drops_rare_words():
    rare = Vocabulary.build(CAPTIONS, min_count=2)
    assert rare.id_to_word[4:] == ["a", "dog", "runs", "the"]
    with pytest.raises(ValueError):
        Vocabulary.build(CAPTIONS, min_count=0)


def test_special_tokens_cannot_collide_with_words():
    built = Vocabulary.build(["<start> <end> <pad> <unk> start end"])
    assert built.id_to_word == [*SPECIALS, "end", "start", "pad", "unk"]  # by count, then alphabet


def test_encode_wraps_and_maps_unknown_words(vocab):
    ids = vocab.encode("A zebra runs.")
    assert ids == [vocab.start_id, vocab.word_to_id["a"], vocab.unk_id, vocab.word_to_id["runs"], vocab.end_id]
    assert vocab.encode("A zebra runs.", add_special=False) == ids[1:-1]
    assert vocab.encode("") == [vocab.start_id, vocab.end_id]


def test_decode_stops_at_end_and_skips_pad_and_start(vocab):
    ids = [vocab.pad_id, vocab.start_id, *vocab.encode("a black dog", add_special=False), vocab.end_id, vocab.word_to_id["cat"]]
    assert vocab.decode(ids) == "a black dog"
    assert vocab.decode(np.array(vocab.encode("the cat sits"), dtype=np.int64)) == "the cat sits"
    assert vocab.decode([vocab.unk_id]) == UNK
    with pytest.raises(ValueError, match="outside"):
        vocab.decode([len(vocab)])


def test_round_trip_of_known_words(vocab):
    for caption in CAPTIONS:
        assert vocab.decode(vocab.encode(caption)) == clean_caption(caption)


def test_tokenizer_interface(vocab):
    assert vocab.word_index is vocab.word_to_id
    assert vocab.index_word[4] == "a" and vocab.index_word[0] == PAD
    assert vocab.texts_to_sequences(["a dog", "<start> a dog <end>"]) == [
        [4, 5],
        [vocab.start_id, 4, 5, vocab.end_id],
    ]
    # The classic tutorial's markers.
    assert vocab.texts_to_sequences(["startseq dog endseq"]) == [[vocab.start_id, 5, vocab.end_id]]
    assert vocab.texts_to_sequences(["Dog, zebra"]) == [[5, vocab.unk_id]]


def test_constructor_accepts_plain_word_lists():
    assert Vocabulary(["dog", "cat"]).id_to_word == [*SPECIALS, "dog", "cat"]
    assert Vocabulary([*SPECIALS, "dog"]).id_to_word == [*SPECIALS, "dog"]


@pytest.mark.parametrize("words", [["dog", "dog"], ["dog", ""], ["two words"], ["dog", UNK], [3]])
def test_constructor_rejects_bad_word_lists(words):
    with pytest.raises(ValueError):
        Vocabulary(words)


def test_save_and_load(tmp_path, vocab):
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text())["words"] == vocab.id_to_word
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.word_to_id == vocab.word_to_id
    assert not [p for p in path.parent.iterdir() if p.name != "vocab.json"]  # no temp file left


def test_load_missing_file(tmp_path):
    path = tmp_path / "vocab.json"
    with pytest.raises(VocabularyError) as info:
        Vocabulary.load(path)
    assert str(info.value) == f"{path}: vocabulary file not found"


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"words": [', "invalid JSON"),
        ("[1, 2, 3]", "not a vocabulary file"),
        ('{"format": "something else", "words": []}', "not a vocabulary file"),
        ('{"format": "captioner-vocabulary", "version": 99, "words": []}', "version 99"),
        ('{"format": "captioner-vocabulary", "version": 1, "words": ["dog"]}', "must start with"),
        ('{"format": "captioner-vocabulary", "version": 1, "words": ["<pad>", "<start>", "<end>", "<unk>", "a", "a"]}', "repeated"),
    ],
)
def test_load_malformed_file(tmp_path, content, problem):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(VocabularyError, match=problem) as info:
        Vocabulary.load(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_load_binary_file(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(VocabularyError, match="not a vocabulary file"):
        Vocabulary.load(path)
