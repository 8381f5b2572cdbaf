"""ImageNet classes as caption words: the shipped table, the grammar of putting a word in, and which object to name.

No TensorFlow: these use `captioner.objects.words` and `tagger` directly.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captioner.objects.tagger import ImageNetTagger, plan_object
from captioner.objects.words import animal_words, article, imagenet_words, pluralize, substitute
from captioner.vocab import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
BY_LABEL = {c.label: c for c in imagenet_words()}


def test_the_table_has_every_class_in_classifier_order():
    classes = imagenet_words()
    assert len(classes) == 1000 and [c.id for c in classes] == list(range(1000))
    assert [c.wnid for c in classes] == sorted(c.wnid for c in classes)  # ILSVRC order is the sorted wnids
    assert classes[0].wnid == "n01440764" and classes[281].label == "tabby" and classes[967].label == "espresso"
    for c in classes:
        assert c.noun and c.plural and c.basic and c.chain[0] == c.noun, c
    assert sum(c.reviewed for c in classes) >= 300


@pytest.mark.parametrize(
    ("label", "noun", "plural", "basic"),
    [
        ("macaw", "parrot", "parrots", "bird"),
        ("great grey owl", "owl", "owls", "bird"),
        ("goose", "goose", "geese", "bird"),
        ("golden retriever", "dog", "dogs", "dog"),
        ("tabby", "cat", "cats", "cat"),
        ("hotdog", "hot dog", "hot dogs", "food"),
        ("zebra", "zebra", "zebras", "animal"),
        ("airliner", "plane", "planes", "plane"),
        ("espresso", "cup", "cups", "cup"),
    ],
)
def test_commonly_photographed_classes_have_caption_words(label, noun, plural, basic):
    c = BY_LABEL[label]
    assert (c.noun, c.plural, c.basic, c.object) == (noun, plural, basic, True)


@pytest.mark.parametrize("label", ["seashore", "valley", "lab coat", "jersey", "groom", "scuba diver", "swimming trunks"])
def test_places_clothes_and_people_are_not_subjects(label):
    assert BY_LABEL[label].object is False


def test_owl_falls_back_to_bird_then_animal():
    assert BY_LABEL["great grey owl"].chain == ("owl", "bird", "animal")
    assert {"owl", "owls", "bird", "dogs", "animal"} <= animal_words() and "car" not in animal_words()


def test_articles_and_plurals():
    assert [article(w) for w in ("owl", "hippo", "iguana", "unicycle", "elephant")] == ["an", "a", "an", "a", "an"]
    assert [pluralize(w) for w in ("bird", "fish", "fox", "butterfly", "sheep")] == ["birds", "fish", "foxes", "butterflies", "sheep"]


@pytest.mark.parametrize(
    ("caption", "anchors", "replacement", "expected"),
    [
        ("a bird sits on a branch", ("bird", "birds"), ("owl", "owls"), "an owl sits on a branch"),
        ("two birds fly over the water", ("bird", "birds"), ("owl", "owls"), "two owls fly over the water"),
        ("an animal is in the water", ("animal", "animals"), ("hippo", "hippos"), "a hippo is in the water"),
        ("a man eating food", ("food", "food"), ("hot dog", "hot dogs"), "a man eating a hot dog"),
        ("a group of bee are on a flower", ("bee", "bees"), ("bee", "bees"), "a group of bees are on a flower"),
        ("a elephant walks", ("elephant", "elephants"), ("elephant", "elephants"), "an elephant walks"),
        ("a dog runs", ("bird", "birds"), ("owl", "owls"), "a dog runs"),
        ("a fruit are on a table", ("fruit", "fruits"), ("strawberry", "strawberries"), "a strawberry is on a table"),
        ("a man and a dog are running", ("dog", "dogs"), ("dog", "dogs"), "a man and a dog are running"),
        ("a white bird and a bird", ("bird", "birds"), ("egret", "egrets"), "a white egret and a bird"),
    ],
)
def test_substitute_fixes_articles_and_number(caption, anchors, replacement, expected):
    assert substitute(caption, anchors, replacement) == expected


VOCAB = Vocabulary.build(["a bird and a dog and an animal", "a man eats food with a cat", "two birds and dogs and animals"])


def probabilities(**by_label: float) -> np.ndarray:
    """Class probabilities with the given ones and the rest spread evenly over the other classes."""
    p = np.full(1000, (1.0 - sum(by_label.values())) / (1000 - len(by_label)))
    for label, value in by_label.items():
        p[BY_LABEL[label.replace("_", " ")].id] = value
    return p


def test_a_confident_novel_object_is_written_through_its_hypernym():
    plan = plan_object(probabilities(macaw=0.9), VOCAB, threshold=0.5)
    assert plan is not None and plan.noun == "parrot" and plan.anchors == ("bird", "birds") and plan.borrowed and plan.animal
    assert set(plan.token_ids) == {VOCAB.word_to_id["bird"], VOCAB.word_to_id["birds"]}


def test_an_unsure_object_is_not_named():
    assert plan_object(probabilities(macaw=0.3), VOCAB, threshold=0.5) is None


def test_classes_with_one_caption_noun_pool_their_probability():
    plan = plan_object(probabilities(golden_retriever=0.2, beagle=0.2, collie=0.2), VOCAB, threshold=0.5)
    assert plan is not None and plan.noun == "dog" and not plan.borrowed and plan.probability == pytest.approx(0.6, abs=1e-3)


def test_unsure_species_of_one_basic_kind_still_name_it():
    plan = plan_object(probabilities(goose=0.25, drake=0.2, american_egret=0.2), VOCAB, threshold=0.5)
    assert plan is not None and plan.noun == "bird" and not plan.borrowed


def test_a_class_without_a_chain_word_in_the_vocabulary_is_written_through_a_related_word():
    assert "pen" in BY_LABEL["ballpoint"].related and "pen" not in BY_LABEL["ballpoint"].chain
    vocab = Vocabulary.build(["a man writes with a pen", "two pens on a desk"])
    plan = plan_object(probabilities(ballpoint=0.9), vocab, threshold=0.5)
    assert plan is not None and plan.noun == "ballpoint" and plan.anchors == ("pen", "pens") and plan.borrowed
    assert plan_object(probabilities(ballpoint=0.9), VOCAB, threshold=0.5) is None  # no word for it at all
    # Words that name something else in a caption never stand for a class ("ride" for a carousel).
    assert not {"ride", "arm", "bank", "good", "works"} & {w for c in imagenet_words() for w in c.related}


def test_places_are_never_named():
    assert plan_object(probabilities(seashore=0.95), VOCAB, threshold=0.5) is None


def test_tagger_applies_the_head_to_pooled_and_grid_features():
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(8, 1000)).astype(np.float32), rng.normal(size=1000).astype(np.float32)
    tagger = ImageNetTagger(kernel, bias)
    grid = rng.normal(size=(2, 9, 8)).astype(np.float32)
    pooled = tagger.probabilities(grid.mean(axis=1))
    np.testing.assert_allclose(tagger.probabilities(grid), pooled, rtol=1e-5)
    np.testing.assert_allclose(pooled.sum(axis=1), 1.0)
    tags = tagger.tags(pooled[0], 3)
    assert [t.class_id for t in tags] == list(np.argsort(-pooled[0])[:3])
    assert set(tags[0].to_json()) == {"tag", "word", "probability"}
    assert ImageNetTagger.for_encoder("xception") is None and ImageNetTagger.for_encoder("efficientnet_lite0", weights=None) is None


@pytest.mark.skipif(
    importlib.util.find_spec("nltk") is None or not Path("/usr/share/wordnet/data.noun").is_file(), reason="needs nltk and Debian's wordnet-base"
)
def test_the_shipped_table_is_what_the_build_script_makes():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_imagenet_words.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
