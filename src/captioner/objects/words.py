"""ImageNet classes as caption words, and the small grammar of putting one into a caption.

The table (`imagenet_words.json`, built from WordNet 3.0 by `scripts/build_imagenet_words.py`)
gives each of the 1000 classes its caption noun ("macaw" -> "parrot"), plural, basic-level noun
("bird"), a fallback chain of words for vocabularies that lack the noun, related WordNet words to
try after that ("pen" for "ballpoint"), and whether the class is a caption's subject at all
("seashore" and "lab coat" are not).

No TensorFlow here.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

FORMAT = "captioner-imagenet-words"
NUM_CLASSES = 1000

# Words after which a singular count noun needs no article of its own.
DETERMINERS = frozenset(
    "a an the this that these those his her its their our my your one another each every some any no two three four five several many other".split()
)
# Words after which a bare singular count noun ("eating food" -> "eating hot dog") needs "a"/"an".
TAKES_ARTICLE_AFTER = frozenset(
    "of with holding holds eating eats at on in near and by for from to under over behind beside like carrying carries "
    "is are was see sees watching watches chasing chases has have".split()
)
# Words before a noun that make it plural ("two bee" -> "two bees", "a group of bee" -> "a group of bees").
PLURAL_CUES = frozenset("two three four five six several many some these those".split())
GROUPS = frozenset("group herd flock pair couple lot bunch pack school family".split())
# Words that already make a compound with the anchor ("soccer ball", "tennis ball").
COMPOUND_MODIFIERS = frozenset("soccer tennis rugby golf beach basket foot volley base ping pong play teddy polar".split())
_IRREGULAR_PLURALS = {"fish": "fish", "sheep": "sheep", "deer": "deer", "mouse": "mice", "goose": "geese", "person": "people", "food": "food"}
_AN_EXCEPTIONS = ("uni", "use", "usu", "one", "eu", "ewe")


@dataclass(frozen=True)
class ClassWords:
    """The caption words of one ImageNet class."""

    id: int  # classifier output index
    wnid: str  # WordNet 3.0 noun offset, e.g. "n01818515"
    label: str  # ImageNet's short label, e.g. "macaw"
    noun: str  # what a caption calls it, e.g. "parrot"
    plural: str
    basic: str  # basic-level noun, e.g. "bird"
    chain: tuple[str, ...]  # noun first, then more general words to try
    object: bool  # a thing a caption names as its subject
    reviewed: bool  # checked by hand
    related: tuple[str, ...] = ()  # WordNet synonyms and near hypernyms ("pen" for "ballpoint"): tried after the chain


@functools.cache
def imagenet_words() -> tuple[ClassWords, ...]:
    """The 1000 classes in classifier output order, from the package's data file."""
    data = json.loads(resources.files("captioner.objects").joinpath("imagenet_words.json").read_text(encoding="utf-8"))
    if data.get("format") != FORMAT or len(data.get("classes", ())) != NUM_CLASSES:
        raise ValueError("captioner/objects/imagenet_words.json is damaged: rebuild it with scripts/build_imagenet_words.py")
    out = []
    for i, row in enumerate(data["classes"]):
        if row["id"] != i:
            raise ValueError(f"captioner/objects/imagenet_words.json: class {i} is out of order")
        out.append(
            ClassWords(
                row["id"],
                row["wnid"],
                row["label"],
                row["noun"],
                row["plural"],
                row["basic"],
                tuple(row["chain"]),
                row["object"],
                row["reviewed"],
                tuple(row.get("related", ())),
            )
        )
    return tuple(out)


@functools.cache
def animal_words() -> frozenset[str]:
    """Every caption noun and basic-level word of an animal class, singular and plural ("bird", "dogs", "owl")."""
    out = {"animal", "animals", "puppy", "puppies"}
    for c in imagenet_words():
        if "animal" in c.chain:
            out |= {c.noun, c.plural, c.basic, pluralize(c.basic)}
    return frozenset(out)


def pluralize(word: str) -> str:
    """English plural of a basic-level word ("bird" -> "birds", "fish" -> "fish")."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def article(word: str) -> str:
    """ "a" or "an" before `word` (by its spelling; "an owl", "a unicycle")."""
    lower = word.lower()
    return "an" if lower[:1] in "aeiou" and not lower.startswith(_AN_EXCEPTIONS) else "a"


def substitute(caption: str, anchors: tuple[str, str], replacement: tuple[str, str]) -> str:
    """Replaces the first `anchors` word (singular, plural) with `replacement` (singular, plural).

    The article before it is fixed ("an animal" -> "a hippo", "a bird" -> "an owl"), and a bare
    singular after a verb or preposition gets one ("eating food" -> "eating a hot dog") when the
    replacement is a count noun (its plural differs). A caption without the anchor is returned as is.
    """
    words = caption.split()
    for i, w in enumerate(words):
        if w not in anchors:
            continue
        if i and len(replacement[0].split()) > 1 and words[i - 1] not in DETERMINERS and words[i - 1] in COMPOUND_MODIFIERS | set(replacement[0].split()):
            return caption  # "a soccer ball" stays, never "a soccer soccer ball" or "a soccer rugby ball"
        before = words[:i]
        is_plural = (w == anchors[1] and anchors[0] != anchors[1]) or (
            bool(before) and (before[-1] in PLURAL_CUES or (before[-1] == "of" and len(before) > 1 and before[-2] in GROUPS))
        )
        new = replacement[1] if is_plural else replacement[0]
        countable = replacement[0] != replacement[1]
        if before and before[-1] in ("a", "an"):
            if countable and not is_plural:
                before[-1] = article(new)
            else:  # "a food" never happens; "a bread" would read badly: drop the article
                before = before[:-1]
        elif countable and not is_plural and anchors[0] == anchors[1] and (not before or before[-1] in TAKES_ARTICLE_AFTER):
            before = [*before, article(new)]
        after = words[i + 1 :]
        if after and after[0] in ("is", "are") and replacement[0] != replacement[1] and "and" not in before:  # "a strawberry are" -> "is"
            after = ["are" if is_plural else "is", *after[1:]]
        return " ".join([*before, *new.split(), *after])
    return caption
