"""Tags: the encoder's own ImageNet classifier on the pooled feature the captioner already computed.

EfficientNet-Lite's checkpoints carry their 1000-class head (one dense layer on the pooled 1280
feature). Applying it to the features the decoder gets costs one (B, 1280) x (1280, 1000) product,
no second pass through the encoder. Which object to name, and with which in-vocabulary word, is
decided here too (`plan_object`).

No TensorFlow here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from captioner.objects.words import ClassWords, imagenet_words, pluralize
from captioner.vocab import Vocabulary

DEFAULT_TOP_K = 5  # tags reported per image
DEFAULT_THRESHOLD = 0.3  # a noun's summed probability needed before a caption must name it (README: chosen on dev + photos)


@dataclass(frozen=True)
class Tag:
    """One ImageNet class with its probability."""

    label: str  # ImageNet's label, e.g. "macaw"
    word: str  # the caption noun, e.g. "parrot"
    probability: float
    class_id: int
    object: bool  # whether a caption would name it as its subject

    def to_json(self) -> dict:
        return {"tag": self.label, "word": self.word, "probability": round(self.probability, 4)}


@dataclass(frozen=True)
class ObjectPlan:
    """The object a caption must name, and how the decoder can write it."""

    noun: str  # e.g. "owl"
    plural: str  # e.g. "owls"
    probability: float  # summed over the classes that share the noun
    anchors: tuple[str, str]  # the in-vocabulary word (singular, plural) the decoder writes: "owl"/"owls", or borrowed "bird"/"birds"
    token_ids: tuple[int, ...]  # vocabulary ids of the anchors
    label: str  # the most probable class behind it, e.g. "great grey owl"
    animal: bool = False  # an animal, not a thing
    food: bool = False  # a food, fruit or vegetable

    @property
    def borrowed(self) -> bool:
        """The vocabulary lacks the noun: the decoder writes its hypernym and the noun replaces it."""
        return self.anchors[0] != self.noun


class ImageNetTagger:
    """The ImageNet classifier of an EfficientNet-Lite encoder, applied to its pooled features.

    Args:
        kernel: (D, 1000) dense kernel.
        bias: (1000,).
    """

    def __init__(self, kernel: np.ndarray, bias: np.ndarray) -> None:
        self.kernel = np.asarray(kernel, np.float32)
        self.bias = np.asarray(bias, np.float32)
        self.classes = imagenet_words()

    @classmethod
    def for_encoder(cls, encoder: str, weights: str | None = "imagenet") -> ImageNetTagger | None:
        """The tagger of a registered encoder, or None when it has no ImageNet head here (Xception, random weights)."""
        match = re.fullmatch(r"efficientnet_lite(\d)", encoder)
        if match is None or weights != "imagenet":
            return None
        from captioner import effnet_lite

        return cls(*effnet_lite.imagenet_head(int(match.group(1))))

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Decoder features (B, D) pooled, (B, L, D) or (B, g, g, D) grids -> (B, 1000) class probabilities."""
        x = np.asarray(features, np.float32)
        pooled = x.reshape(len(x), -1, x.shape[-1]).mean(axis=1) if x.ndim > 2 else x  # the grid's mean is the pooled feature
        # einsum, not `@`: right after a TensorFlow call, BLAS's threads wait on TensorFlow's spinning
        # ones (11 ms for this product on 2 cores, against 0.3 ms without BLAS).
        logits = (np.einsum("bd,dk->bk", pooled, self.kernel) + self.bias).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def tags(self, probabilities: np.ndarray, k: int = DEFAULT_TOP_K) -> list[Tag]:
        """The k most probable classes of one image, most probable first."""
        top = np.argsort(-probabilities)[:k]
        return [self._tag(self.classes[i], float(probabilities[i])) for i in top]

    @staticmethod
    def _tag(c: ClassWords, p: float) -> Tag:
        return Tag(c.label, c.noun, p, c.id, c.object)


@functools.cache
def _classes_of_words() -> dict[str, np.ndarray]:
    """Caption word -> the ids of the classes it can name ("dog": every breed; "bird": every bird)."""
    out: dict[str, list[int]] = {}
    for c in imagenet_words():
        for w in {*c.chain, c.plural, *(pluralize(x) for x in c.chain)}:
            out.setdefault(w, []).append(c.id)
    return {w: np.array(ids) for w, ids in out.items()}


def word_probability(probabilities: np.ndarray, word: str) -> float:
    """The classifier's probability that `word` names what is in the photo (0 for words no class has)."""
    ids = _classes_of_words().get(word)
    return 0.0 if ids is None else float(probabilities[ids].sum())


def plan_object(probabilities: np.ndarray, vocab: Vocabulary, threshold: float = DEFAULT_THRESHOLD) -> ObjectPlan | None:
    """The object a caption should name, or None when the classifier is not sure enough of one.

    Classes that share a caption noun pool their probability (120 dog breeds are one "dog"); only
    classes that can be a caption's subject count. The noun is written as itself when the
    vocabulary has it, else through the first word of its chain that the vocabulary has ("owl" via
    "bird"), else of its related words ("ballpoint" via "pen"). When no noun reaches the threshold, the in-vocabulary words they are written with may
    (a goose, a swan and an egret, each unsure, still make a sure "bird"); then that word is named.
    """
    classes = imagenet_words()
    words = vocab.word_to_id
    by_noun: dict[str, float] = {}
    by_anchor: dict[str, float] = {}
    anchor_of: dict[str, str] = {}
    best_class: dict[str, ClassWords] = {}
    for i in np.argsort(-probabilities)[:50]:  # the tail cannot reach a threshold worth using
        c = classes[int(i)]
        if not c.object:
            continue
        anchor = c.noun if c.noun in words else next((w for w in (*c.chain[1:], *c.related) if w in words), None)
        if anchor is None:
            continue
        p = float(probabilities[i])
        by_noun[c.noun] = by_noun.get(c.noun, 0.0) + p
        by_anchor[anchor] = by_anchor.get(anchor, 0.0) + p
        anchor_of.setdefault(c.noun, anchor)
        best_class.setdefault(c.noun, c)
    if not by_noun:
        return None
    noun = max(by_noun, key=lambda n: by_noun[n])
    if by_noun[noun] >= threshold:
        c, anchor, p = best_class[noun], anchor_of[noun], by_noun[noun]
        plural = c.plural
    else:
        anchor = max(by_anchor, key=lambda a: by_anchor[a])
        if by_anchor[anchor] < threshold:
            return None
        c = next(best_class[n] for n in by_noun if anchor_of[n] == anchor)
        noun, plural, p = anchor, pluralize(anchor), by_anchor[anchor]
    anchors = (noun, plural) if anchor == noun else (anchor, pluralize(anchor))
    ids = tuple(dict.fromkeys(words[w] for w in anchors if w in words))
    food = bool({"food", "fruit", "vegetable"} & {*c.chain, c.basic})  # not drinks: a cup of coffee is held, not shown
    return ObjectPlan(noun, plural, p, anchors, ids, c.label, animal="animal" in c.chain, food=food)
