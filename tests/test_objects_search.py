"""Captions that name what the classifier is sure of: the constrained search, with both decoders, and the CLI's tags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captioner.decoding import SearchDecoder
from captioner.models.attention import AttentionConfig
from captioner.models.base import build_decoder
from captioner.models.merge import MergeConfig
from captioner.objects import ImageNetTagger, ObjectSearch, imagenet_words
from captioner.objects.search import realign
from captioner.vocab import Vocabulary
from conftest import run_cli

VOCAB = Vocabulary.build(
    [
        "a man in a red shirt is standing in front of a building",
        "a brown dog is running through the grass",
        "a bird is sitting on a branch",
        "two birds are flying over the water",
        "a woman and a child are walking on the beach",
    ]
)
LABELS = {c.label: c.id for c in imagenet_words()}


def tagger_sure_of(label: str | None, dim: int, probability: float = 0.9) -> ImageNetTagger:
    """A classifier that gives `label` `probability` whatever the image (None: about 0.001 to every class)."""
    bias = np.zeros(1000, np.float32)
    if label is not None:
        bias[LABELS[label]] = np.log(probability * 999 / (1 - probability))
    return ImageNetTagger(np.zeros((dim, 1000), np.float32), bias)


@pytest.fixture(scope="module", params=["merge", "attention"])
def decoder(request):
    import keras

    keras.utils.set_random_seed(0)
    if request.param == "merge":
        config = MergeConfig(vocab_size=len(VOCAB), max_length=12, feature_dim=16, embedding_dim=8, units=8, decoder="merge")
    else:
        config = AttentionConfig(vocab_size=len(VOCAB), max_length=12, feature_dim=16, embedding_dim=8, units=8, attention_dim=6, decoder="attention")
    return build_decoder(config)


def features_for(decoder, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = [9 if d is None else d for d in decoder.feature_shape()]  # attention: a 3x3 grid
    return rng.normal(size=(n, *shape)).astype(np.float32)


def test_a_sure_novel_object_is_named_early_through_its_hypernym(decoder):
    plain = SearchDecoder(decoder, VOCAB)
    search = ObjectSearch(decoder, VOCAB, tagger_sure_of("great grey owl", 16))
    features = features_for(decoder)
    for beam_size in (1, 3):
        for before, hyps in zip(plain.caption(features, beam_size), search.caption(features, beam_size)):
            words = hyps[0].caption.split()
            first = next(w for w in words if w in {"owl", "owls", "bird", "birds"})
            assert first in {"owl", "owls"}, hyps[0].caption  # the borrowed word replaced its hypernym's first use
            if not {"bird", "birds"} & set(before[0].caption.split()):  # the search had to bring it in: early
                assert {"owl", "owls"} & set(words[: search.within + 1]), hyps[0].caption  # "an" may come before it
            assert hyps[0].tags is not None and hyps[0].tags[0].label == "great grey owl"
            if hyps[0].attention is not None:
                assert len(hyps[0].attention) == len(words)


def test_an_unsure_classifier_leaves_the_caption_alone(decoder):
    plain = SearchDecoder(decoder, VOCAB)
    search = ObjectSearch(decoder, VOCAB, tagger_sure_of(None, 16))
    features = features_for(decoder)
    assert [h[0].caption for h in search.caption(features, 3)] == [h[0].caption for h in plain.caption(features, 3)]


def test_naming_can_be_turned_off_and_tags_stay(decoder):
    plain = SearchDecoder(decoder, VOCAB)
    search = ObjectSearch(decoder, VOCAB, tagger_sure_of("great grey owl", 16), name_objects=False)
    features = features_for(decoder)
    got = search.caption(features, 3, num_captions=2)
    assert [[h.caption for h in hyps] for hyps in got] == [[h.caption for h in hyps] for hyps in plain.caption(features, 3, num_captions=2)]
    assert all(h.tags is not None and len(h.tags) == 5 for hyps in got for h in hyps)


def test_the_constrained_search_writes_the_word_once_within_the_limit_and_never_a_banned_one(decoder):
    search = ObjectSearch(decoder, VOCAB, tagger_sure_of(None, 16))
    features = features_for(decoder, 3)
    allowed = np.zeros((3, len(VOCAB)), bool)
    allowed[:, VOCAB.word_to_id["branch"]] = True
    banned = np.zeros_like(allowed)
    banned[:, [VOCAB.word_to_id["man"], VOCAB.word_to_id["dog"]]] = True
    within = np.array([2, 4, 12], np.int32)
    results = search.constrained(features, allowed, banned, within, beam_size=3, num_captions=2)
    for row, hyps in enumerate(results):
        assert hyps is not None and len(hyps) == 2
        for h in hyps:
            words = h.caption.split()
            assert words.count("branch") == 1 and words.index("branch") < within[row], h.caption
            assert "man" not in words and "dog" not in words
        assert hyps[0].score >= hyps[1].score


def test_realign_gives_inserted_words_the_row_of_the_word_they_replace():
    attention = np.arange(12, dtype=np.float32).reshape(4, 3)
    got = realign(attention, "a bird on grass".split(), "an owl on grass".split())
    np.testing.assert_array_equal(got, attention)
    got = realign(attention, "a man eating food".split(), "a man eating a hot dog".split())
    assert got.shape == (6, 3)
    np.testing.assert_array_equal(got[:3], attention[:3])
    np.testing.assert_array_equal(got[3:], attention[[3, 3, 3]])
    assert realign(None, ["a"], ["b"]) is None


@pytest.fixture(scope="module")
def lite0_model(tmp_path_factory):
    from captioner.artifacts import CaptionerConfig, save_captioner

    config = MergeConfig(vocab_size=len(VOCAB), max_length=10, feature_dim=1280, embedding_dim=8, units=8, decoder="merge")
    directory = tmp_path_factory.mktemp("objects") / "lite0-merge"
    save_captioner(directory, build_decoder(config), VOCAB, CaptionerConfig("efficientnet_lite0", config))
    return directory


def test_caption_json_reports_tags_and_objects_can_be_switched_off(lite0_model, make_image, capsys):
    photo = make_image("photo.jpg")
    code, out, _ = run_cli(capsys, "caption", str(photo), "--model", str(lite0_model), "--json")
    assert code == 0
    row = json.loads(out)
    assert len(row["tags"]) == 5 and set(row["tags"][0]) == {"tag", "word", "probability"}
    assert row["tags"][0]["probability"] >= row["tags"][1]["probability"]
    code, out_off, _ = run_cli(capsys, "caption", str(photo), "--model", str(lite0_model), "--json", "--no-objects")
    assert code == 0 and json.loads(out_off)["tags"] == row["tags"]


def test_captioner_takes_the_mode_and_xception_models_have_no_tags(lite0_model, tmp_path):
    from captioner.artifacts import CaptionerConfig, save_captioner
    from captioner.pipeline import Captioner

    assert isinstance(Captioner(lite0_model).search, ObjectSearch) and Captioner(lite0_model).search.name_objects
    assert Captioner(lite0_model, name_objects=False).search.name_objects is False
    config = MergeConfig(vocab_size=len(VOCAB), max_length=10, feature_dim=2048, embedding_dim=8, units=8, decoder="merge")
    save_captioner(tmp_path / "x", build_decoder(config), VOCAB, CaptionerConfig("xception", config, encoder_weights=None))
    captioner = Captioner(tmp_path / "x")
    assert not isinstance(captioner.search, ObjectSearch)
    assert captioner.caption_arrays(np.zeros((1, 299, 299, 3), np.uint8), beam_size=2)[0][0].tags is None


def test_a_food_is_named_as_the_subject_where_a_thing_needs_a_surer_classifier():
    import keras

    keras.utils.set_random_seed(1)
    vocab = Vocabulary.build(["a man in a red shirt is standing in front of a building", "a pizza is on the table", "a brown dog is running"])
    decoder = build_decoder(MergeConfig(vocab_size=len(vocab), max_length=12, feature_dim=16, embedding_dim=8, units=8, decoder="merge"))
    features = features_for(decoder)
    plain = [h[0].caption for h in SearchDecoder(decoder, vocab).caption(features, 3)]
    assert not any("pizza" in c.split() for c in plain)
    food = ObjectSearch(decoder, vocab, tagger_sure_of("pizza", 16, probability=0.45))
    for hyps in food.caption(features, 3):
        words = hyps[0].caption.split()
        assert "pizza" in words[: food.within], hyps[0].caption
        assert not {"man", "dog"} & set(words), hyps[0].caption  # the subject, alone
    thing = ObjectSearch(decoder, vocab, tagger_sure_of("church", 16, probability=0.45))  # a thing, via "building": needs 0.6
    unnamed = [i for i, c in enumerate(plain) if "building" not in c.split()]
    got = thing.caption(features, 3)
    assert unnamed and all(got[i][0].caption == plain[i] for i in unnamed)


def test_the_constrained_search_gives_each_image_what_it_gives_it_alone(decoder):
    """An image stops when its own second bank has ended, so the rest of a batch cannot change its captions."""
    search = ObjectSearch(decoder, VOCAB, tagger_sure_of(None, 16))
    features = features_for(decoder, 6)
    allowed = np.zeros((6, len(VOCAB)), bool)
    for row, word in enumerate(["branch", "bird", "dog", "water", "beach", "grass"]):
        allowed[row, VOCAB.word_to_id[word]] = True
    banned = np.zeros_like(allowed)
    banned[::2, VOCAB.word_to_id["man"]] = True
    within = np.array([3, 12, 5, 12, 4, 12], np.int32)
    batched = search.constrained(features, allowed, banned, within, beam_size=3, num_captions=2)
    for row, hyps in enumerate(batched):
        alone = search.constrained(features[row : row + 1], allowed[row : row + 1], banned[row : row + 1], within[row : row + 1], beam_size=3, num_captions=2)[
            0
        ]
        assert (hyps is None) == (alone is None)
        if hyps is not None and alone is not None:
            assert [h.caption for h in hyps] == [h.caption for h in alone]
            np.testing.assert_allclose([h.score for h in hyps], [h.score for h in alone], rtol=1e-5)
